//! Every 9P2000.L message, T and R forms, defined once in a table.
//!
//! The table drives the enum, its wire encoding, its decoding, its trace line and its random
//! sampling, so adding a field cannot leave one of them behind. Find a message by its name:
//! `Tmessage::Walk` is `Twalk`, `Rmessage::Walk` is `Rwalk`.

use std::fmt;

use super::errno::Errno;
use super::types::*;
use super::wire::{Data, DecodeErrorKind, DirentList, EncodeError, Reader, Wire, Writer};

/// What the generic [`super::Pdu`] needs from a message enum.
pub trait Message: Sized + Clone + fmt::Debug + PartialEq {
    /// `'T'` or `'R'`.
    const PREFIX: char;
    /// Every type number of this direction.
    const TYPES: &'static [u8];
    /// The message's type number.
    fn msg_type(&self) -> u8;
    /// The name without its prefix (`"walk"` style names are `"Walk"`).
    fn name(&self) -> &'static str;
    /// Bytes of the body (after the 7-byte header).
    fn body_len(&self) -> usize;
    /// Writes the body, fields in wire order.
    fn encode_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    /// Reads the body of a message of type `ty`.
    fn decode_body(ty: u8, r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind>;
    /// Writes the fields of the trace line (` name=value` each).
    fn trace_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// A random message of type `ty`, or `None` if `ty` is not one of [`Self::TYPES`].
    #[cfg(feature = "testing")]
    fn sample<R: rand::Rng + ?Sized>(ty: u8, rng: &mut R) -> Option<Self>;
}

macro_rules! messages {
    ($enum:ident, $kind:ident, $prefix:literal, {
        $( $(#[$doc:meta])* $var:ident = $num:literal { $($field:ident : $fty:ty),* $(,)? } ),* $(,)?
    }) => {
        #[doc = concat!(
            "A message of the `", $prefix, "` direction (`", stringify!($enum), "::Walk` is `",
            $prefix, "walk`)."
        )]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $enum {
            $(
                #[doc = concat!("The ", stringify!($var), " message.")]
                $(#[$doc])*
                $var { $(
                    #[doc = concat!(
                        "The message's `", stringify!($field), "` field (9P2000.L's name)."
                    )]
                    $field: $fty
                ),* }
            ),*
        }

        #[doc = concat!("The type number of each [`", stringify!($enum), "`], for code that ")]
        #[doc = "reads or writes a header by hand: `Ttype::Write as u8` is Twrite's."]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $kind {
            $(
                #[doc = concat!("[`", stringify!($enum), "::", stringify!($var), "`]'s.")]
                $var = $num
            ),*
        }

        impl Message for $enum {
            const PREFIX: char = $prefix;
            const TYPES: &'static [u8] = &[$($num),*];

            fn msg_type(&self) -> u8 {
                match self { $( Self::$var { .. } => $num ),* }
            }

            fn name(&self) -> &'static str {
                match self { $( Self::$var { .. } => stringify!($var) ),* }
            }

            #[allow(unused_variables)]
            fn body_len(&self) -> usize {
                match self { $( Self::$var { $($field),* } => 0 $(+ $field.wire_len())* ),* }
            }

            #[allow(unused_variables)]
            fn encode_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                match self {
                    $( Self::$var { $($field),* } => { $( $field.encode(w)?; )* } ),*
                }
                Ok(())
            }

            #[allow(unused_variables)]
            fn decode_body(ty: u8, r: &mut Reader<'_>) -> Result<Self, DecodeErrorKind> {
                match ty {
                    // Struct fields are evaluated in the order written: wire order.
                    $( $num => Ok(Self::$var { $($field: <$fty as Wire>::decode(r)?),* }), )*
                    _ => Err(DecodeErrorKind::UnknownType { ty }),
                }
            }

            #[allow(unused_variables)]
            fn trace_fields(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( Self::$var { $($field),* } => {
                        $(
                            f.write_str(concat!(" ", stringify!($field), "="))?;
                            super::fmt::trace_field(stringify!($field), $field, f)?;
                        )*
                    } ),*
                }
                Ok(())
            }

            #[cfg(feature = "testing")]
            #[allow(unused_variables)]
            fn sample<R: rand::Rng + ?Sized>(ty: u8, rng: &mut R) -> Option<Self> {
                use super::sample::Sample;
                match ty {
                    $( $num => Some(Self::$var { $($field: <$fty as Sample>::sample(rng)),* }), )*
                    _ => None,
                }
            }
        }
    };
}

messages!(Tmessage, Ttype, 'T', {
    /// Defined by the protocol's numbering but never sent by clients; the server answers it
    /// with `Rlerror(EOPNOTSUPP)`.
    Lerror = 6 {},
    Statfs = 8 { fid: Fid },
    Lopen = 12 { fid: Fid, flags: OpenFlags },
    /// Creates `name` in the directory `fid` and opens it; `fid` then names the new file.
    Lcreate = 14 { fid: Fid, name: P9String, flags: OpenFlags, mode: u32, gid: u32 },
    Symlink = 16 { fid: Fid, name: P9String, symtgt: P9String, gid: u32 },
    Mknod = 18 { dfid: Fid, name: P9String, mode: u32, major: u32, minor: u32, gid: u32 },
    Rename = 20 { fid: Fid, dfid: Fid, name: P9String },
    Readlink = 22 { fid: Fid },
    Getattr = 24 { fid: Fid, request_mask: GetattrMask },
    Setattr = 26 { fid: Fid, attr: SetAttr },
    Xattrwalk = 30 { fid: Fid, newfid: Fid, name: P9String },
    Xattrcreate = 32 { fid: Fid, name: P9String, attr_size: u64, flags: u32 },
    Readdir = 40 { fid: Fid, offset: u64, count: u32 },
    Fsync = 50 { fid: Fid, datasync: u32 },
    Lock = 52 {
        fid: Fid, lock_type: LockType, flags: LockFlags, start: u64, length: u64,
        proc_id: u32, client_id: P9String,
    },
    Getlock = 54 {
        fid: Fid, lock_type: LockType, start: u64, length: u64, proc_id: u32,
        client_id: P9String,
    },
    Link = 70 { dfid: Fid, fid: Fid, name: P9String },
    Mkdir = 72 { dfid: Fid, name: P9String, mode: u32, gid: u32 },
    Renameat = 74 { olddirfid: Fid, oldname: P9String, newdirfid: Fid, newname: P9String },
    Unlinkat = 76 { dirfid: Fid, name: P9String, flags: u32 },
    Version = 100 { msize: u32, version: P9String },
    Auth = 102 { afid: Fid, uname: P9String, aname: P9String, n_uname: u32 },
    Attach = 104 { fid: Fid, afid: Fid, uname: P9String, aname: P9String, n_uname: u32 },
    Flush = 108 { oldtag: Tag },
    Walk = 110 { fid: Fid, newfid: Fid, wnames: Vec<P9String> },
    Read = 116 { fid: Fid, offset: u64, count: u32 },
    Write = 118 { fid: Fid, offset: u64, data: Data },
    Clunk = 120 { fid: Fid },
    Remove = 122 { fid: Fid },
});

messages!(Rmessage, Rtype, 'R', {
    Lerror = 7 { ecode: Errno },
    Statfs = 9 { stat: StatFs },
    Lopen = 13 { qid: Qid, iounit: u32 },
    Lcreate = 15 { qid: Qid, iounit: u32 },
    Symlink = 17 { qid: Qid },
    Mknod = 19 { qid: Qid },
    Rename = 21 {},
    Readlink = 23 { target: P9String },
    Getattr = 25 { attr: Attr },
    Setattr = 27 {},
    Xattrwalk = 31 { size: u64 },
    Xattrcreate = 33 {},
    Readdir = 41 { entries: DirentList },
    Fsync = 51 {},
    Lock = 53 { status: LockStatus },
    Getlock = 55 { lock_type: LockType, start: u64, length: u64, proc_id: u32, client_id: P9String },
    Link = 71 {},
    Mkdir = 73 { qid: Qid },
    Renameat = 75 {},
    Unlinkat = 77 {},
    Version = 101 { msize: u32, version: P9String },
    Auth = 103 { aqid: Qid },
    Attach = 105 { qid: Qid },
    Flush = 109 {},
    Walk = 111 { wqids: Vec<Qid> },
    Read = 117 { data: Data },
    Write = 119 { count: u32 },
    Clunk = 121 {},
    Remove = 123 {},
});

impl Tmessage {
    /// The fid a request works on: the one whose barrier the server takes (for the
    /// entry-making requests, the directory's), or `None` for requests about no fid.
    pub fn primary_fid(&self) -> Option<Fid> {
        use Tmessage as T;
        Some(match *self {
            T::Statfs { fid }
            | T::Lopen { fid, .. }
            | T::Lcreate { fid, .. }
            | T::Symlink { fid, .. }
            | T::Rename { fid, .. }
            | T::Readlink { fid }
            | T::Getattr { fid, .. }
            | T::Setattr { fid, .. }
            | T::Xattrwalk { fid, .. }
            | T::Xattrcreate { fid, .. }
            | T::Readdir { fid, .. }
            | T::Fsync { fid, .. }
            | T::Lock { fid, .. }
            | T::Getlock { fid, .. }
            | T::Walk { fid, .. }
            | T::Read { fid, .. }
            | T::Write { fid, .. }
            | T::Clunk { fid }
            | T::Remove { fid } => fid,
            T::Mknod { dfid, .. } | T::Link { dfid, .. } | T::Mkdir { dfid, .. } => dfid,
            T::Renameat { olddirfid, .. } => olddirfid,
            T::Unlinkat { dirfid, .. } => dirfid,
            T::Lerror {}
            | T::Version { .. }
            | T::Auth { .. }
            | T::Attach { .. }
            | T::Flush { .. } => {
                return None;
            }
        })
    }
}
