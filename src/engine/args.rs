//! The one argument parser every corral command uses. Pure: it works on byte slices, so it is
//! unit-tested and fuzzed without a server. Errors name the argument and the expected form.

use super::ffi::Error;

/// The longest lease or wait: 2^40 ms (about 35 years). Keeps deadlines far from overflow.
pub const MAX_MS: u64 = 1 << 40;

/// Arguments after the command name, consumed left to right.
pub struct Args<'a> {
    items: &'a [&'a [u8]],
    pos: usize,
    command: &'static str,
    /// The option keyword just read, until its value is: a missing value is named after it.
    option_awaiting_value: Option<&'static str>,
}

impl<'a> Args<'a> {
    /// `items` excludes the command name; `command` is used in messages (e.g. "RESV.LOCK").
    pub fn new(command: &'static str, items: &'a [&'a [u8]]) -> Self {
        Self {
            items,
            pos: 0,
            command,
            option_awaiting_value: None,
        }
    }

    pub fn remaining(&self) -> usize {
        self.items.len() - self.pos
    }

    /// The next argument, whatever its bytes (holders and values are binary-safe).
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let option = self.option_awaiting_value.take();
        let Some(item) = self.items.get(self.pos) else {
            return Err(match option {
                Some(name) => Error::msg(format!(
                    "ERR option {name} of {} needs a value",
                    self.command
                )),
                None => Error::Arity,
            });
        };
        self.pos += 1;
        Ok(item)
    }

    /// A holder/worker/instance id: any bytes but the empty string.
    pub fn id(&mut self, what: &str) -> Result<&'a [u8], Error> {
        let b = self.bytes()?;
        if b.is_empty() {
            return Err(Error::msg(format!("ERR invalid {what}: must not be empty")));
        }
        Ok(b)
    }

    /// A lease duration: integer milliseconds, 1 ≤ ms ≤ 2^40.
    pub fn ttl(&mut self) -> Result<u64, Error> {
        let b = self.bytes()?;
        match parse_u64(b) {
            Some(ms) if (1..=MAX_MS).contains(&ms) => Ok(ms),
            _ => Err(Error::msg(format!(
                "ERR invalid TTL '{}': expected integer milliseconds from 1 to {MAX_MS}",
                show(b)
            ))),
        }
    }

    /// A BLOCK timeout: integer milliseconds, 0 (wait forever) ≤ ms ≤ 2^40.
    pub fn block_ms(&mut self) -> Result<u64, Error> {
        let b = self.bytes()?;
        match parse_u64(b) {
            Some(ms) if ms <= MAX_MS => Ok(ms),
            _ => Err(Error::msg(format!(
                "ERR invalid BLOCK timeout '{}': expected integer milliseconds from 0 (forever) to {MAX_MS}",
                show(b)
            ))),
        }
    }

    /// A fencing token: tokens are integers from 1 to 2^63-1 in every family.
    pub fn token(&mut self) -> Result<u64, Error> {
        self.uint("token", 1, i64::MAX as u64)
    }

    /// A non-negative integer named `what` in `min..=max`.
    pub fn uint(&mut self, what: &str, min: u64, max: u64) -> Result<u64, Error> {
        let b = self.bytes()?;
        match parse_u64(b) {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(Error::msg(format!(
                "ERR invalid {what} '{}': expected an integer from {min} to {max}",
                show(b)
            ))),
        }
    }

    /// The next option keyword, if any, matched case-insensitively against `known`.
    /// Unknown words are an error naming the word and the command.
    pub fn option(&mut self, known: &[&'static str]) -> Result<Option<&'static str>, Error> {
        let Some(word) = self.items.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let found = known
            .iter()
            .find(|k| k.as_bytes().eq_ignore_ascii_case(word))
            .copied();
        self.option_awaiting_value = found;
        found.map(Some).ok_or_else(|| {
            Error::msg(format!(
                "ERR unknown option '{}' for {} (expected one of: {})",
                show(word),
                self.command,
                known.join(", ")
            ))
        })
    }

    /// Fails unless every argument was consumed.
    pub fn finish(&self) -> Result<(), Error> {
        match self.items.get(self.pos) {
            None => Ok(()),
            Some(extra) => Err(Error::msg(format!(
                "ERR unexpected argument '{}' for {}",
                show(extra),
                self.command
            ))),
        }
    }
}

/// Rejects an option given twice (e.g. `BLOCK 1 BLOCK 2`).
pub fn once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::msg(format!(
            "ERR option {name} given more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

/// Strict decimal: digits only, no sign, no spaces, no overflow.
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// An argument as it can appear in an error message: printable ASCII kept, other bytes escaped,
/// long arguments cut (a 1 MB argument must not become a 4 MB error).
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 40;
    let mut s = String::new();
    for &c in b.iter().take(MAX) {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if b.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(v: &'a [&'a [u8]]) -> Args<'a> {
        Args::new("T.CMD", v)
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(args(&[b"1"]).ttl(), Ok(1));
        assert_eq!(args(&[b"1099511627776"]).ttl(), Ok(MAX_MS));
        for bad in [
            &b"0"[..],
            b"-1",
            b"1099511627777",
            b"1.5",
            b"",
            b" 1",
            b"+1",
            b"99999999999999999999999",
            b"1\0",
        ] {
            let e = args(&[bad]).ttl().unwrap_err();
            assert!(
                matches!(&e, Error::Msg(m) if m.starts_with("ERR invalid TTL")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn block_accepts_zero() {
        assert_eq!(args(&[b"0"]).block_ms(), Ok(0));
        assert!(args(&[b"-5"]).block_ms().is_err());
    }

    #[test]
    fn missing_is_arity() {
        assert_eq!(args(&[]).bytes(), Err(Error::Arity));
        assert_eq!(args(&[]).ttl(), Err(Error::Arity));
    }

    #[test]
    fn options_case_insensitive_and_unknown_named() {
        let v: [&[u8]; 2] = [b"block", b"\xffjunk"];
        let mut a = args(&v);
        assert_eq!(a.option(&["BLOCK"]), Ok(Some("BLOCK")));
        let e = a.option(&["BLOCK"]).unwrap_err();
        assert!(matches!(&e, Error::Msg(m) if m.contains("\\xffjunk") && m.contains("T.CMD")));
        assert_eq!(args(&[]).option(&["BLOCK"]), Ok(None));
    }

    #[test]
    fn a_missing_option_value_is_named() {
        let v: [&[u8]; 1] = [b"permits"];
        let mut a = args(&v);
        assert_eq!(a.option(&["PERMITS"]), Ok(Some("PERMITS")));
        let e = a.uint("PERMITS", 1, 10).unwrap_err();
        assert_eq!(
            e,
            Error::msg("ERR option PERMITS of T.CMD needs a value".to_string())
        );
        // A flag (no value) followed by the end is fine; a later missing argument is arity.
        let v: [&[u8]; 1] = [b"permits"];
        let mut a = args(&v);
        assert_eq!(a.option(&["PERMITS"]), Ok(Some("PERMITS")));
        assert_eq!(a.option(&["PERMITS"]), Ok(None));
        let mut a = args(&[]);
        assert_eq!(a.bytes(), Err(Error::Arity));
    }

    #[test]
    fn finish_rejects_extra() {
        let v: [&[u8]; 1] = [b"x"];
        assert!(args(&v).finish().is_err());
        assert!(args(&[]).finish().is_ok());
    }

    #[test]
    fn show_escapes_and_cuts() {
        assert_eq!(show(b"a\r\nb"), "a\\x0d\\x0ab");
        assert!(show(&[b'x'; 1000]).chars().count() <= 41);
    }

    #[test]
    fn parse_u64_model() {
        // Agrees with std's parser on every plain decimal string of small length.
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(parse_u64(n.to_string().as_bytes()), Some(n));
        }
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }
}
