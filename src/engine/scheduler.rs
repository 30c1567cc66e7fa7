//! The deadline scheduler: one Redis timer, armed for the earliest key in the engine's schedule.
//!
//! A key is in the schedule at its earliest lease deadline (set on every commit), or at "now"
//! when a keyspace event says it needs a look (deleted, renamed, restored…). When the timer
//! fires on a primary, every due key is checked: its lapsed leases lapse and waiters are served,
//! exactly as a command would do it, and the key is scheduled again at its next deadline.
//! On a replica the timer does nothing: deadlines stay scheduled, and fire once it is promoted.
//! While Redis pauses writes (`CLIENT PAUSE`, a failover handing over) it waits, as Redis's
//! own expiry does.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use super::cluster;
use super::ffi::{self, raw, Ctx, KeyHolds, OwnedStr, Reply};
use super::state::contain;
use super::state::{self, split_key, KeyRef};
use super::waiters;

/// While Redis holds writes back (`ffi::writes_paused`), the timer looks again this often.
const PAUSED_RETRY_MS: u64 = 10;

/// How long one timer tick works through due keys before letting Redis serve clients again.
/// (A single key is always finished: lapsing what one key holds is one atomic change.)
const TICK_BUDGET: Duration = Duration::from_millis(2);

/// Makes sure the timer fires at the earliest scheduled deadline (on a primary: a replica's
/// deadlines wait for its promotion).
pub fn arm(ctx: Ctx) {
    if ctx.is_primary() {
        arm_on_primary(ctx);
    }
}

/// `arm`, for a caller that knows this is a primary.
pub fn arm_on_primary(ctx: Ctx) {
    let now = ffi::now_ms();
    let (stop, due) = state::with(|e| {
        let next = e.schedule.earliest();
        match (e.timer, next) {
            (Some((_, at)), Some(n)) if at <= n => (None, None),
            (timer, next) => (timer.map(|(id, _)| id), next),
        }
    });
    if let Some(id) = stop {
        ffi::stop_timer(ctx, id);
        state::with(|e| e.timer = None);
    }
    if let Some(at) = due {
        let id = ffi::create_timer(ctx, at.saturating_sub(now), on_timer);
        state::with(|e| e.timer = Some((id, at)));
    }
}

/// Asks for a look at a key as soon as possible (from keyspace/server events).
pub fn check_soon(ctx: Ctx, key: KeyRef) {
    state::with(|e| e.schedule.set_earlier(key, 0));
    arm(ctx);
}

unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    // SAFETY: ctx is the timer callback's context.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("deadline timer", || {
        state::with(|e| e.timer = None);
        if !ctx.is_primary() {
            return;
        }
        if ffi::writes_paused() {
            // A pause (CLIENT PAUSE, a failover handing over, a SHUTDOWN waiting for replicas):
            // Redis expires nothing meanwhile and must not see a write, so lapses wait too —
            // reads already answer as if the due leases had lapsed, as for an expired key.
            let id = ffi::create_timer(ctx, PAUSED_RETRY_MS, on_timer);
            state::with(|e| e.timer = Some((id, ffi::now_ms() + PAUSED_RETRY_MS)));
            return;
        }
        // Keys due now, earliest first. Checking one can schedule others (a hand-off), so the
        // loop asks again each time. When a great many keys are due at once (after a restart,
        // a failover, a long script), the tick stops after TICK_BUDGET and `arm` fires the
        // timer again at once: Redis serves its clients in between, as its own expire cycle does.
        let started = Instant::now();
        while started.elapsed() < TICK_BUDGET {
            let now = ffi::now_ms();
            let Some(key) = state::with(|e| e.schedule.pop_first_due(now)) else {
                break;
            };
            check_key(ctx, &key);
        }
        let spent = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        ffi::latency_sample(c"corral-timer", spent);
        arm(ctx);
    });
}

/// Lapses what is due on one key and serves its waiters, whatever its family.
fn check_key(ctx: Ctx, key: &KeyRef) {
    let Some((db, name)) = split_key(key) else {
        return;
    };
    if !ctx.select_db(db) {
        return;
    }
    let Some(name_str) = OwnedStr::new(name) else {
        return;
    };
    let name_r = name_str.as_rstr();
    let holds = ctx.open_key(name_r, false).holds();
    let ops = state::with(|e| match holds {
        KeyHolds::Module(t) => e.family_of_type(t),
        // An empty key (or one of another type) may still have waiters: their family decides.
        _ => e.queues.front(key).and_then(|(_, w)| e.family(w.family)),
    });
    let Some(ops) = ops else {
        return;
    };
    // Waiters of a key that is gone are served against the empty key — unless, in Redis
    // Cluster, the key is gone because its slot is moving to another node (MIGRATE deletes it
    // here): then they are redirected there instead of granted here (cluster.rs).
    if matches!(holds, KeyHolds::Nothing) && ctx.flags().is_cluster() {
        if let Some(redirect) = cluster::redirect_for_missing_key(ctx, name) {
            waiters::fail_all(key, Reply::Error(redirect));
            return;
        }
        ops.check(ctx, name_r);
        if matches!(ctx.open_key(name_r, false).holds(), KeyHolds::Nothing) {
            recheck_later(ctx, key.clone());
        }
        return;
    }
    ops.check(ctx, name_r);
}

/// In Redis Cluster, clients waiting on a key that does not exist (a `JOB.PULL` on an empty
/// store) are looked at again every `cluster::RECHECK_MS` while they wait: if the key's slot
/// moves to another node, nothing else would tell this node (there is no key to MIGRATE, and
/// no event), and they would wait here for a grant that can no longer happen.
pub fn recheck_later(ctx: Ctx, key: KeyRef) {
    if !state::with(|e| e.queues.is_waiting(&key)) {
        return;
    }
    let at = ffi::now_ms() + cluster::RECHECK_MS;
    state::with(|e| e.schedule.set_earlier(key, at));
    arm(ctx);
}
