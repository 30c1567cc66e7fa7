//! SEM, the pure core: a counting semaphore whose permits expire. Holders are kept in a
//! deadline-ordered lease table (the sorted-set view: holder by expiry), with the number of
//! permits each holds and its fencing token.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::deadlines::{sampled, DeadlineMap, MEM_SAMPLE};
use smallvec::smallvec;

use crate::engine::{Effect, Effects, Event, Family, Primitive, Reply};

/// A holder id. Shared (not copied) between the lease table's two indexes; `Arc` because a
/// value may be freed on Redis's lazy-free thread.
pub type Holder = Arc<[u8]>;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Sem {
    holders: DeadlineMap<Holder, Permit>,
    /// Permits held, summed over `holders` (kept so admission is O(1)).
    in_use: u64,
    /// Highest token ever issued for this key.
    last_token: u64,
}

/// The serialized form of `Sem` (its fields, in order). Loading refuses a value whose permit
/// count is not the sum of its holders' permits: releasing would underflow it.
#[derive(Deserialize)]
struct Stored {
    holders: DeadlineMap<Holder, Permit>,
    in_use: u64,
    last_token: u64,
}

impl TryFrom<Stored> for Sem {
    type Error = &'static str;

    fn try_from(s: Stored) -> Result<Self, Self::Error> {
        let sum = s
            .holders
            .iter()
            .try_fold(0u64, |sum, (_, _, p)| sum.checked_add(u64::from(p.permits)));
        if sum != Some(s.in_use) {
            return Err("permits in use are not the holders' permits");
        }
        Ok(Sem {
            holders: s.holders,
            in_use: s.in_use,
            last_token: s.last_token,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    pub permits: u32,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemEffect {
    Grant {
        holder: Holder,
        permits: u32,
        deadline: u64,
        token: u64,
    },
    Renew {
        holder: Holder,
        deadline: u64,
    },
    Release {
        holder: Holder,
    },
    Lapse {
        holder: Holder,
    },
    /// The key's last token (AOF rewrite: the holder that had it may be gone).
    LastToken {
        token: u64,
    },
}

impl Effect for SemEffect {
    fn event(&self) -> Event {
        match self {
            SemEffect::Grant { .. } => Event::Grant,
            SemEffect::Renew { .. } => Event::Renew,
            SemEffect::Release { .. } => Event::Release,
            SemEffect::Lapse { .. } => Event::Lapse,
            SemEffect::LastToken { .. } => Event::Other,
        }
    }
}

/// An ACQUIRE that may wait in line. Admission uses the capacity given in this call.
#[derive(Debug, Clone)]
pub struct Acquire {
    pub holder: Holder,
    pub capacity: u64,
    pub permits: u32,
    pub ttl: u64,
}

/// One live holder as seen at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderView<'a> {
    pub holder: &'a [u8],
    pub deadline: u64,
    pub permits: u32,
    pub token: u64,
}

impl Sem {
    fn live(&self, holder: &[u8], now: u64) -> Option<(u64, Permit)> {
        self.holders
            .get(holder)
            .filter(|(deadline, _)| *deadline > now)
            .map(|(d, p)| (d, *p))
    }

    /// The stored id of a live holder (shared, not copied, into effects).
    fn live_id(&self, holder: &[u8], now: u64) -> Option<Holder> {
        self.live(holder, now)?;
        self.holders.key(holder).cloned()
    }

    pub fn renew(&self, holder: &[u8], ttl: u64, now: u64) -> Option<SemEffect> {
        Some(SemEffect::Renew {
            holder: self.live_id(holder, now)?,
            deadline: now + ttl,
        })
    }

    pub fn release(&self, holder: &[u8], now: u64) -> Option<SemEffect> {
        Some(SemEffect::Release {
            holder: self.live_id(holder, now)?,
        })
    }

    /// Live holders, earliest expiry first (a lease whose deadline has passed is not live, even
    /// before the engine lapses it — e.g. on a replica).
    pub fn holders_at(&self, now: u64) -> impl Iterator<Item = HolderView<'_>> {
        self.holders
            .iter()
            .filter(move |(_, deadline, _)| *deadline > now)
            .map(|(h, deadline, p)| HolderView {
                holder: h,
                deadline,
                permits: p.permits,
                token: p.token,
            })
    }

    /// Permits in use at `now`.
    pub fn count_at(&self, now: u64) -> u64 {
        let lapsed: u64 = self
            .holders
            .due(now)
            .filter_map(|h| self.holders.get(h))
            .map(|(_, p)| u64::from(p.permits))
            .sum();
        self.in_use - lapsed
    }

    pub fn holder_count_at(&self, now: u64) -> usize {
        self.holders.len() - self.holders.due(now).count()
    }

    fn remove(&mut self, holder: &[u8]) -> Result<(), &'static str> {
        let (_, p) = self
            .holders
            .remove(holder)
            .ok_or("holder does not hold a permit")?;
        self.in_use -= u64::from(p.permits);
        Ok(())
    }
}

impl Primitive for Sem {
    const FAMILY: Family = Family::Sem;
    const TYPE_NAME: &'static str = "CorralSem";
    const ENCODING_VERSION: i32 = 1;

    type Effect = SemEffect;
    type Request = Acquire;

    fn apply(&mut self, effect: &SemEffect) -> Result<(), &'static str> {
        match effect {
            SemEffect::Grant {
                holder,
                permits,
                deadline,
                token,
            } => {
                if self.holders.contains(&**holder) {
                    return Err("holder already holds a permit");
                }
                let permit = Permit {
                    permits: *permits,
                    token: *token,
                };
                self.holders.insert(holder.clone(), *deadline, permit);
                self.in_use += u64::from(*permits);
                self.last_token = self.last_token.max(*token);
            }
            SemEffect::Renew { holder, deadline } => {
                if !self.holders.set_deadline(&**holder, *deadline) {
                    return Err("holder does not hold a permit");
                }
            }
            SemEffect::Release { holder } | SemEffect::Lapse { holder } => self.remove(holder)?,
            SemEffect::LastToken { token } => self.last_token = self.last_token.max(*token),
        }
        Ok(())
    }

    /// "Acquire or extend": a holder that holds renews, even when the semaphore is full, and
    /// keeps its token and its permit count.
    fn regrant(&self, req: &Acquire, now: u64) -> Option<(Effects<SemEffect>, Reply)> {
        let (_, p) = self.live(&req.holder, now)?;
        let renew = SemEffect::Renew {
            holder: req.holder.clone(),
            deadline: now + req.ttl,
        };
        Some((smallvec![renew], Reply::Int(p.token as i64)))
    }

    fn grant(&self, req: &Acquire, now: u64, token: u64) -> Option<(Effects<SemEffect>, Reply)> {
        if self.count_at(now) + u64::from(req.permits) > req.capacity {
            return None;
        }
        let grant = SemEffect::Grant {
            holder: req.holder.clone(),
            permits: req.permits,
            deadline: now + req.ttl,
            token,
        };
        Some((smallvec![grant], Reply::Int(token as i64)))
    }

    fn lapse(&self, now: u64, out: &mut Vec<SemEffect>) {
        out.extend(
            self.holders
                .due(now)
                .map(|h| SemEffect::Lapse { holder: h.clone() }),
        );
    }

    fn next_deadline(&self) -> Option<u64> {
        self.holders.earliest()
    }

    fn expires_at(&self) -> Option<u64> {
        self.holders.latest()
    }

    fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    fn last_token(&self) -> u64 {
        self.last_token
    }

    fn rebuild(&self) -> Vec<SemEffect> {
        let mut out: Vec<SemEffect> = self
            .holders
            .iter()
            .map(|(h, deadline, p)| SemEffect::Grant {
                holder: h.clone(),
                permits: p.permits,
                deadline,
                token: p.token,
            })
            .collect();
        out.push(SemEffect::LastToken {
            token: self.last_token,
        });
        out
    }

    fn free_effort(&self) -> usize {
        self.holders.len()
    }

    fn mem_usage(&self) -> usize {
        self.mem_sampled(MEM_SAMPLE)
    }
}

impl Sem {
    /// `mem_usage` looking at `sample` holders at most (`usize::MAX`: every one): the lease
    /// table's own tables at their capacity, plus each holder id once (shared by both indexes)
    /// with its Arc counts, rounded up as the allocator does.
    fn mem_sampled(&self, sample: usize) -> usize {
        let ids = sampled(
            self.holders.len(),
            self.holders.iter(),
            sample,
            |(h, _, _)| (16 + h.len()).next_multiple_of(16),
        );
        self.holders.table_bytes() + ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::deadlines::assert_close;
    use crate::engine::decide;

    /// Found by fuzzing (decode target): a stored value whose permit count was below its
    /// holders' permits loaded, and releasing a holder then underflowed the count (a panic, or
    /// with wrapping arithmetic a semaphore that looks full for good).
    #[test]
    fn decode_rejects_wrong_permit_count() {
        let mut s = Sem::default();
        s.apply(&SemEffect::Grant {
            holder: Arc::from(&b"a"[..]),
            permits: 2,
            deadline: 100,
            token: 1,
        })
        .unwrap();
        let good = crate::engine::codec::encode(&s);
        assert_eq!(Sem::decode(1, &good), Some(s.clone()));
        s.in_use = 1;
        assert_eq!(Sem::decode(1, &crate::engine::codec::encode(&s)), None);
    }

    fn acq(holder: &str, capacity: u64, permits: u32, ttl: u64) -> Acquire {
        Acquire {
            holder: Arc::from(holder.as_bytes()),
            capacity,
            permits,
            ttl,
        }
    }

    /// Grants (or fails) and applies; returns the token.
    fn take(s: &mut Sem, req: &Acquire, now: u64, queued: bool, token: u64) -> Option<i64> {
        let (effects, reply) = decide(s, req, now, queued, token)?;
        for e in effects {
            s.apply(&e).unwrap();
        }
        match reply {
            Reply::Int(t) => Some(t),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn capacity_is_respected_and_release_frees() {
        let mut s = Sem::default();
        assert_eq!(take(&mut s, &acq("a", 3, 1, 100), 0, false, 1), Some(1));
        assert_eq!(take(&mut s, &acq("b", 3, 1, 100), 0, false, 2), Some(2));
        assert_eq!(take(&mut s, &acq("c", 3, 1, 100), 0, false, 3), Some(3));
        assert_eq!(take(&mut s, &acq("d", 3, 1, 100), 0, false, 4), None);
        let e = s.release(b"a", 1).unwrap();
        s.apply(&e).unwrap();
        assert!(s.release(b"a", 1).is_none(), "second release is NOTHELD");
        assert_eq!(
            take(&mut s, &acq("e", 3, 2, 100), 1, false, 5),
            None,
            "2 wanted, 1 free"
        );
        assert_eq!(take(&mut s, &acq("d", 3, 1, 100), 1, false, 6), Some(6));
        assert_eq!(s.count_at(1), 3);
    }

    #[test]
    fn holder_renews_even_when_full_with_same_token() {
        let mut s = Sem::default();
        take(&mut s, &acq("a", 1, 1, 100), 0, false, 7);
        assert_eq!(take(&mut s, &acq("a", 1, 1, 500), 50, true, 8), Some(7));
        assert_eq!(s.next_deadline(), Some(550));
        assert_eq!(s.count_at(60), 1);
    }

    #[test]
    fn queued_requests_do_not_jump_the_line() {
        let mut s = Sem::default();
        take(&mut s, &acq("a", 4, 2, 100), 0, false, 1);
        assert!(decide(&s, &acq("small", 4, 1, 100), 0, true, 2).is_none());
    }

    #[test]
    fn lapse_exactly_at_ttl_and_views() {
        let mut s = Sem::default();
        take(&mut s, &acq("late", 10, 1, 300), 0, false, 1);
        take(&mut s, &acq("early", 10, 3, 100), 0, false, 2);
        let order: Vec<&[u8]> = s.holders_at(0).map(|h| h.holder).collect();
        assert_eq!(order, vec![&b"early"[..], b"late"]);
        assert_eq!(s.count_at(99), 4);
        assert_eq!(s.count_at(100), 1, "reclaimed at the TTL, not 2×TTL");
        assert_eq!(s.expires_at(), Some(300));
        let mut out = vec![];
        s.lapse(100, &mut out);
        assert_eq!(
            out,
            vec![SemEffect::Lapse {
                holder: Arc::from(&b"early"[..])
            }]
        );
        for e in &out {
            s.apply(e).unwrap();
        }
        assert_eq!(s.count_at(100), 1);
        assert_eq!(s.holder_count_at(100), 1);
    }

    #[test]
    fn rebuild_and_serde_reproduce_state() {
        let mut s = Sem::default();
        for (i, h) in ["x", "y\0", "z"].iter().enumerate() {
            take(
                &mut s,
                &acq(h, 10, i as u32 + 1, 100 + i as u64),
                0,
                false,
                10 + i as u64,
            );
        }
        let mut copy = Sem::default();
        for e in s.rebuild() {
            copy.apply(&e).unwrap();
        }
        assert_eq!(copy, s);
        let back: Sem = crate::engine::codec::decode(&crate::engine::codec::encode(&s)).unwrap();
        assert_eq!(back, s);
    }

    /// Model check: random acquire/release/lapse never exceeds capacity and keeps `in_use`
    /// equal to the sum of live permits.
    #[test]
    fn never_over_capacity() {
        let mut s = Sem::default();
        let mut rnd = crate::engine::testing::rnd(12345u64);
        let mut now = 0;
        for token in 1..5000u64 {
            now += rnd(20);
            let mut out = vec![];
            s.lapse(now, &mut out);
            for e in &out {
                s.apply(e).unwrap();
            }
            let h = format!("h{}", rnd(30));
            if rnd(3) == 0 {
                if let Some(e) = s.release(h.as_bytes(), now) {
                    s.apply(&e).unwrap();
                }
            } else {
                take(
                    &mut s,
                    &acq(&h, 10, 1 + rnd(4) as u32, 1 + rnd(200)),
                    now,
                    false,
                    token,
                );
            }
            let sum: u64 = s.holders_at(now).map(|v| u64::from(v.permits)).sum();
            assert_eq!(sum, s.count_at(now));
            assert!(sum <= 10);
        }
    }

    /// MEMORY USAGE samples at most MEM_SAMPLE holders; on holders of uniform (and of mixed)
    /// sizes it stays within 10% of the exact walk.
    #[test]
    fn mem_estimate_matches_the_walk() {
        for mixed in [false, true] {
            let mut s = Sem::default();
            for i in 0..10_000u64 {
                let len = if mixed { 8 + (i % 40) as usize } else { 20 };
                let name = format!("{i:0len$}");
                s.apply(&SemEffect::Grant {
                    holder: Arc::from(name.as_bytes()),
                    permits: 1,
                    deadline: 1_000 + i,
                    token: i + 1,
                })
                .unwrap();
            }
            let exact = s.mem_sampled(usize::MAX);
            assert_close(
                s.mem_usage(),
                exact,
                if mixed { "mixed" } else { "uniform" },
            );
        }
    }
}
