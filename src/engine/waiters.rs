//! Blocking clients: parking a waiter in its key's queue (`queues.rs`, owned by the engine's
//! state), answering it, and Redis's blocked-client callbacks. Serving waiters — deciding what
//! the first in line is granted — is a change to the key, so it lives in `txn.rs`.
//!
//! Waiters are kept by the module, not by Redis's blocked-on-keys machinery: Redis 7.0 does not
//! wake blocked-on-keys clients on deletion, and corral hands resources over directly.
//!
//! A waiter leaves its queue exactly once, by one of: being served (`finish`), its BLOCK
//! timeout, its client disconnecting, or its key becoming unusable (`fail_all`). Each path
//! removes it from the queue first and then calls `RedisModule_UnblockClient`, which Redis
//! requires for every blocked client. A waiter that times out or disconnects may have been
//! what held the others back (first in line for two permits, one free): its key is then put
//! in the schedule for a look at once, which serves whoever can be served now.
//!
//! BLOCK timeouts are corral's own, not Redis's: Redis 7.0 drops the reply of a module-blocked
//! client that was unblocked (granted) and then timed out in the same event-loop iteration
//! before its reply was sent — the client would hang forever while holding what it was granted.
//! With Redis never timing our clients out, every waiter is answered by exactly the path that
//! removed it. One Redis timer serves every waiter's timeout (armed at the earliest; a waiter
//! served earlier just leaves the queue's timeout index): creating and stopping a Redis timer
//! per wait cost a fifth of a contended hand-off.

use std::ffi::{c_int, c_void};

use super::ffi::{self, Ctx, Reply};
use super::primitive::Primitive;
use super::queues::Place;
use super::state::{self, contain, Waiter};

/// Blocks the calling client in the key's queue until it is served, its timeout (ms, 0 =
/// forever) passes, or it disconnects.
pub fn park<F: Primitive>(ctx: Ctx, key: &[u8], request: F::Request, timeout_ms: u64) -> Reply {
    // No Redis timeout (see the module docs): our own timer answers nil at the timeout.
    let Some(bc) = ffi::block_client(ctx, on_reply, on_timeout, on_free, on_disconnect, 0) else {
        return Reply::Nil;
    };
    let lane = F::lane(&request);
    let deadline = (timeout_ms > 0).then(|| ffi::now_ms().saturating_add(timeout_ms));
    state::with(|e| {
        let waiter = Waiter {
            bc,
            family: F::FAMILY,
            request: Box::new(request),
        };
        e.queues.push(key, lane, bc.id(), deadline, waiter);
        let c = &mut e.counters[F::FAMILY.index()];
        c.waits += 1;
        c.waiting += 1;
    });
    if deadline.is_some() {
        arm_wait_timer(ctx);
    }
    Reply::Blocked
}

/// Removes the waiter at `place` and answers it.
pub fn finish(key: &[u8], place: Place, reply: Reply) {
    let removed = state::with(|e| {
        let w = e.queues.remove(key, place)?;
        e.counters[w.family.index()].waiting -= 1;
        Some(w.bc)
    });
    if let Some(bc) = removed {
        ffi::unblock_client(bc, Some(Box::new(reply)));
    }
}

/// Answers every waiter of `key` with `reply` (e.g. the key now holds another type).
pub fn fail_all(key: &[u8], reply: Reply) {
    while let Some(place) = state::with(|e| e.queues.front(key).map(|(p, _)| p)) {
        finish(key, place, reply.clone());
    }
}

pub fn wrongtype() -> String {
    "WRONGTYPE Operation against a key holding the wrong kind of value".to_string()
}

/// Makes sure the wait timer fires by the earliest BLOCK deadline.
fn arm_wait_timer(ctx: Ctx) {
    let (stop, at) = state::with(|e| match (e.wait_timer, e.queues.earliest_timeout()) {
        (Some((_, armed)), Some(next)) if armed <= next => (None, None),
        (timer, next) => (timer.map(|(id, _)| id), next),
    });
    if let Some(id) = stop {
        ffi::stop_timer(ctx, id);
        state::with(|e| e.wait_timer = None);
    }
    if let Some(at) = at {
        let id = ffi::create_timer(ctx, at.saturating_sub(ffi::now_ms()), on_wait_timer);
        state::with(|e| e.wait_timer = Some((id, at)));
    }
}

/// The wait timer: every waiter whose BLOCK deadline has come leaves its queue and is answered
/// nil; the timer is armed again for the next deadline.
unsafe extern "C" fn on_wait_timer(ctx: *mut ffi::raw::RedisModuleCtx, _data: *mut c_void) {
    // SAFETY: ctx is the timer callback's context.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("wait timeout", || {
        // This timer is firing: Redis frees it after the callback, so it is never stopped.
        state::with(|e| e.wait_timer = None);
        let now = ffi::now_ms();
        while let Some(bc) = state::with(|e| {
            let (key, w) = e.queues.pop_timed_out(now)?;
            let c = &mut e.counters[w.family.index()];
            c.waiting -= 1;
            c.timeouts += 1;
            look_at_rest(e, key);
            Some(w.bc)
        }) {
            ffi::unblock_client(bc, Some(Box::new(Reply::Nil)));
        }
        arm_wait_timer(ctx);
        wake_scheduler(ctx);
    });
}

// Blocked-client callbacks. Each is panic-contained: Redis must never see an unwinding panic.

unsafe extern "C" fn on_reply(
    ctx: *mut ffi::raw::RedisModuleCtx,
    _argv: *mut *mut ffi::raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: ctx is the reply callback's context.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("blocked reply", || match ffi::blocked_reply(ctx) {
        Some(r) => ctx.reply(r),
        None => ctx.reply(&Reply::Nil),
    });
    ffi::raw::REDISMODULE_OK as c_int
}

/// Redis's own timeout of a blocked client: not used (waiters block without a Redis timeout),
/// kept so that a timeout, were one to happen, still answers nil and frees the waiter.
unsafe extern "C" fn on_timeout(
    ctx: *mut ffi::raw::RedisModuleCtx,
    _argv: *mut *mut ffi::raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: ctx is the timeout callback's context.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("blocked timeout", || {
        let bc = ffi::blocked_handle(ctx);
        let removed = state::with(|e| {
            let (_, w) = e.queues.remove_client(bc.id())?;
            let c = &mut e.counters[w.family.index()];
            c.waiting -= 1;
            c.timeouts += 1;
            Some(())
        });
        ctx.reply(&Reply::Nil);
        if removed.is_some() {
            ffi::unblock_client(bc, None);
        }
    });
    ffi::raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_disconnect(
    ctx: *mut ffi::raw::RedisModuleCtx,
    bc: *mut ffi::raw::RedisModuleBlockedClient,
) {
    // SAFETY: ctx is the disconnect callback's context; bc the handle Redis passed with it.
    let (ctx, bc) = unsafe { (Ctx::from_raw(ctx), ffi::disconnected(bc)) };
    contain("blocked disconnect", || {
        let removed = state::with(|e| {
            let (key, w) = e.queues.remove_client(bc.id())?;
            e.counters[w.family.index()].waiting -= 1;
            look_at_rest(e, key);
            Some(())
        });
        if removed.is_some() {
            ffi::unblock_client(bc, None);
            wake_scheduler(ctx);
        }
    });
}

/// A waiter left `key`'s queue without being served: if others still wait there, the key
/// gets a look at once (not here: serving writes, which belongs in the scheduler's timer).
fn look_at_rest(e: &mut state::Engine, key: state::KeyRef) {
    if e.queues.is_waiting(&key) {
        e.schedule.set_earlier(key, 0);
    }
}

fn wake_scheduler(ctx: Ctx) {
    let arm = state::with(|e| e.arm_scheduler);
    arm(ctx);
}

unsafe extern "C" fn on_free(_ctx: *mut ffi::raw::RedisModuleCtx, privdata: *mut c_void) {
    // SAFETY: privdata is null or the Box<Reply> handed to unblock_client.
    contain("blocked free", || unsafe {
        ffi::free_blocked_reply(privdata)
    });
}
