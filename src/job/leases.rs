//! A job store's lease tables: work leases (on pending jobs, which the table holds while they
//! are leased) and notification leases (on fulfilled jobs). Found by job id, ordered by
//! deadline (what lapses next, what LIST shows), and by worker: a worker holds at most one lease
//! of each kind, so its PULL can find the job it holds (the idempotent re-grant).

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use super::record::Worker;
use super::timed::Timed;

/// A lease: who holds it, under which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker: Worker,
    pub token: u64,
}

/// One leased job: its lease, and what the table keeps with it. (Its deadline is the table's
/// time for it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held<V> {
    pub lease: Lease,
    pub value: V,
}

/// A lease table: the leased jobs ordered by deadline (`Timed`, as delayed and retained jobs
/// are), plus the index by worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leases<V> {
    table: Timed<Held<V>>,
    /// Derived: worker → the job it holds here.
    holders: AHashMap<Worker, u64>,
}

impl<V> Default for Leases<V> {
    fn default() -> Self {
        Self {
            table: Timed::default(),
            holders: AHashMap::new(),
        }
    }
}

impl<V> Leases<V> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.table.contains(id)
    }

    /// (deadline, held).
    pub fn get(&self, id: u64) -> Option<(u64, &Held<V>)> {
        self.table.get(id)
    }

    pub fn value_mut(&mut self, id: u64) -> Option<&mut V> {
        self.table.get_mut(id).map(|h| &mut h.value)
    }

    /// The job `worker` holds a lease on here.
    pub fn held_by(&self, worker: &[u8]) -> Option<u64> {
        self.holders.get(worker).copied()
    }

    /// Adds a lease. Refused (nothing changes) if the job is leased or the worker holds one.
    pub fn insert(
        &mut self,
        id: u64,
        deadline: u64,
        lease: Lease,
        value: V,
    ) -> Result<(), &'static str> {
        if self.table.contains(id) {
            return Err("job is already leased");
        }
        if self.holders.contains_key(&lease.worker) {
            return Err("worker already holds a lease of this kind");
        }
        self.holders.insert(lease.worker.clone(), id);
        self.table.insert(id, deadline, Held { lease, value });
        Ok(())
    }

    /// (deadline, held).
    pub fn remove(&mut self, id: u64) -> Option<(u64, Held<V>)> {
        let (deadline, h) = self.table.remove(id)?;
        if self.holders.get(&h.lease.worker) == Some(&id) {
            self.holders.remove(&h.lease.worker);
        }
        Some((deadline, h))
    }

    pub fn set_deadline(&mut self, id: u64, deadline: u64) -> bool {
        self.table.set_time(id, deadline)
    }

    pub fn earliest(&self) -> Option<u64> {
        self.table.earliest()
    }

    /// Ids whose lease deadline is ≤ `now`, earliest first.
    pub fn due(&self, now: u64) -> impl Iterator<Item = u64> + '_ {
        self.table.due(now)
    }

    /// (id, deadline, held), by deadline (ties by id).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &Held<V>)> {
        self.table.iter()
    }

    /// As `iter`, after the lease at (deadline, id).
    pub fn iter_after(&self, deadline: u64, id: u64) -> impl Iterator<Item = (u64, u64, &Held<V>)> {
        self.table.iter_after(deadline, id)
    }

    /// The worker index, for consistency checks.
    pub fn holders(&self) -> &AHashMap<Worker, u64> {
        &self.holders
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lease(w: &str, token: u64) -> Lease {
        Lease {
            worker: Arc::from(w.as_bytes()),
            token,
        }
    }

    #[test]
    fn one_lease_per_job_and_per_worker() {
        let mut l: Leases<()> = Leases::default();
        l.insert(1, 50, lease("a", 1), ()).unwrap();
        assert!(l.insert(1, 60, lease("b", 2), ()).is_err());
        assert!(l.insert(2, 60, lease("a", 2), ()).is_err());
        l.insert(2, 40, lease("b", 3), ()).unwrap();
        assert_eq!(l.held_by(b"a"), Some(1));
        assert_eq!(l.earliest(), Some(40));
        assert!(l.set_deadline(2, 70));
        assert_eq!(l.due(60).collect::<Vec<_>>(), vec![1]);
        assert_eq!(l.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            l.iter_after(50, 1).map(|e| e.0).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(l.remove(1).unwrap().1.lease.token, 1);
        assert_eq!(l.held_by(b"a"), None);
        assert!(!l.set_deadline(1, 5));
        assert_eq!(l.len(), 1);
    }
}
