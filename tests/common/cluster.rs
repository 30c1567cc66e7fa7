//! A Redis Cluster of test servers: primaries with corral loaded, `redis-cli --cluster create`,
//! agreement, resharding (with `redis-cli`, or slot by slot with `CLUSTER SETSLOT` and
//! `MIGRATE`), replicas and failovers. Included by the tests that use it:
//! `#[path = "common/cluster.rs"] mod cluster;` (next to `mod common;`).
#![allow(dead_code)]
use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{info_value, Server, ServerOptions};
use redis::cluster::{ClusterClient, ClusterConnection};

/// How long `redis-cli --cluster …` and the nodes' agreement may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of its hash tag (the
/// bytes between the first `{` and the next `}`, if not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc & 0x3fff
}

/// A tag whose keys all hash to `slot` (brute force over `t<n>`).
pub fn tag_in_slot(slot: u16) -> String {
    (0u64..)
        .map(|n| format!("t{n}"))
        .find(|t| key_slot(t.as_bytes()) == slot)
        .unwrap()
}

pub struct Cluster {
    pub nodes: Vec<Server>,
    /// Node ids (`CLUSTER MYID`), by index in `nodes`.
    pub ids: Vec<String>,
}

/// `redis-cli`: `$REDIS_CLI`, else Debian's on PATH (7.0; fine for newer servers too).
fn redis_cli() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_string())
}

impl Cluster {
    /// Three primaries with corral loaded, all 16384 slots assigned (node i gets the i-th
    /// third, as `--cluster create` assigns them), every node agreeing.
    pub fn start() -> Cluster {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::start_with(
                    ServerOptions::new()
                        .config("cluster-enabled", "yes")
                        // Relative to the server's dir: one per node.
                        .config("cluster-config-file", "nodes.conf")
                        .config("cluster-node-timeout", "2000"),
                )
            })
            .collect();
        let ids = nodes
            .iter()
            .map(|n| {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query::<String>(&mut n.conn())
                    .unwrap()
            })
            .collect();
        let cl = Cluster { nodes, ids };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cl.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.push("--cluster-yes".into());
        cl.cli(&args);
        cl.wait_agreement();
        cl
    }

    /// A cluster client (follows MOVED and ASK), reads may wait up to 40 s (BLOCK).
    pub fn client(&self) -> ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        ClusterClient::builder(urls)
            .response_timeout(Duration::from_secs(40))
            .build()
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cluster client: {e}"))
    }

    /// Index of the node that serves `slot`, as node 0 sees it (all nodes agree after
    /// `start`, `reshard`, `move_slot` and `failover`).
    pub fn owner(&self, slot: u16) -> usize {
        let owner = self.slot_owners(0)[usize::from(slot)]
            .clone()
            .unwrap_or_else(|| panic!("slot {slot} has no owner"));
        self.ids.iter().position(|id| *id == owner).unwrap()
    }

    /// The lowest slot `node` serves: the one `--cluster reshard` moves first.
    pub fn lowest_slot(&self, node: usize) -> u16 {
        let owners = self.slot_owners(node);
        let slot = owners
            .iter()
            .position(|o| o.as_deref() == Some(self.ids[node].as_str()))
            .expect("node serves no slot");
        slot as u16
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the lowest ones) with their keys
    /// from node `from` to node `to`, then waits until every node agrees.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) {
        let args: Vec<String> = vec![
            "--cluster".into(),
            "reshard".into(),
            format!("127.0.0.1:{}", self.nodes[from].port()),
            "--cluster-from".into(),
            self.ids[from].clone(),
            "--cluster-to".into(),
            self.ids[to].clone(),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
        ];
        self.cli(&args);
        self.wait_agreement();
    }

    /// Runs redis-cli with a bounded wait; panics with its output unless it succeeded
    /// without an `[ERR]`.
    fn cli(&self, args: &[String]) {
        let out_path = self.nodes[0].dir().join("redis-cli.out");
        let out = File::create(&out_path).expect("redis-cli output file");
        let mut child = Command::new(redis_cli())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} (apt-get install redis-tools): {e}",
                    redis_cli()
                )
            });
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for redis-cli") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        match status {
            Some(s) if s.success() && !output.contains("[ERR]") => {}
            _ => panic!(
                "redis-cli {} failed ({status:?}):\n{output}",
                args.join(" ")
            ),
        }
    }

    /// Starts one more node with corral loaded and makes it a replica of node `of`; returns
    /// its index once it has synced and every node knows it.
    pub fn add_replica(&mut self, of: usize) -> usize {
        let node = Server::start_with(
            ServerOptions::new()
                .config("cluster-enabled", "yes")
                .config("cluster-config-file", "nodes.conf")
                .config("cluster-node-timeout", "2000"),
        );
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut node.conn())
            .unwrap();
        let mut c = node.conn();
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(self.nodes[of].port())
            .query(&mut c)
            .unwrap();
        let primary = self.ids[of].clone();
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        // REPLICATE needs the primary to be known (MEET's handshake) first.
        while redis::cmd("CLUSTER")
            .arg("REPLICATE")
            .arg(&primary)
            .query::<()>(&mut c)
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the new node did not learn node {of}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.nodes.push(node);
        self.ids.push(id);
        let index = self.nodes.len() - 1;
        self.wait_replica_synced(index);
        self.wait_agreement();
        index
    }

    /// Waits until replica `node` has its link up and its initial sync done.
    pub fn wait_replica_synced(&self, node: usize) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let info = self.nodes[node].info("replication");
            if info_value(&info, "master_link_status").as_deref() == Some("up")
                && info_value(&info, "master_sync_in_progress").as_deref() == Some("0")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {node} did not sync within {CLUSTER_TIMEOUT:?}:\n{info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `CLUSTER FAILOVER [FORCE]` on replica `node`; returns once it is a primary and every node
    /// agrees (the old primary is then its replica).
    pub fn failover(&self, node: usize, force: bool) {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        if force {
            cmd.arg("FORCE");
        }
        let _: () = cmd.query(&mut self.nodes[node].conn()).unwrap();
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while !self.is_primary(node) {
            assert!(
                Instant::now() < deadline,
                "node {node} did not take over within {CLUSTER_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_agreement();
    }

    /// Whether `node` says it is a primary (`ROLE`).
    pub fn is_primary(&self, node: usize) -> bool {
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut self.nodes[node].conn())
            .unwrap_or_default();
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    }

    /// Moves `slot` with its keys to node `to` the way `redis-cli --cluster reshard` does,
    /// slot by slot so the test chooses which: `IMPORTING` on `to`, `MIGRATING` on the owner,
    /// `MIGRATE` of one key at a time with `pause` between keys (so clients meet the slot
    /// half-moved and follow `-ASK`), then `SETSLOT … NODE` on every primary. Returns once every
    /// node agrees.
    pub fn move_slot(&self, slot: u16, to: usize, pause: Duration) {
        let from = self.owner(slot);
        if from == to {
            return;
        }
        let setslot = |node: usize, how: &str, id: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(how);
            if !id.is_empty() {
                cmd.arg(id);
            }
            cmd.query::<()>(&mut self.nodes[node].conn())
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {how} on node {node}: {e}"));
        };
        setslot(to, "IMPORTING", &self.ids[from]);
        setslot(from, "MIGRATING", &self.ids[to]);
        let mut src = self.nodes[from].conn();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(1)
                .query(&mut src)
                .unwrap();
            let Some(key) = keys.first() else { break };
            let r: redis::RedisResult<String> = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg(key)
                .arg(0)
                .arg(10_000)
                .query(&mut src);
            // NOKEY: it was deleted (released, last job done) between the two commands.
            if let Err(e) = r {
                assert!(
                    e.to_string().contains("NOKEY"),
                    "MIGRATE {key} from node {from} to node {to}: {e}"
                );
            }
            std::thread::sleep(pause);
        }
        setslot(to, "NODE", &self.ids[to]);
        setslot(from, "NODE", &self.ids[to]);
        for node in 0..self.nodes.len() {
            if node != to && node != from && self.is_primary(node) {
                setslot(node, "NODE", &self.ids[to]);
            }
        }
        self.wait_agreement();
    }

    /// Per slot, the id of its owner as `node` sees it (CLUSTER NODES).
    fn slot_owners(&self, node: usize) -> Vec<Option<String>> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.nodes[node].conn())
            .unwrap();
        let mut owners = vec![None; 16384];
        for line in text.lines() {
            let mut f = line.split(' ');
            let Some(id) = f.next() else { continue };
            for range in f.skip(7).filter(|r| !r.starts_with('[')) {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) else {
                    continue;
                };
                for o in &mut owners[a..=b.min(16383)] {
                    *o = Some(id.to_string());
                }
            }
        }
        owners
    }

    /// Waits until every node says `cluster_state:ok`, knows every node, and sees the
    /// same owner for every slot, with no slot migrating or importing.
    fn wait_agreement(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut n.conn())
                        .unwrap();
                    format!(
                        "{:?}/{:?}",
                        info_value(&info, "cluster_state"),
                        info_value(&info, "cluster_known_nodes")
                    )
                })
                .collect();
            let views: Vec<Vec<Option<String>>> =
                (0..self.nodes.len()).map(|i| self.slot_owners(i)).collect();
            let want = format!("Some(\"ok\")/Some(\"{}\")", self.nodes.len());
            let ok = states.iter().all(|s| *s == want)
                && views.iter().all(|v| *v == views[0])
                && views[0].iter().all(Option::is_some);
            let settled = self.nodes.iter().all(|n| {
                let text: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut n.conn())
                    .unwrap();
                !text.contains("->-") && !text.contains("-<-")
            });
            if ok && settled {
                return;
            }
            if Instant::now() >= deadline {
                let differ: Vec<usize> =
                    (0..views.len()).filter(|&i| views[i] != views[0]).collect();
                let unowned = views[0].iter().filter(|o| o.is_none()).count();
                panic!(
                    "the cluster did not agree within {CLUSTER_TIMEOUT:?}: {states:?}; nodes \
                     whose slot map differs from node 0's: {differ:?}; slots without an owner \
                     for node 0: {unowned}; a slot still migrating: {}",
                    !settled
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
