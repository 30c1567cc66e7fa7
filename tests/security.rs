//! ACLs, holder isolation and memory limits.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::client::{error_of, field, info_int, int, value};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

fn as_user(s: &Server, user: &str, pass: &str) -> Connection {
    let client =
        redis::Client::open(format!("redis://{user}:{pass}@127.0.0.1:{}/", s.port())).unwrap();
    client.get_connection().unwrap()
}

#[test]
fn acl_key_patterns_and_command_permissions_apply() {
    let s = Server::start();
    let mut admin = s.conn();
    // `app` may run every corral command (the module's commands are in no ACL category, so
    // they are granted by name) on app:* keys only; `reader` may run none of them.
    let cmds: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query(&mut admin)
        .unwrap();
    let mut setuser = redis::cmd("ACL");
    setuser
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">pw")
        .arg("~app:*")
        .arg("+ping");
    for c in cmds.iter().filter(|c| !c.starts_with("corral.")) {
        setuser.arg(format!("+{c}"));
    }
    let _: () = setuser.query(&mut admin).unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reader")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("+get")
        .query(&mut admin)
        .unwrap();
    let mut app = as_user(&s, "app", "pw");
    assert!(value(&mut app, &["RESV.LOCK", "app:lock", "a", "1000"]) != Value::Nil);
    assert!(matches!(
        value(&mut app, &["SEM.ACQUIRE", "app:sem", "a", "2", "1000"]),
        Value::Int(_)
    ));
    assert_eq!(int(&mut app, &["SLOT.GET", "app:pool"]), 0);
    assert_eq!(int(&mut app, &["ALLOC.AVAILABLE", "app:alloc", "i"]), 1);
    assert!(int(&mut app, &["JOB.CREATE", "app:jobs", "r"]) > 0);
    for args in [
        &[&b"RESV.LOCK"[..], b"other:lock", b"a", b"1000"][..],
        &[b"SEM.COUNT", b"other:sem"],
        &[b"SLOT.GET", b"other:pool"],
        &[b"ALLOC.INSTANCES", b"other:alloc"],
        &[b"JOB.CREATE", b"other:jobs", b"r"],
    ] {
        let e = error_of(&mut app, args);
        assert!(e.starts_with("NOPERM"), "{e}");
    }
    // The internal replication command is not granted with the public ones.
    let e = error_of(&mut app, &[b"CORRAL._APPLY", b"app:lock", b"x"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let mut reader = as_user(&s, "reader", "pw");
    let e = error_of(&mut reader, &[b"RESV.LOCK", b"app:lock", b"a", b"1000"]);
    assert!(e.starts_with("NOPERM"), "{e}");
}

#[test]
fn holders_cannot_release_or_renew_each_others_leases() {
    let s = Server::start();
    let mut c = s.conn();
    // Each family: "a" takes something; "b" may neither renew nor release it.
    let _: Value = value(&mut c, &["RESV.LOCK", "lock", "a", "60000"]);
    assert!(error_of(&mut c, &[b"RESV.RENEW", b"lock", b"b", b"1000"]).starts_with("NOTHELD"));
    assert!(error_of(&mut c, &[b"RESV.RELEASE", b"lock", b"b"]).starts_with("NOTHELD"));
    let _: Value = value(&mut c, &["SEM.ACQUIRE", "sem", "a", "5", "60000"]);
    assert!(error_of(&mut c, &[b"SEM.RENEW", b"sem", b"b", b"1000"]).starts_with("NOTHELD"));
    assert!(error_of(&mut c, &[b"SEM.RELEASE", b"sem", b"b"]).starts_with("NOTHELD"));
    let slot = int(&mut c, &["SLOT.GET", "pool", "HOLDER", "a", "TTL", "60000"]);
    let slot = slot.to_string();
    assert!(error_of(
        &mut c,
        &[
            b"SLOT.RENEW",
            b"pool",
            slot.as_bytes(),
            b"1000",
            b"HOLDER",
            b"b"
        ]
    )
    .starts_with("NOTHELD"));
    assert!(error_of(
        &mut c,
        &[b"SLOT.PUT", b"pool", slot.as_bytes(), b"HOLDER", b"b"]
    )
    .starts_with("NOTHELD"));
    let id = int(&mut c, &["JOB.CREATE", "jobs", "r"]).to_string();
    let _: Value = value(&mut c, &["JOB.PULL", "jobs", "a", "60000"]);
    assert!(error_of(
        &mut c,
        &[b"JOB.RENEW", b"jobs", id.as_bytes(), b"b", b"1000"]
    )
    .starts_with("NOTHELD"));
    assert!(
        error_of(&mut c, &[b"JOB.RELEASE", b"jobs", id.as_bytes(), b"b"]).starts_with("NOTHELD")
    );
    // ALLOC has no holders; an instance's heartbeat is renewed by AVAILABLE from anyone who
    // names it, which is atributo's model. Nothing above changed hands:
    assert_eq!(int(&mut c, &["SEM.COUNT", "sem"]), 1);
    assert_eq!(int(&mut c, &["SLOT.COUNT", "pool"]), 1);
}

#[test]
fn noeviction_refuses_growth_with_oom_and_applies_nothing() {
    let s = Server::start_with(ServerOptions::new().config("maxmemory-policy", "noeviction"));
    let mut c = s.conn();
    // Some data, then a limit below what is already used: every write that may grow is refused.
    let blob = vec![b'x'; 64 * 1024];
    for i in 0..32 {
        let _: () = redis::cmd("SET")
            .arg(format!("fill{i}"))
            .arg(&blob)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query(&mut c)
        .unwrap();
    for args in [
        &[&b"RESV.LOCK"[..], b"lock", b"a", b"1000"][..],
        &[b"SEM.ACQUIRE", b"sem", b"a", b"1", b"1000"],
        &[b"SLOT.GET", b"pool"],
        &[b"ALLOC.AVAILABLE", b"alloc", b"i"],
        &[b"JOB.CREATE", b"jobs", b"r"],
    ] {
        let e = error_of(&mut c, args);
        assert!(e.starts_with("OOM"), "{e}");
    }
    assert_eq!(
        int(&mut c, &["EXISTS", "lock", "sem", "pool", "alloc", "jobs"]),
        0,
        "nothing half-applied"
    );
    // Commands that shrink or only read still work.
    assert_eq!(value(&mut c, &["RESV.INFO", "lock"]), Value::Nil);
}

#[test]
fn evicted_keys_release_their_waiters() {
    let s = Server::start_with(
        ServerOptions::new()
            .config("maxmemory", "4mb")
            .config("maxmemory-policy", "allkeys-random"),
    );
    let mut c = s.conn();
    let old = int(&mut c, &["RESV.LOCK", "lock", "a", "600000"]);
    let mut w = s.conn();
    let waiter = thread::spawn(move || {
        let reply = value(
            &mut w,
            &["RESV.LOCK", "lock", "b", "600000", "BLOCK", "30000"],
        );
        (reply, Instant::now())
    });
    wait_until(Duration::from_secs(10), "queued", || {
        s.info_field("corral", "corral_resv_waiting").as_deref() == Some("1")
    });
    // Push memory over the limit until Redis evicts the lock key (random eviction: keep going).
    let blob = vec![b'x'; 32 * 1024];
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let evicted_at = loop {
        let set: Value = redis::cmd("SET")
            .arg(format!("fill{i}"))
            .arg(&blob)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("SET fill{i} (allkeys-random makes room): {e}"));
        assert_eq!(set, Value::Okay);
        i += 1;
        // Evicted: the key is gone, or already handed to b.
        let holder = match value(&mut c, &["RESV.INFO", "lock"]) {
            Value::Nil => None,
            v => Some(field(&v, "holder")),
        };
        if holder != Some(Value::BulkString(b"a".to_vec())) {
            eprintln!("the lock key was evicted after {i} SETs");
            break Instant::now();
        }
        assert!(
            i < 100_000 && Instant::now() < give_up,
            "the lock key was never evicted ({i} keys written)"
        );
    };
    // The waiter is answered at once, granted the lock on the evicted key with a new token —
    // not left waiting until its 30 s timeout (which would answer nil).
    wait_until(Duration::from_secs(5), "the waiter answered", || {
        waiter.is_finished()
    });
    let (reply, answered_at) = waiter.join().unwrap();
    match reply {
        Value::Int(t) => assert!(t > old, "token {t} after {old}"),
        r => panic!("the waiter was not granted: {r:?}"),
    }
    let late = answered_at.saturating_duration_since(evicted_at);
    assert!(
        late < Duration::from_secs(5),
        "answered {late:?} after the eviction"
    );
    assert!(info_int(&s, "stats", "evicted_keys") > 0);
    assert!(
        info_int(&s, "corral", "corral_resv_lapses") >= 1,
        "the evicted lease counts as lapsed"
    );
}
