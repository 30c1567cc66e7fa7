//! SLOT — lowest-free slot pools, optionally leased and bounded (replaces callosum-server-slots).

pub mod bitmap;
pub mod commands;
pub mod core;

pub use self::core::Pool;
