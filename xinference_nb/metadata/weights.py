"""Weights without loading them: which files a Hugging Face folder's weights are in, how many
parameters they hold (from safetensors headers, else an index's total size or the files' sizes), the
bytes a dtype takes, and the size of a model's weight files.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ..errors import ParseError
from .estimate import estimate_parameters  # noqa: F401 - read here by parse (folders without weights)
from .hf import read_json_object
from .safetensors import count_parameters, read_safetensors_header

if TYPE_CHECKING:
    from .quant import Quantization

# the files a model's weights can be in (for sizes of folders no header describes)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")

# torch dtype names in config.json → bytes per parameter
TORCH_DTYPE_BYTES = {
    "float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
    "float64": 8, "double": 8, "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1,
}


def weight_files_bytes(path: Path, recursive: bool = True) -> int:
    """Bytes of the weight files at ``path``: the file itself, or the WEIGHT_SUFFIXES files under a
    folder (searched recursively, or only its own files with ``recursive=False``); 0 when there are none."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    walk = os.walk(path) if recursive else [(path, [], _own_files(path))]
    for root, _, files in walk:
        for name in files:
            if name.endswith(WEIGHT_SUFFIXES):
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass
    return total


def _own_files(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_file()]
    except OSError:
        return []


def config_dtype_bytes(config: dict) -> Optional[tuple[float, str]]:
    """(bytes per parameter, "config.json <key>=<value>") of the dtype a config names (``torch_dtype`` or
    transformers 5's ``dtype``, also in ``text_config``), None when it names none we know."""
    for key in ("torch_dtype", "dtype"):
        for cfg in (config, config.get("text_config") or {}):
            value = cfg.get(key) if isinstance(cfg, dict) else None
            if isinstance(value, str):
                name = value.lower().removeprefix("torch.")
                if name in TORCH_DTYPE_BYTES:
                    return TORCH_DTYPE_BYTES[name], f"config.json {key}={value}"
    return None


def bytes_per_parameter(config: dict, quant: Optional["Quantization"]) -> tuple[float, str]:
    """(bytes per parameter, where that came from) for turning a byte count into parameters."""
    if quant is not None and quant.bits:
        return quant.bits / 8, f"quantization_config bits={quant.bits}"
    found = config_dtype_bytes(config)
    if found is not None:
        return found
    return 2, "assumed 16-bit weights (config.json names no dtype)"


# ------------------------------------------------------------------------------------------------
# Which safetensors files hold the weights
# ------------------------------------------------------------------------------------------------

INDEX_NAME = "model.safetensors.index.json"


def _index_shards(index: dict) -> list[str]:
    weight_map = index.get("weight_map") or {}
    return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []


def safetensors_files(folder: Path) -> tuple[list[Path], list[str], Optional[dict]]:
    """(the safetensors files holding the weights, the index's missing shards, the index or None).
    With an index: its shards; without: ``model*.safetensors`` (Mistral-style repos ship a
    consolidated.safetensors copy next to them: one set is counted), else every ``*.safetensors``."""
    index_path = folder / INDEX_NAME
    index = read_json_object(index_path, "safetensors index") if index_path.is_file() else None
    if index is not None:
        shards = _index_shards(index)
        present = [folder / s for s in shards if (folder / s).is_file()]
        missing = [s for s in shards if not (folder / s).is_file()]
        return present, missing, index
    all_st = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    return [p for p in all_st if p.name.startswith("model")] or all_st, [], None


def safetensors_stats(folder: Path) -> Optional[tuple[int, int]]:
    """(parameters, stored bytes) from a folder's safetensors headers, (0, total_size) from its index
    when the headers cannot be read or shards are missing, None when it has neither. For estimates:
    never raises on a broken file."""
    folder = Path(folder)
    try:
        files, missing, _index = safetensors_files(folder)
    except ParseError:
        files, missing = [], []
    if files and not missing:
        try:
            headers = [read_safetensors_header(p) for p in files]
        except ParseError:
            headers = []
        if headers:
            return count_parameters(headers, _bits(folder)), sum(h.data_bytes for h in headers)
    for path in sorted(folder.glob("*.safetensors.index.json")):
        try:
            total = json.loads(path.read_text())["metadata"]["total_size"]
            return 0, int(total)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _bits(folder: Path) -> Optional[int]:
    """The bits of a folder's pre-quantized weights (to unpack packed tensors), None when plain."""
    from .hf import read_config
    from .quant import quantization_of

    try:
        quant = quantization_of(read_config(folder), folder)
    except ParseError:
        return None
    return quant.bits if quant is not None else None


@dataclass
class WeightInfo:
    parameters: Optional[int] = None
    source: str = ""
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    estimated: bool = False


def weight_info(folder: Path, config: dict, quant: Optional["Quantization"] = None) -> WeightInfo:
    """Count parameters from safetensors headers (exact), else from an index's total_size or the
    weight files' sizes ÷ bytes per parameter (estimates). Never reads tensor data."""
    info = WeightInfo()
    bits = quant.bits if quant is not None else None
    index_path = folder / INDEX_NAME
    st_files, missing, index = safetensors_files(folder)
    if index is not None and st_files and missing:
        shards = _index_shards(index)
        info.warnings.append(f"{index_path.name} lists {len(shards)} shard(s) but {len(missing)} are missing "
                             f"({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}): the download is "
                             "incomplete and the model will not load until they are there")
        for p in st_files:  # still check that what is there is readable
            read_safetensors_header(p)
        st_files = []       # count from the index's total_size below
    if st_files:
        headers = [read_safetensors_header(p) for p in st_files]
        info.parameters = count_parameters(headers, bits)
        info.files = [p.name for p in st_files]
        info.total_bytes = sum(8 + h.header_bytes + h.data_bytes for h in headers)
        info.source = (f"{st_files[0].name} header" if len(st_files) == 1
                       else f"{len(st_files)} safetensors headers ({st_files[0].name}, …)")
        return info
    per, why = bytes_per_parameter(config, quant)

    def from_total_size(data: dict, name: str) -> bool:
        total = (data.get("metadata") or {}).get("total_size")
        if not (isinstance(total, (int, float)) and total > 0):
            return False
        info.parameters, info.total_bytes, info.estimated = int(total / per), int(total), True
        info.source = f"{name} metadata.total_size={int(total)} ÷ {per:g} bytes ({why})"
        return True

    if index is not None:
        if from_total_size(index, index_path.name):
            if not any((folder / s).is_file() for s in _index_shards(index)):
                info.warnings.append(f"no weight files next to {index_path.name} (only the index): the size comes "
                                     "from its total_size; the model cannot be launched from this folder until the "
                                     "shards are there")
            return info
        info.warnings.append(f"{index_path}: has no metadata.total_size")
    bin_index = folder / "pytorch_model.bin.index.json"
    if bin_index.is_file() and from_total_size(read_json_object(bin_index, "weights index"), bin_index.name):
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
