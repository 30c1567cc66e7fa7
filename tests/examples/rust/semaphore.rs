//! @eqworks/passbuddy, reproduced with corral's SEM commands (the `redis` crate).
//!
//! passbuddy is a semaphore whose permits expire (a sorted set of uuid -> timeout); corral keeps
//! the same holders-by-expiry in one key and waits in line instead of polling:
//!   `new PassBuddy({prefix, name, capacity, TTL})` -> key `<prefix>:<name>`, an id per consumer
//!   `pass.acquire()` -> `SEM.ACQUIRE key id capacity TTL` ("acquire or extend")
//!   `pass.use()`     -> the same ACQUIRE with `BLOCK maxAttempts x retryInterval`
//!   `pass.release()` -> `SEM.RELEASE key id` (-NOTHELD once the permit is gone)
//! A permit is reclaimed at exactly its TTL (passbuddy: 2 x TTL).
use std::collections::HashMap;
use std::time::{Duration, Instant};

const KEY: &str = "passbuddy-test:testlock";
const CAPACITY: u32 = 2; // passbuddy defaults: 10 permits, TTL 5000 ms
const TTL: u64 = 10_000;
const USE_WAIT: u64 = 20 * 500; // use(): maxAttempts 20 x retryInterval 500 ms

fn connect() -> redis::RedisResult<redis::Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// `SEM.ACQUIRE key holder capacity ttl [BLOCK ms]` -> the fencing token, or None.
fn acquire(
    con: &mut redis::Connection,
    holder: &str,
    ttl: u64,
    block: Option<u64>,
) -> redis::RedisResult<Option<i64>> {
    let mut cmd = redis::cmd("SEM.ACQUIRE");
    cmd.arg(KEY).arg(holder).arg(CAPACITY).arg(ttl);
    if let Some(ms) = block {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.query(con)
}

fn release(con: &mut redis::Connection, holder: &str) -> redis::RedisResult<i64> {
    redis::cmd("SEM.RELEASE").arg(KEY).arg(holder).query(con)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut con = connect()?;
    let con = &mut con;
    let pid = std::process::id();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| format!("{n}-{pid}")); // passbuddy: uuids

    // Two consumers take the two permits; b's is short-lived (a lambda that will die).
    let token_a = acquire(con, &a, TTL, None)?.expect("a permit is free");
    let token_b = acquire(con, &b, 1500, None)?.expect("a permit is free");
    assert!(token_b > token_a);
    // acquire() again extends a's permit: same token, even when the semaphore is full.
    assert_eq!(acquire(con, &a, TTL, None)?, Some(token_a));
    assert_eq!(acquire(con, &c, TTL, None)?, None); // at capacity: denied
    assert_eq!(redis::cmd("SEM.COUNT").arg(KEY).query::<i64>(con)?, 2);
    let holders: Vec<(String, i64, i64, i64)> = redis::cmd("SEM.HOLDERS").arg(KEY).query(con)?;
    let order: Vec<&str> = holders.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(order, [b.as_str(), a.as_str()]); // earliest expiry first, as passbuddy's sorted set
    println!(
        "a and b hold the 2 permits; c is denied; holders by expiry: b ({} ms), a",
        holders[0].1
    );

    // c's use() waits in line; b never releases, its permit is reclaimed at its TTL and goes to c.
    let token_c = acquire(con, &c, TTL, Some(USE_WAIT))?.expect("b's permit lapses");
    assert!(token_c > token_b);
    println!("b's permit expired; c acquired it (token {token_c})");
    let err = release(con, &b).unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    println!("b release -> {err}");

    // d blocks while a and c hold; a's release (releaseOnEnd) hands the permit to d at once.
    let d2 = d.clone();
    let waiter = std::thread::spawn(move || acquire(&mut connect()?, &d2, TTL, Some(USE_WAIT)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: HashMap<String, i64> = redis::cmd("SEM.INFO").arg(KEY).query(con)?;
        if info["waiters"] >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "d never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!waiter.is_finished());
    assert_eq!(release(con, &a)?, 1);
    let token_d = waiter.join().unwrap()?.expect("d gets a's permit");
    assert!(token_d > token_c);
    println!("a released; d acquired (token {token_d})");
    assert_eq!(release(con, &a).unwrap_err().code(), Some("NOTHELD")); // releasing twice

    assert_eq!(release(con, &c)?, 1);
    assert_eq!(release(con, &d)?, 1);
    assert_eq!(redis::cmd("SEM.COUNT").arg(KEY).query::<i64>(con)?, 0);
    assert_eq!(redis::cmd("EXISTS").arg(KEY).query::<i64>(con)?, 0);
    println!("ok");
    Ok(())
}
