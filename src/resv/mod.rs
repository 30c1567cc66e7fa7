//! RESV — expiring exclusive reservations (locks) with heartbeat, fencing and waiting
//! (replaces redis-reservation).

pub mod commands;
pub mod core;

pub use self::core::Resv;
