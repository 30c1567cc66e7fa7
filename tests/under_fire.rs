//! Promises under fire: the contention workload of `tests/contention.rs` (`tests/common/contend.rs`:
//! RESV, SEM, SLOT and JOB keys, BLOCK waits, renewals, abandoned leases, client kills) runs
//! while the servers change under it, and its history must still check clean:
//!
//! - **a live reshard**: a 3-primary cluster (plus a replica of node 0) whose contended keys,
//!   under three hash tags, move slot by slot between the primaries again and again
//!   (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE` key by key with pauses, `SETSLOT …
//!   NODE`), with `CLUSTER FAILOVER` (graceful: nothing may be lost) and `CLUSTER FAILOVER FORCE`
//!   (grants the old primary made may be lost, then the later grant's token must be larger)
//!   in between. Clients follow `-MOVED`/`-ASK` as a cluster client does.
//! - **a crash**: a primary and its replica; the primary is `kill -9`ed mid-run, the replica
//!   promoted (`REPLICAOF NO ONE`), a new replica attached, clients reconnect; then again, but
//!   the replica is promoted 300 ms *before* the old primary dies (a partition: the old primary
//!   keeps granting to its clients, and all of that is lost). Half the
//!   workers send `WAIT 1` after every change and count a grant only once it is confirmed: their
//!   grants must never overlap anything, across the crash. The other half do not wait: a grant
//!   they got from the crashed primary may overlap a later one, whose token must then be larger.
//!
//! The two runs take turns (a shared lock), not to starve each other on a 2-core machine.
//! `CORRAL_FIRE_SECS` (default 15 for the reshard run; the crash run takes two thirds of it) sets
//! how long; `CORRAL_FIRE_SEED` replays a run's random choices.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/contend.rs"]
mod contend;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use cluster::{key_slot, tag_in_slot, Cluster};
use common::client::assert_alive;
use common::Server;
use contend::{Durability, Family, Keys, Log, Report, Shared, Topology, Workload};

/// Clients in each run.
const WORKERS: usize = 50;

/// The runs take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn duration() -> Duration {
    Duration::from_secs(contend::seconds("CORRAL_FIRE_SECS", 15))
}

/// After the run: drains the job stores, lists what is fulfilled, checks the history.
fn finish(sh: &std::sync::Arc<Shared>, keys: &Keys, mut logs: Vec<Log>) -> Report {
    let mut drained = Log::default();
    contend::drain_jobs(sh, keys, &mut drained);
    logs.push(drained);
    let jobs: BTreeMap<String, _> = keys
        .job
        .iter()
        .map(|k| (k.clone(), contend::fulfilled_jobs(sh, k)))
        .collect();
    let faults = sh.faults.lock().unwrap();
    contend::check(&logs, &faults, &jobs)
}

#[test]
fn a_live_reshard_and_cluster_failovers_under_load_break_no_promise() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = contend::seed("CORRAL_FIRE_SEED");
    let secs = duration();
    println!(
        "under fire (cluster): {WORKERS} clients for {secs:?}, seed {seed} (CORRAL_FIRE_SEED)"
    );
    let mut cl = Cluster::start();
    let replica = cl.add_replica(0);
    // Three tags in slots node 0 serves: everything starts on the node that has a replica.
    let slots: Vec<u16> = vec![100, 1_000, 2_000];
    let tags: Vec<String> = slots
        .iter()
        .map(|&s| format!("{{{}}}:", tag_in_slot(s)))
        .collect();
    let keys = Keys::new(&tags, 1);
    for k in keys.all() {
        assert!(slots.contains(&key_slot(k.as_bytes())));
    }
    let ports: Vec<u16> = cl.nodes.iter().map(Server::port).collect();
    let sh = Shared::new(Topology::Cluster(ports));
    let work = Workload {
        keys: keys.clone(),
        durability: |_| Durability::Async,
        ttl: (100, 600),
    };
    // Node 0's shard: whichever of node 0 and its replica is the primary now.
    let mut shard = [0, replica];
    let logs = contend::run(&sh, &work, WORKERS, true, seed, || {
        let started = Instant::now();
        let mut step = 0u64;
        while started.elapsed() < secs {
            thread::sleep(Duration::from_millis(400));
            step += 1;
            if step.is_multiple_of(6) {
                // The replica takes over node 0's shard: gracefully, then by force, in turn.
                let force = (step / 6).is_multiple_of(2);
                let old = cl.nodes[shard[0]].port();
                let from = sh.now();
                cl.failover(shard[1], force);
                if !force {
                    sh.paused_since(from);
                }
                shard.swap(0, 1);
                cl.wait_replica_synced(shard[1]);
                sh.failed_over(old, force.then_some(from));
                println!(
                    "  {:>6.1} s  CLUSTER FAILOVER{}: node {} is node 0's shard's primary",
                    started.elapsed().as_secs_f64(),
                    if force { " FORCE" } else { "" },
                    shard[0]
                );
                continue;
            }
            // Move one tag's slot to the next primary, key by key.
            let slot = slots[(step % 3) as usize];
            let primaries = [shard[0], 1, 2];
            let from = cl.owner(slot);
            let at = primaries.iter().position(|&p| p == from).unwrap_or(0);
            let to = primaries[(at + 1) % primaries.len()];
            cl.move_slot(slot, to, Duration::from_millis(30));
            sh.faults.lock().unwrap().reshards += 1;
        }
    });
    let report = finish(&sh, &keys, logs);
    println!("under fire (cluster): {}", report.summary);
    for node in &cl.nodes {
        assert_alive(node, &mut node.conn());
    }
    contend::assert_clean(&report, seed, "CORRAL_FIRE_SEED");
    let faults = sh.faults.lock().unwrap();
    assert!(faults.reshards >= 10 && faults.failovers >= 2);
    for f in [Family::Resv, Family::Sem, Family::Slot, Family::Job] {
        let n = report.grants.get(&f).copied().unwrap_or(0);
        assert!(n >= 50, "only {n} {f:?} grants");
    }
}

#[test]
fn a_crashed_primary_loses_no_confirmed_grant_and_fencing_orders_the_rest() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = contend::seed("CORRAL_FIRE_SEED");
    let secs = duration() * 2 / 3;
    println!("under fire (crash): {WORKERS} clients for {secs:?}, seed {seed} (CORRAL_FIRE_SEED)");
    let mut servers = vec![Server::start()];
    servers.push(Server::replica_of(&servers[0]));
    let keys = Keys::new(&["f:".to_string()], 2);
    let sh = Shared::new(Topology::Primary(servers[0].port().into()));
    let work = Workload {
        keys: keys.clone(),
        durability: |me| {
            if me % 2 == 0 {
                Durability::Wait
            } else {
                Durability::Async
            }
        },
        ttl: (100, 800),
    };
    let logs = contend::run(&sh, &work, WORKERS, true, seed, || {
        for round in 0..2 {
            thread::sleep(secs / 3);
            let (old, new) = (servers.len() - 2, servers.len() - 1);
            let promote = || {
                let _: () = redis::cmd("REPLICAOF")
                    .arg("NO")
                    .arg("ONE")
                    .query(&mut servers[new].conn())
                    .unwrap();
            };
            let cut = if round == 0 {
                // A crash: the replica has everything the primary sent before it died.
                servers[old].crash();
                sh.now()
            } else {
                // A partition: the replica is promoted while the old primary still serves its
                // clients for a while, then dies. What it granted meanwhile is lost (WAIT
                // answers 0 there: the Wait workers count none of it).
                let cut = sh.now();
                promote();
                thread::sleep(Duration::from_millis(300));
                servers[old].crash();
                cut
            };
            if round == 0 {
                promote();
            }
            sh.set_primary(servers[new].port());
            sh.failed_over(servers[old].port(), Some(cut));
            println!(
                "  round {round}: primary :{} {}, :{} promoted",
                servers[old].port(),
                if round == 0 {
                    "crashed"
                } else {
                    "cut off, then crashed"
                },
                servers[new].port()
            );
            let next = Server::replica_of(&servers[new]);
            servers.push(next);
        }
        thread::sleep(secs / 3);
    });
    let report = finish(&sh, &keys, logs);
    println!("under fire (crash): {}", report.summary);
    let primary = &servers[servers.len() - 2]; // the last one is its replica
    assert_alive(primary, &mut primary.conn());
    contend::assert_clean(&report, seed, "CORRAL_FIRE_SEED");
    for f in [Family::Resv, Family::Sem, Family::Slot, Family::Job] {
        let n = report.grants.get(&f).copied().unwrap_or(0);
        assert!(n >= 30, "only {n} {f:?} grants");
    }
}
