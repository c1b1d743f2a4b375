#!/usr/bin/env bash
# Downloads into .whl/ (or $1) the wheels that scripts/gpu-check.sh installs on a bare GPU machine:
# one that has python3 with torch (CUDA), transformers, accelerate, sentence-transformers, peft,
# safetensors, huggingface_hub, numpy, jinja2, psutil, tqdm, filelock, pyyaml and pytest, but not
# our other dependencies, and no network. .whl/ is git-ignored (add `/.whl/` to .git/info/exclude).
#
#   scripts/gpu-wheels.sh                      # CPython 3.12, x86-64 Linux wheels into .whl/
#   PYVER=3.11 scripts/gpu-wheels.sh /tmp/whl  # other Python, other folder (e.g. to try them here)
#
# Every package is named with its version and --no-deps: nothing else is resolved. The bitsandbytes
# wheel ships a library per CUDA / ROCm / XPU version (41 MiB); the copy kept here holds only the
# CPU and CUDA 13 libraries (BNB_KEEP, a regex on the .so names) so the whole folder stays small,
# and its RECORD is rewritten to match. BNB_KEEP=all keeps the wheel as published.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
PYVER="${PYVER:-3.12}"
BNB_KEEP="${BNB_KEEP:-cpu|cuda13[0-9]}"
PKGS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  gguf==0.19.0
  diffusers==0.42.1 pillow==13.0.0
  requests==2.34.2 urllib3==2.8.0 certifi==2026.10.19.post1 charset-normalizer==3.5.3 idna==3.20
  bitsandbytes==0.50.2
)
mkdir -p "$DEST"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${PKGS[@]}"

if [ "$BNB_KEEP" != all ]; then
  python3 - "$DEST" "$BNB_KEEP" <<'EOF'
import os
import re
import sys
import zipfile
from pathlib import Path

dest, keep = Path(sys.argv[1]), re.compile(rf"libbitsandbytes_({sys.argv[2]})\.so$")
for whl in sorted(dest.glob("bitsandbytes-*.whl")):
    with zipfile.ZipFile(whl) as zin:
        names = zin.namelist()
        drop = {n for n in names if re.search(r"libbitsandbytes_[A-Za-z0-9_]+\.so$", n) and not keep.search(n)}
        if not drop:
            continue
        if not any(keep.search(n) for n in names):
            sys.exit(f"{whl.name}: no library matches BNB_KEEP={sys.argv[2]!r}; refusing to strip them all")
        tmp = whl.with_name(whl.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                if info.filename in drop:
                    continue
                data = zin.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    rows = [r for r in data.decode().splitlines() if r.split(",")[0] not in drop]
                    data = ("\n".join(rows) + "\n").encode()
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, whl)
    print(f"{whl.name}: kept {sorted(n.rsplit('/', 1)[-1] for n in names if keep.search(n))}, "
          f"dropped {len(drop)} other libraries ({whl.stat().st_size / 2**20:.1f} MiB now)")
EOF
fi
du -sh "$DEST"
