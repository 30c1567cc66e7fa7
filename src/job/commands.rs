//! JOB commands: parse, call the engine with the core's decisions, shape the reply.

use std::sync::Arc;

use super::core::{Created, Jobs, Lane, Listing, Pull, Refusal, Spec};
use super::record::Opts;
use crate::engine::args::{self, once, MAX_MS};
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
    command::<FailCmd>(),
    command::<RetryCmd>(),
    command::<QueueCmd>(),
    command::<UnqueueCmd>(),
    command::<PullNotifyCmd>(),
    command::<DoneCmd>(),
    command::<GetCmd>(),
    command::<ListCmd>(),
    command::<DeleteCmd>(),
    command::<InfoCmd>(),
];

/// Job ids are integers from 1 (they are fencing-token values, far below this bound).
fn job_id(a: &mut Args) -> Result<u64, Error> {
    a.uint("id", 1, i64::MAX as u64)
}

/// A duration option (DELAY, BACKOFF, KEEP): integer milliseconds, 1 ≤ ms ≤ 2^40.
fn ms_option(a: &mut Args, name: &str) -> Result<u64, Error> {
    let b = a.bytes()?;
    match args::parse_u64(b) {
        Some(ms) if (1..=MAX_MS).contains(&ms) => Ok(ms),
        _ => Err(Error::msg(format!(
            "ERR invalid {name} '{}': expected integer milliseconds from 1 to {MAX_MS}",
            args::show(b)
        ))),
    }
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

/// A refused lease action (RENEW, RELEASE, FAIL, DONE).
fn lease_refused(id: u64, r: Refusal) -> Error {
    Error::msg(match r {
        Refusal::NoJob => format!("NOTHELD no job {id}"),
        Refusal::Is(state) => format!("NOTHELD job {id} is {}", state.name()),
        Refusal::NotFulfilled => format!("NOTHELD job {id} is not fulfilled"),
        Refusal::HeldBy(w) => format!("NOTHELD job {id} is held by {}", args::show(&w)),
        Refusal::NotLeased { notify: true } => {
            format!("NOTHELD job {id} has no notification lease (lapsed, done or never pulled)")
        }
        _ => format!("NOTHELD job {id} is not leased (lapsed, released or never pulled)"),
    })
}

/// JOB.CREATE's options.
fn create_spec(a: &mut Args) -> Result<Spec, Error> {
    const OPTIONS: &[&str] = &["DELAY", "PRIORITY", "ATTEMPTS", "BACKOFF", "KEEP", "UNIQUE"];
    let (mut delay, mut priority, mut attempts, mut backoff, mut keep, mut unique) =
        (None, None, None, None, None, None);
    while let Some(option) = a.option(OPTIONS)? {
        match option {
            "DELAY" => once(&mut delay, option, ms_option(a, option)?)?,
            "PRIORITY" => once(
                &mut priority,
                option,
                a.uint(option, 0, u64::from(u32::MAX))? as u32,
            )?,
            "ATTEMPTS" => once(
                &mut attempts,
                option,
                a.uint(option, 1, u64::from(u32::MAX))? as u32,
            )?,
            "BACKOFF" => once(&mut backoff, option, ms_option(a, option)?)?,
            "KEEP" => once(&mut keep, option, ms_option(a, option)?)?,
            _ => once(&mut unique, option, Jobs::unique_name(a.id(option)?))?,
        }
    }
    Ok(Spec {
        priority: priority.unwrap_or(0),
        delay,
        opts: Opts {
            max_attempts: attempts,
            backoff,
            keep,
            unique,
        },
    })
}

pub struct CreateCmd;

impl Command for CreateCmd {
    const NAME: &'static str = "JOB.CREATE";
    const FLAGS: &'static str = "write deny-oom fast";
    const SUMMARY: &'static str = "Creates a job with the given request; returns its id (increasing, never reused). Pending, or delayed DELAY ms; pulled by PRIORITY (higher first); failed after ATTEMPTS failed attempts, each followed by BACKOFF ms doubling; deleted KEEP ms after it finishes; with UNIQUE name, answers the existing job of that name instead";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[
        Arg::Str("request"),
        Arg::OptInt("DELAY", "ms"),
        Arg::OptInt("PRIORITY", "priority"),
        Arg::OptInt("ATTEMPTS", "attempts"),
        Arg::OptInt("BACKOFF", "ms"),
        Arg::OptInt("KEEP", "ms"),
        Arg::OptStr("UNIQUE", "name"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let request = a.bytes()?;
        let spec = create_spec(&mut a)?;
        txn::write::<Jobs, _>(ctx, key, |s, now, id| {
            Ok(match s.create(id, request, &spec, now) {
                Created::New(e) => (Some(e), Reply::Int(id as i64)),
                Created::Existing(old) => (None, Reply::Int(old as i64)),
            })
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
    const SUMMARY: &'static str = "Leases the pending job no one works on with the highest priority (the oldest among equals) to worker for ms milliseconds: [id, request, token], or nil when none (optionally after waiting up to BLOCK ms). A worker that holds a job gets that job again, extended, same token";
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
    const SUMMARY: &'static str = "Extends the lease worker holds on job id to ms milliseconds from now: the work lease while the job is pending, the notification lease once it is fulfilled";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker"), Arg::Int("ms")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        let ttl = a.ttl()?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let e = s
                .renew(id, worker, ttl, now)
                .map_err(|r| lease_refused(id, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct ReleaseCmd;

impl Command for ReleaseCmd {
    const NAME: &'static str = "JOB.RELEASE";
    const FLAGS: &'static str = "write fast";
    const SUMMARY: &'static str = "Ends worker's work lease on job id (a give-back, not a failed attempt); the job (still pending) goes to the first blocked puller, or back to the pullable jobs";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let e = s
                .release(id, worker, now)
                .map_err(|r| lease_refused(id, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct FulfillCmd;

impl Command for FulfillCmd {
    const NAME: &'static str = "JOB.FULFILL";
    const FLAGS: &'static str = "write deny-oom";
    const SUMMARY: &'static str = "Fulfils job id with value (binary-safe) and ends its work lease; with TOKEN, only under that current work lease (else STALE). With NEXT worker ms, then answers what JOB.PULL key worker ms would (never blocking): one round trip per job";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[
        Arg::Int("id"),
        Arg::Str("value"),
        Arg::OptInt("TOKEN", "token"),
        Arg::OptStr("NEXT", "worker ms"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let value = a.bytes()?;
        let (mut token, mut next) = (None, None);
        while let Some(option) = a.option(&["TOKEN", "NEXT"])? {
            if option == "TOKEN" {
                once(&mut token, option, a.uint("token", 1, i64::MAX as u64)?)?;
            } else {
                let worker = a.id("worker")?;
                let ttl = a.ttl()?;
                let pull = Pull {
                    lane: Lane::Work,
                    worker: Arc::from(worker),
                    ttl,
                };
                once(&mut next, option, pull)?;
            }
        }
        let decide = |s: &Jobs, now: u64, _| {
            let effects = s.fulfill(id, value, token, now).map_err(|r| {
                let t = token.unwrap_or(0);
                Error::msg(match r {
                    Refusal::NoJob => format!("NOJOB no job {id}"),
                    Refusal::Already => format!("ALREADY job {id} is already fulfilled"),
                    Refusal::NeverIssued => {
                        format!("NOTHELD token {t} was never issued for job {id}")
                    }
                    Refusal::Stale { current: Some(c) } => {
                        format!("STALE token {t} is not job {id}'s work lease (current is {c})")
                    }
                    _ => format!(
                        "STALE token {t} is not job {id}'s work lease (it has none: lapsed or released)"
                    ),
                })
            })?;
            Ok((effects, Reply::Int(1)))
        };
        match next {
            None => txn::write::<Jobs, _>(ctx, key, decide),
            Some(pull) => txn::write_then_acquire::<Jobs, _>(ctx, key, decide, pull),
        }
    }
}

pub struct FailCmd;

impl Command for FailCmd {
    const NAME: &'static str = "JOB.FAIL";
    const FLAGS: &'static str = "write deny-oom fast";
    const SUMMARY: &'static str = "Ends worker's work lease on job id as a failed attempt, keeping reason; returns the job's state afterwards: pending, delayed (BACKOFF) or failed (ATTEMPTS reached: the dead letter)";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::Str("worker"), Arg::OptMany("reason")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let worker = a.id("worker")?;
        let reason = if a.remaining() > 0 { a.bytes()? } else { b"" };
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let (effects, state) = s
                .fail(id, worker, reason, now)
                .map_err(|r| lease_refused(id, r))?;
            Ok((effects, Reply::Bulk(state.name().as_bytes().to_vec())))
        })
    }
}

pub struct RetryCmd;

impl Command for RetryCmd {
    const NAME: &'static str = "JOB.RETRY";
    const FLAGS: &'static str = "write deny-oom fast";
    const SUMMARY: &'static str = "Makes failed job id pending again (handed at once to the first blocked puller), its failed attempts reset; returns 1";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of jobs";
    const ARGS: &'static [Arg] = &[Arg::Int("id")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        a.finish()?;
        txn::write::<Jobs, _>(ctx, key, |s, _, _| {
            let e = s.retry(id).map_err(|r| match r {
                Refusal::NotFailed(state) => Error::msg(format!(
                    "ERR job {id} is {}, not failed: only a failed job can be retried",
                    state.name()
                )),
                _ => no_job(id),
            })?;
            Ok((vec![e], Reply::Int(1)))
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
    const SUMMARY: &'static str = "Removes, for each target given, its first equal match from job id's waiting targets; returns how many were removed (0 when none is given)";
    const COMPLEXITY: &'static str =
        "O(log N + T×G) where N is the number of jobs, T the job's targets, G the targets given";
    const ARGS: &'static [Arg] = &[Arg::Int("id"), Arg::OptMany("target")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let id = job_id(&mut a)?;
        let targets = rest(&mut a)?;
        txn::write::<Jobs, _>(ctx, key, |s, now, _| {
            let (e, n) = s.unqueue(id, &targets, now).map_err(|_| no_job(id))?;
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
                .map_err(|r| lease_refused(id, r))?;
            Ok((effects, Reply::Int(n as i64)))
        })
    }
}

pub struct GetCmd;

fn ms_left(at: Option<u64>, now: u64) -> Reply {
    at.map_or(Reply::Nil, |t| Reply::Int(t.saturating_sub(now) as i64))
}

fn opt_bytes(b: Option<&[u8]>) -> Reply {
    b.map_or(Reply::Nil, |b| Reply::Bulk(b.to_vec()))
}

fn opt_int(v: Option<u64>) -> Reply {
    v.map_or(Reply::Nil, |v| Reply::Int(v as i64))
}

impl Command for GetCmd {
    const NAME: &'static str = "JOB.GET";
    const FLAGS: &'static str = "readonly";
    const SUMMARY: &'static str = "Describes job id: state (delayed, pending, failed, fulfilled), request, value, waiting targets, its current lease (holder, ttl, token), priority, failed attempts and their limit, backoff, keep, unique name, ms until due and until deleted, last failure reason; nil when there is no such job";
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
            let (holder, ttl, token) = match v.lease {
                Some(l) => (
                    Reply::Bulk(l.worker.to_vec()),
                    Reply::Int((l.deadline - now) as i64),
                    Reply::Int(l.token as i64),
                ),
                None => (Reply::Nil, Reply::Nil, Reply::Nil),
            };
            let job = v.job;
            Reply::Map(vec![
                ("state", Reply::Bulk(v.state.name().as_bytes().to_vec())),
                ("request", Reply::Bulk(job.request.to_vec())),
                ("value", opt_bytes(v.value)),
                (
                    "waiting",
                    Reply::Array(
                        job.waiting()
                            .iter()
                            .map(|t| Reply::Bulk(t.to_vec()))
                            .collect(),
                    ),
                ),
                ("holder", holder),
                ("ttl", ttl),
                ("token", token),
                ("priority", Reply::Int(i64::from(job.priority))),
                ("attempts", Reply::Int(i64::from(job.attempts))),
                ("max_attempts", opt_int(job.max_attempts().map(u64::from))),
                ("backoff", opt_int(job.backoff())),
                ("keep", opt_int(job.keep())),
                ("unique", opt_bytes(job.unique().map(|n| &n[..]))),
                ("due", ms_left(v.due, now)),
                ("expires", ms_left(v.expires, now)),
                ("reason", opt_bytes(job.reason())),
            ])
        })
    }
}

pub struct ListCmd;

/// The longest page LIST answers.
pub const LIST_MAX: u64 = 10_000;

impl Command for ListCmd {
    const NAME: &'static str = "JOB.LIST";
    const FLAGS: &'static str = "readonly";
    const SUMMARY: &'static str = "Ids of the jobs in state: pending (not leased, in pull order), leased (by lease deadline), delayed (by due time), failed or fulfilled (by id); after job id in that order (AFTER), at most COUNT (default 100)";
    const COMPLEXITY: &'static str = "O(log N + C) where N is the number of jobs and C the count";
    const ARGS: &'static [Arg] = &[
        Arg::Str("state"),
        Arg::OptInt("AFTER", "id"),
        Arg::OptInt("COUNT", "count"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let word = a.bytes()?;
        let Some(&(name, listing)) = Listing::ALL
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(word))
        else {
            return Err(Error::msg(format!(
                "ERR invalid state '{}' for JOB.LIST (expected one of: pending, leased, delayed, failed, fulfilled)",
                args::show(word)
            )));
        };
        let (mut after, mut count) = (None, None);
        while let Some(option) = a.option(&["AFTER", "COUNT"])? {
            if option == "AFTER" {
                once(&mut after, option, job_id(&mut a)?)?;
            } else {
                once(&mut count, option, a.uint("COUNT", 1, LIST_MAX)?)?;
            }
        }
        let count = count.unwrap_or(100) as usize;
        txn::read::<Jobs, _>(ctx, key, |s, _| {
            let listed = match s {
                Some(s) => s.list(listing, after, count),
                None => Ok(Vec::new()),
            };
            match listed {
                Ok(ids) => Ok(Reply::Array(
                    ids.into_iter().map(|id| Reply::Int(id as i64)).collect(),
                )),
                Err(Refusal::NoJob) => Err(no_job(after.unwrap_or(0))),
                Err(_) => {
                    let id = after.unwrap_or(0);
                    Err(Error::msg(format!(
                        "NOJOB no {name} job {id} (AFTER needs a job that is still {name})"
                    )))
                }
            }
        })?
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
    const SUMMARY: &'static str = "Describes the store: jobs by state (pending, leased, fulfilled, notifiable, notifying, delayed, failed), last token, blocked pullers";
    const COMPLEXITY: &'static str = "O(1) (plus leases past their deadline not yet lapsed)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Jobs, _>(ctx, key, |s, now| {
            let c = s.map(|s| s.counts(now)).unwrap_or_default();
            let n = |v: usize| Reply::Int(v as i64);
            Reply::Map(vec![
                ("jobs", n(c.jobs())),
                ("pending", n(c.pending)),
                ("leased", n(c.leased)),
                ("fulfilled", n(c.fulfilled)),
                ("notifiable", n(c.notifiable)),
                ("notifying", n(c.notifying)),
                ("delayed", n(c.delayed)),
                ("failed", n(c.failed)),
                (
                    "last_token",
                    Reply::Int(s.map_or(0, |s| s.last_token()) as i64),
                ),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
