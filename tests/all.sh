#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, rustdoc, every test (unit, integration,
# snapshots, property, bounded fuzz), and the loom models. README.md and .ci/run use this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (the embedding API's documentation builds without broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "cargo test --workspace"
cargo test --workspace

step "simulator campaign (release): 2000 seeds, each run twice for determinism"
cargo run --release -p co9p-sim -- run --seeds 2000 --check-determinism --trace-dir "${CARGO_TARGET_DIR:-target}"

if [ -f tests/loom.rs ]; then
  step "loom models (release, --cfg loom)"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" RUSTFLAGS="--cfg loom" \
    cargo test --release --test loom
fi
