//! Thousands of random and malformed commands against every corral command on a live server:
//! wrong arities, huge/negative/fractional numbers, NUL bytes, empty and 1 MB arguments,
//! every option in random combinations, keys of the wrong type. Afterwards the server still
//! answers, contained no panic, and every key survives DEBUG RELOAD unchanged.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{assert_alive, fields, info_int, value};
use common::{wait_until, Server};
use redis::{Connection, ConnectionLike, Value};

/// A small deterministic PRNG (xorshift), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Every option keyword any corral command takes, and then some.
const WORDS: &[&str] = &[
    "BLOCK",
    "PERMITS",
    "HOLDER",
    "TTL",
    "LIMIT",
    "WITHTOKEN",
    "ONLYFOR",
    "REMOVE",
    "TOKEN",
    "DELAY",
    "PRIORITY",
    "ATTEMPTS",
    "BACKOFF",
    "KEEP",
    "UNIQUE",
    "NEXT",
    "AFTER",
    "COUNT",
    "pending",
    "delayed",
    "failed",
    "fulfilled",
    "leased",
    "block",
    "Permits",
    "NOPE",
    "",
];

fn argument(rng: &mut Rng) -> Vec<u8> {
    match rng.below(16) {
        0 => b"0".to_vec(),
        1 => b"-1".to_vec(),
        2 => b"1.5".to_vec(),
        3 => b"18446744073709551616".to_vec(),
        4 => b"99999999999999999999999999999".to_vec(),
        5 => b"1099511627777".to_vec(),
        6 => Vec::new(),
        7 => b"\x00\xff\r\n".to_vec(),
        8 => vec![b'x'; if rng.below(50) == 0 { 1 << 20 } else { 300 }],
        9 | 10 => rng.pick(WORDS).as_bytes().to_vec(),
        11 => (rng.next() % 2_000).to_string().into_bytes(),
        12 => (1 + rng.next() % 200).to_string().into_bytes(),
        13 => format!("h{}", rng.below(5)).into_bytes(),
        14 => (rng.next() as i64).to_string().into_bytes(),
        _ => b"1".to_vec(),
    }
}

fn corral_commands(c: &mut Connection) -> Vec<String> {
    let v: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query(c)
        .unwrap();
    assert!(v.len() > 30, "{v:?}");
    v
}

#[test]
fn random_and_malformed_commands_never_hurt_the_server() {
    let s = Server::start();
    let mut c = s.conn();
    let commands = corral_commands(&mut c);
    // Keys of every corral type, and a string, for commands to land on.
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    let keys = ["k0", "k1", "k2", "k3", "k4", "str", "missing"];
    let mut rng = Rng(0x5eed_c0ff_ee12_3457);
    let mut errors = 0u32;
    let mut batch: Vec<redis::Cmd> = Vec::new();
    for n in 0..6_000 {
        let name = rng.pick(&commands).clone();
        let mut cmd = redis::cmd(&name);
        // Most calls name a key; some have no arguments at all (wrong arity).
        if rng.below(20) != 0 {
            cmd.arg(*rng.pick(&keys));
        }
        for _ in 0..rng.below(8) {
            cmd.arg(argument(&mut rng));
        }
        batch.push(cmd);
        if n % 200 == 199 {
            // One round trip per batch; each reply (errors included) comes back as a Value.
            let mut packed = Vec::new();
            for cmd in &batch {
                cmd.write_packed_command(&mut packed);
            }
            let replies = c.req_packed_commands(&packed, 0, batch.len()).unwrap();
            assert_eq!(replies.len(), batch.len());
            errors += replies
                .iter()
                .filter(|r| matches!(r, Value::ServerError(_)))
                .count() as u32;
            batch.clear();
            assert_alive(&s, &mut c);
        }
    }
    assert!(errors > 1000, "most random calls are errors: {errors}");
    assert_eq!(info_int(&s, "corral", "corral_contained_panics"), 0);

    // Every key still loads, unchanged.
    let mut all_keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    all_keys.sort();
    let digests = |c: &mut Connection| -> Vec<Value> {
        all_keys
            .iter()
            .map(|k| {
                redis::cmd("DEBUG")
                    .arg("DIGEST-VALUE")
                    .arg(k)
                    .query(c)
                    .unwrap()
            })
            .collect()
    };
    let before = digests(&mut c);
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(digests(&mut c), before);
    assert_alive(&s, &mut c);
}

/// What the server must hold after the calls so far: every call of
/// [`random_blocking_calls_time_out_or_are_served`] is checked against it. Leases are long
/// (a minute), so nothing lapses and every reply is determined.
#[derive(Default)]
struct Model {
    /// RESV key → (holder, token).
    locks: HashMap<String, (String, i64)>,
    /// Key → the last token (or job id) it issued.
    last: HashMap<String, i64>,
    /// SEM holder → (permits, token).
    permits: HashMap<String, (u64, i64)>,
    /// SLOT slot → (holder, token).
    slots: BTreeMap<i64, (String, i64)>,
    /// JOB: the pending jobs (id → request), the work leases (worker → (id, token)) and the
    /// fulfilled ids.
    pending: BTreeMap<i64, String>,
    leases: HashMap<String, (i64, i64)>,
    fulfilled: BTreeSet<i64>,
    /// ALLOC: the jobs allocated (all to the only instance, i0).
    allocated: BTreeSet<String>,
}

impl Model {
    /// Checks that `token` is a new grant of `key`: above every token the key issued before.
    fn new_token(&mut self, key: &str, token: i64, what: &str) {
        let last = self.last.entry(key.to_string()).or_insert(0);
        assert!(token > *last, "{what}: token {token} is not above {last}");
        *last = token;
    }

    fn permits_in_use(&self) -> u64 {
        self.permits.values().map(|p| p.0).sum()
    }

    /// The lowest slot of the pool (LIMIT 2) nobody holds.
    fn free_slot(&self) -> Option<i64> {
        (0..2).find(|s| !self.slots.contains_key(s))
    }

    fn slot_of(&self, holder: &str) -> Option<(i64, i64)> {
        self.slots
            .iter()
            .find_map(|(s, (h, t))| (h == holder).then_some((*s, *t)))
    }

    /// The oldest pending job no worker holds.
    fn pullable(&self) -> Option<i64> {
        let leased: BTreeSet<i64> = self.leases.values().map(|l| l.0).collect();
        self.pending.keys().copied().find(|id| !leased.contains(id))
    }
}

const HOLDERS: [&str; 3] = ["h0", "h1", "h2"];
const MINUTE: &str = "60000";

fn int_of(v: &Value, what: &str) -> i64 {
    match v {
        Value::Int(i) => *i,
        v => panic!("{what}: expected an integer, got {v:?}"),
    }
}

fn ints(v: &Value, what: &str) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().map(|x| int_of(x, what)).collect(),
        v => panic!("{what}: expected an array, got {v:?}"),
    }
}

/// Runs `args` (with `BLOCK t` appended for `Some(t)`) and answers its reply or error. A nil
/// answer to a BLOCK must have waited its timeout: not less, and not much more.
fn call(c: &mut Connection, args: &[String], block: Option<u64>) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(&args[0]);
    cmd.arg(&args[1..]);
    if let Some(t) = block {
        cmd.arg("BLOCK").arg(t);
    }
    let start = Instant::now();
    let r = cmd.query(c);
    if let (Ok(Value::Nil), Some(t)) = (&r, block) {
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(t.saturating_sub(1))
                && waited < Duration::from_millis(t) + Duration::from_secs(5),
            "{args:?} BLOCK {t}: nil after {waited:?}"
        );
    }
    r
}

/// As [`call`], failing on an error reply.
fn ok(c: &mut Connection, args: &[String], block: Option<u64>) -> Value {
    call(c, args, block).unwrap_or_else(|e| panic!("{args:?} {block:?}: {e}"))
}

/// As [`call`], expecting the error `code`.
fn refused(c: &mut Connection, args: &[String], code: &str) {
    match call(c, args, None) {
        Err(e) => assert_eq!(e.code(), Some(code), "{args:?}: {e}"),
        Ok(v) => panic!("{args:?}: expected -{code}, got {v:?}"),
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Sends `args` with `BLOCK 10000` from a connection of its own, waits until corral counts it
/// as waiting in `family`, runs `release` (which must serve it), and answers the waiter's reply.
fn handoff(
    s: &Server,
    c: &mut Connection,
    args: Vec<String>,
    family: &str,
    release: impl FnOnce(&mut Connection),
) -> Value {
    let waiting = || info_int(s, "corral", &format!("corral_{family}_waiting"));
    assert_eq!(waiting(), 0);
    let mut w = s.conn();
    let waiter = thread::spawn(move || ok(&mut w, &args, Some(10_000)));
    wait_until(Duration::from_secs(10), "the waiter queued", || {
        waiting() == 1
    });
    release(c);
    let v = waiter.join().unwrap();
    assert_eq!(waiting(), 0);
    v
}

/// Random blocking and non-blocking calls of every family — grants, re-grants, BLOCKs that
/// time out, releases, hand-offs to a blocked client — each reply checked against [`Model`]:
/// never a second holder of a lock, more permits than capacity, a slot held twice or a job
/// leased twice; tokens of a key strictly increase and a holder's re-grant returns its token; a
/// BLOCK that answers nil waited its timeout; a blocked client is served by the release.
#[test]
fn random_blocking_calls_time_out_or_are_served() {
    let s = Server::start();
    let mut c = s.conn();
    let mut rng = Rng(0xb10c_b10c_0000_0001);
    let mut m = Model::default();
    assert_eq!(
        int_of(
            &value(&mut c, &["ALLOC.AVAILABLE", "alloc", "i0"]),
            "AVAILABLE"
        ),
        1
    );
    // Hand-offs per family: RESV, SEM, SLOT, JOB, ALLOC.
    let mut handoffs = [0; 5];
    for step in 0..400 {
        let h = rng.pick(&HOLDERS).to_string();
        let block = match rng.below(3) {
            0 => None,
            _ => Some(1 + rng.below(20) as u64),
        };
        match rng.below(19) {
            0 | 1 => {
                let key = format!("r{}", rng.below(2));
                let args = argv(&["RESV.LOCK", &key, &h, MINUTE]);
                let v = ok(&mut c, &args, block);
                match m.locks.get(&key).cloned() {
                    Some((holder, t)) if holder == h => assert_eq!(v, Value::Int(t), "{args:?}"),
                    Some(other) => assert_eq!(v, Value::Nil, "{args:?}: held by {other:?}"),
                    None => {
                        let t = int_of(&v, &format!("{args:?}"));
                        m.new_token(&key, t, &format!("{args:?}"));
                        m.locks.insert(key, (h, t));
                    }
                }
            }
            2 => {
                let key = format!("r{}", rng.below(2));
                let args = argv(&["RESV.RELEASE", &key, &h]);
                if m.locks.get(&key).is_some_and(|l| l.0 == h) {
                    assert_eq!(ok(&mut c, &args, None), Value::Int(1), "{args:?}");
                    m.locks.remove(&key);
                } else {
                    refused(&mut c, &args, "NOTHELD");
                }
            }
            3 | 4 => {
                let capacity = 1 + rng.below(3) as u64;
                let n = 1 + rng.below(capacity as usize) as u64;
                let (cap, n_s) = (capacity.to_string(), n.to_string());
                let args = argv(&["SEM.ACQUIRE", "sem", &h, &cap, MINUTE, "PERMITS", &n_s]);
                let v = ok(&mut c, &args, block);
                if let Some(&(_, t)) = m.permits.get(&h) {
                    assert_eq!(v, Value::Int(t), "{args:?}: a re-grant");
                } else if m.permits_in_use() + n <= capacity {
                    let t = int_of(&v, &format!("{args:?}"));
                    m.new_token("sem", t, &format!("{args:?}"));
                    m.permits.insert(h, (n, t));
                } else {
                    assert_eq!(v, Value::Nil, "{args:?}: {} in use", m.permits_in_use());
                }
            }
            5 => {
                let args = argv(&["SEM.RELEASE", "sem", &h]);
                if m.permits.remove(&h).is_some() {
                    assert_eq!(ok(&mut c, &args, None), Value::Int(1), "{args:?}");
                } else {
                    refused(&mut c, &args, "NOTHELD");
                }
            }
            6 | 7 => {
                let args = argv(&["SLOT.GET", "pool", "HOLDER", &h, "LIMIT", "2", "WITHTOKEN"]);
                let v = ok(&mut c, &args, block);
                if let Some((slot, t)) = m.slot_of(&h) {
                    assert_eq!(ints(&v, "SLOT.GET"), [slot, t], "{args:?}: a re-grant");
                } else if let Some(slot) = m.free_slot() {
                    let got = ints(&v, &format!("{args:?}"));
                    assert_eq!(got[0], slot, "{args:?}: the lowest free slot");
                    m.new_token("pool", got[1], &format!("{args:?}"));
                    m.slots.insert(slot, (h, got[1]));
                } else {
                    assert_eq!(v, Value::Nil, "{args:?}: the pool is full");
                }
            }
            8 => {
                let slot = rng.below(3) as i64;
                let args = argv(&["SLOT.PUT", "pool", &slot.to_string(), "HOLDER", &h]);
                if m.slots.get(&slot).is_some_and(|s| s.0 == h) {
                    assert_eq!(ok(&mut c, &args, None), Value::Int(1), "{args:?}");
                    m.slots.remove(&slot);
                } else {
                    refused(&mut c, &args, "NOTHELD");
                }
            }
            // A few jobs at a time, so that PULLs also find none (and block).
            9 if m.pending.len() < 3 => {
                let request = format!("req-{step}");
                let args = argv(&["JOB.CREATE", "jobs", &request]);
                let id = int_of(&ok(&mut c, &args, None), "JOB.CREATE");
                m.new_token("jobs", id, "JOB.CREATE");
                m.pending.insert(id, request);
            }
            9 => {}
            10 | 11 => {
                let args = argv(&["JOB.PULL", "jobs", &h, MINUTE]);
                let v = ok(&mut c, &args, block);
                let want = match (m.leases.get(&h), m.pullable()) {
                    (Some(&(id, t)), _) => Some((id, t)),
                    (None, Some(id)) => {
                        let Value::Array(a) = &v else {
                            panic!("{args:?}: job {id} is pullable, got {v:?}");
                        };
                        let t = int_of(&a[2], "JOB.PULL token");
                        m.new_token("jobs", t, &format!("{args:?}"));
                        m.leases.insert(h.clone(), (id, t));
                        Some((id, t))
                    }
                    (None, None) => None,
                };
                match want {
                    Some((id, t)) => assert_eq!(
                        v,
                        Value::Array(vec![
                            Value::Int(id),
                            Value::BulkString(m.pending[&id].clone().into_bytes()),
                            Value::Int(t)
                        ]),
                        "{args:?}"
                    ),
                    None => assert_eq!(v, Value::Nil, "{args:?}: nothing to pull"),
                }
            }
            12 => {
                // A worker's result: with its token, or an older one (STALE); or a second
                // result for a fulfilled job (ALREADY).
                if let Some(&(id, t)) = m.leases.get(&h) {
                    let stale = rng.below(3) == 0;
                    let token = if stale { t - 1 } else { t }.to_string();
                    let args =
                        argv(&["JOB.FULFILL", "jobs", &id.to_string(), "v", "TOKEN", &token]);
                    if stale {
                        refused(&mut c, &args, "STALE");
                    } else {
                        assert_eq!(ok(&mut c, &args, None), Value::Int(1), "{args:?}");
                        m.leases.remove(&h);
                        m.pending.remove(&id);
                        m.fulfilled.insert(id);
                    }
                } else if let Some(&id) = m.fulfilled.iter().next() {
                    let args = argv(&["JOB.FULFILL", "jobs", &id.to_string(), "again"]);
                    refused(&mut c, &args, "ALREADY");
                }
            }
            13 => {
                let job = format!("job{}", rng.below(4));
                if rng.below(2) == 0 {
                    let args = argv(&["ALLOC.ALLOCATE", "alloc", &job]);
                    let persisted = i64::from(m.allocated.insert(job));
                    let v = ok(&mut c, &args, None);
                    assert_eq!(
                        v,
                        Value::Array(vec![
                            Value::BulkString(b"i0".to_vec()),
                            Value::Int(persisted)
                        ]),
                        "{args:?}"
                    );
                } else {
                    let args = argv(&["ALLOC.DEALLOCATE", "alloc", &job]);
                    let removed = i64::from(m.allocated.remove(&job));
                    assert_eq!(ok(&mut c, &args, None), Value::Int(removed), "{args:?}");
                }
            }
            14 => {
                let args = argv(&["ALLOC.DRAIN", "alloc", "i0"]);
                let v = ok(&mut c, &args, block);
                let want = if m.allocated.is_empty() {
                    Value::Int(1)
                } else {
                    Value::Nil
                };
                assert_eq!(v, want, "{args:?}: {:?} allocated", m.allocated);
            }
            _ => {
                // A hand-off: a client blocks on something taken; the release serves it.
                let waiter = h;
                let family = rng.below(5);
                match family {
                    0 => {
                        let key = format!("r{}", rng.below(2));
                        let Some((holder, _)) = m.locks.get(&key).cloned() else {
                            continue;
                        };
                        if holder == waiter {
                            continue;
                        }
                        let args = argv(&["RESV.LOCK", &key, &waiter, MINUTE]);
                        let v = handoff(&s, &mut c, args, "resv", |c| {
                            let release = argv(&["RESV.RELEASE", &key, &holder]);
                            assert_eq!(ok(c, &release, None), Value::Int(1));
                        });
                        let t = int_of(&v, "the waiter's RESV.LOCK");
                        m.new_token(&key, t, "the waiter's RESV.LOCK");
                        m.locks.insert(key, (waiter, t));
                    }
                    1 => {
                        let in_use = m.permits_in_use();
                        let Some(holder) = m.permits.keys().next().cloned() else {
                            continue;
                        };
                        if m.permits.contains_key(&waiter) {
                            continue;
                        }
                        // It asks for one permit of a capacity that is all in use.
                        let cap = in_use.to_string();
                        let args = argv(&["SEM.ACQUIRE", "sem", &waiter, &cap, MINUTE]);
                        let v = handoff(&s, &mut c, args, "sem", |c| {
                            let release = argv(&["SEM.RELEASE", "sem", &holder]);
                            assert_eq!(ok(c, &release, None), Value::Int(1));
                        });
                        m.permits.remove(&holder);
                        let t = int_of(&v, "the waiter's SEM.ACQUIRE");
                        m.new_token("sem", t, "the waiter's SEM.ACQUIRE");
                        m.permits.insert(waiter, (1, t));
                    }
                    2 => {
                        if m.free_slot().is_some() || m.slot_of(&waiter).is_some() {
                            continue;
                        }
                        let slot = rng.below(2) as i64;
                        let holder = m.slots[&slot].0.clone();
                        let args = argv(&[
                            "SLOT.GET",
                            "pool",
                            "HOLDER",
                            &waiter,
                            "LIMIT",
                            "2",
                            "WITHTOKEN",
                        ]);
                        let v = handoff(&s, &mut c, args, "slot", |c| {
                            let put =
                                argv(&["SLOT.PUT", "pool", &slot.to_string(), "HOLDER", &holder]);
                            assert_eq!(ok(c, &put, None), Value::Int(1));
                        });
                        let got = ints(&v, "the waiter's SLOT.GET");
                        assert_eq!(got[0], slot, "the waiter gets the slot put back");
                        m.new_token("pool", got[1], "the waiter's SLOT.GET");
                        m.slots.insert(slot, (waiter, got[1]));
                    }
                    3 => {
                        if m.pullable().is_some() || m.leases.contains_key(&waiter) {
                            continue;
                        }
                        let request = format!("req-{step}");
                        let args = argv(&["JOB.PULL", "jobs", &waiter, MINUTE]);
                        let mut id = 0;
                        let v = handoff(&s, &mut c, args, "job", |c| {
                            let create = argv(&["JOB.CREATE", "jobs", &request]);
                            id = int_of(&ok(c, &create, None), "JOB.CREATE");
                        });
                        m.new_token("jobs", id, "JOB.CREATE");
                        let Value::Array(a) = &v else {
                            panic!("the waiter's PULL: {v:?}")
                        };
                        assert_eq!(
                            a[..2],
                            [
                                Value::Int(id),
                                Value::BulkString(request.clone().into_bytes())
                            ]
                        );
                        let t = int_of(&a[2], "the waiter's PULL token");
                        m.new_token("jobs", t, "the waiter's PULL");
                        m.pending.insert(id, request);
                        m.leases.insert(waiter, (id, t));
                    }
                    _ => {
                        if m.allocated.is_empty() {
                            continue;
                        }
                        let jobs: Vec<String> =
                            std::mem::take(&mut m.allocated).into_iter().collect();
                        let args = argv(&["ALLOC.DRAIN", "alloc", "i0"]);
                        let v = handoff(&s, &mut c, args, "alloc", |c| {
                            for (i, job) in jobs.iter().enumerate() {
                                let dealloc = argv(&["ALLOC.DEALLOCATE", "alloc", job]);
                                assert_eq!(ok(c, &dealloc, None), Value::Int(1));
                                if i + 1 < jobs.len() {
                                    // Not served while a job is left.
                                    assert_eq!(info_int(&s, "corral", "corral_alloc_waiting"), 1);
                                }
                            }
                        });
                        assert_eq!(v, Value::Int(1), "the waiter's DRAIN");
                    }
                }
                handoffs[family] += 1;
            }
        }
    }
    assert!(
        handoffs.iter().all(|&n| n > 0),
        "hand-offs per family: {handoffs:?}"
    );

    // The server holds what the model holds.
    for family in ["resv", "sem", "slot", "job", "alloc"] {
        assert_eq!(
            info_int(&s, "corral", &format!("corral_{family}_waiting")),
            0
        );
    }
    for key in ["r0", "r1"] {
        let v = value(&mut c, &["RESV.INFO", key]);
        let f: HashMap<String, Value> = fields(v).expect("a map").into_iter().collect();
        // A free reservation: holder (and token) nil.
        let got = (f["holder"] != Value::Nil).then(|| {
            let holder: String = redis::from_redis_value(&f["holder"]).unwrap();
            (holder, int_of(&f["token"], "RESV.INFO token"))
        });
        assert_eq!(got.as_ref(), m.locks.get(key), "RESV.INFO {key}");
    }
    let flat = match value(&mut c, &["SEM.HOLDERS", "sem"]) {
        Value::Array(a) => a,
        v => panic!("SEM.HOLDERS: {v:?}"),
    };
    let holders: HashMap<String, (u64, i64)> = flat
        .chunks(4)
        .map(|r| {
            let h: String = redis::from_redis_value(&r[0]).unwrap();
            (h, (int_of(&r[2], "permits") as u64, int_of(&r[3], "token")))
        })
        .collect();
    assert_eq!(holders, m.permits, "SEM.HOLDERS");
    for slot in 0..2 {
        let v = value(&mut c, &["SLOT.HOLDER", "pool", &slot.to_string()]);
        let got = match v {
            Value::Nil => None,
            Value::Array(a) => {
                let h: String = redis::from_redis_value(&a[0]).unwrap();
                Some((h, int_of(&a[2], "SLOT.HOLDER token")))
            }
            v => panic!("SLOT.HOLDER: {v:?}"),
        };
        assert_eq!(got.as_ref(), m.slots.get(&slot), "SLOT.HOLDER {slot}");
    }
    let info = fields(value(&mut c, &["JOB.INFO", "jobs"])).unwrap();
    let info: HashMap<String, i64> = info
        .into_iter()
        .map(|(k, v)| (k, int_of(&v, "JOB.INFO")))
        .collect();
    assert_eq!(
        (info["pending"], info["leased"], info["fulfilled"]),
        (
            m.pending.len() as i64,
            m.leases.len() as i64,
            m.fulfilled.len() as i64
        ),
        "JOB.INFO"
    );
    let jobs: Vec<String> = redis::cmd("ALLOC.JOBS")
        .arg("alloc")
        .arg("i0")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        jobs,
        m.allocated.iter().cloned().collect::<Vec<_>>(),
        "ALLOC.JOBS"
    );
    eprintln!("400 random calls, hand-offs per family {handoffs:?}: every reply as the model says");
    assert_alive(&s, &mut c);
}
