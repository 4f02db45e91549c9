//! Little-endian wire primitives and the [`Wire`] trait every message field implements.
//!
//! Decoding never trusts a length field: every count is checked against the bytes that are
//! actually left before anything is allocated, so a hostile PDU cannot make us reserve more
//! memory than its own (already size-limited) frame.

use super::errno::Errno;
use super::types::*;

/// Most names a `Twalk` may carry (and qids an `Rwalk` may return).
pub const MAXWELEM: usize = 16;

/// Why a PDU could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("frame of {len} bytes is shorter than the 7-byte header")]
    /// Fewer bytes than a header.
    Short {
        /// The frame's length.
        len: usize,
    },
    #[error("size field says {declared} bytes but the frame has {actual}")]
    /// The size field disagrees with the frame's length.
    SizeMismatch {
        /// What the size field says.
        declared: u32,
        /// The frame's length.
        actual: usize,
    },
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    /// Larger than the negotiated msize.
    TooLarge {
        /// The frame's size.
        size: u32,
        /// The largest accepted.
        max: u32,
    },
    #[error("unknown message type {ty}")]
    /// A type number no message has.
    UnknownType {
        /// The type number.
        ty: u8,
    },
    #[error("message ends inside field {field}")]
    /// The frame ends inside a field.
    Truncated {
        /// The field's name.
        field: &'static str,
    },
    #[error("{extra} bytes left over after the message")]
    /// Bytes left after the last field.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    #[error("{n} walk elements, more than {MAXWELEM}")]
    /// A `Twalk` with more than [`MAXWELEM`] names.
    TooManyWalkElements {
        /// How many names.
        n: usize,
    },
    #[error("field {field} has the invalid value {value}")]
    /// A field holds a value it cannot have.
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// The value.
        value: u64,
    },
}

/// A decoding failure, with whatever of the header could be read so that the server can
/// still answer the request's tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The tag, if the header was complete.
    pub tag: Option<Tag>,
    /// The message type byte, if the header was complete.
    pub ty: Option<u8>,
    /// What went wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// The errno a server should answer with: unknown types are `EOPNOTSUPP` (the session
    /// goes on), oversized frames `EMSGSIZE`, bad values `EINVAL`, anything else `EPROTO`.
    pub fn errno(&self) -> Errno {
        match self.kind {
            DecodeErrorKind::UnknownType { .. } => Errno::EOPNOTSUPP,
            DecodeErrorKind::TooLarge { .. } => Errno::EMSGSIZE,
            DecodeErrorKind::TooManyWalkElements { .. } | DecodeErrorKind::InvalidValue { .. } => {
                Errno::EINVAL
            }
            _ => Errno::EPROTO,
        }
    }
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the buffer has {have} bytes, the message needs {need}")]
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes the message needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    #[error("field {field} does not fit its wire width")]
    /// A field is longer than its length prefix can say.
    FieldTooLong {
        /// The field's name.
        field: &'static str,
    },
}

/// A cursor over a received frame.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes, for `field`.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeErrorKind> {
        if n > self.buf.len() {
            return Err(DecodeErrorKind::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array, for `field`.
    pub fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeErrorKind> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
}

/// A cursor writing into a caller's buffer; it never grows it.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall {
                need: end,
                have: self.buf.len(),
            });
        }
        self.buf[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// A value with a 9P wire form.
pub trait Wire: Sized {
    /// Bytes it takes on the wire.
    fn wire_len(&self) -> usize;
    /// Writes the value.
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    /// Reads a value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn wire_len(&self) -> usize {
                size_of::<$t>()
            }
            fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                w.put(&self.to_le_bytes())
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
                Ok(<$t>::from_le_bytes(r.array(stringify!($t))?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64);

/// Newtypes that travel as their inner integer.
macro_rules! wire_newtype {
    ($($t:ident($inner:ty)),*) => {$(
        impl Wire for $t {
            fn wire_len(&self) -> usize {
                size_of::<$inner>()
            }
            fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                self.0.encode(w)
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
                Ok($t(<$inner>::decode(r)?))
            }
        }
    )*};
}
super::types::wire_newtypes!(wire_newtype);

/// Structs that travel as their fields in order.
macro_rules! wire_struct {
    ($t:ident { $($f:ident),* }) => {
        impl Wire for $t {
            fn wire_len(&self) -> usize {
                0 $(+ self.$f.wire_len())*
            }
            fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                $(self.$f.encode(w)?;)*
                Ok(())
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
                Ok($t { $($f: Wire::decode(r)?),* })
            }
        }
    };
}

super::types::wire_structs!(wire_struct);

impl Wire for P9String {
    fn wire_len(&self) -> usize {
        2 + self.0.len()
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = u16::try_from(self.0.len())
            .map_err(|_| EncodeError::FieldTooLong { field: "string" })?;
        len.encode(w)?;
        w.put(&self.0)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
        let len = u16::decode(r)? as usize;
        Ok(P9String(r.take(len, "string")?.to_vec()))
    }
}

/// Enums that travel as one byte (`byte_enum!`), and the field a bad byte is reported as.
macro_rules! wire_byte_enum {
    ($($t:ident: $field:literal),*) => {$(
        impl Wire for $t {
            fn wire_len(&self) -> usize {
                1
            }
            fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                (*self as u8).encode(w)
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
                let v = u8::decode(r)?;
                $t::from_u8(v).ok_or(DecodeErrorKind::InvalidValue {
                    field: $field,
                    value: v.into(),
                })
            }
        }
    )*};
}
wire_byte_enum!(LockType: "lock type", LockStatus: "lock status");

/// Walk names and walk qids: a `u16` count of at most [`MAXWELEM`] elements.
impl<T: Wire> Wire for Vec<T> {
    fn wire_len(&self) -> usize {
        2 + self.iter().map(Wire::wire_len).sum::<usize>()
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.len() > MAXWELEM {
            return Err(EncodeError::FieldTooLong {
                field: "walk elements",
            });
        }
        (self.len() as u16).encode(w)?;
        self.iter().try_for_each(|e| e.encode(w))
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
        let n = u16::decode(r)? as usize;
        if n > MAXWELEM {
            return Err(DecodeErrorKind::TooManyWalkElements { n });
        }
        (0..n).map(|_| T::decode(r)).collect()
    }
}

/// The payload of `Twrite`/`Rread`: a `u32` count and that many bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Data(pub Vec<u8>);

impl Wire for Data {
    fn wire_len(&self) -> usize {
        4 + self.0.len()
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len =
            u32::try_from(self.0.len()).map_err(|_| EncodeError::FieldTooLong { field: "data" })?;
        len.encode(w)?;
        w.put(&self.0)
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
        let len = u32::decode(r)? as usize;
        Ok(Data(r.take(len, "data")?.to_vec()))
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data({} bytes)", self.0.len())
    }
}

/// The payload of `Rreaddir`: a `u32` byte count, then packed [`Dirent`]s filling exactly
/// those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirentList(pub Vec<Dirent>);

impl Wire for DirentList {
    fn wire_len(&self) -> usize {
        4 + self.0.iter().map(Dirent::wire_len).sum::<usize>()
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = u32::try_from(self.wire_len() - 4)
            .map_err(|_| EncodeError::FieldTooLong { field: "dirents" })?;
        len.encode(w)?;
        self.0.iter().try_for_each(|d| d.encode(w))
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
        let len = u32::decode(r)? as usize;
        let mut inner = Reader::new(r.take(len, "dirents")?);
        let mut out = Vec::new();
        while inner.remaining() > 0 {
            out.push(Dirent::decode(&mut inner)?);
        }
        Ok(DirentList(out))
    }
}
