"""Structured outputs enforced while decoding: a ``chat.structured.Constraint`` compiled by llguidance
into a token mask that each step applies to a request's logits.

    grammars = Grammars(lambda: hf_lltokenizer(tokenizer, stop_ids, n_vocab))   # one per model
    row = grammars.start(constraint, decode)      # InferenceError when it cannot be enforced
    scores = row.mask(generated_ids, scores)       # a torch or numpy 1-D float vector
    ... pick tid ...; row.accept(tid); row.stopped  # True once the structure is complete

Why llguidance (docs/structured-outputs.md has the measurements): one library for JSON schema, regular
expressions, choices and Lark / GBNF grammars, no dependencies, a mask in tens of microseconds on a
large vocabulary, and schema compilation that does not grow with the vocabulary. Both LLM engines use it
(transformers through a fast tokenizer, llama.cpp through its vocabulary), so a request behaves the
same on either.

A compiled grammar is cached per model and constraint (LRU, ``MAX_GRAMMARS``); each request gets its
own copy of the matcher. A schema llguidance cannot enforce (an unsupported keyword), an invalid regex
or grammar, or one past the parser limits (``LIMITS``: compile and each step take bounded work) is an
InferenceError at the start of the request, naming what is wrong: never unconstrained output.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Callable, Optional

from ..chat.structured import Constraint
from ..errors import InferenceError, shorten

MAX_GRAMMARS = 64
# the JSON llguidance writes for a schema: compact, as json.dumps(..., separators=(",", ":"))
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_LIMITS: list[Any] = []


def limits() -> Any:
    """llguidance's parser limits for one request (its defaults, bounded work per step)."""
    if not _LIMITS:
        import llguidance

        _LIMITS.append(llguidance.LLParserLimits(verbose_errors=True))
    return _LIMITS[0]


def _import_llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise InferenceError("structured outputs (response_format, guided_*) need llguidance: "
                             "pip install llguidance") from None
    return llguidance


def hf_lltokenizer(tokenizer: Any, eos_ids: list[int], n_vocab: int) -> Any:
    """llguidance's view of a transformers tokenizer (a fast one), with the request-ending ids."""
    _import_llguidance()
    import llguidance.hf

    try:
        return llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=list(eos_ids) or None)
    except ValueError as exc:
        raise InferenceError(f"structured outputs need a fast (tokenizer.json) tokenizer: {exc}") from None


def llama_lltokenizer(llm: Any, eos_ids: list[int]) -> Any:
    """llguidance's view of a llama.cpp model's vocabulary, with the request-ending ids."""
    _import_llguidance()
    import llguidance.llamacpp

    return llguidance.llamacpp.lltokenizer_from_vocab(llm._model.vocab, n_vocab=llm.n_vocab(),
                                                      eos_token=list(eos_ids) or None)


def _literal(text: str, tokenizer: Any) -> str:
    """``text`` in a Lark rule: a special token of the tokenizer by its ``<name>`` (a quoted string would
    not match it: llguidance keeps special tokens apart from text), else a quoted string."""
    if tokenizer is not None:
        ids = tokenizer.tokenize_str(text, parse_special=True)
        if len(ids) == 1 and tokenizer.is_special_token(ids[0]) and text.startswith("<") and text.endswith(">"):
            return text
    return json.dumps(text)


def tool_calls_lark(value: dict[str, Any], tokenizer: Any = None) -> str:
    """Calls in the model's format: ``open`` JSON ``close`` blocks (newline-separated), or bare JSON."""
    body = "%json " + json.dumps({**value["schema"], "x-guidance": JSON_OPTIONS})   # compact, as json_schema
    if value["open"]:
        call = f'{_literal(value["open"], tokenizer)} "\\n" {body} "\\n" {_literal(value["close"], tokenizer)}'
    else:
        call = body
    repeat = 'call ("\\n" call)*' if value["parallel"] else "call"
    return f"start: {repeat}\ncall: {call}\n"


def grammar_text(constraint: Constraint, tokenizer: Any = None) -> str:
    """The llguidance grammar of a constraint (``tokenizer``: llguidance's, for special tokens)."""
    llguidance = _import_llguidance()
    matcher = llguidance.LLMatcher
    kind, value = constraint.kind, constraint.value
    if kind == "json_schema":
        options = JSON_OPTIONS if constraint.whitespace is None else {
            **JSON_OPTIONS, "whitespace_flexible": True, "whitespace_pattern": constraint.whitespace}
        return matcher.grammar_from_json_schema(value, defaults=options)
    if kind == "regex":
        return matcher.grammar_from_regex(value)
    if kind == "choice":
        return matcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    if kind == "tool_calls":
        return matcher.grammar_from_lark(tool_calls_lark(value, tokenizer))
    if "::=" in value:   # GBNF (llama.cpp's grammar format)
        from llguidance.gbnf_to_lark import gbnf_to_lark

        try:
            value = gbnf_to_lark(value)
        except Exception as exc:  # noqa: BLE001 - the converter's own words
            raise InferenceError(f"{constraint.source}: not a valid GBNF grammar: {exc}") from None
    return matcher.grammar_from_lark(value)


class Grammars:
    """The compiled constraints of one model: ``make_tokenizer`` is called once, on first use."""

    def __init__(self, make_tokenizer: Callable[[], Any], max_grammars: int = MAX_GRAMMARS):
        self._make_tokenizer = make_tokenizer
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._compiled: "OrderedDict[str, Any]" = OrderedDict()
        self._max = max_grammars
        self.compiles = 0          # grammars compiled (cache misses), for tests and benches

    @property
    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher of ``constraint`` (compiled once, then copied)."""
        key = constraint.key()
        with self._lock:
            template = self._compiled.get(key)
            if template is not None:
                self._compiled.move_to_end(key)
                return template.deep_copy()
        template = self._compile(constraint)
        with self._lock:
            self._compiled[key] = template
            while len(self._compiled) > self._max:
                self._compiled.popitem(last=False)
            return template.deep_copy()

    def _compile(self, constraint: Constraint) -> Any:
        llguidance = _import_llguidance()
        tok = self.tokenizer
        try:
            grammar = grammar_text(constraint, tok)
        except ValueError as exc:
            raise InferenceError(f"{constraint.source}: {exc}") from None
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok, limits=limits())
        if failed:
            raise InferenceError(f"{constraint.source} cannot be enforced while decoding: {_first(messages)}")
        matcher = llguidance.LLMatcher(tok, grammar, log_level=0, limits=limits())
        if matcher.is_error():
            raise InferenceError(f"{constraint.source} cannot be enforced while decoding: {_first([matcher.get_error()])}")
        self.compiles += 1
        return matcher

    def start(self, constraint: Constraint, decode: Callable[[list[int]], str]) -> "RowConstraint":
        """One request's constraint state (InferenceError when it cannot be enforced)."""
        return RowConstraint(self.matcher(constraint), constraint, decode, self.tokenizer.vocab_size)


def _first(messages: list[str]) -> str:
    return shorten((messages[0] if messages else "unknown error").strip(), 600)


class RowConstraint:
    """One request's place in its constraint. ``mask(generated, scores)`` first consumes the tokens
    generated since the last call, then returns ``scores`` with every token the constraint does not
    allow next at -inf. With ``start_after`` (a reasoning end tag), tokens up to and including the
    one that completes the tag are free."""

    def __init__(self, matcher: Any, constraint: Constraint, decode: Callable[[list[int]], str], vocab: int):
        import numpy as np

        self._m = matcher
        self._tag = constraint.start_after
        self._decode = decode
        self._start: Optional[int] = None if self._tag else 0   # index of the first constrained token
        self._fed = 0
        self._vocab = vocab
        self._bits = np.zeros(((vocab + 31) // 32,), dtype=np.int32)
        self.source = constraint.source

    @property
    def active(self) -> bool:
        return self._start is not None

    @property
    def stopped(self) -> bool:
        """The structure is complete: nothing but an end-of-sequence token may follow."""
        return self._start is not None and self._m.is_stopped()

    def accept(self, generated: list[int]) -> None:
        """Consume the generated ids not consumed yet (the ids of the request's reply so far)."""
        if self._start is None:
            self._find_tag(generated)
            if self._start is None:
                return
        for tid in generated[max(self._fed, self._start):]:
            if not self._m.consume_token(int(tid)):
                raise InferenceError(f"{self.source}: token {tid} broke the constraint: {self._m.get_error()[:300]}")
        self._fed = len(generated)

    def _find_tag(self, generated: list[int]) -> None:
        tail = self._decode(generated[-16:])
        if self._tag and self._tag in tail:
            self._start = self._fed = len(generated)

    def allowed(self) -> Any:
        """A numpy bool vector (the tokenizer's vocabulary): which tokens may come next."""
        import numpy as np

        self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._m.is_error():
            raise InferenceError(f"{self.source}: {self._m.get_error()[:300]}")
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self._vocab].astype(bool)

    def mask(self, generated: list[int], scores: Any) -> Any:
        """``scores`` (torch or numpy, 1-D) with the disallowed tokens at -inf (a new array)."""
        self.accept(generated)
        if self._start is None:
            return scores
        allowed = self.allowed()
        n = scores.shape[-1]
        if hasattr(scores, "masked_fill"):   # torch
            import torch

            keep = torch.zeros(n, dtype=torch.bool)
            m = min(n, allowed.shape[0])
            keep[:m] = torch.from_numpy(allowed[:m])
            return scores.masked_fill(~keep.to(scores.device), float("-inf"))
        import numpy as np

        out = np.full_like(scores, -np.inf)
        m = min(n, allowed.shape[0])
        out[:m] = np.where(allowed[:m], scores[:m], -np.inf)
        return out
