//! The contract between the lease engine and a family (RESV, SEM, SLOT, ALLOC, JOB).
//!
//! A family is a pure state machine: it *decides* what should happen (effects) and *applies*
//! effects. The engine does everything else — opening keys, lapsing leases at their deadlines,
//! queueing blocked clients, replicating effects, persistence, notifications and counters — the
//! same way for every family.
//!
//! The primary runs `decide → apply → replicate effects`; replicas and AOF loading run only
//! `apply` on the replicated effects. Since `apply` is deterministic, a replica's value is the
//! primary's, byte for byte.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use serde::{de::DeserializeOwned, Serialize};
use smallvec::SmallVec;

use super::ffi::Reply;

/// The five families. The index selects a row of the INFO counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Family {
    Resv,
    Sem,
    Slot,
    Alloc,
    Job,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Resv,
        Family::Sem,
        Family::Slot,
        Family::Alloc,
        Family::Job,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Resv => "resv",
            Family::Sem => "sem",
            Family::Slot => "slot",
            Family::Alloc => "alloc",
            Family::Job => "job",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: u8) -> Option<Family> {
        Family::ALL.get(usize::from(i)).copied()
    }
}

/// What an effect means to observers: it selects the keyspace notification
/// (`<family>.grant`, `.renew`, `.release`, `.lapse`) and the INFO counter it bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Grant,
    Renew,
    Release,
    Lapse,
    /// A notification of the family's own, named in full (e.g. `c"job.fail"`); no INFO counter.
    Custom(&'static CStr),
    /// Changes that are not lease events (e.g. a job created); no notification.
    Other,
}

/// The effects of one decision: almost always one or two, so they live on the stack.
pub type Effects<E> = SmallVec<[E; 2]>;

impl Event {
    const NAMED: [Event; 4] = [Event::Grant, Event::Renew, Event::Release, Event::Lapse];

    pub fn name(self) -> Option<&'static str> {
        match self {
            Event::Grant => Some("grant"),
            Event::Renew => Some("renew"),
            Event::Release => Some("release"),
            Event::Lapse => Some("lapse"),
            Event::Custom(_) | Event::Other => None,
        }
    }

    /// The keyspace notification `<family>.<event>` (e.g. `sem.lapse`), built once.
    pub fn notification(self, family: Family) -> Option<&'static CStr> {
        if let Event::Custom(name) = self {
            return Some(name);
        }
        static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
        let names = NAMES.get_or_init(|| {
            Family::ALL
                .iter()
                .flat_map(|f| Event::NAMED.iter().map(move |e| (f, e)))
                .filter_map(|(f, e)| CString::new(format!("{}.{}", f.name(), e.name()?)).ok())
                .collect()
        });
        let e = Event::NAMED.iter().position(|&n| n == self)?;
        names
            .get(family.index() * Event::NAMED.len() + e)
            .map(|c| c.as_c_str())
    }
}

pub trait Effect: Serialize + DeserializeOwned + std::fmt::Debug {
    fn event(&self) -> Event;
}

/// A family's value type: what one Redis key holds.
pub trait Primitive: Default + Clone + Serialize + DeserializeOwned + 'static {
    const FAMILY: Family;
    /// Redis data type name: exactly 9 characters.
    const TYPE_NAME: &'static str;
    /// Encoding version of `Self` in RDB; bump it when the serialized shape changes and teach
    /// `decode` to read the older versions.
    const ENCODING_VERSION: i32;

    type Effect: Effect;
    /// A request that can be granted now or wait in the key's FIFO queue.
    type Request: 'static;

    /// The only way state changes. Must be deterministic: same state + effect → same state.
    /// An error means the effect does not fit the state (only a hand-written `_APPLY` can do
    /// that); the state is left unchanged.
    fn apply(&mut self, effect: &Self::Effect) -> Result<(), &'static str>;

    /// The idempotent re-grant (DESIGN §1): `request`'s holder already holds what it asks for,
    /// so its lease is extended and it gets the same answer (token) again — a safe retry after a
    /// lost reply. It takes nothing from anyone, so the engine asks it first, even with others
    /// waiting in line. `None`: the holder holds nothing here (the default: no re-grants).
    fn regrant(
        &self,
        _request: &Self::Request,
        _now: u64,
    ) -> Option<(Effects<Self::Effect>, Reply)> {
        None
    }

    /// Grants `request` something new at `now`, carrying the fencing token `token`. The engine
    /// calls this only when nobody waits ahead of the request in its lane — FIFO fairness is
    /// the engine's (`decide`), so a family only answers "does it fit now?". `None` means "not
    /// now": the client waits (BLOCK) or gets nil.
    fn grant(
        &self,
        request: &Self::Request,
        now: u64,
        token: u64,
    ) -> Option<(Effects<Self::Effect>, Reply)>;

    /// The queue lane a waiting request joins: requests in one lane are served strictly in
    /// order; different lanes do not hold each other up. One lane unless a family has requests
    /// that do not compete (e.g. different instances' DRAIN waits).
    fn lane(_request: &Self::Request) -> u64 {
        0
    }

    /// Effects that lapse every lease whose deadline is ≤ `now`.
    fn lapse(&self, now: u64, out: &mut Vec<Self::Effect>);

    /// The earliest lease deadline: the engine acts on the key then.
    fn next_deadline(&self) -> Option<u64>;

    /// When the key would hold nothing worth keeping (its PTTL); `None` = never expires.
    fn expires_at(&self) -> Option<u64>;

    /// True when the key should be deleted.
    fn is_empty(&self) -> bool;

    /// The highest fencing token this key has issued.
    fn last_token(&self) -> u64;

    /// Effects that rebuild this value from an empty one (AOF rewrite). Deadlines and tokens
    /// are absolute, so the rebuilt value is equal to this one.
    fn rebuild(&self) -> Vec<Self::Effect>;

    /// Roughly how many allocations freeing this value takes. Above Redis's lazy-free threshold
    /// (64), UNLINK — and DEL, expiry, eviction with the `lazyfree-lazy-*` options — frees the
    /// value on a background thread, so dropping a huge key does not stall the server.
    fn free_effort(&self) -> usize {
        1
    }

    /// Approximate heap bytes (MEMORY USAGE).
    fn mem_usage(&self) -> usize;

    /// Reads a value saved with `encver` (≤ ENCODING_VERSION).
    fn decode(encver: i32, bytes: &[u8]) -> Option<Self> {
        if encver == Self::ENCODING_VERSION {
            super::codec::decode(bytes)
        } else {
            None
        }
    }
}

/// The engine's one rule for a request: the holder's re-grant if it holds; otherwise a new
/// grant, but only when `queued` is false — nobody waits ahead of it in its lane, so a later
/// request never jumps the queue (DESIGN §1, "served strictly FIFO"). The commands
/// (`txn::acquire`) and the wait queues (`txn::serve`) both decide through here.
pub fn decide<F: Primitive>(
    state: &F,
    request: &F::Request,
    now: u64,
    queued: bool,
    token: u64,
) -> Option<(Effects<F::Effect>, Reply)> {
    state.regrant(request, now).or_else(|| {
        (!queued)
            .then(|| state.grant(request, now, token))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_names() {
        let name = |e: Event, f: Family| e.notification(f).and_then(|c| c.to_str().ok());
        let dotted = |f: &str, e: &str| format!("{f}.{e}");
        assert_eq!(
            name(Event::Lapse, Family::Sem),
            Some(&*dotted("sem", "lapse"))
        );
        assert_eq!(
            name(Event::Grant, Family::Resv),
            Some(&*dotted("resv", "grant"))
        );
        assert_eq!(
            name(Event::Release, Family::Job),
            Some(&*dotted("job", "release"))
        );
        assert_eq!(name(Event::Other, Family::Alloc), None);
        assert_eq!(
            name(Event::Custom(c"job.fail"), Family::Job),
            Some("job.fail")
        );
    }
}
