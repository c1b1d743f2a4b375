#!/usr/bin/env bash
# Creates .venv and installs xinference-nb with every extra and the test tools.
# torch is pinned and installed first so that nothing pulls a CUDA build on a CPU machine;
# GPU users: see "Installing on a GPU machine" in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip setuptools wheel
"${PIP[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
"${PIP[@]}" install -q -e ".[all,test]"
.venv/bin/python -c "import torch; assert not torch.version.cuda or '${ALLOW_CUDA:-0}' == '1', 'a CUDA torch slipped in'" \
  || { echo "install.sh: torch is a CUDA build; reinstall torch==2.13.0 (CPU) or set ALLOW_CUDA=1"; exit 1; }
