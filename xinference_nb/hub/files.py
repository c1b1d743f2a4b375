"""Which files of a hub repository a launch needs, from the repository's file list alone.

* ggufv2: the one GGUF file of the quantization asked for (all its parts when it is split): the name
  ``model_file_name_template`` makes with the quantization (or ``model_file_name_split_template`` with
  ``quantization_parts``), else the file whose name states that quantization; never the others.
* every other format (a Hugging Face folder): configs, tokenizer files, chat templates, the model
  card, code, and the weights in one format per folder — safetensors where a folder has them, never
  other formats' files (GGUF, ONNX, OpenVINO, TensorFlow, Flax, ``original/`` checkpoints), training
  state, a variant (``*.fp16.safetensors``) next to its plain file, or a diffusers repository's
  single-file checkpoints beside its pipeline folders.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Optional

from ..errors import LaunchError
from ..metadata.gguf import is_first_part, split_siblings
from ..metadata.quant import gguf_name_quantization

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
FOLDER_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".py", ".tiktoken", ".vocab", ".bpe") + WEIGHT_SUFFIXES
MODEL_CARD = "README.md"
# folders that hold the model in another format than a Hugging Face folder
OTHER_FORMAT_DIRS = frozenset({"original", "onnx", "openvino", "coreml", "gguf", "tf", "flax", "mlx"})
_TRAINING_STATE = re.compile(r"(?:^|/)(?:optimizer|scheduler|rng_state[^/]*|training_args)\.(?:pt|pth|bin)$")
_VARIANT = re.compile(r"\.(?:fp16|bf16|fp32|ema|non_ema|no_ema)(?=\.(?:safetensors|bin)$)")


def safe_name(name: object) -> bool:
    """A repository path that stays inside the snapshot: relative, no "..", no empty part, no backslash."""
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/") or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def needed_files(names: list[str], model_format: Optional[str], quantization: Optional[str],
                 template: Optional[str] = None, split_template: Optional[str] = None,
                 parts: Optional[dict[str, list[str]]] = None, where: str = "the repository") -> list[str]:
    """The files of ``names`` a launch in ``model_format`` needs; for ggufv2 the file to load comes
    first. LaunchError (naming ``where`` and listing what it holds) when the files cannot serve it."""
    names = [n for n in names if safe_name(n)]
    if model_format == "ggufv2":
        return gguf_files(names, quantization, template, split_template, parts, where)
    chosen = folder_files(names)
    if not any(n.endswith(WEIGHT_SUFFIXES) for n in chosen):
        raise LaunchError(f"{where} has no weights for model_format {model_format or 'pytorch'!r} (safetensors, "
                          f".bin, .pt); it holds: {_listing(names)}. Check model_id and model_format (a GGUF "
                          "repository is model_format='ggufv2')")
    return chosen


def folder_files(names: list[str]) -> list[str]:
    """Configs, tokenizer, templates, card, code and one format of weights per folder (module docstring)."""
    kept = [n for n in names if _folder_file(n)]
    weights = [n for n in kept if n.endswith(WEIGHT_SUFFIXES)]
    drop: set[str] = set()
    folders: dict[str, list[str]] = {}
    for name in weights:
        folders.setdefault(str(PurePosixPath(name).parent), []).append(name)
    for folder, files in folders.items():
        safetensors = [f for f in files if f.endswith(".safetensors")]
        if safetensors:
            drop.update(f for f in files if not f.endswith(".safetensors"))
            plain = [f for f in safetensors if not PurePosixPath(f).name.startswith("consolidated")]
            if plain and len(plain) < len(safetensors):
                drop.update(set(safetensors) - set(plain))   # Mistral's consolidated copy of the same weights
        drop.update(f for f in files if _VARIANT.search(f) and _VARIANT.sub("", f) in files)
        if folder == "." and "model_index.json" in names:
            drop.update(files)          # a diffusers pipeline loads its component folders, not a single file
    return sorted(n for n in kept if n not in drop)


def _folder_file(name: str) -> bool:
    top = name.split("/", 1)[0] if "/" in name else ""
    if top.lower() in OTHER_FORMAT_DIRS or _TRAINING_STATE.search(name):
        return False
    return name == MODEL_CARD or name.endswith(FOLDER_SUFFIXES)


def gguf_files(names: list[str], quantization: Optional[str], template: Optional[str],
               split_template: Optional[str], parts: Optional[dict[str, list[str]]], where: str) -> list[str]:
    """The GGUF file of ``quantization`` (and its other parts), the file to load first."""
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    q = quantization or ""
    if template:
        wanted = template.replace("{quantization}", q)
        hit = _find(ggufs, wanted)
        if hit is not None:
            return _with_parts(hit, ggufs)
        pieces = [split_template.replace("{quantization}", q).replace("{part}", p)
                  for p in (parts or {}).get(q, [])] if split_template else []
        found = [_find(ggufs, p) for p in pieces]
        if pieces and all(found):
            return [f for f in found if f]
        raise LaunchError(f"{where} has no {wanted!r} (model_file_name_template {template!r} with quantization "
                          f"{q!r}); its GGUF files: {_listing(ggufs)}. Pick the quantization of one of them")
    models = [n for n in ggufs if is_first_part(PurePosixPath(n).name)
              and not PurePosixPath(n).name.lower().startswith("mmproj")]
    named = [n for n in models if q and (gguf_name_quantization(n) or "").lower() == q.lower()]
    if len(named) == 1:
        return _with_parts(named[0], ggufs)
    if not named and len(models) == 1 and (not q or gguf_name_quantization(models[0]) is None):
        return _with_parts(models[0], ggufs)
    why = f"{len(named)} GGUF files state quantization {q!r}" if named else (
        f"no GGUF file states quantization {q!r}" if q else "it holds several GGUF files and no quantization was given")
    raise LaunchError(f"{where}: {why}; its GGUF files: {_listing(ggufs)}. Set model_file_name_template in the "
                      "registration (e.g. 'model-{quantization}.gguf') or launch with the quantization of one file")


def _find(names: list[str], wanted: str) -> Optional[str]:
    """``wanted`` among ``names``, exactly or ignoring case."""
    if wanted in names:
        return wanted
    return next((n for n in names if n.lower() == wanted.lower()), None)


def _with_parts(first: str, names: list[str]) -> list[str]:
    """``first`` and, for a split GGUF, its other parts (LaunchError naming a part the list lacks)."""
    folder = PurePosixPath(first).parent
    wanted = [str(folder / p.name) if str(folder) != "." else p.name for p in split_siblings(PurePosixPath(first))]
    missing = [w for w in wanted if _find(names, w) is None]
    if missing:
        raise LaunchError(f"{first} is part of a split GGUF whose parts {', '.join(missing)} the repository lacks")
    return [_find(names, w) or w for w in wanted]


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return (shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")) if names else "nothing"
