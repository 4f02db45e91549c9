//! File data handed to the kernel straight from the page cache: a read-only shared mapping
//! of a file, and a range of it that a stream transport sends with `sendmsg`.
//!
//! Why: an `Rread` of 1 MiB read with `pread` into a reply buffer and then written to a
//! socket is copied twice in the server (page cache → buffer → socket); from a mapping it
//! is copied once (page cache → socket), as a server sending from memory would.
//!
//! The bytes of a mapping are **never read by this process**. A file shrunk meanwhile (by
//! a client's truncate, or on the host) leaves the mapped pages past its new end without
//! backing: touching them from user space raises `SIGBUS`, while a system call that reads
//! them (`sendmsg`) fails with `EFAULT` and nothing else happens. So a [`MappedBytes`]
//! gives out only raw pointers, for the kernel; what the transport answers when a send
//! faults is its business (the stream transport sends zeros for the bytes cut off, as a
//! read of a hole would).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

/// A read-only shared mapping of `len` bytes of a file from `offset` (which may reach past
/// its end: only the range a [`MappedBytes`] names was inside the file when it was made).
pub(crate) struct FileMap {
    ptr: *mut libc::c_void,
    offset: u64,
    len: usize,
}

// SAFETY: the mapping is read-only and this process never reads or writes through it; the
// pointer is only handed to the kernel. Unmapped once, by the last owner (Drop).
unsafe impl Send for FileMap {}
// SAFETY: as above: nothing in this process dereferences it.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps `len` bytes of `fd` (a regular file open for reading) from `offset`, a
    /// multiple of the page size.
    pub(crate) fn new(fd: impl AsFd, offset: u64, len: usize) -> std::io::Result<FileMap> {
        let Ok(at) = libc::off_t::try_from(offset) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        if len == 0 {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a new read-only mapping at an address the kernel picks, so no memory of
        // this process is replaced; the kernel keeps its own reference to the file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                at,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileMap { ptr, offset, len })
    }

    /// Whether the file's bytes `start..end` are inside the mapping.
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        start >= self.offset && end <= self.offset + self.len as u64
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `new` made; every MappedBytes holds an Arc of self,
        // so no pointer into it is handed out after this.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// `len` bytes of a mapped file from `start`: an `Rread`'s data, sent by the transport
/// straight from the page cache ([`Filesystem::map_read`](super::Filesystem::map_read)).
pub struct MappedBytes {
    map: Arc<FileMap>,
    start: usize,
    len: usize,
}

impl MappedBytes {
    /// The file's `len` bytes from `offset`, through `map`, or `None` when they do not lie
    /// inside it.
    pub(crate) fn new(map: Arc<FileMap>, offset: u64, len: usize) -> Option<MappedBytes> {
        let end = offset.checked_add(len as u64)?;
        let start = usize::try_from(offset.checked_sub(map.offset)?).ok()?;
        map.covers(offset, end)
            .then_some(MappedBytes { map, start, len })
    }

    /// The first `max` bytes at most.
    pub fn at_most(mut self, max: usize) -> MappedBytes {
        self.len = self.len.min(max);
        self
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes from `skip` on are, for a system call to read (an `iovec`): never to
    /// be dereferenced in this process (see the module's doc).
    pub fn raw_from(&self, skip: usize) -> (*const u8, usize) {
        let skip = skip.min(self.len);
        // SAFETY: start + skip <= start + len <= map.len (checked in `new`): the pointer
        // stays inside the mapping, which lives as long as `self`.
        let p = unsafe { self.map.ptr.cast::<u8>().add(self.start + skip) };
        (p.cast_const(), self.len - skip)
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({}..+{})", self.start, self.len)
    }
}
