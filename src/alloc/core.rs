//! ALLOC, the pure core: sticky job → instance allocation with atributo's exact rules.
//!
//! Instances are kept in allocation order (the order they were first made known); a new job goes
//! to the available instance at index `u32::from_be_bytes(md5(job)[0..4]) % available_count`,
//! and stays there until deallocated or its instance is removed — even if the instance becomes
//! unavailable or new instances arrive. An instance's availability can be a heartbeat lease
//! (AVAILABLE … TTL) that lapses to "unavailable" at its deadline.

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::engine::deadlines::{hash_table_bytes, sampled, DeadlineMap, MEM_SAMPLE};
use crate::engine::{Effect, Effects, Event, Family, Primitive, Reply};

/// An instance or job id, shared between the indexes that mention it.
pub type Id = Arc<[u8]>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    name: Id,
    available: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Alloc {
    /// Every known instance, in allocation order.
    instances: Vec<Instance>,
    /// Instance availability leases (AVAILABLE … TTL).
    heartbeats: DeadlineMap<Id, ()>,
    /// job → instance.
    jobs: AHashMap<Id, Id>,
    // Derived from the above (rebuilt on load, never serialized):
    /// instance name → position in `instances`.
    position: AHashMap<Id, usize>,
    /// positions of the available instances, in allocation order.
    available: Vec<usize>,
    /// instance → its jobs (so JOBS costs O(jobs of that instance); unordered, so allocating
    /// is O(1) — JOBS sorts what it returns).
    by_instance: AHashMap<Id, AHashSet<Id>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocEffect {
    /// The instance is known and available; `deadline` makes it a heartbeat lease.
    Available {
        instance: Id,
        deadline: Option<u64>,
    },
    /// The instance is known and unavailable (its allocations stay).
    Unavailable {
        instance: Id,
    },
    /// The instance and its allocations are gone.
    Remove {
        instance: Id,
    },
    /// The instance's heartbeat lease lapsed: it is unavailable.
    Lapse {
        instance: Id,
    },
    Allocate {
        job: Id,
        instance: Id,
    },
    Deallocate {
        job: Id,
    },
    /// AVAILABLE again for an instance that is available: its heartbeat is renewed (`deadline`)
    /// or made permanent (None). Last, so that the variants before keep their encoding.
    Renew {
        instance: Id,
        deadline: Option<u64>,
    },
}

impl Effect for AllocEffect {
    fn event(&self) -> Event {
        match self {
            AllocEffect::Available { .. } => Event::Grant,
            AllocEffect::Renew { .. } => Event::Renew,
            AllocEffect::Unavailable { .. } | AllocEffect::Remove { .. } => Event::Release,
            AllocEffect::Lapse { .. } => Event::Lapse,
            AllocEffect::Allocate { .. } | AllocEffect::Deallocate { .. } => Event::Other,
        }
    }
}

/// DRAIN waits until an instance has no jobs.
#[derive(Debug, Clone)]
pub struct Drain {
    pub instance: Id,
}

/// atributo's default allocator: md5 of the job id, first 4 bytes big-endian, modulo the number
/// of available instances.
pub fn pick(job: &[u8], available: usize) -> usize {
    let d = md5::compute(job);
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    h as usize % available
}

/// What ALLOCATE decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Already allocated (persisted = 0).
    Existing(Id),
    /// Newly chosen; `store` is false when ONLYFOR names another instance.
    New { instance: Id, store: bool },
}

impl Alloc {
    fn is_available(&self, name: &[u8]) -> Option<bool> {
        self.position
            .get(name)
            .map(|&i| self.instances[i].available)
    }

    /// Instances in allocation order with their availability.
    pub fn instances(&self) -> impl Iterator<Item = (&[u8], bool)> {
        self.instances.iter().map(|i| (&*i.name, i.available))
    }

    /// False when the instance's heartbeat deadline has passed (even before it lapses).
    pub fn heartbeat_live(&self, instance: &[u8], now: u64) -> bool {
        self.heartbeats.deadline(instance).is_none_or(|at| at > now)
    }

    pub fn instance_of(&self, job: &[u8]) -> Option<&[u8]> {
        self.jobs.get(job).map(|i| &**i)
    }

    /// The instance's jobs, sorted by id.
    pub fn jobs_of(&self, instance: &[u8]) -> Vec<&[u8]> {
        let mut jobs: Vec<&[u8]> = self
            .by_instance
            .get(instance)
            .into_iter()
            .flat_map(|s| s.iter().map(|j| &**j))
            .collect();
        jobs.sort_unstable();
        jobs
    }

    pub fn has_jobs(&self, instance: &[u8]) -> bool {
        self.by_instance
            .get(instance)
            .is_some_and(|s| !s.is_empty())
    }

    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    pub fn available_count(&self) -> usize {
        self.available.len()
    }

    /// Available instances at `now`: a heartbeat past its deadline reads as lapsed (only
    /// available instances have heartbeats; past-due ones are few, the timer lapses them).
    pub fn available_at(&self, now: u64) -> usize {
        self.available.len() - self.heartbeats.due(now).count()
    }

    /// Live heartbeat leases at `now`.
    pub fn heartbeats_at(&self, now: u64) -> usize {
        self.heartbeats.len() - self.heartbeats.due(now).count()
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    fn shared(&self, name: &[u8]) -> Id {
        match self.position.get(name) {
            Some(&i) => self.instances[i].name.clone(),
            None => Arc::from(name),
        }
    }

    /// AVAILABLE: whether the instance becomes available (1/0), and the effect that records
    /// it — for an instance that already is, a renewal of its heartbeat (`alloc.renew`).
    pub fn make_available(&self, instance: &[u8], deadline: Option<u64>) -> (bool, AllocEffect) {
        let instance = self.shared(instance);
        if self.is_available(&instance) == Some(true) {
            return (false, AllocEffect::Renew { instance, deadline });
        }
        (true, AllocEffect::Available { instance, deadline })
    }

    /// UNAVAILABLE without REMOVE.
    pub fn make_unavailable(&self, instance: &[u8]) -> Option<AllocEffect> {
        (self.is_available(instance) != Some(false)).then(|| AllocEffect::Unavailable {
            instance: self.shared(instance),
        })
    }

    /// UNAVAILABLE … REMOVE: the number of allocations dropped, and the effect (None if unknown).
    pub fn remove(&self, instance: &[u8]) -> (usize, Option<AllocEffect>) {
        if !self.position.contains_key(instance) {
            return (0, None);
        }
        let dropped = self.by_instance.get(instance).map_or(0, |s| s.len());
        (
            dropped,
            Some(AllocEffect::Remove {
                instance: self.shared(instance),
            }),
        )
    }

    /// ALLOCATE: the existing allocation, or the instance atributo's allocator picks.
    pub fn allocate(&self, job: &[u8], only_for: Option<&[u8]>) -> Option<Allocation> {
        if let Some(i) = self.jobs.get(job) {
            return Some(Allocation::Existing(i.clone()));
        }
        if self.available.is_empty() {
            return None;
        }
        let chosen = &self.instances[self.available[pick(job, self.available.len())]].name;
        let store = only_for.is_none_or(|o| o == &**chosen);
        Some(Allocation::New {
            instance: chosen.clone(),
            store,
        })
    }

    pub fn deallocate(&self, job: &[u8]) -> Option<AllocEffect> {
        self.jobs
            .get_key_value(job)
            .map(|(j, _)| AllocEffect::Deallocate { job: j.clone() })
    }

    fn push_instance(&mut self, name: &Id, available: bool) {
        match self.position.get(&**name) {
            Some(&i) => self.instances[i].available = available,
            None => {
                self.position.insert(name.clone(), self.instances.len());
                self.instances.push(Instance {
                    name: name.clone(),
                    available,
                });
            }
        }
        self.reindex_available();
    }

    fn reindex_available(&mut self) {
        self.available = (0..self.instances.len())
            .filter(|&i| self.instances[i].available)
            .collect();
    }

    fn reindex_positions(&mut self) {
        self.position = self
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.name.clone(), i))
            .collect();
        self.reindex_available();
    }

    /// Rebuilds the derived indexes from instances + jobs (after decoding).
    fn reindex(&mut self) {
        self.reindex_positions();
        self.by_instance.clear();
        for (job, inst) in &self.jobs {
            self.by_instance
                .entry(inst.clone())
                .or_default()
                .insert(job.clone());
        }
    }
}

impl PartialEq for Alloc {
    fn eq(&self, other: &Self) -> bool {
        self.instances == other.instances
            && self.heartbeats == other.heartbeats
            && self.jobs == other.jobs
    }
}

impl Eq for Alloc {}

impl Primitive for Alloc {
    const FAMILY: Family = Family::Alloc;
    const TYPE_NAME: &'static str = "CorralAlc";
    const ENCODING_VERSION: i32 = 1;

    type Effect = AllocEffect;
    type Request = Drain;

    fn apply(&mut self, effect: &AllocEffect) -> Result<(), &'static str> {
        match effect {
            AllocEffect::Available { instance, deadline } => {
                self.push_instance(instance, true);
                match deadline {
                    Some(at) => {
                        self.heartbeats.insert(instance.clone(), *at, ());
                    }
                    None => {
                        self.heartbeats.remove(&**instance);
                    }
                }
            }
            AllocEffect::Renew { instance, deadline } => {
                if self.is_available(instance) != Some(true) {
                    return Err("renew of an instance that is not available");
                }
                match deadline {
                    Some(at) => {
                        self.heartbeats.insert(instance.clone(), *at, ());
                    }
                    None => {
                        self.heartbeats.remove(&**instance);
                    }
                }
            }
            AllocEffect::Unavailable { instance } | AllocEffect::Lapse { instance } => {
                self.heartbeats.remove(&**instance);
                self.push_instance(instance, false);
            }
            AllocEffect::Remove { instance } => {
                let i = self
                    .position
                    .get(&**instance)
                    .copied()
                    .ok_or("unknown instance")?;
                self.instances.remove(i);
                self.heartbeats.remove(&**instance);
                for job in self.by_instance.remove(&**instance).unwrap_or_default() {
                    self.jobs.remove(&job);
                }
                self.reindex_positions();
            }
            AllocEffect::Allocate { job, instance } => {
                if self.jobs.contains_key(&**job) {
                    return Err("job already allocated");
                }
                let inst = self.shared(instance);
                if !self.position.contains_key(&*inst) {
                    return Err("unknown instance");
                }
                self.by_instance
                    .entry(inst.clone())
                    .or_default()
                    .insert(job.clone());
                self.jobs.insert(job.clone(), inst);
            }
            AllocEffect::Deallocate { job } => {
                let inst = self.jobs.remove(&**job).ok_or("job not allocated")?;
                if let Some(set) = self.by_instance.get_mut(&inst) {
                    set.remove(&**job);
                    if set.is_empty() {
                        self.by_instance.remove(&inst);
                    }
                }
            }
        }
        Ok(())
    }

    fn grant(
        &self,
        drain: &Drain,
        _now: u64,
        _token: u64,
    ) -> Option<(Effects<AllocEffect>, Reply)> {
        (!self.has_jobs(&drain.instance)).then(|| (Effects::new(), Reply::Int(1)))
    }

    /// DRAIN waits for different instances do not hold each other up.
    fn lane(drain: &Drain) -> u64 {
        let d = md5::compute(&*drain.instance);
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    fn lapse(&self, now: u64, out: &mut Vec<AllocEffect>) {
        out.extend(self.heartbeats.due(now).map(|i| AllocEffect::Lapse {
            instance: i.clone(),
        }));
    }

    fn next_deadline(&self) -> Option<u64> {
        self.heartbeats.earliest()
    }

    /// Allocations and instances are kept until removed: no key TTL.
    fn expires_at(&self) -> Option<u64> {
        None
    }

    fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.jobs.is_empty()
    }

    /// ALLOC issues no fencing tokens.
    fn last_token(&self) -> u64 {
        0
    }

    fn rebuild(&self) -> Vec<AllocEffect> {
        let mut out: Vec<AllocEffect> = self
            .instances
            .iter()
            .map(
                |i| match (i.available, self.heartbeats.deadline(&*i.name)) {
                    (true, deadline) => AllocEffect::Available {
                        instance: i.name.clone(),
                        deadline,
                    },
                    (false, _) => AllocEffect::Unavailable {
                        instance: i.name.clone(),
                    },
                },
            )
            .collect();
        for (job, instance) in self.sorted_jobs() {
            out.push(AllocEffect::Allocate {
                job: job.clone(),
                instance: instance.clone(),
            });
        }
        out
    }

    fn free_effort(&self) -> usize {
        self.jobs.len() + self.instances.len()
    }

    fn mem_usage(&self) -> usize {
        self.mem_sampled(MEM_SAMPLE)
    }
}

impl Alloc {
    /// `mem_usage` looking at `sample` entries of each table at most (`usize::MAX`: all): the
    /// tables at their real capacity, plus each id's bytes once (ids are shared between the
    /// tables) with their Arc counts, rounded up as the allocator does.
    fn mem_sampled(&self, sample: usize) -> usize {
        let id = |n: usize| (16 + n).next_multiple_of(16);
        let sets = sampled(
            self.by_instance.len(),
            self.by_instance.values(),
            sample,
            |s| hash_table_bytes(s.capacity(), 16),
        );
        let job_ids = sampled(self.jobs.len(), self.jobs.keys(), sample, |j| id(j.len()));
        let instance_ids = sampled(self.instances.len(), self.instances.iter(), sample, |i| {
            id(i.name.len())
        });
        hash_table_bytes(self.jobs.capacity(), 32)
            + hash_table_bytes(self.by_instance.capacity(), 16 + 32)
            + hash_table_bytes(self.position.capacity(), 24)
            + sets
            + self.heartbeats.table_bytes()
            + self.instances.capacity() * 24
            + self.available.capacity() * 8
            + job_ids
            + instance_ids
    }
}

impl Alloc {
    /// Allocations sorted by job id: a deterministic order for encoding and rebuilding.
    fn sorted_jobs(&self) -> Vec<(&Id, &Id)> {
        let mut v: Vec<(&Id, &Id)> = self.jobs.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// The stored form: instances in order, heartbeats, and allocations (job, instance position)
/// sorted by job, so equal values encode to equal bytes. Indexes are rebuilt on load.
#[derive(Serialize, Deserialize)]
struct Stored {
    instances: Vec<(Id, bool)>,
    heartbeats: DeadlineMap<Id, ()>,
    jobs: Vec<(Id, u32)>,
}

impl Serialize for Alloc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            instances: self
                .instances
                .iter()
                .map(|i| (i.name.clone(), i.available))
                .collect(),
            heartbeats: self.heartbeats.clone(),
            jobs: self
                .sorted_jobs()
                .into_iter()
                .map(|(j, i)| {
                    (
                        j.clone(),
                        self.position.get(&**i).copied().unwrap_or(0) as u32,
                    )
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Alloc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(d)?;
        let mut a = Alloc {
            instances: stored
                .instances
                .into_iter()
                .map(|(name, available)| Instance { name, available })
                .collect(),
            heartbeats: stored.heartbeats,
            ..Alloc::default()
        };
        for (job, pos) in stored.jobs {
            let inst = a
                .instances
                .get(pos as usize)
                .ok_or_else(|| serde::de::Error::custom("allocation to an unknown instance"))?;
            a.jobs.insert(job, inst.name.clone());
        }
        a.reindex();
        // A corrupt value must not load with invariants that do not hold: one entry per
        // instance name, heartbeats only for known, available instances.
        if a.position.len() != a.instances.len() {
            return Err(serde::de::Error::custom("an instance listed twice"));
        }
        if a.heartbeats
            .iter()
            .any(|(i, _, _)| a.is_available(i) != Some(true))
        {
            return Err(serde::de::Error::custom(
                "a heartbeat of an unknown or unavailable instance",
            ));
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::deadlines::assert_close;

    /// Found by fuzzing (decode target): a stored value with a heartbeat for an instance it does
    /// not list or lists as unavailable, or an instance listed twice, loaded and broke
    /// rebuild/lapse.
    #[test]
    fn decode_rejects_inconsistent_values() {
        let stored = |instances: Vec<(Id, bool)>, hb: &[u8]| {
            let mut heartbeats = DeadlineMap::default();
            heartbeats.insert(Arc::from(hb), 1100, ());
            crate::engine::codec::encode(&Stored {
                instances,
                heartbeats,
                jobs: vec![],
            })
        };
        let i = |n: &[u8]| (Arc::from(n), true);
        assert!(Alloc::decode(1, &stored(vec![i(b"i1")], b"i1")).is_some());
        assert!(Alloc::decode(1, &stored(vec![i(b"iq")], b"i1")).is_none());
        assert!(Alloc::decode(1, &stored(vec![i(b"i1"), i(b"i1")], b"i1")).is_none());
        let down = (Arc::from(&b"i1"[..]), false);
        assert!(Alloc::decode(1, &stored(vec![down], b"i1")).is_none());
    }

    fn run(a: &mut Alloc, e: AllocEffect) {
        a.apply(&e).unwrap();
    }

    fn available(a: &mut Alloc, i: &str) {
        let (_, e) = a.make_available(i.as_bytes(), None);
        run(a, e);
    }

    fn allocate(a: &mut Alloc, job: &str) -> (String, bool) {
        match a.allocate(job.as_bytes(), None).unwrap() {
            Allocation::Existing(i) => (String::from_utf8_lossy(&i).into(), false),
            Allocation::New { instance, .. } => {
                run(
                    a,
                    AllocEffect::Allocate {
                        job: Arc::from(job.as_bytes()),
                        instance: instance.clone(),
                    },
                );
                (String::from_utf8_lossy(&instance).into(), true)
            }
        }
    }

    #[test]
    fn atributo_walkthrough() {
        let mut a = Alloc::default();
        available(&mut a, "instance0");
        available(&mut a, "instance1");
        assert_eq!(allocate(&mut a, "job0"), ("instance1".into(), true));
        assert_eq!(allocate(&mut a, "job1"), ("instance0".into(), true));
        assert_eq!(a.jobs_of(b"instance0"), vec![&b"job1"[..]]);
        assert!(a.has_jobs(b"instance0"));
        let e = a.make_unavailable(b"instance0").unwrap();
        run(&mut a, e);
        assert_eq!(
            allocate(&mut a, "job1"),
            ("instance0".into(), false),
            "sticky"
        );
        let e = a.deallocate(b"job1").unwrap();
        run(&mut a, e);
        assert_eq!(allocate(&mut a, "job1"), ("instance1".into(), true));
        let (dropped, e) = a.remove(b"instance0");
        assert_eq!(dropped, 0);
        run(&mut a, e.unwrap());
        assert_eq!(
            a.instances().collect::<Vec<_>>(),
            vec![(&b"instance1"[..], true)]
        );
    }

    #[test]
    fn pick_matches_atributo_md5_rule() {
        // md5("job0") starts 0x…; computed independently: job0 → 1, job1 → 0 of 2.
        assert_eq!(pick(b"job0", 2), 1);
        assert_eq!(pick(b"job1", 2), 0);
    }

    #[test]
    fn only_for_stores_only_its_own() {
        let mut a = Alloc::default();
        available(&mut a, "instance0");
        available(&mut a, "instance1");
        assert_eq!(
            a.allocate(b"job0", Some(b"instance0")),
            Some(Allocation::New {
                instance: Arc::from(&b"instance1"[..]),
                store: false
            })
        );
        assert_eq!(
            a.allocate(b"job0", Some(b"instance1")),
            Some(Allocation::New {
                instance: Arc::from(&b"instance1"[..]),
                store: true
            })
        );
    }

    #[test]
    fn readded_instance_goes_to_the_end_and_unknown_unavailable_is_recorded() {
        let mut a = Alloc::default();
        for i in ["a", "b", "c"] {
            available(&mut a, i);
        }
        let e = a.remove(b"a").1.unwrap();
        run(&mut a, e);
        available(&mut a, "a");
        let e = a.make_unavailable(b"zz").unwrap();
        run(&mut a, e);
        let names: Vec<&[u8]> = a.instances().map(|(n, _)| n).collect();
        assert_eq!(names, vec![&b"b"[..], b"c", b"a", b"zz"]);
        assert_eq!(a.available_count(), 3);
        assert!(!a.make_available(b"b", None).0, "already available: 0");
    }

    #[test]
    fn heartbeat_lapses_to_unavailable_and_keeps_jobs() {
        let mut a = Alloc::default();
        let (_, e) = a.make_available(b"i", Some(100));
        run(&mut a, e);
        allocate(&mut a, "j");
        let mut out = vec![];
        a.lapse(100, &mut out);
        assert_eq!(out.len(), 1);
        for e in out {
            run(&mut a, e);
        }
        assert_eq!(a.available_count(), 0);
        assert_eq!(a.instance_of(b"j"), Some(&b"i"[..]));
        assert_eq!(a.allocate(b"new", None), None, "no instances");
    }

    #[test]
    fn serde_and_rebuild_reproduce_state() {
        let mut a = Alloc::default();
        for i in 0..5 {
            let (_, e) =
                a.make_available(format!("i{i}").as_bytes(), (i % 2 == 0).then_some(1000 + i));
            run(&mut a, e);
        }
        for j in 0..200 {
            allocate(&mut a, &format!("job{j}"));
        }
        let e = a.make_unavailable(b"i3").unwrap();
        run(&mut a, e);
        let bytes = crate::engine::codec::encode(&a);
        let back: Alloc = crate::engine::codec::decode(&bytes).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            crate::engine::codec::encode(&back),
            bytes,
            "deterministic encoding"
        );
        let mut rebuilt = Alloc::default();
        for e in a.rebuild() {
            rebuilt.apply(&e).unwrap();
        }
        assert_eq!(rebuilt, a);
        assert_eq!(rebuilt.jobs_of(b"i1"), a.jobs_of(b"i1"));
    }

    /// MEMORY USAGE samples at most MEM_SAMPLE entries per table; on ids of uniform (and of
    /// mixed) sizes it stays within 10% of the exact walk.
    #[test]
    fn mem_estimate_matches_the_walk() {
        for mixed in [false, true] {
            let mut a = Alloc::default();
            for i in 0..200u64 {
                a.apply(&AllocEffect::Available {
                    instance: Arc::from(format!("instance-{i:04}").as_bytes()),
                    deadline: None,
                })
                .unwrap();
            }
            for i in 0..20_000u64 {
                let len = if mixed { 8 + (i % 40) as usize } else { 24 };
                a.apply(&AllocEffect::Allocate {
                    job: Arc::from(format!("{i:0len$}").as_bytes()),
                    instance: Arc::from(format!("instance-{:04}", i % 200).as_bytes()),
                })
                .unwrap();
            }
            let exact = a.mem_sampled(usize::MAX);
            assert_close(
                a.mem_usage(),
                exact,
                if mixed { "mixed" } else { "uniform" },
            );
        }
    }
}
