//! callosum-server-slots, reproduced with corral's SLOT commands (the `redis` crate).
//!
//! callosum-server-slots hands a server the lowest free slot number and takes it back:
//!   `new CallosumServerSlots()` -> pick a key name: one pool is one key
//!   `slots.get()`               -> `SLOT.GET pool`
//!   `slots.put(slot)`           -> `SLOT.PUT pool slot` (a slot not taken answers -NOTHELD
//!                                  where the library emitted 'error')
//! corral adds what a pool shared between processes needs: a slot taken as a lease
//! (`HOLDER id TTL ms`, renewed with `SLOT.RENEW`) comes back by itself when its server dies,
//! and a bounded pool (`LIMIT n`) can wait in line for a slot (`BLOCK ms`).
use redis::{Connection, FromRedisValue, RedisResult, ToRedisArgs};
use std::collections::HashMap;
use std::time::Duration;

fn connect() -> RedisResult<Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// `SLOT.<cmd> args...`
fn slot<T: FromRedisValue>(
    con: &mut Connection,
    cmd: &str,
    args: impl ToRedisArgs,
) -> RedisResult<T> {
    redis::cmd(&format!("SLOT.{cmd}")).arg(args).query(con)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut con = connect()?;
    let con = &mut con;
    let pool = "callosum:slots";

    // The sequence callosum-server-slots guarantees: always the lowest available slot.
    let [a, b, c]: [i64; 3] = [
        slot(con, "GET", pool)?,
        slot(con, "GET", pool)?,
        slot(con, "GET", pool)?,
    ];
    assert_eq!([a, b, c], [0, 1, 2]);
    assert_eq!(slot::<i64>(con, "PUT", (pool, a))?, 1); // after the slot is no longer used
    let [d, e]: [i64; 2] = [slot(con, "GET", pool)?, slot(con, "GET", pool)?];
    assert_eq!([d, e], [0, 3]);
    println!("get -> {a}, {b}, {c}; put {a}; get -> {d}, {e}");
    assert_eq!(slot::<i64>(con, "COUNT", pool)?, 4);

    // The library's 'error' event: putting back a slot that is not taken.
    let err = slot::<i64>(con, "PUT", (pool, 7)).unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    println!("put 7 -> error: {err}");

    // A server's slot as a lease in a bounded pool of one slot: server-a takes it for 1 s and
    // then "crashes" (never renews); server-b waits in line and gets the slot when it lapses.
    let leased = "callosum:leased-slots";
    let server_a = (
        leased,
        "HOLDER",
        "server-a",
        "TTL",
        1000,
        "LIMIT",
        1,
        "WITHTOKEN",
    );
    let (n, token_a): (i64, i64) = slot(con, "GET", server_a)?;
    assert_eq!(n, 0);
    assert_eq!(
        slot::<i64>(con, "RENEW", (leased, n, 1000, "HOLDER", "server-a"))?,
        1
    );
    let full: Option<i64> = slot(con, "GET", (leased, "HOLDER", "server-b", "LIMIT", 1))?;
    assert_eq!(full, None);
    println!("server-a holds slot {n} (token {token_a}); the pool is full for server-b");

    let waiter = std::thread::spawn(move || -> RedisResult<Option<(i64, i64)>> {
        let server_b = (leased, "HOLDER", "server-b", "TTL", 30000, "LIMIT", 1);
        slot(
            &mut connect()?,
            "GET",
            (server_b, "BLOCK", 10000, "WITHTOKEN"),
        )
    });
    let (n, token_b) = waiter.join().unwrap()?.expect("server-b gets the slot");
    assert!(n == 0 && token_b > token_a, "{n} {token_b} {token_a}");
    let (holder, ttl, token): (String, i64, i64) = slot(con, "HOLDER", (leased, 0))?;
    assert!(holder == "server-b" && 0 < ttl && ttl <= 30000 && token == token_b);
    println!("server-a's lease lapsed; server-b got slot {n} (token {token_b})");

    // server-a's late heartbeat tells it the slot is gone (and whose it is now).
    let err = slot::<i64>(con, "RENEW", (leased, 0, 1000, "HOLDER", "server-a")).unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"));
    assert_eq!(err.detail(), Some("slot 0 is held by server-b"));
    println!("server-a renew -> {err}");

    assert_eq!(
        slot::<i64>(con, "PUT", (leased, 0, "HOLDER", "server-b"))?,
        1
    );
    // An empty pool is deleted: INFO answers the map of an empty pool.
    let info: HashMap<String, i64> = slot(con, "INFO", leased)?;
    assert_eq!((info["held"], info["highest"]), (0, -1));
    println!("ok");
    Ok(())
}
