//! JOB commands: parse, call the engine with the core's decisions, shape the reply.

use std::sync::Arc;

use super::core::{Jobs, Lane, Pull, Refusal};
use crate::engine::args::{self, once};
use crate::engine::txn;
use crate::engine::{
    command, Arg, Args, CmdResult, Command, CommandDef, Ctx, Error, Primitive, RStr, Reply,
};

pub const COMMANDS: &[CommandDef] = &[
    command::<CreateCmd>(),
    command::<PullCmd>(),
    command::<RenewCmd>(),
    command::<ReleaseCmd>(),
    command::<FulfillCmd>(),
    command::<QueueCmd>(),
    command::<UnqueueCmd>(),
    command::<PullNotifyCmd>(),
    command::<DoneCmd>(),
    command::<GetCmd>(),
    command::<DeleteCmd>(),
    command::<InfoCmd>(),
];

/// Job ids are integers from 1 (they are fencing-token values, far below this bound).
fn job_id(a: &mut Args) -> Result<u64, Error> {
    a.uint("id", 1, i64::MAX as u64)
}

/// The remaining arguments: targets (any bytes).
fn rest<'a>(a: &mut Args<'a>) -> Result<Vec<&'a [u8]>, Error> {
    let mut v = Vec::with_capacity(a.remaining());
    while a.remaining() > 0 {
        v.push(a.bytes()?);
    }
    Ok(v)
}

fn no_job(id: u64) -> Error {
    Error::msg(format!("NOJOB no job {id}"))
}

/// A refused work-lease action (RENEW, RELEASE).
fn work_refused(id: u64, r: Refusal) -> Error {
    Error::msg(match r {
        Refusal::NoJob => format!("NOTHELD no job {id}"),
        Refusal::IsFulfilled => format!("NOTHELD job {id} is fulfilled"),
        Refusal::LostTo(w) => format!("NOTHELD job {id} lost to {}", args::show(&w)),
        _ => format!("NOTHELD job {id} is not leased (expired, released or never pulled)"),
    })
}

/// A refused notification-lease action (DONE).
fn notify_refused(id: u64, r: Refusal) -> Error {
    Error::msg(match r {
        Refusal::NoJob => format!("NOTHELD no job {id}"),
        Refusal::NotFulfilled => format!("NOTHELD job {id} is not fulfilled"),
        Refusal::LostTo(w) => format!("NOTHELD job {id} lost to {}", args::show(&w)),
        _ => format!("NOTHELD job {id} has no notification lease (expired, done or never pulled)"),
    })
}

pub struct CreateCmd;

impl Command for CreateCmd {
    const NAME: &'static str = "JOB.CREATE";
    const FLAGS: &'static str = "write deny-oom fast";
    const SUMMARY: &'static str =
        "Creates a pending job with the given request; returns its id (increasing, never reused)";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Str("request")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let request = a.bytes()?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, _, id| {
            Ok((vec![s.create(id, request)], Reply::Int(id as i64)))
        })
    }
}

/// PULL and PULLNOTIFY: `worker ms [BLOCK timeout]`.
fn pull(ctx: Ctx, key: RStr, mut a: Args, lane: Lane) -> CmdResult {
    let worker = a.id("worker")?;
    let ttl = a.ttl()?;
    let mut block = None;
    while a.option(&["BLOCK"])?.is_some() {
        once(&mut block, "BLOCK", a.block_ms()?)?;
    }
    let request = Pull {
        lane,
        worker: Arc::from(worker),
        ttl,
    };
    txn::acquire::<Jobs>(ctx, key, request, block)
}

pub struct PullCmd;

impl Command for PullCmd {
    const NAME: &'static str = "JOB.PULL";
    const FLAGS: &'static str = "write deny-oom blocking";
    const SUMMARY: &'static str = "Leases the oldest pending job no one works on to worker for ms milliseconds: [id, request, token], or nil when none (optionally after waiting up to BLOCK ms). A worker that holds a job gets that job again, extended, same token";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[
        Arg::Str("worker"),
        Arg::Int("ms"),
        Arg::OptInt("BLOCK", "timeout"),
    ];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        pull(ctx, key, a, Lane::Work)
    }
}

pub struct RenewCmd;

impl Command for RenewCmd {
    const NAME: &'static str = "JOB.RENEW";
    const FLAGS: &'static str = "write deny-oom fast";
    const SUMMARY: &'static str =
        "Extends worker's work lease on job id to ms milliseconds from now";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of leased jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker"), Arg::Int("ms")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        let ttl = a.ttl()?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let e = s
                .renew(id, worker, ttl, now)
                .map_err(|r| work_refused(id, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct ReleaseCmd;

impl Command for ReleaseCmd {
    const NAME: &'static str = "JOB.RELEASE";
    const FLAGS: &'static str = "write fast";
    const SUMMARY: &'static str = "Ends worker's work lease on job id; the job (still pending) goes to the first blocked puller, or back to the pullable jobs";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let e = s
                .release(id, worker, now)
                .map_err(|r| work_refused(id, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct FulfillCmd;

impl Command for FulfillCmd {
    const NAME: &'static str = "JOB.FULFILL";
    const FLAGS: &'static str = "write deny-oom";
    const SUMMARY: &'static str = "Fulfils job id with value (binary-safe) and ends its work lease; with TOKEN, only under that current work lease (else STALE)";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[
        Arg::Int("id"),
        Arg::Str("value"),
        Arg::OptInt("TOKEN", "token"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let value = a.bytes()?;
        let mut token = None;
        while a.option(&["TOKEN"])?.is_some() {
            once(&mut token, "TOKEN", a.uint("token", 1, i64::MAX as u64)?)?;
        }
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let effects = s.fulfill(id, value, token, now).map_err(|r| match r {
                Refusal::NoJob => no_job(id),
                Refusal::Already => Error::msg(format!("ALREADY job {id} is already fulfilled")),
                Refusal::Stale { current: Some(c) } => Error::msg(format!(
                    "STALE token {} is not job {id}'s work lease (current is {c})",
                    token.unwrap_or(0)
                )),
                _ => Error::msg(format!(
                    "STALE token {} is not job {id}'s work lease (it has none: expired or released)",
                    token.unwrap_or(0)
                )),
            })?;
            Ok((effects, Reply::Int(1)))
        })
    }
}

pub struct QueueCmd;

impl Command for QueueCmd {
    const NAME: &'static str = "JOB.QUEUE";
    const FLAGS: &'static str = "write deny-oom";
    const SUMMARY: &'static str = "Queues targets to be notified of job id's value (duplicates allowed); returns how many were queued";
    const COMPLEXITY: &'static str =
        "O(log N + T) where N is the number of jobs and T the job's targets";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Many("target")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let targets = rest(&mut a)?;
        if targets.is_empty() {
            return Err(Error::Arity);
        }
        txn::write::<Jobs, _>(ctx, key, |s, _, _| {
            let e = s.queue(id, &targets).map_err(|_| no_job(id))?;
            Ok((vec![e], Reply::Int(targets.len() as i64)))
        })
    }
}

pub struct UnqueueCmd;

impl Command for UnqueueCmd {
    const NAME: &'static str = "JOB.UNQUEUE";
    const FLAGS: &'static str = "write";
    const SUMMARY: &'static str = "Removes, for each target given, its first equal match from job id's waiting targets; returns how many were removed";
    const COMPLEXITY: &'static str =
        "O(log N + T×G) where N is the number of jobs, T the job's targets, G the targets given";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Many("target")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let targets = rest(&mut a)?;
        if targets.is_empty() {
            return Err(Error::Arity);
        }
        txn::write::<Jobs, _>(ctx, key, |s, _, _| {
            let (e, n) = s.unqueue(id, &targets).map_err(|_| no_job(id))?;
            Ok((e, Reply::Int(n as i64)))
        })
    }
}

pub struct PullNotifyCmd;

impl Command for PullNotifyCmd {
    const NAME: &'static str = "JOB.PULLNOTIFY";
    const FLAGS: &'static str = "write deny-oom blocking";
    const SUMMARY: &'static str = "Leases the oldest fulfilled job with waiting targets and no notification lease to worker for ms milliseconds: [id, value, [target, ...], token], or nil when none (optionally after waiting up to BLOCK ms)";
    const COMPLEXITY: &'static str =
        "O(log N + T) where N is the number of jobs and T the job's targets";
    const ARGS: &'static [Arg] = &[
        Arg::Str("worker"),
        Arg::Int("ms"),
        Arg::OptInt("BLOCK", "timeout"),
    ];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        pull(ctx, key, a, Lane::Notify)
    }
}

pub struct DoneCmd;

impl Command for DoneCmd {
    const NAME: &'static str = "JOB.DONE";
    const FLAGS: &'static str = "write";
    const SUMMARY: &'static str = "Ends worker's notification lease on job id, removing the targets given (notified); returns how many were removed. Targets left are handed out again";
    const COMPLEXITY: &'static str =
        "O(log N + T×G) where N is the number of jobs, T the job's targets, G the targets given";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker"), Arg::OptMany("target")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        let targets = rest(&mut a)?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let (effects, n) = s
                .done(id, worker, &targets, now)
                .map_err(|r| notify_refused(id, r))?;
            Ok((effects, Reply::Int(n as i64)))
        })
    }
}

pub struct GetCmd;

impl Command for GetCmd {
    const NAME: &'static str = "JOB.GET";
    const FLAGS: &'static str = "readonly";
    const SUMMARY: &'static str = "Describes job id: state, request, value, waiting targets, and its current lease (holder, ttl, token); nil when there is no such job";
    const COMPLEXITY: &'static str =
        "O(log N + T) where N is the number of jobs and T the job's targets";
    const ARGS: &'static [Arg] = &[Arg::Int("id")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        a.finish()?;
        txn::read::<Jobs, _>(ctx, key, |s, now| {
            let Some(v) = s.and_then(|s| s.get(id, now)) else {
                return Reply::Nil;
            };
            let state = if v.value.is_some() {
                "fulfilled"
            } else {
                "pending"
            };
            let (holder, ttl, token) = match v.lease {
                Some(l) => (
                    Reply::Bulk(l.worker.to_vec()),
                    Reply::Int((l.deadline - now) as i64),
                    Reply::Int(l.token as i64),
                ),
                None => (Reply::Nil, Reply::Nil, Reply::Nil),
            };
            Reply::Map(vec![
                ("state", Reply::Bulk(state.as_bytes().to_vec())),
                ("request", Reply::Bulk(v.request.to_vec())),
                (
                    "value",
                    v.value.map_or(Reply::Nil, |b| Reply::Bulk(b.to_vec())),
                ),
                (
                    "waiting",
                    Reply::Array(v.waiting.iter().map(|t| Reply::Bulk(t.to_vec())).collect()),
                ),
                ("holder", holder),
                ("ttl", ttl),
                ("token", token),
            ])
        })
    }
}

pub struct DeleteCmd;

impl Command for DeleteCmd {
    const NAME: &'static str = "JOB.DELETE";
    const FLAGS: &'static str = "write fast";
    const SUMMARY: &'static str = "Deletes job id, ending any lease on it; 1 if it existed, else 0";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, _, _| {
            let effects = s.delete(id);
            let n = i64::from(!effects.is_empty());
            Ok((effects, Reply::Int(n)))
        })
    }
}

pub struct InfoCmd;

impl Command for InfoCmd {
    const NAME: &'static str = "JOB.INFO";
    const FLAGS: &'static str = "readonly fast";
    const SUMMARY: &'static str = "Describes the store: jobs by state (pending, leased, fulfilled, notifiable, notifying), last token, blocked pullers";
    const COMPLEXITY: &'static str = "O(1) (plus leases past their deadline not yet lapsed)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Jobs, _>(ctx, key, |s, now| {
            let c = s.map(|s| s.counts(now)).unwrap_or_default();
            let n = |v: usize| Reply::Int(v as i64);
            Reply::Map(vec![
                ("jobs", n(c.pending + c.fulfilled)),
                ("pending", n(c.pending)),
                ("leased", n(c.leased)),
                ("fulfilled", n(c.fulfilled)),
                ("notifiable", n(c.notifiable)),
                ("notifying", n(c.notifying)),
                (
                    "last_token",
                    Reply::Int(s.map_or(0, |s| s.last_token()) as i64),
                ),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
