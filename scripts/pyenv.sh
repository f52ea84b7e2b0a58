#!/usr/bin/env bash
# Creates the Python environment for model export and golden files (.venv-scripts, git-ignored).
# Not needed to build or test latentcam; only to regenerate models/ and tests/golden/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${LATENTCAM_PYENV:-$root/.venv-scripts}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$root/scripts/requirements.txt"
# open_clip_torch ships the original CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) and the reference
# SimpleTokenizer; its own dependencies (timm, ...) are not needed for that.
"$venv/bin/pip" install -q --no-deps open_clip_torch==3.3.0
echo "$venv"
