"""A Client stand-in with deterministic, instant models, for server tests that check the HTTP layer
(batching, streaming, auth, limits, error shapes) without loading real models. Registrations go
to the real registry (the in-kernel Client's methods)."""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Optional

from xinference_nb.client import Client
from xinference_nb.errors import InferenceError, ModelNotFound


def wait_until(cond, timeout=10.0):
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def fake_vector(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255.0 for b in digest[:dim]]


class FakeEmbedding:
    model_type = "embedding"

    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def create_embedding(self, input: Any, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        texts = [input] if isinstance(input, str) else list(input)
        if any(not isinstance(t, str) for t in texts):
            raise InferenceError("input: strings only")
        if any(t == "BOOM" for t in texts):
            raise InferenceError("input: 'BOOM' is refused")
        with self.lock:
            self.calls.append(len(texts))
        if self.delay:
            time.sleep(self.delay)
        return {"object": "list", "model": "fake", "data": [
            {"index": i, "object": "embedding", "embedding": fake_vector(t)} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": sum(len(t.split()) for t in texts),
                      "total_tokens": sum(len(t.split()) for t in texts)}}


class FakeRerank:
    model_type = "rerank"

    def __init__(self):
        self.calls: list[int] = []

    def rerank(self, documents, query, top_n=None, max_chunks_per_doc=None, return_documents=None,
               return_len=None, **kwargs):
        self.calls.append(len(documents))
        q = set(str(query).split())
        scored = [{"index": i, "relevance_score": len(q & set(str(d).split())) + 1.0 / (i + 2),
                   "document": {"text": d} if return_documents else None} for i, d in enumerate(documents)]
        scored.sort(key=lambda r: r["relevance_score"], reverse=True)
        if top_n is not None:
            scored = scored[:top_n]
        return {"id": "x", "results": scored,
                "meta": {"tokens": {"input_tokens": len(documents) * 3, "output_tokens": 0} if return_len else None}}


class FakeLLM:
    model_type = "LLM"

    def __init__(self):
        self.closed = 0
        self.produced = 0
        self.delay = 0.0   # seconds per streamed chunk (the server refuses keys generate_config lacks)
        self.hold: Optional[threading.Event] = None   # when set: streams pause after their first chunk until it is set
        self.lock = threading.Lock()

    def _chunks(self, n: int, delay: float, kind: str):
        try:
            for i in range(n):
                with self.lock:
                    self.produced += 1
                if delay:
                    time.sleep(delay)
                if kind == "chat":
                    yield {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "llm",
                           "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
                else:
                    yield {"id": "c", "object": "text_completion", "created": 0, "model": "llm",
                           "choices": [{"index": 0, "text": f"w{i} ", "finish_reason": None}]}
                if i == 0 and self.hold is not None:
                    self.hold.wait(30)
        finally:
            with self.lock:
                self.closed += 1

    def _cfg(self, generate_config):
        cfg = dict(generate_config or {})
        unknown = set(cfg) - {"max_tokens", "temperature", "stream", "stop", "top_p", "stream_options",
                             "n", "logprobs", "presence_penalty"}   # the defaults test_security sends
        if unknown:
            raise InferenceError(f"unknown generate_config keys {sorted(unknown)}")
        return cfg

    def chat(self, messages, tools=None, enable_thinking=None, generate_config=None):
        cfg = self._cfg(generate_config)
        n = int(cfg.get("max_tokens") or 4)
        if cfg.get("stream"):
            return self._chunks(n, self.delay, "chat")
        text = "".join(f"w{i} " for i in range(n))
        return {"id": "c", "object": "chat.completion", "created": 0, "model": "llm",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}

    def generate(self, prompt, generate_config=None):
        cfg = self._cfg(generate_config)
        n = int(cfg.get("max_tokens") or 4)
        if cfg.get("stream"):
            return self._chunks(n, self.delay, "generate")
        return {"id": "g", "object": "text_completion", "created": 0, "model": "llm",
                "choices": [{"index": 0, "text": prompt[::-1], "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeClient(Client):
    def __init__(self, embed_delay: float = 0.0):
        super().__init__()
        self.models: dict[str, Any] = {"emb": FakeEmbedding(embed_delay), "rr": FakeRerank(), "llm": FakeLLM()}
        self.launched: list[dict[str, Any]] = []

    def list_models(self) -> dict[str, dict[str, Any]]:
        return {uid: self.describe_model(uid) for uid in self.models}

    def describe_model(self, model_uid: str) -> dict[str, Any]:
        model = self.get_model(model_uid)
        return {"model_type": model.model_type, "model_name": model_uid, "model_ability":
                ["chat", "generate"] if model.model_type == "LLM" else [], "model_engine": "fake"}

    def get_model(self, model_uid: str) -> Any:
        try:
            return self.models[model_uid]
        except KeyError:
            raise ModelNotFound(f"no running model with uid {model_uid!r}") from None

    def launch_model(self, model_name: str, model_type: str = "LLM", model_uid: Optional[str] = None,
                     **kwargs: Any) -> str:
        self.launched.append(dict(kwargs, model_name=model_name, model_type=model_type, model_uid=model_uid))
        uid = model_uid or f"{model_name}-1"
        self.models[uid] = FakeEmbedding() if model_type == "embedding" else FakeLLM()
        return uid

    def terminate_model(self, model_uid: str) -> None:
        self.get_model(model_uid)
        del self.models[model_uid]

    def get_launch_model_progress(self, model_uid: str) -> float:
        self.get_model(model_uid)
        return 1.0

    def cancel_launch_model(self, model_uid: str) -> None:
        self.get_model(model_uid)


# ------------------------------------------------------------------------------------------------
# Real tiny models, launched in this process's manager, for end-to-end server tests
# ------------------------------------------------------------------------------------------------
def embedding_doc(path, name: str) -> dict[str, Any]:
    return {"version": 2, "model_name": name, "dimensions": 384, "max_tokens": 256, "language": ["en"],
            "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface",
                             "model_uri": f"file://{path}", "quantization": "none"}],
            "is_builtin": False}


def rerank_doc(path, name: str) -> dict[str, Any]:
    return {"version": 2, "model_name": name, "type": "normal", "language": ["en"], "max_tokens": 512,
            "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface", "model_uri": str(path),
                             "quantization": "none"}],
            "is_builtin": False}


def llm_doc(path, name: str) -> dict[str, Any]:
    from xinference_nb.parse import parse_model
    from xinference_nb.spec import to_document

    return to_document(parse_model(str(path), model_type="LLM", model_name=name).spec)


class LiveModels:
    """Registers and launches the tiny LLM, MiniLM embedding and cross-encoder reranker in-kernel
    (uids ``<prefix>-llm`` / ``-emb`` / ``-rr``); ``close()`` terminates them."""

    def __init__(self, prefix: str, tiny_llama_dir=None, minilm_dir=None, cross_encoder_dir=None):
        self.client = Client()
        self.uids: dict[str, str] = {}
        try:
            if tiny_llama_dir is not None:
                self._launch("LLM", llm_doc(tiny_llama_dir, f"{prefix}-tiny-llama"), f"{prefix}-llm",
                             model_engine="transformers")
            if minilm_dir is not None:
                self._launch("embedding", embedding_doc(minilm_dir, f"{prefix}-minilm"), f"{prefix}-emb")
            if cross_encoder_dir is not None:
                self._launch("rerank", rerank_doc(cross_encoder_dir, f"{prefix}-reranker"), f"{prefix}-rr")
        except BaseException:
            self.close()
            raise

    def _launch(self, model_type: str, doc: dict[str, Any], uid: str, **kwargs: Any) -> None:
        self.client.register_model(model_type, doc, overwrite=True)
        self.uids[model_type] = self.client.launch_model(doc["model_name"], model_type=model_type, model_uid=uid,
                                                         n_gpu=None, **kwargs)

    @property
    def llm(self) -> str:
        return self.uids["LLM"]

    @property
    def emb(self) -> str:
        return self.uids["embedding"]

    @property
    def rr(self) -> str:
        return self.uids["rerank"]

    def close(self) -> None:
        for uid in list(self.uids.values()):
            try:
                self.client.terminate_model(uid)
            except Exception:  # noqa: BLE001
                pass
        self.uids.clear()
