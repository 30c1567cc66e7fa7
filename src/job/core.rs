//! JOB, the pure core: a job store with delays, priorities, exclusive fenced pulls, bounded
//! attempts with backoff and a dead-letter state, retention, unique names, and queued
//! notifications. No Redis here — the engine opens keys, lapses leases and promotes due jobs at
//! their deadlines (through `lapse`), queues blocked PULL/PULLNOTIFY clients, replicates,
//! persists.
//!
//! Every job is in exactly one table, by state:
//! - `delayed` (`timed.rs`): not pullable before its due time (DELAY, or a failed attempt's
//!   backoff); the scheduler promotes it to `pullable` then;
//! - `pullable` (`pullable.rs`): pending, no work lease — in pull order (priority, then id), so
//!   PULL takes the first;
//! - `working` (`leases.rs`): pending under a work lease, by deadline;
//! - `failed`: the dead letter (ATTEMPTS failed attempts), by id;
//! - `fulfilled`: with its value; `notifying` holds its notification lease.
//!
//! `retained` holds the deletion time of finished jobs created with KEEP. The derived state — the
//! notifiable ids, which job each worker holds, the UNIQUE names — is not stored: it is rebuilt
//! when a value is loaded (`store.rs`), and the tests assert it always matches.
//!
//! Ids and tokens come from one sequence: a job's id is the fencing-token candidate the engine
//! offers when it is created. Ids therefore increase for the life of the key *and* across its
//! deletion and re-creation, restarts, replication and failover.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::smallvec;

use super::leases::{Held, Lease, Leases};
use super::pullable::{place, Pullable};
use super::record::{backoff_delay, first_matches, Bytes, Job, Name, Opts, Worker};
use super::timed::Timed;
use crate::engine::args::MAX_MS;
use crate::engine::{Effect, Effects, Event, Reply};

/// How many jobs one `lapse` acts on at most. A million jobs falling due at once are promoted
/// (or deleted) in slices of this many: the key's next deadline stays due, the engine looks at
/// it again at once, and the timer lets Redis serve clients between slices.
pub const LAPSE_BATCH: usize = 256;

/// A fulfilled job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fulfilled {
    pub job: Job,
    pub value: Bytes,
}

/// A job's state, as JOB.GET and JOB.FAIL name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Delayed,
    Pending,
    Failed,
    Fulfilled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Delayed => "delayed",
            State::Pending => "pending",
            State::Failed => "failed",
            State::Fulfilled => "fulfilled",
        }
    }
}

/// What JOB.LIST lists: the four states, and `leased` (pending jobs under a work lease, which
/// have no place in pull order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Pending,
    Leased,
    Delayed,
    Failed,
    Fulfilled,
}

impl Listing {
    pub const ALL: [(&'static str, Listing); 5] = [
        ("pending", Listing::Pending),
        ("leased", Listing::Leased),
        ("delayed", Listing::Delayed),
        ("failed", Listing::Failed),
        ("fulfilled", Listing::Fulfilled),
    ];
}

/// Where a job rebuilt by `JobEffect::Put` goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placed {
    Pending,
    Delayed(u64),
    Failed,
    Fulfilled(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEffect {
    /// A new pending job (no options).
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
    /// A job that is not fulfilled and not leased (a work lease on it ended by a `Release`
    /// before) is fulfilled.
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
    // The second edition's effects come after the first edition's, so that effect batches the
    // first edition wrote (AOF files) still decode to the same effects.
    /// A new job with options: pending, or delayed until `due`.
    CreateWith {
        id: u64,
        request: Bytes,
        priority: u32,
        opts: Opts,
        due: Option<u64>,
    },
    /// A failed attempt on a pending job (its work lease, if any, ends): the attempt is
    /// counted, the reason kept, and the job is pullable again, or delayed until `due`.
    Fail {
        id: u64,
        reason: Bytes,
        due: Option<u64>,
    },
    /// A pullable job moves to the dead letter (`failed`).
    Bury {
        id: u64,
    },
    /// A failed job is pending again, its failed attempts reset.
    Retry {
        id: u64,
    },
    /// A delayed job is pending.
    Promote {
        id: u64,
    },
    /// A finished job is deleted at `at` (KEEP).
    Keep {
        id: u64,
        at: u64,
    },
    /// A job rebuilt as it is (AOF rewrite).
    Put {
        id: u64,
        job: Job,
        placed: Placed,
    },
}

/// `job.fail`: a failed attempt. `job.dead`: a job moved to `failed`.
pub const FAIL_EVENT: &std::ffi::CStr = c"job.fail";
pub const DEAD_EVENT: &std::ffi::CStr = c"job.dead";

impl Effect for JobEffect {
    fn event(&self) -> Event {
        match self {
            JobEffect::Grant { .. } | JobEffect::NotifyGrant { .. } => Event::Grant,
            JobEffect::Renew { .. } | JobEffect::NotifyRenew { .. } => Event::Renew,
            JobEffect::Release { .. } | JobEffect::NotifyRelease { .. } => Event::Release,
            JobEffect::Lapse { .. } | JobEffect::NotifyLapse { .. } => Event::Lapse,
            JobEffect::Fail { .. } => Event::Custom(FAIL_EVENT),
            JobEffect::Bury { .. } => Event::Custom(DEAD_EVENT),
            JobEffect::Create { .. }
            | JobEffect::CreateWith { .. }
            | JobEffect::Fulfill { .. }
            | JobEffect::Queue { .. }
            | JobEffect::Unqueue { .. }
            | JobEffect::Delete { .. }
            | JobEffect::Floor { .. }
            | JobEffect::Retry { .. }
            | JobEffect::Promote { .. }
            | JobEffect::Keep { .. }
            | JobEffect::Put { .. } => Event::Other,
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

/// JOB.CREATE's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub priority: u32,
    pub delay: Option<u64>,
    pub opts: Opts,
}

/// What CREATE does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new job: its effect.
    New(JobEffect),
    /// A job with the same UNIQUE name exists: its id, nothing changes.
    Existing(u64),
}

/// Why an action on a job was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoJob,
    /// FULFILL of a fulfilled job.
    Already,
    /// A lease action on a job in a state that has no such lease.
    Is(State),
    /// A notification-lease action (DONE) on a job that is not fulfilled.
    NotFulfilled,
    /// Nobody holds the lease (lapsed, released, done, or never pulled).
    NotLeased {
        notify: bool,
    },
    /// Another worker holds the lease.
    HeldBy(Worker),
    /// FULFILL's TOKEN is older than the job's current work lease, or it has none.
    Stale {
        current: Option<u64>,
    },
    /// FULFILL's TOKEN is newer than any work lease of the job.
    NeverIssued,
    /// RETRY of a job that is not failed.
    NotFailed(State),
    /// LIST … AFTER a job that has no place in that listing now.
    NotListed(Listing),
}

/// One job as seen at some time: its current lease is the work lease while pending and the
/// notification lease once fulfilled (a lease whose deadline has passed is not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView<'a> {
    pub state: State,
    pub job: &'a Job,
    pub value: Option<&'a [u8]>,
    pub lease: Option<LeaseView<'a>>,
    /// A delayed job's due time.
    pub due: Option<u64>,
    /// A finished KEEP job's deletion time.
    pub expires: Option<u64>,
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
    pub delayed: usize,
    pub failed: usize,
}

impl Counts {
    pub fn jobs(&self) -> usize {
        self.pending + self.fulfilled + self.delayed + self.failed
    }
}

pub(super) fn pull_reply(id: u64, request: &[u8], token: u64) -> Reply {
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
        Reply::Array(
            f.job
                .waiting()
                .iter()
                .map(|t| Reply::Bulk(t.to_vec()))
                .collect(),
        ),
        Reply::Int(token as i64),
    ])
}

/// What a JOB key holds. The key exists while it holds at least one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jobs {
    pub(super) pullable: Pullable,
    pub(super) working: Leases<Job>,
    pub(super) delayed: Timed<Job>,
    pub(super) failed: BTreeMap<u64, Job>,
    pub(super) fulfilled: BTreeMap<u64, Fulfilled>,
    pub(super) notifying: Leases<()>,
    /// Finished jobs created with KEEP, by deletion time.
    pub(super) retained: Timed<()>,
    /// Highest id or token ever issued for this key.
    pub(super) last_token: u64,
    /// Derived: fulfilled jobs with waiting targets and no notification lease (PULLNOTIFY
    /// hands out the first).
    pub(super) notifiable: BTreeSet<u64>,
    /// Derived: UNIQUE name → its job.
    pub(super) uniques: BTreeMap<Name, u64>,
}

impl Jobs {
    pub fn contains(&self, id: u64) -> bool {
        self.state_of(id).is_some()
    }

    pub fn state_of(&self, id: u64) -> Option<State> {
        if self.pullable.contains(id) || self.working.contains(id) {
            Some(State::Pending)
        } else if self.fulfilled.contains_key(&id) {
            Some(State::Fulfilled)
        } else if self.delayed.contains(id) {
            Some(State::Delayed)
        } else if self.failed.contains_key(&id) {
            Some(State::Failed)
        } else {
            None
        }
    }

    pub fn job_count(&self) -> usize {
        self.pullable.len()
            + self.working.len()
            + self.fulfilled.len()
            + self.delayed.len()
            + self.failed.len()
    }

    pub fn job(&self, id: u64) -> Option<&Job> {
        self.pullable
            .get(id)
            .or_else(|| self.working.get(id).map(|(_, h)| &h.value))
            .or_else(|| self.fulfilled.get(&id).map(|f| &f.job))
            .or_else(|| self.delayed.get(id).map(|(_, j)| j))
            .or_else(|| self.failed.get(&id))
    }

    fn job_mut(&mut self, id: u64) -> Option<&mut Job> {
        if self.pullable.contains(id) {
            return self.pullable.get_mut(id);
        }
        if self.working.contains(id) {
            return self.working.value_mut(id);
        }
        if self.fulfilled.contains_key(&id) {
            return self.fulfilled.get_mut(&id).map(|f| &mut f.job);
        }
        if self.delayed.contains(id) {
            return self.delayed.get_mut(id);
        }
        self.failed.get_mut(&id)
    }

    /// Fulfilled with nothing to notify and no notification lease, or failed: what KEEP counts
    /// from.
    pub fn is_finished(&self, id: u64) -> bool {
        self.failed.contains_key(&id)
            || self
                .fulfilled
                .get(&id)
                .is_some_and(|f| f.job.waiting().is_empty() && !self.notifying.contains(id))
    }

    /// The live work lease on a pending job, for `worker`.
    fn work_held(&self, id: u64, worker: &[u8], now: u64) -> Result<&Held<Job>, Refusal> {
        match self.working.get(id) {
            Some((deadline, h)) if deadline > now => {
                if *h.lease.worker == *worker {
                    Ok(h)
                } else {
                    Err(Refusal::HeldBy(h.lease.worker.clone()))
                }
            }
            Some(_) => Err(Refusal::NotLeased { notify: false }),
            None => Err(match self.state_of(id) {
                None => Refusal::NoJob,
                Some(State::Pending) => Refusal::NotLeased { notify: false },
                Some(s) => Refusal::Is(s),
            }),
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
        match self.notifying.get(id) {
            Some((deadline, h)) if deadline > now => {
                if *h.lease.worker == *worker {
                    Ok(f)
                } else {
                    Err(Refusal::HeldBy(h.lease.worker.clone()))
                }
            }
            _ => Err(Refusal::NotLeased { notify: true }),
        }
    }

    /// CREATE: a new job, or the job already created under the same UNIQUE name.
    pub fn create(&self, id: u64, request: &[u8], spec: &Spec, now: u64) -> Created {
        if let Some(name) = &spec.opts.unique {
            if let Some(&existing) = self.uniques.get(&name[..]) {
                return Created::Existing(existing);
            }
        }
        if *spec == Spec::default() {
            return Created::New(JobEffect::Create {
                id,
                request: request.into(),
            });
        }
        Created::New(JobEffect::CreateWith {
            id,
            request: request.into(),
            priority: spec.priority,
            opts: spec.opts.clone(),
            due: spec.delay.map(|d| now + d),
        })
    }

    /// RENEW: extends whichever lease of the job `worker` holds — the work lease while
    /// pending, the notification lease once fulfilled.
    pub fn renew(&self, id: u64, worker: &[u8], ttl: u64, now: u64) -> Result<JobEffect, Refusal> {
        let deadline = now + ttl;
        if self.fulfilled.contains_key(&id) {
            self.notify_held(id, worker, now)?;
            return Ok(JobEffect::NotifyRenew { id, deadline });
        }
        self.work_held(id, worker, now)?;
        Ok(JobEffect::Renew { id, deadline })
    }

    pub fn release(&self, id: u64, worker: &[u8], now: u64) -> Result<JobEffect, Refusal> {
        self.work_held(id, worker, now)?;
        Ok(JobEffect::Release { id })
    }

    /// The effects of a failed attempt on pending job `id` (whose work lease, if any, ends),
    /// and the state it leaves the job in.
    fn failure(&self, id: u64, job: &Job, reason: &[u8], now: u64) -> (Vec<JobEffect>, State) {
        let k = job.attempts.saturating_add(1);
        let mut out = Vec::with_capacity(3);
        let reason = Bytes::from(reason);
        if job.max_attempts().is_some_and(|max| k >= max) {
            out.push(JobEffect::Fail {
                id,
                reason,
                due: None,
            });
            out.push(JobEffect::Bury { id });
            out.extend(self.keep_from(id, job, now));
            return (out, State::Failed);
        }
        let due = job.backoff().map(|b| now + backoff_delay(b, k, MAX_MS));
        out.push(JobEffect::Fail { id, reason, due });
        (
            out,
            if due.is_some() {
                State::Delayed
            } else {
                State::Pending
            },
        )
    }

    /// The retention of a job that has just finished, if it was created with KEEP.
    fn keep_from(&self, id: u64, job: &Job, now: u64) -> Option<JobEffect> {
        job.keep().map(|k| JobEffect::Keep { id, at: now + k })
    }

    /// FAIL: `worker` ends its work lease as a failed attempt.
    pub fn fail(
        &self,
        id: u64,
        worker: &[u8],
        reason: &[u8],
        now: u64,
    ) -> Result<(Vec<JobEffect>, State), Refusal> {
        let held = self.work_held(id, worker, now)?;
        Ok(self.failure(id, &held.value, reason, now))
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
        let job = self.job(id).ok_or(Refusal::NoJob)?;
        let lease = self
            .working
            .get(id)
            .filter(|&(deadline, _)| deadline > now)
            .map(|(_, h)| h.lease.token);
        match (token, lease) {
            (Some(t), Some(c)) if t > c => return Err(Refusal::NeverIssued),
            (Some(t), current) if current != Some(t) => return Err(Refusal::Stale { current }),
            _ => {}
        }
        let mut out = Vec::with_capacity(3);
        if self.working.contains(id) {
            out.push(JobEffect::Release { id });
        }
        out.push(JobEffect::Fulfill {
            id,
            value: value.into(),
        });
        if job.waiting().is_empty() {
            out.extend(self.keep_from(id, job, now));
        }
        Ok(out)
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

    /// UNQUEUE: the effects (none when nothing matches) and how many targets they remove.
    pub fn unqueue(
        &self,
        id: u64,
        targets: &[&[u8]],
        now: u64,
    ) -> Result<(Vec<JobEffect>, usize), Refusal> {
        let job = self.job(id).ok_or(Refusal::NoJob)?;
        let targets: Vec<Bytes> = targets.iter().map(|t| Bytes::from(*t)).collect();
        let removed = first_matches(job.waiting(), &targets)
            .into_iter()
            .filter(|h| *h)
            .count();
        let mut out = Vec::new();
        if removed > 0 {
            out.push(JobEffect::Unqueue { id, targets });
            let finishes = removed == job.waiting().len()
                && self.fulfilled.contains_key(&id)
                && !self.notifying.contains(id);
            if finishes {
                out.extend(self.keep_from(id, job, now));
            }
        }
        Ok((out, removed))
    }

    /// DONE: removes the notified targets and ends `worker`'s notification lease.
    pub fn done(
        &self,
        id: u64,
        worker: &[u8],
        targets: &[&[u8]],
        now: u64,
    ) -> Result<(Vec<JobEffect>, usize), Refusal> {
        let f = self.notify_held(id, worker, now)?;
        let targets_b: Vec<Bytes> = targets.iter().map(|t| Bytes::from(*t)).collect();
        let removed = first_matches(f.job.waiting(), &targets_b)
            .into_iter()
            .filter(|h| *h)
            .count();
        let mut out = Vec::with_capacity(3);
        if removed > 0 {
            out.push(JobEffect::Unqueue {
                id,
                targets: targets_b,
            });
        }
        out.push(JobEffect::NotifyRelease { id });
        if removed == f.job.waiting().len() {
            out.extend(self.keep_from(id, &f.job, now));
        }
        Ok((out, removed))
    }

    /// DELETE: the effects (empty when there is no such job). Leases on it end first, so their
    /// holders are told (`job.release`).
    pub fn delete(&self, id: u64) -> Vec<JobEffect> {
        let mut out = Vec::new();
        if !self.contains(id) {
            return out;
        }
        if self.working.contains(id) {
            out.push(JobEffect::Release { id });
        }
        if self.notifying.contains(id) {
            out.push(JobEffect::NotifyRelease { id });
        }
        out.push(JobEffect::Delete { id });
        out
    }

    /// RETRY: a failed job is pending again.
    pub fn retry(&self, id: u64) -> Result<JobEffect, Refusal> {
        match self.state_of(id) {
            None => Err(Refusal::NoJob),
            Some(State::Failed) => Ok(JobEffect::Retry { id }),
            Some(s) => Err(Refusal::NotFailed(s)),
        }
    }

    /// LIST: up to `count` ids of the jobs in `what`, after job `after` in that order.
    pub fn list(
        &self,
        what: Listing,
        after: Option<u64>,
        count: usize,
    ) -> Result<Vec<u64>, Refusal> {
        let ids: Vec<u64> = match (what, after) {
            (Listing::Pending, None) => self.pullable.iter().map(|e| e.0).take(count).collect(),
            (Listing::Pending, Some(a)) => {
                let p = self.job(a).ok_or(Refusal::NoJob)?.priority;
                self.pullable
                    .iter_after(place(p, a))
                    .map(|e| e.0)
                    .take(count)
                    .collect()
            }
            (Listing::Leased, None) => self.working.iter().map(|e| e.0).take(count).collect(),
            (Listing::Leased, Some(a)) => {
                let (deadline, _) = self.working.get(a).ok_or(Refusal::NotListed(what))?;
                self.working
                    .iter_after(deadline, a)
                    .map(|e| e.0)
                    .take(count)
                    .collect()
            }
            (Listing::Delayed, None) => self.delayed.iter().map(|e| e.0).take(count).collect(),
            (Listing::Delayed, Some(a)) => {
                let t = self.delayed.time(a).ok_or(Refusal::NotListed(what))?;
                self.delayed
                    .iter_after(t, a)
                    .map(|e| e.0)
                    .take(count)
                    .collect()
            }
            (Listing::Failed, a) => ids_after(&self.failed, a, count),
            (Listing::Fulfilled, a) => ids_after(&self.fulfilled, a, count),
        };
        Ok(ids)
    }

    pub fn get(&self, id: u64, now: u64) -> Option<JobView<'_>> {
        fn live<'a>((deadline, h): (u64, &'a Held<impl Sized>), now: u64) -> Option<LeaseView<'a>> {
            (deadline > now).then(|| LeaseView {
                worker: &h.lease.worker,
                deadline,
                token: h.lease.token,
            })
        }
        let expires = self.retained.time(id);
        let view = |state, job, value, lease, due| JobView {
            state,
            job,
            value,
            lease,
            due,
            expires,
        };
        if let Some(j) = self.pullable.get(id) {
            return Some(view(State::Pending, j, None, None, None));
        }
        if let Some(held @ (_, h)) = self.working.get(id) {
            return Some(view(State::Pending, &h.value, None, live(held, now), None));
        }
        if let Some(f) = self.fulfilled.get(&id) {
            let lease = self.notifying.get(id).and_then(|h| live(h, now));
            return Some(view(State::Fulfilled, &f.job, Some(&f.value), lease, None));
        }
        if let Some((due, j)) = self.delayed.get(id) {
            return Some(view(State::Delayed, j, None, None, Some(due)));
        }
        let j = self.failed.get(&id)?;
        Some(view(State::Failed, j, None, None, None))
    }

    /// Counts at `now` (a lease whose deadline has passed counts as lapsed, e.g. on a replica).
    pub fn counts(&self, now: u64) -> Counts {
        let lapsed_work = self.working.due(now).count();
        let lapsed_notify: Vec<u64> = self.notifying.due(now).collect();
        let renotifiable = lapsed_notify
            .iter()
            .filter(|id| {
                self.fulfilled
                    .get(id)
                    .is_some_and(|f| !f.job.waiting().is_empty())
            })
            .count();
        Counts {
            pending: self.pullable.len() + self.working.len(),
            leased: self.working.len() - lapsed_work,
            fulfilled: self.fulfilled.len(),
            notifiable: self.notifiable.len() + renotifiable,
            notifying: self.notifying.len() - lapsed_notify.len(),
            delayed: self.delayed.len(),
            failed: self.failed.len(),
        }
    }

    /// Keeps `notifiable` in step for one job.
    fn refresh(&mut self, id: u64) {
        let notifiable = self
            .fulfilled
            .get(&id)
            .is_some_and(|f| !f.job.waiting().is_empty())
            && !self.notifying.contains(id);
        if notifiable {
            self.notifiable.insert(id);
        } else {
            self.notifiable.remove(&id);
        }
    }

    /// A worker that holds a job gets it again, extended, same token.
    fn regrant_work(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        let id = self.working.held_by(&req.worker)?;
        let (deadline, h) = self.working.get(id)?;
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
            pull_reply(id, &h.value.request, h.lease.token),
        ))
    }

    fn grant_work(&self, req: &Pull, now: u64, token: u64) -> Option<(Effects<JobEffect>, Reply)> {
        // One work lease per worker: never a second one, even for a lease not yet lapsed.
        if self.working.held_by(&req.worker).is_some() {
            return None;
        }
        let (id, job) = self.pullable.first()?;
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
        let id = self.notifying.held_by(&req.worker)?;
        let (deadline, h) = self.notifying.get(id)?;
        let f = self.fulfilled.get(&id)?;
        if deadline <= now {
            return None;
        }
        let renew = JobEffect::NotifyRenew {
            id,
            deadline: now + req.ttl,
        };
        Some((smallvec![renew], notify_reply(id, f, h.lease.token)))
    }

    fn grant_notify(
        &self,
        req: &Pull,
        now: u64,
        token: u64,
    ) -> Option<(Effects<JobEffect>, Reply)> {
        if self.notifying.held_by(&req.worker).is_some() {
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

    /// Effects of everything due at `now`, at most `LAPSE_BATCH` jobs: lapsed work leases
    /// (each a failed attempt), lapsed notification leases, delayed jobs falling due, and
    /// finished jobs whose retention ends.
    pub(super) fn due_effects(&self, now: u64, out: &mut Vec<JobEffect>) {
        let mut budget = LAPSE_BATCH;
        for id in self.working.due(now).take(budget) {
            budget -= 1;
            out.push(JobEffect::Lapse { id });
            if let Some((_, h)) = self.working.get(id) {
                out.extend(self.failure(id, &h.value, b"lapsed", now).0);
            }
        }
        for id in self.notifying.due(now).take(budget) {
            budget -= 1;
            out.push(JobEffect::NotifyLapse { id });
            if let Some(f) = self.fulfilled.get(&id) {
                if f.job.waiting().is_empty() {
                    out.extend(self.keep_from(id, &f.job, now));
                }
            }
        }
        for id in self.delayed.due(now).take(budget) {
            budget -= 1;
            out.push(JobEffect::Promote { id });
        }
        out.extend(
            self.retained
                .due(now)
                .take(budget)
                .map(|id| JobEffect::Delete { id }),
        );
    }

    pub(super) fn earliest_deadline(&self) -> Option<u64> {
        [
            self.working.earliest(),
            self.notifying.earliest(),
            self.delayed.earliest(),
            self.retained.earliest(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- apply ----

    /// Adds a new job (pending, or delayed until `due`).
    pub(super) fn add(&mut self, id: u64, job: Job, placed: Placed) -> Result<(), &'static str> {
        if self.contains(id) {
            return Err("job id already exists");
        }
        if !job.is_canonical() {
            return Err("job is not canonical");
        }
        if let Some(name) = job.unique() {
            if self.uniques.contains_key(name) {
                return Err("a job with this unique name exists");
            }
            self.uniques.insert(name.clone(), id);
        }
        match placed {
            Placed::Pending => {
                self.pullable.insert(id, job);
            }
            Placed::Delayed(due) => {
                self.delayed.insert(id, due, job);
            }
            Placed::Failed => {
                self.failed.insert(id, job);
            }
            Placed::Fulfilled(value) => {
                self.fulfilled.insert(id, Fulfilled { job, value });
                self.refresh(id);
            }
        }
        self.last_token = self.last_token.max(id);
        Ok(())
    }

    fn end_work(&mut self, id: u64) -> Result<(), &'static str> {
        let (_, h) = self.working.remove(id).ok_or("job is not leased")?;
        self.pullable.insert(id, h.value);
        Ok(())
    }

    fn end_notify(&mut self, id: u64) -> Result<(), &'static str> {
        self.notifying
            .remove(id)
            .ok_or("job has no notification lease")?;
        self.refresh(id);
        Ok(())
    }

    /// Takes out a job that is neither leased nor fulfilled (pullable, delayed or failed).
    fn take_unleased(&mut self, id: u64) -> Option<Job> {
        if let Some(j) = self.pullable.remove(id) {
            return Some(j);
        }
        if let Some((_, j)) = self.delayed.remove(id) {
            return Some(j);
        }
        let j = self.failed.remove(&id)?;
        self.retained.remove(id);
        Some(j)
    }

    /// Applies one effect: the only way state changes. A refused effect changes nothing.
    pub(super) fn apply_effect(&mut self, effect: &JobEffect) -> Result<(), &'static str> {
        match effect {
            JobEffect::Create { id, request } => {
                let job = Job {
                    request: request.clone(),
                    ..Job::default()
                };
                self.add(*id, job, Placed::Pending)?;
            }
            JobEffect::CreateWith {
                id,
                request,
                priority,
                opts,
                due,
            } => {
                let job = Job::new(request.clone(), *priority, opts.clone());
                let placed = due.map_or(Placed::Pending, Placed::Delayed);
                self.add(*id, job, placed)?;
            }
            JobEffect::Put { id, job, placed } => self.add(*id, job.clone(), placed.clone())?,
            JobEffect::Grant {
                id,
                worker,
                deadline,
                token,
            } => {
                if self.working.held_by(worker).is_some() {
                    return Err("worker already holds a work lease");
                }
                let job = self.pullable.remove(*id).ok_or("job is not pullable")?;
                let lease = Lease {
                    worker: worker.clone(),
                    token: *token,
                };
                // Cannot fail: the job was pullable (so not leased) and the worker holds none.
                self.working.insert(*id, *deadline, lease, job)?;
                self.last_token = self.last_token.max(*token);
            }
            JobEffect::Renew { id, deadline } => {
                if !self.working.set_deadline(*id, *deadline) {
                    return Err("job is not leased");
                }
            }
            JobEffect::Release { id } | JobEffect::Lapse { id } => self.end_work(*id)?,
            JobEffect::Fulfill { id, value } => {
                if self.fulfilled.contains_key(id) || self.working.contains(*id) {
                    return Err("job is fulfilled or leased");
                }
                let job = self.take_unleased(*id).ok_or("no such job")?;
                self.fulfilled.insert(
                    *id,
                    Fulfilled {
                        job,
                        value: value.clone(),
                    },
                );
                self.refresh(*id);
            }
            JobEffect::Queue { id, targets } => {
                let job = self.job_mut(*id).ok_or("no such job")?;
                let mut v = job.waiting().to_vec();
                v.extend(targets.iter().cloned());
                job.set_waiting(v);
                if !targets.is_empty() && self.fulfilled.contains_key(id) {
                    // Something to notify again: no longer finished.
                    self.retained.remove(*id);
                }
                self.refresh(*id);
            }
            JobEffect::Unqueue { id, targets } => {
                let job = self.job_mut(*id).ok_or("no such job")?;
                let hit = first_matches(job.waiting(), targets);
                let v: Vec<Bytes> = job
                    .waiting()
                    .iter()
                    .zip(hit)
                    .filter(|(_, h)| !h)
                    .map(|(t, _)| t.clone())
                    .collect();
                job.set_waiting(v);
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
                let lease = Lease {
                    worker: worker.clone(),
                    token: *token,
                };
                self.notifying.insert(*id, *deadline, lease, ())?;
                self.notifiable.remove(id);
                self.retained.remove(*id);
                self.last_token = self.last_token.max(*token);
            }
            JobEffect::NotifyRenew { id, deadline } => {
                if !self.notifying.set_deadline(*id, *deadline) {
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
                if self.working.contains(*id) {
                    self.end_work(*id)?;
                }
                if self.notifying.contains(*id) {
                    self.end_notify(*id)?;
                }
                let job = match self.take_unleased(*id) {
                    Some(j) => Some(j),
                    None => self.fulfilled.remove(id).map(|f| f.job),
                };
                if let Some(name) = job.as_ref().and_then(Job::unique) {
                    self.uniques.remove(name);
                }
                self.notifiable.remove(id);
                self.retained.remove(*id);
            }
            JobEffect::Floor { token } => self.last_token = self.last_token.max(*token),
            JobEffect::Fail { id, reason, due } => {
                let mut job = match self.working.remove(*id) {
                    Some((_, h)) => h.value,
                    None => self.pullable.remove(*id).ok_or("job is not pending")?,
                };
                job.attempts = job.attempts.saturating_add(1);
                job.edit_more(|m| m.reason = Some(reason.clone()));
                match due {
                    Some(at) => {
                        self.delayed.insert(*id, *at, job);
                    }
                    None => {
                        self.pullable.insert(*id, job);
                    }
                }
            }
            JobEffect::Bury { id } => {
                let job = self.pullable.remove(*id).ok_or("job is not pullable")?;
                self.failed.insert(*id, job);
            }
            JobEffect::Retry { id } => {
                let mut job = self.failed.remove(id).ok_or("job is not failed")?;
                job.attempts = 0;
                self.retained.remove(*id);
                self.pullable.insert(*id, job);
            }
            JobEffect::Promote { id } => {
                let (_, job) = self.delayed.remove(*id).ok_or("job is not delayed")?;
                self.pullable.insert(*id, job);
            }
            JobEffect::Keep { id, at } => {
                if !self.is_finished(*id) {
                    return Err("job is not finished");
                }
                self.retained.insert(*id, *at, ());
            }
        }
        Ok(())
    }

    pub(super) fn regrant_pull(&self, req: &Pull, now: u64) -> Option<(Effects<JobEffect>, Reply)> {
        match req.lane {
            Lane::Work => self.regrant_work(req, now),
            Lane::Notify => self.regrant_notify(req, now),
        }
    }

    pub(super) fn grant_pull(
        &self,
        req: &Pull,
        now: u64,
        token: u64,
    ) -> Option<(Effects<JobEffect>, Reply)> {
        match req.lane {
            Lane::Work => self.grant_work(req, now, token),
            Lane::Notify => self.grant_notify(req, now, token),
        }
    }

    /// A job's UNIQUE name, shared.
    pub fn unique_name(name: &[u8]) -> Name {
        Arc::from(name)
    }
}

/// Up to `count` ids of `map` (ordered by id), after `after` when given.
fn ids_after<V>(map: &BTreeMap<u64, V>, after: Option<u64>, count: usize) -> Vec<u64> {
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    map.range((from, Bound::Unbounded))
        .map(|e| *e.0)
        .take(count)
        .collect()
}
