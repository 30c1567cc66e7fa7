//! SLOT, the pure core: a pool of integer slots where every GET takes the lowest free one
//! (callosum-server-slots), optionally leased (a TTL renewed by a heartbeat), named by a holder,
//! bounded by a LIMIT. No Redis here — the engine opens keys, schedules deadlines, queues
//! waiters, replicates.
//!
//! Cost model: the held set is a hierarchical bitmap (one bit per slot). Only slots taken with a
//! HOLDER or a TTL carry a record (holder, token, deadline); an anonymous unleased slot is just
//! its bit, so its token is returned by the GET that issued it but not kept.

use std::collections::BTreeMap;

use ahash::AHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::bitmap::SlotBits;
use crate::engine::deadlines::{sampled, DeadlineMap, MEM_SAMPLE};
use smallvec::smallvec;

use crate::engine::{Effect, Effects, Event, Family, Primitive, Reply};

/// Slots are `0 ≤ slot < MAX_SLOTS` (2^40): keeps every slot, LIMIT and bitmap bounded.
pub const MAX_SLOTS: u64 = 1 << 40;

/// A leased slot's record (its deadline is the DeadlineMap's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: Option<Box<[u8]>>,
    pub token: u64,
}

/// An unleased slot taken with a HOLDER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub holder: Box<[u8]>,
    pub token: u64,
}

/// What a SLOT key stores (RDB, digest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slots {
    /// Every held slot.
    bits: SlotBits,
    /// Held slots with a TTL, by deadline.
    leases: DeadlineMap<u64, Lease>,
    /// Held slots without a TTL but with a HOLDER.
    owned: BTreeMap<u64, Owned>,
    /// The highest slot ever issued while the key existed.
    highest: u64,
    /// The highest fencing token ever issued for this key.
    last_token: u64,
}

/// What one SLOT key holds. A key exists only while at least one slot is held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    s: Slots,
    /// Holder → its slot (a holder holds at most one slot per pool). Derived from the records,
    /// rebuilt on load, never stored.
    by_holder: AHashMap<Box<[u8]>, u64>,
}

/// One held slot as seen by SLOT.HOLDER. `token` is None for an anonymous unleased slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView<'a> {
    pub holder: Option<&'a [u8]>,
    pub deadline: Option<u64>,
    pub token: Option<u64>,
}

/// A slot with its record, as an AOF rewrite restores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub slot: u64,
    pub holder: Option<Box<[u8]>>,
    pub deadline: Option<u64>,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotEffect {
    Grant {
        slot: u64,
        holder: Option<Box<[u8]>>,
        /// None: the slot never lapses.
        deadline: Option<u64>,
        token: u64,
    },
    /// The slot's lease moves to `deadline` (RENEW, or a holder's GET again; None = unleased).
    Renew {
        slot: u64,
        deadline: Option<u64>,
    },
    Put {
        slot: u64,
    },
    Lapse {
        slot: u64,
    },
    /// Replaces the whole value (AOF rewrite): held slots as bitmap words, plus the records.
    Restore {
        words: Vec<u64>,
        records: Vec<Record>,
        highest: u64,
        last_token: u64,
    },
}

impl Effect for SlotEffect {
    fn event(&self) -> Event {
        match self {
            SlotEffect::Grant { .. } => Event::Grant,
            SlotEffect::Renew { .. } => Event::Renew,
            SlotEffect::Put { .. } => Event::Release,
            SlotEffect::Lapse { .. } => Event::Lapse,
            SlotEffect::Restore { .. } => Event::Other,
        }
    }
}

/// A GET that may wait in line.
#[derive(Debug, Clone, Default)]
pub struct Get {
    pub holder: Option<Box<[u8]>>,
    pub ttl: Option<u64>,
    /// Only slots `< limit` exist for this GET.
    pub limit: Option<u64>,
    pub withtoken: bool,
}

/// Why a PUT or RENEW was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Nobody holds the slot (never taken, put back, or lapsed).
    Free,
    /// Held by this holder, and the caller is not it (gave another HOLDER or none).
    HeldBy(Box<[u8]>),
    /// Held without a HOLDER, and the caller gave one.
    Anonymous,
    /// RENEW of a slot taken without TTL: there is no lease to extend.
    NoLease,
}

impl Pool {
    /// A held slot regardless of time (the engine lapses due leases before any change).
    fn view(&self, slot: u64) -> Option<SlotView<'_>> {
        if !self.s.bits.contains(slot) {
            return None;
        }
        if let Some((at, l)) = self.s.leases.get(&slot) {
            return Some(SlotView {
                holder: l.holder.as_deref(),
                deadline: Some(at),
                token: Some(l.token),
            });
        }
        Some(match self.s.owned.get(&slot) {
            Some(o) => SlotView {
                holder: Some(&o.holder),
                deadline: None,
                token: Some(o.token),
            },
            None => SlotView {
                holder: None,
                deadline: None,
                token: None,
            },
        })
    }

    /// The slot as seen at `now`: None when free, or leased with a deadline that has passed
    /// (not yet lapsed by the engine, e.g. on a replica).
    pub fn slot_at(&self, slot: u64, now: u64) -> Option<SlotView<'_>> {
        self.view(slot)
            .filter(|v| v.deadline.is_none_or(|at| at > now))
    }

    /// Held slots at `now`.
    pub fn held_at(&self, now: u64) -> u64 {
        self.s.bits.count() - self.s.leases.due(now).count() as u64
    }

    /// Leased slots at `now`.
    pub fn leased_at(&self, now: u64) -> u64 {
        (self.s.leases.len() - self.s.leases.due(now).count()) as u64
    }

    /// The highest slot ever issued while the key existed.
    pub fn highest(&self) -> u64 {
        self.s.highest
    }

    /// The slot, if `holder` (None = no HOLDER given) may act on it at `now`.
    fn held_by(&self, slot: u64, holder: Option<&[u8]>, now: u64) -> Result<SlotView<'_>, Refusal> {
        let v = self.slot_at(slot, now).ok_or(Refusal::Free)?;
        match (v.holder, holder) {
            (h, given) if h == given => Ok(v),
            (Some(h), _) => Err(Refusal::HeldBy(h.into())),
            (None, _) => Err(Refusal::Anonymous),
        }
    }

    pub fn put(&self, slot: u64, holder: Option<&[u8]>, now: u64) -> Result<SlotEffect, Refusal> {
        self.held_by(slot, holder, now)?;
        Ok(SlotEffect::Put { slot })
    }

    pub fn renew(
        &self,
        slot: u64,
        holder: Option<&[u8]>,
        ttl: u64,
        now: u64,
    ) -> Result<SlotEffect, Refusal> {
        let v = self.held_by(slot, holder, now)?;
        if v.deadline.is_none() {
            return Err(Refusal::NoLease);
        }
        Ok(SlotEffect::Renew {
            slot,
            deadline: Some(now + ttl),
        })
    }

    /// Builds a value from stored parts, checking that they fit together (a corrupt RDB or a
    /// forged `CORRAL._APPLY` must not yield a value whose invariants do not hold).
    fn from_slots(s: Slots) -> Result<Self, &'static str> {
        let mut by_holder = AHashMap::new();
        let leased = s
            .leases
            .iter()
            .map(|(slot, _, l)| (*slot, l.holder.as_ref()));
        let owned = s.owned.iter().map(|(slot, o)| (*slot, Some(&o.holder)));
        for (slot, holder) in leased.chain(owned) {
            if !s.bits.contains(slot) {
                return Err("a record for a slot that is not held");
            }
            if let Some(h) = holder {
                if by_holder.insert(h.clone(), slot).is_some() {
                    return Err("a holder with two slots");
                }
            }
        }
        if s.owned.keys().any(|slot| s.leases.contains(slot)) {
            return Err("a slot both leased and unleased");
        }
        Ok(Self { s, by_holder })
    }

    fn restore(
        words: &[u64],
        records: &[Record],
        highest: u64,
        last_token: u64,
    ) -> Result<Self, &'static str> {
        let mut s = Slots {
            bits: SlotBits::from_words(words.to_vec()),
            highest,
            last_token,
            ..Slots::default()
        };
        for r in records {
            let duplicate = match (&r.holder, r.deadline) {
                (holder, Some(at)) => s
                    .leases
                    .insert(
                        r.slot,
                        at,
                        Lease {
                            holder: holder.clone(),
                            token: r.token,
                        },
                    )
                    .is_some(),
                (Some(holder), None) => s
                    .owned
                    .insert(
                        r.slot,
                        Owned {
                            holder: holder.clone(),
                            token: r.token,
                        },
                    )
                    .is_some(),
                (None, None) => return Err("a record without holder or deadline"),
            };
            if duplicate {
                return Err("two records for one slot");
            }
        }
        Self::from_slots(s)
    }

    /// Removes a held slot and its record.
    fn release(&mut self, slot: u64) -> Result<(), &'static str> {
        if !self.s.bits.remove(slot) {
            return Err("release of a free slot");
        }
        let holder = match self.s.leases.remove(&slot) {
            Some((_, l)) => l.holder,
            None => self.s.owned.remove(&slot).map(|o| o.holder),
        };
        if let Some(h) = holder {
            self.by_holder.remove(&h);
        }
        Ok(())
    }
}

fn granted(slot: u64, token: u64, withtoken: bool) -> Reply {
    if withtoken {
        Reply::Array(vec![Reply::Int(slot as i64), Reply::Int(token as i64)])
    } else {
        Reply::Int(slot as i64)
    }
}

impl Primitive for Pool {
    const FAMILY: Family = Family::Slot;
    const TYPE_NAME: &'static str = "CorralSlt";
    const ENCODING_VERSION: i32 = 1;

    type Effect = SlotEffect;
    type Request = Get;

    fn apply(&mut self, effect: &SlotEffect) -> Result<(), &'static str> {
        match effect {
            SlotEffect::Grant {
                slot,
                holder,
                deadline,
                token,
            } => {
                let slot = *slot;
                // The primary grants the lowest free slot, which is never beyond the bitmap's
                // end: refusing more keeps a forged effect from allocating a huge bitmap.
                if slot >= MAX_SLOTS || slot > self.s.bits.end() {
                    return Err("grant beyond the end of the pool");
                }
                if self.s.bits.contains(slot) {
                    return Err("grant of a held slot");
                }
                if holder
                    .as_ref()
                    .is_some_and(|h| self.by_holder.contains_key(h))
                {
                    return Err("grant to a holder that holds a slot");
                }
                self.s.bits.insert(slot);
                match (holder, deadline) {
                    (holder, Some(at)) => {
                        self.s.leases.insert(
                            slot,
                            *at,
                            Lease {
                                holder: holder.clone(),
                                token: *token,
                            },
                        );
                    }
                    (Some(holder), None) => {
                        self.s.owned.insert(
                            slot,
                            Owned {
                                holder: holder.clone(),
                                token: *token,
                            },
                        );
                    }
                    (None, None) => {}
                }
                if let Some(h) = holder {
                    self.by_holder.insert(h.clone(), slot);
                }
                self.s.highest = self.s.highest.max(slot);
                self.s.last_token = self.s.last_token.max(*token);
            }
            SlotEffect::Renew { slot, deadline } => {
                let slot = *slot;
                let leased = self.s.leases.get(&slot).map(|(_, l)| l.holder.is_some());
                match (deadline, leased) {
                    (Some(at), Some(_)) => {
                        self.s.leases.set_deadline(&slot, *at);
                    }
                    (Some(at), None) => {
                        let o = self
                            .s
                            .owned
                            .remove(&slot)
                            .ok_or("renew of a slot without lease or holder")?;
                        let lease = Lease {
                            holder: Some(o.holder),
                            token: o.token,
                        };
                        self.s.leases.insert(slot, *at, lease);
                    }
                    (None, Some(true)) => {
                        if let Some((_, l)) = self.s.leases.remove(&slot) {
                            if let Some(holder) = l.holder {
                                let token = l.token;
                                self.s.owned.insert(slot, Owned { holder, token });
                            }
                        }
                    }
                    (None, Some(false)) => return Err("unleasing a slot without holder"),
                    (None, None) if self.s.owned.contains_key(&slot) => {}
                    (None, None) => return Err("renew of a slot without lease or holder"),
                }
            }
            SlotEffect::Put { slot } => self.release(*slot)?,
            SlotEffect::Lapse { slot } => {
                if !self.s.leases.contains(slot) {
                    return Err("lapse of a slot without lease");
                }
                self.release(*slot)?;
            }
            SlotEffect::Restore {
                words,
                records,
                highest,
                last_token,
            } => {
                let last = self.s.last_token;
                *self = Self::restore(words, records, *highest, *last_token)?;
                self.s.last_token = self.s.last_token.max(last);
            }
        }
        Ok(())
    }

    /// A holder asking again gets its slot and token back, and the slot's lease becomes what
    /// this GET asks for (`TTL ms` from now, or none): a `renew`, like every family's re-grant.
    fn regrant(&self, get: &Get, now: u64) -> Option<(Effects<SlotEffect>, Reply)> {
        let &slot = self.by_holder.get(get.holder.as_ref()?)?;
        let v = self.view(slot)?;
        let renew = SlotEffect::Renew {
            slot,
            deadline: get.ttl.map(|ttl| now + ttl),
        };
        Some((smallvec![renew], granted(slot, v.token?, get.withtoken)))
    }

    fn grant(&self, get: &Get, now: u64, token: u64) -> Option<(Effects<SlotEffect>, Reply)> {
        let slot = self.s.bits.lowest_free();
        if slot >= get.limit.unwrap_or(MAX_SLOTS).min(MAX_SLOTS) {
            return None;
        }
        let grant = SlotEffect::Grant {
            slot,
            holder: get.holder.clone(),
            deadline: get.ttl.map(|ttl| now + ttl),
            token,
        };
        Some((smallvec![grant], granted(slot, token, get.withtoken)))
    }

    fn lapse(&self, now: u64, out: &mut Vec<SlotEffect>) {
        out.extend(
            self.s
                .leases
                .due(now)
                .map(|&slot| SlotEffect::Lapse { slot }),
        );
    }

    fn next_deadline(&self) -> Option<u64> {
        self.s.leases.earliest()
    }

    fn expires_at(&self) -> Option<u64> {
        // An unleased slot never lapses, so neither does the key.
        if self.s.bits.count() > self.s.leases.len() as u64 {
            None
        } else {
            self.s.leases.latest()
        }
    }

    fn is_empty(&self) -> bool {
        self.s.bits.count() == 0
    }

    fn last_token(&self) -> u64 {
        self.s.last_token
    }

    fn rebuild(&self) -> Vec<SlotEffect> {
        let leased = self.s.leases.iter().map(|(&slot, at, l)| Record {
            slot,
            holder: l.holder.clone(),
            deadline: Some(at),
            token: l.token,
        });
        let owned = self.s.owned.iter().map(|(&slot, o)| Record {
            slot,
            holder: Some(o.holder.clone()),
            deadline: None,
            token: o.token,
        });
        vec![SlotEffect::Restore {
            words: self.s.bits.words().to_vec(),
            records: leased.chain(owned).collect(),
            highest: self.s.highest,
            last_token: self.s.last_token,
        }]
    }

    /// One allocation per record (a slot with HOLDER or TTL, and its holder index entry); the
    /// bitmap is a few large allocations, freed at once like a big string.
    fn free_effort(&self) -> usize {
        self.s.leases.len() + self.s.owned.len() + self.by_holder.len() + 1
    }

    fn mem_usage(&self) -> usize {
        self.mem_sampled(MEM_SAMPLE)
    }
}

impl Pool {
    /// `mem_usage` looking at `sample` holders at most (`usize::MAX`: every one).
    fn mem_sampled(&self, sample: usize) -> usize {
        // Per-entry estimates for the maps (entry, index and table/node overhead): a lease sits
        // in a hash table and an ordered set, an owned slot in a B-tree, a holder in the index.
        const LEASE: usize = 96;
        const OWNED: usize = 64;
        const INDEX: usize = 32;
        // Each holder's bytes are kept twice: in its record and as the index key.
        let holder_bytes = sampled(self.by_holder.len(), self.by_holder.keys(), sample, |h| {
            2 * h.len()
        });
        self.s.bits.mem_bytes()
            + self.s.leases.len() * LEASE
            + self.s.owned.len() * OWNED
            + self.by_holder.capacity() * INDEX
            + holder_bytes
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.s.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Slots::deserialize(d)?;
        Pool::from_slots(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::deadlines::assert_close;
    use crate::engine::decide;

    fn get() -> Get {
        Get::default()
    }

    fn held(holder: &str, ttl: Option<u64>) -> Get {
        Get {
            holder: Some(holder.as_bytes().into()),
            ttl,
            ..Get::default()
        }
    }

    fn run(p: &mut Pool, effects: impl IntoIterator<Item = SlotEffect>) {
        for e in effects {
            p.apply(&e).unwrap();
        }
    }

    /// GETs `req` at `now` with token `token`; the granted slot.
    fn take(p: &mut Pool, req: &Get, now: u64, token: u64) -> Option<u64> {
        let (effects, reply) = decide(p, req, now, false, token)?;
        run(p, effects);
        match reply {
            Reply::Int(s) => Some(s as u64),
            Reply::Array(v) => match v[0] {
                Reply::Int(s) => Some(s as u64),
                _ => panic!(),
            },
            r => panic!("{r:?}"),
        }
    }

    fn put(p: &mut Pool, slot: u64) {
        let e = p.put(slot, None, 0).unwrap();
        run(p, vec![e]);
    }

    #[test]
    fn callosum_sequence() {
        let mut p = Pool::default();
        assert_eq!(take(&mut p, &get(), 0, 1), Some(0));
        assert_eq!(take(&mut p, &get(), 0, 2), Some(1));
        assert_eq!(take(&mut p, &get(), 0, 3), Some(2));
        put(&mut p, 0);
        assert_eq!(take(&mut p, &get(), 0, 4), Some(0));
        assert_eq!(take(&mut p, &get(), 0, 5), Some(3));
        assert_eq!(p.held_at(0), 4);
        assert_eq!(p.highest(), 3);
        assert_eq!(p.put(7, None, 0), Err(Refusal::Free));
        assert_eq!(p.expires_at(), None, "unleased slots never expire");
    }

    #[test]
    fn lowest_free_across_word_boundaries() {
        let mut p = Pool::default();
        for s in 0..5000 {
            assert_eq!(take(&mut p, &get(), 0, s + 1), Some(s));
        }
        for s in [4999u64, 4096, 4095, 64, 63, 0] {
            put(&mut p, s);
        }
        for s in [0u64, 63, 64, 4095, 4096, 4999, 5000] {
            assert_eq!(take(&mut p, &get(), 0, 10_000 + s), Some(s));
        }
    }

    #[test]
    fn limit_bounds_the_pool() {
        let mut p = Pool::default();
        let lim = Get {
            limit: Some(2),
            ..get()
        };
        assert_eq!(take(&mut p, &lim, 0, 1), Some(0));
        assert_eq!(take(&mut p, &lim, 0, 2), Some(1));
        assert!(decide(&p, &lim, 0, false, 3).is_none(), "full");
        assert_eq!(take(&mut p, &get(), 0, 3), Some(2), "no LIMIT: more exist");
        put(&mut p, 1);
        assert_eq!(take(&mut p, &lim, 0, 4), Some(1));
        // Others in line: a new GET waits its turn.
        put(&mut p, 0);
        assert!(decide(&p, &lim, 0, true, 5).is_none());
    }

    #[test]
    fn leases_lapse_and_set_the_key_ttl() {
        let mut p = Pool::default();
        let a = held("a", Some(100));
        assert_eq!(take(&mut p, &a, 1000, 1), Some(0));
        assert_eq!(
            take(
                &mut p,
                &Get {
                    ttl: Some(500),
                    ..get()
                },
                1000,
                2
            ),
            Some(1)
        );
        assert_eq!(p.next_deadline(), Some(1100));
        assert_eq!(
            p.expires_at(),
            Some(1500),
            "leased only: the latest deadline"
        );
        let mut out = vec![];
        p.lapse(1099, &mut out);
        assert!(out.is_empty());
        assert!(p.slot_at(0, 1099).is_some());
        assert!(
            p.slot_at(0, 1100).is_none(),
            "past its deadline is not held"
        );
        assert_eq!(p.held_at(1100), 1);
        p.lapse(1100, &mut out);
        assert_eq!(out, vec![SlotEffect::Lapse { slot: 0 }]);
        run(&mut p, out);
        // The lapsed slot is the lowest free again at once.
        assert_eq!(take(&mut p, &get(), 1100, 3), Some(0));
        assert_eq!(p.expires_at(), None, "an unleased slot: no TTL");
        assert_eq!(p.renew(0, None, 10, 1100), Err(Refusal::NoLease));
        assert!(!p.by_holder.contains_key(&b"a"[..]));
    }

    #[test]
    fn holders_check_renew_and_regrant() {
        let mut p = Pool::default();
        let a = Get {
            withtoken: true,
            ..held("a", Some(100))
        };
        let (e, reply) = decide(&p, &a, 0, false, 7).unwrap();
        assert_eq!(reply, Reply::Array(vec![Reply::Int(0), Reply::Int(7)]));
        run(&mut p, e);
        take(&mut p, &get(), 0, 8);
        assert_eq!(p.put(0, None, 0), Err(Refusal::HeldBy(b"a"[..].into())));
        assert_eq!(
            p.put(0, Some(b"b"), 0),
            Err(Refusal::HeldBy(b"a"[..].into()))
        );
        assert_eq!(p.put(1, Some(b"a"), 0), Err(Refusal::Anonymous));
        assert_eq!(p.renew(5, Some(b"a"), 10, 0), Err(Refusal::Free));
        let e = p.renew(0, Some(b"a"), 1000, 50).unwrap();
        run(&mut p, vec![e]);
        assert_eq!(p.slot_at(0, 50).unwrap().deadline, Some(1050));
        // Same holder again, even with others in line: same slot, same token, new lease.
        let (e, reply) = decide(&p, &a, 60, true, 99).unwrap();
        assert_eq!(reply, Reply::Array(vec![Reply::Int(0), Reply::Int(7)]));
        run(&mut p, e);
        assert_eq!(p.slot_at(0, 60).unwrap().deadline, Some(160));
        // Without TTL the slot becomes unleased; with TTL again leased.
        let (e, _) = decide(&p, &held("a", None), 70, false, 99).unwrap();
        run(&mut p, e);
        assert_eq!(
            p.slot_at(0, 10_000),
            Some(SlotView {
                holder: Some(b"a"),
                deadline: None,
                token: Some(7)
            })
        );
        let (e, _) = decide(&p, &held("a", None), 70, false, 99).unwrap();
        assert_eq!(e.len(), 1, "a renew even when nothing changes (slot.renew)");
        run(&mut p, e);
        let (e, _) = decide(&p, &held("a", Some(5)), 70, false, 99).unwrap();
        run(&mut p, e);
        assert_eq!(p.slot_at(0, 70).unwrap().deadline, Some(75));
        // An anonymous unleased slot has no stored token.
        assert_eq!(
            p.slot_at(1, 0),
            Some(SlotView {
                holder: None,
                deadline: None,
                token: None
            })
        );
        let e = p.put(0, Some(b"a"), 70).unwrap();
        run(&mut p, vec![e]);
        assert!(p.by_holder.is_empty());
        assert_eq!(take(&mut p, &held("b", None), 80, 100), Some(0));
    }

    fn sample() -> Pool {
        let mut p = Pool::default();
        for s in 0..300u64 {
            take(&mut p, &get(), 0, s + 1);
        }
        take(&mut p, &held("lease\0d", Some(500)), 0, 1000);
        take(
            &mut p,
            &Get {
                ttl: Some(700),
                ..get()
            },
            0,
            1001,
        );
        take(&mut p, &held("own", None), 0, 1002);
        for s in (0..300).step_by(7) {
            put(&mut p, s);
        }
        p
    }

    #[test]
    fn serde_round_trip_is_equal() {
        let p = sample();
        let bytes = crate::engine::codec::encode(&p);
        let back: Pool = crate::engine::codec::decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(crate::engine::codec::encode(&back), bytes);
        assert_eq!(Pool::decode(1, &bytes), Some(p));
    }

    #[test]
    fn rebuild_reproduces_state() {
        let p = sample();
        let mut copy = Pool::default();
        run(&mut copy, p.rebuild());
        assert_eq!(copy, p);
        // The rebuilt value grants exactly what the original would.
        let mut q = p.clone();
        for t in 0..60 {
            assert_eq!(
                take(&mut copy, &get(), 0, 5000 + t),
                take(&mut q, &get(), 0, 5000 + t)
            );
        }
    }

    #[test]
    fn apply_rejects_nonsense() {
        let mut p = sample();
        let before = p.clone();
        let bad = [
            SlotEffect::Put { slot: 0 },
            SlotEffect::Lapse { slot: 1 },
            SlotEffect::Renew {
                slot: 1,
                deadline: Some(9),
            },
            SlotEffect::Renew {
                slot: 301,
                deadline: None,
            },
            SlotEffect::Grant {
                slot: 1,
                holder: None,
                deadline: None,
                token: 1,
            },
            SlotEffect::Grant {
                slot: 1 << 39,
                holder: None,
                deadline: None,
                token: 1,
            },
            SlotEffect::Grant {
                slot: 0,
                holder: Some(b"own"[..].into()),
                deadline: None,
                token: 1,
            },
            SlotEffect::Restore {
                words: vec![1],
                records: vec![Record {
                    slot: 5,
                    holder: None,
                    deadline: Some(1),
                    token: 1,
                }],
                highest: 0,
                last_token: 0,
            },
            SlotEffect::Restore {
                words: vec![3],
                records: vec![
                    Record {
                        slot: 0,
                        holder: Some(b"x"[..].into()),
                        deadline: None,
                        token: 1,
                    },
                    Record {
                        slot: 1,
                        holder: Some(b"x"[..].into()),
                        deadline: Some(5),
                        token: 1,
                    },
                ],
                highest: 0,
                last_token: 0,
            },
        ];
        for e in &bad {
            assert!(p.apply(e).is_err(), "{e:?}");
            assert_eq!(p, before, "{e:?} left the state unchanged");
        }
        // A corrupt stored value does not load.
        let mut forged = Slots::default();
        forged.leases.insert(
            3,
            1,
            Lease {
                holder: None,
                token: 1,
            },
        );
        assert!(
            crate::engine::codec::decode::<Pool>(&crate::engine::codec::encode(&forged)).is_none()
        );
    }

    /// The design target: 10 million anonymous unleased slots in at most 2 MB.
    #[test]
    fn ten_million_slots_fit_in_two_megabytes() {
        let mut p = Pool::default();
        for slot in 0..10_000_000u64 {
            let grant = SlotEffect::Grant {
                slot,
                holder: None,
                deadline: None,
                token: slot + 1,
            };
            p.apply(&grant).unwrap();
        }
        assert_eq!(p.held_at(0), 10_000_000);
        let bytes = std::mem::size_of::<Pool>() + p.mem_usage();
        assert!(bytes <= 2_000_000, "{bytes} bytes");
        assert!(crate::engine::codec::encode(&p).len() < 1_300_000);
    }

    #[test]
    fn tokens_follow_grants() {
        let mut p = Pool::default();
        take(&mut p, &get(), 0, 10);
        take(&mut p, &get(), 0, 11);
        assert_eq!(
            p.last_token(),
            11,
            "kept once per key, even for anonymous slots"
        );
        put(&mut p, 0);
        put(&mut p, 1);
        assert!(p.is_empty());
    }

    /// MEMORY USAGE samples at most MEM_SAMPLE holders; on holders of uniform (and of mixed)
    /// sizes it stays within 10% of the exact walk.
    #[test]
    fn mem_estimate_matches_the_walk() {
        for mixed in [false, true] {
            let mut p = Pool::default();
            for slot in 0..10_000u64 {
                let len = if mixed { 8 + (slot % 40) as usize } else { 20 };
                p.apply(&SlotEffect::Grant {
                    slot,
                    holder: Some(format!("{slot:0len$}").into_bytes().into()),
                    deadline: (slot % 2 == 0).then_some(1_000 + slot),
                    token: slot + 1,
                })
                .unwrap();
            }
            let exact = p.mem_sampled(usize::MAX);
            assert_close(
                p.mem_usage(),
                exact,
                if mixed { "mixed" } else { "uniform" },
            );
        }
    }
}
