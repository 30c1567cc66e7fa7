//! The job store as the engine sees it: the `Primitive` implementation, persistence (the RDB
//! encoding, version 2, and reading version 1), the AOF rebuild, and the memory estimate.
//!
//! Encoding version 2 is a sequence per table, each in its own order (so equal stores encode to
//! equal bytes, and replica digests compare equal), then the last token. Loading checks that
//! the tables are consistent (a job in one state only, one lease of each kind per worker, unique
//! names distinct, retention only on finished jobs) and rebuilds the derived indexes.

use std::collections::BTreeMap;
use std::mem::size_of;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::core::{Fulfilled, JobEffect, Jobs, Placed, Pull};
use super::leases::{Held, Lease};
use super::record::{Bytes, Job, More};
use crate::engine::deadlines::{btree_entry, heap, sampled, DeadlineMap, MEM_SAMPLE};
use crate::engine::{codec, Effects, Family, Primitive, Reply};

/// A sequence of known length, serialized from an iterator (no intermediate Vec).
struct Seq<F>(usize, F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0))?;
        for item in (self.1)() {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

/// Version 2, as read back.
#[derive(Serialize, Deserialize, Default, Clone)]
pub(super) struct Stored {
    /// (id, job), in pull order.
    pub pullable: Vec<(u64, Job)>,
    /// (id, deadline, lease, job), by deadline.
    pub working: Vec<(u64, u64, Lease, Job)>,
    /// (id, due, job), by due time.
    pub delayed: Vec<(u64, u64, Job)>,
    pub failed: Vec<(u64, Job)>,
    pub fulfilled: Vec<(u64, Fulfilled)>,
    /// (id, deadline, lease), by deadline.
    pub notifying: Vec<(u64, u64, Lease)>,
    /// (id, deletion time), by time.
    pub retained: Vec<(u64, u64)>,
    pub last_token: u64,
}

impl Serialize for Jobs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let j = self;
        (
            Seq(j.pullable.len(), || j.pullable.iter()),
            Seq(j.working.len(), || {
                j.working
                    .iter()
                    .map(|(id, deadline, h)| (id, deadline, &h.lease, &h.value))
            }),
            Seq(j.delayed.len(), || j.delayed.iter()),
            Seq(j.failed.len(), || j.failed.iter()),
            Seq(j.fulfilled.len(), || j.fulfilled.iter()),
            Seq(j.notifying.len(), || {
                j.notifying
                    .iter()
                    .map(|(id, deadline, h)| (id, deadline, &h.lease))
            }),
            Seq(j.retained.len(), || {
                j.retained.iter().map(|(id, t, _)| (id, t))
            }),
            j.last_token,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Jobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Jobs::assemble(Stored::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Version 1 (the first edition): pending, leased and fulfilled jobs with their targets.
pub(super) mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct Pending {
        pub request: Bytes,
        pub waiting: Box<[Bytes]>,
    }

    #[derive(Deserialize)]
    pub struct FulfilledV1 {
        pub request: Bytes,
        pub value: Bytes,
        pub waiting: Box<[Bytes]>,
    }

    #[derive(Deserialize)]
    pub struct Working {
        pub lease: Lease,
        pub job: Pending,
    }

    #[derive(Deserialize)]
    pub struct StoredV1 {
        pub pullable: BTreeMap<u64, Pending>,
        pub working: DeadlineMap<u64, Working>,
        pub fulfilled: BTreeMap<u64, FulfilledV1>,
        pub notifying: DeadlineMap<u64, Lease>,
        pub last_token: u64,
    }

    fn job(request: Bytes, waiting: Box<[Bytes]>) -> Job {
        let mut j = Job {
            request,
            ..Job::default()
        };
        j.set_waiting(waiting.into_vec());
        j
    }

    impl From<StoredV1> for Stored {
        fn from(s: StoredV1) -> Stored {
            Stored {
                pullable: s
                    .pullable
                    .into_iter()
                    .map(|(id, p)| (id, job(p.request, p.waiting)))
                    .collect(),
                working: s
                    .working
                    .iter()
                    .map(|(&id, at, w)| {
                        (
                            id,
                            at,
                            w.lease.clone(),
                            job(w.job.request.clone(), w.job.waiting.clone()),
                        )
                    })
                    .collect(),
                fulfilled: s
                    .fulfilled
                    .into_iter()
                    .map(|(id, f)| {
                        let fulfilled = Fulfilled {
                            job: job(f.request, f.waiting),
                            value: f.value,
                        };
                        (id, fulfilled)
                    })
                    .collect(),
                notifying: s
                    .notifying
                    .iter()
                    .map(|(&id, at, l)| (id, at, l.clone()))
                    .collect(),
                last_token: s.last_token,
                ..Stored::default()
            }
        }
    }
}

impl Jobs {
    /// A store from its tables, refusing an inconsistent one; the derived indexes rebuilt.
    pub(super) fn assemble(s: Stored) -> Result<Jobs, &'static str> {
        let mut j = Jobs {
            last_token: s.last_token,
            ..Jobs::default()
        };
        for (id, job) in s.pullable {
            j.add(id, job, Placed::Pending)?;
        }
        let mut leased = Vec::with_capacity(s.working.len());
        for (id, deadline, lease, job) in s.working {
            j.add(id, job, Placed::Pending)?;
            leased.push((id, deadline, lease));
        }
        for (id, deadline, lease) in leased {
            let job = j.pullable.remove(id).ok_or("a job is in two states")?;
            j.working.insert(id, deadline, lease, job)?;
        }
        for (id, due, job) in s.delayed {
            j.add(id, job, Placed::Delayed(due))?;
        }
        for (id, job) in s.failed {
            j.add(id, job, Placed::Failed)?;
        }
        for (id, f) in s.fulfilled {
            j.add(id, f.job, Placed::Fulfilled(f.value))?;
        }
        for (id, deadline, lease) in s.notifying {
            if !j.fulfilled.contains_key(&id) {
                return Err("a notification lease on a job that is not fulfilled");
            }
            j.notifying.insert(id, deadline, lease, ())?;
            j.notifiable.remove(&id);
        }
        for (id, at) in s.retained {
            if !j.is_finished(id) || j.retained.insert(id, at, ()).is_some() {
                return Err("retention of a job that is not finished");
            }
        }
        // `add` raised the last token to the highest id; the stored one is the truth when larger.
        if s.last_token < j.last_token {
            return Err("a job id above the last token");
        }
        Ok(j)
    }

    /// `mem_usage` looking at `sample` jobs of each table at most (`usize::MAX`: every job):
    /// per-entry table bytes plus each job's own heap bytes (request, value, targets, worker).
    pub fn mem_sampled(&self, sample: usize) -> usize {
        fn job_heap(j: &Job) -> usize {
            heap(j.request.len())
                + j.more.as_deref().map_or(0, |m: &More| {
                    heap(size_of::<More>())
                        + heap(size_of_val(&*m.waiting))
                        + m.waiting.iter().map(|t| heap(t.len())).sum::<usize>()
                        + m.reason.as_ref().map_or(0, |r| heap(r.len()))
                        + m.opts.unique.as_ref().map_or(0, |n| {
                            // The name (shared with the index) and its index entry.
                            heap(16 + n.len()) + btree_entry(size_of::<(Bytes, u64)>())
                        })
                })
        }
        // A lease: its worker id, and the worker index's hash-map slot (at 3/4 load).
        fn lease_heap(l: &Lease) -> usize {
            heap(16 + l.worker.len()) + (size_of::<(Bytes, u64)>() + 1) * 4 / 3
        }
        let by_id = |v: usize| btree_entry(8 + v);
        let timed = |v: usize| btree_entry(16 + v) + btree_entry(16);
        let (zero, ranked) = self.pullable.parts();
        let pullable = sampled(zero.len(), zero.values(), sample, |j| {
            by_id(size_of::<Job>()) + job_heap(j)
        }) + sampled(ranked.len(), ranked.values(), sample, |j| {
            btree_entry(16 + size_of::<Job>()) + btree_entry(12) + job_heap(j)
        });
        let working = sampled(
            self.working.len(),
            self.working.iter(),
            sample,
            |(_, _, h)| timed(size_of::<Held<Job>>()) + lease_heap(&h.lease) + job_heap(&h.value),
        );
        let delayed = sampled(self.delayed.len(), self.delayed.values(), sample, |j| {
            timed(size_of::<Job>()) + job_heap(j)
        });
        let failed = sampled(self.failed.len(), self.failed.values(), sample, |j| {
            by_id(size_of::<Job>()) + job_heap(j)
        });
        let fulfilled = sampled(self.fulfilled.len(), self.fulfilled.values(), sample, |f| {
            by_id(size_of::<Fulfilled>()) + job_heap(&f.job) + heap(f.value.len())
        });
        let notifying = sampled(
            self.notifying.len(),
            self.notifying.iter(),
            sample,
            |(_, _, h)| timed(size_of::<Held<()>>()) + lease_heap(&h.lease),
        );
        pullable
            + working
            + delayed
            + failed
            + fulfilled
            + notifying
            + self.retained.len() * timed(0)
            + self.notifiable.len() * btree_entry(8)
    }
}

#[cfg(test)]
impl Jobs {
    pub(super) fn encode_for_tests(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

impl Primitive for Jobs {
    const FAMILY: Family = Family::Job;
    const TYPE_NAME: &'static str = "CorralJob";
    /// 1: the first edition. 2: delays, priorities, attempts, retention, unique names.
    const ENCODING_VERSION: i32 = 2;

    type Effect = JobEffect;
    type Request = Pull;

    fn apply(&mut self, effect: &JobEffect) -> Result<(), &'static str> {
        self.apply_effect(effect)
    }

    fn regrant(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        self.regrant_pull(req, now)
    }

    fn grant(&self, req: &Pull, now: u64, token: u64) -> Option<(Effects<JobEffect>, Reply)> {
        self.grant_pull(req, now, token)
    }

    fn lane(req: &Pull) -> u64 {
        req.lane as u64
    }

    fn lapse(&self, now: u64, out: &mut Vec<JobEffect>) {
        self.due_effects(now, out)
    }

    fn next_deadline(&self) -> Option<u64> {
        self.earliest_deadline()
    }

    /// A store keeps its jobs until they are deleted (or their KEEP ends): no PTTL.
    fn expires_at(&self) -> Option<u64> {
        None
    }

    fn is_empty(&self) -> bool {
        self.job_count() == 0
    }

    fn last_token(&self) -> u64 {
        self.last_token
    }

    fn rebuild(&self) -> Vec<JobEffect> {
        let mut jobs: Vec<(u64, &Job, Placed)> = Vec::with_capacity(self.job_count());
        jobs.extend(self.pullable.iter().map(|(id, j)| (id, j, Placed::Pending)));
        jobs.extend(
            self.working
                .iter()
                .map(|(id, _, h)| (id, &h.value, Placed::Pending)),
        );
        jobs.extend(
            self.delayed
                .iter()
                .map(|(id, t, j)| (id, j, Placed::Delayed(t))),
        );
        jobs.extend(self.failed.iter().map(|(&id, j)| (id, j, Placed::Failed)));
        jobs.extend(
            self.fulfilled
                .iter()
                .map(|(&id, f)| (id, &f.job, Placed::Fulfilled(f.value.clone()))),
        );
        jobs.sort_unstable_by_key(|j| j.0);
        let mut out = Vec::with_capacity(
            jobs.len() + self.working.len() + self.notifying.len() + self.retained.len() + 1,
        );
        out.extend(jobs.into_iter().map(|(id, job, placed)| JobEffect::Put {
            id,
            job: job.clone(),
            placed,
        }));
        out.extend(
            self.working
                .iter()
                .map(|(id, deadline, h)| JobEffect::Grant {
                    id,
                    worker: h.lease.worker.clone(),
                    deadline,
                    token: h.lease.token,
                }),
        );
        out.extend(
            self.notifying
                .iter()
                .map(|(id, deadline, h)| JobEffect::NotifyGrant {
                    id,
                    worker: h.lease.worker.clone(),
                    deadline,
                    token: h.lease.token,
                }),
        );
        out.extend(
            self.retained
                .iter()
                .map(|(id, at, _)| JobEffect::Keep { id, at }),
        );
        out.push(JobEffect::Floor {
            token: self.last_token,
        });
        out
    }

    fn free_effort(&self) -> usize {
        self.job_count()
    }

    fn mem_usage(&self) -> usize {
        self.mem_sampled(MEM_SAMPLE)
    }

    fn decode(encver: i32, bytes: &[u8]) -> Option<Self> {
        match encver {
            1 => Jobs::assemble(codec::decode::<v1::StoredV1>(bytes)?.into()).ok(),
            2 => codec::decode(bytes),
            _ => None,
        }
    }
}
