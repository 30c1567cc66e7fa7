//! Durability across crashes, snapshots, AOF rewrites and failover, for every family.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::client::{field, int, rewrite_aof};
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
}

/// Runs one family's workload until an error (the server died) or `stop`.
fn workload(port: u16, family: usize, round: usize, stop: Arc<AtomicBool>) -> Acked {
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
        if ok.is_err() {
            return a; // the server went away mid-operation
        }
        a.uncertain = None;
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
                thread::spawn(move || workload(port, family, round, stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(400));
        s.kill9_and_restart(); // mid-load: every thread is in the middle of something
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let a = t.join().unwrap();
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
            thread::spawn(move || workload(port, family, 0, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    rewrite_aof(&s);
    thread::sleep(Duration::from_millis(100)); // writes after the rewrite go to the new AOF
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let before = digest(&mut c);
    drop(c);
    s.restart();
    let mut c = s.conn();
    assert_eq!(digest(&mut c), before);
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
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let old_tokens = [
        redis::cmd("RESV.LOCK")
            .arg("lock")
            .arg("a")
            .arg(1_500)
            .query::<i64>(&mut p)
            .unwrap(),
        redis::cmd("SEM.ACQUIRE")
            .arg("sem")
            .arg("a")
            .arg(1)
            .arg(1_500)
            .query::<i64>(&mut p)
            .unwrap(),
        redis::cmd("SLOT.GET")
            .arg("pool")
            .arg("HOLDER")
            .arg("a")
            .arg("TTL")
            .arg(1_500)
            .arg("LIMIT")
            .arg(1)
            .arg("WITHTOKEN")
            .query::<(i64, i64)>(&mut p)
            .unwrap()
            .1,
    ];
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
            (std::time::Instant::now(), v)
        })
    })
    .collect();
    let start = std::time::Instant::now();
    let results: Vec<(std::time::Instant, Value)> =
        waiters.into_iter().map(|t| t.join().unwrap()).collect();
    let max_old = *old_tokens.iter().max().unwrap();
    for (at, v) in &results {
        assert!(
            at.duration_since(start) < Duration::from_secs(10),
            "served promptly"
        );
        let token = match v {
            Value::Int(t) => *t,
            Value::Array(a) => as_int(&a[1]),
            v => panic!("waiter not granted: {v:?}"),
        };
        assert!(token > max_old, "new token {token} ≤ old {max_old}");
    }
    let lapses: u64 = replica
        .info_field("corral", "corral_resv_lapses")
        .unwrap()
        .parse()
        .unwrap();
    assert!(lapses >= 1, "the new primary lapsed the old lease itself");
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
}

/// Short leases with blocked waiters on a few keys: lapses and hand-offs all the time.
fn churn(port: u16, id: usize, stop: Arc<AtomicBool>) {
    let Ok(mut c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|cl| cl.get_connection())
    else {
        return;
    };
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
        if r.is_err() {
            return;
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
                workload(port, family, 7, stop);
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
