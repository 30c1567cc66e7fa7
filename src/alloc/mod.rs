//! ALLOC — sticky job-to-instance allocation with atributo's semantics (replaces atributo's
//! SQLite/PostgreSQL tables): instances in allocation order, md5-based placement, heartbeat
//! availability, DRAIN waits.

pub mod commands;
pub mod core;

pub use self::core::Alloc;
