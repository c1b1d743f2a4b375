"""Prefix caching for the transformers LLM engine: prompts' key/value tensors kept for reuse.

One ``PrefixCache`` per loaded model (the model itself is the implicit part of the key: a store never
outlives its model; ``TransformersLLM.close`` empties it). An entry is (key, token ids, per-layer
key/value tensors of batch 1 for exactly those ids, in the order of the ids, no padding). The key is
the request's LoRA adapter (None: the base model): the same tokens under two adapters have different
key/values and never share an entry. Requests with images never reach the batch scheduler (the
vision engine runs one ``generate`` each), so no entry ever holds an image's tokens.

``lookup`` finds the entry with the longest common token prefix with a new prompt (same key) and
reuses at most ``len(prompt) - 1`` tokens: the last prompt token is always computed, so its logits
exist. The entries' tensors are never written: a prefill copies them into its own cache (see
``batching_llm.BatchScheduler._prefill_ids``), so evicting an entry never touches a running row.

``put`` stores a prompt's entry unless most of it duplicates an existing one: an entry whose ids are a
prefix of the new ids is replaced by it (the longer one serves every lookup the shorter one did), and
an entry sharing more than half of the new ids with the best existing one is not stored (24 rows that
share a long instruction keep one copy of it, not 24). The size limit counts tokens over all entries
(``prefix_cache_max_tokens``): the least recently used entries go first; an entry longer than the limit
is not stored. Thread-safe (one lock): the scheduler's worker stores and looks up, ``close`` clears.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from ..memory import PREFIX_CACHE_DEFAULT_TOKENS

DEFAULT_MAX_TOKENS = PREFIX_CACHE_DEFAULT_TOKENS


@dataclass
class Entry:
    key: Optional[str]
    ids: tuple[int, ...]
    kv: list[tuple[Any, Any]]      # per layer: (keys, values), each (1, heads, len(ids), head_dim)

    @property
    def nbytes(self) -> int:
        return sum(int(k.nelement() * k.element_size() + v.nelement() * v.element_size()) for k, v in self.kv)


def common_prefix(a: Any, b: Any) -> int:
    """The length of the longest common prefix of two token id sequences (a binary search over slice
    comparisons: the comparisons run in C)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:      # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PrefixCache:
    """A per-model LRU store of prompt key/value caches (see the module doc)."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS):
        self.max_tokens = max(1, int(max_tokens))
        self._entries: "OrderedDict[int, Entry]" = OrderedDict()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.tokens = 0          # tokens held over all entries
        self.hits = 0            # lookups that reused at least one token
        self.reused_tokens = 0   # prompt tokens taken from the store instead of computed

    def __len__(self) -> int:
        return len(self._entries)

    def _best(self, key: Optional[str], ids: tuple[int, ...]) -> tuple[Optional[int], int]:
        best, length = None, 0
        for handle, e in self._entries.items():
            if e.key == key:
                n = common_prefix(e.ids, ids)
                if n > length:
                    best, length = handle, n
        return best, length

    def lookup(self, key: Optional[str], ids: list[int]) -> tuple[Optional[Entry], int]:
        """(entry, how many of ``ids``' first tokens it holds) for the longest match, at most
        ``len(ids) - 1`` tokens; (None, 0) without one. The entry becomes the most recently used."""
        with self._lock:
            handle, n = self._best(key, tuple(ids))
            n = min(n, len(ids) - 1)
            if handle is None or n <= 0:
                return None, 0
            self._entries.move_to_end(handle)
            self.hits += 1
            self.reused_tokens += n
            return self._entries[handle], n

    def lookup_length(self, key: Optional[str], ids: list[int]) -> int:
        """How many of ``ids``' first tokens the best entry holds (a look that changes nothing)."""
        with self._lock:
            return self._best(key, tuple(ids))[1]

    def wants(self, key: Optional[str], ids: list[int], force: bool = False) -> bool:
        """Whether ``put`` would store these ids (so the caller copies the tensors only then)."""
        if not 0 < len(ids) <= self.max_tokens:
            return False
        if force:
            return True
        with self._lock:
            handle, n = self._best(key, tuple(ids))
        if handle is None:
            return True
        if n == len(self._entries[handle].ids):
            return n < len(ids)          # extends that entry (equal ids: nothing new)
        return n <= len(ids) // 2

    def put(self, key: Optional[str], ids: list[int], kv: list[tuple[Any, Any]], force: bool = False) -> bool:
        """Store an entry (see the module doc); True when stored."""
        if not self.wants(key, ids, force):
            return False
        entry = Entry(key, tuple(ids), kv)
        with self._lock:
            for handle, e in list(self._entries.items()):   # entries this one extends are covered by it
                if e.key == key and len(e.ids) <= len(entry.ids) and entry.ids[:len(e.ids)] == e.ids:
                    self._remove(handle)
            self._entries[next(self._ids)] = entry
            self.tokens += len(entry.ids)
            while self.tokens > self.max_tokens:
                self._remove(next(iter(self._entries)))
        return True

    def _remove(self, handle: int) -> None:
        self.tokens -= len(self._entries.pop(handle).ids)

    def nbytes(self) -> int:
        """The bytes the entries hold now."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.tokens = 0
