//! corral in a real Redis Cluster: three primaries on loopback, corral loaded on each.
//!
//! - commands route by their key (the `redis` crate's cluster client follows MOVED/ASK);
//! - hash tags put several primitives in one slot, so MULTI/EXEC and EVAL can combine them;
//! - `redis-cli --cluster reshard` (MIGRATE = DUMP/RESTORE through the types' RDB callbacks)
//!   keeps holders, deadlines and tokens, and the new node lapses moved leases on its own;
//! - clients blocked on a key that migrates away are answered with a redirection, never
//!   granted on the node that gave the slot away.
//!
//! The cluster plumbing (start, `--cluster create`, wait for agreement, reshard) is
//! `tests/common/cluster.rs`. `redis-cli` is Debian's (Redis 7.0) whatever `REDIS_SERVER`
//! says; `REDIS_CLI` overrides it.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use cluster::{key_slot, tag_in_slot, Cluster};
use common::{wait_until, Server};
use redis::{cluster::ClusterConnection, Connection, Value};

// ---- small reply helpers ----

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn int(c: &mut impl redis::ConnectionLike, args: &[&str]) -> i64 {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn val(c: &mut impl redis::ConnectionLike, args: &[&str]) -> Value {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The fields of a map reply (RESP2 flat array or RESP3 map).
fn field(v: &Value, name: &str) -> Value {
    let flat: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
        other => panic!("not a map: {other:?}"),
    };
    let i = flat
        .iter()
        .position(|f| matches!(f, Value::BulkString(b) if b == name.as_bytes()))
        .unwrap_or_else(|| panic!("no {name} in {flat:?}"));
    flat[i + 1].clone()
}

fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn array(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => panic!("not an array: {other:?}"),
    }
}

fn corral_info(s: &Server, field: &str) -> u64 {
    s.info_field("corral", &format!("corral_{field}"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no corral_{field} in INFO corral"))
}

/// `(code, detail)` of a command that must fail.
fn error_of(c: &mut Connection, args: &[&str]) -> (String, String) {
    match cmd(args).query::<Value>(c) {
        Ok(v) => panic!("{args:?} succeeded with {v:?}"),
        Err(e) => (
            e.code().unwrap_or("?").to_string(),
            e.detail().unwrap_or("").to_string(),
        ),
    }
}

// ---- tests ----

/// Every family, through the cluster client, on keys that live on each of the three nodes.
#[test]
fn commands_route_by_key_to_every_node() {
    let cl = Cluster::start();
    let mut cc = cl.client();
    let families = ["resv", "sem", "slot", "alloc", "job"];
    // For each family, one key per node: the first `<family>:<i>` whose slot that node owns.
    let mut keys: Vec<(usize, String)> = Vec::new();
    for fam in families {
        for node in 0..3 {
            let key = (0..)
                .map(|i| format!("{fam}:{i}"))
                .find(|k| cl.owner(key_slot(k.as_bytes())) == node)
                .unwrap();
            keys.push((node, key));
        }
    }
    for (node, key) in &keys {
        let k = key.as_str();
        // The test's slot function is Redis's.
        let mut direct = cl.nodes[*node].conn();
        assert_eq!(
            int(&mut direct, &["CLUSTER", "KEYSLOT", k]),
            i64::from(key_slot(k.as_bytes())),
            "{k}"
        );
        match k.split(':').next().unwrap() {
            "resv" => {
                let t = int(&mut cc, &["RESV.LOCK", k, "a", "30000"]);
                assert_eq!(int(&mut cc, &["RESV.CHECK", k, "a", &t.to_string()]), 1);
                let info = val(&mut cc, &["RESV.INFO", k]);
                assert_eq!(as_str(&field(&info, "holder")), "a");
                assert_eq!(as_int(&field(&info, "token")), t);
                assert_eq!(int(&mut cc, &["RESV.RENEW", k, "a", "40000"]), 1);
            }
            "sem" => {
                let t1 = int(&mut cc, &["SEM.ACQUIRE", k, "h1", "2", "30000"]);
                let t2 = int(&mut cc, &["SEM.ACQUIRE", k, "h2", "2", "30000"]);
                assert!(t2 > t1);
                assert_eq!(int(&mut cc, &["SEM.COUNT", k]), 2);
                assert_eq!(array(&val(&mut cc, &["SEM.HOLDERS", k])).len(), 8);
            }
            "slot" => {
                assert_eq!(int(&mut cc, &["SLOT.GET", k, "HOLDER", "s0"]), 0);
                assert_eq!(int(&mut cc, &["SLOT.GET", k, "HOLDER", "s1"]), 1);
                assert_eq!(int(&mut cc, &["SLOT.PUT", k, "0", "HOLDER", "s0"]), 1);
                assert_eq!(int(&mut cc, &["SLOT.COUNT", k]), 1);
            }
            "alloc" => {
                assert_eq!(int(&mut cc, &["ALLOC.AVAILABLE", k, "i1"]), 1);
                let a = array(&val(&mut cc, &["ALLOC.ALLOCATE", k, "job-1"]));
                assert_eq!(as_str(&a[0]), "i1");
                assert_eq!(as_str(&val(&mut cc, &["ALLOC.INSTANCE", k, "job-1"])), "i1");
            }
            "job" => {
                let id = int(&mut cc, &["JOB.CREATE", k, "req"]);
                let pulled = array(&val(&mut cc, &["JOB.PULL", k, "w", "30000"]));
                assert_eq!(as_int(&pulled[0]), id);
                let got = val(&mut cc, &["JOB.GET", k, &id.to_string()]);
                assert_eq!(as_str(&field(&got, "holder")), "w");
            }
            _ => unreachable!(),
        }
        // The key lives on the node that owns its slot, and only there; the others redirect
        // a plain client (corral declares its key, so Redis routes corral commands too).
        assert_eq!(int(&mut direct, &["EXISTS", k]), 1, "{k} on node {node}");
        let other = (node + 1) % 3;
        let (code, detail) = error_of(&mut cl.nodes[other].conn(), &["RESV.INFO", k]);
        assert_eq!(code, "MOVED", "{k} asked on node {other}: {detail}");
        assert!(
            detail.ends_with(&format!(":{}", cl.nodes[*node].port())),
            "{detail}"
        );
    }
    for n in 0..3 {
        assert_eq!(
            int(&mut cl.nodes[n].conn(), &["DBSIZE"]),
            families.len() as i64,
            "node {n} holds one key per family"
        );
    }
}

/// Keys sharing a hash tag share a slot, so one node serves them together: MULTI/EXEC and
/// EVAL can combine primitives (here: a fenced write across a lock and a pool).
#[test]
fn hash_tags_colocate_primitives() {
    let cl = Cluster::start();
    let keys = ["{app}:lock", "{app}:sem", "{app}:pool"];
    let mut any = cl.nodes[0].conn();
    let slots: BTreeSet<i64> = keys
        .iter()
        .map(|k| int(&mut any, &["CLUSTER", "KEYSLOT", k]))
        .collect();
    assert_eq!(slots.len(), 1, "one slot for {keys:?}: {slots:?}");
    let slot = *slots.iter().next().unwrap() as u16;
    let owner = &cl.nodes[cl.owner(slot)];

    // MULTI/EXEC on the owner, across two primitives.
    let mut c = owner.conn();
    let (lock, sem, slot_no): (i64, i64, i64) = redis::pipe()
        .atomic()
        .cmd("RESV.LOCK")
        .arg("{app}:lock")
        .arg("a")
        .arg(30_000)
        .cmd("SEM.ACQUIRE")
        .arg("{app}:sem")
        .arg("a")
        .arg(2)
        .arg(30_000)
        .cmd("SLOT.GET")
        .arg("{app}:pool")
        .arg("HOLDER")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert!(lock > 0 && sem > lock);
    assert_eq!(slot_no, 0);

    // EVAL through the cluster client: guard a pool operation with the lock's fencing token.
    let mut cc = cl.client();
    let script = redis::Script::new(
        r"redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
          return redis.call('SLOT.PUT', KEYS[2], 0, 'HOLDER', ARGV[1])",
    );
    let put: i64 = script
        .key("{app}:lock")
        .key("{app}:pool")
        .arg("a")
        .arg(lock)
        .invoke(&mut cc)
        .unwrap();
    assert_eq!(put, 1);
    let stale = script
        .key("{app}:lock")
        .key("{app}:pool")
        .arg("a")
        .arg(lock - 1)
        .invoke::<i64>(&mut cc)
        .unwrap_err();
    assert!(stale.to_string().contains("STALE"), "{stale}");

    // Without a shared tag, two keys are in different slots (even on the same node): Redis
    // refuses to combine them.
    let other = (0..)
        .map(|i| format!("{{o{i}}}:lock"))
        .find(|k| {
            let s = key_slot(k.as_bytes());
            s != slot && cl.owner(s) == cl.owner(slot)
        })
        .unwrap();
    let mut c = owner.conn();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("RESV.INFO")
        .arg("{app}:lock")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("RESV.INFO").arg(&other).query(&mut c).unwrap();
    let (code, _) = error_of(&mut c, &["EXEC"]);
    assert_eq!(code, "CROSSSLOT");
}

/// Resharding a slot that holds one key of every family moves them with their holders,
/// deadlines and tokens; the new node issues larger tokens and lapses moved leases at their
/// deadlines by itself.
#[test]
fn reshard_keeps_state_and_the_new_node_takes_over_deadlines() {
    let cl = Cluster::start();
    let (src, dst) = (0, 1);
    let slot = cl.lowest_slot(src);
    let tag = tag_in_slot(slot);
    let k = |name: &str| format!("{{{tag}}}:{name}");
    let mut cc = cl.client();

    // One key of each family in the slot, plus two leases that lapse after the move.
    let resv = int(&mut cc, &["RESV.LOCK", &k("resv"), "a", "30000"]);
    let lapse_ms = 4_000u64;
    let sem1 = int(
        &mut cc,
        &["SEM.ACQUIRE", &k("sem"), "h1", "5", &lapse_ms.to_string()],
    );
    let sem2 = int(
        &mut cc,
        &["SEM.ACQUIRE", &k("sem"), "h2", "5", "30000", "PERMITS", "2"],
    );
    let t0 = Instant::now();
    let pool = array(&val(
        &mut cc,
        &[
            "SLOT.GET",
            &k("slot"),
            "HOLDER",
            "p",
            "TTL",
            "30000",
            "WITHTOKEN",
        ],
    ));
    int(&mut cc, &["SLOT.GET", &k("slot")]); // an anonymous slot: kept as a bit
    int(&mut cc, &["ALLOC.AVAILABLE", &k("alloc"), "i1"]);
    int(
        &mut cc,
        &["ALLOC.AVAILABLE", &k("alloc"), "i2", "TTL", "30000"],
    );
    int(&mut cc, &["ALLOC.UNAVAILABLE", &k("alloc"), "i1"]);
    let alloc = array(&val(&mut cc, &["ALLOC.ALLOCATE", &k("alloc"), "job-1"]));
    let job = int(&mut cc, &["JOB.CREATE", &k("job"), "req"]);
    let pulled = array(&val(&mut cc, &["JOB.PULL", &k("job"), "w", "30000"]));
    let job_token = as_int(&pulled[2]);
    // The only lease on its key: the key must vanish at the deadline on the new node.
    int(
        &mut cc,
        &["RESV.LOCK", &k("lone"), "x", &lapse_ms.to_string()],
    );

    let before = snapshot(&mut cc, &k, job);
    assert_eq!(
        int(
            &mut cl.nodes[src].conn(),
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        ),
        6
    );
    let dst_sem_lapses = corral_info(&cl.nodes[dst], "sem_lapses");
    let dst_resv_lapses = corral_info(&cl.nodes[dst], "resv_lapses");

    cl.reshard(src, dst, 1);
    let moved_after = t0.elapsed();
    assert_eq!(cl.owner(slot), dst, "the slot moved");
    assert!(
        moved_after < Duration::from_millis(lapse_ms - 1_500),
        "the reshard took {moved_after:?}: too slow to watch the lapse happen after it"
    );
    assert_eq!(
        int(
            &mut cl.nodes[src].conn(),
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        ),
        0
    );
    assert_eq!(
        int(
            &mut cl.nodes[dst].conn(),
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        ),
        6
    );
    assert!(corral_info(&cl.nodes[dst], "scheduled_keys") >= 5);

    // Same holders and tokens; deadlines moved with the keys (ttl shrank by the time spent).
    let after = snapshot(&mut cc, &k, job);
    let elapsed = t0.elapsed().as_millis() as i64;
    assert_eq!(before.len(), after.len());
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        match (b, a) {
            (Snap::Exact(b), Snap::Exact(a)) => assert_eq!(a, b, "{what}"),
            (Snap::Ttl(b), Snap::Ttl(a)) => assert!(
                *a <= *b && *a >= b - elapsed - 500,
                "{what}: ttl {b} before, {a} after {elapsed} ms"
            ),
            _ => unreachable!(),
        }
    }
    assert_eq!(as_str(&alloc[0]), "i2");

    // The new node lapses h1's permit at its deadline with no command touching the key
    // (h2 keeps the key alive, so this is corral's timer, not Redis's key expiry), and the
    // lone reservation's key vanishes.
    let deadline = t0 + Duration::from_millis(lapse_ms);
    wait_until(
        Duration::from_millis(lapse_ms + 3_000),
        "sem lapse on the new node",
        || corral_info(&cl.nodes[dst], "sem_lapses") == dst_sem_lapses + 1,
    );
    let late = Instant::now().saturating_duration_since(deadline);
    eprintln!("reshard done {moved_after:?} after the grants; h1 lapsed on the new node {late:?} after its deadline");
    assert!(
        late < Duration::from_millis(1_500),
        "lapsed {late:?} after the deadline"
    );
    wait_until(Duration::from_secs(3), "lone reservation lapsed", || {
        corral_info(&cl.nodes[dst], "resv_lapses") == dst_resv_lapses + 1
    });
    wait_until(Duration::from_secs(3), "lone key gone", || {
        int(
            &mut cl.nodes[dst].conn(),
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()],
        ) == 5
    });
    let holders = array(&val(&mut cc, &["SEM.HOLDERS", &k("sem")]));
    assert_eq!(as_str(&holders[0]), "h2", "{holders:?}");
    assert_eq!(holders.len(), 4);

    // New grants on the moved keys carry larger tokens than anything issued before the move.
    let old_max = [resv, sem1, sem2, as_int(&pool[1]), job, job_token]
        .into_iter()
        .max()
        .unwrap();
    int(&mut cc, &["RESV.RELEASE", &k("resv"), "a"]);
    let resv2 = int(&mut cc, &["RESV.LOCK", &k("resv"), "b", "30000"]);
    let sem3 = int(&mut cc, &["SEM.ACQUIRE", &k("sem"), "h3", "5", "30000"]);
    let pool2 = array(&val(
        &mut cc,
        &["SLOT.GET", &k("slot"), "HOLDER", "q", "WITHTOKEN"],
    ));
    let job2 = int(&mut cc, &["JOB.CREATE", &k("job"), "req2"]);
    for (what, t) in [
        ("resv", resv2),
        ("sem", sem3),
        ("slot", as_int(&pool2[1])),
        ("job id", job2),
    ] {
        assert!(t > old_max, "{what}: new token {t} <= {old_max}");
    }
    assert_eq!(corral_info(&cl.nodes[src], "contained_panics"), 0);
    assert_eq!(corral_info(&cl.nodes[dst], "contained_panics"), 0);
}

enum Snap {
    Exact(Value),
    Ttl(i64),
}

/// What the moved keys hold, read through the cluster client: exact values, and ttls apart.
fn snapshot(
    cc: &mut ClusterConnection,
    k: &dyn Fn(&str) -> String,
    job: i64,
) -> Vec<(&'static str, Snap)> {
    let mut out = Vec::new();
    let resv = val(cc, &["RESV.INFO", &k("resv")]);
    out.push(("resv holder", Snap::Exact(field(&resv, "holder"))));
    out.push(("resv token", Snap::Exact(field(&resv, "token"))));
    out.push(("resv ttl", Snap::Ttl(as_int(&field(&resv, "ttl")))));
    // SEM.HOLDERS: [holder, ttl, permits, token, …]
    for (i, v) in array(&val(cc, &["SEM.HOLDERS", &k("sem")]))
        .into_iter()
        .enumerate()
    {
        out.push((
            "sem holders",
            match i % 4 {
                1 => Snap::Ttl(as_int(&v)),
                _ => Snap::Exact(v),
            },
        ));
    }
    let sem = val(cc, &["SEM.INFO", &k("sem")]);
    out.push(("sem last_token", Snap::Exact(field(&sem, "last_token"))));
    let held = array(&val(cc, &["SLOT.HOLDER", &k("slot"), "0"]));
    out.push(("slot 0 holder", Snap::Exact(held[0].clone())));
    out.push(("slot 0 ttl", Snap::Ttl(as_int(&held[1]))));
    out.push(("slot 0 token", Snap::Exact(held[2].clone())));
    out.push((
        "slot 1 (anonymous)",
        Snap::Exact(val(cc, &["SLOT.HOLDER", &k("slot"), "1"])),
    ));
    out.push((
        "slot info",
        Snap::Exact(val(cc, &["SLOT.INFO", &k("slot")])),
    ));
    out.push((
        "alloc instances",
        Snap::Exact(val(cc, &["ALLOC.INSTANCES", &k("alloc")])),
    ));
    out.push((
        "alloc job-1",
        Snap::Exact(val(cc, &["ALLOC.INSTANCE", &k("alloc"), "job-1"])),
    ));
    let got = val(cc, &["JOB.GET", &k("job"), &job.to_string()]);
    for f in ["state", "request", "holder", "token"] {
        out.push(("job", Snap::Exact(field(&got, f))));
    }
    out.push(("job ttl", Snap::Ttl(as_int(&field(&got, "ttl")))));
    out.push(("job info", Snap::Exact(val(cc, &["JOB.INFO", &k("job")]))));
    out
}

/// Clients blocked on the source node when their key migrates away are answered at once with
/// a redirection to the node that now serves the key — never granted a new lease on the
/// source, which no longer owns the slot. A cluster client follows the redirection and waits
/// on the new node instead. Waiters on a key that does not exist (a JOB.PULL on an empty
/// store: nothing to migrate) are redirected too, within a second.
#[test]
fn waiters_of_a_migrating_key_are_redirected_not_granted() {
    let cl = Cluster::start();
    let (src, dst) = (2, 0);
    let slot = cl.lowest_slot(src);
    let tag = tag_in_slot(slot);
    let lock = format!("{{{tag}}}:lock");
    let sem = format!("{{{tag}}}:sem");
    let jobs = format!("{{{tag}}}:jobs"); // never created: an empty store
    let mut cc = cl.client();
    let t_a = int(&mut cc, &["RESV.LOCK", &lock, "a", "20000"]);
    int(&mut cc, &["SEM.ACQUIRE", &sem, "a", "1", "20000"]);

    // Plain clients blocked on the source, one per family…
    let plain = |args: &[&str]| {
        let mut c = cl.nodes[src].conn();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        thread::spawn(move || {
            let started = Instant::now();
            let r: redis::RedisResult<Value> = redis::cmd(&args[0]).arg(&args[1..]).query(&mut c);
            (r, started.elapsed())
        })
    };
    let w_lock = plain(&["RESV.LOCK", &lock, "b", "10000", "BLOCK", "30000"]);
    let w_sem = plain(&["SEM.ACQUIRE", &sem, "b", "1", "10000", "BLOCK", "30000"]);
    let w_job = plain(&["JOB.PULL", &jobs, "w1", "10000", "BLOCK", "0"]);
    // … and cluster clients, which will follow the redirection.
    let clustered = |args: &[&str]| {
        let mut c = cl.client();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        thread::spawn(move || -> Value {
            cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .query(&mut c)
                .unwrap()
        })
    };
    let c_lock = clustered(&["RESV.LOCK", &lock, "c", "10000", "BLOCK", "30000"]);
    let c_job = clustered(&["JOB.PULL", &jobs, "w2", "10000", "BLOCK", "0"]);
    wait_until(Duration::from_secs(10), "5 waiters on the source", || {
        corral_info(&cl.nodes[src], "resv_waiting") == 2
            && corral_info(&cl.nodes[src], "sem_waiting") == 1
            && corral_info(&cl.nodes[src], "job_waiting") == 2
    });
    let grants = || {
        ["resv", "sem", "job"]
            .iter()
            .map(|f| corral_info(&cl.nodes[src], &format!("{f}_grants")))
            .sum::<u64>()
    };
    let src_grants = grants();

    cl.reshard(src, dst, 1);
    let dst_port = cl.nodes[dst].port();
    for (what, w) in [
        ("RESV.LOCK", w_lock),
        ("SEM.ACQUIRE", w_sem),
        ("JOB.PULL", w_job),
    ] {
        let (r, waited) = w.join().unwrap();
        let e = match r {
            Ok(v) => {
                panic!("{what} waiter on the source was answered {v:?} instead of a redirection")
            }
            Err(e) => e,
        };
        let detail = e.detail().unwrap_or("");
        assert!(matches!(e.code(), Some("ASK" | "MOVED")), "{what}: {e}");
        assert_eq!(
            detail,
            format!("{slot} 127.0.0.1:{dst_port}"),
            "{what}: {e}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "{what} answered only after {waited:?}"
        );
        eprintln!("{what} waiter on the source: answered `{e}` after {waited:?}");
    }
    // Nothing was granted on the source, and it holds no key of the slot it gave away.
    assert_eq!(grants(), src_grants);
    assert_eq!(
        int(
            &mut cl.nodes[src].conn(),
            &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]
        ),
        0
    );
    assert_eq!(corral_info(&cl.nodes[src], "resv_waiting"), 0);
    assert_eq!(corral_info(&cl.nodes[src], "job_waiting"), 0);

    // The cluster clients followed the redirection and now wait on the new node: one gets the
    // lock when `a` lets go there, under a larger token; the other gets the first new job.
    wait_until(
        Duration::from_secs(10),
        "the cluster clients wait on the new node",
        || {
            corral_info(&cl.nodes[dst], "resv_waiting") == 1
                && corral_info(&cl.nodes[dst], "job_waiting") == 1
        },
    );
    let info = val(&mut cc, &["RESV.INFO", &lock]);
    assert_eq!(as_str(&field(&info, "holder")), "a");
    assert_eq!(as_int(&field(&info, "token")), t_a);
    assert_eq!(int(&mut cc, &["RESV.RELEASE", &lock, "a"]), 1);
    let t_c = as_int(&c_lock.join().unwrap());
    assert!(t_c > t_a);
    let id = int(&mut cc, &["JOB.CREATE", &jobs, "req"]);
    let pulled = array(&c_job.join().unwrap());
    assert_eq!(as_int(&pulled[0]), id);
    assert_eq!(corral_info(&cl.nodes[src], "contained_panics"), 0);
    assert_eq!(corral_info(&cl.nodes[dst], "contained_panics"), 0);
}

/// A job store with delayed, failed (dead-letter), retained and unique jobs moves with its
/// slot byte for byte (same digest); the new node promotes the delayed job at its due time
/// and hands it to a puller blocked there, and the dead letter, reasons and names still work.
#[test]
fn reshard_moves_a_job_store_with_delayed_and_failed_jobs() {
    let cl = Cluster::start();
    let (src, dst) = (0, 2);
    let slot = cl.lowest_slot(src);
    let key = format!("{{{}}}:queue", tag_in_slot(slot));
    let k = key.as_str();
    let mut cc = cl.client();
    let delay_ms = 8_000u64;
    let t0 = Instant::now();
    let delayed = int(
        &mut cc,
        &[
            "JOB.CREATE",
            k,
            "later",
            "DELAY",
            &delay_ms.to_string(),
            "PRIORITY",
            "3",
        ],
    );
    let failed = int(
        &mut cc,
        &[
            "JOB.CREATE",
            k,
            "poison",
            "ATTEMPTS",
            "1",
            "PRIORITY",
            "9",
            "UNIQUE",
            "p",
        ],
    );
    let pulled = array(&val(&mut cc, &["JOB.PULL", k, "w", "30000"]));
    assert_eq!(as_int(&pulled[0]), failed);
    let state = val(&mut cc, &["JOB.FAIL", k, &failed.to_string(), "w", "boom"]);
    assert_eq!(as_str(&state), "failed");
    let kept = int(&mut cc, &["JOB.CREATE", k, "kept", "KEEP", "600000"]);
    int(&mut cc, &["JOB.FULFILL", k, &kept.to_string(), "v"]);
    let digest = |c: &mut Connection| val(c, &["DEBUG", "DIGEST-VALUE", k]);
    let before = digest(&mut cl.nodes[src].conn());
    let info_before = val(&mut cc, &["JOB.INFO", k]);

    cl.reshard(src, dst, 1);
    assert_eq!(cl.owner(slot), dst, "the slot moved");
    let mut d = cl.nodes[dst].conn();
    assert_eq!(digest(&mut d), before, "the same value on the new node");
    assert_eq!(val(&mut cc, &["JOB.INFO", k]), info_before);
    let job = val(&mut cc, &["JOB.GET", k, &failed.to_string()]);
    assert_eq!(as_str(&field(&job, "state")), "failed");
    assert_eq!(as_str(&field(&job, "reason")), "boom");
    assert_eq!(
        int(&mut cc, &["JOB.CREATE", k, "again", "UNIQUE", "p"]),
        failed
    );
    let later = val(&mut cc, &["JOB.GET", k, &delayed.to_string()]);
    assert_eq!(as_str(&field(&later, "state")), "delayed", "not due yet");
    assert!(
        t0.elapsed() < Duration::from_millis(delay_ms - 2_000),
        "the reshard took {:?}: too slow to watch the promotion happen after it",
        t0.elapsed()
    );
    // A puller blocked on the new node is handed the delayed job when it falls due there.
    let got = val(&mut d, &["JOB.PULL", k, "w2", "30000", "BLOCK", "20000"]);
    let late = t0.elapsed().saturating_sub(Duration::from_millis(delay_ms));
    assert_eq!(as_int(&array(&got)[0]), delayed);
    assert!(t0.elapsed() >= Duration::from_millis(delay_ms - 100));
    assert!(
        late < Duration::from_millis(1_500),
        "promoted {late:?} late"
    );
    assert_eq!(int(&mut cc, &["JOB.RETRY", k, &failed.to_string()]), 1);
    assert_eq!(corral_info(&cl.nodes[dst], "contained_panics"), 0);
}
