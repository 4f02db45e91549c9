//! One reply frame waiting to be written: an encoded buffer, and for an `Rread` sent from
//! a file's mapping, the data after it ([`MappedBytes`]), which the kernel copies straight
//! from the page cache.

use crate::fs::MappedBytes;
use crate::protocol::frame_size;

/// A queued frame.
///
/// The buffer holds the frame (or, with a mapped tail, its header) as its *prefix*: the
/// frame's own size field says how long the whole frame is. Buffers are recycled without
/// being shrunk, so an `Rread` of up to msize reuses memory already initialised instead of
/// zero-filling a fresh buffer each time.
pub(super) struct Frame {
    buf: Vec<u8>,
    tail: Option<MappedBytes>,
    /// A send faulted in the tail: it goes a page at a time now (see [`Frame::on_fault`]).
    page_wise: bool,
}

/// The unit in which a mapping is backed or not: every page size Linux uses is a multiple
/// of it, so an aligned piece of this size never straddles two pages.
const PIECE: usize = 4096;

impl Frame {
    /// A frame wholly in `buf`.
    pub(super) fn owned(buf: Vec<u8>) -> Frame {
        Frame {
            buf,
            tail: None,
            page_wise: false,
        }
    }

    /// A frame whose last `tail.len()` bytes are `tail`, the rest the prefix of `head`.
    pub(super) fn mapped(head: Vec<u8>, tail: MappedBytes) -> Frame {
        Frame {
            buf: head,
            tail: Some(tail),
            page_wise: false,
        }
    }

    /// The frame's length, as its size field gives it (0 if the buffer holds no header).
    pub(super) fn len(&self) -> usize {
        self.head_len() + self.tail.as_ref().map_or(0, MappedBytes::len)
    }

    /// The bytes of the frame in the buffer. (A size field that disagrees with the buffer
    /// and tail is the encoder's bug: the frame is cut to what there is rather than read
    /// past the buffer; the peer sees a malformed frame and closes.)
    fn head_len(&self) -> usize {
        let size = self
            .buf
            .get(..4)
            .map(|p| frame_size(p.try_into().expect("4 bytes")) as usize)
            .unwrap_or(0);
        let tail = self.tail.as_ref().map_or(0, MappedBytes::len);
        size.saturating_sub(tail).min(self.buf.len())
    }

    /// Appends to `iov` where the frame's bytes from `skip` on are. Returns whether that is
    /// all of them: after a fault the tail goes a piece at a time, and nothing may follow
    /// a piece in the same send.
    pub(super) fn iovecs(&self, skip: usize, iov: &mut Vec<libc::iovec>) -> bool {
        let head = self.head_len();
        if skip < head {
            let b = &self.buf[skip..head];
            iov.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
        let Some(t) = &self.tail else { return true };
        let (p, left) = t.raw_from(skip.saturating_sub(head));
        let n = if self.page_wise {
            left.min(PIECE - p as usize % PIECE)
        } else {
            left
        };
        if n > 0 {
            iov.push(libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: n,
            });
        }
        n == left
    }

    /// A send whose first byte is in this frame's mapped tail faulted: the file was shrunk
    /// since the read mapped it, and the pages past its new end have nothing behind them.
    /// The kernel may have refused a whole chunk around the first bad page, so the tail
    /// first goes a piece at a time: each piece is wholly backed or not, so the bytes up to
    /// the file's new end still go out (those after it in its last page read as zeros).
    /// At the next fault, at the first piece past the end, the frame's header has promised
    /// its length, so the rest goes as zeros, as a read of a hole would give. Returns
    /// whether there was a tail to fault in (else the fault is not the file's).
    pub(super) fn on_fault(&mut self) -> bool {
        if self.tail.is_none() {
            return false;
        }
        if !self.page_wise {
            self.page_wise = true;
            return true;
        }
        let head = self.head_len();
        let Some(t) = self.tail.take() else {
            return false;
        };
        self.buf.truncate(head);
        self.buf.resize(head + t.len(), 0);
        true
    }

    /// The buffer, for reuse.
    pub(super) fn into_buf(self) -> Vec<u8> {
        self.buf
    }
}
