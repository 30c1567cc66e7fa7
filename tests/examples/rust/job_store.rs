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
    println!("ok");
    Ok(())
}
