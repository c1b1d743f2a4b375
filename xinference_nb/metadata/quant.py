"""Quantization names: what a model's files say about how its weights are quantized, in Xinference's
spelling.

* Hugging Face folders: config.json's ``quantization_config`` (or an older export's
  quantize_config.json / quant_config.json) → :class:`Quantization` (format gptq / awq / fp8 / bnb,
  quantization Int4 / Int8 / FP8 / 4-bit / 8-bit).
* GGUF: ``general.file_type`` → llama.cpp's name (:func:`file_type_name`), and the quantization a
  file name states ("qwen2.5-7b-instruct-q4_k_m.gguf" → "q4_k_m"), one pattern for the launch
  (which file is which quantization) and parse (the name, the family's model id without it).
* bitsandbytes on the fly: ``BNB_QUANTIZATIONS`` ("none", "4-bit", "8-bit"), the names a launch of
  pytorch weights may ask for (manager, transformers engine, memory estimate, launch widget).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .gguf import SPLIT_GGUF, file_type_name  # noqa: F401 - file_type_name is a quantization name too
from .hf import maybe_json

# ------------------------------------------------------------------------------------------------
# GGUF file names
# ------------------------------------------------------------------------------------------------

# llama.cpp's quantization names as GGUF file names write them: q4_k_m, q8_0, iq4_xs, UD-Q4_K_XL, f16…
GGUF_QUANT_PATTERN = r"(?:ud-)?i?q\d[a-z0-9_]*|bf16|fp16|f16|f32"
# one that a separator (or the start) precedes and a "-", "." or the end follows
_QUANT_IN_NAME = re.compile(rf"(?i)(?:^|[-_.])({GGUF_QUANT_PATTERN})(?=$|[-.])")
_QUANT_AT_END = re.compile(rf"(?i)(?:^|[-_.])({GGUF_QUANT_PATTERN})$")


def _gguf_stem(name: str) -> str:
    """A GGUF file name without ".gguf" and a split suffix ("-00001-of-00003")."""
    m = SPLIT_GGUF.match(name)
    if m:
        return m.group("stem")
    return name[:-5] if name.lower().endswith(".gguf") else name


def gguf_name_quantization(name: str) -> Optional[str]:
    """The quantization a GGUF file name (or a name without ".gguf") states, as written, the last one
    when it states several: "qwen2.5-0.5b-instruct-q4_k_m.gguf" → "q4_k_m",
    "Qwen3-8B-UD-Q4_K_XL-00001-of-00002.gguf" → "UD-Q4_K_XL", "model.gguf" → None."""
    found = _QUANT_IN_NAME.findall(_gguf_stem(Path(name).name))
    return found[-1] if found else None


def strip_gguf_quantization(name: str) -> str:
    """The name without the quantization it ends with: "qwen2.5-7b-instruct-q4_k_m" → "qwen2.5-7b-instruct"."""
    stem = _gguf_stem(name)
    m = _QUANT_AT_END.search(stem)
    return stem[:m.start()] if m else stem


# ------------------------------------------------------------------------------------------------
# bitsandbytes on the fly (pytorch weights quantized while the transformers engine loads them)
# ------------------------------------------------------------------------------------------------

BNB_QUANTIZATIONS = ("none", "4-bit", "8-bit")


def bnb_quantization(quantization: Optional[str]) -> Optional[str]:
    """The on-the-fly bitsandbytes quantization a launch names, spelled as in ``BNB_QUANTIZATIONS``
    (any case, spaces around): "4-bit", "8-bit", or "none" for None / "" / "none"; None for any other
    name (a GGUF or pre-quantized one, or a spelling such as "nf4" / "int4" the engine refuses)."""
    q = (quantization or "").strip().lower() or "none"
    return q if q in BNB_QUANTIZATIONS else None


# ------------------------------------------------------------------------------------------------
# Hugging Face quantization_config
# ------------------------------------------------------------------------------------------------

@dataclass
class Quantization:
    method: str                     # as written (gptq, awq, fp8, bitsandbytes, compressed-tensors, …)
    model_format: Optional[str]     # ours: gptq / awq / fp8 / bnb, None when unsupported
    quantization: str               # Xinference's spelling: Int4, Int8, FP8, 4-bit, 8-bit
    bits: Optional[int]
    source: str


def quantization_of(config: dict, folder: Optional[Path] = None) -> Optional[Quantization]:
    """The quantization described by config.json's quantization_config (or a quantize_config.json /
    quant_config.json next to it, as older GPTQ / AWQ exports have), None for plain weights."""
    qc = config.get("quantization_config")
    where = "config.json quantization_config"
    if not isinstance(qc, dict) and folder is not None:
        for name in ("quantize_config.json", "quant_config.json"):
            data = maybe_json(folder, name)
            if data is not None:
                qc, where = data, name
                if "quant_method" not in qc:
                    qc = dict(qc, quant_method="gptq" if name == "quantize_config.json" else "awq")
                break
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method") or qc.get("quantization_method") or "").lower()
    bits = qc.get("bits") or qc.get("w_bit") or qc.get("wbits")
    bits = int(bits) if isinstance(bits, (int, float)) else None
    src = f"{where}.quant_method={method!r}"
    if method in ("gptq", "awq"):
        bits = bits or 4
        return Quantization(method, method, f"Int{bits}", bits, src + f", bits={bits}")
    if method == "fp8" or (method == "compressed-tensors" and _compressed_is_fp8(qc)):
        return Quantization(method, "fp8", "FP8", 8, src)
    if method in ("bitsandbytes", "bnb"):
        four = bool(qc.get("load_in_4bit")) or qc.get("_load_in_4bit") is True
        bits = 4 if four else 8
        return Quantization(method, "bnb", "4-bit" if four else "8-bit", bits, src + f", load_in_{bits}bit")
    if method == "compressed-tensors":
        wbits = _compressed_bits(qc)
        if wbits in (4, 8):
            return Quantization(method, "gptq", f"Int{wbits}", wbits, src + f", weights num_bits={wbits}")
    return Quantization(method, None, method or "unknown", bits, src)


def _compressed_groups(qc: dict) -> list[dict]:
    groups = qc.get("config_groups") or {}
    return [g for g in groups.values() if isinstance(g, dict)] if isinstance(groups, dict) else []


def _compressed_is_fp8(qc: dict) -> bool:
    for g in _compressed_groups(qc):
        w = g.get("weights") or {}
        if w.get("type") == "float" and w.get("num_bits") == 8:
            return True
    return False


def _compressed_bits(qc: dict) -> Optional[int]:
    for g in _compressed_groups(qc):
        w = g.get("weights") or {}
        if isinstance(w.get("num_bits"), int):
            return w["num_bits"]
    return None
