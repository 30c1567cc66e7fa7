//! ALLOC.* against a real redis-server with corral loaded: atributo's own examples, step by step.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{assert_alive, digest, error_of, int, rewrite_aof, value};
use common::{wait_until, Server, ServerOptions};
use redis::{Connection, Value};

fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::BulkString(b) => String::from_utf8(b).unwrap(),
                Value::Int(i) => i.to_string(),
                x => panic!("{x:?}"),
            })
            .collect(),
        v => panic!("{v:?}"),
    }
}

fn allocate(c: &mut Connection, key: &str, job: &str, only_for: Option<&str>) -> (String, i64) {
    let mut args = vec!["ALLOC.ALLOCATE", key, job];
    if let Some(o) = only_for {
        args.extend(["ONLYFOR", o]);
    }
    let r = strings(value(c, &args));
    (r[0].clone(), r[1].parse().unwrap())
}

#[test]
fn atributo_readme_walkthrough() {
    let s = Server::start();
    let mut c = s.conn();
    assert_eq!(int(&mut c, &["ALLOC.AVAILABLE", "a", "instance0"]), 1);
    assert_eq!(int(&mut c, &["ALLOC.AVAILABLE", "a", "instance1"]), 1);
    assert_eq!(
        int(&mut c, &["ALLOC.AVAILABLE", "a", "instance1"]),
        0,
        "already available"
    );
    assert_eq!(
        strings(value(&mut c, &["ALLOC.INSTANCES", "a"])),
        ["instance0", "1", "instance1", "1"]
    );
    assert_eq!(allocate(&mut c, "a", "job0", None), ("instance1".into(), 1));
    assert_eq!(allocate(&mut c, "a", "job1", None), ("instance0".into(), 1));
    assert_eq!(
        strings(value(&mut c, &["ALLOC.JOBS", "a", "instance0"])),
        ["job1"]
    );
    assert_eq!(
        strings(value(&mut c, &["ALLOC.JOBS", "a", "instance1"])),
        ["job0"]
    );
    assert_eq!(int(&mut c, &["ALLOC.HASJOBS", "a", "instance0"]), 1);
    assert_eq!(
        value(&mut c, &["ALLOC.INSTANCE", "a", "job1"]),
        Value::BulkString(b"instance0".to_vec())
    );
    // Unavailable but not removed: the existing allocation sticks, persisted = 0.
    assert_eq!(int(&mut c, &["ALLOC.UNAVAILABLE", "a", "instance0"]), 1);
    assert_eq!(
        strings(value(&mut c, &["ALLOC.INSTANCES", "a"])),
        ["instance0", "0", "instance1", "1"]
    );
    assert_eq!(allocate(&mut c, "a", "job1", None), ("instance0".into(), 0));
    // Deallocate, re-allocate: now on instance1.
    assert_eq!(int(&mut c, &["ALLOC.DEALLOCATE", "a", "job1"]), 1);
    assert_eq!(int(&mut c, &["ALLOC.DEALLOCATE", "a", "job1"]), 0);
    assert_eq!(allocate(&mut c, "a", "job1", None), ("instance1".into(), 1));
    // Remove instance0 and its allocated jobs.
    assert_eq!(
        int(&mut c, &["ALLOC.UNAVAILABLE", "a", "instance0", "REMOVE"]),
        0
    );
    assert_eq!(
        strings(value(&mut c, &["ALLOC.INSTANCES", "a"])),
        ["instance1", "1"]
    );
    assert_eq!(value(&mut c, &["ALLOC.INSTANCE", "a", "nope"]), Value::Nil);
}

#[test]
fn atributo_onlyfor_example_stores_each_job_once() {
    let s = Server::start();
    let mut w0 = s.conn();
    let mut w1 = s.conn();
    int(&mut w0, &["ALLOC.AVAILABLE", "a", "instance0"]);
    int(&mut w1, &["ALLOC.AVAILABLE", "a", "instance1"]);
    // Each worker allocates both jobs, persisting only its own.
    let mut stored = HashMap::new();
    for (c, me) in [(&mut w0, "instance0"), (&mut w1, "instance1")] {
        for job in ["job0", "job1"] {
            let (inst, persisted) = allocate(c, "a", job, Some(me));
            if persisted == 1 {
                assert_eq!(inst, me);
                assert!(stored.insert(job, me).is_none(), "{job} stored twice");
            }
        }
    }
    assert_eq!(
        stored,
        HashMap::from([("job0", "instance1"), ("job1", "instance0")])
    );
    assert_eq!(
        strings(value(&mut w0, &["ALLOC.JOBS", "a", "instance0"])),
        ["job1"]
    );
    assert_eq!(
        strings(value(&mut w0, &["ALLOC.JOBS", "a", "instance1"])),
        ["job0"]
    );
}

#[test]
fn drain_waits_for_the_last_job() {
    let s = Server::start();
    let mut c = s.conn();
    int(&mut c, &["ALLOC.AVAILABLE", "a", "i"]);
    allocate(&mut c, "a", "j1", None);
    allocate(&mut c, "a", "j2", None);
    let start = Instant::now();
    assert_eq!(
        value(&mut c, &["ALLOC.DRAIN", "a", "i", "BLOCK", "200"]),
        Value::Nil
    );
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert_eq!(
        value(&mut c, &["ALLOC.DRAIN", "a", "i"]),
        Value::Nil,
        "without BLOCK: at once"
    );
    let mut wc = s.conn();
    let h = thread::spawn(move || value(&mut wc, &["ALLOC.DRAIN", "a", "i", "BLOCK", "20000"]));
    let mut other = s.conn();
    let h2 =
        thread::spawn(move || value(&mut other, &["ALLOC.DRAIN", "a", "other", "BLOCK", "20000"]));
    assert_eq!(
        h2.join().unwrap(),
        Value::Int(1),
        "an instance without jobs is drained at once"
    );
    wait_until(Duration::from_secs(10), "drainer blocked", || {
        s.info_field("corral", "corral_alloc_waiting").as_deref() == Some("1")
    });
    int(&mut c, &["ALLOC.DEALLOCATE", "a", "j1"]);
    thread::sleep(Duration::from_millis(100));
    assert!(!h.is_finished(), "one job left");
    int(&mut c, &["ALLOC.DEALLOCATE", "a", "j2"]);
    assert_eq!(h.join().unwrap(), Value::Int(1));
}

#[test]
fn heartbeat_lapse_makes_instance_unavailable_and_keeps_jobs() {
    let s = Server::start();
    let mut c = s.conn();
    int(&mut c, &["ALLOC.AVAILABLE", "a", "i", "TTL", "300"]);
    allocate(&mut c, "a", "j", None);
    assert_eq!(int(&mut c, &["PTTL", "a"]), -1, "allocations do not expire");
    wait_until(Duration::from_secs(10), "heartbeat lapsed", || {
        s.info_field("corral", "corral_alloc_lapses").as_deref() == Some("1")
    });
    assert_eq!(
        strings(value(&mut c, &["ALLOC.INSTANCES", "a"])),
        ["i", "0"]
    );
    assert_eq!(allocate(&mut c, "a", "j", None), ("i".into(), 0));
    assert!(error_of(&mut c, &[b"ALLOC.ALLOCATE", b"a", b"new"]).starts_with("NOINSTANCES"));
    // A heartbeat brings it back.
    assert_eq!(
        int(&mut c, &["ALLOC.AVAILABLE", "a", "i", "TTL", "60000"]),
        1
    );
    assert_eq!(allocate(&mut c, "a", "new", None), ("i".into(), 1));
}

#[test]
fn concurrent_allocation_with_toggling_never_double_allocates() {
    let s = Server::start();
    let mut c = s.conn();
    for i in 0..4 {
        int(&mut c, &["ALLOC.AVAILABLE", "a", &format!("i{i}")]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..20 {
        let mut wc = s.conn();
        workers.push(thread::spawn(move || {
            for n in 0..150 {
                let job = format!("job{}", (w * 7 + n) % 60);
                let (inst, _) = allocate(&mut wc, "a", &job, None);
                assert!(["i0", "i1", "i2", "i3"].contains(&inst.as_str()), "{inst}");
                if n % 3 == 0 {
                    int(&mut wc, &["ALLOC.DEALLOCATE", "a", &job]);
                }
            }
        }));
    }
    let toggler = {
        let mut tc = s.conn();
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                int(&mut tc, &["ALLOC.UNAVAILABLE", "a", "i2"]);
                thread::sleep(Duration::from_millis(2));
                int(&mut tc, &["ALLOC.AVAILABLE", "a", "i2"]);
            }
        })
    };
    // Meanwhile: every job is on exactly one instance in every consistent snapshot.
    let mut snapshots = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        let (lists,): (Vec<Vec<String>>,) = {
            let mut p = redis::pipe();
            p.atomic();
            let mut q = redis::cmd("EVAL");
            q.arg("local r = {} for i = 0, 3 do r[#r+1] = redis.call('ALLOC.JOBS', KEYS[1], 'i'..i) end return r")
                .arg(1)
                .arg("a");
            p.add_command(q);
            p.query(&mut c).unwrap()
        };
        let mut seen = HashMap::new();
        for (i, jobs) in lists.iter().enumerate() {
            for j in jobs {
                assert!(seen.insert(j.clone(), i).is_none(), "{j} on two instances");
            }
        }
        snapshots += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    toggler.join().unwrap();
    assert!(snapshots > 0);
    assert_alive(&s, &mut c);
}

#[test]
fn replica_reload_and_aof_restart_keep_everything() {
    let mut primary = Server::start_with(ServerOptions::new().config("appendonly", "yes"));
    let replica = Server::replica_of(&primary);
    let mut p = primary.conn();
    for i in 0..5 {
        int(
            &mut p,
            &["ALLOC.AVAILABLE", "a", &format!("i{i}"), "TTL", "60000"],
        );
    }
    int(&mut p, &["ALLOC.UNAVAILABLE", "a", "i3"]);
    int(&mut p, &["ALLOC.UNAVAILABLE", "a", "unknown"]);
    for j in 0..300 {
        allocate(&mut p, "a", &format!("job{j}"), None);
    }
    int(&mut p, &["ALLOC.UNAVAILABLE", "a", "i1", "REMOVE"]);
    primary.sync_replica(&replica);
    let mut r = replica.conn();
    let d = digest(&mut p, "a");
    assert_eq!(d, digest(&mut r, "a"));
    let jobs_before = strings(value(&mut p, &["ALLOC.JOBS", "a", "i0"]));
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut p).unwrap();
    assert_eq!(digest(&mut p, "a"), d);
    rewrite_aof(&primary);
    drop(p);
    drop(r);
    drop(replica);
    primary.restart();
    let mut p = primary.conn();
    assert_eq!(digest(&mut p, "a"), d);
    assert_eq!(
        strings(value(&mut p, &["ALLOC.JOBS", "a", "i0"])),
        jobs_before
    );
    assert_eq!(
        strings(value(&mut p, &["ALLOC.INSTANCES", "a"])),
        ["i0", "1", "i2", "1", "i3", "0", "i4", "1", "unknown", "0"]
    );
}

#[test]
fn malformed_input_gets_errors_and_server_lives() {
    let s = Server::start();
    let mut c = s.conn();
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"ALLOC.AVAILABLE", b"a"],
        vec![b"ALLOC.AVAILABLE", b"a", b""],
        vec![b"ALLOC.AVAILABLE", b"a", b"i", b"TTL"],
        vec![b"ALLOC.AVAILABLE", b"a", b"i", b"TTL", b"0"],
        vec![b"ALLOC.AVAILABLE", b"a", b"i", b"TTL", b"1", b"TTL", b"2"],
        vec![b"ALLOC.AVAILABLE", b"a", b"i", b"NOPE"],
        vec![b"ALLOC.UNAVAILABLE", b"a", b"i", b"REMOVE", b"REMOVE"],
        vec![b"ALLOC.UNAVAILABLE", b"a", b"i", b"DELETE"],
        vec![b"ALLOC.INSTANCES", b"a", b"x"],
        vec![b"ALLOC.ALLOCATE", b"a"],
        vec![b"ALLOC.ALLOCATE", b"a", b"j", b"ONLYFOR"],
        vec![b"ALLOC.ALLOCATE", b"a", b"j"],
        vec![b"ALLOC.DEALLOCATE", b"a"],
        vec![b"ALLOC.JOBS", b"a"],
        vec![b"ALLOC.HASJOBS", b"a", b"i", b"x"],
        vec![b"ALLOC.INSTANCE", b"a"],
        vec![b"ALLOC.DRAIN", b"a", b"i", b"BLOCK", b"-1"],
        vec![b"ALLOC.DRAIN", b"a", b"i", b"BLOCK", b"x"],
    ];
    for args in &bad {
        let e = error_of(&mut c, args);
        assert!(e.starts_with("ERR") || e.starts_with("NOINSTANCES"), "{e}");
    }
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    for name in [
        "ALLOC.AVAILABLE",
        "ALLOC.UNAVAILABLE",
        "ALLOC.ALLOCATE",
        "ALLOC.DEALLOCATE",
        "ALLOC.JOBS",
        "ALLOC.HASJOBS",
        "ALLOC.INSTANCE",
        "ALLOC.DRAIN",
    ] {
        assert!(
            error_of(&mut c, &[name.as_bytes(), b"str", b"x"]).starts_with("WRONGTYPE"),
            "{name}"
        );
    }
    assert!(error_of(&mut c, &[b"ALLOC.INSTANCES", b"str"]).starts_with("WRONGTYPE"));
    // Binary ids are fine.
    let bin: &[u8] = b"\x00inst\r\n";
    let r: i64 = redis::cmd("ALLOC.AVAILABLE")
        .arg("b")
        .arg(bin)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, 1);
    let (inst, persisted): (Vec<u8>, i64) = redis::cmd("ALLOC.ALLOCATE")
        .arg("b")
        .arg(&b"\xffjob"[..])
        .query(&mut c)
        .unwrap();
    assert_eq!((inst.as_slice(), persisted), (bin, 1));
    assert_alive(&s, &mut c);
}
