//! The rules every family follows alike, checked across all five in one place: `*.INFO` of a
//! missing key, empty ids, token ranges, NOTHELD texts, re-grants as `<family>.renew`, the
//! `blocking` flag, read-only waits on replicas, and lazy free of big values.

mod common;

use std::thread;
use std::time::Duration;

use common::client::{
    error_of, field, fields, info_int, int, keyevents, subscribe_keyevents, value,
};
use common::{wait_until, Server, ServerOptions};
use redis::Value;

/// Every `*.INFO` answers a map; a missing key answers the map of an empty primitive, with its
/// waiters (clients can wait on a key that does not exist yet).
#[test]
fn info_of_a_missing_key_is_the_map_of_an_empty_primitive() {
    let s = Server::start();
    let mut c = s.conn();
    let expect: [(&str, &[(&str, Value)]); 5] = [
        (
            "RESV.INFO",
            &[
                ("holder", Value::Nil),
                ("ttl", Value::Nil),
                ("token", Value::Nil),
                ("waiters", Value::Int(0)),
            ],
        ),
        (
            "SEM.INFO",
            &[
                ("permits", Value::Int(0)),
                ("holders", Value::Int(0)),
                ("next_expiry_ms", Value::Int(-1)),
                ("last_token", Value::Int(0)),
                ("waiters", Value::Int(0)),
            ],
        ),
        (
            "SLOT.INFO",
            &[
                ("held", Value::Int(0)),
                ("highest", Value::Int(-1)),
                ("leased", Value::Int(0)),
                ("waiters", Value::Int(0)),
            ],
        ),
        (
            "ALLOC.INFO",
            &[
                ("instances", Value::Int(0)),
                ("available", Value::Int(0)),
                ("heartbeats", Value::Int(0)),
                ("allocations", Value::Int(0)),
                ("waiters", Value::Int(0)),
            ],
        ),
        (
            "JOB.INFO",
            &[("jobs", Value::Int(0)), ("waiters", Value::Int(0))],
        ),
    ];
    for (cmd, want) in expect {
        let v = value(&mut c, &[cmd, "missing"]);
        assert!(fields(v.clone()).is_some(), "{cmd}: {v:?}");
        for (name, w) in want {
            assert_eq!(&field(&v, name), w, "{cmd} {name}");
        }
    }
    // A released reservation leaves no key and reads as free, not nil.
    int(&mut c, &["RESV.LOCK", "lock", "a", "60000"]);
    assert_eq!(
        as_str(&field(&value(&mut c, &["RESV.INFO", "lock"]), "holder")),
        "a"
    );
    int(&mut c, &["RESV.RELEASE", "lock", "a"]);
    assert_eq!(
        field(&value(&mut c, &["RESV.INFO", "lock"]), "holder"),
        Value::Nil
    );
    // Waiters on a key that does not exist are counted (a PULL on an empty store).
    let port = s.port();
    let waiter = thread::spawn(move || {
        let mut w = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        value(&mut w, &["JOB.PULL", "jobs", "w", "1000", "BLOCK", "20000"])
    });
    wait_until(Duration::from_secs(10), "the PULL waits", || {
        field(&value(&mut c, &["JOB.INFO", "jobs"]), "waiters") == Value::Int(1)
    });
    int(&mut c, &["JOB.CREATE", "jobs", "r"]);
    assert!(matches!(waiter.join().unwrap(), Value::Array(_)));
}

#[test]
fn alloc_info_counts_instances_heartbeats_and_allocations() {
    let s = Server::start();
    let mut c = s.conn();
    int(&mut c, &["ALLOC.AVAILABLE", "a", "i1"]);
    int(&mut c, &["ALLOC.AVAILABLE", "a", "i2", "TTL", "60000"]);
    int(&mut c, &["ALLOC.AVAILABLE", "a", "i3", "TTL", "200"]);
    int(&mut c, &["ALLOC.UNAVAILABLE", "a", "i4"]);
    value(&mut c, &["ALLOC.ALLOCATE", "a", "job1"]);
    value(&mut c, &["ALLOC.ALLOCATE", "a", "job2"]);
    let info = |c: &mut redis::Connection| {
        let v = value(c, &["ALLOC.INFO", "a"]);
        [
            "instances",
            "available",
            "heartbeats",
            "allocations",
            "waiters",
        ]
        .map(|f| as_int(&field(&v, f)))
    };
    assert_eq!(info(&mut c), [4, 3, 2, 2, 0]);
    // i3's heartbeat lapses: unavailable, its allocations (if any) stay.
    wait_until(Duration::from_secs(10), "i3 lapses", || {
        info(&mut c) == [4, 2, 1, 2, 0]
    });
}

/// Ids (holders, workers, instances, ALLOC jobs) are any bytes but the empty string, in every
/// command that takes one; values, requests and targets may be empty.
#[test]
fn empty_ids_are_refused_everywhere_values_may_be_empty() {
    let s = Server::start();
    let mut c = s.conn();
    let refused: &[&[&[u8]]] = &[
        &[b"RESV.LOCK", b"k", b"", b"1000"],
        &[b"RESV.RENEW", b"k", b"", b"1000"],
        &[b"RESV.RELEASE", b"k", b""],
        &[b"RESV.CHECK", b"k", b"", b"1"],
        &[b"SEM.ACQUIRE", b"s", b"", b"1", b"1000"],
        &[b"SEM.RENEW", b"s", b"", b"1000"],
        &[b"SEM.RELEASE", b"s", b""],
        &[b"SLOT.GET", b"p", b"HOLDER", b""],
        &[b"SLOT.PUT", b"p", b"0", b"HOLDER", b""],
        &[b"SLOT.RENEW", b"p", b"0", b"1000", b"HOLDER", b""],
        &[b"ALLOC.AVAILABLE", b"a", b""],
        &[b"ALLOC.UNAVAILABLE", b"a", b""],
        &[b"ALLOC.ALLOCATE", b"a", b""],
        &[b"ALLOC.ALLOCATE", b"a", b"j", b"ONLYFOR", b""],
        &[b"ALLOC.DEALLOCATE", b"a", b""],
        &[b"ALLOC.JOBS", b"a", b""],
        &[b"ALLOC.HASJOBS", b"a", b""],
        &[b"ALLOC.INSTANCE", b"a", b""],
        &[b"ALLOC.DRAIN", b"a", b""],
        &[b"JOB.PULL", b"j", b"", b"1000"],
        &[b"JOB.PULLNOTIFY", b"j", b"", b"1000"],
        &[b"JOB.RENEW", b"j", b"1", b"", b"1000"],
        &[b"JOB.RELEASE", b"j", b"1", b""],
        &[b"JOB.DONE", b"j", b"1", b""],
    ];
    for args in refused {
        let e = error_of(&mut c, args);
        assert!(
            e.starts_with("ERR invalid ") && e.ends_with("must not be empty"),
            "{:?}: {e}",
            String::from_utf8_lossy(&args.concat())
        );
    }
    assert_eq!(int(&mut c, &["DBSIZE"]), 0, "nothing was created");
    // Requests, values and targets are data: empty is fine.
    let id = int(&mut c, &["JOB.CREATE", "j", ""]).to_string();
    assert_eq!(int(&mut c, &["JOB.QUEUE", "j", &id, ""]), 1);
    // No target is no target, as for DONE (fs-job-store's unqueueAll(id, [])).
    assert_eq!(int(&mut c, &["JOB.UNQUEUE", "j", &id]), 0);
    assert_eq!(int(&mut c, &["JOB.FULFILL", "j", &id, ""]), 1);
}

/// Fencing tokens are integers from 1 to 2^63-1 in every command that takes one; a token that
/// was never issued is NOTHELD (no lease was ever held under it), an older one STALE.
#[test]
fn tokens_are_checked_alike() {
    let s = Server::start();
    let mut c = s.conn();
    let t = int(&mut c, &["RESV.LOCK", "k", "a", "60000"]);
    for bad in ["0", "-1", "9223372036854775808", "x"] {
        let e = error_of(&mut c, &[b"RESV.CHECK", b"k", b"a", bad.as_bytes()]);
        assert!(e.starts_with("ERR invalid token"), "{bad}: {e}");
    }
    let id = int(&mut c, &["JOB.CREATE", "j", "r"]).to_string();
    for bad in ["0", "-1", "9223372036854775808", "x"] {
        let e = error_of(
            &mut c,
            &[
                b"JOB.FULFILL",
                b"j",
                id.as_bytes(),
                b"v",
                b"TOKEN",
                bad.as_bytes(),
            ],
        );
        assert!(e.starts_with("ERR invalid token"), "{bad}: {e}");
    }
    let future = (t + 1).to_string();
    assert_eq!(
        error_of(&mut c, &[b"RESV.CHECK", b"k", b"a", future.as_bytes()]),
        format!("NOTHELD token {future} was never issued (the current lease is {t})")
    );
    // The lock changes hands: a's old token is stale now.
    int(&mut c, &["RESV.RELEASE", "k", "a"]);
    let t2 = int(&mut c, &["RESV.LOCK", "k", "a", "60000"]);
    assert_eq!(
        error_of(
            &mut c,
            &[b"RESV.CHECK", b"k", b"a", t.to_string().as_bytes()]
        ),
        format!("STALE token {t} is not the current lease (current is {t2})")
    );
}

/// NOTHELD says who holds it, or that nobody does — never "expired" for a key nobody locked.
#[test]
fn notheld_says_why() {
    let s = Server::start();
    let mut c = s.conn();
    let free = "NOTHELD the reservation is not held (lapsed, released or never locked)";
    assert_eq!(error_of(&mut c, &[b"RESV.RELEASE", b"never", b"a"]), free);
    assert_eq!(
        error_of(&mut c, &[b"RESV.RENEW", b"never", b"a", b"10"]),
        free
    );
    assert_eq!(
        error_of(&mut c, &[b"RESV.CHECK", b"never", b"a", b"1"]),
        free
    );
    int(&mut c, &["RESV.LOCK", "k", "a", "60000"]);
    assert_eq!(
        error_of(&mut c, &[b"RESV.RELEASE", b"k", b"b"]),
        "NOTHELD the reservation is held by a"
    );
    assert_eq!(
        error_of(&mut c, &[b"SEM.RELEASE", b"never", b"a"]),
        "NOTHELD the holder holds no permit (lapsed, released or never acquired)"
    );
    assert_eq!(
        error_of(&mut c, &[b"SLOT.PUT", b"never", b"3"]),
        "NOTHELD slot 3 is not held (lapsed, put back or never taken)"
    );
}

/// A holder asking again for what it holds is a renewal in every family: `<family>.renew`, and
/// `corral_<family>_renewals` counts it (an ALLOC heartbeat included).
#[test]
fn regrants_and_heartbeats_are_renewals_in_every_family() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut c = s.conn();
    let mut sub = s.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("__keyevent@0__:*.renew").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let twice: [(&str, &[&str]); 5] = [
        ("resv", &["RESV.LOCK", "r", "a", "60000"]),
        ("sem", &["SEM.ACQUIRE", "s", "a", "2", "60000"]),
        ("slot", &["SLOT.GET", "p", "HOLDER", "a"]),
        ("alloc", &["ALLOC.AVAILABLE", "al", "i", "TTL", "60000"]),
        ("job", &["JOB.PULL", "j", "w", "60000"]),
    ];
    int(&mut c, &["JOB.CREATE", "j", "r"]);
    for (family, args) in twice {
        let first = value(&mut c, args);
        let again = value(&mut c, args);
        if family != "alloc" {
            assert_eq!(first, again, "{family}: the same answer again");
        }
        let event = keyevents(&mut pubsub, 1, args[1]);
        assert_eq!(event, [format!("{family}.renew")], "{family}");
        assert_eq!(
            info_int(&s, "corral", &format!("corral_{family}_renewals")),
            1,
            "{family}"
        );
    }
    // An ALLOC heartbeat from an unavailable instance is a grant again.
    let mut sub2 = s.conn();
    let mut grants = sub2.as_pubsub();
    subscribe_keyevents(&mut grants, "alloc", Duration::from_secs(5));
    int(&mut c, &["ALLOC.UNAVAILABLE", "al", "i"]);
    assert_eq!(
        int(&mut c, &["ALLOC.AVAILABLE", "al", "i", "TTL", "60000"]),
        1
    );
    assert_eq!(
        keyevents(&mut grants, 2, "al"),
        ["alloc.release", "alloc.grant"]
    );
}

/// Commands that can wait (`BLOCK`) carry the `blocking` flag (COMMAND INFO); where the server
/// has module ACL categories they are in `@blocking` too (and every command in `@read` or
/// `@write` by its flags), so an operator can deny waiting with `-@blocking`.
#[test]
fn commands_that_wait_are_flagged_blocking() {
    let s = Server::start();
    let mut c = s.conn();
    let want = [
        "alloc.drain",
        "job.pull",
        "job.pullnotify",
        "resv.lock",
        "sem.acquire",
        "slot.get",
    ];
    let names: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query(&mut c)
        .unwrap();
    let mut flagged = Vec::new();
    for name in &names {
        let v: Vec<Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let Value::Array(row) = &v[0] else {
            panic!("{v:?}")
        };
        if format!("{:?}", row[2]).contains("blocking") {
            flagged.push(name.to_lowercase());
        }
    }
    flagged.sort_unstable();
    assert_eq!(flagged, want);
    let categories: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut c).unwrap();
    if categories.iter().any(|c| c == "corral") {
        let mut in_blocking: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .arg("blocking")
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .into_iter()
            .filter(|n| names.iter().any(|m| m.eq_ignore_ascii_case(n)))
            .collect();
        in_blocking.sort_unstable();
        assert_eq!(in_blocking, want);
        let read: Vec<String> = redis::cmd("ACL")
            .arg("CAT")
            .arg("read")
            .query(&mut c)
            .unwrap();
        assert!(read.iter().any(|n| n == "resv.info"), "{read:?}");
    }
}

/// ALLOC.DRAIN changes nothing: it runs on a replica, and a blocked DRAIN there is answered
/// when the replicated deallocation arrives.
#[test]
fn drain_runs_and_waits_on_a_replica() {
    let p = Server::start();
    let r = Server::replica_of(&p);
    let mut pc = p.conn();
    int(&mut pc, &["ALLOC.AVAILABLE", "a", "i"]);
    value(&mut pc, &["ALLOC.ALLOCATE", "a", "job"]);
    p.sync_replica(&r);
    let mut rc = r.conn();
    assert_eq!(value(&mut rc, &["ALLOC.DRAIN", "a", "i"]), Value::Nil);
    assert_eq!(int(&mut rc, &["ALLOC.DRAIN", "a", "other"]), 1);
    let port = r.port();
    let waiter = thread::spawn(move || {
        let mut w = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        value(&mut w, &["ALLOC.DRAIN", "a", "i", "BLOCK", "20000"])
    });
    wait_until(
        Duration::from_secs(10),
        "the DRAIN waits on the replica",
        || field(&value(&mut rc, &["ALLOC.INFO", "a"]), "waiters") == Value::Int(1),
    );
    assert_eq!(int(&mut pc, &["ALLOC.DEALLOCATE", "a", "job"]), 1);
    assert_eq!(waiter.join().unwrap(), Value::Int(1));
    // Commands that change state still answer READONLY there.
    let e = error_of(&mut rc, &[b"ALLOC.ALLOCATE", b"a", b"job"]);
    assert!(e.starts_with("READONLY"), "{e}");
}

/// Big values of every family are freed on the lazy-free thread by UNLINK (more than 64
/// holders, records, allocations or jobs), so dropping one does not stall the server.
#[test]
fn unlink_of_big_values_frees_them_lazily_in_every_family() {
    let s = Server::start();
    let mut c = s.conn();
    const N: usize = 2_000;
    let mut pipe = redis::pipe();
    for i in 0..N {
        let h = format!("h{i}");
        pipe.cmd("RESV.LOCK")
            .arg(format!("r{i}"))
            .arg(&h)
            .arg(60_000)
            .ignore();
        pipe.cmd("SEM.ACQUIRE")
            .arg("sem")
            .arg(&h)
            .arg(N)
            .arg(60_000)
            .ignore();
        pipe.cmd("SLOT.GET")
            .arg("pool")
            .arg("HOLDER")
            .arg(&h)
            .ignore();
        pipe.cmd("ALLOC.AVAILABLE").arg("alloc").arg(&h).ignore();
        pipe.cmd("JOB.CREATE").arg("jobs").arg(&h).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    for key in ["sem", "pool", "alloc", "jobs"] {
        let before = info_int(&s, "memory", "lazyfreed_objects");
        assert_eq!(int(&mut c, &["UNLINK", key]), 1);
        wait_until(Duration::from_secs(10), "freed lazily", || {
            info_int(&s, "memory", "lazyfreed_objects") > before
        });
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        v => panic!("{v:?}"),
    }
}

fn as_int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        v => panic!("{v:?}"),
    }
}
