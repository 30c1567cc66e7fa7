//! SEM.* against a real redis-server with corral loaded.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_alive, digest, error_of, info_int, int, int_fields, raw_command, rewrite_aof,
};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

/// SEM.ACQUIRE key holder capacity ms [PERMITS n] [BLOCK b] → token or nil.
fn acquire(
    c: &mut Connection,
    key: &str,
    holder: &str,
    cap: u64,
    ms: u64,
    permits: u64,
    block: Option<u64>,
) -> Option<i64> {
    let mut cmd = redis::cmd("SEM.ACQUIRE");
    cmd.arg(key)
        .arg(holder)
        .arg(cap)
        .arg(ms)
        .arg("PERMITS")
        .arg(permits);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b);
    }
    cmd.query(c).unwrap()
}

/// SEM.HOLDERS as (holder, ttl, permits, token) rows.
fn holders(c: &mut Connection, key: &str) -> Vec<(String, i64, i64, i64)> {
    let v: Vec<Value> = redis::cmd("SEM.HOLDERS").arg(key).query(c).unwrap();
    v.chunks(4)
        .map(|r| {
            let s = match &r[0] {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                x => panic!("{x:?}"),
            };
            let n = |x: &Value| match x {
                Value::Int(i) => *i,
                x => panic!("{x:?}"),
            };
            (s, n(&r[1]), n(&r[2]), n(&r[3]))
        })
        .collect()
}

/// One integer field of SEM.INFO.
fn info_field(c: &mut Connection, key: &str, field: &str) -> i64 {
    let v: Value = redis::cmd("SEM.INFO").arg(key).query(c).unwrap();
    let info = int_fields(v).expect("SEM.INFO is never nil");
    *info
        .get(field)
        .unwrap_or_else(|| panic!("no {field} in {info:?}"))
}

fn waiters(c: &mut Connection, key: &str) -> i64 {
    info_field(c, key, "waiters")
}

#[test]
fn capacity_three_release_and_permits() {
    let s = Server::start();
    let mut c = s.conn();
    for h in ["a", "b", "c"] {
        assert!(
            acquire(&mut c, "sem", h, 3, 60_000, 1, None).is_some(),
            "{h}"
        );
    }
    assert_eq!(
        acquire(&mut c, "sem", "d", 3, 60_000, 1, None),
        None,
        "full"
    );
    assert_eq!(int(&mut c, &["SEM.RELEASE", "sem", "a"]), 1);
    assert!(
        acquire(&mut c, "sem", "d", 3, 60_000, 1, None).is_some(),
        "freed permit"
    );
    assert_eq!(int(&mut c, &["SEM.RELEASE", "sem", "b"]), 1);
    assert_eq!(
        acquire(&mut c, "sem", "e", 3, 60_000, 2, None),
        None,
        "2 wanted, 1 free"
    );
    assert_eq!(int(&mut c, &["SEM.COUNT", "sem"]), 2);
    // passbuddy's checklist: acquire = acquire or extend (same token); release twice → NOTHELD.
    let t = acquire(&mut c, "sem", "c", 3, 60_000, 1, None).unwrap();
    assert_eq!(acquire(&mut c, "sem", "c", 3, 90_000, 1, None), Some(t));
    assert_eq!(int(&mut c, &["SEM.RELEASE", "sem", "c"]), 1);
    assert!(error_of(&mut c, &[b"SEM.RELEASE", b"sem", b"c"]).starts_with("NOTHELD"));
    assert!(error_of(&mut c, &[b"SEM.RENEW", b"sem", b"c", b"100"]).starts_with("NOTHELD"));
}

#[test]
fn holder_renews_even_when_full() {
    let s = Server::start();
    let mut c = s.conn();
    let t = acquire(&mut c, "sem", "a", 1, 1_000, 1, None).unwrap();
    assert_eq!(acquire(&mut c, "sem", "a", 1, 60_000, 1, None), Some(t));
    assert!(int(&mut c, &["PTTL", "sem"]) > 59_000);
    assert_eq!(int(&mut c, &["SEM.RENEW", "sem", "a", "30000"]), 1);
    let ttl = holders(&mut c, "sem")[0].1;
    assert!((29_000..=30_000).contains(&ttl), "{ttl}");
}

#[test]
fn holders_ordered_by_expiry_and_count_counts_permits() {
    let s = Server::start();
    let mut c = s.conn();
    let tb = acquire(&mut c, "sem", "b", 10, 50_000, 3, None).unwrap();
    let ta = acquire(&mut c, "sem", "a", 10, 20_000, 1, None).unwrap();
    let tc = acquire(&mut c, "sem", "c", 10, 80_000, 2, None).unwrap();
    let h = holders(&mut c, "sem");
    let names: Vec<&str> = h.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(h.iter().map(|r| r.2).collect::<Vec<_>>(), vec![1, 3, 2]);
    assert_eq!(h.iter().map(|r| r.3).collect::<Vec<_>>(), vec![ta, tb, tc]);
    assert!(h[0].1 <= 20_000 && h[0].1 > 19_000);
    assert_eq!(int(&mut c, &["SEM.COUNT", "sem"]), 6);
    // The key's PTTL is the latest permit deadline.
    let pttl = int(&mut c, &["PTTL", "sem"]);
    assert!((79_000..=80_000).contains(&pttl), "{pttl}");
}

#[test]
fn lapse_frees_permits_and_grants_blocked_waiter() {
    let s = Server::start();
    let mut c = s.conn();
    acquire(&mut c, "sem", "a", 1, 300, 1, None).unwrap();
    let start = Instant::now();
    let t = acquire(&mut c, "sem", "b", 1, 60_000, 1, Some(10_000));
    assert!(t.is_some());
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(holders(&mut c, "sem")[0].0, "b");
}

#[test]
fn key_disappears_when_last_permit_lapses() {
    let s = Server::start();
    let mut c = s.conn();
    acquire(&mut c, "sem", "a", 5, 200, 1, None).unwrap();
    acquire(&mut c, "sem", "b", 5, 400, 1, None).unwrap();
    wait_until(Duration::from_secs(10), "key gone", || {
        int(&mut c, &["EXISTS", "sem"]) == 0
    });
    let lapses = info_int(&s, "corral", "corral_sem_lapses");
    assert_eq!(lapses, 2);
}

#[test]
fn fifo_across_five_waiters_with_mixed_permits() {
    let s = Server::start();
    let mut c = s.conn();
    acquire(&mut c, "sem", "owner", 4, 60_000, 4, None).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let wants = [3u64, 1, 2, 1, 4];
    let mut threads = Vec::new();
    for (i, n) in wants.iter().enumerate() {
        let mut wc = s.conn();
        let order = order.clone();
        let n = *n;
        threads.push(thread::spawn(move || {
            let h = format!("w{i}");
            let t = acquire(&mut wc, "sem", &h, 4, 60_000, n, Some(30_000)).expect("granted");
            order.lock().unwrap().push((i, t));
            h
        }));
        wait_until(Duration::from_secs(10), "queued", || {
            waiters(&mut c, "sem") == i as i64 + 1
        });
    }
    // Freeing 4: w0 (3) and w1 (1) fit; w2 (2) must wait, and w3 (1) must not jump ahead of it.
    int(&mut c, &["SEM.RELEASE", "sem", "owner"]);
    wait_until(Duration::from_secs(10), "w0, w1 served", || {
        order.lock().unwrap().len() == 2
    });
    thread::sleep(Duration::from_millis(100));
    assert_eq!(order.lock().unwrap().len(), 2, "w3 did not jump the queue");
    int(&mut c, &["SEM.RELEASE", "sem", "w0"]); // 3 free: w2 (2) then w3 (1)
    wait_until(Duration::from_secs(10), "w2, w3 served", || {
        order.lock().unwrap().len() == 4
    });
    for h in ["w1", "w2", "w3"] {
        int(&mut c, &["SEM.RELEASE", "sem", h]);
    }
    for t in threads {
        t.join().unwrap();
    }
    // Grant order is token order (the threads record theirs in whatever order they wake).
    let mut order = order.lock().unwrap().clone();
    order.sort_by_key(|o| o.1);
    assert_eq!(
        order.iter().map(|o| o.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    // A non-blocking request never jumps a queued one.
    acquire(&mut c, "sem2", "big", 4, 60_000, 2, None).unwrap();
    let mut wc = s.conn();
    let h = thread::spawn(move || acquire(&mut wc, "sem2", "needs3", 4, 60_000, 3, Some(20_000)));
    wait_until(Duration::from_secs(10), "needs3 queued", || {
        waiters(&mut c, "sem2") == 1
    });
    assert_eq!(acquire(&mut c, "sem2", "small", 4, 60_000, 1, None), None);
    int(&mut c, &["SEM.RELEASE", "sem2", "big"]);
    assert!(h.join().unwrap().is_some());
}

#[test]
fn timeout_and_disconnect_leave_the_queue() {
    let s = Server::start();
    let mut c = s.conn();
    acquire(&mut c, "sem", "a", 1, 60_000, 1, None).unwrap();
    let start = Instant::now();
    assert_eq!(acquire(&mut c, "sem", "b", 1, 1000, 1, Some(200)), None);
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(waiters(&mut c, "sem"), 0);
    let raw = raw_command(
        s.port(),
        &[
            b"SEM.ACQUIRE",
            b"sem",
            b"gone",
            b"1",
            b"1000",
            b"BLOCK",
            b"0",
        ],
    );
    wait_until(Duration::from_secs(10), "raw queued", || {
        waiters(&mut c, "sem") == 1
    });
    drop(raw);
    wait_until(Duration::from_secs(10), "raw gone", || {
        waiters(&mut c, "sem") == 0
    });
    int(&mut c, &["SEM.RELEASE", "sem", "a"]);
    assert_eq!(
        int(&mut c, &["EXISTS", "sem"]),
        0,
        "nobody was granted on the gone client's behalf"
    );
}

/// A waiter first in line that times out or disconnects may be what held the others back (it
/// wanted two permits, one is free): the next one is served the moment it leaves, not at its
/// own timeout (it used to wait its whole BLOCK and get nil with a permit free all along).
#[test]
fn the_next_waiter_is_served_when_the_first_times_out_or_disconnects() {
    let s = Server::start();
    let mut c = s.conn();
    acquire(&mut c, "sem", "a", 3, 60_000, 2, None).unwrap();
    // First in line: two permits, one free; it gives up after 300 ms.
    let url = s.url();
    let big = thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        acquire(&mut c, "sem", "big", 3, 60_000, 2, Some(300))
    });
    wait_until(Duration::from_secs(10), "big queued", || {
        waiters(&mut c, "sem") == 1
    });
    // Behind it (FIFO): one permit, would fit, waits up to 20 s.
    let start = Instant::now();
    let mut c2 = s.conn();
    assert!(acquire(&mut c2, "sem", "small", 3, 60_000, 1, Some(20_000)).is_some());
    let waited = start.elapsed();
    assert_eq!(big.join().unwrap(), None);
    assert!(
        waited < Duration::from_secs(10),
        "served {waited:?} after asking: not when the first in line timed out"
    );
    // The same when the first in line disconnects.
    int(&mut c, &["SEM.RELEASE", "sem", "small"]);
    let raw = raw_command(
        s.port(),
        &[
            b"SEM.ACQUIRE",
            b"sem",
            b"gone",
            b"3",
            b"1000",
            b"PERMITS",
            b"2",
            b"BLOCK",
            b"0",
        ],
    );
    wait_until(Duration::from_secs(10), "gone queued", || {
        waiters(&mut c, "sem") == 1
    });
    let url = s.url();
    let small = thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        acquire(&mut c, "sem", "small2", 3, 60_000, 1, Some(20_000))
    });
    wait_until(Duration::from_secs(10), "small2 queued", || {
        waiters(&mut c, "sem") == 2
    });
    let start = Instant::now();
    drop(raw);
    assert!(small.join().unwrap().is_some());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "served {:?} after the first in line left",
        start.elapsed()
    );
}

#[test]
fn replica_digest_equal_after_acquire_renew_lapse_handoff() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();
    for i in 0..20 {
        acquire(
            &mut p,
            "sem",
            &format!("h{i}"),
            30,
            60_000 + i * 10,
            1,
            None,
        )
        .unwrap();
    }
    int(&mut p, &["SEM.RENEW", "sem", "h3", "90000"]);
    acquire(&mut p, "sem", "short", 30, 200, 5, None).unwrap();
    // 25 of 30 in use: a waiter for 10 is handed its permits when `short` lapses.
    let mut wc = primary.conn();
    let h = thread::spawn(move || acquire(&mut wc, "sem", "waiter", 30, 60_000, 10, Some(20_000)));
    wait_until(Duration::from_secs(10), "queued", || {
        waiters(&mut p, "sem") == 1
    });
    assert!(h.join().unwrap().is_some());
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "sem"), digest(&mut r, "sem"));
    assert_eq!(holders(&mut p, "sem").len(), 21);
    assert_eq!(
        holders(&mut r, "sem")
            .iter()
            .map(|h| &h.0)
            .collect::<Vec<_>>(),
        holders(&mut p, "sem")
            .iter()
            .map(|h| &h.0)
            .collect::<Vec<_>>()
    );
}

#[test]
fn reload_and_aof_restart_keep_holders_deadlines_tokens() {
    let mut s = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let mut c = s.conn();
    for (i, h) in ["a", "b\0bin", "c"].iter().enumerate() {
        acquire(
            &mut c,
            "sem",
            h,
            10,
            60_000 + 1000 * i as u64,
            1 + i as u64,
            None,
        )
        .unwrap();
    }
    let before = holders(&mut c, "sem");
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    let reloaded = holders(&mut c, "sem");
    assert_eq!(
        before.iter().map(|h| (&h.0, h.2, h.3)).collect::<Vec<_>>(),
        reloaded
            .iter()
            .map(|h| (&h.0, h.2, h.3))
            .collect::<Vec<_>>()
    );
    rewrite_aof(&s);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = holders(&mut c, "sem");
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b.0, b.2, b.3), (&a.0, a.2, a.3));
        assert!((b.1 - a.1).abs() < 5_000, "deadline kept: {b:?} {a:?}");
    }
    let last = before.iter().map(|h| h.3).max().unwrap();
    let t = acquire(&mut c, "sem", "new", 10, 1000, 1, None).unwrap();
    assert!(t > last);
}

#[test]
fn malformed_input_gets_errors_and_server_lives() {
    let s = Server::start();
    let mut c = s.conn();
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"0", b"100"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"-1", b"100"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"x", b"100"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"99999999999999999999", b"100"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"0"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"1.5"],
        vec![b"SEM.ACQUIRE", b"k", b"", b"3", b"100"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"100", b"PERMITS", b"4"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"100", b"PERMITS", b"0"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"100", b"PERMITS"],
        vec![
            b"SEM.ACQUIRE",
            b"k",
            b"a",
            b"3",
            b"100",
            b"PERMITS",
            b"1",
            b"PERMITS",
            b"1",
        ],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"100", b"BLOCK", b"-1"],
        vec![b"SEM.ACQUIRE", b"k", b"a", b"3", b"100", b"WAT"],
        vec![b"SEM.RENEW", b"k", b"a"],
        vec![b"SEM.RENEW", b"k", b"a", b"-3"],
        vec![b"SEM.RELEASE", b"k"],
        vec![b"SEM.RELEASE", b"k", b"a", b"b"],
        vec![b"SEM.COUNT", b"k", b"x"],
        vec![b"SEM.HOLDERS", b"k", b"x"],
        vec![b"SEM.INFO"],
    ];
    for args in &bad {
        let e = error_of(&mut c, args);
        assert!(e.starts_with("ERR") || e.starts_with("NOTHELD"), "{e}");
    }
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    for args in [
        vec![&b"SEM.ACQUIRE"[..], b"str", b"a", b"3", b"100"],
        vec![b"SEM.RENEW", b"str", b"a", b"100"],
        vec![b"SEM.RELEASE", b"str", b"a"],
        vec![b"SEM.COUNT", b"str"],
        vec![b"SEM.HOLDERS", b"str"],
        vec![b"SEM.INFO", b"str"],
    ] {
        assert!(error_of(&mut c, &args).starts_with("WRONGTYPE"));
    }
    // A RESV key is not a semaphore either.
    let _: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("lock")
        .arg("a")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(error_of(&mut c, &[b"SEM.COUNT", b"lock"]).starts_with("WRONGTYPE"));
    // Binary holders are fine.
    let t: Option<i64> = redis::cmd("SEM.ACQUIRE")
        .arg("bin")
        .arg(&b"\x00\xff\r\n"[..])
        .arg(2)
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert!(t.is_some());
    assert_alive(&s, &mut c);
}
