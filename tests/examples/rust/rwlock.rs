//! Recipe: a read-write lock on one SEM key (README, "Recipes" → "Read-write lock"), with the
//! `redis` crate.
//!
//! A semaphore of `capacity` permits: a reader takes 1, a writer takes all of them
//! (`PERMITS capacity`), so a writer holds the key alone and readers share it. SEM serves waiters
//! strictly first come, first served, and a request that does not fit holds up every later one:
//! a reader arriving after a waiting writer queues behind it even when a permit is free, so
//! readers cannot starve a writer, and the readers queued behind a writer get in together when
//! it releases.
//! Rules: every client passes the same capacity (the most readers at once); each acquisition
//! uses a holder id of its own (asking again under a held id re-grants what it holds: no
//! upgrade).
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run --example rwlock`
use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Connection, RedisResult};

// ---- the lock: copy from here -----------------------------------------------------------

/// A read-write lock on one SEM key; every client passes the same `capacity`.
#[derive(Clone)]
pub struct RwLock {
    pub key: String,
    pub capacity: u32,
    pub ttl: u64,
}

impl RwLock {
    /// A shared lock: 1 permit. The fencing token, or None (after waiting up to `block` ms).
    pub fn read(
        &self,
        con: &mut Connection,
        holder: &str,
        block: Option<u64>,
    ) -> RedisResult<Option<i64>> {
        self.acquire(con, holder, 1, block)
    }

    /// An exclusive lock: every permit.
    pub fn write(
        &self,
        con: &mut Connection,
        holder: &str,
        block: Option<u64>,
    ) -> RedisResult<Option<i64>> {
        self.acquire(con, holder, self.capacity, block)
    }

    pub fn release(&self, con: &mut Connection, holder: &str) -> RedisResult<i64> {
        redis::cmd("SEM.RELEASE")
            .arg((&self.key, holder))
            .query(con)
    }

    fn acquire(
        &self,
        con: &mut Connection,
        holder: &str,
        permits: u32,
        block: Option<u64>,
    ) -> RedisResult<Option<i64>> {
        let mut cmd = redis::cmd("SEM.ACQUIRE");
        cmd.arg((
            &self.key,
            holder,
            self.capacity,
            self.ttl,
            "PERMITS",
            permits,
        ));
        if let Some(ms) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.query(con)
    }
}

// ---- the demonstration ------------------------------------------------------------------

const BLOCK: Option<u64> = Some(10_000);

fn connect() -> RedisResult<Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// SEM.INFO: permits, holders, next_expiry_ms, last_token, waiters.
fn info(con: &mut Connection, lock: &RwLock) -> RedisResult<HashMap<String, i64>> {
    redis::cmd("SEM.INFO").arg(&lock.key).query(con)
}

fn wait_for(what: &str, mut done: impl FnMut() -> RedisResult<bool>) -> RedisResult<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done()? {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// An acquire on a connection of its own, in a thread (a BLOCKing acquire holds its connection).
fn spawn_acquire(
    lock: &RwLock,
    holder: &'static str,
    write: bool,
) -> JoinHandle<RedisResult<Option<i64>>> {
    let lock = lock.clone();
    std::thread::spawn(move || {
        let con = &mut connect()?;
        if write {
            lock.write(con, holder, BLOCK)
        } else {
            lock.read(con, holder, BLOCK)
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Up to 4 readers; a crashed holder frees in 30 s.
    let lock = RwLock {
        key: "report:rwlock".into(),
        capacity: 4,
        ttl: 30_000,
    };
    let con = &mut connect()?;
    redis::cmd("DEL").arg(&lock.key).exec(con)?;
    let waiters = |con: &mut Connection| -> RedisResult<i64> { Ok(info(con, &lock)?["waiters"]) };

    // Three readers hold the lock together.
    for reader in ["reader-1", "reader-2", "reader-3"] {
        assert!(
            lock.read(con, reader, None)?.is_some(),
            "{reader} reads at once"
        );
    }
    assert_eq!(info(con, &lock)?["permits"], 3);
    println!("reader-1, reader-2, reader-3 hold the read lock");

    // A writer asks for all 4 permits: it waits.
    let writer = spawn_acquire(&lock, "writer", true);
    wait_for("the writer queues", || Ok(waiters(con)? == 1))?;

    // Readers arriving after the writer wait behind it, although a permit is free for each.
    let mut late = Vec::new();
    for (i, reader) in ["reader-4", "reader-5"].into_iter().enumerate() {
        late.push((reader, spawn_acquire(&lock, reader, false)));
        wait_for(&format!("{reader} queues"), || {
            Ok(waiters(con)? == 2 + i as i64)
        })?;
    }
    assert_eq!(info(con, &lock)?["permits"], 3); // one permit free, and still nobody granted
    assert!(!writer.is_finished() && late.iter().all(|(_, t)| !t.is_finished()));
    // A reader that does not wait is refused while anyone waits, even though it would fit.
    assert_eq!(lock.read(con, "reader-6", None)?, None);
    println!(
        "writer waits for 4 permits; reader-4 and reader-5, arriving later, queue behind it \
         (1 permit free); reader-6 without BLOCK is refused"
    );

    // The first readers finish. The writer gets the lock when the last one releases.
    assert_eq!(lock.release(con, "reader-1")?, 1);
    assert_eq!(lock.release(con, "reader-2")?, 1);
    assert_eq!(waiters(con)?, 3); // reader-3 still reads: the writer still waits
    assert!(!writer.is_finished());
    assert_eq!(lock.release(con, "reader-3")?, 1);
    let write_token = writer.join().unwrap()?.expect("the writer is granted");
    let now = info(con, &lock)?;
    assert_eq!((now["permits"], now["holders"], now["waiters"]), (4, 1, 2)); // the writer alone
    assert!(late.iter().all(|(_, t)| !t.is_finished()));
    println!("the readers released; the writer holds all 4 permits alone (token {write_token})");

    // The writer finishes: every reader queued behind it gets in at once.
    assert_eq!(lock.release(con, "writer")?, 1);
    let mut late_tokens = Vec::new();
    for (reader, waiting) in late {
        let token = waiting
            .join()
            .unwrap()?
            .expect("a queued reader is granted");
        assert!(token > write_token, "{token} > {write_token}");
        late_tokens.push((reader, token));
    }
    let now = info(con, &lock)?;
    assert_eq!((now["permits"], now["holders"], now["waiters"]), (2, 2, 0));
    println!("the writer released; reader-4 and reader-5 read together");

    // No upgrade: a reader asking for the write lock under its own id gets its read permit back
    // (the idempotent re-grant), not the exclusive lock. Release, then write under another id.
    let (reader, token) = late_tokens[0];
    assert_eq!(lock.write(con, reader, None)?, Some(token));
    assert_eq!(info(con, &lock)?["permits"], 2);
    for (reader, _) in late_tokens {
        assert_eq!(lock.release(con, reader)?, 1);
    }
    assert_eq!(redis::cmd("EXISTS").arg(&lock.key).query::<i64>(con)?, 0); // free: the key is gone
    println!("ok");
    Ok(())
}
