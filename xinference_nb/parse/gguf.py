"""GGUF metadata read with ``gguf.GGUFReader`` (memory-mapped; tensor data is never touched).

``gguf`` imports numpy and takes a while to import, so it is imported inside :func:`read_gguf`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ParseError

GGUF_MAGIC = b"GGUF"
_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")


@dataclass
class GGUFInfo:
    path: Path
    architecture: Optional[str] = None
    name: Optional[str] = None
    size_label: Optional[str] = None
    context_length: Optional[int] = None
    embedding_length: Optional[int] = None
    pooling_type: Optional[int] = None
    chat_template: Optional[str] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    eot_token_id: Optional[int] = None
    eom_token_id: Optional[int] = None
    file_type: Optional[int] = None
    file_type_name: Optional[str] = None       # "Q4_K_M", "F16", "F32", …
    parameters: int = 0
    tensor_count: int = 0
    split_count: int = 1
    languages: Optional[list[str]] = None
    tokens: dict[int, str] = field(default_factory=dict)   # only the ids we asked for
    raw: dict[str, Any] = field(default_factory=dict)       # scalar metadata (no arrays)

    def token_text(self, token_id: Optional[int]) -> Optional[str]:
        return None if token_id is None else self.tokens.get(token_id)


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


def _scalar(field_: Any) -> Any:
    try:
        return field_.contents()
    except Exception:  # noqa: BLE001 - a malformed field reads as absent
        return None


def read_gguf(path: Path) -> GGUFInfo:
    """Header facts of a GGUF file. A file that is not GGUF, or whose header is truncated or
    unreadable, is a ParseError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(f"{path}: cannot read the GGUF file: {exc.strerror or exc}") from None
    if size < 24:
        raise ParseError(f"{path}: truncated GGUF file ({size} bytes; a GGUF header needs at least 24); "
                         "re-download it")
    if not looks_like_gguf(path):
        raise ParseError(f"{path}: is not a GGUF file (it does not start with the GGUF magic bytes); pass a .gguf "
                         "model file or the model's folder")
    try:
        import gguf
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise ParseError("reading GGUF files needs the gguf package: pip install gguf") from None
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - GGUFReader raises ValueError/IndexError/KeyError on bad files
        raise ParseError(f"{path}: unreadable or truncated GGUF header ({type(exc).__name__}: {exc}); the file is "
                         "corrupt or was cut short, re-download it") from None
    try:
        return _info_from_reader(path, reader, size)
    finally:
        mm = getattr(getattr(reader, "data", None), "_mmap", None)
        del reader
        if mm is not None:
            try:
                mm.close()
            except (BufferError, ValueError):
                pass


def _info_from_reader(path: Path, reader: Any, size: int) -> GGUFInfo:
    fields = reader.fields
    info = GGUFInfo(path)
    for name, f in fields.items():
        if name.startswith("GGUF."):
            continue
        types = getattr(f, "types", None) or []
        if types and getattr(types[0], "name", "") == "ARRAY":
            continue
        info.raw[name] = _scalar(f)
    get = info.raw.get
    arch = get("general.architecture")
    info.architecture = arch if isinstance(arch, str) else None
    info.name = get("general.name")
    info.size_label = get("general.size_label")
    if arch:
        info.context_length = get(f"{arch}.context_length")
        info.embedding_length = get(f"{arch}.embedding_length")
        info.pooling_type = get(f"{arch}.pooling_type")
    info.chat_template = get("tokenizer.chat_template")
    for key in ("bos", "eos", "eot", "eom"):
        value = get(f"tokenizer.ggml.{key}_token_id")
        setattr(info, f"{key}_token_id", int(value) if isinstance(value, int) else None)
    ft = get("general.file_type")
    info.file_type = int(ft) if isinstance(ft, int) else None
    info.file_type_name = file_type_name(info.file_type)
    split = get("split.count")
    info.split_count = int(split) if isinstance(split, int) and split > 0 else 1
    langs = fields.get("general.languages")
    if langs is not None:
        value = _scalar(langs)
        if isinstance(value, list):
            info.languages = [str(x) for x in value if x]
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        wanted = {i for i in (info.bos_token_id, info.eos_token_id, info.eot_token_id, info.eom_token_id)
                  if i is not None}
        n = len(tokens.data)
        for tid in wanted:
            if 0 <= tid < n:
                try:
                    info.tokens[tid] = tokens.contents(tid)
                except Exception:  # noqa: BLE001
                    pass
    info.tensor_count = len(reader.tensors)
    end = 0
    for t in reader.tensors:
        info.parameters += int(t.n_elements)
        end = max(end, int(t.data_offset) + int(t.n_bytes))
    if end > size:
        raise ParseError(f"{path}: truncated GGUF file: its header describes {end} bytes, the file has {size}; "
                         "re-download it")
    return info


def split_siblings(path: Path) -> list[Path]:
    """The other files of a split GGUF (``name-00001-of-00003.gguf``), this one included, in order."""
    m = _SPLIT.match(path.name)
    if not m:
        return [path]
    n = int(m.group("n"))
    return [path.with_name(f"{m.group('stem')}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
