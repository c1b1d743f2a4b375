#!/usr/bin/env bash
# Installs the headless browser the browser test (tests/test_browser.py) drives: Debian's chromium at
# /usr/bin/chromium (Playwright is pointed at it; `playwright install` is never run). Idempotent: does
# nothing when the browser is there. Needs root (or sudo) and apt; elsewhere the test skips with a reason.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-browser.sh: not root and no sudo; the browser test will skip (install chromium yourself)" >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser.sh: no apt-get here; install chromium at /usr/bin/chromium (or set XNB_CHROMIUM)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version || true
