//! Pending jobs nobody works on, in pull order: the highest priority first, the oldest id
//! within a priority. First, insert, remove and lookup by id are O(log n); listing from any
//! job's place is O(log n + count).
//!
//! Jobs of priority 0 (every job created without PRIORITY) live in a map by id, exactly as
//! before priorities existed, so they cost nothing more; jobs of a higher priority live in a map
//! by (priority, id) with an id → priority index to find them by id. Every job of priority > 0
//! comes before every job of priority 0, so pull order is the first map, then the second.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;

use super::record::Job;

/// A job's place in pull order.
pub type Place = (Reverse<u32>, u64);

pub fn place(priority: u32, id: u64) -> Place {
    (Reverse(priority), id)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pullable {
    /// Priority 0, by id.
    zero: BTreeMap<u64, Job>,
    /// Priority > 0, by place.
    ranked: BTreeMap<Place, Job>,
    /// id → priority of the jobs in `ranked`.
    rank: BTreeMap<u64, u32>,
}

impl Pullable {
    pub fn len(&self) -> usize {
        self.zero.len() + self.ranked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zero.is_empty() && self.ranked.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.zero.contains_key(&id) || self.rank.contains_key(&id)
    }

    pub fn get(&self, id: u64) -> Option<&Job> {
        match self.rank.get(&id) {
            Some(&p) => self.ranked.get(&place(p, id)),
            None => self.zero.get(&id),
        }
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Job> {
        match self.rank.get(&id) {
            Some(&p) => self.ranked.get_mut(&place(p, id)),
            None => self.zero.get_mut(&id),
        }
    }

    /// Adds a job (at its priority's place). False if the id is already here.
    pub fn insert(&mut self, id: u64, job: Job) -> bool {
        if self.contains(id) {
            return false;
        }
        match job.priority {
            0 => {
                self.zero.insert(id, job);
            }
            p => {
                self.rank.insert(id, p);
                self.ranked.insert(place(p, id), job);
            }
        }
        true
    }

    pub fn remove(&mut self, id: u64) -> Option<Job> {
        match self.rank.remove(&id) {
            Some(p) => self.ranked.remove(&place(p, id)),
            None => self.zero.remove(&id),
        }
    }

    /// The job PULL takes.
    pub fn first(&self) -> Option<(u64, &Job)> {
        match self.ranked.first_key_value() {
            Some((&(_, id), job)) => Some((id, job)),
            None => self.zero.first_key_value().map(|(&id, job)| (id, job)),
        }
    }

    /// Every job, in pull order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Job)> {
        self.ranked
            .iter()
            .map(|(&(_, id), j)| (id, j))
            .chain(self.zero.iter().map(|(&id, j)| (id, j)))
    }

    /// The jobs after `after` in pull order (`after` need not be here).
    pub fn iter_after(&self, after: Place) -> impl Iterator<Item = (u64, &Job)> {
        let (Reverse(p), id) = after;
        let ranked = (p > 0).then(|| {
            self.ranked
                .range((Bound::Excluded(after), Bound::Unbounded))
                .map(|(&(_, id), j)| (id, j))
        });
        let zero_from = if p > 0 {
            Bound::Unbounded
        } else {
            Bound::Excluded(id)
        };
        ranked.into_iter().flatten().chain(
            self.zero
                .range((zero_from, Bound::Unbounded))
                .map(|(&id, j)| (id, j)),
        )
    }

    /// The jobs of priority 0 and of higher priorities, for memory estimates.
    pub fn parts(&self) -> (&BTreeMap<u64, Job>, &BTreeMap<Place, Job>) {
        (&self.zero, &self.ranked)
    }

    /// True when every job sits at its own priority's place and the index matches.
    pub fn is_consistent(&self) -> bool {
        self.zero.values().all(|j| j.priority == 0)
            && self.rank.len() == self.ranked.len()
            && self.ranked.iter().all(|(&(Reverse(p), id), j)| {
                p > 0 && j.priority == p && self.rank.get(&id) == Some(&p)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(p: u32) -> Job {
        Job {
            priority: p,
            ..Job::default()
        }
    }

    /// Random inserts, removes and pulls against a plain Vec sorted on demand.
    #[test]
    fn matches_model() {
        let mut p = Pullable::default();
        let mut model: Vec<(u32, u64)> = Vec::new();
        let mut rnd = crate::engine::testing::rnd(0x1234_5678_9abc_def1u64);
        for step in 0..20_000u64 {
            let id = rnd(300);
            let prio = [0, 0, 1, 7, u32::MAX][rnd(5) as usize];
            match rnd(4) {
                0 | 1 => {
                    let fresh = !model.iter().any(|m| m.1 == id);
                    assert_eq!(p.insert(id, job(prio)), fresh);
                    if fresh {
                        model.push((prio, id));
                    }
                }
                2 => {
                    let got = p.remove(id).map(|j| j.priority);
                    let want = model
                        .iter()
                        .position(|m| m.1 == id)
                        .map(|i| model.remove(i).0);
                    assert_eq!(got, want);
                }
                _ => {
                    // Pull order: highest priority, then lowest id.
                    let mut sorted = model.clone();
                    sorted.sort_by_key(|&(pr, id)| (Reverse(pr), id));
                    let got: Vec<u64> = p.iter().map(|(id, _)| id).collect();
                    let want: Vec<u64> = sorted.iter().map(|m| m.1).collect();
                    assert_eq!(got, want);
                    assert_eq!(p.first().map(|(id, _)| id), want.first().copied());
                    if let Some(&(pr, at)) = sorted.get(rnd(sorted.len() as u64 + 1) as usize) {
                        let after: Vec<u64> =
                            p.iter_after(place(pr, at)).map(|(id, _)| id).collect();
                        let i = sorted.iter().position(|m| m.1 == at).unwrap();
                        assert_eq!(after, want[i + 1..], "after {at} (step {step})");
                    }
                    // From a place that is not in the map (e.g. a job pulled since).
                    let (pr, at) = (prio, id);
                    let after: Vec<u64> = p.iter_after(place(pr, at)).map(|(id, _)| id).collect();
                    let want_after: Vec<u64> = sorted
                        .iter()
                        .filter(|&&m| (Reverse(m.0), m.1) > (Reverse(pr), at))
                        .map(|m| m.1)
                        .collect();
                    assert_eq!(after, want_after);
                }
            }
            assert_eq!(p.len(), model.len());
            assert!(p.is_consistent());
            for &(pr, id) in model.iter().take(3) {
                assert_eq!(p.get(id).map(|j| j.priority), Some(pr));
            }
        }
    }
}
