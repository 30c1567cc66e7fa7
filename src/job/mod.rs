//! JOB — a job store (replaces fs-job-store): jobs are created pending, workers pull one under
//! an exclusive, fenced work lease and fulfil it with a value, and notification workers pull the
//! value with the targets queued on the job under a notification lease.

pub mod commands;
pub mod core;

pub use self::core::Jobs;
