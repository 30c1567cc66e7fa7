//! Test-only helpers shared by the unit and model tests of every module.

/// A deterministic pseudo-random generator (xorshift64) for model tests, so they need no crate
/// and repeat exactly: `rnd(n)` is a number below `n`. `seed` must not be 0.
pub fn rnd(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut next = raw(seed);
    move |n| next() % n
}

/// The generator's raw 64-bit outputs.
pub fn raw(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
