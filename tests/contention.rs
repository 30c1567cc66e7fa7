//! Contention checker: 100 clients, each a thread with its own connection, fight over a few
//! RESV, SEM, SLOT and JOB keys with random TTLs, renewals, releases, short BLOCK waits and
//! abandoned leases, while a killer thread `CLIENT KILL ID`s random workers' connections (a
//! killed worker reconnects under a new identity). Every grant is recorded with its token and a
//! conservative validity interval, and the history is checked afterwards: never two holders at
//! once, never a semaphore over capacity, tokens strictly increasing per key, no lease reported
//! lost before its deadline, every waiter answered in time, every job fulfilled exactly once.
//! The workload and the checker are `tests/common/contend.rs` (its docs say exactly what is checked);
//! `tests/under_fire.rs` runs them through a live reshard and failovers.
//!
//! `CORRAL_CONTENTION_SECS` (default 10) sets how long the clients run,
//! `CORRAL_CONTENTION_SEED` replays a run's random choices.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/contend.rs"]
mod contend;

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use common::client::assert_alive;
use common::Server;
use contend::{Durability, Family, Keys, Shared, Topology, Workload};

const WORKERS: usize = 100;

#[test]
fn hundred_clients_contend_with_kills_and_nothing_is_ever_held_twice() {
    let secs = contend::seconds("CORRAL_CONTENTION_SECS", 10);
    let seed = contend::seed("CORRAL_CONTENTION_SEED");
    println!("contention: {WORKERS} clients for {secs} s, seed {seed} (CORRAL_CONTENTION_SEED)");
    let srv = Server::start();
    let sh = Shared::new(Topology::Primary(srv.port().into()));
    let work = Workload {
        keys: Keys::new(&["c:".to_string()], 2),
        durability: |_| Durability::Async,
        ttl: (50, 500),
    };
    let mut logs = contend::run(&sh, &work, WORKERS, true, seed, || {
        thread::sleep(Duration::from_secs(secs))
    });
    let mut drained = contend::Log::default();
    contend::drain_jobs(&sh, &work.keys, &mut drained);
    logs.push(drained);
    let jobs: BTreeMap<String, _> = work
        .keys
        .job
        .iter()
        .map(|k| (k.clone(), contend::fulfilled_jobs(&sh, k)))
        .collect();
    let report = contend::check(&logs, &sh.faults.lock().unwrap(), &jobs);
    println!("contention: {}", report.summary);

    let mut c = srv.conn();
    assert_alive(&srv, &mut c);
    contend::assert_clean(&report, seed, "CORRAL_CONTENTION_SEED");
    // The run did contend: every family granted a lot, waiters waited and timed out, kills hit.
    for f in [Family::Resv, Family::Sem, Family::Slot, Family::Job] {
        let n = report.grants.get(&f).copied().unwrap_or(0);
        assert!(n >= 100, "only {n} {f:?} grants");
    }
    assert!(report.timeouts > 0 && sh.faults.lock().unwrap().kills > 0);
}
