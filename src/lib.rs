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

#[cfg(test)]
pub mod toy;

use engine::{family, Ctx, FamilyDef};
use redis_module::{Context, RedisString, Status};

/// Every family: its value type and its commands. A new family is a folder, a line here and its
/// variant in `engine/family.rs` (see the walkthrough at the top of `engine/mod.rs`).
pub const FAMILIES: &[FamilyDef] = &[
    family::<resv::Resv>(resv::commands::COMMANDS),
    family::<sem::Sem>(sem::commands::COMMANDS),
    family::<slot::Pool>(slot::commands::COMMANDS),
    family::<alloc::Alloc>(alloc::commands::COMMANDS),
    family::<job::Jobs>(job::commands::COMMANDS),
    #[cfg(test)]
    family::<toy::Toy>(toy::COMMANDS),
];

/// Registers the engine, then every family's data type and commands.
#[cfg_attr(any(test, feature = "fuzzing"), allow(dead_code))]
fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // SAFETY: the context Redis passed to RedisModule_OnLoad.
    let ctx = unsafe { Ctx::from_raw(ctx.ctx) };
    match engine::init(ctx, FAMILIES) {
        Ok(()) => Status::Ok,
        Err(e) => {
            ctx.log_warning(&format!("corral failed to load: {e}"));
            Status::Err
        }
    }
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
