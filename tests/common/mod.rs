//! Integration-test harness: throwaway `redis-server` processes with the corral
//! module loaded.
//!
//! Every integration test file does `mod common;` and then e.g.
//!
//! ```ignore
//! let srv = common::Server::start();                       // primary, module loaded
//! let mut c = srv.conn();
//! let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
//!
//! let mut aof = common::Server::with_config(&[("appendonly", "yes")]);
//! aof.restart();                                           // SIGTERM, same port + dir
//! aof.kill9_and_restart();                                 // SIGKILL, same port + dir
//!
//! let replica = common::Server::replica_of(&aof);          // synced on return
//! aof.sync_replica(&replica);                              // before comparing state
//! ```
//!
//! Each server gets a free loopback port (never 6379) and its own temp dir
//! (removed on drop unless `CORRAL_KEEP_TEST_DIRS` is set) holding `redis.conf`,
//! `redis.log` (the server's stdout+stderr, appended across restarts) and any
//! RDB/AOF files. Nothing is global, so tests in one binary may run in parallel.
//! When a test panics, dropping its servers prints their log tails (captured by
//! cargo and shown with the failure).
//!
//! Environment:
//! - `CORRAL_MODULE`: path of the module `.so` to load (default: the one cargo built).
//! - `REDIS_SERVER`: the `redis-server` binary (default: `redis-server` on PATH).
//! - `CORRAL_KEEP_TEST_DIRS`: if set, temp dirs are kept (and their paths printed).
//! - `CORRAL_START_TIMEOUT_SECS`: how long a spawned server gets to answer PING (default 10;
//!   `scripts/leaks` raises it for servers under valgrind).
//! - `CORRAL_GRACEFUL_STOP`: if set, dropping a server sends SIGTERM and waits up to 120 s for
//!   it to exit before the SIGKILL, so a server under valgrind writes its leak report
//!   (`scripts/leaks` sets it). Unset (the default), drop SIGKILLs at once.
//!
//! Client helpers the test files share (`int`, `error_of`, `digest`, reply parsing,
//! `rewrite_aof`, `raw_command`) live in [`client`]; a raw RESP client for pipelines and many
//! sockets in [`raw`]. Two more files here are not part of this module but are included with
//! `#[path]` by the few tests that use them, so the other test binaries do not compile them:
//! `cluster.rs` (a Redis Cluster of these servers) and `contend.rs` (the contention workload
//! and its history checker).
#![allow(dead_code)]

pub mod client;
pub mod raw;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a freshly spawned server gets to answer PING: `$CORRAL_START_TIMEOUT_SECS`, else 10 s.
pub fn start_timeout() -> Duration {
    let secs = std::env::var("CORRAL_START_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}
/// With `CORRAL_GRACEFUL_STOP` set: how long a dropped server gets to exit after SIGTERM.
const GRACEFUL_STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long loading a dataset, a replica's initial sync, catching up
/// ([`Server::sync_replica`]) or a graceful shutdown may take.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout of connections from [`Server::conn`]: a hung command fails
/// the test instead of hanging it forever.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(30);

const MODULE_FILE: &str = "libcorral.so";
/// Config keys the harness owns; tests may not set them through `config`.
const RESERVED_KEYS: &[&str] = &[
    "port",
    "dir",
    "daemonize",
    "replicaof",
    "slaveof",
    "logfile",
    "pidfile",
];

/// Path of the corral module to load: `$CORRAL_MODULE` if set; otherwise
/// the `libcorral.so` cargo built along with this test binary (so never stale:
/// `<target>/<profile>/deps/`, then `<target>/<profile>/`), then `<CARGO_MANIFEST_DIR>/target/release/`,
/// then `target/debug/`. Panics, naming what to build, if none exists.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_MODULE") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            panic!(
                "CORRAL_MODULE={} does not exist; build it with `cargo build --release` \
                 (or unset CORRAL_MODULE)",
                p.display()
            );
        }
        return absolute(&p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    // The test binary is <target>/<profile>/deps/<name>-<hash>; cargo builds the
    // cdylib next to it in deps/ (and copies it up to <profile>/ only on `cargo build`).
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            candidates.push(deps.join(MODULE_FILE));
            if let Some(profile_dir) = deps.parent() {
                candidates.push(profile_dir.join(MODULE_FILE));
            }
        }
    }
    candidates.push(manifest.join("target/release").join(MODULE_FILE));
    candidates.push(manifest.join("target/debug").join(MODULE_FILE));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => absolute(p),
        None => panic!(
            "corral module not found (looked at {}); build it with `cargo build --release` \
             in {} or set CORRAL_MODULE=/path/to/libcorral.so",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            manifest.display()
        ),
    }
}

/// The `redis-server` binary to run: `$REDIS_SERVER` or `redis-server` (from PATH).
pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Polls `f` every 10 ms until it returns true; panics mentioning `what` if it
/// has not after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The value of `field` in `INFO` output (`field:value` lines).
pub fn info_value(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        let (k, v) = l.trim_end().split_once(':')?;
        (k == field).then(|| v.to_string())
    })
}

/// How to start a [`Server`]: `ServerOptions::new()` plus the chained setters,
/// passed to [`Server::start_with`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Extra `redis.conf` directives, in order. A key given here replaces the
    /// harness default for that key. Values go into redis.conf as written, so
    /// `("save", "60 1")` is two arguments; an empty value becomes `""`.
    pub config: Vec<(String, String)>,
    /// Port of the primary to replicate from (`replicaof 127.0.0.1 <port>`).
    pub replica_of: Option<u16>,
    /// Load the corral module ([`module_path`]); default true.
    pub load_module: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            config: Vec::new(),
            replica_of: None,
            load_module: true,
        }
    }
}

impl ServerOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds one config directive, e.g. `.config("appendonly", "yes")`.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
    /// Makes the server a replica of `primary`.
    pub fn replica_of(mut self, primary: &Server) -> Self {
        self.replica_of = Some(primary.port());
        self
    }
    /// A plain redis-server, without the corral module.
    pub fn without_module(mut self) -> Self {
        self.load_module = false;
        self
    }
}

/// A `redis-server` child process with its own port and temp dir. Dropping it
/// SIGKILLs the process (SIGTERM first with `CORRAL_GRACEFUL_STOP`) and removes the dir.
pub struct Server {
    child: Mutex<Option<Child>>,
    port: u16,
    dir: PathBuf,
    opts: ServerOptions,
    /// Set once a harness panic message included the log (Drop then skips it).
    log_shown: AtomicBool,
}

enum StartError {
    /// The port was taken between choosing it and the server binding it.
    PortInUse,
}

impl Server {
    /// A primary with the module loaded and the harness defaults.
    pub fn start() -> Server {
        Self::start_with(ServerOptions::new())
    }

    /// A primary with the module loaded plus the given config directives,
    /// e.g. `Server::with_config(&[("appendonly", "yes")])`.
    pub fn with_config(config: &[(&str, &str)]) -> Server {
        let mut opts = ServerOptions::new();
        for (k, v) in config {
            opts = opts.config(k, v);
        }
        Self::start_with(opts)
    }

    /// A replica of `primary` (module loaded), with its initial sync done.
    pub fn replica_of(primary: &Server) -> Server {
        Self::start_with(ServerOptions::new().replica_of(primary))
    }

    /// Starts a server; returns once it answers PING, has loaded its data
    /// (`loading:0`) and, for a replica, has `master_link_status:up` and
    /// `master_sync_in_progress:0`.
    pub fn start_with(opts: ServerOptions) -> Server {
        for (k, _) in &opts.config {
            if RESERVED_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
                panic!(
                    "config key {k:?} is managed by the test harness; use ServerOptions instead"
                );
            }
        }
        let mut server = Server {
            child: Mutex::new(None),
            port: 0,
            dir: make_temp_dir(),
            opts,
            log_shown: AtomicBool::new(false),
        };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            server.port = free_port();
            server.write_config();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::PortInUse) if attempt < ATTEMPTS => {
                    server.note(&format!(
                        "port {} was taken, retrying on another port",
                        server.port
                    ));
                }
                Err(StartError::PortInUse) => {
                    panic!(
                        "no free port for redis-server after {ATTEMPTS} attempts\n{}",
                        server.tail_for_panic()
                    )
                }
            }
        }
        unreachable!()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new connection with [`CONN_TIMEOUT`] read/write timeouts.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("redis client");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to {}: {e} (server {})\n{}",
                    self.url(),
                    self.state(),
                    self.tail_for_panic()
                )
            });
        conn.set_read_timeout(Some(CONN_TIMEOUT))
            .expect("set_read_timeout");
        conn.set_write_timeout(Some(CONN_TIMEOUT))
            .expect("set_write_timeout");
        conn
    }

    /// The server's temp dir: its `dir` (RDB/AOF files), redis.conf, redis.log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log: stdout+stderr of every run, with harness marker lines.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The end of the server's log, for failure messages. If the server crashed,
    /// the crash report is cut down to its reason and stack trace.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail =
            |from: usize, to: usize, n: usize| lines[to.saturating_sub(n).max(from)..to].join("\n");
        let mut out = format!("--- tail of {} ---\n", self.log_path().display());
        match lines
            .iter()
            .rposition(|l| l.contains("REDIS BUG REPORT START"))
        {
            None => out += &tail(0, lines.len(), 40),
            Some(start) => {
                let head_end = lines[start..]
                    .iter()
                    .position(|l| {
                        l.starts_with("------ REGISTERS") || l.starts_with("------ INFO OUTPUT")
                    })
                    .map_or(lines.len(), |n| start + n)
                    .min(start + 60);
                let after = lines[start..]
                    .iter()
                    .position(|l| l.contains("REDIS BUG REPORT END"))
                    .map_or(lines.len(), |n| start + n + 1);
                out += &tail(0, start, 25);
                out += "\n";
                out += &lines[start..head_end].join("\n");
                out += "\n[... rest of crash report omitted ...]\n";
                out += &tail(after, lines.len(), 15);
            }
        }
        out + "\n--- end of log ---"
    }

    /// PID of the redis-server process (panics if it is not running).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    /// `Some(status)` if the process has exited by itself (e.g. crashed), else None.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `INFO <section>` as text.
    pub fn info(&self, section: &str) -> String {
        let mut c = self.conn();
        redis::cmd("INFO")
            .arg(section)
            .query(&mut c)
            .unwrap_or_else(|e| {
                panic!(
                    "INFO {section} on port {}: {e} (server {})\n{}",
                    self.port,
                    self.state(),
                    self.tail_for_panic()
                )
            })
    }

    /// One field of `INFO <section>`, e.g. `info_field("persistence", "loading")`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        info_value(&self.info(section), field)
    }

    /// Graceful restart: SIGTERM (Redis then persists as configured: flushes and
    /// fsyncs the AOF, writes an RDB if `save` points are set), wait for the exit,
    /// start again on the same port, dir and options, wait until ready.
    pub fn restart(&mut self) {
        self.note("restart: SIGTERM");
        let mut child = self
            .child
            .get_mut()
            .unwrap()
            .take()
            .expect("redis-server is not running");
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { kill(child.id() as i32, SIGTERM) };
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server did not exit within {SYNC_TIMEOUT:?} of SIGTERM\n{}",
                        self.tail_for_panic()
                    );
                }
            }
        }
        self.respawn_same_port();
    }

    /// Crash restart: SIGKILL (no shutdown persistence at all), then start again
    /// on the same port, dir and options, wait until ready.
    pub fn kill9_and_restart(&mut self) {
        self.note("kill9_and_restart: SIGKILL");
        self.kill9();
        self.respawn_same_port();
    }

    /// SIGKILL and no restart: the server is gone (a crashed machine). Dropping it later only
    /// removes its dir.
    pub fn crash(&self) {
        self.note("crash: SIGKILL");
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `replica` has processed everything this primary had produced
    /// when called: its link is up, it is not syncing, it follows our replication
    /// id, and its `slave_repl_offset` >= our `master_repl_offset`. Panics with
    /// both sides' values and logs after [`SYNC_TIMEOUT`].
    pub fn sync_replica(&self, replica: &Server) {
        let primary = self.info("replication");
        let replid = info_value(&primary, "master_replid").expect("primary master_replid");
        let target: i64 = info_value(&primary, "master_repl_offset")
            .expect("master_repl_offset")
            .parse()
            .unwrap();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let r = replica.info("replication");
            let up = info_value(&r, "master_link_status").as_deref() == Some("up");
            let syncing = info_value(&r, "master_sync_in_progress").as_deref() != Some("0");
            let same_id = info_value(&r, "master_replid").as_deref() == Some(replid.as_str());
            let offset: i64 = info_value(&r, "slave_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            if up && !syncing && same_id && offset >= target {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "replica on port {} did not catch up with primary on port {} within {SYNC_TIMEOUT:?}: \
                     primary master_replid={replid} master_repl_offset={target}; replica \
                     master_link_status={:?} master_sync_in_progress={:?} master_replid={:?} \
                     slave_repl_offset={offset}\nprimary log:\n{}\nreplica log:\n{}",
                    replica.port,
                    self.port,
                    info_value(&r, "master_link_status"),
                    info_value(&r, "master_sync_in_progress"),
                    info_value(&r, "master_replid"),
                    self.tail_for_panic(),
                    replica.tail_for_panic()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ---- internals ----

    fn state(&self) -> String {
        match self.exit_status() {
            Some(status) => format!("had exited by itself: {status}"),
            None => "was running".to_string(),
        }
    }

    /// [`Server::log_tail`], noting that a panic message showed it.
    fn tail_for_panic(&self) -> String {
        self.log_shown.store(true, Ordering::Relaxed);
        self.log_tail()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to [`GRACEFUL_STOP_TIMEOUT`] for the exit (SIGKILL after that).
    fn stop_gracefully(&mut self) {
        if let Some(child) = self.child.get_mut().unwrap().as_mut() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: kill(2) on our own child, which has not been reaped yet.
                unsafe { kill(child.id() as i32, SIGTERM) };
                let deadline = Instant::now() + GRACEFUL_STOP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.kill9();
    }

    /// Starts again on the same port; retries briefly if the port is taken.
    fn respawn_same_port(&mut self) {
        let deadline = Instant::now() + start_timeout();
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(StartError::PortInUse) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(StartError::PortInUse) => {
                    panic!(
                        "port {} stayed in use; cannot restart redis-server\n{}",
                        self.port,
                        self.tail_for_panic()
                    )
                }
            }
        }
    }

    /// Appends a marker line to the log so runs and restarts are easy to tell apart.
    fn note(&self, msg: &str) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = writeln!(f, "=== harness: {msg} ===");
        }
    }

    fn write_config(&self) {
        let mut defaults: Vec<(&str, &str)> = vec![
            ("bind", "127.0.0.1"),
            ("protected-mode", "no"),
            ("save", ""),
            ("appendonly", "no"),
            ("enable-debug-command", "yes"),
            ("enable-module-command", "yes"),
            // Redis 7.0 waits 5 s before every diskless full sync by default.
            ("repl-diskless-sync-delay", "0"),
            // A crash report's memory test is slow and buries the stack trace.
            ("crash-memcheck-enabled", "no"),
        ];
        defaults.retain(|(k, _)| {
            !self
                .opts
                .config
                .iter()
                .any(|(uk, _)| uk.eq_ignore_ascii_case(k))
        });
        let mut conf = String::from("# written by tests/common/mod.rs\n");
        conf += &format!("port {}\n", self.port);
        conf += &format!("dir {}\n", quote(&self.dir.display().to_string()));
        conf += "daemonize no\nlogfile \"\"\n";
        let own_loadmodule = self
            .opts
            .config
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("loadmodule"));
        if self.opts.load_module && !own_loadmodule {
            conf += &format!(
                "loadmodule {}\n",
                quote(&module_path().display().to_string())
            );
        }
        if let Some(p) = self.opts.replica_of {
            conf += &format!("replicaof 127.0.0.1 {p}\n");
        }
        let user = self
            .opts
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        for (k, v) in defaults.into_iter().chain(user) {
            let v = if v.is_empty() { "\"\"" } else { v };
            conf += &format!("{k} {v}\n");
        }
        fs::write(self.dir.join("redis.conf"), conf).expect("writing redis.conf");
    }

    /// Spawns redis-server on `self.port`, waits for PING, loading:0 and (for a
    /// replica) the initial sync.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        assert!(self.child.get_mut().unwrap().is_none());
        let bin = resolve_bin(&redis_server_bin());
        let log_path = self.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("opening redis.log");
        let _ = writeln!(
            log,
            "=== harness: starting {} on port {} ===",
            bin.display(),
            self.port
        );
        let run_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().expect("cloning log handle");
        let child = Command::new(&bin)
            .arg(self.dir.join("redis.conf"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{}`: {e}; install it with scripts/setup or set REDIS_SERVER",
                    bin.display()
                )
            });
        *self.child.get_mut().unwrap() = Some(child);

        // 1. Our process answers PING.
        let start_timeout = start_timeout();
        let deadline = Instant::now() + start_timeout;
        loop {
            if let Some(status) = self.exit_status() {
                self.kill9(); // reap
                if read_from(&log_path, run_start).contains("Address already in use") {
                    return Err(StartError::PortInUse);
                }
                panic!(
                    "redis-server exited during startup ({status})\n{}",
                    self.tail_for_panic()
                );
            }
            if self.answers_ping() {
                break;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "redis-server did not answer PING on port {} within {start_timeout:?}\n{}",
                    self.port,
                    self.tail_for_panic()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        // 2. Dataset loaded.
        self.wait_ready(SYNC_TIMEOUT, "loading:0 (dataset loaded)", |s| {
            s.info_field("persistence", "loading").as_deref() == Some("0")
        });

        // 3. Replica: initial sync done.
        if self.opts.replica_of.is_some() {
            self.wait_ready(
                SYNC_TIMEOUT,
                "master_link_status:up and master_sync_in_progress:0",
                |s| {
                    let r = s.info("replication");
                    info_value(&r, "master_link_status").as_deref() == Some("up")
                        && info_value(&r, "master_sync_in_progress").as_deref() == Some("0")
                },
            );
        }
        Ok(())
    }

    /// Like [`wait_until`], but notices if the process died and shows its log.
    fn wait_ready(&self, timeout: Duration, what: &str, mut f: impl FnMut(&Server) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "redis-server exited ({status}) while waiting for {what}\n{}",
                    self.tail_for_panic()
                );
            }
            if f(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what} on port {}\n{}",
                    self.port,
                    self.tail_for_panic()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True once our own process answers PING: `process_id` is checked too, since
    /// if another test's server grabbed the port first, it would answer instead.
    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        if redis::cmd("PING").query::<String>(&mut c).is_err() {
            return false;
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut c)
            .unwrap_or_default();
        info_value(&info, "process_id") == Some(self.pid().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let state = self.state();
        if std::env::var_os("CORRAL_GRACEFUL_STOP").is_some() {
            self.stop_gracefully();
        } else {
            self.kill9();
        }
        if std::thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!(
                "redis-server on port {} (dir {}) {state}\n{}",
                self.port,
                self.dir.display(),
                self.log_tail()
            );
        }
        if std::env::var_os("CORRAL_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping test dir {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---- helpers ----

const SIGTERM: i32 = 15;
extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// A currently free loopback port, never 6379. The listener is dropped before
/// redis binds the port, so the caller retries if it is taken in between.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if port != 6379 {
            return port;
        }
    }
}

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new empty dir `<temp>/corral-test-<pid>-<counter>-<nanos>`.
fn make_temp_dir() -> PathBuf {
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("corral-test-{}-{n}-{nanos}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return absolute(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
}

/// `name` looked up on PATH, so redis (which runs in its temp dir) sees a real
/// path as argv[0]. Symlinks are kept: redis-server picks its mode from argv[0].
fn resolve_bin(name: &str) -> PathBuf {
    if !name.contains('/') {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let p = dir.join(name);
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    let p = PathBuf::from(name);
    match std::env::current_dir() {
        Ok(cwd) if name.contains('/') && p.is_relative() => cwd.join(p),
        _ => p,
    }
}

fn absolute(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Quotes a single-argument redis.conf value.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut s);
    }
    s
}
