"""Embedding and rerank models through sentence-transformers.

* ``load_embedding``: a ``SentenceTransformer`` from the spec's files; ``create_embedding`` returns
  the OpenAI/Xinference shape ``{"object": "list", "model": uid, "data": [{"index", "object":
  "embedding", "embedding"}], "usage": {"prompt_tokens", "total_tokens"}}``.
* ``load_rerank``: a ``CrossEncoder``; ``rerank`` returns Xinference's shape ``{"id", "results":
  [{"index", "relevance_score", "document"}], "meta": {"api_version", "billed_units", "tokens",
  "warnings"}}``, best first.

Truncation: inputs longer than the model's window are cut to ``min(spec.max_tokens, the model's
max_seq_length)`` tokens, as Xinference does, and ``usage`` counts the tokens actually embedded
(so a truncated input counts as ``max_tokens``). Token counts come from a forward hook on the
tokenizing module, so nothing is tokenized twice.
"""
from __future__ import annotations

import base64
import threading
import uuid
from typing import Any, Optional, Sequence, Union

from ..errors import InferenceError, LaunchError
from . import EngineModel, LoadRequest
from ..memory import release_memory
from .flexible import torch_memory_bytes
from .imports import import_without_peft

# launch_model(**kwargs) handed to the sentence-transformers constructors: the engine's options in
# xinference_nb.engines.options.ENGINE_OPTIONS (one table for the manager's check and for this engine)

_EMBED_KWARGS = ("batch_size", "normalize_embeddings", "prompt_name", "prompt", "dimensions", "encoding_format",
                 "model", "user", "truncate_dim", "show_progress_bar")
_RERANK_KWARGS = ("batch_size", "model", "apply_softmax", "show_progress_bar")


class _TokenCounter:
    """Counts the attention-mask tokens that pass through a module, per calling thread."""

    def __init__(self, module: Any):
        self._local = threading.local()
        self._handle = module.register_forward_hook(self._hook) if hasattr(module, "register_forward_hook") else None

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        count = getattr(self._local, "count", None)
        if count is None:
            return
        try:
            mask = output["attention_mask"]
        except (KeyError, TypeError, IndexError):
            return
        self._local.count = count + int(mask.sum())

    def start(self) -> None:
        self._local.count = 0

    def stop(self) -> int:
        count = getattr(self._local, "count", None) or 0
        self._local.count = None
        return count

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _constructor_kwargs(request: LoadRequest, cls: Any) -> dict[str, Any]:
    import inspect

    from .options import ENGINE_OPTIONS

    names = ENGINE_OPTIONS[(request.model_type, "sentence_transformers")]

    try:
        accepted = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        accepted = set(names)
    kwargs = {k: request.options[k] for k in names if k in request.options}
    if "tokenizer_kwargs" in kwargs and "tokenizer_kwargs" not in accepted and "processor_kwargs" in accepted:
        kwargs.setdefault("processor_kwargs", kwargs.pop("tokenizer_kwargs"))
    refused = sorted(k for k in kwargs if k not in accepted)
    if refused:  # an option this sentence-transformers version has no use for: say so, never drop it
        import sentence_transformers

        raise LaunchError(f"launch option{'s' if len(refused) > 1 else ''} {', '.join(refused)}: the installed "
                          f"sentence-transformers {getattr(sentence_transformers, '__version__', '?')} "
                          f"{cls.__name__} does not take {'them' if len(refused) > 1 else 'it'}; drop "
                          f"{'them' if len(refused) > 1 else 'it'} or upgrade sentence-transformers")
    return kwargs


def _model_dims(model: Any) -> Optional[int]:
    getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
    try:
        return getter() if getter else None
    except Exception:
        return None


def _check_texts(value: Any, field: str) -> tuple[list[str], bool]:
    """A str or a non-empty list of str → (list, was_single). InferenceError naming ``field`` otherwise."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, (list, tuple)):
        if not value:
            raise InferenceError(f"{field} is an empty list; pass a string or a list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise InferenceError(f"{field}[{i}] is a {type(item).__name__}; every item must be a string")
        return list(value), False
    raise InferenceError(f"{field} must be a string or a list of strings, got {type(value).__name__}")


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise InferenceError(f"{name} must be true or false, got {type(value).__name__} {value!r:.60}")


def _check_count(name: str, value: Any, high: Optional[int] = None, what: str = "") -> None:
    """None, or a whole number from 1 (to ``high``); never a bool, a float or a string."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
        accepted = f"a whole number from 1 to {high}{what}" if high is not None else "a whole number >= 1"
        raise InferenceError(f"{name}={value!r:.60}: pass {accepted}")


def _check_str(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise InferenceError(f"{name} must be a string, got {type(value).__name__} {value!r:.60}")


def _unknown(kwargs: dict, allowed: Sequence[str], method: str) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise InferenceError(f"{method}() got unknown argument{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(unknown)}; it accepts {', '.join(allowed)}")


class SentenceTransformerEmbedding(EngineModel):
    model_type = "embedding"
    abilities = ("embed",)

    def __init__(self, model_uid: str, model: Any, dimensions: int, max_tokens: int, uses_cuda: bool = False):
        self.model_uid = model_uid
        self.model = model
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self._uses_cuda = uses_cuda
        self._counter = _TokenCounter(model[0])

    # ----------------------------------------------------------------- Xinference methods
    def create_embedding(self, input: Union[str, list[str]], **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        texts, _ = _check_texts(input, "input")
        _unknown(kwargs, _EMBED_KWARGS, "create_embedding")
        kwargs.pop("model", None)
        kwargs.pop("user", None)
        encoding_format = kwargs.pop("encoding_format", None)
        if encoding_format is None:
            encoding_format = "float"
        if not isinstance(encoding_format, str) or encoding_format not in ("float", "base64"):
            raise InferenceError(f"encoding_format={encoding_format!r:.60} is not supported; use 'float' or 'base64'")
        dims = kwargs.pop("dimensions", None)
        _check_count("dimensions", dims, self.dimensions, " (the model's size)")
        _check_count("truncate_dim", kwargs.get("truncate_dim"), self.dimensions, " (the model's size)")
        if dims is not None:
            kwargs["truncate_dim"] = dims
        _check_count("batch_size", kwargs.get("batch_size"))
        for name in ("normalize_embeddings", "show_progress_bar"):
            _check_bool(name, kwargs.get(name))
        for name in ("prompt_name", "prompt"):
            _check_str(name, kwargs.get(name))
        kwargs.setdefault("show_progress_bar", False)
        model = self.model
        if model is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        self._counter.start()
        try:
            vectors = model.encode(texts, convert_to_numpy=True, **kwargs)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"create_embedding() refused its arguments: {exc}") from exc
        finally:
            tokens = self._counter.stop()
        if encoding_format == "base64":
            rows = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            rows = vectors.tolist()
        return {
            "object": "list",
            "model": self.model_uid,
            "data": [{"index": i, "object": "embedding", "embedding": row} for i, row in enumerate(rows)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def convert_ids_to_tokens(self, input: Union[list[int], list[list[int]]], **kwargs: Any) -> Any:  # noqa: A002
        """Token ids → token strings (a list of ids → a list of str; a list of lists → a list of lists)."""
        if self.model is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        tokenizer = self.model.tokenizer
        if isinstance(input, int) and not isinstance(input, bool):
            return tokenizer.convert_ids_to_tokens(input)
        if not isinstance(input, (list, tuple)):
            raise InferenceError(f"input must be a list of token ids or a list of such lists, got {type(input).__name__}")
        if all(isinstance(i, int) and not isinstance(i, bool) for i in input):
            return tokenizer.convert_ids_to_tokens(list(input))
        out = []
        for n, ids in enumerate(input):
            if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids):
                raise InferenceError(f"input[{n}] must be a list of integer token ids")
            out.append(tokenizer.convert_ids_to_tokens(list(ids)))
        return out

    # ----------------------------------------------------------------- lifecycle
    def memory_bytes(self) -> Optional[int]:
        return torch_memory_bytes(self.model)

    def close(self) -> None:
        if self.model is None:
            return
        self._counter.remove()
        self.model = None
        release_memory()


class CrossEncoderRerank(EngineModel):
    model_type = "rerank"
    abilities = ("rerank",)

    def __init__(self, model_uid: str, model: Any, uses_cuda: bool = False):
        self.model_uid = model_uid
        self.model = model
        self._uses_cuda = uses_cuda
        self._counter = _TokenCounter(model[0]) if len(model) else None

    def rerank(self, documents: list[str], query: str, top_n: Optional[int] = None,
               max_chunks_per_doc: Optional[int] = None, return_documents: Optional[bool] = None,
               return_len: Optional[bool] = None, **kwargs: Any) -> dict[str, Any]:
        """Score each document against ``query``; results best first, ``top_n`` of them if given.
        Without ``max_chunks_per_doc`` a document longer than the model's window is truncated; with it
        (Cohere's meaning), the document is cut into up to that many windows beside the query and
        scores as its best window (see :meth:`_pairs`)."""
        docs, _ = _check_texts(documents, "documents")
        if not isinstance(query, str):
            raise InferenceError(f"query must be a string, got {type(query).__name__}")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n <= 0):
            raise InferenceError(f"top_n={top_n!r:.60}: pass a positive whole number or None for all documents")
        _check_count("max_chunks_per_doc", max_chunks_per_doc)
        for name, value in (("return_documents", return_documents), ("return_len", return_len)):
            _check_bool(name, value)
        _unknown(kwargs, _RERANK_KWARGS, "rerank")
        _check_count("batch_size", kwargs.get("batch_size"))
        for name in ("apply_softmax", "show_progress_bar"):
            _check_bool(name, kwargs.get(name))
        kwargs.pop("model", None)
        kwargs.setdefault("show_progress_bar", False)
        model = self.model
        if model is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        counter = self._counter
        if counter is not None:
            counter.start()
        try:
            pairs, owners = self._pairs(query, docs, max_chunks_per_doc)
            scores = model.predict(pairs, convert_to_numpy=True, **kwargs)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"rerank() refused its arguments: {exc}") from exc
        finally:
            tokens = counter.stop() if counter is not None else 0
        scores = scores.reshape(len(pairs), -1)[:, -1] if scores.ndim > 1 else scores
        if owners is not None:   # a chunked document scores as its best chunk
            best = [float("-inf")] * len(docs)
            for owner, score in zip(owners, scores.tolist()):
                best[owner] = max(best[owner], score)
            scores = best
        order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))
        if top_n is not None:
            order = order[:top_n]
        results = [{"index": i, "relevance_score": float(scores[i]),
                    "document": {"text": docs[i]} if return_documents else None} for i in order]
        meta = {"api_version": None, "billed_units": None,
                "tokens": {"input_tokens": tokens, "output_tokens": 0} if return_len else None,
                "warnings": None}
        return {"id": str(uuid.uuid4()), "results": results, "meta": meta}

    def _pairs(self, query: str, docs: list[str], max_chunks: Optional[int]
               ) -> tuple[list[tuple[str, str]], Optional[list[int]]]:
        """The (query, text) pairs to score and, with ``max_chunks``, which document each came from:
        a document longer than the room the window leaves beside the query (and the special tokens)
        is cut at token boundaries into consecutive chunks of that room, at most ``max_chunks``."""
        if max_chunks is None:
            return [(query, d) for d in docs], None
        tok = getattr(self.model, "tokenizer", None)
        window = getattr(self.model, "max_seq_length", None) or getattr(tok, "model_max_length", None)
        if tok is None or not getattr(tok, "is_fast", False) or not window:
            raise InferenceError(f"max_chunks_per_doc needs a fast tokenizer and a known window; model "
                                 f"{self.model_uid!r} lacks one: leave max_chunks_per_doc out (documents are "
                                 "truncated to the window)")
        room = (int(window) - len(tok(query, add_special_tokens=False)["input_ids"])
                - tok.num_special_tokens_to_add(pair=True))
        if room < 1:
            raise InferenceError(f"max_chunks_per_doc: the query fills the model's {window}-token window; "
                                 "shorten the query")
        pairs, owners = [], []
        for i, doc in enumerate(docs):
            spans = tok(doc, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            starts = range(0, max(len(spans), 1), room)[:max_chunks]
            for start in starts:
                piece = spans[start:start + room]
                pairs.append((query, doc[piece[0][0]:piece[-1][1]] if piece else doc))
                owners.append(i)
        return pairs, owners

    def memory_bytes(self) -> Optional[int]:
        return torch_memory_bytes(self.model)

    def close(self) -> None:
        if self.model is None:
            return
        if self._counter is not None:
            self._counter.remove()
        self.model = None
        release_memory()


# ------------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------------

def _launch_failed(request: LoadRequest, what: str, exc: BaseException) -> LaunchError:
    where = request.model_path or request.source
    return LaunchError(f"{request.model_type} model {request.model_name!r}: {what} could not load {where}: "
                       f"{type(exc).__name__}: {exc}. Check model_uri points at a sentence-transformers / "
                       "Hugging Face model folder")


def load_embedding(request: LoadRequest) -> SentenceTransformerEmbedding:
    SentenceTransformer = import_without_peft("sentence_transformers").SentenceTransformer

    request.progress("load", 0.1)
    spec = request.spec
    model = None
    try:
        try:
            model = SentenceTransformer(request.source, device=request.device.device,
                                        **_constructor_kwargs(request, SentenceTransformer))
        except Exception as exc:
            raise _launch_failed(request, "SentenceTransformer", exc) from exc
        request.progress("check", 0.8)
        dims = _model_dims(model)
        if dims is not None and spec.dimensions and dims != spec.dimensions and "truncate_dim" not in request.options:
            raise LaunchError(f"embedding model {request.model_name!r}: the document says dimensions={spec.dimensions} "
                              f"but the model at {request.model_path or request.source} makes {dims}-dimensional "
                              f"vectors; set \"dimensions\": {dims} in the registration")
        window = getattr(model, "max_seq_length", None)
        max_tokens = min(spec.max_tokens, window) if window else spec.max_tokens
        if max_tokens and max_tokens != window:
            model.max_seq_length = max_tokens
        embedding = SentenceTransformerEmbedding(request.model_uid, model, dims or spec.dimensions, max_tokens,
                                                 request.device.uses_cuda)
    except BaseException:
        model = None
        release_memory()
        raise
    request.progress("ready", 1.0)
    return embedding


def load_rerank(request: LoadRequest) -> CrossEncoderRerank:
    CrossEncoder = import_without_peft("sentence_transformers").CrossEncoder

    request.progress("load", 0.1)
    spec = request.spec
    kwargs = _constructor_kwargs(request, CrossEncoder)
    model = None
    try:
        try:
            model = CrossEncoder(request.source, device=request.device.device, **kwargs)
        except Exception as exc:
            raise _launch_failed(request, "CrossEncoder", exc) from exc
        window = getattr(model, "max_seq_length", None)
        if getattr(spec, "max_tokens", None) and (not window or spec.max_tokens < window):
            model.max_seq_length = spec.max_tokens
        rerank = CrossEncoderRerank(request.model_uid, model, request.device.uses_cuda)
    except BaseException:
        model = None
        release_memory()
        raise
    request.progress("ready", 1.0)
    return rerank
