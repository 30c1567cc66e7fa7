//! Unit and model tests of the job core: each feature on its own, the first edition's encoding
//! read from real v1 bytes, and a random-operation model check (time passing included)
//! against a plain reference model.
//!
//! Test code only (declared `#[cfg(test)] mod tests;` in `mod.rs`): its `unwrap`s fail a test,
//! never a server.
#![cfg(test)]

use std::collections::BTreeMap;
use std::sync::Arc;

use super::core::*;
use super::record::{Bytes, Job, Opts};
use super::store::Stored;
use crate::engine::codec;
use crate::engine::deadlines::assert_close;
use crate::engine::{decide, Effect, Event, Family, Primitive, Reply};

/// Asserts that the derived indexes match the tables (a store re-read from its encoding is
/// equal, derived indexes included) and that the rebuild reproduces it.
pub(crate) fn check(j: &Jobs) {
    let back: Jobs = codec::decode(&codec::encode(j)).expect("consistent tables");
    assert_eq!(&back, j, "derived indexes");
    let mut copy = Jobs::default();
    for e in j.rebuild() {
        copy.apply(&e).expect("rebuild effect applies");
    }
    assert_eq!(&copy, j, "rebuild");
}

fn pull(lane: Lane, worker: &str, ttl: u64) -> Pull {
    Pull {
        lane,
        worker: Arc::from(worker.as_bytes()),
        ttl,
    }
}

/// `run!(j, effects)`: decides (borrowing `j`), then applies and checks.
macro_rules! run {
    ($j:ident, $e:expr $(,)?) => {{
        let e: Vec<JobEffect> = ($e).to_vec();
        run(&mut $j, &e);
    }};
}

fn run(j: &mut Jobs, effects: &[JobEffect]) {
    for e in effects {
        j.apply(e).unwrap();
    }
    check(j);
}

fn run_unchecked(j: &mut Jobs, effects: &[JobEffect]) {
    for e in effects {
        j.apply(e).unwrap();
    }
}

fn create(j: &mut Jobs, id: u64, request: &[u8], spec: &Spec, now: u64) -> u64 {
    match j.create(id, request, spec, now) {
        Created::New(e) => {
            run(j, &[e]);
            id
        }
        Created::Existing(old) => old,
    }
}

fn plain(j: &mut Jobs, id: u64, request: &[u8]) {
    create(j, id, request, &Spec::default(), 0);
}

/// Grants (or not) and applies; returns the reply.
fn take(j: &mut Jobs, req: &Pull, now: u64, token: u64) -> Option<Reply> {
    let (effects, reply) = decide(j, req, now, false, token)?;
    run(j, &effects);
    Some(reply)
}

fn ints(r: &Reply) -> (u64, u64) {
    match r {
        Reply::Array(v) => match (&v[0], v.last()) {
            (Reply::Int(id), Some(Reply::Int(t))) => (*id as u64, *t as u64),
            _ => panic!("{r:?}"),
        },
        _ => panic!("{r:?}"),
    }
}

/// Everything due at `now`, as the engine does it (again while a slice leaves more due).
fn settle(j: &mut Jobs, now: u64) -> Vec<JobEffect> {
    let mut all = vec![];
    loop {
        let mut out = vec![];
        j.lapse(now, &mut out);
        if out.is_empty() {
            return all;
        }
        run_unchecked(j, &out);
        all.extend(out);
    }
}

fn spec(f: impl FnOnce(&mut Spec)) -> Spec {
    let mut s = Spec::default();
    f(&mut s);
    s
}

/// The store the v1 fixtures were saved from (`testdata/`), built with the first edition's
/// effects: pending (with targets), leased, fulfilled (binary and empty values, targets),
/// notifying, a deleted job and a raised floor.
fn v1_sample() -> Jobs {
    let mut j = Jobs::default();
    for id in 1..=6 {
        let e = JobEffect::Create {
            id,
            request: format!("req\0{id}").as_bytes().into(),
        };
        run(&mut j, &[e]);
    }
    run!(j, &[j.queue(2, &[b"t1", b"\0t2"]).unwrap()]);
    take(&mut j, &pull(Lane::Work, "w1", 100), 0, 10).unwrap();
    take(&mut j, &pull(Lane::Work, "w2\0", 200), 0, 11).unwrap();
    let e = j.fulfill(3, &[0, 1, 2, 255], None, 0).unwrap();
    run(&mut j, &e);
    let e = j.fulfill(4, b"", None, 0).unwrap();
    run(&mut j, &e);
    let e = [
        j.queue(3, &[b"x", b"y"]).unwrap(),
        j.queue(4, &[b"z"]).unwrap(),
    ];
    run(&mut j, &e);
    take(&mut j, &pull(Lane::Notify, "n1", 300), 0, 12).unwrap();
    let e = j.delete(6);
    run(&mut j, &e);
    run(&mut j, &[JobEffect::Floor { token: 20 }]);
    j
}

#[test]
fn first_edition_values_and_effects_still_load() {
    let want = v1_sample();
    assert_eq!(want.counts(0).notifying, 1);
    assert_eq!(want.counts(0).leased, 2);
    let rdb = include_bytes!("testdata/v1-store.bin");
    let got = Jobs::decode(1, rdb).expect("a v1 value loads");
    assert_eq!(got, want);
    check(&got);
    assert_eq!(
        Jobs::decode(3, &codec::encode(&want)),
        None,
        "an unknown version"
    );
    assert_eq!(Jobs::decode(0, rdb), None);
    // An AOF written by the first edition: its effect batch applies to the same store.
    let aof = include_bytes!("testdata/v1-rebuild-effects.bin");
    let (family, effects) = codec::split_effects(aof).unwrap();
    assert_eq!(family, Family::Job);
    let effects: Vec<JobEffect> = codec::decode(effects).expect("v1 effects decode");
    let mut replayed = Jobs::default();
    run(&mut replayed, &effects);
    assert_eq!(replayed, want);
    // The view is the first edition's: every job at priority 0, no attempts, no options.
    let v = got.get(2, 0).unwrap();
    assert_eq!(
        (v.state, v.job.priority, v.job.attempts),
        (State::Pending, 0, 0)
    );
    assert_eq!(v.job.waiting().len(), 2);
}

#[test]
fn workflow_create_pull_fulfil_queue_notify_done() {
    let mut j = Jobs::default();
    plain(&mut j, 10, b"3+3");
    plain(&mut j, 11, b"4+4");
    let r = take(&mut j, &pull(Lane::Work, "w", 100), 0, 12).unwrap();
    assert_eq!(
        r,
        Reply::Array(vec![
            Reply::Int(10),
            Reply::Bulk(b"3+3".to_vec()),
            Reply::Int(12)
        ])
    );
    let r = take(&mut j, &pull(Lane::Work, "v", 100), 0, 13).unwrap();
    assert_eq!(ints(&r), (11, 13));
    assert!(take(&mut j, &pull(Lane::Work, "u", 100), 0, 14).is_none());
    run!(j, &[j.queue(10, &[b"a", b"b", b"a"]).unwrap()]);
    assert!(take(&mut j, &pull(Lane::Notify, "n", 100), 0, 15).is_none());
    let e = j.fulfill(10, b"6", Some(12), 1).unwrap();
    assert_eq!(e[0], JobEffect::Release { id: 10 });
    run(&mut j, &e);
    assert_eq!(j.fulfill(10, b"6", None, 1), Err(Refusal::Already));
    assert_eq!(j.release(10, b"w", 1), Err(Refusal::Is(State::Fulfilled)));
    assert_eq!(
        j.renew(10, b"w", 10, 1),
        Err(Refusal::NotLeased { notify: true }),
        "RENEW of a fulfilled job asks for its notification lease"
    );
    let (e, n) = j.unqueue(10, &[b"a", b"zzz"], 1).unwrap();
    assert_eq!(n, 1);
    run(&mut j, &e);
    assert_eq!(j.unqueue(10, &[], 1).unwrap(), (vec![], 0));
    let r = take(&mut j, &pull(Lane::Notify, "n", 100), 1, 16).unwrap();
    assert_eq!(
        r,
        Reply::Array(vec![
            Reply::Int(10),
            Reply::Bulk(b"6".to_vec()),
            Reply::Array(vec![Reply::Bulk(b"b".to_vec()), Reply::Bulk(b"a".to_vec())]),
            Reply::Int(16)
        ])
    );
    // The notification worker's heartbeat: RENEW extends its notification lease.
    let e = j.renew(10, b"n", 500, 2).unwrap();
    assert_eq!(
        e,
        JobEffect::NotifyRenew {
            id: 10,
            deadline: 502
        }
    );
    run(&mut j, &[e]);
    assert_eq!(j.get(10, 2).unwrap().lease.unwrap().deadline, 502);
    assert_eq!(
        j.renew(10, b"m", 500, 2),
        Err(Refusal::HeldBy(Arc::from(&b"n"[..])))
    );
    assert!(take(&mut j, &pull(Lane::Notify, "m", 100), 1, 17).is_none());
    run!(j, &[j.queue(10, &[b"c"]).unwrap()]);
    let (e, n) = j.done(10, b"n", &[b"b", b"x"], 2).unwrap();
    assert_eq!(n, 1);
    run(&mut j, &e);
    assert_eq!(
        j.done(10, b"n", &[], 2),
        Err(Refusal::NotLeased { notify: true })
    );
    assert_eq!(j.done(11, b"n", &[], 2), Err(Refusal::NotFulfilled));
    let r = take(&mut j, &pull(Lane::Notify, "m", 100), 2, 18).unwrap();
    assert_eq!(ints(&r), (10, 18));
    let (e, n) = j.done(10, b"m", &[b"a", b"c"], 3).unwrap();
    assert_eq!(n, 2);
    run(&mut j, &e);
    run!(j, &j.delete(10));
    assert!(j.delete(10).is_empty());
    run!(j, &j.delete(11));
    assert!(j.is_empty());
    assert_eq!(j.last_token(), 18);
}

#[test]
fn fulfil_tokens_stale_never_issued_and_none() {
    let mut j = Jobs::default();
    plain(&mut j, 1, b"r");
    assert_eq!(
        j.fulfill(1, b"v", Some(7), 0),
        Err(Refusal::Stale { current: None })
    );
    assert_eq!(j.fulfill(3, b"v", None, 0), Err(Refusal::NoJob));
    let (_, t1) = ints(&take(&mut j, &pull(Lane::Work, "old", 100), 0, 2).unwrap());
    settle(&mut j, 100);
    let (_, t2) = ints(&take(&mut j, &pull(Lane::Work, "new", 100), 100, 3).unwrap());
    assert_eq!(
        j.fulfill(1, b"v", Some(t1), 101),
        Err(Refusal::Stale { current: Some(t2) })
    );
    assert_eq!(
        j.fulfill(1, b"v", Some(t2 + 1), 101),
        Err(Refusal::NeverIssued)
    );
    assert_eq!(
        j.release(1, b"old", 101),
        Err(Refusal::HeldBy(Arc::from(&b"new"[..])))
    );
    run!(j, &j.fulfill(1, b"v", Some(t2), 101).unwrap());
}

#[test]
fn lapse_is_a_failed_attempt_and_raises_lapse_then_fail() {
    let mut j = Jobs::default();
    plain(&mut j, 1, b"r");
    take(&mut j, &pull(Lane::Work, "w", 100), 0, 2).unwrap();
    assert_eq!(j.next_deadline(), Some(100));
    assert!(settle(&mut j, 99).is_empty());
    let e = settle(&mut j, 100);
    assert_eq!(
        e,
        vec![
            JobEffect::Lapse { id: 1 },
            JobEffect::Fail {
                id: 1,
                reason: b"lapsed"[..].into(),
                due: None
            }
        ]
    );
    assert_eq!(e[0].event(), Event::Lapse);
    assert_eq!(e[1].event(), Event::Custom(FAIL_EVENT));
    let v = j.get(1, 100).unwrap();
    assert_eq!(
        (v.state, v.job.attempts, v.job.reason()),
        (State::Pending, 1, Some(&b"lapsed"[..]))
    );
    assert_eq!(
        j.renew(1, b"w", 100, 100),
        Err(Refusal::NotLeased { notify: false })
    );
}

#[test]
fn attempts_backoff_dead_letter_and_retry() {
    let mut j = Jobs::default();
    let s = spec(|s| {
        s.opts.max_attempts = Some(3);
        s.opts.backoff = Some(1000);
    });
    create(&mut j, 5, b"poison", &s, 0);
    // First failure: delayed 1000 ms.
    take(&mut j, &pull(Lane::Work, "w", 100), 0, 6).unwrap();
    let (e, state) = j.fail(5, b"w", b"boom", 10).unwrap();
    assert_eq!(state, State::Delayed);
    run(&mut j, &e);
    let v = j.get(5, 10).unwrap();
    assert_eq!(
        (v.state, v.due, v.job.attempts),
        (State::Delayed, Some(1010), 1)
    );
    assert_eq!(v.job.reason(), Some(&b"boom"[..]));
    assert!(
        take(&mut j, &pull(Lane::Work, "w", 100), 500, 7).is_none(),
        "not before due"
    );
    assert_eq!(j.fail(5, b"w", b"", 500), Err(Refusal::Is(State::Delayed)));
    settle(&mut j, 1010);
    // Second failure, by a lapse: delayed 2000 ms.
    take(&mut j, &pull(Lane::Work, "w", 100), 1010, 8).unwrap();
    settle(&mut j, 1110);
    assert_eq!(j.get(5, 1110).unwrap().due, Some(3110));
    settle(&mut j, 3110);
    // Third: failed (the dead letter), no delay.
    take(&mut j, &pull(Lane::Work, "w", 100), 3110, 9).unwrap();
    let (e, state) = j.fail(5, b"w", b"again", 3111).unwrap();
    assert_eq!(state, State::Failed);
    assert_eq!(e[1], JobEffect::Bury { id: 5 });
    assert_eq!(e[1].event(), Event::Custom(DEAD_EVENT));
    run(&mut j, &e);
    assert_eq!(j.counts(3111).failed, 1);
    assert!(
        take(&mut j, &pull(Lane::Work, "w", 100), 9000, 10).is_none(),
        "never pulled"
    );
    assert_eq!(j.retry(6), Err(Refusal::NoJob));
    run!(j, &[j.retry(5).unwrap()]);
    assert_eq!(j.retry(5), Err(Refusal::NotFailed(State::Pending)));
    let v = j.get(5, 9000).unwrap();
    assert_eq!((v.state, v.job.attempts), (State::Pending, 0));
    assert_eq!(
        v.job.reason(),
        Some(&b"again"[..]),
        "the last reason is kept"
    );
    // Without ATTEMPTS and BACKOFF a failure makes the job pending at once.
    plain(&mut j, 20, b"x");
    run!(j, &j.delete(5));
    take(&mut j, &pull(Lane::Work, "v", 100), 9000, 21).unwrap();
    let (_, state) = j.fail(20, b"v", b"", 9000).unwrap();
    assert_eq!(state, State::Pending);
}

#[test]
fn delays_promote_in_slices_and_pull_by_priority() {
    let mut j = Jobs::default();
    let n = 3 * LAPSE_BATCH as u64 + 7;
    for id in 1..=n {
        let s = spec(|s| {
            s.delay = Some(1000);
            s.priority = (id % 5) as u32;
        });
        match j.create(id, b"r", &s, 0) {
            Created::New(e) => run_unchecked(&mut j, &[e]),
            Created::Existing(_) => unreachable!(),
        }
    }
    assert_eq!(j.next_deadline(), Some(1000));
    assert!(take(&mut j, &pull(Lane::Work, "w", 100), 999, n + 1).is_none());
    // One slice at a time; the key stays due until the last.
    let mut out = vec![];
    j.lapse(1000, &mut out);
    assert_eq!(out.len(), LAPSE_BATCH);
    run_unchecked(&mut j, &out);
    assert_eq!(j.next_deadline(), Some(1000));
    settle(&mut j, 1000);
    assert_eq!(j.next_deadline(), None);
    check(&j);
    // Pull order: priority 4 first, oldest first within it.
    let order: Vec<u64> = j.list(Listing::Pending, None, 10_000).unwrap();
    assert_eq!(order.len() as u64, n);
    let want: Vec<u64> = (0..5u64)
        .rev()
        .flat_map(|p| (1..=n).filter(move |id| id % 5 == p))
        .collect();
    assert_eq!(order, want);
    let (id, _) = ints(&take(&mut j, &pull(Lane::Work, "w", 100), 1000, n + 1).unwrap());
    assert_eq!(id, 4);
    // LIST pages from any job's place, even one pulled since.
    assert_eq!(j.list(Listing::Pending, Some(4), 2).unwrap(), vec![9, 14]);
    assert_eq!(j.list(Listing::Leased, None, 5).unwrap(), vec![4]);
    assert_eq!(
        j.list(Listing::Delayed, Some(4), 5),
        Err(Refusal::NotListed(Listing::Delayed))
    );
    assert_eq!(
        j.list(Listing::Pending, Some(n + 100), 5),
        Err(Refusal::NoJob)
    );
}

#[test]
fn keep_deletes_finished_jobs_on_time_and_unique_is_idempotent() {
    let mut j = Jobs::default();
    let s = spec(|s| {
        s.opts.keep = Some(500);
        s.opts.unique = Some(Jobs::unique_name(b"order-7"));
    });
    assert_eq!(create(&mut j, 1, b"r", &s, 0), 1);
    assert_eq!(j.create(2, b"other", &s, 0), Created::Existing(1));
    run!(j, &[j.queue(1, &[b"t"]).unwrap()]);
    let e = j.fulfill(1, b"v", None, 10).unwrap();
    assert_eq!(e.len(), 1, "targets wait: not finished, no retention");
    run(&mut j, &e);
    take(&mut j, &pull(Lane::Notify, "n", 100), 10, 3).unwrap();
    let (e, _) = j.done(1, b"n", &[b"t"], 20).unwrap();
    assert_eq!(e.last(), Some(&JobEffect::Keep { id: 1, at: 520 }));
    run(&mut j, &e);
    assert_eq!(j.get(1, 20).unwrap().expires, Some(520));
    // A new target un-finishes it; removing it finishes it again, from then.
    run!(j, &[j.queue(1, &[b"u"]).unwrap()]);
    assert_eq!(j.next_deadline(), None);
    let (e, _) = j.unqueue(1, &[b"u"], 100).unwrap();
    run(&mut j, &e);
    assert_eq!(j.next_deadline(), Some(600));
    assert_eq!(settle(&mut j, 600), vec![JobEffect::Delete { id: 1 }]);
    assert!(j.is_empty());
    // The name is free again.
    assert_eq!(create(&mut j, 4, b"r", &s, 700), 4);
    run!(j, &j.delete(4));
    // A failed job is kept KEEP ms too, and RETRY cancels that.
    let s = spec(|s| {
        s.opts.keep = Some(50);
        s.opts.max_attempts = Some(1);
    });
    create(&mut j, 5, b"r", &s, 700);
    take(&mut j, &pull(Lane::Work, "w", 10), 700, 6).unwrap();
    let e = settle(&mut j, 710);
    assert!(e.contains(&JobEffect::Keep { id: 5, at: 760 }), "{e:?}");
    run!(j, &[j.retry(5).unwrap()]);
    assert_eq!(j.get(5, 710).unwrap().expires, None);
}

#[test]
fn inconsistent_stored_values_are_refused() {
    let refused = |s: &Stored| codec::decode::<Jobs>(&codec::encode(s)).is_none();
    let lease = |w: &str| super::leases::Lease {
        worker: Arc::from(w.as_bytes()),
        token: 9,
    };
    let job = |name: Option<&[u8]>| {
        Job::new(
            b"r"[..].into(),
            0,
            Opts {
                unique: name.map(Jobs::unique_name),
                ..Opts::default()
            },
        )
    };
    let fulfilled = |j: Job| super::core::Fulfilled {
        job: j,
        value: b"v"[..].into(),
    };
    let good = Stored {
        pullable: vec![(1, job(Some(b"a")))],
        working: vec![(2, 50, lease("w"), job(None))],
        delayed: vec![(3, 60, job(Some(b"b")))],
        failed: vec![(4, job(None))],
        fulfilled: vec![(5, fulfilled(job(None)))],
        notifying: vec![],
        retained: vec![(4, 70), (5, 80)],
        last_token: 10,
    };
    let j: Jobs = codec::decode(&codec::encode(&good)).expect("consistent");
    check(&j);
    assert_eq!(j.encode_for_tests(), codec::encode(&good), "the same bytes");
    let mut s = good.clone();
    s.failed.push((1, job(None)));
    assert!(refused(&s), "a job in two states");
    let mut s = good.clone();
    s.working.push((6, 90, lease("w"), job(None)));
    assert!(refused(&s), "two work leases for one worker");
    let mut s = good.clone();
    s.notifying.push((1, 90, lease("n")));
    assert!(refused(&s), "a notification lease on a pending job");
    let mut s = good.clone();
    s.retained.push((3, 90));
    assert!(refused(&s), "retention of a delayed job");
    let mut s = good.clone();
    s.delayed.push((7, 90, job(Some(b"a"))));
    assert!(refused(&s), "one unique name twice");
    let mut s = good.clone();
    s.last_token = 4;
    assert!(refused(&s), "an id above the last token");
    let mut s = good.clone();
    s.failed[0].1.more = Some(Box::default());
    assert!(refused(&s), "a job not in canonical form");
    let mut s = good.clone();
    s.pullable.push((8, job(None)));
    s.pullable.push((8, job(None)));
    assert!(refused(&s), "a duplicate id");
    assert_eq!(codec::decode::<Jobs>(&[1, 2, 3]), None);
}

#[test]
fn apply_rejects_nonsense_and_leaves_state() {
    let mut j = v1_sample();
    let s = spec(|s| {
        s.opts.unique = Some(Jobs::unique_name(b"u"));
        s.delay = Some(5);
    });
    create(&mut j, 30, b"d", &s, 0);
    let before = j.clone();
    let w = |s: &str| -> Arc<[u8]> { Arc::from(s.as_bytes()) };
    for e in [
        JobEffect::Create {
            id: 1,
            request: Bytes::default(),
        },
        JobEffect::CreateWith {
            id: 40,
            request: Bytes::default(),
            priority: 0,
            opts: Opts {
                unique: Some(Jobs::unique_name(b"u")),
                ..Opts::default()
            },
            due: None,
        },
        JobEffect::Grant {
            id: 1,
            worker: w("x"),
            deadline: 1,
            token: 1,
        },
        JobEffect::Grant {
            id: 5,
            worker: w("w1"),
            deadline: 1,
            token: 1,
        },
        JobEffect::Renew { id: 5, deadline: 1 },
        JobEffect::Release { id: 5 },
        JobEffect::Fulfill {
            id: 1,
            value: Bytes::default(),
        },
        JobEffect::Fulfill {
            id: 3,
            value: Bytes::default(),
        },
        JobEffect::Queue {
            id: 99,
            targets: vec![],
        },
        JobEffect::NotifyGrant {
            id: 5,
            worker: w("q"),
            deadline: 1,
            token: 1,
        },
        JobEffect::NotifyGrant {
            id: 3,
            worker: w("q"),
            deadline: 1,
            token: 1,
        },
        JobEffect::NotifyRelease { id: 4 },
        JobEffect::Delete { id: 99 },
        JobEffect::Fail {
            id: 30,
            reason: Bytes::default(),
            due: None,
        },
        JobEffect::Fail {
            id: 3,
            reason: Bytes::default(),
            due: None,
        },
        JobEffect::Bury { id: 1 },
        JobEffect::Retry { id: 5 },
        JobEffect::Promote { id: 5 },
        JobEffect::Keep { id: 5, at: 1 },
        JobEffect::Keep { id: 3, at: 1 },
        JobEffect::Put {
            id: 2,
            job: Job::default(),
            placed: Placed::Failed,
        },
    ] {
        assert!(j.apply(&e).is_err(), "{e:?}");
        assert_eq!(j, before, "{e:?}");
    }
}

#[test]
fn memory_per_pending_job_is_within_budget() {
    for prio in [false, true] {
        let mut j = Jobs::default();
        for id in 1..=10_000u64 {
            let s = spec(|s| s.priority = if prio { (id % 1000) as u32 + 1 } else { 0 });
            match j.create(id, b"0123456789", &s, 0) {
                Created::New(e) => run_unchecked(&mut j, &[e]),
                Created::Existing(_) => unreachable!(),
            }
        }
        let per_job = (std::mem::size_of::<Jobs>() + j.mem_usage()) / 10_000;
        // The request (10 bytes) takes 16; the budget is 150 bytes beyond it.
        assert!(
            per_job <= 150 + 16 + 10,
            "{per_job} bytes per pending job (priorities: {prio})"
        );
        if !prio {
            assert!(per_job <= 120, "no more than before priorities: {per_job}");
        }
    }
}

/// MEMORY USAGE samples at most MEM_SAMPLE jobs per table; on jobs of uniform (and of mixed)
/// sizes in every state it stays within 10% of the exact walk.
#[test]
fn mem_estimate_matches_the_walk() {
    for mixed in [false, true] {
        let mut j = Jobs::default();
        let len = |i: u64| if mixed { 1 + (i % 60) as usize } else { 30 };
        for id in 1..=30_000u64 {
            let s = spec(|s| {
                s.priority = (id % 3) as u32;
                if id % 4 == 0 {
                    s.delay = Some(1 + id);
                }
                if id % 7 == 0 {
                    s.opts.keep = Some(100);
                }
            });
            match j.create(id, &vec![b'r'; len(id)], &s, 0) {
                Created::New(e) => run_unchecked(&mut j, &[e]),
                Created::Existing(_) => unreachable!(),
            }
        }
        for id in (1..=3_000u64).filter(|id| id % 4 != 0) {
            let grant = JobEffect::Grant {
                id,
                worker: Arc::from(format!("worker-{id:06}").as_bytes()),
                deadline: 10_000 + id,
                token: 100_000 + id,
            };
            run_unchecked(&mut j, &[grant]);
        }
        for id in (20_001..=25_000u64).filter(|id| id % 4 != 0) {
            let e = j.fulfill(id, &vec![b'v'; len(id) * 2], None, 0).unwrap();
            run_unchecked(&mut j, &e);
        }
        let exact = j.mem_sampled(usize::MAX);
        assert_close(
            j.mem_usage(),
            exact,
            if mixed { "mixed" } else { "uniform" },
        );
    }
}

/// Model check: random commands against a plain model of the job store — every decision,
/// reply, view, count and listing compared — with time passing (leases lapse as failed
/// attempts, delays fall due, retention deletes), indexes, encoding and rebuild checked after
/// every step.
#[test]
fn matches_model() {
    #[derive(Clone, Debug, PartialEq)]
    enum MState {
        Delayed(u64),
        Pending,
        Failed,
        Fulfilled(Vec<u8>),
    }
    #[derive(Clone, Debug)]
    struct MJob {
        priority: u32,
        attempts: u32,
        max: Option<u32>,
        backoff: Option<u64>,
        keep: Option<u64>,
        unique: Option<Vec<u8>>,
        reason: Option<Vec<u8>>,
        state: MState,
        waiting: Vec<Vec<u8>>,
        /// (worker, deadline, token)
        work: Option<(String, u64, u64)>,
        notify: Option<(String, u64, u64)>,
        expires: Option<u64>,
    }
    impl MJob {
        fn finished(&self) -> bool {
            match self.state {
                MState::Failed => true,
                MState::Fulfilled(_) => self.waiting.is_empty() && self.notify.is_none(),
                _ => false,
            }
        }
        fn keep_from(&mut self, now: u64) {
            if let Some(k) = self.keep.filter(|_| self.finished()) {
                self.expires = Some(now + k);
            }
        }
        /// A failed attempt: what the spec says.
        fn fail(&mut self, reason: &[u8], now: u64) -> State {
            self.work = None;
            self.attempts += 1;
            self.reason = Some(reason.to_vec());
            if self.max.is_some_and(|m| self.attempts >= m) {
                self.state = MState::Failed;
                self.keep_from(now);
                State::Failed
            } else if let Some(b) = self.backoff {
                let d = (b << (self.attempts - 1).min(40)).min(1 << 40);
                self.state = MState::Delayed(now + d);
                State::Delayed
            } else {
                State::Pending
            }
        }
    }
    let mut model: BTreeMap<u64, MJob> = BTreeMap::new();
    let mut j = Jobs::default();
    let mut rnd = crate::engine::testing::rnd(0x2545f4914f6cdd1du64);
    let mut now = 1000u64;
    let mut token = 1u64;
    let targets = [&b"a"[..], b"b", b"c"];
    let mut coverage: BTreeMap<&'static str, usize> = BTreeMap::new();
    for step in 0..20_000 {
        now += rnd(12);
        token += 1;
        // Time passes: the engine acts on what is due before every command.
        let due = settle(&mut j, now);
        for e in &due {
            *coverage
                .entry(match e {
                    JobEffect::Lapse { .. } => "lapse",
                    JobEffect::NotifyLapse { .. } => "notify lapse",
                    JobEffect::Promote { .. } => "promote",
                    JobEffect::Delete { .. } => "retention delete",
                    JobEffect::Bury { .. } => "dead",
                    _ => "other due",
                })
                .or_insert(0) += 1;
        }
        let mut gone = vec![];
        for (&id, m) in model.iter_mut() {
            if m.work.as_ref().is_some_and(|w| w.1 <= now) {
                m.fail(b"lapsed", now);
            }
            if m.notify.as_ref().is_some_and(|w| w.1 <= now) {
                m.notify = None;
                m.keep_from(now);
            }
            if matches!(m.state, MState::Delayed(d) if d <= now) {
                m.state = MState::Pending;
            }
            if m.expires.is_some_and(|t| t <= now) {
                gone.push(id);
            }
        }
        for id in gone {
            model.remove(&id);
        }
        let worker = format!("w{}", rnd(5));
        let id = if model.is_empty() || rnd(10) == 0 {
            token + 5
        } else {
            let keys: Vec<u64> = model.keys().copied().collect();
            keys[rnd(keys.len() as u64) as usize]
        };
        let ttl = 1 + rnd(40);
        let mut seen = |what: &'static str| *coverage.entry(what).or_insert(0usize) += 1;
        match rnd(16) {
            0..=2 => {
                let s = spec(|s| {
                    if rnd(3) == 0 {
                        s.priority = rnd(3) as u32;
                    }
                    if rnd(4) == 0 {
                        s.delay = Some(1 + rnd(30));
                    }
                    if rnd(3) == 0 {
                        s.opts.max_attempts = Some(1 + rnd(3) as u32);
                    }
                    if rnd(3) == 0 {
                        s.opts.backoff = Some(1 + rnd(10));
                    }
                    if rnd(3) == 0 {
                        s.opts.keep = Some(1 + rnd(40));
                    }
                    if rnd(4) == 0 {
                        s.opts.unique = Some(Jobs::unique_name(&[b'u', rnd(4) as u8]));
                    }
                });
                let existing = s.opts.unique.as_ref().and_then(|n| {
                    model
                        .iter()
                        .find(|(_, m)| m.unique.as_deref() == Some(&n[..]))
                        .map(|(&id, _)| id)
                });
                let got = create(&mut j, token, b"req", &s, now);
                match existing {
                    Some(e) => {
                        seen("unique hit");
                        assert_eq!(got, e);
                    }
                    None => {
                        assert_eq!(got, token);
                        model.insert(
                            token,
                            MJob {
                                priority: s.priority,
                                attempts: 0,
                                max: s.opts.max_attempts,
                                backoff: s.opts.backoff,
                                keep: s.opts.keep,
                                unique: s.opts.unique.as_ref().map(|n| n.to_vec()),
                                reason: None,
                                state: s
                                    .delay
                                    .map_or(MState::Pending, |d| MState::Delayed(now + d)),
                                waiting: vec![],
                                work: None,
                                notify: None,
                                expires: None,
                            },
                        );
                    }
                }
            }
            3..=5 => {
                let got = decide(&j, &pull(Lane::Work, &worker, ttl), now, false, token);
                let held = model
                    .iter()
                    .find(|(_, m)| m.work.as_ref().is_some_and(|w| w.0 == worker));
                let want = match held {
                    Some((&hid, m)) => Some((hid, m.work.as_ref().unwrap().2)),
                    None => model
                        .iter()
                        .filter(|(_, m)| m.state == MState::Pending && m.work.is_none())
                        .min_by_key(|(&id, m)| (std::cmp::Reverse(m.priority), id))
                        .map(|(&id, _)| (id, token)),
                };
                assert_eq!(got.as_ref().map(|(_, r)| ints(r)), want, "step {step}");
                if let Some((e, _)) = got {
                    seen(if matches!(e[..], [JobEffect::Grant { .. }]) {
                        "pull"
                    } else {
                        "re-pull"
                    });
                    run(&mut j, &e);
                    let (gid, t) = want.unwrap();
                    model.get_mut(&gid).unwrap().work = Some((worker.clone(), now + ttl, t));
                }
            }
            6 => {
                let got = decide(&j, &pull(Lane::Notify, &worker, ttl), now, false, token);
                let held = model
                    .iter()
                    .find(|(_, m)| m.notify.as_ref().is_some_and(|w| w.0 == worker));
                let want = match held {
                    Some((&hid, m)) => Some((hid, m.notify.as_ref().unwrap().2)),
                    None => model
                        .iter()
                        .find(|(_, m)| {
                            matches!(m.state, MState::Fulfilled(_))
                                && !m.waiting.is_empty()
                                && m.notify.is_none()
                        })
                        .map(|(&id, _)| (id, token)),
                };
                assert_eq!(got.as_ref().map(|(_, r)| ints(r)), want);
                if let Some((e, _)) = got {
                    seen("pullnotify");
                    run(&mut j, &e);
                    let (gid, t) = want.unwrap();
                    let m = model.get_mut(&gid).unwrap();
                    m.notify = Some((worker.clone(), now + ttl, t));
                    m.expires = None;
                }
            }
            7 => {
                // RENEW (either lease), RELEASE or FAIL, mostly by the worker holding the job.
                let what = rnd(3);
                let held = model
                    .iter()
                    .find(|(_, m)| {
                        m.work.as_ref().is_some_and(|n| n.0 == worker)
                            || (what == 0 && m.notify.as_ref().is_some_and(|n| n.0 == worker))
                    })
                    .map(|(&id, _)| id);
                let id = match held {
                    Some(h) if rnd(4) > 0 => h,
                    _ => id,
                };
                let m = model.get(&id);
                let holds_work = m
                    .and_then(|m| m.work.as_ref())
                    .is_some_and(|w| w.0 == worker);
                let holds_notify = m
                    .and_then(|m| m.notify.as_ref())
                    .is_some_and(|w| w.0 == worker);
                let fulfilled = m.is_some_and(|m| matches!(m.state, MState::Fulfilled(_)));
                match what {
                    0 => {
                        let r = j.renew(id, worker.as_bytes(), ttl, now);
                        assert_eq!(r.is_ok(), holds_work || holds_notify, "{r:?}");
                        if let Ok(e) = r {
                            seen(if fulfilled {
                                "renew notify"
                            } else {
                                "renew work"
                            });
                            run(&mut j, &[e]);
                            let m = model.get_mut(&id).unwrap();
                            let l = if fulfilled {
                                &mut m.notify
                            } else {
                                &mut m.work
                            };
                            l.as_mut().unwrap().1 = now + ttl;
                        }
                    }
                    1 => {
                        let r = j.release(id, worker.as_bytes(), now);
                        assert_eq!(r.is_ok(), holds_work, "{r:?}");
                        if let Ok(e) = r {
                            run(&mut j, &[e]);
                            model.get_mut(&id).unwrap().work = None;
                        }
                    }
                    _ => {
                        let r = j.fail(id, worker.as_bytes(), b"why", now);
                        assert_eq!(r.is_ok(), holds_work, "{r:?}");
                        if let Ok((e, state)) = r {
                            seen("fail");
                            run(&mut j, &e);
                            let want = model.get_mut(&id).unwrap().fail(b"why", now);
                            assert_eq!(state, want);
                        }
                    }
                }
            }
            8 => {
                let leased = model
                    .iter()
                    .find(|(_, m)| m.work.is_some())
                    .map(|(&id, _)| id);
                let id = match leased {
                    Some(l) if rnd(2) > 0 => l,
                    _ => id,
                };
                let current = model.get(&id).and_then(|m| m.work.as_ref()).map(|w| w.2);
                let with_token = match rnd(4) {
                    0 => None,
                    1 => current,
                    2 => current.map(|c| c + 1 + rnd(3)),
                    _ => Some(token - rnd(5)),
                };
                let r = j.fulfill(id, b"val", with_token, now);
                let want = match model.get(&id) {
                    None => Err(Refusal::NoJob),
                    Some(m) if matches!(m.state, MState::Fulfilled(_)) => Err(Refusal::Already),
                    Some(m) => match (with_token, m.work.as_ref().map(|w| w.2)) {
                        (Some(t), Some(c)) if t > c => Err(Refusal::NeverIssued),
                        (Some(t), c) if c != Some(t) => Err(Refusal::Stale { current: c }),
                        _ => Ok(()),
                    },
                };
                assert_eq!(r.as_ref().map(|_| ()).map_err(Clone::clone), want);
                seen(match &r {
                    Ok(_) => "fulfil",
                    Err(Refusal::Stale { .. }) => "stale",
                    Err(Refusal::NeverIssued) => "never issued",
                    Err(_) => "fulfil refused",
                });
                if let Ok(e) = r {
                    run(&mut j, &e);
                    let m = model.get_mut(&id).unwrap();
                    m.state = MState::Fulfilled(b"val".to_vec());
                    m.work = None;
                    m.expires = None;
                    m.keep_from(now);
                }
            }
            9 => {
                let ts: Vec<&[u8]> = (0..1 + rnd(2)).map(|_| targets[rnd(3) as usize]).collect();
                let r = j.queue(id, &ts);
                assert_eq!(r.is_ok(), model.contains_key(&id));
                if let Ok(e) = r {
                    run(&mut j, &[e]);
                    let m = model.get_mut(&id).unwrap();
                    m.waiting.extend(ts.iter().map(|t| t.to_vec()));
                    if matches!(m.state, MState::Fulfilled(_)) {
                        m.expires = None;
                    }
                }
            }
            10 | 11 => {
                let ts: Vec<&[u8]> = (0..rnd(3)).map(|_| targets[rnd(3) as usize]).collect();
                let done = rnd(2) == 0;
                let held = model
                    .iter()
                    .find(|(_, m)| m.notify.as_ref().is_some_and(|n| n.0 == worker))
                    .map(|(&id, _)| id);
                let id = match held {
                    Some(h) if done && rnd(4) > 0 => h,
                    _ => id,
                };
                let r = if done {
                    j.done(id, worker.as_bytes(), &ts, now)
                } else {
                    j.unqueue(id, &ts, now)
                };
                let allowed = match model.get(&id) {
                    None => false,
                    Some(m) => !done || m.notify.as_ref().is_some_and(|n| n.0 == worker),
                };
                assert_eq!(r.is_ok(), allowed, "{r:?}");
                if let Ok((e, n)) = r {
                    run(&mut j, &e);
                    let m = model.get_mut(&id).unwrap();
                    let mut removed = 0;
                    for t in &ts {
                        if let Some(i) = m.waiting.iter().position(|w| w == t) {
                            m.waiting.remove(i);
                            removed += 1;
                        }
                    }
                    assert_eq!(n, removed);
                    if done {
                        m.notify = None;
                        seen("done");
                    }
                    if (done || removed > 0) && m.expires.is_none() {
                        m.keep_from(now);
                    }
                }
            }
            12 => {
                let failed = model.iter().find(|(_, m)| m.state == MState::Failed);
                let id = match failed {
                    Some((&f, _)) if rnd(4) > 0 => f,
                    _ => id,
                };
                let r = j.retry(id);
                let failed = model.get(&id).is_some_and(|m| m.state == MState::Failed);
                assert_eq!(r.is_ok(), failed);
                if let Ok(e) = r {
                    seen("retry");
                    run(&mut j, &[e]);
                    let m = model.get_mut(&id).unwrap();
                    m.state = MState::Pending;
                    m.attempts = 0;
                    m.expires = None;
                }
            }
            13 => {
                // LIST of every kind, from the start and from a job's place.
                let what = Listing::ALL[rnd(5) as usize].1;
                let mut want: Vec<(u64, u64, u64)> = model
                    .iter()
                    .filter_map(|(&id, m)| {
                        let key = match (&m.state, what) {
                            (MState::Pending, Listing::Pending) if m.work.is_none() => {
                                (u64::from(u32::MAX - m.priority), id)
                            }
                            (MState::Pending, Listing::Leased) => (m.work.as_ref()?.1, id),
                            (MState::Delayed(d), Listing::Delayed) => (*d, id),
                            (MState::Failed, Listing::Failed) => (id, 0),
                            (MState::Fulfilled(_), Listing::Fulfilled) => (id, 0),
                            _ => return None,
                        };
                        Some((key.0, key.1, id))
                    })
                    .collect();
                want.sort_unstable();
                let ids: Vec<u64> = want.iter().map(|w| w.2).collect();
                assert_eq!(j.list(what, None, 1000).unwrap(), ids, "{what:?}");
                if let Some(&at) = ids.get(rnd(ids.len() as u64 + 1) as usize) {
                    let i = ids.iter().position(|&x| x == at).unwrap();
                    let page = j.list(what, Some(at), 3).unwrap();
                    assert_eq!(
                        page,
                        ids[i + 1..].iter().take(3).copied().collect::<Vec<_>>()
                    );
                    seen("list after");
                }
            }
            _ => {
                let e = j.delete(id);
                assert_eq!(!e.is_empty(), model.remove(&id).is_some());
                if !e.is_empty() {
                    seen("delete");
                }
                run(&mut j, &e);
            }
        }
        // Views and counts agree with the model.
        for (&mid, m) in &model {
            let v = j.get(mid, now).expect("job exists");
            let state = match m.state {
                MState::Delayed(_) => State::Delayed,
                MState::Pending => State::Pending,
                MState::Failed => State::Failed,
                MState::Fulfilled(_) => State::Fulfilled,
            };
            assert_eq!(v.state, state, "job {mid} (step {step})");
            assert_eq!(
                v.due,
                match m.state {
                    MState::Delayed(d) => Some(d),
                    _ => None,
                }
            );
            assert_eq!(
                v.value,
                match &m.state {
                    MState::Fulfilled(v) => Some(&v[..]),
                    _ => None,
                }
            );
            assert_eq!(
                (
                    v.job.priority,
                    v.job.attempts,
                    v.job.max_attempts(),
                    v.job.keep()
                ),
                (m.priority, m.attempts, m.max, m.keep)
            );
            assert_eq!(v.job.reason(), m.reason.as_deref());
            assert_eq!(v.expires, m.expires, "job {mid} (step {step})");
            let w: Vec<&[u8]> = v.job.waiting().iter().map(|t| &t[..]).collect();
            let mw: Vec<&[u8]> = m.waiting.iter().map(|t| &t[..]).collect();
            assert_eq!(w, mw);
            let lease = if matches!(m.state, MState::Fulfilled(_)) {
                &m.notify
            } else {
                &m.work
            };
            assert_eq!(
                v.lease.map(|l| (l.worker.to_vec(), l.deadline, l.token)),
                lease.as_ref().map(|l| (l.0.as_bytes().to_vec(), l.1, l.2))
            );
        }
        assert_eq!(j.job_count(), model.len());
        let c = j.counts(now);
        let count = |f: &dyn Fn(&MJob) -> bool| model.values().filter(|m| f(m)).count();
        assert_eq!(c.pending, count(&|m| m.state == MState::Pending));
        assert_eq!(c.leased, count(&|m| m.work.is_some()));
        assert_eq!(c.delayed, count(&|m| matches!(m.state, MState::Delayed(_))));
        assert_eq!(c.failed, count(&|m| m.state == MState::Failed));
        assert_eq!(
            c.notifiable,
            count(&|m| matches!(m.state, MState::Fulfilled(_))
                && !m.waiting.is_empty()
                && m.notify.is_none())
        );
        assert_eq!(c.notifying, count(&|m| m.notify.is_some()));
    }
    for what in [
        "pull",
        "re-pull",
        "pullnotify",
        "lapse",
        "notify lapse",
        "promote",
        "retention delete",
        "dead",
        "fail",
        "retry",
        "renew work",
        "renew notify",
        "fulfil",
        "stale",
        "never issued",
        "unique hit",
        "done",
        "list after",
        "delete",
    ] {
        assert!(
            coverage.get(what).copied().unwrap_or(0) >= 10,
            "{what}: {coverage:?}"
        );
    }
}
