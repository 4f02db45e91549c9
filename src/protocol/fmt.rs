//! How each field prints in the one-line PDU form used by traces, snapshots and failure
//! reports: `Twalk tag=1 fid=0 newfid=1 wnames=["a","b"]`.

use std::fmt::{self, Formatter, Result};

use super::errno::Errno;
use super::types::*;
use super::wire::{Data, DirentList};

/// A field's trace form: compact, no spaces inside a value, stable across builds.
pub trait TraceFmt {
    /// Writes the trace form of the value.
    fn trace(&self, f: &mut Formatter<'_>) -> Result;
}

macro_rules! trace_display {
    ($($t:ty),*) => {$(
        impl TraceFmt for $t {
            fn trace(&self, f: &mut Formatter<'_>) -> Result {
                write!(f, "{}", self)
            }
        }
    )*};
}
trace_display!(u8, u16, u32, u64);

macro_rules! trace_inner {
    ($($t:ty => $fmt:literal),*) => {$(
        impl TraceFmt for $t {
            fn trace(&self, f: &mut Formatter<'_>) -> Result {
                write!(f, $fmt, self.0)
            }
        }
    )*};
}
trace_inner!(
    Fid => "{}", Tag => "{}", QidType => "{:#x}", GetattrMask => "{:#x}",
    SetattrMask => "{:#x}", OpenFlags => "{:#o}", LockFlags => "{:#x}"
);

impl TraceFmt for Errno {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl TraceFmt for Qid {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        let kind = match self.ty {
            QidType::DIR => "d",
            QidType::SYMLINK => "L",
            QidType::FILE => "f",
            _ => "?",
        };
        write!(f, "({:#x},{},{kind})", self.path, self.version)
    }
}

impl TraceFmt for Timespec {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

impl TraceFmt for P9String {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl TraceFmt for LockType {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        write!(f, "{self:?}")
    }
}

impl TraceFmt for LockStatus {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        write!(f, "{self:?}")
    }
}

impl<T: TraceFmt> TraceFmt for Vec<T> {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        f.write_str("[")?;
        for (i, e) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            e.trace(f)?;
        }
        f.write_str("]")
    }
}

/// Payload bytes: the count, and the first bytes escaped so a trace shows what moved.
impl TraceFmt for Data {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        const PREVIEW: usize = 24;
        let shown = &self.0[..self.0.len().min(PREVIEW)];
        let more = if self.0.len() > PREVIEW { "..." } else { "" };
        write!(f, "{}:\"{}\"{more}", self.0.len(), shown.escape_ascii())
    }
}

impl TraceFmt for DirentList {
    fn trace(&self, f: &mut Formatter<'_>) -> Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            d.name.trace(f)?;
            write!(f, "@{}:{}", d.offset, d.ty)?;
            d.qid.trace(f)?;
        }
        f.write_str("]")
    }
}

/// One field's trace form, by name: fields named `mode` print in octal (`0o644`), as
/// permissions are read; everything else in its type's form.
pub(crate) fn trace_field<T: TraceFmt + 'static>(
    name: &str,
    v: &T,
    f: &mut Formatter<'_>,
) -> Result {
    if name == "mode"
        && let Some(m) = (v as &dyn std::any::Any).downcast_ref::<u32>()
    {
        return write!(f, "{m:#o}");
    }
    v.trace(f)
}

/// Prints `{name=value ...}` for a struct's fields.
macro_rules! trace_struct {
    ($t:ident { $first:ident $(, $f:ident)* }) => {
        impl TraceFmt for $t {
            fn trace(&self, f: &mut Formatter<'_>) -> Result {
                write!(f, concat!("{{", stringify!($first), "="))?;
                trace_field(stringify!($first), &self.$first, f)?;
                $(
                    write!(f, concat!(" ", stringify!($f), "="))?;
                    trace_field(stringify!($f), &self.$f, f)?;
                )*
                f.write_str("}")
            }
        }
    };
}

super::types::traced_wire_structs!(trace_struct);

/// Adapter so any `TraceFmt` value can be used with `{}`.
pub struct Traced<'a, T: ?Sized>(pub &'a T);

impl<T: TraceFmt + ?Sized> fmt::Display for Traced<'_, T> {
    fn fmt(&self, f: &mut Formatter<'_>) -> Result {
        self.0.trace(f)
    }
}
