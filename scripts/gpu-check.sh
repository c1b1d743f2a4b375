#!/usr/bin/env bash
# Runs the CUDA tests (tests/test_gpu.py, marker gpu) on a GPU machine, from the repo root, and
# writes the log to "${OUT:-/tmp}/gpu-check.log". Extra arguments go to pytest (e.g. -k diffusers).
#
# * A bare GPU machine (python3 with torch+CUDA, transformers, accelerate, sentence-transformers ...
#   but not our other dependencies, no network): the wheels in .whl/ (scripts/gpu-wheels.sh) are
#   installed into /tmp/site (GPU_CHECK_SITE) and put first on PYTHONPATH with the repo itself.
# * A GPU box with a venv (scripts/install.sh with a CUDA torch): no .whl/, so pytest just runs with
#   $PYTHON, else .venv/bin/python, else python3.
# The pytest run is cut at GPU_CHECK_TIMEOUT seconds (default 330). GPU_CHECK_WHEELS names another
# wheel folder than .whl (e.g. wheels for another Python, to try the script without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu-check.log"
mkdir -p "$(dirname "$LOG")"
WHEELS="${GPU_CHECK_WHEELS:-.whl}"
have_wheels=0
compgen -G "$WHEELS/*.whl" >/dev/null && have_wheels=1
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ "$have_wheels" = 0 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

run() {
  if [ "$have_wheels" = 1 ]; then
    local site="${GPU_CHECK_SITE:-/tmp/site}"
    echo "== installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels from $WHEELS into $site"
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$site" "$WHEELS"/*.whl || return 1
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  echo "== nvidia-smi"
  nvidia-smi || echo "(nvidia-smi not found)"
  echo "== versions ($PY)"
  "$PY" - <<'EOF'
import importlib.metadata as md
import platform

print("python", platform.python_version())
try:
    import torch

    cuda = torch.cuda.is_available()
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", cuda,
          "devices", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [])
except Exception as exc:  # still print the rest
    print("torch: not importable:", exc)
for name in ("transformers", "accelerate", "tokenizers", "safetensors", "huggingface_hub", "sentence-transformers",
             "diffusers", "bitsandbytes", "peft", "pydantic", "pydantic-core", "gguf", "numpy", "pillow",
             "requests", "pytest", "pytest-timeout"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
EOF
  echo "== pytest"
  timeout "${GPU_CHECK_TIMEOUT:-330}" "$PY" -m pytest tests/test_gpu.py -m gpu -v -p no:cacheprovider "$@"
}

run "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "gpu-check: exit $status, log in $LOG"
exit "$status"
