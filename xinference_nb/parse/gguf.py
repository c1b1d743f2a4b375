"""Moved to :mod:`xinference_nb.metadata.gguf` (the one GGUF reader); these names stay importable."""
from __future__ import annotations

from ..metadata.gguf import (  # noqa: F401
    GGUF_MAGIC,
    MAX_COUNT,
    SPLIT_GGUF,
    GGUFInfo,
    file_type_name,
    looks_like_gguf,
    read_gguf,
    split_siblings,
)
