//! Tests of the integration-test harness itself (tests/common).

mod common;

use common::client::field;
use common::{Server, ServerOptions};
use redis::Value;

fn set(c: &mut redis::Connection, k: &str, v: &str) {
    let _: () = redis::cmd("SET").arg(k).arg(v).query(c).unwrap();
}

fn get(c: &mut redis::Connection, k: &str) -> Option<String> {
    redis::cmd("GET").arg(k).query(c).unwrap()
}

#[test]
fn starts_and_answers_ping_on_a_private_port() {
    let srv = Server::start_with(ServerOptions::new().without_module());
    assert_ne!(srv.port(), 6379);
    assert_ne!(srv.port(), 0);
    let mut c = srv.conn();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    // It is really our server: its dir is the temp dir, it runs on our port.
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut c)
        .unwrap();
    assert_eq!(std::path::Path::new(&cfg[1]), srv.dir());
    assert_eq!(
        srv.info_field("server", "tcp_port").unwrap(),
        srv.port().to_string()
    );
    // Harness defaults.
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut c)
        .unwrap();
    assert_eq!(save[1], "");
    assert_eq!(
        srv.info_field("persistence", "aof_enabled").as_deref(),
        Some("0")
    );
    // DEBUG is enabled.
    let _: () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert!(srv.dir().join("redis.conf").is_file());
    assert!(
        srv.log_tail().contains("Ready to accept connections"),
        "{}",
        srv.log_tail()
    );
}

#[test]
fn parallel_servers_get_distinct_ports_and_dirs() {
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start_with(ServerOptions::new().without_module()))
        .collect();
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            assert_ne!(a.port(), b.port());
            assert_ne!(a.dir(), b.dir());
        }
    }
    // Each is its own dataset.
    set(&mut servers[0].conn(), "k", "0");
    assert_eq!(get(&mut servers[1].conn(), "k"), None);
}

#[test]
fn module_is_loaded() {
    let srv = Server::start();
    let mut c = srv.conn();
    let list: Value = redis::cmd("MODULE").arg("LIST").query(&mut c).unwrap();
    let names = module_names(&list);
    assert!(
        names.iter().any(|n| n == "corral"),
        "MODULE LIST = {list:?}"
    );
}

/// Names from a MODULE LIST reply (an array of maps: RESP2 flat arrays or RESP3 maps).
fn module_names(v: &Value) -> Vec<String> {
    let Value::Array(mods) = v else {
        panic!("MODULE LIST = {v:?}")
    };
    mods.iter()
        .map(|m| redis::from_redis_value(&field(m, "name")).unwrap())
        .collect()
}

#[test]
fn restart_keeps_data_with_appendonly() {
    let mut srv = Server::with_config(&[("appendonly", "yes")]);
    let port = srv.port();
    let pid = srv.pid();
    set(&mut srv.conn(), "k", "v1");
    srv.restart();
    assert_eq!(srv.port(), port);
    assert_ne!(srv.pid(), pid, "a new process");
    assert_eq!(get(&mut srv.conn(), "k").as_deref(), Some("v1"));

    set(&mut srv.conn(), "k2", "v2");
    srv.kill9_and_restart();
    assert_eq!(srv.port(), port);
    let mut c = srv.conn();
    assert_eq!(get(&mut c, "k").as_deref(), Some("v1"));
    assert_eq!(get(&mut c, "k2").as_deref(), Some("v2"));
    assert!(srv.log_tail().contains("kill9_and_restart"));
}

#[test]
fn restart_without_persistence_loses_data() {
    // The default (save "", appendonly no) really is volatile: a sanity check that
    // restart() does start a fresh process rather than reusing the old one.
    let mut srv = Server::start();
    set(&mut srv.conn(), "k", "v");
    srv.restart();
    assert_eq!(get(&mut srv.conn(), "k"), None);
}

#[test]
fn replica_sees_primary_writes_after_sync() {
    let primary = Server::start();
    set(&mut primary.conn(), "before", "1");
    let replica = Server::start_with(ServerOptions::new().replica_of(&primary));
    assert_eq!(
        replica.info_field("replication", "role").as_deref(),
        Some("slave")
    );
    assert_eq!(
        replica.info_field("replication", "master_port"),
        Some(primary.port().to_string())
    );

    let mut pc = primary.conn();
    for i in 0..100 {
        set(&mut pc, &format!("k{i}"), &i.to_string());
    }
    primary.sync_replica(&replica);
    let mut rc = replica.conn();
    assert_eq!(get(&mut rc, "before").as_deref(), Some("1"));
    assert_eq!(get(&mut rc, "k99").as_deref(), Some("99"));
    let n: i64 = redis::cmd("DBSIZE").query(&mut rc).unwrap();
    assert_eq!(n, 101);
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let srv = Server::start_with(
        ServerOptions::new()
            .without_module()
            .config("appendonly", "yes"),
    );
    let dir = srv.dir().to_path_buf();
    assert!(
        dir.starts_with(std::env::temp_dir().canonicalize().unwrap()),
        "{}",
        dir.display()
    );
    set(&mut srv.conn(), "k", "v");
    assert!(dir.join("redis.log").is_file());
    drop(srv);
    if std::env::var_os("CORRAL_KEEP_TEST_DIRS").is_some() {
        assert!(dir.exists());
    } else {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
}

#[test]
fn wait_until_polls_and_times_out() {
    let mut n = 0;
    common::wait_until(std::time::Duration::from_secs(5), "n reaches 3", || {
        n += 1;
        n >= 3
    });
    assert_eq!(n, 3);
    let r = std::panic::catch_unwind(|| {
        common::wait_until(std::time::Duration::from_millis(50), "never", || false)
    });
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("never"), "{msg}");
}

#[test]
#[should_panic(expected = "managed by the test harness")]
fn reserved_config_keys_are_rejected() {
    Server::with_config(&[("port", "6379")]);
}
