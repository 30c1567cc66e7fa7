//! A set of deadlines, one per item, ordered by time: "what is due", "what is next", "what is
//! last" in O(log n). Pure. The scheduler uses it for keys; families use it for their leases.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::Hash;

use ahash::AHashMap;

#[derive(Debug, Clone)]
pub struct DeadlineIndex<K: Ord + Hash + Eq + Clone> {
    at: AHashMap<K, u64>,
    order: BTreeSet<(u64, K)>,
}

impl<K: Ord + Hash + Eq + Clone> Default for DeadlineIndex<K> {
    fn default() -> Self {
        Self {
            at: AHashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Hash + Eq + Clone> DeadlineIndex<K> {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    pub fn get<Q>(&self, k: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.at.get(k).copied()
    }

    /// Sets (or moves) `k`'s deadline.
    pub fn set(&mut self, k: K, at: u64) {
        if let Some(old) = self.at.insert(k.clone(), at) {
            if old == at {
                return;
            }
            self.order.remove(&(old, k.clone()));
        }
        self.order.insert((at, k));
    }

    /// Sets `k`'s deadline only if it has none or a later one (keeps the earliest).
    pub fn set_earlier(&mut self, k: K, at: u64) {
        match self.at.get(&k) {
            Some(&old) if old <= at => {}
            _ => self.set(k, at),
        }
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (key, at) = self.at.remove_entry(k)?;
        self.order.remove(&(at, key));
        Some(at)
    }

    pub fn earliest(&self) -> Option<u64> {
        self.order.first().map(|(at, _)| *at)
    }

    pub fn latest(&self) -> Option<u64> {
        self.order.last().map(|(at, _)| *at)
    }

    /// Removes and returns every item whose deadline is ≤ `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if *at > now {
                break;
            }
            if let Some((_, k)) = self.order.pop_first() {
                self.at.remove(&k);
                due.push(k);
            }
        }
        due
    }

    /// Items whose deadline is ≤ `now`, earliest first, without removing them.
    pub fn due(&self, now: u64) -> impl Iterator<Item = &K> {
        self.order
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, k)| k)
    }

    /// Items in deadline order (ties by item order): deterministic, for digests and replies.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &K)> {
        self.order.iter().map(|(at, k)| (*at, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Model check against a plain Vec with random operations.
    #[test]
    fn matches_model() {
        let mut idx: DeadlineIndex<u32> = DeadlineIndex::default();
        let mut model: Vec<(u32, u64)> = Vec::new();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let k = rnd(50) as u32;
            let at = rnd(1000);
            match rnd(5) {
                0 | 1 => {
                    idx.set(k, at);
                    model.retain(|(mk, _)| *mk != k);
                    model.push((k, at));
                }
                2 => {
                    idx.set_earlier(k, at);
                    match model.iter_mut().find(|(mk, _)| *mk == k) {
                        Some((_, old)) => *old = (*old).min(at),
                        None => model.push((k, at)),
                    }
                }
                3 => {
                    let got = idx.remove(&k);
                    let want = model
                        .iter()
                        .position(|(mk, _)| *mk == k)
                        .map(|i| model.remove(i).1);
                    assert_eq!(got, want);
                }
                _ => {
                    let now = rnd(1000);
                    let mut got = idx.pop_due(now);
                    let mut want: Vec<u32> = model
                        .iter()
                        .filter(|(_, a)| *a <= now)
                        .map(|(k, _)| *k)
                        .collect();
                    model.retain(|(_, a)| *a > now);
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(idx.len(), model.len());
            assert_eq!(idx.earliest(), model.iter().map(|(_, a)| *a).min());
            assert_eq!(idx.latest(), model.iter().map(|(_, a)| *a).max());
        }
    }

    #[test]
    fn borrowed_lookup() {
        let mut idx: DeadlineIndex<std::rc::Rc<[u8]>> = DeadlineIndex::default();
        idx.set(std::rc::Rc::from(&b"key"[..]), 5);
        assert_eq!(idx.get(&b"key"[..]), Some(5));
        assert_eq!(idx.remove(&b"key"[..]), Some(5));
        assert!(idx.is_empty());
    }
}
