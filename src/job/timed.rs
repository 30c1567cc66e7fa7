//! Jobs that something happens to at a time: delayed jobs (pending at their due time) and
//! finished jobs kept for a while (deleted at their retention deadline). Ordered by
//! (time, id), found by id; every operation O(log n), with no hash table to resize (a million
//! delayed jobs never stall a command on a rehash).

use std::collections::BTreeMap;
use std::ops::Bound;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<V> {
    order: BTreeMap<(u64, u64), V>,
    at: BTreeMap<u64, u64>,
}

impl<V> Default for Timed<V> {
    fn default() -> Self {
        Self {
            order: BTreeMap::new(),
            at: BTreeMap::new(),
        }
    }
}

impl<V> Timed<V> {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.at.contains_key(&id)
    }

    pub fn time(&self, id: u64) -> Option<u64> {
        self.at.get(&id).copied()
    }

    pub fn get(&self, id: u64) -> Option<(u64, &V)> {
        let &t = self.at.get(&id)?;
        self.order.get(&(t, id)).map(|v| (t, v))
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        let &t = self.at.get(&id)?;
        self.order.get_mut(&(t, id))
    }

    /// Adds or moves an entry; returns the one it replaced.
    pub fn insert(&mut self, id: u64, at: u64, v: V) -> Option<(u64, V)> {
        let old = self.remove(id);
        self.at.insert(id, at);
        self.order.insert((at, id), v);
        old
    }

    /// Moves an entry to time `at`; false if there is none.
    pub fn set_time(&mut self, id: u64, at: u64) -> bool {
        match self.remove(id) {
            Some((_, v)) => {
                self.insert(id, at, v);
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, id: u64) -> Option<(u64, V)> {
        let t = self.at.remove(&id)?;
        self.order.remove(&(t, id)).map(|v| (t, v))
    }

    /// The earliest time.
    pub fn earliest(&self) -> Option<u64> {
        self.order.first_key_value().map(|(&(t, _), _)| t)
    }

    /// Ids whose time is ≤ `now`, earliest first.
    pub fn due(&self, now: u64) -> impl Iterator<Item = u64> + '_ {
        self.order
            .keys()
            .take_while(move |&&(t, _)| t <= now)
            .map(|&(_, id)| id)
    }

    /// (id, time, value), earliest first (ties by id).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &V)> {
        self.order.iter().map(|(&(t, id), v)| (id, t, v))
    }

    /// As `iter`, after the entry at (time, id).
    pub fn iter_after(&self, at: u64, id: u64) -> impl Iterator<Item = (u64, u64, &V)> {
        self.order
            .range((Bound::Excluded((at, id)), Bound::Unbounded))
            .map(|(&(t, id), v)| (id, t, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.order.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_model() {
        let mut t: Timed<u8> = Timed::default();
        let mut model: Vec<(u64, u64, u8)> = Vec::new();
        let mut rnd = crate::engine::testing::rnd(0x0bad_cafe_f00d_1234u64);
        for step in 0..20_000u64 {
            let id = rnd(100);
            let at = rnd(500);
            match rnd(4) {
                0 | 1 => {
                    let old = t.insert(id, at, step as u8);
                    let i = model.iter().position(|m| m.0 == id);
                    assert_eq!(old, i.map(|i| (model[i].1, model[i].2)));
                    model.retain(|m| m.0 != id);
                    model.push((id, at, step as u8));
                }
                2 => {
                    let got = t.remove(id);
                    let i = model.iter().position(|m| m.0 == id);
                    assert_eq!(got, i.map(|i| (model[i].1, model[i].2)));
                    model.retain(|m| m.0 != id);
                }
                _ => {
                    let mut sorted = model.clone();
                    sorted.sort_by_key(|m| (m.1, m.0));
                    let due: Vec<u64> = t.due(at).collect();
                    let want: Vec<u64> = sorted.iter().filter(|m| m.1 <= at).map(|m| m.0).collect();
                    assert_eq!(due, want);
                    let after: Vec<u64> = t.iter_after(at, id).map(|e| e.0).collect();
                    let want: Vec<u64> = sorted
                        .iter()
                        .filter(|m| (m.1, m.0) > (at, id))
                        .map(|m| m.0)
                        .collect();
                    assert_eq!(after, want);
                }
            }
            assert_eq!(t.len(), model.len());
            assert_eq!(t.earliest(), model.iter().map(|m| m.1).min());
            assert_eq!(
                t.get(id).map(|(a, v)| (a, *v)),
                model.iter().find(|m| m.0 == id).map(|m| (m.1, m.2))
            );
        }
    }
}
