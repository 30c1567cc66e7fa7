//! One change to one key, the same way for every family:
//!
//! 1. `open` the key (WRONGTYPE if it holds something else; an empty default if absent);
//! 2. `settle` (primary only): lapse every lease whose deadline has passed and hand what that
//!    freed to waiters — so a command never sees a lease that should already have lapsed;
//! 3. the family decides effects; `apply` applies them (notifications and counters included);
//! 4. `commit`: serve waiters again, replicate the effects as one `CORRAL._APPLY`, store or
//!    delete the value, set the key's PTTL, and schedule the key's next deadline.
//!
//! The flows commands use (`read`, `write`, `acquire`) and the ones the engine uses (`check`,
//! `apply_replicated`) are all built from these steps.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::codec;
use super::codec::{EffectLog, APPLY_COMMAND};
use super::datatype;
use super::ffi::{self, CmdResult, Ctx, CtxFlags, Error, Key, RStr, Reply};
use super::primitive::{decide, Effect, Effects, Family, Primitive};
use super::queues::Place;
use super::scheduler;
use super::state::{self, key_bytes, FamilyOps, KeyBytes, KeyRef};
use super::tokens;
use super::waiters;

enum Value<F> {
    /// The key holds this value; the pointer is valid while `Txn::key` is open.
    Stored(NonNull<F>),
    /// The key is empty; stored on commit if it ends up holding something.
    Fresh(Box<F>),
}

pub struct Txn<F: Primitive> {
    ctx: Ctx,
    name: RStr,
    /// The key's db and name, as the scheduler and wait queues index it (built on first use:
    /// a release with nobody waiting never needs it).
    keyref: std::cell::OnceCell<KeyBytes>,
    key: Key,
    value: Value<F>,
    /// What this transaction changed, encoded for propagation as it happens.
    log: EffectLog,
    /// The stored value's PTTL deadline when the key was opened (to skip setting it unchanged).
    expires_before: Option<u64>,
    /// The stored value's next deadline when the key was opened: the schedule holds the key at
    /// that time or earlier, so a commit that does not move it earlier needs no schedule lookup.
    next_before: Option<u64>,
    /// True when the scheduler took the key off its schedule to look at it (`Ops::check`): the
    /// commit must schedule it again.
    unscheduled: bool,
    /// The server clock when the key was opened: `now` in ms (deadlines), `ticks` for the
    /// time component of fencing tokens (`tokens::ticks_at`, read to the microsecond) — one
    /// clock read for both.
    now: u64,
    ticks: u64,
    flags: CtxFlags,
}

impl<F: Primitive> Txn<F> {
    pub fn open(ctx: Ctx, name: RStr) -> Result<Self, Error> {
        Self::open_with(ctx, name, ctx.flags())
    }

    fn open_with(ctx: Ctx, name: RStr, flags: CtxFlags) -> Result<Self, Error> {
        let mut key = ctx.open_key(name, true);
        let ty = datatype::raw_type(F::FAMILY);
        // SAFETY: every value of this family's type is a Box<F> (datatype.rs).
        let (value, expires_before, next_before) = match unsafe { key.value_of::<F>(ty) } {
            Ok(None) => (Value::Fresh(Box::default()), None, None),
            Ok(Some(v)) => {
                let (expires, next) = (v.expires_at(), v.next_deadline());
                (Value::Stored(NonNull::from(v)), expires, next)
            }
            Err(e) => return Err(e),
        };
        let now_us = ffi::now_us();
        Ok(Self {
            ctx,
            name,
            keyref: std::cell::OnceCell::new(),
            key,
            value,
            log: EffectLog::new(F::FAMILY, state::propagates(flags)),
            expires_before,
            next_before,
            unscheduled: false,
            now: now_us / 1000,
            ticks: tokens::ticks_at(now_us),
            flags,
        })
    }

    /// Opens for a client command that changes state: only a primary decides grants.
    pub fn open_primary(ctx: Ctx, name: RStr) -> Result<Self, Error> {
        let flags = ctx.flags();
        if !flags.is_primary() {
            return Err(Error::msg(
                "READONLY corral commands that change state run on the primary",
            ));
        }
        Self::open_with(ctx, name, flags)
    }

    pub fn flags(&self) -> CtxFlags {
        self.flags
    }

    pub fn state(&self) -> &F {
        match &self.value {
            // SAFETY: the key stays open (and its value in place) for the Txn's lifetime.
            Value::Stored(p) => unsafe { p.as_ref() },
            Value::Fresh(b) => b,
        }
    }

    fn state_mut(&mut self) -> &mut F {
        match &mut self.value {
            // SAFETY: as in `state`; &mut self guarantees exclusive access.
            Value::Stored(p) => unsafe { p.as_mut() },
            Value::Fresh(b) => b,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn ctx(&self) -> Ctx {
        self.ctx
    }

    /// The key's db and name, as the scheduler and wait queues index it.
    pub fn keyref(&self) -> &[u8] {
        self.keyref
            .get_or_init(|| key_bytes(self.ctx.selected_db(), self.name.bytes()))
    }

    pub fn name(&self) -> RStr {
        self.name
    }

    /// The fencing token a grant made now would carry (its time component read to the
    /// microsecond: `tokens.rs` says why).
    pub fn token(&self) -> u64 {
        let last = self.state().last_token();
        state::with(|e| e.mint.peek(self.ticks, last))
    }

    /// Applies effects in order; each raises its notification and bumps its counter.
    pub fn apply(
        &mut self,
        effects: impl IntoIterator<Item = F::Effect>,
    ) -> Result<(), &'static str> {
        for effect in effects {
            self.state_mut().apply(&effect)?;
            let event = effect.event();
            if let Some(note) = event.notification(F::FAMILY) {
                let last = self.state().last_token();
                state::with(|e| {
                    e.counters[F::FAMILY.index()].count(event);
                    e.mint.observe(last);
                });
                self.ctx.notify(note, self.name);
            }
            self.log.record(&effect);
        }
        Ok(())
    }

    /// Lapses what is due and serves waiters. Only on a primary: replicas wait for the effects.
    pub fn settle(&mut self) {
        if !self.flags.is_primary() {
            return;
        }
        // Nothing falls due before the value's next deadline (the contract of `next_deadline`):
        // most commands find it in the future and skip the family's lapse scan.
        if self.state().next_deadline().is_some_and(|d| d <= self.now) {
            let mut lapsed = Vec::new();
            self.state().lapse(self.now, &mut lapsed);
            // Effects a family just decided always fit its state.
            let _ = self.apply(lapsed);
        }
        serve(self);
    }

    /// True when clients already wait on this key in `lane`.
    fn waiting(&self, lane: u64) -> bool {
        state::with(|e| e.queues.anyone_waiting()) && {
            let k = self.keyref();
            state::with(|e| e.queues.lane_waiting(k, lane))
        }
    }

    /// Replicates, stores, sets the PTTL, and schedules the next deadline.
    pub fn commit(mut self) {
        serve(&mut self);
        if let Some(payload) = self.log.payload() {
            self.ctx.replicate(APPLY_COMMAND, self.name, payload);
        }
        self.store();
    }

    /// As `commit`, for effects that arrived replicated: they are propagated verbatim instead.
    /// Waits that change nothing (`wait`), the only ones a replica has, are served here.
    fn commit_replicated(mut self) {
        serve(&mut self);
        ffi::replicate_verbatim(self.ctx);
        self.store();
    }

    /// Stores or deletes the value, sets the key's PTTL, and schedules the next deadline.
    fn store(self) {
        let Txn {
            ctx,
            name,
            keyref,
            mut key,
            value,
            log,
            expires_before,
            next_before,
            unscheduled,
            flags,
            ..
        } = self;
        let (empty, next, expires, last) = {
            let s: &F = match &value {
                // SAFETY: the key is still open and holds this value.
                Value::Stored(p) => unsafe { p.as_ref() },
                Value::Fresh(b) => b,
            };
            (
                s.is_empty(),
                s.next_deadline(),
                s.expires_at(),
                s.last_token(),
            )
        };
        if !log.is_empty() {
            match value {
                Value::Fresh(b) if !empty => {
                    let ty = datatype::raw_type(F::FAMILY);
                    // SAFETY: ty is this family's type, whose callbacks treat values as Box<F>.
                    unsafe { key.set_value(ty, b) };
                    key.set_expire_at(expires);
                }
                Value::Fresh(_) => {}
                Value::Stored(_) if empty => key.delete(),
                // Set only when the value's deadline moved: a key whose TTL a user changed
                // (EXPIRE/PERSIST) keeps it until a change that moves the value's own.
                Value::Stored(_) if expires != expires_before => key.set_expire_at(expires),
                Value::Stored(_) => {}
            }
        }
        // Schedule the next deadline unless an earlier look is already scheduled (that look
        // reschedules). A deleted key's entry is left to fire harmlessly: repeated
        // lock/release cycles on one key then cost one lookup, not an insert and a removal.
        // A stored key whose next deadline did not move earlier is scheduled already (at that
        // deadline or before), unless the scheduler just took it off: no lookup.
        let already = |at: u64| !unscheduled && next_before.is_some_and(|b| b <= at);
        let arm = match next.filter(|_| !empty) {
            None => {
                state::with(|e| e.mint.observe(last));
                false
            }
            Some(at) if already(at) => {
                state::with(|e| e.mint.observe(last));
                false
            }
            Some(at) => {
                let k = keyref.get_or_init(|| key_bytes(ctx.selected_db(), name.bytes()));
                state::with(|e| {
                    e.mint.observe(last);
                    match e.schedule.deadline(&k[..]) {
                        Some(old) if old <= at => false,
                        _ => {
                            e.schedule.set_earlier(KeyRef::from(&k[..]), at);
                            true
                        }
                    }
                })
            }
        };
        // Only a primary acts on deadlines (a replica's are armed when it is promoted).
        if arm && flags.is_primary() {
            scheduler::arm_on_primary(ctx);
        }
    }
}

/// What the first waiter of a lane gets.
enum Next<E> {
    Grant(Place, Effects<E>, Reply),
    /// A waiter of another family (the key changed type): it is answered WRONGTYPE.
    Mismatch(Place),
    /// The head of this lane cannot be granted: the lane waits.
    LaneWaits(u64),
}

/// Serves the key's waiters: in each lane, grants them in FIFO order while the head can be
/// granted, and stops at the first that cannot (later waiters in that lane never jump ahead
/// of it). A replica grants nothing that changes state — only the primary decides — so there
/// only `wait`s (requests whose grant has no effects) are served.
fn serve<F: Primitive>(txn: &mut Txn<F>) {
    if !state::with(|e| e.queues.anyone_waiting())
        || !state::with(|e| e.queues.is_waiting(txn.keyref()))
    {
        return;
    }
    let key = txn.keyref().to_owned();
    let primary = txn.flags.is_primary();
    let mut lane = 0;
    loop {
        let now = txn.now();
        let next = state::with(|e| {
            let (place, w) = e.queues.head(&key, lane)?;
            let Some(req) = w.request.downcast_ref::<F::Request>() else {
                return Some(Next::Mismatch(place));
            };
            let token = e.mint.peek(txn.ticks, txn.state().last_token());
            // The head of its lane: nobody is ahead of it.
            Some(match decide(txn.state(), req, now, false, token) {
                Some((effects, _)) if !primary && !effects.is_empty() => {
                    Next::LaneWaits(place.lane)
                }
                Some((effects, reply)) => Next::Grant(place, effects, reply),
                None => Next::LaneWaits(place.lane),
            })
        });
        match next {
            None => return,
            Some(Next::LaneWaits(l)) => match l.checked_add(1) {
                Some(l) => lane = l,
                None => return,
            },
            Some(Next::Mismatch(place)) => {
                waiters::finish(&key, place, Reply::Error(waiters::wrongtype()))
            }
            Some(Next::Grant(place, effects, reply)) => {
                if let Err(e) = txn.apply(effects) {
                    // Cannot happen for effects a family just decided; never loop forever.
                    waiters::finish(&key, place, Reply::Error(format!("ERR {e:?}")));
                    return;
                }
                waiters::finish(&key, place, reply);
            }
        }
    }
}

/// Reads a key without changing it. Families interpret deadlines ≤ `now` as lapsed.
pub fn read<F: Primitive, R>(
    ctx: Ctx,
    name: RStr,
    f: impl FnOnce(Option<&F>, u64) -> R,
) -> Result<R, Error> {
    let mut key = ctx.open_key(name, false);
    let ty = datatype::raw_type(F::FAMILY);
    let now = ffi::now_ms();
    // SAFETY: every value of this family's type is a Box<F>.
    unsafe { key.value_of::<F>(ty) }.map(|v| f(v.map(|v| &*v), now))
}

/// Number of clients waiting on a key.
pub fn waiters(ctx: Ctx, name: RStr) -> usize {
    let k = key_bytes(ctx.selected_db(), name.bytes());
    state::with(|e| e.queues.len(&k))
}

/// A change that never waits: the family decides effects and a reply (or an error).
pub fn write<F: Primitive, E: IntoIterator<Item = F::Effect>>(
    ctx: Ctx,
    name: RStr,
    decide: impl FnOnce(&F, u64, u64) -> Result<(E, Reply), Error>,
) -> CmdResult {
    let mut txn = Txn::<F>::open_primary(ctx, name)?;
    txn.settle();
    let token = txn.token();
    let decided = decide(txn.state(), txn.now(), token);
    let result = match decided {
        Ok((effects, reply)) => txn.apply(effects).map(|_| reply).map_err(internal),
        Err(e) => Err(e),
    };
    txn.commit();
    result
}

/// A grant that may wait: granted now if the family allows it (and nobody is ahead in line),
/// else the client joins the key's FIFO queue for `block` ms (0 = forever), or gets nil.
pub fn acquire<F: Primitive>(
    ctx: Ctx,
    name: RStr,
    request: F::Request,
    block: Option<u64>,
) -> CmdResult {
    let mut txn = Txn::<F>::open_primary(ctx, name)?;
    txn.settle();
    let queued = txn.waiting(F::lane(&request));
    let token = txn.token();
    if let Some((effects, reply)) = decide(txn.state(), &request, txn.now(), queued, token) {
        let applied = txn.apply(effects);
        txn.commit();
        return applied.map(|_| reply).map_err(internal);
    }
    let keyref = KeyBytes::from_slice(txn.keyref());
    let flags = txn.flags();
    let absent = txn.state().is_empty();
    txn.commit();
    match block {
        Some(ms) if flags.can_block() => {
            let parked = waiters::park::<F>(ctx, &keyref, request, ms);
            if absent && flags.is_cluster() {
                scheduler::recheck_later(ctx, KeyRef::from(&keyref[..]));
            }
            Ok(parked)
        }
        _ => Ok(Reply::Nil),
    }
}

/// A wait that changes nothing (`ALLOC.DRAIN`): answered at once when the family grants
/// `request` with no effects (behind anyone already waiting in its lane), else the client waits
/// in the key's FIFO queue for `block` ms (0 = forever), or gets nil. Unlike `acquire` it runs
/// on replicas too, where the changes replicated from the primary serve it.
pub fn wait<F: Primitive>(
    ctx: Ctx,
    name: RStr,
    request: F::Request,
    block: Option<u64>,
) -> CmdResult {
    let flags = ctx.flags();
    let k = key_bytes(ctx.selected_db(), name.bytes());
    let queued = state::with(|e| e.queues.lane_waiting(&k, F::lane(&request)));
    let (decided, absent) = read::<F, _>(ctx, name, |s, now| match s {
        Some(s) => (decide(s, &request, now, queued, 0), false),
        None => (decide(&F::default(), &request, now, queued, 0), true),
    })?;
    match decided {
        Some((effects, reply)) if effects.is_empty() => Ok(reply),
        Some(_) => Err(internal("a wait decided effects")),
        None => match block {
            Some(ms) if flags.can_block() => {
                let parked = waiters::park::<F>(ctx, &k, request, ms);
                if absent && flags.is_cluster() {
                    scheduler::recheck_later(ctx, KeyRef::from(&k[..]));
                }
                Ok(parked)
            }
            _ => Ok(Reply::Nil),
        },
    }
}

/// A change, then a grant in the same transaction (one round trip, one replicated batch):
/// `decide` as for `write`; once its effects are applied (and waiters served), `next` is
/// decided as `acquire` would without blocking — behind anyone already waiting in its lane —
/// and its answer (a grant's reply, or nil) is the command's. An error from `decide` changes
/// nothing and is the answer. E.g. `JOB.FULFILL … NEXT worker ms`: fulfil, then pull.
pub fn write_then_acquire<F: Primitive, E: IntoIterator<Item = F::Effect>>(
    ctx: Ctx,
    name: RStr,
    decide_change: impl FnOnce(&F, u64, u64) -> Result<(E, Reply), Error>,
    next: F::Request,
) -> CmdResult {
    let mut txn = Txn::<F>::open_primary(ctx, name)?;
    txn.settle();
    let token = txn.token();
    let result = match decide_change(txn.state(), txn.now(), token) {
        Ok((effects, _)) => txn.apply(effects).map_err(internal),
        Err(e) => Err(e),
    };
    let result = result.and_then(|()| {
        serve(&mut txn);
        let queued = txn.waiting(F::lane(&next));
        let token = txn.token();
        match decide(txn.state(), &next, txn.now(), queued, token) {
            Some((effects, reply)) => txn.apply(effects).map(|_| reply).map_err(internal),
            None => Ok(Reply::Nil),
        }
    });
    txn.commit();
    result
}

fn internal(e: &'static str) -> Error {
    Error::msg(format!("ERR corral internal error: {e}"))
}

/// The engine's side of a family: what the scheduler, keyspace events and `CORRAL._APPLY`
/// call without knowing the family's Rust type.
pub struct Ops<F>(pub PhantomData<F>);

impl<F: Primitive> FamilyOps for Ops<F> {
    fn family(&self) -> Family {
        F::FAMILY
    }

    fn raw_type(&self) -> *mut ffi::raw::RedisModuleType {
        datatype::raw_type(F::FAMILY)
    }

    fn check(&self, ctx: Ctx, name: RStr) {
        match Txn::<F>::open(ctx, name) {
            Ok(mut txn) => {
                txn.unscheduled = true;
                txn.settle();
                txn.commit();
            }
            Err(_) => {
                let k = key_bytes(ctx.selected_db(), name.bytes());
                waiters::fail_all(&k, Reply::Error(waiters::wrongtype()));
            }
        }
    }

    fn apply_replicated(&self, ctx: Ctx, name: RStr, effects: &[u8]) -> CmdResult {
        let effects: Vec<F::Effect> = codec::decode(effects)
            .ok_or_else(|| Error::msg("ERR CORRAL._APPLY: malformed effects"))?;
        let mut txn = Txn::<F>::open(ctx, name)?;
        let applied = txn.apply(effects);
        txn.commit_replicated();
        applied
            .map(|_| Reply::Ok)
            .map_err(|e| Error::msg(format!("ERR CORRAL._APPLY: {e}")))
    }
}
