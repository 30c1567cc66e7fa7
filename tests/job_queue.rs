//! JOB's second edition against a real redis-server: delays, priorities, bounded attempts with
//! backoff and the dead letter, retention, unique enqueue, listing, the notification worker's
//! heartbeat, FULFILL … NEXT, and their persistence and replication.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_replica_converges, digest, error_of, fields, int, keyevents, rewrite_aof,
    subscribe_keyevents, value,
};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

type Pulled = Option<(i64, Vec<u8>, i64)>;

/// `JOB.FULFILL key id v TOKEN token NEXT worker 30000`: what the worker gets next.
fn fulfill_next(c: &mut Connection, key: &str, id: i64, token: i64, worker: &str) -> Value {
    let (id, token) = (id.to_string(), token.to_string());
    value(
        c,
        &[
            "JOB.FULFILL",
            key,
            &id,
            "v",
            "TOKEN",
            &token,
            "NEXT",
            worker,
            "30000",
        ],
    )
}

fn pulled(v: Value) -> Pulled {
    redis::from_redis_value(&v).unwrap()
}

fn pull(c: &mut Connection, key: &str, worker: &str, ms: u64, block: Option<u64>) -> Pulled {
    let mut cmd = redis::cmd("JOB.PULL");
    cmd.arg(key).arg(worker).arg(ms);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b);
    }
    cmd.query(c).unwrap()
}

fn get(c: &mut Connection, key: &str, id: i64) -> HashMap<String, Value> {
    let v = value(c, &["JOB.GET", key, &id.to_string()]);
    fields(v).expect("a job").into_iter().collect()
}

fn get_str(c: &mut Connection, key: &str, id: i64, field: &str) -> Option<String> {
    match &get(c, key, id)[field] {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8(b.clone()).unwrap()),
        v => panic!("{field}: {v:?}"),
    }
}

fn get_int(c: &mut Connection, key: &str, id: i64, field: &str) -> Option<i64> {
    match &get(c, key, id)[field] {
        Value::Nil => None,
        Value::Int(i) => Some(*i),
        v => panic!("{field}: {v:?}"),
    }
}

fn info(c: &mut Connection, key: &str) -> HashMap<String, i64> {
    let v = value(c, &["JOB.INFO", key]);
    common::client::int_fields(v).unwrap()
}

fn list(c: &mut Connection, args: &[&str]) -> Vec<i64> {
    let mut a = vec!["JOB.LIST"];
    a.extend_from_slice(args);
    redis::from_redis_value(&value(c, &a)).unwrap()
}

#[test]
fn renew_is_the_notification_workers_heartbeat() {
    let s = Server::start();
    let mut c = s.conn();
    let id = int(&mut c, &["JOB.CREATE", "jobs", "r"]);
    let sid = id.to_string();
    int(&mut c, &["JOB.QUEUE", "jobs", &sid, "t"]);
    int(&mut c, &["JOB.FULFILL", "jobs", &sid, "v"]);
    let n: Vec<Value> =
        redis::from_redis_value(&value(&mut c, &["JOB.PULLNOTIFY", "jobs", "n", "300"])).unwrap();
    assert_eq!(n.len(), 4);
    // Heartbeats keep the 300 ms lease for well over a second.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        assert_eq!(int(&mut c, &["JOB.RENEW", "jobs", &sid, "n", "300"]), 1);
        thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(get_str(&mut c, "jobs", id, "holder").as_deref(), Some("n"));
    assert!(get_int(&mut c, "jobs", id, "ttl").unwrap() > 100);
    let e = error_of(
        &mut c,
        &[b"JOB.RENEW", b"jobs", sid.as_bytes(), b"m", b"300"],
    );
    assert_eq!(e, format!("NOTHELD job {id} is held by n"));
    assert_eq!(int(&mut c, &["JOB.DONE", "jobs", &sid, "n", "t"]), 1);
    let e = error_of(
        &mut c,
        &[b"JOB.RENEW", b"jobs", sid.as_bytes(), b"n", b"300"],
    );
    assert_eq!(
        e,
        format!("NOTHELD job {id} has no notification lease (lapsed, done or never pulled)")
    );
    // The work-lease texts use "lapsed" too; RELEASE of a fulfilled job says so.
    let e = error_of(&mut c, &[b"JOB.RELEASE", b"jobs", sid.as_bytes(), b"n"]);
    assert_eq!(e, format!("NOTHELD job {id} is fulfilled"));
    let other = int(&mut c, &["JOB.CREATE", "jobs", "r2"]).to_string();
    let e = error_of(
        &mut c,
        &[b"JOB.RENEW", b"jobs", other.as_bytes(), b"w", b"300"],
    );
    assert_eq!(
        e,
        format!("NOTHELD job {other} is not leased (lapsed, released or never pulled)")
    );
    // UNQUEUE with no target is accepted (fs-job-store's unqueueAll(id, [])).
    assert_eq!(int(&mut c, &["JOB.UNQUEUE", "jobs", &sid]), 0);
    let e = error_of(&mut c, &[b"JOB.UNQUEUE", b"jobs", b"12345"]);
    assert_eq!(e, "NOJOB no job 12345");
}

#[test]
fn options_are_validated_with_precise_errors() {
    let s = Server::start();
    let mut c = s.conn();
    let id = int(&mut c, &["JOB.CREATE", "jobs", "r"]).to_string();
    let id = id.as_bytes();
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![b"DELAY", b"0"], "ERR invalid DELAY '0': expected integer milliseconds from 1 to 1099511627776"),
        (vec![b"DELAY", b"1099511627777"], "ERR invalid DELAY '1099511627777': expected integer milliseconds from 1 to 1099511627776"),
        (vec![b"BACKOFF", b"-1"], "ERR invalid BACKOFF '-1': expected integer milliseconds from 1 to 1099511627776"),
        (vec![b"KEEP", b"1.5"], "ERR invalid KEEP '1.5': expected integer milliseconds from 1 to 1099511627776"),
        (vec![b"PRIORITY", b"4294967296"], "ERR invalid PRIORITY '4294967296': expected an integer from 0 to 4294967295"),
        (vec![b"PRIORITY", b"-1"], "ERR invalid PRIORITY '-1': expected an integer from 0 to 4294967295"),
        (vec![b"ATTEMPTS", b"0"], "ERR invalid ATTEMPTS '0': expected an integer from 1 to 4294967295"),
        (vec![b"UNIQUE", b""], "ERR invalid UNIQUE: must not be empty"),
        (vec![b"DELAY", b"5", b"delay", b"6"], "ERR option DELAY given more than once"),
        (vec![b"UNIQUE", b"a", b"UNIQUE", b"a"], "ERR option UNIQUE given more than once"),
        (vec![b"KEEP"], "ERR option KEEP of JOB.CREATE needs a value"),
        (vec![b"SOON", b"1"], "ERR unknown option 'SOON' for JOB.CREATE (expected one of: DELAY, PRIORITY, ATTEMPTS, BACKOFF, KEEP, UNIQUE)"),
    ];
    for (opts, want) in cases {
        let mut args: Vec<&[u8]> = vec![b"JOB.CREATE", b"jobs", b"req"];
        args.extend(opts);
        assert_eq!(error_of(&mut c, &args), want);
    }
    for (args, want) in [
        (vec![&b"JOB.FULFILL"[..], b"jobs", id, b"v", b"NEXT", b"w"], "ERR wrong number of arguments for 'job.fulfill' command"),
        (vec![b"JOB.FULFILL", b"jobs", id, b"v", b"NEXT", b"", b"100"], "ERR invalid worker: must not be empty"),
        (vec![b"JOB.FULFILL", b"jobs", id, b"v", b"NEXT", b"w", b"0"], "ERR invalid TTL '0': expected integer milliseconds from 1 to 1099511627776"),
        (vec![b"JOB.FULFILL", b"jobs", id, b"v", b"NEXT", b"w", b"1", b"NEXT", b"w", b"1"], "ERR option NEXT given more than once"),
        (vec![b"JOB.LIST", b"jobs", b"done"], "ERR invalid state 'done' for JOB.LIST (expected one of: pending, leased, delayed, failed, fulfilled)"),
        (vec![b"JOB.LIST", b"jobs", b"pending", b"COUNT", b"0"], "ERR invalid COUNT '0': expected an integer from 1 to 10000"),
        (vec![b"JOB.LIST", b"jobs", b"pending", b"AFTER", b"x"], "ERR invalid id 'x': expected an integer from 1 to 9223372036854775807"),
        (vec![b"JOB.LIST", b"jobs", b"pending", b"AFTER", b"1", b"AFTER", b"1"], "ERR option AFTER given more than once"),
        (vec![b"JOB.LIST", b"jobs", b"pending", b"AFTER", b"12345"], "NOJOB no job 12345"),
        (vec![b"JOB.LIST", b"jobs", b"delayed", b"AFTER", id], "NOJOB no delayed job ID (AFTER needs a job that is still delayed)"),
        (vec![b"JOB.FAIL", b"jobs", id, b""], "ERR invalid worker: must not be empty"),
        (vec![b"JOB.FAIL", b"jobs", id, b"w", b"why", b"extra"], "ERR unexpected argument 'extra' for JOB.FAIL"),
        (vec![b"JOB.FAIL", b"jobs", b"12345", b"w"], "NOTHELD no job 12345"),
        (vec![b"JOB.FAIL", b"jobs", id, b"w"], "NOTHELD job ID is not leased (lapsed, released or never pulled)"),
        (vec![b"JOB.RETRY", b"jobs", b"12345"], "NOJOB no job 12345"),
        (vec![b"JOB.RETRY", b"jobs", id], "ERR job ID is pending, not failed: only a failed job can be retried"),
        (vec![b"JOB.RETRY", b"jobs", b"0"], "ERR invalid id '0': expected an integer from 1 to 9223372036854775807"),
    ] {
        let want = want.replace("ID", std::str::from_utf8(id).unwrap());
        assert_eq!(error_of(&mut c, &args), want, "{:?}", String::from_utf8_lossy(&args.concat()));
    }
    // Nothing was created by the refused calls.
    assert_eq!(info(&mut c, "jobs")["jobs"], 1);
    // Case-insensitive options and states; UNIQUE and requests binary-safe.
    let a: i64 = redis::cmd("JOB.CREATE")
        .arg("jobs")
        .arg(&b"\x00req"[..])
        .arg("priority")
        .arg(4294967295u64)
        .arg("unique")
        .arg(&b"\x00\xff"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(list(&mut c, &["jobs", "PENDING", "count", "1"]), vec![a]);
}

#[test]
fn delayed_jobs_fall_due_on_time_and_go_to_blocked_pullers() {
    let s = Server::start();
    let mut c = s.conn();
    let created = Instant::now();
    let id = int(&mut c, &["JOB.CREATE", "jobs", "later", "DELAY", "600"]);
    assert_eq!(
        get_str(&mut c, "jobs", id, "state").as_deref(),
        Some("delayed")
    );
    let due = get_int(&mut c, "jobs", id, "due").unwrap();
    assert!((400..=600).contains(&due), "{due}");
    let i = info(&mut c, "jobs");
    assert_eq!((i["jobs"], i["delayed"], i["pending"]), (1, 1, 0));
    assert_eq!(int(&mut c, &["PTTL", "jobs"]), -1);
    assert_eq!(
        pull(&mut c, "jobs", "w", 1000, None),
        None,
        "not before it is due"
    );
    // A PULL blocked on a store with nothing pending is handed the job when it falls due.
    let mut wc = s.conn();
    let t = thread::spawn(move || {
        let got = pull(&mut wc, "jobs", "w", 30_000, Some(10_000));
        (got, Instant::now())
    });
    let (got, at) = t.join().unwrap();
    assert_eq!(got.unwrap().0, id);
    let waited = at - created;
    assert!(
        waited >= Duration::from_millis(590),
        "served early: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(600 + 400),
        "served late: {waited:?}"
    );
    assert_eq!(get_int(&mut c, "jobs", id, "due"), None);
    // A delayed job can be deleted or fulfilled before it is due.
    let d = int(&mut c, &["JOB.CREATE", "jobs", "x", "DELAY", "100000"]);
    assert_eq!(
        int(&mut c, &["JOB.FULFILL", "jobs", &d.to_string(), "early"]),
        1
    );
    assert_eq!(
        get_str(&mut c, "jobs", d, "state").as_deref(),
        Some("fulfilled")
    );
}

#[test]
fn priorities_order_pulls_and_list_pages_every_state() {
    let s = Server::start();
    let mut c = s.conn();
    let mut made = vec![];
    for (i, p) in [0, 5, 1, 5, 0, 9].iter().enumerate() {
        let id = int(
            &mut c,
            &[
                "JOB.CREATE",
                "jobs",
                &format!("r{i}"),
                "PRIORITY",
                &p.to_string(),
            ],
        );
        made.push((*p, id));
    }
    let mut want = made.clone();
    want.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
    let want: Vec<i64> = want.iter().map(|w| w.1).collect();
    assert_eq!(list(&mut c, &["jobs", "pending"]), want);
    assert_eq!(
        list(
            &mut c,
            &[
                "jobs",
                "pending",
                "AFTER",
                &want[1].to_string(),
                "COUNT",
                "2"
            ]
        ),
        want[2..4]
    );
    let (first, _, _) = pull(&mut c, "jobs", "w1", 30_000, None).unwrap();
    assert_eq!(first, want[0], "the highest priority first");
    let (second, _, _) = pull(&mut c, "jobs", "w2", 60_000, None).unwrap();
    assert_eq!(second, want[1], "then the oldest of the next priority");
    assert_eq!(list(&mut c, &["jobs", "leased"]), vec![first, second]);
    assert_eq!(list(&mut c, &["jobs", "pending"]), want[2..]);
    // A pulled job's place still pages: after it come the jobs behind it.
    assert_eq!(
        list(&mut c, &["jobs", "pending", "AFTER", &first.to_string()]),
        want[2..]
    );
    int(&mut c, &["JOB.FULFILL", "jobs", &first.to_string(), "v"]);
    assert_eq!(list(&mut c, &["jobs", "fulfilled"]), vec![first]);
    let d1 = int(&mut c, &["JOB.CREATE", "jobs", "d", "DELAY", "50000"]);
    let d2 = int(&mut c, &["JOB.CREATE", "jobs", "d", "DELAY", "40000"]);
    assert_eq!(
        list(&mut c, &["jobs", "delayed"]),
        vec![d2, d1],
        "by due time"
    );
    assert_eq!(
        list(&mut c, &["jobs", "delayed", "AFTER", &d2.to_string()]),
        vec![d1]
    );
    assert_eq!(list(&mut c, &["jobs", "failed"]), Vec::<i64>::new());
    assert_eq!(list(&mut c, &["missing", "pending"]), Vec::<i64>::new());
}

#[test]
fn attempts_backoff_dead_letter_events_and_retry() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut sub = s.conn();
    let mut pubsub = sub.as_pubsub();
    subscribe_keyevents(&mut pubsub, "job", Duration::from_secs(10));
    let mut c = s.conn();
    let id = int(
        &mut c,
        &[
            "JOB.CREATE",
            "jobs",
            "poison",
            "ATTEMPTS",
            "2",
            "BACKOFF",
            "300",
        ],
    );
    let sid = id.to_string();
    assert_eq!(get_int(&mut c, "jobs", id, "max_attempts"), Some(2));
    assert_eq!(get_int(&mut c, "jobs", id, "attempts"), Some(0));
    pull(&mut c, "jobs", "w", 30_000, None).unwrap();
    let r = value(&mut c, &["JOB.FAIL", "jobs", &sid, "w", "boom\u{0}!"]);
    assert_eq!(r, Value::BulkString(b"delayed".to_vec()));
    assert_eq!(keyevents(&mut pubsub, 2, "jobs"), ["job.grant", "job.fail"]);
    assert_eq!(
        get_str(&mut c, "jobs", id, "reason").as_deref(),
        Some("boom\u{0}!")
    );
    assert_eq!(get_int(&mut c, "jobs", id, "attempts"), Some(1));
    assert!(get_int(&mut c, "jobs", id, "due").unwrap() > 100);
    let e = error_of(&mut c, &[b"JOB.FAIL", b"jobs", sid.as_bytes(), b"w"]);
    assert_eq!(e, format!("NOTHELD job {id} is delayed"));
    // After the backoff a blocked PULL gets it; its lease lapses: the second failed attempt.
    let got = pull(&mut c, "jobs", "w", 200, Some(5_000)).expect("due after the backoff");
    assert_eq!(got.0, id);
    assert_eq!(
        keyevents(&mut pubsub, 4, "jobs"),
        ["job.grant", "job.lapse", "job.fail", "job.dead"]
    );
    assert_eq!(
        get_str(&mut c, "jobs", id, "state").as_deref(),
        Some("failed")
    );
    assert_eq!(
        get_str(&mut c, "jobs", id, "reason").as_deref(),
        Some("lapsed")
    );
    assert_eq!(get_int(&mut c, "jobs", id, "attempts"), Some(2));
    assert_eq!(list(&mut c, &["jobs", "failed"]), vec![id]);
    let i = info(&mut c, "jobs");
    assert_eq!((i["failed"], i["pending"], i["jobs"]), (1, 0, 1));
    assert_eq!(
        pull(&mut c, "jobs", "w", 200, None),
        None,
        "the dead letter is never pulled"
    );
    // RETRY hands it at once to a blocked puller.
    let mut wc = s.conn();
    let t = thread::spawn(move || pull(&mut wc, "jobs", "v", 30_000, Some(10_000)));
    wait_until(Duration::from_secs(10), "puller queued", || {
        info(&mut c, "jobs")["waiters"] == 1
    });
    let start = Instant::now();
    assert_eq!(int(&mut c, &["JOB.RETRY", "jobs", &sid]), 1);
    assert_eq!(t.join().unwrap().unwrap().0, id);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(get_int(&mut c, "jobs", id, "attempts"), Some(0));
    // A FAIL without ATTEMPTS or BACKOFF: pending again at once, the reason empty.
    let plain = int(&mut c, &["JOB.CREATE", "jobs", "p"]);
    pull(&mut c, "jobs", "u", 30_000, None).unwrap();
    let r = value(&mut c, &["JOB.FAIL", "jobs", &plain.to_string(), "u"]);
    assert_eq!(r, Value::BulkString(b"pending".to_vec()));
    assert_eq!(
        get_str(&mut c, "jobs", plain, "reason").as_deref(),
        Some("")
    );
}

#[test]
fn keep_deletes_finished_jobs_and_unique_makes_create_idempotent() {
    let s = Server::start();
    let mut c = s.conn();
    let a = int(
        &mut c,
        &[
            "JOB.CREATE",
            "jobs",
            "r",
            "UNIQUE",
            "order-7",
            "KEEP",
            "400",
        ],
    );
    let again = int(
        &mut c,
        &[
            "JOB.CREATE",
            "jobs",
            "other",
            "UNIQUE",
            "order-7",
            "PRIORITY",
            "3",
        ],
    );
    assert_eq!(again, a, "the same id, nothing changed");
    assert_eq!(info(&mut c, "jobs")["jobs"], 1);
    assert_eq!(get_str(&mut c, "jobs", a, "request").as_deref(), Some("r"));
    assert_eq!(
        get_str(&mut c, "jobs", a, "unique").as_deref(),
        Some("order-7")
    );
    assert_eq!(get_int(&mut c, "jobs", a, "expires"), None, "not finished");
    let keeper = int(&mut c, &["JOB.CREATE", "jobs", "stays"]);
    int(&mut c, &["JOB.FULFILL", "jobs", &a.to_string(), "v"]);
    let exp = get_int(&mut c, "jobs", a, "expires").unwrap();
    assert!((200..=400).contains(&exp), "{exp}");
    wait_until(Duration::from_secs(5), "retention delete", || {
        value(&mut c, &["JOB.GET", "jobs", &a.to_string()]) == Value::Nil
    });
    assert_eq!(list(&mut c, &["jobs", "pending"]), vec![keeper]);
    let b = int(&mut c, &["JOB.CREATE", "jobs", "r", "UNIQUE", "order-7"]);
    assert!(b > a, "the name is free once its job is gone");
    // The last job of a store deleted by retention takes the key with it.
    int(&mut c, &["JOB.DELETE", "jobs", &keeper.to_string()]);
    int(&mut c, &["JOB.DELETE", "jobs", &b.to_string()]);
    let k = int(&mut c, &["JOB.CREATE", "jobs", "x", "KEEP", "100"]);
    int(&mut c, &["JOB.FULFILL", "jobs", &k.to_string(), "v"]);
    wait_until(Duration::from_secs(5), "key gone", || {
        int(&mut c, &["EXISTS", "jobs"]) == 0
    });
}

#[test]
fn fulfill_next_takes_the_next_job_in_the_same_round_trip() {
    let s = Server::start();
    let mut c = s.conn();
    let j1 = int(&mut c, &["JOB.CREATE", "jobs", "a"]);
    let j2 = int(&mut c, &["JOB.CREATE", "jobs", "b"]);
    let (id, _, t1) = pull(&mut c, "jobs", "w", 30_000, None).unwrap();
    assert_eq!(id, j1);
    let next = pulled(fulfill_next(&mut c, "jobs", j1, t1, "w"));
    let (id, req, t2) = next.unwrap();
    assert_eq!((id, req.as_slice()), (j2, &b"b"[..]));
    assert!(t2 > t1);
    assert_eq!(
        get_str(&mut c, "jobs", j1, "state").as_deref(),
        Some("fulfilled")
    );
    assert_eq!(get_int(&mut c, "jobs", j2, "token"), Some(t2));
    // Nothing left: nil, but the fulfilment happened.
    let next = value(
        &mut c,
        &[
            "JOB.FULFILL",
            "jobs",
            &j2.to_string(),
            "v",
            "NEXT",
            "w",
            "30000",
            "TOKEN",
            &t2.to_string(),
        ],
    );
    assert_eq!(next, Value::Nil);
    assert_eq!(
        get_str(&mut c, "jobs", j2, "state").as_deref(),
        Some("fulfilled")
    );
    // An error changes nothing (and takes nothing).
    let j3 = int(&mut c, &["JOB.CREATE", "jobs", "c"]);
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            j2.to_string().as_bytes(),
            b"v",
            b"NEXT",
            b"w",
            b"1000",
        ],
    );
    assert_eq!(e, format!("ALREADY job {j2} is already fulfilled"));
    assert_eq!(get_int(&mut c, "jobs", j3, "token"), None);
    let (id3, _, t3) = pull(&mut c, "jobs", "w", 30_000, None).unwrap();
    assert_eq!(id3, j3);
    // FULFILL … NEXT by a worker with nobody waiting takes the next pullable job.
    let j8 = int(&mut c, &["JOB.CREATE", "jobs", "h"]);
    let next = pulled(fulfill_next(&mut c, "jobs", j3, t3, "w"));
    assert_eq!(next.unwrap().0, j8);
}

#[test]
fn fulfill_next_stays_behind_blocked_pullers() {
    let s = Server::start();
    let mut c = s.conn();
    let j1 = int(&mut c, &["JOB.CREATE", "jobs", "a"]);
    let (_, _, t1) = pull(&mut c, "jobs", "w", 30_000, None).unwrap();
    let mut wc = s.conn();
    let t = thread::spawn(move || pull(&mut wc, "jobs", "waiter", 30_000, Some(10_000)));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        info(&mut c, "jobs")["waiters"] == 1
    });
    // Between the fulfilment and NEXT, a new job arrives only through the waiter's turn: the
    // waiter, first in line, is served before NEXT is decided.
    let j2 = int(&mut c, &["JOB.CREATE", "jobs", "b"]);
    assert_eq!(t.join().unwrap().unwrap().0, j2);
    let mut wc = s.conn();
    let t = thread::spawn(move || pull(&mut wc, "jobs", "waiter2", 30_000, Some(10_000)));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        info(&mut c, "jobs")["waiters"] == 1
    });
    // w fulfils j1 and asks for the next: the only pullable job would be none; the waiter
    // stays first in line for whatever comes next.
    let next = fulfill_next(&mut c, "jobs", j1, t1, "w");
    assert_eq!(next, Value::Nil);
    let j3 = int(&mut c, &["JOB.CREATE", "jobs", "c"]);
    assert_eq!(
        t.join().unwrap().unwrap().0,
        j3,
        "the waiter, not w, gets the next job"
    );
    // Released work goes to the waiter in line, not to a NEXT asked after.
    let mut wc = s.conn();
    let t = thread::spawn(move || pull(&mut wc, "jobs", "waiter3", 30_000, Some(10_000)));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        info(&mut c, "jobs")["waiters"] == 1
    });
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            j1.to_string().as_bytes(),
            b"v",
            b"NEXT",
            b"w",
            b"100",
        ],
    );
    assert!(e.starts_with("ALREADY"), "{e}");
    int(&mut c, &["JOB.RELEASE", "jobs", &j2.to_string(), "waiter"]);
    assert_eq!(t.join().unwrap().unwrap().0, j2);
}

#[test]
fn fulfill_token_errors_name_the_case() {
    let s = Server::start();
    let mut c = s.conn();
    let id = int(&mut c, &["JOB.CREATE", "jobs", "a"]);
    let sid = id.to_string();
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            b"5",
        ],
    );
    assert_eq!(
        e,
        format!("STALE token 5 is not job {id}'s work lease (it has none: lapsed or released)")
    );
    let (_, _, t) = pull(&mut c, "jobs", "w", 30_000, None).unwrap();
    let old = (t - 1).to_string();
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            old.as_bytes(),
        ],
    );
    assert_eq!(
        e,
        format!("STALE token {old} is not job {id}'s work lease (current is {t})")
    );
    let newer = (t + 1).to_string();
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            newer.as_bytes(),
        ],
    );
    assert_eq!(
        e,
        format!("NOTHELD token {newer} was never issued for job {id}")
    );
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            b"9223372036854775808",
        ],
    );
    assert!(e.starts_with("ERR invalid token"), "{e}");
}

/// A store with every second-edition field, on `key`.
fn varied_store(c: &mut Connection, key: &str) -> Vec<i64> {
    let mut ids = vec![];
    ids.push(int(
        c,
        &["JOB.CREATE", key, "p", "PRIORITY", "7", "UNIQUE", "u1"],
    ));
    ids.push(int(
        c,
        &[
            "JOB.CREATE",
            key,
            "d",
            "DELAY",
            "90000",
            "KEEP",
            "80000",
            "BACKOFF",
            "5",
        ],
    ));
    ids.push(int(
        c,
        &[
            "JOB.CREATE",
            key,
            "f",
            "ATTEMPTS",
            "1",
            "KEEP",
            "70000",
            "PRIORITY",
            "9",
        ],
    ));
    let (f, _, _) = pull(c, key, "w1", 30_000, None).unwrap();
    assert_eq!(f, ids[2]);
    assert_eq!(
        value(c, &["JOB.FAIL", key, &f.to_string(), "w1", "bad\r\n"]),
        Value::BulkString(b"failed".to_vec())
    );
    ids.push(int(c, &["JOB.CREATE", key, "k", "KEEP", "60000"]));
    int(c, &["JOB.FULFILL", key, &ids[3].to_string(), "v"]);
    ids.push(int(c, &["JOB.CREATE", key, "l"]));
    let (l, _, _) = pull(c, key, "w2", 50_000, None).unwrap();
    assert_eq!(l, ids[0], "priority 7 first");
    ids
}

fn snapshot(c: &mut Connection, key: &str, ids: &[i64]) -> Vec<Vec<(String, Value)>> {
    ids.iter()
        .map(|id| {
            let v = value(c, &["JOB.GET", key, &id.to_string()]);
            fields(v)
                .unwrap()
                .into_iter()
                .filter(|(k, _)| !["ttl", "due", "expires"].contains(&k.as_str()))
                .collect()
        })
        .collect()
}

#[test]
fn reload_and_aof_rewrite_keep_every_new_field() {
    let mut s = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let mut c = s.conn();
    let ids = varied_store(&mut c, "jobs");
    let before = snapshot(&mut c, "jobs", &ids);
    let digest_before = digest(&mut c, "jobs");
    let info_before = info(&mut c, "jobs");
    assert_eq!((info_before["failed"], info_before["delayed"]), (1, 1));
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(snapshot(&mut c, "jobs", &ids), before);
    assert_eq!(digest(&mut c, "jobs"), digest_before);
    rewrite_aof(&s);
    drop(c);
    s.restart();
    let mut c = s.conn();
    assert_eq!(snapshot(&mut c, "jobs", &ids), before);
    assert_eq!(
        digest(&mut c, "jobs"),
        digest_before,
        "exactly the same value"
    );
    assert_eq!(info(&mut c, "jobs"), info_before);
    let due = get_int(&mut c, "jobs", ids[1], "due").unwrap();
    assert!(due > 80_000, "the due time survived: {due}");
    assert!(get_int(&mut c, "jobs", ids[2], "expires").unwrap() > 60_000);
    // The unique name survived too.
    assert_eq!(
        int(&mut c, &["JOB.CREATE", "jobs", "x", "UNIQUE", "u1"]),
        ids[0]
    );
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("jobs")
        .query(&mut c)
        .unwrap();
    assert!(usage > 0);
    // And the AOF (not rewritten) of commands since then replays after a kill -9.
    int(&mut c, &["JOB.RETRY", "jobs", &ids[2].to_string()]);
    let d = digest(&mut c, "jobs");
    drop(c);
    s.kill9_and_restart();
    let mut c = s.conn();
    assert_eq!(digest(&mut c, "jobs"), d);
}

#[test]
fn replica_digest_equal_after_delays_failures_retries_and_retention() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let ids = varied_store(&mut p, "jobs");
    let short = int(
        &mut p,
        &[
            "JOB.CREATE",
            "jobs",
            "soon",
            "DELAY",
            "200",
            "PRIORITY",
            "1",
        ],
    );
    let gone = int(&mut p, &["JOB.CREATE", "jobs", "gone", "KEEP", "300"]);
    int(&mut p, &["JOB.FULFILL", "jobs", &gone.to_string(), "v"]);
    let dies = int(
        &mut p,
        &[
            "JOB.CREATE",
            "jobs",
            "dies",
            "ATTEMPTS",
            "1",
            "PRIORITY",
            "99",
        ],
    );
    let (got, _, _) = pull(&mut p, "jobs", "w9", 200, None).unwrap();
    assert_eq!(got, dies);
    int(&mut p, &["JOB.RETRY", "jobs", &ids[2].to_string()]);
    wait_until(
        Duration::from_secs(10),
        "due, lapsed and deleted on the primary",
        || {
            let i = info(&mut p, "jobs");
            i["failed"] == 1
                && i["delayed"] == 1
                && value(&mut p, &["JOB.GET", "jobs", &gone.to_string()]) == Value::Nil
        },
    );
    assert_eq!(
        get_str(&mut p, "jobs", short, "state").as_deref(),
        Some("pending")
    );
    assert_eq!(
        get_str(&mut p, "jobs", dies, "state").as_deref(),
        Some("failed")
    );
    assert_replica_converges(&primary, &replica, "jobs");
    let all: Vec<i64> = ids.iter().copied().chain([short, dies]).collect();
    assert_eq!(
        snapshot(&mut p, "jobs", &all),
        snapshot(&mut r, "jobs", &all)
    );
    assert_eq!(info(&mut p, "jobs"), info(&mut r, "jobs"));
    assert_eq!(
        list(&mut p, &["jobs", "pending"]),
        list(&mut r, &["jobs", "pending"])
    );
    let e = error_of(
        &mut r,
        &[b"JOB.RETRY", b"jobs", dies.to_string().as_bytes()],
    );
    assert!(e.starts_with("READONLY"), "{e}");
}

/// 50,000 delayed jobs falling due at the same moment are promoted in slices: no tick of
/// corral's timer holds the event loop for long, and they are then pulled in priority order.
#[test]
fn many_jobs_falling_due_at_once_are_promoted_in_slices() {
    const N: usize = 50_000;
    let s = Server::start_with(ServerOptions::new().config("latency-monitor-threshold", "1"));
    let mut c = s.conn();
    // All due at the same absolute time: created in one pipeline with delays that shrink as
    // the clock moves would be fragile; instead one DELAY long enough to cover the creation.
    let mut p = redis::pipe();
    for i in 0..N {
        p.cmd("JOB.CREATE")
            .arg("jobs")
            .arg("r")
            .arg("DELAY")
            .arg(3000)
            .arg("PRIORITY")
            .arg(i % 100)
            .ignore();
    }
    let created = Instant::now();
    let _: () = p.query(&mut c).unwrap();
    assert!(
        created.elapsed() < Duration::from_millis(2500),
        "created too slowly: {:?}",
        created.elapsed()
    );
    let _: i64 = redis::cmd("LATENCY").arg("RESET").query(&mut c).unwrap();
    wait_until(Duration::from_secs(20), "all promoted", || {
        info(&mut c, "jobs")["pending"] == N as i64
    });
    let rows: Vec<Vec<Value>> = redis::cmd("LATENCY").arg("LATEST").query(&mut c).unwrap();
    let worst = rows
        .iter()
        .find(|r| r.first() == Some(&Value::BulkString(b"corral-timer".to_vec())))
        .map(|r| redis::from_redis_value::<i64>(&r[3]).unwrap());
    eprintln!("worst corral-timer tick while promoting {N}: {worst:?} ms");
    assert!(worst.unwrap_or(0) < 100, "a tick of {worst:?} ms");
    // Pull order is priority order.
    let order = list(&mut c, &["jobs", "pending", "COUNT", "10000"]);
    assert_eq!(order.len(), 10_000);
    let prios: Vec<i64> = order
        .iter()
        .step_by(997)
        .map(|id| get_int(&mut c, "jobs", *id, "priority").unwrap())
        .collect();
    assert!(prios.windows(2).all(|w| w[0] >= w[1]), "{prios:?}");
    assert_eq!(prios[0], 99);
}

/// A store that expires (a user's PEXPIRE) with delayed jobs and one leased job announces one
/// lapse — its lease — not its promotions or failed attempts.
#[test]
fn an_expired_store_counts_only_its_leases_as_lapsed() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut c = s.conn();
    for _ in 0..5 {
        int(
            &mut c,
            &["JOB.CREATE", "only-delayed", "r", "DELAY", "100000"],
        );
        int(
            &mut c,
            &["JOB.CREATE", "mixed", "r", "DELAY", "100000", "KEEP", "5"],
        );
    }
    int(&mut c, &["JOB.CREATE", "mixed", "leased", "PRIORITY", "1"]);
    pull(&mut c, "mixed", "w", 100_000, None).unwrap();
    let lapses = |s: &Server| common::client::info_int(s, "corral", "corral_job_lapses");
    let before = lapses(&s);
    int(&mut c, &["PEXPIRE", "only-delayed", "20"]);
    int(&mut c, &["PEXPIRE", "mixed", "20"]);
    wait_until(Duration::from_secs(5), "both expired", || {
        int(&mut c, &["EXISTS", "only-delayed", "mixed"]) == 0
    });
    assert_eq!(lapses(&s), before + 1, "one lease lapsed");
}
