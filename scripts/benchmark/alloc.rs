//! ALLOC: sticky job-to-instance allocation, at 1,000 against 1,000,000 allocations, and
//! against a plain hash of job → instance.

use std::collections::HashMap;
use std::time::Duration;

use crate::report::{num, Report, Row, Target};
use crate::resp::{self, Reply};
use crate::util::{self, args, best_of, is_int, is_one, uuidish, Args, Check, Memory, Workload};

const FAMILY: &str = "ALLOC";

/// Instances every big key has (new ones go to the end of the allocation order).
const INSTANCES: usize = 1_000;
/// Job ids `uuidish(FRESH + k)` are never allocated beforehand: the "new" workloads
/// allocate them and deallocate them again.
const FRESH: u64 = 1 << 40;
/// The jobs of the one-instance key of the JOBS rows: `uuidish(SOLO + i)`, as long as
/// the others.
const SOLO: u64 = 2 << 40;
/// How many distinct jobs (and instances) a measured workload cycles through.
const CYCLE: usize = 10_000;

fn instance(i: usize) -> String {
    format!("instance-{i:04}")
}

/// A new allocation: `[instance, 1]`.
fn is_new(r: &Reply) -> bool {
    matches!(r, Reply::Array(Some(a)) if a.len() == 2 && a[1] == Reply::Int(1))
}

/// An existing allocation: `[instance, 0]`.
fn is_existing(r: &Reply) -> bool {
    matches!(r, Reply::Array(Some(a)) if a.len() == 2 && a[1] == Reply::Int(0))
}

fn is_bulk(r: &Reply) -> bool {
    matches!(r, Reply::Bulk(Some(_)))
}

fn is_nonempty_array(r: &Reply) -> bool {
    matches!(r, Reply::Array(Some(a)) if !a.is_empty())
}

/// Makes `instances` available on `key`, then allocates `jobs` (pipelined, each checked
/// to be new); returns the instance (by name) each job landed on, in job order.
fn fill(conn: &mut resp::Conn, key: &str, instances: &[String], jobs: &[String]) -> Vec<String> {
    for name in instances {
        let r = conn
            .call(&util::refs(&args(&["ALLOC.AVAILABLE", key, name])))
            .expect("ALLOC.AVAILABLE");
        assert!(is_one(&r), "ALLOC.AVAILABLE {key} {name}: {r:?}");
    }
    let mut landed = Vec::with_capacity(jobs.len());
    let sent = util::pipeline(
        conn,
        jobs.len(),
        1000,
        Duration::MAX,
        |range, buf| {
            for job in &jobs[range] {
                resp::encode(buf, &util::refs(&args(&["ALLOC.ALLOCATE", key, job])));
            }
        },
        |i, r| match r {
            Reply::Array(Some(mut a)) if a.len() == 2 && a[1] == Reply::Int(1) => {
                match a.swap_remove(0) {
                    Reply::Bulk(Some(name)) => {
                        landed.push(String::from_utf8(name).expect("instance name"))
                    }
                    other => panic!("ALLOC.ALLOCATE {key} job {i}: instance {other:?}"),
                }
            }
            other => panic!("ALLOC.ALLOCATE {key} job {i}: {other:?}"),
        },
    );
    assert_eq!(sent, jobs.len());
    landed
}

/// ALLOCATE of a new job, then its DEALLOCATE (so the key keeps its size).
fn new_jobs(label: &'static str, key: &str) -> Workload {
    let iterations = (0..CYCLE)
        .map(|k| {
            let job = uuidish(FRESH + k as u64);
            vec![
                (args(&["ALLOC.ALLOCATE", key, &job]), is_new as _),
                (args(&["ALLOC.DEALLOCATE", key, &job]), is_one as _),
            ]
        })
        .collect();
    Workload::cycling(label, iterations, &["alloc.allocate", "alloc.deallocate"])
}

/// One command per iteration: `cmd(k)` for the k-th of [`CYCLE`] iterations.
fn each(
    label: &'static str,
    stats: &'static [&'static str],
    ok: Check,
    cmd: impl Fn(usize) -> Args,
) -> Workload {
    let iterations = (0..CYCLE).map(|k| vec![(cmd(k), ok)]).collect();
    Workload::cycling(label, iterations, stats)
}

/// The k-th job a lookup visits: spread over the whole key (`k × 7919 mod n`; 7919 is
/// prime, so 10,000 distinct jobs of a million, every job of a thousand).
fn spread(jobs: &[String], k: usize) -> &str {
    &jobs[k * 7919 % jobs.len()]
}

/// HSETs `jobs[i]` → `landed[i]` into `key` (pipelined).
fn fill_hash(conn: &mut resp::Conn, key: &str, jobs: &[String], landed: &[String]) {
    let hset = |i: usize| args(&["HSET", key, &jobs[i], &landed[i]]);
    util::load(conn, jobs.len(), hset, is_int);
}

/// (a) ALLOCATE (new and existing), INSTANCE, HASJOBS and JOBS at 1,000,000 allocations
/// against 1,000 (at most 1.5x each: no scans).
///
/// Two keys on one server, each with the same 1,000 available instances: `alloc:1k`
/// with 1,000 allocations, `alloc:1m` with 1,000,000 (pipelined ALLOCATEs of uuid-like
/// job ids; atributo's md5 rule spreads them, about 1,000 per instance). Each measured
/// command is its own workload, so none runs on cache lines another just loaded:
/// - ALLOCATE of a job never seen (persisted 1), then its DEALLOCATE, 10,000 distinct
///   jobs in turn, so the key keeps its size;
/// - ALLOCATE of an allocated job (persisted 0), and INSTANCE, each over 10,000 jobs
///   spread over the whole key ([`spread`]);
/// - HASJOBS of the instances that have jobs, in turn.
///
/// A lookup at a random place in a million entries misses the CPU caches and TLB where
/// one in a thousand does not, whatever the structure. So the same patterns also run on
/// Redis's own hashes of the same jobs (`hash:1k`, `hash:1m`: HSET of a new field +
/// HDEL, HGET) as informational reference rows: the 1M/1k ratio a plain hash shows is
/// the memory hierarchy's share. Another informational row runs INSTANCE over the same
/// 100 jobs again and again (cache-warm), which isolates the algorithm.
///
/// JOBS costs what the instance holds, so its row compares like with like: the same
/// number of jobs m on the instance, in a key of 1,000,000 allocations (the instance of
/// `alloc:1m` whose count is closest to 1,000) against a key that holds only those m
/// allocations (`alloc:solo`: one instance, m jobs of the same id length).
///
/// Server time per call from `INFO commandstats`; interleaved, 5 rounds after a
/// warm-up, best round.
pub fn server_time(report: &mut Report) {
    const BIG: usize = 1_000_000;
    const SMALL: usize = 1_000;
    const ITERS: usize = 20_000;
    const JOBS_ITERS: usize = 2_000;
    const ROUNDS: usize = 5;

    let (_srv, mut admin, mut conn) = util::start();
    let instances: Vec<String> = (0..INSTANCES).map(instance).collect();
    let big_jobs: Vec<String> = (0..BIG as u64).map(uuidish).collect();
    let small_jobs = &big_jobs[..SMALL];

    let big_landed = fill(&mut conn, "alloc:1m", &instances, &big_jobs);
    let small_landed = fill(&mut conn, "alloc:1k", &instances, small_jobs);
    fill_hash(&mut conn, "hash:1m", &big_jobs, &big_landed);
    fill_hash(&mut conn, "hash:1k", small_jobs, &small_landed);
    // Instances with jobs (HASJOBS answers 1 for them): every one on alloc:1m.
    let busy = |landed: &[String]| -> Vec<String> {
        let mut names: Vec<String> = landed.to_vec();
        names.sort();
        names.dedup();
        names
    };
    let (big_busy, small_busy) = (busy(&big_landed), busy(&small_landed));

    // The instance of alloc:1m whose job count is closest to 1,000, and a one-instance
    // key with as many jobs.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in &big_landed {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let (&picked, &m) = counts
        .iter()
        .min_by_key(|(name, &c)| (c.abs_diff(1000), **name))
        .expect("alloc:1m has jobs");
    let solo_jobs: Vec<String> = (0..m as u64).map(|i| uuidish(SOLO + i)).collect();
    fill(&mut conn, "alloc:solo", &["solo".to_string()], &solo_jobs);

    // Workloads 2i (1k) and 2i+1 (1M) measure the same thing at the two sizes.
    let sizes = [
        ("alloc:1k", "hash:1k", small_jobs, &small_busy),
        ("alloc:1m", "hash:1m", &big_jobs[..], &big_busy),
    ];
    let mut workloads = Vec::new();
    for (key, hash, jobs, busy) in sizes {
        let inst = &small_landed[0];
        workloads.extend([
            new_jobs("ALLOCATE new + DEALLOCATE", key),
            each("ALLOCATE existing", &["alloc.allocate"], is_existing, |k| {
                args(&["ALLOC.ALLOCATE", key, spread(jobs, k)])
            }),
            each("INSTANCE", &["alloc.instance"], is_bulk, |k| {
                args(&["ALLOC.INSTANCE", key, spread(jobs, k)])
            }),
            each("HASJOBS", &["alloc.hasjobs"], is_one, |k| {
                args(&["ALLOC.HASJOBS", key, &busy[k % busy.len()]])
            }),
            each("INSTANCE, 100 jobs", &["alloc.instance"], is_bulk, |k| {
                args(&["ALLOC.INSTANCE", key, spread(jobs, k % 100)])
            }),
            Workload::cycling(
                "HSET new + HDEL",
                (0..CYCLE)
                    .map(|k| {
                        let job = uuidish(FRESH + k as u64);
                        vec![
                            (args(&["HSET", hash, &job, inst]), is_one as _),
                            (args(&["HDEL", hash, &job]), is_one as _),
                        ]
                    })
                    .collect(),
                &["hset", "hdel"],
            ),
            each("HGET", &["hget"], is_bulk, |k| {
                args(&["HGET", hash, spread(jobs, k)])
            }),
        ]);
    }
    let per_size = workloads.len() / 2;
    workloads.push(Workload::new(
        "JOBS, alone",
        vec![(
            args(&["ALLOC.JOBS", "alloc:solo", "solo"]),
            is_nonempty_array,
        )],
        &["alloc.jobs"],
    ));
    workloads.push(Workload::new(
        "JOBS, 1M",
        vec![(args(&["ALLOC.JOBS", "alloc:1m", picked]), is_nonempty_array)],
        &["alloc.jobs"],
    ));
    let work: Vec<(&Workload, usize)> = workloads
        .iter()
        .map(|w| {
            (
                w,
                if w.label.starts_with("JOBS") {
                    JOBS_ITERS
                } else {
                    ITERS
                },
            )
        })
        .collect();
    let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

    let at = |n: usize| {
        format!(
            "{} allocations over {} instances",
            num(n as f64),
            num(INSTANCES as f64)
        )
    };
    // For the chart: (label, allocations).
    let (small_label, big_label) = (
        format!("{} allocations", num(SMALL as f64)),
        format!("{} allocations", num(BIG as f64)),
    );
    let (small, big) = (
        (small_label.as_str(), SMALL as f64),
        (big_label.as_str(), BIG as f64),
    );
    // (what, workload index within a size, stat index, per call (else per iteration),
    // target)
    let rows = [
        ("ALLOC.ALLOCATE of a new job", 0, 0, true, true),
        ("ALLOC.DEALLOCATE", 0, 1, true, false),
        (
            "ALLOC.ALLOCATE of an allocated job (10,000 spread-out jobs)",
            1,
            0,
            true,
            true,
        ),
        ("ALLOC.INSTANCE (10,000 spread-out jobs)", 2, 0, true, true),
        ("ALLOC.HASJOBS", 3, 0, true, true),
        (
            "ALLOC.INSTANCE of the same 100 jobs again and again (cache-warm)",
            4,
            0,
            true,
            false,
        ),
        (
            "reference: Redis hash, HSET of a new field + HDEL (per pair), same jobs",
            5,
            0,
            false,
            false,
        ),
        (
            "reference: Redis hash, HGET of the same 10,000 spread-out jobs",
            6,
            0,
            true,
            false,
        ),
    ];
    for (what, w, stat, per_call, target) in rows {
        let value = |i: usize| {
            if per_call {
                best.call(i, stat)
            } else {
                best.iter(i)
            }
        };
        let row = Row::new(
            FAMILY,
            &format!("server time, {what}, {}", at(BIG)),
            value(per_size + w),
            "us",
        )
        .vs(&at(SMALL), value(w))
        .scale(what, big, small);
        // The Redis hash rows are references (grey in the chart), not corral commands.
        let row = if what.starts_with("reference") {
            row.reference()
        } else {
            row
        };
        report.add(if target {
            row.target(Target::RatioAtMost(1.5))
        } else {
            row
        });
    }
    let (m_jobs, m) = (m as f64, num(m as f64));
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, ALLOC.JOBS of an instance with {m} jobs, {} in the key",
                at(BIG)
            ),
            best.call(2 * per_size + 1, 0),
            "us",
        )
        .vs(
            &format!("the same {m} jobs, the key's only allocations"),
            best.call(2 * per_size, 0),
        )
        .target(Target::RatioAtMost(1.5))
        .scale(
            &format!("ALLOC.JOBS of an instance with {m} jobs"),
            (&format!("in a key of {big_label}"), BIG as f64),
            ("the key's only allocations", m_jobs),
        ),
    );
}

/// (b) Memory per allocation against a hash field job → instance.
///
/// One key with 1,000 instances and 1,000,000 allocations; one hash with a field per
/// job (the same ids) whose value is the instance the job landed on (`HSET`; a hash of
/// a million fields is hashtable-encoded, which the row names). `MEMORY USAGE …
/// SAMPLES 0` of each, divided by 1,000,000, is the target row; an informational row
/// gives the growth of `used_memory` per allocation while each was built (corral's
/// `MEMORY USAGE` comes from its own `mem_usage` callback, an estimate).
pub fn memory(report: &mut Report) {
    const JOBS: usize = 1_000_000;
    let (_srv, mut admin, mut conn) = util::start();
    let instances: Vec<String> = (0..INSTANCES).map(instance).collect();
    let jobs: Vec<String> = (0..JOBS as u64).map(uuidish).collect();
    let (alloc, landed) = util::footprint(&mut admin, Some("alloc"), || {
        fill(&mut conn, "alloc", &instances, &jobs)
    });
    let (hash, ()) = util::footprint(&mut admin, Some("hash"), || {
        fill_hash(&mut conn, "hash", &jobs, &landed)
    });
    let n = JOBS as f64;
    let encoding = util::encoding(&mut admin, "hash");
    Memory {
        family: FAMILY,
        usage: &format!(
            "MEMORY USAGE per allocation ({} allocations, {} instances, 36-char job ids)",
            num(n),
            num(INSTANCES as f64)
        ),
        target: Target::RatioAtMost(2.0),
        growth: "used_memory growth per allocation, same jobs",
        baseline: &format!("hash field job → instance ({encoding}), same ids"),
        unit: "bytes",
    }
    .report(report, alloc.per(n), hash.per(n));
}
