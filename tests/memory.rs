//! MEMORY USAGE of big corral values: it must not block the server (it samples entries instead
//! of walking them all) and must stay close to the memory the value really takes.

mod common;

use common::client::{assert_alive, info_int};
use common::{info_value, Server};
use redis::Connection;

/// `used_memory` from INFO memory.
fn used_memory(s: &Server) -> i64 {
    info_int(s, "memory", "used_memory")
}

/// `MEMORY USAGE key`, called `n` times after CONFIG RESETSTAT; returns the figure and the
/// server's mean time per call (µs) from `INFO commandstats` (`cmdstat_memory|usage`).
fn memory_usage(s: &Server, c: &mut Connection, key: &str, n: usize) -> (i64, f64) {
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(c).unwrap();
    let mut bytes = 0;
    for _ in 0..n {
        bytes = redis::cmd("MEMORY").arg("USAGE").arg(key).query(c).unwrap();
    }
    let stats = s.info("commandstats");
    // Redis 7 counts subcommands apart (`cmdstat_memory|usage`); older servers as `memory`.
    let line = info_value(&stats, "cmdstat_memory|usage")
        .or_else(|| info_value(&stats, "cmdstat_memory"))
        .unwrap_or_else(|| panic!("no cmdstat_memory in {stats}"));
    let usec_per_call = line
        .split(',')
        .find_map(|kv| kv.strip_prefix("usec_per_call="))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no usec_per_call in {line}"));
    (bytes, usec_per_call)
}

/// Runs `n` commands built by `cmd(i)` in pipelines of 10,000, ignoring the replies.
fn pipelined(c: &mut Connection, n: u64, cmd: impl Fn(u64) -> redis::Cmd) {
    let mut i = 0;
    while i < n {
        let mut p = redis::pipe();
        for j in i..(i + 10_000).min(n) {
            p.add_command(cmd(j)).ignore();
        }
        let _: () = p.query(c).unwrap();
        i += 10_000;
    }
}

/// Checks MEMORY USAGE of `key` against the growth of used_memory while it was built: fast
/// (< 2 ms per call) and within ±25%.
fn check(s: &Server, c: &mut Connection, key: &str, growth: i64) {
    let (bytes, usec) = memory_usage(s, c, key, 20);
    println!("{key}: MEMORY USAGE {bytes} bytes in {usec} µs per call; used_memory grew {growth}");
    assert!(usec < 2_000.0, "MEMORY USAGE {key} took {usec} µs per call");
    let ratio = bytes as f64 / growth as f64;
    assert!(
        (0.75..=1.25).contains(&ratio),
        "MEMORY USAGE {key} = {bytes} bytes, but used_memory grew {growth} ({ratio:.3}×)"
    );
}

#[test]
fn memory_usage_of_a_million_jobs_is_fast_and_close() {
    let s = Server::start();
    let mut c = s.conn();
    let before = used_memory(&s);
    pipelined(&mut c, 1_000_000, |_| {
        let mut cmd = redis::cmd("JOB.CREATE");
        cmd.arg("jobs").arg("0123456789");
        cmd
    });
    let growth = used_memory(&s) - before;
    check(&s, &mut c, "jobs", growth);
    // UNLINK of a huge corral key frees it on Redis's lazy-free thread (free_effort): the
    // command itself stays short, and the memory comes back.
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let unlinked: i64 = redis::cmd("UNLINK").arg("jobs").query(&mut c).unwrap();
    assert_eq!(unlinked, 1);
    let stats = s.info("commandstats");
    let line = info_value(&stats, "cmdstat_unlink").unwrap();
    let usec: f64 = line
        .split(',')
        .find_map(|kv| kv.strip_prefix("usec_per_call="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        usec < 5_000.0,
        "UNLINK of 1M jobs took {usec} µs: not freed lazily"
    );
    common::wait_until(std::time::Duration::from_secs(30), "memory freed", || {
        used_memory(&s) < before + growth / 4
    });
    assert_alive(&s, &mut c);
}

#[test]
fn memory_usage_of_a_hundred_thousand_holders_is_fast_and_close() {
    let s = Server::start();
    let mut c = s.conn();
    let before = used_memory(&s);
    pipelined(&mut c, 100_000, |i| {
        let mut cmd = redis::cmd("SEM.ACQUIRE");
        cmd.arg("sem")
            .arg(format!("holder-{i:08}"))
            .arg(100_000)
            .arg(600_000);
        cmd
    });
    let growth = used_memory(&s) - before;
    let count: i64 = redis::cmd("SEM.COUNT").arg("sem").query(&mut c).unwrap();
    assert_eq!(count, 100_000);
    check(&s, &mut c, "sem", growth);
    assert_alive(&s, &mut c);
}
