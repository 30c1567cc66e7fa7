//! ACLs, holder isolation and memory limits.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{error_of, field, fields, info_int, int, value};
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
    // The internal replication command is not granted with the public ones (on Redis 8 it is
    // not even listed).
    let e = error_of(&mut app, &[b"CORRAL._APPLY", b"app:lock", b"x"]);
    assert!(e.starts_with("NOPERM") || refused_internal(&e), "{e}");
    let mut reader = as_user(&s, "reader", "pw");
    let e = error_of(&mut reader, &[b"RESV.LOCK", b"app:lock", b"a", b"1000"]);
    assert!(e.starts_with("NOPERM"), "{e}");
}

#[test]
fn the_corral_acl_category_holds_every_public_command_where_servers_have_module_categories() {
    let s = Server::start();
    let mut admin = s.conn();
    let public: BTreeSet<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query::<Vec<String>>(&mut admin)
        .unwrap()
        .into_iter()
        .map(|c| c.to_lowercase())
        .filter(|c| !c.starts_with("corral."))
        .collect();
    assert!(public.len() > 30, "{public:?}");
    let categories: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut admin).unwrap();
    if !categories.iter().any(|c| c == "corral") {
        // A server without module ACL categories (Redis 7.0–7.2): grant by name.
        let e = error_of(&mut admin, &[b"ACL", b"SETUSER", b"x", b"+@corral"]);
        assert!(e.contains("corral"), "{e}");
        return;
    }
    let members: BTreeSet<String> = redis::cmd("ACL")
        .arg("CAT")
        .arg("corral")
        .query::<Vec<String>>(&mut admin)
        .unwrap()
        .into_iter()
        .map(|c| c.to_lowercase())
        .collect();
    assert_eq!(members, public, "@corral is exactly the public commands");
    // The one line an operator writes.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">pw")
        .arg("~app:*")
        .arg("+@corral")
        .query(&mut admin)
        .unwrap();
    let mut app = as_user(&s, "app", "pw");
    assert!(int(&mut app, &["RESV.LOCK", "app:lock", "a", "1000"]) > 0);
    assert_eq!(int(&mut app, &["SLOT.GET", "app:pool"]), 0);
    assert!(int(&mut app, &["JOB.CREATE", "app:jobs", "r"]) > 0);
    let e = error_of(&mut app, &[b"RESV.LOCK", b"other:lock", b"a", b"1000"]);
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = error_of(&mut app, &[b"CORRAL._APPLY", b"app:lock", b"x"]);
    assert!(e.starts_with("NOPERM") || refused_internal(&e), "{e}");
    let e = error_of(&mut app, &[b"SET", b"app:x", b"1"]);
    assert!(e.starts_with("NOPERM"), "{e}");
}

/// The commands in `s`'s AOF increments (`appendonlydir/*.incr.aof`), in order, each as its
/// arguments: what Redis replays at startup, and what an attacker could copy from the file.
fn aof_commands(s: &Server) -> Vec<Vec<Vec<u8>>> {
    let dir = s.dir().join("appendonlydir");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    files.sort();
    let mut commands = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let mut rest = &bytes[..];
        // `*<n>\r\n` then n × `$<len>\r\n<bytes>\r\n`.
        let line = |rest: &mut &[u8]| -> i64 {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = std::str::from_utf8(&rest[1..end]).unwrap().parse().unwrap();
            *rest = &rest[end + 2..];
            n
        };
        while !rest.is_empty() {
            assert_eq!(rest[0], b'*', "an AOF command");
            let n = line(&mut rest);
            let mut args = Vec::new();
            for _ in 0..n {
                let len = line(&mut rest) as usize;
                args.push(rest[..len].to_vec());
                rest = &rest[len + 2..];
            }
            commands.push(args);
        }
    }
    commands
}

fn db_digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

/// How a server refuses `CORRAL._APPLY` from a client: corral's own error everywhere, or — on
/// servers with the `internal` command flag (Redis 8) — before it runs ("unknown command"; "not
/// allowed from script" in a script).
fn refused_internal(e: &str) -> bool {
    let e = e.to_lowercase();
    e.contains("corral._apply is internal")
        || e.contains("unknown command")
        || e.contains("not allowed from script")
}

#[test]
fn apply_replayed_by_a_client_is_refused_and_changes_nothing() {
    let s = Server::start_with(
        ServerOptions::new()
            .config("appendonly", "yes")
            .config("appendfsync", "always"),
    );
    let mut c = s.conn();
    let token = int(&mut c, &["RESV.LOCK", "k", "owner", "60000"]);
    assert_eq!(int(&mut c, &["RESV.RELEASE", "k", "owner"]), 1);
    // The real payloads the server wrote: the grant, then the release.
    let applies: Vec<_> = aof_commands(&s)
        .into_iter()
        .filter(|a| a[0].eq_ignore_ascii_case(b"CORRAL._APPLY"))
        .collect();
    assert_eq!(applies.len(), 2, "one _APPLY per change: {applies:?}");
    assert_eq!(applies[0][1], b"k");
    let grant = applies[0][2].clone();
    let _: () = redis::cmd("SET")
        .arg("other")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let before = db_digest(&mut c);

    // The same key, another key, a hand-made payload: refused.
    for (key, payload) in [
        (&b"k"[..], &grant[..]),
        (b"fresh", &grant[..]),
        (b"k", b"\x00\x01garbage"),
    ] {
        let e = error_of(&mut c, &[b"CORRAL._APPLY", key, payload]);
        assert!(refused_internal(&e), "{e}");
    }
    // Inside MULTI: the transaction fails (queued and refused, or aborted by Redis 8).
    let multi: redis::RedisResult<Value> = redis::pipe()
        .atomic()
        .cmd("CORRAL._APPLY")
        .arg("k")
        .arg(&grant)
        .query(&mut c);
    match multi {
        Err(e) => assert!(refused_internal(&e.to_string()) || e.to_string().contains("EXECABORT")),
        Ok(v) => panic!("MULTI with _APPLY answered {v:?}"),
    }
    // From a script and from a function.
    let e = error_of(
        &mut c,
        &[
            b"EVAL",
            b"return redis.call('CORRAL._APPLY', KEYS[1], ARGV[1])",
            b"1",
            b"k",
            &grant,
        ],
    );
    assert!(refused_internal(&e), "{e}");
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(
            "#!lua name=replay\nredis.register_function('replay', function(keys, args) \
             return redis.call('CORRAL._APPLY', keys[1], args[1]) end)",
        )
        .query(&mut c)
        .unwrap();
    let e = error_of(&mut c, &[b"FCALL", b"replay", b"1", b"k", &grant]);
    assert!(refused_internal(&e), "{e}");
    // A user with every permission.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("root")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query(&mut c)
        .unwrap();
    let mut root = as_user(&s, "root", "pw");
    let e = error_of(&mut root, &[b"CORRAL._APPLY", b"k", &grant]);
    assert!(refused_internal(&e), "{e}");

    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut c).unwrap();
    assert_eq!(db_digest(&mut c), before, "nothing changed");
    assert_eq!(
        int(&mut c, &["EXISTS", "k", "fresh"]),
        0,
        "no lock anywhere"
    );
    // The lock is free for the next holder, with a larger token.
    assert!(int(&mut c, &["RESV.LOCK", "k", "next", "60000"]) > token);

    // What the server replays itself still applies: DEBUG LOADAOF empties the dataset and
    // replays the AOF through the loader's client (kill -9 and restart do the same in
    // tests/durability.rs).
    let after = db_digest(&mut c);
    drop(root);
    let _: () = redis::cmd("DEBUG").arg("LOADAOF").query(&mut c).unwrap();
    assert_eq!(db_digest(&mut c), after, "the AOF replays");
    assert_eq!(
        fields(value(&mut c, &["RESV.INFO", "k"])).map(|f| f[0].1.clone()),
        Some(Value::BulkString(b"next".to_vec()))
    );
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
    assert_eq!(
        field(&value(&mut c, &["RESV.INFO", "lock"]), "holder"),
        Value::Nil
    );
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
