#!/usr/bin/env bash
# Installs xinference==4.1.0 into its own venv (.venv-xinference) for the cluster tests and the
# side-by-side bench. It pins versions ours may not share, so the two stay apart; the same CPU torch
# is pinned by a constraints file, and PyPI's torchvision (which does not import beside that torch)
# is removed. diffusers (for Xinference's image models) is resolved in the same pip run as xinference,
# so it cannot lift huggingface-hub or click past what xinference and transformers accept.
# imageio-ffmpeg provides the ffmpeg binary Xinference's audio transcription needs (linked below).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-xinference
if [ -x "$VENV/bin/xinference-local" ] && [ -x "$VENV/bin/ffmpeg" ] && "$VENV/bin/python" -c "import xinference, sentence_transformers, diffusers" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
CONSTRAINTS="$(mktemp)"
echo "torch==${TORCH_VERSION:-2.13.0}" > "$CONSTRAINTS"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "xinference==4.1.0" sentence-transformers transformers accelerate \
  diffusers "click<8.2.0" imageio-ffmpeg
"${PIP[@]}" uninstall -y -q torchvision || true
# Xinference's whisper models decode uploaded audio with the ffmpeg binary (transformers' ffmpeg_read);
# imageio-ffmpeg ships a static one: link it into the venv's bin, which the servers have on PATH.
ln -sf "$("$VENV/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" "$VENV/bin/ffmpeg"
rm -f "$CONSTRAINTS"
