#!/usr/bin/env bash
# One-time machine setup for building, running and testing latentcam. Idempotent: a second run only checks.
#
#  1. Debian/Ubuntu packages the build and tests need (skipped when already installed):
#     pkg-config + libclang-dev (bindgen for the camera crates), GStreamer dev files and plugins,
#     Xvfb, xdotool and xwd (in x11-apps) for the headless window tests (a display, real key presses,
#     screenshots), python3-pip (to fetch ONNX Runtime), ffmpeg (scripts/make_test_media.sh makes the
#     phone/camera test inputs with it, and the tests check every output frame decodes with it).
#  2. ONNX Runtime 1.31.1's shared library, taken from the PyPI wheel onnxruntime==1.31.1
#     (pip checks the wheel's hash against PyPI), into .ort/ in this checkout (git-ignored).
#     latentcam finds it there by itself; --ort-lib or LATENTCAM_ORT_LIB point elsewhere.
#
# Environment: LATENTCAM_SKIP_APT=1 skips step 1 (for machines where you manage packages yourself).
set -euo pipefail

ORT_VERSION=1.31.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ort_dir="$root/.ort"
ort_lib="$ort_dir/libonnxruntime.so.$ORT_VERSION"

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        say "need root to run: $*  (run this script as root, or install sudo)"
        exit 1
    fi
}

APT_PACKAGES=(
    pkg-config
    libclang-dev
    libgstreamer1.0-dev
    libgstreamer-plugins-base1.0-dev
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly
    gstreamer1.0-libav
    gstreamer1.0-nice
    libgstreamer-plugins-bad1.0-dev
    gstreamer1.0-tools
    ffmpeg
    xvfb
    xauth
    xdotool
    x11-apps
    libx11-6
    libxcursor1
    libxkbcommon0
    python3
    python3-pip
    ca-certificates
)

install_packages() {
    if [ "${LATENTCAM_SKIP_APT:-0}" = 1 ]; then
        say "LATENTCAM_SKIP_APT=1: not installing system packages"
        return
    fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        say "not a Debian/Ubuntu system: install the equivalents of these packages yourself: ${APT_PACKAGES[*]}"
        return
    fi
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages: all present"
        return
    fi
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_onnxruntime() {
    if [ -f "$ort_lib" ]; then
        say "ONNX Runtime: $ort_lib present"
        return
    fi
    local python
    python=$(command -v python3 || true)
    if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
        say "python3 with pip is needed to fetch the ONNX Runtime wheel (apt-get install python3-pip)"
        exit 1
    fi
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    say "downloading onnxruntime==$ORT_VERSION from PyPI"
    # --only-binary and the host's own platform tags: the wheel that matches this machine's CPU architecture.
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
        "onnxruntime==$ORT_VERSION" -d "$tmp"
    mkdir -p "$ort_dir"
    "$python" - "$tmp" "$ort_dir" "$ORT_VERSION" <<'PY'
import glob, os, sys, zipfile
tmp, out, version = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
wanted = {f"libonnxruntime.so.{version}", "libonnxruntime_providers_shared.so"}
with zipfile.ZipFile(wheel) as z:
    found = [n for n in z.namelist() if os.path.basename(n) in wanted]
    if not any(n.endswith(f"libonnxruntime.so.{version}") for n in found):
        sys.exit(f"setup: {wheel} has no libonnxruntime.so.{version}")
    for name in found:
        target = os.path.join(out, os.path.basename(name))
        with z.open(name) as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(target + ".part", target)
print(f"setup: ONNX Runtime unpacked from {os.path.basename(wheel)}", file=sys.stderr)
PY
    ln -sf "libonnxruntime.so.$ORT_VERSION" "$ort_dir/libonnxruntime.so"
    say "ONNX Runtime: $ort_lib"
}

check_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        say "cargo not found: install the Rust toolchain (https://rustup.rs, Rust >= 1.92), then run this again"
        exit 1
    fi
}

install_packages
install_onnxruntime
check_rust
say "done"
