//! A set of slot numbers as a hierarchical bitmap: the lowest number not in the set, insert and
//! remove, each in O(log64 n) word operations, at one bit per number up to the highest one held
//! (plus 1/63 for the summaries). Pure.
//!
//! Level 0 has one bit per slot (set = held). Level k+1 has one bit per word of level k, set when
//! that word is full (all 64 bits set). The lowest free slot is found by descending from the top
//! level, always into the first child that is not full.
//!
//! It serializes as its level-0 words only (the summaries are rebuilt on load), so equal sets
//! encode to equal bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const FULL: u64 = !0;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotBits {
    /// `levels[0]`: bit s of the set. `levels[k + 1]`: bit j set ⇔ word j of `levels[k]` is full.
    /// Shape (kept by `reshape`): level 0 has no trailing zero word (an empty set has no levels);
    /// every other level has `ceil(len below / 64)` words; the top level has at most one word.
    levels: Vec<Vec<u64>>,
    count: u64,
}

impl SlotBits {
    /// A set from its level-0 words (trailing zero words are dropped).
    pub fn from_words(mut words: Vec<u64>) -> Self {
        while words.last() == Some(&0) {
            words.pop();
        }
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        let n = words.len();
        let mut bits = Self {
            levels: vec![words],
            count,
        };
        bits.reshape(n);
        bits
    }

    /// Level-0 words: bit `s % 64` of word `s / 64` is slot `s`.
    pub fn words(&self) -> &[u64] {
        self.levels.first().map_or(&[], |l| &l[..])
    }

    /// Number of slots in the set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// One past the last slot level 0 has room for: every slot ≥ this is free.
    pub fn end(&self) -> u64 {
        self.words().len() as u64 * 64
    }

    pub fn contains(&self, slot: u64) -> bool {
        let w = usize::try_from(slot / 64).unwrap_or(usize::MAX);
        self.words()
            .get(w)
            .is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }

    /// The lowest slot not in the set.
    pub fn lowest_free(&self) -> u64 {
        let mut index: u64 = 0;
        for level in self.levels.iter().rev() {
            let word = usize::try_from(index)
                .ok()
                .and_then(|i| level.get(i))
                .copied()
                .unwrap_or(0);
            let bit = u64::from(word.trailing_ones());
            if bit == 64 {
                // Only the top word can be full: then every word below is full too.
                return self.end();
            }
            index = index * 64 + bit;
        }
        index
    }

    /// Adds `slot`; false if it was already in the set. Level 0 grows to reach `slot`: callers
    /// bound it (the pool only inserts slots ≤ `end()`).
    pub fn insert(&mut self, slot: u64) -> bool {
        let Ok(w) = usize::try_from(slot / 64) else {
            return false;
        };
        if w >= self.words().len() {
            self.reshape(w + 1);
        }
        let mask = 1u64 << (slot % 64);
        let word = &mut self.levels[0][w];
        if *word & mask != 0 {
            return false;
        }
        *word |= mask;
        self.count += 1;
        // A word that became full sets its bit one level up, and so on.
        let mut full = *word == FULL;
        let mut index = w;
        for level in self.levels.iter_mut().skip(1) {
            if !full {
                break;
            }
            let word = &mut level[index / 64];
            *word |= 1 << (index % 64);
            full = *word == FULL;
            index /= 64;
        }
        true
    }

    /// Removes `slot`; false if it was not in the set.
    pub fn remove(&mut self, slot: u64) -> bool {
        let Ok(w) = usize::try_from(slot / 64) else {
            return false;
        };
        let mask = 1u64 << (slot % 64);
        let Some(word) = self.levels.first_mut().and_then(|l| l.get_mut(w)) else {
            return false;
        };
        if *word & mask == 0 {
            return false;
        }
        // A word that was full clears its bit one level up, and so on.
        let mut was_full = *word == FULL;
        *word &= !mask;
        self.count -= 1;
        let mut index = w;
        for level in self.levels.iter_mut().skip(1) {
            if !was_full {
                break;
            }
            let word = &mut level[index / 64];
            was_full = *word == FULL;
            *word &= !(1 << (index % 64));
            index /= 64;
        }
        let words = self.words();
        if w + 1 == words.len() && words[w] == 0 {
            let keep = words.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
            self.reshape(keep);
        }
        true
    }

    /// Heap bytes, counted from the vectors' capacities.
    pub fn mem_bytes(&self) -> usize {
        self.levels.capacity() * std::mem::size_of::<Vec<u64>>()
            + self.levels.iter().map(|l| l.capacity() * 8).sum::<usize>()
    }

    /// Gives level 0 `n` words (new ones zero; only trailing zero words may be cut) and brings
    /// the summaries to their shape.
    fn reshape(&mut self, n: usize) {
        if n == 0 {
            self.levels = Vec::new();
            return;
        }
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        set_len(&mut self.levels[0], n);
        let mut k = 0;
        while self.levels[k].len() > 1 {
            let need = self.levels[k].len().div_ceil(64);
            if self.levels.len() == k + 1 {
                // A new top level summarizes the level below as it is.
                let summary = summarize(&self.levels[k]);
                self.levels.push(summary);
            } else {
                // Words added below are zero (not full), words cut were zero: their bits are 0.
                set_len(&mut self.levels[k + 1], need);
            }
            k += 1;
        }
        self.levels.truncate(k + 1);
    }
}

/// One bit per word of `words`: set when the word is full.
fn summarize(words: &[u64]) -> Vec<u64> {
    let mut out = vec![0u64; words.len().div_ceil(64)];
    for (i, &w) in words.iter().enumerate() {
        if w == FULL {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

/// Resizes to `n` words, growing capacity by an eighth rather than doubling (a bitmap of 10
/// million slots would otherwise carry up to 1.2 MB of unused capacity), and giving memory back
/// when a vector has shrunk to under half its capacity.
fn set_len(v: &mut Vec<u64>, n: usize) {
    if n > v.capacity() {
        let len = v.len();
        v.reserve_exact((n - len).max(len / 8).max(4));
    }
    v.resize(n, 0);
    if v.capacity() > 2 * n + 16 {
        v.shrink_to(n + n / 8);
    }
}

impl Serialize for SlotBits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.words().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SlotBits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u64>::deserialize(d).map(Self::from_words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    impl SlotBits {
        fn iter(&self) -> impl Iterator<Item = u64> + '_ {
            self.words().iter().enumerate().flat_map(|(i, &w)| {
                (0..64u64)
                    .filter(move |b| w & (1 << b) != 0)
                    .map(move |b| i as u64 * 64 + b)
            })
        }

        fn check_shape(&self) {
            assert!(
                self.words().last().is_none_or(|&w| w != 0),
                "no trailing zero word"
            );
            assert_eq!(self.levels.is_empty(), self.words().is_empty());
            for k in 1..self.levels.len() {
                assert_eq!(summarize(&self.levels[k - 1]), self.levels[k], "level {k}");
            }
            assert!(self.levels.last().is_none_or(|l| l.len() <= 1));
            assert_eq!(self.count, self.iter().count() as u64);
        }
    }

    fn model_lowest(m: &BTreeSet<u64>) -> u64 {
        (0..).find(|s| !m.contains(s)).unwrap()
    }

    fn filled(n: u64) -> SlotBits {
        let mut b = SlotBits::default();
        for s in 0..n {
            assert_eq!(b.lowest_free(), s);
            assert!(b.insert(s));
        }
        b
    }

    /// Random inserts and removes, checked against a BTreeSet after every step.
    #[test]
    fn matches_model() {
        let mut rnd = crate::engine::testing::rnd(0x2545f4914f6cdd1du64);
        for range in [70u64, 300, 5000, 300_000] {
            let mut bits = SlotBits::default();
            let mut model = BTreeSet::new();
            for step in 0..20_000 {
                match rnd(4) {
                    // The pool's own move: take the lowest free slot.
                    0 | 1 => {
                        let s = bits.lowest_free();
                        assert_eq!(s, model_lowest(&model), "step {step}");
                        assert!(bits.insert(s));
                        model.insert(s);
                    }
                    2 => {
                        let s = rnd(range);
                        assert_eq!(bits.insert(s), model.insert(s));
                    }
                    _ => {
                        let s = rnd(range);
                        assert_eq!(bits.remove(s), model.remove(&s));
                    }
                }
                assert_eq!(bits.count(), model.len() as u64);
                assert_eq!(bits.lowest_free(), model_lowest(&model));
                if step % 997 == 0 {
                    bits.check_shape();
                    assert!(bits.iter().eq(model.iter().copied()));
                }
            }
            bits.check_shape();
        }
    }

    /// The lowest free slot at every level boundary (one word, one summary word, two levels…).
    #[test]
    fn lowest_free_across_level_boundaries() {
        let n = 64 * 64 * 64 + 130; // past three levels
        let mut b = filled(n);
        b.check_shape();
        assert_eq!(b.lowest_free(), n);
        for s in [
            0u64, 62, 63, 64, 65, 127, 128, 4095, 4096, 4097, 262_143, 262_144, 262_145,
        ] {
            assert!(b.remove(s));
            assert_eq!(b.lowest_free(), s, "after removing {s}");
            assert!(!b.contains(s));
            assert!(b.insert(s));
            assert_eq!(b.lowest_free(), n);
        }
        // Remove several: always the lowest first.
        for s in [262_144u64, 4096, 64, 63] {
            b.remove(s);
        }
        for s in [63u64, 64, 4096, 262_144, n] {
            assert_eq!(b.lowest_free(), s);
            b.insert(s);
        }
        b.check_shape();
    }

    #[test]
    fn exact_powers_fill_and_grow() {
        for n in [1u64, 63, 64, 65, 4095, 4096, 4097, 64 * 4096] {
            let mut b = filled(n);
            b.check_shape();
            assert_eq!(b.lowest_free(), n);
            assert!(b.end() >= n);
            assert!(b.insert(n));
            b.check_shape();
        }
    }

    #[test]
    fn emptying_trims_to_nothing() {
        let mut b = filled(5000);
        for s in (0..5000).rev() {
            assert!(b.remove(s));
            if s % 500 == 0 {
                b.check_shape();
            }
        }
        assert_eq!(b, SlotBits::default());
        assert_eq!(b.mem_bytes(), 0);
        assert!(!b.remove(0));
        assert_eq!(b.lowest_free(), 0);
        // A high slot alone keeps only the words up to it.
        assert!(b.insert(1000));
        assert!(b.remove(1000));
        assert_eq!(b.words().len(), 0);
    }

    #[test]
    fn serde_round_trip_rebuilds_summaries() {
        let mut b = filled(10_000);
        for s in (0..10_000).step_by(3) {
            b.remove(s);
        }
        let bytes = crate::engine::codec::encode(&b);
        assert_eq!(bytes.len(), 8 + 8 * b.words().len(), "words only");
        let back: SlotBits = crate::engine::codec::decode(&bytes).unwrap();
        assert_eq!(back, b);
        back.check_shape();
        // Trailing zero words from a hand-made payload are dropped.
        let c = SlotBits::from_words(vec![!0, 0, 0]);
        assert_eq!(c.words(), &[!0]);
        assert_eq!(c.lowest_free(), 64);
    }

    #[test]
    fn one_million_slots_cost_about_one_bit_each() {
        let b = filled(1_000_000);
        // 1,000,000 bits = 125,000 bytes; growth by an eighth keeps slack small.
        assert!(b.mem_bytes() <= 145_000, "{}", b.mem_bytes());
    }
}
