#!/usr/bin/env bash
# The test command (README, .ci/run): sets the machine up, then checks formatting, lints, the build without
# optional system libraries, and runs every test. Safe to run again; setup only installs what is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/setup.sh"

if cargo fmt --version >/dev/null 2>&1; then
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
else
    echo "== SKIPPED cargo fmt: the rustfmt component is not installed (rustup component add rustfmt)"
fi
if cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy (warnings are errors)"
    cargo clippy --all-targets --locked -- -D warnings
else
    echo "== SKIPPED cargo clippy: the clippy component is not installed (rustup component add clippy)"
fi
echo "== cargo build --no-default-features (the GPU-machine build: no GStreamer, X11 or camera libraries)"
cargo build --no-default-features --locked
echo "== cargo test"
cargo test --locked "$@"
