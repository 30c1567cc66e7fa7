//! Big values: 100 MB of job values, a 10,000,000-slot pool, 400,000 waits through one key,
//! hundreds of thousands of leases lapsing at once. The server must keep serving: no corral
//! command, and no tick of corral's deadline timer, may hold the event loop for long.
//!
//! How "for long" is measured: Redis's latency monitor. Every command is sampled as `command`
//! (or `fast-command`) and every tick of corral's timer as `corral-timer`; with
//! `latency-monitor-threshold 1`, `LATENCY LATEST` keeps the worst of each. corral's design
//! target is a few ms; the assertions allow [`MAX_STALL_MS`] so that a loaded 2-core CI machine
//! (which can deschedule redis-server for a while) does not fail them, while the O(n) stalls
//! they guard against (one tick lapsing 300,000 keys, a synchronous free of 100 MB) take far
//! longer. The measured worst cases are printed.
//!
//! The tests in this file run one at a time (they are memory- and CPU-hungry).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::client::{assert_alive, digest, info_int, resp};
use common::raw::{self, Conn, Reply};
use common::{wait_until, Server};
use redis::Connection;

/// The longest a single command or timer tick may take here (see the file comment).
const MAX_STALL_MS: i64 = 100;

/// Serializes the tests of this file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server whose latency monitor records everything that takes 1 ms or more. Checked, so that
/// an empty `LATENCY LATEST` means "nothing took 1 ms" and not "nothing was measured": a
/// 10 ms `DEBUG SLEEP` must show up as a `command` event (then it is forgotten).
fn monitored_server() -> Server {
    let s = Server::with_config(&[("latency-monitor-threshold", "1")]);
    let mut c = s.conn();
    let _: () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.01")
        .query(&mut c)
        .unwrap();
    let events = latency(&mut c);
    assert!(
        events.get("command").is_some_and(|&(_, worst)| worst >= 10),
        "the latency monitor did not record a 10 ms DEBUG SLEEP: {events:?}"
    );
    reset_latency(&mut c);
    s
}

/// `LATENCY LATEST` as event → (latest ms, worst ms). Each row starts `[event, time, latest,
/// max, …]` (Valkey 8 adds the sum and count of the samples).
fn latency(c: &mut Connection) -> HashMap<String, (i64, i64)> {
    let rows: Vec<Vec<redis::Value>> = redis::cmd("LATENCY").arg("LATEST").query(c).unwrap();
    rows.into_iter()
        .map(|row| {
            let field = |i: usize| row.get(i).unwrap_or_else(|| panic!("LATENCY row {row:?}"));
            let event: String = redis::from_redis_value(field(0)).unwrap();
            let latest: i64 = redis::from_redis_value(field(2)).unwrap();
            let max: i64 = redis::from_redis_value(field(3)).unwrap();
            (event, (latest, max))
        })
        .collect()
}

/// Asserts that nothing the latency monitor samples — commands, ticks of corral's timer, Redis's
/// own expiry and eviction of corral keys — took longer than [`MAX_STALL_MS`], and prints the
/// worst ones. `sampled` names the work that must have been measured: for each group, at least
/// one of its events must be there (work known to take 1 ms or more that left no sample would
/// mean the monitor, or corral's `corral-timer` reporting, is not working).
fn assert_no_stall(c: &mut Connection, what: &str, sampled: &[&[&str]]) {
    let threshold: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("latency-monitor-threshold")
        .query(c)
        .unwrap();
    assert_eq!(threshold[1], "1", "{what}: the latency monitor is off");
    let events = latency(c);
    println!("{what}: latency monitor (event: latest ms, worst ms): {events:?}");
    for group in sampled {
        assert!(
            group.iter().any(|e| events.contains_key(*e)),
            "{what}: no {group:?} latency sample: {events:?}"
        );
    }
    for (event, &(_, worst)) in &events {
        assert!(
            worst <= MAX_STALL_MS,
            "{what}: a `{event}` took {worst} ms (limit {MAX_STALL_MS} ms): {events:?}"
        );
    }
}

fn reset_latency(c: &mut Connection) {
    let _: i64 = redis::cmd("LATENCY").arg("RESET").query(c).unwrap();
}

/// Sends `commands` (RESP-encoded, concatenated) on a fresh connection and reads `n` replies.
fn raw_pipeline(port: u16, commands: &[u8], n: usize) -> Vec<Reply> {
    let mut conn = Conn::connect(port, 1 << 16).unwrap();
    conn.set_read_timeout(Duration::from_secs(120)).unwrap();
    let mut writer = conn.writer().unwrap();
    let commands = commands.to_vec();
    // Write on another thread: the replies must be read while the commands still go out.
    let sender = std::thread::spawn(move || writer.write_all(&commands).unwrap());
    let replies = (0..n)
        .map(|i| {
            conn.read()
                .unwrap_or_else(|e| panic!("reply {i} of {n}: {e}"))
        })
        .collect();
    sender.join().unwrap();
    replies
}

/// The integer of an integer reply.
fn int_of(r: &Reply) -> i64 {
    match r {
        Reply::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// Sends `n` commands, the i-th with the arguments `args(i)`, in one pipeline on a fresh
/// connection, and answers their replies (as [`raw_pipeline`]).
fn pipeline(port: u16, n: usize, args: impl Fn(usize) -> Vec<Vec<u8>>) -> Vec<Reply> {
    let mut commands = Vec::new();
    for i in 0..n {
        let args = args(i);
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        raw::encode(&mut commands, &refs);
    }
    raw_pipeline(port, &commands, n)
}

/// Arguments from anything byte-like: `argv!["JOB.CREATE", "store", id.to_string()]`.
macro_rules! argv {
    ($($a:expr),* $(,)?) => { vec![$(AsRef::<[u8]>::as_ref(&$a).to_vec()),*] };
}

/// Blocks the server for 2 s (DEBUG SLEEP), past every deadline set before, then forgets that
/// command's own latency sample, which is not a stall corral caused.
fn sleep_past_deadlines(c: &mut Connection) {
    let _: () = redis::cmd("DEBUG").arg("SLEEP").arg("2").query(c).unwrap();
    let _: i64 = redis::cmd("LATENCY")
        .arg("RESET")
        .arg("command")
        .query(c)
        .unwrap();
}

/// DEBUG RELOAD (save, then load the RDB): `key` must come back unchanged.
fn assert_survives_reload(c: &mut Connection, key: &str) {
    let before = digest(c, key);
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(c).unwrap();
    assert_eq!(digest(c, key), before, "{key} changed across DEBUG RELOAD");
}

fn used_memory(s: &Server) -> i64 {
    info_int(s, "memory", "used_memory")
}

#[test]
fn a_hundred_megabytes_of_job_values() {
    let _serial = one_at_a_time();
    let s = monitored_server();
    let mut c = s.conn();
    const JOBS: usize = 100_000;
    let value = vec![b'v'; 1024];

    // 100,000 jobs, each fulfilled with 1 KB and waiting for a notification: 100 MB of values.
    let ids: Vec<i64> = pipeline(s.port(), JOBS, |i| {
        argv!["JOB.CREATE", "store", format!("req-{i}")]
    })
    .iter()
    .map(int_of)
    .collect();
    let fulfilled = pipeline(s.port(), JOBS, |i| {
        argv!["JOB.FULFILL", "store", ids[i].to_string(), value]
    });
    assert!(fulfilled.iter().all(|r| r == &Reply::Int(1)));
    let queued = pipeline(s.port(), JOBS, |i| {
        argv!["JOB.QUEUE", "store", ids[i].to_string(), "target"]
    });
    assert!(queued.iter().all(|r| r == &Reply::Int(1)));
    let memory = used_memory(&s);
    println!("100,000 jobs with 1 KB values: used_memory {memory}");
    assert!(memory > 100_000_000, "used_memory {memory}");

    // Working on the big store stays cheap: notify a few jobs, look at one.
    for i in 0..100 {
        let worker = format!("notifier-{i}");
        let got: redis::Value = redis::cmd("JOB.PULLNOTIFY")
            .arg("store")
            .arg(&worker)
            .arg(60_000)
            .query(&mut c)
            .unwrap();
        let redis::Value::Array(parts) = got else {
            panic!("PULLNOTIFY answered {got:?}");
        };
        let id: i64 = redis::from_redis_value(&parts[0]).unwrap();
        let done: i64 = redis::cmd("JOB.DONE")
            .arg("store")
            .arg(id)
            .arg(&worker)
            .arg("target")
            .query(&mut c)
            .unwrap();
        assert_eq!(done, 1);
    }
    let info: HashMap<String, i64> =
        common::client::int_fields(redis::cmd("JOB.INFO").arg("store").query(&mut c).unwrap())
            .unwrap();
    assert_eq!(info["jobs"], JOBS as i64);
    assert_eq!(info["notifiable"], JOBS as i64 - 100);
    let _: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("store")
        .query(&mut c)
        .unwrap();
    assert_no_stall(&mut c, "100 MB store", &[]);

    assert_survives_reload(&mut c, "store");

    // UNLINK hands the 100 MB to the lazy-free thread; the memory comes back.
    reset_latency(&mut c);
    let unlinked: i64 = redis::cmd("UNLINK").arg("store").query(&mut c).unwrap();
    assert_eq!(unlinked, 1);
    assert_no_stall(&mut c, "UNLINK of the 100 MB store", &[]);
    wait_until(Duration::from_secs(60), "the store's memory freed", || {
        used_memory(&s) < memory / 4
    });
    assert_alive(&s, &mut c);
}

#[test]
fn a_ten_million_slot_pool() {
    let _serial = one_at_a_time();
    let s = monitored_server();
    let mut c = s.conn();
    const SLOTS: usize = 10_000_000;

    // Fill the pool 0..10M in pipelines of 1M (anonymous slots: one bit each).
    let get = resp(&[b"SLOT.GET", b"pool"]);
    let chunk: Vec<u8> = get.repeat(1_000_000);
    for round in 0..SLOTS / 1_000_000 {
        let replies = raw_pipeline(s.port(), &chunk, 1_000_000);
        let first = (round * 1_000_000) as i64;
        assert_eq!(replies[0], Reply::Int(first));
        assert_eq!(replies[999_999], Reply::Int(first + 999_999));
    }
    let held: i64 = redis::cmd("SLOT.COUNT").arg("pool").query(&mut c).unwrap();
    assert_eq!(held, SLOTS as i64);
    let bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("pool")
        .query(&mut c)
        .unwrap();
    assert!(bytes < 2_000_000, "a 10M-slot pool takes {bytes} bytes");
    reset_latency(&mut c);

    // Lowest-free still holds at the far end of the pool, and each step stays cheap.
    for slot in [5_000_000i64, 9_999_999, 17] {
        let put: i64 = redis::cmd("SLOT.PUT")
            .arg("pool")
            .arg(slot)
            .query(&mut c)
            .unwrap();
        assert_eq!(put, 1);
    }
    for expect in [17i64, 5_000_000, 9_999_999, 10_000_000] {
        let got: i64 = redis::cmd("SLOT.GET").arg("pool").query(&mut c).unwrap();
        assert_eq!(got, expect);
    }
    // A holder leasing the next slot, then a bounded GET on the full pool: nil at once.
    let leased: i64 = redis::cmd("SLOT.GET")
        .arg("pool")
        .arg("HOLDER")
        .arg("h")
        .arg("TTL")
        .arg(60_000)
        .query(&mut c)
        .unwrap();
    assert_eq!(leased, 10_000_001);
    let full: Option<i64> = redis::cmd("SLOT.GET")
        .arg("pool")
        .arg("LIMIT")
        .arg(SLOTS)
        .query(&mut c)
        .unwrap();
    assert_eq!(full, None);
    let _: redis::Value = redis::cmd("SLOT.INFO").arg("pool").query(&mut c).unwrap();
    let _: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("pool")
        .query(&mut c)
        .unwrap();
    assert_no_stall(&mut c, "10M-slot pool", &[]);

    assert_survives_reload(&mut c, "pool");
    reset_latency(&mut c);
    let deleted: i64 = redis::cmd("DEL").arg("pool").query(&mut c).unwrap();
    assert_eq!(deleted, 1);
    assert_no_stall(&mut c, "DEL of the 10M-slot pool", &[]);
    assert_alive(&s, &mut c);
}

#[test]
fn four_hundred_thousand_waits_through_one_lock() {
    let _serial = one_at_a_time();
    let s = monitored_server();
    let mut c = s.conn();
    // 100 clients × 2,000 × 2 rounds = 400,000 LOCKs, about 20 s. Each hand-off to a blocked
    // client costs Redis one event-loop turn (~30 µs here), so a million takes ~50 s: run it
    // with the numbers raised when changing the wait queues.
    const CLIENTS: usize = 100;
    const ROUNDS: usize = 2;
    const PER_CLIENT: usize = 2_000;

    // Each client pipelines LOCK (waiting up to 10 minutes) + RELEASE, over and over, on one
    // key: nearly every LOCK waits in line and is handed the lock by a RELEASE. Each wait has a
    // timeout timer, which must go when the waiter is served (the memory check below).
    let mut memory_after_round = Vec::new();
    let mut tokens: Vec<i64> = Vec::with_capacity(CLIENTS * PER_CLIENT * ROUNDS);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let port = s.port();
                std::thread::spawn(move || {
                    let holder = format!("client-{i}");
                    let lock = resp(&[
                        b"RESV.LOCK",
                        b"lock",
                        holder.as_bytes(),
                        b"60000",
                        b"BLOCK",
                        b"600000",
                    ]);
                    let release = resp(&[b"RESV.RELEASE", b"lock", holder.as_bytes()]);
                    let pair = [lock, release].concat();
                    let replies = raw_pipeline(port, &pair.repeat(PER_CLIENT), 2 * PER_CLIENT);
                    replies
                        .chunks(2)
                        .map(|r| {
                            assert_eq!(r[1], Reply::Int(1), "{holder}: RELEASE answered");
                            int_of(&r[0])
                        })
                        .collect::<Vec<i64>>()
                })
            })
            .collect();
        for t in threads {
            tokens.extend(t.join().unwrap());
        }
        // The clients' connections (each with a pipeline-sized query buffer) must be gone before
        // memory is read: Redis frees a closed client when it next reads from it.
        // (Two remain: `c`, and the connection asking.)
        wait_until(Duration::from_secs(30), "the clients disconnected", || {
            info_int(&s, "clients", "connected_clients") == 2
        });
        memory_after_round.push(used_memory(&s));
    }
    let elapsed = started.elapsed();
    let waits = info_int(&s, "corral", "corral_resv_waits");
    println!(
        "{} LOCK+RELEASE pairs ({waits} of them waited) in {:.1} s; used_memory after each \
         round: {memory_after_round:?}",
        tokens.len(),
        elapsed.as_secs_f64()
    );

    // Every LOCK was granted exactly once, each with its own token.
    let n = tokens.len();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), n, "a token was handed out twice");
    assert_eq!(n, CLIENTS * PER_CLIENT * ROUNDS);
    assert!(
        waits as usize > n / 2,
        "only {waits} of {n} LOCKs waited: the churn did not go through the queue"
    );
    // Nothing is left behind: no waiter, no key, no memory growth from one round to the next.
    assert_eq!(info_int(&s, "corral", "corral_resv_waiting"), 0);
    let exists: i64 = redis::cmd("EXISTS").arg("lock").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    // A leak of what one wait leaves behind (its timer: ~70 bytes) would be ~14 MB over the
    // 200,000 waits of a round; used_memory moves by up to ~1 MB between rounds without one
    // (allocator and table growth in Redis itself).
    let growth = memory_after_round[1] - memory_after_round[0];
    assert!(
        growth < 4_000_000,
        "used_memory grew {growth} bytes over the second round of waits"
    );
    assert_no_stall(&mut c, "400,000 waits", &[]);
    assert_alive(&s, &mut c);
}

#[test]
fn hundreds_of_thousands_of_leases_lapsing_at_once() {
    let _serial = one_at_a_time();
    let s = monitored_server();
    let mut c = s.conn();
    const KEYS: usize = 300_000;

    // 300,000 locks on as many keys, all due within about a second of each other …
    let locks = pipeline(s.port(), KEYS, |i| {
        argv!["RESV.LOCK", format!("lock:{i}"), "worker", "1000"]
    });
    assert!(locks.iter().all(|r| matches!(r, Reply::Int(_))));
    // … and a server that was busy past all of their deadlines (as after a long script, or a
    // replica promoted late): every lease is due at the same moment.
    sleep_past_deadlines(&mut c);
    wait_until(Duration::from_secs(60), "every lease lapsed", || {
        info_int(&s, "corral", "corral_resv_lapses") == KEYS as i64
    });
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(keys, 0);
    // corral's timer lapses most of them, in ticks of about 2 ms: they must have been sampled.
    assert_no_stall(
        &mut c,
        "300,000 leases lapsing at once",
        &[&["corral-timer"]],
    );

    // The same for one semaphore holding 100,000 permits: lapsing one key is one step, so
    // this is the largest single piece of work (reported, bounded by the same limit).
    reset_latency(&mut c);
    let acquires = pipeline(s.port(), 100_000, |i| {
        argv![
            "SEM.ACQUIRE",
            "sem",
            format!("holder-{i}"),
            "100000",
            "1000"
        ]
    });
    assert!(acquires.iter().all(|r| matches!(r, Reply::Int(_))));
    sleep_past_deadlines(&mut c);
    wait_until(Duration::from_secs(60), "every permit lapsed", || {
        info_int(&s, "corral", "corral_sem_lapses") == 100_000
    });
    // One step of 3 ms or more, taken by corral's timer or by Redis expiring the key first.
    assert_no_stall(
        &mut c,
        "100,000 permits of one key lapsing at once",
        &[&["corral-timer", "expire-del"]],
    );
    assert_alive(&s, &mut c);
}
