"""safetensors headers: the one reader of ``.safetensors`` metadata in the package.

A safetensors file starts with an 8-byte little-endian length and that many bytes of JSON (tensor
name → dtype, shape, data offsets). Only that header is read, checked against the file's size: each
tensor's dtype × shape must take exactly its byte range, inside the data section, sharing no byte with
another tensor. An unreadable, truncated or corrupt file is a ParseError that names it (and the tensor).
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ParseError

# safetensors refuses headers above 100 MB; so do we (a corrupt length would otherwise make us
# read a whole multi-GB file).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

# bytes per element of the safetensors dtypes
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F8_E4M3FN": 1, "F8_E5M2FNUZ": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75, "C64": 8,
}

# Tensors that hold quantization bookkeeping rather than parameters.
_QUANT_AUX_SUFFIXES = (
    ".qzeros", ".scales", ".g_idx", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
    ".weight_scale", ".weight_scale_inv", ".input_scale", ".weight_zero_point", ".weight_g_idx",
    ".weight_shape", ".SCB", ".weight_format", ".k_scale", ".v_scale", ".output_scale",
)
_PACKED_SUFFIXES = (".qweight", ".weight_packed")


@dataclass
class SafetensorsHeader(Mapping):
    """One file's header; a read-only mapping of tensor name → ``{"dtype", "shape", "data_offsets"}``
    (``__metadata__`` is in ``metadata``, not among the tensors)."""

    path: Path
    tensors: dict[str, dict]
    metadata: dict[str, str]
    header_bytes: int
    data_bytes: int                   # bytes of tensor data the header describes

    def __getitem__(self, name: str) -> dict:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


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
    end = _check_tensors(path, header, size - 8 - n)
    return SafetensorsHeader(path, header, metadata if isinstance(metadata, dict) else {}, n, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tensors(path: Path, header: dict, data_size: int) -> int:
    """The end of the tensor data a header describes, after checking that each tensor's dtype and
    shape take exactly the bytes of its ``data_offsets``, inside the file's data section
    (``data_size`` = file size - 8 - header length), and that no two tensors share bytes. A header
    that lies (a rank-120000 matrix announced in a 536-byte file) would otherwise make a loader
    allocate what the shapes say before it finds the data missing."""
    ranges: list[tuple[int, int, str]] = []
    end = 0
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list) and "dtype" in info):
            raise ParseError(f"{path}: tensor {name!r} has no dtype/shape in the safetensors header; "
                             "the file is corrupt")
        dtype, shape, offsets = info["dtype"], info["shape"], info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise ParseError(f"{path}: tensor {name!r} has dtype {str(dtype)[:20]!r}, not a safetensors dtype "
                             f"({', '.join(DTYPE_BYTES)}); the file is corrupt")
        if not all(_is_count(d) for d in shape):
            raise ParseError(f"{path}: tensor {name!r} has shape {str(shape)[:80]}, not a list of sizes; "
                             "the file is corrupt")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise ParseError(f"{path}: tensor {name!r} has data_offsets {str(offsets)[:80]}, not [begin, end] "
                             "byte positions; the file is corrupt")
        begin, stop = offsets
        bits = math.prod(shape) * int(DTYPE_BYTES[dtype] * 8)
        if bits % 8 or bits // 8 != stop - begin:
            takes = f"{bits // 8} bytes" if bits % 8 == 0 else f"{bits} bits"
            raise ParseError(f"{path}: tensor {name!r} ({dtype} of shape {str(shape)[:80]}) takes "
                             f"{takes}, but its data_offsets [{begin}, {stop}] hold {stop - begin}; "
                             "the header does not describe its data, the file is corrupt")
        if stop > data_size:
            raise ParseError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte {stop} of the data "
                             f"section, which has {max(data_size, 0)} bytes; re-download it")
        if stop > begin:
            ranges.append((begin, stop, name))
        end = max(end, stop)
    ranges.sort()
    for (_, stop_a, a), (begin_b, _, b) in zip(ranges, ranges[1:]):
        if begin_b < stop_a:
            raise ParseError(f"{path}: tensors {a!r} and {b!r} share bytes (data_offsets overlap); the file is "
                             "corrupt")
    return end


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
