#!/usr/bin/env python
"""Build xinference_nb's shipped built-in model catalog.

Reads the extract of Xinference 4.1's published catalog (one JSON object a line:
``llm.jsonl``, ``embedding.jsonl``, ``rerank.jsonl``, ``image.jsonl``, ``audio.jsonl``)
and writes ``xinference_nb/registry/builtin/{llm,embedding,rerank,image,audio}.json``:
a JSON list per model type, one version-2 document per model, ``"is_builtin": true``.

The facts (names, context lengths, languages, abilities, chat templates, stop tokens,
reasoning tags, model ids) come from Xinference's catalog; this script decides what we
ship and in which shape. See ``xinference_nb/registry/builtin/README.md``.

Usage (from the repository root)::

    python scripts/build_builtin_catalog.py                 # write the files
    python scripts/build_builtin_catalog.py --check         # exit 1 if the files are stale
    python scripts/build_builtin_catalog.py --source DIR    # another catalog extract

Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from reference import CATALOG as DEFAULT_SOURCE, CORPUS as DEFAULT_CORPUS  # noqa: E402  reference/README.md
DEFAULT_OUT = REPO_ROOT / "xinference_nb" / "registry" / "builtin"

MODEL_TYPES = ("llm", "embedding", "rerank", "image", "audio")

# LLM spec formats we can run; the catalog's "mlx" and "fp4" specs are dropped.
LLM_KEEP_FORMATS = ("pytorch", "ggufv2", "gptq", "awq", "fp8", "bnb")
# Image families we ship.
IMAGE_KEEP_FAMILIES = ("stable_diffusion", "ocr")

HUB = "huggingface"

# Key order of each document type (also the set of required keys).
LLM_KEYS = (
    "version", "model_name", "model_description", "context_length", "model_lang",
    "model_ability", "model_specs", "chat_template", "stop_token_ids", "stop",
    "reasoning_start_tag", "reasoning_end_tag", "tool_parser", "architectures",
    "is_builtin",
)
LLM_SPEC_KEYS = (
    "model_format", "model_size_in_billions", "quantization", "model_id", "model_hub",
    "model_uri", "model_revision", "model_file_name_template",
    "activated_size_in_billions",
)
EMBEDDING_KEYS = ("version", "model_name", "dimensions", "max_tokens", "language",
                  "model_specs", "is_builtin")
RERANK_KEYS = ("version", "model_name", "type", "max_tokens", "language",
               "model_specs", "is_builtin")
SIMPLE_SPEC_KEYS = ("model_format", "model_hub", "model_id", "model_uri",
                    "model_revision", "quantization")
IMAGE_KEYS = (
    "version", "model_name", "model_family", "model_ability", "model_description",
    "model_id", "model_hub", "model_revision", "controlnet", "default_model_config",
    "default_generate_config", "gguf_model_id", "gguf_quantizations",
    "gguf_model_file_name_template", "lightning_model_id", "lightning_versions",
    "lightning_model_file_name_template", "cache_config", "is_builtin",
)
AUDIO_KEYS = (
    "version", "model_name", "model_family", "model_description", "model_ability",
    "multilingual", "language", "model_id", "model_hub", "model_revision",
    "default_model_config", "default_transcription_config", "engine", "cache_config",
    "is_builtin",
)
# Optional keys allowed besides the required ones: {type: {key: insert-after-key}}.
OPTIONAL_KEYS = {
    "embedding": {"model_ability": "language"},
    "rerank": {"model_ability": "language"},
}


# --------------------------------------------------------------------------------------
# Families added on top of Xinference 4.1's catalog (it no longer ships them, our issue
# requires them). Every fact below is cited.
# --------------------------------------------------------------------------------------

# gemma-2-it chat template: verbatim the "chat_template" of google/gemma-2-2b-it's
# tokenizer_config.json (the copy in reference/corpus/google--gemma-2-2b-it, whose SOURCE.txt
# says it is the same template as the Hugging Face original). It refuses a system role.
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
    "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
    "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
    "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\n'}}{% endif %}"
)

# internlm2.5-chat chat template: the ChatML-style template of internlm/internlm2_5-*-chat
# (tokenizer_config.json: "{{ bos_token }}" + "<|im_start|>role\ncontent<|im_end|>\n" per
# message + "<|im_start|>assistant\n" as generation prompt). The repo's bos_token is "<s>";
# it is written out literally so the template renders the same without a bos_token variable
# (this is also how Xinference's own internlm2.5-chat entry wrote it).
INTERNLM25_CHAT_TEMPLATE = (
    "{{ '<s>' }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _spec(fmt: str, size: int | str, model_id: str, quantization: str = "none") -> dict:
    return {"model_format": fmt, "model_size_in_billions": size, "quantizations": [quantization],
            "model_id": model_id, "model_file_name_template": None}


def added_llm_families(catalog_by_name: dict[str, dict]) -> list[dict]:
    """Catalog-shaped rows for the families we add. Sources in the comments."""
    llama31 = catalog_by_name.get("llama-3.1-instruct")
    if llama31 is None or not llama31.get("chat_template"):
        raise SystemExit("llama-3.2-instruct needs the catalog's llama-3.1-instruct chat_template")
    return [
        {
            # Llama 3.2 1B/3B Instruct: model cards of meta-llama/Llama-3.2-{1B,3B}-Instruct
            # (128K context; officially supported languages en, de, fr, it, pt, hi, es, th;
            # tool calling) and their config.json (LlamaForCausalLM) / generation_config.json
            # (eos ids 128001 <|end_of_text|>, 128008 <|eom_id|>, 128009 <|eot_id|>).
            # Chat template and tool parser: the catalog's llama-3.1-instruct entry (same
            # prompt format and JSON tool-call format as Llama 3.1).
            "model_name": "llama-3.2-instruct",
            "context_length": 131072,
            "model_lang": ["en", "de", "fr", "it", "pt", "hi", "es", "th"],
            "model_ability": ["chat", "tools"],
            "chat_template": llama31["chat_template"],
            "stop_token_ids": [128001, 128008, 128009],
            "stop": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
            "tool_parser": llama31.get("tool_parser"),
            "architectures": ["LlamaForCausalLM"],
            "model_specs": [
                _spec("pytorch", 1, "meta-llama/Llama-3.2-1B-Instruct"),
                _spec("pytorch", 3, "meta-llama/Llama-3.2-3B-Instruct"),
            ],
        },
        {
            # Gemma 2 instruction-tuned: google/gemma-2-2b-it config.json in reference/corpus
            # (Gemma2ForCausalLM, max_position_embeddings 8192, eos_token_id [1, 107]);
            # tokenizer_config.json there (ids 1 = <eos>, 107 = <end_of_turn>, chat template);
            # model card (English). Sizes 2/9/27: google/gemma-2-{2b,9b,27b}-it.
            "model_name": "gemma-2-it",
            "context_length": 8192,
            "model_lang": ["en"],
            "model_ability": ["chat"],
            "chat_template": GEMMA2_CHAT_TEMPLATE,
            "stop_token_ids": [1, 107],
            "stop": ["<eos>", "<end_of_turn>"],
            "tool_parser": None,
            "architectures": ["Gemma2ForCausalLM"],
            "model_specs": [
                _spec("pytorch", 2, "google/gemma-2-2b-it"),
                _spec("pytorch", 9, "google/gemma-2-9b-it"),
                _spec("pytorch", 27, "google/gemma-2-27b-it"),
            ],
        },
        {
            # InternLM2.5 chat: model cards of internlm/internlm2_5-{1_8b,7b,20b}-chat
            # (Chinese + English, tool use), config.json (InternLM2ForCausalLM, 32K
            # max_position_embeddings), tokenizer_config.json (bos "<s>", eos "</s>" = id 2,
            # "<|im_end|>" = id 92542, the ChatML-style template above).
            "model_name": "internlm2.5-chat",
            "context_length": 32768,
            "model_lang": ["en", "zh"],
            "model_ability": ["chat", "tools"],
            "chat_template": INTERNLM25_CHAT_TEMPLATE,
            "stop_token_ids": [2, 92542],
            "stop": ["</s>", "<|im_end|>"],
            "tool_parser": None,
            "architectures": ["InternLM2ForCausalLM"],
            "model_specs": [
                _spec("pytorch", "1_8", "internlm/internlm2_5-1_8b-chat"),
                _spec("pytorch", 7, "internlm/internlm2_5-7b-chat"),
                _spec("pytorch", 20, "internlm/internlm2_5-20b-chat"),
            ],
        },
    ]


def added_embedding_models() -> list[dict]:
    """Catalog-shaped rows for embedding models we add."""
    return [
        {
            # sentence-transformers/all-MiniLM-L6-v2 (used by our demos and tests): model
            # card and config: 384-dim output, inputs truncated at 256 word pieces, English.
            "model_name": "all-MiniLM-L6-v2",
            "dimensions": 384,
            "max_tokens": 256,
            "language": ["en"],
            "model_specs": [{"model_format": "pytorch",
                             "model_id": "sentence-transformers/all-MiniLM-L6-v2"}],
        },
    ]


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------

class Notes:
    """What the build reduced or changed, printed at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, msg: str) -> None:
        self.lines.append(msg)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{lineno}: not JSON: {exc}") from exc
    return rows


def _dedupe(items: Iterable[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, list):
        return list(value)
    return [value]


def convert_llm(rows: list[dict], notes: Notes) -> list[dict]:
    by_name = {r["model_name"]: r for r in rows}
    extra = []
    for row in added_llm_families(by_name):
        if row["model_name"] in by_name:
            notes.add(f"llm: {row['model_name']} is in the catalog now; catalog entry kept, ours skipped")
        else:
            extra.append(row)
            notes.add(f"llm: added family {row['model_name']}")

    docs = []
    for row in list(rows) + extra:
        name = row["model_name"]
        specs: list[dict] = []
        dropped_formats: set[str] = set()
        for spec in row.get("model_specs") or []:
            fmt = spec.get("model_format")
            if fmt not in LLM_KEEP_FORMATS:
                dropped_formats.add(str(fmt))
                continue
            quants = spec.get("quantizations")
            if not quants or not spec.get("model_id"):
                notes.add(f"llm: {name}: dropped {fmt} {spec.get('model_size_in_billions')} spec "
                          f"without quantizations/model_id in the catalog")
                continue
            for quant in quants:
                specs.append({
                    "model_format": fmt,
                    "model_size_in_billions": spec["model_size_in_billions"],
                    "quantization": quant,
                    "model_id": spec["model_id"],
                    "model_hub": HUB,
                    "model_uri": None,
                    "model_revision": None,
                    "model_file_name_template": (spec.get("model_file_name_template")
                                                 if fmt == "ggufv2" else None),
                    "activated_size_in_billions": None,
                })
        n_before = len(specs)
        specs = _dedupe(specs)
        if len(specs) != n_before:
            notes.add(f"llm: {name}: removed {n_before - len(specs)} identical duplicate spec(s)")
        if not specs:
            # Everything was dropped: keep the pytorch specs anyway, if any. A catalog
            # pytorch spec without quantizations/model_id (Ornith-1.5-*: no Hugging Face id
            # in the catalog) becomes quantization "none", model_id null: the family can
            # still be launched from a local model path.
            for spec in row.get("model_specs") or []:
                if spec.get("model_format") == "pytorch":
                    for quant in spec.get("quantizations") or ["none"]:
                        specs.append({
                            "model_format": "pytorch",
                            "model_size_in_billions": spec["model_size_in_billions"],
                            "quantization": quant, "model_id": spec["model_id"],
                            "model_hub": HUB, "model_uri": None, "model_revision": None,
                            "model_file_name_template": None,
                            "activated_size_in_billions": None,
                        })
            if not specs:
                notes.add(f"llm: dropped family {name}: no spec left "
                          f"(formats {sorted(dropped_formats)})")
                continue
            notes.add(f"llm: {name}: no usable spec left; kept its pytorch spec(s) "
                      f"{[(s['model_size_in_billions'], s['model_id']) for s in specs]}")
        for spec in specs:
            if spec["model_format"] == "ggufv2" and not spec["model_file_name_template"]:
                notes.add(f"llm: {name}: ggufv2 {spec['model_size_in_billions']} spec has an empty "
                          f"model_file_name_template in the catalog (kept as is)")
        docs.append({
            "version": 2,
            "model_name": name,
            "model_description": row.get("model_description"),
            "context_length": row["context_length"],
            "model_lang": list(row.get("model_lang") or []),
            "model_ability": list(row.get("model_ability") or []),
            "model_specs": specs,
            "chat_template": row.get("chat_template"),
            "stop_token_ids": row.get("stop_token_ids"),
            "stop": row.get("stop"),
            "reasoning_start_tag": row.get("reasoning_start_tag"),
            "reasoning_end_tag": row.get("reasoning_end_tag"),
            "tool_parser": row.get("tool_parser"),
            "architectures": row.get("architectures"),
            "is_builtin": True,
        })
    return docs


def _simple_specs(row: dict, notes: Notes, kind: str) -> list[dict]:
    specs = [{
        "model_format": spec["model_format"],
        "model_hub": HUB,
        "model_id": spec.get("model_id"),
        "model_uri": None,
        "model_revision": None,
        "quantization": "none",
    } for spec in row.get("model_specs") or []]
    deduped = _dedupe(specs)
    if len(deduped) != len(specs):
        notes.add(f"{kind}: {row['model_name']}: removed {len(specs) - len(deduped)} "
                  f"identical duplicate spec(s)")
    return deduped


def _with_optional(doc: dict, row: dict, kind: str) -> dict:
    """Insert optional keys (model_ability) present in the row, at their stable place."""
    optional = OPTIONAL_KEYS.get(kind, {})
    present = {k: row[k] for k in optional if row.get(k) is not None}
    if not present:
        return doc
    out = {}
    for key, value in doc.items():
        out[key] = value
        for opt, after in optional.items():
            if after == key and opt in present:
                out[opt] = _as_list(present[opt])
    return out


def convert_embedding(rows: list[dict], notes: Notes) -> list[dict]:
    names = {r["model_name"] for r in rows}
    extra = []
    for row in added_embedding_models():
        if row["model_name"] in names:
            notes.add(f"embedding: {row['model_name']} is in the catalog now; ours skipped")
        else:
            extra.append(row)
            notes.add(f"embedding: added {row['model_name']}")
    docs = []
    for row in list(rows) + extra:
        doc = {
            "version": 2,
            "model_name": row["model_name"],
            "dimensions": row["dimensions"],
            "max_tokens": row["max_tokens"],
            "language": list(row.get("language") or []),
            "model_specs": _simple_specs(row, notes, "embedding"),
            "is_builtin": True,
        }
        docs.append(_with_optional(doc, row, "embedding"))
    return docs


def convert_rerank(rows: list[dict], notes: Notes) -> list[dict]:
    docs = []
    for row in rows:
        doc = {
            "version": 2,
            "model_name": row["model_name"],
            "type": row.get("type") or "unknown",
            "max_tokens": row.get("max_tokens"),
            "language": list(row.get("language") or []),
            "model_specs": _simple_specs(row, notes, "rerank"),
            "is_builtin": True,
        }
        docs.append(_with_optional(doc, row, "rerank"))
    return docs


def convert_image(rows: list[dict], notes: Notes) -> list[dict]:
    docs = []
    skipped: dict[str, int] = {}
    for row in rows:
        family = row.get("model_family")
        if family not in IMAGE_KEEP_FAMILIES:
            skipped[str(family)] = skipped.get(str(family), 0) + 1
            continue
        model_id = row.get("model_id")
        if row.get("model_specs"):
            pytorch = [s for s in row["model_specs"] if s.get("model_format") == "pytorch"]
            if pytorch:
                model_id = pytorch[0].get("model_id")
        docs.append({
            "version": 2,
            "model_name": row["model_name"],
            "model_family": family,
            "model_ability": _as_list(row.get("model_ability")),
            "model_description": row.get("model_description"),
            "model_id": model_id,
            "model_hub": HUB,
            "model_revision": None,
            "controlnet": row.get("controlnet") or [],
            "default_model_config": row.get("default_model_config") or {},
            "default_generate_config": row.get("default_generate_config") or {},
            "gguf_model_id": row.get("gguf_model_id"),
            "gguf_quantizations": row.get("gguf_quantizations"),
            "gguf_model_file_name_template": row.get("gguf_model_file_name_template"),
            "lightning_model_id": None,
            "lightning_versions": None,
            "lightning_model_file_name_template": None,
            "cache_config": row.get("cache_config"),
            "is_builtin": True,
        })
    notes.add("image: kept families " + ", ".join(IMAGE_KEEP_FAMILIES) + "; dropped "
              + ", ".join(f"{k} ({v})" for k, v in sorted(skipped.items())))
    return docs


def _looks_like_hf_repo(model_id: Any) -> bool:
    if not isinstance(model_id, str) or model_id.count("/") != 1:
        return False
    owner, repo = model_id.split("/")
    return bool(owner and repo)


def _audio_rank(row: dict) -> tuple[int, int, int]:
    """Lower is better: a Hugging Face repo id, not an MLX build, not a variant (cache_name)."""
    fmt = row.get("model_format")
    engine = str(row.get("engine") or "")
    model_id = row.get("model_id")
    mlx = fmt == "mlx" or engine.lower() == "mlx" or str(model_id).startswith("mlx-community/")
    return (0 if _looks_like_hf_repo(model_id) else 1, 1 if mlx else 0,
            1 if row.get("cache_name") else 0)


def convert_audio(rows: list[dict], notes: Notes) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["model_name"], []).append(row)
    docs = []
    n_dupes = 0
    for name, group in groups.items():
        row = min(group, key=_audio_rank)  # min() keeps the first of equal ranks
        n_dupes += len(group) - 1
        language = row.get("language")
        if language is None:
            language = row.get("model_lang")
        if isinstance(language, str):
            notes.add(f"audio: {name}: language {language!r} (a string in the catalog) "
                      f"written as a one-item list")
        docs.append({
            "version": 2,
            "model_name": name,
            "model_family": row.get("model_family"),
            "model_description": row.get("model_description"),
            "model_ability": _as_list(row.get("model_ability")) or [],
            "multilingual": bool(row.get("multilingual", False)),
            "language": _as_list(language),
            "model_id": row.get("model_id"),
            "model_hub": HUB,
            "model_revision": None,
            "default_model_config": row.get("default_model_config"),
            "default_transcription_config": row.get("default_transcription_config"),
            "engine": row.get("engine"),
            "cache_config": row.get("cache_config"),
            "is_builtin": True,
        })
    notes.add(f"audio: {n_dupes} duplicate-name rows dropped (MLX builds and quantized "
              f"variants; the plain Hugging Face row kept)")
    return docs


CONVERTERS: dict[str, Callable[[list[dict], Notes], list[dict]]] = {
    "llm": convert_llm,
    "embedding": convert_embedding,
    "rerank": convert_rerank,
    "image": convert_image,
    "audio": convert_audio,
}
REQUIRED_KEYS = {
    "llm": LLM_KEYS,
    "embedding": EMBEDDING_KEYS,
    "rerank": RERANK_KEYS,
    "image": IMAGE_KEYS,
    "audio": AUDIO_KEYS,
}

# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _is_opt(value: Any, typ: type | tuple[type, ...]) -> bool:
    return value is None or isinstance(value, typ)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def validate(kind: str, docs: list[dict]) -> list[str]:
    errors: list[str] = []
    required = REQUIRED_KEYS[kind]
    optional = set(OPTIONAL_KEYS.get(kind, {}))
    names: set[str] = set()
    for i, doc in enumerate(docs):
        where = f"{kind}[{i}] {doc.get('model_name')!r}"
        keys = set(doc)
        missing = [k for k in required if k not in keys]
        unknown = sorted(keys - set(required) - optional)
        if missing:
            errors.append(f"{where}: missing keys {missing}")
        if unknown:
            errors.append(f"{where}: unexpected keys {unknown}")
        name = doc.get("model_name")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{where}: model_name must be a non-empty string")
        elif name in names:
            errors.append(f"{where}: duplicate model_name")
        else:
            names.add(name)
        if doc.get("version") != 2 or doc.get("is_builtin") is not True:
            errors.append(f"{where}: version must be 2 and is_builtin true")
        if "model_ability" in doc and not _is_opt(doc["model_ability"], list):
            errors.append(f"{where}: model_ability must be a list")

        if kind == "llm":
            if not isinstance(doc.get("context_length"), int):
                errors.append(f"{where}: context_length must be an int")
            for key in ("model_lang", "model_ability"):
                if not _is_str_list(doc.get(key)):
                    errors.append(f"{where}: {key} must be a list of strings")
            for key in ("model_description", "chat_template", "reasoning_start_tag",
                        "reasoning_end_tag", "tool_parser"):
                if not _is_opt(doc.get(key), str):
                    errors.append(f"{where}: {key} must be a string or null")
            ids = doc.get("stop_token_ids")
            if ids is not None and not (isinstance(ids, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in ids)):
                errors.append(f"{where}: stop_token_ids must be a list of ints or null")
            if doc.get("stop") is not None and not _is_str_list(doc["stop"]):
                errors.append(f"{where}: stop must be a list of strings or null")
            if doc.get("architectures") is not None and not _is_str_list(doc["architectures"]):
                errors.append(f"{where}: architectures must be a list of strings or null")
            specs = doc.get("model_specs")
            if not isinstance(specs, list) or not specs:
                errors.append(f"{where}: model_specs must be a non-empty list")
                continue
            for j, spec in enumerate(specs):
                swhere = f"{where} spec {j}"
                if tuple(spec) != LLM_SPEC_KEYS:
                    errors.append(f"{swhere}: keys {list(spec)} != {list(LLM_SPEC_KEYS)}")
                if spec.get("model_format") not in LLM_KEEP_FORMATS:
                    errors.append(f"{swhere}: model_format {spec.get('model_format')!r}")
                size = spec.get("model_size_in_billions")
                if not (isinstance(size, str) or (isinstance(size, int)
                                                  and not isinstance(size, bool))):
                    errors.append(f"{swhere}: model_size_in_billions must be int or str")
                if not isinstance(spec.get("quantization"), str):
                    errors.append(f"{swhere}: quantization must be one string")
                if not _is_opt(spec.get("model_id"), str):
                    errors.append(f"{swhere}: model_id must be a string or null")
                tmpl = spec.get("model_file_name_template")
                if spec.get("model_format") == "ggufv2":
                    if not isinstance(tmpl, str):
                        errors.append(f"{swhere}: ggufv2 needs a model_file_name_template string")
                elif tmpl is not None:
                    errors.append(f"{swhere}: model_file_name_template only for ggufv2")
                if spec.get("model_hub") != HUB:
                    errors.append(f"{swhere}: model_hub must be {HUB!r}")
        elif kind in ("embedding", "rerank"):
            if kind == "embedding" and not isinstance(doc.get("dimensions"), int):
                errors.append(f"{where}: dimensions must be an int")
            if not isinstance(doc.get("max_tokens"), int):
                errors.append(f"{where}: max_tokens must be an int")
            if not _is_str_list(doc.get("language")):
                errors.append(f"{where}: language must be a list of strings")
            specs = doc.get("model_specs")
            if not isinstance(specs, list) or not specs:
                errors.append(f"{where}: model_specs must be a non-empty list")
                continue
            for j, spec in enumerate(specs):
                if tuple(spec) != SIMPLE_SPEC_KEYS:
                    errors.append(f"{where} spec {j}: keys {list(spec)}")
        elif kind == "image":
            if doc.get("model_family") not in IMAGE_KEEP_FAMILIES:
                errors.append(f"{where}: model_family {doc.get('model_family')!r}")
            for key in ("default_model_config", "default_generate_config"):
                if not isinstance(doc.get(key), dict):
                    errors.append(f"{where}: {key} must be an object")
            if not isinstance(doc.get("controlnet"), list):
                errors.append(f"{where}: controlnet must be a list")
            if not _is_opt(doc.get("model_id"), str):
                errors.append(f"{where}: model_id must be a string or null")
        elif kind == "audio":
            if not isinstance(doc.get("multilingual"), bool):
                errors.append(f"{where}: multilingual must be a bool")
            if not _is_str_list(doc.get("model_ability")):
                errors.append(f"{where}: model_ability must be a list of strings")
            if doc.get("language") is not None and not _is_str_list(doc["language"]):
                errors.append(f"{where}: language must be a list of strings or null")
    return errors


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def dump(docs: list[dict]) -> str:
    return json.dumps(docs, indent=1, ensure_ascii=False) + "\n"


def check_gemma_template(corpus: Path, notes: Notes) -> None:
    """Cross-check the embedded gemma-2 template against the corpus copy, when present."""
    path = corpus / "google--gemma-2-2b-it" / "tokenizer_config.json"
    if not path.is_file():
        notes.add(f"gemma-2-it: {path} not found; embedded template not cross-checked")
        return
    real = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    if real != GEMMA2_CHAT_TEMPLATE:
        raise SystemExit(f"gemma-2-it template differs from {path}")
    notes.add("gemma-2-it: embedded chat template matches the corpus tokenizer_config.json")


def build(source: Path, corpus: Path, notes: Notes) -> dict[str, list[dict]]:
    out = {}
    for kind in MODEL_TYPES:
        path = source / f"{kind}.jsonl"
        if not path.is_file():
            raise SystemExit(f"missing catalog file {path}")
        out[kind] = CONVERTERS[kind](read_jsonl(path), notes)
    check_gemma_template(corpus, notes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with the catalog extract *.jsonl (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder of real config files, used to cross-check the added "
                             "gemma-2 template if present (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the output files differ from a fresh build")
    parser.add_argument("-v", "--verbose", action="store_true", help="print build notes")
    args = parser.parse_args(argv)

    notes = Notes()
    catalogs = build(args.source, args.corpus, notes)

    errors = [e for kind, docs in catalogs.items() for e in validate(kind, docs)]
    if errors:
        for err in errors:
            print("ERROR:", err, file=sys.stderr)
        return 2

    stale = []
    for kind, docs in catalogs.items():
        text = dump(docs)
        target = args.out / f"{kind}.json"
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(str(target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        n_specs = sum(len(d.get("model_specs", [])) for d in docs)
        extra = f", {n_specs} specs" if kind in ("llm", "embedding", "rerank") else ""
        print(f"{kind}.json: {len(docs)} models{extra}")
    if args.verbose:
        for line in notes.lines:
            print("  note:", line)
    if stale:
        print("stale (re-run scripts/build_builtin_catalog.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
