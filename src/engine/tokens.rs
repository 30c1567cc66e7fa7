//! Fencing tokens: 64-bit, strictly increasing per key for the life of the key *and* across the
//! key's deletion and re-creation, restarts, replication and failover.
//!
//! A token is `max(highest token this server has seen + 1, key's last token + 1, now in ticks)`,
//! where a tick is 1/1024 ms (`ticks_at(now_us)` = now_us × 1024 / 1000: the clock read to the
//! microsecond, on the scale tokens have always had, `now_ms × 1024`).
//! - "highest seen" covers deletion and re-creation within one process lifetime; replicas raise it
//!   from every token they apply, so a promoted replica continues above its old primary.
//! - the key's own last token survives RDB, AOF and replication with the key.
//! - the clock covers a key re-created after a restart: it exceeds every token issued before
//!   unless the server issued more than one token per tick on average (it cannot come close) or
//!   its clock stepped backwards across the restart. It also orders tokens that two nodes issue
//!   for one key without having seen each other's: a key deleted on one node and re-created on
//!   another after its slot moved, or both sides of a `CLUSTER FAILOVER FORCE` granting for a
//!   moment. Read to the microsecond (with the nodes' clocks in sync), two such grants a few
//!   microseconds apart are ordered and never equal; at millisecond resolution, two grants in
//!   the same millisecond could carry the same token.

use std::cell::Cell;

/// The clock in ticks (1/1024 ms) at `now_us` microseconds since the epoch.
pub fn ticks_at(now_us: u64) -> u64 {
    // × 1024 / 1000, without overflow for the next 200,000 years.
    now_us.saturating_mul(128) / 125
}

/// The server-wide high-water mark. Only the main thread touches it.
pub struct Mint {
    highest: Cell<u64>,
}

impl Mint {
    pub const fn new() -> Self {
        Self {
            highest: Cell::new(0),
        }
    }

    /// The token a grant on a key whose last token was `key_last` would carry at `now_ticks`
    /// ([`ticks_at`]). It is committed by `observe` once the grant is applied.
    pub fn peek(&self, now_ticks: u64, key_last: u64) -> u64 {
        next_token(self.highest.get(), key_last, now_ticks)
    }

    /// Peek and commit at once.
    pub fn issue(&self, now_ticks: u64, key_last: u64) -> u64 {
        let t = self.peek(now_ticks, key_last);
        self.observe(t);
        t
    }

    /// Records a token issued elsewhere (replicated, loaded from disk).
    pub fn observe(&self, token: u64) {
        if token > self.highest.get() {
            self.highest.set(token);
        }
    }

    pub fn highest(&self) -> u64 {
        self.highest.get()
    }
}

impl Default for Mint {
    fn default() -> Self {
        Self::new()
    }
}

/// The pure rule, separated for tests.
pub fn next_token(highest: u64, key_last: u64, now_ticks: u64) -> u64 {
    highest
        .saturating_add(1)
        .max(key_last.saturating_add(1))
        .max(now_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_under_any_clock() {
        let m = Mint::new();
        let mut last = 0;
        // Clock goes forward, stalls, and steps backwards: tokens still increase.
        for now in [5u64, 5, 5, 6, 3, 3, 100, 99, 100] {
            let t = m.issue(now, 0);
            assert!(t > last, "{t} after {last} at now={now}");
            last = t;
        }
    }

    #[test]
    fn key_last_wins_when_higher() {
        let m = Mint::new();
        assert_eq!(m.issue(1, 1_000_000), 1_000_001);
    }

    #[test]
    fn recreated_key_after_restart_is_above_old_tokens() {
        // Old process issued tokens at ms 1000; a new process (highest = 0) at ms 1001.
        let old = Mint::new();
        let mut t_old = 0;
        for _ in 0..1000 {
            t_old = old.issue(ticks_at(1_000_000), 0);
        }
        let new = Mint::new();
        assert!(new.issue(ticks_at(1_001_000), 0) > t_old);
    }

    #[test]
    fn ticks_keep_the_millisecond_scale_and_order_microseconds() {
        // The same scale as ever: a whole millisecond is 1024 ticks.
        assert_eq!(ticks_at(1_000), 1024);
        assert_eq!(ticks_at(1_838_541_927_861 * 1000), 1_838_541_927_861 * 1024);
        // Two nodes that have not seen each other's tokens, a few µs apart in one millisecond:
        // ordered, never equal.
        let (a, b) = (Mint::new(), Mint::new());
        let now = 1_838_541_927_861_000u64;
        let first = a.issue(ticks_at(now + 100), 0);
        let second = b.issue(ticks_at(now + 105), 0);
        assert!(second > first, "{second} after {first}");
        assert!(ticks_at(u64::MAX) > 0);
    }

    #[test]
    fn observe_raises_floor() {
        let m = Mint::new();
        m.observe(u64::MAX / 2);
        assert!(m.issue(0, 0) > u64::MAX / 2);
    }
}
