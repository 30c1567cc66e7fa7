//! A bounded worker pool: one JOB store, at most K running jobs of each kind (one SEM per kind).
//!
//! Each worker loops:
//!   `JOB.PULL store worker LEASE BLOCK …`             the next job, under a work lease
//!   `SEM.ACQUIRE running:<kind> worker K PERMIT_TTL BLOCK PERMIT_WAIT`
//!     granted → `JOB.RENEW` (the work gets a whole lease), work, `JOB.FULFILL … TOKEN`,
//!               `SEM.RELEASE`
//!     nil     → `JOB.RELEASE`: the job goes back in line (not a failed attempt), pull again
//! The job comes first because its kind is only known once it is pulled; the worker waits for a
//! permit in the semaphore's FIFO queue while it holds the job, so the lease must outlast the
//! wait (LEASE > PERMIT_WAIT). A worker that dies loses nothing: its permit lapses after
//! PERMIT_TTL, its job lease after LEASE, and the job goes to another worker (a failed attempt,
//! reason "lapsed").
//!
//! Here machine m0 dies while its two workers run encode jobs; machines m1–m3 (two workers each,
//! in threads with a connection each) do all the jobs.
use redis::{Connection, RedisResult, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const STORE: &str = "pool:jobs";
const KINDS: [&str; 3] = ["encode", "resize", "upload"];
/// At most K running jobs of a kind.
const K: u32 = 2;
/// 12 of each kind, in pairs: encode, encode, resize, resize, upload, upload, encode, …
const JOBS: usize = 36;
/// ms: the job's work lease.
const LEASE: u64 = 1500;
/// ms: a permit lapses this long after it was taken, if not released.
const PERMIT_TTL: u64 = 1500;
/// ms: how long a worker waits for a permit before giving the job back.
const PERMIT_WAIT: u64 = 500;
/// What a job takes.
const WORK: Duration = Duration::from_millis(10);

fn connect() -> RedisResult<Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

fn sem_key(kind: &str) -> String {
    format!("pool:running:{kind}")
}

/// The map `SEM.INFO`, `JOB.INFO` or `JOB.GET` answers.
fn map(
    con: &mut Connection,
    cmd: &str,
    args: impl redis::ToRedisArgs,
) -> RedisResult<HashMap<String, Value>> {
    redis::cmd(cmd).arg(args).query(con)
}

/// One field of such a map as a string ("" for nil).
fn field(map: &HashMap<String, Value>, name: &str) -> String {
    redis::from_redis_value::<Option<String>>(&map[name])
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// What the workers report, to check the pool's promises afterwards.
#[derive(Default)]
struct Stats {
    /// Jobs of a kind between permit and release, right now.
    running: HashMap<String, u32>,
    max_running: HashMap<String, u32>,
    /// Job id -> successful FULFILLs.
    fulfilled: HashMap<i64, u32>,
    /// Worker -> jobs it fulfilled.
    by_worker: BTreeMap<String, u32>,
    /// Jobs given back after PERMIT_WAIT without a permit.
    gave_back: u32,
    /// When a live worker first got an encode permit.
    first_live_encode: Option<Instant>,
    errors: Vec<String>,
}

/// One pulled job: get a permit for its kind, do it, fulfil it — or give it back.
fn work_one(
    con: &mut Connection,
    worker: &str,
    (id, request, token): (i64, String, i64),
    stats: &Mutex<Stats>,
) -> RedisResult<()> {
    let kind = request.split(':').next().unwrap_or_default().to_string();
    let permit: Option<i64> = redis::cmd("SEM.ACQUIRE")
        .arg(sem_key(&kind))
        .arg(worker)
        .arg(K)
        .arg(PERMIT_TTL)
        .arg("BLOCK")
        .arg(PERMIT_WAIT)
        .query(con)?;
    if permit.is_none() {
        // The kind stayed full for PERMIT_WAIT: give the job back (still pending, no attempt
        // counted) rather than sit on it past its lease.
        redis::cmd("JOB.RELEASE")
            .arg(STORE)
            .arg(id)
            .arg(worker)
            .exec(con)?;
        stats.lock().unwrap().gave_back += 1;
        return Ok(());
    }
    let done = (|| -> RedisResult<()> {
        // The wait used part of the lease: renew it so the work gets a whole one.
        redis::cmd("JOB.RENEW")
            .arg(STORE)
            .arg(id)
            .arg(worker)
            .arg(LEASE)
            .exec(con)?;
        {
            let mut s = stats.lock().unwrap();
            let now = *s
                .running
                .entry(kind.clone())
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let max = s.max_running.entry(kind.clone()).or_default();
            *max = (*max).max(now);
            if kind == "encode" && s.first_live_encode.is_none() {
                s.first_live_encode = Some(Instant::now());
            }
        }
        std::thread::sleep(WORK); // the work
                                  // Before the permit goes: someone may take it at once.
        *stats.lock().unwrap().running.get_mut(&kind).unwrap() -= 1;
        // TOKEN: had the lease lapsed and the job gone to another worker, this answers -STALE
        // instead of fulfilling twice.
        redis::cmd("JOB.FULFILL")
            .arg(STORE)
            .arg(id)
            .arg(format!("{request} done by {worker}"))
            .arg("TOKEN")
            .arg(token)
            .exec(con)?;
        let mut s = stats.lock().unwrap();
        *s.fulfilled.entry(id).or_default() += 1;
        *s.by_worker.entry(worker.to_string()).or_default() += 1;
        Ok(())
    })();
    let mut s = stats.lock().unwrap();
    match done {
        Ok(()) => {}
        // NOTHELD/STALE: the lease lapsed (a stall); the job is not ours any more.
        Err(e) if e.code().is_some() => s.errors.push(format!("{worker} job {id}: {e}")),
        Err(e) => return Err(e),
    }
    drop(s);
    let released: RedisResult<i64> = redis::cmd("SEM.RELEASE")
        .arg(sem_key(&kind))
        .arg(worker)
        .query(con);
    match released {
        Ok(_) => Ok(()),
        // NOTHELD: the permit lapsed while we worked.
        Err(e) if e.code().is_some() => {
            let msg = format!("{worker} permit for {kind}: {e}");
            stats.lock().unwrap().errors.push(msg);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn run_worker(
    worker: String,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
) -> RedisResult<()> {
    let mut con = connect()?;
    start.wait();
    while !stop.load(Ordering::SeqCst) {
        let job: Option<(i64, String, i64)> = redis::cmd("JOB.PULL")
            .arg(STORE)
            .arg(&worker)
            .arg(LEASE)
            .arg("BLOCK")
            .arg(100)
            .query(&mut con)?;
        if let Some(job) = job {
            work_one(&mut con, &worker, job, &stats)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = connect()?;
    let admin = &mut admin;
    let mut keys = vec![STORE.to_string()];
    keys.extend(KINDS.map(sem_key));
    redis::cmd("DEL").arg(keys).exec(admin)?;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let request = format!("{}:{i}", KINDS[i / 2 % 3]);
        let id: i64 = redis::cmd("JOB.CREATE")
            .arg(STORE)
            .arg(request)
            .query(admin)?;
        ids.push(id);
    }

    // Machine m0 takes the first two jobs (both encode), gets both encode permits, and dies: its
    // connections close, nothing is released.
    let dead_since = Instant::now();
    let mut dead_jobs = Vec::new();
    for worker in ["m0-w1", "m0-w2"] {
        let mut con = connect()?;
        let (id, request, _token): (i64, String, i64) = redis::cmd("JOB.PULL")
            .arg(STORE)
            .arg(worker)
            .arg(LEASE)
            .query(&mut con)?;
        assert!(request.starts_with("encode:"), "{request}");
        let permit: Option<i64> = redis::cmd("SEM.ACQUIRE")
            .arg(sem_key("encode"))
            .arg(worker)
            .arg(K)
            .arg(PERMIT_TTL)
            .query(&mut con)?;
        assert!(permit.is_some());
        dead_jobs.push(id);
        drop(con);
    }
    println!("m0 died holding jobs {dead_jobs:?} and both encode permits");

    let workers: Vec<String> = (1..=3)
        .flat_map(|m| (1..=2).map(move |w| format!("m{m}-w{w}")))
        .collect();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(workers.len() + 1));
    let threads: Vec<_> = workers
        .iter()
        .map(|w| {
            let (w, stats, stop, start) = (w.clone(), stats.clone(), stop.clone(), start.clone());
            std::thread::spawn(move || run_worker(w, stats, stop, start))
        })
        .collect();
    // The server's own count of permits in use, sampled while the pool runs.
    let monitor = {
        let stop = stop.clone();
        std::thread::spawn(move || -> RedisResult<HashMap<&str, u32>> {
            let mut con = connect()?;
            let mut sampled_max = HashMap::new();
            while !stop.load(Ordering::SeqCst) {
                for kind in KINDS {
                    let permits: u32 = field(&map(&mut con, "SEM.INFO", sem_key(kind))?, "permits")
                        .parse()
                        .unwrap_or(u32::MAX);
                    let max = sampled_max.entry(kind).or_default();
                    *max = permits.max(*max);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(sampled_max)
        })
    };

    start.wait();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let s = stats.lock().unwrap();
        if s.fulfilled.len() >= JOBS || !s.errors.is_empty() || Instant::now() > deadline {
            break;
        }
        drop(s);
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("worker panicked")?;
    }
    let sampled_max = monitor.join().expect("monitor panicked")?;
    let s = stats.lock().unwrap();

    assert!(s.errors.is_empty(), "{:?}", s.errors);
    // Every job done exactly once, within the bound.
    for id in &ids {
        assert_eq!(s.fulfilled.get(id), Some(&1), "job {id}");
    }
    assert_eq!(s.fulfilled.len(), JOBS);
    let info = map(admin, "JOB.INFO", STORE)?;
    let counts = ["fulfilled", "pending", "leased"].map(|f| field(&info, f));
    assert_eq!(
        counts,
        [JOBS.to_string(), "0".into(), "0".into()],
        "{info:?}"
    );
    assert!(took < Duration::from_secs(10), "the pool took {took:?}");
    // Never more than K of a kind at once: counted by the workers and sampled from the server.
    assert!(
        s.max_running.values().all(|&n| n <= K),
        "{:?}",
        s.max_running
    );
    assert!(
        s.max_running.values().any(|&n| n == K),
        "the limit never bound"
    );
    assert!(sampled_max.values().all(|&n| n <= K), "{sampled_max:?}");
    // Every worker took part.
    assert_eq!(s.by_worker.keys().cloned().collect::<Vec<_>>(), workers);
    // m0's permits counted against encode's K until they lapsed; meanwhile the workers that
    // pulled encode jobs gave them back after PERMIT_WAIT. Its jobs' leases lapsed and others did
    // them.
    let first = s.first_live_encode.expect("encode jobs ran") - dead_since;
    assert!(
        first >= Duration::from_millis(PERMIT_TTL - 50),
        "a live worker got an encode permit {first:?} after m0 died"
    );
    assert!(s.gave_back > 0);
    for id in &dead_jobs {
        let job = map(admin, "JOB.GET", (STORE, id))?;
        let got = ["state", "attempts", "reason"].map(|f| field(&job, f));
        assert_eq!(got, ["fulfilled", "1", "lapsed"], "{job:?}");
        assert!(!field(&job, "value").contains(" done by m0-"), "{job:?}");
    }
    // Nothing left: every permit was released.
    for kind in KINDS {
        assert_eq!(
            field(&map(admin, "SEM.INFO", sem_key(kind))?, "holders"),
            "0"
        );
    }

    println!(
        "{JOBS} jobs done once each in {:.2} s by {:?}",
        took.as_secs_f64(),
        s.by_worker
    );
    println!(
        "most running at once per kind: {:?} (server: {sampled_max:?}), limit {K}; {} jobs \
         given back while m0's encode permits were held",
        s.max_running, s.gave_back
    );
    println!("ok");
    Ok(())
}
