//! The lease engine shared by every family: server-clock deadlines, fencing tokens, FIFO waits
//! for blocked clients, the deadline scheduler, effect replication, persistence, keyspace
//! notifications, INFO counters, argument parsing and panic containment.
//!
//! # Reading it, bottom up
//!
//! Each layer imports only the ones below it: no module imports one above it, and the pure
//! layers are unit- and model-tested without Redis.
//!
//! 1. `ffi` — every raw `RedisModule_*` call, behind small safe wrappers. Imports nothing of the
//!    engine.
//! 2. Pure pieces: `family` (the list of families), `keys` (how a key is named server-wide),
//!    `args` (the argument parser), `tokens` (fencing tokens), `deadlines` (maps ordered by
//!    deadline), `queues` (the wait queues, generic over the waiter), `codec` (the one binary
//!    encoding), `cluster` (who serves a slot).
//! 3. `primitive` — the contract a family implements, and `decide`, the engine's one rule for
//!    granting (a holder's re-grant first; a new grant only to the first in line).
//! 4. `state` — the process-wide engine state (token mint, counters, schedule, wait queues,
//!    registered families) and `contain`, the panic wall around every entry point.
//! 5. `waiters` (blocking and unblocking clients), `scheduler` (the deadline timer),
//!    `datatype` (RDB, AOF rewrite, digest, memory, copy, free — once, generically).
//! 6. `txn` — one change to one key: open, settle what is due, decide, apply, serve waiters,
//!    replicate, store, schedule. Everything that changes a key goes through it.
//! 7. `events` (Redis's keyspace/server events → scheduler work), `command` (registration and
//!    the trampoline every command runs through), and this file (loading, `CORRAL._APPLY`,
//!    `INFO corral`).
//!
//! # Writing a sixth family (say, a rate limiter)
//!
//! 1. Add its variant to `families!` in `family.rs` (`Rate => "rate",`). INFO counters, data
//!    types and notification names are sized from that list; `fuzz.rs`'s dispatch has no
//!    fallback arm, so the compiler shows you where the fuzzers need it.
//! 2. Make a folder `src/rate/` with a pure core: a value type implementing [`Primitive`] —
//!    `apply` (the only way state changes; deterministic, since replicas and the AOF replay the
//!    same effects), `grant` (what a request gets when it is first in line: just "does it fit
//!    now?" — the engine owns the queue, so a family cannot break FIFO), `regrant` if a holder
//!    may ask again for what it holds, `lapse`/`next_deadline` for anything that falls due,
//!    `expires_at` (the key's PTTL), `rebuild` (effects that recreate the value: AOF rewrite),
//!    `mem_usage`. Unit-test it without Redis.
//! 3. Beside it, a `commands.rs`: one [`Command`] per command — its name, flags, documented
//!    arguments (the arity is derived from them) — whose `run` parses with [`Args`] and calls
//!    `txn::read`, `txn::write`, `txn::acquire` (may wait) or `txn::wait` (a wait that changes
//!    nothing).
//! 4. Add its line to `FAMILIES` in `lib.rs`. `init` checks the table (each family once, names
//!    well formed) before it registers anything.
//!
//! `src/toy/` is such a family in a hundred lines, built in test builds only, with unit tests
//! that go through the same table.

pub mod args;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod datatype;
pub mod deadlines;
pub mod events;
pub mod family;
pub mod ffi;
pub mod keys;
pub mod primitive;
pub mod queues;
pub mod scheduler;
pub mod state;
#[cfg(test)]
pub mod testing;
pub mod tokens;
pub mod txn;
pub mod waiters;

use std::ffi::c_int;
use std::marker::PhantomData;

pub use args::Args;
pub use command::{command, Arg, Command, CommandDef};
pub use ffi::{CmdResult, Ctx, Error, RStr, Reply};
pub use primitive::{decide, Effect, Effects, Event, Family, Primitive};
pub use state::contain;

/// A family as `lib.rs` lists it: its value type (data type and engine operations) and its
/// commands. Built by [`family`].
pub struct FamilyDef {
    pub family: Family,
    pub type_name: &'static str,
    pub commands: &'static [CommandDef],
    register: fn(Ctx) -> Result<(), String>,
}

/// The definition of family `F` with its command table.
pub const fn family<F: Primitive>(commands: &'static [CommandDef]) -> FamilyDef {
    FamilyDef {
        family: F::FAMILY,
        type_name: F::TYPE_NAME,
        commands,
        register: register_type::<F>,
    }
}

fn register_type<F: Primitive>(ctx: Ctx) -> Result<(), String> {
    datatype::create::<F>(ctx)?;
    let ops: &'static dyn state::FamilyOps = Box::leak(Box::new(txn::Ops::<F>(PhantomData)));
    state::with(|e| e.families.push(ops));
    Ok(())
}

/// Checks a family table before anything is registered (a mistake here must refuse to load,
/// not panic inside `OnLoad`, which would abort the server): every `Family` listed exactly once,
/// data type names of 9 characters and distinct, commands named `<FAMILY>.<NAME>` and distinct.
pub fn check_families(families: &[FamilyDef]) -> Result<(), String> {
    for f in Family::ALL {
        let n = families.iter().filter(|d| d.family == *f).count();
        if n != 1 {
            return Err(format!("family {} is listed {n} times", f.name()));
        }
    }
    let mut types: Vec<&str> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for d in families {
        if d.type_name.len() != 9 || types.contains(&d.type_name) {
            return Err(format!("bad or repeated data type name {:?}", d.type_name));
        }
        types.push(d.type_name);
        let prefix = format!("{}.", d.family.name().to_ascii_uppercase());
        for c in d.commands {
            if !c.name().starts_with(&prefix) || names.contains(&c.name()) {
                return Err(format!("bad or repeated command name {}", c.name()));
            }
            names.push(c.name());
        }
    }
    Ok(())
}

/// Loads corral: the engine's own command, events and INFO section, then each family's data
/// type and commands. Called once from `RedisModule_OnLoad`.
pub fn init(ctx: Ctx, families: &[FamilyDef]) -> Result<(), String> {
    check_families(families)?;
    ffi::check_api().map_err(|f| format!("this server lacks {f} (corral needs Redis ≥ 7.0)"))?;
    command::create_acl_category(ctx);
    state::with(|e| e.arm_scheduler = scheduler::arm);
    command::register(ctx, &[command::<Apply>()])?;
    for f in families {
        (f.register)(ctx)?;
        command::register(ctx, f.commands)?;
    }
    if !events::subscribe(ctx) {
        return Err("could not subscribe to keyspace/server events".into());
    }
    ffi::register_info(ctx, on_info);
    if !ctx.is_primary() || ffi::has_replication_stream(ctx) {
        // Loaded on a replica, or by MODULE LOAD on a primary that already has replicas or a
        // backlog: effects must be propagated from the first command.
        state::note_replication();
    }
    Ok(())
}

/// `CORRAL._APPLY key payload`: applies an effect batch. This is what replicas and the AOF
/// receive instead of the commands clients sent.
///
/// It can set any state (any holder, token or deadline), so it is not a door: it runs only
/// when the server itself replays effects — from the replication link, or from the AOF while
/// loading. Any client (the default user with `+@all` too, in MULTI or a script) is refused
/// before its payload is even read.
pub struct Apply;

impl Command for Apply {
    const NAME: &'static str = "CORRAL._APPLY";
    const FLAGS: &'static str = "write deny-oom";
    const INTERNAL: bool = true;
    const SUMMARY: &'static str =
        "Internal: applies replicated corral effects to a key (replication link and AOF only)";
    const COMPLEXITY: &'static str = "O(effects)";
    const ARGS: &'static [Arg] = &[Arg::Str("payload")];

    fn run(ctx: Ctx, key: RStr, mut args: Args) -> CmdResult {
        if !replayed_by_server(ctx) {
            return Err(Error::msg(
                "ERR CORRAL._APPLY is internal: only the replication link and AOF loading may run it",
            ));
        }
        let payload = args.bytes()?;
        args.finish()?;
        let (family, effects) = codec::split_effects(payload)
            .ok_or_else(|| Error::msg("ERR CORRAL._APPLY: malformed payload"))?;
        let ops = state::with(|e| e.family(family))
            .ok_or_else(|| Error::msg("ERR CORRAL._APPLY: unknown family"))?;
        ops.apply_replicated(ctx, key, effects)
    }
}

/// True when the running command is the server replaying effects: sent by this replica's
/// primary over the replication link, or read from the AOF by the loader (whose fake client
/// has a reserved id; checking it, not only the loading flag, keeps out clients that a
/// replica serves while it loads a full sync in the background).
fn replayed_by_server(ctx: Ctx) -> bool {
    let flags = ctx.flags();
    flags.from_primary_link() || (flags.is_loading() && ctx.client_id() == ffi::AOF_CLIENT_ID)
}

unsafe extern "C" fn on_info(ctx: *mut ffi::raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let _ = contain("info", || {
        let (rows, panics, scheduled, highest) = state::with(|e| {
            let rows: Vec<_> = e
                .families
                .iter()
                .map(|f| (f.family(), e.counters[f.family().index()]))
                .collect();
            (rows, e.contained_panics, e.schedule.len(), e.mint.highest())
        });
        let mut fields: Vec<(String, u64)> = Vec::new();
        for (family, c) in rows {
            let n = family.name();
            for (field, v) in [
                ("grants", c.grants),
                ("renewals", c.renewals),
                ("releases", c.releases),
                ("lapses", c.lapses),
                ("waits", c.waits),
                ("timeouts", c.timeouts),
                ("waiting", c.waiting),
            ] {
                fields.push((format!("{n}_{field}"), v));
            }
        }
        fields.push(("scheduled_keys".into(), scheduled as u64));
        fields.push(("highest_token".into(), highest));
        fields.push(("contained_panics".into(), panics));
        // SAFETY: ctx is the info callback's context.
        unsafe { ffi::info_section(ctx, &fields) };
    });
}
