"""Metadata of a Hugging Face model folder: config, tokenizer and generation config, safetensors
headers and indexes, the model card's language list.

Nothing here imports torch or transformers, and nothing reads tensor data: a safetensors file is
read up to the end of its JSON header (8-byte little-endian length, then the header), and sizes of
other weight files come from ``stat``. Every unreadable file is a ParseError that names it.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError

# safetensors refuses headers above 100 MB; so do we (a corrupt length would otherwise make us
# read a whole multi-GB file).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
# tokenizer.json is read only to name stop tokens; skip absurd ones.
MAX_TOKENIZER_JSON = 64 * 1024 * 1024

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FN": 1, "F8_E5M2FNUZ": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75, "C64": 8,
}

# torch dtype names in config.json → bytes per parameter
TORCH_DTYPE_BYTES = {
    "float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
    "float64": 8, "double": 8, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1,
}

# Tensors that hold quantization bookkeeping rather than parameters.
_QUANT_AUX_SUFFIXES = (
    ".qzeros", ".scales", ".g_idx", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
    ".weight_scale", ".weight_scale_inv", ".input_scale", ".weight_zero_point", ".weight_g_idx",
    ".weight_shape", ".SCB", ".weight_format", ".k_scale", ".v_scale", ".output_scale",
)
_PACKED_SUFFIXES = (".qweight", ".weight_packed")


# ------------------------------------------------------------------------------------------------
# JSON files
# ------------------------------------------------------------------------------------------------

def read_json(path: Path, what: str = "") -> Any:
    """The parsed JSON of ``path``; a ParseError naming the file if it is unreadable or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ParseError(f"{path}: cannot read {what or 'the file'}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParseError(f"{path}: is not UTF-8 text; expected a JSON {what or 'file'}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         f"re-download or fix {Path(path).name}") from None


def read_json_object(path: Path, what: str = "") -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ParseError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def maybe_json(folder: Path, name: str) -> Optional[dict]:
    """``folder/name`` parsed, or None when the file is absent (present but broken is an error)."""
    path = folder / name
    if not path.is_file():
        return None
    return read_json_object(path)


# ------------------------------------------------------------------------------------------------
# safetensors headers
# ------------------------------------------------------------------------------------------------

@dataclass
class SafetensorsHeader:
    path: Path
    tensors: dict[str, dict]          # name → {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]
    header_bytes: int
    data_bytes: int                   # bytes of tensor data the header describes


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """The JSON header of a safetensors file, checked against the file's size (no tensor data read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ParseError(f"{path}: truncated safetensors file ({size} bytes; the header length alone "
                                 "takes 8); re-download it")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > MAX_SAFETENSORS_HEADER:
                raise ParseError(f"{path}: not a safetensors file (header length {n} is "
                                 f"{'zero' if n == 0 else 'over 100 MB'}); re-download it")
            if 8 + n > size:
                raise ParseError(f"{path}: truncated safetensors header ({n} header bytes announced, "
                                 f"{size - 8} present); the download was cut short, re-download it")
            raw = fh.read(n)
    except OSError as exc:
        raise ParseError(f"{path}: cannot read the safetensors header: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ParseError(f"{path}: the safetensors header is not valid JSON; the file is corrupt, "
                         "re-download it") from None
    if not isinstance(header, dict):
        raise ParseError(f"{path}: the safetensors header is not a JSON object; the file is corrupt")
    metadata = header.pop("__metadata__", None) or {}
    end = 0
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list) and "dtype" in info):
            raise ParseError(f"{path}: tensor {name!r} has no dtype/shape in the safetensors header; "
                             "the file is corrupt")
        offsets = info.get("data_offsets") or [0, 0]
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        raise ParseError(f"{path}: truncated safetensors file: its header describes {8 + n + end} bytes, "
                         f"the file has {size}; re-download it")
    return SafetensorsHeader(path, header, metadata if isinstance(metadata, dict) else {}, n, end)


def count_parameters(headers: list[SafetensorsHeader], bits: Optional[int] = None) -> int:
    """Parameters described by safetensors headers. Packed quantized weights (GPTQ/AWQ ``qweight``,
    compressed-tensors ``weight_packed``, bitsandbytes 4-bit ``uint8`` weights) are unpacked; scales,
    zeros and other quantization bookkeeping are not parameters."""
    total = 0
    for h in headers:
        for name, info in h.tensors.items():
            if name.endswith(_QUANT_AUX_SUFFIXES) or ".quant_state." in name:
                continue
            numel = math.prod(int(d) for d in info["shape"]) if info["shape"] else 1
            dtype = info["dtype"]
            if name.endswith(_PACKED_SUFFIXES):
                numel = numel * (DTYPE_BYTES.get(dtype, 4) * 8) // (bits or 4)
            elif dtype == "U8" and bits == 4 and name.endswith(".weight"):
                numel *= 2
            total += numel
    return total


# ------------------------------------------------------------------------------------------------
# Weights: where they are and how many parameters they hold
# ------------------------------------------------------------------------------------------------

@dataclass
class WeightInfo:
    parameters: Optional[int] = None
    source: str = ""
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    estimated: bool = False


def _index_shards(index: dict) -> list[str]:
    weight_map = index.get("weight_map") or {}
    return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []


def bytes_per_parameter(config: dict, quant: Optional["Quantization"]) -> tuple[float, str]:
    """(bytes per parameter, where that came from) for turning a byte count into parameters."""
    if quant is not None and quant.bits:
        return quant.bits / 8, f"quantization_config bits={quant.bits}"
    for key in ("torch_dtype", "dtype"):
        for cfg in (config, config.get("text_config") or {}):
            value = cfg.get(key) if isinstance(cfg, dict) else None
            if isinstance(value, str) and value.lower() in TORCH_DTYPE_BYTES:
                return TORCH_DTYPE_BYTES[value.lower()], f"config.json {key}={value}"
    return 2, "assumed 16-bit weights (config.json names no dtype)"


def weight_info(folder: Path, config: dict, quant: Optional["Quantization"] = None) -> WeightInfo:
    """Count parameters from safetensors headers (exact), else from an index's total_size or the
    weight files' sizes ÷ bytes per parameter (estimates). Never reads tensor data."""
    info = WeightInfo()
    bits = quant.bits if quant is not None else None
    index_path = folder / "model.safetensors.index.json"
    index = read_json_object(index_path, "safetensors index") if index_path.is_file() else None
    if index is not None:
        shards = _index_shards(index)
        present = [folder / s for s in shards if (folder / s).is_file()]
        missing = [s for s in shards if not (folder / s).is_file()]
        if present and missing:
            info.warnings.append(f"{index_path.name} lists {len(shards)} shard(s) but {len(missing)} are missing "
                                 f"({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}): the download is "
                                 "incomplete and the model will not load until they are there")
            for p in present:  # still check that what is there is readable
                read_safetensors_header(p)
            st_files = []      # count from the index's total_size below
        else:
            st_files = present
    else:
        all_st = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
        # Mistral-style repos ship consolidated.safetensors next to model*.safetensors: count one set
        st_files = [p for p in all_st if p.name.startswith("model")] or all_st
    if st_files:
        headers = [read_safetensors_header(p) for p in st_files]
        info.parameters = count_parameters(headers, bits)
        info.files = [p.name for p in st_files]
        info.total_bytes = sum(8 + h.header_bytes + h.data_bytes for h in headers)
        info.source = (f"{st_files[0].name} header" if len(st_files) == 1
                       else f"{len(st_files)} safetensors headers ({st_files[0].name}, …)")
        return info
    per, why = bytes_per_parameter(config, quant)
    if index is not None:
        total = (index.get("metadata") or {}).get("total_size")
        if isinstance(total, (int, float)) and total > 0:
            info.parameters = int(total / per)
            info.total_bytes = int(total)
            info.source = f"{index_path.name} metadata.total_size={int(total)} ÷ {per:g} bytes ({why})"
            info.estimated = True
            if not any((folder / s).is_file() for s in _index_shards(index)):
                info.warnings.append(f"no weight files next to {index_path.name} (only the index): the size comes "
                                     "from its total_size; the model cannot be launched from this folder until the "
                                     "shards are there")
            return info
        info.warnings.append(f"{index_path}: has no metadata.total_size")
    bin_index = folder / "pytorch_model.bin.index.json"
    if bin_index.is_file():
        data = read_json_object(bin_index, "weights index")
        total = (data.get("metadata") or {}).get("total_size")
        if isinstance(total, (int, float)) and total > 0:
            info.parameters = int(total / per)
            info.total_bytes = int(total)
            info.source = f"{bin_index.name} metadata.total_size={int(total)} ÷ {per:g} bytes ({why})"
            info.estimated = True
            return info
    bins = sorted(p for p in folder.glob("*.bin") if p.is_file() and p.name.startswith(("pytorch_model", "model")))
    if bins:
        total = sum(p.stat().st_size for p in bins)
        info.parameters = int(total / per)
        info.total_bytes = total
        info.files = [p.name for p in bins]
        names = ", ".join(p.name for p in bins[:2]) + ("…" if len(bins) > 2 else "")
        info.source = f"size of {names} ÷ {per:g} bytes ({why})"
        info.estimated = True
        return info
    return info


def estimate_parameters(config: dict) -> Optional[int]:
    """A dense decoder's parameter count from its config sizes (used when no weights are present)."""
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    get = lambda *keys: next((cfg.get(k) for k in keys if isinstance(cfg.get(k), int)), None)  # noqa: E731
    hidden = get("hidden_size", "n_embd", "d_model")
    layers = get("num_hidden_layers", "n_layer", "num_layers")
    vocab = get("vocab_size", "padded_vocab_size")
    if not (hidden and layers and vocab):
        return None
    if any(cfg.get(k) for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")):
        return None
    inter = get("intermediate_size", "n_inner", "ffn_hidden_size") or 4 * hidden
    heads = get("num_attention_heads", "n_head") or max(1, hidden // 64)
    kv = get("num_key_value_heads", "multi_query_group_num") or heads
    head_dim = get("head_dim") or hidden // heads
    attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    act = str(cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))).lower()
    gated = act in ("silu", "swiglu", "gelu_pytorch_tanh") and \
        cfg.get("model_type") not in ("gpt2", "gpt_neox", "phi", "opt", "bloom", "falcon")
    mlp = (3 if gated else 2) * hidden * inter
    # absent means the model class's default: True for Gemma-style configs, False for Llama-style ones
    default_tied = str(cfg.get("model_type") or config.get("model_type") or "").startswith(("gemma", "phi3", "bert"))
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", default_tied)))
    return vocab * hidden * (1 if tied else 2) + layers * (attn + mlp + 2 * hidden) + hidden


# ------------------------------------------------------------------------------------------------
# Quantization config
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


# ------------------------------------------------------------------------------------------------
# Context length
# ------------------------------------------------------------------------------------------------

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length", "n_ctx",
                "max_seq_len", "model_max_length")
# tokenizers write 1e30 when they do not know; anything at or above this is a sentinel
SENTINEL_CONTEXT = 10_000_000


def context_length(config: dict) -> Optional[tuple[int, str]]:
    """(context length, how it was found) from a config: the first of CONTEXT_KEYS, extended by
    a rope_scaling / rope_parameters factor when that scaling extends the window."""
    for where, cfg in (("", config), ("text_config.", config.get("text_config") or {}),
                       ("llm_config.", config.get("llm_config") or {})):
        if not isinstance(cfg, dict):
            continue
        for key in CONTEXT_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < SENTINEL_CONTEXT:
                base, how = value, f"config.json {where}{key}"
                scaled = _rope_extended(cfg, base)
                if scaled is not None:
                    return scaled[0], f"{how} with {scaled[1]}"
                return base, how
    return None


def _rope_extended(cfg: dict, base: int) -> Optional[tuple[int, str]]:
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if not isinstance(rope, dict):
            continue
        kind = str(rope.get("rope_type") or rope.get("type") or "").lower()
        factor = rope.get("factor")
        if kind not in ("linear", "dynamic", "yarn", "ntk", "dynamic-ntk") or not isinstance(factor, (int, float)):
            continue  # llama3 / longrope / mrope / default: max_position_embeddings is already the window
        if factor <= 1:
            continue
        original = rope.get("original_max_position_embeddings")
        start = original if isinstance(original, int) and original > 0 else base
        extended = int(round(start * factor))
        if extended > base:
            what = f"original_max_position_embeddings={start}" if start is original else f"{base}"
            return extended, f"{key} {kind} factor {factor:g} ({what} × {factor:g})"
    return None


# ------------------------------------------------------------------------------------------------
# Tokenizer facts: special tokens, id → text
# ------------------------------------------------------------------------------------------------

def token_content(value: Any) -> Optional[str]:
    """A special token as tokenizer_config writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class TokenTable:
    """id ↔ text of the tokens a folder's tokenizer files name, loaded as lazily as possible:
    tokenizer_config.json's added_tokens_decoder first, tokenizer.json only when still needed."""

    def __init__(self, folder: Path, tokenizer_config: Optional[dict]):
        self.folder = folder
        self.id_to_text: dict[int, str] = {}
        self.where: dict[int, str] = {}
        self._full_loaded = False
        added = (tokenizer_config or {}).get("added_tokens_decoder") or {}
        if isinstance(added, dict):
            for key, value in added.items():
                text = token_content(value)
                if text is not None and str(key).isdigit():
                    self.id_to_text[int(key)] = text
                    self.where[int(key)] = "tokenizer_config.json added_tokens_decoder"

    def _load_full(self) -> None:
        if self._full_loaded:
            return
        self._full_loaded = True
        path = self.folder / "tokenizer.json"
        if not path.is_file() or path.stat().st_size > MAX_TOKENIZER_JSON:
            return
        data = read_json_object(path, "tokenizer")
        for tok in data.get("added_tokens") or []:
            if isinstance(tok, dict) and isinstance(tok.get("id"), int) and isinstance(tok.get("content"), str):
                self.id_to_text.setdefault(tok["id"], tok["content"])
                self.where.setdefault(tok["id"], "tokenizer.json added_tokens")
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            for text, tid in vocab.items():
                if isinstance(tid, int) and tid not in self.id_to_text:
                    self.id_to_text[tid] = text
                    self.where[tid] = "tokenizer.json vocab"
        elif isinstance(vocab, list):  # unigram: [[piece, score], ...]
            for tid, item in enumerate(vocab):
                if isinstance(item, list) and item and isinstance(item[0], str) and tid not in self.id_to_text:
                    self.id_to_text[tid] = item[0]
                    self.where[tid] = "tokenizer.json vocab"

    def text(self, token_id: int) -> Optional[str]:
        if token_id not in self.id_to_text:
            self._load_full()
        return self.id_to_text.get(token_id)

    def id_of(self, text: str) -> Optional[int]:
        for tid, t in self.id_to_text.items():
            if t == text:
                return tid
        self._load_full()
        for tid, t in self.id_to_text.items():
            if t == text:
                return tid
        return None


def special_token(name: str, tokenizer_config: Optional[dict],
                  special_map: Optional[dict]) -> Optional[tuple[str, str]]:
    """(text, file) of a special token (``eos_token``, ``bos_token``…) from tokenizer_config.json or
    special_tokens_map.json."""
    for data, file in ((tokenizer_config, "tokenizer_config.json"), (special_map, "special_tokens_map.json")):
        if data:
            text = token_content(data.get(name))
            if text:
                return text, file
    return None


def eos_ids(data: Optional[dict]) -> list[int]:
    value = (data or {}).get("eos_token_id")
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


# ------------------------------------------------------------------------------------------------
# Chat template
# ------------------------------------------------------------------------------------------------

def chat_template(folder: Path, tokenizer_config: Optional[dict]) -> Optional[tuple[str, str]]:
    """(template, where) of the model's own chat template: chat_template.jinja (transformers 5),
    chat_template.json (processors of vision models), then tokenizer_config.json "chat_template" (a
    string, or a list of named templates: "default" wins)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            text = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ParseError(f"{jinja}: cannot read the chat template: {exc}") from None
        if text.strip():
            return text, "chat_template.jinja"
    # the processor's template (vision models) before the tokenizer's, as the runtime (chat.py) reads them
    data = maybe_json(folder, "chat_template.json")
    if data and isinstance(data.get("chat_template"), str) and data["chat_template"].strip():
        return data["chat_template"], "chat_template.json"
    value = (tokenizer_config or {}).get("chat_template")
    if isinstance(value, str) and value.strip():
        return value, "tokenizer_config.json chat_template"
    if isinstance(value, list):
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
        if isinstance(named.get("default"), str):
            return named["default"], "tokenizer_config.json chat_template (\"default\")"
        for name, text in named.items():
            if isinstance(text, str) and text.strip():
                return text, f"tokenizer_config.json chat_template ({name!r})"
    return None


# ------------------------------------------------------------------------------------------------
# Model card language
# ------------------------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


def readme_languages(folder: Path) -> Optional[list[str]]:
    """The ``language:`` list of README.md's YAML front matter (the model card), if it has one."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    match = _FRONT_MATTER.match(head)
    if not match:
        return None
    lines = match.group(1).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^language\s*:\s*(.*)$", line)
        if not m:
            continue
        rest = m.group(1).strip()
        if rest.startswith("["):
            items = [x.strip().strip("'\"") for x in rest.strip("[]").split(",")]
        elif rest:
            items = [rest.strip("'\"")]
        else:
            items = []
            for nxt in lines[i + 1:]:
                item = re.match(r"^\s*-\s*(.+?)\s*$", nxt)
                if not item:
                    break
                items.append(item.group(1).strip("'\""))
        langs = [x for x in items if x and re.match(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$", x)]
        return langs or None
    return None


def file_names(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder)}
    except OSError as exc:
        raise ParseError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None
