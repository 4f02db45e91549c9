#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, every test (unit, integration,
# snapshots, property, bounded fuzz), and the loom models. README.md and .ci/run use this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

if [ -f tests/loom.rs ]; then
  step "loom models (release, --cfg loom)"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" RUSTFLAGS="--cfg loom" \
    cargo test --release --test loom
fi
