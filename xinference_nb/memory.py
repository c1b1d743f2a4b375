"""Memory: estimate a model's footprint from metadata before loading it, and probe free memory.

Estimates read only headers: safetensors headers (or the index's ``total_size``), config.json
(dtype, layers, heads) and GGUF metadata; weights are never loaded. The KV cache is counted for the
whole context length.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

GiB = 1024 ** 3
MiB = 1024 ** 2

# bytes per element of safetensors dtypes
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}
TORCH_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8,
                     "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")


@dataclass
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int = 0
    overhead_bytes: int = 0
    parameters: Optional[int] = None
    source: str = ""                       # what the estimate was read from
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return int(self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes)

    def describe(self) -> str:
        parts = [f"weights {format_bytes(self.weights_bytes)}"]
        if self.kv_cache_bytes:
            parts.append(f"KV cache {format_bytes(self.kv_cache_bytes)}")
        if self.overhead_bytes:
            parts.append(f"overhead {format_bytes(self.overhead_bytes)}")
        return f"{format_bytes(self.total_bytes)} ({', '.join(parts)})"


# ----------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": MiB, "gib": GiB, "tib": 1024 ** 4}


def parse_bytes(value: Any) -> int:
    """8 * 2**30, "8GiB", "8 GB", "512MiB" → bytes."""
    if isinstance(value, bool):
        raise ValueError("a memory size is a number of bytes or a string such as '8GiB'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a memory size must be positive, got {value}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{value!r} is not a memory size; write e.g. 8GiB, 512MiB, 16GB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: Optional[float]) -> str:
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# reading metadata
# ----------------------------------------------------------------------------------------------

def read_safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (8-byte little-endian length, then JSON)."""
    with open(file, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{file} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > 100 * MiB:
            raise ValueError(f"{file}: implausible safetensors header length {length}")
        return json.loads(fh.read(length))


def safetensors_stats(folder: Path) -> Optional[tuple[int, int]]:
    """(parameter count, stored bytes) from the safetensors headers of a folder, or None if it has none.
    Falls back to the index's ``metadata.total_size`` when the shards' headers cannot be read."""
    files = sorted(folder.glob("*.safetensors"))
    params = stored = 0
    ok = False
    for file in files:
        try:
            header = read_safetensors_header(file)
        except (OSError, ValueError):
            continue
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            numel = 1
            for d in info.get("shape", []):
                numel *= int(d)
            params += numel
            begin, end = (info.get("data_offsets") or [0, 0])[:2]
            stored += int(end) - int(begin)
        ok = True
    if ok:
        return params, stored
    for index in folder.glob("*.safetensors.index.json"):
        try:
            total = json.loads(index.read_text())["metadata"]["total_size"]
            return 0, int(total)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def read_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    text_cfg = cfg.get("text_config")
    if isinstance(text_cfg, dict):  # multimodal configs keep the LLM part here
        merged = dict(text_cfg)
        merged.update({k: v for k, v in cfg.items() if k not in merged})
        return merged
    return cfg


def _config_dtype_bytes(cfg: dict[str, Any]) -> Optional[float]:
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    if isinstance(dtype, str):
        return TORCH_DTYPE_BYTES.get(dtype.replace("torch.", ""))
    return None


def kv_cache_bytes(layers: Optional[int], kv_heads: Optional[int], head_dim: Optional[int], context: Optional[int],
                   bytes_per_value: float) -> int:
    if not (layers and kv_heads and head_dim and context):
        return 0
    return int(2 * layers * kv_heads * head_dim * context * bytes_per_value)


def weight_files_bytes(path: Path) -> int:
    """Sum of the weight files under a folder (or the size of one file)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(WEIGHT_SUFFIXES):
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass
    return total


# ----------------------------------------------------------------------------------------------
# estimates
# ----------------------------------------------------------------------------------------------

def estimate_hf_llm(folder: Path, quantization: Optional[str] = None, context_length: Optional[int] = None
                    ) -> MemoryEstimate:
    """A Hugging Face causal LM folder: weights in the dtype they load in (or 4-bit / 8-bit with
    bitsandbytes) + the KV cache for ``context_length`` + a small overhead."""
    folder = Path(folder)
    cfg = read_config(folder)
    stats = safetensors_stats(folder)
    notes = []
    if stats is not None:
        params, stored = stats
        source = "safetensors headers" if params else "safetensors index total_size"
    else:
        stored = weight_files_bytes(folder)
        params = 0
        source = "weight file sizes"
    dtype_bytes = _config_dtype_bytes(cfg) or 4.0
    if not params and stored:
        params = int(stored / dtype_bytes)
    pre_quantized = isinstance(cfg.get("quantization_config"), dict)
    q = (quantization or "none").lower()
    if q in ("4-bit", "4bit", "int4", "nf4", "fp4") and not pre_quantized:
        weights = int(params * 0.5 * 1.1) if params else stored // 4
        notes.append("4-bit via bitsandbytes")
    elif q in ("8-bit", "8bit", "int8") and not pre_quantized:
        weights = int(params * 1.05) if params else stored // 2
        notes.append("8-bit via bitsandbytes")
    elif pre_quantized or not params:
        weights = stored
    else:
        weights = int(params * dtype_bytes)
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers")
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg.get("hidden_size") or cfg.get("n_embd")
    head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
    known = [c for c in (context_length, cfg.get("max_position_embeddings")) if c]
    context = min(known) if known else None
    kv_dtype = dtype_bytes if dtype_bytes >= 2 else 2
    kv = kv_cache_bytes(layers, kv_heads, head_dim, context, kv_dtype)
    return MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv, overhead_bytes=int(weights * 0.05) + 32 * MiB,
                          parameters=params or None, source=source, notes=notes)


def gguf_metadata(file: Path, keys: Optional[set[str]] = None) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF file (arrays other than short ones are skipped)."""
    from gguf import GGUFReader  # memory-maps the file: reads only what is touched

    reader = GGUFReader(str(file), "r")
    out: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if keys is not None and name not in keys and not any(name.endswith(k) for k in keys):
            continue
        try:
            if not fld.data:
                continue
            if len(fld.types) == 1 and fld.types[0].name == "STRING":
                out[name] = bytes(fld.parts[fld.data[0]]).decode("utf-8", errors="replace")
            elif len(fld.types) == 1:
                out[name] = fld.parts[fld.data[0]].tolist()[0]
        except Exception:  # pragma: no cover - odd field types are not needed here
            continue
    return out


def gguf_files(file: Path) -> list[Path]:
    """The file and, for split GGUFs (``-00001-of-00003.gguf``), its sibling parts."""
    m = re.match(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", file.name)
    if not m:
        return [file]
    parts = sorted(file.parent.glob(f"{m.group(1)}-*-of-{m.group(3)}.gguf"))
    return parts or [file]


def estimate_gguf(file: Path, n_ctx: Optional[int] = None) -> MemoryEstimate:
    """A GGUF model: its file size(s) + an f16 KV cache for ``n_ctx`` (from metadata)."""
    file = Path(file)
    weights = sum(p.stat().st_size for p in gguf_files(file) if p.exists())
    kv = 0
    notes = []
    try:
        meta = gguf_metadata(file, {"general.architecture", ".block_count", ".attention.head_count",
                                    ".attention.head_count_kv", ".embedding_length", ".attention.key_length",
                                    ".context_length"})
        arch = meta.get("general.architecture", "llama")
        layers = meta.get(f"{arch}.block_count")
        heads = meta.get(f"{arch}.attention.head_count")
        kv_heads = meta.get(f"{arch}.attention.head_count_kv") or heads
        hidden = meta.get(f"{arch}.embedding_length")
        head_dim = meta.get(f"{arch}.attention.key_length") or (hidden // heads if hidden and heads else None)
        known = [c for c in (n_ctx, meta.get(f"{arch}.context_length")) if c]
        context = min(known) if known else None
        kv = kv_cache_bytes(layers, kv_heads, head_dim, context, 2)
    except Exception as exc:  # metadata is a bonus; the file size is the main part
        notes.append(f"GGUF metadata unreadable ({type(exc).__name__}); KV cache not counted")
    return MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv, overhead_bytes=int(weights * 0.02) + 32 * MiB,
                          source="GGUF file size and metadata", notes=notes)


def estimate_files(path: Path) -> MemoryEstimate:
    """Any other model: the size of its weight files."""
    weights = weight_files_bytes(Path(path))
    return MemoryEstimate(weights_bytes=weights, overhead_bytes=int(weights * 0.05), source="weight file sizes")


def estimate_model(path: Optional[Path], model_type: str, model_format: Optional[str] = None,
                   quantization: Optional[str] = None, context_length: Optional[int] = None
                   ) -> Optional[MemoryEstimate]:
    """The estimate for a model about to be launched, or None when its files are not local."""
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    if model_type == "LLM":
        if model_format == "ggufv2" or (path.is_file() and path.suffix == ".gguf"):
            if path.is_file():
                return estimate_gguf(path, context_length)
            return estimate_files(path)
        if path.is_dir():
            return estimate_hf_llm(path, quantization, context_length)
    return estimate_files(path)


# ----------------------------------------------------------------------------------------------
# probing
# ----------------------------------------------------------------------------------------------

def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch only if it is installed)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def free_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def free_gpu_bytes(gpu_ids: list[int]) -> int:
    import torch

    return int(sum(torch.cuda.mem_get_info(i)[0] for i in gpu_ids))


def free_memory(gpu_ids: Optional[list[int]] = None) -> tuple[int, str]:
    """(free bytes, where): GPU memory of ``gpu_ids`` when given, else available RAM."""
    if gpu_ids:
        return free_gpu_bytes(gpu_ids), f"GPU {','.join(str(i) for i in gpu_ids)}"
    return free_ram_bytes(), "RAM"


def process_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def gpu_allocated_bytes(gpu_ids: Optional[list[int]] = None) -> int:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0
    ids = gpu_ids if gpu_ids else range(torch.cuda.device_count())
    return int(sum(torch.cuda.memory_allocated(i) for i in ids))


def release_memory() -> None:
    """gc, then give cached CUDA blocks back (when torch with CUDA is already imported)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover
            pass
    try:  # glibc: hand freed heap pages back to the OS so RSS drops
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass
