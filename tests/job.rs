//! JOB.* against a real redis-server with corral loaded.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::client::{
    assert_alive, digest, error_of, fields, info_int, int, int_fields, keyevents, rewrite_aof,
    subscribe_keyevents,
};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

type Pulled = Option<(i64, Vec<u8>, i64)>;
type Notification = Option<(i64, Vec<u8>, Vec<Vec<u8>>, i64)>;

fn create(c: &mut Connection, key: &str, request: &[u8]) -> i64 {
    redis::cmd("JOB.CREATE")
        .arg(key)
        .arg(request)
        .query(c)
        .unwrap()
}

fn pull(c: &mut Connection, key: &str, worker: &str, ms: u64, block: Option<u64>) -> Pulled {
    let mut cmd = redis::cmd("JOB.PULL");
    cmd.arg(key).arg(worker).arg(ms);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b);
    }
    cmd.query(c).unwrap()
}

fn pullnotify(
    c: &mut Connection,
    key: &str,
    worker: &str,
    ms: u64,
    block: Option<u64>,
) -> Notification {
    let mut cmd = redis::cmd("JOB.PULLNOTIFY");
    cmd.arg(key).arg(worker).arg(ms);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b);
    }
    cmd.query(c).unwrap()
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(b.clone()),
        v => panic!("{v:?}"),
    }
}

fn opt_int(v: &Value) -> Option<i64> {
    match v {
        Value::Nil => None,
        Value::Int(i) => Some(*i),
        v => panic!("{v:?}"),
    }
}

/// JOB.GET as a struct.
#[derive(Debug, Clone, PartialEq)]
struct Job {
    state: String,
    request: Vec<u8>,
    value: Option<Vec<u8>>,
    waiting: Vec<Vec<u8>>,
    holder: Option<Vec<u8>>,
    ttl: Option<i64>,
    token: Option<i64>,
}

impl Job {
    /// Everything but the ttl (which moves with time).
    fn without_ttl(&self) -> Job {
        Job {
            ttl: None,
            ..self.clone()
        }
    }
}

fn get(c: &mut Connection, key: &str, id: i64) -> Option<Job> {
    let v: Value = redis::cmd("JOB.GET").arg(key).arg(id).query(c).unwrap();
    let f: HashMap<String, Value> = fields(v)?.into_iter().collect();
    let waiting = match &f["waiting"] {
        Value::Array(a) => a.iter().map(|t| bytes(t).unwrap()).collect(),
        v => panic!("{v:?}"),
    };
    Some(Job {
        state: String::from_utf8(bytes(&f["state"]).unwrap()).unwrap(),
        request: bytes(&f["request"]).unwrap(),
        value: bytes(&f["value"]),
        waiting,
        holder: bytes(&f["holder"]),
        ttl: opt_int(&f["ttl"]),
        token: opt_int(&f["token"]),
    })
}

/// JOB.INFO as a map of counts.
fn info(c: &mut Connection, key: &str) -> HashMap<String, i64> {
    let v: Value = redis::cmd("JOB.INFO").arg(key).query(c).unwrap();
    int_fields(v).expect("JOB.INFO is never nil")
}

fn waiters(c: &mut Connection, key: &str) -> i64 {
    info(c, key)["waiters"]
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn done(c: &mut Connection, key: &str, id: i64, worker: &str, targets: &[&str]) -> i64 {
    let mut cmd = redis::cmd("JOB.DONE");
    cmd.arg(key).arg(id).arg(worker);
    for t in targets {
        cmd.arg(*t);
    }
    cmd.query(c).unwrap()
}

fn queue(c: &mut Connection, cmd: &str, key: &str, id: i64, targets: &[&str]) -> i64 {
    let mut q = redis::cmd(cmd);
    q.arg(key).arg(id);
    for t in targets {
        q.arg(*t);
    }
    q.query(c).unwrap()
}

#[test]
fn full_workflow_queue_before_and_after_fulfilment() {
    let s = Server::start();
    let mut c = s.conn();
    let a = create(&mut c, "jobs", b"3+3");
    let bb = create(&mut c, "jobs", b"4+4");
    assert!(bb > a && a > 0, "ids increase: {a} {bb}");
    let job = get(&mut c, "jobs", a).unwrap();
    assert_eq!(
        job,
        Job {
            state: "pending".into(),
            request: b("3+3"),
            value: None,
            waiting: vec![],
            holder: None,
            ttl: None,
            token: None
        }
    );
    assert_eq!(int(&mut c, &["PTTL", "jobs"]), -1, "a job store has no TTL");

    // Pull: oldest first, leased jobs skipped.
    let (id, req, t1) = pull(&mut c, "jobs", "w1", 30_000, None).unwrap();
    assert_eq!((id, req.as_slice()), (a, &b"3+3"[..]));
    let (id2, _, t2) = pull(&mut c, "jobs", "w2", 30_000, None).unwrap();
    assert_eq!(id2, bb);
    assert!(t2 > t1);
    assert_eq!(pull(&mut c, "jobs", "w3", 30_000, None), None, "all leased");
    let g = get(&mut c, "jobs", a).unwrap();
    assert_eq!((g.holder, g.token), (Some(b("w1")), Some(t1)));
    assert!((29_000..=30_000).contains(&g.ttl.unwrap()));
    // A worker asking again gets its job back, extended, same token.
    assert_eq!(
        pull(&mut c, "jobs", "w1", 60_000, None),
        Some((a, b("3+3"), t1))
    );
    assert!(get(&mut c, "jobs", a).unwrap().ttl.unwrap() > 59_000);
    assert_eq!(
        int(
            &mut c,
            &["JOB.RENEW", "jobs", &a.to_string(), "w1", "45000"]
        ),
        1
    );

    // Queue before fulfilment (duplicates allowed); UNQUEUE removes first matches.
    assert_eq!(
        queue(&mut c, "JOB.QUEUE", "jobs", a, &["t1", "t2", "t1", "t3"]),
        4
    );
    assert_eq!(queue(&mut c, "JOB.UNQUEUE", "jobs", a, &["t1", "nope"]), 1);
    assert_eq!(
        get(&mut c, "jobs", a).unwrap().waiting,
        vec![b("t2"), b("t1"), b("t3")]
    );
    assert_eq!(
        pullnotify(&mut c, "jobs", "n1", 30_000, None),
        None,
        "not fulfilled yet"
    );

    // Fulfil with the token: the work lease ends.
    let r: i64 = redis::cmd("JOB.FULFILL")
        .arg("jobs")
        .arg(a)
        .arg("6")
        .arg("TOKEN")
        .arg(t1)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let g = get(&mut c, "jobs", a).unwrap();
    assert_eq!(
        (g.state.as_str(), g.value, g.holder),
        ("fulfilled", Some(b("6")), None)
    );
    let e = error_of(
        &mut c,
        &[b"JOB.FULFILL", b"jobs", a.to_string().as_bytes(), b"7"],
    );
    assert!(e.starts_with("ALREADY"), "{e}");
    let e = error_of(
        &mut c,
        &[b"JOB.RELEASE", b"jobs", a.to_string().as_bytes(), b"w1"],
    );
    assert!(e.starts_with("NOTHELD"), "fulfil ended the lease: {e}");

    // PULLNOTIFY: value + all waiting targets under a notification lease.
    let (nid, value, targets, nt) = pullnotify(&mut c, "jobs", "n1", 30_000, None).unwrap();
    assert_eq!((nid, value), (a, b("6")));
    assert_eq!(targets, vec![b("t2"), b("t1"), b("t3")]);
    assert_eq!(
        pullnotify(&mut c, "jobs", "n2", 30_000, None),
        None,
        "lease held"
    );
    let g = get(&mut c, "jobs", a).unwrap();
    assert_eq!((g.holder, g.token), (Some(b("n1")), Some(nt)));
    // Queued during the lease: stays for the next PULLNOTIFY.
    assert_eq!(queue(&mut c, "JOB.QUEUE", "jobs", a, &["t4"]), 1);
    let e = error_of(
        &mut c,
        &[b"JOB.DONE", b"jobs", a.to_string().as_bytes(), b"n2"],
    );
    assert!(e.starts_with("NOTHELD"), "{e}");
    // DONE with a subset: the rest is handed out again.
    assert_eq!(done(&mut c, "jobs", a, "n1", &["t2", "t3", "zz"]), 2);
    let e = error_of(
        &mut c,
        &[b"JOB.DONE", b"jobs", a.to_string().as_bytes(), b"n1"],
    );
    assert!(e.starts_with("NOTHELD"), "the lease ended: {e}");
    let (nid, _, targets, nt2) = pullnotify(&mut c, "jobs", "n2", 30_000, None).unwrap();
    assert_eq!((nid, targets), (a, vec![b("t1"), b("t4")]));
    assert!(nt2 > nt);
    assert_eq!(done(&mut c, "jobs", a, "n2", &["t1", "t4"]), 2);
    assert_eq!(
        pullnotify(&mut c, "jobs", "n2", 30_000, None),
        None,
        "nothing waits"
    );

    // Queue after fulfilment: the job becomes notifiable again.
    assert_eq!(queue(&mut c, "JOB.QUEUE", "jobs", a, &["late"]), 1);
    let (nid, value, targets, _) = pullnotify(&mut c, "jobs", "n3", 30_000, None).unwrap();
    assert_eq!((nid, value, targets), (a, b("6"), vec![b("late")]));
    assert_eq!(done(&mut c, "jobs", a, "n3", &["late"]), 1);

    // Fulfil without a token ends whoever's lease (w2's).
    assert_eq!(
        int(&mut c, &["JOB.FULFILL", "jobs", &bb.to_string(), "8"]),
        1
    );
    let e = error_of(
        &mut c,
        &[
            b"JOB.RENEW",
            b"jobs",
            bb.to_string().as_bytes(),
            b"w2",
            b"100",
        ],
    );
    assert!(e.starts_with("NOTHELD"), "{e}");
    let i = info(&mut c, "jobs");
    assert_eq!(
        (
            i["jobs"],
            i["pending"],
            i["leased"],
            i["fulfilled"],
            i["notifiable"],
            i["notifying"]
        ),
        (2, 0, 0, 2, 0, 0)
    );

    // The store keeps jobs until they are deleted; the last one takes the key with it.
    assert_eq!(int(&mut c, &["JOB.DELETE", "jobs", &a.to_string()]), 1);
    assert_eq!(int(&mut c, &["JOB.DELETE", "jobs", &a.to_string()]), 0);
    assert_eq!(get(&mut c, "jobs", a), None);
    assert_eq!(int(&mut c, &["JOB.DELETE", "jobs", &bb.to_string()]), 1);
    assert_eq!(int(&mut c, &["EXISTS", "jobs"]), 0);
    // Ids never repeat, even after the store was emptied (and deleted).
    let again = create(&mut c, "jobs", b"x");
    assert!(again > bb && again > nt2, "{again}");
    let e = error_of(
        &mut c,
        &[b"JOB.QUEUE", b"jobs", a.to_string().as_bytes(), b"t"],
    );
    assert_eq!(e, format!("NOJOB no job {a}"));
}

#[test]
fn lapse_repull_stale_fulfil_notheld_and_lapse_notification() {
    let s = Server::start_with(ServerOptions::new().config("notify-keyspace-events", "Ed"));
    let mut sub = s.conn();
    let mut c = s.conn();
    let mut pubsub = sub.as_pubsub();
    subscribe_keyevents(&mut pubsub, "job", Duration::from_secs(10));
    let id = create(&mut c, "jobs", b"work");
    let (_, _, t1) = pull(&mut c, "jobs", "old", 300, None).unwrap();
    let start = Instant::now();
    // The lapse is announced by the engine's timer, with no command touching the key.
    let events = keyevents(&mut pubsub, 2, "jobs");
    assert_eq!(events, ["job.grant", "job.lapse"]);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(get(&mut c, "jobs", id).unwrap().holder, None);

    // Another worker pulls it again with a larger token.
    let (id2, _, t2) = pull(&mut c, "jobs", "new", 30_000, None).unwrap();
    assert_eq!(id2, id);
    assert!(t2 > t1);
    let sid = id.to_string();
    let e = error_of(
        &mut c,
        &[b"JOB.RENEW", b"jobs", sid.as_bytes(), b"old", b"1000"],
    );
    assert_eq!(e, format!("NOTHELD job {id} is held by new"));
    let e = error_of(&mut c, &[b"JOB.RELEASE", b"jobs", sid.as_bytes(), b"old"]);
    assert!(e.starts_with("NOTHELD"), "{e}");
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            t1.to_string().as_bytes(),
        ],
    );
    assert!(e.starts_with("STALE"), "{e}");
    assert!(e.contains(&t2.to_string()), "names the current token: {e}");
    assert_eq!(
        get(&mut c, "jobs", id).unwrap().state,
        "pending",
        "stale fulfil changed nothing"
    );
    let r: i64 = redis::cmd("JOB.FULFILL")
        .arg("jobs")
        .arg(id)
        .arg("v")
        .arg("TOKEN")
        .arg(t2)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let e = error_of(
        &mut c,
        &[
            b"JOB.FULFILL",
            b"jobs",
            sid.as_bytes(),
            b"v",
            b"TOKEN",
            t2.to_string().as_bytes(),
        ],
    );
    assert!(e.starts_with("ALREADY"), "{e}");
    let lapses = info_int(&s, "corral", "corral_job_lapses");
    assert_eq!(lapses, 1);

    // A notification lease lapses the same way.
    queue(&mut c, "JOB.QUEUE", "jobs", id, &["t"]);
    let (_, _, _, n1) = pullnotify(&mut c, "jobs", "n1", 200, None).unwrap();
    let (_, _, targets, n2) = pullnotify(&mut c, "jobs", "n2", 30_000, Some(10_000)).unwrap();
    assert!(n2 > n1);
    assert_eq!(targets, vec![b("t")]);
    let e = error_of(&mut c, &[b"JOB.DONE", b"jobs", sid.as_bytes(), b"n1", b"t"]);
    assert!(e.starts_with("NOTHELD"), "{e}");
}

#[test]
fn blocked_pullers_are_handed_jobs_fifo_on_create_release_and_lapse() {
    let s = Server::start();
    let mut c = s.conn();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 1..=3 {
        let mut wc = s.conn();
        let order = order.clone();
        threads.push(thread::spawn(move || {
            let worker = format!("w{i}");
            let got = pull(&mut wc, "jobs", &worker, 60_000, Some(30_000)).expect("handed a job");
            order.lock().unwrap().push((i, got.0, got.2));
            got
        }));
        wait_until(Duration::from_secs(10), "puller queued", || {
            waiters(&mut c, "jobs") == i
        });
    }
    // Created: handed to the first in line at once.
    let j1 = create(&mut c, "jobs", b"one");
    wait_until(Duration::from_secs(10), "w1 served", || {
        order.lock().unwrap().len() == 1
    });
    let j2 = create(&mut c, "jobs", b"two");
    wait_until(Duration::from_secs(10), "w2 served", || {
        order.lock().unwrap().len() == 2
    });
    // Released: handed to the next in line.
    assert_eq!(
        int(&mut c, &["JOB.RELEASE", "jobs", &j1.to_string(), "w1"]),
        1
    );
    for t in threads {
        t.join().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(),
        vec![(1, j1), (2, j2), (3, j1)]
    );
    assert!(order[2].2 > order[0].2, "re-granted under a larger token");

    // A lapsed lease is handed to a blocked puller too, without other commands.
    let j3 = create(&mut c, "jobs", b"three");
    assert_eq!(pull(&mut c, "jobs", "short", 300, None).unwrap().0, j3);
    let start = Instant::now();
    let got = pull(&mut c, "jobs", "patient", 60_000, Some(10_000)).expect("handed on lapse");
    assert_eq!(got.0, j3);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn blocked_pullnotify_does_not_hold_up_pull_and_is_served_when_notifiable() {
    let s = Server::start();
    let mut c = s.conn();
    // A notifier waits first, then a worker.
    let mut nc = s.conn();
    let notifier = thread::spawn(move || pullnotify(&mut nc, "jobs", "n", 60_000, Some(30_000)));
    wait_until(Duration::from_secs(10), "notifier queued", || {
        waiters(&mut c, "jobs") == 1
    });
    let mut wc = s.conn();
    let worker = thread::spawn(move || pull(&mut wc, "jobs", "w", 60_000, Some(30_000)));
    wait_until(Duration::from_secs(10), "worker queued", || {
        waiters(&mut c, "jobs") == 2
    });
    // A new job goes to the worker, though the notifier waited longer.
    let id = create(&mut c, "jobs", b"req");
    let (got, _, token) = worker.join().unwrap().expect("worker served");
    assert_eq!(got, id);
    assert_eq!(waiters(&mut c, "jobs"), 1, "the notifier still waits");
    // Queued + fulfilled: the notifier is handed the value and targets.
    queue(&mut c, "JOB.QUEUE", "jobs", id, &["a", "b"]);
    let r: i64 = redis::cmd("JOB.FULFILL")
        .arg("jobs")
        .arg(id)
        .arg(&b"val\0ue"[..])
        .arg("TOKEN")
        .arg(token)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let (nid, value, targets, _) = notifier.join().unwrap().expect("notifier served");
    assert_eq!(
        (nid, value, targets),
        (id, b"val\0ue".to_vec(), vec![b("a"), b("b")])
    );
    // DONE leaving a target hands it to the next blocked notifier.
    let mut nc = s.conn();
    let next = thread::spawn(move || pullnotify(&mut nc, "jobs", "m", 60_000, Some(30_000)));
    wait_until(Duration::from_secs(10), "next notifier queued", || {
        waiters(&mut c, "jobs") == 1
    });
    assert_eq!(done(&mut c, "jobs", id, "n", &["a"]), 1);
    let (nid, _, targets, _) = next.join().unwrap().expect("served on DONE");
    assert_eq!((nid, targets), (id, vec![b("b")]));
    // And a QUEUE after fulfilment wakes one too.
    assert_eq!(done(&mut c, "jobs", id, "m", &["b"]), 1);
    let mut nc = s.conn();
    let next = thread::spawn(move || pullnotify(&mut nc, "jobs", "k", 60_000, Some(30_000)));
    wait_until(Duration::from_secs(10), "notifier queued", || {
        waiters(&mut c, "jobs") == 1
    });
    queue(&mut c, "JOB.QUEUE", "jobs", id, &["c"]);
    assert_eq!(
        next.join().unwrap().expect("served on QUEUE").2,
        vec![b("c")]
    );

    // BLOCK inside MULTI or a script answers at once.
    let start = Instant::now();
    let (r,): (Pulled,) = redis::pipe()
        .atomic()
        .cmd("JOB.PULL")
        .arg("jobs")
        .arg("x")
        .arg(1000)
        .arg("BLOCK")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Value = redis::cmd("EVAL")
        .arg("return redis.call('JOB.PULLNOTIFY', KEYS[1], 'x', 1000, 'BLOCK', 0)")
        .arg(1)
        .arg("jobs")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    assert!(start.elapsed() < Duration::from_secs(5));
    // A timed-out puller leaves the queue.
    assert_eq!(pull(&mut c, "jobs", "x", 1000, Some(200)), None);
    assert_eq!(waiters(&mut c, "jobs"), 0);
}

#[test]
fn twenty_workers_fulfil_two_thousand_jobs_exactly_once() {
    const JOBS: usize = 2000;
    const WORKERS: usize = 20;
    /// Workers w0..w2 are slow: their leases lapse before they fulfil.
    const SLOW: usize = 3;
    /// A slow worker's lease; the others' outlives the test.
    const SLOW_TTL: u64 = 50;
    const FAST_TTL: u64 = 60_000;
    /// How long a fast worker works on a job: the window in which a slow worker's late FULFILL
    /// meets the job leased to someone else (STALE) rather than fulfilled (ALREADY).
    const WORK: Duration = Duration::from_millis(5);
    let s = Server::start();
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..JOBS {
        p.cmd("JOB.CREATE").arg("jobs").arg(format!("job-{i}"));
    }
    let ids: Vec<i64> = p.query(&mut c).unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    /// One FULFILL: who sent it, under which lease, and when — ticks of a shared counter taken
    /// just before sending and just after the reply, which order FULFILLs of different workers.
    #[derive(Clone, Debug)]
    struct Fulfil {
        worker: String,
        token: i64,
        sent: u64,
        answered: u64,
    }
    #[derive(Debug)]
    enum Refused {
        /// `-STALE …`, with the current lease's token when the job has one.
        Stale(Option<i64>),
        Already,
    }
    /// What the workers saw, checked once they are done.
    #[derive(Default)]
    struct Seen {
        /// Job id → (token, worker) of every PULL that returned it.
        pulls: HashMap<i64, Vec<(i64, String)>>,
        /// Job id → the FULFILL that was accepted, and the value it set.
        accepted: HashMap<i64, (Fulfil, String)>,
        /// Every refused FULFILL (all of them late results of lapsed leases).
        refused: Vec<(i64, Fulfil, Refused)>,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let clock = Arc::new(AtomicU64::new(0));
    let slow_started = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for w in 0..WORKERS {
        if w == SLOW {
            // The slow ones hold a job each before the others start.
            wait_until(Duration::from_secs(20), "slow workers pulled", || {
                slow_started.load(Ordering::SeqCst) >= SLOW
            });
        }
        let (slow_started, seen, clock) = (slow_started.clone(), seen.clone(), clock.clone());
        let mut wc = s.conn();
        threads.push(thread::spawn(move || {
            let worker = format!("w{w}");
            let slow = w < SLOW;
            let ttl = if slow { SLOW_TTL } else { FAST_TTL };
            loop {
                let Some((id, request, token)) = pull(&mut wc, "jobs", &worker, ttl, Some(100))
                else {
                    if info(&mut wc, "jobs")["pending"] == 0 {
                        return;
                    }
                    continue;
                };
                seen.lock()
                    .unwrap()
                    .pulls
                    .entry(id)
                    .or_default()
                    .push((token, worker.clone()));
                if slow {
                    slow_started.fetch_add(1, Ordering::SeqCst);
                    // Stalled past its lease: it sends its late result once the job has moved
                    // on (leased to another worker, or fulfilled).
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let job = get(&mut wc, "jobs", id).unwrap();
                        let moved = job.state == "fulfilled"
                            || job.holder.as_ref().is_some_and(|h| h != worker.as_bytes());
                        if moved {
                            assert!(job.token.is_none_or(|t| t > token), "{id}: {job:?}");
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "job {id} never moved on: {job:?}"
                        );
                        thread::sleep(Duration::from_millis(1));
                    }
                } else {
                    thread::sleep(WORK);
                }
                let value = format!("{}-by-{worker}", String::from_utf8(request).unwrap());
                let sent = clock.fetch_add(1, Ordering::SeqCst);
                let r: redis::RedisResult<i64> = redis::cmd("JOB.FULFILL")
                    .arg("jobs")
                    .arg(id)
                    .arg(&value)
                    .arg("TOKEN")
                    .arg(token)
                    .query(&mut wc);
                let answered = clock.fetch_add(1, Ordering::SeqCst);
                let f = Fulfil {
                    worker: worker.clone(),
                    token,
                    sent,
                    answered,
                };
                let mut seen = seen.lock().unwrap();
                match r {
                    // A worker whose lease is live is never refused; one whose lease lapsed
                    // always is.
                    Ok(1) if !slow => {
                        let before = seen.accepted.insert(id, (f, value));
                        assert!(before.is_none(), "job {id} fulfilled twice");
                    }
                    Ok(r) => panic!("{f:?}: FULFILL of job {id} answered {r}"),
                    Err(e) if slow && e.code() == Some("STALE") => {
                        let detail = e.detail().unwrap_or("");
                        let current = detail
                            .rsplit_once("(current is ")
                            .map(|(_, c)| c.trim_end_matches(')').parse::<i64>().unwrap());
                        assert!(
                            current.is_some()
                                || detail.ends_with("(it has none: expired or released)"),
                            "{e}"
                        );
                        seen.refused.push((id, f, Refused::Stale(current)));
                    }
                    Err(e) if slow && e.code() == Some("ALREADY") => {
                        seen.refused.push((id, f, Refused::Already));
                    }
                    Err(e) => panic!("{f:?}: FULFILL of job {id}: {e}"),
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert_eq!(
        seen.accepted.keys().copied().collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>(),
        "every job fulfilled (exactly once: checked as they were)"
    );
    // Each job's accepted value comes from the worker holding its last lease: a job is pulled
    // again only while unfulfilled, so the fulfilling lease is its newest one.
    for (id, (f, _)) in &seen.accepted {
        let last = seen.pulls[id].iter().max().unwrap();
        assert_eq!(
            (&f.token, &f.worker),
            (&last.0, &last.1),
            "job {id} was fulfilled under a lease that was not its last: {:?}",
            seen.pulls[id]
        );
    }
    // Each refusal is the right one: ALREADY once the job was fulfilled, STALE before that,
    // naming the newer lease that held the job then. The order of the two FULFILLs is known
    // when one was answered before the other was sent.
    let (mut stale, mut already) = (0, 0);
    for (id, late, why) in &seen.refused {
        let (accepted, _) = &seen.accepted[id];
        assert!(
            accepted.token > late.token,
            "{late:?} refused ({why:?}), {accepted:?} accepted for job {id}"
        );
        match why {
            Refused::Already => {
                already += 1;
                assert!(
                    accepted.sent < late.answered,
                    "ALREADY for job {id} before it was fulfilled: {late:?}, {accepted:?}"
                );
            }
            Refused::Stale(current) => {
                stale += 1;
                assert!(
                    accepted.answered > late.sent,
                    "STALE for job {id} after it was fulfilled (ALREADY expected): {late:?}, \
                     {accepted:?}"
                );
                if let Some(current) = current {
                    let holder = seen.pulls[id].iter().find(|(t, _)| t == current);
                    assert!(
                        *current > late.token && holder.is_some_and(|(_, w)| *w != late.worker),
                        "STALE for job {id} named lease {current}: {:?}",
                        seen.pulls[id]
                    );
                }
            }
        }
    }
    eprintln!(
        "20 workers, 2000 jobs: {} late results of lapsed leases refused ({stale} STALE, \
         {already} ALREADY)",
        seen.refused.len()
    );
    assert!(seen.refused.len() >= SLOW, "slow workers were fenced off");
    assert!(
        stale >= 1,
        "no late result met its job leased to another worker"
    );
    let i = info(&mut c, "jobs");
    assert_eq!(
        (i["pending"], i["fulfilled"], i["leased"]),
        (0, JOBS as i64, 0)
    );
    for (n, id) in ids.iter().enumerate() {
        let job = get(&mut c, "jobs", *id).unwrap();
        assert_eq!(job.request, format!("job-{n}").into_bytes());
        assert_eq!(
            job.value.as_deref(),
            Some(seen.accepted[id].1.as_bytes()),
            "the accepted value"
        );
    }
}

/// A store with every kind of job: pending (with targets), leased, fulfilled with a 1 MB binary
/// value and duplicate targets, fulfilled under a notification lease, fulfilled with nothing
/// waiting, and one deleted. Returns the ids of the remaining ones.
fn varied_store(c: &mut Connection, key: &str) -> Vec<i64> {
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let pending = create(c, key, b"pend\0ing\r\n");
    queue(c, "JOB.QUEUE", key, pending, &["t\0a", "t2"]);
    let leased = create(c, key, b"leased");
    let fulfilled = create(c, key, &big);
    let notifying = create(c, key, b"notifying");
    let empty = create(c, key, b"");
    let deleted = create(c, key, b"deleted");
    // `pending` is first in line: take it and hand it back, then lease `leased`.
    assert_eq!(pull(c, key, "w1", 60_000, None).unwrap().0, pending);
    assert_eq!(pull(c, key, "w\0bin", 90_000, None).unwrap().0, leased);
    assert_eq!(int(c, &["JOB.RELEASE", key, &pending.to_string(), "w1"]), 1);
    let r: i64 = redis::cmd("JOB.FULFILL")
        .arg(key)
        .arg(fulfilled)
        .arg(&big)
        .query(c)
        .unwrap();
    assert_eq!(r, 1);
    queue(c, "JOB.QUEUE", key, fulfilled, &["x", "y", "x"]);
    assert_eq!(
        int(c, &["JOB.FULFILL", key, &notifying.to_string(), "n\0v"]),
        1
    );
    queue(c, "JOB.QUEUE", key, notifying, &["z"]);
    assert_eq!(int(c, &["JOB.FULFILL", key, &empty.to_string(), ""]), 1);
    assert_eq!(pullnotify(c, key, "n1", 80_000, None).unwrap().0, fulfilled);
    assert_eq!(done(c, key, fulfilled, "n1", &[]), 0);
    // `fulfilled` stays notifiable; take `notifying` with a second lease.
    assert_eq!(pullnotify(c, key, "n1", 80_000, None).unwrap().0, fulfilled);
    assert_eq!(pullnotify(c, key, "n2", 70_000, None).unwrap().0, notifying);
    assert_eq!(done(c, key, fulfilled, "n1", &["y"]), 1);
    assert_eq!(int(c, &["JOB.DELETE", key, &deleted.to_string()]), 1);
    vec![pending, leased, fulfilled, notifying, empty]
}

fn snapshot(c: &mut Connection, key: &str, ids: &[i64]) -> Vec<Job> {
    ids.iter().map(|id| get(c, key, *id).unwrap()).collect()
}

fn assert_same(before: &[Job], after: &[Job]) {
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b.without_ttl(), a.without_ttl());
        if let (Some(tb), Some(ta)) = (b.ttl, a.ttl) {
            assert!((tb - ta).abs() < 5_000, "deadline kept: {tb} {ta}");
        }
    }
}

#[test]
fn replica_digest_equal_and_replica_never_acts_alone() {
    let primary = Server::start();
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    let mut r = replica.conn();
    let ids = varied_store(&mut p, "jobs");
    // A hand-off to a blocked puller, and a lapse.
    assert_eq!(pull(&mut p, "jobs", "pw", 60_000, None).unwrap().0, ids[0]);
    let mut wc = primary.conn();
    let waiter = thread::spawn(move || pull(&mut wc, "jobs", "waiter", 60_000, Some(20_000)));
    wait_until(Duration::from_secs(10), "waiter queued", || {
        waiters(&mut p, "jobs") == 1
    });
    let fresh = create(&mut p, "jobs", b"fresh");
    assert_eq!(
        waiter.join().unwrap().unwrap().0,
        fresh,
        "handed the new job"
    );
    assert_eq!(
        int(&mut p, &["JOB.RELEASE", "jobs", &ids[0].to_string(), "pw"]),
        1
    );
    let lapsed_before = info_int(&primary, "corral", "corral_job_lapses");
    let (short, _, _) = pull(&mut p, "jobs", "short", 200, None).unwrap();
    assert_eq!(short, ids[0]);
    // Wait for the lapse itself (counted when its effect is applied and replicated), not for
    // GET to stop showing the holder: GET reads a lease past its deadline as gone before the
    // timer lapses it, and the digests would be taken on either side of the lapse.
    wait_until(Duration::from_secs(10), "lapse on primary", || {
        info_int(&primary, "corral", "corral_job_lapses") > lapsed_before
    });
    assert!(get(&mut p, "jobs", short).unwrap().holder.is_none());
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "jobs"), digest(&mut r, "jobs"));
    let mut all = ids.clone();
    all.push(fresh);
    assert_same(
        &snapshot(&mut p, "jobs", &all),
        &snapshot(&mut r, "jobs", &all),
    );
    assert_eq!(info(&mut p, "jobs"), info(&mut r, "jobs"));
    // Replicas refuse writes.
    let e = error_of(&mut r, &[b"JOB.CREATE", b"jobs", b"x"]);
    assert!(e.starts_with("READONLY"), "{e}");

    // With the primary stopped, the replica does not lapse a lease by itself.
    assert_eq!(pull(&mut p, "jobs", "short", 300, None).unwrap().0, ids[0]);
    primary.sync_replica(&replica);
    let held = digest(&mut r, "jobs");
    let lapses = replica.info_field("corral", "corral_job_lapses");
    let pid = primary.pid().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    let primary_lapses = info_int(&primary, "corral", "corral_job_lapses");
    signal("-STOP");
    thread::sleep(Duration::from_millis(800));
    let after = digest(&mut r, "jobs");
    let lapses_after = replica.info_field("corral", "corral_job_lapses");
    signal("-CONT");
    assert_eq!(
        after, held,
        "the replica kept the lease until the primary says"
    );
    assert_eq!(lapses_after, lapses);
    assert_eq!(
        get(&mut r, "jobs", ids[0]).unwrap().holder,
        None,
        "but reads see it lapsed"
    );
    // The lapse itself, counted on the primary (see above), not GET's view of the deadline.
    wait_until(
        Duration::from_secs(10),
        "primary lapses after resuming",
        || info_int(&primary, "corral", "corral_job_lapses") > primary_lapses,
    );
    assert!(get(&mut p, "jobs", ids[0]).unwrap().holder.is_none());
    assert_eq!(info(&mut p, "jobs")["leased"], 2);
    primary.sync_replica(&replica);
    assert_eq!(digest(&mut p, "jobs"), digest(&mut r, "jobs"));
    assert_ne!(digest(&mut r, "jobs"), held);
}

#[test]
fn reload_and_aof_restart_preserve_jobs_leases_targets_and_tokens() {
    let mut s = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let mut c = s.conn();
    let ids = varied_store(&mut c, "jobs");
    let before = snapshot(&mut c, "jobs", &ids);
    assert_eq!(before[2].value.as_ref().map(Vec::len), Some(1 << 20));
    assert_eq!(before[2].waiting, vec![b("x"), b("x")]);
    assert_eq!(before[3].holder, Some(b("n2")));
    let info_before = info(&mut c, "jobs");
    let digest_before = digest(&mut c, "jobs");

    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_same(&before, &snapshot(&mut c, "jobs", &ids));
    assert_eq!(digest(&mut c, "jobs"), digest_before);
    assert_eq!(info(&mut c, "jobs"), info_before);

    rewrite_aof(&s);
    drop(c);
    s.restart();
    let mut c = s.conn();
    assert_same(&before, &snapshot(&mut c, "jobs", &ids));
    assert_eq!(
        digest(&mut c, "jobs"),
        digest_before,
        "exactly the same value"
    );
    assert_eq!(info(&mut c, "jobs"), info_before);
    // Leases still work after the restart, and ids keep increasing.
    let leased = ids[1];
    assert_eq!(
        int(
            &mut c,
            &["JOB.RENEW", "jobs", &leased.to_string(), "w\0bin", "1000"]
        ),
        1
    );
    let (_, _, targets, _) = pullnotify(&mut c, "jobs", "n9", 1000, None).unwrap();
    assert_eq!(targets, vec![b("x"), b("x")]);
    let newest = create(&mut c, "jobs", b"after restart");
    let highest = before.iter().filter_map(|j| j.token).max().unwrap();
    assert!(newest > highest && newest > *ids.iter().max().unwrap());
}

#[test]
fn malformed_input_gets_errors_and_server_lives() {
    let s = Server::start();
    let mut c = s.conn();
    let id = create(&mut c, "jobs", b"r").to_string();
    let id = id.as_bytes();
    let huge = vec![b'x'; 1 << 20];
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"JOB.CREATE"],
        vec![b"JOB.CREATE", b"jobs"],
        vec![b"JOB.CREATE", b"jobs", b"r", b"extra"],
        vec![b"JOB.PULL", b"jobs", b"w"],
        vec![b"JOB.PULL", b"jobs", b"", b"100"],
        vec![b"JOB.PULL", b"jobs", b"w", b"0"],
        vec![b"JOB.PULL", b"jobs", b"w", b"-1"],
        vec![b"JOB.PULL", b"jobs", b"w", b"1.5"],
        vec![b"JOB.PULL", b"jobs", b"w", b"1099511627777"],
        vec![b"JOB.PULL", b"jobs", b"w", b"99999999999999999999999"],
        vec![b"JOB.PULL", b"jobs", b"w", &huge],
        vec![b"JOB.PULL", b"jobs", b"w", b"100", b"BLOCK"],
        vec![b"JOB.PULL", b"jobs", b"w", b"100", b"BLOCK", b"-1"],
        vec![
            b"JOB.PULL",
            b"jobs",
            b"w",
            b"100",
            b"BLOCK",
            b"1",
            b"BLOCK",
            b"1",
        ],
        vec![b"JOB.PULL", b"jobs", b"w", b"100", b"NOPE"],
        vec![b"JOB.PULL", b"jobs", b"w", b"100", &huge],
        vec![b"JOB.RENEW", b"jobs", id, b"w"],
        vec![b"JOB.RENEW", b"jobs", b"0", b"w", b"100"],
        vec![b"JOB.RENEW", b"jobs", b"-5", b"w", b"100"],
        vec![b"JOB.RENEW", b"jobs", b"abc", b"w", b"100"],
        vec![b"JOB.RENEW", b"jobs", b"18446744073709551616", b"w", b"100"],
        vec![b"JOB.RENEW", b"jobs", id, b"", b"100"],
        vec![b"JOB.RENEW", b"jobs", id, b"w", b"x"],
        vec![b"JOB.RENEW", b"jobs", id, b"w", b"100", b"extra"],
        vec![b"JOB.RELEASE", b"jobs", id],
        vec![b"JOB.RELEASE", b"jobs", b"\x00", b"w"],
        vec![b"JOB.RELEASE", b"jobs", id, b"w", b"extra"],
        vec![b"JOB.FULFILL", b"jobs", id],
        vec![b"JOB.FULFILL", b"jobs", b"1.0", b"v"],
        vec![b"JOB.FULFILL", b"jobs", id, b"v", b"TOKEN"],
        vec![b"JOB.FULFILL", b"jobs", id, b"v", b"TOKEN", b"0"],
        vec![b"JOB.FULFILL", b"jobs", id, b"v", b"TOKEN", b"x"],
        vec![
            b"JOB.FULFILL",
            b"jobs",
            id,
            b"v",
            b"TOKEN",
            b"1",
            b"TOKEN",
            b"1",
        ],
        vec![b"JOB.FULFILL", b"jobs", id, b"v", b"WAT", b"1"],
        vec![b"JOB.QUEUE", b"jobs", id],
        vec![b"JOB.QUEUE", b"jobs", b"", b"t"],
        vec![b"JOB.UNQUEUE", b"jobs", &huge, b"t"],
        vec![b"JOB.PULLNOTIFY", b"jobs", b"n"],
        vec![b"JOB.PULLNOTIFY", b"jobs", b"", b"100"],
        vec![b"JOB.PULLNOTIFY", b"jobs", b"n", b"0"],
        vec![b"JOB.PULLNOTIFY", b"jobs", b"n", b"100", b"BLOCK", b"x"],
        vec![b"JOB.PULLNOTIFY", b"jobs", b"n", b"100", b"TOKEN", b"1"],
        vec![b"JOB.DONE", b"jobs", id],
        vec![b"JOB.DONE", b"jobs", b"x", b"n"],
        vec![b"JOB.DONE", b"jobs", id, b""],
        vec![b"JOB.GET", b"jobs"],
        vec![b"JOB.GET", b"jobs", b"0"],
        vec![b"JOB.GET", b"jobs", id, b"extra"],
        vec![b"JOB.DELETE", b"jobs"],
        vec![b"JOB.DELETE", b"jobs", b"-1"],
        vec![b"JOB.DELETE", b"jobs", id, b"extra"],
        vec![b"JOB.INFO"],
        vec![b"JOB.INFO", b"jobs", b"extra"],
    ];
    for args in &bad {
        let e = error_of(&mut c, args);
        assert!(
            e.starts_with("ERR"),
            "{:?}: {e}",
            String::from_utf8_lossy(&args.concat())
        );
    }
    // Well-formed, but about jobs that do not exist or leases not held.
    let none: &[u8] = b"12345";
    for (args, code) in [
        (
            vec![&b"JOB.FULFILL"[..], b"jobs", none, b"v"],
            "NOJOB no job 12345",
        ),
        (
            vec![b"JOB.QUEUE", b"jobs", none, b"t"],
            "NOJOB no job 12345",
        ),
        (
            vec![b"JOB.UNQUEUE", b"jobs", none, b"t"],
            "NOJOB no job 12345",
        ),
        (
            vec![b"JOB.RENEW", b"jobs", none, b"w", b"100"],
            "NOTHELD no job 12345",
        ),
        (
            vec![b"JOB.RELEASE", b"jobs", none, b"w"],
            "NOTHELD no job 12345",
        ),
        (
            vec![b"JOB.DONE", b"jobs", none, b"w"],
            "NOTHELD no job 12345",
        ),
        (vec![b"JOB.RENEW", b"jobs", id, b"w", b"100"], "NOTHELD job"),
        (vec![b"JOB.DONE", b"jobs", id, b"w"], "NOTHELD job"),
        (
            vec![b"JOB.FULFILL", b"jobs", id, b"v", b"TOKEN", b"7"],
            "STALE token 7",
        ),
    ] {
        let e = error_of(&mut c, &args);
        assert!(e.starts_with(code), "{e}");
    }
    assert_eq!(int(&mut c, &["JOB.DELETE", "jobs", "12345"]), 0);
    let v: Value = redis::cmd("JOB.GET")
        .arg("jobs")
        .arg(12345)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);
    assert_eq!(info(&mut c, "nokey")["jobs"], 0);
    // Wrong key type for every command.
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    let _: Option<i64> = redis::cmd("RESV.LOCK")
        .arg("lock")
        .arg("a")
        .arg(10_000)
        .query(&mut c)
        .unwrap();
    for key in [&b"str"[..], b"lock"] {
        for args in [
            vec![&b"JOB.CREATE"[..], key, b"r"],
            vec![b"JOB.PULL", key, b"w", b"100"],
            vec![b"JOB.RENEW", key, b"1", b"w", b"100"],
            vec![b"JOB.RELEASE", key, b"1", b"w"],
            vec![b"JOB.FULFILL", key, b"1", b"v"],
            vec![b"JOB.QUEUE", key, b"1", b"t"],
            vec![b"JOB.UNQUEUE", key, b"1", b"t"],
            vec![b"JOB.PULLNOTIFY", key, b"w", b"100"],
            vec![b"JOB.DONE", key, b"1", b"w"],
            vec![b"JOB.GET", key, b"1"],
            vec![b"JOB.DELETE", key, b"1"],
            vec![b"JOB.INFO", key],
        ] {
            let e = error_of(&mut c, &args);
            assert!(e.starts_with("WRONGTYPE"), "{e}");
        }
    }
    let e = error_of(&mut c, &[b"RESV.INFO", b"jobs"]);
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    // Binary and huge workers, requests and targets are fine.
    let bin = b"\x00\xff\r\n worker";
    let big = create(&mut c, "bin", &huge);
    let got: Pulled = redis::cmd("JOB.PULL")
        .arg("bin")
        .arg(&bin[..])
        .arg(1000)
        .query(&mut c)
        .unwrap();
    assert_eq!(got.map(|g| (g.0, g.1.len())), Some((big, 1 << 20)));
    let e = error_of(
        &mut c,
        &[b"JOB.RELEASE", b"bin", big.to_string().as_bytes(), b"other"],
    );
    assert!(e.ends_with("is held by \\x00\\xff\\x0d\\x0a worker"), "{e}");
    let r: i64 = redis::cmd("JOB.QUEUE")
        .arg("bin")
        .arg(big)
        .arg(&huge)
        .arg(&b""[..])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 2);
    assert_alive(&s, &mut c);
}

#[test]
fn memory_usage_of_100k_pending_jobs_is_within_budget_and_honest() {
    const JOBS: i64 = 100_000;
    let s = Server::start();
    let mut c = s.conn();
    let before = info_int(&s, "memory", "used_memory");
    for _ in 0..(JOBS / 10_000) {
        let mut p = redis::pipe();
        for _ in 0..10_000 {
            p.cmd("JOB.CREATE").arg("jobs").arg("0123456789").ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg("jobs")
        .query(&mut c)
        .unwrap();
    let delta = info_int(&s, "memory", "used_memory") - before;
    eprintln!(
        "MEMORY USAGE {usage} ({} B/job); used_memory grew {delta} ({} B/job)",
        usage / JOBS,
        delta / JOBS
    );
    assert!(usage <= JOBS * (200 + 10), "{usage}");
    // Honest: what MEMORY USAGE reports is close to what the server really spent.
    assert!(
        usage * 10 >= delta * 8 && usage * 10 <= delta * 15,
        "MEMORY USAGE {usage} vs used_memory growth {delta}"
    );
    assert_eq!(info(&mut c, "jobs")["pending"], JOBS);
    // Pulls stay cheap at this size: the 100,000th pull answers as the first did.
    let start = Instant::now();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("JOB.PULL")
            .arg("jobs")
            .arg(format!("w{i}"))
            .arg(60_000);
    }
    let got: Vec<Pulled> = p.query(&mut c).unwrap();
    assert!(got.iter().all(Option::is_some));
    eprintln!("1000 pulls over 100k jobs: {:?}", start.elapsed());
}
