//! The engine's process-wide state: token mint, INFO counters, the deadline schedule, the wait
//! queues, and the registry of families. Redis runs every module callback that touches it on
//! its main thread, one at a time.

use std::any::Any;
use std::cell::RefCell;

use super::deadlines::DeadlineIndex;
use super::ffi::{self, raw, BlockedClient, Ctx, CtxFlags, RStr};
pub use super::keys::{key_bytes, split_key, KeyBytes, KeyRef};
use super::primitive::{Event, Family};
use super::queues::Queues;
use super::tokens::Mint;

/// Per-family INFO counters.
#[derive(Default, Clone, Copy)]
pub struct Counters {
    pub grants: u64,
    pub renewals: u64,
    pub releases: u64,
    pub lapses: u64,
    pub waits: u64,
    pub timeouts: u64,
    pub waiting: u64,
}

impl Counters {
    pub fn count(&mut self, event: Event) {
        match event {
            Event::Grant => self.grants += 1,
            Event::Renew => self.renewals += 1,
            Event::Release => self.releases += 1,
            Event::Lapse => self.lapses += 1,
            Event::Custom(_) | Event::Other => {}
        }
    }
}

/// What the engine needs to do with a key of some family without knowing its Rust type:
/// implemented once, generically, in `txn.rs`.
pub trait FamilyOps {
    fn family(&self) -> Family;
    fn raw_type(&self) -> *mut raw::RedisModuleType;
    /// Lapses what is due and serves waiters (scheduler and keyspace events call this).
    fn check(&self, ctx: Ctx, name: RStr);
    /// Applies a replicated effect batch (`CORRAL._APPLY`).
    fn apply_replicated(&self, ctx: Ctx, name: RStr, effects: &[u8]) -> super::ffi::CmdResult;
}

/// A blocked client in a key's queue: what it asked for (the family's `Request`), answered by
/// whichever of serve, timeout, disconnect or `fail_all` removes it first (`waiters.rs`).
pub struct Waiter {
    pub bc: BlockedClient,
    pub family: Family,
    pub request: Box<dyn Any>,
}

pub struct Engine {
    pub mint: Mint,
    pub counters: [Counters; Family::COUNT],
    pub contained_panics: u64,
    /// When each key next needs the engine's attention (earliest lease deadline, or "now").
    pub schedule: DeadlineIndex<KeyRef>,
    /// The armed deadline timer: (id, when it fires).
    pub timer: Option<(u64, u64)>,
    pub queues: Queues<Waiter>,
    /// The armed BLOCK-timeout timer, one for every waiter: (id, when it fires).
    pub wait_timer: Option<(u64, u64)>,
    pub families: Vec<&'static dyn FamilyOps>,
    /// The corral value Redis removed last: (key name, family, leases it still held).
    pub last_unlinked: Option<(Vec<u8>, Family, u64)>,
    /// Arms the deadline timer for the schedule's earliest key: the scheduler's `arm`, set by
    /// `engine::init`. Held here so that code below the scheduler (a waiter leaving its queue)
    /// can put a key in the schedule and wake it without depending on it.
    pub arm_scheduler: fn(Ctx),
}

impl Engine {
    fn new() -> Self {
        Self {
            mint: Mint::new(),
            counters: [Counters::default(); Family::COUNT],
            contained_panics: 0,
            schedule: DeadlineIndex::default(),
            timer: None,
            queues: Queues::default(),
            wait_timer: None,
            families: Vec::new(),
            last_unlinked: None,
            arm_scheduler: |_| {},
        }
    }

    pub fn family_of_type(&self, t: *mut raw::RedisModuleType) -> Option<&'static dyn FamilyOps> {
        self.families.iter().copied().find(|f| f.raw_type() == t)
    }

    pub fn family(&self, family: Family) -> Option<&'static dyn FamilyOps> {
        self.families.iter().copied().find(|f| f.family() == family)
    }
}

struct MainThread<T>(T);

// SAFETY: Redis calls every module callback that reaches ENGINE (commands, timers, keyspace and
// server events, blocked-client callbacks, RDB load) on its main thread while holding the
// module GIL, so the state is never accessed concurrently. The one callback that may run on
// another thread (a value's `free`, under lazy free) does not touch it.
unsafe impl<T> Sync for MainThread<T> {}

static ENGINE: MainThread<RefCell<Option<Engine>>> = MainThread(RefCell::new(None));

/// Runs `f` with the engine state. Never call Redis from inside `f` in a way that could
/// re-enter corral (opening a key can fire keyspace events): keep `f` to bookkeeping.
pub fn with<R>(f: impl FnOnce(&mut Engine) -> R) -> R {
    let mut guard = ENGINE.0.borrow_mut();
    f(guard.get_or_insert_with(Engine::new))
}

/// As `with`, but does nothing if the state is already borrowed (used while handling a panic).
fn try_with(f: impl FnOnce(&mut Engine)) {
    if let Ok(mut guard) = ENGINE.0.try_borrow_mut() {
        f(guard.get_or_insert_with(Engine::new));
    }
}

/// Runs `f`, turning a panic into `None` (logged, counted in `INFO corral`) instead of unwinding
/// into Redis, which would abort the server. Every entry point from Redis goes through here.
pub fn contain<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ffi::log(
                None,
                c"warning",
                &format!("corral: contained a panic in {what}: {msg}"),
            );
            // The engine state may be mid-borrow if the panic came from inside `with`.
            try_with(|e| e.contained_panics += 1);
            None
        }
    }
}

/// Whether this server may have a replication stream to feed: set for good the first time the
/// server forks (every full sync of a replica involves a fork), a replica connects, or the
/// server's role changes (a replica or former replica keeps a backlog that sub-replicas can
/// resync from), or at load if replicas or a backlog already exist. Until then, a standalone
/// server without AOF propagates nothing — what Redis decides for its own commands — and
/// corral skips encoding effects and `RM_Replicate`'s per-call command lookup.
static REPLICATION_POSSIBLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn replication_possible() -> bool {
    REPLICATION_POSSIBLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// True when what this server propagates goes anywhere: the AOF is on, or a replication stream
/// may exist. Redis itself skips propagation otherwise; so does corral, saving the encoding and
/// `RM_Replicate`'s command lookup.
pub fn propagates(flags: CtxFlags) -> bool {
    replication_possible() || flags.aof_on()
}

pub fn note_replication() {
    REPLICATION_POSSIBLE.store(true, std::sync::atomic::Ordering::Relaxed);
}
