//! How the engine names a key anywhere in the server: its db (4 bytes, little endian) followed by
//! its name. The scheduler and the wait queues index keys this way.

use std::rc::Rc;

use smallvec::SmallVec;

/// A key's db and name, shared (`Rc`) because the schedule and the wait queues index it twice.
pub type KeyRef = Rc<[u8]>;

/// The bytes of a KeyRef, built on the stack for lookups (no allocation for names ≤ 60 bytes).
pub type KeyBytes = SmallVec<[u8; 64]>;

pub fn key_bytes(db: i32, name: &[u8]) -> KeyBytes {
    let mut v = SmallVec::with_capacity(4 + name.len());
    v.extend_from_slice(&db.to_le_bytes());
    v.extend_from_slice(name);
    v
}

pub fn split_key(k: &[u8]) -> Option<(i32, &[u8])> {
    let (db, name) = k.split_first_chunk::<4>()?;
    Some((i32::from_le_bytes(*db), name))
}

/// The db of a key.
pub fn db_of(k: &[u8]) -> Option<i32> {
    split_key(k).map(|(db, _)| db)
}
