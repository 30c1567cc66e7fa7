//! Client-side helpers shared by the integration tests: running a command, reading its error or
//! its map-like reply, `DEBUG DIGEST-VALUE`, INFO fields, a waited-for AOF rewrite, raw RESP
//! sockets and key-event notifications.
//!
//! Only std and the `redis` crate: this file is also compiled into `scripts/benchmark/`.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use redis::{Connection, PubSub, Value};

use super::{wait_until, Server};

/// How long [`rewrite_aof`] waits for BGREWRITEAOF to finish.
pub const REWRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `args` (the command name first) and returns its reply; an error reply fails the test.
pub fn value(c: &mut Connection, args: &[&str]) -> Value {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs `args` (the command name first), which must answer an integer, and returns it.
pub fn int(c: &mut Connection, args: &[&str]) -> i64 {
    match value(c, args) {
        Value::Int(i) => i,
        v => panic!("{args:?} → {v:?}"),
    }
}

/// Runs a command and returns its error text ("CODE detail"), failing if it succeeded.
pub fn error_of(c: &mut Connection, args: &[&[u8]]) -> String {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => panic!(
            "{:?} succeeded with {v:?}",
            String::from_utf8_lossy(&args.concat())
        ),
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
    }
}

/// `DEBUG DIGEST-VALUE key` as one string (equal digests: equal values).
pub fn digest(c: &mut Connection, key: &str) -> String {
    let v: Vec<String> = redis::cmd("DEBUG")
        .arg("DIGEST-VALUE")
        .arg(key)
        .query(c)
        .unwrap();
    v.concat()
}

/// The (name, value) pairs of a map-like reply (RESP2 flat array or RESP3 map); None for nil.
pub fn fields(v: Value) -> Option<Vec<(String, Value)>> {
    let flat: Vec<Value> = match v {
        Value::Nil => return None,
        Value::Array(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => panic!("unexpected reply {other:?}"),
    };
    assert!(
        flat.len().is_multiple_of(2),
        "odd number of elements: {flat:?}"
    );
    Some(
        flat.chunks(2)
            .map(|kv| match &kv[0] {
                Value::BulkString(k) => (String::from_utf8_lossy(k).into_owned(), kv[1].clone()),
                Value::SimpleString(k) => (k.clone(), kv[1].clone()),
                k => panic!("{k:?}"),
            })
            .collect(),
    )
}

/// The field `name` of a map-like reply (see [`fields`]); panics if the reply has none.
pub fn field(v: &Value, name: &str) -> Value {
    let all = fields(v.clone()).unwrap_or_else(|| panic!("nil reply, no {name}"));
    all.into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
        .unwrap_or_else(|| panic!("no {name} in {v:?}"))
}

/// A map-like reply whose values are all integers (`*.INFO`) as a map; None for nil.
pub fn int_fields(v: Value) -> Option<HashMap<String, i64>> {
    Some(
        fields(v)?
            .into_iter()
            .map(|(k, v)| match v {
                Value::Int(i) => (k, i),
                v => panic!("{k}: {v:?} is not an integer"),
            })
            .collect(),
    )
}

/// The integer field `field` of `INFO <section>` on `s`, e.g. `info_int(&s, "corral", "corral_resv_lapses")`.
pub fn info_int(s: &Server, section: &str, field: &str) -> i64 {
    let v = s
        .info_field(section, field)
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"));
    v.parse()
        .unwrap_or_else(|e| panic!("INFO {section} {field}:{v}: {e}"))
}

/// Asserts that the server still answers PING on `c` and that corral has contained no panic.
pub fn assert_alive(s: &Server, c: &mut Connection) {
    let pong: String = redis::cmd("PING").query(c).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        s.info_field("corral", "corral_contained_panics").as_deref(),
        Some("0")
    );
}

/// BGREWRITEAOF on `s`, then waits (at most [`REWRITE_TIMEOUT`]) for it to finish, and checks it succeeded.
pub fn rewrite_aof(s: &Server) {
    let mut c = s.conn();
    let _: () = redis::cmd("BGREWRITEAOF").query(&mut c).unwrap();
    wait_until(REWRITE_TIMEOUT, "AOF rewrite done", || {
        s.info_field("persistence", "aof_rewrite_in_progress")
            .as_deref()
            == Some("0")
            && s.info_field("persistence", "aof_rewrite_scheduled")
                .as_deref()
                == Some("0")
    });
    assert_eq!(
        s.info_field("persistence", "aof_last_bgrewrite_status")
            .as_deref(),
        Some("ok"),
        "AOF rewrite failed"
    );
}

/// Asserts that `replica` holds what `primary` holds under `key` (`DEBUG DIGEST-VALUE`), once
/// the primary is done with what fell due. Reads on a primary show a lease past its deadline as
/// gone before the primary's timer has lapsed it, so a wait on such a read can end just before
/// the lapse is applied and replicated: the digests are compared after each catch-up until they
/// agree, for at most 10 s (a replica that really diverged never agrees).
pub fn assert_replica_converges(primary: &Server, replica: &Server, key: &str) {
    let (mut p, mut r) = (primary.conn(), replica.conn());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        primary.sync_replica(replica);
        let (dp, dr) = (digest(&mut p, key), digest(&mut r, key));
        if dp == dr {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key}: the replica's value never matched the primary's ({dr} vs {dp})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `args` encoded as one RESP command (an array of bulk strings).
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    super::raw::encode(&mut out, args);
    out
}

/// Sends `args` as one RESP command on a fresh socket to 127.0.0.1:`port`, without reading the
/// reply: e.g. a client that blocks, then disconnects when the stream is dropped.
pub fn raw_command(port: u16, args: &[&[u8]]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&resp(args)).unwrap();
    s
}

/// PSUBSCRIBEs `pubsub` to db 0's `<family>.*` key-event notifications; reads time out after `timeout`.
pub fn subscribe_keyevents(pubsub: &mut PubSub, family: &str, timeout: Duration) {
    pubsub
        .psubscribe(format!("__keyevent@0__:{family}.*"))
        .unwrap();
    pubsub.set_read_timeout(Some(timeout)).unwrap();
}

/// The events of the next `n` key-event notifications on `pubsub` (e.g. "resv.grant"), each
/// asserted to be about `key`.
pub fn keyevents(pubsub: &mut PubSub, n: usize, key: &str) -> Vec<String> {
    (0..n)
        .map(|_| {
            let msg = pubsub
                .get_message()
                .expect("a notification before the read timeout");
            let event = msg.get_channel_name().rsplit(':').next().unwrap();
            let payload: String = msg.get_payload().unwrap();
            assert_eq!(payload, key, "the key of {event}");
            event.to_string()
        })
        .collect()
}
