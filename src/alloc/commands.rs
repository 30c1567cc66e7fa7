//! ALLOC commands: parse, call the engine with the core's decisions, shape the reply.

use std::sync::Arc;

use super::core::{Alloc, AllocEffect, Allocation, Drain};
use crate::engine::args::once;
use crate::engine::txn;
use crate::engine::{command, Arg, Args, CmdResult, Command, CommandDef, Ctx, Error, RStr, Reply};

pub const COMMANDS: &[CommandDef] = &[
    command::<AvailableCmd>(),
    command::<UnavailableCmd>(),
    command::<InstancesCmd>(),
    command::<AllocateCmd>(),
    command::<DeallocateCmd>(),
    command::<JobsCmd>(),
    command::<HasJobsCmd>(),
    command::<InstanceCmd>(),
    command::<DrainCmd>(),
    command::<InfoCmd>(),
];

fn bool_int(b: bool) -> Reply {
    Reply::Int(i64::from(b))
}

pub struct AvailableCmd;

impl Command for AvailableCmd {
    const NAME: &'static str = "ALLOC.AVAILABLE";
    const FLAGS: &'static str = "write deny-oom fast";
    const ARITY: i32 = -3;
    const SUMMARY: &'static str = "Makes instance available for allocation (new instances go to the end of the allocation order); with TTL, availability is a heartbeat lease. Returns 1 if it changed, 0 if already available";
    const COMPLEXITY: &'static str = "O(1) for a known available instance, O(instances) otherwise";
    const ARGS: &'static [Arg] = &[Arg::Str("instance"), Arg::OptInt("TTL", "ms")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let instance = a.id("instance")?;
        let mut ttl = None;
        while a.option(&["TTL"])?.is_some() {
            once(&mut ttl, "TTL", a.ttl()?)?;
        }
        txn::write::<Alloc, _>(ctx, key, |s, now, _| {
            let (changed, e) = s.make_available(instance, ttl.map(|t| now + t));
            Ok(([e], bool_int(changed)))
        })
    }
}

pub struct UnavailableCmd;

impl Command for UnavailableCmd {
    const NAME: &'static str = "ALLOC.UNAVAILABLE";
    const FLAGS: &'static str = "write deny-oom";
    const ARITY: i32 = -3;
    const SUMMARY: &'static str = "Makes instance unavailable (recording it if unknown; its allocations stay): 1 if changed, else 0. With REMOVE, deletes the instance and its allocations and returns how many allocations were dropped";
    const COMPLEXITY: &'static str = "O(instances), plus O(jobs of the instance) with REMOVE";
    const ARGS: &'static [Arg] = &[Arg::Str("instance"), Arg::Flag("REMOVE")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let instance = a.id("instance")?;
        let mut remove = None;
        while a.option(&["REMOVE"])?.is_some() {
            once(&mut remove, "REMOVE", ())?;
        }
        txn::write::<Alloc, _>(ctx, key, |s, _, _| {
            if remove.is_some() {
                let (dropped, e) = s.remove(instance);
                Ok((e, Reply::Int(dropped as i64)))
            } else {
                let e = s.make_unavailable(instance);
                let changed = e.is_some();
                Ok((e, bool_int(changed)))
            }
        })
    }
}

pub struct InstancesCmd;

impl Command for InstancesCmd {
    const NAME: &'static str = "ALLOC.INSTANCES";
    const FLAGS: &'static str = "readonly";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str =
        "Known instances in allocation order, flat: instance, 1 (available) or 0, …";
    const COMPLEXITY: &'static str = "O(instances)";
    const ARGS: &'static [Arg] = &[];

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        txn::read::<Alloc, _>(ctx, key, |s, now| {
            let mut flat = Vec::new();
            for (name, available) in s.iter().flat_map(|s| s.instances()) {
                // A heartbeat past its deadline reads as unavailable, even before it lapses.
                let live = available && s.is_some_and(|s| s.heartbeat_live(name, now));
                flat.push(Reply::Bulk(name.to_vec()));
                flat.push(bool_int(live));
            }
            Reply::Array(flat)
        })
    }
}

pub struct AllocateCmd;

impl Command for AllocateCmd {
    const NAME: &'static str = "ALLOC.ALLOCATE";
    const FLAGS: &'static str = "write deny-oom fast";
    const ARITY: i32 = -3;
    const SUMMARY: &'static str = "Returns [instance, persisted]: the job's existing allocation (persisted 0), or a new one on the available instance atributo's allocator picks (persisted 1). With ONLYFOR, a new allocation is stored only if the pick is that instance";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("job"), Arg::OptStr("ONLYFOR", "instance")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let job = a.id("job")?;
        let mut only_for = None;
        while a.option(&["ONLYFOR"])?.is_some() {
            once(&mut only_for, "ONLYFOR", a.id("instance")?)?;
        }
        txn::write::<Alloc, _>(ctx, key, |s, _, _| {
            let reply = |instance: &Arc<[u8]>, persisted: bool| {
                Reply::Array(vec![Reply::Bulk(instance.to_vec()), bool_int(persisted)])
            };
            match s.allocate(job, only_for) {
                None => Err(Error::msg("NOINSTANCES no instance is available")),
                Some(Allocation::Existing(i)) => Ok((None, reply(&i, false))),
                Some(Allocation::New {
                    instance,
                    store: false,
                }) => Ok((None, reply(&instance, false))),
                Some(Allocation::New {
                    instance,
                    store: true,
                }) => {
                    let r = reply(&instance, true);
                    let e = AllocEffect::Allocate {
                        job: Arc::from(job),
                        instance,
                    };
                    Ok((Some(e), r))
                }
            }
        })
    }
}

pub struct DeallocateCmd;

impl Command for DeallocateCmd {
    const NAME: &'static str = "ALLOC.DEALLOCATE";
    const FLAGS: &'static str = "write fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str = "Removes the job's allocation: 1, or 0 if it had none";
    const COMPLEXITY: &'static str = "O(log jobs of its instance)";
    const ARGS: &'static [Arg] = &[Arg::Str("job")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let job = a.id("job")?;
        a.finish()?;
        txn::write::<Alloc, _>(ctx, key, |s, _, _| {
            let e = s.deallocate(job);
            let found = e.is_some();
            Ok((e, bool_int(found)))
        })
    }
}

pub struct JobsCmd;

impl Command for JobsCmd {
    const NAME: &'static str = "ALLOC.JOBS";
    const FLAGS: &'static str = "readonly";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str = "Jobs allocated to instance (sorted by job id)";
    const COMPLEXITY: &'static str = "O(jobs of the instance)";
    const ARGS: &'static [Arg] = &[Arg::Str("instance")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let instance = a.id("instance")?;
        a.finish()?;
        txn::read::<Alloc, _>(ctx, key, |s, _| {
            Reply::Array(
                s.iter()
                    .flat_map(|s| s.jobs_of(instance))
                    .map(|j| Reply::Bulk(j.to_vec()))
                    .collect(),
            )
        })
    }
}

pub struct HasJobsCmd;

impl Command for HasJobsCmd {
    const NAME: &'static str = "ALLOC.HASJOBS";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str = "1 if any job is allocated to instance, else 0";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("instance")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let instance = a.id("instance")?;
        a.finish()?;
        txn::read::<Alloc, _>(ctx, key, |s, _| {
            bool_int(s.is_some_and(|s| s.has_jobs(instance)))
        })
    }
}

pub struct InstanceCmd;

impl Command for InstanceCmd {
    const NAME: &'static str = "ALLOC.INSTANCE";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 3;
    const SUMMARY: &'static str = "The instance job is allocated to, or nil";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("job")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let job = a.id("job")?;
        a.finish()?;
        txn::read::<Alloc, _>(ctx, key, |s, _| {
            s.and_then(|s| s.instance_of(job))
                .map_or(Reply::Nil, |i| Reply::Bulk(i.to_vec()))
        })
    }
}

pub struct DrainCmd;

impl Command for DrainCmd {
    const NAME: &'static str = "ALLOC.DRAIN";
    // It changes nothing: it runs on replicas too, where replicated changes end the wait.
    const FLAGS: &'static str = "readonly blocking";
    const ARITY: i32 = -3;
    const SUMMARY: &'static str =
        "1 once instance has no jobs allocated (waiting up to BLOCK ms), nil if it still has some";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[Arg::Str("instance"), Arg::OptInt("BLOCK", "timeout")];

    fn run(ctx: Ctx, key: RStr, mut a: Args) -> CmdResult {
        let instance = a.id("instance")?;
        let mut block = None;
        while a.option(&["BLOCK"])?.is_some() {
            once(&mut block, "BLOCK", a.block_ms()?)?;
        }
        let drain = Drain {
            instance: Arc::from(instance),
        };
        txn::wait::<Alloc>(ctx, key, drain, block)
    }
}

pub struct InfoCmd;

impl Command for InfoCmd {
    const NAME: &'static str = "ALLOC.INFO";
    const FLAGS: &'static str = "readonly fast";
    const ARITY: i32 = 2;
    const SUMMARY: &'static str = "Describes the allocator: instances (known), available, heartbeats (instances with a TTL), allocations, waiters (blocked DRAINs); zeros for a missing key";
    const COMPLEXITY: &'static str = "O(1)";
    const ARGS: &'static [Arg] = &[];
    const SINCE: &'static str = "0.2.0";

    fn run(ctx: Ctx, key: RStr, a: Args) -> CmdResult {
        a.finish()?;
        let waiters = txn::waiters(ctx, key) as i64;
        txn::read::<Alloc, _>(ctx, key, |s, now| {
            let count = |f: fn(&Alloc, u64) -> usize| s.map_or(0, |s| f(s, now) as i64);
            Reply::Map(vec![
                ("instances", Reply::Int(count(|s, _| s.instance_count()))),
                ("available", Reply::Int(count(Alloc::available_at))),
                ("heartbeats", Reply::Int(count(Alloc::heartbeats_at))),
                ("allocations", Reply::Int(count(|s, _| s.job_count()))),
                ("waiters", Reply::Int(waiters)),
            ])
        })
    }
}
