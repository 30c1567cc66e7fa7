//! One binary encoding (bincode) for everything corral stores or replicates: RDB values, and
//! the effect batches carried by `CORRAL._APPLY`. Decoding never trusts its input: a size
//! limit stops a forged length from allocating gigabytes, and errors become `None`.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

use super::family::Family;

/// No corral value or effect batch decodes to more than this (Redis's own bulk limit is 512 MB).
const DECODE_LIMIT: u64 = 1 << 30;

/// The internal command that carries effect batches to replicas and the AOF.
pub const APPLY_COMMAND: &std::ffi::CStr = c"CORRAL._APPLY";

/// Version of the effect-batch format inside `CORRAL._APPLY` payloads.
pub const EFFECTS_VERSION: u8 = 1;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(DECODE_LIMIT)
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing plain data structures into a Vec cannot fail; fall back to empty just in case.
    options().serialize(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    options().deserialize(bytes).ok()
}

/// `[family][EFFECTS_VERSION][bincode(effects)]`: the payload of `CORRAL._APPLY key payload`.
pub fn encode_effects<E: Serialize>(family: Family, effects: &[E]) -> Vec<u8> {
    let mut out = vec![family.index() as u8, EFFECTS_VERSION];
    out.extend_from_slice(&encode(effects));
    out
}

/// An effect batch encoded as it is applied (the same bytes `encode_effects` makes), so a
/// transaction keeps no copy of its effects. Records nothing but a count when nothing is
/// propagated.
pub struct EffectLog {
    buf: Vec<u8>,
    count: u64,
    recording: bool,
}

impl EffectLog {
    const HEADER: usize = 2;

    pub fn new(family: Family, recording: bool) -> Self {
        let buf = if recording {
            let mut b = vec![family.index() as u8, EFFECTS_VERSION];
            b.extend_from_slice(&0u64.to_le_bytes()); // the count, patched in `payload`
            b
        } else {
            Vec::new()
        };
        Self {
            buf,
            count: 0,
            recording,
        }
    }

    pub fn record<E: Serialize>(&mut self, effect: &E) {
        self.count += 1;
        if self.recording && options().serialize_into(&mut self.buf, effect).is_err() {
            // Plain data into a Vec cannot fail; if it did, replicas must not get a torn batch.
            self.recording = false;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `CORRAL._APPLY` payload, or None when nothing is to be propagated.
    pub fn payload(&mut self) -> Option<&[u8]> {
        if !self.recording || self.count == 0 {
            return None;
        }
        self.buf[Self::HEADER..Self::HEADER + 8].copy_from_slice(&self.count.to_le_bytes());
        Some(&self.buf)
    }
}

/// Splits a payload into its family and the encoded effects (decoded by the family's type).
pub fn split_effects(payload: &[u8]) -> Option<(Family, &[u8])> {
    match payload {
        [f, EFFECTS_VERSION, rest @ ..] => Some((Family::from_index(*f)?, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v: Vec<(u64, Vec<u8>)> = vec![(1, b"a\0b".to_vec()), (u64::MAX, vec![])];
        assert_eq!(decode::<Vec<(u64, Vec<u8>)>>(&encode(&v)), Some(v));
        // A forged huge length must fail, not allocate.
        let forged = [0xffu8; 16];
        assert_eq!(decode::<Vec<u8>>(&forged), None);
        assert_eq!(decode::<u64>(&[1, 2]), None);
    }

    #[test]
    fn effects_envelope() {
        let p = encode_effects(Family::Resv, &[7u64]);
        let (f, rest) = split_effects(&p).unwrap();
        assert_eq!(f, Family::Resv);
        assert_eq!(decode::<Vec<u64>>(rest), Some(vec![7]));
        assert!(split_effects(&[0, 99]).is_none());
        assert!(split_effects(&[42, EFFECTS_VERSION]).is_none());
        assert!(split_effects(&[]).is_none());
    }

    #[test]
    fn effect_log_encodes_like_a_batch() {
        let mut log = EffectLog::new(Family::Sem, true);
        for e in [1u64, 2, 3] {
            log.record(&e);
        }
        assert_eq!(
            log.payload().unwrap(),
            &encode_effects(Family::Sem, &[1u64, 2, 3])[..]
        );
        let mut quiet = EffectLog::new(Family::Sem, false);
        quiet.record(&1u64);
        assert!(!quiet.is_empty());
        assert!(quiet.payload().is_none());
    }
}
