//! The swarm choices of a run (which operation kinds and faults a seed switches on), the
//! features a command line or a shrunk run switches off (`--off`), and their readable form.

use std::collections::BTreeSet;
use std::fmt;

use crate::guest::{ALL_OPS, OpKind};

/// A swarm feature or an operation kind that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    Latency,
    ErrorsBefore,
    ErrorsAfter,
    ShortIo,
    Stall,
    Flush,
    Tversion,
    Reset,
    LockSwarm,
    FewSlots,
    Hostile,
    Contention,
    Gaps,
    Dirs,
    Nonroot,
    ReplyYield,
    Reclaim,
    Limits,
    /// An operation kind of the workload (never `Walk` or `Clunk`: every seed has them).
    Op(OpKind),
}

/// Every feature, in the order shrinking tries to switch them off.
pub fn all_features() -> Vec<Feature> {
    let mut v = vec![
        Feature::Stall,
        Feature::Latency,
        Feature::ErrorsBefore,
        Feature::ErrorsAfter,
        Feature::ShortIo,
        Feature::Flush,
        Feature::Tversion,
        Feature::Reset,
        Feature::LockSwarm,
        Feature::FewSlots,
        Feature::Hostile,
        Feature::Contention,
        Feature::Gaps,
        Feature::Dirs,
        Feature::Nonroot,
        Feature::ReplyYield,
        Feature::Reclaim,
        Feature::Limits,
    ];
    v.extend(
        ALL_OPS
            .iter()
            .filter(|k| !matches!(k, OpKind::Walk | OpKind::Clunk))
            .map(|&k| Feature::Op(k)),
    );
    v
}

/// The command-line name of an operation kind.
pub fn op_name(k: OpKind) -> &'static str {
    match k {
        OpKind::Walk => "walk",
        OpKind::Attach => "attach",
        OpKind::Statfs => "statfs",
        OpKind::Mknod => "mknod",
        OpKind::Move => "move",
        OpKind::Getlock => "getlock",
        OpKind::Create => "create",
        OpKind::Open => "open",
        OpKind::Read => "read",
        OpKind::Write => "write",
        OpKind::Readdir => "readdir",
        OpKind::Fsync => "fsync",
        OpKind::Mkdir => "mkdir",
        OpKind::Symlink => "symlink",
        OpKind::Readlink => "readlink",
        OpKind::Link => "link",
        OpKind::Rename => "rename",
        OpKind::Unlink => "unlink",
        OpKind::Getattr => "getattr",
        OpKind::Setattr => "setattr",
        OpKind::XattrGet => "xattr-get",
        OpKind::XattrSet => "xattr-set",
        OpKind::Lock => "lock",
        OpKind::Clunk => "clunk",
    }
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Latency => "latency",
            Feature::ErrorsBefore => "errors-before",
            Feature::ErrorsAfter => "errors-after",
            Feature::ShortIo => "short-io",
            Feature::Stall => "stall",
            Feature::Flush => "flush",
            Feature::Tversion => "tversion",
            Feature::Reset => "reset",
            Feature::LockSwarm => "lock-swarm",
            Feature::FewSlots => "few-slots",
            Feature::Hostile => "hostile",
            Feature::Contention => "contention",
            Feature::Gaps => "gaps",
            Feature::Dirs => "dirs",
            Feature::Nonroot => "nonroot",
            Feature::ReplyYield => "reply-yield",
            Feature::Reclaim => "reclaim",
            Feature::Limits => "limits",
            Feature::Op(k) => op_name(k),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Feature {
    type Err = String;
    fn from_str(s: &str) -> Result<Feature, String> {
        all_features()
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = all_features().iter().map(|f| f.name()).collect();
                format!("no feature {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// Features switched off, whatever the seed draws.
pub type Off = BTreeSet<Feature>;

/// `a,b,c`, or `none`.
pub fn off_list(off: &Off) -> String {
    if off.is_empty() {
        return "none".into();
    }
    off.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
}

/// Parses `a,b,c` (or `none`, or nothing).
pub fn parse_off(s: &str) -> Result<Off, String> {
    let s = s.trim();
    if s.is_empty() || s == "none" {
        return Ok(Off::new());
    }
    s.split(',').map(|p| p.trim().parse()).collect()
}

/// `12.5%`.
pub fn percent(p: f64) -> String {
    format!("{}%", (p * 1000.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in all_features() {
            assert_eq!(f.name().parse::<Feature>(), Ok(f));
        }
        assert!("walk".parse::<Feature>().is_err());
        let off = parse_off("stall,read,lock-swarm").unwrap();
        assert_eq!(parse_off(&off_list(&off)).unwrap(), off);
        assert_eq!(parse_off("none").unwrap(), Off::new());
    }
}
