//! Redis's own key commands on corral keys: DEL, RENAME, COPY, FLUSHALL, EXPIRE, PERSIST, SWAPDB.
//! What they do to leases and to clients blocked on the key.

mod common;

use std::thread;
use std::time::Duration;

use common::client::{field, int, value};
use common::{wait_until, Server};
use redis::{Connection, Value};

fn lock(c: &mut Connection, key: &str, holder: &str, ms: u64) -> Option<i64> {
    redis::cmd("RESV.LOCK")
        .arg(key)
        .arg(holder)
        .arg(ms)
        .query(c)
        .unwrap()
}

fn holder(c: &mut Connection, key: &str) -> Option<(String, i64)> {
    let v = value(c, &["RESV.INFO", key]);
    if field(&v, "holder") == Value::Nil {
        return None;
    }
    let Value::BulkString(h) = field(&v, "holder") else {
        panic!("{v:?}")
    };
    let Value::Int(t) = field(&v, "token") else {
        panic!("{v:?}")
    };
    Some((String::from_utf8_lossy(&h).into_owned(), t))
}

fn lapses(s: &Server) -> u64 {
    s.info_field("corral", "corral_resv_lapses")
        .unwrap()
        .parse()
        .unwrap()
}

/// A client blocked in `RESV.LOCK key holder 60000 BLOCK 20000`, once it is queued.
fn blocked_lock(
    s: &Server,
    key: &'static str,
    holder: &'static str,
) -> thread::JoinHandle<Option<i64>> {
    let mut c = s.conn();
    let h = thread::spawn(move || {
        redis::cmd("RESV.LOCK")
            .arg(key)
            .arg(holder)
            .arg(60_000)
            .arg("BLOCK")
            .arg(20_000)
            .query(&mut c)
            .unwrap()
    });
    wait_until(Duration::from_secs(10), "waiter queued", || {
        s.info_field("corral", "corral_resv_waiting").as_deref() == Some("1")
    });
    h
}

#[test]
fn del_frees_the_resource_and_serves_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    let t = lock(&mut c, "k", "a", 60_000).unwrap();
    let w = blocked_lock(&s, "k", "b");
    assert_eq!(int(&mut c, &["DEL", "k"]), 1);
    let t2 = w
        .join()
        .unwrap()
        .expect("the waiter is granted the freed lock");
    assert!(t2 > t);
    assert_eq!(holder(&mut c, "k"), Some(("b".into(), t2)));
}

#[test]
fn rename_moves_the_lease_and_frees_the_old_name() {
    let s = Server::start();
    let mut c = s.conn();
    let t = lock(&mut c, "k", "a", 600).unwrap();
    let w = blocked_lock(&s, "k", "b");
    let _: () = redis::cmd("RENAME")
        .arg("k")
        .arg("k2")
        .query(&mut c)
        .unwrap();
    // The waiter on the old name gets it; the lease moved with the value.
    assert!(w.join().unwrap().is_some());
    assert_eq!(holder(&mut c, "k").unwrap().0, "b");
    assert_eq!(holder(&mut c, "k2"), Some(("a".into(), t)));
    // The moved lease still lapses at its deadline, under its new name.
    let before = lapses(&s);
    wait_until(Duration::from_secs(10), "k2 lapsed", || {
        int(&mut c, &["EXISTS", "k2"]) == 0
    });
    assert!(lapses(&s) > before);
}

#[test]
fn copy_duplicates_leases_which_lapse_on_schedule() {
    let s = Server::start();
    let mut c = s.conn();
    for h in ["a", "b"] {
        let _: i64 = redis::cmd("SEM.ACQUIRE")
            .arg("sem")
            .arg(h)
            .arg(5)
            .arg(500)
            .query(&mut c)
            .unwrap();
    }
    assert_eq!(int(&mut c, &["COPY", "sem", "sem2"]), 1);
    let d = |c: &mut Connection, k: &str| -> Vec<String> {
        redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg(k)
            .query(c)
            .unwrap()
    };
    assert_eq!(d(&mut c, "sem"), d(&mut c, "sem2"));
    assert_eq!(int(&mut c, &["SEM.COUNT", "sem2"]), 2);
    wait_until(Duration::from_secs(10), "both lapsed", || {
        int(&mut c, &["EXISTS", "sem"]) == 0 && int(&mut c, &["EXISTS", "sem2"]) == 0
    });
    let lapsed: u64 = s
        .info_field("corral", "corral_sem_lapses")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(lapsed, 4);
}

#[test]
fn flushall_frees_everything_and_serves_waiters() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 60_000).unwrap();
    let w = blocked_lock(&s, "k", "b");
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert!(w.join().unwrap().is_some());
    assert_eq!(holder(&mut c, "k").unwrap().0, "b");
}

#[test]
fn expire_shortens_everything_and_counts_as_lapse() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 60_000).unwrap();
    let w = blocked_lock(&s, "k", "b");
    let before = lapses(&s);
    assert_eq!(int(&mut c, &["PEXPIRE", "k", "100"]), 1);
    assert!(
        w.join().unwrap().is_some(),
        "the key's expiry lapsed a's lease"
    );
    assert_eq!(holder(&mut c, "k").unwrap().0, "b");
    assert_eq!(lapses(&s), before + 1);
    // The next change puts the key's TTL back to its lease's deadline.
    assert!(int(&mut c, &["PTTL", "k"]) > 50_000);
}

#[test]
fn persist_keeps_the_key_but_leases_still_lapse() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 300).unwrap();
    assert_eq!(int(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(int(&mut c, &["PTTL", "k"]), -1);
    wait_until(Duration::from_secs(10), "lease lapsed", || {
        int(&mut c, &["EXISTS", "k"]) == 0
    });
    assert_eq!(lapses(&s), 1);
}

#[test]
fn swapdb_keeps_deadlines_of_moved_keys() {
    let s = Server::start();
    let mut c = s.conn();
    lock(&mut c, "k", "a", 400).unwrap();
    let _: () = redis::cmd("SWAPDB").arg(0).arg(1).query(&mut c).unwrap();
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    assert_eq!(holder(&mut c, "k").unwrap().0, "a");
    wait_until(Duration::from_secs(10), "lapsed in db 1", || {
        lapses(&s) == 1
    });
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);
}

/// `CLIENT PAUSE WRITE` (what a `CLUSTER FAILOVER` or `FAILOVER` does while handing over, and a
/// `SHUTDOWN` waiting for replicas): leases falling due meanwhile lapse once the pause ends,
/// never during it — Redis aborts if a write is propagated while clients are paused (it did:
/// a permit of a semaphore that kept another one lapsed inside the pause, and Redis 7.0
/// asserted). Reads during the pause already answer as if they had lapsed, like an expired key.
#[test]
fn leases_due_during_client_pause_lapse_after_it() {
    // With the AOF on, every lapse is propagated: the case that aborted.
    let srv = Server::with_config(&[("appendonly", "yes")]);
    let mut c = srv.conn();
    let lapses = |s: &Server, family: &str| -> u64 {
        s.info_field("corral", &format!("corral_{family}_lapses"))
            .unwrap()
            .parse()
            .unwrap()
    };
    // What outlives the pause: a permit that keeps the semaphore key, a slot that keeps the
    // pool, a job (a JOB key has no TTL).
    assert!(int(&mut c, &["SEM.ACQUIRE", "s", "long", "2", "60000"]) > 0);
    let _: Value = redis::cmd("SLOT.GET")
        .arg("p")
        .arg("HOLDER")
        .arg("long")
        .arg("TTL")
        .arg(60000)
        .query(&mut c)
        .unwrap();
    let job = int(&mut c, &["JOB.CREATE", "j", "r"]);
    // What falls due inside it: one lease of each, then the pause at once.
    const TTL_MS: u64 = 1_000;
    let granted = std::time::Instant::now();
    assert!(
        int(
            &mut c,
            &["SEM.ACQUIRE", "s", "short", "2", &TTL_MS.to_string()]
        ) > 0
    );
    let pulled = value(&mut c, &["JOB.PULL", "j", "w", &TTL_MS.to_string()]);
    assert!(matches!(pulled, Value::Array(_)), "{pulled:?}");
    let _: Value = redis::cmd("SLOT.GET")
        .arg("p")
        .arg("HOLDER")
        .arg("short")
        .arg("TTL")
        .arg(TTL_MS)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    let paused_after = granted.elapsed();
    assert!(
        paused_after < Duration::from_millis(TTL_MS / 2),
        "the machine is too slow for this test: the pause began {paused_after:?} after the grants"
    );
    // Inside the pause, well past the deadlines: alive, nothing lapsed, but reads see the due
    // leases gone.
    thread::sleep(Duration::from_millis(TTL_MS + 1_000).saturating_sub(granted.elapsed()));
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    for family in ["sem", "slot", "job"] {
        assert_eq!(
            lapses(&srv, family),
            0,
            "a {family} lapse was written during the pause"
        );
    }
    assert_eq!(
        field(&value(&mut c, &["SEM.INFO", "s"]), "permits"),
        Value::Int(1)
    );
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut c).unwrap();
    // After it: everything due lapsed, and the server never aborted.
    wait_until(
        Duration::from_secs(20),
        "the lapses after the pause",
        || ["sem", "slot", "job"].iter().all(|f| lapses(&srv, f) == 1),
    );
    let got = value(&mut c, &["JOB.GET", "j", &job.to_string()]);
    assert_eq!(field(&got, "holder"), Value::Nil, "{got:?}");
    assert_eq!(
        field(&value(&mut c, &["SLOT.INFO", "p"]), "leased"),
        Value::Int(1)
    );
    assert_eq!(
        srv.info_field("corral", "corral_contained_panics")
            .as_deref(),
        Some("0")
    );
}
