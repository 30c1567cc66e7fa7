//! JOB: a job store with fenced pulls, at 1,000 against 1,000,000 pending jobs, and
//! end to end against a BullMQ-style Lua queue.

use std::time::Instant;

use crate::common::client;
use crate::report::{num, Kind, Report, Row, Target};
use crate::resp::{self, Reply};
use crate::util::{
    self, args, cmdstats, is_int, is_one, min, refs, reset_stats, Footprint, Memory, ServerTime,
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
