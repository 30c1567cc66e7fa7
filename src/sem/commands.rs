//! SEM commands: parse, call the engine with the core's decisions, shape the reply.

use std::sync::Arc;

use super::core::{Acquire, Sem};
use crate::engine::args::once;
use crate::engine::txn;
use crate::engine::{
    command, Arg, Args, CmdResult, Command, CommandDef, Ctx, Error, Primitive, RStr, Reply,
};

pub const COMMANDS: &[CommandDef] = &[
    command::<AcquireCmd>(),
    command::<RenewCmd>(),
    command::<ReleaseCmd>(),
    command::<CountCmd>(),
    command::<HoldersCmd>(),
    command::<InfoCmd>(),
];

/// The largest capacity (and PERMITS) a semaphore accepts.
const MAX_CAPACITY: u64 = u32::MAX as u64;

fn not_held() -> Error {
    Error::msg("NOTHELD the holder holds no permit (lapsed, released or never acquired)")
}

pub struct AcquireCmd;

impl Command for AcquireCmd {
    const NAME: &'static str = "SEM.ACQUIRE";
    const FLAGS: &'static str = "write deny-oom blocking";
    const ARITY: i32 = -5;
    const SUMMARY: &'static str = "Acquires PERMITS n (default 1) of capacity permits for holder for ms milliseconds, or extends the holder's permit; returns a fencing token, or nil when too few are free (optionally after waiting up to BLOCK ms)";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of holders";
    const ARGS: &'static [Arg] = &[
        Arg::Str("holder"),
        Arg::Int("capacity"),
        Arg::Int("ms"),
        Arg::OptInt("PERMITS", "n"),
        Arg::OptInt("BLOCK", "timeout"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        let capacity = a.uint("capacity", 1, MAX_CAPACITY)?;
        let ttl = a.ttl()?;
        let (mut permits, mut block) = (None, None);
        while let Some(opt) = a.option(&["PERMITS", "BLOCK"])? {
            if opt == "PERMITS" {
                once(&mut permits, opt, a.uint("PERMITS", 1, MAX_CAPACITY)?)?;
            } else {
                once(&mut block, opt, a.block_ms()?)?;
            }
        }
        let permits = permits.unwrap_or(1);
        if permits > capacity {
            return Err(Error::msg(format!(
                "ERR invalid PERMITS {permits}: more than the capacity {capacity}"
            )));
        }
        let request = Acquire {
            holder: Arc::from(holder),
            capacity,
            permits: permits as u32,
            ttl,
        };
        txn::acquire::<Sem>(ctx, key, request, block)
    }
}

pub struct RenewCmd;

impl Command for RenewCmd {
    const NAME: &'static str = "SEM.RENEW";
    const FLAGS: &'static str = "write deny-oom fast";
    const ARITY: i32 = 4;
    const SUMMARY: &'static str = "Extends holder's permit to ms milliseconds from now";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of holders";
    const ARGS: &'static [Arg] = &[Arg::Str("holder"), Arg::Int("ms")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        let ttl = a.ttl()?;
        a.finish()?;
        txn::write::<Sem, _>(ctx, key, |s, now, _| {
            let e = s.renew(holder, ttl, now).ok_or_else(not_held)?;
            Ok(([e], Reply::Int(1)))
        })
    }
}

pub struct ReleaseCmd;

impl Command for ReleaseCmd {
    const NAME: &'static str = "SEM.RELEASE";
    const FLAGS: &'static str = "write fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str =
        "Releases holder's permits; waiters they now fit are granted at once, in order";
    const COMPLEXITY: &'static str = "O(log N) where N is the number of holders";
    const ARGS: &'static [Arg] = &[Arg::Str("holder")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let holder = a.id("holder")?;
        a.finish()?;
        txn::write::<Sem, _>(ctx, key, |s, now, _| {
            let e = s.release(holder, now).ok_or_else(not_held)?;
            Ok(([e], Reply::Int(1)))
        })
    }
}

pub struct CountCmd;

impl Command for CountCmd {
    const NAME: &'static str = "SEM.COUNT";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str = "Number of permits in use";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        txn::read::<Sem, _>(ctx, key, |s, now| {
            Reply::Int(s.map_or(0, |s| s.count_at(now)) as i64)
        })
    }
}

pub struct HoldersCmd;

impl Command for HoldersCmd {
    const NAME: &'static str = "SEM.HOLDERS";
    const FLAGS: &'static str = "readonly";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str =
        "Holders ordered by expiry, flat: holder, ttl (ms), permits, token, …";
    const COMPLEXITY: &'static str = "O(N) where N is the number of holders";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        txn::read::<Sem, _>(ctx, key, |s, now| {
            let mut flat = Vec::new();
            for h in s.iter().flat_map(|s| s.holders_at(now)) {
                flat.push(Reply::Bulk(h.holder.to_vec()));
                flat.push(Reply::Int((h.deadline - now) as i64));
                flat.push(Reply::Int(i64::from(h.permits)));
                flat.push(Reply::Int(h.token as i64));
            }
            Reply::Array(flat)
        })
    }
}

pub struct InfoCmd;

impl Command for InfoCmd {
    const NAME: &'static str = "SEM.INFO";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str = "Describes the semaphore: permits in use, holders, ttl of the next expiry (ms), last token, waiters";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Sem, _>(ctx, key, |s, now| {
            let (permits, holders, next, last) = match s {
                None => (0, 0, -1, 0),
                Some(s) => (
                    s.count_at(now),
                    s.holder_count_at(now),
                    s.holders_at(now)
                        .next()
                        .map_or(-1, |h| (h.deadline - now) as i64),
                    s.last_token(),
                ),
            };
            Reply::Map(vec![
                ("permits", Reply::Int(permits as i64)),
                ("holders", Reply::Int(holders as i64)),
                ("next_expiry_ms", Reply::Int(next)),
                ("last_token", Reply::Int(last as i64)),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
