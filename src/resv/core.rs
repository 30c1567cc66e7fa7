//! RESV, the pure core: one exclusive reservation (a lock) with a deadline and a fencing token.
//! No Redis here — the engine opens keys, schedules the deadline, queues waiters, replicates.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use smallvec::smallvec;

use crate::engine::{Effect, Effects, Event, Family, Primitive, Reply};

/// A holder id, shared (not copied) between the request, the effect and the stored lease.
pub type Holder = Arc<[u8]>;

/// What a RESV key holds. A key exists only while the reservation is held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resv {
    held: Option<Held>,
    /// Highest token ever issued for this key.
    last_token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub holder: Holder,
    /// Absolute server time (ms) at which the reservation lapses.
    pub deadline: u64,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResvEffect {
    Grant {
        holder: Holder,
        deadline: u64,
        token: u64,
    },
    /// The holder extended its reservation (RENEW, or LOCK again by the same holder).
    Renew {
        deadline: u64,
    },
    Release,
    Lapse,
}

impl Effect for ResvEffect {
    fn event(&self) -> Event {
        match self {
            ResvEffect::Grant { .. } => Event::Grant,
            ResvEffect::Renew { .. } => Event::Renew,
            ResvEffect::Release => Event::Release,
            ResvEffect::Lapse => Event::Lapse,
        }
    }
}

/// A LOCK that may wait in line.
#[derive(Debug, Clone)]
pub struct Lock {
    pub holder: Holder,
    pub ttl: u64,
}

/// Why a holder's action on the reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Held by someone else.
    HeldBy(Holder),
    /// Nobody holds it (it lapsed, was released, or never existed).
    Free,
    /// Held by this holder, but under another token.
    Stale { given: u64, current: u64 },
}

impl Resv {
    /// The reservation as seen at `now` (a lease whose deadline passed is not held, even before
    /// the engine has lapsed it — e.g. on a replica).
    pub fn held_at(&self, now: u64) -> Option<&Held> {
        self.held.as_ref().filter(|h| h.deadline > now)
    }

    fn held_by(&self, holder: &[u8], now: u64) -> Result<&Held, Refusal> {
        match self.held_at(now) {
            Some(h) if &*h.holder == holder => Ok(h),
            Some(h) => Err(Refusal::HeldBy(h.holder.clone())),
            None => Err(Refusal::Free),
        }
    }

    pub fn renew(&self, holder: &[u8], ttl: u64, now: u64) -> Result<ResvEffect, Refusal> {
        self.held_by(holder, now)?;
        Ok(ResvEffect::Renew {
            deadline: now + ttl,
        })
    }

    pub fn release(&self, holder: &[u8], now: u64) -> Result<ResvEffect, Refusal> {
        self.held_by(holder, now)?;
        Ok(ResvEffect::Release)
    }

    pub fn check(&self, holder: &[u8], token: u64, now: u64) -> Result<(), Refusal> {
        let h = self.held_by(holder, now)?;
        if h.token == token {
            Ok(())
        } else {
            Err(Refusal::Stale {
                given: token,
                current: h.token,
            })
        }
    }
}

impl Primitive for Resv {
    const FAMILY: Family = Family::Resv;
    const TYPE_NAME: &'static str = "CorralRsv";
    const ENCODING_VERSION: i32 = 1;

    type Effect = ResvEffect;
    type Request = Lock;

    fn apply(&mut self, effect: &ResvEffect) -> Result<(), &'static str> {
        match effect {
            ResvEffect::Grant {
                holder,
                deadline,
                token,
            } => {
                self.held = Some(Held {
                    holder: holder.clone(),
                    deadline: *deadline,
                    token: *token,
                });
                self.last_token = self.last_token.max(*token);
            }
            ResvEffect::Renew { deadline } => {
                self.held
                    .as_mut()
                    .ok_or("renew of a free reservation")?
                    .deadline = *deadline;
            }
            ResvEffect::Release | ResvEffect::Lapse => {
                self.held.take().ok_or("release of a free reservation")?;
            }
        }
        Ok(())
    }

    fn regrant(&self, lock: &Lock, now: u64) -> Option<(Effects<ResvEffect>, Reply)> {
        let h = self.held_at(now).filter(|h| h.holder == lock.holder)?;
        let renew = ResvEffect::Renew {
            deadline: now + lock.ttl,
        };
        Some((smallvec![renew], Reply::Int(h.token as i64)))
    }

    fn grant(&self, lock: &Lock, now: u64, token: u64) -> Option<(Effects<ResvEffect>, Reply)> {
        if self.held_at(now).is_some() {
            return None;
        }
        let grant = ResvEffect::Grant {
            holder: lock.holder.clone(),
            deadline: now + lock.ttl,
            token,
        };
        Some((smallvec![grant], Reply::Int(token as i64)))
    }

    fn lapse(&self, now: u64, out: &mut Vec<ResvEffect>) {
        if matches!(&self.held, Some(h) if h.deadline <= now) {
            out.push(ResvEffect::Lapse);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.deadline)
    }

    fn expires_at(&self) -> Option<u64> {
        self.next_deadline()
    }

    fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    fn last_token(&self) -> u64 {
        self.last_token
    }

    fn rebuild(&self) -> Vec<ResvEffect> {
        self.held
            .iter()
            .map(|h| ResvEffect::Grant {
                holder: h.holder.clone(),
                deadline: h.deadline,
                token: h.token,
            })
            .collect()
    }

    fn mem_usage(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.holder.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decide;

    fn lock(holder: &str, ttl: u64) -> Lock {
        Lock {
            holder: Arc::from(holder.as_bytes()),
            ttl,
        }
    }

    fn run(r: &mut Resv, effects: impl IntoIterator<Item = ResvEffect>) {
        for e in effects {
            r.apply(&e).unwrap();
        }
    }

    #[test]
    fn lock_relock_release() {
        let mut r = Resv::default();
        let (e, reply) = decide(&r, &lock("a", 100), 1000, false, 7).unwrap();
        assert_eq!(reply, Reply::Int(7));
        run(&mut r, e);
        assert!(decide(&r, &lock("b", 100), 1050, false, 8).is_none());
        // Same holder: extends, same token, even with others queued.
        let (e, reply) = decide(&r, &lock("a", 500), 1050, true, 9).unwrap();
        assert_eq!(reply, Reply::Int(7));
        run(&mut r, e);
        assert_eq!(r.next_deadline(), Some(1550));
        assert_eq!(
            r.release(b"b", 1100),
            Err(Refusal::HeldBy(Arc::from(&b"a"[..])))
        );
        let e = vec![r.release(b"a", 1100).unwrap()];
        run(&mut r, e);
        assert!(r.is_empty());
        assert_eq!(r.release(b"a", 1100), Err(Refusal::Free));
    }

    #[test]
    fn lapse_at_deadline_exactly() {
        let mut r = Resv::default();
        let e = decide(&r, &lock("a", 100), 0, false, 1).unwrap().0;
        run(&mut r, e);
        let mut out = vec![];
        r.lapse(99, &mut out);
        assert!(out.is_empty());
        assert!(r.held_at(99).is_some());
        assert!(r.held_at(100).is_none());
        r.lapse(100, &mut out);
        assert_eq!(out, vec![ResvEffect::Lapse]);
        assert_eq!(r.renew(b"a", 10, 100), Err(Refusal::Free));
    }

    #[test]
    fn queued_free_lock_waits() {
        let r = Resv::default();
        assert!(decide(&r, &lock("a", 1), 0, true, 1).is_none());
    }

    #[test]
    fn check_tokens() {
        let mut r = Resv::default();
        let e = decide(&r, &lock("a", 100), 0, false, 5).unwrap().0;
        run(&mut r, e);
        assert_eq!(r.check(b"a", 5, 10), Ok(()));
        assert_eq!(
            r.check(b"a", 4, 10),
            Err(Refusal::Stale {
                given: 4,
                current: 5
            })
        );
        assert!(matches!(r.check(b"b", 5, 10), Err(Refusal::HeldBy(_))));
    }

    #[test]
    fn rebuild_reproduces_state() {
        let mut r = Resv::default();
        let e = decide(&r, &lock("a\0b", 100), 0, false, 5).unwrap().0;
        run(&mut r, e);
        let mut copy = Resv::default();
        run(&mut copy, r.rebuild());
        assert_eq!(copy, r);
    }

    #[test]
    fn apply_rejects_nonsense() {
        let mut r = Resv::default();
        assert!(r.apply(&ResvEffect::Release).is_err());
        assert!(r.apply(&ResvEffect::Renew { deadline: 1 }).is_err());
        assert!(r.is_empty());
    }
}
