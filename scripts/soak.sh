#!/usr/bin/env bash
# The soak benchmark (BENCHMARKS.md): `latentcam run` over FRAMES frames (default 20000) of the test pattern
# through the tiny model at 32x32, offline, into a null sink. Checks that exactly FRAMES frames are delivered
# and samples the resident memory (VmRSS) every second; prints the figure after warm-up (10% of the frames),
# the peak and the end, and the growth from warm-up to the end.
#
# Usage: scripts/soak.sh [FRAMES]   (build first: cargo build --release; LATENTCAM_BIN=path picks another binary)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
frames=${1:-20000}
bin="${LATENTCAM_BIN:-$root/target/release/latentcam}"
[ -x "$bin" ] || { echo "soak: build first: cargo build --release" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/soak.toml" <<TOML
mode = "offline"
stats-interval-s = 0
[source]
kind = "test-pattern"
width = 32
height = 32
frames = $frames
[model]
dir = "$root/models/tiny-sd-turbo"
size = [32, 32]
[params]
steps = 1
[[sink]]
kind = "null"
TOML
"$bin" --ep cpu -q run "$tmp/soak.toml" --stats-json "$tmp/stats.json" &
pid=$!
start=$(date +%s)
: > "$tmp/rss"
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(( $(date +%s) - start )) $rss" >> "$tmp/rss"
    sleep 1
done
wait "$pid"
secs=$(( $(date +%s) - start ))
delivered=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['frames_delivered']['null0'])" "$tmp/stats.json")
python3 - "$tmp/rss" "$secs" "$frames" "$delivered" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
secs, frames, delivered = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
warm = rows[max(0, len(rows) // 10)][1]
end, peak = rows[-1][1], max(r for _, r in rows)
growth = 100.0 * (end - warm) / warm
print(f"frames {delivered}/{frames} in {secs} s ({delivered / max(secs, 1):.0f} fps); RSS after warm-up {warm / 1024:.1f} MiB, "
      f"peak {peak / 1024:.1f} MiB, end {end / 1024:.1f} MiB: growth {growth:+.2f}% ({len(rows)} samples)")
sys.exit(0 if delivered == frames and growth < 5.0 else 1)
PY
