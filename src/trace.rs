//! W3C trace context (`traceparent`) for every request Atlas sends to a preview, so a slow or
//! failed request in the evidence names a trace the app itself recorded.
//!
//! The header is `00-<32 hex trace id>-<16 hex parent id>-01`: version 00, sampled. Ids come
//! from a small non-cryptographic generator (wyrand) seeded once from the OS: a trace id needs
//! to be unique, not secret, and the load generator draws one per request without a syscall.

/// The header's name.
pub const HEADER: &str = "traceparent";

/// The header value's length: `00-` + 32 + `-` + 16 + `-01`.
pub const LEN: usize = 55;

/// A value of the right shape, overwritten in place per request.
pub const PLACEHOLDER: &[u8; LEN] = b"00-00000000000000000000000000000000-0000000000000000-01";

/// A trace id: 16 bytes, shown as 32 lowercase hex digits. Never all zero (W3C: invalid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(pub u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl TraceId {
    /// The id of a `traceparent` value, if it is one of version 00.
    pub fn parse_header(value: &str) -> Option<TraceId> {
        let v = value.trim();
        let mut parts = v.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if parts.next().is_some()
            || version != "00"
            || !hex(trace, 32)
            || !hex(parent, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let id = u128::from_str_radix(trace, 16).ok()?;
        (id != 0 && u64::from_str_radix(parent, 16).ok()? != 0).then_some(TraceId(id))
    }
}

/// A generator of ids. One per task: it is plain state, no lock.
pub struct Ids {
    state: u64,
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

impl Ids {
    /// Seeded from the OS once (through `rand`'s thread-local generator).
    pub fn new() -> Ids {
        Ids {
            state: rand::random(),
        }
    }

    /// wyrand: one multiply per 64 bits, passes BigCrush; plenty for unique ids.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Writes a fresh `traceparent` value into `slot` (exactly [`LEN`] bytes, e.g. the
    /// placeholder inside a serialised request) and returns its trace id. No allocation.
    pub fn write(&mut self, slot: &mut [u8]) -> TraceId {
        debug_assert_eq!(slot.len(), LEN);
        let hi = self.next_u64();
        let mut lo = self.next_u64();
        if hi == 0 && lo == 0 {
            lo = 1;
        }
        let mut parent = self.next_u64();
        if parent == 0 {
            parent = 1;
        }
        slot[..3].copy_from_slice(b"00-");
        hex_into(&mut slot[3..19], hi);
        hex_into(&mut slot[19..35], lo);
        slot[35] = b'-';
        hex_into(&mut slot[36..52], parent);
        slot[52..].copy_from_slice(b"-01");
        TraceId(((hi as u128) << 64) | lo as u128)
    }

    /// A fresh header value and its trace id (for the checks and probes, which build a request
    /// per call anyway).
    pub fn header(&mut self) -> (String, TraceId) {
        let mut v = *PLACEHOLDER;
        let id = self.write(&mut v);
        // the slot holds ASCII only.
        (String::from_utf8_lossy(&v).into_owned(), id)
    }
}

/// `v` as 16 lowercase hex digits into `out` (16 bytes).
fn hex_into(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_w3c_shape_and_parse_back() {
        let mut ids = Ids::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (v, id) = ids.header();
            assert_eq!(v.len(), LEN);
            assert!(v.starts_with("00-") && v.ends_with("-01"), "{v}");
            assert_eq!(TraceId::parse_header(&v), Some(id), "{v}");
            assert_eq!(&v[3..35], id.to_string());
            assert!(seen.insert(id), "a repeated id: {id}");
        }
        // two generators do not share a sequence.
        let (a, _) = Ids::new().header();
        let (b, _) = Ids::new().header();
        assert_ne!(a, b);
    }

    #[test]
    fn malformed_values_are_not_ids() {
        for v in [
            "",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceId::parse_header(v), None, "{v}");
        }
        assert_eq!(
            TraceId::parse_header("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some(TraceId(0x0af7651916cd43dd8448eb211c80319c))
        );
    }
}
