//! A validated file name: one path component the guest may use.

use std::fmt;

use crate::protocol::{Errno, P9String};

/// Longest name accepted, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// One path component: non-empty, at most [`NAME_MAX`] bytes, no `/`, no NUL, and not `.`
/// or `..`. The server resolves `..` itself (never past the export root), so a filesystem
/// never sees a name that could leave the directory it is applied to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Box<[u8]>);

impl Name {
    /// Validates `bytes` as a name: `EINVAL` for empty, `/`, NUL, `.` or `..`;
    /// `ENAMETOOLONG` past [`NAME_MAX`].
    pub fn new(bytes: &[u8]) -> Result<Name, Errno> {
        if bytes.is_empty() || bytes == b"." || bytes == b".." {
            return Err(Errno::EINVAL);
        }
        if bytes.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if bytes.iter().any(|&b| b == b'/' || b == 0) {
            return Err(Errno::EINVAL);
        }
        Ok(Name(bytes.into()))
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<&P9String> for Name {
    type Error = Errno;
    fn try_from(s: &P9String) -> Result<Name, Errno> {
        Name::new(s.as_bytes())
    }
}

impl TryFrom<&str> for Name {
    type Error = Errno;
    fn try_from(s: &str) -> Result<Name, Errno> {
        Name::new(s.as_bytes())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_could_escape_or_confuse() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(
                Name::new(bad),
                Err(Errno::EINVAL),
                "{:?}",
                bad.escape_ascii().to_string()
            );
        }
        assert_eq!(Name::new(&[b'x'; 256]), Err(Errno::ENAMETOOLONG));
        assert!(Name::new(&[b'x'; 255]).is_ok());
        assert!(Name::new(b"...").is_ok());
        assert!(
            Name::new(&[0xff, 0xfe]).is_ok(),
            "names are bytes, not UTF-8"
        );
    }
}
