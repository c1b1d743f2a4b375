"""Continuous batching for the transformers LLM engine.

One worker thread per model owns the forward passes while requests are running (it exits when
there is nothing left to do, and the next request starts a new one). Each request joins the
running batch at the next step and leaves when it is done, with its own stop ids and strings,
max_tokens, sampling parameters and seed (a ``torch.Generator`` per request; argmax when greedy):

- joining: the joiners' prompts are prefilled together (left-padded, ``logits_to_keep=1``) into a
  fresh ``DynamicCache``, and their key/value tensors are left-padded and concatenated onto the
  running batch's along the batch axis;
- the cache's layers grow in place (``growing_layer``): key/value views of buffers with room to
  grow, so a step writes one column instead of copying the whole cache (``DynamicLayer``'s
  ``torch.cat``: 20 % of a step at 16 rows and ~45 tokens, more with longer prompts);
- prefix caching (``prefix_cache.PrefixCache``, the engine's ``enable_prefix_caching``): a joiner's
  prompt prefix found in the store is not computed: its key/values are copied into the prefill's cache
  (left-padded to the longest cached prefix, the row's mask 1 over its prefix and its suffix) and the
  forward pass runs over the un-cached suffixes only, positions going on from each prefix's length;
  joiners that share a prefix of ``SHARED_MIN`` tokens or more compute it once first (``_share_prefixes``);
  after a prefill every row's prompt key/values (its own columns, copied) go into the store;
- a step: one forward pass of the last token of every running sequence, with a per-row attention
  mask (0 over each row's left padding) and per-row position ids;
- leaving: the finished rows are dropped from the cache (``index_select``) and the columns that are
  padding for every remaining row are cut off.

One request never fails another: what goes wrong in one row (NaN or infinite logits from the model
or a LoRA adapter, a failing logits processor or sampling step, a stop-string check that raises)
ends that request alone with an InferenceError, at the step it happened, and the other rows go on
exactly as they would alone. Each row's next token is picked inside ``_pick_row`` behind that
boundary: the model's logits are checked, then the row's logits processors run in order (the
repetition penalty, OpenAI's presence / frequency penalties, logit_bias and a structured output's mask:
``BatchRequest.logits_processors``, built by ``sampling.row_processors``), then greedy or sampling
(``sampling.sample_token``), which stays finite for any accepted temperature, top_p, top_k and min_p.
The logprobs of a row (``BatchRequest.logprobs``) come from its raw logits, before any processor. A
constrained row (``BatchRequest.constraint``) consumes each token it emits and finishes with "stop"
once its structure is complete; constrained and free rows, with different constraints, share a batch.
A prefill that raises is retried one joiner at a time, so only the joiner that cannot run fails; a
decode step that raises fails every row (their cache is shared).

Cancellation: a reader that goes away (``TokenStream.close``) drops its row at the next step;
``terminate_model`` (``InFlight.cancel``) ends every running and waiting request with
InferenceError("model terminated ..."). The worker runs inside one ``InFlight.step()``, so
``wait_idle`` waits for it before the weights are freed.

LoRA adapters (a peft model): each row's forward applies its own request's adapter (peft's per-row
``adapter_names``, ``"__base__"`` for none), so requests with different adapters share a batch.

Only models whose cache layers are all ``DynamicLayer`` (no sliding window, no quantized cache)
batch; ``supports_batching`` says so, and the engine falls back to one request at a time.
"""
from __future__ import annotations

import inspect
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..chat import SamplingParams, TokenStream, incremental_deltas
from ..errors import InferenceError
from .options import BASE_ADAPTER
from .prefix_cache import common_prefix
from .sampling import logprob_entry, sample_token
from ..threads import scope_event
from . import CANCELLED, InFlight

_DONE = object()
# joiners whose prompts share at least this many tokens (beyond the prefix cache's) compute them once
SHARED_MIN = 16


_GROWING: list[Any] = []


def growing_layer() -> Any:
    """A ``DynamicLayer`` whose keys and values are views of preallocated buffers (the class is made
    on first use: transformers is imported lazily). Appending writes in place; the buffers grow by a
    quarter (at least 64 columns) when full, and are rebuilt when the scheduler replaced the tensors
    (a merge or a drop). The same numbers as ``DynamicLayer``: only where the tensors live changes."""
    if not _GROWING:
        from transformers.cache_utils import DynamicLayer

        class _GrowingLayer(DynamicLayer):
            _kbuf: Any = None
            _vbuf: Any = None

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                n = self.get_seq_length()
                end = n + key_states.shape[-2]
                buf = self._kbuf
                if (buf is None or buf.shape[-2] < end or buf.shape[0] != key_states.shape[0]
                        or (n and self.keys.data_ptr() != buf.data_ptr())):
                    shape = list(key_states.shape)
                    shape[-2] = end + max(64, end // 4)
                    kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                    if n:
                        kbuf[:, :, :n] = self.keys
                        vbuf[:, :, :n] = self.values
                    self._kbuf, self._vbuf = kbuf, vbuf
                self._kbuf[:, :, n:end] = key_states
                self._vbuf[:, :, n:end] = value_states
                self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
                return self.keys, self.values

        _GROWING.append(_GrowingLayer)
    return _GROWING[0]()


def supports_batching(model: Any) -> bool:
    """True when the model's default cache is made of plain DynamicLayers (what the merge handles)."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - any model the cache cannot describe runs one request at a time
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class BatchRequest:
    """One generation in the batch: its prompt ids, limits, sampling and what it produced."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new: int
    stop_ids: set[int]
    stop_strings: list[str]
    sample: bool
    temperature: float = 1.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    generator: Any = None
    adapter: Optional[str] = None     # the LoRA adapter of this request (None: the base model)
    min_p: Optional[float] = None
    # the request's logits processors, run in order (``sampling.row_processors``: repetition penalty,
    # presence / frequency penalties, logit_bias, the constraint's mask): ``fn(ids, logits) -> logits``
    # with ``ids`` the prompt and generated ids so far and ``logits`` this row's float32 scores (1-D,
    # the vocabulary); an exception or NaN scores fail this request alone
    logits_processors: list[Callable[[list[int], Any], Any]] = field(default_factory=list)
    # the request's structured-output state (``structured.RowConstraint``): it consumes each token, and
    # the request finishes ("stop") once the structure is complete
    constraint: Any = None
    # with params.logprobs: one OpenAI-shaped entry per generated token (the stop token left out), from
    # the raw logits; ``piece(id)`` is a token's (text alone, bytes): ``sampling.token_piece``
    logprobs: Optional[list[dict[str, Any]]] = None
    piece: Optional[Callable[[int], tuple[str, bytes]]] = None
    out: "queue.Queue[Any]" = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    error: Optional[BaseException] = None
    done: bool = False

    def emit(self, tid: int) -> None:
        self.ids.append(tid)
        self.out.put(tid)

    def finish(self, reason: Optional[str] = None, error: Optional[BaseException] = None) -> None:
        if self.done:
            return
        self.done = True
        if reason is not None:
            self.finish_reason = reason
        self.error = error
        self.out.put(_DONE)


class BatchScheduler:
    """Continuous batching over one transformers model (see the module doc)."""

    def __init__(self, model: Any, tokenizer: Any, inflight: InFlight, model_uid: str, *, max_num_seqs: int = 16,
                 batch_wait_ms: float = 2.0, pad_token_id: Optional[int] = None, device: Any = None,
                 adapters: bool = False, prefix_cache: Any = None):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.inflight = inflight
        self.model_uid = model_uid
        self.max_num_seqs = max(1, int(max_num_seqs))
        self.batch_wait = max(0.0, float(batch_wait_ms)) / 1000
        self.pad_token_id = int(pad_token_id) if pad_token_id is not None else 0
        self.device = device if device is not None and str(device) != "cpu" else torch.device("cpu")
        self._adapters = adapters      # a peft model: every forward names each row's adapter
        get_base = getattr(model, "get_base_model", None)   # a peft model's forward takes **kwargs
        params = inspect.signature((get_base() if adapters and callable(get_base) else model).forward).parameters
        self._keep_logits = "logits_to_keep" in params
        # transformers >= 5.2x names the cache argument ``cache`` (``past_key_values`` is deprecated)
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[BatchRequest] = []
        self._running = False
        # the running batch (touched only by the worker thread)
        self._rows: list[BatchRequest] = []
        self._cache: Any = None
        self._mask: Any = None
        self.steps = 0            # forward passes run (prefills + decode steps), for tests and benches
        self.prefill_tokens = 0   # prompt tokens computed by prefills (the prefix cache's reuse left out)
        self.prefix_cache = prefix_cache   # a prefix_cache.PrefixCache, or None: every prompt token computed

    # ------------------------------------------------------------------ requests
    def submit(self, req: BatchRequest) -> BatchRequest:
        with self._cond:
            self.inflight.check()
            self._pending.append(req)
            if not self._running:
                self._running = True
                self.inflight.spawn(self._work, f"xinf-generate-{self.model_uid}")
            self._cond.notify_all()
        return req

    # ------------------------------------------------------------------ worker
    def _take(self) -> Optional[list[BatchRequest]]:
        """The requests that join now; None when the worker has nothing left and exits."""
        with self._cond:
            self.inflight.check()
            for r in [r for r in self._pending if r.closed.is_set()]:
                r.finish("stop")
            self._pending = [r for r in self._pending if not r.done]
            if not self._rows and not self._pending:
                self._running = False
                return None
            if not self._rows and self.batch_wait and len(self._pending) < self.max_num_seqs:
                # idle start: let a burst of requests arrive so their prompts prefill together
                self._cond.wait_for(lambda: len(self._pending) >= self.max_num_seqs or self.inflight.cancelled,
                                    self.batch_wait)
            room = self.max_num_seqs - len(self._rows)
            joiners, self._pending = self._pending[:room], self._pending[room:]
            return joiners

    def _work(self) -> None:
        """The worker thread: everything it does, its clean-up included, runs inside one step, so
        ``wait_idle`` returns only once it has let go of every tensor."""
        try:
            with self.inflight.step():
                try:
                    self._loop()
                except BaseException as exc:  # terminated (or worse): nobody waits forever
                    self._fail_all(exc if isinstance(exc, InferenceError) else
                                   InferenceError(f"generation failed: {type(exc).__name__}: {exc}"))
        except InferenceError as exc:  # terminated before the step began
            self._fail_all(exc)

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                joiners = self._take()
                if joiners is None:
                    return
                try:
                    self._drop([r for r in self._rows if r.closed.is_set()], "stop")
                    if joiners:
                        self._join(joiners)
                        joiners = []
                    if self._rows:
                        self._decode()
                except Exception as exc:  # noqa: BLE001 - every running request gets the error
                    err = (self.inflight.error() if self.inflight.cancelled else
                           InferenceError(f"generation failed: {type(exc).__name__}: {exc}"))
                    for r in self._rows + joiners:
                        r.finish(error=err)
                    self._rows, self._cache, self._mask = [], None, None

    def _fail_all(self, err: InferenceError) -> None:
        """End every running and waiting request with ``err`` and free the batch."""
        with self._cond:
            rest, self._pending = self._pending, []
            self._running = False
        for r in self._rows + rest:
            r.finish(error=err)
        self._rows, self._cache, self._mask = [], None, None

    # ------------------------------------------------------------------ forward passes
    def _forward(self, input_ids: Any, mask: Any, positions: Any, cache: Any, rows: list[BatchRequest]) -> Any:
        kw: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions,
                              self._cache_arg: cache, "use_cache": True}
        if self._adapters:
            kw["adapter_names"] = [r.adapter or BASE_ADAPTER for r in rows]
        if self._keep_logits:
            kw["logits_to_keep"] = 1
        self.steps += 1
        return self.model(**kw).logits[:, -1, :].float()

    def _join(self, joiners: list[BatchRequest]) -> None:
        """Prefill the joiners together; when that forward pass raises (an input the model cannot run),
        again one at a time, so that only the joiner that fails gets the error. A prefill fills a cache
        of its own: the running rows are untouched until its rows merge."""
        if self.prefix_cache is not None and len(joiners) > 1:
            self._share_prefixes(joiners)
        try:
            logits, cache, mask = self._prefill(joiners)
        except Exception as exc:  # noqa: BLE001 - told to the joiner it belongs to
            if self.inflight.cancelled:
                raise
            if len(joiners) == 1:
                joiners[0].finish(error=row_error(exc))
            else:
                for r in joiners:
                    self._join([r])
            return
        self._merge(joiners, cache, mask)
        self._advance(logits, start=len(self._rows) - len(joiners))

    def _prefill(self, joiners: list[BatchRequest]) -> tuple[Any, Any, Any]:
        """(last logits, cache, attention mask) of the joiners' prompts (each prompt's cached prefix
        taken from the prefix cache, the rest computed), stored in the prefix cache after."""
        return self._prefill_ids([r.prompt_ids for r in joiners], joiners)

    def _prefill_ids(self, prompts: list[list[int]], rows: list[BatchRequest],
                     force_store: bool = False) -> tuple[Any, Any, Any]:
        """One forward pass over the prompts' un-cached suffixes, left-padded together, after their
        cached prefixes (copied from the prefix cache, left-padded to the longest: a row's mask is
        [0.. 1 × its prefix | 0.. 1 × its suffix]); positions go on from each prefix's length. Without
        a prefix cache (or a hit) this is the plain left-padded prefill. ``rows[i]``: the request whose
        adapter applies to ``prompts[i]``."""
        import torch
        from transformers import DynamicCache

        store = self.prefix_cache
        adapters = [r.adapter for r in rows]
        hits = [store.lookup(a, p) if store is not None else (None, 0) for p, a in zip(prompts, adapters)]
        pre = max(n for _, n in hits)
        suf = max(len(p) - n for p, (_, n) in zip(prompts, hits))
        ids = torch.full((len(prompts), suf), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), pre + suf), dtype=torch.long)
        for i, (p, (_, n)) in enumerate(zip(prompts, hits)):
            s = len(p) - n
            ids[i, suf - s:] = torch.tensor(p[n:], dtype=torch.long)
            mask[i, pre - n:pre] = 1
            mask[i, pre + suf - s:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, pre:]
        cache = DynamicCache(config=self.model.config)
        cache.layers = [growing_layer() for _ in cache.layers]
        if pre:
            _fill_prefixes(cache, hits, pre)
        self.prefill_tokens += sum(len(p) - n for p, (_, n) in zip(prompts, hits))
        logits = self._forward(ids, mask, positions, cache, rows)
        if store is not None:
            self._store(prompts, adapters, cache, mask, force_store)
        return logits, cache, mask

    def _store(self, prompts: list[list[int]], adapters: list[Optional[str]], cache: Any, mask: Any,
               force: bool) -> None:
        """Each row's prompt key/values (its own columns, no padding: copies) into the prefix cache."""
        store = self.prefix_cache
        for i, (p, a) in enumerate(zip(prompts, adapters)):
            if not store.wants(a, p, force):
                continue
            cols = mask[i].nonzero().squeeze(-1)
            kv = [(layer.keys[i:i + 1].index_select(2, cols), layer.values[i:i + 1].index_select(2, cols))
                  for layer in cache.layers]
            store.put(a, p, kv, force)

    def _share_prefixes(self, joiners: list[BatchRequest]) -> None:
        """Joiners with the same adapter whose prompts share a prefix of at least ``SHARED_MIN`` tokens
        more than the prefix cache holds: that prefix is prefilled once (one row each, together) and
        stored, so the joiners' prefill reuses it instead of computing it once per row."""
        store = self.prefix_cache
        shared: dict[tuple[Optional[str], tuple[int, ...]], BatchRequest] = {}   # (adapter, prefix): a row of it
        by_adapter: dict[Optional[str], list[BatchRequest]] = {}
        for r in joiners:
            by_adapter.setdefault(r.adapter, []).append(r)
        for adapter, rows in by_adapter.items():
            rows = sorted(rows, key=lambda r: r.prompt_ids)
            for r, o in zip(rows, rows[1:]):
                a, b = r.prompt_ids, o.prompt_ids
                n = min(common_prefix(a, b), len(a) - 1, len(b) - 1)
                if n >= SHARED_MIN and n - store.lookup_length(adapter, a[:n]) >= SHARED_MIN:
                    shared.setdefault((adapter, tuple(a[:n])), r)
        # the shortest of prefixes that extend one another is enough: the rows then extend it
        keys = [k for k in shared if not any(o != k and o[0] == k[0] and k[1][:len(o[1])] == o[1] for o in shared)]
        if not keys:
            return
        try:
            self._prefill_ids([list(ids) for _, ids in keys], [shared[k] for k in keys], force_store=True)
        except Exception:  # noqa: BLE001 - the rows' own prefill runs (and fails for the row at fault)
            if self.inflight.cancelled:
                raise

    def _decode(self) -> None:
        import torch

        last = torch.tensor([[r.ids[-1]] for r in self._rows], dtype=torch.long, device=self.device)
        ones = torch.ones((len(self._rows), 1), dtype=self._mask.dtype, device=self.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, ones], dim=-1)
        logits = self._forward(last, self._mask, positions, self._cache, self._rows)
        self._advance(logits, start=0)

    def _merge(self, joiners: list[BatchRequest], cache: Any, mask: Any) -> None:
        """Append the joiners' rows (their cache and mask) to the running batch's."""
        import torch

        if self._cache is None:
            self._rows, self._cache, self._mask = list(joiners), cache, mask
            return
        t_old, t_new = self._mask.shape[1], mask.shape[1]
        width = max(t_old, t_new)

        def lpad(x: Any, n: int, dim: int) -> Any:
            if n == 0:
                return x
            shape = list(x.shape)
            shape[dim] = n
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([lpad(old.keys, width - t_old, 2), lpad(new.keys, width - t_new, 2)], dim=0)
            old.values = torch.cat([lpad(old.values, width - t_old, 2), lpad(new.values, width - t_new, 2)], dim=0)
        self._mask = torch.cat([lpad(self._mask, width - t_old, 1), lpad(mask, width - t_new, 1)], dim=0)
        self._rows = self._rows + list(joiners)

    def _drop(self, leaving: list[BatchRequest], reason: Optional[str] = None) -> None:
        """Remove finished or abandoned rows from the batch and cut the all-padding columns."""
        import torch

        if not leaving:
            return
        for r in leaving:
            r.finish(reason)
        gone = {id(r) for r in leaving}
        keep = [i for i, r in enumerate(self._rows) if id(r) not in gone]
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask.index_select(0, index)
        first = int(mask.any(0).nonzero()[0])
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self._mask = mask[:, first:]
        self._rows = [self._rows[i] for i in keep]

    # ------------------------------------------------------------------ sampling
    def _advance(self, logits: Any, start: int) -> None:
        """Pick the next token of rows ``start:`` from their logits; finished rows leave, and a row
        whose step fails (see the module doc) leaves with its error."""
        import torch

        rows = self._rows[start:]
        # one transfer for the whole batch: each row's argmax, -1 where its logits are NaN or +inf
        # (``x < inf`` is false for both)
        finite = (logits < float("inf")).all(-1)
        greedy = torch.where(finite, logits.argmax(-1), -1).tolist()
        leaving = []
        for i, r in enumerate(rows):
            try:
                tid = self._pick_row(r, logits[i], greedy[i])
                r.emit(tid)
                reason = self._finished(r, tid)
            except Exception as exc:  # noqa: BLE001 - this request alone fails
                r.finish(error=row_error(exc))
                leaving.append(r)
                continue
            if reason is not None:
                r.finish_reason = reason
                leaving.append(r)
            elif r.closed.is_set():
                r.finish_reason = "stop"
                leaving.append(r)
        self._drop(leaving)

    def _pick_row(self, r: BatchRequest, logits: Any, greedy: int) -> int:
        """The row's next token: its logprobs recorded from the raw logits, then the batch's argmax for a
        plain greedy row, else its logits processors and then greedy or sampling. Raises for this row
        alone."""
        if greedy < 0:
            raise broken_logits_error(len(r.ids) + 1, r.adapter)
        if not r.sample and not r.logits_processors:
            tid = greedy
        else:
            scores = logits
            for fn in r.logits_processors:
                scores = fn(r.prompt_ids + r.ids, scores)
            tid = sample_token(scores, r.temperature if r.sample else 0.0, r.top_p, r.top_k, r.generator, r.min_p)
        if r.logprobs is not None and tid not in r.stop_ids:
            r.logprobs.append(logprob_entry(logits, tid, r.params.top_logprobs, r.piece or self._piece))
        return tid

    def _piece(self, tid: int) -> tuple[str, bytes]:
        text = self.tokenizer.decode([tid], skip_special_tokens=False)
        return text, text.encode("utf-8", errors="replace")

    def _finished(self, r: BatchRequest, tid: int) -> Optional[str]:
        if tid in r.stop_ids:
            return "stop"
        if r.stop_strings:
            longest = max(len(s) for s in r.stop_strings)
            tail = self.tokenizer.decode(r.ids[-(longest + 1):], skip_special_tokens=True)
            if any(s in tail for s in r.stop_strings):
                return "stop"
        if r.constraint is not None:   # the structure consumes the token; complete: the reply ends here
            r.constraint.accept(r.ids)
            if r.constraint.stopped:
                return "stop"
        if len(r.ids) >= r.max_new:
            return "length"
        return None


def _fill_prefixes(cache: Any, hits: list[tuple[Any, int]], width: int) -> None:
    """Put each row's cached prefix (``hits``: (entry, length) per row) into the empty ``cache``, left-
    padded to ``width`` columns: one new tensor per layer (the entries are read, never written)."""
    ref = next(e for e, n in hits if n)
    for li, layer in enumerate(cache.layers):
        k0, v0 = ref.kv[li]
        keys = k0.new_zeros((len(hits), k0.shape[1], width, k0.shape[3]))
        values = v0.new_zeros((len(hits), v0.shape[1], width, v0.shape[3]))
        for i, (e, n) in enumerate(hits):
            if n:
                keys[i, :, width - n:] = e.kv[li][0][0, :, :n]
                values[i, :, width - n:] = e.kv[li][1][0, :, :n]
        layer.update(keys, values)


def broken_logits_error(token: int, adapter: Optional[str] = None) -> InferenceError:
    """The error of a request whose logits are NaN or +inf (at its ``token``-th new token)."""
    using = f"LoRA adapter {adapter!r}" if adapter else "weights"
    return InferenceError(f"generation failed: the model produced NaN or infinite logits for this request at its "
                          f"new token {token} (broken {using}, or an input that overflows the model)")


def row_error(exc: BaseException) -> InferenceError:
    """The InferenceError a request gets when its own step failed."""
    if isinstance(exc, InferenceError):
        return exc if str(exc).startswith("generation failed") else InferenceError(f"generation failed: {exc}")
    return InferenceError(f"generation failed for this request: {type(exc).__name__}: {exc}")


class BatchTokenStream(TokenStream):
    """A request's tokens as text deltas, decoded incrementally as the worker produces them;
    ``close()`` drops the request from the batch at the next step."""

    def __init__(self, req: BatchRequest, tokenizer: Any, inflight: InFlight):
        self.prompt_tokens = len(req.prompt_ids)
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self._req = req
        self._tok = tokenizer
        self._inflight = inflight
        self.logprobs = req.logprobs   # the request's list: its entries appear as the worker picks tokens
        self._iter = self._decode()

    def _decode(self) -> Iterator[str]:
        req = self._req

        def ids() -> Iterator[int]:
            while True:
                item = req.out.get()
                if item is _DONE:
                    return
                self.completion_tokens += 1
                yield item

        yield from incremental_deltas(self._tok, ids(), stopped=req.closed, keep_special=req.params.keep_special_tokens,
                                      drop_ids=req.stop_ids)
        self.finish_reason = req.finish_reason
        if req.error is not None and not req.closed.is_set():
            raise req.error

    def close(self) -> None:
        if not self._req.done:
            self._req.closed.set()
            self.finish_reason = "stop"
        self._iter.close()


def wait_result(req: BatchRequest) -> None:
    """Block until ``req`` is done (a KeyboardInterrupt in a notebook, or this thread's cancel scope,
    drops it from the batch)."""
    scope = scope_event()
    try:
        while True:
            try:
                item = req.out.get(timeout=None if scope is None else 0.05)
            except queue.Empty:
                item = None
            if item is _DONE:
                break
            if scope is not None and scope.is_set():   # after every token too: they may come faster than 0.05 s
                raise InferenceError(CANCELLED)
    except BaseException:
        req.closed.set()
        raise
    if req.error is not None:
        raise req.error
