//! Fuzz targets: pure functions of arbitrary bytes that must never panic and that check the
//! cores' invariants. `scripts/fuzz` runs them coverage-guided (cargo-fuzz, crate in
//! scripts/fuzz); the unit test below runs each on deterministic pseudo-random inputs and on the
//! committed corpus seeds (scripts/fuzz/corpus/<target>/), so `scripts/test` fuzzes briefly too.
//!
//! Built only for tests and with the `fuzzing` feature (which also drops the Redis allocator).

use std::fmt::Debug;
use std::sync::Arc;

use crate::alloc::core::{Allocation, Drain};
use crate::alloc::Alloc;
use crate::engine::args::{parse_u64, Args, MAX_MS};
use crate::engine::codec;
use crate::engine::deadlines::DeadlineMap;
use crate::engine::tokens::Mint;
use crate::engine::{decide, Error, Family, Primitive};
use crate::job::core::{Lane, Pull};
use crate::job::Jobs;
use crate::resv::core::Lock;
use crate::resv::Resv;
use crate::sem::core::Acquire;
use crate::sem::Sem;
use crate::slot::core::{Get, SlotEffect};
use crate::slot::Pool;

/// A fuzz target: any bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its cargo-fuzz binary and corpus folder have.
pub const TARGETS: &[(&str, Target)] = &[
    ("args", args),
    ("deadlines", deadlines),
    ("resv", resv),
    ("sem", sem),
    ("slot", slot),
    ("alloc", alloc),
    ("job", job),
    ("decode", decode),
];

/// Reads the input left to right; zeros once it is exhausted (so every input is a valid program).
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    /// `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        u64::from(self.byte()) % n
    }
    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.byte()).min(max).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
    /// One of a few ids (so that ids collide), sometimes binary.
    fn id(&mut self) -> &'static [u8] {
        const IDS: [&[u8]; 5] = [b"a", b"b", b"c", b"\0\xff", b"worker-with-a-long-name"];
        IDS[self.below(IDS.len() as u64) as usize]
    }
    /// Time moves forward by 0..=63 ms, sometimes by a lot.
    fn tick(&mut self, now: &mut u64) {
        let b = self.byte();
        *now += if b == 255 { 1 << 30 } else { u64::from(b % 64) };
    }
    fn ttl(&mut self) -> u64 {
        match self.byte() {
            255 => MAX_MS,
            b => 1 + u64::from(b % 100),
        }
    }
}

/// (a) The argument parser: the input is an argv (items separated by 0xff) and, before a 0xfe,
/// the sequence of `Args` calls to make on it.
pub fn args(data: &[u8]) {
    let (ops, argv) = match data.iter().position(|&b| b == 0xfe) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let items: Vec<&[u8]> = argv.split(|&b| b == 0xff).take(64).collect();
    let mut a = Args::new("T.FUZZ", &items);
    let mut pos = 0;
    for &op in ops.iter().take(256) {
        assert_eq!(a.remaining(), items.len() - pos);
        let next = items.get(pos).copied();
        let consumed = next.is_some();
        let bounded = |e: &Error| match e {
            Error::Msg(m) => assert!(m.len() < 512, "an error message as long as its input"),
            Error::Arity => assert!(!consumed, "arity error with arguments left"),
            Error::WrongType => panic!("wrong type from the parser"),
        };
        match op % 8 {
            0 => assert_eq!(a.bytes().ok(), next),
            1 => match a.id("holder") {
                Ok(b) => assert!(!b.is_empty() && Some(b) == next),
                Err(e) => bounded(&e),
            },
            2 => match a.ttl() {
                Ok(ms) => {
                    assert!((1..=MAX_MS).contains(&ms));
                    assert_eq!(Some(ms), next.and_then(std_u64));
                }
                Err(e) => bounded(&e),
            },
            3 => match a.block_ms() {
                Ok(ms) => assert!(ms <= MAX_MS && Some(ms) == next.and_then(std_u64)),
                Err(e) => bounded(&e),
            },
            4 => {
                let (min, max) = (u64::from(op >> 4), u64::from(op >> 4) * 1000);
                match a.uint("count", min, max) {
                    Ok(v) => assert!((min..=max).contains(&v)),
                    Err(e) => bounded(&e),
                }
            }
            5 => match a.option(&["BLOCK", "TTL", "HOLDER", "WITHTOKEN"]) {
                Ok(Some(k)) => assert!(next.is_some_and(|n| n.eq_ignore_ascii_case(k.as_bytes()))),
                Ok(None) => assert!(next.is_none()),
                Err(e) => bounded(&e),
            },
            6 => {
                assert_eq!(a.finish().is_ok(), next.is_none());
                continue;
            }
            _ => {
                let mut slot = None;
                let first = crate::engine::args::once(&mut slot, "X", op);
                assert!(first.is_ok() && crate::engine::args::once(&mut slot, "X", op).is_err());
                continue;
            }
        }
        if consumed {
            pos += 1;
        }
    }
    for item in &items {
        assert_eq!(parse_u64(item), std_u64(item));
        assert!(crate::engine::args::show(item).len() <= 4 * 40 + 3);
    }
}

/// The model of `parse_u64`: std's parser on digits only, at most 20 of them.
fn std_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// (b) DeadlineMap against a plain Vec model.
pub fn deadlines(data: &[u8]) {
    let mut input = Input(data);
    let mut map: DeadlineMap<u8, u8> = DeadlineMap::default();
    let mut model: Vec<(u8, u64, u8)> = Vec::new();
    while !input.is_empty() {
        let (op, k, at, v) = (
            input.below(6),
            input.below(16) as u8,
            input.below(64),
            input.byte(),
        );
        match op {
            0 => {
                let old = map.insert(k, at, v);
                let want = model.iter().position(|e| e.0 == k).map(|i| model.remove(i));
                assert_eq!(old, want.map(|e| (e.1, e.2)));
                model.push((k, at, v));
            }
            1 => {
                let m = model.iter_mut().find(|e| e.0 == k);
                assert_eq!(map.set_deadline(&k, at), m.is_some());
                if let Some(e) = m {
                    e.1 = at;
                }
            }
            2 => {
                let want = model.iter().position(|e| e.0 == k).map(|i| model.remove(i));
                assert_eq!(map.remove(&k), want.map(|e| (e.1, e.2)));
            }
            3 => {
                let mut want: Vec<(u64, u8)> = model
                    .iter()
                    .filter(|e| e.1 <= at)
                    .map(|e| (e.1, e.0))
                    .collect();
                want.sort_unstable();
                let due: Vec<u8> = map.due(at).copied().collect();
                assert_eq!(due, want.iter().map(|e| e.1).collect::<Vec<_>>());
                let popped: Vec<u8> = std::iter::from_fn(|| map.pop_first_due(at)).collect();
                assert_eq!(popped, due);
                model.retain(|e| e.1 > at);
            }
            4 => {
                if let Some(v) = map.value_mut(&k) {
                    *v = v.wrapping_add(1);
                }
                if let Some(e) = model.iter_mut().find(|e| e.0 == k) {
                    e.2 = e.2.wrapping_add(1);
                }
            }
            _ => {
                let bytes = codec::encode(&map);
                assert_eq!(
                    codec::decode::<DeadlineMap<u8, u8>>(&bytes).as_ref(),
                    Some(&map)
                );
            }
        }
        assert_eq!(map.len(), model.len());
        assert_eq!(
            map.get(&k),
            model.iter().find(|e| e.0 == k).map(|e| (e.1, &e.2))
        );
        assert_eq!(map.earliest(), model.iter().map(|e| e.1).min());
        assert_eq!(map.latest(), model.iter().map(|e| e.1).max());
        let order: Vec<(u64, u8)> = map.iter().map(|(k, at, _)| (at, *k)).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}

/// What holds for every value of every family, however it was reached.
fn check<F: Primitive + PartialEq + Debug>(state: &F, now: u64) {
    // RDB: the value reads back equal.
    let bytes = codec::encode(state);
    assert_eq!(F::decode(F::ENCODING_VERSION, &bytes).as_ref(), Some(state));
    // AOF rewrite: the effects rebuild the value (the key's last token aside: families rebuild
    // it where it can exceed their leases' tokens — SEM, SLOT, JOB — but a value loaded from
    // arbitrary bytes may be inconsistent; new tokens also carry the time component).
    let mut copy = F::default();
    for e in state.rebuild() {
        copy.apply(&e).expect("a rebuild effect applies"); // ok: a fuzz target panics on a bug; never built into the module
    }
    assert_eq!(copy.is_empty(), state.is_empty());
    assert_eq!(copy.next_deadline(), state.next_deadline());
    assert_eq!(copy.expires_at(), state.expires_at());
    // Deadlines.
    if let (Some(next), Some(exp)) = (state.next_deadline(), state.expires_at()) {
        assert!(next <= exp);
    }
    let mut due = Vec::new();
    state.lapse(now, &mut due);
    assert_eq!(
        due.is_empty(),
        state.next_deadline().is_none_or(|d| d > now)
    );
    let _ = state.mem_usage();
}

/// Applies what a core decided: it must fit.
fn run<F: Primitive + Debug>(state: &mut F, effects: impl IntoIterator<Item = F::Effect>) {
    for e in effects {
        if let Err(why) = state.apply(&e) {
            panic!("a decided effect does not apply: {why}: {e:?}");
        }
    }
}

/// What the engine does before any decision on a key: lapse the leases that are due (again
/// while a family acts on a bounded slice at a time, as JOB does with many jobs due at once).
fn lapse_due<F: Primitive + Debug>(state: &mut F, now: u64) {
    loop {
        let mut out = Vec::new();
        state.lapse(now, &mut out);
        if out.is_empty() {
            break;
        }
        run(state, out);
    }
    assert!(state.next_deadline().is_none_or(|d| d > now));
}

/// A grant as the engine makes it: with a fresh token, which the key then remembers.
fn grant<F: Primitive + Debug>(
    state: &mut F,
    mint: &Mint,
    req: &F::Request,
    now: u64,
    queued: bool,
) -> bool {
    let token = mint.peek(now, state.last_token());
    let Some((effects, _)) = decide(state, req, now, queued, token) else {
        return false;
    };
    let before = state.last_token();
    run(state, effects);
    assert!(state.last_token() >= before);
    mint.observe(state.last_token());
    true
}

/// (b) RESV.
pub fn resv(data: &[u8]) {
    let mut input = Input(data);
    let (mut r, mint, mut now) = (Resv::default(), Mint::new(), 1u64);
    let mut last_grant = 0;
    while !input.is_empty() {
        input.tick(&mut now);
        lapse_due(&mut r, now);
        let holder = input.id();
        match input.below(4) {
            0 => {
                let lock = Lock {
                    holder: Arc::from(holder),
                    ttl: input.ttl(),
                };
                let queued = input.bool();
                if grant(&mut r, &mint, &lock, now, queued) {
                    let h = r.held_at(now).expect("granted and held"); // ok: a fuzz target panics on a bug; never built into the module
                    assert_eq!(&*h.holder, holder);
                    assert!(h.token >= last_grant);
                    last_grant = h.token;
                }
            }
            1 => {
                let ttl = input.ttl();
                if let Ok(e) = r.renew(holder, ttl, now) {
                    run(&mut r, [e]);
                }
            }
            2 => {
                if let Ok(e) = r.release(holder, now) {
                    run(&mut r, [e]);
                    assert!(r.is_empty());
                }
            }
            _ => {
                let token = input.below(4) + last_grant.saturating_sub(2);
                let ok = r.check(holder, token, now).is_ok();
                assert_eq!(
                    ok,
                    r.held_at(now)
                        .is_some_and(|h| &*h.holder == holder && h.token == token)
                );
            }
        }
        check(&r, now);
    }
}

/// (b) SEM: never more permits out than the capacity.
pub fn sem(data: &[u8]) {
    let mut input = Input(data);
    let capacity = 1 + input.below(8);
    let (mut s, mint, mut now) = (Sem::default(), Mint::new(), 1u64);
    while !input.is_empty() {
        input.tick(&mut now);
        lapse_due(&mut s, now);
        let holder = input.id();
        match input.below(3) {
            0 => {
                let req = Acquire {
                    holder: Arc::from(holder),
                    capacity,
                    permits: 1 + input.below(3) as u32,
                    ttl: input.ttl(),
                };
                let queued = input.bool();
                grant(&mut s, &mint, &req, now, queued);
            }
            1 => {
                let ttl = input.ttl();
                if let Some(e) = s.renew(holder, ttl, now) {
                    run(&mut s, [e]);
                }
            }
            _ => {
                if let Some(e) = s.release(holder, now) {
                    run(&mut s, [e]);
                    assert!(s.holders_at(now).all(|h| h.holder != holder));
                }
            }
        }
        let held: u64 = s.holders_at(now).map(|h| u64::from(h.permits)).sum();
        assert_eq!(s.count_at(now), held);
        assert!(held <= capacity, "{held} permits out of {capacity}");
        assert_eq!(s.holder_count_at(now), s.holders_at(now).count());
        check(&s, now);
    }
}

/// (b) SLOT: GET takes the lowest free slot, against a model of the held set.
pub fn slot(data: &[u8]) {
    let mut input = Input(data);
    let (mut p, mint, mut now) = (Pool::default(), Mint::new(), 1u64);
    let mut held = std::collections::BTreeSet::new();
    let track = |held: &mut std::collections::BTreeSet<u64>, effects: &[SlotEffect]| {
        for e in effects {
            match e {
                SlotEffect::Grant { slot, .. } => assert!(held.insert(*slot)),
                SlotEffect::Put { slot } | SlotEffect::Lapse { slot } => {
                    assert!(held.remove(slot))
                }
                _ => {}
            }
        }
    };
    while !input.is_empty() {
        input.tick(&mut now);
        let mut due = Vec::new();
        p.lapse(now, &mut due);
        track(&mut held, &due);
        run(&mut p, due);
        let holder = input.bool().then(|| input.id());
        let slot = input.below(12);
        match input.below(3) {
            0 => {
                let get = Get {
                    holder: holder.map(Into::into),
                    ttl: input.bool().then(|| input.ttl()),
                    limit: input.bool().then(|| input.below(16)),
                    withtoken: input.bool(),
                };
                let queued = input.bool();
                let token = mint.peek(now, p.last_token());
                if let Some((effects, _)) = decide(&p, &get, now, queued, token) {
                    let lowest = (0..).find(|s| !held.contains(s)).unwrap_or(0);
                    for e in &effects {
                        if let SlotEffect::Grant { slot, .. } = e {
                            assert_eq!(*slot, lowest, "not the lowest free slot");
                            assert!(*slot < get.limit.unwrap_or(u64::MAX));
                        }
                    }
                    track(&mut held, &effects);
                    run(&mut p, effects);
                    mint.observe(p.last_token());
                }
            }
            1 => {
                if let Ok(e) = p.put(slot, holder, now) {
                    track(&mut held, std::slice::from_ref(&e));
                    run(&mut p, [e]);
                }
            }
            _ => {
                let ttl = input.ttl();
                if let Ok(e) = p.renew(slot, holder, ttl, now) {
                    run(&mut p, [e]);
                }
            }
        }
        assert_eq!(p.held_at(now), held.len() as u64);
        for s in 0..16 {
            assert_eq!(p.slot_at(s, now).is_some(), held.contains(&s));
        }
        if let Some(&max) = held.last() {
            assert!(p.highest() >= max);
        }
        check(&p, now);
    }
}

/// (b) ALLOC: allocations stay on known instances; ALLOCATE is stable.
pub fn alloc(data: &[u8]) {
    let mut input = Input(data);
    let (mut a, mint, mut now) = (Alloc::default(), Mint::new(), 1u64);
    while !input.is_empty() {
        input.tick(&mut now);
        lapse_due(&mut a, now);
        let instance = input.id();
        let job = [input.byte()];
        match input.below(6) {
            0 => {
                let deadline = input.bool().then(|| now + input.ttl());
                let (_, e) = a.make_available(instance, deadline);
                run(&mut a, [e]);
                assert!(a.instances().any(|(i, up)| i == instance && up));
            }
            1 => {
                if let Some(e) = a.make_unavailable(instance) {
                    run(&mut a, [e]);
                }
            }
            2 => {
                let (dropped, e) = a.remove(instance);
                let before = a.job_count();
                run(&mut a, e);
                assert_eq!(a.job_count(), before - dropped);
                assert!(a.instances().all(|(i, _)| i != instance));
            }
            3 => {
                let only_for = input.bool().then_some(instance);
                match a.allocate(&job, only_for) {
                    Some(Allocation::New { instance, store }) => {
                        if store {
                            run(
                                &mut a,
                                [crate::alloc::core::AllocEffect::Allocate {
                                    job: Arc::from(&job[..]),
                                    instance: instance.clone(),
                                }],
                            );
                            assert_eq!(a.instance_of(&job), Some(&*instance));
                        }
                    }
                    Some(Allocation::Existing(i)) => assert_eq!(a.instance_of(&job), Some(&*i)),
                    None => assert_eq!(a.available_count(), 0),
                }
            }
            4 => {
                if let Some(e) = a.deallocate(&job) {
                    run(&mut a, [e]);
                    assert_eq!(a.instance_of(&job), None);
                }
            }
            _ => {
                let drain = Drain {
                    instance: Arc::from(instance),
                };
                grant(&mut a, &mint, &drain, now, input.bool());
            }
        }
        let instances: Vec<&[u8]> = a.instances().map(|(i, _)| i).collect();
        let mut jobs = 0;
        for i in &instances {
            jobs += a.jobs_of(i).len();
            assert_eq!(a.has_jobs(i), !a.jobs_of(i).is_empty());
        }
        assert_eq!(jobs, a.job_count());
        assert_eq!(a.instance_count(), instances.len());
        check(&a, now);
    }
}

/// (b) JOB: create (with every option), pull, renew, release, fail, retry, fulfil, queue,
/// notify, done, delete, list — with time passing (lapses, due delays, retention).
pub fn job(data: &[u8]) {
    use crate::job::core::{Created, Listing, Spec, State};
    use crate::job::record::Opts;
    let mut input = Input(data);
    let (mut j, mint, mut now) = (Jobs::default(), Mint::new(), 1u64);
    let mut ids: Vec<u64> = Vec::new();
    while !input.is_empty() {
        input.tick(&mut now);
        lapse_due(&mut j, now);
        let worker = input.id();
        let id = match ids.len() {
            0 => 1,
            n => ids[input.below(n as u64) as usize],
        };
        match input.below(12) {
            0 => {
                let id = mint.issue(now, j.last_token());
                let request = input.bytes(8);
                let flags = input.byte();
                let opt = |bit: u8| flags & (1 << bit) != 0;
                let spec = Spec {
                    priority: if opt(0) {
                        u32::from(input.byte() % 4)
                    } else {
                        0
                    },
                    delay: opt(1).then(|| input.ttl()),
                    opts: Opts {
                        max_attempts: opt(2).then(|| 1 + u32::from(input.byte() % 3)),
                        backoff: opt(3).then(|| input.ttl()),
                        keep: opt(4).then(|| input.ttl()),
                        unique: opt(5).then(|| Jobs::unique_name(input.id())),
                    },
                };
                match j.create(id, request, &spec, now) {
                    Created::New(e) => {
                        run(&mut j, [e]);
                        assert!(j.contains(id));
                        ids.push(id);
                    }
                    Created::Existing(old) => {
                        let name = spec.opts.unique.as_deref();
                        assert!(name.is_some());
                        assert_eq!(j.job(old).and_then(|x| x.unique()).map(|n| &n[..]), name);
                    }
                }
            }
            1 | 2 => {
                let lane = if input.bool() {
                    Lane::Work
                } else {
                    Lane::Notify
                };
                let pull = Pull {
                    lane,
                    worker: Arc::from(worker),
                    ttl: input.ttl(),
                };
                grant(&mut j, &mint, &pull, now, input.bool());
            }
            3 => {
                let ttl = input.ttl();
                if let Ok(e) = j.renew(id, worker, ttl, now) {
                    run(&mut j, [e]);
                }
            }
            4 => {
                if let Ok(e) = j.release(id, worker, now) {
                    run(&mut j, [e]);
                }
            }
            5 => {
                let token = input
                    .bool()
                    .then(|| j.last_token().saturating_sub(input.below(3)));
                let value = input.bytes(8);
                if let Ok(effects) = j.fulfill(id, value, token, now) {
                    run(&mut j, effects);
                    assert!(j.get(id, now).is_some_and(|v| v.value == Some(value)));
                }
            }
            6 => {
                let targets = [input.id(), input.id()];
                if input.bool() {
                    if let Ok(e) = j.queue(id, &targets) {
                        run(&mut j, [e]);
                    }
                } else if let Ok((effects, _)) = j.unqueue(id, &targets, now) {
                    run(&mut j, effects);
                }
            }
            7 => {
                let targets = [input.id()];
                if let Ok((effects, _)) = j.done(id, worker, &targets, now) {
                    run(&mut j, effects);
                }
            }
            8 => {
                let reason = input.bytes(4);
                if let Ok((effects, state)) = j.fail(id, worker, reason, now) {
                    run(&mut j, effects);
                    let v = j.get(id, now).expect("a failed attempt keeps the job"); // ok: a fuzz target panics on a bug; never built into the module
                    assert_eq!(v.state, state);
                    assert_eq!(v.job.reason(), Some(reason));
                    assert_eq!(
                        state == State::Failed,
                        v.job.max_attempts() == Some(v.job.attempts)
                    );
                }
            }
            9 => {
                if let Ok(e) = j.retry(id) {
                    run(&mut j, [e]);
                    assert_eq!(j.state_of(id), Some(State::Pending));
                }
            }
            10 => {
                let what = Listing::ALL[input.below(5) as usize].1;
                let after = input.bool().then_some(id);
                if let Ok(listed) = j.list(what, after, 1 + input.below(8) as usize) {
                    assert!(listed.len() <= 8);
                    assert!(listed.iter().all(|&x| j.contains(x) && Some(x) != after));
                }
            }
            _ => {
                let effects = j.delete(id);
                run(&mut j, effects);
                assert!(!j.contains(id));
            }
        }
        let c = j.counts(now);
        assert!(c.leased <= c.pending && c.notifying + c.notifiable <= c.fulfilled);
        assert_eq!(c.jobs(), j.job_count());
        check(&j, now);
    }
}

/// (c) RDB values and `CORRAL._APPLY` payloads from arbitrary bytes: `None`/`Err`, never a
/// panic; what decodes keeps the invariants, and so does a value after any decoded effects.
pub fn decode(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // An RDB value of any family, at any encoding version.
        0 => {
            let encver = i32::from(mode / 3 % 3);
            // Every family, without a fallback: a new one must be added here to compile.
            match Family::from_index(mode / 9 % Family::COUNT as u8) {
                Some(Family::Resv) => value::<Resv>(encver, rest),
                Some(Family::Sem) => value::<Sem>(encver, rest),
                Some(Family::Slot) => value::<Pool>(encver, rest),
                Some(Family::Alloc) => value::<Alloc>(encver, rest),
                Some(Family::Job) => value::<Jobs>(encver, rest),
                #[cfg(test)]
                Some(Family::Toy) => value::<crate::toy::Toy>(encver, rest),
                None => {}
            }
        }
        // A payload: effects applied to an empty value, or to a value decoded first (the
        // value's length is the next byte).
        _ => {
            let (state, payload) = if mode % 3 == 2 && !rest.is_empty() {
                let n = usize::from(rest[0]).min(rest.len() - 1);
                (&rest[1..1 + n], &rest[1 + n..])
            } else {
                (&[][..], rest)
            };
            let Some((family, effects)) = codec::split_effects(payload) else {
                return;
            };
            match family {
                Family::Resv => apply::<Resv>(state, effects),
                Family::Sem => apply::<Sem>(state, effects),
                Family::Slot => apply::<Pool>(state, effects),
                Family::Alloc => apply::<Alloc>(state, effects),
                Family::Job => apply::<Jobs>(state, effects),
                #[cfg(test)]
                Family::Toy => apply::<crate::toy::Toy>(state, effects),
            }
        }
    }
}

fn value<F: Primitive + PartialEq + Debug>(encver: i32, bytes: &[u8]) {
    if let Some(v) = F::decode(encver, bytes) {
        use_value(v);
    }
}

fn apply<F: Primitive + PartialEq + Debug>(state: &[u8], effects: &[u8]) {
    let mut v = if state.is_empty() {
        F::default()
    } else {
        match F::decode(F::ENCODING_VERSION, state) {
            Some(v) => v,
            None => return,
        }
    };
    let Some(effects) = codec::decode::<Vec<F::Effect>>(effects) else {
        return;
    };
    for e in &effects {
        let before = v.clone();
        if v.apply(e).is_err() {
            // A refused effect leaves the value as it was.
            assert!(v == before, "a refused effect changed the value: {e:?}");
        }
    }
    use_value(v);
}

/// Whatever was decoded must behave: checks, and the engine's calls on it at a few times.
fn use_value<F: Primitive + PartialEq + Debug>(mut v: F) {
    for now in [0, 1 << 20, u64::MAX / 2] {
        check(&v, now);
    }
    lapse_due(&mut v, u64::MAX / 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each target on the committed seeds and on deterministic pseudo-random inputs (small and
    /// mutated seeds): a short fuzz run inside `cargo test`.
    #[test]
    fn fuzz_targets_short_run() {
        const RUNS: usize = 20_000;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fuzz/corpus");
        let mut rnd = crate::engine::testing::raw(0x2545_f491_4f6c_dd1du64);
        for (name, target) in TARGETS {
            let started = std::time::Instant::now();
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir.join(name))
                .map(|d| {
                    d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                        .collect()
                })
                .unwrap_or_default();
            assert!(!seeds.is_empty(), "no corpus seeds for {name}");
            seeds.sort();
            for s in &seeds {
                target(s);
            }
            for i in 0..RUNS {
                let mut input = if i % 2 == 0 {
                    seeds[i / 2 % seeds.len()].clone()
                } else {
                    Vec::new()
                };
                // Mutate a seed (flip, insert, cut) or make up 1..256 bytes.
                if input.is_empty() {
                    let n = 1 + rnd() as usize % 256;
                    input = (0..n).map(|_| rnd() as u8).collect();
                } else {
                    for _ in 0..1 + rnd() % 4 {
                        let at = rnd() as usize % input.len().max(1);
                        match rnd() % 3 {
                            0 if at < input.len() => input[at] ^= 1 << (rnd() % 8),
                            1 => input.insert(at, rnd() as u8),
                            _ => input.truncate(at.max(1)),
                        }
                    }
                }
                if std::panic::catch_unwind(|| target(&input)).is_err() {
                    panic!("fuzz target {name} failed on input {input:02x?}");
                }
            }
            eprintln!("fuzz {name}: {RUNS} inputs in {:?}", started.elapsed());
        }
    }

    /// Writes the `decode` seeds: real values and effect batches in the crate's encoding.
    /// `cargo test --lib write_decode_seeds -- --ignored` after a format change.
    #[test]
    #[ignore]
    fn write_decode_seeds() {
        use crate::engine::codec::encode_effects;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fuzz/corpus/decode");
        let (mint, now) = (Mint::new(), 1000);
        let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
        // A value of each family, as RDB stores it (mode byte: family * 9 + encver 1 * 3).
        let mut r = Resv::default();
        let lock = Lock {
            holder: Arc::from(&b"a"[..]),
            ttl: 100,
        };
        grant(&mut r, &mint, &lock, now, false);
        seeds.push(("rdb-resv", [&[3u8][..], &codec::encode(&r)].concat()));
        let mut s = Sem::default();
        for h in [&b"a"[..], b"b"] {
            let req = Acquire {
                holder: Arc::from(h),
                capacity: 3,
                permits: 1,
                ttl: 100,
            };
            grant(&mut s, &mint, &req, now, false);
        }
        seeds.push(("rdb-sem", [&[9 + 3u8][..], &codec::encode(&s)].concat()));
        let mut p = Pool::default();
        for holder in [None, Some(&b"h"[..])] {
            let get = Get {
                holder: holder.map(Into::into),
                ttl: Some(50),
                ..Get::default()
            };
            grant(&mut p, &mint, &get, now, false);
        }
        seeds.push(("rdb-slot", [&[18 + 3u8][..], &codec::encode(&p)].concat()));
        let mut a = Alloc::default();
        let (_, e) = a.make_available(b"i1", Some(now + 100));
        run(&mut a, [e]);
        let job = crate::alloc::core::AllocEffect::Allocate {
            job: Arc::from(&b"j"[..]),
            instance: Arc::from(&b"i1"[..]),
        };
        run(&mut a, [job]);
        seeds.push(("rdb-alloc", [&[27 + 3u8][..], &codec::encode(&a)].concat()));
        let mut j = Jobs::default();
        let spec = crate::job::core::Spec {
            priority: 3,
            delay: Some(50),
            opts: crate::job::record::Opts {
                max_attempts: Some(2),
                backoff: Some(10),
                keep: Some(100),
                unique: Some(Jobs::unique_name(b"u")),
            },
        };
        for (id, spec) in [(7, Default::default()), (8, spec)] {
            if let crate::job::core::Created::New(e) = j.create(id, b"req", &spec, now) {
                run(&mut j, [e]);
            }
        }
        let pull = Pull {
            lane: Lane::Work,
            worker: Arc::from(&b"w"[..]),
            ttl: 100,
        };
        grant(&mut j, &mint, &pull, now, false);
        // JOB at version 2 (mode 36 + 2 × 3), with a delayed job with every option; and a
        // real version-1 value (mode 36 + 3), saved by the first edition.
        seeds.push(("rdb-job", [&[36 + 6u8][..], &codec::encode(&j)].concat()));
        seeds.push((
            "rdb-job-v1",
            [
                &[36 + 3u8][..],
                &include_bytes!("job/testdata/v1-store.bin")[..],
            ]
            .concat(),
        ));
        // Effect batches (mode 1: applied to an empty value).
        seeds.push((
            "apply-resv",
            [&[1u8][..], &encode_effects(Family::Resv, &r.rebuild())].concat(),
        ));
        seeds.push((
            "apply-sem",
            [&[1u8][..], &encode_effects(Family::Sem, &s.rebuild())].concat(),
        ));
        seeds.push((
            "apply-slot",
            [&[1u8][..], &encode_effects(Family::Slot, &p.rebuild())].concat(),
        ));
        seeds.push((
            "apply-alloc",
            [&[1u8][..], &encode_effects(Family::Alloc, &a.rebuild())].concat(),
        ));
        seeds.push((
            "apply-job",
            [&[1u8][..], &encode_effects(Family::Job, &j.rebuild())].concat(),
        ));
        // Mode 2: a value, then effects on it.
        let mut lapse = Vec::new();
        s.lapse(now + 1000, &mut lapse);
        let value = codec::encode(&s);
        let mut both = vec![2u8, value.len() as u8];
        both.extend_from_slice(&value);
        both.extend_from_slice(&encode_effects(Family::Sem, &lapse));
        seeds.push(("value-then-apply-sem", both));
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
