//! redis-reservation, reproduced with corral's RESV commands (the `redis` crate).
//!
//! redis-reservation locks a resource for a worker, keeps the lock alive with a heartbeat and
//! lets it expire when the worker dies:
//!   `reservation.lock(resource)`            -> `RESV.LOCK resource worker ttl` (token or nil)
//!   `reservation.wait_until_lock(resource)` -> `RESV.LOCK resource worker ttl BLOCK 0`
//!   heartbeat every `heartbeat_interval`    -> `RESV.RENEW resource worker ttl`
//!   `reservation.release()`                 -> `RESV.RELEASE resource worker` (-NOTHELD: lost)
//! Every grant returns a fencing token; `RESV.CHECK` guards a write with it, inside a script that
//! checks first (`FENCED_SET` below: its error aborts the script before the write; MULTI/EXEC
//! would not, an error there does not stop the write after it).
use redis::{Connection, FromRedisValue, RedisResult, Script, ToRedisArgs};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const JOB: &str = "nightly-report";
const LOCK_TTL: u64 = 30 * 60 * 1000; // lock_ttl: 30 minutes (corral takes milliseconds)
/// The guarded data: `{nightly-report}:…` hashes to the lock key's slot (Redis Cluster).
const RESULT: &str = "{nightly-report}:result";

/// A write guarded by the fencing token (README, "Guarding a write with the fencing token"):
/// `redis.call` raises on RESV.CHECK's -NOTHELD / -STALE, which aborts the script before the SET.
const FENCED_SET: &str = "
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])";

/// Writes `value` to [`RESULT`] only if `holder` holds the lock under `token`.
fn fenced_set(con: &mut Connection, holder: &str, token: i64, value: &str) -> RedisResult<String> {
    // EVALSHA, loading the script if the server does not have it yet.
    Script::new(FENCED_SET)
        .key(JOB)
        .key(RESULT)
        .arg(holder)
        .arg(token)
        .arg(value)
        .invoke(con)
}

fn connect() -> RedisResult<Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// RESV.INFO: holder, ttl, token (None when free) and waiters.
fn info(con: &mut Connection) -> RedisResult<HashMap<String, Option<String>>> {
    redis::cmd("RESV.INFO").arg(JOB).query(con)
}

/// `RESV.<cmd> nightly-report args...`
fn resv<T: FromRedisValue>(
    con: &mut Connection,
    cmd: &str,
    args: impl ToRedisArgs,
) -> RedisResult<T> {
    redis::cmd(&format!("RESV.{cmd}"))
        .arg(JOB)
        .arg(args)
        .query(con)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut con = connect()?;
    let con = &mut con;
    redis::cmd("DEL").arg(JOB).arg(RESULT).exec(con)?;

    // reservation.lock job_name: worker-1 gets it, worker-2 is told it is already held.
    let token1: i64 = resv(con, "LOCK", ("worker-1", LOCK_TTL))?;
    assert_eq!(
        resv::<Option<i64>>(con, "LOCK", ("worker-2", LOCK_TTL))?,
        None
    );
    println!("worker-1 locked {JOB} (token {token1}); worker-2: reservation already held");

    // The heartbeat, and a retried lock by the holder: same token back.
    assert_eq!(resv::<i64>(con, "RENEW", ("worker-1", LOCK_TTL))?, 1);
    assert_eq!(resv::<i64>(con, "LOCK", ("worker-1", LOCK_TTL))?, token1);

    // reservation.wait_until_lock job_name: worker-2 blocks inside Redis until worker-1 releases.
    let waiter = std::thread::spawn(|| -> RedisResult<Option<i64>> {
        resv(&mut connect()?, "LOCK", ("worker-2", 1000, "BLOCK", 0))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while info(con)?["waiters"].as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "worker-2 never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!waiter.is_finished()); // still blocked while worker-1 holds it
    assert_eq!(resv::<i64>(con, "RELEASE", "worker-1")?, 1);
    let token2 = waiter.join().unwrap()?.expect("worker-2 gets the lock");
    assert!(token2 > token1);
    println!("worker-1 released; worker-2's wait_until_lock returned (token {token2})");

    // worker-1 releasing again: "maybe the reservation was already lost?"
    let err = resv::<i64>(con, "RELEASE", "worker-1").unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    println!("worker-1 release again -> {err}");

    // worker-2 dies without heartbeating: its 1 s lock expires and worker-1 gets it.
    let token3: Option<i64> = resv(con, "LOCK", ("worker-1", LOCK_TTL, "BLOCK", 10000))?;
    let token3 = token3.expect("worker-2's lock expires");
    assert!(token3 > token2);
    println!("worker-2's lock expired; worker-1 locked it again (token {token3})");

    // worker-2 wakes up: its heartbeat fails, and a write fenced by an old token is refused.
    let err = resv::<i64>(con, "RENEW", ("worker-2", LOCK_TTL)).unwrap_err();
    assert_eq!(
        (err.code(), err.detail()),
        (Some("NOTHELD"), Some("the reservation is held by worker-1"))
    );
    assert_eq!(resv::<i64>(con, "CHECK", ("worker-1", token3))?, 1);
    let err = resv::<i64>(con, "CHECK", ("worker-1", token1)).unwrap_err();
    assert_eq!(err.code(), Some("STALE"), "{err}");
    println!("check with worker-1's first token -> {err}");

    // The guarded write: worker-2 (lapsed) and worker-1 with its first token are refused and
    // write nothing; worker-1 with its current token writes.
    let err = fenced_set(con, "worker-2", token2, "report by worker-2").unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    assert!(
        err.detail()
            .unwrap()
            .starts_with("the reservation is held by worker-1"),
        "{err}"
    );
    println!("guarded write by worker-2 -> {err}");
    let err = fenced_set(con, "worker-1", token1, "report by worker-1").unwrap_err();
    assert_eq!(err.code(), Some("STALE"), "{err}");
    println!("guarded write by worker-1 with its first token -> {err}");
    let get = |con: &mut Connection| -> RedisResult<Option<String>> {
        redis::cmd("GET").arg(RESULT).query(con)
    };
    assert_eq!(get(con)?, None);
    assert_eq!(
        fenced_set(con, "worker-1", token3, "report by worker-1")?,
        "OK"
    );
    assert_eq!(get(con)?.as_deref(), Some("report by worker-1"));
    println!("guarded write by worker-1 with its current token went through");

    assert_eq!(resv::<i64>(con, "RELEASE", "worker-1")?, 1);
    assert_eq!(info(con)?["holder"], None); // free: the key is gone
    println!("ok");
    Ok(())
}
