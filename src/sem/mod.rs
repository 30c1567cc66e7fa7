//! SEM — counting semaphores whose permits expire (replaces @eqworks/passbuddy, and what users
//! of redis-semaphore need): holders ordered by expiry, fair FIFO waiting, fencing tokens.

pub mod commands;
pub mod core;

pub use self::core::Sem;
