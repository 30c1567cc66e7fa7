//! JOB — a job store (replaces fs-job-store, and does what BullMQ, Sidekiq and SQS users expect
//! of a queue at the server): jobs are created pending (or delayed), workers pull the highest
//! priority, oldest one under an exclusive, fenced work lease and fulfil it with a value (or
//! fail it: bounded attempts with backoff, then the dead-letter state), and notification
//! workers pull the value with the targets queued on the job under a notification lease.
//!
//! The pure core, by concern: `record` (one job's data), `pullable` (pull order), `timed`
//! (delays and retention), `leases` (work and notification leases), `core` (the state machine:
//! decisions and effects), `store` (the engine's `Primitive`: persistence, rebuild, memory).
//! `commands` is the Redis side.

pub mod commands;
pub mod core;
pub mod leases;
pub mod pullable;
pub mod record;
pub mod store;
pub mod timed;

#[cfg(test)]
mod tests;

pub use self::core::Jobs;
