"""The GGUF header: the one reader of ``.gguf`` metadata in the package (parse, memory estimates and
the llama.cpp engine all read through :func:`read_gguf`).

The file is memory-mapped and the header walked with ``struct``; tensor data is never touched.
``gguf.GGUFReader`` reads the same header but turns every vocabulary string into a numpy array,
which takes seconds for a 150k-token vocabulary. Here string arrays are skipped by their length
prefixes, and only the texts of the special token ids are decoded. The ``gguf`` package is used for
what it is the reference of (quantization block sizes, file-type names) and imported inside the
functions that need it (it imports numpy). The tests check this reader against ``GGUFReader``.

A launch reads a file's metadata several times (the memory estimate, the engine's n_ctx, the
estimate of the loaded model): :func:`read_gguf` keeps the last few results, keyed by path, size and
modification time, so the header is walked once.
"""
from __future__ import annotations

import mmap
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError

GGUF_MAGIC = b"GGUF"
# a split GGUF's parts: "name-00001-of-00003.gguf"
SPLIT_GGUF = re.compile(r"^(?P<stem>.*)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")

# GGUF value types (gguf.GGUFValueType): struct formats of the fixed-size ones
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_WANTED_ARRAYS = ("tokenizer.ggml.tokens", "general.languages")
MAX_COUNT = 50_000_000


@dataclass
class GGUFInfo:
    """Header facts of one GGUF file. ``raw`` holds every scalar and string value (arrays left out);
    ``tokens`` the texts of the special ids only. Shared by the cache: do not modify."""

    path: Path
    architecture: Optional[str] = None
    name: Optional[str] = None
    size_label: Optional[str] = None
    context_length: Optional[int] = None
    embedding_length: Optional[int] = None
    block_count: Optional[int] = None
    head_count: Optional[int] = None
    head_count_kv: Optional[int] = None
    key_length: Optional[int] = None
    pooling_type: Optional[int] = None
    chat_template: Optional[str] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    eot_token_id: Optional[int] = None
    eom_token_id: Optional[int] = None
    add_bos_token: Optional[bool] = None
    file_type: Optional[int] = None
    parameters: int = 0
    tensor_count: int = 0             # 0: a vocabulary-only file (tokenizer and hyperparameters, no weights)
    vocab_size: Optional[int] = None  # entries of tokenizer.ggml.tokens
    split_count: int = 1
    languages: Optional[list[str]] = None
    tokens: dict[int, str] = field(default_factory=dict)   # texts of the special ids only
    raw: dict[str, Any] = field(default_factory=dict)       # scalar metadata (arrays left out)

    def token_text(self, token_id: Optional[int]) -> Optional[str]:
        return None if token_id is None else self.tokens.get(token_id)

    @property
    def file_type_name(self) -> Optional[str]:
        """``general.file_type`` as llama.cpp names it ("Q4_K_M", "F16"…)."""
        return file_type_name(self.file_type)

    @property
    def head_dim(self) -> Optional[int]:
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    @property
    def stop_token_ids(self) -> list[tuple[str, int]]:
        """(key, id) of the end-of-generation ids the header names: eos, eot, eom."""
        return [(key, tid) for key in ("eos", "eot", "eom")
                if (tid := getattr(self, f"{key}_token_id")) is not None]


def looks_like_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def file_type_name(file_type: Optional[int]) -> Optional[str]:
    """``general.file_type`` as llama.cpp names it: 15 → "Q4_K_M", 0 → "F32", 1 → "F16"."""
    if file_type is None:
        return None
    import gguf

    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return None
    if name == "GUESSED":
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


_QUANT_SIZES: dict[int, tuple[int, int]] = {}


def _quant_sizes() -> dict[int, tuple[int, int]]:
    """GGML type id → (block size, bytes per block), from the gguf package."""
    if not _QUANT_SIZES:
        import gguf

        _QUANT_SIZES.update({int(k): v for k, v in gguf.GGML_QUANT_SIZES.items()})
    return _QUANT_SIZES


# ------------------------------------------------------------------------------------------------
# Split files
# ------------------------------------------------------------------------------------------------

def split_siblings(path: Path) -> list[Path]:
    """The files of a split GGUF (``name-00001-of-00003.gguf``), this one included, in order, present
    or not; ``[path]`` for a single-file GGUF."""
    path = Path(path)
    m = SPLIT_GGUF.match(path.name)
    if not m:
        return [path]
    n = int(m.group("n"))
    return [path.with_name(f"{m.group('stem')}-{i:05d}-of-{m.group('n')}.gguf") for i in range(1, n + 1)]


def split_parts_present(path: Path) -> list[Path]:
    """The parts of ``path``'s split GGUF that exist (``[path]`` for a single file)."""
    return [p for p in split_siblings(path) if p == Path(path) or p.is_file()]


def is_first_part(name: str) -> bool:
    """False for the second and later parts of a split GGUF (which hold no model metadata)."""
    m = SPLIT_GGUF.match(name)
    return not m or m.group("i") == "00001"


# ------------------------------------------------------------------------------------------------
# Multimodal projectors (llama.cpp's mmproj files)
# ------------------------------------------------------------------------------------------------

PROJECTOR_ARCHITECTURE = "clip"     # general.architecture of every llama.cpp projector (mmproj) GGUF


def is_projector(info: GGUFInfo) -> bool:
    """A multimodal projector (mmproj) rather than a model."""
    return info.architecture == PROJECTOR_ARCHITECTURE


def sees_images(info: GGUFInfo) -> bool:
    """A projector with a vision encoder (``clip.has_vision_encoder``; an audio-only one has none)."""
    return is_projector(info) and info.raw.get("clip.has_vision_encoder") is not False


def projector_type(info: GGUFInfo) -> Optional[str]:
    """llama.cpp's name of the projector ("mlp", "qwen2.5vl_merger", "gemma3", ...), None if unnamed."""
    for key in ("clip.vision.projector_type", "clip.projector_type"):
        value = info.raw.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def looks_like_projector_name(name: str) -> bool:
    """Projector files say so in their names: mmproj-*.gguf, *-mmproj-f16.gguf, ..."""
    lowered = name.lower()
    return lowered.endswith(".gguf") and "mmproj" in lowered


def vision_projectors(folder: Path) -> list[Path]:
    """The vision projectors of ``folder`` (files named ``*mmproj*.gguf`` whose header is a projector
    with a vision encoder; unreadable ones left out), by name."""
    try:
        candidates = sorted(p for p in Path(folder).iterdir() if looks_like_projector_name(p.name) and p.is_file())
    except OSError:
        return []
    out = []
    for path in candidates:
        try:
            if sees_images(read_gguf(path)):
                out.append(path)
        except ParseError:
            continue
    return out


# ------------------------------------------------------------------------------------------------
# The header walk
# ------------------------------------------------------------------------------------------------

class _Cursor:
    """Bounds-checked reads from the mapped file; running past the end is a truncated header."""

    def __init__(self, buf: Any, path: Path, endian: str = "<"):
        self.buf, self.path, self.pos, self.e = buf, path, 0, endian
        self.size = len(buf)
        self.u64 = struct.Struct(endian + "Q")

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ParseError(f"{self.path}: truncated GGUF header (the file ends at byte {self.size}, the header "
                             f"goes on past byte {self.pos + max(n, 0)}); the file was cut short, re-download it")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(self.e + fmt)
        self.need(n)
        value = struct.unpack_from(self.e + fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def count(self, what: str) -> int:
        n = self.unpack("Q")
        if n > MAX_COUNT:
            raise ParseError(f"{self.path}: corrupt GGUF header ({what} = {n}); re-download the file")
        return n

    def string(self) -> str:
        n = self.count("string length")
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, n: int, offsets: Optional[list[int]] = None) -> None:
        """Step over ``n`` length-prefixed strings (remembering where each starts when asked): the hot
        loop of a 150k-token vocabulary, so it reads the lengths with one bound method and no checks
        but the end's."""
        unpack, buf, pos, size = self.u64.unpack_from, self.buf, self.pos, self.size
        try:
            if offsets is None:
                for _ in range(n):
                    pos += 8 + unpack(buf, pos)[0]
            else:
                append = offsets.append
                for _ in range(n):
                    append(pos)
                    pos += 8 + unpack(buf, pos)[0]
        except struct.error:
            pos = size + 1
        if pos > size:
            self.need(pos - self.pos)      # raises: the strings run past the end of the file
        self.pos = pos


def _value(cur: _Cursor, vtype: int, key: str, arrays: dict[str, Any]) -> Any:
    if vtype in _FIXED:
        return cur.unpack(_FIXED[vtype])
    if vtype == _STRING:
        return cur.string()
    if vtype == _ARRAY:
        sub = cur.unpack("I")
        n = cur.count(f"{key} length")
        if sub == _STRING:
            if key in _WANTED_ARRAYS:      # remember where each string is; decode only those asked for
                offsets: list[int] = []
                cur.skip_strings(n, offsets)
                arrays[key] = offsets
            else:
                cur.skip_strings(n)
            return None
        if sub in _FIXED:
            width = struct.calcsize("<" + _FIXED[sub])
            cur.need(n * width)
            cur.pos += n * width
            return None
        for _ in range(n):
            _value(cur, sub, key, {})
        return None
    raise ParseError(f"{cur.path}: corrupt GGUF header (value type {vtype} of {key!r}); re-download the file")


def _string_at(cur: _Cursor, offset: int) -> str:
    cur.pos = offset
    return cur.string()


_CACHE: "OrderedDict[tuple, GGUFInfo]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def read_gguf(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file: metadata, the texts of the special token ids and the tensor
    infos (shapes and types, for the parameter count). Not GGUF, truncated or corrupt: a ParseError
    naming the file. The result is cached per (path, size, mtime): treat it as read-only."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ParseError(f"{path}: cannot read the GGUF file: {exc.strerror or exc}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    info = _read_file(path, st.st_size)
    with _CACHE_LOCK:
        _CACHE[key] = info
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return info


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _read_file(path: Path, size: int) -> GGUFInfo:
    if size < 24:
        raise ParseError(f"{path}: truncated GGUF file ({size} bytes; a GGUF header needs at least 24); "
                         "re-download it")
    if not looks_like_gguf(path):
        raise ParseError(f"{path}: is not a GGUF file (it does not start with the GGUF magic bytes); pass a .gguf "
                         "model file or the model's folder")
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise ParseError(f"{path}: cannot map the GGUF file: {exc}") from None
    try:
        return _read(path, buf, size)
    finally:
        buf.close()


def _read(path: Path, buf: Any, size: int) -> GGUFInfo:
    cur = _open_header(path, buf)
    tensor_count = cur.count("tensor count")
    kv_count = cur.count("metadata count")
    raw, arrays = _read_metadata(cur, kv_count)
    parameters, end_of_data = _read_tensor_infos(cur, tensor_count)
    _check_data_section(cur, raw, tensor_count, end_of_data, size)
    info = GGUFInfo(path, raw=raw, parameters=parameters, tensor_count=tensor_count)
    _fill_typed_facts(info)
    _decode_wanted_strings(info, cur, arrays)
    return info


def _open_header(path: Path, buf: Any) -> _Cursor:
    """A cursor past the version field, in the byte order the file was written in; a version other
    than 2 or 3 is a ParseError."""
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.unpack("I")
    if version & 0xFFFF == 0:            # written on a big-endian machine
        cur = _Cursor(buf, path, ">")
        cur.pos = 8
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in (2, 3):
        raise ParseError(f"{path}: GGUF version {version} is not supported (2 and 3 are); convert the model again "
                         "with a recent llama.cpp")
    return cur


def _read_metadata(cur: _Cursor, kv_count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The key/value section: (scalar and string values by key, string offsets of the wanted arrays)."""
    raw: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        vtype = cur.unpack("I")
        value = _value(cur, vtype, key, arrays)
        if value is not None:
            raw[key] = value
    return raw, arrays


def _read_tensor_infos(cur: _Cursor, tensor_count: int) -> tuple[int, int]:
    """(parameter count, bytes of tensor data the infos describe, from the data section's start)."""
    quant_sizes = _quant_sizes() if tensor_count else {}
    parameters = 0
    end_of_data = 0
    for _ in range(tensor_count):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise ParseError(f"{cur.path}: corrupt GGUF header (tensor {name!r} has {n_dims} dimensions)")
        numel = 1
        for _ in range(n_dims):
            numel *= cur.unpack("Q")
        ggml_type = cur.unpack("I")
        offset = cur.unpack("Q")
        sizes = quant_sizes.get(ggml_type)
        if sizes is None:
            raise ParseError(f"{cur.path}: tensor {name!r} has an unknown GGML type {ggml_type}; the file is corrupt "
                             "or newer than the gguf package (pip install -U gguf)")
        block, type_size = sizes
        parameters += numel
        end_of_data = max(end_of_data, offset + numel // block * type_size)
    return parameters, end_of_data


def _check_data_section(cur: _Cursor, raw: dict[str, Any], tensor_count: int, end_of_data: int, size: int) -> None:
    """A ParseError unless general.alignment is a power of two and the tensor data fits in the file."""
    alignment = raw.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ParseError(f"{cur.path}: corrupt GGUF header (general.alignment = {alignment!r})")
    data_start = cur.pos + (-cur.pos) % alignment
    # a file without tensors (llama.cpp's vocabulary-only ggml-vocab-*.gguf) has no data section: its
    # header may end unpadded before the aligned data start, and that is the whole file
    if tensor_count and data_start + end_of_data > size:
        raise ParseError(f"{cur.path}: truncated GGUF file: its header describes {data_start + end_of_data} bytes, "
                         f"the file has {size}; the download was cut short, re-download it")


def _as_int(value: Any) -> Optional[int]:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _fill_typed_facts(info: GGUFInfo) -> None:
    """Sets ``info``'s typed fields from its raw metadata (a value of the wrong type is None)."""
    get = info.raw.get
    info.architecture = _as_str(get("general.architecture"))
    info.name = _as_str(get("general.name"))
    info.size_label = _as_str(get("general.size_label"))
    if info.architecture:
        arch = info.architecture
        info.context_length = _as_int(get(f"{arch}.context_length"))
        info.embedding_length = _as_int(get(f"{arch}.embedding_length"))
        info.block_count = _as_int(get(f"{arch}.block_count"))
        info.head_count = _as_int(get(f"{arch}.attention.head_count"))
        info.head_count_kv = _as_int(get(f"{arch}.attention.head_count_kv"))
        info.key_length = _as_int(get(f"{arch}.attention.key_length"))
        info.pooling_type = _as_int(get(f"{arch}.pooling_type"))
    info.chat_template = _as_str(get("tokenizer.chat_template"))
    for key in ("bos", "eos", "eot", "eom"):
        setattr(info, f"{key}_token_id", _as_int(get(f"tokenizer.ggml.{key}_token_id")))
    add_bos = get("tokenizer.ggml.add_bos_token")
    info.add_bos_token = add_bos if isinstance(add_bos, bool) else None
    info.file_type = _as_int(get("general.file_type"))
    split = _as_int(get("split.count"))
    info.split_count = split if split and split > 0 else 1


def _decode_wanted_strings(info: GGUFInfo, cur: _Cursor, arrays: dict[str, Any]) -> None:
    """Sets the languages, the vocabulary size and the texts of the special ids from the offsets of
    the wanted string arrays."""
    if "general.languages" in arrays:
        info.languages = [x for x in (_string_at(cur, o) for o in arrays["general.languages"]) if x]
    offsets = arrays.get("tokenizer.ggml.tokens")
    if offsets is not None:
        info.vocab_size = len(offsets)
        for tid in (info.bos_token_id, info.eos_token_id, info.eot_token_id, info.eom_token_id):
            if tid is not None and 0 <= tid < len(offsets):
                info.tokens[tid] = _string_at(cur, offsets[tid])
