//! A map whose entries each carry a deadline, ordered by time: "what is due", "what is next",
//! "what is last" in O(log n), lookups by key in O(1). Pure.
//!
//! It is the engine's lease table: families keep their leases in one (holder → permit, slot →
//! lease, job → work lease), and the scheduler keeps keys in one (key → when to look at it).
//! It serializes as its entries in deadline order, so equal maps encode to equal bytes
//! (replica digests compare equal).

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use ahash::AHashMap;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub trait MapKey: Ord + Hash + Eq + Clone {}
impl<T: Ord + Hash + Eq + Clone> MapKey for T {}

#[derive(Clone)]
pub struct DeadlineMap<K: MapKey, V = ()> {
    entries: AHashMap<K, (u64, V)>,
    order: BTreeSet<(u64, K)>,
}

/// Deadlines without values (the scheduler's key set).
pub type DeadlineIndex<K> = DeadlineMap<K, ()>;

impl<K: MapKey, V> Default for DeadlineMap<K, V> {
    fn default() -> Self {
        Self {
            entries: AHashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<K: MapKey + fmt::Debug, V: fmt::Debug> fmt::Debug for DeadlineMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: MapKey, V: PartialEq> PartialEq for DeadlineMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
            && self
                .entries
                .iter()
                .all(|(k, (_, v))| other.entries.get(k).is_some_and(|(_, w)| v == w))
    }
}

impl<K: MapKey, V: Eq> Eq for DeadlineMap<K, V> {}

impl<K: MapKey, V> DeadlineMap<K, V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(k)
    }

    /// The stored key equal to `k` (e.g. to share an `Arc` instead of allocating a new one).
    pub fn key<Q>(&self, k: &Q) -> Option<&K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get_key_value(k).map(|(key, _)| key)
    }

    /// The entry's deadline and value.
    pub fn get<Q>(&self, k: &Q) -> Option<(u64, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(k).map(|(at, v)| (*at, v))
    }

    pub fn deadline<Q>(&self, k: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(k).map(|(at, _)| *at)
    }

    /// The entry's value, to change in place (its deadline changes only through `set_deadline`).
    pub fn value_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get_mut(k).map(|(_, v)| v)
    }

    /// Inserts or replaces an entry; returns the old one.
    pub fn insert(&mut self, k: K, at: u64, v: V) -> Option<(u64, V)> {
        let old = self.entries.insert(k.clone(), (at, v));
        if let Some((old_at, _)) = &old {
            self.order.remove(&(*old_at, k.clone()));
        }
        self.order.insert((at, k));
        old
    }

    /// Moves an existing entry's deadline. False if there is no such entry.
    pub fn set_deadline<Q>(&mut self, k: &Q, at: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some((key, (old, _))) = self.entries.get_key_value(k) else {
            return false;
        };
        let (key, old) = (key.clone(), *old);
        if old != at {
            self.order.remove(&(old, key.clone()));
            self.order.insert((at, key));
            if let Some(e) = self.entries.get_mut(k) {
                e.0 = at;
            }
        }
        true
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<(u64, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (key, (at, v)) = self.entries.remove_entry(k)?;
        self.order.remove(&(at, key));
        Some((at, v))
    }

    pub fn earliest(&self) -> Option<u64> {
        self.order.first().map(|(at, _)| *at)
    }

    pub fn latest(&self) -> Option<u64> {
        self.order.last().map(|(at, _)| *at)
    }

    /// Removes and returns the key of the earliest entry if its deadline is ≤ `now`.
    pub fn pop_first_due(&mut self, now: u64) -> Option<K> {
        if self.order.first().is_none_or(|(at, _)| *at > now) {
            return None;
        }
        let (_, k) = self.order.pop_first()?;
        self.entries.remove(&k);
        Some(k)
    }

    /// Keys of the entries whose deadline is ≤ `now`, earliest first, without removing them.
    pub fn due(&self, now: u64) -> impl Iterator<Item = &K> {
        self.order
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, k)| k)
    }

    /// Bytes of the map's own tables (not what keys and values point to): the hash table at its
    /// real capacity, and the ordered index's B-tree nodes (see [`btree_entry`]).
    pub fn table_bytes(&self) -> usize {
        hash_table_bytes(
            self.entries.capacity(),
            std::mem::size_of::<(K, (u64, V))>(),
        ) + self.order.len() * btree_entry(std::mem::size_of::<(u64, K)>())
    }

    /// Entries in deadline order (ties by key): deterministic, for digests and replies.
    pub fn iter(&self) -> impl Iterator<Item = (&K, u64, &V)> {
        self.order.iter().filter_map(|(at, k)| {
            let (_, v) = self.entries.get(k)?;
            Some((k, *at, v))
        })
    }
}

/// Heap bytes jemalloc (Redis's allocator) really spends on an `n`-byte allocation: its size
/// class (multiples of 8 up to 8, of 16 up to 128, then four classes per doubling).
pub fn heap(n: usize) -> usize {
    match n {
        0 => 0,
        1..=8 => 8,
        9..=128 => n.next_multiple_of(16),
        _ => {
            let log2 = (usize::BITS - 1 - (n - 1).leading_zeros()) as usize;
            n.next_multiple_of(1 << (log2 - 2))
        }
    }
}

/// Bytes per entry of a `BTreeMap` whose key and value take `kv` bytes: nodes of 11 slots
/// about 6/11 full (what ascending inserts and front removals leave), plus internal nodes
/// (12 more edge pointers each) at about one per 6 leaves.
pub fn btree_entry(kv: usize) -> usize {
    let leaf = (8 + 11 * kv + 4).next_multiple_of(8);
    heap(leaf) / 6 + heap(leaf + 12 * 8) / 36
}

/// Heap bytes of a hash table (std/hashbrown layout) that can hold `capacity` entries of
/// `entry` bytes: a power-of-two number of buckets at most 7/8 full, one control byte each.
pub fn hash_table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8).div_ceil(7).next_power_of_two();
    buckets * (entry + 1)
}

/// How many entries a memory estimate looks at. `MEMORY USAGE` must not walk a whole value
/// (a million-job store would block the server for tens of ms), so, as Redis does for its own
/// types, families count their tables from their capacities and the entries' own heap bytes as
/// `len × the average of a sample` of at most this many entries.
pub const MEM_SAMPLE: usize = 64;

/// The heap bytes of `len` entries, estimated from the first `sample` of `items` (`bytes` of
/// each): exact when `items` has no more than `sample` entries (`usize::MAX` walks them all).
/// Test helper for the families' `mem_usage`: a sampled estimate is within 10% of the exact
/// walk over every entry.
#[cfg(any(test, feature = "fuzzing"))]
pub fn assert_close(estimate: usize, exact: usize, what: &str) {
    let diff = estimate.abs_diff(exact);
    assert!(
        diff * 10 <= exact,
        "{what}: estimate {estimate} vs exact {exact} bytes"
    );
}

pub fn sampled<T>(
    len: usize,
    items: impl Iterator<Item = T>,
    sample: usize,
    mut bytes: impl FnMut(T) -> usize,
) -> usize {
    let (mut n, mut sum) = (0usize, 0usize);
    for item in items.take(sample) {
        n += 1;
        sum = sum.saturating_add(bytes(item));
    }
    if n == 0 || n >= len {
        return sum;
    }
    let scaled = sum as u128 * len as u128 / n as u128;
    usize::try_from(scaled).unwrap_or(usize::MAX)
}

impl<K: MapKey> DeadlineMap<K, ()> {
    /// Sets `k`'s deadline only if it has none or a later one (keeps the earliest).
    pub fn set_earlier(&mut self, k: K, at: u64) {
        match self.deadline(&k) {
            Some(old) if old <= at => {}
            _ => {
                self.insert(k, at, ());
            }
        }
    }
}

impl<K: MapKey + Serialize, V: Serialize> Serialize for DeadlineMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (k, at, v) in self.iter() {
            seq.serialize_element(&(k, at, v))?;
        }
        seq.end()
    }
}

impl<'de, K: MapKey + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de>
    for DeadlineMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K: MapKey + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
            type Value = DeadlineMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence of (key, deadline, value)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut map = DeadlineMap::default();
                while let Some((k, at, v)) = seq.next_element::<(K, u64, V)>()? {
                    if map.insert(k, at, v).is_some() {
                        return Err(serde::de::Error::custom("duplicate key"));
                    }
                }
                Ok(map)
            }
        }
        d.deserialize_seq(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Model check against a plain Vec with random operations.
    #[test]
    fn matches_model() {
        let mut map: DeadlineMap<u32, u8> = DeadlineMap::default();
        let mut model: Vec<(u32, u64, u8)> = Vec::new();
        let mut rnd = crate::engine::testing::rnd(0x9e3779b97f4a7c15u64);
        for step in 0..20_000 {
            let k = rnd(50) as u32;
            let at = rnd(1000);
            let v = (step % 251) as u8;
            match rnd(5) {
                0 => {
                    map.insert(k, at, v);
                    model.retain(|e| e.0 != k);
                    model.push((k, at, v));
                }
                1 => {
                    let moved = map.set_deadline(&k, at);
                    let m = model.iter_mut().find(|e| e.0 == k);
                    assert_eq!(moved, m.is_some());
                    if let Some(e) = m {
                        e.1 = at;
                    }
                }
                2 => {
                    let got = map.remove(&k);
                    let want = model.iter().position(|e| e.0 == k).map(|i| model.remove(i));
                    assert_eq!(got, want.map(|e| (e.1, e.2)));
                }
                3 => {
                    let now = rnd(1000);
                    let mut got: Vec<u32> = std::iter::from_fn(|| map.pop_first_due(now)).collect();
                    let mut want: Vec<u32> =
                        model.iter().filter(|e| e.1 <= now).map(|e| e.0).collect();
                    model.retain(|e| e.1 > now);
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want);
                }
                _ => {
                    assert_eq!(
                        map.get(&k),
                        model.iter().find(|e| e.0 == k).map(|e| (e.1, &e.2))
                    );
                }
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.earliest(), model.iter().map(|e| e.1).min());
            assert_eq!(map.latest(), model.iter().map(|e| e.1).max());
            let times: Vec<u64> = map.iter().map(|(_, at, _)| at).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn serde_round_trip_is_deterministic() {
        let mut a: DeadlineMap<u32, String> = DeadlineMap::default();
        let mut b: DeadlineMap<u32, String> = DeadlineMap::default();
        for i in 0..100u32 {
            a.insert(i, u64::from(i % 7), i.to_string());
        }
        for i in (0..100u32).rev() {
            b.insert(i, u64::from(i % 7), i.to_string());
        }
        let (ea, eb) = (
            crate::engine::codec::encode(&a),
            crate::engine::codec::encode(&b),
        );
        assert_eq!(ea, eb, "insertion order does not matter");
        let back: DeadlineMap<u32, String> = crate::engine::codec::decode(&ea).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn scheduler_keeps_earliest_and_borrows() {
        let mut idx: DeadlineIndex<std::rc::Rc<[u8]>> = DeadlineIndex::default();
        idx.set_earlier(std::rc::Rc::from(&b"key"[..]), 5);
        idx.set_earlier(std::rc::Rc::from(&b"key"[..]), 9);
        assert_eq!(idx.deadline(&b"key"[..]), Some(5));
        assert!(idx.remove(&b"key"[..]).is_some());
        assert!(idx.is_empty());
    }
}
