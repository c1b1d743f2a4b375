#!/usr/bin/env bash
# The test command (README and .ci/run): installs what it needs, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
# Debian chromium for the real-browser notebook test (it skips with a reason where that cannot be installed).
./scripts/install-browser.sh
# The real Xinference 4.1 the cluster tests and the side-by-side bench compare against, in its own venv.
./scripts/install-xinference.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
