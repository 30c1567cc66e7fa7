//! atributo, reproduced with corral's ALLOC commands (the `redis` crate).
//!
//! atributo keeps sticky job -> instance allocations in SQLite/PostgreSQL; corral keeps them in
//! one Redis key, with atributo's placement rule (md5 of the job id), so jobs land where they did:
//!   `available(id)`, `unavailable(id, destroy)` -> `ALLOC.AVAILABLE key id`,
//!                                                 `ALLOC.UNAVAILABLE key id [REMOVE]`
//!   `instances()`           -> `ALLOC.INSTANCES key` (`[id, 1|0, ...]`)
//!   `allocate(job)`         -> `ALLOC.ALLOCATE key job` (`[instance, persisted]`)
//!   the `_allocate` override -> `ALLOC.ALLOCATE key job ONLYFOR <my instance>`
//!   `deallocate`, `jobs`, `has_jobs`, `instance` -> `ALLOC.DEALLOCATE`, `JOBS`, `HASJOBS`,
//!                                                  `INSTANCE`
//!   polling `has_jobs` before removing an instance -> `ALLOC.DRAIN key id BLOCK ms`
use redis::{Connection, FromRedisValue, RedisResult, ToRedisArgs};
use std::time::{Duration, Instant};

fn connect() -> RedisResult<Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// One atributo: `ALLOC.<cmd> <key> args...` on its key.
struct Atributo<'a>(&'a mut Connection, &'a str);

impl Atributo<'_> {
    fn call<T: FromRedisValue>(&mut self, cmd: &str, args: impl ToRedisArgs) -> RedisResult<T> {
        redis::cmd(&format!("ALLOC.{cmd}"))
            .arg(self.1)
            .arg(args)
            .query(self.0)
    }
    fn allocate(&mut self, args: impl ToRedisArgs) -> RedisResult<(String, bool)> {
        self.call("ALLOCATE", args)
    }
    fn jobs(&mut self, instance: &str) -> RedisResult<Vec<String>> {
        self.call("JOBS", instance)
    }
    fn instances(&mut self) -> RedisResult<Vec<(String, bool)>> {
        let mut list: Vec<(String, bool)> = self.call("INSTANCES", None::<&str>)?;
        list.sort();
        Ok(list)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut con = connect()?;
    let mut at = Atributo(&mut con, "atributo");
    let avail = |id: &str, yes: bool| (id.to_string(), yes);

    // Make instances available, list them.
    assert_eq!(at.call::<i64>("AVAILABLE", "instance0")?, 1);
    assert_eq!(at.call::<i64>("AVAILABLE", "instance1")?, 1);
    let both = [avail("instance0", true), avail("instance1", true)];
    assert_eq!(at.instances()?, both);

    // Allocate jobs: new allocations are persisted, placed exactly as atributo places them.
    assert_eq!(at.allocate("job0")?, ("instance1".into(), true));
    assert_eq!(at.allocate("job1")?, ("instance0".into(), true));
    assert_eq!(at.jobs("instance0")?, ["job1"]);
    assert_eq!(at.jobs("instance1")?, ["job0"]);
    assert!(at.call::<bool>("HASJOBS", "instance0")?);
    let instance: Option<String> = at.call("INSTANCE", "job1")?;
    assert_eq!(instance.as_deref(), Some("instance0"));
    println!("job0 -> instance1, job1 -> instance0");

    // Make instance0 unavailable but don't remove it: job1 stays where it is (sticky).
    assert_eq!(at.call::<i64>("UNAVAILABLE", "instance0")?, 1);
    let one_down = [avail("instance0", false), avail("instance1", true)];
    assert_eq!(at.instances()?, one_down);
    assert_eq!(at.allocate("job1")?, ("instance0".into(), false));
    println!("instance0 unavailable; job1 still on instance0 (persisted earlier)");

    // Wait for instance0 to drain while its last job is deallocated, then re-allocate that job.
    let drain = std::thread::spawn(|| -> RedisResult<Option<i64>> {
        let mut con = connect()?;
        Atributo(&mut con, "atributo").call("DRAIN", ("instance0", "BLOCK", 10000))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: redis::InfoDict = redis::cmd("INFO").arg("corral").query(at.0)?;
        if info.get::<i64>("corral_alloc_waiting").unwrap_or(0) >= 1 {
            break; // the DRAIN is blocked
        }
        assert!(Instant::now() < deadline, "DRAIN never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(at.call::<i64>("DEALLOCATE", "job1")?, 1);
    assert_eq!(drain.join().unwrap()?, Some(1));
    assert_eq!(at.allocate("job1")?, ("instance1".into(), true));
    println!("job1 deallocated: instance0 drained; job1 -> instance1");

    // Remove instance0 and its allocations (it has none left).
    assert_eq!(at.call::<i64>("UNAVAILABLE", ("instance0", "REMOVE"))?, 0);
    assert_eq!(at.instances()?, [avail("instance1", true)]);
    assert_eq!(at.jobs("instance1")?, ["job0", "job1"]);

    // atributo's second example: each instance persists only the jobs placed on itself.
    let mut at = Atributo(&mut con, "atributo-per-instance");
    at.call::<i64>("AVAILABLE", "instance0")?;
    at.call::<i64>("AVAILABLE", "instance1")?;
    // (job, allocated on, placed on, persisted)
    for (job, me, instance, persisted) in [
        ("job0", "instance0", "instance1", false),
        ("job0", "instance1", "instance1", true),
        ("job1", "instance1", "instance0", false),
        ("job1", "instance0", "instance0", true),
        ("job0", "instance1", "instance1", false), // jobs are persisted only once
    ] {
        let (placed, stored) = at.allocate((job, "ONLYFOR", me))?;
        assert_eq!((placed.as_str(), stored), (instance, persisted));
    }
    assert_eq!(at.jobs("instance0")?, ["job1"]);
    assert_eq!(at.jobs("instance1")?, ["job0"]);
    println!("ONLYFOR: each instance persisted only its own job");
    println!("ok");
    Ok(())
}
