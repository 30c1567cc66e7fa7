//! RESV commands: parse, call the engine with the core's decisions, shape the reply.

use super::core::{Lock, Refusal, Resv};
use crate::engine::args::{self, once};
use crate::engine::txn;
use crate::engine::{command, Arg, Args, CmdResult, Command, CommandDef, Ctx, Error, RStr, Reply};

pub const COMMANDS: &[CommandDef] = &[
    command::<LockCmd>(),
    command::<RenewCmd>(),
    command::<ReleaseCmd>(),
    command::<CheckCmd>(),
    command::<InfoCmd>(),
];

fn refused(r: Refusal) -> Error {
    match r {
        Refusal::HeldBy(h) => Error::msg(format!(
            "NOTHELD the reservation is held by {}",
            args::show(&h)
        )),
        Refusal::Free => {
            Error::msg("NOTHELD the reservation is not held (lapsed, released or never locked)")
        }
        Refusal::Stale { given, current } if given > current => Error::msg(format!(
            "NOTHELD token {given} was never issued (the current lease is {current})"
        )),
        Refusal::Stale { given, current } => Error::msg(format!(
            "STALE token {given} is not the current lease (current is {current})"
        )),
    }
}

pub struct LockCmd;

impl Command for LockCmd {
    const NAME: &'static str = "RESV.LOCK";
    const FLAGS: &'static str = "write deny-oom blocking";
    const ARITY: i32 = -4;
    const SUMMARY: &'static str = "Reserves key for holder for ms milliseconds; returns a fencing token, or nil when held by another (optionally after waiting up to BLOCK ms)";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[
        Arg::Str("holder"),
        Arg::Int("ms"),
        Arg::OptInt("BLOCK", "timeout"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        let ttl = a.ttl()?;
        let mut block = None;
        while a.option(&["BLOCK"])?.is_some() {
            once(&mut block, "BLOCK", a.block_ms()?)?;
        }
        let lock = Lock {
            holder: holder.into(),
            ttl,
        };
        txn::acquire::<Resv>(ctx, key, lock, block)
    }
}

pub struct RenewCmd;

impl Command for RenewCmd {
    const NAME: &'static str = "RESV.RENEW";
    const FLAGS: &'static str = "write deny-oom fast";
    const ARITY: i32 = 4;
    const SUMMARY: &'static str =
        "Extends holder's reservation to ms milliseconds from now (the heartbeat)";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("holder"), Arg::Int("ms")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        let ttl = a.ttl()?;
        a.finish()?;
        txn::write::<Resv, _>(ctx, key, |r, now, _| {
            let e = r.renew(holder, ttl, now).map_err(refused)?;
            Ok(([e], Reply::Int(1)))
        })
    }
}

pub struct ReleaseCmd;

impl Command for ReleaseCmd {
    const NAME: &'static str = "RESV.RELEASE";
    const FLAGS: &'static str = "write fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str =
        "Releases holder's reservation; the next waiter (if any) is granted at once";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("holder")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        a.finish()?;
        txn::write::<Resv, _>(ctx, key, |r, now, _| {
            let e = r.release(holder, now).map_err(refused)?;
            Ok(([e], Reply::Int(1)))
        })
    }
}

pub struct CheckCmd;

impl Command for CheckCmd {
    const NAME: &'static str = "RESV.CHECK";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 4;
    const SUMMARY: &'static str =
        "Answers 1 if holder holds key under token, else NOTHELD or STALE (a fencing check)";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("holder"), Arg::Int("token")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        let token = a.token()?;
        a.finish()?;
        txn::read::<Resv, _>(ctx, key, |r, now| match r {
            None => Err(refused(Refusal::Free)),
            Some(r) => r
                .check(holder, token, now)
                .map(|_| Reply::Int(1))
                .map_err(refused),
        })?
    }
}

pub struct InfoCmd;

impl Command for InfoCmd {
    const NAME: &'static str = "RESV.INFO";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str =
        "Describes the reservation: holder, ttl (ms), token (each nil when free), waiters";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Resv, _>(ctx, key, |r, now| {
            let held = r.and_then(|r| r.held_at(now));
            Reply::Map(vec![
                (
                    "holder",
                    held.map_or(Reply::Nil, |h| Reply::Bulk(h.holder.to_vec())),
                ),
                (
                    "ttl",
                    held.map_or(Reply::Nil, |h| Reply::Int((h.deadline - now) as i64)),
                ),
                (
                    "token",
                    held.map_or(Reply::Nil, |h| Reply::Int(h.token as i64)),
                ),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
