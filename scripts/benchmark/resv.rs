//! RESV: locks with fencing tokens and FIFO blocking waiters.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Barrier;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{client, Server, ServerOptions};
use crate::report::{Kind, Report, Row, Target};
use crate::resp::{self, Reply};
use crate::util::{
    self, args, cmdstats, is_int, is_nil, is_ok, is_one, percentile, refs, reset_stats, Args,
    Check, Footprint, Memory, Workload,
};

const FAMILY: &str = "RESV";

/// A script-based lock as lock libraries send it: `SET NX PX` inside a script…
const LUA_LOCK: &str = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])";
/// …and the compare-and-delete unlock (redis-semaphore's Mutex release, `delIfEqualLua`,
/// is this script).
const LUA_UNLOCK: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// (a) Server time per lock + release, from `INFO commandstats`, against `SET NX PX` +
/// `DEL` and against the Lua lock/unlock scripts, all on one server.
///
/// Each workload runs `ITERS` lock+unlock pairs on one key, pipelined 100 pairs at a
/// time (the client's speed does not matter: only the server's time per call counts).
/// It runs `ROUNDS` times, interleaved with the others, after a `CONFIG RESETSTAT`
/// each time; each workload's best (lowest) round is reported. Noise on this 2-core
/// machine (client and server share it) only ever adds time, so the minimum is the
/// steadiest estimate; rounds vary by ±20% from one another.
///
/// Lua accounting (checked on Redis 7.0.15): commands a script runs with `redis.call`
/// are also counted under their own entries (`cmdstat_set`, `cmdstat_get`,
/// `cmdstat_del`), and `cmdstat_evalsha`'s usec already covers the whole script run,
/// those inner calls included. So the Lua baseline is `cmdstat_evalsha` alone; adding
/// the inner entries would count them twice.
///
/// A fourth, informational workload shows the floor of any module command here:
/// `ALLOC.INSTANCE` on a missing key (parse, open an empty key, reply nil) against `GET` on a
/// missing key, so the gap above that floor is visibly corral's own work.
pub fn server_time(report: &mut Report) {
    const ITERS: usize = 50_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    let lock_sha = util::load_script(&mut admin, LUA_LOCK);
    let unlock_sha = util::load_script(&mut admin, LUA_UNLOCK);

    let workloads = [
        Workload::new(
            "corral",
            vec![
                (args(&["RESV.LOCK", "k", "holder", "10000"]), is_int),
                (args(&["RESV.RELEASE", "k", "holder"]), is_one),
            ],
            &["resv.lock", "resv.release"],
        ),
        Workload::new(
            "SET NX PX + DEL",
            vec![
                (args(&["SET", "k", "holder", "NX", "PX", "10000"]), is_ok),
                (args(&["DEL", "k"]), is_one),
            ],
            &["set", "del"],
        ),
        Workload::new(
            "Lua lock + unlock (EVALSHA)",
            vec![
                (
                    args(&["EVALSHA", &lock_sha, "1", "k", "holder", "10000"]),
                    is_ok,
                ),
                (args(&["EVALSHA", &unlock_sha, "1", "k", "holder"]), is_one),
            ],
            &["evalsha"],
        ),
        Workload::new(
            "floor",
            vec![
                (args(&["ALLOC.INSTANCE", "free", "job"]), is_nil),
                (args(&["GET", "free"]), is_nil),
            ],
            &["alloc.instance", "get"],
        ),
    ];

    let work: Vec<(&Workload, usize)> = workloads.iter().map(|w| (w, ITERS)).collect();
    let best = util::best_of(&mut conn, &mut admin, &work, ROUNDS);

    let pair_name = "server time, LOCK + RELEASE (per pair)";
    let pair_op = "RESV.LOCK + RESV.RELEASE (per pair)";
    report.add(
        Row::new(FAMILY, pair_name, best.iter(0), "us")
            .vs(workloads[1].label, best.iter(1))
            .target(Target::RatioAtMost(1.35))
            .versus(pair_op, Kind::Native, "SET NX PX + DEL"),
    );
    report.add(
        Row::new(FAMILY, pair_name, best.iter(0), "us")
            .vs(workloads[2].label, best.iter(2))
            .target(Target::RatioAtMost(0.5))
            .versus(pair_op, Kind::Lua, "Lua lock + unlock"),
    );
    for (j, cmd, native) in [(0, "RESV.LOCK", "SET NX PX"), (1, "RESV.RELEASE", "DEL")] {
        report.add(
            Row::new(
                FAMILY,
                &format!("server time, {cmd} alone"),
                best.call(0, j),
                "us",
            )
            .vs(native, best.call(1, j))
            .versus(&format!("{cmd} alone"), Kind::Native, native),
        );
    }
    report.add(
        Row::new(
            FAMILY,
            "server time, ALLOC.INSTANCE on a missing key (module command floor)",
            best.call(3, 0),
            "us",
        )
        .vs("GET on a missing key", best.call(3, 1)),
    );
}

/// (b) Client-side throughput of pipelined `RESV.LOCK` on distinct keys against
/// `SET NX PX`: 200,000 commands each, in pipelines of 100, keys `k0`…`k199999`.
///
/// The two run side by side on one server, interleaved pipeline by pipeline: corral's
/// on a connection in db 0, SET's on one in db 1 (FLUSHALL before each round, so both
/// start from an empty keyspace and grow alike). Each pipeline is timed on its own and
/// the times are summed per side, so a noisy moment on this shared 2-core machine hits
/// both sides alike (sequential runs gave ratios from 0.53 to 0.84 from one run to the
/// next). Commands are encoded before the clock starts. Of `ROUNDS` rounds, the one
/// with the median ratio is reported.
///
/// An informational row gives the server time per call in that round (commandstats),
/// to tell the server's share of a gap from the rest (parsing, replies, syscalls).
pub fn pipelined_throughput(report: &mut Report) {
    const OPS: usize = 200_000;
    const BATCH: usize = 100;
    const ROUNDS: usize = 5;

    let srv = Server::start();
    let mut admin = srv.conn();
    let mut corral_conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
    let mut set_conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
    let selected = set_conn.call(&[b"SELECT", b"1"]).expect("SELECT 1");
    assert!(is_ok(&selected), "SELECT 1: {selected:?}");

    // Pre-encoded pipelines, one Vec per batch.
    let encode_all = |cmd: &dyn Fn(&str) -> Args| -> Vec<Vec<u8>> {
        (0..OPS / BATCH)
            .map(|b| {
                let mut buf = Vec::new();
                for i in b * BATCH..(b + 1) * BATCH {
                    resp::encode(&mut buf, &refs(&cmd(&format!("k{i}"))));
                }
                buf
            })
            .collect()
    };
    let corral = encode_all(&|k| args(&["RESV.LOCK", k, "holder", "60000"]));
    let set = encode_all(&|k| args(&["SET", k, "holder", "NX", "PX", "60000"]));

    // Sends one pipeline, reads its replies (each must pass `ok`); returns the seconds.
    let pipeline = |conn: &mut resp::Conn, batch: &[u8], ok: Check| -> f64 {
        let t = Instant::now();
        conn.send_raw(batch).expect("send");
        for _ in 0..BATCH {
            let r = conn.read().expect("read");
            assert!(ok(&r), "unexpected reply {r:?}");
        }
        t.elapsed().as_secs_f64()
    };

    struct Round {
        corral_ops: f64,
        set_ops: f64,
        /// Server usec per call (commandstats) of RESV.LOCK and of SET.
        corral_usec: f64,
        set_usec: f64,
    }
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let _: () = redis::cmd("FLUSHALL").query(&mut admin).expect("FLUSHALL");
        reset_stats(&mut admin);
        let (mut corral_s, mut set_s) = (0.0, 0.0);
        for (c, s) in corral.iter().zip(&set) {
            corral_s += pipeline(&mut corral_conn, c, is_int);
            set_s += pipeline(&mut set_conn, s, is_ok);
        }
        let stats = cmdstats(&mut admin);
        let usec = |name: &str| {
            let (calls, usec) = stats.get(name).copied().unwrap_or((0, 0));
            assert_eq!(calls, OPS as u64, "cmdstat_{name} calls");
            usec as f64 / calls as f64
        };
        let r = Round {
            corral_ops: OPS as f64 / corral_s,
            set_ops: OPS as f64 / set_s,
            corral_usec: usec("resv.lock"),
            set_usec: usec("set"),
        };
        eprintln!(
            "bench:    round {round}: RESV.LOCK {:.0} ops/s ({:.3} usec/call), \
             SET NX PX {:.0} ops/s ({:.3} usec/call): {:.2}x",
            r.corral_ops,
            r.corral_usec,
            r.set_ops,
            r.set_usec,
            r.corral_ops / r.set_ops
        );
        rounds.push(r);
    }
    rounds.sort_by(|a, b| (a.corral_ops / a.set_ops).total_cmp(&(b.corral_ops / b.set_ops)));
    let r = &rounds[rounds.len() / 2];

    report.add(
        Row::new(
            FAMILY,
            "pipelined RESV.LOCK, distinct keys, 100 per pipeline",
            r.corral_ops,
            "ops/s",
        )
        .vs("SET NX PX", r.set_ops)
        .target(Target::RatioAtLeast(0.8)),
    );
    report.add(
        Row::new(
            FAMILY,
            "server time per RESV.LOCK in that run (distinct keys)",
            r.corral_usec,
            "us",
        )
        .vs("SET NX PX", r.set_usec),
    );
}

/// (c) How soon a blocked waiter hears of its grant after the holder's RELEASE.
///
/// Each iteration: the holder locks `k`; a waiter thread (own connection) sends
/// `RESV.LOCK k w 10000 BLOCK 5000`; once `RESV.INFO` shows it queued, the holder notes
/// t0 and sends RESV.RELEASE; the waiter notes when its reply arrives (t1) and releases.
/// Latency = t1 − t0, on this process's monotonic clock. It includes the RELEASE's trip
/// to the server, the hand-off and the grant's trip back.
pub fn wake_after_release(report: &mut Report) {
    const ITERATIONS: usize = 500;
    let srv = Server::start();
    let mut holder = srv.conn();
    let waiter = Waiter::spawn(&srv);
    let mut lat_ms = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t: Option<i64> = redis::cmd("RESV.LOCK")
            .arg("k")
            .arg("h")
            .arg(10_000)
            .query(&mut holder)
            .expect("holder's RESV.LOCK");
        assert!(t.is_some(), "holder could not lock a free key");
        waiter.lock("k", "w", 10_000, 5_000);
        assert!(
            wait_queued(&mut holder, "k", "h"),
            "the waiter never showed up in RESV.INFO"
        );
        let t0 = Instant::now();
        let _: i64 = redis::cmd("RESV.RELEASE")
            .arg("k")
            .arg("h")
            .query(&mut holder)
            .expect("holder's RESV.RELEASE");
        let grant = waiter.grant();
        assert!(grant.token.is_some(), "the waiter was not granted the lock");
        lat_ms.push(grant.at.duration_since(t0).as_secs_f64() * 1e3);
    }
    latency_rows(
        report,
        &format!("wake latency after RELEASE (n={ITERATIONS})"),
        lat_ms,
        2.0,
    );
}

/// (d) How soon a blocked waiter hears of its grant after the holder's lease lapses.
///
/// Each iteration: note t_sent, then the holder locks `k` for 30 ms; the waiter thread
/// blocks on `k`; the lease lapses and the waiter is granted at t1 (reply arrival).
/// The server computes the deadline from its clock when it runs the LOCK, which is after
/// t_sent, so t_sent + 30 ms is a lower bound of the real deadline and
/// latency = t1 − (t_sent + 30 ms) is an upper bound of the real lapse-to-grant delay
/// (it also includes the LOCK's trip to the server, and up to 1 ms of the server's
/// millisecond clock). Iterations where the waiter was not yet queued when the lease
/// lapsed (a scheduling hiccup) are discarded and counted.
pub fn wake_after_deadline(report: &mut Report) {
    const ITERATIONS: usize = 300;
    const TTL_MS: u64 = 30;
    let srv = Server::start();
    let mut holder = srv.conn();
    let waiter = Waiter::spawn(&srv);
    let mut lat_ms = Vec::with_capacity(ITERATIONS);
    let mut discarded = 0;
    for _ in 0..ITERATIONS {
        let t_sent = Instant::now();
        let t: Option<i64> = redis::cmd("RESV.LOCK")
            .arg("k")
            .arg("h")
            .arg(TTL_MS)
            .query(&mut holder)
            .expect("holder's RESV.LOCK");
        assert!(t.is_some(), "holder could not lock a free key");
        waiter.lock("k", "w", 10_000, 5_000);
        let queued = wait_queued(&mut holder, "k", "h");
        let grant = waiter.grant();
        assert!(grant.token.is_some(), "the waiter was not granted the lock");
        if !queued {
            discarded += 1;
            continue;
        }
        let deadline = t_sent + Duration::from_millis(TTL_MS);
        let ms = if grant.at >= deadline {
            grant.at.duration_since(deadline).as_secs_f64() * 1e3
        } else {
            -(deadline.duration_since(grant.at).as_secs_f64() * 1e3)
        };
        lat_ms.push(ms);
    }
    if discarded > 0 {
        eprintln!("bench:    {discarded} iterations discarded (waiter queued too late)");
    }
    latency_rows(
        report,
        &format!("wake latency after lease lapse (n={})", lat_ms.len()),
        lat_ms,
        5.0,
    );
}

/// Two rows for latencies in ms: `name, p50` and `name, p99` (the p99 with a target).
fn latency_rows(report: &mut Report, name: &str, mut lat_ms: Vec<f64>, p99_at_most: f64) {
    lat_ms.sort_by(f64::total_cmp);
    report.add(Row::new(
        FAMILY,
        &format!("{name}, p50"),
        percentile(&lat_ms, 0.5),
        "ms",
    ));
    report.add(
        Row::new(
            FAMILY,
            &format!("{name}, p99"),
            percentile(&lat_ms, 0.99),
            "ms",
        )
        .target(Target::AtMost(p99_at_most)),
    );
}

/// (e) 10,000 clients blocked on one key are all served, in arrival order.
///
/// One holder takes `big`. 10,000 raw sockets each send `RESV.LOCK big w<i> 60000
/// BLOCK 0`, one at a time: socket i+1 sends only once `RESV.INFO` counts i+1 waiters,
/// so the queue order is known to be 0, 1, 2…. Then the holder releases, and for each i
/// in order we read socket i's reply (a token; 10 s read timeout), check that tokens
/// strictly increase, and release w<i> on the control connection, which hands the lock
/// to the next waiter. A waiter served out of turn would leave socket i silent: the read
/// times out, and RESV.INFO tells who got the lock instead.
pub fn many_waiters(report: &mut Report) {
    const CLIENTS: usize = 10_000;
    let srv = Server::start_with(ServerOptions::new().config("maxclients", "20000"));
    let mut ctl = srv.conn();

    // Redis lowers maxclients to what its fd limit allows (scripts/bench raises it).
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut ctl)
        .expect("CONFIG GET maxclients");
    let maxclients: usize = cfg.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    if maxclients < CLIENTS + 100 {
        report.add(
            Row::flag(
                FAMILY,
                &format!(
                    "10,000 blocked clients: not run, server maxclients is {maxclients} \
                     (raise the fd limit: ulimit -n)"
                ),
                false,
            )
            .target(Target::Yes),
        );
        return;
    }

    let first: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("big")
        .arg("h")
        .arg(60_000)
        .query(&mut ctl)
        .expect("holder's RESV.LOCK");
    let mut last_token = first.expect("holder could not lock a free key");

    let t_queue = Instant::now();
    let mut socks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = resp::Conn::connect(srv.port(), 64)
            .unwrap_or_else(|e| panic!("connecting socket {i}: {e} (fd limit?)"));
        c.set_read_timeout(Duration::from_secs(10))
            .expect("timeout");
        let holder = format!("w{i}");
        c.send(&[
            b"RESV.LOCK",
            b"big",
            holder.as_bytes(),
            b"60000",
            b"BLOCK",
            b"0",
        ])
        .expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, waiters) = resv_info(&mut ctl, "big").expect("big is held");
            if waiters == i as i64 + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "waiter {i} was not queued within 5 s"
            );
        }
        socks.push(c);
    }
    let queue_s = t_queue.elapsed().as_secs_f64();
    eprintln!("bench:    {CLIENTS} waiters queued in {queue_s:.1} s");

    let t0 = Instant::now();
    let _: i64 = redis::cmd("RESV.RELEASE")
        .arg("big")
        .arg("h")
        .query(&mut ctl)
        .expect("holder's RESV.RELEASE");
    let mut served = 0;
    let mut in_order = true;
    for (i, c) in socks.iter_mut().enumerate() {
        match c.read() {
            Ok(Reply::Int(token)) => {
                in_order &= token > last_token;
                last_token = token;
                served += 1;
            }
            other => {
                let now = resv_info(&mut ctl, "big");
                eprintln!("bench:    waiter {i} got {other:?}; RESV.INFO big is now {now:?}");
                if now.is_some_and(|(h, _)| h != format!("w{i}")) {
                    in_order = false;
                }
                break;
            }
        }
        let r: i64 = redis::cmd("RESV.RELEASE")
            .arg("big")
            .arg(format!("w{i}"))
            .query(&mut ctl)
            .unwrap_or_else(|e| panic!("RESV.RELEASE big w{i}: {e}"));
        assert_eq!(r, 1, "RESV.RELEASE big w{i}");
    }
    let total_s = t0.elapsed().as_secs_f64();
    let all = served == CLIENTS;

    let name = "10,000 clients blocked on one key";
    report.add(Row::flag(FAMILY, &format!("{name}: all served"), all).target(Target::Yes));
    report.add(
        Row::flag(
            FAMILY,
            &format!("{name}: served in FIFO order"),
            all && in_order,
        )
        .target(Target::Yes),
    );
    report.add(Row::new(
        FAMILY,
        &format!("{name}: time to serve all (each grant, then its RELEASE)"),
        total_s,
        "s",
    ));
    report.add(Row::new(
        FAMILY,
        &format!("{name}: time to queue all (connect, LOCK BLOCK, confirm)"),
        queue_s,
        "s",
    ));
}

/// (f) Memory of a held lock against a string with a TTL holding the same holder name.
///
/// 100,000 held locks (`RESV.LOCK m<i> holder 60000`), then, after a FLUSHALL, 100,000
/// strings (`SET m<i> holder PX 60000`), keys `m00000`…`m99999`. `MEMORY USAGE` of one key
/// of each is the target row. Below it, an informational row: growth of `used_memory` per
/// key while each kind was built, which also counts what `MEMORY USAGE` cannot see (the
/// expires dict for strings; the module's own side tables, e.g. its deadline schedule, for
/// corral).
pub fn memory(report: &mut Report) {
    const HOLDER: &str = "worker-123456789";
    const KEYS: usize = 100_000;
    let (_srv, mut admin, mut conn) = util::start();
    let mut side = |cmd: &dyn Fn(&str) -> Args| {
        let (f, ()) = util::footprint(&mut admin, Some("m00000"), || {
            let ok = |r: &Reply| !matches!(r, Reply::Error(_));
            util::load(&mut conn, KEYS, |i| cmd(&format!("m{i:05}")), ok)
        });
        // The usage of one key; the growth per key.
        Footprint {
            growth: f.growth / KEYS as f64,
            ..f
        }
    };
    let lock = side(&|k| args(&["RESV.LOCK", k, HOLDER, "60000"]));
    let set = side(&|k| args(&["SET", k, HOLDER, "PX", "60000"]));
    Memory {
        family: FAMILY,
        usage: "MEMORY USAGE of a held lock",
        target: Target::RatioAtMost(2.0),
        growth: "used_memory per held lock (100,000 keys)",
        baseline: "SET key holder PX",
        unit: "bytes",
    }
    .report(report, lock, set);
}

/// redis-semaphore's Mutex defaults: `lockTimeout` (the lease, ms), `acquireTimeout` (how
/// long an acquire may try, ms; corral's BLOCK) and `retryInterval` (its sleep between two
/// `SET NX` attempts).
const MUTEX_LOCK_MS: &str = "10000";
const MUTEX_ACQUIRE_MS: &str = "10000";
const MUTEX_RETRY: Duration = Duration::from_millis(10);

/// What one side of [`contended`] did in one round.
struct Contention {
    /// Critical sections completed per second (all clients together).
    rate: f64,
    /// Waits to acquire (from the first acquire command to the grant), ms, sorted.
    waits_ms: Vec<f64>,
    /// Server time inside commands per critical section (`INFO commandstats` usec of the
    /// side's commands over the sections), µs.
    usec: f64,
    /// Acquire commands sent per critical section (1 for corral unless a BLOCK timed out).
    attempts: f64,
}

/// One client of [`contended`]: from `start` until `RUN` has passed, locks `key` as `holder`
/// (corral: `RESV.LOCK … BLOCK`; `mutex`, the sha of [`LUA_UNLOCK`]: `SET NX PX` every
/// [`MUTEX_RETRY`] until it answers OK), does nothing, and releases (`RESV.RELEASE`; the
/// script). Returns each wait to acquire, in ms, and the acquire commands it sent.
fn contend(
    port: u16,
    mutex: Option<&str>,
    key: &str,
    holder: &str,
    start: &Barrier,
    run: Duration,
) -> (Vec<f64>, usize) {
    let mut conn = resp::Conn::connect(port, 4096).expect("connect");
    let (lock, release) = match mutex {
        None => (
            args(&[
                "RESV.LOCK",
                key,
                holder,
                MUTEX_LOCK_MS,
                "BLOCK",
                MUTEX_ACQUIRE_MS,
            ]),
            args(&["RESV.RELEASE", key, holder]),
        ),
        Some(sha) => (
            args(&["SET", key, holder, "NX", "PX", MUTEX_LOCK_MS]),
            args(&["EVALSHA", sha, "1", key, holder]),
        ),
    };
    let (lock, release) = (refs(&lock), refs(&release));
    let (mut waits, mut attempts) = (Vec::new(), 0);
    start.wait();
    let until = Instant::now() + run;
    while Instant::now() < until {
        let t = Instant::now();
        loop {
            attempts += 1;
            match conn.call(&lock).expect("lock") {
                Reply::Int(_) | Reply::Status(_) => break,
                // SET NX: held by another; RESV.LOCK: its BLOCK timed out (ask again).
                r if is_nil(&r) => {
                    if mutex.is_some() {
                        std::thread::sleep(MUTEX_RETRY);
                    }
                }
                r => panic!("{holder}: unexpected reply {r:?} to a lock"),
            }
        }
        waits.push(t.elapsed().as_secs_f64() * 1e3);
        // The critical section: nothing.
        let r = conn.call(&release).expect("release");
        assert!(is_one(&r), "{holder}: unexpected reply {r:?} to a release");
    }
    (waits, attempts)
}

/// (g) The contended path, end to end: `CLIENTS` clients on ONE key, each looping lock →
/// no-op → release for `RUN`, against redis-semaphore's Mutex doing the same.
///
/// corral: `RESV.LOCK k <holder> 10000 BLOCK 10000` (the waiter is queued in the server and
/// handed the lock when the holder releases), then `RESV.RELEASE k <holder>`. Baseline: what
/// redis-semaphore's Mutex sends with its defaults: `SET k <id> NX PX 10000`, retried every
/// 10 ms while it answers nil, then its compare-and-delete release script ([`LUA_UNLOCK`],
/// `EVALSHA`). Holders are 36-character uuid-like ids on both sides. Each client is a thread
/// with its own connection; after `RUN` each finishes the section it is in.
///
/// Rows: critical sections per second (all clients, as they see them); the p99 and the
/// longest of the waits to acquire (first acquire command sent → lock held, over all the
/// sections); and the server time inside commands
/// per critical section: `INFO commandstats` usec of `resv.lock` + `resv.release` (a blocked
/// LOCK's unblocking and reply are accounted to it) against `set` + `evalsha` (the script's
/// inner GET and DEL are inside `evalsha`'s time, and left out under their own names), over
/// the sections completed — the target is at most 4 µs. What happens between commands (a
/// module's unblocking work in `beforeSleep`, timers) is not in commandstats. The sides
/// alternate, `ROUNDS` rounds after a short warm-up of each; each figure is the median of
/// its side's rounds, not the best: the Mutex swings from round to round between one client
/// keeping the lock (it SETs again at once after its release while the others sleep 10 ms:
/// high rate, tiny p99) and all of them contending. Its starved clients show in the longest
/// wait (a client still waiting when `RUN` ends gets the lock once the others stop, so its
/// wait is counted too).
pub fn contended(report: &mut Report) {
    const CLIENTS: usize = 20;
    const RUN: Duration = Duration::from_secs(2);
    const ROUNDS: usize = 5;
    const MUTEX: &str = "redis-semaphore Mutex (SET NX PX, 10 ms retry; Lua release)";

    let srv = Server::start();
    let mut admin = srv.conn();
    let sha = util::load_script(&mut admin, LUA_UNLOCK);
    let holders: Vec<String> = (0..CLIENTS as u64).map(util::uuidish).collect();
    let sides: [(&str, Option<&str>, [&str; 2]); 2] = [
        ("corral", None, ["resv.lock", "resv.release"]),
        ("redis-semaphore Mutex", Some(&sha), ["set", "evalsha"]),
    ];

    let port = srv.port();
    let run = |admin: &mut redis::Connection, side: usize, run: Duration| -> Contention {
        let (_, mutex, stats) = sides[side];
        let key = if mutex.is_some() { "mutex" } else { "lock" };
        let start = Barrier::new(CLIENTS + 1);
        reset_stats(admin);
        let (results, secs) = std::thread::scope(|scope| {
            let threads: Vec<_> = holders
                .iter()
                .map(|h| {
                    let start = &start;
                    scope.spawn(move || contend(port, mutex, key, h, start, run))
                })
                .collect();
            start.wait();
            let t = Instant::now();
            let results: Vec<(Vec<f64>, usize)> = threads
                .into_iter()
                .map(|t| t.join().expect("a contending client panicked"))
                .collect();
            (results, t.elapsed().as_secs_f64())
        });
        let all = cmdstats(admin);
        let usec: u64 = stats.iter().map(|s| all.get(*s).map_or(0, |c| c.1)).sum();
        let mut waits_ms: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
        waits_ms.sort_by(f64::total_cmp);
        let sections = waits_ms.len() as f64;
        let attempts: usize = results.iter().map(|r| r.1).sum();
        Contention {
            rate: sections / secs,
            usec: usec as f64 / sections,
            attempts: attempts as f64 / sections,
            waits_ms,
        }
    };
    for side in 0..sides.len() {
        run(&mut admin, side, RUN / 4);
    }
    let mut rounds: Vec<Vec<Contention>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (side, (label, ..)) in sides.iter().enumerate() {
            let c = run(&mut admin, side, RUN);
            eprintln!(
                "bench:    round {round}: {label}: {:.0} sections/s, wait p50 {:.3} ms, p99 \
                 {:.3} ms, max {:.1} ms, {:.2} usec of server time and {:.2} acquire commands \
                 per section",
                c.rate,
                percentile(&c.waits_ms, 0.5),
                percentile(&c.waits_ms, 0.99),
                percentile(&c.waits_ms, 1.0),
                c.usec,
                c.attempts
            );
            rounds[side].push(c);
        }
    }
    // Each figure: the median of its side's rounds.
    let median = |side: usize, f: Figure| {
        let mut xs: Vec<f64> = rounds[side].iter().map(f).collect();
        xs.sort_by(f64::total_cmp);
        percentile(&xs, 0.5)
    };
    let name =
        format!("contended lock, {CLIENTS} clients on one key (LOCK BLOCK → no-op → RELEASE)");
    type Figure = fn(&Contention) -> f64;
    let figures: [(&str, Figure, &str); 3] = [
        ("critical sections per second", |c| c.rate, "sections/s"),
        (
            "wait to acquire, p99",
            |c| percentile(&c.waits_ms, 0.99),
            "ms",
        ),
        (
            "longest wait to acquire",
            |c| percentile(&c.waits_ms, 1.0),
            "ms",
        ),
    ];
    for (what, f, unit) in figures {
        report.add(
            Row::new(FAMILY, &format!("{name}: {what}"), median(0, f), unit)
                .vs(MUTEX, median(1, f)),
        );
    }
    report.add(
        Row::new(
            FAMILY,
            &format!("{name}: server time inside commands per critical section"),
            median(0, |c| c.usec),
            "us",
        )
        .vs(MUTEX, median(1, |c| c.usec))
        .target(Target::AtMost(4.0))
        .versus(
            &format!("contended LOCK BLOCK + RELEASE, {CLIENTS} clients, per critical section"),
            Kind::Lua,
            "SET NX PX retries + Lua release",
        ),
    );
}

/// `RESV.INFO key` as (holder, waiters); the holder is empty when the key is free.
fn resv_info(conn: &mut redis::Connection, key: &str) -> Option<(String, i64)> {
    let fields = client::fields(client::value(conn, &["RESV.INFO", key]))?;
    let (mut holder, mut waiters) = (String::new(), -1);
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("holder", redis::Value::BulkString(h)) => {
                holder = String::from_utf8_lossy(&h).into_owned()
            }
            ("waiters", redis::Value::Int(n)) => waiters = n,
            _ => {}
        }
    }
    Some((holder, waiters))
}

/// Polls `RESV.INFO key` until `holder` holds it with at least one waiter queued: true.
/// False as soon as someone else holds it or it is free (or after 5 s).
fn wait_queued(conn: &mut redis::Connection, key: &str, holder: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match resv_info(conn, key) {
            Some((h, w)) if h == holder && w >= 1 => return true,
            Some((h, _)) if h == holder => {}
            _ => return false,
        }
    }
    false
}

/// What a [`Waiter`] got: when its `RESV.LOCK … BLOCK` reply arrived, and the token.
struct Grant {
    pub at: Instant,
    pub token: Option<i64>,
}

/// A thread with its own connection that, when told, sends
/// `RESV.LOCK key holder ttl BLOCK block`, notes the instant its reply arrives, releases
/// the lock if it got it, and only then reports the [`Grant`] (so the key is free again
/// when the caller hears back).
struct Waiter {
    requests: Option<Sender<(String, String, u64, u64)>>,
    grants: Receiver<Grant>,
    thread: Option<JoinHandle<()>>,
}

impl Waiter {
    pub fn spawn(server: &Server) -> Waiter {
        let mut conn = server.conn();
        let (req_tx, req_rx) = channel::<(String, String, u64, u64)>();
        let (grant_tx, grant_rx) = channel();
        let thread = std::thread::spawn(move || {
            for (key, holder, ttl, block) in req_rx {
                let token: Option<i64> = redis::cmd("RESV.LOCK")
                    .arg(&key)
                    .arg(&holder)
                    .arg(ttl)
                    .arg("BLOCK")
                    .arg(block)
                    .query(&mut conn)
                    .expect("waiter's RESV.LOCK");
                let at = Instant::now();
                if token.is_some() {
                    let _: i64 = redis::cmd("RESV.RELEASE")
                        .arg(&key)
                        .arg(&holder)
                        .query(&mut conn)
                        .expect("waiter's RESV.RELEASE");
                }
                if grant_tx.send(Grant { at, token }).is_err() {
                    break;
                }
            }
        });
        Waiter {
            requests: Some(req_tx),
            grants: grant_rx,
            thread: Some(thread),
        }
    }

    /// Tells the thread to send its blocking lock (returns at once).
    pub fn lock(&self, key: &str, holder: &str, ttl_ms: u64, block_ms: u64) {
        self.requests
            .as_ref()
            .unwrap()
            .send((key.to_string(), holder.to_string(), ttl_ms, block_ms))
            .expect("waiter thread is gone (see its panic above)");
    }

    /// Waits for the outcome of the last [`Waiter::lock`].
    pub fn grant(&self) -> Grant {
        self.grants
            .recv_timeout(Duration::from_secs(30))
            .expect("waiter thread did not report (see its panic above, if any)")
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.requests.take(); // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
