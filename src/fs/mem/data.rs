//! Regular-file contents: a sparse array of 4 KiB pages.
//!
//! Holes (ranges never written, or left by extending with `truncate`) own no memory and
//! read as zeros, so a guest that sets a file's size to 1 GiB costs nothing until it writes.
//! Only allocated pages count against the filesystem's capacity.

use std::collections::BTreeMap;
use std::io::IoSliceMut;

/// Bytes per page, and the unit capacity is charged in.
pub(crate) const PAGE: u64 = 4096;
const PAGE_USIZE: usize = PAGE as usize;

#[derive(Debug, Default)]
pub(crate) struct Data {
    size: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Data {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pages holding memory.
    pub fn pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Copies bytes from `offset` into `buf` up to end of file; returns how many.
    #[cfg(test)]
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        self.read_vectored(offset, &mut [IoSliceMut::new(buf)])
    }

    /// Copies bytes from `offset` into `bufs` in turn, up to end of file; returns how many.
    /// One walk over the allocated pages in range, whatever the number of buffers (a
    /// virtio read brings one per guest page): a bulk read is a run of page copies, with
    /// holes zero-filled between them.
    pub fn read_vectored(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> usize {
        if offset >= self.size {
            return 0;
        }
        let room: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let n = (self.size - offset).min(room);
        let end = offset + n;
        // `page` is always the first allocated page at or after `pos`.
        let mut pages = self.pages.range(offset / PAGE..end.div_ceil(PAGE));
        let mut page = pages.next();
        let mut pos = offset;
        for buf in bufs.iter_mut() {
            if pos == end {
                break;
            }
            let want = (buf.len() as u64).min(end - pos) as usize;
            let mut dst: &mut [u8] = &mut buf[..want];
            while !dst.is_empty() {
                let within = (pos % PAGE) as usize;
                let k = (PAGE_USIZE - within).min(dst.len());
                let (chunk, rest) = std::mem::take(&mut dst).split_at_mut(k);
                match page {
                    Some((&idx, p)) if idx == pos / PAGE => {
                        chunk.copy_from_slice(&p[within..within + k]);
                        if within + k == PAGE_USIZE {
                            page = pages.next();
                        }
                    }
                    // A hole.
                    _ => chunk.fill(0),
                }
                dst = rest;
                pos += k as u64;
            }
        }
        n as usize
    }

    /// How many pages writing `len` bytes at `offset` would allocate.
    pub fn new_pages(&self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let first = offset / PAGE;
        let last = (offset + len - 1) / PAGE;
        (last - first + 1) - self.pages.range(first..=last).count() as u64
    }

    /// Writes `data` at `offset`, extending the file (the gap reads as zeros). The caller
    /// has checked limits and that `offset + data.len()` does not overflow.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let within = (pos % PAGE) as usize;
            let take = (PAGE_USIZE - within).min(data.len() - done);
            let page = self
                .pages
                .entry(pos / PAGE)
                .or_insert_with(|| vec![0; PAGE_USIZE].into_boxed_slice());
            page[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the size; returns how many pages were freed. Shrinking zeroes the cut-off tail
    /// of the last page, so extending again reads zeros there.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let mut freed = 0;
        if size < self.size {
            freed = self.pages.split_off(&size.div_ceil(PAGE)).len() as u64;
            let within = (size % PAGE) as usize;
            if within != 0
                && let Some(page) = self.pages.get_mut(&(size / PAGE))
            {
                page[within..].fill(0);
            }
        }
        self.size = size;
        freed
    }

    /// A hash of the contents (FNV-1a over size and non-zero pages): equal contents give
    /// equal hashes however the file was written.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::default();
        h.eat(&self.size.to_le_bytes());
        for (idx, page) in &self.pages {
            if page.iter().any(|&b| b != 0) {
                h.eat(&idx.to_le_bytes());
                h.eat(page);
            }
        }
        h.0
    }
}

/// 64-bit FNV-1a: small, stable across builds and platforms.
pub(crate) struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv::default();
        h.eat(bytes);
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_read_as_zeros_and_cost_nothing() {
        let mut d = Data::default();
        d.write(10_000, b"xyz");
        assert_eq!(d.size(), 10_003);
        assert_eq!(d.pages(), 1);
        let mut buf = vec![1; 10_010];
        assert_eq!(d.read(0, &mut buf), 10_003);
        assert!(buf[..10_000].iter().all(|&b| b == 0));
        assert_eq!(&buf[10_000..10_003], b"xyz");
    }

    proptest::proptest! {
        /// Sparse pages read exactly like a flat byte array, whatever the writes, the
        /// truncations and the range read, into one buffer or many.
        #[test]
        fn reads_match_a_flat_model(
            ops in proptest::collection::vec((0u64..40_000, 0usize..9000, proptest::prelude::any::<u8>(), proptest::prelude::any::<bool>()), 1..12),
            at in 0u64..45_000,
            len in 0usize..20_000,
        ) {
            let (mut d, mut flat) = (Data::default(), Vec::<u8>::new());
            for (off, n, byte, truncate) in ops {
                if truncate {
                    d.truncate(off);
                    flat.resize(off as usize, 0);
                } else {
                    d.write(off, &vec![byte; n]);
                    let end = off as usize + n;
                    if flat.len() < end {
                        flat.resize(end, 0);
                    }
                    flat[off as usize..end].fill(byte);
                }
            }
            let mut buf = vec![0xee; len];
            let n = d.read(at, &mut buf);
            let want = flat.get(at as usize..).map_or(&[][..], |t| &t[..t.len().min(len)]);
            proptest::prop_assert_eq!(&buf[..n], want);
            // The same read into pieces of odd sizes.
            let mut pieces = vec![0xeeu8; len];
            let mut rest = &mut pieces[..];
            let mut bufs = Vec::new();
            while !rest.is_empty() {
                let (a, b) = rest.split_at_mut(rest.len().min(1 + (at as usize % 5000)));
                bufs.push(IoSliceMut::new(a));
                rest = b;
            }
            proptest::prop_assert_eq!(d.read_vectored(at, &mut bufs), n);
            proptest::prop_assert_eq!(&pieces[..n], want);
        }
    }

    #[test]
    fn shrink_then_grow_reads_zeros() {
        let mut d = Data::default();
        d.write(0, &[7; 5000]);
        assert_eq!(d.new_pages(0, 5000), 0);
        assert_eq!(d.new_pages(4000, 5000), 1);
        assert_eq!(d.truncate(100), 1);
        d.truncate(5000);
        let mut buf = vec![9; 5000];
        assert_eq!(d.read(0, &mut buf), 5000);
        assert!(buf[..100].iter().all(|&b| b == 7));
        assert!(buf[100..].iter().all(|&b| b == 0));
    }
}
