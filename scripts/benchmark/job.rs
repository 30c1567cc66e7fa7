//! JOB: a job store with fenced pulls, at 1,000 against 1,000,000 pending jobs, and
//! end to end against a BullMQ-style Lua queue.

use std::time::Instant;

use crate::common::client;
use crate::report::{num, Kind, Report, Row, Target};
use crate::resp::{self, Reply};
use crate::util::{
    self, args, cmdstats, is_int, is_nil, is_one, min, refs, reset_stats, Footprint, Memory,
    ServerTime,
};

const FAMILY: &str = "JOB";

/// Work leases last 10 minutes: nothing lapses while a section runs.
const LEASE_MS: &str = "600000";
/// Jobs pulled (and fulfilled) per pipeline, each by its own worker id.
const DEPTH: usize = 100;
/// The value every job is fulfilled with (10 bytes, as long as a request).
const VALUE: &str = "result-001";

/// The i-th request: 10 bytes.
fn request(i: usize) -> String {
    format!("req-{:06}", i % 1_000_000)
}

/// The k-th of the worker ids `w0`, `w1`, ….
fn worker(k: usize) -> String {
    format!("w{k}")
}

/// Creates `n` pending jobs with 10-byte requests on `key` (pipelined `JOB.CREATE`s).
fn fill(conn: &mut resp::Conn, key: &str, n: usize) {
    let t = Instant::now();
    util::load(conn, n, |i| args(&["JOB.CREATE", key, &request(i)]), is_int);
    eprintln!(
        "bench:    {key}: {} jobs created in {:.1} s",
        num(n as f64),
        t.elapsed().as_secs_f64()
    );
}

/// A `JOB.PULL` reply `[id, request, token]`: (id, token), as the client sends them back.
fn pulled(r: Reply) -> (String, String) {
    match r {
        Reply::Array(Some(a)) => match &a[..] {
            [Reply::Int(id), Reply::Bulk(Some(_)), Reply::Int(token)] => {
                (id.to_string(), token.to_string())
            }
            _ => panic!("JOB.PULL: unexpected reply {a:?}"),
        },
        other => panic!("JOB.PULL: unexpected reply {other:?}"),
    }
}

/// One measured run of `iters` PULL + FULFILL iterations on `key`, [`DEPTH`] per
/// pipeline, after a `CONFIG RESETSTAT`: what `INFO commandstats` says `job.pull` and
/// `job.fulfill` cost (per iteration, and per call of each).
///
/// Each pipeline is `DEPTH` `JOB.PULL key w<k> …` (workers w0…w99: each gets the oldest
/// job nobody works on); once their replies are in, one pipeline fulfils every pulled job
/// with `JOB.FULFILL key id value TOKEN token`, then deletes it (`JOB.DELETE`) and creates
/// a replacement (`JOB.CREATE`), so the key keeps exactly its number of pending jobs and
/// never accumulates fulfilled ones. CREATE and DELETE are counted under their own
/// commandstats entries, which are left out.
fn pull_fulfill(
    conn: &mut resp::Conn,
    admin: &mut redis::Connection,
    key: &str,
    iters: usize,
) -> ServerTime {
    let mut pulls = Vec::new();
    for k in 0..DEPTH {
        resp::encode(
            &mut pulls,
            &refs(&args(&["JOB.PULL", key, &worker(k), LEASE_MS])),
        );
    }
    let mut buf = Vec::new();
    reset_stats(admin);
    for b in 0..iters / DEPTH {
        conn.send_raw(&pulls).expect("send");
        let jobs: Vec<(String, String)> = (0..DEPTH)
            .map(|_| pulled(conn.read().expect("read")))
            .collect();
        buf.clear();
        for (id, token) in &jobs {
            let cmd = args(&["JOB.FULFILL", key, id, VALUE, "TOKEN", token]);
            resp::encode(&mut buf, &refs(&cmd));
        }
        for (id, _) in &jobs {
            resp::encode(&mut buf, &refs(&args(&["JOB.DELETE", key, id])));
        }
        for i in 0..DEPTH {
            let cmd = args(&["JOB.CREATE", key, &request(b * DEPTH + i)]);
            resp::encode(&mut buf, &refs(&cmd));
        }
        conn.send_raw(&buf).expect("send");
        for (what, ok) in [
            ("JOB.FULFILL", is_one as util::Check),
            ("JOB.DELETE", is_one),
            ("JOB.CREATE", is_int),
        ] {
            for _ in 0..DEPTH {
                let r = conn.read().expect("read");
                assert!(ok(&r), "{what} {key}: unexpected reply {r:?}");
            }
        }
    }
    let stats = ["job.pull", "job.fulfill"];
    ServerTime::read(admin, key, &stats, iters / DEPTH * DEPTH)
}

/// (a) PULL + FULFILL at 1,000,000 pending jobs against 1,000 (at most 1.5x: no scans).
///
/// Two keys on one server, `jobs:1k` with 1,000 pending jobs and `jobs:1m` with
/// 1,000,000 (pipelined `JOB.CREATE`s, 10-byte requests). Each iteration pulls the
/// oldest pending job (a new work lease, then the reply with its request) and fulfils it
/// with its fencing token (the lease ends, the job moves to the fulfilled jobs); see
/// [`pull_fulfill`] for how each key keeps its size. Replacement jobs are created after
/// every pipeline rather than between rounds: at 1,000 pending, a round of 50,000 pulls
/// would otherwise empty the key. At 1,000,000 the pulls never get past the jobs of the
/// initial fill (about 255,000 are pulled in all), oldest first, as in a queue with a
/// backlog; at 1,000 they cycle through the replacements. Server time from `INFO commandstats`
/// (`cmdstat_job.pull` + `cmdstat_job.fulfill`); the two sizes run interleaved, 5 rounds
/// after a warm-up, best round each.
pub fn server_time(report: &mut Report) {
    const SIZES: [(&str, usize); 2] = [("jobs:1k", 1_000), ("jobs:1m", 1_000_000)];
    const ITERS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    for (key, n) in SIZES {
        fill(&mut conn, key, n);
    }
    let work = SIZES.map(|(key, _)| (key, ITERS));
    let best = util::best_rounds(&work, ROUNDS, |i, iters| {
        pull_fulfill(&mut conn, &mut admin, SIZES[i].0, iters)
    });
    // The pending jobs are still there, as many as before.
    for (key, n) in SIZES {
        let pending = info_field(&mut admin, key, "pending");
        assert_eq!(pending, n as i64, "JOB.INFO {key} pending");
    }

    let at = |i: usize| format!("{} pending jobs", num(SIZES[i].1 as f64));
    // For the chart: size i as (label, pending jobs).
    let labels = [at(0), at(1)];
    let scale = |i: usize| (labels[i].as_str(), SIZES[i].1 as f64);
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, JOB.PULL + JOB.FULFILL TOKEN of the oldest job, {} (per pair)",
                at(1)
            ),
            best.iter(1),
            "us",
        )
        .vs(&at(0), best.iter(0))
        .target(Target::RatioAtMost(1.5))
        .scale(
            "JOB.PULL + JOB.FULFILL TOKEN of the oldest job (per pair)",
            scale(1),
            scale(0),
        ),
    );
    for (j, what) in ["JOB.PULL", "JOB.FULFILL TOKEN"].iter().enumerate() {
        report.add(
            Row::new(
                FAMILY,
                &format!("server time, {what} alone, {}", at(1)),
                best.call(1, j),
                "us",
            )
            .vs(&at(0), best.call(0, j))
            .scale(&format!("{what} alone"), scale(1), scale(0)),
        );
    }
}

/// An integer field of `JOB.INFO key`.
fn info_field(conn: &mut redis::Connection, key: &str, field: &str) -> i64 {
    let fields = client::int_fields(client::value(conn, &["JOB.INFO", key]));
    *fields
        .as_ref()
        .and_then(|f| f.get(field))
        .unwrap_or_else(|| panic!("JOB.INFO {key} has no {field}"))
}

/// (b) Memory per pending job, beyond its request bytes: at most 200 bytes.
///
/// One key with 1,000,000 pending jobs of 10-byte requests (pipelined `JOB.CREATE`s):
/// `MEMORY USAGE` of the key minus 1,000,000 × 10 bytes, divided by 1,000,000, is the
/// target row (corral's figure comes from its own `mem_usage` callback, an estimate). An
/// informational row gives the growth of `used_memory` per job while the key was built
/// (request included: what the allocator really handed out), against the same jobs kept
/// the way a BullMQ-style Lua queue keeps them (a hash `job:<id>` with the request as
/// its `data` field and the id on a wait list; written with plain `HSET` + `LPUSH`, the
/// very writes its create script makes).
pub fn memory(report: &mut Report) {
    const JOBS: usize = 1_000_000;
    const REQUEST_LEN: usize = 10;
    let (_srv, mut admin, mut conn) = util::start();
    assert_eq!(request(0).len(), REQUEST_LEN);
    let (jobs, ()) = util::footprint(&mut admin, Some("jobs"), || fill(&mut conn, "jobs", JOBS));
    let (lua, ()) = util::footprint(&mut admin, None, || {
        // Job i: its hash, then its id on the wait list.
        let write = |c: usize| {
            let (i, id) = (c / 2, (c / 2 + 1).to_string());
            if c.is_multiple_of(2) {
                args(&["HSET", &format!("job:{id}"), "data", &request(i)])
            } else {
                args(&["LPUSH", "wait", &id])
            }
        };
        util::load(&mut conn, 2 * JOBS, write, is_int)
    });
    let n = JOBS as f64;
    let beyond_requests = Footprint {
        usage: jobs.usage.map(|u| u - n * REQUEST_LEN as f64),
        ..jobs
    };
    Memory {
        family: FAMILY,
        usage: &format!(
            "MEMORY USAGE per pending job beyond its request ({} jobs, 10-byte requests)",
            num(n)
        ),
        target: Target::AtMost(200.0),
        growth: "used_memory growth per pending job, request included",
        baseline: "BullMQ-style job hash + wait-list entry, same requests",
        unit: "bytes",
    }
    .report(report, beyond_requests.per(n), lua.per(n));
}

/// The BullMQ-style queue's scripts, modelled on what BullMQ and bee-queue send (their
/// event streams, metrics, priorities and delays left out, which only makes the
/// baseline cheaper). Job ids come from a counter; a job is a hash `<prefix>job:<id>`;
/// the ids wait on a list, move to an active list when pulled, and a lock key
/// `<prefix>lock:<id>` holds the worker's name for the lease.
///
/// create — `KEYS = id counter, wait list; ARGV = prefix, data`: the new id.
const LUA_CREATE: &str = "local id = redis.call('INCR', KEYS[1]) \
     redis.call('HSET', ARGV[1] .. 'job:' .. id, 'data', ARGV[2]) \
     redis.call('LPUSH', KEYS[2], id) \
     return id";
/// pull — `KEYS = wait list, active list; ARGV = prefix, worker, lease ms`: the oldest
/// waiting job moves to the active list under the worker's lock; `[id, data]`, or nil.
const LUA_PULL: &str = "local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') \
     if not id then return false end \
     redis.call('SET', ARGV[1] .. 'lock:' .. id, ARGV[2], 'PX', ARGV[3]) \
     return {id, redis.call('HGET', ARGV[1] .. 'job:' .. id, 'data')}";
/// fulfil — `KEYS = active list; ARGV = prefix, id, worker, value`: only the lock's
/// holder may; stores the value, leaves the active list, drops the lock. 1, or an error.
const LUA_FULFIL: &str = "local lock = ARGV[1] .. 'lock:' .. ARGV[2] \
     if redis.call('GET', lock) ~= ARGV[3] then \
     return redis.error_reply('NOTHELD lock of job ' .. ARGV[2] .. ' is not held') end \
     redis.call('HSET', ARGV[1] .. 'job:' .. ARGV[2], 'returnvalue', ARGV[4]) \
     redis.call('LREM', KEYS[1], -1, ARGV[2]) \
     redis.call('DEL', lock) \
     return 1";

/// The two job queues the end-to-end run drives the same way.
enum Queue {
    Corral,
    Lua {
        create: String,
        pull: String,
        fulfil: String,
    },
}

impl Queue {
    fn encode_create(&self, buf: &mut Vec<u8>, i: usize) {
        let req = request(i);
        let cmd = match self {
            Queue::Corral => args(&["JOB.CREATE", "jobs", &req]),
            Queue::Lua { create, .. } => {
                args(&["EVALSHA", create, "2", "q:id", "q:wait", "q:", &req])
            }
        };
        resp::encode(buf, &refs(&cmd));
    }

    fn encode_pull(&self, buf: &mut Vec<u8>, worker: &str) {
        let cmd = match self {
            Queue::Corral => args(&["JOB.PULL", "jobs", worker, LEASE_MS]),
            Queue::Lua { pull, .. } => args(&[
                "EVALSHA", pull, "2", "q:wait", "q:active", "q:", worker, LEASE_MS,
            ]),
        };
        resp::encode(buf, &refs(&cmd));
    }

    /// What the fulfil needs from a pull's reply: the id, and the proof of the lease
    /// (corral: the fencing token; Lua: the worker name the lock holds).
    fn pulled(&self, r: Reply, worker: &str) -> (String, String) {
        match self {
            Queue::Corral => pulled(r),
            Queue::Lua { .. } => match r {
                Reply::Array(Some(a)) => match &a[..] {
                    [Reply::Bulk(Some(id)), Reply::Bulk(Some(_))] => (
                        String::from_utf8(id.clone()).expect("job id"),
                        worker.to_string(),
                    ),
                    _ => panic!("Lua pull: unexpected reply {a:?}"),
                },
                other => panic!("Lua pull: unexpected reply {other:?}"),
            },
        }
    }

    fn encode_fulfil(&self, buf: &mut Vec<u8>, id: &str, proof: &str) {
        let cmd = match self {
            Queue::Corral => args(&["JOB.FULFILL", "jobs", id, VALUE, "TOKEN", proof]),
            Queue::Lua { fulfil, .. } => {
                args(&["EVALSHA", fulfil, "1", "q:active", "q:", id, proof, VALUE])
            }
        };
        resp::encode(buf, &refs(&cmd));
    }
}

/// What a pipeline in flight holds: `fulfils` fulfilments, then (for batch `Some(k)`)
/// [`DEPTH`] creates and the [`DEPTH`] pulls of batch k.
struct InFlight {
    fulfils: usize,
    batch: Option<usize>,
}

/// Runs `n` jobs through `q` end to end — create, pull, fulfil — on one connection, and
/// returns the seconds it took, as a client sees them.
///
/// Batch k is [`DEPTH`] jobs: one pipeline creates them and pulls them (workers of set
/// k mod 2: 200 worker ids in all, one job each at a time), and the pipeline after next
/// fulfils them with what the pulls returned. Each pipeline is sent before the replies
/// of the one before are read, so one is always in flight while the client parses
/// replies and encodes the next (client and server work at once, as in
/// [`util::pipeline`]): pipeline k holds the fulfilments of batch k−2, then the
/// creates and pulls of batch k.
fn end_to_end(conn: &mut resp::Conn, q: &Queue, n: usize) -> f64 {
    let batches = n / DEPTH;
    let workers: Vec<String> = (0..2 * DEPTH).map(worker).collect();
    let mut buf = Vec::new();
    let mut to_fulfil: Option<Vec<(String, String)>> = None;
    let mut in_flight: Option<InFlight> = None;
    let mut fulfilled = 0;
    let t = Instant::now();
    for k in 0.. {
        let fulfils = to_fulfil.take();
        let batch = (k < batches).then_some(k);
        let prev = if fulfils.is_some() || batch.is_some() {
            buf.clear();
            let count = fulfils.as_ref().map_or(0, |f| f.len());
            for (id, proof) in fulfils.iter().flatten() {
                q.encode_fulfil(&mut buf, id, proof);
            }
            if let Some(k) = batch {
                for i in 0..DEPTH {
                    q.encode_create(&mut buf, k * DEPTH + i);
                }
                for w in &workers[k % 2 * DEPTH..][..DEPTH] {
                    q.encode_pull(&mut buf, w);
                }
            }
            conn.send_raw(&buf).expect("send");
            in_flight.replace(InFlight {
                fulfils: count,
                batch,
            })
        } else {
            in_flight.take()
        };
        let Some(prev) = prev else {
            if in_flight.is_none() {
                break;
            }
            continue;
        };
        for _ in 0..prev.fulfils {
            let r = conn.read().expect("read");
            assert!(is_one(&r), "fulfil: unexpected reply {r:?}");
            fulfilled += 1;
        }
        if let Some(k) = prev.batch {
            for _ in 0..DEPTH {
                let r = conn.read().expect("read");
                assert!(is_int(&r), "create: unexpected reply {r:?}");
            }
            let jobs = workers[k % 2 * DEPTH..][..DEPTH]
                .iter()
                .map(|w| q.pulled(conn.read().expect("read"), w))
                .collect();
            to_fulfil = Some(jobs);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(fulfilled, batches * DEPTH, "jobs fulfilled");
    secs
}

/// (c) End-to-end job throughput — create, pull, fulfil — against a BullMQ-style Lua
/// queue ([`LUA_CREATE`], [`LUA_PULL`], [`LUA_FULFIL`]): at least 2x.
///
/// Both run `JOBS` jobs through [`end_to_end`] on one server: the same client loop,
/// the same pipeline depth (100 jobs per pipeline: 100 fulfilments, 100 creates, 100
/// pulls), one connection, jobs/s as the client sees them. corral: `JOB.CREATE`,
/// `JOB.PULL`, `JOB.FULFILL … TOKEN` on one key; Lua: `EVALSHA` of the three scripts.
/// Each side starts from an empty keyspace (FLUSHALL; scripts stay loaded) and leaves
/// its fulfilled jobs in place, as both stores do. The sides alternate, 5 rounds after a
/// warm-up of each; each side's best round (noise only ever slows a round down). An
/// informational row gives the server time per job in those runs (`INFO commandstats`:
/// the three JOB commands against `cmdstat_evalsha`, which covers the scripts' inner
/// calls).
pub fn vs_lua(report: &mut Report) {
    const JOBS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    let queues = [
        Queue::Corral,
        Queue::Lua {
            create: util::load_script(&mut admin, LUA_CREATE),
            pull: util::load_script(&mut admin, LUA_PULL),
            fulfil: util::load_script(&mut admin, LUA_FULFIL),
        },
    ];
    const STATS: [&[&str]; 2] = [&["job.create", "job.pull", "job.fulfill"], &["evalsha"]];
    const LABELS: [&str; 2] = ["corral", "BullMQ-style Lua queue"];

    // One round of one side: (jobs/s, server usec per job).
    let mut run = |admin: &mut redis::Connection, i: usize, n: usize| -> (f64, f64) {
        let _: () = redis::cmd("FLUSHALL").query(admin).expect("FLUSHALL");
        reset_stats(admin);
        let secs = end_to_end(&mut conn, &queues[i], n);
        let stats = cmdstats(admin);
        let usec: u64 = STATS[i]
            .iter()
            .map(|name| stats.get(*name).map_or(0, |s| s.1))
            .sum();
        (n as f64 / secs, usec as f64 / n as f64)
    };
    for i in 0..queues.len() {
        run(&mut admin, i, JOBS / 10);
    }
    let mut rounds: Vec<Vec<(f64, f64)>> = queues.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for i in 0..queues.len() {
            let (rate, usec) = run(&mut admin, i, JOBS);
            eprintln!(
                "bench:    round {round}: {}: {rate:.0} jobs/s ({usec:.2} usec of server time per job)",
                LABELS[i]
            );
            rounds[i].push((rate, usec));
        }
    }
    let best = |i: usize| rounds[i].iter().map(|r| r.0).fold(f64::NAN, f64::max);
    let usec = |i: usize| min(&rounds[i].iter().map(|r| r.1).collect::<Vec<_>>());

    let jobs = num(JOBS as f64);
    report.add(Row::new(
        FAMILY,
        &format!(
            "end-to-end throughput, corral: JOB.CREATE → JOB.PULL → JOB.FULFILL TOKEN \
             ({jobs} jobs, 100 per pipeline)"
        ),
        best(0),
        "jobs/s",
    ));
    report.add(Row::new(
        FAMILY,
        &format!(
            "end-to-end throughput, BullMQ-style Lua queue: EVALSHA create → pull → \
             fulfil ({jobs} jobs, 100 per pipeline)"
        ),
        best(1),
        "jobs/s",
    ));
    report.add(
        Row::new(FAMILY, "end-to-end throughput, corral", best(0), "jobs/s")
            .vs(LABELS[1], best(1))
            .target(Target::RatioAtLeast(2.0)),
    );
    report.add(
        Row::new(
            FAMILY,
            "server time per job in those runs (create + pull + fulfil)",
            usec(0),
            "us",
        )
        .vs(LABELS[1], usec(1))
        .versus(
            "JOB.CREATE + JOB.PULL + JOB.FULFILL, end to end (per job)",
            Kind::Lua,
            "BullMQ-style Lua queue",
        ),
    );
}

// ---- the second edition: priorities, delays, FULFILL … NEXT ----------------------------

/// The priority of job i when jobs are spread over 1,000 priorities (a permutation, so
/// neighbours differ).
fn priority(i: usize) -> usize {
    i * 7919 % 1000
}

/// (d) PULL + FULFILL at 1,000,000 pending jobs spread over 1,000 priorities, against the
/// same at 1,000 jobs (one per priority): at most 1.5x (pull order stays O(log n)).
///
/// As [`server_time`], with every job (fill and replacements) created `PRIORITY p` over
/// 1,000 priorities: each PULL takes the highest priority's oldest job.
pub fn priorities(report: &mut Report) {
    const SIZES: [(&str, usize); 2] = [("prio:1k", 1_000), ("prio:1m", 1_000_000)];
    const ITERS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    for (key, n) in SIZES {
        let t = Instant::now();
        util::load(
            &mut conn,
            n,
            |i| {
                let p = priority(i).to_string();
                args(&["JOB.CREATE", key, &request(i), "PRIORITY", &p])
            },
            is_int,
        );
        eprintln!(
            "bench:    {key}: {n} jobs over 1,000 priorities in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let work = SIZES.map(|(key, _)| (key, ITERS));
    let best = util::best_rounds(&work, ROUNDS, |i, iters| {
        pull_fulfill_with(&mut conn, &mut admin, SIZES[i].0, iters, true)
    });
    for (key, n) in SIZES {
        assert_eq!(info_field(&mut admin, key, "pending"), n as i64);
    }
    let at = |i: usize| {
        format!(
            "{} pending jobs over 1,000 priorities",
            num(SIZES[i].1 as f64)
        )
    };
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, JOB.PULL + JOB.FULFILL TOKEN of the most urgent job, {} (per pair)",
                at(1)
            ),
            best.iter(1),
            "us",
        )
        .vs(&at(0), best.iter(0))
        .target(Target::RatioAtMost(1.5))
        .scale(
            "JOB.PULL + JOB.FULFILL TOKEN, 1,000 priorities (per pair)",
            (&at(1), SIZES[1].1 as f64),
            (&at(0), SIZES[0].1 as f64),
        ),
    );
}

/// [`pull_fulfill`], with replacement jobs created at a priority when `prioritized`.
fn pull_fulfill_with(
    conn: &mut resp::Conn,
    admin: &mut redis::Connection,
    key: &str,
    iters: usize,
    prioritized: bool,
) -> ServerTime {
    if !prioritized {
        return pull_fulfill(conn, admin, key, iters);
    }
    let mut pulls = Vec::new();
    for k in 0..DEPTH {
        resp::encode(
            &mut pulls,
            &refs(&args(&["JOB.PULL", key, &worker(k), LEASE_MS])),
        );
    }
    let mut buf = Vec::new();
    reset_stats(admin);
    for b in 0..iters / DEPTH {
        conn.send_raw(&pulls).expect("send");
        let jobs: Vec<(String, String)> = (0..DEPTH)
            .map(|_| pulled(conn.read().expect("read")))
            .collect();
        buf.clear();
        for (id, token) in &jobs {
            resp::encode(
                &mut buf,
                &refs(&args(&["JOB.FULFILL", key, id, VALUE, "TOKEN", token])),
            );
        }
        for (id, _) in &jobs {
            resp::encode(&mut buf, &refs(&args(&["JOB.DELETE", key, id])));
        }
        for i in 0..DEPTH {
            let n = b * DEPTH + i;
            let p = priority(n + 17).to_string();
            resp::encode(
                &mut buf,
                &refs(&args(&["JOB.CREATE", key, &request(n), "PRIORITY", &p])),
            );
        }
        conn.send_raw(&buf).expect("send");
        for ok in [is_one as util::Check, is_one, is_int] {
            for _ in 0..DEPTH {
                let r = conn.read().expect("read");
                assert!(ok(&r), "{key}: unexpected reply {r:?}");
            }
        }
    }
    ServerTime::read(
        admin,
        key,
        &["job.pull", "job.fulfill"],
        iters / DEPTH * DEPTH,
    )
}

/// `LATENCY LATEST`'s worst `corral-timer` tick, in ms (0 when none was over the threshold).
fn worst_timer_tick(admin: &mut redis::Connection) -> f64 {
    let rows: Vec<Vec<redis::Value>> = redis::cmd("LATENCY")
        .arg("LATEST")
        .query(admin)
        .expect("LATENCY LATEST");
    rows.iter()
        .find(|r| r.first() == Some(&redis::Value::BulkString(b"corral-timer".to_vec())))
        .map_or(0.0, |r| {
            redis::from_redis_value::<i64>(&r[3]).expect("worst ms") as f64
        })
}

/// (e) 1,000,000 delayed jobs falling due in the same second: the longest `corral-timer`
/// tick while they are promoted (the latency monitor at 1 ms; a tick works 2 ms, then lets
/// Redis serve clients), how long the promotion takes, and whether they are then handed out
/// in priority order (the first 20,000 pulled). Then the lateness of a PULL blocked on a
/// store with nothing pending, served when a delayed job falls due: 300 jobs created with
/// DELAY 20 while a client waits in `JOB.PULL … BLOCK`; lateness = when the reply arrives
/// − (when the CREATE was sent + 20 ms), as a client measures it: p99 at most 5 ms.
pub fn due(report: &mut Report) {
    const JOBS: usize = 1_000_000;
    const WINDOW_MS: u64 = 25_000;
    let srv = crate::common::Server::start_with(
        crate::common::ServerOptions::new().config("latency-monitor-threshold", "1"),
    );
    let mut admin = srv.conn();
    let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
    // Every job due at the same moment `WINDOW_MS` after the start: each CREATE's DELAY is
    // what remains of the window when it is encoded (the client's clock; the server's
    // receipt follows by the pipeline's latency: all due within a few ms of each other).
    let start = Instant::now();
    util::load(
        &mut conn,
        JOBS,
        |i| {
            let left = WINDOW_MS
                .saturating_sub(start.elapsed().as_millis() as u64)
                .max(1);
            let p = priority(i);
            // The request carries the priority, to check the pull order.
            let req = format!("{p:03}{:07}", i % 10_000_000);
            args(&[
                "JOB.CREATE",
                "due",
                &req,
                "DELAY",
                &left.to_string(),
                "PRIORITY",
                &p.to_string(),
            ])
        },
        is_int,
    );
    let created = start.elapsed();
    eprintln!(
        "bench:    due: {JOBS} delayed jobs created in {:.1} s",
        created.as_secs_f64()
    );
    assert!(
        created < std::time::Duration::from_millis(WINDOW_MS - 2_000),
        "creation too slow"
    );
    let _: i64 = redis::cmd("LATENCY")
        .arg("RESET")
        .query(&mut admin)
        .expect("LATENCY RESET");
    assert_eq!(info_field(&mut admin, "due", "delayed"), JOBS as i64);
    let due_at = start + std::time::Duration::from_millis(WINDOW_MS);
    std::thread::sleep(due_at.saturating_duration_since(Instant::now()));
    let promoted = loop {
        if info_field(&mut admin, "due", "pending") == JOBS as i64 {
            break due_at.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let worst = worst_timer_tick(&mut admin);
    eprintln!(
        "bench:    due: promoted {:.0} ms after the due time; worst corral-timer tick {worst} ms",
        promoted.as_secs_f64() * 1e3
    );
    // Pull order: the first 20,000 pulled, by 100 workers at a time, in priority order.
    let mut last = 999usize;
    let mut ordered = true;
    for b in 0..200 {
        let mut buf = Vec::new();
        for k in 0..DEPTH {
            resp::encode(
                &mut buf,
                &refs(&args(&[
                    "JOB.PULL",
                    "due",
                    &worker(b % 2 * DEPTH + k),
                    LEASE_MS,
                ])),
            );
        }
        conn.send_raw(&buf).expect("send");
        let mut fulfil = Vec::new();
        for _ in 0..DEPTH {
            let Reply::Array(Some(a)) = conn.read().expect("read") else {
                panic!("no job")
            };
            let (Reply::Int(id), Reply::Bulk(Some(req))) = (&a[0], &a[1]) else {
                panic!("{a:?}")
            };
            let p: usize = std::str::from_utf8(&req[..3]).unwrap().parse().unwrap();
            ordered &= p <= last;
            last = p;
            resp::encode(
                &mut fulfil,
                &refs(&args(&["JOB.FULFILL", "due", &id.to_string(), VALUE])),
            );
        }
        conn.send_raw(&fulfil).expect("send");
        for _ in 0..DEPTH {
            assert!(is_one(&conn.read().expect("read")));
        }
    }
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "longest corral-timer tick while {} delayed jobs fall due at once",
                num(JOBS as f64)
            ),
            worst,
            "ms",
        )
        .target(Target::AtMost(5.0)),
    );
    report.add(Row::new(
        FAMILY,
        &format!(
            "time to promote {} jobs falling due at once (sliced, clients served between)",
            num(JOBS as f64)
        ),
        promoted.as_secs_f64() * 1e3,
        "ms",
    ));
    report.add(
        Row::flag(
            FAMILY,
            "jobs falling due at once are handed out in priority order",
            ordered,
        )
        .target(Target::Yes),
    );

    // Lateness of a blocked PULL served when a delayed job falls due.
    let _: () = redis::cmd("DEL").arg("due").query(&mut admin).expect("DEL");
    let lateness = blocked_pull_lateness(&srv, 300);
    report.add(
        Row::new(
            FAMILY,
            "p99 lateness of a blocked JOB.PULL served when a DELAY 20 job falls due",
            lateness,
            "ms",
        )
        .target(Target::AtMost(5.0)),
    );
}

/// Lateness (ms, p99) of a `JOB.PULL … BLOCK` on a store with nothing pending, served when a
/// job created with `DELAY 20` falls due: `n` times, one waiter at a time.
fn blocked_pull_lateness(srv: &crate::common::Server, n: usize) -> f64 {
    let mut creator = srv.conn();
    let mut late = Vec::with_capacity(n);
    for i in 0..n {
        let mut waiter = resp::Conn::connect(srv.port(), 4096).expect("connect");
        let worker = format!("w{i}");
        waiter
            .send(&refs(&args(&[
                "JOB.PULL", "one", &worker, LEASE_MS, "BLOCK", "10000",
            ])))
            .expect("send");
        // Until it waits.
        while info_field(&mut creator, "one", "waiters") == 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let sent = Instant::now();
        let id: i64 = redis::cmd("JOB.CREATE")
            .arg("one")
            .arg("r")
            .arg("DELAY")
            .arg(20)
            .query(&mut creator)
            .expect("CREATE");
        let r = waiter.read().expect("read");
        let got = sent.elapsed();
        match r {
            Reply::Array(Some(a)) => assert_eq!(a[0], Reply::Int(id)),
            other => panic!("{other:?}"),
        }
        late.push((got.as_secs_f64() * 1e3 - 20.0).max(0.0));
        let _: i64 = redis::cmd("JOB.DELETE")
            .arg("one")
            .arg(id)
            .query(&mut creator)
            .expect("DELETE");
    }
    late.sort_by(f64::total_cmp);
    eprintln!(
        "bench:    blocked PULL lateness: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        util::percentile(&late, 0.5),
        util::percentile(&late, 0.99),
        late[late.len() - 1]
    );
    util::percentile(&late, 0.99)
}

/// A BullMQ-style queue with priorities and delays, modelled on BullMQ's `addPrioritizedJob`,
/// `addDelayedJob`, `moveToActive` (with its `promoteDelayedJobs`) and `moveToFinished`
/// scripts: a job is a hash; pending jobs wait in a sorted set `prioritized` scored
/// `(MAX − priority) × 2^32 + a counter` (BullMQ: `priority × 2^32 + counter`, lower first),
/// delayed jobs in a sorted set `delayed` scored `due × 4096 + id mod 4096` (BullMQ's
/// `timestamp × 0x1000 + counter`); pulling first promotes up to 1,000 due delayed jobs
/// into `prioritized`, then pops the best, moves it to the active list under a lock key.
/// Times come from the server's `TIME` (BullMQ sends the client's clock). Its events,
/// metrics, rate limits, parents and the completed set are left out, which only makes the
/// baseline cheaper.
///
/// create — `KEYS = id counter, priority counter, prioritized, delayed; ARGV = prefix,
/// data, priority, delay ms`: the new id.
const LUA_CREATE_PD: &str = "local id = redis.call('INCR', KEYS[1]) \
     local key = ARGV[1] .. 'job:' .. id \
     redis.call('HSET', key, 'data', ARGV[2], 'priority', ARGV[3]) \
     local delay = tonumber(ARGV[4]) \
     if delay > 0 then \
       local t = redis.call('TIME') \
       local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
       redis.call('ZADD', KEYS[4], (now + delay) * 4096 + id % 4096, id) \
     else \
       local pc = redis.call('INCR', KEYS[2]) \
       redis.call('ZADD', KEYS[3], (4294967295 - tonumber(ARGV[3])) * 4294967296 + pc, id) \
     end \
     return id";
/// pull — `KEYS = delayed, prioritized, active list, priority counter; ARGV = prefix,
/// worker, lease ms`: `[id, data]`, or nil.
const LUA_PULL_PD: &str = "local t = redis.call('TIME') \
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
     local due = redis.call('ZRANGEBYSCORE', KEYS[1], 0, (now + 1) * 4096 - 1, 'LIMIT', 0, 1000) \
     for _, id in ipairs(due) do \
       local p = tonumber(redis.call('HGET', ARGV[1] .. 'job:' .. id, 'priority')) \
       local pc = redis.call('INCR', KEYS[4]) \
       redis.call('ZADD', KEYS[2], (4294967295 - p) * 4294967296 + pc, id) \
       redis.call('ZREM', KEYS[1], id) \
     end \
     local popped = redis.call('ZPOPMIN', KEYS[2]) \
     if #popped == 0 then return false end \
     local id = popped[1] \
     redis.call('LPUSH', KEYS[3], id) \
     redis.call('SET', ARGV[1] .. 'lock:' .. id, ARGV[2], 'PX', ARGV[3]) \
     return {id, redis.call('HGET', ARGV[1] .. 'job:' .. id, 'data')}";

/// How the mixed run drives a queue.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mixed<'a> {
    /// JOB.CREATE, JOB.PULL, JOB.FULFILL … TOKEN.
    Corral,
    /// JOB.CREATE, then JOB.FULFILL … TOKEN … NEXT (a PULL only for a worker with no job).
    CorralNext,
    Lua {
        create: &'a str,
        pull: &'a str,
        fulfil: &'a str,
    },
}

/// Job i of the mixed run: its priority (1,000 of them) and delay (one job in four
/// `DELAY 5`).
fn mixed_job(i: usize) -> (String, &'static str) {
    (
        priority(i).to_string(),
        if i.is_multiple_of(4) { "5" } else { "0" },
    )
}

/// Runs `n` jobs with priorities and delays through `q` — create, pull, fulfil — with
/// [`DEPTH`] workers on one connection; returns (seconds, commands sent per job).
///
/// Each pipeline creates [`DEPTH`] jobs (until `n` are created) and, for each worker, fulfils
/// the job it holds and pulls its next one (`Mixed::CorralNext`: one `FULFILL … NEXT`); a
/// pull may find nothing (the jobs left are delayed): the worker pulls again in the next
/// pipeline. Ends when `n` jobs are fulfilled.
fn end_to_end_mixed(conn: &mut resp::Conn, q: Mixed, n: usize) -> (f64, f64) {
    let workers: Vec<String> = (0..DEPTH).map(|k| worker(1000 + k)).collect();
    let mut holding: Vec<Option<(String, String)>> = vec![None; DEPTH];
    let (mut created, mut fulfilled, mut sent) = (0usize, 0usize, 0usize);
    let mut buf = Vec::new();
    let t = Instant::now();
    while fulfilled < n {
        assert!(t.elapsed().as_secs() < 120, "the mixed run does not finish");
        buf.clear();
        let creates = DEPTH.min(n - created);
        for i in created..created + creates {
            let (p, delay) = mixed_job(i);
            let req = request(i);
            let cmd = match q {
                Mixed::Lua { create, .. } => args(&[
                    "EVALSHA",
                    create,
                    "4",
                    "p:id",
                    "p:pc",
                    "p:prioritized",
                    "p:delayed",
                    "p:",
                    &req,
                    &p,
                    delay,
                ]),
                _ if delay != "0" => {
                    args(&["JOB.CREATE", "mixed", &req, "PRIORITY", &p, "DELAY", delay])
                }
                _ => args(&["JOB.CREATE", "mixed", &req, "PRIORITY", &p]),
            };
            resp::encode(&mut buf, &refs(&cmd));
        }
        created += creates;
        let mut expect = Vec::with_capacity(DEPTH);
        for (w, held) in workers.iter().zip(&holding) {
            let pull = |buf: &mut Vec<u8>| {
                let cmd = match q {
                    Mixed::Lua { pull, .. } => args(&[
                        "EVALSHA",
                        pull,
                        "4",
                        "p:delayed",
                        "p:prioritized",
                        "p:active",
                        "p:pc",
                        "p:",
                        w,
                        LEASE_MS,
                    ]),
                    _ => args(&["JOB.PULL", "mixed", w, LEASE_MS]),
                };
                resp::encode(buf, &refs(&cmd));
            };
            match (held, q) {
                (None, _) => {
                    pull(&mut buf);
                    expect.push((false, true));
                }
                (Some((id, proof)), Mixed::CorralNext) => {
                    let cmd = args(&[
                        "JOB.FULFILL",
                        "mixed",
                        id,
                        VALUE,
                        "TOKEN",
                        proof,
                        "NEXT",
                        w,
                        LEASE_MS,
                    ]);
                    resp::encode(&mut buf, &refs(&cmd));
                    expect.push((true, false));
                }
                (Some((id, proof)), Mixed::Corral) => {
                    resp::encode(
                        &mut buf,
                        &refs(&args(&["JOB.FULFILL", "mixed", id, VALUE, "TOKEN", proof])),
                    );
                    pull(&mut buf);
                    expect.push((true, true));
                }
                (Some((id, proof)), Mixed::Lua { fulfil, .. }) => {
                    let cmd = args(&["EVALSHA", fulfil, "1", "p:active", "p:", id, proof, VALUE]);
                    resp::encode(&mut buf, &refs(&cmd));
                    pull(&mut buf);
                    expect.push((true, true));
                }
            }
        }
        conn.send_raw(&buf).expect("send");
        sent += creates
            + expect
                .iter()
                .map(|&(f, p)| usize::from(f) + usize::from(p))
                .sum::<usize>();
        for _ in 0..creates {
            let r = conn.read().expect("read");
            assert!(is_int(&r), "create: {r:?}");
        }
        for (k, &(fulfils, pulls)) in expect.iter().enumerate() {
            let next = if fulfils && !pulls {
                fulfilled += 1;
                conn.read().expect("read")
            } else {
                if fulfils {
                    let r = conn.read().expect("read");
                    assert!(is_one(&r), "fulfil: {r:?}");
                    fulfilled += 1;
                }
                conn.read().expect("read")
            };
            holding[k] = match next {
                r if is_nil(&r) => None,
                Reply::Array(Some(a)) => match (&a[0], q) {
                    (Reply::Int(id), _) => match &a[2] {
                        Reply::Int(token) => Some((id.to_string(), token.to_string())),
                        other => panic!("{other:?}"),
                    },
                    (Reply::Bulk(Some(id)), Mixed::Lua { .. }) => {
                        Some((String::from_utf8(id.clone()).unwrap(), workers[k].clone()))
                    }
                    other => panic!("pull: {other:?}"),
                },
                other => panic!("pull: {other:?}"),
            };
        }
    }
    (t.elapsed().as_secs_f64(), sent as f64 / n as f64)
}

/// (f) End-to-end throughput with priorities and delays — create (1,000 priorities, one
/// job in four `DELAY 5`), pull, fulfil — against the BullMQ-style Lua queue with sorted
/// sets ([`LUA_CREATE_PD`], [`LUA_PULL_PD`], the same fulfil): at least 3x. Also corral with
/// `FULFILL … NEXT` (two commands per job instead of three), and one worker without
/// pipelining — the round trips a real worker waits for: `PULL` then `FULFILL` (two per job)
/// against `FULFILL … NEXT` (one).
pub fn vs_lua_priorities(report: &mut Report) {
    const JOBS: usize = 50_000;
    const ROUNDS: usize = 5;
    let (srv, mut admin, mut conn) = util::start();
    let (create, pull, fulfil) = (
        util::load_script(&mut admin, LUA_CREATE_PD),
        util::load_script(&mut admin, LUA_PULL_PD),
        util::load_script(&mut admin, LUA_FULFIL),
    );
    let sides = [
        Mixed::Corral,
        Mixed::CorralNext,
        Mixed::Lua {
            create: &create,
            pull: &pull,
            fulfil: &fulfil,
        },
    ];
    const LABELS: [&str; 3] = [
        "corral",
        "corral, FULFILL … NEXT",
        "BullMQ-style Lua queue (sorted sets)",
    ];
    let mut run = |admin: &mut redis::Connection, i: usize, n: usize| {
        let _: () = redis::cmd("FLUSHALL").query(admin).expect("FLUSHALL");
        let (secs, per_job) = end_to_end_mixed(&mut conn, sides[i], n);
        (n as f64 / secs, per_job)
    };
    for i in 0..sides.len() {
        run(&mut admin, i, JOBS / 10);
    }
    let mut best = [0.0f64; 3];
    let mut cmds = [0.0f64; 3];
    for round in 0..ROUNDS {
        for i in 0..sides.len() {
            let (rate, per_job) = run(&mut admin, i, JOBS);
            eprintln!(
                "bench:    round {round}: {}: {rate:.0} jobs/s ({per_job:.2} commands per job)",
                LABELS[i]
            );
            best[i] = best[i].max(rate);
            cmds[i] = per_job;
        }
    }
    report.add(
        Row::new(
            FAMILY,
            "end-to-end throughput with priorities and delays, corral: JOB.CREATE PRIORITY [DELAY] → JOB.PULL → JOB.FULFILL TOKEN",
            best[0],
            "jobs/s",
        )
        .vs(LABELS[2], best[2])
        .target(Target::RatioAtLeast(3.0)),
    );
    report.add(
        Row::new(
            FAMILY,
            "end-to-end throughput with priorities and delays, corral with FULFILL … NEXT",
            best[1],
            "jobs/s",
        )
        .vs(LABELS[0], best[0]),
    );
    report.add(
        Row::new(
            FAMILY,
            "commands per job, FULFILL … NEXT (create + fulfil-and-pull)",
            cmds[1],
            "commands",
        )
        .vs("PULL + FULFILL", cmds[0]),
    );

    // One worker, no pipelining: round trips per job.
    const SOLO: usize = 20_000;
    let mut solo = |next: bool| -> f64 {
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).expect("FLUSHALL");
        util::load(
            &mut conn,
            SOLO,
            |i| args(&["JOB.CREATE", "solo", &request(i)]),
            is_int,
        );
        let mut w = srv.conn();
        let t = Instant::now();
        let mut job: Option<(i64, Vec<u8>, i64)> = redis::cmd("JOB.PULL")
            .arg("solo")
            .arg("w")
            .arg(LEASE_MS)
            .query(&mut w)
            .expect("PULL");
        let mut done = 0;
        while let Some((id, _, token)) = job {
            let mut f = redis::cmd("JOB.FULFILL");
            f.arg("solo").arg(id).arg(VALUE).arg("TOKEN").arg(token);
            if next {
                job = f
                    .arg("NEXT")
                    .arg("w")
                    .arg(LEASE_MS)
                    .query(&mut w)
                    .expect("FULFILL NEXT");
            } else {
                let one: i64 = f.query(&mut w).expect("FULFILL");
                assert_eq!(one, 1);
                job = redis::cmd("JOB.PULL")
                    .arg("solo")
                    .arg("w")
                    .arg(LEASE_MS)
                    .query(&mut w)
                    .expect("PULL");
            }
            done += 1;
        }
        assert_eq!(done, SOLO);
        SOLO as f64 / t.elapsed().as_secs_f64()
    };
    let (mut two, mut one) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        two = two.max(solo(false));
        one = one.max(solo(true));
    }
    report.add(
        Row::new(
            FAMILY,
            "one worker without pipelining: FULFILL … NEXT (1 round trip per job)",
            one,
            "jobs/s",
        )
        .vs("PULL + FULFILL (2 round trips per job)", two),
    );
}

/// (g) Memory per pending job with a priority (1,000 of them), beyond its request: at most
/// 150 bytes, measured with Redis's allocator (`used_memory` growth per job, less the
/// request's 10 bytes) at 1,000,000 jobs; `MEMORY USAGE` (corral's estimate) beside it.
pub fn memory_priorities(report: &mut Report) {
    const JOBS: usize = 1_000_000;
    let (_srv, mut admin, mut conn) = util::start();
    let (with, ()) = util::footprint(&mut admin, Some("jobs"), || {
        util::load(
            &mut conn,
            JOBS,
            |i| {
                args(&[
                    "JOB.CREATE",
                    "jobs",
                    &request(i),
                    "PRIORITY",
                    &priority(i).to_string(),
                ])
            },
            is_int,
        )
    });
    let (delayed, ()) = util::footprint(&mut admin, Some("jobs"), || {
        util::load(
            &mut conn,
            JOBS,
            |i| args(&["JOB.CREATE", "jobs", &request(i), "DELAY", "3600000"]),
            is_int,
        )
    });
    let n = JOBS as f64;
    let with = with.per(n);
    let delayed = delayed.per(n);
    report.add(
        Row::new(
            FAMILY,
            "used_memory growth per pending job with PRIORITY, beyond its 10-byte request (1,000,000 jobs, 1,000 priorities)",
            with.growth - 10.0,
            "bytes",
        )
        .target(Target::AtMost(150.0)),
    );
    report.add(Row::new(
        FAMILY,
        "MEMORY USAGE per pending job with PRIORITY, beyond its request",
        with.usage.unwrap_or(f64::NAN) - 10.0,
        "bytes",
    ));
    report.add(Row::new(
        FAMILY,
        "used_memory growth per delayed job, beyond its 10-byte request (1,000,000 jobs)",
        delayed.growth - 10.0,
        "bytes",
    ));
}
