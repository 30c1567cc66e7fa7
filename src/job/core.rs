//! JOB, the pure core: a job store with exclusive pulls, fenced fulfilment and queued
//! notifications. No Redis here — the engine opens keys, lapses leases at their deadlines,
//! queues blocked PULL/PULLNOTIFY clients, replicates, persists.
//!
//! Every job is in exactly one of three tables, by state:
//! - `pullable`: pending, no work lease — ordered by id, so PULL takes the first (the oldest);
//! - `working`: pending under a work lease — the lease table (by deadline) holds the job;
//! - `fulfilled`: fulfilled, with its value; `notifying` is its notification-lease table.
//!
//! So "the oldest pending job not under a live work lease" is `pullable`'s first entry, with no
//! separate index to keep in step. The only derived state — the notifiable ids (fulfilled, with
//! waiting targets, no notification lease) and which job each worker holds — is not stored: it
//! is rebuilt when a value is loaded, and `check` (tests) asserts it always matches.
//!
//! Ids and tokens come from one sequence: a job's id is the fencing-token candidate the engine
//! offers when it is created. Ids therefore increase for the life of the key *and* across its
//! deletion (an empty store is deleted) and re-creation, restarts, replication and failover —
//! an old id can never address a new job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use crate::engine::deadlines::{btree_entry, heap, sampled, DeadlineMap, MEM_SAMPLE};
use smallvec::smallvec;

use crate::engine::{Effect, Effects, Event, Family, Primitive, Reply};

/// A worker id. Shared (not copied) between a lease and the worker index; `Arc` because a
/// value may be freed on Redis's lazy-free thread.
pub type Worker = Arc<[u8]>;
/// Request, value and target bytes (binary-safe).
pub type Bytes = Box<[u8]>;

/// A pending job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub request: Bytes,
    /// Targets queued before fulfilment, in order (duplicates allowed).
    pub waiting: Box<[Bytes]>,
}

/// A fulfilled job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilled {
    pub request: Bytes,
    pub value: Bytes,
    /// Targets still to be notified of the value, in order.
    pub waiting: Box<[Bytes]>,
}

/// A lease (work or notification): who holds it, under which fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker: Worker,
    pub token: u64,
}

/// A pending job under a work lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Working {
    pub lease: Lease,
    pub job: Pending,
}

/// What a JOB key holds. The key exists while it holds at least one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct Jobs {
    /// Pending jobs no worker holds, by id: PULL hands out the first.
    pullable: BTreeMap<u64, Pending>,
    /// Pending jobs under a work lease, by lease deadline.
    working: DeadlineMap<u64, Working>,
    fulfilled: BTreeMap<u64, Fulfilled>,
    /// Notification leases on fulfilled jobs, by deadline.
    notifying: DeadlineMap<u64, Lease>,
    /// Highest id or token ever issued for this key.
    last_token: u64,
    /// Derived: fulfilled jobs with waiting targets and no notification lease (PULLNOTIFY
    /// hands out the first).
    #[serde(skip)]
    notifiable: BTreeSet<u64>,
    /// Derived: worker → the job it holds a work lease on (one per worker).
    #[serde(skip)]
    workers: AHashMap<Worker, u64>,
    /// Derived: worker → the job it holds a notification lease on (one per worker).
    #[serde(skip)]
    notifiers: AHashMap<Worker, u64>,
}

/// The serialized form of `Jobs` (its first five fields, in order): what RDB, digests and copies
/// carry. Loading rebuilds the derived indexes and refuses an inconsistent value.
#[derive(Deserialize)]
struct Stored {
    pullable: BTreeMap<u64, Pending>,
    working: DeadlineMap<u64, Working>,
    fulfilled: BTreeMap<u64, Fulfilled>,
    notifying: DeadlineMap<u64, Lease>,
    last_token: u64,
}

impl TryFrom<Stored> for Jobs {
    type Error = &'static str;

    fn try_from(s: Stored) -> Result<Self, Self::Error> {
        let mut jobs = Jobs {
            pullable: s.pullable,
            working: s.working,
            fulfilled: s.fulfilled,
            notifying: s.notifying,
            last_token: s.last_token,
            ..Jobs::default()
        };
        for (&id, _, w) in jobs.working.iter() {
            if jobs.pullable.contains_key(&id) || jobs.fulfilled.contains_key(&id) {
                return Err("a job is in two states");
            }
            if jobs.workers.insert(w.lease.worker.clone(), id).is_some() {
                return Err("a worker holds two work leases");
            }
        }
        if jobs
            .pullable
            .keys()
            .any(|id| jobs.fulfilled.contains_key(id))
        {
            return Err("a job is in two states");
        }
        for (&id, _, l) in jobs.notifying.iter() {
            if !jobs.fulfilled.contains_key(&id) {
                return Err("a notification lease on a job that is not fulfilled");
            }
            if jobs.notifiers.insert(l.worker.clone(), id).is_some() {
                return Err("a worker holds two notification leases");
            }
        }
        jobs.notifiable = jobs
            .fulfilled
            .iter()
            .filter(|(id, f)| !f.waiting.is_empty() && !jobs.notifying.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        Ok(jobs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEffect {
    /// A new pending job.
    Create {
        id: u64,
        request: Bytes,
    },
    /// A work lease on a pullable job.
    Grant {
        id: u64,
        worker: Worker,
        deadline: u64,
        token: u64,
    },
    Renew {
        id: u64,
        deadline: u64,
    },
    /// The work lease ends; the job, still pending, is pullable again.
    Release {
        id: u64,
    },
    Lapse {
        id: u64,
    },
    /// A pullable job (its work lease, if any, ended by a `Release` before) is fulfilled.
    Fulfill {
        id: u64,
        value: Bytes,
    },
    /// Targets appended to the job's waiting list.
    Queue {
        id: u64,
        targets: Vec<Bytes>,
    },
    /// For each target, its first equal match (if any) leaves the waiting list.
    Unqueue {
        id: u64,
        targets: Vec<Bytes>,
    },
    /// A notification lease on a fulfilled job.
    NotifyGrant {
        id: u64,
        worker: Worker,
        deadline: u64,
        token: u64,
    },
    NotifyRenew {
        id: u64,
        deadline: u64,
    },
    /// The notification lease ends (DONE).
    NotifyRelease {
        id: u64,
    },
    NotifyLapse {
        id: u64,
    },
    /// The job is gone, with any lease still on it.
    Delete {
        id: u64,
    },
    /// Raises the key's last token (AOF rewrite: ids and tokens of deleted jobs still count).
    Floor {
        token: u64,
    },
}

impl Effect for JobEffect {
    fn event(&self) -> Event {
        match self {
            JobEffect::Grant { .. } | JobEffect::NotifyGrant { .. } => Event::Grant,
            JobEffect::Renew { .. } | JobEffect::NotifyRenew { .. } => Event::Renew,
            JobEffect::Release { .. } | JobEffect::NotifyRelease { .. } => Event::Release,
            JobEffect::Lapse { .. } | JobEffect::NotifyLapse { .. } => Event::Lapse,
            JobEffect::Create { .. }
            | JobEffect::Fulfill { .. }
            | JobEffect::Queue { .. }
            | JobEffect::Unqueue { .. }
            | JobEffect::Delete { .. }
            | JobEffect::Floor { .. } => Event::Other,
        }
    }
}

/// Which queue a blocked pull waits in: PULL and PULLNOTIFY waiters never hold each other up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Work = 0,
    Notify = 1,
}

/// A PULL (work) or PULLNOTIFY (notification) that may wait in line.
#[derive(Debug, Clone)]
pub struct Pull {
    pub lane: Lane,
    pub worker: Worker,
    pub ttl: u64,
}

/// Why an action on a job was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoJob,
    /// FULFILL of a fulfilled job.
    Already,
    /// A work-lease action (RENEW, RELEASE) on a fulfilled job.
    IsFulfilled,
    /// A notification-lease action (DONE) on a pending job.
    NotFulfilled,
    /// Nobody holds the lease (lapsed, released, done, or never pulled).
    NotLeased,
    /// Another worker holds the lease.
    LostTo(Worker),
    /// FULFILL's TOKEN is not the job's current work lease (`current`: that lease's token).
    Stale {
        current: Option<u64>,
    },
}

/// One job as seen at some time: its current lease is the work lease while pending and the
/// notification lease once fulfilled (a lease whose deadline has passed is not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView<'a> {
    pub request: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub waiting: &'a [Bytes],
    pub lease: Option<LeaseView<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView<'a> {
    pub worker: &'a [u8],
    pub deadline: u64,
    pub token: u64,
}

/// Counts for JOB.INFO, as seen at some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    /// Pending jobs under a live work lease.
    pub leased: usize,
    pub fulfilled: usize,
    /// Fulfilled jobs with waiting targets and no live notification lease.
    pub notifiable: usize,
    /// Live notification leases.
    pub notifying: usize,
}

/// Marks, for each target in turn, the first equal unmarked entry of `waiting` — exactly the
/// entries that removing "the first equal match" of each target, one after another, removes.
fn first_matches(waiting: &[Bytes], targets: &[Bytes]) -> Vec<bool> {
    let mut hit = vec![false; waiting.len()];
    for t in targets {
        if let Some(i) = (0..waiting.len()).find(|&i| !hit[i] && waiting[i] == *t) {
            hit[i] = true;
        }
    }
    hit
}

fn pull_reply(id: u64, request: &[u8], token: u64) -> Reply {
    Reply::Array(vec![
        Reply::Int(id as i64),
        Reply::Bulk(request.to_vec()),
        Reply::Int(token as i64),
    ])
}

fn notify_reply(id: u64, f: &Fulfilled, token: u64) -> Reply {
    Reply::Array(vec![
        Reply::Int(id as i64),
        Reply::Bulk(f.value.to_vec()),
        Reply::Array(f.waiting.iter().map(|t| Reply::Bulk(t.to_vec())).collect()),
        Reply::Int(token as i64),
    ])
}

impl Jobs {
    pub fn contains(&self, id: u64) -> bool {
        self.pullable.contains_key(&id)
            || self.working.contains(&id)
            || self.fulfilled.contains_key(&id)
    }

    pub fn job_count(&self) -> usize {
        self.pullable.len() + self.working.len() + self.fulfilled.len()
    }

    /// The live work lease on a pending job, for `worker`.
    fn work_held(&self, id: u64, worker: &[u8], now: u64) -> Result<&Working, Refusal> {
        if self.fulfilled.contains_key(&id) {
            return Err(Refusal::IsFulfilled);
        }
        match self.working.get(&id) {
            Some((deadline, w)) if deadline > now => {
                if *w.lease.worker == *worker {
                    Ok(w)
                } else {
                    Err(Refusal::LostTo(w.lease.worker.clone()))
                }
            }
            Some(_) => Err(Refusal::NotLeased),
            None if self.pullable.contains_key(&id) => Err(Refusal::NotLeased),
            None => Err(Refusal::NoJob),
        }
    }

    /// The live notification lease on a fulfilled job, for `worker`.
    fn notify_held(&self, id: u64, worker: &[u8], now: u64) -> Result<&Fulfilled, Refusal> {
        let Some(f) = self.fulfilled.get(&id) else {
            return Err(if self.contains(id) {
                Refusal::NotFulfilled
            } else {
                Refusal::NoJob
            });
        };
        match self.notifying.get(&id) {
            Some((deadline, l)) if deadline > now => {
                if *l.worker == *worker {
                    Ok(f)
                } else {
                    Err(Refusal::LostTo(l.worker.clone()))
                }
            }
            _ => Err(Refusal::NotLeased),
        }
    }

    pub fn create(&self, id: u64, request: &[u8]) -> JobEffect {
        JobEffect::Create {
            id,
            request: request.into(),
        }
    }

    pub fn renew(&self, id: u64, worker: &[u8], ttl: u64, now: u64) -> Result<JobEffect, Refusal> {
        self.work_held(id, worker, now)?;
        Ok(JobEffect::Renew {
            id,
            deadline: now + ttl,
        })
    }

    pub fn release(&self, id: u64, worker: &[u8], now: u64) -> Result<JobEffect, Refusal> {
        self.work_held(id, worker, now)?;
        Ok(JobEffect::Release { id })
    }

    /// FULFILL: ends the work lease (whoever holds it) and stores the value. With `token`, only
    /// the job's current live work lease may fulfil it.
    pub fn fulfill(
        &self,
        id: u64,
        value: &[u8],
        token: Option<u64>,
        now: u64,
    ) -> Result<Vec<JobEffect>, Refusal> {
        if self.fulfilled.contains_key(&id) {
            return Err(Refusal::Already);
        }
        if !self.contains(id) {
            return Err(Refusal::NoJob);
        }
        let lease = self
            .working
            .get(&id)
            .filter(|(deadline, _)| *deadline > now)
            .map(|(_, w)| w.lease.token);
        if let Some(t) = token {
            if lease != Some(t) {
                return Err(Refusal::Stale { current: lease });
            }
        }
        let mut out = Vec::with_capacity(2);
        if self.working.contains(&id) {
            out.push(JobEffect::Release { id });
        }
        out.push(JobEffect::Fulfill {
            id,
            value: value.into(),
        });
        Ok(out)
    }

    fn waiting(&self, id: u64) -> Option<&[Bytes]> {
        if let Some(p) = self.pullable.get(&id) {
            return Some(&p.waiting);
        }
        if let Some((_, w)) = self.working.get(&id) {
            return Some(&w.job.waiting);
        }
        self.fulfilled.get(&id).map(|f| &f.waiting[..])
    }

    fn waiting_mut(&mut self, id: u64) -> Option<&mut Box<[Bytes]>> {
        if let Some(p) = self.pullable.get_mut(&id) {
            return Some(&mut p.waiting);
        }
        if let Some(w) = self.working.value_mut(&id) {
            return Some(&mut w.job.waiting);
        }
        self.fulfilled.get_mut(&id).map(|f| &mut f.waiting)
    }

    pub fn queue(&self, id: u64, targets: &[&[u8]]) -> Result<JobEffect, Refusal> {
        if !self.contains(id) {
            return Err(Refusal::NoJob);
        }
        Ok(JobEffect::Queue {
            id,
            targets: targets.iter().map(|t| Bytes::from(*t)).collect(),
        })
    }

    /// UNQUEUE: the effect (None when nothing matches) and how many targets it removes.
    pub fn unqueue(
        &self,
        id: u64,
        targets: &[&[u8]],
    ) -> Result<(Option<JobEffect>, usize), Refusal> {
        let waiting = self.waiting(id).ok_or(Refusal::NoJob)?;
        let targets: Vec<Bytes> = targets.iter().map(|t| Bytes::from(*t)).collect();
        let removed = first_matches(waiting, &targets)
            .into_iter()
            .filter(|h| *h)
            .count();
        Ok((
            (removed > 0).then_some(JobEffect::Unqueue { id, targets }),
            removed,
        ))
    }

    /// DONE: removes the notified targets and ends `worker`'s notification lease.
    pub fn done(
        &self,
        id: u64,
        worker: &[u8],
        targets: &[&[u8]],
        now: u64,
    ) -> Result<(Vec<JobEffect>, usize), Refusal> {
        self.notify_held(id, worker, now)?;
        let (unqueue, removed) = self.unqueue(id, targets)?;
        let mut out: Vec<JobEffect> = unqueue.into_iter().collect();
        out.push(JobEffect::NotifyRelease { id });
        Ok((out, removed))
    }

    /// DELETE: the effects (empty when there is no such job). Leases on it end first, so their
    /// holders are told (`job.release`).
    pub fn delete(&self, id: u64) -> Vec<JobEffect> {
        let mut out = Vec::new();
        if !self.contains(id) {
            return out;
        }
        if self.working.contains(&id) {
            out.push(JobEffect::Release { id });
        }
        if self.notifying.contains(&id) {
            out.push(JobEffect::NotifyRelease { id });
        }
        out.push(JobEffect::Delete { id });
        out
    }

    pub fn get(&self, id: u64, now: u64) -> Option<JobView<'_>> {
        fn live(deadline: u64, l: &Lease, now: u64) -> Option<LeaseView<'_>> {
            (deadline > now).then(|| LeaseView {
                worker: &l.worker,
                deadline,
                token: l.token,
            })
        }
        if let Some(p) = self.pullable.get(&id) {
            return Some(JobView {
                request: &p.request,
                value: None,
                waiting: &p.waiting,
                lease: None,
            });
        }
        if let Some((deadline, w)) = self.working.get(&id) {
            return Some(JobView {
                request: &w.job.request,
                value: None,
                waiting: &w.job.waiting,
                lease: live(deadline, &w.lease, now),
            });
        }
        let f = self.fulfilled.get(&id)?;
        Some(JobView {
            request: &f.request,
            value: Some(&f.value),
            waiting: &f.waiting,
            lease: self
                .notifying
                .get(&id)
                .and_then(|(deadline, l)| live(deadline, l, now)),
        })
    }

    /// Counts at `now` (a lease whose deadline has passed counts as lapsed, e.g. on a replica).
    pub fn counts(&self, now: u64) -> Counts {
        let lapsed_work = self.working.due(now).count();
        let lapsed_notify: Vec<u64> = self.notifying.due(now).copied().collect();
        let renotifiable = lapsed_notify
            .iter()
            .filter(|id| {
                self.fulfilled
                    .get(id)
                    .is_some_and(|f| !f.waiting.is_empty())
            })
            .count();
        Counts {
            pending: self.pullable.len() + self.working.len(),
            leased: self.working.len() - lapsed_work,
            fulfilled: self.fulfilled.len(),
            notifiable: self.notifiable.len() + renotifiable,
            notifying: self.notifying.len() - lapsed_notify.len(),
        }
    }

    /// Keeps `notifiable` in step for one job.
    fn refresh(&mut self, id: u64) {
        let notifiable = self
            .fulfilled
            .get(&id)
            .is_some_and(|f| !f.waiting.is_empty())
            && !self.notifying.contains(&id);
        if notifiable {
            self.notifiable.insert(id);
        } else {
            self.notifiable.remove(&id);
        }
    }

    fn end_work(&mut self, id: u64) -> Result<(), &'static str> {
        let (_, w) = self.working.remove(&id).ok_or("job is not leased")?;
        if self.workers.get(&w.lease.worker) == Some(&id) {
            self.workers.remove(&w.lease.worker);
        }
        self.pullable.insert(id, w.job);
        Ok(())
    }

    fn end_notify(&mut self, id: u64) -> Result<(), &'static str> {
        let (_, l) = self
            .notifying
            .remove(&id)
            .ok_or("job has no notification lease")?;
        if self.notifiers.get(&l.worker) == Some(&id) {
            self.notifiers.remove(&l.worker);
        }
        self.refresh(id);
        Ok(())
    }

    /// A worker that holds a job gets it again, extended, same token.
    fn regrant_work(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        let &id = self.workers.get(&req.worker)?;
        let (deadline, w) = self.working.get(&id)?;
        // A lease past its deadline lapses before anything is granted (the engine settles
        // first); it is never extended.
        if deadline <= now {
            return None;
        }
        let renew = JobEffect::Renew {
            id,
            deadline: now + req.ttl,
        };
        Some((
            smallvec![renew],
            pull_reply(id, &w.job.request, w.lease.token),
        ))
    }

    fn grant_work(&self, req: &Pull, now: u64, token: u64) -> Option<(Effects<JobEffect>, Reply)> {
        // One work lease per worker: never a second one, even for a lease not yet lapsed.
        if self.workers.contains_key(&req.worker) {
            return None;
        }
        let (&id, job) = self.pullable.first_key_value()?;
        let grant = JobEffect::Grant {
            id,
            worker: req.worker.clone(),
            deadline: now + req.ttl,
            token,
        };
        Some((smallvec![grant], pull_reply(id, &job.request, token)))
    }

    /// A worker that holds a notification lease gets that job again, extended, same token.
    fn regrant_notify(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        let &id = self.notifiers.get(&req.worker)?;
        let (deadline, l) = self.notifying.get(&id)?;
        let f = self.fulfilled.get(&id)?;
        if deadline <= now {
            return None;
        }
        let renew = JobEffect::NotifyRenew {
            id,
            deadline: now + req.ttl,
        };
        Some((smallvec![renew], notify_reply(id, f, l.token)))
    }

    fn grant_notify(
        &self,
        req: &Pull,
        now: u64,
        token: u64,
    ) -> Option<(Effects<JobEffect>, Reply)> {
        if self.notifiers.contains_key(&req.worker) {
            return None;
        }
        let &id = self.notifiable.first()?;
        let f = self.fulfilled.get(&id)?;
        let grant = JobEffect::NotifyGrant {
            id,
            worker: req.worker.clone(),
            deadline: now + req.ttl,
            token,
        };
        Some((smallvec![grant], notify_reply(id, f, token)))
    }
}

/// Bytes per entry of a hash map slot of `kv` bytes (+1 control byte) at 7/8 load, doubled
/// right after a resize: count it at 3/4 load on average.
fn hash_entry(kv: usize) -> usize {
    (kv + 1) * 4 / 3
}

/// Bytes per entry of a `DeadlineMap<u64, V>`: its hash map slot (key, deadline, value) and
/// its ordered index entry (deadline, key).
fn deadline_entry<V>() -> usize {
    hash_entry(8 + 8 + std::mem::size_of::<V>()) + btree_entry(16)
}

fn targets_heap(t: &[Bytes]) -> usize {
    heap(std::mem::size_of_val(t)) + t.iter().map(|b| heap(b.len())).sum::<usize>()
}

fn worker_heap(w: &Worker) -> usize {
    heap(16 + w.len())
}

impl Primitive for Jobs {
    const FAMILY: Family = Family::Job;
    const TYPE_NAME: &'static str = "CorralJob";
    const ENCODING_VERSION: i32 = 1;

    type Effect = JobEffect;
    type Request = Pull;

    fn apply(&mut self, effect: &JobEffect) -> Result<(), &'static str> {
        match effect {
            JobEffect::Create { id, request } => {
                if self.contains(*id) {
                    return Err("job id already exists");
                }
                let job = Pending {
                    request: request.clone(),
                    waiting: Box::default(),
                };
                self.pullable.insert(*id, job);
                self.last_token = self.last_token.max(*id);
            }
            JobEffect::Grant {
                id,
                worker,
                deadline,
                token,
            } => {
                if self.workers.contains_key(worker) {
                    return Err("worker already holds a work lease");
                }
                let job = self.pullable.remove(id).ok_or("job is not pullable")?;
                let lease = Lease {
                    worker: worker.clone(),
                    token: *token,
                };
                self.working.insert(*id, *deadline, Working { lease, job });
                self.workers.insert(worker.clone(), *id);
                self.last_token = self.last_token.max(*token);
            }
            JobEffect::Renew { id, deadline } => {
                if !self.working.set_deadline(id, *deadline) {
                    return Err("job is not leased");
                }
            }
            JobEffect::Release { id } | JobEffect::Lapse { id } => self.end_work(*id)?,
            JobEffect::Fulfill { id, value } => {
                let p = self
                    .pullable
                    .remove(id)
                    .ok_or("job is not pending and free")?;
                let f = Fulfilled {
                    request: p.request,
                    value: value.clone(),
                    waiting: p.waiting,
                };
                self.fulfilled.insert(*id, f);
                self.refresh(*id);
            }
            JobEffect::Queue { id, targets } => {
                let w = self.waiting_mut(*id).ok_or("no such job")?;
                let mut v = std::mem::take(w).into_vec();
                v.extend(targets.iter().cloned());
                *w = v.into_boxed_slice();
                self.refresh(*id);
            }
            JobEffect::Unqueue { id, targets } => {
                let w = self.waiting_mut(*id).ok_or("no such job")?;
                let hit = first_matches(w, targets);
                let v: Vec<Bytes> = std::mem::take(w)
                    .into_vec()
                    .into_iter()
                    .zip(hit)
                    .filter(|(_, h)| !h)
                    .map(|(t, _)| t)
                    .collect();
                *w = v.into_boxed_slice();
                self.refresh(*id);
            }
            JobEffect::NotifyGrant {
                id,
                worker,
                deadline,
                token,
            } => {
                if !self.fulfilled.contains_key(id) {
                    return Err("job is not fulfilled");
                }
                if self.notifying.contains(id) {
                    return Err("job already has a notification lease");
                }
                if self.notifiers.contains_key(worker) {
                    return Err("worker already holds a notification lease");
                }
                let lease = Lease {
                    worker: worker.clone(),
                    token: *token,
                };
                self.notifying.insert(*id, *deadline, lease);
                self.notifiers.insert(worker.clone(), *id);
                self.notifiable.remove(id);
                self.last_token = self.last_token.max(*token);
            }
            JobEffect::NotifyRenew { id, deadline } => {
                if !self.notifying.set_deadline(id, *deadline) {
                    return Err("job has no notification lease");
                }
            }
            JobEffect::NotifyRelease { id } | JobEffect::NotifyLapse { id } => {
                self.end_notify(*id)?
            }
            JobEffect::Delete { id } => {
                if !self.contains(*id) {
                    return Err("no such job");
                }
                if self.working.contains(id) {
                    self.end_work(*id)?;
                }
                if self.notifying.contains(id) {
                    self.end_notify(*id)?;
                }
                self.pullable.remove(id);
                self.fulfilled.remove(id);
                self.notifiable.remove(id);
            }
            JobEffect::Floor { token } => self.last_token = self.last_token.max(*token),
        }
        Ok(())
    }

    fn regrant(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        match req.lane {
            Lane::Work => self.regrant_work(req, now),
            Lane::Notify => self.regrant_notify(req, now),
        }
    }

    fn grant(&self, req: &Pull, now: u64, token: u64) -> Option<(Effects<JobEffect>, Reply)> {
        match req.lane {
            Lane::Work => self.grant_work(req, now, token),
            Lane::Notify => self.grant_notify(req, now, token),
        }
    }

    fn lane(req: &Pull) -> u64 {
        req.lane as u64
    }

    fn lapse(&self, now: u64, out: &mut Vec<JobEffect>) {
        out.extend(self.working.due(now).map(|&id| JobEffect::Lapse { id }));
        out.extend(
            self.notifying
                .due(now)
                .map(|&id| JobEffect::NotifyLapse { id }),
        );
    }

    fn next_deadline(&self) -> Option<u64> {
        match (self.working.earliest(), self.notifying.earliest()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A store keeps its jobs until they are deleted: no PTTL.
    fn expires_at(&self) -> Option<u64> {
        None
    }

    fn is_empty(&self) -> bool {
        self.pullable.is_empty() && self.working.is_empty() && self.fulfilled.is_empty()
    }

    fn last_token(&self) -> u64 {
        self.last_token
    }

    fn rebuild(&self) -> Vec<JobEffect> {
        let mut jobs: Vec<(u64, &Bytes, &[Bytes], Option<&Bytes>)> =
            Vec::with_capacity(self.job_count());
        jobs.extend(
            self.pullable
                .iter()
                .map(|(id, p)| (*id, &p.request, &p.waiting[..], None)),
        );
        jobs.extend(
            self.working
                .iter()
                .map(|(id, _, w)| (*id, &w.job.request, &w.job.waiting[..], None)),
        );
        jobs.extend(
            self.fulfilled
                .iter()
                .map(|(id, f)| (*id, &f.request, &f.waiting[..], Some(&f.value))),
        );
        jobs.sort_unstable_by_key(|j| j.0);
        let mut out =
            Vec::with_capacity(jobs.len() + self.working.len() + self.notifying.len() + 1);
        for (id, request, waiting, value) in jobs {
            out.push(JobEffect::Create {
                id,
                request: request.clone(),
            });
            if !waiting.is_empty() {
                out.push(JobEffect::Queue {
                    id,
                    targets: waiting.to_vec(),
                });
            }
            if let Some(value) = value {
                out.push(JobEffect::Fulfill {
                    id,
                    value: value.clone(),
                });
            }
        }
        out.extend(
            self.working
                .iter()
                .map(|(&id, deadline, w)| JobEffect::Grant {
                    id,
                    worker: w.lease.worker.clone(),
                    deadline,
                    token: w.lease.token,
                }),
        );
        out.extend(
            self.notifying
                .iter()
                .map(|(&id, deadline, l)| JobEffect::NotifyGrant {
                    id,
                    worker: l.worker.clone(),
                    deadline,
                    token: l.token,
                }),
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
}

impl Jobs {
    /// `mem_usage` looking at `sample` jobs of each table at most (`usize::MAX`: every job):
    /// per-entry table bytes plus each job's own heap bytes (request, value, targets, worker).
    fn mem_sampled(&self, sample: usize) -> usize {
        use std::mem::size_of;
        let pullable = sampled(self.pullable.len(), self.pullable.values(), sample, |p| {
            btree_entry(8 + size_of::<Pending>()) + heap(p.request.len()) + targets_heap(&p.waiting)
        });
        let working = sampled(
            self.working.len(),
            self.working.iter(),
            sample,
            |(_, _, w)| {
                deadline_entry::<Working>()
                    + heap(w.job.request.len())
                    + targets_heap(&w.job.waiting)
                    + worker_heap(&w.lease.worker)
                    + hash_entry(16 + 8)
            },
        );
        let fulfilled = sampled(self.fulfilled.len(), self.fulfilled.values(), sample, |f| {
            btree_entry(8 + size_of::<Fulfilled>())
                + heap(f.request.len())
                + heap(f.value.len())
                + targets_heap(&f.waiting)
        });
        let notifying = sampled(
            self.notifying.len(),
            self.notifying.iter(),
            sample,
            |(_, _, l)| deadline_entry::<Lease>() + worker_heap(&l.worker) + hash_entry(16 + 8),
        );
        pullable + working + fulfilled + notifying + self.notifiable.len() * btree_entry(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec;
    use crate::engine::deadlines::assert_close;
    use crate::engine::decide;

    /// Asserts that the derived indexes match the tables.
    fn check(j: &Jobs) {
        let stored = Stored {
            pullable: j.pullable.clone(),
            working: j.working.clone(),
            fulfilled: j.fulfilled.clone(),
            notifying: j.notifying.clone(),
            last_token: j.last_token,
        };
        let rebuilt = Jobs::try_from(stored).expect("consistent tables");
        assert_eq!(rebuilt.notifiable, j.notifiable, "notifiable index");
        assert_eq!(rebuilt.workers, j.workers, "worker index");
        assert_eq!(rebuilt.notifiers, j.notifiers, "notifier index");
    }

    fn pull(lane: Lane, worker: &str, ttl: u64) -> Pull {
        Pull {
            lane,
            worker: Arc::from(worker.as_bytes()),
            ttl,
        }
    }

    /// `run!(j, effects)`: decides (borrowing `j`), then applies and checks.
    macro_rules! run {
        ($j:ident, $e:expr $(,)?) => {{
            let e: Vec<JobEffect> = ($e).to_vec();
            run(&mut $j, &e);
        }};
    }

    fn run(j: &mut Jobs, effects: &[JobEffect]) {
        for e in effects {
            j.apply(e).unwrap();
        }
        check(j);
    }

    /// Grants (or not) and applies; returns the reply.
    fn take(j: &mut Jobs, req: &Pull, now: u64, token: u64) -> Option<Reply> {
        let (effects, reply) = decide(j, req, now, false, token)?;
        run(j, &effects);
        Some(reply)
    }

    fn ints(r: &Reply) -> (u64, u64) {
        match r {
            Reply::Array(v) => match (&v[0], v.last()) {
                (Reply::Int(id), Some(Reply::Int(t))) => (*id as u64, *t as u64),
                _ => panic!("{r:?}"),
            },
            _ => panic!("{r:?}"),
        }
    }

    fn lapse(j: &mut Jobs, now: u64) -> Vec<JobEffect> {
        let mut out = vec![];
        j.lapse(now, &mut out);
        run(j, &out);
        out
    }

    #[test]
    fn workflow_create_pull_fulfil_queue_notify_done() {
        let mut j = Jobs::default();
        run!(j, &[j.create(10, b"3+3"), j.create(11, b"4+4")]);
        let r = take(&mut j, &pull(Lane::Work, "w", 100), 0, 12).unwrap();
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Int(10),
                Reply::Bulk(b"3+3".to_vec()),
                Reply::Int(12)
            ])
        );
        // Oldest first; the leased job is skipped.
        let r = take(&mut j, &pull(Lane::Work, "v", 100), 0, 13).unwrap();
        assert_eq!(ints(&r), (11, 13));
        assert!(take(&mut j, &pull(Lane::Work, "u", 100), 0, 14).is_none());
        // Queue before fulfilment.
        run!(j, &[j.queue(10, &[b"a", b"b", b"a"]).unwrap()]);
        assert!(take(&mut j, &pull(Lane::Notify, "n", 100), 0, 15).is_none());
        let e = j.fulfill(10, b"6", Some(12), 1).unwrap();
        assert_eq!(e[0], JobEffect::Release { id: 10 });
        run(&mut j, &e);
        assert_eq!(j.fulfill(10, b"6", None, 1), Err(Refusal::Already));
        assert_eq!(j.renew(10, b"w", 10, 1), Err(Refusal::IsFulfilled));
        // UNQUEUE removes the first equal match of each.
        let (e, n) = j.unqueue(10, &[b"a", b"zzz"]).unwrap();
        assert_eq!(n, 1);
        run(&mut j, &[e.unwrap()]);
        assert_eq!(
            j.get(10, 1).unwrap().waiting,
            &[Bytes::from(&b"b"[..]), Bytes::from(&b"a"[..])]
        );
        let r = take(&mut j, &pull(Lane::Notify, "n", 100), 1, 16).unwrap();
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Int(10),
                Reply::Bulk(b"6".to_vec()),
                Reply::Array(vec![Reply::Bulk(b"b".to_vec()), Reply::Bulk(b"a".to_vec())]),
                Reply::Int(16)
            ])
        );
        assert!(take(&mut j, &pull(Lane::Notify, "m", 100), 1, 17).is_none());
        // Queue after fulfilment, during the lease: stays for the next PULLNOTIFY.
        run!(j, &[j.queue(10, &[b"c"]).unwrap()]);
        assert_eq!(
            j.done(10, b"m", &[], 2),
            Err(Refusal::LostTo(Arc::from(&b"n"[..])))
        );
        let (e, n) = j.done(10, b"n", &[b"b", b"x"], 2).unwrap();
        assert_eq!(n, 1);
        run(&mut j, &e);
        assert_eq!(j.done(10, b"n", &[], 2), Err(Refusal::NotLeased));
        let r = take(&mut j, &pull(Lane::Notify, "m", 100), 2, 18).unwrap();
        assert_eq!(ints(&r), (10, 18));
        let (e, n) = j.done(10, b"m", &[b"a", b"c"], 3).unwrap();
        assert_eq!(n, 2);
        run(&mut j, &e);
        assert!(take(&mut j, &pull(Lane::Notify, "m", 100), 3, 19).is_none());
        assert_eq!(
            j.counts(3),
            Counts {
                pending: 1,
                leased: 1,
                fulfilled: 1,
                notifiable: 0,
                notifying: 0
            }
        );
        // The fulfilled job stays until deleted.
        run!(j, &j.delete(10));
        assert!(j.delete(10).is_empty());
        run!(j, &j.delete(11));
        assert!(j.is_empty());
        assert_eq!(j.last_token(), 18);
    }

    #[test]
    fn lapse_makes_job_pullable_again_and_fences_the_old_worker() {
        let mut j = Jobs::default();
        run!(j, &[j.create(1, b"r")]);
        let (_, t1) = ints(&take(&mut j, &pull(Lane::Work, "old", 100), 0, 2).unwrap());
        assert_eq!(j.next_deadline(), Some(100));
        assert!(lapse(&mut j, 99).is_empty());
        assert_eq!(lapse(&mut j, 100), vec![JobEffect::Lapse { id: 1 }]);
        assert_eq!(j.renew(1, b"old", 100, 100), Err(Refusal::NotLeased));
        let (id, t2) = ints(&take(&mut j, &pull(Lane::Work, "new", 100), 100, 3).unwrap());
        assert_eq!(id, 1);
        assert!(t2 > t1);
        assert_eq!(
            j.fulfill(1, b"v", Some(t1), 101),
            Err(Refusal::Stale { current: Some(t2) })
        );
        assert_eq!(
            j.release(1, b"old", 101),
            Err(Refusal::LostTo(Arc::from(&b"new"[..])))
        );
        run!(j, &j.fulfill(1, b"v", Some(t2), 101).unwrap());
        // Notification leases lapse too; the job is notifiable again.
        run!(j, &[j.queue(1, &[b"t"]).unwrap()]);
        take(&mut j, &pull(Lane::Notify, "n", 50), 200, 4).unwrap();
        assert_eq!(j.counts(249).notifying, 1);
        assert_eq!(
            j.counts(250).notifiable,
            1,
            "seen as lapsed before the engine acts"
        );
        assert_eq!(lapse(&mut j, 250), vec![JobEffect::NotifyLapse { id: 1 }]);
        let (_, t) = ints(&take(&mut j, &pull(Lane::Notify, "m", 50), 250, 5).unwrap());
        assert_eq!(t, 5);
    }

    #[test]
    fn idempotent_pull_returns_the_held_job_with_its_token() {
        let mut j = Jobs::default();
        run!(j, &[j.create(1, b"a"), j.create(2, b"b")]);
        let r1 = take(&mut j, &pull(Lane::Work, "w", 100), 0, 3).unwrap();
        let r2 = take(&mut j, &pull(Lane::Work, "w", 500), 50, 4).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(j.get(1, 50).unwrap().lease.unwrap().deadline, 550);
        // Even with others in line.
        assert!(decide(&j, &pull(Lane::Work, "w", 10), 60, true, 5).is_some());
        assert!(decide(&j, &pull(Lane::Work, "x", 10), 60, true, 5).is_none());
    }

    #[test]
    fn fulfil_without_token_ends_anyones_lease_and_stale_without_lease() {
        let mut j = Jobs::default();
        run!(j, &[j.create(1, b"a"), j.create(2, b"b")]);
        assert_eq!(
            j.fulfill(1, b"v", Some(7), 0),
            Err(Refusal::Stale { current: None })
        );
        assert_eq!(j.fulfill(3, b"v", None, 0), Err(Refusal::NoJob));
        take(&mut j, &pull(Lane::Work, "w", 100), 0, 3).unwrap();
        run!(j, &j.fulfill(1, b"v", None, 0).unwrap());
        assert_eq!(j.renew(1, b"w", 10, 0), Err(Refusal::IsFulfilled));
        assert_eq!(j.done(2, b"w", &[], 0), Err(Refusal::NotFulfilled));
        // The worker is free to pull another.
        let (id, _) = ints(&take(&mut j, &pull(Lane::Work, "w", 100), 0, 4).unwrap());
        assert_eq!(id, 2);
    }

    #[test]
    fn delete_ends_leases() {
        let mut j = Jobs::default();
        run!(j, &[j.create(1, b"a"), j.create(2, b"b")]);
        take(&mut j, &pull(Lane::Work, "w", 100), 0, 3).unwrap();
        run!(j, &j.fulfill(2, b"v", None, 0).unwrap());
        run!(j, &[j.queue(2, &[b"t"]).unwrap()]);
        take(&mut j, &pull(Lane::Notify, "n", 100), 0, 4).unwrap();
        let e = j.delete(1);
        assert_eq!(
            e,
            vec![JobEffect::Release { id: 1 }, JobEffect::Delete { id: 1 }]
        );
        run(&mut j, &e);
        let e = j.delete(2);
        assert_eq!(
            e,
            vec![
                JobEffect::NotifyRelease { id: 2 },
                JobEffect::Delete { id: 2 }
            ]
        );
        run(&mut j, &e);
        assert!(j.is_empty());
        assert_eq!(j.next_deadline(), None);
        // The workers hold nothing now.
        assert!(j.workers.is_empty() && j.notifiers.is_empty());
    }

    fn sample() -> Jobs {
        let mut j = Jobs::default();
        for id in 1..=6 {
            run!(j, &[j.create(id, format!("req\0{id}").as_bytes())]);
        }
        run!(j, &[j.queue(2, &[b"t1", b"\0t2"]).unwrap()]);
        take(&mut j, &pull(Lane::Work, "w1", 100), 0, 10).unwrap();
        take(&mut j, &pull(Lane::Work, "w2\0", 200), 0, 11).unwrap();
        run!(j, &j.fulfill(3, &[0, 1, 2, 255], None, 0).unwrap());
        run!(j, &j.fulfill(4, b"", None, 0).unwrap());
        run!(
            j,
            &[
                j.queue(3, &[b"x", b"y"]).unwrap(),
                j.queue(4, &[b"z"]).unwrap(),
            ],
        );
        take(&mut j, &pull(Lane::Notify, "n1", 300), 0, 12).unwrap();
        run!(j, &j.delete(6));
        run(&mut j, &[JobEffect::Floor { token: 20 }]);
        j
    }

    #[test]
    fn rebuild_and_serde_reproduce_state() {
        let j = sample();
        assert_eq!(j.counts(0).notifying, 1);
        assert_eq!(j.counts(0).notifiable, 1);
        let mut copy = Jobs::default();
        run(&mut copy, &j.rebuild());
        assert_eq!(copy, j);
        let bytes = codec::encode(&j);
        let back: Jobs = codec::decode(&bytes).unwrap();
        check(&back);
        assert_eq!(back, j);
        assert_eq!(codec::encode(&back), bytes, "deterministic encoding");
        assert_eq!(codec::encode(&copy), bytes);
        assert_eq!(Jobs::decode(1, &bytes), Some(j.clone()));
        assert_eq!(Jobs::decode(2, &bytes), None);
    }

    #[test]
    fn inconsistent_stored_values_are_refused() {
        let mut j = sample();
        // The same id pending and fulfilled.
        let f = j.fulfilled.values().next().unwrap().clone();
        j.fulfilled.insert(5, f);
        assert_eq!(codec::decode::<Jobs>(&codec::encode(&j)), None);
        let mut j = sample();
        // Two work leases for one worker.
        let (_, w) = j.working.get(&1).unwrap();
        let w = w.clone();
        let p = j.pullable.remove(&5).unwrap();
        j.working.insert(
            5,
            999,
            Working {
                lease: w.lease,
                job: p,
            },
        );
        assert_eq!(codec::decode::<Jobs>(&codec::encode(&j)), None);
        // Garbage.
        assert_eq!(codec::decode::<Jobs>(&[1, 2, 3]), None);
    }

    #[test]
    fn apply_rejects_nonsense_and_leaves_state() {
        let mut j = sample();
        let before = j.clone();
        for e in [
            JobEffect::Create {
                id: 1,
                request: Bytes::default(),
            },
            JobEffect::Grant {
                id: 1,
                worker: Arc::from(&b"x"[..]),
                deadline: 1,
                token: 1,
            },
            JobEffect::Grant {
                id: 5,
                worker: Arc::from(&b"w1"[..]),
                deadline: 1,
                token: 1,
            },
            JobEffect::Renew { id: 5, deadline: 1 },
            JobEffect::Release { id: 5 },
            JobEffect::Fulfill {
                id: 1,
                value: Bytes::default(),
            },
            JobEffect::Queue {
                id: 99,
                targets: vec![],
            },
            JobEffect::NotifyGrant {
                id: 5,
                worker: Arc::from(&b"q"[..]),
                deadline: 1,
                token: 1,
            },
            JobEffect::NotifyGrant {
                id: 3,
                worker: Arc::from(&b"q"[..]),
                deadline: 1,
                token: 1,
            },
            JobEffect::NotifyRelease { id: 4 },
            JobEffect::Delete { id: 99 },
        ] {
            assert!(j.apply(&e).is_err(), "{e:?}");
            assert_eq!(j, before, "{e:?}");
        }
    }

    #[test]
    fn heap_size_classes() {
        let classes = [
            (0, 0),
            (1, 8),
            (8, 8),
            (9, 16),
            (10, 16),
            (17, 32),
            (128, 128),
            (129, 160),
        ];
        for (n, want) in classes {
            assert_eq!(heap(n), want, "{n}");
        }
        assert_eq!(heap(257), 320);
        assert_eq!(heap(1 << 20), 1 << 20);
        assert_eq!(heap((1 << 20) + 1), (1 << 20) + (1 << 18));
    }

    #[test]
    fn memory_per_pending_job_is_within_budget() {
        let mut j = Jobs::default();
        for id in 1..=10_000u64 {
            let e = j.create(id, b"0123456789");
            run_unchecked(&mut j, &[e]);
        }
        let per_job = (std::mem::size_of::<Jobs>() + j.mem_usage()) / 10_000;
        assert!(per_job <= 200 + 10, "{per_job} bytes per pending job");
    }

    fn run_unchecked(j: &mut Jobs, effects: &[JobEffect]) {
        for e in effects {
            j.apply(e).unwrap();
        }
    }

    fn t_is_new(e: &[JobEffect]) -> bool {
        matches!(e, [JobEffect::Grant { .. } | JobEffect::NotifyGrant { .. }])
    }

    /// Model check: random commands against a plain model of the job store, comparing every
    /// decision, reply and view, with the indexes checked after every step.
    #[test]
    fn matches_model() {
        #[derive(Clone, Debug, Default)]
        struct MJob {
            request: Vec<u8>,
            value: Option<Vec<u8>>,
            waiting: Vec<Vec<u8>>,
            /// (worker, deadline, token)
            work: Option<(String, u64, u64)>,
            notify: Option<(String, u64, u64)>,
        }
        let mut model: BTreeMap<u64, MJob> = BTreeMap::new();
        let mut j = Jobs::default();
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 1000u64;
        let mut token = 1u64;
        let targets = [&b"a"[..], b"b", b"c"];
        let mut coverage: BTreeMap<&'static str, usize> = BTreeMap::new();
        for _ in 0..30_000 {
            now += rnd(15);
            token += 1;
            // The engine lapses what is due before every command.
            let mut due = vec![];
            j.lapse(now, &mut due);
            run(&mut j, &due);
            if !due.is_empty() {
                *coverage.entry("lapse").or_insert(0) += 1;
            }
            for m in model.values_mut() {
                if m.work.as_ref().is_some_and(|w| w.1 <= now) {
                    m.work = None;
                }
                if m.notify.as_ref().is_some_and(|w| w.1 <= now) {
                    m.notify = None;
                }
            }
            let worker = format!("w{}", rnd(6));
            let id = if model.is_empty() || rnd(10) == 0 {
                token + 5
            } else {
                let keys: Vec<u64> = model.keys().copied().collect();
                keys[rnd(keys.len() as u64) as usize]
            };
            let ttl = 1 + rnd(60);
            let mut seen = |what: &'static str| *coverage.entry(what).or_insert(0usize) += 1;
            match rnd(12) {
                0 | 1 => {
                    let e = j.create(token, b"req");
                    run(&mut j, &[e]);
                    model.insert(
                        token,
                        MJob {
                            request: b"req".to_vec(),
                            ..MJob::default()
                        },
                    );
                }
                2 | 3 => {
                    let got = decide(&j, &pull(Lane::Work, &worker, ttl), now, false, token);
                    let held = model
                        .iter()
                        .find(|(_, m)| m.work.as_ref().is_some_and(|w| w.0 == worker));
                    let want = match held {
                        Some((&hid, m)) => Some((hid, m.work.as_ref().unwrap().2)),
                        None => model
                            .iter()
                            .find(|(_, m)| m.value.is_none() && m.work.is_none())
                            .map(|(&id, _)| (id, token)),
                    };
                    assert_eq!(got.as_ref().map(|(_, r)| ints(r)), want);
                    if let Some((e, _)) = got {
                        seen(if t_is_new(&e) { "pull" } else { "re-pull" });
                        run(&mut j, &e);
                        let (gid, t) = want.unwrap();
                        model.get_mut(&gid).unwrap().work = Some((worker.clone(), now + ttl, t));
                    }
                }
                4 => {
                    let got = decide(&j, &pull(Lane::Notify, &worker, ttl), now, false, token);
                    let held = model
                        .iter()
                        .find(|(_, m)| m.notify.as_ref().is_some_and(|w| w.0 == worker));
                    let want = match held {
                        Some((&hid, m)) => Some((hid, m.notify.as_ref().unwrap().2)),
                        None => model
                            .iter()
                            .find(|(_, m)| {
                                m.value.is_some() && !m.waiting.is_empty() && m.notify.is_none()
                            })
                            .map(|(&id, _)| (id, token)),
                    };
                    assert_eq!(got.as_ref().map(|(_, r)| ints(r)), want);
                    if let Some((e, _)) = got {
                        seen(if t_is_new(&e) {
                            "pullnotify"
                        } else {
                            "re-pullnotify"
                        });
                        run(&mut j, &e);
                        let (gid, t) = want.unwrap();
                        model.get_mut(&gid).unwrap().notify = Some((worker.clone(), now + ttl, t));
                    }
                }
                5 => {
                    let holds = model
                        .get(&id)
                        .and_then(|m| m.work.as_ref())
                        .is_some_and(|w| w.0 == worker);
                    let r = if rnd(2) == 0 {
                        j.renew(id, worker.as_bytes(), ttl, now)
                    } else {
                        j.release(id, worker.as_bytes(), now)
                    };
                    assert_eq!(r.is_ok(), holds, "{r:?}");
                    if let Ok(e) = r {
                        run(&mut j, std::slice::from_ref(&e));
                        let m = model.get_mut(&id).unwrap();
                        match e {
                            JobEffect::Renew { .. } => m.work.as_mut().unwrap().1 = now + ttl,
                            _ => m.work = None,
                        }
                    }
                }
                6 => {
                    let with_token = match rnd(3) {
                        0 => None,
                        1 => model.get(&id).and_then(|m| m.work.as_ref()).map(|w| w.2),
                        _ => Some(token - rnd(5)),
                    };
                    let r = j.fulfill(id, b"val", with_token, now);
                    let want = match model.get(&id) {
                        None => Err(Refusal::NoJob),
                        Some(m) if m.value.is_some() => Err(Refusal::Already),
                        Some(m) => match (with_token, &m.work) {
                            (Some(t), w) if w.as_ref().map(|w| w.2) != Some(t) => {
                                Err(Refusal::Stale {
                                    current: w.as_ref().map(|w| w.2),
                                })
                            }
                            _ => Ok(()),
                        },
                    };
                    assert_eq!(r.as_ref().map(|_| ()).map_err(Clone::clone), want);
                    seen(match &r {
                        Ok(_) => "fulfil",
                        Err(Refusal::Stale { .. }) => "stale",
                        Err(Refusal::Already) => "already",
                        Err(_) => "fulfil refused",
                    });
                    if let Ok(e) = r {
                        run(&mut j, &e);
                        let m = model.get_mut(&id).unwrap();
                        m.value = Some(b"val".to_vec());
                        m.work = None;
                    }
                }
                7 => {
                    let ts: Vec<&[u8]> =
                        (0..1 + rnd(3)).map(|_| targets[rnd(3) as usize]).collect();
                    let r = j.queue(id, &ts);
                    assert_eq!(r.is_ok(), model.contains_key(&id));
                    if let Ok(e) = r {
                        run(&mut j, &[e]);
                        model
                            .get_mut(&id)
                            .unwrap()
                            .waiting
                            .extend(ts.iter().map(|t| t.to_vec()));
                    }
                }
                8 | 9 => {
                    let ts: Vec<&[u8]> = (0..rnd(3)).map(|_| targets[rnd(3) as usize]).collect();
                    let done = rnd(2) == 0;
                    // Mostly DONE by the worker that holds the job's notification lease.
                    let held = model
                        .iter()
                        .find(|(_, m)| m.notify.as_ref().is_some_and(|n| n.0 == worker))
                        .map(|(&id, _)| id);
                    let id = match held {
                        Some(h) if done && rnd(4) > 0 => h,
                        _ => id,
                    };
                    let r = if done {
                        j.done(id, worker.as_bytes(), &ts, now)
                    } else {
                        j.unqueue(id, &ts)
                            .map(|(e, n)| (e.into_iter().collect(), n))
                    };
                    let allowed = match model.get(&id) {
                        None => false,
                        Some(m) => !done || m.notify.as_ref().is_some_and(|n| n.0 == worker),
                    };
                    assert_eq!(r.is_ok(), allowed, "{r:?}");
                    if let Ok((e, n)) = r {
                        run(&mut j, &e);
                        let m = model.get_mut(&id).unwrap();
                        let mut removed = 0;
                        for t in &ts {
                            if let Some(i) = m.waiting.iter().position(|w| w == t) {
                                m.waiting.remove(i);
                                removed += 1;
                            }
                        }
                        assert_eq!(n, removed);
                        if done && !m.waiting.is_empty() {
                            seen("done leaving targets");
                        }
                        if !done && removed > 0 {
                            seen("unqueue");
                        }
                        if done {
                            m.notify = None;
                        }
                    }
                }
                _ => {
                    let e = j.delete(id);
                    if !e.is_empty() {
                        seen("delete");
                    }
                    assert_eq!(!e.is_empty(), model.remove(&id).is_some());
                    run(&mut j, &e);
                }
            }
            // Views agree with the model.
            for (&mid, m) in &model {
                let v = j.get(mid, now).expect("job exists");
                assert_eq!(v.request, &m.request[..]);
                assert_eq!(v.value, m.value.as_deref());
                let w: Vec<&[u8]> = v.waiting.iter().map(|t| &t[..]).collect();
                let mw: Vec<&[u8]> = m.waiting.iter().map(|t| &t[..]).collect();
                assert_eq!(w, mw);
                let lease = if m.value.is_some() {
                    &m.notify
                } else {
                    &m.work
                };
                assert_eq!(
                    v.lease.map(|l| (l.worker.to_vec(), l.deadline, l.token)),
                    lease.as_ref().map(|l| (l.0.as_bytes().to_vec(), l.1, l.2))
                );
            }
            assert_eq!(j.job_count(), model.len());
            let c = j.counts(now);
            assert_eq!(
                c.pending,
                model.values().filter(|m| m.value.is_none()).count()
            );
            assert_eq!(
                c.leased,
                model.values().filter(|m| m.work.is_some()).count()
            );
            assert_eq!(
                c.notifiable,
                model
                    .values()
                    .filter(|m| m.value.is_some() && !m.waiting.is_empty() && m.notify.is_none())
                    .count()
            );
            assert_eq!(
                c.notifying,
                model.values().filter(|m| m.notify.is_some()).count()
            );
        }
        for what in [
            "pull",
            "re-pull",
            "pullnotify",
            "re-pullnotify",
            "lapse",
            "fulfil",
            "stale",
            "already",
            "unqueue",
            "done leaving targets",
            "delete",
        ] {
            assert!(
                coverage.get(what).copied().unwrap_or(0) >= 20,
                "{what}: {coverage:?}"
            );
        }
        // The final state survives rebuild and serde.
        let mut copy = Jobs::default();
        run(&mut copy, &j.rebuild());
        assert_eq!(copy, j);
        let back: Jobs = codec::decode(&codec::encode(&j)).unwrap();
        assert_eq!(back, j);
    }

    /// MEMORY USAGE samples at most MEM_SAMPLE jobs per table; on jobs of uniform (and of
    /// mixed) sizes — pending, leased and fulfilled — it stays within 10% of the exact walk.
    #[test]
    fn mem_estimate_matches_the_walk() {
        for mixed in [false, true] {
            let mut j = Jobs::default();
            let len = |i: u64| if mixed { 1 + (i % 60) as usize } else { 30 };
            for id in 1..=30_000u64 {
                let e = j.create(id, &vec![b'r'; len(id)]);
                run_unchecked(&mut j, &[e]);
            }
            for id in 1..=3_000u64 {
                let token = 100_000 + id;
                let grant = JobEffect::Grant {
                    id,
                    worker: Arc::from(format!("worker-{id:06}").as_bytes()),
                    deadline: 10_000 + id,
                    token,
                };
                run_unchecked(&mut j, &[grant]);
            }
            for id in 20_001..=25_000u64 {
                let fulfil = JobEffect::Fulfill {
                    id,
                    value: vec![b'v'; len(id) * 2].into(),
                };
                run_unchecked(&mut j, &[fulfil]);
            }
            let exact = j.mem_sampled(usize::MAX);
            assert_close(
                j.mem_usage(),
                exact,
                if mixed { "mixed" } else { "uniform" },
            );
        }
    }
}
