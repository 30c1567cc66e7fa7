//! Recipe: a lease keeper (README, "Recipes" → "Lease keeper"), with the `redis` crate.
//!
//! `LeaseKeeper` keeps one corral lease alive while work runs — a RESV lock, a SEM permit or a
//! JOB work lease — and tells the work the moment it is lost:
//!   - it renews every ttl/3 from a thread of its own (RESV.RENEW / SEM.RENEW / JOB.RENEW);
//!   - it renews at once when a `<family>.lapse` keyspace event names its key (the event names
//!     the key, not the holder: the renewal's answer says whether the lease that lapsed was ours);
//!   - a renewal answering -NOTHELD marks the lease lost (`lost()`) and stops the keeper.
//!
//! A keeper cannot save a lease when the whole process stops (a GC pause, swapping, a suspended
//! VM): the final write must be guarded by the fencing token (`FENCED_SET` below), which the
//! server checks when the write arrives.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run --example lease_keeper`
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection, FromRedisValue, RedisResult, Script, ToRedisArgs, Value};

// ---- the keeper: copy from here -----------------------------------------------------------

/// What a keeper renews: `<FAMILY>.RENEW key who… ms`.
#[derive(Clone, Debug)]
pub struct Lease {
    family: &'static str, // "resv", "sem" or "job"
    key: String,
    who: Vec<String>, // [holder] for RESV and SEM; [job id, worker] for JOB
}

impl Lease {
    pub fn resv(key: &str, holder: &str) -> Lease {
        Lease {
            family: "resv",
            key: key.into(),
            who: vec![holder.into()],
        }
    }
    pub fn sem(key: &str, holder: &str) -> Lease {
        Lease {
            family: "sem",
            key: key.into(),
            who: vec![holder.into()],
        }
    }
    pub fn job(store: &str, id: i64, worker: &str) -> Lease {
        Lease {
            family: "job",
            key: store.into(),
            who: vec![id.to_string(), worker.into()],
        }
    }
    fn renew(&self, con: &mut Connection, ttl: u64) -> RedisResult<i64> {
        redis::cmd(&format!("{}.RENEW", self.family.to_uppercase()))
            .arg(&self.key)
            .arg(&self.who)
            .arg(ttl)
            .query(con)
    }
}

/// Why a lease was lost: the error that said so, and what found out ("its heartbeat" or "a
/// lapse event").
#[derive(Clone, Debug)]
pub struct Lost {
    pub reason: String,
    pub by: &'static str,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    renewals: AtomicU64,
    lost: Mutex<Option<Lost>>,
    lost_changed: Condvar,
}

/// Keeps a lease alive until [`LeaseKeeper::stop`] (or drop). Needs keyspace events of module
/// keys (`notify-keyspace-events Kd`); without them it still renews, it only learns of a lapse at
/// its next renewal instead of at once.
pub struct LeaseKeeper {
    pub lease: Lease,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping `lease`, granted for `ttl` ms: renews it once now (an error if it is
    /// already gone), subscribes to its key's events, then renews every ttl/3 on connections of
    /// its own, so a renewal never waits behind the work's commands.
    pub fn start(client: &Client, lease: Lease, ttl: u64) -> RedisResult<LeaseKeeper> {
        let mut con = client.get_connection()?;
        // A renewal unanswered for a whole TTL is an error (and the lease is taken as lost).
        con.set_read_timeout(Some(Duration::from_millis(ttl)))?;
        lease.renew(&mut con, ttl)?;
        let mut events_con = client.get_connection()?;
        let channel = format!(
            "__keyspace@{}__:{}",
            client.get_connection_info().redis.db,
            lease.key
        );
        let shared = Arc::new(Shared::default());
        shared.renewals.store(1, Ordering::Relaxed);
        let (subscribed, is_subscribed) = mpsc::channel();
        let thread = std::thread::spawn({
            let (lease, shared) = (lease.clone(), shared.clone());
            move || {
                let mut events = events_con.as_pubsub();
                let result = events.subscribe(&channel);
                let ok = result.is_ok();
                let _ = subscribed.send(result);
                if ok {
                    keep(&lease, ttl, &mut con, &mut events, &shared);
                }
            }
        });
        is_subscribed.recv().expect("the keeper thread answers")?;
        Ok(LeaseKeeper {
            lease,
            shared,
            thread: Some(thread),
        })
    }

    /// `Some` once the lease is lost: the work must stop.
    pub fn lost(&self) -> Option<Lost> {
        self.shared.lost.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the lease to be lost.
    pub fn wait_lost(&self, timeout: Duration) -> Option<Lost> {
        let lost = self.shared.lost.lock().unwrap();
        let (lost, _) = self
            .shared
            .lost_changed
            .wait_timeout_while(lost, timeout, |lost| lost.is_none())
            .unwrap();
        lost.clone()
    }

    /// Successful renewals so far (the one at start included).
    pub fn renewals(&self) -> u64 {
        self.shared.renewals.load(Ordering::Relaxed)
    }

    /// Stops renewing (before releasing the lease, or once it is lost).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keeper's thread: renew every ttl/3, and at once on a lapse event, until stopped or lost.
fn keep(
    lease: &Lease,
    ttl: u64,
    con: &mut Connection,
    events: &mut redis::PubSub,
    shared: &Shared,
) {
    let interval = Duration::from_millis(ttl / 3);
    let lapse = format!("{}.lapse", lease.family);
    let mut last_renewed = Instant::now(); // when the last successful renewal was sent
    let mut next_renewal = Instant::now() + interval;
    while !shared.stop.load(Ordering::Relaxed) {
        // Wait for an event until the next renewal is due (in short slices, so stop() is quick).
        let wait = next_renewal.saturating_duration_since(Instant::now());
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(50));
        let _ = events.set_read_timeout(Some(wait));
        let by = match events.get_message() {
            Ok(msg) if msg.get_payload::<String>().ok().as_deref() == Some(lapse.as_str()) => {
                "a lapse event"
            }
            // A broken events connection is not retried: the renewals still tell the truth.
            Err(e) if !e.is_timeout() && !interrupted(&e) && Instant::now() < next_renewal => {
                std::thread::sleep(wait);
                continue;
            }
            _ if Instant::now() >= next_renewal => {
                next_renewal = Instant::now() + interval;
                "its heartbeat"
            }
            _ => continue, // another event, or a read timeout before the renewal is due
        };
        let sent = Instant::now();
        let answer = match lease.renew(con, ttl) {
            // A read interrupted by a stop and continue of the process (SIGSTOP/SIGCONT: Ctrl-Z,
            // a debugger, a frozen container) is no answer: ask again (the late reply is skipped).
            Err(e) if interrupted(&e) => lease.renew(con, ttl),
            answer => answer,
        };
        match answer {
            Ok(_) => {
                shared.renewals.fetch_add(1, Ordering::Relaxed);
                last_renewed = sent;
                continue;
            }
            // The server says so: someone else has it, or nobody does.
            Err(e) if e.code() == Some("NOTHELD") => lose(shared, e.to_string(), by),
            // No renewal got through for a whole TTL: the lease may have lapsed, assume it has.
            Err(e) if last_renewed.elapsed() >= Duration::from_millis(ttl) => {
                lose(shared, e.to_string(), by)
            }
            Err(_) => continue, // a passing error: the next heartbeat tries again
        }
        return;
    }
}

fn interrupted(e: &redis::RedisError) -> bool {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

fn lose(shared: &Shared, reason: String, by: &'static str) {
    *shared.lost.lock().unwrap() = Some(Lost { reason, by });
    shared.lost_changed.notify_all();
}

// ---- the guarded write --------------------------------------------------------------------

/// README, "Guarding a write with the fencing token": `redis.call` raises on RESV.CHECK's
/// -NOTHELD or -STALE, which aborts the script before the SET.
const FENCED_SET: &str = "
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])";

fn fenced_set(con: &mut Connection, holder: &str, token: i64, value: &str) -> RedisResult<String> {
    Script::new(FENCED_SET)
        .key(LOCK)
        .key(RESULT)
        .arg(holder)
        .arg(token)
        .arg(value)
        .invoke(con)
}

// ---- the demonstration --------------------------------------------------------------------

const LOCK: &str = "{report}:lock";
const RESULT: &str = "{report}:result"; // the guarded data: same hash slot as the lock
const SEM: &str = "{report}:sem";
const STORE: &str = "{report}:jobs";

/// Stops this whole process (every thread, the keeper's included) for `seconds`: what a long GC
/// pause, swapping or a suspended VM does to a worker.
fn pause_process(seconds: f64) {
    let pid = std::process::id();
    let script = format!("kill -STOP {pid}; sleep {seconds}; kill -CONT {pid}");
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "could not pause: {status:?}"
    );
}

fn client() -> RedisResult<Client> {
    Client::open(std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()))
}

fn connect(client: &Client) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// `cmd args…`, e.g. `call(con, "RESV.LOCK", (LOCK, "worker-1", 700))`.
fn call<T: FromRedisValue>(
    con: &mut Connection,
    cmd: &str,
    args: impl ToRedisArgs,
) -> RedisResult<T> {
    redis::cmd(cmd).arg(args).query(con)
}

/// A map reply (RESV.INFO, JOB.GET) by field name.
fn map(
    con: &mut Connection,
    cmd: &str,
    args: impl ToRedisArgs,
) -> RedisResult<HashMap<String, Value>> {
    call(con, cmd, args)
}

fn field<T: FromRedisValue>(map: &HashMap<String, Value>, name: &str) -> T {
    redis::from_redis_value(&map[name]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = client()?;
    let con = &mut connect(&client)?;
    call::<()>(con, "DEL", (LOCK, RESULT, SEM, STORE))?;
    // corral's events are keyspace events of the module class: enable them (K = keyspace
    // channel, d = module events), keeping what the server already had.
    let (_, events): (String, String) = call(con, "CONFIG", ("GET", "notify-keyspace-events"))?;
    call::<()>(
        con,
        "CONFIG",
        ("SET", "notify-keyspace-events", format!("{events}Kd")),
    )?;

    happy_path(&client, con)?;
    loss_path(&client, con)?;
    lapse_event(&client, con)?;

    call::<()>(con, "CONFIG", ("SET", "notify-keyspace-events", events))?;
    println!("ok");
    Ok(())
}

/// Work outlives the TTL, three kinds of lease at once.
fn happy_path(client: &Client, con: &mut Connection) -> Result<(), Box<dyn std::error::Error>> {
    const TTL: u64 = 700;
    const WORK: Duration = Duration::from_millis(2000); // almost three TTLs
    let token: i64 = call(con, "RESV.LOCK", (LOCK, "worker-1", TTL))?;
    let sem_token: i64 = call(con, "SEM.ACQUIRE", (SEM, "worker-1", 2, TTL))?;
    let job_id: i64 = call(con, "JOB.CREATE", (STORE, "build report"))?;
    let (_, _, job_token): (i64, String, i64) = call(con, "JOB.PULL", (STORE, "worker-1", TTL))?;
    // The controls: the same leases taken without a keeper.
    call::<i64>(con, "SEM.ACQUIRE", (SEM, "idle-worker", 2, TTL))?;
    let idle_job: i64 = call(con, "JOB.CREATE", (STORE, "idle job"))?;
    call::<Value>(con, "JOB.PULL", (STORE, "idle-worker", TTL))?;

    let started = Instant::now();
    let mut keepers = [
        LeaseKeeper::start(client, Lease::resv(LOCK, "worker-1"), TTL)?,
        LeaseKeeper::start(client, Lease::sem(SEM, "worker-1"), TTL)?,
        LeaseKeeper::start(client, Lease::job(STORE, job_id, "worker-1"), TTL)?,
    ];
    // The work: steps that each check the keeper first.
    for _ in 0..10 {
        if let Some(lost) = keepers[0].lost() {
            panic!("the lock was lost: {lost:?}");
        }
        std::thread::sleep(WORK / 10);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= WORK);
    for keeper in &keepers {
        let family = keeper.lease.family;
        assert!(keeper.lost().is_none(), "{family}: {:?}", keeper.lost());
        assert!(
            keeper.renewals() >= 3,
            "{family}: {} renewals",
            keeper.renewals()
        );
    }
    // Still held under the same tokens, long after one TTL.
    let info = map(con, "RESV.INFO", LOCK)?;
    assert_eq!(
        field::<Option<String>>(&info, "holder").as_deref(),
        Some("worker-1")
    );
    assert_eq!(field::<i64>(&info, "token"), token);
    // SEM.HOLDERS: [holder, ttl, permits, token, …]
    let holders: Vec<Value> = call(con, "SEM.HOLDERS", SEM)?;
    assert_eq!(
        holders.len(),
        4,
        "only worker-1 holds a permit, the idle one lapsed: {holders:?}"
    );
    assert_eq!(redis::from_redis_value::<String>(&holders[0])?, "worker-1");
    assert_eq!(redis::from_redis_value::<i64>(&holders[3])?, sem_token);
    let idle = map(con, "JOB.GET", (STORE, idle_job))?;
    assert_eq!(
        field::<Option<String>>(&idle, "holder"),
        None,
        "the idle job lease lapsed"
    );
    assert_eq!(
        field::<Option<String>>(&idle, "reason").as_deref(),
        Some("lapsed")
    );
    // The final writes, each guarded by its token.
    assert_eq!(fenced_set(con, "worker-1", token, "report v1")?, "OK");
    let fulfilled: i64 = call(
        con,
        "JOB.FULFILL",
        (STORE, job_id, "done", "TOKEN", job_token),
    )?;
    assert_eq!(fulfilled, 1);
    for keeper in &mut keepers {
        keeper.stop(); // stop renewing, then release
    }
    assert_eq!(call::<i64>(con, "RESV.RELEASE", (LOCK, "worker-1"))?, 1);
    assert_eq!(call::<i64>(con, "SEM.RELEASE", (SEM, "worker-1"))?, 1);
    let renewed: Vec<String> = keepers
        .iter()
        .map(|k| format!("{} renewed {}x", k.lease.family, k.renewals()))
        .collect();
    println!(
        "happy path: worked {:.1} s under {TTL} ms leases ({}); the unkept permit and job lease \
         lapsed; guarded write and FULFILL ... TOKEN accepted",
        elapsed.as_secs_f64(),
        renewed.join(", ")
    );
    Ok(())
}

/// The process pauses past its TTL; another holder takes the lock.
fn loss_path(client: &Client, con: &mut Connection) -> Result<(), Box<dyn std::error::Error>> {
    const TTL: u64 = 500;
    let token_a: i64 = call(con, "RESV.LOCK", (LOCK, "worker-A", TTL))?;
    let keeper = LeaseKeeper::start(client, Lease::resv(LOCK, "worker-A"), TTL)?;
    // worker-B waits for the lock inside Redis (its own connection, its own thread), up to 5 s.
    // Its connection has no read timeout: on Linux a socket read with a timeout fails with EINTR
    // when the process is stopped and continued, as pause_process does below.
    let mut b = client.get_connection()?;
    let worker_b = std::thread::spawn(move || -> RedisResult<Option<i64>> {
        call(&mut b, "RESV.LOCK", (LOCK, "worker-B", 5000, "BLOCK", 5000))
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while field::<i64>(&map(con, "RESV.INFO", LOCK)?, "waiters") != 1 {
        assert!(Instant::now() < deadline, "worker-B never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    // worker-A works; its keeper renews.
    std::thread::sleep(Duration::from_millis(300));
    // worker-A checks its keeper one last time, then its process stops for 1.5 s (three TTLs)
    // before it writes its result. Nothing in the process runs, the keeper included.
    assert!(keeper.lost().is_none(), "{:?}", keeper.lost());
    pause_process(1.5);
    // Meanwhile, on the server's clock, the lease lapsed and went to worker-B, the first waiter.
    // (The demo waits for worker-B's reply so what follows does not depend on timing.)
    let token_b = worker_b
        .join()
        .unwrap()?
        .expect("worker-B gets the lock within 5 s");
    assert!(token_b > token_a, "{token_b} > {token_a}");
    // worker-A resumes, still believing it holds the lock, and writes: refused by the fence.
    let err = fenced_set(con, "worker-A", token_a, "report by A").unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    assert!(
        err.detail()
            .unwrap()
            .starts_with("the reservation is held by worker-B"),
        "{err}"
    );
    println!("loss path: worker-A's guarded write after the pause -> {err}");
    let result: Option<String> = call(con, "GET", RESULT)?;
    assert_eq!(result.as_deref(), Some("report v1"));
    // worker-A's keeper finds out at once (its overdue heartbeat or the resv.lapse event renews,
    // and the renewal answers NOTHELD) and marks the lease lost, which the work checks.
    let lost = keeper
        .wait_lost(Duration::from_secs(3))
        .expect("worker-A's keeper notices the loss");
    assert!(
        lost.reason
            .starts_with("NOTHELD: the reservation is held by worker-B"),
        "{lost:?}"
    );
    println!(
        "loss path: worker-A's keeper stopped its work ({}): {}",
        lost.by, lost.reason
    );
    drop(keeper);
    // worker-B, the holder, writes under its token.
    assert_eq!(fenced_set(con, "worker-B", token_b, "report by B")?, "OK");
    assert_eq!(call::<i64>(con, "RESV.RELEASE", (LOCK, "worker-B"))?, 1);
    Ok(())
}

/// A lease ended by someone else: the lapse event, not the next heartbeat, tells the keeper.
fn lapse_event(client: &Client, con: &mut Connection) -> Result<(), Box<dyn std::error::Error>> {
    const TTL: u64 = 10_000; // next heartbeat in 3.3 s
    call::<i64>(con, "RESV.LOCK", (LOCK, "worker-C", TTL))?;
    let keeper = LeaseKeeper::start(client, Lease::resv(LOCK, "worker-C"), TTL)?;
    let renewals = keeper.renewals();
    // An operator shortens the key's TTL (eviction under maxmemory acts alike): the lease lapses
    // in 50 ms, raising resv.lapse; the keeper renews at once, is told NOTHELD, and marks it lost.
    call::<i64>(con, "PEXPIRE", (LOCK, 50))?;
    let lost = keeper
        .wait_lost(Duration::from_secs(2))
        .expect("the keeper notices the lapse");
    assert_eq!(lost.by, "a lapse event");
    assert_eq!(keeper.renewals(), renewals); // no heartbeat came in between
    assert!(
        lost.reason
            .starts_with("NOTHELD: the reservation is not held"),
        "{lost:?}"
    );
    println!(
        "lapse event: worker-C's keeper stopped its work at once: {}",
        lost.reason
    );
    Ok(())
}
