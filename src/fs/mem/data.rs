//! Regular-file contents: sparse, stored as runs of contiguous 4 KiB pages.
//!
//! Holes (ranges never written, or left by extending with `truncate`) own no memory and
//! read as zeros, so a guest that sets a file's size to 1 GiB costs nothing until it writes.
//! Only allocated pages count against the filesystem's capacity.
//!
//! Allocated pages are kept in runs of up to 1 MiB of contiguous memory rather than one
//! allocation per page: a write that continues a run extends it, so a file written in order
//! (the usual way) is a few long runs, and a bulk read is a few long copies. Copying 1 MiB
//! out of 256 separately allocated pages took about 20 % longer than one contiguous copy,
//! which is most of what separated a virtio read from a plain memcpy. A run's memory grows by
//! a quarter at a time, so it holds at most a quarter more than the pages it counts (the
//! capacity limit stays a bound on memory).

use std::collections::BTreeMap;
use std::io::IoSliceMut;

/// Bytes per page, and the unit capacity is charged in.
pub(crate) const PAGE: u64 = 4096;
const PAGE_USIZE: usize = PAGE as usize;
/// The longest run, in pages: a run is never reallocated past 1 MiB.
const MAX_RUN: u64 = 256;

#[derive(Debug, Default)]
pub(crate) struct Data {
    size: u64,
    /// First page index → the bytes of that page and the pages after it (a whole number
    /// of pages, at most `MAX_RUN`). Runs never overlap; they may touch.
    runs: BTreeMap<u64, Vec<u8>>,
    /// Pages in all runs.
    pages: u64,
}

/// The most memory a run of `len` bytes may hold: a quarter more, and part of a page.
fn slack(len: usize) -> usize {
    len + len / 4 + PAGE_USIZE
}

/// The pages a run covers.
fn span(bytes: &[u8]) -> u64 {
    bytes.len() as u64 / PAGE
}

impl Data {
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Pages holding memory.
    pub(super) fn pages(&self) -> u64 {
        self.pages
    }

    /// Copies bytes from `offset` into `buf` up to end of file; returns how many.
    #[cfg(test)]
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        self.read_vectored(offset, &mut [IoSliceMut::new(buf)])
    }

    /// The run holding page `page`, as (its first page, its bytes), if any.
    fn run_at(&self, page: u64) -> Option<(u64, &Vec<u8>)> {
        let (&first, run) = self.runs.range(..=page).next_back()?;
        (first + span(run) > page).then_some((first, run))
    }

    /// Copies bytes from `offset` into `bufs` in turn, up to end of file; returns how many.
    /// One walk over the runs in range, whatever the number of buffers (a virtio read
    /// brings one per guest page): a bulk read is one copy per run and buffer, with holes
    /// zero-filled between them.
    pub(super) fn read_vectored(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> usize {
        if offset >= self.size {
            return 0;
        }
        let room: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let n = (self.size - offset).min(room);
        let end = offset + n;
        // The runs in range, in order: the one holding `offset` (if any), then the others.
        let first_page = offset / PAGE;
        let from = self
            .run_at(first_page)
            .map_or(first_page, |(first, _)| first);
        let mut runs = self.runs.range(from..end.div_ceil(PAGE));
        let mut run = runs.next();
        let mut pos = offset;
        for buf in bufs.iter_mut() {
            if pos == end {
                break;
            }
            let want = (buf.len() as u64).min(end - pos) as usize;
            let mut dst: &mut [u8] = &mut buf[..want];
            while !dst.is_empty() {
                // `run` is the first run that does not end at or before `pos`.
                while let Some((&first, bytes)) = run
                    && (first + span(bytes)) * PAGE <= pos
                {
                    run = runs.next();
                }
                let k = match run {
                    Some((&first, bytes)) if first * PAGE <= pos => {
                        let at = (pos - first * PAGE) as usize;
                        let k = (bytes.len() - at).min(dst.len());
                        dst[..k].copy_from_slice(&bytes[at..at + k]);
                        k
                    }
                    // A hole, up to the next run or the end of this buffer.
                    next => {
                        let until = next.map_or(u64::MAX, |(&first, _)| first * PAGE);
                        let k = (until - pos).min(dst.len() as u64) as usize;
                        dst[..k].fill(0);
                        k
                    }
                };
                dst = &mut std::mem::take(&mut dst)[k..];
                pos += k as u64;
            }
        }
        n as usize
    }

    /// How many pages writing `len` bytes at `offset` would allocate.
    pub(super) fn new_pages(&self, offset: u64, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let first = offset / PAGE;
        let last = (offset + len - 1) / PAGE;
        let from = self.run_at(first).map_or(first, |(f, _)| f);
        let held: u64 = self
            .runs
            .range(from..=last)
            .map(|(&f, run)| (f + span(run)).min(last + 1) - f.max(first))
            .sum();
        (last - first + 1) - held
    }

    /// Writes `data` at `offset`, extending the file (the gap reads as zeros). The caller
    /// has checked limits and that `offset + data.len()` does not overflow.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let mut pos = offset;
        while pos < end {
            let page = pos / PAGE;
            let first = match self.run_at(page) {
                Some((first, _)) => first,
                None => self.allocate(page, end.div_ceil(PAGE)),
            };
            let run = self.runs.get_mut(&first).expect("the run holding `page`");
            let at = (pos - first * PAGE) as usize;
            let k = ((run.len() - at) as u64).min(end - pos) as usize;
            let done = (pos - offset) as usize;
            run[at..at + k].copy_from_slice(&data[done..done + k]);
            pos += k as u64;
        }
        self.size = self.size.max(end);
    }

    /// Allocates zeroed pages from `page` (a hole) on, up to `until` or the next run,
    /// extending the run that ends at `page` if there is one with room; returns the first
    /// page of the run that now holds `page`.
    fn allocate(&mut self, page: u64, until: u64) -> u64 {
        let next = self.runs.range(page..).next().map_or(u64::MAX, |(&f, _)| f);
        let until = until.min(next);
        if let Some((&first, run)) = self.runs.range_mut(..page).next_back()
            && first + span(run) == page
            && span(run) < MAX_RUN
        {
            let add = (until - page).min(MAX_RUN - span(run));
            let len = run.len() + (add * PAGE) as usize;
            if len > run.capacity() {
                // Grow by a quarter at least (appends stay amortized), never past a whole
                // run: the memory a run holds stays within a quarter of what it counts.
                let grown = (run.capacity() + run.capacity() / 4).next_multiple_of(PAGE_USIZE);
                let target = grown.max(len).min((MAX_RUN * PAGE) as usize);
                run.reserve_exact(target - run.len());
            }
            run.resize(len, 0);
            self.pages += add;
            return first;
        }
        let add = (until - page).min(MAX_RUN);
        self.runs.insert(page, vec![0; (add * PAGE) as usize]);
        self.pages += add;
        page
    }

    /// Sets the size; returns how many pages were freed. Shrinking zeroes the cut-off tail
    /// of the last page, so extending again reads zeros there.
    pub(super) fn truncate(&mut self, size: u64) -> u64 {
        let mut freed = 0;
        if size < self.size {
            let keep = size.div_ceil(PAGE);
            freed = self.runs.split_off(&keep).values().map(|r| span(r)).sum();
            if let Some((&first, run)) = self.runs.range_mut(..keep).next_back()
                && first + span(run) > keep
            {
                freed += first + span(run) - keep;
                run.truncate(((keep - first) * PAGE) as usize);
                if run.capacity() > slack(run.len()) {
                    run.shrink_to_fit();
                }
            }
            let within = (size % PAGE) as usize;
            if within != 0
                && let Some((first, _)) = self.run_at(size / PAGE)
            {
                let run = self
                    .runs
                    .get_mut(&first)
                    .expect("the run holding the last page");
                let at = (size - first * PAGE) as usize;
                let page_end = at - within + PAGE_USIZE;
                run[at..page_end].fill(0);
            }
            self.pages -= freed;
        }
        self.size = size;
        freed
    }

    /// A hash of the contents (FNV-1a over size and non-zero pages): equal contents give
    /// equal hashes however the file was written (and however its pages are stored).
    pub(super) fn hash(&self) -> u64 {
        let mut h = Fnv::default();
        h.eat(&self.size.to_le_bytes());
        for (&first, run) in &self.runs {
            for (i, page) in run.chunks(PAGE_USIZE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    h.eat(&(first + i as u64).to_le_bytes());
                    h.eat(page);
                }
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
    pub(super) fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(super) fn of(bytes: &[u8]) -> u64 {
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

    /// Offsets and lengths that stay within a few pages, or cross 1 MiB runs.
    fn offset() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        prop_oneof![3 => 0u64..40_000, 1 => 0u64..2_200_000, 1 => (0u64..600).prop_map(|p| p * PAGE)]
    }

    fn length() -> impl proptest::strategy::Strategy<Value = usize> {
        use proptest::prelude::*;
        prop_oneof![3 => 0usize..9000, 1 => 0usize..1_100_000, 1 => (0usize..300).prop_map(|p| p * PAGE_USIZE)]
    }

    proptest::proptest! {
        /// Sparse pages read exactly like a flat byte array, whatever the writes, the
        /// truncations and the range read, into one buffer or many; the pages counted are
        /// exactly the pages written and not cut off since, as `new_pages` predicted; the
        /// hash does not depend on how the pages are stored.
        #[test]
        fn reads_match_a_flat_model(
            ops in proptest::collection::vec((offset(), length(), proptest::prelude::any::<u8>(), proptest::prelude::any::<bool>()), 1..12),
            at in offset(),
            len in length(),
        ) {
            let (mut d, mut flat) = (Data::default(), Vec::<u8>::new());
            let mut held = std::collections::BTreeSet::new();
            for (off, n, byte, truncate) in ops {
                if truncate {
                    let freed = d.truncate(off);
                    let cut = held.split_off(&off.div_ceil(PAGE));
                    proptest::prop_assert_eq!(freed, cut.len() as u64);
                    flat.resize(off as usize, 0);
                } else {
                    let pages = if n == 0 { 0..0 } else { off / PAGE..(off + n as u64).div_ceil(PAGE) };
                    let new = pages
                        .filter(|p| held.insert(*p))
                        .count();
                    proptest::prop_assert_eq!(d.new_pages(off, n as u64), new as u64);
                    d.write(off, &vec![byte; n]);
                    let end = off as usize + n;
                    if flat.len() < end {
                        flat.resize(end, 0);
                    }
                    flat[off as usize..end].fill(byte);
                }
                proptest::prop_assert_eq!(d.pages(), held.len() as u64);
                proptest::prop_assert_eq!(d.size(), flat.len() as u64);
                d.check_runs();
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
            // The same contents written page by page, backwards (one run per page).
            let mut other = Data::default();
            other.truncate(flat.len() as u64);
            for (i, page) in flat.chunks(PAGE_USIZE).enumerate().rev() {
                other.write(i as u64 * PAGE, page);
            }
            proptest::prop_assert_eq!(other.hash(), d.hash());
        }
    }

    impl Data {
        /// Runs are whole pages, at most `MAX_RUN`, do not overlap, end within the file,
        /// and hold at most a quarter more memory than they count.
        fn check_runs(&self) {
            let mut end = 0;
            for (&first, run) in &self.runs {
                assert!(first >= end, "runs overlap at page {first}");
                assert!(!run.is_empty() && run.len() % PAGE_USIZE == 0);
                assert!(span(run) <= MAX_RUN);
                assert!(
                    run.capacity() <= slack(run.len()),
                    "{} > {}",
                    run.capacity(),
                    run.len()
                );
                end = first + span(run);
            }
            assert!(end <= self.size.div_ceil(PAGE));
        }
    }

    /// Cutting runs short (a 1 MiB run truncated to 129 pages, again and again) gives their
    /// memory back: held stays within a quarter of counted.
    #[test]
    fn truncation_gives_memory_back() {
        let mut d = Data::default();
        for i in 0..8u64 {
            let base = i * 2 * (MAX_RUN * PAGE);
            d.write(base, &vec![1; (MAX_RUN * PAGE) as usize]);
            d.truncate(base + 129 * PAGE);
            d.check_runs();
        }
        assert_eq!(d.pages(), 8 * 129);
    }

    #[test]
    fn a_file_written_in_order_is_a_few_long_runs() {
        let mut d = Data::default();
        let mut flat = Vec::new();
        let mut i = 0u64;
        // 2.5 MiB in appends of odd sizes.
        while flat.len() < 5 << 19 {
            let chunk: Vec<u8> = (0..1000 + i % 7000).map(|j| (i + j) as u8).collect();
            d.write(flat.len() as u64, &chunk);
            flat.extend_from_slice(&chunk);
            i += 1;
        }
        assert_eq!(d.runs.len(), 3, "1 MiB, 1 MiB, and the rest");
        d.check_runs();
        assert_eq!(d.pages(), (flat.len() as u64).div_ceil(PAGE));
        let mut buf = vec![0; flat.len()];
        assert_eq!(d.read(0, &mut buf), flat.len());
        assert_eq!(buf, flat);
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
