"""Text embedding and rerank models: a sentence-transformers or transformers folder (dimensions from
the Dense / Pooling modules or hidden_size, max tokens, the reranker type), or an embedding GGUF."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError
from ..metadata import hf
from ..metadata.gguf import GGUFInfo
from .context import ASSUMED, Ctx, languages, location_fields, set_first
from .detect import LLM_ARCH, ROBERTA_LIKE, architectures, module_dir
from .names import choose_model_name, family_of

def _text_entry(ctx: Ctx, folder: Path, names: set[str], config_dir: Path) -> dict:
    p = "model_specs[0]."
    entry: dict[str, Any] = {"model_format": "pytorch", "quantization": "none"}
    has_torch = any(n.endswith((".safetensors", ".bin")) for n in hf.file_names(config_dir)) or any(
        n.endswith((".safetensors", ".bin")) for n in names)
    if not has_torch and ("onnx" in names or "model.onnx" in names):
        entry["model_format"] = "onnx"
        ctx.src(p + "model_format", "only ONNX weights in the folder")
    else:
        ctx.src(p + "model_format", "transformers weights" if has_torch else "default (no weight files found)")
        if not has_torch:
            ctx.warn("no weight files (*.safetensors, *.bin) in the folder: the model cannot be launched from it")
    location_fields(ctx, entry, p)
    return entry


def _max_tokens(ctx: Ctx, folder: Path, config_dir: Path, config: dict, sbert: Optional[dict],
                field_name: str = "max_tokens") -> Optional[int]:
    if sbert and isinstance(sbert.get("max_seq_length"), int) and sbert["max_seq_length"] > 0:
        rel = os.path.relpath(config_dir / "sentence_bert_config.json", folder)
        ctx.src(field_name, f"{rel} max_seq_length")
        return sbert["max_seq_length"]
    tok = hf.maybe_json(config_dir, "tokenizer_config.json")
    if tok and isinstance(tok.get("model_max_length"), int) and 0 < tok["model_max_length"] < hf.SENTINEL_CONTEXT:
        ctx.src(field_name, "tokenizer_config.json model_max_length")
        return tok["model_max_length"]
    mpe = config.get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        if config.get("model_type") in ROBERTA_LIKE and mpe > 2:
            ctx.src(field_name, f"config.json max_position_embeddings {mpe} − 2 (RoBERTa-style position offset)")
            return mpe - 2
        ctx.src(field_name, "config.json max_position_embeddings")
        return mpe
    found = hf.context_length(config)
    if found:
        ctx.src(field_name, found[1])
        return found[0]
    return None


def _pooling_dims(folder: Path, modules: Optional[list[dict]]) -> Optional[tuple[int, str]]:
    dirs = module_dir(folder, modules, "Pooling") or sorted(
        (p for p in folder.glob("*_Pooling") if p.is_dir()), key=lambda p: p.name)
    for d in dirs:
        cfg = hf.maybe_json(d, "config.json")
        if not cfg or not isinstance(cfg.get("word_embedding_dimension"), int):
            continue
        dim = cfg["word_embedding_dimension"]
        modes = [k for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                             "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                             "pooling_mode_lasttoken") if cfg.get(k)]
        rel = os.path.relpath(d / "config.json", folder)
        if len(modes) > 1:
            return dim * len(modes), f"{rel} word_embedding_dimension {dim} × {len(modes)} pooling modes"
        return dim, f"{rel} word_embedding_dimension"
    return None


def _dense_dims(folder: Path, modules: Optional[list[dict]]) -> Optional[tuple[int, str]]:
    dirs = module_dir(folder, modules, "Dense") or sorted(
        (p for p in folder.glob("*_Dense") if p.is_dir()), key=lambda p: p.name)
    found = None
    for d in dirs:
        cfg = hf.maybe_json(d, "config.json")
        if cfg and isinstance(cfg.get("out_features"), int):
            found = cfg["out_features"], f"{os.path.relpath(d / 'config.json', folder)} out_features"
    return found


def embedding_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                       model_name: Optional[str], *, modules: Optional[list[dict]] = None,
                       config_dir: Optional[Path] = None, **_: Any) -> dict:
    config_dir = config_dir or folder
    fam = family_of(ctx, model_family)
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    dims = _dense_dims(folder, modules) or _pooling_dims(folder, modules)
    if dims is None:
        hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
        if isinstance(hidden, int):
            dims = hidden, "config.json hidden_size"
        elif fam is not None:
            dims = fam.dimensions, ctx.family_label
    if dims is None:
        raise ParseError(f"{config_dir / 'config.json'}: cannot tell the embedding size (no Dense or Pooling module, "
                         "no hidden_size)")
    doc["dimensions"] = dims[0]
    ctx.src("dimensions", dims[1])
    sbert = hf.maybe_json(config_dir, "sentence_bert_config.json")
    max_tokens = _max_tokens(ctx, folder, config_dir, config, sbert)
    if max_tokens is None:
        if fam is not None:
            max_tokens = fam.max_tokens
            ctx.src("max_tokens", ctx.family_label)
        else:
            max_tokens = 512
            ctx.src("max_tokens", ASSUMED)
            ctx.warn("no max_seq_length / model_max_length / max_position_embeddings: max_tokens assumed 512")
    doc["max_tokens"] = max_tokens
    doc["language"] = languages(ctx, folder, "language", family_value=fam.language if fam is not None else None,
                                use_name=True)
    ctx.facts["architectures"] = architectures(config)
    doc["model_specs"] = [_text_entry(ctx, folder, names, config_dir)]
    return doc


def rerank_from_dir(ctx: Ctx, folder: Path, names: set[str], config: dict, model_family: Optional[str],
                    model_name: Optional[str], *, config_dir: Optional[Path] = None, **_: Any) -> dict:
    config_dir = config_dir or folder
    fam = family_of(ctx, model_family)
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    archs = architectures(config)
    ctx.facts["architectures"] = archs
    low = " ".join(archs).lower() + " " + ctx.loc.name_hint.lower()
    if fam is not None and fam.type and fam.type != "unknown":
        doc["type"] = fam.type   # how Xinference runs the family, whatever the head looks like
        ctx.src("type", ctx.family_label)
    elif "layerwise" in low:
        doc["type"] = "LLM-based layerwise"
        ctx.src("type", f"'layerwise' in the architecture / name ({archs})")
    elif any(LLM_ARCH.search(a) for a in archs):
        doc["type"] = "LLM-based"
        ctx.src("type", f"config.json architectures {archs} (a causal LM)")
    elif any(a.endswith("ForSequenceClassification") for a in archs) or \
            (hf.maybe_json(folder, "config_sentence_transformers.json") or {}).get("model_type") == "CrossEncoder":
        doc["type"] = "normal"
        ctx.src("type", f"config.json architectures {archs} (a cross-encoder)")
    elif fam is not None:
        doc["type"] = fam.type
        ctx.src("type", ctx.family_label)
    else:
        doc["type"] = "unknown"
        ctx.src("type", ASSUMED)
    sbert = hf.maybe_json(config_dir, "sentence_bert_config.json")
    max_tokens = _max_tokens(ctx, folder, config_dir, config, sbert)
    if max_tokens is None and fam is not None and fam.max_tokens:
        max_tokens = fam.max_tokens
        ctx.src("max_tokens", ctx.family_label)
    if max_tokens is not None:
        doc["max_tokens"] = max_tokens
    else:
        ctx.warn("no max_seq_length / model_max_length / max_position_embeddings: max_tokens left unset")
    doc["language"] = languages(ctx, folder, "language", family_value=fam.language if fam is not None else None,
                                use_name=True)
    doc["model_specs"] = [_text_entry(ctx, folder, names, config_dir)]
    return doc


def gguf_embedding(ctx: Ctx, info: GGUFInfo, model_family: Optional[str], model_name: Optional[str]) -> dict:
    fam = family_of(ctx, model_family, [(info.name or "", "GGUF general.name")])
    name = choose_model_name(ctx, model_name)
    doc: dict[str, Any] = {"version": 2, "model_name": name}
    arch = info.architecture or "?"
    if not set_first(ctx, doc, "dimensions", (info.embedding_length, f"GGUF {arch}.embedding_length"),
                     (fam.dimensions if fam is not None else None, ctx.family_label)):
        raise ParseError(f"{info.path}: the GGUF header has no {arch}.embedding_length: cannot tell the dimensions")
    if not set_first(ctx, doc, "max_tokens", (info.context_length, f"GGUF {arch}.context_length"),
                     (fam.max_tokens if fam is not None else None, ctx.family_label)):
        doc["max_tokens"] = 512
        ctx.src("max_tokens", ASSUMED)
        ctx.warn("the GGUF header has no context_length: max_tokens assumed 512")
    doc["language"] = languages(ctx, None, "language", stated=info.languages, stated_where="GGUF general.languages",
                                family_value=fam.language if fam is not None else None, use_name=True)
    entry = {"model_format": "ggufv2", "quantization": info.file_type_name or "none"}
    ctx.src("model_specs[0].model_format", "a GGUF file")
    ctx.src("model_specs[0].quantization", f"GGUF general.file_type={info.file_type}")
    location_fields(ctx, entry, "model_specs[0].")
    doc["model_specs"] = [entry]
    return doc
