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
# Tests that need something optional are marked #[ignore = "needs ..."], never silently passed: they run here
# whenever what they need is present, and the ones that cannot run are listed with the reason.
have_shared() { [ -d "$root/../shared/media" ]; }
have_srt() { command -v gst-inspect-1.0 >/dev/null 2>&1 && gst-inspect-1.0 srtsink >/dev/null 2>&1; }
# Why the window tests cannot run here (nothing when they can): each tool named, and an Xvfb display that
# really starts (a container may lack what Xvfb needs even with it installed).
x_problem() {
    local tool out pid
    for tool in Xvfb xwd; do
        command -v "$tool" >/dev/null 2>&1 || { echo "$tool is not installed"; return; }
    done
    out=$(mktemp)
    Xvfb -displayfd 3 -screen 0 64x64x24 -nolisten tcp 3>"$out" >/dev/null 2>&1 &
    pid=$!
    # Xvfb writes its display number once it accepts clients; 5 s is ample (it takes ~0.1 s).
    for _ in $(seq 50); do
        [ -s "$out" ] || ! kill -0 "$pid" 2>/dev/null && break
        sleep 0.1
    done
    [ -s "$out" ] || echo "Xvfb is installed but could not start a display"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$out"
}
x_why=$(x_problem || true)
x_keys_why=$x_why
if [ -z "$x_why" ] && ! command -v xdotool >/dev/null 2>&1; then
    x_keys_why="xdotool is not installed"
fi
skip_args=()
skipped=()
while IFS=$'\t' read -r name reason; do
    case "$reason" in
        "needs ../shared"*) have_shared && continue ;;
        "needs GStreamer's SRT plugin"*) have_srt && continue ;;
        # The reason printed below says what this machine lacks, not only what the test needs.
        "needs Xvfb"*"xdotool"*) [ -z "$x_keys_why" ] && continue; reason="$reason: here $x_keys_why" ;;
        "needs Xvfb"*) [ -z "$x_why" ] && continue; reason="$reason: here $x_why" ;;
        *) ;;  # an unknown need: skip, and say so below
    esac
    skip_args+=(--skip "$name")
    skipped+=("$name: $reason")
done < <(awk '
    match($0, /#\[ignore = "[^"]*"\]/) { reason = substr($0, RSTART + 12, RLENGTH - 14); next }
    reason != "" && match($0, /fn [a-z0-9_]+\(/) { print substr($0, RSTART + 3, RLENGTH - 4) "\t" reason; reason = "" }
' tests/*.rs src/*.rs src/*/*.rs)

echo "== cargo test (including the ignored tests whose needs are present)"
cargo test --locked "$@" -- --include-ignored "${skip_args[@]}"
if [ ${#skipped[@]} -eq 0 ]; then
    echo "== skipped: none (everything the optional tests need is present)"
else
    echo "== skipped ${#skipped[@]} tests, for what this machine lacks:"
    printf '   %s\n' "${skipped[@]}"
fi
