//! Every corral command's registration: COMMAND LIST, INFO, DOCS and GETKEYS.

mod common;

use std::collections::BTreeSet;

use common::client::{field, fields};
use common::Server;
use redis::{Connection, Value};

/// Every command the module registers: (name, a valid invocation's arguments after the key). A
/// command missing here fails `the_module_registers_exactly_the_table`. (Arities are not written
/// here: the module derives each from its documented arguments, and
/// `command_docs_have_a_summary_and_since` checks COMMAND INFO's arity against COMMAND DOCS.)
const COMMANDS: &[(&str, &[&str])] = &[
    // RESV
    ("resv.lock", &["a", "100", "BLOCK", "10"]),
    ("resv.renew", &["a", "100"]),
    ("resv.release", &["a"]),
    ("resv.check", &["a", "1"]),
    ("resv.info", &[]),
    // SEM
    ("sem.acquire", &["a", "3", "100", "PERMITS", "2"]),
    ("sem.renew", &["a", "100"]),
    ("sem.release", &["a"]),
    ("sem.count", &[]),
    ("sem.holders", &[]),
    ("sem.info", &[]),
    // SLOT
    ("slot.get", &["HOLDER", "a"]),
    ("slot.put", &["0", "HOLDER", "a"]),
    ("slot.renew", &["0", "100"]),
    ("slot.count", &[]),
    ("slot.holder", &["0"]),
    ("slot.info", &[]),
    // ALLOC
    ("alloc.available", &["i", "TTL", "100"]),
    ("alloc.unavailable", &["i", "REMOVE"]),
    ("alloc.instances", &[]),
    ("alloc.allocate", &["j", "ONLYFOR", "i"]),
    ("alloc.deallocate", &["j"]),
    ("alloc.jobs", &["i"]),
    ("alloc.hasjobs", &["i"]),
    ("alloc.instance", &["j"]),
    ("alloc.drain", &["i", "BLOCK", "10"]),
    ("alloc.info", &[]),
    // JOB
    (
        "job.create",
        &["request", "DELAY", "10", "PRIORITY", "2", "UNIQUE", "u"],
    ),
    ("job.pull", &["w", "100"]),
    ("job.renew", &["1", "w", "100"]),
    ("job.release", &["1", "w"]),
    ("job.fulfill", &["1", "v", "TOKEN", "1", "NEXT", "w", "100"]),
    ("job.fail", &["1", "w", "reason"]),
    ("job.retry", &["1"]),
    ("job.list", &["failed", "AFTER", "1", "COUNT", "10"]),
    ("job.queue", &["1", "t"]),
    ("job.unqueue", &["1"]),
    ("job.pullnotify", &["w", "100"]),
    ("job.done", &["1", "w", "t"]),
    ("job.get", &["1"]),
    ("job.delete", &["1"]),
    ("job.info", &[]),
];

/// Commands only the server itself runs (from the replication link and the AOF). Servers with
/// the `internal` command flag (Redis 8) hide them from clients altogether; elsewhere they are
/// listed (and refuse clients themselves: tests/security.rs).
const INTERNAL: &[(&str, &[&str])] = &[("corral._apply", &["payload"])];

/// True on servers with the `internal` command flag: Redis 8 and later (Valkey reports a Redis
/// 7.2 compatible version).
fn hides_internal(c: &mut Connection) -> bool {
    let info: String = redis::cmd("INFO").arg("server").query(c).unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    field("valkey_version").is_none()
        && field("redis_version")
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|major| major >= 8)
}

/// The commands a client of this server sees.
fn visible(c: &mut Connection) -> Vec<&'static (&'static str, &'static [&'static str])> {
    let internal: &[_] = if hides_internal(c) { &[] } else { INTERNAL };
    COMMANDS.iter().chain(internal).collect()
}

fn text(v: &Value) -> String {
    redis::from_redis_value(v).unwrap_or_else(|e| panic!("{v:?}: {e}"))
}

#[test]
fn the_module_registers_exactly_the_table() {
    let s = Server::start();
    let mut c = s.conn();
    let listed: BTreeSet<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query(&mut c)
        .unwrap();
    let visible = visible(&mut c);
    let table: BTreeSet<String> = visible.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(
        table.len(),
        visible.len(),
        "a command is in the table twice"
    );
    assert_eq!(
        listed,
        table,
        "registered but not in the table: {:?}; in the table but not registered: {:?}",
        listed.difference(&table).collect::<Vec<_>>(),
        table.difference(&listed).collect::<Vec<_>>()
    );
}

#[test]
fn command_info_arity_and_key_positions() {
    let s = Server::start();
    let mut c = s.conn();
    for &&(name, _) in &visible(&mut c) {
        let v: Vec<Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let [Value::Array(row)] = &v[..] else {
            panic!("{name}: {v:?}")
        };
        assert_eq!(text(&row[0]), name);
        assert_eq!(
            (&row[3], &row[4], &row[5]),
            (&Value::Int(1), &Value::Int(1), &Value::Int(1)),
            "{name} first/last/step key"
        );
    }
}

#[test]
fn command_docs_have_a_summary_and_since() {
    let s = Server::start();
    let mut c = s.conn();
    for &&(name, _) in &visible(&mut c) {
        let info: Vec<Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let [Value::Array(row)] = &info[..] else {
            panic!("{name}: {info:?}")
        };
        let Value::Int(arity) = row[1] else {
            panic!("{name}: {row:?}")
        };
        let v: Value = redis::cmd("COMMAND")
            .arg("DOCS")
            .arg(name)
            .query(&mut c)
            .unwrap();
        let docs = field(&v, name);
        let summary = text(&field(&docs, "summary"));
        assert!(!summary.trim().is_empty(), "{name} summary");
        let since = text(&field(&docs, "since"));
        assert!(
            !since.is_empty() && since.split('.').all(|n| n.parse::<u32>().is_ok()),
            "{name} since {since:?}"
        );
        assert_eq!(text(&field(&docs, "module")), "corral", "{name}");
        // The key comes first in the documented arguments.
        let args: Vec<Value> = redis::from_redis_value(&field(&docs, "arguments")).unwrap();
        let first = fields(args[0].clone()).unwrap();
        assert!(
            first.iter().any(|(k, v)| k == "type" && text(v) == "key"),
            "{name}: {first:?}"
        );
        // The documented arguments agree with the arity: the required ones (plus the command
        // name) are exactly |arity|, and a fixed arity has nothing optional or repeatable.
        let flags: Vec<String> = args
            .iter()
            .map(|a| {
                let f = fields(a.clone()).unwrap();
                f.iter()
                    .find(|(k, _)| k == "flags")
                    .map(|(_, v)| format!("{v:?}"))
                    .unwrap_or_default()
            })
            .collect();
        let required = flags.iter().filter(|f| !f.contains("optional")).count() as i64;
        assert_eq!(
            required + 1,
            arity.abs(),
            "{name}: required args vs arity {arity}: {flags:?}"
        );
        if arity > 0 {
            assert!(
                flags
                    .iter()
                    .all(|f| !f.contains("optional") && !f.contains("multiple")),
                "{name}: fixed arity {arity} but {flags:?}"
            );
        }
    }
}

fn getkeys(c: &mut Connection, name: &str, args: &[&str]) -> Vec<String> {
    redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg(name)
        .arg("mykey")
        .arg(args)
        .query(c)
        .unwrap_or_else(|e| panic!("COMMAND GETKEYS {name} mykey {args:?}: {e}"))
}

#[test]
fn command_getkeys_finds_the_one_key() {
    let s = Server::start();
    let mut c = s.conn();
    for &&(name, args) in &visible(&mut c) {
        assert_eq!(getkeys(&mut c, name, args), ["mykey"], "{name} {args:?}");
        assert_eq!(
            getkeys(&mut c, &name.to_ascii_uppercase(), args),
            ["mykey"],
            "{name} in upper case"
        );
    }
}
