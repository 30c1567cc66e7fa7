//! The wait queues, pure: clients blocked on keys, FIFO per key and *lane*, findable by key, by
//! client, and by arrival in BLOCK-deadline order (for those that have a deadline). Generic
//! over what a waiter carries (the engine's `Waiter` holds a blocked client and its request),
//! so it is model-tested here without Redis; `state.rs` owns the engine's instance and
//! `waiters.rs` does the blocking.
//!
//! A key's queue is split into lanes (`Primitive::lane`): requests that compete for the same
//! thing share a lane and are served strictly in arrival order; requests in different lanes do
//! not hold each other up (a job store's PULL and PULLNOTIFY waiters, DRAIN waiters for different
//! instances). A waiter leaves exactly once, by whichever removal reaches it first.

use std::collections::BTreeMap;

use ahash::AHashMap;

use super::deadlines::DeadlineMap;
use super::keys::KeyRef;

/// Arrival numbers increase with every push: FIFO order, and a waiter's id.
pub type Arrival = u64;

/// A client, as the caller identifies it (the blocked client's handle).
pub type Client = usize;

/// A waiter's place in its key's queue: lane first, then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub lane: u64,
    pub arrival: Arrival,
}

struct Entry<W> {
    client: Client,
    waiter: W,
}

pub struct Queues<W> {
    by_key: AHashMap<KeyRef, BTreeMap<Place, Entry<W>>>,
    by_client: AHashMap<Client, (KeyRef, Place)>,
    /// The waiters that have a BLOCK deadline, by arrival, with where they wait.
    timeouts: DeadlineMap<Arrival, (KeyRef, Place)>,
    next: Arrival,
}

impl<W> Default for Queues<W> {
    fn default() -> Self {
        Self {
            by_key: AHashMap::new(),
            by_client: AHashMap::new(),
            timeouts: DeadlineMap::default(),
            next: 0,
        }
    }
}

impl<W> Queues<W> {
    /// Queues `waiter` for `client` on `key` in `lane`, with an optional BLOCK deadline.
    pub fn push(
        &mut self,
        key: &[u8],
        lane: u64,
        client: Client,
        deadline: Option<u64>,
        waiter: W,
    ) -> Arrival {
        let arrival = self.next;
        self.next += 1;
        let place = Place { lane, arrival };
        let k: KeyRef = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => KeyRef::from(key),
        };
        self.by_client.insert(client, (k.clone(), place));
        if let Some(at) = deadline {
            self.timeouts.insert(arrival, at, (k.clone(), place));
        }
        self.by_key
            .entry(k)
            .or_default()
            .insert(place, Entry { client, waiter });
        arrival
    }

    /// True when anyone waits on any key (a check that needs no key name).
    pub fn anyone_waiting(&self) -> bool {
        !self.by_client.is_empty()
    }

    pub fn is_waiting(&self, key: &[u8]) -> bool {
        self.anyone_waiting() && self.by_key.contains_key(key)
    }

    /// True when someone waits on `key` in `lane`.
    pub fn lane_waiting(&self, key: &[u8], lane: u64) -> bool {
        self.head(key, lane).is_some_and(|(p, _)| p.lane == lane)
    }

    pub fn len(&self, key: &[u8]) -> usize {
        self.by_key.get(key).map_or(0, BTreeMap::len)
    }

    /// The first waiter of the first lane ≥ `from_lane` that has one: the next to serve there.
    pub fn head(&self, key: &[u8], from_lane: u64) -> Option<(Place, &W)> {
        let from = Place {
            lane: from_lane,
            arrival: 0,
        };
        let (&place, e) = self.by_key.get(key)?.range(from..).next()?;
        Some((place, &e.waiter))
    }

    /// The waiter first in line on `key` (lane 0 first), e.g. to tell its family.
    pub fn front(&self, key: &[u8]) -> Option<(Place, &W)> {
        self.head(key, 0)
    }

    /// Keys with waiters, those for which `keep` holds.
    pub fn keys(&self, keep: impl Fn(&[u8]) -> bool) -> Vec<KeyRef> {
        self.by_key.keys().filter(|k| keep(k)).cloned().collect()
    }

    /// Removes the waiter at `place` on `key`.
    pub fn remove(&mut self, key: &[u8], place: Place) -> Option<W> {
        let q = self.by_key.get_mut(key)?;
        let e = q.remove(&place)?;
        if q.is_empty() {
            self.by_key.remove(key);
        }
        self.by_client.remove(&e.client);
        self.timeouts.remove(&place.arrival);
        Some(e.waiter)
    }

    /// Removes `client`'s waiter (it disconnected).
    pub fn remove_client(&mut self, client: Client) -> Option<(KeyRef, W)> {
        let (k, place) = self.by_client.get(&client)?.clone();
        self.remove(&k, place).map(|w| (k, w))
    }

    /// Removes one waiter whose BLOCK deadline is ≤ `now` (earliest first).
    pub fn pop_timed_out(&mut self, now: u64) -> Option<(KeyRef, W)> {
        let arrival = *self.timeouts.due(now).next()?;
        let (_, (k, place)) = self.timeouts.get(&arrival)?;
        let (k, place) = (k.clone(), *place);
        self.remove(&k, place).map(|w| (k, w))
    }

    /// The earliest BLOCK deadline of any waiter.
    pub fn earliest_timeout(&self) -> Option<u64> {
        self.timeouts.earliest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, lane, client, BLOCK deadline, arrival)
    type Modeled = (Vec<u8>, u64, Client, Option<u64>, Arrival);

    /// The reference: every waiter in one list, in arrival order.
    #[derive(Default)]
    struct Model {
        waiters: Vec<Modeled>,
    }

    impl Model {
        fn head(&self, key: &[u8], from_lane: u64) -> Option<Arrival> {
            self.waiters
                .iter()
                .filter(|w| w.0 == key && w.1 >= from_lane)
                .min_by_key(|w| (w.1, w.4))
                .map(|w| w.4)
        }

        fn remove(&mut self, arrival: Arrival) -> Option<Arrival> {
            let i = self.waiters.iter().position(|w| w.4 == arrival)?;
            Some(self.waiters.remove(i).4)
        }
    }

    #[test]
    fn agrees_with_a_list_under_random_operations() {
        for seed in 1..200u64 {
            let mut rnd = crate::engine::testing::rnd(seed * 0x9e37_79b9_7f4a_7c15);
            let mut q: Queues<Arrival> = Queues::default();
            let mut m = Model::default();
            let mut now = 0;
            let mut next_client = 0;
            for _ in 0..300 {
                let key = vec![b'k', rnd(3) as u8];
                match rnd(7) {
                    0..=2 => {
                        let lane = rnd(3);
                        let deadline = (rnd(2) == 0).then(|| now + rnd(50));
                        next_client += 1;
                        let expect = q.next;
                        let a = q.push(&key, lane, next_client, deadline, expect);
                        assert_eq!(a, expect);
                        m.waiters.push((key, lane, next_client, deadline, a));
                    }
                    3 => {
                        // Serve the head of a lane.
                        let lane = rnd(3);
                        let got = q.head(&key, lane).map(|(p, &w)| (p, w));
                        assert_eq!(got.map(|g| g.1), m.head(&key, lane), "head");
                        if let Some((p, w)) = got {
                            assert_eq!(q.remove(&key, p), Some(w));
                            m.remove(w);
                        }
                    }
                    4 => {
                        // A client disconnects.
                        if next_client > 0 {
                            let c = 1 + rnd(next_client as u64) as Client;
                            let expect = m.waiters.iter().find(|w| w.2 == c).map(|w| w.4);
                            let got = q.remove_client(c).map(|(_, w)| w);
                            assert_eq!(got, expect);
                            if let Some(a) = got {
                                m.remove(a);
                            }
                        }
                    }
                    5 => {
                        // Time passes; every waiter past its deadline times out, earliest first.
                        now += rnd(20);
                        while let Some((_, w)) = q.pop_timed_out(now) {
                            let (_, _, _, d, a) = m.waiters.iter().find(|x| x.4 == w).unwrap();
                            assert!(d.is_some_and(|d| d <= now), "timed out early");
                            m.remove(*a);
                        }
                        assert!(m.waiters.iter().all(|w| w.3.is_none_or(|d| d > now)));
                    }
                    _ => {
                        // A key's waiters all leave at once (its key changed type).
                        let mut served = Vec::new();
                        while let Some((p, &w)) = q.front(&key) {
                            assert_eq!(q.remove(&key, p), Some(w));
                            served.push(w);
                        }
                        let mut want: Vec<_> = m.waiters.iter().filter(|w| w.0 == key).collect();
                        want.sort_by_key(|w| (w.1, w.4));
                        let want: Vec<Arrival> = want.iter().map(|w| w.4).collect();
                        assert_eq!(served, want, "lane by lane, in arrival order");
                        for a in served {
                            m.remove(a);
                        }
                    }
                }
                // The indexes agree with the model.
                for k in 0..3u8 {
                    let key = [b'k', k];
                    let n = m.waiters.iter().filter(|w| w.0 == key).count();
                    assert_eq!(q.len(&key), n);
                    assert_eq!(q.is_waiting(&key), n > 0);
                    for lane in 0..3 {
                        let waiting = m.waiters.iter().any(|w| w.0 == key && w.1 == lane);
                        assert_eq!(q.lane_waiting(&key, lane), waiting);
                    }
                }
                assert_eq!(q.anyone_waiting(), !m.waiters.is_empty());
                assert_eq!(q.by_client.len(), m.waiters.len());
                assert_eq!(
                    q.earliest_timeout(),
                    m.waiters.iter().filter_map(|w| w.3).min()
                );
            }
        }
    }
}
