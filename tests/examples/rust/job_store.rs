//! fs-job-store, reproduced with corral's JOB commands (the `redis` crate).
//!
//! fs-job-store keeps jobs in a directory; corral keeps a store in one key, leases jobs to
//! workers with fencing tokens, and blocks instead of setTimeout polling:
//!   `store.create(request)`        -> `JOB.CREATE store request` (the job id)
//!   `store.pullJob()`              -> `JOB.PULL store worker lease BLOCK ms`
//!                                     (`[id, request, token]`)
//!   `job.oncompromised`            -> keyspace event `job.lapse`; RENEW then answers -NOTHELD
//!   `store.fulfill(id, value)`     -> `JOB.FULFILL store id value TOKEN token`
//!   `store.queue(id, target)`      -> `JOB.QUEUE store id target`
//!   `store.pullNotification()`     -> `JOB.PULLNOTIFY store worker lease BLOCK ms`
//!                                     (`[id, value, waiting, token]`)
//!   `notification.done(err, done)` -> `JOB.DONE store id worker target...`
use std::collections::HashMap;
use std::time::Duration;

const STORE: &str = "job-store";
const REQUEST: &str = r#"{"calculate":"3+3"}"#;

fn connect() -> redis::RedisResult<redis::Connection> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?; // a hang fails instead of hanging
    Ok(con)
}

/// `JOB.<cmd> store args...`
fn job<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    cmd: &str,
    args: impl redis::ToRedisArgs,
) -> redis::RedisResult<T> {
    redis::cmd(&format!("JOB.{cmd}"))
        .arg(STORE)
        .arg(args)
        .query(con)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut con = connect()?;
    let con = &mut con;
    // Keyspace events of module keys (job.lapse is job.oncompromised), on a second connection.
    let keyspace_events = ["SET", "notify-keyspace-events", "Kd"];
    redis::cmd("CONFIG").arg(&keyspace_events).exec(con)?;
    let mut events_con = connect()?;
    let mut events = events_con.as_pubsub();
    events.subscribe(format!("__keyspace@0__:{STORE}"))?;

    // Job creation, and a target that wants to hear the result.
    let id: i64 = job(con, "CREATE", REQUEST)?;
    assert_eq!(job::<i64>(con, "QUEUE", (id, "client-1"))?, 1);
    println!("created job {id}");

    // The notification worker waits for a fulfilled job with targets (getANotification).
    let notifier = std::thread::spawn(|| {
        job::<Option<(i64, String, Vec<String>, i64)>>(
            &mut connect()?,
            "PULLNOTIFY",
            ("notifier", 30000, "BLOCK", 10000),
        )
    });

    // worker-1 pulls the job; it is exclusive: worker-2 gets nothing.
    let (id1, request, token1): (i64, String, i64) = job(con, "PULL", ("worker-1", 1000))?;
    assert_eq!((id1, request.as_str()), (id, REQUEST));
    assert_eq!(
        job::<Option<redis::Value>>(con, "PULL", ("worker-2", 30000))?,
        None
    );
    println!("worker-1 pulled job {id1} (token {token1}); worker-2 got nothing");

    // worker-1 stalls past its lease: job.oncompromised arrives as a keyspace event.
    while events.get_message()?.get_payload::<String>()? != "job.lapse" {}
    let err = job::<i64>(con, "RENEW", (id, "worker-1", 1000)).unwrap_err();
    assert_eq!(err.code(), Some("NOTHELD"), "{err}");
    println!("worker-1 compromised (job.lapse); renew -> {err}");

    // worker-2's pullJob gets the job again, under a newer token.
    let pulled: Option<(i64, String, i64)> = job(con, "PULL", ("worker-2", 30000, "BLOCK", 10000))?;
    let (id2, _, token2) = pulled.expect("the lapsed job is pullable again");
    assert!(id2 == id && token2 > token1);
    // worker-1's late result is refused by the fencing token.
    let err = job::<i64>(con, "FULFILL", (id, "5", "TOKEN", token1)).unwrap_err();
    assert_eq!(err.code(), Some("STALE"), "{err}");
    assert!(!notifier.is_finished()); // nothing fulfilled yet
    assert_eq!(job::<i64>(con, "FULFILL", (id, "6", "TOKEN", token2))?, 1);
    println!("worker-2 fulfilled job {id} with 6 (token {token2}); worker-1's 5 was refused");

    // The blocked notification worker is handed the value and its waiting targets.
    let (nid, value, waiting, ntoken) = notifier.join().unwrap()?.expect("a notification");
    assert!(nid == id && value == "6" && waiting == ["client-1"] && ntoken > token2);
    println!("notifier: job {nid} = {value}, notify {waiting:?}");
    assert_eq!(job::<i64>(con, "DONE", (id, "notifier", &waiting))?, 1);

    let state: HashMap<String, redis::Value> = job(con, "GET", id)?;
    let field = |k: &str| redis::from_redis_value::<Option<String>>(&state[k]);
    assert_eq!(field("state")?.as_deref(), Some("fulfilled"));
    assert_eq!(field("value")?.as_deref(), Some("6"));
    assert!(redis::from_redis_value::<Vec<String>>(&state["waiting"])?.is_empty());
    assert_eq!(field("holder")?, None); // the notification lease ended with DONE
    let err = job::<i64>(con, "FULFILL", (id, "7")).unwrap_err();
    assert_eq!(err.code(), Some("ALREADY"), "{err}");
    assert_eq!(job::<i64>(con, "DELETE", id)?, 1);
    assert_eq!(redis::cmd("EXISTS").arg(STORE).query::<i64>(con)?, 0);
    beyond_fs_job_store(con)?;
    println!("ok");
    Ok(())
}

/// `JOB.<cmd> queue args...`
fn q<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    cmd: &str,
    args: impl redis::ToRedisArgs,
) -> redis::RedisResult<T> {
    redis::cmd(&format!("JOB.{cmd}"))
        .arg(QUEUE)
        .arg(args)
        .query(con)
}

const QUEUE: &str = "queue";

/// What BullMQ, Sidekiq and SQS users expect of a queue, one command each.
fn beyond_fs_job_store(con: &mut redis::Connection) -> redis::RedisResult<()> {
    type Pulled = Option<(i64, String, i64)>;
    redis::cmd("DEL").arg(QUEUE).exec(con)?;
    // UNIQUE: a retried enqueue answers the same id and creates nothing.
    let bulk: i64 = q(con, "CREATE", ("bulk", "UNIQUE", "report-42"))?;
    assert_eq!(
        q::<i64>(con, "CREATE", ("bulk", "UNIQUE", "report-42"))?,
        bulk
    );
    // PRIORITY: pulled first. DELAY: pending only 300 ms from now.
    let urgent: i64 = q(con, "CREATE", ("urgent", "PRIORITY", 10))?;
    let later: i64 = q(con, "CREATE", ("later", "DELAY", 300))?;
    // ATTEMPTS + BACKOFF: after 2 failed attempts it is `failed` (the dead letter); KEEP: a
    // finished job is deleted 60 s later.
    let args = ("poison", "ATTEMPTS", 2, "BACKOFF", 50, "KEEP", 60000);
    let poison: i64 = q(con, "CREATE", args)?;
    // One round trip per job: FULFILL ... NEXT fulfils, then answers what JOB.PULL would.
    let (jid, _, tok) = q::<Pulled>(con, "PULL", ("w", 5000))?.expect("a job");
    assert_eq!(jid, urgent);
    let next = (jid, "ok", "TOKEN", tok, "NEXT", "w", 5000);
    let (jid, _, tok) = q::<Pulled>(con, "FULFILL", next)?.expect("the next job");
    assert_eq!(jid, bulk);
    let next = (jid, "ok", "TOKEN", tok, "NEXT", "w", 5000);
    let (jid, _, _) = q::<Pulled>(con, "FULFILL", next)?.expect("the next job");
    assert_eq!(jid, poison);
    assert_eq!(q::<String>(con, "FAIL", (poison, "w", "boom"))?, "delayed");
    let again = q::<Pulled>(con, "PULL", ("w", 5000, "BLOCK", 5000))?; // after its backoff
    assert_eq!(again.expect("the poison job again").0, poison);
    assert_eq!(
        q::<String>(con, "FAIL", (poison, "w", "boom again"))?,
        "failed"
    );
    let due = q::<Pulled>(con, "PULL", ("w", 5000, "BLOCK", 5000))?; // once due
    let (jid, _, tok) = due.expect("the delayed job");
    assert_eq!(jid, later);
    // A notification worker's heartbeat: RENEW extends its notification lease.
    assert_eq!(q::<i64>(con, "QUEUE", (later, "client-1"))?, 1);
    let last = (later, "ok", "TOKEN", tok, "NEXT", "w", 5000);
    assert_eq!(q::<Pulled>(con, "FULFILL", last)?, None);
    let (nid, _, _, _): (i64, String, Vec<String>, i64) = q(con, "PULLNOTIFY", ("n", 1000))?;
    assert_eq!(q::<i64>(con, "RENEW", (nid, "n", 5000))?, 1);
    assert_eq!(q::<i64>(con, "DONE", (nid, "n", "client-1"))?, 1);
    // The dead letter: listed, inspected, retried.
    assert_eq!(q::<Vec<i64>>(con, "LIST", "failed")?, [poison]);
    let dead: HashMap<String, redis::Value> = q(con, "GET", poison)?;
    assert_eq!(redis::from_redis_value::<String>(&dead["state"])?, "failed");
    assert_eq!(redis::from_redis_value::<i64>(&dead["attempts"])?, 2);
    assert_eq!(
        redis::from_redis_value::<String>(&dead["reason"])?,
        "boom again"
    );
    assert_eq!(q::<i64>(con, "RETRY", poison)?, 1);
    println!("queue: urgent first, one round trip per job, poison job {poison} dead-lettered then retried");
    redis::cmd("DEL").arg(QUEUE).exec(con)?;
    Ok(())
}
