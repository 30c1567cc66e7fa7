//! SEM: counting semaphores whose permits expire, against the sorted-set scripts that
//! passbuddy and redis-semaphore send.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::report::{num, Kind, Report, Row, Target};
use crate::resp;
use crate::util::{self, args, best_of, is_int, is_one, uuidish, Memory, Workload};

const FAMILY: &str = "SEM";

/// Permits are held for 10 minutes: nothing lapses while a section runs.
const TTL_MS: u64 = 600_000;
/// The capacity every ACQUIRE (and the Lua script) passes: never reached here, so every
/// acquire of a new holder is granted.
const CAPACITY: u64 = 10_000_000;
/// Holder ids `uuidish(FRESH + k)` are never among a key's standing holders
/// (`uuidish(0..n)`): the measured acquires take new holders.
const FRESH: u64 = 1 << 40;
/// How many distinct new holders a measured workload cycles through.
const CYCLE: usize = 10_000;

/// The sorted-set acquire passbuddy and redis-semaphore send (as EVALSHA): drop the
/// holders whose expiry has passed, count the rest, add the holder with its expiry if
/// there is room. The client passes the time, as those libraries do:
/// `ARGV = now (ms), capacity, now + ttl, holder`. Their release is a plain `ZREM`.
const LUA_ACQUIRE: &str = "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) \
     if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then \
     redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4]) return 1 end return 0";

/// This process's clock in ms, as a library would pass it to its script.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Gives `key` `n` holders (`uuidish(0..n)`), with pipelined `SEM.ACQUIRE`s.
fn fill(conn: &mut resp::Conn, key: &str, n: usize) {
    let (cap, ttl) = (CAPACITY.to_string(), TTL_MS.to_string());
    let acquire = |i| args(&["SEM.ACQUIRE", key, &uuidish(i as u64), &cap, &ttl]);
    util::load(conn, n, acquire, is_int);
}

/// The same holders as [`fill`], as members of a sorted set scored by their expiry.
fn fill_zset(conn: &mut resp::Conn, key: &str, n: usize) {
    let expiry = (now_ms() + TTL_MS).to_string();
    let zadd = |i| args(&["ZADD", key, &expiry, &uuidish(i as u64)]);
    util::load(conn, n, zadd, is_one);
}

/// `SEM.ACQUIRE` of a new holder, then its `SEM.RELEASE`, on `key`: a new holder each
/// iteration, so the key keeps its size.
fn acquire_release(label: &'static str, key: &str) -> Workload {
    let (cap, ttl) = (CAPACITY.to_string(), TTL_MS.to_string());
    let iterations = (0..CYCLE)
        .map(|k| {
            let h = uuidish(FRESH + k as u64);
            vec![
                (args(&["SEM.ACQUIRE", key, &h, &cap, &ttl]), is_int as _),
                (args(&["SEM.RELEASE", key, &h]), is_one as _),
            ]
        })
        .collect();
    Workload::cycling(label, iterations, &["sem.acquire", "sem.release"])
}

/// (a) SEM.ACQUIRE's server time at 100,000 holders on one key against 10 holders
/// (O(log n): at most 1.5x), with 1,000 and 10,000 in between for the trend.
///
/// What is measured: the acquire of a *new* holder (a grant: admission, then an insert
/// into the holder map and the expiry-ordered index), then its release (two removals),
/// so the key keeps its size from one iteration to the next. That is the path whose cost
/// depends on the number of holders; acquire/renew of a standing holder would only move
/// one entry in the index and skip admission. New holders cycle through 10,000 distinct
/// ids, so lookups land all over the holder map as they do in real use (one repeated id
/// would keep its bucket in cache). Standing holders are built with pipelined
/// `SEM.ACQUIRE`s, TTL 10 minutes (nothing lapses while the section runs). Each size is
/// its own key on one server; the workloads run interleaved, 5 rounds after a warm-up,
/// best round reported.
pub fn scaling(report: &mut Report) {
    const SIZES: [(&str, usize); 4] = [
        ("sem:10", 10),
        ("sem:1k", 1_000),
        ("sem:10k", 10_000),
        ("sem:100k", 100_000),
    ];
    const LABELS: [&str; 4] = [
        "10 holders",
        "1,000 holders",
        "10,000 holders",
        "100,000 holders",
    ];
    const ITERS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    for (key, n) in SIZES {
        fill(&mut conn, key, n);
    }
    let workloads: Vec<Workload> = SIZES
        .iter()
        .zip(LABELS)
        .map(|((key, _), label)| acquire_release(label, key))
        .collect();
    let work: Vec<(&Workload, usize)> = workloads.iter().map(|w| (w, ITERS)).collect();
    let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

    let at = |i: usize| format!("{} on one key", LABELS[i]);
    // For the chart: scale i as (label, holders).
    let scale = |i: usize| (LABELS[i], SIZES[i].1 as f64);
    const ACQUIRE: &str = "SEM.ACQUIRE of a new holder";
    report.add(
        Row::new(
            FAMILY,
            &format!("server time, SEM.ACQUIRE of a new holder, {}", at(3)),
            best.call(3, 0),
            "us",
        )
        .vs(&at(0), best.call(0, 0))
        .target(Target::RatioAtMost(1.5))
        .scale(ACQUIRE, scale(3), scale(0)),
    );
    for i in [1, 2] {
        report.add(
            Row::new(
                FAMILY,
                &format!("server time, SEM.ACQUIRE of a new holder, {}", at(i)),
                best.call(i, 0),
                "us",
            )
            .vs(&at(0), best.call(0, 0))
            .scale(ACQUIRE, scale(i), scale(0)),
        );
    }
    report.add(
        Row::new(
            FAMILY,
            &format!("server time, SEM.RELEASE, {}", at(3)),
            best.call(3, 1),
            "us",
        )
        .vs(&at(0), best.call(0, 1))
        .scale("SEM.RELEASE", scale(3), scale(0)),
    );
}

/// (b) SEM.ACQUIRE + SEM.RELEASE against the sorted-set scripts, at 1,000 holders.
///
/// corral: `SEM.ACQUIRE` of a new holder + its `SEM.RELEASE` on a semaphore with 1,000
/// standing holders. Baseline: the same on a sorted set of the same 1,000 holders
/// (skiplist-encoded, as any set over 128 members is), acquire = `EVALSHA` of
/// [`LUA_ACQUIRE`], release = `ZREM`. The script's `now` is this process's clock when
/// the pipelines are encoded; every member expires 10 minutes later, so its
/// `ZREMRANGEBYSCORE` removes nothing, as in a healthy semaphore. Server time from
/// `INFO commandstats`: `cmdstat_evalsha` (which covers the script's inner calls; they
/// are also counted under their own names, which are left out) + `cmdstat_zrem`,
/// against `cmdstat_sem.acquire` + `cmdstat_sem.release`. Interleaved, 5 rounds, best
/// round.
pub fn vs_lua(report: &mut Report) {
    const HOLDERS: usize = 1_000;
    const ITERS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    fill(&mut conn, "sem", HOLDERS);
    fill_zset(&mut conn, "zsem", HOLDERS);
    let sha = util::load_script(&mut admin, LUA_ACQUIRE);

    let corral = acquire_release("corral", "sem");
    let now = now_ms();
    let (now_s, cap, expiry) = (
        now.to_string(),
        CAPACITY.to_string(),
        (now + TTL_MS).to_string(),
    );
    let lua_iterations = (0..CYCLE)
        .map(|k| {
            let h = uuidish(FRESH + k as u64);
            vec![
                (
                    args(&["EVALSHA", &sha, "1", "zsem", &now_s, &cap, &expiry, &h]),
                    is_one as _,
                ),
                (args(&["ZREM", "zsem", &h]), is_one as _),
            ]
        })
        .collect();
    let lua = Workload::cycling(
        "Lua sorted-set acquire (EVALSHA) + ZREM",
        lua_iterations,
        &["evalsha", "zrem"],
    );
    let best = best_of(
        &mut conn,
        &mut admin,
        &[(&corral, ITERS), (&lua, ITERS)],
        ROUNDS,
    );

    let holders = num(HOLDERS as f64);
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, SEM.ACQUIRE + SEM.RELEASE of a new holder, {holders} holders (per pair)"
            ),
            best.iter(0),
            "us",
        )
        .vs(lua.label, best.iter(1))
        .target(Target::RatioAtMost(0.33))
        .versus(
            &format!("SEM.ACQUIRE + SEM.RELEASE, {holders} holders (per pair)"),
            Kind::Lua,
            "Lua sorted-set acquire + ZREM",
        ),
    );
    report.add(
        Row::new(
            FAMILY,
            "server time, SEM.ACQUIRE alone",
            best.call(0, 0),
            "us",
        )
        .vs("EVALSHA of the sorted-set acquire", best.call(1, 0))
        .versus("SEM.ACQUIRE alone", Kind::Lua, "Lua sorted-set acquire"),
    );
    report.add(
        Row::new(
            FAMILY,
            "server time, SEM.RELEASE alone",
            best.call(0, 1),
            "us",
        )
        .vs("ZREM", best.call(1, 1))
        .target(Target::RatioAtMost(2.0))
        .versus("SEM.RELEASE alone", Kind::Native, "ZREM"),
    );
}

/// (c) Memory per held permit against a sorted-set member with the same holder id.
///
/// One semaphore with 100,000 holders (36-character uuid-like ids) and one sorted set of
/// the same ids scored by expiry (skiplist-encoded): `MEMORY USAGE … SAMPLES 0` of each,
/// divided by 100,000, is the target row. An informational row gives the growth of
/// `used_memory` per holder while each was built, which also counts what `MEMORY USAGE`
/// cannot see (allocator rounding of every piece; corral's figure comes from its own
/// `mem_usage` callback, an estimate).
pub fn memory(report: &mut Report) {
    const HOLDERS: usize = 100_000;
    let (_srv, mut admin, mut conn) = util::start();
    let (sem, ()) = util::footprint(&mut admin, Some("sem"), || fill(&mut conn, "sem", HOLDERS));
    let (zset, ()) = util::footprint(&mut admin, Some("zsem"), || {
        fill_zset(&mut conn, "zsem", HOLDERS)
    });
    let n = HOLDERS as f64;
    let encoding = util::encoding(&mut admin, "zsem");
    Memory {
        family: FAMILY,
        usage: &format!(
            "MEMORY USAGE per held permit ({} holders, 36-char ids)",
            num(n)
        ),
        target: Target::RatioAtMost(1.5),
        growth: "used_memory growth per held permit, same holders",
        baseline: &format!("sorted-set member ({encoding}), same ids"),
        unit: "bytes",
    }
    .report(report, sem.per(n), zset.per(n));
}
