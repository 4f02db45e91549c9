//! The 9P2000.L wire protocol, sans I/O.
//!
//! A PDU is `size[4] type[1] tag[2] body`, little-endian, where `size` counts the whole PDU.
//! [`Request`] and [`Reply`] are a tag plus a [`Tmessage`] or [`Rmessage`]; they decode from a
//! complete frame and encode into a caller's buffer. Nothing here does I/O or knows about the
//! rest of the crate, so the same codec serves the server, the transports, the simulator's
//! guest and the benchmark client.
//!
//! Large payloads can be produced in place: reserve [`PAYLOAD_HEADER_LEN`] bytes, write the
//! `Rread` data (or pack [`Dirent`]s with [`DirentWriter`]) after them, then fill the header
//! with [`encode_payload_header`]. The virtio transport uses this to put file data straight
//! into guest memory.

mod errno;
mod fmt;
mod message;
#[cfg(feature = "testing")]
mod sample;
mod types;
mod wire;

pub use errno::Errno;
pub use fmt::{TraceFmt, Traced};
pub use message::{Message, Rmessage, Rtype, Tmessage, Ttype};
#[cfg(feature = "testing")]
pub use sample::Sample;
pub use types::*;
pub use wire::{
    Data, DecodeError, DecodeErrorKind, DirentList, EncodeError, MAXWELEM, Reader, Wire, Writer,
};

/// Bytes of `size[4] type[1] tag[2]`.
pub const HEADER_LEN: usize = 7;
/// Bytes of the `Rread`/`Rreaddir` header: the PDU header and the `count[4]` of the payload.
pub const PAYLOAD_HEADER_LEN: usize = HEADER_LEN + 4;
/// Bytes of a `Twrite` before its data: header, `fid[4] offset[8] count[4]`.
pub const TWRITE_HEADER_LEN: usize = HEADER_LEN + 4 + 8 + 4;
/// The protocol version string this crate speaks.
pub const VERSION_9P2000_L: &str = "9P2000.L";
/// The smallest msize co9p agrees to: room for a header, a walk of 16 short names, and a
/// useful payload.
pub const MIN_MSIZE: u32 = 4096;

/// A tag and a message: one PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu<M> {
    /// The request's tag.
    pub tag: Tag,
    /// The message.
    pub msg: M,
}

/// A client-to-server PDU.
pub type Request = Pdu<Tmessage>;
/// A server-to-client PDU.
pub type Reply = Pdu<Rmessage>;

/// Reads the `size` field of a frame: how many bytes the whole PDU has, these 4 included.
pub fn frame_size(prefix: [u8; 4]) -> u32 {
    u32::from_le_bytes(prefix)
}

/// The header every PDU starts with, `size[4] type[1] tag[2]`, for a transport that looks at
/// a frame before it has all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the whole PDU, the header included.
    pub size: u32,
    /// The message type number (see [`Ttype`], [`Rtype`]).
    pub ty: u8,
    /// The request's tag.
    pub tag: Tag,
}

impl Header {
    /// Reads the header from the first [`HEADER_LEN`] bytes of a frame.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            size: frame_size([b[0], b[1], b[2], b[3]]),
            ty: b[4],
            tag: Tag(u16::from_le_bytes([b[5], b[6]])),
        }
    }
}

/// The fields of a `Twrite` before its data ([`TWRITE_HEADER_LEN`] bytes), for a transport
/// that leaves the data where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwriteHeader {
    /// The PDU header.
    pub header: Header,
    /// The fid written through.
    pub fid: Fid,
    /// The file offset of the data.
    pub offset: u64,
    /// Bytes of data that follow.
    pub count: u32,
}

impl TwriteHeader {
    /// Reads a `Twrite`'s header, or `None` if the frame is of another type.
    pub fn parse(b: &[u8; TWRITE_HEADER_LEN]) -> Option<TwriteHeader> {
        let (head, body) = b.split_first_chunk::<HEADER_LEN>()?;
        let header = Header::parse(head);
        if header.ty != Ttype::Write as u8 {
            return None;
        }
        // The fields of `Tmessage::Write` before `data`, then `data`'s count.
        let mut r = Reader::new(body);
        Some(TwriteHeader {
            header,
            fid: Fid::decode(&mut r).ok()?,
            offset: u64::decode(&mut r).ok()?,
            count: u32::decode(&mut r).ok()?,
        })
    }
}

impl<M: Message> Pdu<M> {
    /// A PDU of `msg` with `tag`.
    pub fn new(tag: Tag, msg: M) -> Self {
        Pdu { tag, msg }
    }

    /// Bytes this PDU takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.msg.body_len()
    }

    /// Decodes one complete frame. `max_size` is the largest frame accepted (the negotiated
    /// msize); the frame is rejected before anything is allocated if it is larger.
    pub fn decode(frame: &[u8], max_size: u32) -> Result<Self, DecodeError> {
        let fail = |tag, ty, kind| DecodeError { tag, ty, kind };
        let Some(head) = frame.first_chunk() else {
            return Err(fail(
                None,
                None,
                DecodeErrorKind::Short { len: frame.len() },
            ));
        };
        let Header {
            size: declared,
            ty,
            tag,
        } = Header::parse(head);
        if declared as usize != frame.len() {
            let kind = DecodeErrorKind::SizeMismatch {
                declared,
                actual: frame.len(),
            };
            return Err(fail(Some(tag), Some(ty), kind));
        }
        if declared > max_size {
            let kind = DecodeErrorKind::TooLarge {
                size: declared,
                max: max_size,
            };
            return Err(fail(Some(tag), Some(ty), kind));
        }
        let mut r = Reader::new(&frame[HEADER_LEN..]);
        let msg = M::decode_body(ty, &mut r).map_err(|k| fail(Some(tag), Some(ty), k))?;
        if r.remaining() != 0 {
            let kind = DecodeErrorKind::TrailingBytes {
                extra: r.remaining(),
            };
            return Err(fail(Some(tag), Some(ty), kind));
        }
        Ok(Pdu { tag, msg })
    }

    /// Encodes into `out`, returning the bytes written. Fails without a partial promise if
    /// `out` is too small.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        if len > out.len() {
            return Err(EncodeError::BufferTooSmall {
                need: len,
                have: out.len(),
            });
        }
        let size = u32::try_from(len).map_err(|_| EncodeError::FieldTooLong { field: "size" })?;
        let mut w = Writer::new(out);
        size.encode(&mut w)?;
        self.msg.msg_type().encode(&mut w)?;
        self.tag.encode(&mut w)?;
        self.msg.encode_body(&mut w)?;
        debug_assert_eq!(w.position(), len);
        Ok(len)
    }

    /// Encodes into a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = vec![0; self.encoded_len()];
        self.encode(&mut out)?;
        Ok(out)
    }

    /// A random PDU of message type `ty` (see [`Message::TYPES`]).
    #[cfg(feature = "testing")]
    pub fn sample<R: rand::Rng + ?Sized>(ty: u8, rng: &mut R) -> Option<Self> {
        let tag = Tag::sample(rng);
        M::sample(ty, rng).map(|msg| Pdu { tag, msg })
    }
}

/// The one-line trace form: `Twalk tag=1 fid=0 newfid=1 wnames=["a","b"]`.
impl<M: Message> std::fmt::Display for Pdu<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.msg.name().to_ascii_lowercase();
        write!(f, "{}{} tag={}", M::PREFIX, name, self.tag.0)?;
        self.msg.trace_fields(f)
    }
}

/// Which payload-carrying reply an in-place header is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadReply {
    /// `Rread`.
    Read,
    /// `Rreaddir`.
    Readdir,
}

/// Fills the first [`PAYLOAD_HEADER_LEN`] bytes of `out` with the header of an `Rread` or
/// `Rreaddir` whose `count` payload bytes follow it.
pub fn encode_payload_header(
    kind: PayloadReply,
    tag: Tag,
    count: u32,
    out: &mut [u8],
) -> Result<(), EncodeError> {
    let size = (PAYLOAD_HEADER_LEN as u32)
        .checked_add(count)
        .ok_or(EncodeError::FieldTooLong { field: "count" })?;
    let ty: u8 = match kind {
        PayloadReply::Read => Rtype::Read as u8,
        PayloadReply::Readdir => Rtype::Readdir as u8,
    };
    let mut w = Writer::new(out);
    size.encode(&mut w)?;
    ty.encode(&mut w)?;
    tag.encode(&mut w)?;
    count.encode(&mut w)
}

/// Packs directory entries into an `Rreaddir` payload buffer, stopping at the first entry
/// that does not fit whole (the client asks again from that entry's predecessor's cookie).
pub struct DirentWriter<'a> {
    w: Writer<'a>,
}

impl<'a> DirentWriter<'a> {
    /// A writer that packs entries into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        DirentWriter {
            w: Writer::new(buf),
        }
    }

    /// Appends `d` if it fits; returns whether it did.
    pub fn push(&mut self, d: &Dirent) -> bool {
        // Check the room first: a failed encode would leave half an entry behind.
        if d.wire_len() > self.w.remaining() {
            return false;
        }
        d.encode(&mut self.w).is_ok()
    }

    /// Payload bytes written so far.
    pub fn len(&self) -> usize {
        self.w.position()
    }

    /// Whether nothing was packed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
