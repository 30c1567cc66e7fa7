//! FIFO wait queues of blocked clients, one per key, kept by the module (Redis 7.0 does not wake
//! blocked-on-keys clients on deletion, and corral hands resources over directly instead).
//!
//! A key's queue is split into *lanes* (`Primitive::lane`): requests that compete for the same
//! thing share a lane and are served strictly in arrival order; requests in different lanes do
//! not hold each other up (a job store's PULL and PULLNOTIFY waiters, DRAIN waiters for
//! different instances). Most families use one lane.
//!
//! A waiter leaves its queue exactly once, by one of: being served (`serve`), its BLOCK timeout,
//! its client disconnecting, or its key becoming unusable (`fail_all`). Each path removes it
//! from the queue first and then calls `RedisModule_UnblockClient`, which Redis requires for
//! every blocked client.
//!
//! BLOCK timeouts are corral's own (a module timer per waiter, answering nil through the same
//! unblock path), not Redis's: Redis 7.0 drops the reply of a module-blocked client that was
//! unblocked (granted) and then timed out in the same event-loop iteration before its reply was
//! sent — the client would hang forever while holding what it was granted. With Redis never
//! timing our clients out, every waiter is answered by exactly the path that removed it.

use std::any::Any;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};

use ahash::AHashMap;

use super::contain;
use super::ffi::{self, BlockedClient, Ctx, Reply};
use super::primitive::{decide, Effects, Family, Primitive};
use super::state::{self, KeyRef};
use super::txn::Txn;

pub struct Waiter {
    bc: BlockedClient,
    family: Family,
    request: Box<dyn Any>,
    /// Its BLOCK timeout's timer, stopped when it leaves the queue any other way.
    timer: Option<u64>,
}

/// A waiter's place: (lane, arrival number).
type Slot = (u64, u64);

#[derive(Default)]
pub struct Queues {
    /// Per key, waiters by (lane, arrival number): FIFO within each lane.
    by_key: AHashMap<KeyRef, BTreeMap<Slot, Waiter>>,
    /// Where each blocked client waits, for timeouts and disconnects.
    by_client: AHashMap<usize, (KeyRef, Slot)>,
    /// Where each waiter with a BLOCK timeout waits (key, lane), by arrival number (its timer's
    /// data).
    by_arrival: AHashMap<u64, (KeyRef, u64)>,
    next_id: u64,
}

impl Queues {
    /// True when any client waits on any key (a check that needs no key name).
    pub fn anyone_waiting(&self) -> bool {
        !self.by_client.is_empty()
    }

    pub fn is_waiting(&self, key: &[u8]) -> bool {
        !self.by_client.is_empty() && self.by_key.contains_key(key)
    }

    /// True when someone waits on `key` in `lane`.
    pub fn lane_waiting(&self, key: &[u8], lane: u64) -> bool {
        self.by_key
            .get(key)
            .is_some_and(|q| q.range((lane, 0)..=(lane, u64::MAX)).next().is_some())
    }

    pub fn len(&self, key: &[u8]) -> usize {
        self.by_key.get(key).map_or(0, BTreeMap::len)
    }

    pub fn head_family(&self, key: &[u8]) -> Option<Family> {
        let q = self.by_key.get(key)?;
        q.values().next().map(|w| w.family)
    }

    /// Keys (in `db`, or all dbs when `db` is None) that have waiters.
    pub fn keys_in(&self, db: Option<i32>) -> Vec<KeyRef> {
        self.by_key
            .keys()
            .filter(|k| db.is_none() || state::split_key(k).map(|(d, _)| d) == db)
            .cloned()
            .collect()
    }

    /// The arrival number the next `push` gives.
    fn next_arrival(&self) -> u64 {
        self.next_id
    }

    /// Queues `w` under the next arrival number.
    fn push(&mut self, key: &[u8], lane: u64, w: Waiter) {
        let id = (lane, self.next_id);
        self.next_id += 1;
        let k: KeyRef = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => KeyRef::from(key),
        };
        self.by_client.insert(w.bc.id(), (k.clone(), id));
        if w.timer.is_some() {
            self.by_arrival.insert(id.1, (k.clone(), lane));
        }
        self.by_key.entry(k).or_default().insert(id, w);
    }

    fn remove(&mut self, key: &[u8], id: Slot) -> Option<Waiter> {
        let q = self.by_key.get_mut(key)?;
        let w = q.remove(&id)?;
        if q.is_empty() {
            self.by_key.remove(key);
        }
        self.by_client.remove(&(w.bc.id()));
        self.by_arrival.remove(&id.1);
        Some(w)
    }

    fn remove_client(&mut self, bc: BlockedClient) -> Option<Waiter> {
        let (k, id) = self.by_client.get(&bc.id())?.clone();
        self.remove(&k, id)
    }
}

/// Blocks the calling client in the key's queue until `serve` grants `request`, the timeout
/// (ms, 0 = forever) passes, or the client disconnects.
pub fn park<F: Primitive>(ctx: Ctx, key: &[u8], request: F::Request, timeout_ms: u64) -> Reply {
    // No Redis timeout (see the module docs): our own timer answers nil at the timeout.
    let Some(bc) = ffi::block_client(ctx, on_reply, on_timeout, on_free, on_disconnect, 0) else {
        return Reply::Nil;
    };
    let lane = F::lane(&request);
    let timer = (timeout_ms > 0).then(|| {
        let arrival = state::with(|e| e.queues.next_arrival());
        ffi::create_timer_with(ctx, timeout_ms, on_wait_timeout, arrival as usize)
    });
    state::with(|e| {
        let waiter = Waiter {
            bc,
            family: F::FAMILY,
            request: Box::new(request),
            timer,
        };
        e.queues.push(key, lane, waiter);
        let c = &mut e.counters[F::FAMILY.index()];
        c.waits += 1;
        c.waiting += 1;
    });
    Reply::Blocked
}

enum Next<E> {
    Grant(Slot, Effects<E>, Reply),
    Mismatch(Slot),
    /// The head of this lane cannot be granted: the lane waits.
    LaneWaits(u64),
}

/// In each lane, grants waiters in FIFO order while the head can be granted, and stops at the
/// first that cannot (later waiters in that lane never jump ahead of it).
pub fn serve<F: Primitive>(txn: &mut Txn<F>) {
    if !state::with(|e| e.queues.anyone_waiting())
        || !state::with(|e| e.queues.is_waiting(txn.keyref()))
    {
        return;
    }
    let key = txn.keyref().to_owned();
    let primary = txn.flags().is_primary();
    let mut lane = 0;
    loop {
        let now = txn.now();
        let next = state::with(|e| {
            let q = e.queues.by_key.get(&key[..])?;
            let (&id, w) = q.range((lane, 0)..).next()?;
            let Some(req) = w.request.downcast_ref::<F::Request>() else {
                return Some(Next::Mismatch(id));
            };
            let token = e.mint.peek(now, txn.state().last_token());
            // The head of its lane: nobody is ahead of it. A replica grants nothing that
            // changes state (only the primary decides): only `txn::wait`s are served there.
            Some(match decide(txn.state(), req, now, false, token) {
                Some((effects, _)) if !primary && !effects.is_empty() => Next::LaneWaits(id.0),
                Some((effects, reply)) => Next::Grant(id, effects, reply),
                None => Next::LaneWaits(id.0),
            })
        });
        match next {
            None => return,
            Some(Next::LaneWaits(l)) => match l.checked_add(1) {
                Some(l) => lane = l,
                None => return,
            },
            Some(Next::Mismatch(id)) => finish(txn.ctx(), &key, id, Reply::Error(wrongtype())),
            Some(Next::Grant(id, effects, reply)) => {
                if let Err(e) = txn.apply(effects) {
                    // Cannot happen for effects a family just decided; never loop forever.
                    finish(txn.ctx(), &key, id, Reply::Error(format!("ERR {e:?}")));
                    return;
                }
                finish(txn.ctx(), &key, id, reply);
            }
        }
    }
}

/// Answers every waiter of `key` with `reply` (e.g. the key now holds another type).
pub fn fail_all(ctx: Ctx, key: &[u8], reply: Reply) {
    while let Some(id) = state::with(|e| {
        e.queues
            .by_key
            .get(key)
            .and_then(|q| q.keys().next().copied())
    }) {
        finish(ctx, key, id, reply.clone());
    }
}

pub fn wrongtype() -> String {
    "WRONGTYPE Operation against a key holding the wrong kind of value".to_string()
}

/// Removes a waiter and answers it.
fn finish(ctx: Ctx, key: &[u8], id: Slot, reply: Reply) {
    let removed = state::with(|e| {
        let w = e.queues.remove(key, id)?;
        e.counters[w.family.index()].waiting -= 1;
        Some((w.bc, w.timer))
    });
    if let Some((bc, timer)) = removed {
        stop_wait_timer(ctx, timer);
        ffi::unblock_client(bc, Some(Box::new(reply)));
    }
}

/// Stops the timeout timer of a waiter that left its queue some other way, so that a waiter
/// granted long before its BLOCK timeout leaves nothing behind in Redis. (Never called for the
/// timer that is firing: Redis frees that one itself after the callback.)
fn stop_wait_timer(ctx: Ctx, timer: Option<u64>) {
    if let Some(id) = timer {
        ffi::stop_timer(ctx, id);
    }
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

/// A waiter's BLOCK timeout (`data` is its arrival number): if it still waits, it leaves its
/// queue and is answered nil. A waiter that was served or left before is not there: no-op.
unsafe extern "C" fn on_wait_timeout(_ctx: *mut ffi::raw::RedisModuleCtx, data: *mut c_void) {
    let arrival = data as usize as u64;
    contain("wait timeout", || {
        let removed = state::with(|e| {
            let (k, lane) = e.queues.by_arrival.get(&arrival)?.clone();
            // Its timer is the one firing: Redis frees it after this callback.
            let w = e.queues.remove(&k, (lane, arrival))?;
            let c = &mut e.counters[w.family.index()];
            c.waiting -= 1;
            c.timeouts += 1;
            Some(w.bc)
        });
        if let Some(bc) = removed {
            ffi::unblock_client(bc, Some(Box::new(Reply::Nil)));
        }
    });
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
            let w = e.queues.remove_client(bc)?;
            let c = &mut e.counters[w.family.index()];
            c.waiting -= 1;
            c.timeouts += 1;
            Some(w.timer)
        });
        ctx.reply(&Reply::Nil);
        if let Some(timer) = removed {
            stop_wait_timer(ctx, timer);
            ffi::unblock_client(bc, None);
        }
    });
    ffi::raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_disconnect(
    ctx: *mut ffi::raw::RedisModuleCtx,
    bc: *mut ffi::raw::RedisModuleBlockedClient,
) {
    // SAFETY: the handle Redis passed to this disconnect callback.
    let bc = unsafe { ffi::disconnected(bc) };
    // SAFETY: ctx is the disconnect callback's context (Redis creates it for this module).
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("blocked disconnect", || {
        let removed = state::with(|e| {
            let w = e.queues.remove_client(bc)?;
            e.counters[w.family.index()].waiting -= 1;
            Some(w.timer)
        });
        if let Some(timer) = removed {
            stop_wait_timer(ctx, timer);
            ffi::unblock_client(bc, None);
        }
    });
}

unsafe extern "C" fn on_free(_ctx: *mut ffi::raw::RedisModuleCtx, privdata: *mut c_void) {
    // SAFETY: privdata is null or the Box<Reply> handed to unblock_client.
    contain("blocked free", || unsafe {
        ffi::free_blocked_reply(privdata)
    });
}
