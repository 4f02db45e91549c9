//! The run's fingerprint: a rolling hash of every scheduling decision, PDU and filesystem
//! call. Two runs of one seed on one build must end with the same hash, bit for bit.

/// Virtual time as trace lines print it: seconds with nanosecond digits, `0.000123456s`.
pub fn vtime(d: std::time::Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// FNV-1a, 64-bit: tiny, stable across platforms and Rust versions, no dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    hash: u64,
    events: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }
}

impl Trace {
    /// Folds one event (a kind byte and its payload) into the hash.
    pub fn record(&mut self, kind: u8, payload: &[u8]) {
        self.events += 1;
        self.mix(&[kind]);
        self.mix(&(payload.len() as u32).to_le_bytes());
        self.mix(payload);
    }

    fn mix(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let mut a = Trace::default();
        a.record(1, b"x");
        a.record(2, b"y");
        let mut b = Trace::default();
        b.record(2, b"y");
        b.record(1, b"x");
        assert_ne!(a.hash(), b.hash());
        let mut c = Trace::default();
        c.record(1, b"x");
        c.record(2, b"y");
        assert_eq!(a, c);
        // Framing: ("ab","") differs from ("a","b").
        let mut d = Trace::default();
        d.record(1, b"ab");
        d.record(1, b"");
        let mut e = Trace::default();
        e.record(1, b"a");
        e.record(1, b"b");
        assert_ne!(d.hash(), e.hash());
    }
}
