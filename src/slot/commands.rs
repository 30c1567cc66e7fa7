//! SLOT commands: parse, call the engine with the core's decisions, shape the reply.

use super::core::{Get, Pool, Refusal, MAX_SLOTS};
use crate::engine::args::{self, once};
use crate::engine::txn;
use crate::engine::{command, Arg, Args, CmdResult, Command, CommandDef, Ctx, Error, RStr, Reply};

pub const COMMANDS: &[CommandDef] = &[
    command::<GetCmd>(),
    command::<PutCmd>(),
    command::<RenewCmd>(),
    command::<CountCmd>(),
    command::<HolderCmd>(),
    command::<InfoCmd>(),
];

fn refused(slot: u64, r: Refusal) -> Error {
    Error::msg(match r {
        Refusal::Free => {
            format!("NOTHELD slot {slot} is not held (lapsed, put back or never taken)")
        }
        Refusal::HeldBy(h) => format!("NOTHELD slot {slot} is held by {}", args::show(&h)),
        Refusal::Anonymous => format!("NOTHELD slot {slot} is held without HOLDER"),
        Refusal::NoLease => format!("ERR slot {slot} has no TTL to renew (taken without TTL)"),
    })
}

fn slot(a: &mut Args) -> Result<u64, Error> {
    a.uint("slot", 0, MAX_SLOTS - 1)
}

/// The optional `HOLDER id` after the fixed arguments of PUT and RENEW.
fn holder_option<'a>(a: &mut Args<'a>) -> Result<Option<&'a [u8]>, Error> {
    let mut holder = None;
    while a.option(&["HOLDER"])?.is_some() {
        once(&mut holder, "HOLDER", a.id("holder")?)?;
    }
    Ok(holder)
}

pub struct GetCmd;

impl Command for GetCmd {
    const NAME: &'static str = "SLOT.GET";
    const FLAGS: &'static str = "write deny-oom blocking";
    const ARITY: i32 = -2;
    const SUMMARY: &'static str = "Takes the lowest free slot (from 0); nil when a LIMIT pool is full (optionally after waiting up to BLOCK ms). TTL makes it a lease; WITHTOKEN also answers the fencing token";
    const COMPLEXITY: &'static str = "O(log n) for n held slots";
    const ARGS: &'static [Arg] = &[
        Arg::OptStr("HOLDER", "id"),
        Arg::OptInt("TTL", "ms"),
        Arg::OptInt("LIMIT", "n"),
        Arg::OptInt("BLOCK", "timeout"),
        Arg::Flag("WITHTOKEN"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let (mut holder, mut ttl, mut limit, mut block, mut withtoken) =
            (None, None, None, None, None);
        while let Some(opt) = a.option(&["HOLDER", "TTL", "LIMIT", "BLOCK", "WITHTOKEN"])? {
            match opt {
                "HOLDER" => once(&mut holder, opt, a.id("holder")?)?,
                "TTL" => once(&mut ttl, opt, a.ttl()?)?,
                "LIMIT" => once(&mut limit, opt, a.uint("LIMIT", 1, MAX_SLOTS)?)?,
                "BLOCK" => once(&mut block, opt, a.block_ms()?)?,
                // `option` answers only the names it was given.
                _ => once(&mut withtoken, opt, ())?,
            }
        }
        let get = Get {
            holder: holder.map(Into::into),
            ttl,
            limit,
            withtoken: withtoken.is_some(),
        };
        txn::acquire::<Pool>(ctx, key, get, block)
    }
}

pub struct PutCmd;

impl Command for PutCmd {
    const NAME: &'static str = "SLOT.PUT";
    const FLAGS: &'static str = "write fast";
    const ARITY: i32 = -3;
    const SUMMARY: &'static str = "Puts a held slot back (only its HOLDER may, if it was taken with one); the first waiter, if any, is granted at once";
    const COMPLEXITY: &'static str = "O(log n) for n held slots";
    const ARGS: &'static [Arg] = &[Arg::Int("slot"), Arg::OptStr("HOLDER", "id")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let slot = slot(&mut a)?;
        let holder = holder_option(&mut a)?;
        txn::write::<Pool, _>(ctx, key, |p, now, _| {
            let e = p.put(slot, holder, now).map_err(|r| refused(slot, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct RenewCmd;

impl Command for RenewCmd {
    const NAME: &'static str = "SLOT.RENEW";
    const FLAGS: &'static str = "write deny-oom fast";
    const ARITY: i32 = -4;
    const SUMMARY: &'static str =
        "Extends a leased slot to ms milliseconds from now (the heartbeat)";
    const COMPLEXITY: &'static str = "O(log n) for n leased slots";
    const ARGS: &'static [Arg] = &[
        Arg::Int("slot"),
        Arg::Int("ms"),
        Arg::OptStr("HOLDER", "id"),
    ];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let slot = slot(&mut a)?;
        let ttl = a.ttl()?;
        let holder = holder_option(&mut a)?;
        txn::write::<Pool, _>(ctx, key, |p, now, _| {
            let e = p
                .renew(slot, holder, ttl, now)
                .map_err(|r| refused(slot, r))?;
            Ok((vec![e], Reply::Int(1)))
        })
    }
}

pub struct CountCmd;

impl Command for CountCmd {
    const NAME: &'static str = "SLOT.COUNT";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str = "Number of held slots";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        txn::read::<Pool, _>(ctx, key, |p, now| {
            Reply::Int(p.map_or(0, |p| p.held_at(now)) as i64)
        })
    }
}

pub struct HolderCmd;

impl Command for HolderCmd {
    const NAME: &'static str = "SLOT.HOLDER";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str = "Describes a held slot as [holder, ttl (ms, -1 without TTL), token]; nil when free. holder and token are nil for a slot taken without HOLDER and TTL";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Int("slot")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let slot = slot(&mut a)?;
        a.finish()?;
        txn::read::<Pool, _>(ctx, key, |p, now| {
            match p.and_then(|p| p.slot_at(slot, now)) {
                None => Reply::Nil,
                Some(v) => Reply::Array(vec![
                    v.holder.map_or(Reply::Nil, |h| Reply::Bulk(h.to_vec())),
                    Reply::Int(v.deadline.map_or(-1, |at| (at - now) as i64)),
                    v.token.map_or(Reply::Nil, |t| Reply::Int(t as i64)),
                ]),
            }
        })
    }
}

pub struct InfoCmd;

impl Command for InfoCmd {
    const NAME: &'static str = "SLOT.INFO";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str = "Describes the pool: held, highest (slot ever issued, -1 if none), leased, waiters; zeros for a missing key";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Pool, _>(ctx, key, |p, now| {
            let (held, highest, leased) = match p {
                None => (0, -1, 0),
                Some(p) => (
                    p.held_at(now) as i64,
                    p.highest() as i64,
                    p.leased_at(now) as i64,
                ),
            };
            Reply::Map(vec![
                ("held", Reply::Int(held)),
                ("highest", Reply::Int(highest)),
                ("leased", Reply::Int(leased)),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
