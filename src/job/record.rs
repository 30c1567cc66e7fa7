//! One job's own data, whatever its state: its request, priority, failed attempts, and the
//! rarely set rest (targets waiting for its value, its CREATE options, the last failure reason)
//! behind one pointer, so that a plain pending job costs 32 bytes plus its request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A worker id. Shared (not copied) between a lease and the worker index; `Arc` because a
/// value may be freed on Redis's lazy-free thread.
pub type Worker = Arc<[u8]>;
/// Request, value, target and reason bytes (binary-safe).
pub type Bytes = Box<[u8]>;
/// A `UNIQUE` name, shared between the job and the store's name index.
pub type Name = Arc<[u8]>;

/// The options a job was created with that outlive its creation (DELAY and PRIORITY are
/// applied at creation and are not kept here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Opts {
    /// `ATTEMPTS n`: failed attempts after which the job is `failed`. None = unlimited.
    pub max_attempts: Option<u32>,
    /// `BACKOFF ms`: the delay after the first failed attempt, doubled after each further one.
    pub backoff: Option<u64>,
    /// `KEEP ms`: how long a finished job stays before it is deleted. None = until DELETE.
    pub keep: Option<u64>,
    /// `UNIQUE name`: while this job exists, CREATE with the same name answers its id.
    pub unique: Option<Name>,
}

/// What few jobs have: kept out of line so that jobs without it cost one null pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct More {
    /// Targets to notify of the value, in order (duplicates allowed).
    pub waiting: Box<[Bytes]>,
    pub opts: Opts,
    /// Why the last failed attempt failed (`lapsed` for a lapsed work lease).
    pub reason: Option<Bytes>,
}

/// A job, in any state. Canonical: `more` is None exactly when it would be all defaults, so
/// that equal jobs are equal values (replica digests, rebuilt values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub request: Bytes,
    /// `PRIORITY p`: higher is pulled first.
    pub priority: u32,
    /// Failed attempts so far (reset by RETRY).
    pub attempts: u32,
    pub more: Option<Box<More>>,
}

const NO_TARGETS: &[Bytes] = &[];

impl Job {
    pub fn new(request: Bytes, priority: u32, opts: Opts) -> Job {
        let mut job = Job {
            request,
            priority,
            attempts: 0,
            more: Some(Box::new(More {
                opts,
                ..More::default()
            })),
        };
        job.normalize();
        job
    }

    pub fn waiting(&self) -> &[Bytes] {
        self.more.as_ref().map_or(NO_TARGETS, |m| &m.waiting)
    }

    pub fn opts(&self) -> Option<&Opts> {
        self.more.as_ref().map(|m| &m.opts)
    }

    pub fn max_attempts(&self) -> Option<u32> {
        self.opts().and_then(|o| o.max_attempts)
    }

    pub fn backoff(&self) -> Option<u64> {
        self.opts().and_then(|o| o.backoff)
    }

    pub fn keep(&self) -> Option<u64> {
        self.opts().and_then(|o| o.keep)
    }

    pub fn unique(&self) -> Option<&Name> {
        self.opts().and_then(|o| o.unique.as_ref())
    }

    pub fn reason(&self) -> Option<&[u8]> {
        self.more.as_ref().and_then(|m| m.reason.as_deref())
    }

    /// Changes the out-of-line part, keeping the job canonical.
    pub fn edit_more(&mut self, f: impl FnOnce(&mut More)) {
        let more = self.more.get_or_insert_with(Box::default);
        f(more);
        self.normalize();
    }

    pub fn set_waiting(&mut self, waiting: Vec<Bytes>) {
        self.edit_more(|m| m.waiting = waiting.into_boxed_slice());
    }

    fn normalize(&mut self) {
        if self.more.as_deref().is_some_and(|m| *m == More::default()) {
            self.more = None;
        }
    }

    pub fn is_canonical(&self) -> bool {
        self.more.as_deref() != Some(&More::default())
    }
}

/// Marks, for each target in turn, the first equal unmarked entry of `waiting` — exactly the
/// entries that removing "the first equal match" of each target, one after another, removes.
pub fn first_matches(waiting: &[Bytes], targets: &[Bytes]) -> Vec<bool> {
    let mut hit = vec![false; waiting.len()];
    for t in targets {
        if let Some(i) = (0..waiting.len()).find(|&i| !hit[i] && waiting[i] == *t) {
            hit[i] = true;
        }
    }
    hit
}

/// The backoff after the `k`-th failed attempt (k ≥ 1): `base × 2^(k−1)`, at most `cap`.
pub fn backoff_delay(base: u64, k: u32, cap: u64) -> u64 {
    let factor = 1u64.checked_shl(k.saturating_sub(1)).unwrap_or(0);
    if factor == 0 {
        return cap;
    }
    base.saturating_mul(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_more() {
        let j = Job::new(b"r"[..].into(), 3, Opts::default());
        assert!(j.more.is_none() && j.is_canonical());
        let mut j = Job::new(
            b"r"[..].into(),
            0,
            Opts {
                keep: Some(5),
                ..Opts::default()
            },
        );
        assert_eq!(j.keep(), Some(5));
        j.set_waiting(vec![b"t"[..].into()]);
        assert_eq!(j.waiting().len(), 1);
        let mut k = Job::new(b"r"[..].into(), 0, Opts::default());
        k.set_waiting(vec![b"t"[..].into()]);
        k.set_waiting(vec![]);
        assert!(k.more.is_none(), "back to no out-of-line part");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(100, 1, 1 << 40), 100);
        assert_eq!(backoff_delay(100, 2, 1 << 40), 200);
        assert_eq!(backoff_delay(100, 4, 1 << 40), 800);
        assert_eq!(backoff_delay(1 << 39, 3, 1 << 40), 1 << 40);
        assert_eq!(backoff_delay(1, 64, 1 << 40), 1 << 40);
        assert_eq!(backoff_delay(1, 65, 1 << 40), 1 << 40);
        assert_eq!(backoff_delay(1, u32::MAX, 1 << 40), 1 << 40);
    }
}
