//! Contention checker: 100 clients, each a thread with its own connection, fight over a few
//! RESV, SEM and SLOT keys with random TTLs, renewals, releases, short BLOCK waits and abandoned
//! leases, while a killer thread `CLIENT KILL ID`s random workers' connections (a killed worker
//! reconnects under a new identity). Every grant is recorded with its token and a *conservative*
//! validity interval, and the history is checked afterwards:
//!
//! - RESV: never two holders of a key at once;
//! - SEM: never more permits in use than the capacity;
//! - SLOT: never one slot of a pool held twice, never a slot ≥ LIMIT;
//! - tokens strictly increase per key in grant order, and are never repeated;
//! - a lease is never reported lost (`-NOTHELD` on RENEW/RELEASE) before its deadline;
//! - every BLOCK waiter is answered (a grant or nil) within its timeout + a margin;
//! - no unexpected replies; the server is alive and has contained no panic.
//!
//! **Intervals.** Times are the client's monotonic clock. A grant's interval is
//! `[t_recv, end)`: it starts when the grant's reply was *received* (the server granted before
//! that) and ends at the earliest of
//! - `t_send + ttl − ε` of the command that set its current deadline (the grant, or the last
//!   renewal acknowledged): the server set the deadline to (its now ≥ `t_send`) + ttl, and its
//!   clock has millisecond resolution, hence `ε` = 2 ms;
//! - the *send* time of a RELEASE / PUT (acknowledged or not: the server cannot free it before
//!   the command was sent; the ack time would be too late, as the next holder may be granted and
//!   hear of it before our ack arrives);
//! - for a renewal whose reply was lost to a kill: the shorter of the two deadlines.
//!
//! Every interval is therefore inside the time the server really considered the lease held
//! (network and scheduling delays only shrink it), so any overlap reported is a real violation.
//! Each acquire uses a fresh holder id, so an idempotent re-grant can never make a new grant
//! look like an old one.
//!
//! `CORRAL_CONTENTION_SECS` (default 20) sets how long the clients run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::assert_alive;
use common::Server;
use redis::{Connection, RedisError, Value};

const WORKERS: usize = 100;
const RESV_KEYS: &[&str] = &["c:resv:0", "c:resv:1", "c:resv:2"];
const SEM_KEYS: &[&str] = &["c:sem:0", "c:sem:1"];
const SEM_CAPACITY: u32 = 3;
const SLOT_KEYS: &[&str] = &["c:slot:0", "c:slot:1"];
const SLOT_LIMIT: u64 = 4;
/// The server's clock has millisecond resolution: a deadline may be up to this much (µs)
/// earlier than `t_send + ttl` on our clock.
const EPSILON_US: u64 = 2_000;
/// How late past its BLOCK timeout a waiter may be answered (thread scheduling on a busy
/// machine with 100 clients), and the connections' read timeout beyond the longest wait.
const WAIT_MARGIN: Duration = Duration::from_millis(1_500);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A small deterministic RNG (splitmix64): the run's seed is printed to replay its choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Family {
    Resv,
    Sem,
    Slot,
}

/// One grant as the client saw it.
#[derive(Clone, Debug)]
struct Grant {
    family: Family,
    key: &'static str,
    worker: usize,
    holder: String,
    token: i64,
    permits: u32,
    slot: Option<u64>,
    /// When the acquire was sent / its grant received (µs on the run's clock).
    t_send: u64,
    t_recv: u64,
    /// The conservative end of validity (µs).
    end: u64,
    /// What happened to it, with times, for violation reports.
    history: Vec<(u64, String)>,
}

impl Grant {
    fn live(&self) -> bool {
        self.end > self.t_recv
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{:?} {} holder {} (worker {}) token {}{}{} — valid [{} … {}) ms",
            self.family,
            self.key,
            self.holder,
            self.worker,
            self.token,
            if self.family == Family::Sem {
                format!(" permits {}", self.permits)
            } else {
                String::new()
            },
            self.slot.map(|s| format!(" slot {s}")).unwrap_or_default(),
            ms(self.t_recv),
            ms(self.end),
        );
        for (t, what) in &self.history {
            let _ = write!(s, "\n      {:>12} ms  {what}", ms(*t));
        }
        s
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// What one worker observed.
#[derive(Default)]
struct Log {
    grants: Vec<Grant>,
    /// Violations seen while running (waits past their timeout, early NOTHELD, odd replies).
    violations: Vec<String>,
    waits: u64,
    timeouts: u64,
    kills_seen: u64,
    max_overrun_us: u64,
}

struct Shared {
    epoch: Instant,
    stop: AtomicBool,
    /// Each worker's current CLIENT ID (0 while reconnecting).
    ids: Vec<AtomicU64>,
    url: String,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// How a command ended.
enum Outcome {
    Reply(Value),
    /// An error reply, e.g. "NOTHELD expired".
    Error(String),
    /// The connection failed (killed): the command may or may not have run.
    Lost,
}

fn classify(r: Result<Value, RedisError>) -> Outcome {
    match r {
        Ok(v) => Outcome::Reply(v),
        Err(e) if e.is_timeout() => Outcome::Error(format!(
            "TIMEOUT no reply within the read timeout ({READ_TIMEOUT:?}): {e}"
        )),
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
            Outcome::Lost
        }
        Err(e) => Outcome::Error(format!(
            "{} {}",
            e.code().unwrap_or("?"),
            e.detail().unwrap_or("")
        )),
    }
}

fn connect(sh: &Shared, me: usize) -> Option<Connection> {
    let client = redis::Client::open(sh.url.as_str()).ok()?;
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .ok()?;
    c.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    c.set_write_timeout(Some(READ_TIMEOUT)).ok()?;
    let id: u64 = redis::cmd("CLIENT").arg("ID").query(&mut c).ok()?;
    sh.ids[me].store(id, Ordering::SeqCst);
    Some(c)
}

/// One worker: acquire, hold (sleep, renew), release or abandon, on random keys, until stopped.
fn worker(sh: Arc<Shared>, me: usize, seed: u64) -> Log {
    let mut rng = Rng(seed ^ (me as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut log = Log::default();
    let mut incarnation = 0u64;
    let mut seq = 0u64;
    'reconnect: while !sh.stop.load(Ordering::SeqCst) {
        sh.ids[me].store(0, Ordering::SeqCst);
        let Some(mut c) = connect(&sh, me) else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        incarnation += 1;
        while !sh.stop.load(Ordering::SeqCst) {
            seq += 1;
            let holder = format!("w{me}-i{incarnation}-s{seq}");
            let family = match rng.range(0, 9) {
                0..=3 => Family::Resv,
                4..=6 => Family::Sem,
                _ => Family::Slot,
            };
            let key = match family {
                Family::Resv => rng.pick(RESV_KEYS),
                Family::Sem => rng.pick(SEM_KEYS),
                Family::Slot => rng.pick(SLOT_KEYS),
            };
            let ttl = rng.range(50, 500);
            let block = rng.chance(60).then(|| rng.range(20, 300));
            let permits = if rng.chance(25) { 2 } else { 1 };
            let mut cmd = match family {
                Family::Resv => {
                    let mut c = redis::cmd("RESV.LOCK");
                    c.arg(key).arg(&holder).arg(ttl);
                    c
                }
                Family::Sem => {
                    let mut c = redis::cmd("SEM.ACQUIRE");
                    c.arg(key)
                        .arg(&holder)
                        .arg(SEM_CAPACITY)
                        .arg(ttl)
                        .arg("PERMITS")
                        .arg(permits);
                    c
                }
                Family::Slot => {
                    let mut c = redis::cmd("SLOT.GET");
                    c.arg(key)
                        .arg("HOLDER")
                        .arg(&holder)
                        .arg("TTL")
                        .arg(ttl)
                        .arg("LIMIT")
                        .arg(SLOT_LIMIT)
                        .arg("WITHTOKEN");
                    c
                }
            };
            if let Some(b) = block {
                cmd.arg("BLOCK").arg(b);
            }
            let t_send = sh.now();
            let outcome = classify(cmd.query::<Value>(&mut c));
            let t_recv = sh.now();
            if let Some(b) = block {
                log.waits += 1;
                let waited = t_recv - t_send;
                let limit = (b * 1000) as u128 + WAIT_MARGIN.as_micros();
                let overrun = waited.saturating_sub(b * 1000);
                log.max_overrun_us = log.max_overrun_us.max(overrun);
                if waited as u128 > limit && matches!(outcome, Outcome::Reply(_)) {
                    log.violations.push(format!(
                        "waiter {holder} on {key}: BLOCK {b} ms answered after {} ms (sent at {} ms)",
                        ms(waited),
                        ms(t_send)
                    ));
                }
            }
            let grant = match outcome {
                Outcome::Lost => {
                    log.kills_seen += 1;
                    continue 'reconnect;
                }
                Outcome::Error(e) => {
                    log.violations.push(format!(
                        "{holder}: acquire on {key} answered an error: {e} (sent at {} ms)",
                        ms(t_send)
                    ));
                    continue 'reconnect;
                }
                Outcome::Reply(Value::Nil) => {
                    if block.is_some() {
                        log.timeouts += 1;
                    }
                    thread::sleep(Duration::from_millis(rng.range(0, 20)));
                    continue;
                }
                Outcome::Reply(v) => {
                    let (token, slot) = match (family, &v) {
                        (Family::Resv | Family::Sem, Value::Int(t)) => (*t, None),
                        (Family::Slot, Value::Array(a)) => match a.as_slice() {
                            [Value::Int(s), Value::Int(t)] => (*t, Some(*s as u64)),
                            _ => (0, None),
                        },
                        _ => (0, None),
                    };
                    if token == 0 || (family == Family::Slot && slot.is_none()) {
                        log.violations.push(format!(
                            "{holder}: acquire on {key} answered {v:?} (sent at {} ms)",
                            ms(t_send)
                        ));
                        continue;
                    }
                    Grant {
                        family,
                        key,
                        worker: me,
                        holder: holder.clone(),
                        token,
                        permits: if family == Family::Sem { permits } else { 1 },
                        slot,
                        t_send,
                        t_recv,
                        end: (t_send + ttl * 1000).saturating_sub(EPSILON_US),
                        history: vec![
                            (
                                t_send,
                                format!(
                                    "acquire sent (ttl {ttl} ms{})",
                                    block.map(|b| format!(", BLOCK {b}")).unwrap_or_default()
                                ),
                            ),
                            (t_recv, "granted".to_string()),
                        ],
                    }
                }
            };
            let idx = log.grants.len();
            log.grants.push(grant);
            // Hold it: a few rounds of work, each maybe renewing; then release or abandon.
            let rounds = rng.range(0, 2);
            let mut lost = false;
            for _ in 0..rounds {
                let g = &log.grants[idx];
                let ttl_now = g.end.saturating_sub(sh.now()) / 1000;
                thread::sleep(Duration::from_millis(
                    rng.range(0, (ttl_now * 9 / 10).max(1)),
                ));
                if !rng.chance(60) {
                    continue;
                }
                let ttl2 = rng.range(50, 500);
                let cmd = match family {
                    Family::Resv => {
                        let mut c = redis::cmd("RESV.RENEW");
                        c.arg(key).arg(&holder).arg(ttl2);
                        c
                    }
                    Family::Sem => {
                        let mut c = redis::cmd("SEM.RENEW");
                        c.arg(key).arg(&holder).arg(ttl2);
                        c
                    }
                    Family::Slot => {
                        let mut c = redis::cmd("SLOT.RENEW");
                        c.arg(key)
                            .arg(g.slot.unwrap_or(0))
                            .arg(ttl2)
                            .arg("HOLDER")
                            .arg(&holder);
                        c
                    }
                };
                let t_s = sh.now();
                let outcome = classify(cmd.query::<Value>(&mut c));
                let t_r = sh.now();
                let new_end = (t_s + ttl2 * 1000).saturating_sub(EPSILON_US);
                let g = &mut log.grants[idx];
                match outcome {
                    Outcome::Reply(Value::Int(1)) => {
                        // The deadline is now (server now ≥ t_s) + ttl2 — possibly shorter.
                        g.end = new_end;
                        g.history.push((t_s, format!("renew sent (ttl {ttl2} ms)")));
                        g.history.push((t_r, "renew ok".to_string()));
                    }
                    Outcome::Error(e) if e.starts_with("NOTHELD") => {
                        g.history.push((t_s, format!("renew sent (ttl {ttl2} ms)")));
                        g.history.push((t_r, format!("renew: {e}")));
                        if t_r < g.end {
                            log.violations.push(format!(
                                "lease reported lost before its deadline:\n    {}",
                                g.describe()
                            ));
                        }
                        lost = true;
                        break;
                    }
                    Outcome::Lost => {
                        // Applied or not: the lease ends at the earlier of the two deadlines.
                        g.end = g.end.min(new_end);
                        g.history.push((
                            t_s,
                            format!("renew sent (ttl {ttl2} ms), connection killed"),
                        ));
                        log.kills_seen += 1;
                        continue 'reconnect;
                    }
                    other => {
                        let what = match other {
                            Outcome::Reply(v) => format!("{v:?}"),
                            Outcome::Error(e) => e,
                            Outcome::Lost => unreachable!(),
                        };
                        log.violations.push(format!(
                            "{holder}: renew on {key} answered {what} (sent at {} ms)",
                            ms(t_s)
                        ));
                        continue 'reconnect;
                    }
                }
            }
            if lost || !rng.chance(80) {
                continue; // abandoned: it lapses at its deadline
            }
            let g = &log.grants[idx];
            let cmd = match family {
                Family::Resv => {
                    let mut c = redis::cmd("RESV.RELEASE");
                    c.arg(key).arg(&holder);
                    c
                }
                Family::Sem => {
                    let mut c = redis::cmd("SEM.RELEASE");
                    c.arg(key).arg(&holder);
                    c
                }
                Family::Slot => {
                    let mut c = redis::cmd("SLOT.PUT");
                    c.arg(key)
                        .arg(g.slot.unwrap_or(0))
                        .arg("HOLDER")
                        .arg(&holder);
                    c
                }
            };
            let t_s = sh.now();
            let outcome = classify(cmd.query::<Value>(&mut c));
            let t_r = sh.now();
            let g = &mut log.grants[idx];
            // The server cannot free it before the command was sent.
            let old_end = g.end;
            g.end = g.end.min(t_s);
            g.history.push((t_s, "release sent".to_string()));
            match outcome {
                Outcome::Reply(Value::Int(1)) => g.history.push((t_r, "release ok".to_string())),
                Outcome::Error(e) if e.starts_with("NOTHELD") => {
                    g.history.push((t_r, format!("release: {e}")));
                    if t_r < old_end {
                        log.violations.push(format!(
                            "lease reported lost before its deadline:\n    {}",
                            g.describe()
                        ));
                    }
                }
                Outcome::Lost => {
                    g.history.push((t_r, "connection killed".to_string()));
                    log.kills_seen += 1;
                    continue 'reconnect;
                }
                Outcome::Reply(v) => {
                    log.violations.push(format!(
                        "{holder}: release on {key} answered {v:?} (sent at {} ms)",
                        ms(t_s)
                    ));
                }
                Outcome::Error(e) => {
                    log.violations.push(format!(
                        "{holder}: release on {key} answered {e} (sent at {} ms)",
                        ms(t_s)
                    ));
                    continue 'reconnect;
                }
            }
            thread::sleep(Duration::from_millis(rng.range(0, 10)));
        }
    }
    sh.ids[me].store(0, Ordering::SeqCst);
    log
}

/// Kills a random worker's connection every 20–100 ms.
fn killer(sh: Arc<Shared>, seed: u64) -> u64 {
    let mut rng = Rng(seed ^ 0xDEAD_BEEF);
    let mut kills = 0;
    let client = redis::Client::open(sh.url.as_str()).expect("client");
    let mut c = client.get_connection().expect("killer connection");
    while !sh.stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(rng.range(20, 100)));
        let id = sh.ids[(rng.next() % WORKERS as u64) as usize].load(Ordering::SeqCst);
        if id == 0 {
            continue;
        }
        let r: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut c);
        if let Ok(n) = r {
            kills += n as u64;
        }
    }
    kills
}

/// Pairs of live grants whose intervals overlap, within each group (`group` of a grant; None
/// = not checked). Sorted by start, each grant is compared with the one that ends last among
/// those before it.
fn overlaps<G: Ord>(grants: &[Grant], group: impl Fn(&Grant) -> G) -> Vec<(&Grant, &Grant)> {
    let mut by: BTreeMap<G, Vec<&Grant>> = BTreeMap::new();
    for g in grants.iter().filter(|g| g.live()) {
        by.entry(group(g)).or_default().push(g);
    }
    let mut out = Vec::new();
    for (_, mut v) in by {
        v.sort_by_key(|g| (g.t_recv, g.end));
        let mut last: Option<&Grant> = None;
        for g in v {
            if let Some(l) = last {
                if g.t_recv < l.end {
                    out.push((l, g));
                }
                if g.end > l.end {
                    last = Some(g);
                }
            } else {
                last = Some(g);
            }
        }
    }
    out
}

/// SEM: instants where the live grants of a key hold more permits than the capacity (the
/// grants held at the first such instant of each episode).
fn over_capacity(grants: &[Grant]) -> Vec<(u64, Vec<&Grant>)> {
    let mut by: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants
        .iter()
        .filter(|g| g.family == Family::Sem && g.live())
    {
        by.entry(g.key).or_default().push(g);
    }
    let mut out = Vec::new();
    for (_, v) in by {
        // (time, 0 = end before 1 = start at equal times, index)
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, g) in v.iter().enumerate() {
            events.push((g.t_recv, 1, i));
            events.push((g.end, 0, i));
        }
        events.sort();
        let mut held: u32 = 0;
        let mut active: Vec<usize> = Vec::new();
        let mut reported = false;
        for (t, kind, i) in events {
            if kind == 0 {
                held -= v[i].permits;
                active.retain(|&a| a != i);
                if held <= SEM_CAPACITY {
                    reported = false;
                }
            } else {
                held += v[i].permits;
                active.push(i);
                if held > SEM_CAPACITY && !reported {
                    reported = true;
                    out.push((t, active.iter().map(|&a| v[a]).collect()));
                }
            }
        }
    }
    out
}

/// Tokens per key: strictly increasing in grant order (a grant received before another was
/// requested has the smaller token) and never repeated.
fn token_violations(grants: &[Grant]) -> Vec<String> {
    let mut by: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants {
        by.entry(g.key).or_default().push(g);
    }
    let mut out = Vec::new();
    for (key, v) in by {
        let mut seen: HashMap<i64, &Grant> = HashMap::new();
        for g in &v {
            if let Some(o) = seen.insert(g.token, g) {
                out.push(format!(
                    "{key}: token {} issued twice:\n    {}\n    {}",
                    g.token,
                    o.describe(),
                    g.describe()
                ));
            }
        }
        let mut by_recv = v.clone();
        by_recv.sort_by_key(|g| g.t_recv);
        let mut by_send = v;
        by_send.sort_by_key(|g| g.t_send);
        let mut i = 0;
        let mut max: Option<&Grant> = None;
        for b in by_send {
            while i < by_recv.len() && by_recv[i].t_recv < b.t_send {
                if max.is_none_or(|m| by_recv[i].token > m.token) {
                    max = Some(by_recv[i]);
                }
                i += 1;
            }
            if let Some(a) = max {
                if a.token >= b.token {
                    out.push(format!(
                        "{key}: token {} granted after token {} was received:\n    {}\n    {}",
                        b.token,
                        a.token,
                        a.describe(),
                        b.describe()
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn hundred_clients_contend_with_kills_and_nothing_is_ever_held_twice() {
    let secs: u64 = std::env::var("CORRAL_CONTENTION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CORRAL_CONTENTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("contention: {WORKERS} clients for {secs} s, seed {seed} (CORRAL_CONTENTION_SEED)");
    let srv = Server::start();
    let sh = Arc::new(Shared {
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        ids: (0..WORKERS).map(|_| AtomicU64::new(0)).collect(),
        url: srv.url(),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|me| {
            let sh = sh.clone();
            thread::Builder::new()
                .name(format!("worker-{me}"))
                .spawn(move || worker(sh, me, seed))
                .expect("spawning a worker")
        })
        .collect();
    let k = {
        let sh = sh.clone();
        thread::spawn(move || killer(sh, seed))
    };
    thread::sleep(Duration::from_secs(secs));
    sh.stop.store(true, Ordering::SeqCst);
    let kills = k.join().expect("killer thread");
    let logs: Vec<Log> = workers
        .into_iter()
        .map(|w| w.join().expect("a worker thread panicked"))
        .collect();

    let grants: Vec<Grant> = logs.iter().flat_map(|l| l.grants.iter().cloned()).collect();
    let mut violations: Vec<String> = logs.iter().flat_map(|l| l.violations.clone()).collect();
    for (a, b) in overlaps(&grants, |g| (g.family == Family::Resv).then_some(g.key)) {
        if a.family == Family::Resv {
            violations.push(format!(
                "RESV {}: two holders at once:\n    {}\n    {}",
                a.key,
                a.describe(),
                b.describe()
            ));
        }
    }
    for (a, b) in overlaps(&grants, |g| {
        (g.family == Family::Slot).then_some((g.key, g.slot))
    }) {
        if a.family == Family::Slot {
            violations.push(format!(
                "SLOT {} slot {:?}: held twice at once:\n    {}\n    {}",
                a.key,
                a.slot,
                a.describe(),
                b.describe()
            ));
        }
    }
    for g in grants
        .iter()
        .filter(|g| g.slot.is_some_and(|s| s >= SLOT_LIMIT))
    {
        violations.push(format!(
            "slot beyond LIMIT {SLOT_LIMIT}:\n    {}",
            g.describe()
        ));
    }
    for (t, held) in over_capacity(&grants) {
        let mut s = format!(
            "SEM {}: {} permits held at {} ms (capacity {SEM_CAPACITY}):",
            held[0].key,
            held.iter().map(|g| g.permits).sum::<u32>(),
            ms(t)
        );
        for g in held {
            let _ = write!(s, "\n    {}", g.describe());
        }
        violations.push(s);
    }
    violations.extend(token_violations(&grants));

    let count = |f: Family| grants.iter().filter(|g| g.family == f).count();
    let sum = |f: fn(&Log) -> u64| logs.iter().map(f).sum::<u64>();
    println!(
        "contention: {} grants (resv {}, sem {}, slot {}), {} BLOCK waits ({} timed out), \
         {} kills ({} noticed by their workers), latest waiter answered {} ms past its timeout, \
         {} violations",
        grants.len(),
        count(Family::Resv),
        count(Family::Sem),
        count(Family::Slot),
        sum(|l| l.waits),
        sum(|l| l.timeouts),
        kills,
        sum(|l| l.kills_seen),
        ms(logs.iter().map(|l| l.max_overrun_us).max().unwrap_or(0)),
        violations.len()
    );

    let mut c = srv.conn();
    assert_alive(&srv, &mut c);
    assert!(
        violations.is_empty(),
        "{} violations (seed {seed}); the first ones:\n{}",
        violations.len(),
        violations
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // The run did contend: every family granted a lot, waiters waited and timed out, kills hit.
    for f in [Family::Resv, Family::Sem, Family::Slot] {
        assert!(count(f) >= 100, "only {} {f:?} grants", count(f));
    }
    assert!(sum(|l| l.timeouts) > 0 && kills > 0);
}
