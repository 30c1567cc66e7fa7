//! The contention workload and its history checker, shared by `tests/contention.rs` (one
//! server, client kills) and `tests/under_fire.rs` (the same under a live reshard and failovers).
//!
//! Workers are threads, each with its own connections, fighting over a few RESV, SEM, SLOT and
//! JOB keys with random TTLs, renewals, releases, short BLOCK waits and abandoned leases. Their
//! commands go through a [`Router`], which follows the cluster's `-MOVED`/`-ASK` (and waits out
//! `-TRYAGAIN`, `-CLUSTERDOWN`, a failover) as a cluster client does. Every grant is recorded
//! with its token, the node that made it and a *conservative* validity interval, and the
//! history is checked afterwards ([`check`]):
//!
//! - RESV: never two holders of a key at once; JOB: never two work leases on one job at once;
//! - SEM: never more permits in use than the capacity;
//! - SLOT: never one slot of a pool held twice, never a slot ≥ LIMIT;
//! - tokens strictly increase per key in grant order (across nodes), and are never repeated;
//! - a lease is never reported lost (`-NOTHELD` on RENEW/RELEASE) before its deadline;
//! - every BLOCK waiter is answered (a grant, nil or a redirection) within its timeout + a margin;
//! - JOB: every job is fulfilled exactly once (the run ends with a drain that fulfils the rest);
//! - no unexpected replies.
//!
//! **Intervals.** Times are the client's monotonic clock. A grant's interval is
//! `[t_recv, end)`: it starts when the grant's reply was *received* (the server granted before
//! that) and ends at the earliest of
//! - `t_send + ttl − ε` of the command that set its current deadline (the grant, or the last
//!   renewal acknowledged): the server set the deadline to (its now ≥ `t_send`) + ttl, and its
//!   clock has millisecond resolution, hence `ε` = 2 ms;
//! - the *send* time of a RELEASE / PUT / FULFILL (acknowledged or not: the server cannot free
//!   it before the command was sent; the ack time would be too late, as the next holder may be
//!   granted and hear of it before our ack arrives);
//! - for a renewal whose reply was lost to a kill: the shorter of the two deadlines.
//!
//! Every interval is therefore inside the time the server really considered the lease held
//! (network and scheduling delays only shrink it), so any overlap reported is a real violation.
//! Each acquire uses a fresh holder id, so an idempotent re-grant can never make a new grant
//! look like an old one.
//!
//! **Failovers.** Redis replicates asynchronously, so a grant acknowledged by a primary that
//! dies before its replica received it is lost, and the promoted replica may grant the same
//! thing again. A [`Durability::Wait`] worker sends `WAIT 1 <ms>` after every grant, renewal and
//! job change and counts a grant as held only once WAIT confirms it (it releases the others); its
//! grants must never overlap anything. A [`Durability::Async`] worker does not wait: a grant it
//! got from a primary that later failed may overlap a grant of the new primary — the promise then
//! is that the later grant's token is larger (fencing orders them) and that nothing else breaks.
//! The harness tells the checker when which node stopped being a primary ([`Faults`]).
//!
//! Included by the tests that use it, with `common` and `cluster`:
//! `#[path = "common/contend.rs"] mod contend;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Cmd, Connection, RedisError, Value};

use crate::cluster::key_slot;

/// The server's clock has millisecond resolution: a deadline may be up to this much (µs)
/// earlier than `t_send + ttl` on our clock.
const EPSILON_US: u64 = 2_000;
/// How late past its BLOCK timeout a waiter may be answered (thread scheduling on a busy
/// machine with 100 clients).
const WAIT_MARGIN: Duration = Duration::from_millis(1_500);
/// The connections' read timeout beyond the longest wait.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command may keep being redirected or told to try again (a failover, a slot that
/// has no owner for a moment) before the worker gives up on it.
const REDIRECT_BUDGET: Duration = Duration::from_secs(15);
/// `WAIT 1 <this>` after each change of a [`Durability::Wait`] worker.
const WAIT_REPLICA_MS: u64 = 1_000;

/// A small deterministic RNG (splitmix64): the run's seed is printed to replay its choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, xs: &'a [String]) -> &'a str {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// The seed of a run: `$<var>` to replay one, else the clock.
pub fn seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `$<var>` seconds, else `default`.
pub fn seconds(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Resv,
    Sem,
    Slot,
    Job,
}

/// The keys a run contends on, by family.
#[derive(Clone)]
pub struct Keys {
    pub resv: Vec<String>,
    pub sem: Vec<String>,
    pub slot: Vec<String>,
    pub job: Vec<String>,
}

impl Keys {
    /// `n` keys of each family, named `<prefix><family>:<i>` (a prefix like `{t0}:` puts them
    /// in one cluster slot).
    pub fn new(prefixes: &[String], per_prefix: usize) -> Keys {
        let make = |family: &str| {
            prefixes
                .iter()
                .flat_map(|p| (0..per_prefix).map(move |i| format!("{p}{family}:{i}")))
                .collect()
        };
        Keys {
            resv: make("resv"),
            sem: make("sem"),
            slot: make("slot"),
            job: make("job"),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.resv
            .iter()
            .chain(&self.sem)
            .chain(&self.slot)
            .chain(&self.job)
    }
}

pub const SEM_CAPACITY: u32 = 3;
pub const SLOT_LIMIT: u64 = 4;

/// Whether a worker waits for its replica to confirm each change (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Async,
    Wait,
}

/// One grant as the client saw it.
#[derive(Clone, Debug)]
pub struct Grant {
    pub family: Family,
    pub key: String,
    pub worker: usize,
    pub holder: String,
    pub token: i64,
    pub permits: u32,
    pub slot: Option<u64>,
    /// JOB: the job's id.
    pub job: Option<i64>,
    /// The port of the node that granted it.
    pub node: u16,
    pub durability: Durability,
    /// A `Wait` grant whose WAIT did not confirm it: not counted as held.
    pub unconfirmed: bool,
    /// When the acquire was sent / its grant received (µs on the run's clock).
    pub t_send: u64,
    pub t_recv: u64,
    /// The conservative end of validity (µs).
    pub end: u64,
    /// A `-NOTHELD` (or the like) received before `end`: (when, from which node).
    pub reported_lost: Option<(u64, u16)>,
    /// What happened to it, with times, for violation reports.
    pub history: Vec<(u64, String)>,
}

impl Grant {
    /// Whether a failover may have lost it (see [`Faults::may_lose`]): an Async grant made by a
    /// node that stopped being a primary afterwards.
    fn may_be_lost(&self, faults: &Faults) -> bool {
        self.durability == Durability::Async && faults.may_lose(self.node, self.t_recv)
    }

    fn live(&self) -> bool {
        self.end > self.t_recv && !self.unconfirmed
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "{:?} {} holder {} (worker {}, {:?}) token {}{}{}{} on :{} — valid [{} … {}) ms{}",
            self.family,
            self.key,
            self.holder,
            self.worker,
            self.durability,
            self.token,
            if self.family == Family::Sem {
                format!(" permits {}", self.permits)
            } else {
                String::new()
            },
            self.slot.map(|s| format!(" slot {s}")).unwrap_or_default(),
            self.job.map(|j| format!(" job {j}")).unwrap_or_default(),
            self.node,
            ms(self.t_recv),
            ms(self.end),
            if self.unconfirmed {
                " (WAIT did not confirm it)"
            } else {
                ""
            },
        );
        for (t, what) in &self.history {
            let _ = write!(s, "\n      {:>12} ms  {what}", ms(*t));
        }
        s
    }
}

pub fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// An accepted `JOB.FULFILL … TOKEN`, or one whose reply was lost.
#[derive(Clone, Debug)]
pub struct Fulfil {
    pub key: String,
    pub job: i64,
    pub token: i64,
    pub node: u16,
    pub t_send: u64,
    /// The reply was lost (connection killed, node died): it may or may not have happened.
    pub unknown: bool,
    /// A `Wait` fulfilment that its WAIT did not confirm.
    pub unconfirmed: bool,
    pub durability: Durability,
}

impl Fulfil {
    /// Whether a failover may have lost it: not confirmed by a replica, and made by a node that
    /// stopped being a primary afterwards.
    fn may_be_lost(&self, faults: &Faults) -> bool {
        (self.durability == Durability::Async || self.unconfirmed)
            && faults.may_lose(self.node, self.t_send)
    }
}

/// A `JOB.CREATE` that answered an id.
#[derive(Clone, Debug)]
pub struct Created {
    pub key: String,
    pub job: i64,
    pub node: u16,
    pub t_send: u64,
    /// A `Wait` worker's create that its replica confirmed.
    pub durable: bool,
}

/// A BLOCK wait answered later than its timeout + the margin.
#[derive(Clone, Debug)]
pub struct SlowWait {
    pub what: String,
    pub sent: u64,
    pub answered: u64,
    pub node: u16,
}

/// What one worker observed.
#[derive(Default)]
pub struct Log {
    pub slow_waits: Vec<SlowWait>,
    pub grants: Vec<Grant>,
    pub fulfils: Vec<Fulfil>,
    pub created: Vec<Created>,
    /// Violations seen while running (waits past their timeout, early NOTHELD, odd replies).
    pub violations: Vec<String>,
    pub waits: u64,
    pub timeouts: u64,
    pub redirected: u64,
    pub lost: u64,
    pub unconfirmed: u64,
    pub max_overrun_us: u64,
}

/// What the harness did to the servers while the workers ran.
#[derive(Default)]
pub struct Faults {
    /// (since, until, port), µs — the node stopped being a primary by `until` (killed, or
    /// failed over): a grant it made before then may be lost. From `since` its view diverged
    /// from the new primary's (a partition, a forced failover under way; `since` = `until` for
    /// a plain crash): what it did from then on, nobody else saw.
    pub demoted: Vec<(u64, u64, u16)>,
    /// (from, to) µs: a graceful failover held clients' commands back (Redis pauses writes on
    /// the old primary while the replica catches up).
    pub pauses: Vec<(u64, u64)>,
    pub kills: u64,
    pub reshards: u64,
    pub failovers: u64,
}

impl Faults {
    /// Whether a grant made by `node` before `t` may have been lost in a failover: the node
    /// stopped being a primary after the grant.
    fn may_lose(&self, node: u16, t: u64) -> bool {
        self.demoted
            .iter()
            .any(|&(_, until, port)| port == node && until >= t)
    }

    /// Whether `node` acted on a diverged view at `t` (see `demoted`).
    fn diverged(&self, node: u16, t: u64) -> bool {
        self.demoted
            .iter()
            .any(|&(since, until, port)| port == node && since <= t && t <= until)
    }

    /// Whether `[from, to)` overlaps a pause.
    fn paused(&self, from: u64, to: u64) -> bool {
        self.pauses.iter().any(|&(a, b)| from < b && a < to)
    }
}

/// Where the servers are: one primary (which a failover may replace), or a cluster.
pub enum Topology {
    /// The current primary's port.
    Primary(Mutex<u16>),
    /// The nodes of a cluster (any of them answers `CLUSTER SLOTS`).
    Cluster(Vec<u16>),
}

/// State shared by the workers, the killer and the harness.
pub struct Shared {
    pub epoch: Instant,
    pub stop: AtomicBool,
    pub topology: Topology,
    /// Every worker's live connections: (worker, port) → CLIENT ID, for the killer.
    pub clients: Mutex<HashMap<(usize, u16), u64>>,
    pub faults: Mutex<Faults>,
}

impl Shared {
    pub fn new(topology: Topology) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            topology,
            clients: Mutex::new(HashMap::new()),
            faults: Mutex::new(Faults::default()),
        })
    }

    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Tells the checker that a failover happened and `old_primary` can no longer grant (it was
    /// killed, or it is a replica now). Call it *after* that, so every grant the node made
    /// comes before this time. `lost_since`: `None` when nothing can be lost (a graceful
    /// `CLUSTER FAILOVER` waits for the replica to catch up — the checker then holds it to
    /// losing nothing); else grants the node made may be missing on the new primary, and from
    /// that time on (µs: a partition's start, when `FORCE` was sent, the crash itself) its
    /// view diverged from the new primary's.
    pub fn failed_over(&self, old_primary: u16, lost_since: Option<u64>) {
        let t = self.now();
        let mut f = self.faults.lock().unwrap();
        if let Some(since) = lost_since {
            f.demoted.push((since.min(t), t, old_primary));
        }
        f.failovers += 1;
    }

    /// A graceful failover held commands back from `from` (µs, taken before it started) until
    /// now.
    pub fn paused_since(&self, from: u64) {
        let t = self.now();
        self.faults.lock().unwrap().pauses.push((from, t));
    }

    /// For a standalone primary and replica: from now on the primary is `port`.
    pub fn set_primary(&self, port: u16) {
        if let Topology::Primary(p) = &self.topology {
            *p.lock().unwrap() = port;
        }
    }
}

/// How a command ended.
pub enum Outcome {
    Reply(Value),
    /// An error reply, e.g. "NOTHELD expired".
    Error(String),
    /// The connection failed (killed, node down): the command may or may not have run.
    Lost,
}

fn classify(r: Result<Value, RedisError>) -> Outcome {
    match r {
        Ok(v) => Outcome::Reply(v),
        Err(e) if e.is_timeout() => Outcome::Error(format!(
            "TIMEOUT no reply within the read timeout ({READ_TIMEOUT:?}): {e}"
        )),
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() => {
            Outcome::Lost
        }
        Err(e) => Outcome::Error(match e.redirect_node() {
            Some((addr, slot)) => format!("{} {slot} {addr}", e.code().unwrap_or("?")),
            None => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
        }),
    }
}

/// One command as a client saw it, redirections followed.
pub struct Call {
    pub outcome: Outcome,
    /// When its first attempt was sent, and its last (the one that answered).
    pub first_send: u64,
    pub last_send: u64,
    pub recv: u64,
    /// The node that answered.
    pub node: u16,
    /// The longest attempt, `(sent, answered)` (each attempt of a BLOCK command is a wait).
    pub longest_attempt: (u64, u64),
    pub redirects: u32,
}

/// A worker's way to the servers: a connection per node, the slot map, redirections.
pub struct Router {
    sh: Arc<Shared>,
    me: usize,
    conns: HashMap<u16, Connection>,
    /// Cluster: the primary of each slot, as last learned (0 = unknown).
    slots: Vec<u16>,
    /// The node that answered the last call (WAIT goes there).
    last: Option<u16>,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

impl Router {
    pub fn new(sh: Arc<Shared>, me: usize) -> Router {
        Router {
            sh,
            me,
            conns: HashMap::new(),
            slots: vec![0; 16384],
            last: None,
        }
    }

    fn connection(&mut self, port: u16) -> Option<&mut Connection> {
        if !self.conns.contains_key(&port) {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
            let mut c = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .ok()?;
            c.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
            c.set_write_timeout(Some(READ_TIMEOUT)).ok()?;
            let id: u64 = redis::cmd("CLIENT").arg("ID").query(&mut c).ok()?;
            self.sh.clients.lock().unwrap().insert((self.me, port), id);
            self.conns.insert(port, c);
        }
        self.conns.get_mut(&port)
    }

    fn drop_connection(&mut self, port: u16) {
        self.conns.remove(&port);
        self.sh.clients.lock().unwrap().remove(&(self.me, port));
    }

    /// Drops every connection (the worker starts over under a new identity).
    pub fn reset(&mut self) {
        let ports: Vec<u16> = self.conns.keys().copied().collect();
        for p in ports {
            self.drop_connection(p);
        }
    }

    /// The node to send a command on `key` to.
    fn route(&mut self, key: &str) -> Option<u16> {
        match &self.sh.topology {
            Topology::Primary(p) => Some(*p.lock().unwrap()),
            Topology::Cluster(nodes) => {
                let slot = usize::from(key_slot(key.as_bytes()));
                if self.slots[slot] == 0 {
                    let nodes = nodes.clone();
                    self.refresh_slots(&nodes);
                }
                Some(self.slots[slot]).filter(|&p| p != 0)
            }
        }
    }

    /// Learns the slot map from the first node that answers `CLUSTER SLOTS`.
    fn refresh_slots(&mut self, nodes: &[u16]) {
        for &port in nodes {
            let Some(c) = self.connection(port) else {
                continue;
            };
            let Ok(ranges) = redis::cmd("CLUSTER").arg("SLOTS").query::<Vec<Value>>(c) else {
                self.drop_connection(port);
                continue;
            };
            for range in ranges {
                let Value::Array(r) = range else { continue };
                let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(primary))) =
                    (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                let Some(Value::Int(p)) = primary.get(1) else {
                    continue;
                };
                for s in *a as usize..=(*b as usize).min(16383) {
                    self.slots[s] = *p as u16;
                }
            }
            return;
        }
    }

    /// Sends `cmd` (whose key is `key`) and follows `-MOVED`/`-ASK`; waits out `-TRYAGAIN`,
    /// `-CLUSTERDOWN`, `-READONLY`, `-UNBLOCKED`, `-LOADING` and refused connections (a
    /// failover) for up to [`REDIRECT_BUDGET`]. A lost reply is not retried: the command may
    /// have run.
    pub fn call(&mut self, key: &str, cmd: &Cmd) -> Call {
        let sh = self.sh.clone();
        let first_send = sh.now();
        let give_up = first_send + REDIRECT_BUDGET.as_micros() as u64;
        let mut asking: Option<u16> = None;
        let mut redirects = 0;
        let mut longest = (0, 0);
        loop {
            let target = asking.or_else(|| self.route(key));
            let Some(port) = target.filter(|&p| self.connection(p).is_some()) else {
                // No owner known for the slot yet, or the node refused the connection (down: a
                // failover is under way): look again shortly.
                if sh.now() > give_up {
                    let port = target.unwrap_or(0);
                    return self.finish(
                        Outcome::Lost,
                        first_send,
                        first_send,
                        port,
                        longest,
                        redirects,
                    );
                }
                thread::sleep(Duration::from_millis(20));
                self.slots.fill(0);
                asking = None;
                continue;
            };
            let ask = asking.take().is_some();
            let c = self.conns.get_mut(&port).expect("connected just above");
            if ask && redis::cmd("ASKING").query::<()>(c).is_err() {
                self.drop_connection(port);
                continue;
            }
            let t_send = sh.now();
            let outcome = classify(cmd.query::<Value>(c));
            let t_recv = sh.now();
            if t_recv - t_send > longest.1 - longest.0 {
                longest = (t_send, t_recv);
            }
            let retry = match &outcome {
                Outcome::Lost => {
                    self.drop_connection(port);
                    return self.finish(outcome, first_send, t_send, port, longest, redirects);
                }
                Outcome::Error(e) => {
                    let word = e.split(' ').next().unwrap_or("");
                    match word {
                        "MOVED" | "ASK" => {
                            let mut parts = e.split(' ');
                            let slot: Option<usize> = parts.nth(1).and_then(|s| s.parse().ok());
                            let to = parts.next().and_then(port_of);
                            match (word, slot, to) {
                                ("MOVED", Some(s), Some(p)) => self.slots[s] = p,
                                ("ASK", _, Some(p)) => asking = Some(p),
                                _ => self.slots.fill(0),
                            }
                            true
                        }
                        "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "UNBLOCKED" | "LOADING"
                        | "MASTERDOWN" => {
                            thread::sleep(Duration::from_millis(20));
                            self.slots.fill(0);
                            true
                        }
                        _ => false,
                    }
                }
                Outcome::Reply(_) => false,
            };
            if !retry {
                return self.finish(outcome, first_send, t_send, port, longest, redirects);
            }
            redirects += 1;
            if sh.now() > give_up {
                return self.finish(outcome, first_send, t_send, port, longest, redirects);
            }
        }
    }

    fn finish(
        &mut self,
        outcome: Outcome,
        first_send: u64,
        last_send: u64,
        node: u16,
        longest_attempt: (u64, u64),
        redirects: u32,
    ) -> Call {
        self.last = Some(node);
        Call {
            outcome,
            first_send,
            last_send,
            recv: self.sh.now(),
            node,
            longest_attempt,
            redirects,
        }
    }

    /// `WAIT 1 <ms>` on the node that answered the last call: whether a replica confirmed
    /// everything that node did for us so far.
    pub fn confirmed(&mut self) -> bool {
        let Some(port) = self.last else { return false };
        let Some(c) = self.conns.get_mut(&port) else {
            return false;
        };
        match redis::cmd("WAIT")
            .arg(1)
            .arg(WAIT_REPLICA_MS)
            .query::<i64>(c)
        {
            Ok(n) => n >= 1,
            Err(_) => {
                self.drop_connection(port);
                false
            }
        }
    }
}

/// What a worker does and how.
#[derive(Clone)]
pub struct Workload {
    pub keys: Keys,
    /// Which workers wait for their replica (see [`Durability`]).
    pub durability: fn(usize) -> Durability,
    /// The lowest and highest lease TTL (ms).
    pub ttl: (u64, u64),
}

/// One worker: acquire, hold (sleep, renew), release or abandon, on random keys, until stopped.
pub fn worker(sh: Arc<Shared>, work: Workload, me: usize, seed: u64) -> Log {
    let mut rng = Rng(seed ^ (me as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let durability = (work.durability)(me);
    let mut router = Router::new(sh.clone(), me);
    let mut log = Log::default();
    let mut incarnation = 1u64;
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::SeqCst) {
        seq += 1;
        let holder = format!("w{me}-i{incarnation}-s{seq}");
        let mut op = Op {
            sh: &sh,
            router: &mut router,
            rng: &mut rng,
            log: &mut log,
            work: &work,
            durability,
            me,
            holder,
        };
        let family = match op.rng.range(0, 11) {
            0..=3 => Family::Resv,
            4..=6 => Family::Sem,
            7..=8 => Family::Slot,
            _ => Family::Job,
        };
        let ended = if family == Family::Job && op.rng.chance(30) {
            op.create_job()
        } else {
            op.lease(family)
        };
        if ended == End::Reconnect {
            router.reset();
            incarnation += 1;
            thread::sleep(Duration::from_millis(5));
        }
    }
    router.reset();
    log
}

#[derive(PartialEq, Eq)]
enum End {
    Done,
    Reconnect,
}

/// One operation of one worker.
struct Op<'a> {
    sh: &'a Shared,
    router: &'a mut Router,
    rng: &'a mut Rng,
    log: &'a mut Log,
    work: &'a Workload,
    durability: Durability,
    me: usize,
    holder: String,
}

impl Op<'_> {
    fn ttl(&mut self) -> u64 {
        self.rng.range(self.work.ttl.0, self.work.ttl.1)
    }

    fn odd(&mut self, what: &str, key: &str, call: &Call) -> End {
        let reply = match &call.outcome {
            Outcome::Reply(v) => format!("{v:?}"),
            Outcome::Error(e) => e.clone(),
            Outcome::Lost => "nothing (connection lost)".into(),
        };
        self.log.violations.push(format!(
            "{}: {what} on {key} answered {reply} (sent at {} ms to :{})",
            self.holder,
            ms(call.last_send),
            call.node
        ));
        End::Reconnect
    }

    fn create_job(&mut self) -> End {
        let key = self.rng.pick(&self.work.keys.job).to_string();
        let mut cmd = redis::cmd("JOB.CREATE");
        cmd.arg(&key).arg(&self.holder);
        let call = self.router.call(&key, &cmd);
        match call.outcome {
            Outcome::Reply(Value::Int(id)) => {
                let durable = self.durability == Durability::Wait && self.router.confirmed();
                self.log.created.push(Created {
                    key,
                    job: id,
                    node: call.node,
                    t_send: call.first_send,
                    durable,
                });
                End::Done
            }
            Outcome::Lost => {
                self.log.lost += 1;
                End::Reconnect
            }
            _ => self.odd("JOB.CREATE", &key, &call),
        }
    }

    /// Acquire one lease of `family`, hold it a while, then release, fulfil or abandon it.
    fn lease(&mut self, family: Family) -> End {
        let keys = match family {
            Family::Resv => &self.work.keys.resv,
            Family::Sem => &self.work.keys.sem,
            Family::Slot => &self.work.keys.slot,
            Family::Job => &self.work.keys.job,
        };
        let key = self.rng.pick(keys).to_string();
        let ttl = self.ttl();
        let block = self.rng.chance(60).then(|| self.rng.range(20, 300));
        let permits = if self.rng.chance(25) { 2 } else { 1 };
        let holder = self.holder.clone();
        let mut cmd = match family {
            Family::Resv => {
                let mut c = redis::cmd("RESV.LOCK");
                c.arg(&key).arg(&holder).arg(ttl);
                c
            }
            Family::Sem => {
                let mut c = redis::cmd("SEM.ACQUIRE");
                c.arg(&key)
                    .arg(&holder)
                    .arg(SEM_CAPACITY)
                    .arg(ttl)
                    .arg("PERMITS")
                    .arg(permits);
                c
            }
            Family::Slot => {
                let mut c = redis::cmd("SLOT.GET");
                c.arg(&key)
                    .arg("HOLDER")
                    .arg(&holder)
                    .arg("TTL")
                    .arg(ttl)
                    .arg("LIMIT")
                    .arg(SLOT_LIMIT)
                    .arg("WITHTOKEN");
                c
            }
            Family::Job => {
                let mut c = redis::cmd("JOB.PULL");
                c.arg(&key).arg(&holder).arg(ttl);
                c
            }
        };
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b);
        }
        let call = self.router.call(&key, &cmd);
        self.log.redirected += u64::from(call.redirects);
        if let Some(b) = block {
            self.log.waits += 1;
            let (sent, answered) = call.longest_attempt;
            let overrun = (answered - sent).saturating_sub(b * 1000);
            self.log.max_overrun_us = self.log.max_overrun_us.max(overrun);
            if overrun > WAIT_MARGIN.as_micros() as u64 && !matches!(call.outcome, Outcome::Lost) {
                self.log.slow_waits.push(SlowWait {
                    what: format!("waiter {holder} on {key}: BLOCK {b} ms"),
                    sent,
                    answered,
                    node: call.node,
                });
            }
        }
        let (token, slot, job) = match (&call.outcome, family) {
            (Outcome::Lost, _) => {
                self.log.lost += 1;
                return End::Reconnect;
            }
            (Outcome::Reply(Value::Nil), _) => {
                if block.is_some() {
                    self.log.timeouts += 1;
                }
                thread::sleep(Duration::from_millis(self.rng.range(0, 20)));
                return End::Done;
            }
            (Outcome::Reply(Value::Int(t)), Family::Resv | Family::Sem) if *t > 0 => {
                (*t, None, None)
            }
            (Outcome::Reply(Value::Array(a)), Family::Slot) => match a.as_slice() {
                [Value::Int(s), Value::Int(t)] if *t > 0 => (*t, Some(*s as u64), None),
                _ => return self.odd("acquire", &key, &call),
            },
            (Outcome::Reply(Value::Array(a)), Family::Job) => match a.as_slice() {
                [Value::Int(id), _, Value::Int(t)] if *t > 0 => (*t, None, Some(*id)),
                _ => return self.odd("acquire", &key, &call),
            },
            _ => return self.odd("acquire", &key, &call),
        };
        let mut grant = Grant {
            family,
            key: key.clone(),
            worker: self.me,
            holder: holder.clone(),
            token,
            permits: if family == Family::Sem { permits } else { 1 },
            slot,
            job,
            node: call.node,
            durability: self.durability,
            unconfirmed: false,
            t_send: call.last_send,
            t_recv: call.recv,
            end: (call.last_send + ttl * 1000).saturating_sub(EPSILON_US),
            reported_lost: None,
            history: vec![
                (
                    call.first_send,
                    format!(
                        "acquire sent (ttl {ttl} ms{}){}",
                        block.map(|b| format!(", BLOCK {b}")).unwrap_or_default(),
                        if call.redirects > 0 {
                            format!(", redirected {} times", call.redirects)
                        } else {
                            String::new()
                        }
                    ),
                ),
                (call.recv, format!("granted by :{}", call.node)),
            ],
        };
        if self.durability == Durability::Wait && !self.router.confirmed() {
            // Not durable: give it back and do not count it as held.
            grant.unconfirmed = true;
            grant
                .history
                .push((self.sh.now(), "WAIT did not confirm it".into()));
            self.log.unconfirmed += 1;
            let idx = self.log.grants.len();
            self.log.grants.push(grant);
            return self.release(idx);
        } else if self.durability == Durability::Wait {
            // Held from the moment the replica confirmed it.
            grant.t_recv = self.sh.now();
            grant
                .history
                .push((grant.t_recv, "WAIT confirmed it".into()));
        }
        let idx = self.log.grants.len();
        self.log.grants.push(grant);
        // Hold it: a few rounds of work, each maybe renewing; then release or abandon.
        let rounds = self.rng.range(0, 2);
        for _ in 0..rounds {
            let left = self.log.grants[idx].end.saturating_sub(self.sh.now()) / 1000;
            thread::sleep(Duration::from_millis(
                self.rng.range(0, (left * 9 / 10).max(1)),
            ));
            if !self.rng.chance(60) {
                continue;
            }
            match self.renew(idx) {
                Some(End::Done) => return End::Done, // lost: nothing to release
                Some(End::Reconnect) => return End::Reconnect,
                None => {}
            }
        }
        if !self.rng.chance(80) {
            return End::Done; // abandoned: it lapses at its deadline
        }
        if family == Family::Job && self.rng.chance(85) {
            self.fulfil(idx)
        } else {
            self.release(idx)
        }
    }

    /// Renews grant `idx`; `None` while it is still held.
    fn renew(&mut self, idx: usize) -> Option<End> {
        let ttl2 = self.ttl();
        let g = &self.log.grants[idx];
        let key = g.key.clone();
        let cmd = match g.family {
            Family::Resv => {
                let mut c = redis::cmd("RESV.RENEW");
                c.arg(&key).arg(&g.holder).arg(ttl2);
                c
            }
            Family::Sem => {
                let mut c = redis::cmd("SEM.RENEW");
                c.arg(&key).arg(&g.holder).arg(ttl2);
                c
            }
            Family::Slot => {
                let mut c = redis::cmd("SLOT.RENEW");
                c.arg(&key)
                    .arg(g.slot.unwrap_or(0))
                    .arg(ttl2)
                    .arg("HOLDER")
                    .arg(&g.holder);
                c
            }
            Family::Job => {
                let mut c = redis::cmd("JOB.RENEW");
                c.arg(&key).arg(g.job.unwrap_or(0)).arg(&g.holder).arg(ttl2);
                c
            }
        };
        let call = self.router.call(&key, &cmd);
        self.log.redirected += u64::from(call.redirects);
        let new_end = (call.last_send + ttl2 * 1000).saturating_sub(EPSILON_US);
        match call.outcome {
            Outcome::Reply(Value::Int(1)) => {
                let confirmed = self.durability == Durability::Async || self.router.confirmed();
                let g = &mut self.log.grants[idx];
                g.history
                    .push((call.first_send, format!("renew sent (ttl {ttl2} ms)")));
                if confirmed {
                    // The deadline is now (server now ≥ t_send) + ttl2 — possibly shorter.
                    g.end = new_end;
                    g.history
                        .push((call.recv, format!("renew ok (:{})", call.node)));
                } else {
                    // The replica may still have the old deadline.
                    g.end = g.end.min(new_end);
                    g.history
                        .push((call.recv, "renew ok, WAIT did not confirm it".into()));
                }
                None
            }
            Outcome::Error(e) if e.starts_with("NOTHELD") || e.starts_with("ALREADY") => {
                let g = &mut self.log.grants[idx];
                g.history
                    .push((call.first_send, format!("renew sent (ttl {ttl2} ms)")));
                g.history
                    .push((call.recv, format!("renew: {e} (:{})", call.node)));
                if call.recv < g.end {
                    g.reported_lost = Some((call.recv, call.node));
                }
                Some(End::Done)
            }
            Outcome::Lost => {
                // Applied or not: the lease ends at the earlier of the two deadlines.
                let g = &mut self.log.grants[idx];
                g.end = g.end.min(new_end);
                g.history.push((
                    call.first_send,
                    format!("renew sent (ttl {ttl2} ms), connection lost"),
                ));
                self.log.lost += 1;
                Some(End::Reconnect)
            }
            _ => Some(self.odd("renew", &key, &call)),
        }
    }

    /// Releases grant `idx` (RELEASE, SLOT.PUT).
    fn release(&mut self, idx: usize) -> End {
        let g = &self.log.grants[idx];
        let key = g.key.clone();
        let cmd = match g.family {
            Family::Resv => {
                let mut c = redis::cmd("RESV.RELEASE");
                c.arg(&key).arg(&g.holder);
                c
            }
            Family::Sem => {
                let mut c = redis::cmd("SEM.RELEASE");
                c.arg(&key).arg(&g.holder);
                c
            }
            Family::Slot => {
                let mut c = redis::cmd("SLOT.PUT");
                c.arg(&key)
                    .arg(g.slot.unwrap_or(0))
                    .arg("HOLDER")
                    .arg(&g.holder);
                c
            }
            Family::Job => {
                let mut c = redis::cmd("JOB.RELEASE");
                c.arg(&key).arg(g.job.unwrap_or(0)).arg(&g.holder);
                c
            }
        };
        let call = self.router.call(&key, &cmd);
        self.ended(idx, &call, "release")
    }

    /// Fulfils job grant `idx` with its token.
    fn fulfil(&mut self, idx: usize) -> End {
        let g = &self.log.grants[idx];
        let key = g.key.clone();
        let job = g.job.unwrap_or(0);
        let token = g.token;
        let mut cmd = redis::cmd("JOB.FULFILL");
        cmd.arg(&key)
            .arg(job)
            .arg(&g.holder)
            .arg("TOKEN")
            .arg(token);
        let call = self.router.call(&key, &cmd);
        let accepted = matches!(call.outcome, Outcome::Reply(Value::Int(1)));
        let unknown = matches!(call.outcome, Outcome::Lost);
        if accepted || unknown {
            let unconfirmed =
                accepted && self.durability == Durability::Wait && !self.router.confirmed();
            self.log.fulfils.push(Fulfil {
                key: key.clone(),
                job,
                token,
                node: call.node,
                t_send: call.first_send,
                unknown,
                unconfirmed,
                durability: self.durability,
            });
        }
        let stale = matches!(&call.outcome, Outcome::Error(e) if e.starts_with("STALE"));
        if stale {
            // The lease lapsed: the same check as a NOTHELD.
            let e = "NOTHELD (STALE)".to_string();
            let call = Call {
                outcome: Outcome::Error(e),
                ..call
            };
            return self.ended(idx, &call, "fulfil");
        }
        self.ended(idx, &call, "fulfil")
    }

    /// Records how the release (or fulfilment) of grant `idx` ended.
    fn ended(&mut self, idx: usize, call: &Call, what: &str) -> End {
        let key = self.log.grants[idx].key.clone();
        let g = &mut self.log.grants[idx];
        // The server cannot free it before the command was sent.
        let old_end = g.end;
        g.end = g.end.min(call.first_send);
        g.history.push((call.first_send, format!("{what} sent")));
        match &call.outcome {
            Outcome::Reply(Value::Int(1)) => {
                g.history
                    .push((call.recv, format!("{what} ok (:{})", call.node)));
                End::Done
            }
            // NOJOB: the job itself is gone — created by a primary that failed before its
            // replica had it.
            Outcome::Error(e)
                if e.starts_with("NOTHELD")
                    || e.starts_with("ALREADY")
                    || e.starts_with("NOJOB") =>
            {
                g.history
                    .push((call.recv, format!("{what}: {e} (:{})", call.node)));
                if call.recv < old_end {
                    g.reported_lost = Some((call.recv, call.node));
                }
                End::Done
            }
            Outcome::Lost => {
                g.history.push((call.recv, "connection lost".to_string()));
                self.log.lost += 1;
                End::Reconnect
            }
            _ => self.odd(what, &key, call),
        }
    }
}

/// Kills a random worker connection every 20–100 ms until stopped; returns how many it killed.
pub fn killer(sh: Arc<Shared>, seed: u64) -> u64 {
    let mut rng = Rng(seed ^ 0xDEAD_BEEF);
    let mut conns: HashMap<u16, Connection> = HashMap::new();
    let mut kills = 0;
    while !sh.stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(rng.range(20, 100)));
        let victim = {
            let clients = sh.clients.lock().unwrap();
            if clients.is_empty() {
                continue;
            }
            let n = (rng.next() % clients.len() as u64) as usize;
            clients.iter().nth(n).map(|(&(_, port), &id)| (port, id))
        };
        let Some((port, id)) = victim else { continue };
        let c = match conns.entry(port) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Ok(c) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                else {
                    continue;
                };
                e.insert(c)
            }
        };
        match redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query::<i64>(c)
        {
            Ok(n) => kills += n as u64,
            Err(_) => {
                conns.remove(&port);
            }
        }
    }
    sh.faults.lock().unwrap().kills += kills;
    kills
}

/// Runs `workers` workers (and, with `kill`, the killer) until `run` returns, then stops them
/// and returns their logs.
pub fn run(
    sh: &Arc<Shared>,
    work: &Workload,
    workers: usize,
    kill: bool,
    seed: u64,
    during: impl FnOnce(),
) -> Vec<Log> {
    let handles: Vec<_> = (0..workers)
        .map(|me| {
            let sh = sh.clone();
            let work = work.clone();
            thread::Builder::new()
                .name(format!("worker-{me}"))
                .spawn(move || worker(sh, work, me, seed))
                .expect("spawning a worker")
        })
        .collect();
    let k = kill.then(|| {
        let sh = sh.clone();
        thread::spawn(move || killer(sh, seed))
    });
    during();
    sh.stop.store(true, Ordering::SeqCst);
    if let Some(k) = k {
        k.join().expect("killer thread");
    }
    handles
        .into_iter()
        .map(|w| w.join().expect("a worker thread panicked"))
        .collect()
}

/// After the run: pulls and fulfils every job left in the stores (leases abandoned by the
/// workers lapse within their TTL), so every job created can be checked to have been fulfilled.
pub fn drain_jobs(sh: &Arc<Shared>, keys: &Keys, log: &mut Log) {
    sh.stop.store(false, Ordering::SeqCst);
    let mut router = Router::new(sh.clone(), usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in &keys.job {
        loop {
            assert!(
                Instant::now() < deadline,
                "the drain did not empty {key} within 30 s"
            );
            let mut pull = redis::cmd("JOB.PULL");
            pull.arg(key)
                .arg("drainer")
                .arg(5_000)
                .arg("BLOCK")
                .arg(1_000);
            let call = router.call(key, &pull);
            let (id, token) = match &call.outcome {
                Outcome::Reply(Value::Array(a)) => match a.as_slice() {
                    [Value::Int(id), _, Value::Int(t)] => (*id, *t),
                    _ => panic!("drain: JOB.PULL {key} answered {a:?}"),
                },
                Outcome::Reply(Value::Nil) => {
                    // Nothing pullable: done once no lease is left to lapse.
                    let info = router.call(key, redis::cmd("JOB.INFO").arg(key));
                    let Outcome::Reply(v) = info.outcome else {
                        continue;
                    };
                    let f = crate::common::client::int_fields(v).unwrap_or_default();
                    if f.get("pending") == Some(&0) && f.get("delayed") == Some(&0) {
                        break;
                    }
                    continue;
                }
                Outcome::Lost => continue,
                Outcome::Reply(v) => panic!("drain: JOB.PULL {key} answered {v:?}"),
                Outcome::Error(e) => panic!("drain: JOB.PULL {key} answered {e}"),
            };
            let mut fulfil = redis::cmd("JOB.FULFILL");
            fulfil
                .arg(key)
                .arg(id)
                .arg("drained")
                .arg("TOKEN")
                .arg(token);
            let call = router.call(key, &fulfil);
            match call.outcome {
                Outcome::Reply(Value::Int(1)) => log.fulfils.push(Fulfil {
                    key: key.clone(),
                    job: id,
                    token,
                    node: call.node,
                    t_send: call.first_send,
                    unknown: false,
                    unconfirmed: false,
                    durability: Durability::Async,
                }),
                Outcome::Lost => {}
                Outcome::Reply(v) => panic!("drain: JOB.FULFILL {key} {id} answered {v:?}"),
                Outcome::Error(e) => panic!("drain: JOB.FULFILL {key} {id} answered {e}"),
            }
        }
    }
    router.reset();
}

/// The fulfilled jobs of `key`, as the server lists them now.
pub fn fulfilled_jobs(sh: &Arc<Shared>, key: &str) -> BTreeSet<i64> {
    let mut router = Router::new(sh.clone(), usize::MAX - 1);
    let mut out = BTreeSet::new();
    let mut after: Option<i64> = None;
    loop {
        let mut cmd = redis::cmd("JOB.LIST");
        cmd.arg(key).arg("fulfilled").arg("COUNT").arg(1000);
        if let Some(a) = after {
            cmd.arg("AFTER").arg(a);
        }
        let call = router.call(key, &cmd);
        let Outcome::Reply(Value::Array(ids)) = call.outcome else {
            panic!("JOB.LIST {key} fulfilled failed");
        };
        if ids.is_empty() {
            break;
        }
        for id in ids {
            if let Value::Int(id) = id {
                out.insert(id);
                after = Some(id);
            }
        }
    }
    router.reset();
    out
}

/// Pairs of live grants whose intervals overlap, within each group (`group` of a grant; None
/// = not checked). Sorted by start, each grant is compared with the one that ends last among
/// those before it.
fn overlaps<G: Ord>(
    grants: &[Grant],
    group: impl Fn(&Grant) -> Option<G>,
) -> Vec<(&Grant, &Grant)> {
    let mut by: BTreeMap<G, Vec<&Grant>> = BTreeMap::new();
    for g in grants.iter().filter(|g| g.live()) {
        if let Some(k) = group(g) {
            by.entry(k).or_default().push(g);
        }
    }
    let mut out = Vec::new();
    for (_, mut v) in by {
        v.sort_by_key(|g| (g.t_recv, g.end));
        let mut last: Option<&Grant> = None;
        for g in v {
            if let Some(l) = last {
                if g.t_recv < l.end {
                    out.push((l, g));
                }
                if g.end > l.end {
                    last = Some(g);
                }
            } else {
                last = Some(g);
            }
        }
    }
    out
}

/// SEM: instants where the live grants of a key hold more permits than the capacity (the
/// grants held at the first such instant of each episode).
fn over_capacity<'a>(grants: &[&'a Grant]) -> Vec<(u64, Vec<&'a Grant>)> {
    let mut by: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants
        .iter()
        .filter(|g| g.family == Family::Sem && g.live())
    {
        by.entry(g.key.as_str()).or_default().push(g);
    }
    let mut out = Vec::new();
    for (_, v) in by {
        // (time, 0 = end before 1 = start at equal times, index)
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, g) in v.iter().enumerate() {
            events.push((g.t_recv, 1, i));
            events.push((g.end, 0, i));
        }
        events.sort();
        let mut held: u32 = 0;
        let mut active: Vec<usize> = Vec::new();
        let mut reported = false;
        for (t, kind, i) in events {
            if kind == 0 {
                held -= v[i].permits;
                active.retain(|&a| a != i);
                if held <= SEM_CAPACITY {
                    reported = false;
                }
            } else {
                held += v[i].permits;
                active.push(i);
                if held > SEM_CAPACITY && !reported {
                    reported = true;
                    out.push((t, active.iter().map(|&a| v[a]).collect()));
                }
            }
        }
    }
    out
}

/// Tokens per key: strictly increasing in grant order (a grant received before another was
/// requested has the smaller token) and never repeated — also across nodes and failovers.
fn token_violations(grants: &[Grant]) -> Vec<String> {
    let mut by: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in grants {
        by.entry(g.key.as_str()).or_default().push(g);
    }
    let mut out = Vec::new();
    for (key, v) in by {
        let mut seen: HashMap<i64, &Grant> = HashMap::new();
        for g in &v {
            if let Some(o) = seen.insert(g.token, g) {
                out.push(format!(
                    "{key}: token {} issued twice:\n    {}\n    {}",
                    g.token,
                    o.describe(),
                    g.describe()
                ));
            }
        }
        let mut by_recv = v.clone();
        by_recv.sort_by_key(|g| g.t_recv);
        let mut by_send = v;
        by_send.sort_by_key(|g| g.t_send);
        let mut i = 0;
        let mut max: Option<&Grant> = None;
        for b in by_send {
            while i < by_recv.len() && by_recv[i].t_recv < b.t_send {
                if max.is_none_or(|m| by_recv[i].token > m.token) {
                    max = Some(by_recv[i]);
                }
                i += 1;
            }
            if let Some(a) = max {
                if a.token >= b.token {
                    out.push(format!(
                        "{key}: token {} granted after token {} was received:\n    {}\n    {}",
                        b.token,
                        a.token,
                        a.describe(),
                        b.describe()
                    ));
                }
            }
        }
    }
    out
}

/// The checked history of a run.
pub struct Report {
    pub violations: Vec<String>,
    pub summary: String,
    pub grants: BTreeMap<Family, usize>,
    pub timeouts: u64,
    /// Overlaps excused because the older grant was lost in a failover (tokens still ordered).
    pub lost_grants: usize,
}

/// Checks the history of a run (see the module docs); `jobs` = the fulfilled job ids of each
/// JOB key at the end, after [`drain_jobs`].
pub fn check(logs: &[Log], faults: &Faults, jobs: &BTreeMap<String, BTreeSet<i64>>) -> Report {
    let grants: Vec<Grant> = logs.iter().flat_map(|l| l.grants.iter().cloned()).collect();
    let mut violations: Vec<String> = logs.iter().flat_map(|l| l.violations.clone()).collect();
    let mut lost_grants = 0;
    // One holder at a time: a RESV key, a slot of a pool, a job's work lease.
    let exclusive = overlaps(&grants, |g| match g.family {
        Family::Resv => Some((g.key.clone(), 0)),
        Family::Slot => Some((g.key.clone(), g.slot.unwrap_or(u64::MAX) as i64)),
        Family::Job => Some((g.key.clone(), g.job.unwrap_or(0))),
        Family::Sem => None,
    });
    for (a, b) in exclusive {
        // A grant lost in a failover (made by a node that was then demoted, and never
        // confirmed by a replica) may overlap another — the new primary's, or, on the old
        // primary once its view diverged, a grant whose lease the new primary extended — and
        // the later of the two always has the larger token.
        let lost = |g: &Grant| {
            g.may_be_lost(faults) && (a.node != b.node || faults.diverged(g.node, g.t_recv))
        };
        let excused = (lost(a) || lost(b)) && b.token > a.token;
        if excused {
            lost_grants += 1;
            continue;
        }
        violations.push(format!(
            "{:?} {}: held twice at once:\n    {}\n    {}",
            a.family,
            a.key,
            a.describe(),
            b.describe()
        ));
    }
    for g in grants
        .iter()
        .filter(|g| g.slot.is_some_and(|s| s >= SLOT_LIMIT))
    {
        violations.push(format!(
            "slot beyond LIMIT {SLOT_LIMIT}:\n    {}",
            g.describe()
        ));
    }
    // SEM: leave out Async grants that may have been lost in a failover (their permits may have
    // been granted again by the new primary), check the rest.
    let kept: Vec<&Grant> = grants.iter().filter(|g| !g.may_be_lost(faults)).collect();
    for (t, held) in over_capacity(&kept) {
        let mut s = format!(
            "SEM {}: {} permits held at {} ms (capacity {SEM_CAPACITY}):",
            held[0].key,
            held.iter().map(|g| g.permits).sum::<u32>(),
            ms(t)
        );
        for g in held {
            let _ = write!(s, "\n    {}", g.describe());
        }
        violations.push(s);
    }
    violations.extend(token_violations(&grants));
    violations.extend(job_violations(logs, faults, jobs));
    // No lease reported lost before its deadline — unless a failover may have lost it, or the
    // answer came from a primary that was being demoted (its view was stale).
    for g in &grants {
        if let Some((at, node)) = g.reported_lost {
            if !g.unconfirmed && !g.may_be_lost(faults) && !faults.may_lose(node, at) {
                violations.push(format!(
                    "lease reported lost before its deadline:\n    {}",
                    g.describe()
                ));
            }
        }
    }
    // Every waiter answered within its timeout + the margin — unless Redis itself held the
    // command back meanwhile (a graceful failover pauses the old primary's clients).
    for w in logs.iter().flat_map(|l| &l.slow_waits) {
        if !faults.paused(w.sent, w.answered) {
            violations.push(format!(
                "{} answered after {} ms (sent at {} ms to :{})",
                w.what,
                ms(w.answered - w.sent),
                ms(w.sent),
                w.node
            ));
        }
    }

    let mut by_family = BTreeMap::new();
    for g in &grants {
        *by_family.entry(g.family).or_insert(0) += 1;
    }
    let sum = |f: fn(&Log) -> u64| logs.iter().map(f).sum::<u64>();
    let fulfils = logs.iter().map(|l| l.fulfils.len()).sum::<usize>();
    let summary = format!(
        "{} grants ({}), {} jobs created, {} fulfilled; {} BLOCK waits ({} timed out), \
         {} redirections followed, {} kills ({} replies lost), {} reshards, {} failovers, \
         {} grants WAIT did not confirm, {} grants lost in a failover (later token larger); \
         latest waiter answered {} ms past its timeout; {} violations",
        grants.len(),
        by_family
            .iter()
            .map(|(f, n)| format!("{f:?} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        sum(|l| l.created.len() as u64),
        fulfils,
        sum(|l| l.waits),
        sum(|l| l.timeouts),
        sum(|l| l.redirected),
        faults.kills,
        sum(|l| l.lost),
        faults.reshards,
        faults.failovers,
        sum(|l| l.unconfirmed),
        lost_grants,
        ms(logs.iter().map(|l| l.max_overrun_us).max().unwrap_or(0)),
        violations.len()
    );
    Report {
        violations,
        summary,
        grants: by_family,
        timeouts: sum(|l| l.timeouts),
        lost_grants,
    }
}

/// JOB: every job fulfilled exactly once. `jobs` holds what each store lists as fulfilled at
/// the end (after the drain).
fn job_violations(
    logs: &[Log],
    faults: &Faults,
    jobs: &BTreeMap<String, BTreeSet<i64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut fulfils: BTreeMap<(&str, i64), Vec<&Fulfil>> = BTreeMap::new();
    for f in logs.iter().flat_map(|l| &l.fulfils) {
        fulfils.entry((f.key.as_str(), f.job)).or_default().push(f);
    }
    for ((key, job), fs) in &fulfils {
        let mut accepted: Vec<&&Fulfil> = fs.iter().filter(|f| !f.unknown).collect();
        accepted.sort_by_key(|f| f.t_send);
        // Twice only when every earlier one was lost in a failover, with larger tokens after.
        let (earlier, last) = accepted.split_at(accepted.len().saturating_sub(1));
        let excused = earlier.iter().all(|f| f.may_be_lost(faults))
            && earlier
                .iter()
                .all(|f| last.iter().all(|l| l.token > f.token));
        if accepted.len() > 1 && !excused {
            out.push(format!(
                "{key}: job {job} fulfilled {} times: {accepted:?}",
                accepted.len()
            ));
        }
        let listed = jobs.get(*key).is_some_and(|s| s.contains(job));
        if !listed && !accepted.iter().all(|f| f.may_be_lost(faults)) {
            out.push(format!(
                "{key}: job {job} was fulfilled ({accepted:?}) but is not listed as fulfilled"
            ));
        }
    }
    for (key, ids) in jobs {
        for id in ids {
            if !fulfils.contains_key(&(key.as_str(), *id)) {
                out.push(format!(
                    "{key}: job {id} is fulfilled but nobody fulfilled it"
                ));
            }
        }
    }
    for c in logs.iter().flat_map(|l| &l.created) {
        let listed = jobs.get(&c.key).is_some_and(|s| s.contains(&c.job));
        let may_be_lost = !c.durable && faults.may_lose(c.node, c.t_send);
        if !listed && !may_be_lost {
            out.push(format!(
                "{}: job {} was created (by :{} at {} ms) but is not fulfilled at the end",
                c.key,
                c.job,
                c.node,
                ms(c.t_send)
            ));
        }
    }
    out
}

/// Panics with the first violations of `report` (and the seed to replay the run).
pub fn assert_clean(report: &Report, seed: u64, seed_var: &str) {
    assert!(
        report.violations.is_empty(),
        "{} violations ({seed_var}={seed}); the first ones:\n{}",
        report.violations.len(),
        report
            .violations
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}
