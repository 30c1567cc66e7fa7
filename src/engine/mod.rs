//! The lease engine shared by every family: server-clock deadlines, fencing tokens, FIFO waits
//! for blocked clients, the deadline scheduler, effect replication, persistence, keyspace
//! notifications, INFO counters, argument parsing and panic containment.
//!
//! A family implements `Primitive` (pure state + decisions) and a table of `Command`s that
//! parse arguments and call `txn::{read, write, acquire}`. Everything else is here.

pub mod args;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod datatype;
pub mod deadlines;
pub mod events;
pub mod ffi;
pub mod primitive;
pub mod scheduler;
pub mod state;
pub mod tokens;
pub mod txn;
pub mod waiters;

use std::ffi::c_int;

pub use args::Args;
pub use command::{command, Arg, Command, CommandDef};
pub use ffi::{CmdResult, Ctx, Error, RStr, Reply};
pub use primitive::{decide, Effect, Effects, Event, Family, Primitive};

/// Runs `f`, turning a panic into `None` (logged, counted) instead of unwinding into Redis,
/// which would abort the server.
pub fn contain<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            ffi::log(
                None,
                c"warning",
                &format!("corral: contained a panic in {what}: {msg}"),
            );
            // The engine state may be mid-borrow if the panic came from inside `state::with`;
            // try_with avoids a second panic in that case.
            state::try_with(|e| e.contained_panics += 1);
            None
        }
    }
}

/// Registers a family: its data type and its engine operations.
pub fn register_family<F: Primitive>(ctx: Ctx) -> Result<(), String> {
    datatype::create::<F>(ctx)?;
    state::with(|e| e.families.push(static_ops::<F>()));
    Ok(())
}

fn static_ops<F: Primitive>() -> &'static dyn state::FamilyOps {
    Box::leak(Box::new(txn::Ops::<F>(std::marker::PhantomData)))
}

/// Everything the engine itself registers: the `CORRAL._APPLY` command, keyspace and server
/// event subscriptions, and the `INFO corral` section.
pub fn init(ctx: Ctx) -> Result<(), String> {
    ffi::check_api().map_err(|f| format!("this server lacks {f} (corral needs Redis ≥ 7.0)"))?;
    command::create_acl_category(ctx);
    command::register(ctx, &[command::<Apply>()])?;
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
    const ARITY: i32 = 3;
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
