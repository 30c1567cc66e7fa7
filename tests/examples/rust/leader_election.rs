//! Recipe: leader election with observers (README, "Recipes" → "Leader election with
//! observers"), with the `redis` crate.
//!
//! Candidates campaign with `RESV.LOCK election <id> <ttl> BLOCK 0`: the first is elected at
//! once, the others wait in line inside Redis. The leader heart-beats with RESV.RENEW every
//! ttl/3; when it stops (crashed, hung, partitioned) its lease lapses at its deadline on the
//! server's clock and the next candidate in line is elected in the same step. The fencing token
//! of a leader's lease is its term: terms only increase, so a resource that keeps the highest
//! term it has accepted refuses an old leader. Observers follow resv.grant / resv.release /
//! resv.lapse keyspace events and read RESV.INFO for who leads now.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run --example leader_election`
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Connection, FromRedisValue, RedisError, RedisResult, Script, ToRedisArgs, Value};

const ELECTION: &str = "{cluster}:leader";
const TTL: u64 = 500; // a leader that stops heart-beating is replaced within 500 ms
const MARGIN: Duration = Duration::from_millis(1000); // what a loaded machine may add, here

/// `cmd args…`, e.g. `call(con, "RESV.RENEW", (ELECTION, "node-1", TTL))`.
fn call<T: FromRedisValue>(
    con: &mut Connection,
    cmd: &str,
    args: impl ToRedisArgs,
) -> RedisResult<T> {
    redis::cmd(cmd).arg(args).query(con)
}

fn client() -> RedisResult<redis::Client> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    redis::Client::open(url)
}

fn connect() -> RedisResult<Connection> {
    let con = client()?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// RESV.INFO: holder, ttl, token (nil when free), waiters.
fn info(con: &mut Connection) -> RedisResult<(Option<String>, Option<i64>, i64)> {
    let map: HashMap<String, Value> = call(con, "RESV.INFO", ELECTION)?;
    let field = |name: &str| map.get(name).cloned().unwrap_or(Value::Nil);
    Ok((
        redis::from_redis_value(&field("holder"))?,
        redis::from_redis_value(&field("token"))?,
        redis::from_redis_value(&field("waiters"))?,
    ))
}

// ---- candidates and observers: copy from here -------------------------------------------

/// A leader: its term, and its heartbeat.
pub struct Leader {
    pub id: &'static str,
    pub term: i64,
    pub elected_at: Instant,
    /// (sent, answered) of the last successful renewal.
    pub last_renewal: Arc<Mutex<(Instant, Instant)>>,
    /// Set when a renewal answers NOTHELD: another candidate leads.
    pub deposed: Arc<Mutex<Option<RedisError>>>,
    stop: Arc<AtomicBool>,
    heart: Option<JoinHandle<Connection>>,
}

/// Waits in line until elected (on a connection of its own, without a read timeout: the
/// campaign blocks it for as long as it takes), then heart-beats from a thread.
pub fn campaign(client: &redis::Client, id: &'static str) -> RedisResult<Leader> {
    let mut con = client.get_connection()?;
    let term: i64 = call(&mut con, "RESV.LOCK", (ELECTION, id, TTL, "BLOCK", 0))?;
    let elected_at = Instant::now();
    let last_renewal = Arc::new(Mutex::new((elected_at, elected_at)));
    let deposed = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let heart = std::thread::spawn({
        let (last_renewal, deposed, stop) = (last_renewal.clone(), deposed.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(TTL / 3));
                if stop.load(Ordering::Relaxed) || !heartbeat(&mut con, id, &last_renewal, &deposed)
                {
                    break;
                }
            }
            con
        }
    });
    Ok(Leader {
        id,
        term,
        elected_at,
        last_renewal,
        deposed,
        stop,
        heart: Some(heart),
    })
}

/// One renewal; false once deposed.
fn heartbeat(
    con: &mut Connection,
    id: &str,
    last_renewal: &Mutex<(Instant, Instant)>,
    deposed: &Mutex<Option<RedisError>>,
) -> bool {
    let sent = Instant::now();
    match call::<i64>(con, "RESV.RENEW", (ELECTION, id, TTL)) {
        Ok(_) => {
            *last_renewal.lock().unwrap() = (sent, Instant::now());
            true
        }
        Err(e) => {
            // NOTHELD: the lease lapsed (a pause longer than the TTL) and another candidate
            // leads. Any other failure: a leader that cannot renew cannot know it still leads.
            *deposed.lock().unwrap() = Some(e);
            false
        }
    }
}

impl Leader {
    /// Stops heart-beating (what a hung leader does); answers its connection.
    pub fn stop_heartbeat(&mut self) -> Connection {
        self.stop.store(true, Ordering::Relaxed);
        self.heart.take().expect("heart-beating").join().unwrap()
    }

    /// A graceful hand-over: the next candidate in line is elected at once.
    pub fn resign(mut self) -> RedisResult<i64> {
        let mut con = self.stop_heartbeat();
        call(&mut con, "RESV.RELEASE", (ELECTION, self.id))
    }
}

/// What an observer saw: the event, and for a grant, who leads and under which term.
type Seen = (String, Option<String>, Option<i64>);

/// Follows who leads: the election key's events, and RESV.INFO after each grant (a thread that
/// sends what it sees).
pub fn observe(client: &redis::Client) -> RedisResult<mpsc::Receiver<Seen>> {
    let mut events_con = client.get_connection()?; // no read timeout: events may be far apart
    let mut con = client.get_connection()?;
    let channel = format!(
        "__keyspace@{}__:{ELECTION}",
        client.get_connection_info().redis.db
    );
    let (seen, log) = mpsc::channel();
    let (subscribed, is_subscribed) = mpsc::channel();
    std::thread::spawn(move || -> RedisResult<()> {
        let mut events = events_con.as_pubsub();
        let _ = subscribed.send(events.subscribe(channel));
        loop {
            let event: String = events.get_message()?.get_payload()?;
            // corral's events only (not Redis's own, such as `expired`); heartbeats are not news.
            if !event.starts_with("resv.") || event == "resv.renew" {
                continue;
            }
            let (leader, term) = match event.as_str() {
                "resv.grant" => {
                    let (holder, token, _) = info(&mut con)?;
                    (holder, token)
                }
                _ => (None, None),
            };
            if seen.send((event, leader, term)).is_err() {
                return Ok(()); // nobody looks any more
            }
        }
    });
    is_subscribed.recv().expect("the observer answers")?;
    Ok(log)
}

// ---- a resource the leader commands -----------------------------------------------------

/// A row that keeps the term of its last write (the token column) and refuses an older one: once
/// a new leader has written, a deposed leader cannot. (Written as a script here; in SQL:
/// `UPDATE … SET value = $1, term = $2 WHERE id = $3 AND term <= $2`.)
const FENCED_UPDATE: &str = "
local term = tonumber(redis.call('HGET', KEYS[1], 'term') or '0')
if tonumber(ARGV[1]) < term then
  return redis.error_reply('STALE term ' .. ARGV[1] .. ' is older than ' .. term)
end
redis.call('HSET', KEYS[1], 'term', ARGV[1], 'value', ARGV[2])
return 1";
const ROW: &str = "{cluster}:config";

fn fenced_update(con: &mut Connection, term: i64, value: &str) -> RedisResult<i64> {
    Script::new(FENCED_UPDATE)
        .key(ROW)
        .arg(term)
        .arg(value)
        .invoke(con)
}

// ---- the demonstration ------------------------------------------------------------------

fn wait_for(what: &str, mut done: impl FnMut() -> RedisResult<bool>) -> RedisResult<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done()? {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let con = &mut connect()?;
    call::<()>(con, "DEL", (ELECTION, ROW))?;
    // corral's events are keyspace events of the module class: enable them (K = keyspace
    // channel, d = module events), keeping what the server already had.
    let (_, events): (String, String) = call(con, "CONFIG", ("GET", "notify-keyspace-events"))?;
    call::<()>(
        con,
        "CONFIG",
        ("SET", "notify-keyspace-events", format!("{events}Kd")),
    )?;
    let client = client()?;
    let observer = observe(&client)?;
    let next_seen = || {
        observer
            .recv_timeout(Duration::from_secs(5))
            .expect("the observer sees it")
    };

    // Three candidates campaign, in this order.
    let mut c1 = campaign(&client, "node-1")?;
    let c2 = std::thread::spawn({
        let client = client.clone();
        move || campaign(&client, "node-2")
    });
    wait_for("node-2 waits", || Ok(info(con)?.2 == 1))?;
    let c3 = std::thread::spawn({
        let client = client.clone();
        move || campaign(&client, "node-3")
    });
    wait_for("node-3 waits", || Ok(info(con)?.2 == 2))?;
    assert_eq!(fenced_update(con, c1.term, "set by node-1")?, 1);
    println!(
        "node-1 leads (term {}); node-2 and node-3 wait in line",
        c1.term
    );

    // node-1 leads for three TTLs: its heartbeat keeps the lease.
    std::thread::sleep(Duration::from_millis(3 * TTL));
    assert_eq!(info(con)?, (Some("node-1".into()), Some(c1.term), 2));
    assert!(c1.deposed.lock().unwrap().is_none());

    // node-1 stops heart-beating (it hangs; it does not release).
    let mut c1_con = c1.stop_heartbeat();
    let (sent, answered) = *c1.last_renewal.lock().unwrap();
    let deadline = Instant::now() + Duration::from_millis(TTL) + MARGIN;
    while !c2.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a new leader: not within TTL + margin"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let c2 = c2.join().unwrap()?;
    let elected = c2.elected_at;
    // Never before the lease ran out (the renewal's deadline is at least its send time + TTL) …
    let after_sent = elected.duration_since(sent);
    assert!(
        after_sent >= Duration::from_millis(TTL - 5),
        "node-2 elected {after_sent:?} after the renewal"
    );
    // … and within TTL + margin of the last successful renewal.
    let after = elected.duration_since(answered);
    assert!(
        after <= Duration::from_millis(TTL) + MARGIN,
        "node-2 elected {after:?} after it"
    );
    assert!(c2.term > c1.term, "term {} > {}", c2.term, c1.term);
    println!(
        "node-1 stopped heart-beating; node-2 elected {} ms after its last renewal (term {})",
        after.as_millis(),
        c2.term
    );

    // The observer saw the lapse, then the new grant, and RESV.INFO names the new leader.
    let seen = [next_seen(), next_seen(), next_seen()];
    let grant = |leader: &str, term: i64| {
        (
            "resv.grant".to_string(),
            Some(leader.to_string()),
            Some(term),
        )
    };
    assert_eq!(
        seen,
        [
            grant("node-1", c1.term),
            ("resv.lapse".into(), None, None),
            grant("node-2", c2.term)
        ]
    );
    assert_eq!(info(con)?, (Some("node-2".into()), Some(c2.term), 1));
    println!("observer: resv.grant (node-1), resv.lapse, resv.grant (node-2)");

    // The new leader writes its term to the resource first; node-1, which was only paused, wakes
    // up: its next heartbeat tells it it was deposed, and its write under term 1 is refused.
    assert_eq!(fenced_update(con, c2.term, "set by node-2")?, 1);
    let err = fenced_update(con, c1.term, "late write by node-1").unwrap_err();
    assert_eq!(err.code(), Some("STALE"), "{err}");
    let value: Option<String> = call(con, "HGET", (ROW, "value"))?;
    assert_eq!(value.as_deref(), Some("set by node-2"));
    // What its heartbeat thread does first when it wakes:
    assert!(!heartbeat(
        &mut c1_con,
        c1.id,
        &c1.last_renewal,
        &c1.deposed
    ));
    let deposed = c1
        .deposed
        .lock()
        .unwrap()
        .take()
        .expect("node-1 is deposed");
    assert_eq!(deposed.code(), Some("NOTHELD"), "{deposed}");
    assert_eq!(deposed.detail(), Some("the reservation is held by node-2"));
    println!("node-1's late write under its old term was refused; its renewal answers NOTHELD");

    // node-2 resigns: node-3, next in line, is elected at once.
    let term2 = c2.term;
    assert_eq!(c2.resign()?, 1);
    let deadline = Instant::now() + MARGIN;
    while !c3.is_finished() {
        assert!(
            Instant::now() < deadline,
            "node-3 elected: not within the margin"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let c3 = c3.join().unwrap()?;
    assert!(c3.term > term2);
    assert_eq!(
        [next_seen(), next_seen()],
        [
            ("resv.release".into(), None, None),
            grant("node-3", c3.term)
        ]
    );
    println!("node-2 resigned; node-3 elected at once (term {})", c3.term);

    assert_eq!(c3.resign()?, 1);
    assert_eq!(info(con)?.0, None);
    call::<()>(con, "CONFIG", ("SET", "notify-keyspace-events", events))?;
    println!("ok");
    Ok(())
}
