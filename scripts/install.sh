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
# langchain-xinference (tests/test_frameworks.py) pins xinference-client<2 and langchain-core<0.4, which would
# downgrade the xinference-client 4.1 and langchain-core 1.x above; it runs unchanged on them, so no deps.
"${PIP[@]}" install -q --no-deps "langchain-xinference==0.1.2"
.venv/bin/python -c "import torch; assert not torch.version.cuda or '${ALLOW_CUDA:-0}' == '1', 'a CUDA torch slipped in'" \
  || { echo "install.sh: torch is a CUDA build; reinstall torch==2.13.0 (CPU) or set ALLOW_CUDA=1"; exit 1; }
