"""Memory: estimate a model's footprint from metadata before loading it, and probe free memory.

Estimates read only headers, through :mod:`xinference_nb.metadata` (the package's one reader of
model files): safetensors headers (or the index's ``total_size``), config.json (dtype, layers,
heads) and the GGUF header; weights are never loaded. The KV cache is counted for the whole context
length, plus the transformers engine's prefix cache (``prefix_cache_tokens``, by default
``PREFIX_CACHE_DEFAULT_TOKENS``); LoRA adapters (``peft_model_config``) add the size of their weight files. The metadata
readers stay importable from here under their old names.

"free" here is a probe (:func:`free_memory`: how many bytes are free); giving memory back after a
model is closed is :func:`release_memory`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .metadata.gguf import read_gguf
from .metadata.gguf import split_parts_present as gguf_files  # the file and a split GGUF's other parts
from .metadata.hf import layer_count, read_config  # noqa: F401 - read_config public here too
from .metadata.quant import bnb_quantization
from .metadata.safetensors import DTYPE_BYTES as SAFETENSORS_DTYPE_BYTES  # noqa: F401
from .metadata.safetensors import read_safetensors_header  # noqa: F401
from .metadata.weights import TORCH_DTYPE_BYTES, WEIGHT_SUFFIXES, config_dtype_bytes, safetensors_stats  # noqa: F401
from .metadata.weights import weight_files_bytes

GiB = 1024 ** 3
MiB = 1024 ** 2
# the transformers engine's prefix cache: how many prompt tokens of key/values it keeps by default
# (launch option prefix_cache_max_tokens; enable_prefix_caching=False: none). Counted in the estimate.
PREFIX_CACHE_DEFAULT_TOKENS = 8192


@dataclass
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int = 0
    overhead_bytes: int = 0
    prefix_cache_bytes: int = 0            # the transformers engine's prefix cache at its size limit
    parameters: Optional[int] = None
    source: str = ""                       # what the estimate was read from
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return int(self.weights_bytes + self.kv_cache_bytes + self.prefix_cache_bytes + self.overhead_bytes)

    def describe(self) -> str:
        parts = [f"weights {format_bytes(self.weights_bytes)}"]
        if self.kv_cache_bytes:
            parts.append(f"KV cache {format_bytes(self.kv_cache_bytes)}")
        if self.prefix_cache_bytes:
            parts.append(f"prefix cache {format_bytes(self.prefix_cache_bytes)}")
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
# reading metadata (through xinference_nb.metadata)
# ----------------------------------------------------------------------------------------------

def _dtype_bytes(dtype: Any) -> Optional[float]:
    """Bytes per element of a dtype name ("bfloat16", "torch.float16") or torch dtype; None for "auto"/unknown."""
    if dtype is None:
        return None
    return TORCH_DTYPE_BYTES.get(str(dtype).replace("torch.", ""))


def _config_dtype_bytes(cfg: dict[str, Any]) -> Optional[float]:
    found = config_dtype_bytes(cfg)
    return found[0] if found else None


def kv_cache_bytes(layers: Optional[int], kv_heads: Optional[int], head_dim: Optional[int], context: Optional[int],
                   bytes_per_value: float) -> int:
    if not (layers and kv_heads and head_dim and context):
        return 0
    return int(2 * layers * kv_heads * head_dim * context * bytes_per_value)


# ----------------------------------------------------------------------------------------------
# estimates
# ----------------------------------------------------------------------------------------------

def estimate_hf_llm(folder: Path, quantization: Optional[str] = None, context_length: Optional[int] = None,
                    dtype: Any = None, prefix_cache_tokens: Optional[int] = None) -> MemoryEstimate:
    """A Hugging Face causal LM folder: weights in the dtype they load in (``dtype`` as given to the
    launch, else config.json's; or 4-bit / 8-bit with bitsandbytes) + the KV cache for
    ``context_length`` and for the prefix cache's ``prefix_cache_tokens`` (None: the default size;
    0: caching off) + a small overhead."""
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
    dtype_bytes = _dtype_bytes(dtype) or _config_dtype_bytes(cfg) or 4.0
    if not params and stored:
        params = int(stored / dtype_bytes)
    pre_quantized = isinstance(cfg.get("quantization_config"), dict)
    q = bnb_quantization(quantization)   # the names the transformers engine quantizes on the fly
    if q == "4-bit" and not pre_quantized:
        weights = int(params * 0.5 * 1.1) if params else stored // 4
        notes.append("4-bit via bitsandbytes")
    elif q == "8-bit" and not pre_quantized:
        weights = int(params * 1.05) if params else stored // 2
        notes.append("8-bit via bitsandbytes")
    elif pre_quantized or not params:
        weights = stored
    else:
        weights = int(params * dtype_bytes)
    layers = layer_count(cfg)
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg.get("hidden_size") or cfg.get("n_embd")
    head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
    known = [c for c in (context_length, cfg.get("max_position_embeddings")) if c]
    context = min(known) if known else None
    kv_dtype = dtype_bytes if dtype_bytes >= 2 else 2
    kv = kv_cache_bytes(layers, kv_heads, head_dim, context, kv_dtype)
    cached = PREFIX_CACHE_DEFAULT_TOKENS if prefix_cache_tokens is None else prefix_cache_tokens
    prefix = kv_cache_bytes(layers, kv_heads, head_dim, cached, kv_dtype)
    if prefix:
        notes.append(f"prefix cache of {cached} tokens")
    return MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv, prefix_cache_bytes=prefix, overhead_bytes=int(weights * 0.05) + 32 * MiB,
                          parameters=params or None, source=source, notes=notes)


def gguf_metadata(file: Path, keys: Optional[set[str]] = None) -> dict[str, Any]:
    """Scalar and string metadata of a GGUF file (arrays left out), optionally only the ``keys`` (a
    key, or the end of one such as ".context_length"). Read by :func:`metadata.read_gguf`."""
    raw = read_gguf(Path(file)).raw
    if keys is None:
        return dict(raw)
    return {k: v for k, v in raw.items() if k in keys or any(k.endswith(e) for e in keys)}


def add_adapters(estimate: MemoryEstimate, adapters: Optional[list[Any]]) -> MemoryEstimate:
    """``estimate`` with the weight files of LoRA ``adapters`` (paths: a file or a folder) counted
    in its weights; missing paths count 0 (the launch refuses them). Only a folder's own files count:
    adapters keep their weights at the top, and a mistyped path such as ``~`` must not walk a tree."""
    paths = [Path(a).expanduser() for a in adapters or ()]
    sizes = [weight_files_bytes(p, recursive=False) for p in paths if p.exists()]
    if sizes:
        estimate.weights_bytes += sum(sizes)
        estimate.notes.append(f"{len(sizes)} LoRA adapter{'s' if len(sizes) > 1 else ''} "
                              f"({format_bytes(sum(sizes))})")
    return estimate


def estimate_gguf(file: Path, n_ctx: Optional[int] = None, adapters: Optional[list[Any]] = None,
                  prefix_cache_tokens: Optional[int] = None) -> MemoryEstimate:
    """A GGUF model: its file size(s) + an f16 KV cache for ``n_ctx`` (from the header) + the saved
    contexts of its prefix cache (llama.cpp's sequence states: f16 key/values of
    ``prefix_cache_tokens`` tokens; None: the default size, 0: off) + its LoRA ``adapters``' files."""
    file = Path(file)
    weights = sum(p.stat().st_size for p in gguf_files(file))
    kv = prefix = 0
    notes = []
    try:
        info = read_gguf(file)
        known = [c for c in (n_ctx, info.context_length) if c]
        context = min(known) if known else None
        kv_heads = info.head_count_kv or info.head_count
        kv = kv_cache_bytes(info.block_count, kv_heads, info.head_dim, context, 2)
        cached = PREFIX_CACHE_DEFAULT_TOKENS if prefix_cache_tokens is None else prefix_cache_tokens
        prefix = kv_cache_bytes(info.block_count, kv_heads, info.head_dim, cached, 2)
        if prefix:
            notes.append(f"saved contexts of {cached} tokens")
    except Exception as exc:  # metadata is a bonus; the file size is the main part
        notes.append(f"GGUF metadata unreadable ({type(exc).__name__}); KV cache not counted")
    return add_adapters(MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv, prefix_cache_bytes=prefix,
                                       overhead_bytes=int(weights * 0.02) + 32 * MiB,
                                       source="GGUF file size and metadata", notes=notes), adapters)


def estimate_files(path: Path) -> MemoryEstimate:
    """Any other model: the size of its weight files."""
    weights = weight_files_bytes(Path(path))
    return MemoryEstimate(weights_bytes=weights, overhead_bytes=int(weights * 0.05), source="weight file sizes")


def estimate_model(path: Optional[Path], model_type: str, model_format: Optional[str] = None,
                   quantization: Optional[str] = None, context_length: Optional[int] = None,
                   dtype: Any = None, adapters: Optional[list[Any]] = None,
                   prefix_cache_tokens: Optional[int] = None) -> Optional[MemoryEstimate]:
    """The estimate for a model about to be launched, or None when its files are not local.
    ``dtype`` is the launch's dtype / torch_dtype option (Hugging Face LLM folders); ``adapters``
    the local paths of its LoRA adapters (peft_model_config's lora_list); ``prefix_cache_tokens`` the
    size of the prefix cache (``options.prefix_cache_tokens``; None: the default; the transformers
    engine's key/values, llama.cpp's saved contexts)."""
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    if model_type == "LLM":
        if model_format == "ggufv2" or (path.is_file() and path.suffix == ".gguf"):
            if path.is_file():
                return estimate_gguf(path, context_length, adapters, prefix_cache_tokens)
            return add_adapters(estimate_files(path), adapters)
        if path.is_dir():
            return add_adapters(estimate_hf_llm(path, quantization, context_length, dtype, prefix_cache_tokens),
                                adapters)
    return add_adapters(estimate_files(path), adapters)


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
    trim_heap()


_malloc_trim: Any = None  # libc's malloc_trim once looked up; False where there is none (not glibc)


def trim_heap() -> bool:
    """glibc: hand the C heap's free pages back to the OS (``malloc_trim(0)``, every arena), so RSS
    drops to what is in use. Freed tensors of varying shapes otherwise stay resident as fragments,
    and a server's RSS creeps up batch after batch. A few ms on a large heap; False where not glibc."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True
