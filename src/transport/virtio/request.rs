//! Reading a request out of a checked chain and handing it to the session: the 7-byte
//! header first (size, type, tag), the answers to chains that cannot be served, and the
//! large `Twrite` whose data stays in guest pages.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::chain::Chain;
use super::guest_mem::{Region, read_from, sub_regions};
use super::{MIN_REPLY_ROOM, Virtio9p, VirtioResponder};
use crate::co::Executor;
use crate::fs::Filesystem;
use crate::protocol::{Errno, Fid, HEADER_LEN, Header, TWRITE_HEADER_LEN, Ttype, TwriteHeader};
use crate::server::Session;

impl<F: Filesystem, E: Executor> Virtio9p<F, E> {
    /// Reads one checked chain's request and hands it to the session (or answers it).
    pub(super) fn dispatch(
        &self,
        session: &Session<F, E, VirtioResponder>,
        mem: &Arc<GuestMemoryMmap>,
        epoch: u64,
        chain: Chain,
    ) {
        let readable_len = chain.readable_len();
        let room = chain.writable_len();
        let Chain {
            head,
            readable,
            writable,
            error,
        } = chain;
        let responder = VirtioResponder::new(self.core.clone(), mem.clone(), epoch, head, writable);
        if room < MIN_REPLY_ROOM as u64 {
            // No reply fits: complete with length 0, without running the request.
            return drop(responder);
        }
        let mut hdr = [0u8; HEADER_LEN];
        if read_from(mem, &readable, &mut hdr) < HEADER_LEN {
            return drop(responder);
        }
        let Header { size, ty, tag } = Header::parse(&hdr);
        if error.is_some() || (size as usize) < HEADER_LEN {
            return responder.send_error(tag, Errno::EPROTO);
        }
        if size > session.frame_limit() {
            return responder.send_error(tag, Errno::EMSGSIZE);
        }
        if ty == Ttype::Write as u8
            && let Some((fid, offset, count, data)) =
                in_place_write(mem, &readable, size, readable_len)
        {
            let mut responder = responder;
            responder.set_write_data(data);
            return session.submit_write(tag, fid, offset, count, responder);
        }
        // Bytes past the declared size are ignored; fewer than declared make the frame
        // fail to decode, which the session answers.
        let len = u64::from(size).min(readable_len) as usize;
        let mut frame = vec![0u8; len];
        if read_from(mem, &readable, &mut frame) < len {
            return responder.send_error(tag, Errno::EPROTO);
        }
        // A refused frame drops the responder, which completes the chain.
        let _ = session.submit(&frame, responder);
    }
}

/// Smaller writes are copied with the frame: a few slices cost more than the copy.
const IN_PLACE_WRITE_MIN: u64 = 1024;

/// A well-formed large `Twrite` of `size` bytes in `readable`: its fid, offset, count and
/// the guest buffers of its data, left where they are. `None` sends the frame down the
/// ordinary path (which also answers malformed ones).
fn in_place_write(
    mem: &GuestMemoryMmap,
    readable: &[Region],
    size: u32,
    readable_len: u64,
) -> Option<(Fid, u64, u32, Vec<Region>)> {
    let size = u64::from(size);
    if size < TWRITE_HEADER_LEN as u64 + IN_PLACE_WRITE_MIN || readable_len < size {
        return None;
    }
    let mut h = [0u8; TWRITE_HEADER_LEN];
    if read_from(mem, readable, &mut h) < TWRITE_HEADER_LEN {
        return None;
    }
    let TwriteHeader {
        fid, offset, count, ..
    } = TwriteHeader::parse(&h)?;
    if TWRITE_HEADER_LEN as u64 + u64::from(count) != size {
        return None;
    }
    Some((
        fid,
        offset,
        count,
        sub_regions(readable, TWRITE_HEADER_LEN as u64, u64::from(count)).collect(),
    ))
}
