//! SLOT.* against a real redis-server with corral loaded.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_alive, assert_replica_converges, digest, error_of, info_int, int, int_fields, keyevents,
    rewrite_aof, subscribe_keyevents,
};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

fn slot_get(c: &mut Connection, key: &str, opts: &[&str]) -> Option<i64> {
    redis::cmd("SLOT.GET").arg(key).arg(opts).query(c).unwrap()
}

/// SLOT.GET … WITHTOKEN: (slot, token).
fn get_token(c: &mut Connection, key: &str, opts: &[&str]) -> Option<(i64, i64)> {
    redis::cmd("SLOT.GET")
        .arg(key)
        .arg(opts)
        .arg("WITHTOKEN")
        .query(c)
        .unwrap()
}

/// SLOT.HOLDER as (holder, ttl, token); None when the slot is free.
type Holder = (Option<Vec<u8>>, i64, Option<i64>);

fn holder(c: &mut Connection, key: &str, slot: i64) -> Option<Holder> {
    redis::cmd("SLOT.HOLDER")
        .arg(key)
        .arg(slot)
        .query(c)
        .unwrap()
}

/// SLOT.INFO as a map of its integer fields; None when the key does not exist (a missing
/// key answers the map of an empty pool: nothing held, `highest` -1).
fn info(c: &mut Connection, key: &str) -> Option<HashMap<String, i64>> {
    let v: Value = redis::cmd("SLOT.INFO").arg(key).query(c).unwrap();
    let i = int_fields(v).expect("SLOT.INFO answers a map");
    if i["highest"] == -1 {
        assert_eq!((i["held"], i["leased"]), (0, 0), "{i:?}");
        return None;
    }
    Some(i)
}

fn waiters(c: &mut Connection, key: &str) -> i64 {
    let v: Value = redis::cmd("SLOT.INFO").arg(key).query(c).unwrap();
    int_fields(v).expect("a map")["waiters"]
}

#[test]
fn callosum_sequence() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(slot_get(&mut c, "k", &[]), Some(0));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(1));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(2));
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "0"]), 1);
    assert_eq!(slot_get(&mut c, "k", &[]), Some(0));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(3));
    assert_eq!(int(&mut c, &["SLOT.COUNT", "k"]), 4);
    // Putting back what is not held never makes a duplicate.
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "1"]), 1);
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"1"]),
        "NOTHELD slot 1 is not held (lapsed, put back or never taken)"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"99"]),
        "NOTHELD slot 99 is not held (lapsed, put back or never taken)"
    );
    assert_eq!(slot_get(&mut c, "k", &[]), Some(1));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(4));
    let i = info(&mut c, "k").unwrap();
    assert_eq!((i["held"], i["highest"], i["leased"]), (5, 4, 0));
    // An empty pool is no key at all.
    for slot in ["0", "1", "2", "3", "4"] {
        assert_eq!(int(&mut c, &["SLOT.PUT", "k", slot]), 1);
    }
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    assert_eq!(int(&mut c, &["SLOT.COUNT", "k"]), 0);
    assert_eq!(info(&mut c, "k"), None);
    assert_eq!(slot_get(&mut c, "k", &[]), Some(0));
}

#[test]
fn ten_thousand_gets_then_even_puts_answer_the_even_slots_in_order() {
    let s = Server::start();
    let mut c = s.conn();
    let mut p = redis::pipe();
    for _ in 0..10_000 {
        p.cmd("SLOT.GET").arg("k");
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<i64>>());

    let mut p = redis::pipe();
    for slot in (0..10_000).step_by(2).rev() {
        p.cmd("SLOT.PUT").arg("k").arg(slot);
    }
    let put: Vec<i64> = p.query(&mut c).unwrap();
    assert!(put.len() == 5_000 && put.iter().all(|&r| r == 1));
    assert_eq!(int(&mut c, &["SLOT.COUNT", "k"]), 5_000);

    let mut p = redis::pipe();
    for _ in 0..5_000 {
        p.cmd("SLOT.GET").arg("k");
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..10_000).step_by(2).collect::<Vec<i64>>());
    assert_eq!(slot_get(&mut c, "k", &[]), Some(10_000));
}

#[test]
fn limit_pool_is_full_then_blocks_until_put_or_lapse() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(slot_get(&mut c, "k", &["LIMIT", "2"]), Some(0));
    assert_eq!(slot_get(&mut c, "k", &["LIMIT", "2"]), Some(1));
    assert_eq!(slot_get(&mut c, "k", &["LIMIT", "2"]), None, "full");

    // Timeout: nil, and the waiter leaves the queue.
    let start = Instant::now();
    assert_eq!(slot_get(&mut c, "k", &["LIMIT", "2", "BLOCK", "200"]), None);
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(waiters(&mut c, "k"), 0);
    let timeouts = s.info_field("corral", "corral_slot_timeouts");
    assert_eq!(timeouts.as_deref(), Some("1"));

    // Granted when a slot is PUT: the freed slot is handed over directly.
    let mut wc = s.conn();
    let waiter = thread::spawn(move || slot_get(&mut wc, "k", &["LIMIT", "2", "BLOCK", "20000"]));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        waiters(&mut c, "k") == 1
    });
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "1"]), 1);
    assert_eq!(waiter.join().unwrap(), Some(1));
    assert_eq!(int(&mut c, &["SLOT.COUNT", "k"]), 2);

    // Granted when a leased slot lapses, with no other command on the key.
    let start = Instant::now();
    assert_eq!(
        slot_get(&mut c, "l", &["LIMIT", "1", "TTL", "300"]),
        Some(0)
    );
    let got = slot_get(&mut c, "l", &["LIMIT", "1", "BLOCK", "10000"]);
    let waited = start.elapsed();
    assert_eq!(got, Some(0), "granted on lapse");
    assert!(
        waited >= Duration::from_millis(290),
        "not before: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "promptly after: {waited:?}"
    );
    assert_eq!(
        holder(&mut c, "l", 0),
        Some((None, -1, None)),
        "the waiter's slot"
    );
    let lapses = info_int(&s, "corral", "corral_slot_lapses");
    assert_eq!(lapses, 1);
}

#[test]
fn waiters_are_served_fifo() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(slot_get(&mut c, "k", &["LIMIT", "1"]), Some(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 1..=3 {
        let mut wc = s.conn();
        let order = order.clone();
        threads.push(thread::spawn(move || {
            let h = format!("w{i}");
            let (slot, token) = get_token(
                &mut wc,
                "k",
                &["HOLDER", &h, "LIMIT", "1", "BLOCK", "30000"],
            )
            .expect("granted");
            order.lock().unwrap().push((i, token));
            thread::sleep(Duration::from_millis(30));
            let r: i64 = redis::cmd("SLOT.PUT")
                .arg("k")
                .arg(slot)
                .arg("HOLDER")
                .arg(&h)
                .query(&mut wc)
                .unwrap();
            assert_eq!(r, 1);
        }));
        // Queue them in a known order.
        wait_until(Duration::from_secs(10), "waiter queued", || {
            waiters(&mut c, "k") == i
        });
    }
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "0"]), 1);
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(order.windows(2).all(|w| w[0].1 < w[1].1), "{order:?}");
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
}

#[test]
fn new_get_waits_behind_queued_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(
        slot_get(&mut c, "k", &["LIMIT", "1", "TTL", "60000"]),
        Some(0)
    );
    let mut wc = s.conn();
    let waiter = thread::spawn(move || slot_get(&mut wc, "k", &["LIMIT", "1", "BLOCK", "20000"]));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        waiters(&mut c, "k") == 1
    });
    // Slot 1 is free for a GET without LIMIT, but someone is first in line.
    assert_eq!(slot_get(&mut c, "k", &[]), None);
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "0"]), 1);
    assert_eq!(waiter.join().unwrap(), Some(0));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(1));
}

#[test]
fn holders_renew_and_tokens() {
    let s = Server::start();
    let mut c = s.conn();
    let (slot, t1) = get_token(&mut c, "k", &["HOLDER", "a", "TTL", "10000"]).unwrap();
    assert_eq!(slot, 0);
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"0"]),
        "NOTHELD slot 0 is held by a"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"0", b"HOLDER", b"b"]),
        "NOTHELD slot 0 is held by a"
    );
    assert_eq!(
        error_of(
            &mut c,
            &[b"SLOT.RENEW", b"k", b"0", b"60000", b"HOLDER", b"b"]
        ),
        "NOTHELD slot 0 is held by a"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.RENEW", b"k", b"0", b"60000"]),
        "NOTHELD slot 0 is held by a"
    );
    assert!(holder(&mut c, "k", 0).unwrap().1 <= 10_000);
    assert_eq!(
        int(&mut c, &["SLOT.RENEW", "k", "0", "60000", "HOLDER", "a"]),
        1
    );
    let (h, ttl, token) = holder(&mut c, "k", 0).unwrap();
    assert_eq!((h.as_deref(), token), (Some(&b"a"[..]), Some(t1)));
    assert!((59_000..=60_000).contains(&ttl), "renew extended: {ttl}");
    let pttl = int(&mut c, &["PTTL", "k"]);
    assert!((59_000..=60_000).contains(&pttl), "PTTL follows: {pttl}");

    // The same holder asking again: same slot, same token, the lease reset to its TTL.
    assert_eq!(
        get_token(&mut c, "k", &["HOLDER", "a", "TTL", "5000"]),
        Some((0, t1))
    );
    assert!(holder(&mut c, "k", 0).unwrap().1 <= 5_000);

    // Anonymous slots: PUT without HOLDER; no stored holder or token; RENEW needs a TTL.
    let (slot, t2) = get_token(&mut c, "k", &[]).unwrap();
    assert_eq!(slot, 1);
    assert!(t2 > t1);
    assert_eq!(holder(&mut c, "k", 1), Some((None, -1, None)));
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"1", b"HOLDER", b"a"]),
        "NOTHELD slot 1 is held without HOLDER"
    );
    let e = error_of(&mut c, &[b"SLOT.RENEW", b"k", b"1", b"1000"]);
    assert!(e.starts_with("ERR slot 1 has no TTL"), "{e}");
    assert_eq!(
        error_of(&mut c, &[b"SLOT.RENEW", b"k", b"7", b"1000"]),
        "NOTHELD slot 7 is not held (lapsed, put back or never taken)"
    );
    // An anonymous leased slot: token kept, renewable without HOLDER.
    let (slot, t3) = get_token(&mut c, "k", &["TTL", "10000"]).unwrap();
    assert_eq!(slot, 2);
    let (h, _, token) = holder(&mut c, "k", 2).unwrap();
    assert_eq!((h, token), (None, Some(t3)));
    assert_eq!(int(&mut c, &["SLOT.RENEW", "k", "2", "20000"]), 1);
    assert!(holder(&mut c, "k", 2).unwrap().1 > 10_000);
    assert_eq!(holder(&mut c, "k", 3), None);

    // Tokens strictly increase across GET and PUT.
    let mut tokens = vec![t1, t2, t3];
    for _ in 0..20 {
        let (slot, t) = get_token(&mut c, "k", &[]).unwrap();
        tokens.push(t);
        assert_eq!(int(&mut c, &["SLOT.PUT", "k", &slot.to_string()]), 1);
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "0", "HOLDER", "a"]), 1);
    assert_eq!(slot_get(&mut c, "k", &["HOLDER", "b"]), Some(0));
}

#[test]
fn pttl_follows_the_pool() {
    let s = Server::start();
    let mut c = s.conn();
    slot_get(&mut c, "u", &[]);
    slot_get(&mut c, "u", &["HOLDER", "h"]);
    assert_eq!(
        int(&mut c, &["PTTL", "u"]),
        -1,
        "unleased slots never expire"
    );

    assert_eq!(slot_get(&mut c, "l", &["TTL", "30000"]), Some(0));
    assert_eq!(slot_get(&mut c, "l", &["TTL", "60000"]), Some(1));
    let pttl = int(&mut c, &["PTTL", "l"]);
    assert!(
        (59_000..=60_000).contains(&pttl),
        "the latest deadline: {pttl}"
    );
    // One unleased slot: no TTL; put it back: the latest deadline again.
    assert_eq!(slot_get(&mut c, "l", &[]), Some(2));
    assert_eq!(int(&mut c, &["PTTL", "l"]), -1);
    assert_eq!(int(&mut c, &["SLOT.PUT", "l", "2"]), 1);
    let pttl = int(&mut c, &["PTTL", "l"]);
    assert!((59_000..=60_000).contains(&pttl), "{pttl}");
    assert_eq!(int(&mut c, &["SLOT.PUT", "l", "1"]), 1);
    let pttl = int(&mut c, &["PTTL", "l"]);
    assert!((29_000..=30_000).contains(&pttl), "{pttl}");

    // A leased-only pool vanishes when its last lease lapses.
    assert_eq!(slot_get(&mut c, "short", &["TTL", "200"]), Some(0));
    wait_until(Duration::from_secs(10), "lapse deletes the key", || {
        int(&mut c, &["EXISTS", "short"]) == 0
    });
}

#[test]
fn replica_digest_matches_after_get_put_lapse_and_handoff() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();

    for _ in 0..100 {
        slot_get(&mut p, "k", &[]);
    }
    for slot in (0..100).step_by(3) {
        int(&mut p, &["SLOT.PUT", "k", &slot.to_string()]);
    }
    slot_get(&mut p, "k", &["HOLDER", "a", "TTL", "60000"]);
    slot_get(&mut p, "k", &["HOLDER", "b"]);
    int(&mut p, &["SLOT.RENEW", "k", "0", "50000", "HOLDER", "a"]);
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "k"), digest(&mut r, "k"));
    assert_eq!(
        holder(&mut r, "k", 0).unwrap().0.as_deref(),
        Some(&b"a"[..])
    );

    // Short leases lapse on the primary; the replica follows.
    slot_get(&mut p, "k", &["TTL", "300"]);
    slot_get(&mut p, "k", &["HOLDER", "c\0bin", "TTL", "400"]);
    wait_until(Duration::from_secs(10), "lapses on primary", || {
        info(&mut p, "k").unwrap()["leased"] == 1
    });
    assert_replica_converges(&primary, &replica, "k");
    assert_eq!(
        int(&mut r, &["SLOT.COUNT", "k"]),
        int(&mut p, &["SLOT.COUNT", "k"])
    );

    // Hand-off to a blocked waiter on a full LIMIT pool.
    slot_get(&mut p, "h", &["LIMIT", "1", "HOLDER", "x"]);
    let mut wp = primary.conn();
    let waiter = thread::spawn(move || {
        get_token(
            &mut wp,
            "h",
            &[
                "LIMIT", "1", "HOLDER", "y", "TTL", "60000", "BLOCK", "20000",
            ],
        )
    });
    wait_until(Duration::from_secs(10), "waiter queued", || {
        waiters(&mut p, "h") == 1
    });
    int(&mut p, &["SLOT.PUT", "h", "0", "HOLDER", "x"]);
    let (slot, token) = waiter.join().unwrap().unwrap();
    assert_eq!(slot, 0);
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "h"), digest(&mut r, "h"));
    let (h, _, t) = holder(&mut r, "h", 0).unwrap();
    assert_eq!((h.as_deref(), t), (Some(&b"y"[..]), Some(token)));
    // Replicas refuse to grant.
    let e = error_of(&mut r, &[b"SLOT.GET", b"h"]);
    assert!(e.starts_with("READONLY"), "{e}");
}

/// Everything SLOT.HOLDER says about slots 0..=n, plus COUNT and INFO.
fn snapshot(c: &mut Connection, key: &str, n: i64) -> (Vec<Option<Holder>>, i64, Vec<i64>) {
    let slots = (0..=n).map(|s| holder(c, key, s)).collect();
    let i = info(c, key).unwrap();
    (
        slots,
        int(c, &["SLOT.COUNT", key]),
        vec![i["held"], i["highest"], i["leased"]],
    )
}

/// Equal, allowing TTLs to have run down by up to `slack` ms.
fn assert_same(
    before: &(Vec<Option<Holder>>, i64, Vec<i64>),
    after: &(Vec<Option<Holder>>, i64, Vec<i64>),
    slack: i64,
) {
    assert_eq!((before.1, &before.2), (after.1, &after.2));
    for (slot, (b, a)) in before.0.iter().zip(&after.0).enumerate() {
        match (b, a) {
            (Some((bh, bt, btok)), Some((ah, at, atok))) => {
                assert_eq!((bh, btok), (ah, atok), "slot {slot}");
                if *bt == -1 {
                    assert_eq!(*at, -1, "slot {slot}");
                } else {
                    assert!(
                        *at <= *bt && *at > bt - slack,
                        "slot {slot}: ttl {bt} then {at}"
                    );
                }
            }
            (b, a) => assert_eq!(b, a, "slot {slot}"),
        }
    }
}

#[test]
fn reload_and_aof_rewrite_keep_every_slot_holder_deadline_and_token() {
    let mut s = Server::start_with(
        ServerOptions::new()
            .config("appendonly", "yes")
            // The rewrite writes commands (the pool's Restore effect), not an RDB preamble.
            .config("aof-use-rdb-preamble", "no"),
    );
    let mut c = s.conn();
    let mut tokens = Vec::new();
    for _ in 0..300 {
        tokens.push(get_token(&mut c, "k", &[]).unwrap().1);
    }
    for slot in (0..300).step_by(5) {
        int(&mut c, &["SLOT.PUT", "k", &slot.to_string()]);
    }
    for opts in [
        &["HOLDER", "leased", "TTL", "60000"][..],
        &["HOLDER", "owner"],
        &["TTL", "90000"],
        &["HOLDER", "bin\0\r\n", "TTL", "120000"],
    ] {
        tokens.push(get_token(&mut c, "k", opts).unwrap().1);
    }
    let before = snapshot(&mut c, "k", 305);
    let d = digest(&mut c, "k");

    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_same(&before, &snapshot(&mut c, "k", 305), 5_000);
    assert_eq!(digest(&mut c, "k"), d, "DEBUG RELOAD: the same value");

    rewrite_aof(&s);
    let base: Vec<_> = std::fs::read_dir(s.dir().join("appendonlydir"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".base.aof"))
        .collect();
    assert_eq!(base.len(), 1);
    let text = std::fs::read(base[0].path()).unwrap();
    assert!(
        text.windows(13).any(|w| w == b"CORRAL._APPLY"),
        "the rewrite holds the pool as one CORRAL._APPLY"
    );
    assert!(text.len() < 20_000, "compact: {} bytes", text.len());
    drop(c);
    s.restart();
    let mut c = s.conn();
    assert_same(&before, &snapshot(&mut c, "k", 305), 10_000);
    assert_eq!(digest(&mut c, "k"), d, "AOF restart: the same value");
    // The next grant's token is above every token issued before.
    // Slots 0, 5, 10 and 15 went to the four GETs with records; 20 is the lowest free.
    let (slot, t) = get_token(&mut c, "k", &[]).unwrap();
    assert_eq!(slot, 20);
    assert!(tokens.iter().all(|&old| old < t));
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn malformed_input_gets_errors_and_server_lives() {
    let s = Server::start();
    let mut c = s.conn();
    slot_get(&mut c, "k", &[]);
    let huge = vec![b'x'; 1 << 20];
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"SLOT.GET"],
        vec![b"SLOT.GET", b"k", b"LIMIT", b"0"],
        vec![b"SLOT.GET", b"k", b"LIMIT", b"-1"],
        vec![b"SLOT.GET", b"k", b"LIMIT", b"1099511627777"],
        vec![b"SLOT.GET", b"k", b"LIMIT"],
        vec![b"SLOT.GET", b"k", b"TTL", b"0"],
        vec![b"SLOT.GET", b"k", b"TTL", b"1.5"],
        vec![b"SLOT.GET", b"k", b"TTL", b"18446744073709551616"],
        vec![b"SLOT.GET", b"k", b"BLOCK", b"-1"],
        vec![b"SLOT.GET", b"k", b"HOLDER", b""],
        vec![b"SLOT.GET", b"k", b"HOLDER"],
        vec![b"SLOT.GET", b"k", b"NOPE"],
        vec![b"SLOT.GET", b"k", b"\x00\xff"],
        vec![b"SLOT.GET", b"k", &huge],
        vec![b"SLOT.GET", b"k", b"LIMIT", b"2", b"LIMIT", b"3"],
        vec![b"SLOT.GET", b"k", b"WITHTOKEN", b"withtoken"],
        vec![b"SLOT.GET", b"k", b"HOLDER", b"a", b"HOLDER", b"b"],
        vec![b"SLOT.PUT", b"k"],
        vec![b"SLOT.PUT", b"k", b"-1"],
        vec![b"SLOT.PUT", b"k", b"1.5"],
        vec![b"SLOT.PUT", b"k", b"18446744073709551616"],
        vec![b"SLOT.PUT", b"k", b"1099511627776"],
        vec![b"SLOT.PUT", b"k", b""],
        vec![b"SLOT.PUT", b"k", b" 0"],
        vec![b"SLOT.PUT", b"k", &huge],
        vec![b"SLOT.PUT", b"k", b"0", b"extra"],
        vec![b"SLOT.PUT", b"k", b"0", b"HOLDER"],
        vec![b"SLOT.PUT", b"k", b"0", b"HOLDER", b"a", b"HOLDER", b"a"],
        vec![b"SLOT.RENEW", b"k", b"0"],
        vec![b"SLOT.RENEW", b"k", b"0", b"0"],
        vec![b"SLOT.RENEW", b"k", b"x", b"100"],
        vec![b"SLOT.RENEW", b"k", b"0", b"100", b"TTL", b"5"],
        vec![b"SLOT.COUNT"],
        vec![b"SLOT.COUNT", b"k", b"extra"],
        vec![b"SLOT.HOLDER", b"k"],
        vec![b"SLOT.HOLDER", b"k", b"-1"],
        vec![b"SLOT.HOLDER", b"k", b"0", b"extra"],
        vec![b"SLOT.INFO"],
        vec![b"SLOT.INFO", b"k", b"extra"],
    ];
    for args in &bad {
        let e = error_of(&mut c, args);
        assert!(e.starts_with("ERR"), "{e}");
    }
    assert_eq!(
        error_of(&mut c, &[b"SLOT.GET", b"k", b"LIMIT", b"0"]),
        "ERR invalid LIMIT '0': expected an integer from 1 to 1099511627776"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"k", b"-1"]),
        "ERR invalid slot '-1': expected an integer from 0 to 1099511627775"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.GET", b"k", b"TTL", b"5", b"TTL", b"5"]),
        "ERR option TTL given more than once"
    );
    assert!(error_of(&mut c, &[b"SLOT.GET", b"k", b"NOPE"])
        .starts_with("ERR unknown option 'NOPE' for SLOT.GET"));
    assert_eq!(
        int(&mut c, &["SLOT.COUNT", "k"]),
        1,
        "no error changed the pool"
    );

    // Wrong key type for every command.
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    for args in [
        vec![&b"SLOT.GET"[..], b"str"],
        vec![b"SLOT.PUT", b"str", b"0"],
        vec![b"SLOT.RENEW", b"str", b"0", b"100"],
        vec![b"SLOT.COUNT", b"str"],
        vec![b"SLOT.HOLDER", b"str", b"0"],
        vec![b"SLOT.INFO", b"str"],
    ] {
        assert!(error_of(&mut c, &args).starts_with("WRONGTYPE"));
    }
    // And a SLOT key is not a string.
    assert!(error_of(&mut c, &[b"GET", b"k"]).starts_with("WRONGTYPE"));

    // Binary and huge holders are legal.
    let bin: &[u8] = b"\x00\xff\r\n holder";
    let slot: i64 = redis::cmd("SLOT.GET")
        .arg("b")
        .arg("HOLDER")
        .arg(bin)
        .query(&mut c)
        .unwrap();
    assert_eq!(slot, 0);
    let e = error_of(&mut c, &[b"SLOT.PUT", b"b", b"0", b"HOLDER", b"other"]);
    assert_eq!(e, "NOTHELD slot 0 is held by \\x00\\xff\\x0d\\x0a holder");
    let (h, _, _) = holder(&mut c, "b", 0).unwrap();
    assert_eq!(h.as_deref(), Some(bin));
    let r: i64 = redis::cmd("SLOT.PUT")
        .arg("b")
        .arg(0)
        .arg("holder")
        .arg(bin)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let slot: i64 = redis::cmd("SLOT.GET")
        .arg("b")
        .arg("HOLDER")
        .arg(&huge)
        .arg("TTL")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(slot, 0);
    assert_alive(&s, &mut c);
}

#[test]
fn memory_usage_of_a_million_slots() {
    let s = Server::start();
    let mut c = s.conn();
    const N: i64 = 1_000_000;
    for batch in 0..(N / 20_000) {
        let mut p = redis::pipe();
        for _ in 0..20_000 {
            p.cmd("SLOT.GET").arg("k");
        }
        let got: Vec<i64> = p.query(&mut c).unwrap();
        assert_eq!(got[0], batch * 20_000);
        assert_eq!(got[19_999], batch * 20_000 + 19_999);
    }
    assert_eq!(int(&mut c, &["SLOT.COUNT", "k"]), N);
    let bytes = int(&mut c, &["MEMORY", "USAGE", "k"]);
    println!("MEMORY USAGE of a {N}-slot pool: {bytes} bytes");
    assert!(bytes <= 250_000, "{bytes} bytes for {N} slots");
    assert!(bytes >= N / 8, "counts the bitmap honestly: {bytes}");
    // Still the lowest free slot, at any depth.
    assert_eq!(int(&mut c, &["SLOT.PUT", "k", "262143"]), 1);
    assert_eq!(slot_get(&mut c, "k", &[]), Some(262_143));
    assert_eq!(slot_get(&mut c, "k", &[]), Some(N));
}

#[test]
fn block_inside_multi_answers_at_once() {
    let s = Server::start();
    let mut c = s.conn();
    slot_get(&mut c, "k", &["LIMIT", "1"]);
    let start = Instant::now();
    let (r,): (Option<i64>,) = redis::pipe()
        .atomic()
        .cmd("SLOT.GET")
        .arg("k")
        .arg("LIMIT")
        .arg(1)
        .arg("BLOCK")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<i64> = redis::cmd("EVAL")
        .arg("return redis.call('SLOT.GET', KEYS[1], 'LIMIT', 1, 'BLOCK', 0)")
        .arg(1)
        .arg("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn keyspace_notifications_for_grant_renew_release_lapse() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut sub = s.conn();
    let mut c = s.conn();
    let mut pubsub = sub.as_pubsub();
    subscribe_keyevents(&mut pubsub, "slot", Duration::from_secs(5));
    slot_get(&mut c, "k", &[]);
    int(&mut c, &["SLOT.PUT", "k", "0"]);
    slot_get(&mut c, "k", &["TTL", "10000"]);
    int(&mut c, &["SLOT.RENEW", "k", "0", "100"]);
    assert_eq!(
        keyevents(&mut pubsub, 5, "k"),
        [
            "slot.grant",
            "slot.release",
            "slot.grant",
            "slot.renew",
            "slot.lapse"
        ]
    );
}
