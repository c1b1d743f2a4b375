"""Where the repository's reference data lives (see reference/README.md): the one home of these paths for
the tests, the benches and scripts/build_builtin_catalog.py. Not part of the installed package."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SEED_TEMPLATES = ROOT / "seed-templates"    # Xinference's six custom-model example documents
CATALOG = ROOT / "xinference-catalog"       # Xinference 4.1's catalog extract, <model type>.jsonl
CORPUS = ROOT / "corpus"                    # real model config files, <Org--Name>/ with SOURCE.txt
