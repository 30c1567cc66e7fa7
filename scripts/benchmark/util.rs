//! Helpers shared by the sections.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::Server;
use crate::report::{Report, Row, Target};
use crate::resp::{self, Reply};

/// `INFO commandstats` as `command name → (calls, usec)`, names as Redis spells them
/// after `cmdstat_` (`resv.lock`, `set`, `evalsha`…).
pub fn cmdstats(conn: &mut redis::Connection) -> HashMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    let mut out = HashMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line.trim_end().split_once(':') else {
            continue;
        };
        let Some(name) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_string(), (field("calls"), field("usec")));
    }
    out
}

pub fn reset_stats(conn: &mut redis::Connection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(conn)
        .expect("CONFIG RESETSTAT");
}

/// A command's arguments (name first).
pub type Args = Vec<Vec<u8>>;

/// Whether a reply is the success a command should get.
pub type Check = fn(&Reply) -> bool;

pub fn args(parts: &[&str]) -> Args {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

pub fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|a| a.as_slice()).collect()
}

pub fn is_int(r: &Reply) -> bool {
    matches!(r, Reply::Int(_))
}

pub fn is_one(r: &Reply) -> bool {
    *r == Reply::Int(1)
}

pub fn is_ok(r: &Reply) -> bool {
    *r == Reply::Status("OK".into())
}

pub fn is_nil(r: &Reply) -> bool {
    *r == Reply::Bulk(None) || *r == Reply::Array(None)
}

/// Iterations run per pipeline by [`measure`].
pub const BATCH: usize = 100;

/// Commands, repeated, whose server time `INFO commandstats` measures.
pub struct Workload {
    pub label: &'static str,
    /// The iterations it cycles through (iteration i runs `iterations[i % len]`): each
    /// is a sequence of commands, each with a check that its reply is the expected
    /// success. A fixed workload has one.
    pub iterations: Vec<Vec<(Args, Check)>>,
    /// The `cmdstat_` entries whose usec make up this workload's server time.
    pub stats: &'static [&'static str],
}

impl Workload {
    /// The same commands every iteration.
    pub fn new(
        label: &'static str,
        cmds: Vec<(Args, Check)>,
        stats: &'static [&'static str],
    ) -> Workload {
        Workload::cycling(label, vec![cmds], stats)
    }

    /// Different commands from one iteration to the next (e.g. a new holder id each
    /// time), cycled through in order. Their number must be 1 or a multiple of
    /// [`BATCH`], so that every pipeline is one of a fixed set, encoded once.
    pub fn cycling(
        label: &'static str,
        iterations: Vec<Vec<(Args, Check)>>,
        stats: &'static [&'static str],
    ) -> Workload {
        assert!(
            iterations.len() == 1 || iterations.len().is_multiple_of(BATCH),
            "{label}: {} iterations is not 1 or a multiple of {BATCH}",
            iterations.len()
        );
        Workload {
            label,
            iterations,
            stats,
        }
    }
}

/// What one measured run of a [`Workload`] cost the server.
pub struct ServerTime {
    /// usec per iteration: the sum of `stats`' usec over the iterations.
    pub per_iter: f64,
    /// usec per call of each entry of `stats`, in order.
    pub per_call: Vec<f64>,
}

/// Runs `iters` iterations of `w` on `conn`, [`BATCH`] iterations per pipeline, after a
/// `CONFIG RESETSTAT` on `admin`; returns what `INFO commandstats` says they cost.
pub fn measure(
    conn: &mut resp::Conn,
    admin: &mut redis::Connection,
    w: &Workload,
    iters: usize,
) -> ServerTime {
    // The pipelines, encoded before the clock starts: pipeline b runs iterations
    // b*BATCH.. of the cycle.
    let cycle = w.iterations.len();
    let pipelines: Vec<Vec<u8>> = (0..(cycle / BATCH).max(1))
        .map(|b| {
            let mut buf = Vec::new();
            for i in 0..BATCH {
                for (cmd, _) in &w.iterations[(b * BATCH + i) % cycle] {
                    resp::encode(&mut buf, &refs(cmd));
                }
            }
            buf
        })
        .collect();
    reset_stats(admin);
    for n in 0..iters / BATCH {
        let b = n % pipelines.len();
        conn.send_raw(&pipelines[b]).expect("send");
        for i in 0..BATCH {
            for (cmd, ok) in &w.iterations[(b * BATCH + i) % cycle] {
                let r = conn.read().expect("read");
                assert!(
                    ok(&r),
                    "{}: unexpected reply {r:?} to {:?}",
                    w.label,
                    String::from_utf8_lossy(&cmd[0])
                );
            }
        }
    }
    ServerTime::read(admin, w.label, w.stats, iters / BATCH * BATCH)
}

impl ServerTime {
    /// What `INFO commandstats` on `admin` says `iters` iterations of `stats` cost since
    /// the last `CONFIG RESETSTAT` (`label` names the workload in a failed check).
    pub fn read(
        admin: &mut redis::Connection,
        label: &str,
        stats: &[&str],
        iters: usize,
    ) -> ServerTime {
        let all = cmdstats(admin);
        let mut total = 0.0;
        let per_call = stats
            .iter()
            .map(|name| {
                let (calls, usec) = all.get(*name).copied().unwrap_or((0, 0));
                assert!(calls > 0, "{label}: no cmdstat_{name} in INFO");
                total += usec as f64;
                usec as f64 / calls as f64
            })
            .collect();
        ServerTime {
            per_iter: total / iters as f64,
            per_call,
        }
    }
}

/// Each workload's rounds, from [`best_of`].
pub struct Rounds(Vec<Vec<ServerTime>>);

impl Rounds {
    /// Workload i's best (lowest) usec per iteration.
    pub fn iter(&self, i: usize) -> f64 {
        min(&self.0[i].iter().map(|t| t.per_iter).collect::<Vec<_>>())
    }

    /// Workload i's best (lowest) usec per call of its j-th stat.
    pub fn call(&self, i: usize, j: usize) -> f64 {
        min(&self.0[i].iter().map(|t| t.per_call[j]).collect::<Vec<_>>())
    }
}

/// Measures each `(workload, iterations)` `rounds` times with [`measure`]: see
/// [`best_rounds`].
pub fn best_of(
    conn: &mut resp::Conn,
    admin: &mut redis::Connection,
    work: &[(&Workload, usize)],
    rounds: usize,
) -> Rounds {
    let runs: Vec<(&str, usize)> = work.iter().map(|(w, iters)| (w.label, *iters)).collect();
    best_rounds(&runs, rounds, |i, iters| {
        measure(conn, admin, work[i].0, iters)
    })
}

/// Runs `run(i, iterations)` for each `(label, iterations)` of `work`, `rounds` times,
/// interleaved (round 0 of each, then round 1 of each…), after an unmeasured warm-up of a
/// tenth of the iterations. Noise on a shared machine only ever adds time, so callers
/// report the best round ([`Rounds::iter`], [`Rounds::call`]).
pub fn best_rounds(
    work: &[(&str, usize)],
    rounds: usize,
    mut run: impl FnMut(usize, usize) -> ServerTime,
) -> Rounds {
    for (i, (_, iters)) in work.iter().enumerate() {
        run(i, (iters / 10).max(BATCH));
    }
    let mut runs: Vec<Vec<ServerTime>> = work.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (label, iters)) in work.iter().enumerate() {
            let t = run(i, *iters);
            eprintln!(
                "bench:    round {round}: {label}: {:.3} usec per iteration ({:.3?} per call)",
                t.per_iter, t.per_call
            );
            runs[i].push(t);
        }
    }
    Rounds(runs)
}

/// Sends `n` commands in pipelines of `batch`, keeping one pipeline in flight while the
/// next is encoded and sent (so client and server work at once on 2 cores), and hands
/// every reply, in order, to `reply(i, r)`. `encode(range, buf)` appends the commands
/// for `range` to `buf`. Stops sending once `budget` is spent: returns how many
/// commands were sent (and answered) — `n` unless the budget ran out.
pub fn pipeline(
    conn: &mut resp::Conn,
    n: usize,
    batch: usize,
    budget: Duration,
    mut encode: impl FnMut(std::ops::Range<usize>, &mut Vec<u8>),
    mut reply: impl FnMut(usize, Reply),
) -> usize {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut in_flight: Option<std::ops::Range<usize>> = None;
    let mut next = 0;
    loop {
        let send = next < n && started.elapsed() < budget;
        if send {
            let range = next..(next + batch).min(n);
            buf.clear();
            encode(range.clone(), &mut buf);
            conn.send_raw(&buf).expect("send");
            next = range.end;
            if let Some(prev) = in_flight.replace(range) {
                for i in prev {
                    reply(i, conn.read().expect("read"));
                }
            }
        } else {
            if let Some(prev) = in_flight.take() {
                for i in prev {
                    reply(i, conn.read().expect("read"));
                }
            }
            return next;
        }
    }
}

/// Sends `cmd(0)`, …, `cmd(n − 1)` in pipelines of 1,000 ([`pipeline`]) and checks that each
/// reply passes `ok`: fills a key (or a keyspace) before a measurement.
pub fn load(conn: &mut resp::Conn, n: usize, cmd: impl Fn(usize) -> Args, ok: Check) {
    let sent = pipeline(
        conn,
        n,
        1000,
        Duration::MAX,
        |range, buf| {
            for i in range {
                resp::encode(buf, &refs(&cmd(i)));
            }
        },
        |i, r| {
            assert!(
                ok(&r),
                "{} (number {i}): unexpected reply {r:?}",
                String::from_utf8_lossy(&cmd(i).join(&b' '))
            )
        },
    );
    assert_eq!(sent, n);
}

/// A uuid-like 36-character id (`8-4-4-4-12` hex digits), the same for the same `i`
/// and distinct for distinct `i` (a bijective mix of `i` fills the first 60 bits).
pub fn uuidish(i: u64) -> String {
    let mix = |mut z: u64| {
        // splitmix64's finalizer: a bijection on u64.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(i);
    let b = mix(a ^ 0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        (a >> 4) & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A fresh server with corral, an admin connection (the `redis` crate) and a raw one for
/// pipelines.
pub fn start() -> (Server, redis::Connection, resp::Conn) {
    let srv = Server::start();
    let admin = srv.conn();
    let conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
    (srv, admin, conn)
}

/// What building one side of a memory comparison cost, in bytes (or per element, after
/// [`Footprint::per`]).
pub struct Footprint {
    /// `MEMORY USAGE key SAMPLES 0` of its key afterwards (every element counted, not a
    /// sample); None for a side spread over many keys.
    pub usage: Option<f64>,
    /// How much `used_memory` grew while it was built: what the allocator really handed
    /// out, slack and what `MEMORY USAGE` cannot see (expires dict, module side tables)
    /// included.
    pub growth: f64,
}

impl Footprint {
    /// Both figures divided by `n`: per element, or in MB with `n` = 10^6.
    pub fn per(self, n: f64) -> Footprint {
        Footprint {
            usage: self.usage.map(|u| u / n),
            growth: self.growth / n,
        }
    }
}

/// `FLUSHALL`, then `build()` (which fills the keyspace through another connection),
/// measured: `used_memory` before and after, then `MEMORY USAGE` of `key`. Each side of a
/// comparison so starts from an empty keyspace. Returns what `build` returned too.
pub fn footprint<T>(
    admin: &mut redis::Connection,
    key: Option<&str>,
    build: impl FnOnce() -> T,
) -> (Footprint, T) {
    let used_memory = |admin: &mut redis::Connection| -> f64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(admin)
            .expect("INFO memory");
        crate::common::info_value(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .expect("used_memory")
    };
    let _: () = redis::cmd("FLUSHALL").query(admin).expect("FLUSHALL");
    let before = used_memory(admin);
    let built = build();
    let growth = used_memory(admin) - before;
    let usage = key.map(|key| {
        let n: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(admin)
            .expect("MEMORY USAGE");
        n as f64
    });
    (Footprint { usage, growth }, built)
}

/// A family's memory section: corral against a baseline holding the same things, in two
/// rows: `MEMORY USAGE` (the row with the target; against the baseline's when it is one
/// key) and the growth of `used_memory` while each was built (informational).
pub struct Memory<'a> {
    pub family: &'a str,
    /// The `MEMORY USAGE` row's name, and its target.
    pub usage: &'a str,
    pub target: Target,
    /// The `used_memory` growth row's name.
    pub growth: &'a str,
    /// What the baseline is.
    pub baseline: &'a str,
    /// The rows' unit ("bytes", "MB"): the footprints are already in it.
    pub unit: &'a str,
}

impl Memory<'_> {
    pub fn report(&self, report: &mut Report, corral: Footprint, baseline: Footprint) {
        let usage = corral.usage.expect("corral's side has a key");
        let row = Row::new(self.family, self.usage, usage, self.unit).target(self.target);
        report.add(match baseline.usage {
            Some(b) => row.vs(self.baseline, b),
            None => row,
        });
        report.add(
            Row::new(self.family, self.growth, corral.growth, self.unit)
                .vs(self.baseline, baseline.growth),
        );
    }
}

/// `OBJECT ENCODING key` ("skiplist", "hashtable"…).
pub fn encoding(admin: &mut redis::Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(admin)
        .expect("OBJECT ENCODING")
}

/// `SCRIPT LOAD src`: the script's sha, for EVALSHA.
pub fn load_script(conn: &mut redis::Connection, src: &str) -> String {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(src)
        .query(conn)
        .expect("SCRIPT LOAD")
}

/// The smallest of some numbers (NaN if none).
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::min)
}

/// The `q`-quantile (0..=1) of sorted numbers, nearest-rank method.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
