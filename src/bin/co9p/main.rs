//! The `co9p` command: serve a directory over 9P2000.L.
//!
//! `co9p serve --export DIR --listen tcp:HOST:PORT` (or `unix:PATH`). The CLI itself is in
//! `cli.rs`; under `cfg(loom)` (the loom model-checking build, where the production thread
//! pool does not exist) the binary is an empty stub so `cargo test --test loom` can build.

#[cfg(not(loom))]
mod cli;
#[cfg(not(loom))]
mod vhost;

#[cfg(not(loom))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(loom)]
fn main() {}
