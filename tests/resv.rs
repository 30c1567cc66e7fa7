//! RESV.* against a real redis-server with corral loaded.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_alive, digest, error_of, field, info_int, int, keyevents, raw_command, rewrite_aof,
    subscribe_keyevents,
};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, ConnectionLike, Value};

fn lock(c: &mut Connection, key: &str, holder: &str, ms: u64) -> Option<i64> {
    redis::cmd("RESV.LOCK")
        .arg(key)
        .arg(holder)
        .arg(ms)
        .query(c)
        .unwrap()
}

fn lock_block(c: &mut Connection, key: &str, holder: &str, ms: u64, block: u64) -> Option<i64> {
    redis::cmd("RESV.LOCK")
        .arg(key)
        .arg(holder)
        .arg(ms)
        .arg("BLOCK")
        .arg(block)
        .query(c)
        .unwrap()
}

/// RESV.INFO as (holder, ttl, token, waiters), None when free.
fn info(c: &mut Connection, key: &str) -> Option<(String, i64, i64, i64)> {
    let v: Value = redis::cmd("RESV.INFO").arg(key).query(c).unwrap();
    if field(&v, "holder") == Value::Nil {
        assert_eq!(
            (field(&v, "ttl"), field(&v, "token")),
            (Value::Nil, Value::Nil)
        );
        return None;
    }
    let holder = match field(&v, "holder") {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        v => panic!("{v:?}"),
    };
    let n = |name: &str| match field(&v, name) {
        Value::Int(i) => i,
        v => panic!("{name}: {v:?}"),
    };
    Some((holder, n("ttl"), n("token"), n("waiters")))
}

fn waiters(c: &mut Connection, key: &str) -> i64 {
    let v: Value = redis::cmd("RESV.INFO").arg(key).query(c).unwrap();
    match field(&v, "waiters") {
        Value::Int(n) => n,
        v => panic!("waiters: {v:?}"),
    }
}

#[test]
fn lock_renew_release_and_notheld() {
    let s = Server::start();
    let mut c = s.conn();
    let t = lock(&mut c, "k", "a", 10_000).expect("granted");
    assert!(t > 0);
    assert_eq!(lock(&mut c, "k", "b", 10_000), None, "held by a");
    assert_eq!(
        error_of(&mut c, &[b"RESV.RENEW", b"k", b"b", b"1000"]),
        "NOTHELD the reservation is held by a"
    );
    assert_eq!(
        error_of(&mut c, &[b"RESV.RELEASE", b"k", b"b"]),
        "NOTHELD the reservation is held by a"
    );
    assert_eq!(int(&mut c, &["RESV.RENEW", "k", "a", "20000"]), 1);
    let ttl = info(&mut c, "k").unwrap().1;
    assert!(ttl > 19_000 && ttl <= 20_000, "renew extended: {ttl}");
    assert_eq!(int(&mut c, &["RESV.RELEASE", "k", "a"]), 1);
    assert_eq!(info(&mut c, "k"), None);
    assert_eq!(
        int(&mut c, &["EXISTS", "k"]),
        0,
        "a free reservation leaves no key"
    );
    assert!(error_of(&mut c, &[b"RESV.RELEASE", b"k", b"a"]).starts_with("NOTHELD"));
    assert!(error_of(&mut c, &[b"RESV.RENEW", b"k", b"a", b"10"]).starts_with("NOTHELD"));
}

#[test]
fn relock_by_same_holder_extends_with_same_token() {
    let s = Server::start();
    let mut c = s.conn();
    let t = lock(&mut c, "k", "a", 1_000).unwrap();
    assert_eq!(lock(&mut c, "k", "a", 60_000), Some(t));
    let pttl = int(&mut c, &["PTTL", "k"]);
    assert!(pttl > 59_000, "extended: {pttl}");
}

#[test]
fn notheld_after_expiry() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 100).unwrap();
    thread::sleep(Duration::from_millis(400));
    assert_eq!(
        error_of(&mut c, &[b"RESV.RENEW", b"k", b"a", b"1000"]),
        "NOTHELD the reservation is not held (lapsed, released or never locked)"
    );
    assert!(error_of(&mut c, &[b"RESV.CHECK", b"k", b"a", b"1"]).starts_with("NOTHELD"));
}

#[test]
fn check_with_stale_token() {
    let s = Server::start();
    let mut c = s.conn();
    let t1 = lock(&mut c, "k", "a", 10_000).unwrap();
    int(&mut c, &["RESV.RELEASE", "k", "a"]);
    let t2 = lock(&mut c, "k", "a", 10_000).unwrap();
    assert!(t2 > t1);
    assert_eq!(int(&mut c, &["RESV.CHECK", "k", "a", &t2.to_string()]), 1);
    let e = error_of(
        &mut c,
        &[b"RESV.CHECK", b"k", b"a", t1.to_string().as_bytes()],
    );
    assert_eq!(
        e,
        format!("STALE token {t1} is not the current lease (current is {t2})")
    );
    let e = error_of(
        &mut c,
        &[b"RESV.CHECK", b"k", b"b", t2.to_string().as_bytes()],
    );
    assert!(e.starts_with("NOTHELD"), "{e}");
}

#[test]
fn pttl_equals_remaining_lease() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 30_000).unwrap();
    let pttl = int(&mut c, &["PTTL", "k"]);
    let ttl = info(&mut c, "k").unwrap().1;
    assert!((29_000..=30_000).contains(&pttl), "{pttl}");
    assert!((pttl - ttl).abs() <= 50, "PTTL {pttl} vs lease ttl {ttl}");
}

#[test]
fn three_waiters_served_fifo_on_release() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "owner", 60_000).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 1..=3 {
        let mut wc = s.conn();
        let order = order.clone();
        threads.push(thread::spawn(move || {
            let holder = format!("w{i}");
            let t = lock_block(&mut wc, "k", &holder, 60_000, 30_000).expect("granted");
            order.lock().unwrap().push((i, t));
            thread::sleep(Duration::from_millis(30));
            let r: i64 = redis::cmd("RESV.RELEASE")
                .arg("k")
                .arg(&holder)
                .query(&mut wc)
                .unwrap();
            assert_eq!(r, 1);
        }));
        // Queue them in a known order.
        wait_until(Duration::from_secs(10), "waiter queued", || {
            waiters(&mut c, "k") == i
        });
    }
    assert_eq!(int(&mut c, &["RESV.RELEASE", "k", "owner"]), 1);
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "tokens increase: {order:?}"
    );
}

#[test]
fn waiter_granted_when_lease_lapses_without_other_commands() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 300).unwrap();
    let start = Instant::now();
    let t = lock_block(&mut c, "k", "b", 10_000, 10_000);
    let waited = start.elapsed();
    assert!(t.is_some(), "granted on lapse");
    assert!(
        waited >= Duration::from_millis(200),
        "not before the deadline: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "promptly after it: {waited:?}"
    );
    assert_eq!(info(&mut c, "k").unwrap().0, "b");
    let lapses = info_int(&s, "corral", "corral_resv_lapses");
    assert!(lapses >= 1);
}

#[test]
fn block_timeout_answers_nil() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 60_000).unwrap();
    let start = Instant::now();
    assert_eq!(lock_block(&mut c, "k", "b", 1000, 200), None);
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(waiters(&mut c, "k"), 0, "timed-out waiter left the queue");
    let timeouts = info_int(&s, "corral", "corral_resv_timeouts");
    assert_eq!(timeouts, 1);
}

#[test]
fn disconnected_waiter_is_skipped() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 60_000).unwrap();
    // A raw client that blocks and then goes away.
    let raw = raw_command(
        s.port(),
        &[b"RESV.LOCK", b"k", b"gone", b"1000", b"BLOCK", b"0"],
    );
    wait_until(Duration::from_secs(10), "raw client queued", || {
        waiters(&mut c, "k") == 1
    });
    drop(raw);
    wait_until(
        Duration::from_secs(10),
        "disconnected waiter removed",
        || waiters(&mut c, "k") == 0,
    );
    // The next waiter is the one served.
    let s2 = s.conn();
    let h = thread::spawn(move || {
        let mut s2 = s2;
        lock_block(&mut s2, "k", "next", 60_000, 20_000)
    });
    wait_until(Duration::from_secs(10), "next queued", || {
        waiters(&mut c, "k") == 1
    });
    int(&mut c, &["RESV.RELEASE", "k", "a"]);
    assert!(h.join().unwrap().is_some());
    assert_eq!(info(&mut c, "k").unwrap().0, "next");
}

#[test]
fn block_inside_multi_answers_at_once() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 60_000).unwrap();
    let start = Instant::now();
    let (r,): (Option<i64>,) = redis::pipe()
        .atomic()
        .cmd("RESV.LOCK")
        .arg("k")
        .arg("b")
        .arg(1000)
        .arg("BLOCK")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    assert!(start.elapsed() < Duration::from_secs(2));
    // And inside a script.
    let r: Option<i64> = redis::cmd("EVAL")
        .arg("return redis.call('RESV.LOCK', KEYS[1], 'b', 1000, 'BLOCK', 0)")
        .arg(1)
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
}

#[test]
fn tokens_increase_across_release_lapse_expiry_reload_and_aof_restart() {
    let mut s = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let mut c = s.conn();
    let mut tokens = Vec::new();
    // Release and re-lock.
    tokens.push(lock(&mut c, "k", "a", 60_000).unwrap());
    int(&mut c, &["RESV.RELEASE", "k", "a"]);
    tokens.push(lock(&mut c, "k", "a", 100).unwrap());
    // Lapse (the key expires and is created again).
    thread::sleep(Duration::from_millis(300));
    tokens.push(lock(&mut c, "k", "b", 60_000).unwrap());
    // DEBUG RELOAD keeps holder and token; the next grant is larger.
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    let (holder, _, token, _) = info(&mut c, "k").unwrap();
    assert_eq!((holder.as_str(), token), ("b", *tokens.last().unwrap()));
    int(&mut c, &["RESV.RELEASE", "k", "b"]);
    tokens.push(lock(&mut c, "k", "c", 60_000).unwrap());
    // AOF rewrite, then restart from the AOF.
    rewrite_aof(&s);
    let before = info(&mut c, "k").unwrap();
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = info(&mut c, "k").unwrap();
    assert_eq!(
        (&after.0, after.2),
        (&before.0, before.2),
        "holder and token survive"
    );
    assert!(
        (after.1 - before.1).abs() < 5_000,
        "deadline survives: {before:?} {after:?}"
    );
    int(&mut c, &["RESV.RELEASE", "k", "c"]);
    tokens.push(lock(&mut c, "k", "d", 60_000).unwrap());
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[test]
fn replica_matches_primary_and_never_acts_alone() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();

    // Lock, renew, hand-off to a waiter, lapse.
    lock(&mut p, "k", "a", 60_000).unwrap();
    int(&mut p, &["RESV.RENEW", "k", "a", "50000"]);
    let wp = primary.conn();
    let waiter = thread::spawn(move || {
        let mut wp = wp;
        lock_block(&mut wp, "k", "b", 2_000, 20_000)
    });
    wait_until(Duration::from_secs(10), "waiter queued", || {
        waiters(&mut p, "k") == 1
    });
    int(&mut p, &["RESV.RELEASE", "k", "a"]);
    assert!(waiter.join().unwrap().is_some());
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "k"), digest(&mut r, "k"));
    assert_eq!(info(&mut r, "k").unwrap().0, "b");
    // b's 2 s lease lapses on the primary; the replica follows.
    wait_until(Duration::from_secs(10), "lapse on primary", || {
        int(&mut p, &["EXISTS", "k"]) == 0
    });
    primary.sync_replica(&replica);
    assert_eq!(int(&mut r, &["DBSIZE"]), 0);

    // With the primary stopped, the replica neither expires nor grants by itself.
    lock(&mut p, "k2", "a", 300).unwrap();
    primary.sync_replica(&replica);
    let pid = primary.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    thread::sleep(Duration::from_millis(800));
    let replica_lapses = replica.info_field("corral", "corral_resv_lapses");
    assert_eq!(
        int(&mut r, &["DBSIZE"]),
        1,
        "replica keeps the key until the primary says"
    );
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_until(
        Duration::from_secs(10),
        "primary lapses after resuming",
        || int(&mut p, &["EXISTS", "k2"]) == 0,
    );
    primary.sync_replica(&replica);
    assert_eq!(int(&mut r, &["DBSIZE"]), 0);
    assert_eq!(
        replica_lapses,
        replica.info_field("corral", "corral_resv_lapses")
    );
}

#[test]
fn malformed_input_gets_errors_and_server_lives() {
    let s = Server::start();
    let mut c = s.conn();
    let huge = vec![b'x'; 1 << 20];
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"RESV.LOCK"],
        vec![b"RESV.LOCK", b"k"],
        vec![b"RESV.LOCK", b"k", b"a"],
        vec![b"RESV.LOCK", b"k", b"a", b"abc"],
        vec![b"RESV.LOCK", b"k", b"a", b"-1"],
        vec![b"RESV.LOCK", b"k", b"a", b"0"],
        vec![b"RESV.LOCK", b"k", b"a", b"1.5"],
        vec![b"RESV.LOCK", b"k", b"a", b"18446744073709551616"],
        vec![b"RESV.LOCK", b"k", b"a", b"99999999999999999999999999"],
        vec![b"RESV.LOCK", b"k", b"a", b"1099511627777"],
        vec![b"RESV.LOCK", b"k", b"", b"100"],
        vec![b"RESV.LOCK", b"k", b"a", b"100", b"BLOCK"],
        vec![b"RESV.LOCK", b"k", b"a", b"100", b"BLOCK", b"-1"],
        vec![
            b"RESV.LOCK",
            b"k",
            b"a",
            b"100",
            b"BLOCK",
            b"1",
            b"BLOCK",
            b"2",
        ],
        vec![b"RESV.LOCK", b"k", b"a", b"100", b"NOPE", b"1"],
        vec![b"RESV.LOCK", b"k", b"a", b"100", &huge],
        vec![b"RESV.LOCK", b"k", b"a", &huge],
        vec![b"RESV.RENEW", b"k", b"a"],
        vec![b"RESV.RENEW", b"k", b"a", b"x"],
        vec![b"RESV.RENEW", b"k", b"a", b"10", b"extra"],
        vec![b"RESV.RELEASE", b"k"],
        vec![b"RESV.RELEASE", b"k", b"a", b"extra"],
        vec![b"RESV.CHECK", b"k", b"a"],
        vec![b"RESV.CHECK", b"k", b"a", b"-5"],
        vec![b"RESV.CHECK", b"k", b"a", b"\x00"],
        vec![b"RESV.INFO"],
        vec![b"RESV.INFO", b"k", b"extra"],
    ];
    for args in &bad {
        let e = error_of(&mut c, args);
        assert!(e.starts_with("ERR") || e.starts_with("NOTHELD"), "{e}");
    }
    // Wrong key type for every command.
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    for args in [
        vec![&b"RESV.LOCK"[..], b"str", b"a", b"100"],
        vec![b"RESV.RENEW", b"str", b"a", b"100"],
        vec![b"RESV.RELEASE", b"str", b"a"],
        vec![b"RESV.CHECK", b"str", b"a", b"1"],
        vec![b"RESV.INFO", b"str"],
    ] {
        assert!(error_of(&mut c, &args).starts_with("WRONGTYPE"));
    }
    // Binary and huge holders are legal holders.
    let bin: &[u8] = b"\x00\xff\r\n holder";
    let t: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("b")
        .arg(bin)
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(t.is_some());
    let e = error_of(&mut c, &[b"RESV.RELEASE", b"b", b"other"]);
    assert!(
        e.starts_with("NOTHELD the reservation is held by \\x00\\xff\\x0d\\x0a holder"),
        "{e}"
    );
    let t: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("h")
        .arg(&huge)
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(t.is_some());
    assert_alive(&s, &mut c);
}

#[test]
fn keyspace_notifications_for_grant_release_lapse() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut sub = s.conn();
    let mut c = s.conn();
    let mut pubsub = sub.as_pubsub();
    subscribe_keyevents(&mut pubsub, "resv", Duration::from_secs(5));
    lock(&mut c, "k", "a", 60_000).unwrap();
    int(&mut c, &["RESV.RELEASE", "k", "a"]);
    lock(&mut c, "k", "a", 100).unwrap();
    assert_eq!(
        keyevents(&mut pubsub, 4, "k"),
        ["resv.grant", "resv.release", "resv.grant", "resv.lapse"]
    );
}

#[test]
fn replica_attached_after_writes_matches_primary() {
    // Before any replica exists corral propagates nothing (like Redis without AOF); a replica
    // attached later gets everything through the full sync, and everything after it as effects.
    let primary = Server::start();
    let mut p = primary.conn();
    for i in 0..50 {
        lock(&mut p, &format!("k{i}"), "a", 60_000).unwrap();
    }
    let replica = Server::replica_of(&primary);
    for i in 0..50 {
        int(&mut p, &["RESV.RELEASE", &format!("k{i}"), "a"]);
        lock(&mut p, &format!("k{i}"), "b", 60_000).unwrap();
    }
    primary.sync_replica(&replica);
    let mut r = replica.conn();
    for i in 0..50 {
        let k = format!("k{i}");
        assert_eq!(digest(&mut p, &k), digest(&mut r, &k), "{k}");
        assert_eq!(info(&mut r, &k).unwrap().0, "b");
    }
}

/// A waiter granted in the same event-loop iteration in which its BLOCK timeout passes still
/// gets its grant. (Redis 7.0 drops the reply of a module-blocked client that was unblocked and
/// then timed out before its reply was sent: the client would hang forever while holding the
/// lock. corral therefore times waiters out itself.) Found by tests/contention.rs.
#[test]
fn waiter_granted_as_its_timeout_passes_gets_its_reply() {
    let s = Server::start();
    let mut c = s.conn();
    assert!(lock(&mut c, "k", "a", 60_000).is_some());
    let mut w = s.conn();
    w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let waiter = thread::spawn(move || -> redis::RedisResult<Option<i64>> {
        redis::cmd("RESV.LOCK")
            .arg("k")
            .arg("b")
            .arg(60_000)
            .arg("BLOCK")
            .arg(100)
            .query(&mut w)
    });
    wait_until(Duration::from_secs(5), "b waits", || {
        info(&mut c, "k").is_some_and(|(_, _, _, waiters)| waiters == 1)
    });
    // The sleep lets b's timeout pass; the release then grants b before Redis looks at timeouts.
    let _: Value = redis::pipe()
        .atomic()
        .cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.3")
        .cmd("RESV.RELEASE")
        .arg("k")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let token = waiter
        .join()
        .unwrap()
        .expect("the waiter is answered")
        .expect("the waiter was granted: the lock was released while it waited");
    let (holder, _, t, waiters) = info(&mut c, "k").expect("b holds k");
    assert_eq!((holder.as_str(), t, waiters), ("b", token, 0));
    assert_alive(&s, &mut c);
}

/// The fenced write of the README ("Guarding a write with the fencing token"), verbatim: the
/// check first, so that its error aborts the script before the write.
const FENCED_SET: &str = "\
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])";

/// The same as a function (README): `FUNCTION LOAD` once, then `FCALL fenced_set`.
const FENCING_LIBRARY: &str = "#!lua name=fencing
redis.register_function('fenced_set', function(keys, args)
  redis.call('RESV.CHECK', keys[1], args[1], args[2])
  return redis.call('SET', keys[2], args[3])
end)";

/// `{app}:data`, or nil.
fn data(c: &mut Connection) -> Option<String> {
    redis::cmd("GET").arg("{app}:data").query(c).unwrap()
}

/// Sends `MULTI`, `RESV.CHECK {app}:lock holder token`, `SET {app}:data value`, `EXEC` as the
/// README once advised, and answers EXEC's replies.
fn multi_check_then_set(c: &mut Connection, holder: &str, token: i64, value: &str) -> Vec<Value> {
    let mut packed = Vec::new();
    redis::cmd("MULTI").write_packed_command(&mut packed);
    redis::cmd("RESV.CHECK")
        .arg("{app}:lock")
        .arg(holder)
        .arg(token)
        .write_packed_command(&mut packed);
    redis::cmd("SET")
        .arg("{app}:data")
        .arg(value)
        .write_packed_command(&mut packed);
    redis::cmd("EXEC").write_packed_command(&mut packed);
    let mut replies = c.req_packed_commands(&packed, 0, 4).unwrap();
    assert_eq!(
        &replies[..3],
        &[
            Value::Okay,
            Value::SimpleString("QUEUED".into()),
            Value::SimpleString("QUEUED".into())
        ]
    );
    match replies.pop().unwrap() {
        Value::Array(exec) => exec,
        v => panic!("EXEC answered {v:?}"),
    }
}

/// The code and the message of an error reply ("NOTHELD", "the reservation is held by b …").
fn code_and_detail(r: redis::RedisResult<Value>) -> (String, String) {
    let e = r.expect_err("the guard refuses");
    (
        e.code().unwrap_or("?").to_string(),
        e.detail().unwrap_or("").to_string(),
    )
}

/// A worker paused past its lease must not be able to write. `MULTI`/`EXEC` around
/// `RESV.CHECK` does not stop it (an error inside a transaction does not abort the later
/// commands: the README warns against it, and this shows the warning is true); a script or a
/// function that calls `RESV.CHECK` first does: its error aborts the script before the write.
#[test]
fn fenced_write_refuses_a_lapsed_holder_in_a_script_or_function_but_not_in_multi() {
    let s = Server::start();
    let mut c = s.conn();
    // a's lease lapses while it is "paused"; b is handed the lock.
    let old = lock(&mut c, "{app}:lock", "a", 200).unwrap();
    let new = lock_block(&mut c, "{app}:lock", "b", 60_000, 10_000).expect("b after a lapses");
    assert!(new > old);
    let _: () = redis::cmd("SET")
        .arg("{app}:data")
        .arg("by-b")
        .query(&mut c)
        .unwrap();

    // MULTI: the check fails, and the stale write is stored all the same.
    let exec = multi_check_then_set(&mut c, "a", old, "stale-multi");
    assert_eq!(exec.len(), 2, "{exec:?}");
    assert!(
        matches!(&exec[0], Value::ServerError(e) if e.code() == "NOTHELD"),
        "{exec:?}"
    );
    assert_eq!(exec[1], Value::Okay, "{exec:?}");
    assert_eq!(data(&mut c).as_deref(), Some("stale-multi"));
    let _: () = redis::cmd("SET")
        .arg("{app}:data")
        .arg("by-b")
        .query(&mut c)
        .unwrap();

    // The script by EVAL, and the same as a function by FCALL: refused for the lapsed holder
    // (NOTHELD) and for an old token of the current holder (STALE), the data untouched; the
    // current holder's write goes through.
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(FENCING_LIBRARY)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "fencing");
    let guarded = |c: &mut Connection, via: &str, holder: &str, token: i64, value: &str| {
        let mut cmd = redis::cmd(via);
        cmd.arg(if via == "EVAL" {
            FENCED_SET
        } else {
            "fenced_set"
        });
        cmd.arg(2)
            .arg("{app}:lock")
            .arg("{app}:data")
            .arg(holder)
            .arg(token)
            .arg(value)
            .query::<Value>(c)
    };
    for via in ["EVAL", "FCALL"] {
        let before = data(&mut c);
        let (code, detail) = code_and_detail(guarded(&mut c, via, "a", old, "stale"));
        assert_eq!(code, "NOTHELD", "{via}: {detail}");
        assert!(
            detail.starts_with("the reservation is held by b"),
            "{via}: {detail}"
        );
        let (code, detail) = code_and_detail(guarded(&mut c, via, "b", old, "stale"));
        assert_eq!(code, "STALE", "{via}: {detail}");
        assert_eq!(data(&mut c), before, "{via}: no stale write");
        let mine = format!("{via}-by-b");
        assert_eq!(guarded(&mut c, via, "b", new, &mine).unwrap(), Value::Okay);
        assert_eq!(data(&mut c), Some(mine), "{via}");
    }

    // Once b's lease is gone too, nobody's old token writes.
    assert_eq!(int(&mut c, &["RESV.RELEASE", "{app}:lock", "b"]), 1);
    let (code, _) = code_and_detail(guarded(&mut c, "FCALL", "b", new, "after-release"));
    assert_eq!(code, "NOTHELD");
    assert_eq!(data(&mut c).as_deref(), Some("FCALL-by-b"));
    assert_alive(&s, &mut c);
}
