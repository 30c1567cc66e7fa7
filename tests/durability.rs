//! Durability across crashes, snapshots, AOF rewrites and failover, for every family.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::client::{field, int};
use common::{Server, ServerOptions};
use redis::{Connection, Value};

fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        v => panic!("{v:?}"),
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        v => panic!("{v:?}"),
    }
}

fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

/// What one workload thread saw acknowledged. The op in flight when the server died is
/// `uncertain`: it may or may not have been applied, so it is not checked.
#[derive(Default)]
struct Acked {
    /// RESV key → (holder, token) held; keys released.
    locks: HashMap<String, (String, i64)>,
    unlocked: HashSet<String>,
    /// SEM holder → token; holders released.
    permits: HashMap<String, i64>,
    unpermitted: HashSet<String>,
    /// SLOT slot → holder.
    slots: HashMap<i64, String>,
    /// JOB id → fulfilled value (None = pending).
    jobs: HashMap<i64, Option<String>>,
    /// ALLOC job → instance.
    allocations: HashMap<String, String>,
    uncertain: Option<String>,
    max_token: i64,
    /// The error that ended the workload (the server went away, or a bug), if one did.
    error: Option<redis::RedisError>,
}

impl Acked {
    /// Acknowledged grants, jobs and allocations.
    fn ops(&self) -> usize {
        self.locks.len()
            + self.unlocked.len()
            + self.permits.len()
            + self.unpermitted.len()
            + self.slots.len()
            + self.jobs.len()
            + self.allocations.len()
    }
}

/// Runs one family's workload until an error (the server died) or `stop`, pausing `pace`
/// between operations.
fn workload(
    port: u16,
    family: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    pace: Duration,
) -> Acked {
    let mut a = Acked::default();
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return a;
    };
    let Ok(mut c) = client.get_connection() else {
        return a;
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let n = format!("{round}-{i}");
        let ok = match family {
            0 => {
                let key = format!("r:{n}");
                a.uncertain = Some(key.clone());
                let r: redis::RedisResult<i64> = redis::cmd("RESV.LOCK")
                    .arg(&key)
                    .arg("h")
                    .arg(600_000)
                    .query(&mut c);
                r.map(|t| {
                    a.max_token = a.max_token.max(t);
                    a.locks.insert(key.clone(), ("h".into(), t));
                })
                .and_then(|_| {
                    if !i.is_multiple_of(3) {
                        return Ok(());
                    }
                    let r: redis::RedisResult<i64> =
                        redis::cmd("RESV.RELEASE").arg(&key).arg("h").query(&mut c);
                    r.map(|_| {
                        a.locks.remove(&key);
                        a.unlocked.insert(key.clone());
                    })
                })
            }
            1 => {
                let h = format!("p{n}");
                a.uncertain = Some(h.clone());
                let r: redis::RedisResult<i64> = redis::cmd("SEM.ACQUIRE")
                    .arg("sem")
                    .arg(&h)
                    .arg(1_000_000)
                    .arg(600_000)
                    .query(&mut c);
                r.map(|t| {
                    a.max_token = a.max_token.max(t);
                    a.permits.insert(h.clone(), t);
                })
                .and_then(|_| {
                    if !i.is_multiple_of(3) {
                        return Ok(());
                    }
                    let r: redis::RedisResult<i64> =
                        redis::cmd("SEM.RELEASE").arg("sem").arg(&h).query(&mut c);
                    r.map(|_| {
                        a.permits.remove(&h);
                        a.unpermitted.insert(h.clone());
                    })
                })
            }
            2 => {
                let h = format!("s{n}");
                a.uncertain = Some(h.clone());
                let r: redis::RedisResult<(i64, i64)> = redis::cmd("SLOT.GET")
                    .arg("pool")
                    .arg("HOLDER")
                    .arg(&h)
                    .arg("TTL")
                    .arg(600_000)
                    .arg("WITHTOKEN")
                    .query(&mut c);
                r.map(|(slot, t)| {
                    a.max_token = a.max_token.max(t);
                    a.slots.insert(slot, h.clone());
                    a.uncertain = Some(format!("slot {slot}"));
                })
                .and_then(|_| {
                    if !i.is_multiple_of(3) {
                        return Ok(());
                    }
                    let slot = *a
                        .slots
                        .iter()
                        .find(|(_, v)| **v == h)
                        .map(|(k, _)| k)
                        .unwrap_or(&-1);
                    let r: redis::RedisResult<i64> = redis::cmd("SLOT.PUT")
                        .arg("pool")
                        .arg(slot)
                        .arg("HOLDER")
                        .arg(&h)
                        .query(&mut c);
                    r.map(|_| {
                        a.slots.remove(&slot);
                    })
                })
            }
            3 => {
                a.uncertain = Some("job".into());
                let r: redis::RedisResult<i64> =
                    redis::cmd("JOB.CREATE").arg("jobs").arg(&n).query(&mut c);
                r.inspect(|&id| {
                    a.jobs.insert(id, None);
                    a.uncertain = Some(format!("job {id}"));
                })
                .and_then(|id| {
                    if !i.is_multiple_of(2) {
                        return Ok(());
                    }
                    let r: redis::RedisResult<i64> = redis::cmd("JOB.FULFILL")
                        .arg("jobs")
                        .arg(id)
                        .arg(&n)
                        .query(&mut c);
                    r.map(|_| {
                        a.jobs.insert(id, Some(n.clone()));
                    })
                })
            }
            _ => {
                let job = format!("j{n}");
                a.uncertain = Some(job.clone());
                let r: redis::RedisResult<(String, i64)> = redis::cmd("ALLOC.ALLOCATE")
                    .arg("alloc")
                    .arg(&job)
                    .query(&mut c);
                r.map(|(inst, _)| {
                    a.allocations.insert(job.clone(), inst);
                })
            }
        };
        if let Err(e) = ok {
            a.error = Some(e); // the server went away mid-operation
            return a;
        }
        a.uncertain = None;
        if !pace.is_zero() {
            thread::sleep(pace);
        }
    }
    a
}

/// Checks that the server holds everything acknowledged, except what `uncertain` names (ops in
/// flight when a crash happened: applied or not, nobody was told).
fn verify(c: &mut Connection, acked: &[Acked], uncertain: &HashSet<String>) {
    let sem: Vec<Value> = redis::cmd("SEM.HOLDERS").arg("sem").query(c).unwrap();
    let sem_holders: HashMap<String, i64> = sem
        .chunks(4)
        .map(|r| (as_str(&r[0]), as_int(&r[3])))
        .collect();
    for a in acked {
        for (key, (holder, token)) in &a.locks {
            if uncertain.contains(key) {
                continue;
            }
            let v: Value = redis::cmd("RESV.INFO").arg(key).query(c).unwrap();
            assert_eq!(
                (as_str(&field(&v, "holder")), as_int(&field(&v, "token"))),
                (holder.clone(), *token),
                "{key}"
            );
        }
        for key in a.unlocked.iter().filter(|k| !uncertain.contains(*k)) {
            let v: Value = redis::cmd("RESV.INFO").arg(key).query(c).unwrap();
            assert_eq!(field(&v, "holder"), Value::Nil, "{key} was released");
        }
        for (h, t) in &a.permits {
            if !uncertain.contains(h) {
                assert_eq!(sem_holders.get(h), Some(t), "permit {h}");
            }
        }
        for h in a.unpermitted.iter().filter(|h| !uncertain.contains(*h)) {
            assert!(!sem_holders.contains_key(h), "permit {h} was released");
        }
        for (slot, holder) in &a.slots {
            if uncertain.contains(&format!("slot {slot}")) || uncertain.contains(holder) {
                continue;
            }
            let v: Vec<Value> = redis::cmd("SLOT.HOLDER")
                .arg("pool")
                .arg(slot)
                .query(c)
                .unwrap();
            assert_eq!(as_str(&v[0]), *holder, "slot {slot}");
        }
        for (id, value) in &a.jobs {
            if uncertain.contains(&format!("job {id}")) {
                continue;
            }
            let job: Value = redis::cmd("JOB.GET").arg("jobs").arg(id).query(c).unwrap();
            match value {
                Some(v) => assert_eq!(as_str(&field(&job, "value")), *v, "job {id}"),
                None => assert_eq!(as_str(&field(&job, "state")), "pending", "job {id}"),
            }
        }
        for (job, inst) in &a.allocations {
            if uncertain.contains(job) {
                continue;
            }
            let v: Value = redis::cmd("ALLOC.INSTANCE")
                .arg("alloc")
                .arg(job)
                .query(c)
                .unwrap();
            assert_eq!(as_str(&v), *inst, "{job}");
        }
    }
}

#[test]
fn acknowledged_state_survives_kill9_with_aof_three_times() {
    let mut s = Server::start_with(
        ServerOptions::new()
            .config("appendonly", "yes")
            .config("appendfsync", "always"),
    );
    let mut c = s.conn();
    for i in 0..4 {
        int(&mut c, &["ALLOC.AVAILABLE", "alloc", &format!("i{i}")]);
    }
    drop(c);
    let mut all: Vec<Acked> = Vec::new();
    let mut uncertain = HashSet::new();
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..5)
            .map(|family| {
                let (port, stop) = (s.port(), stop.clone());
                thread::spawn(move || workload(port, family, round, stop, Duration::ZERO))
            })
            .collect();
        thread::sleep(Duration::from_millis(400));
        s.kill9_and_restart(); // mid-load: every thread is in the middle of something
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let a = t.join().unwrap();
            if let Some(e) = &a.error {
                // Only the crash may end a workload: not an error reply.
                assert!(e.is_io_error() || e.is_unrecoverable_error(), "{e:?}");
            }
            uncertain.extend(a.uncertain.clone());
            all.push(a);
        }
        let mut c = s.conn();
        // Everything acknowledged in this round and the earlier ones is there.
        verify(&mut c, &all, &uncertain);
        // Tokens keep increasing across the crash.
        let max = all.iter().map(|a| a.max_token).max().unwrap_or(0);
        let t: i64 = redis::cmd("RESV.LOCK")
            .arg(format!("after{round}"))
            .arg("x")
            .arg(1000)
            .query(&mut c)
            .unwrap();
        assert!(t > max, "token {t} after crash ≤ {max}");
    }
    let acked_ops: usize = all
        .iter()
        .map(|a| a.locks.len() + a.permits.len() + a.jobs.len())
        .sum();
    assert!(acked_ops > 50, "the workload did something: {acked_ops}");
}

#[test]
fn rdb_snapshot_restores_what_it_covered() {
    let mut s = Server::start_with(
        ServerOptions::new()
            .config("save", "")
            .config("appendonly", "no"),
    );
    let mut c = s.conn();
    populate(&mut c);
    let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
    let before = digest(&mut c);
    // Written after the snapshot: lost in the crash.
    int(&mut c, &["JOB.CREATE", "jobs", "after-save"]);
    drop(c);
    s.kill9_and_restart();
    let mut c = s.conn();
    assert_eq!(digest(&mut c), before);
}

#[test]
fn aof_rewrite_during_load_then_restart_is_equal() {
    let mut s = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let mut c = s.conn();
    for i in 0..4 {
        int(&mut c, &["ALLOC.AVAILABLE", "alloc", &format!("i{i}")]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..5)
        .map(|family| {
            let (port, stop) = (s.port(), stop.clone());
            // A few thousand operations a second: enough to write all through the rewrite,
            // few enough to check each one afterwards.
            thread::spawn(move || workload(port, family, 0, stop, Duration::from_micros(500)))
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    // Slow the rewrite down (the child sleeps after each key it writes) so that it takes about
    // a second, and the load goes on while it runs.
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let delay_us = (1_000_000 / keys.max(1)).max(1);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(delay_us)
        .query(&mut c)
        .unwrap();
    let _: Value = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
    let rewrite_started = std::time::Instant::now();
    // Writes of every family that the server applied while the rewrite was running: each is
    // sent after INFO says the rewrite runs, and INFO says so again after its reply.
    let in_progress = || {
        s.info_field("persistence", "aof_rewrite_in_progress")
            .as_deref()
            == Some("1")
    };
    common::wait_until(Duration::from_secs(10), "the rewrite started", in_progress);
    let mut during = Acked::default();
    let mut confirmed = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    for k in 0.. {
        if !in_progress() {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the rewrite never ended"
        );
        let n = format!("during-{k}");
        let lock: i64 = redis::cmd("RESV.LOCK")
            .arg(format!("r:{n}"))
            .arg("h")
            .arg(600_000)
            .query(&mut c)
            .unwrap();
        during.locks.insert(format!("r:{n}"), ("h".into(), lock));
        let permit: i64 = redis::cmd("SEM.ACQUIRE")
            .arg("sem")
            .arg(&n)
            .arg(1_000_000)
            .arg(600_000)
            .query(&mut c)
            .unwrap();
        during.permits.insert(n.clone(), permit);
        let (slot, _): (i64, i64) = redis::cmd("SLOT.GET")
            .arg("pool")
            .arg("HOLDER")
            .arg(&n)
            .arg("TTL")
            .arg(600_000)
            .arg("WITHTOKEN")
            .query(&mut c)
            .unwrap();
        during.slots.insert(slot, n.clone());
        let id: i64 = redis::cmd("JOB.CREATE")
            .arg("jobs")
            .arg(&n)
            .query(&mut c)
            .unwrap();
        during.jobs.insert(id, None);
        let (instance, _): (String, i64) = redis::cmd("ALLOC.ALLOCATE")
            .arg("alloc")
            .arg(&n)
            .query(&mut c)
            .unwrap();
        during.allocations.insert(n, instance);
        if in_progress() {
            confirmed += 1;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "{keys} keys, {delay_us} µs each: the rewrite took {:?}, {confirmed} rounds of writes \
         fell inside it",
        rewrite_started.elapsed()
    );
    // About 80 when the rewrite takes its second; an unslowed one is over in under ten.
    assert!(
        confirmed >= 20,
        "only {confirmed} rounds of writes fell inside the rewrite"
    );
    assert_eq!(
        s.info_field("persistence", "aof_last_bgrewrite_status")
            .as_deref(),
        Some("ok"),
        "AOF rewrite failed"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(0)
        .query(&mut c)
        .unwrap();
    thread::sleep(Duration::from_millis(100)); // writes after the rewrite go to the new AOF
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<Acked> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (family, a) in acked.iter().enumerate() {
        assert!(a.error.is_none(), "workload {family}: {:?}", a.error);
        assert!(a.ops() > 10, "workload {family} did little: {}", a.ops());
    }
    acked.push(during);
    let none = HashSet::new();
    verify(&mut c, &acked, &none);
    let before = digest(&mut c);
    drop(c);
    s.restart();
    let mut c = s.conn();
    assert_eq!(digest(&mut c), before);
    // Not only equal: everything acknowledged — before, during and after the rewrite — is there.
    verify(&mut c, &acked, &none);
}

/// A little of everything, with leases long enough to outlive the test.
fn populate(c: &mut Connection) {
    let _: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("lock")
        .arg("a")
        .arg(600_000)
        .query(c)
        .unwrap();
    for h in ["a", "b"] {
        let _: Option<i64> = redis::cmd("SEM.ACQUIRE")
            .arg("sem")
            .arg(h)
            .arg(5)
            .arg(600_000)
            .query(c)
            .unwrap();
    }
    let _: i64 = redis::cmd("SLOT.GET").arg("pool").query(c).unwrap();
    let _: i64 = redis::cmd("SLOT.GET")
        .arg("pool")
        .arg("HOLDER")
        .arg("x")
        .arg("TTL")
        .arg(600_000)
        .query(c)
        .unwrap();
    int(c, &["ALLOC.AVAILABLE", "alloc", "i0"]);
    let _: Value = redis::cmd("ALLOC.ALLOCATE")
        .arg("alloc")
        .arg("j")
        .query(c)
        .unwrap();
    int(c, &["JOB.CREATE", "jobs", "r1"]);
    int(c, &["JOB.CREATE", "jobs", "r2"]);
    let _: Value = redis::cmd("JOB.PULL")
        .arg("jobs")
        .arg("w")
        .arg(600_000)
        .query(c)
        .unwrap();
}

#[test]
fn promoted_replica_lapses_leases_at_their_deadlines_and_continues_tokens() {
    use std::time::Instant;
    /// The old primary's leases: long enough for the promotion and the new waiters to happen
    /// before they end, on a loaded machine.
    const LEASE: Duration = Duration::from_millis(3_000);
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let lease_ms = LEASE.as_millis() as u64;
    // Each grant with when it was sent: its deadline is at least that plus the lease.
    let mut timed = |cmd: &mut redis::Cmd| {
        let sent = Instant::now();
        let v: Value = cmd.query(&mut p).unwrap();
        (sent, v)
    };
    let old = [
        timed(redis::cmd("RESV.LOCK").arg("lock").arg("a").arg(lease_ms)),
        timed(
            redis::cmd("SEM.ACQUIRE")
                .arg("sem")
                .arg("a")
                .arg(1)
                .arg(lease_ms),
        ),
        timed(
            redis::cmd("SLOT.GET")
                .arg("pool")
                .arg("HOLDER")
                .arg("a")
                .arg("TTL")
                .arg(lease_ms)
                .arg("LIMIT")
                .arg(1)
                .arg("WITHTOKEN"),
        ),
    ];
    let token_of = |v: &Value| match v {
        Value::Int(t) => *t,
        Value::Array(a) => as_int(&a[1]),
        v => panic!("not granted: {v:?}"),
    };
    let max_old = old.iter().map(|(_, v)| token_of(v)).max().unwrap();
    let earliest_deadline = old.iter().map(|(sent, _)| *sent).min().unwrap() + LEASE;
    primary.sync_replica(&replica);
    // The primary dies (stopped, not cleanly shut down); the replica is promoted.
    let pid = primary.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let mut r = replica.conn();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    // New waiters on the new primary are handed the resources when the old leases lapse.
    let port = replica.port();
    let waiters: Vec<_> = [
        vec!["RESV.LOCK", "lock", "b", "60000", "BLOCK", "20000"],
        vec!["SEM.ACQUIRE", "sem", "b", "1", "60000", "BLOCK", "20000"],
        vec![
            "SLOT.GET",
            "pool",
            "HOLDER",
            "b",
            "LIMIT",
            "1",
            "BLOCK",
            "20000",
            "WITHTOKEN",
        ],
    ]
    .into_iter()
    .map(|args| {
        thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let v: Value = cmd.query(&mut c).unwrap();
            (Instant::now(), v)
        })
    })
    .collect();
    // All three wait on the new primary before the old leases end (else this test would not
    // show the lapse).
    common::wait_until(Duration::from_secs(10), "the waiters queued", || {
        ["resv", "sem", "slot"].iter().all(|f| {
            replica
                .info_field("corral", &format!("corral_{f}_waiting"))
                .as_deref()
                == Some("1")
        })
    });
    let queued = Instant::now();
    assert!(
        queued < earliest_deadline,
        "the waiters queued {:?} after the old leases' deadlines: too slow a machine to tell",
        queued - earliest_deadline
    );
    let results: Vec<(Instant, Value)> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    for (((sent, _), (at, v)), family) in old.iter().zip(&results).zip(["RESV", "SEM", "SLOT"]) {
        let token = token_of(v);
        assert!(
            token > max_old,
            "{family}: new token {token} ≤ old {max_old}"
        );
        // Granted when the old lease lapsed: not before its deadline (which is at least its
        // grant's send time plus the lease; 5 ms for the server's rounding to milliseconds),
        // and promptly after it.
        let deadline = *sent + LEASE;
        assert!(
            *at + Duration::from_millis(5) >= deadline,
            "{family}: granted {:?} before the old lease's deadline",
            deadline - *at
        );
        assert!(
            at.duration_since(deadline) < Duration::from_secs(5),
            "{family}: granted {:?} after the old lease's deadline",
            at.duration_since(deadline)
        );
    }
    for family in ["resv", "sem", "slot"] {
        let lapses: u64 = replica
            .info_field("corral", &format!("corral_{family}_lapses"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            lapses, 1,
            "the new primary lapsed the old {family} lease itself"
        );
    }
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
}

/// Short leases with blocked waiters on a few keys: lapses and hand-offs all the time.
fn churn(port: u16, id: usize, stop: Arc<AtomicBool>) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|cl| cl.get_connection())
        .unwrap();
    let holder = format!("c{id}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ttl = (20 + (n * 7 + id as u64) % 80).to_string();
        let (a, b): (&str, String) = match n % 3 {
            0 => ("RESV.LOCK", format!("hk{}", n % 2)),
            1 => ("SEM.ACQUIRE", "hs".into()),
            _ => ("SLOT.GET", "hp".into()),
        };
        let mut cmd = redis::cmd(a);
        match a {
            "RESV.LOCK" => cmd.arg(&b).arg(&holder).arg(&ttl),
            "SEM.ACQUIRE" => cmd.arg(&b).arg(&holder).arg(2).arg(&ttl),
            _ => cmd
                .arg(&b)
                .arg("HOLDER")
                .arg(&holder)
                .arg("TTL")
                .arg(&ttl)
                .arg("LIMIT")
                .arg(2),
        };
        cmd.arg("BLOCK").arg(300);
        let r: redis::RedisResult<Value> = cmd.query(&mut c);
        if let Err(e) = r {
            panic!("churn {id}: {a} {b}: {e}"); // nothing here may fail
        }
        // Release half of what we got early; the rest lapses.
        if n.is_multiple_of(2) && a == "RESV.LOCK" {
            let _: redis::RedisResult<Value> = redis::cmd("RESV.RELEASE")
                .arg(&b)
                .arg(&holder)
                .query(&mut c);
        }
    }
}

#[test]
fn two_replicas_match_the_primary_after_mixed_load_and_a_late_replica_too() {
    let primary = Server::start();
    let replicas = [Server::replica_of(&primary), Server::replica_of(&primary)];
    let mut p = primary.conn();
    for i in 0..4 {
        int(&mut p, &["ALLOC.AVAILABLE", "alloc", &format!("i{i}")]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<thread::JoinHandle<()>> = (0..5)
        .map(|family| {
            let (port, stop) = (primary.port(), stop.clone());
            thread::spawn(move || {
                let a = workload(port, family, 7, stop, Duration::ZERO);
                assert!(a.error.is_none(), "workload {family}: {:?}", a.error);
                assert!(a.ops() > 10, "workload {family} did little: {}", a.ops());
            })
        })
        .collect();
    threads.extend((0..6).map(|id| {
        let (port, stop) = (primary.port(), stop.clone());
        thread::spawn(move || churn(port, id, stop))
    }));
    thread::sleep(Duration::from_millis(1_500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Let every short lease lapse (on the primary, which replicates the lapses).
    thread::sleep(Duration::from_millis(400));
    let lapses: u64 = primary
        .info_field("corral", "corral_resv_lapses")
        .unwrap()
        .parse()
        .unwrap();
    let handed: u64 = primary
        .info_field("corral", "corral_resv_waits")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        lapses > 0 && handed > 0,
        "the load had lapses ({lapses}) and waits ({handed})"
    );
    let want = digest(&mut p);
    for r in &replicas {
        primary.sync_replica(r);
        assert_eq!(digest(&mut r.conn()), want, "replica on port {}", r.port());
    }
    // A replica attached after the load gets the same state by full sync.
    let late = Server::replica_of(&primary);
    primary.sync_replica(&late);
    assert_eq!(digest(&mut late.conn()), want);
}
