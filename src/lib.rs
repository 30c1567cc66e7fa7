//! corral — coordination primitives as native Redis commands.
//!
//! This file is only the module table: the families, their commands, and the engine's hooks.
//! Start reading at `engine/mod.rs` (the shared lease engine), then any family folder.

pub mod alloc;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod job;
pub mod resv;
pub mod sem;
pub mod slot;

use engine::{Ctx, Primitive};
use redis_module::{Context, RedisString, Status};

/// Registers every family's data type and commands, then the engine's own hooks.
#[cfg_attr(any(test, feature = "fuzzing"), allow(dead_code))]
fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // SAFETY: the context Redis passed to RedisModule_OnLoad.
    let ctx = unsafe { Ctx::from_raw(ctx.ctx) };
    let result = engine::init(ctx)
        .and_then(|_| family::<resv::Resv>(ctx, resv::commands::COMMANDS))
        .and_then(|_| family::<sem::Sem>(ctx, sem::commands::COMMANDS))
        .and_then(|_| family::<slot::Pool>(ctx, slot::commands::COMMANDS))
        .and_then(|_| family::<alloc::Alloc>(ctx, alloc::commands::COMMANDS))
        .and_then(|_| family::<job::Jobs>(ctx, job::commands::COMMANDS));
    match result {
        Ok(()) => Status::Ok,
        Err(e) => {
            ctx.log_warning(&format!("corral failed to load: {e}"));
            Status::Err
        }
    }
}

#[cfg_attr(any(test, feature = "fuzzing"), allow(dead_code))]
fn family<F: Primitive>(ctx: Ctx, commands: &[engine::CommandDef]) -> Result<(), String> {
    engine::register_family::<F>(ctx)?;
    engine::command::register(ctx, commands)
}

// Unit tests run the pure cores with the system allocator; the module itself allocates through
// Redis (so MEMORY USAGE and maxmemory see corral's memory). The `fuzzing` feature does the same
// for an external program linking the rlib (scripts/fuzz): without it that program would get
// RedisAlloc as its global allocator and abort, since no Redis is there to allocate.
#[cfg(not(any(test, feature = "fuzzing")))]
redis_module::redis_module! {
    name: "corral",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
}
