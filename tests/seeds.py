"""The six seed documents of Xinference's custom-model page, with their model_uri pointed at
real folders/files so that they register (Xinference, like us, refuses missing local paths)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from reference import SEED_TEMPLATES as SEED_DIR
# seed file → model type as Xinference spells it
SEED_TYPES = {"llm": "LLM", "embedding": "embedding", "rerank": "rerank", "image": "image", "audio": "audio",
              "flexible": "flexible"}


def seed(kind: str) -> dict:
    return json.loads((SEED_DIR / f"{kind}.json").read_text())


def seed_with_paths(kind: str, root: Path) -> dict:
    """The seed with every file:///path/to/… uri replaced by a folder that exists under root."""
    doc = copy.deepcopy(seed(kind))
    folder = root / f"{kind}-model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    if "model_specs" in doc:
        for spec in doc["model_specs"]:
            spec["model_uri"] = f"file://{folder}"
    else:
        doc["model_uri"] = f"file://{folder}"
    return doc
