//! Durable grants: what a failover does to a lock, and what WAIT and fencing tokens do about it.
//!
//! Redis replicates asynchronously: a grant acknowledged by the primary may not have reached the
//! replica when the primary fails, and the promoted replica then knows nothing of it.
//!   (a) A grant confirmed by `WAIT 1 <timeout>` (reply >= 1) is on the replica: it survives the
//!       failover; the new primary refuses other holders and lapses it at its deadline.
//!   (b) A grant the replica never received is lost: the new primary grants the key to someone
//!       else while the old holder still believes it holds it. WAIT tells the old holder (reply
//!       0), and the fencing token still protects the resource: the new grant's token is larger,
//!       so a resource that keeps the highest token refuses the old holder's late write.
//! On Redis 7.2+ (and Valkey) `WAITAOF 1 1 <timeout>` also confirms the grant is fsynced to the
//! AOF of the primary and of a replica; the program turns AOF on for that.
//!
//! Needs REDIS_URL (a primary) and REDIS_REPLICA_URL (its replica, in sync). It promotes the
//! replica (`REPLICAOF NO ONE`): run it against throwaway servers only.
use redis::{Connection, RedisResult, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// ms: long enough to check the grant on the replica and fail over before it lapses.
const TTL: u64 = 3000;

/// A `redis::Connection` is one connection: WAIT and WAITAOF wait for the writes made on *their
/// own* connection, so they follow the grant on the same one.
fn connect(var: &str, default: &str) -> RedisResult<Connection> {
    let url = std::env::var(var).unwrap_or_else(|_| default.into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

fn primary() -> RedisResult<Connection> {
    connect("REDIS_URL", "redis://127.0.0.1:6379")
}

fn replica() -> RedisResult<Connection> {
    connect("REDIS_REPLICA_URL", "redis://127.0.0.1:6380")
}

/// RESV.INFO: holder, ttl, token (None when free) and waiters.
fn resv_info(con: &mut Connection, key: &str) -> RedisResult<HashMap<String, Option<String>>> {
    redis::cmd("RESV.INFO").arg(key).query(con)
}

fn lock(con: &mut Connection, key: &str, holder: &str) -> RedisResult<Option<i64>> {
    redis::cmd("RESV.LOCK")
        .arg(key)
        .arg(holder)
        .arg(TTL)
        .query(con)
}

/// The `field:value` lines of one INFO section.
fn info(con: &mut Connection, section: &str) -> RedisResult<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query(con)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn config_set(con: &mut Connection, name: &str, value: impl redis::ToRedisArgs) -> RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .exec(con)
}

/// `ROLE`'s first two fields: the role and, for a replica, its link state (`connected`).
fn role(con: &mut Connection) -> RedisResult<(String, Option<String>)> {
    let reply: Vec<Value> = redis::cmd("ROLE").query(con)?;
    let text = |v: Option<&Value>| v.and_then(|v| redis::from_redis_value::<String>(v).ok());
    let role = text(reply.first()).unwrap_or_default();
    Ok((role, text(reply.get(3))))
}

/// A resource outside Redis that keeps the highest token it has accepted (README, "Guarding a
/// write with the fencing token"); in SQL:
///   `UPDATE orders SET value = $1, token = $2 WHERE id = $3 AND token <= $2`
#[derive(Default)]
struct FencedResource {
    value: Option<String>,
    token: i64,
}

impl FencedResource {
    fn write(&mut self, token: i64, value: &str) -> bool {
        if token < self.token {
            return false; // a newer holder has written: refuse the stale one
        }
        (self.value, self.token) = (Some(value.to_string()), token);
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The servers as an operator sees them.
    let (mut primary_admin, mut replica_admin) = (primary()?, replica()?);
    let (p, r) = (&mut primary_admin, &mut replica_admin);
    let link = role(r)?;
    assert_eq!(
        (link.0.as_str(), link.1.as_deref()),
        ("slave", Some("connected")),
        "REDIS_REPLICA_URL is no synced replica"
    );

    // WAITAOF exists from Redis 7.2 on. Valkey reports redis_version 7.2.4 (its valkey_version
    // is separate), so the one field tells both apart from Redis 7.0 and 7.1.
    let server = info(p, "server")?;
    let version: Vec<u32> = server["redis_version"]
        .split('.')
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let has_waitaof = (version[0], version[1]) >= (7, 2);
    if has_waitaof {
        // WAITAOF counts AOF fsyncs, so turn the AOF on (fsynced before every reply) on both.
        for con in [&mut *p, &mut *r] {
            config_set(con, "appendonly", "yes")?;
            config_set(con, "appendfsync", "always")?;
        }
        for con in [&mut *p, &mut *r] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let aof = info(con, "persistence")?;
                if aof["aof_enabled"] == "1"
                    && aof["aof_rewrite_in_progress"] == "0"
                    && aof["aof_rewrite_scheduled"] == "0"
                {
                    break;
                }
                assert!(Instant::now() < deadline, "the AOF never came on");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let name = match server.get("valkey_version") {
        Some(v) => format!("Valkey {v}"),
        None => format!("Redis {}", server["redis_version"]),
    };
    let using = if has_waitaof {
        " and WAITAOF"
    } else {
        " only (WAITAOF is Redis 7.2+)"
    };
    println!("{name}: WAIT{using}");

    // worker-a talks to the primary, over its own connection.
    let mut worker_a = primary()?;
    let a = &mut worker_a;

    // (a) A grant confirmed by WAIT survives the failover.
    let token_a = lock(a, "orders:1", "worker-a")?.expect("worker-a gets orders:1");
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(a)?; // replicas that have it
    assert!(
        acked >= 1,
        "WAIT 1 2000 answered {acked}: the grant is not on the replica"
    );
    let mut aof_note = String::new();
    if has_waitaof {
        let fsynced: Vec<i64> = redis::cmd("WAITAOF").arg(1).arg(1).arg(2000).query(a)?;
        assert_eq!(
            fsynced,
            [1, 1],
            "WAITAOF 1 1 2000: [local, replicas] fsynced"
        );
        aof_note = format!(", WAITAOF -> {fsynced:?}");
    }
    let on_replica = resv_info(r, "orders:1")?;
    assert_eq!(on_replica["holder"].as_deref(), Some("worker-a"));
    assert_eq!(on_replica["token"], Some(token_a.to_string()));
    println!(
        "(a) worker-a locked orders:1 (token {token_a}); WAIT -> {acked}{aof_note}; \
         the replica has it"
    );

    // The failover: the primary is gone (as far as anyone can tell) and the replica is promoted.
    redis::cmd("REPLICAOF").arg("NO").arg("ONE").exec(r)?;
    assert_eq!(role(r)?.0, "master");
    let mut worker_b = replica()?; // worker-b talks to the new primary
    let b = &mut worker_b;

    // The new primary kept worker-a's grant: worker-b is refused...
    assert_eq!(lock(b, "orders:1", "worker-b")?, None);
    let left: u64 = resv_info(b, "orders:1")?["ttl"]
        .as_deref()
        .expect("worker-a's grant has a ttl")
        .parse()?;
    // ...until the new primary lapses it at its deadline, and hands it to worker-b, who waits.
    let started = Instant::now();
    let token_b: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("orders:1")
        .arg("worker-b")
        .arg(TTL)
        .arg("BLOCK")
        .arg(10000)
        .query(b)?;
    let waited = started.elapsed().as_millis() as u64;
    let token_b = token_b.expect("the new primary never lapsed worker-a's grant");
    assert!(
        waited + 250 >= left,
        "granted after {waited} ms, but worker-a had {left} ms left"
    );
    assert!(token_b > token_a, "{token_b} <= {token_a}");
    println!(
        "(a) after the failover worker-b was refused, then got orders:1 when worker-a's grant \
         lapsed {waited} ms later ({left} ms were left), token {token_b}"
    );

    // (b) A grant the replica never received is lost. The old primary is still up, cut off from
    // the failover (a partition): worker-a's client still talks to it. The promotion above cut
    // the link, so nothing granted there from now on can reach the new primary.
    let token_a2 = lock(a, "orders:2", "worker-a")?.expect("the old primary still grants");
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(300).query(a)?;
    assert_eq!(
        acked, 0,
        "WAIT answered {acked}, but no replica is attached any more"
    );
    let mut aof_note = String::new();
    if has_waitaof {
        let fsynced: Vec<i64> = redis::cmd("WAITAOF").arg(1).arg(1).arg(300).query(a)?;
        assert_eq!(fsynced, [1, 0], "WAITAOF 1 1 300"); // on local disk only
        aof_note = format!(", WAITAOF -> {fsynced:?}");
    }
    println!(
        "(b) worker-a locked orders:2 on the old primary (token {token_a2}); WAIT -> 0{aof_note}: \
         the grant is not durable"
    );
    // A careful worker-a stops here: it releases the grant (or lets it lapse) and retries. This
    // one goes ahead, to show what the fencing token still protects.
    let mut resource = FencedResource::default();
    assert!(resource.write(token_a2, "written by worker-a"));

    // The new primary never heard of worker-a's grant, and grants orders:2 to worker-b.
    assert_eq!(resv_info(b, "orders:2")?["holder"], None);
    let token_b2 = lock(b, "orders:2", "worker-b")?.expect("the new primary grants orders:2");
    // Both believe they hold it.
    assert_eq!(
        resv_info(p, "orders:2")?["holder"].as_deref(),
        Some("worker-a")
    );
    assert!(
        token_b2 > token_a2,
        "new token {token_b2} is not above the lost one {token_a2}"
    );
    println!(
        "(b) the new primary granted orders:2 to worker-b too (token {token_b2} > {token_a2})"
    );

    assert!(resource.write(token_b2, "written by worker-b"));
    assert!(
        !resource.write(token_a2, "late write by worker-a"),
        "a stale write was accepted"
    );
    assert_eq!(resource.value.as_deref(), Some("written by worker-b"));
    println!("(b) the resource took worker-b's write and refused worker-a's late one");

    // The Redis setting that narrows the partition window: a primary with fewer than
    // min-replicas-to-write replicas (acked within min-replicas-max-lag seconds) refuses writes.
    config_set(p, "min-replicas-to-write", 1)?;
    let err = lock(a, "orders:3", "worker-a").expect_err("a primary without replicas granted");
    assert_eq!(err.code(), Some("NOREPLICAS"), "{err}");
    println!("with min-replicas-to-write 1 the old primary refuses: {err}");
    config_set(p, "min-replicas-to-write", 0)?;

    for key in ["orders:1", "orders:2"] {
        let released: i64 = redis::cmd("RESV.RELEASE")
            .arg(key)
            .arg("worker-b")
            .query(b)?;
        assert_eq!(released, 1);
    }
    println!("ok");
    Ok(())
}
