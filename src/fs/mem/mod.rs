//! `MemFs`: the in-memory backend (being built on branch `memfs`).

/// The in-memory filesystem.
#[derive(Debug, Default)]
pub struct MemFs;
