#!/usr/bin/env bash
# Installs xinference==4.1.0 into its own venv (.venv-xinference) for the cluster tests and the
# side-by-side bench. It pins versions ours may not share, so the two stay apart; the same CPU torch
# is pinned by a constraints file, and PyPI's torchvision (which does not import beside that torch)
# is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-xinference
if [ -x "$VENV/bin/xinference-local" ] && "$VENV/bin/python" -c "import xinference, sentence_transformers" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
CONSTRAINTS="$(mktemp)"
echo "torch==${TORCH_VERSION:-2.13.0}" > "$CONSTRAINTS"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "xinference==4.1.0" sentence-transformers transformers accelerate
"${PIP[@]}" uninstall -y -q torchvision || true
rm -f "$CONSTRAINTS"
