"""The REST app: Xinference's and OpenAI's routes over a ``Client``. No model logic here.

    app = create_app()                       # serves Client() (the kernel's manager)
    app = create_app(client, settings=ServerSettings(api_key="..."))

Every route calls the same ``Client`` a notebook holds, in a worker thread (never on the event loop).
Errors are ``{"detail": "<message>"}``: 400 for user mistakes (bad JSON, wrong types, unknown uid,
wrong model type for the route, invalid documents), 401 without the API key, 403 for what the
server's settings refuse, 404 for unknown routes, 413 for bodies over the limit. Error responses
also carry ``X-Xinf-Error: <exception class>`` so ``RemoteClient`` raises the same exception class
as the in-kernel client.
"""
from __future__ import annotations

import asyncio
import contextlib
import base64
import json
import logging
import struct
import threading
import uuid
from typing import Any, Iterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import (EngineUnavailable, InferenceError, LaunchError, ModelNotFound, ParseError, RegistryError,
                      SpecError, XinfError)
from .batching import Batcher
from .security import Refused, ServerSettings

log = logging.getLogger("xinference_nb.server")

# OpenAI request keys that carry no meaning for us at their default value; dropped before the handle
# (which refuses unknown generate_config keys). Any other value of them is a 400.
_OPENAI_DEFAULTS: dict[str, tuple] = {
    "n": (1, None), "user": ("*",), "logprobs": (False, None), "top_logprobs": (None, 0),
    "presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None), "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}), "parallel_tool_calls": ("*",), "tool_choice": (None, "auto", "none"),
    "store": (None, False), "metadata": ("*",), "service_tier": ("*",), "echo": (False, None), "best_of": (1, None),
    "suffix": (None, ""), "stream_options": ("*",), "request_id": ("*",), "extra_body": (None, {}),
    "prompt_cache_key": ("*",), "safety_identifier": ("*",), "reasoning_effort": ("*",),
    "repetition_penalty": (None, 1, 1.0),
}
_ERROR_CLASSES = (SpecError, RegistryError, ModelNotFound, ParseError, EngineUnavailable, LaunchError,
                  InferenceError)


# ------------------------------------------------------------------------------------------------
# Request bodies (typed for /openapi.json; extra keys are kept and passed on)
# ------------------------------------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class LaunchBody(_Body):
    model_name: str
    model_type: str = "LLM"
    model_engine: Optional[str] = None
    model_uid: Optional[str] = None
    model_format: Optional[str] = None
    model_size_in_billions: Optional[Union[int, float, str]] = None
    quantization: Optional[str] = None
    model_path: Optional[str] = None
    replica: Optional[int] = 1
    n_gpu: Optional[Union[int, str]] = "auto"
    gpu_idx: Optional[Union[int, list[int]]] = None


class RegisterBody(_Body):
    model: Union[str, dict[str, Any]]
    persist: bool = False
    worker_ip: Optional[str] = None
    overwrite: bool = False


class AutoRegisterBody(_Body):
    model_path: str
    model_family: Optional[str] = None


class CompletionBody(_Body):
    model: str
    prompt: Union[str, list[str]]
    stream: bool = False
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: Optional[Union[str, list[str]]] = None


class ChatBody(_Body):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    tools: Optional[list[dict[str, Any]]] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: Optional[Union[str, list[str]]] = None


class EmbeddingBody(_Body):
    model: str
    input: Union[str, list[str], list[int], list[list[int]], dict[str, Any], list[dict[str, Any]]]
    encoding_format: Optional[str] = "float"
    dimensions: Optional[int] = None


class RerankBody(_Body):
    model: str
    query: Union[str, dict[str, Any]]
    documents: list[Union[str, dict[str, Any]]]
    top_n: Optional[int] = Field(default=None, ge=1)
    max_chunks_per_doc: Optional[int] = None
    return_documents: Optional[bool] = None
    return_len: Optional[bool] = None
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class ImageBody(_Body):
    model: str
    prompt: Union[str, list[str]]
    n: int = Field(default=1, ge=1, le=10)
    size: Optional[str] = "1024*1024"
    response_format: Optional[str] = "url"
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class SpeechBody(_Body):
    model: str
    input: str
    voice: Optional[Union[str, dict[str, Any]]] = ""
    response_format: Optional[str] = "mp3"
    speed: Optional[float] = 1.0
    stream: Optional[bool] = False
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class FlexibleBody(_Body):
    model: str
    args: Optional[list[Any]] = None


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status: int, detail: str, kind: str = "XinfError"):
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind


def _error(status: int, detail: str, kind: Optional[str] = None, issues: Any = None) -> JSONResponse:
    headers = {"X-Xinf-Error": kind} if kind else {}
    if issues:
        text = json.dumps([{"path": i.path, "message": i.message} for i in issues])
        if len(text) < 16_000:
            headers["X-Xinf-Issues"] = text
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _exc_kind(exc: BaseException) -> str:
    for cls in _ERROR_CLASSES:
        if isinstance(exc, cls):
            return cls.__name__
    return "XinfError"


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    problems = []
    for err in exc.errors():
        typ = err.get("type", "")
        if typ in ("json_invalid", "json_type"):
            ctx = err.get("ctx") or {}
            return (f"Invalid JSON body: {ctx.get('error', err.get('msg', 'not JSON'))}. Send a JSON object with "
                    "Content-Type: application/json."), "InferenceError"
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    if not problems:
        problems = ["the request body is invalid"]
    return "Invalid request (" + str(len(problems)) + " problem" + ("s" if len(problems) != 1 else "") + "):\n" + \
        "\n".join(f"  - {p}" for p in problems), "InferenceError"


# ------------------------------------------------------------------------------------------------
# The app
# ------------------------------------------------------------------------------------------------

def create_app(client: Any = None, settings: Optional[ServerSettings] = None, **options: Any) -> FastAPI:
    """A FastAPI app serving ``client`` (default: ``Client()``, the kernel's manager).
    ``options`` are ``ServerSettings`` fields (api_key, allowed_roots, allow_any_path, ...)."""
    if client is None:
        from ..client import Client

        client = Client()
    settings = settings or ServerSettings(**options)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await app.state.embed_batcher.aclose()
        await app.state.rerank_batcher.aclose()

    app = FastAPI(title="xinference_nb", version=__version__, lifespan=lifespan,
                  description="Xinference- and OpenAI-compatible REST API over the notebook's models.")
    app.state.client = client
    app.state.settings = settings
    app.state.streams_open = 0
    app.state.streams_cancelled = 0
    app.state.llm_limits = {}
    state = app.state

    # ------------------------------------------------------------------ middleware: auth + body size
    app.add_middleware(_GuardMiddleware, settings=settings)

    # ------------------------------------------------------------------ exception handlers
    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError):
        detail, kind = _validation_message(exc)
        return _error(400, detail, kind)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Not Found: no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, detail, "XinfError")

    @app.exception_handler(HTTPError)
    async def _on_ours(request: Request, exc: HTTPError):
        return _error(exc.status, exc.detail, exc.kind)

    @app.exception_handler(Refused)
    async def _on_refused(request: Request, exc: Refused):
        return _error(exc.status, str(exc), "PermissionError")

    @app.exception_handler(XinfError)
    async def _on_xinf(request: Request, exc: XinfError):
        return _error(400, str(exc), _exc_kind(exc), getattr(exc, "issues", None) if isinstance(exc, SpecError)
                      else None)

    @app.exception_handler(Exception)
    async def _on_other(request: Request, exc: Exception):
        if isinstance(exc, (ValueError, TypeError, KeyError, LookupError)):
            return _error(400, f"{type(exc).__name__}: {exc}", "InferenceError")
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"Internal error: {type(exc).__name__}: {exc}", "XinfError")

    # ------------------------------------------------------------------ helpers
    async def call(fn, *args, **kwargs):
        return await run_in_threadpool(fn, *args, **kwargs)

    def not_found(uid: str, exc: Optional[BaseException] = None) -> HTTPError:
        message = str(exc) if exc is not None else ""
        if "Model not found in the model list" not in message:
            message = f"Model not found in the model list, uid: {uid}"
        return HTTPError(400, message, "ModelNotFound")

    async def handle_for(uid: Any, ability: str, route: str):
        if not isinstance(uid, str) or not uid:
            raise HTTPError(400, "model: a model uid (string) is required", "InferenceError")
        try:
            # a dict lookup under a short lock in the manager: done on the loop, as a thread hop per
            # request costs more than the lookup (and would spread out arrivals the batcher groups)
            handle = client.get_model(uid)
        except ModelNotFound as exc:
            raise not_found(uid, exc) from None
        if not callable(getattr(handle, ability, None)):
            kind = getattr(handle, "model_type", "") or type(handle).__name__
            raise HTTPError(400, f"Model {uid!r} is a {kind} model and cannot {ability}; {route} needs a model "
                            f"with that ability (see GET /v1/models)", "InferenceError")
        return handle

    def json_kwargs(value: Any) -> dict[str, Any]:
        if value is None or value == "":
            return {}
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise HTTPError(400, f"kwargs: not valid JSON ({exc.msg})", "InferenceError") from None
            if parsed is None:
                return {}
            if isinstance(parsed, dict):
                return parsed
        raise HTTPError(400, "kwargs: must be a JSON object", "InferenceError")

    def extras(body: BaseModel) -> dict[str, Any]:
        return dict(body.model_extra or {})

    def llm_limit(uid: str) -> asyncio.Semaphore:
        sem = state.llm_limits.get(uid)
        if sem is None:
            sem = state.llm_limits[uid] = asyncio.Semaphore(max(1, settings.llm_concurrency))
        return sem

    def generate_config(body: BaseModel, skip: tuple[str, ...]) -> tuple[dict[str, Any], Optional[bool]]:
        data = body.model_dump(exclude_unset=False)
        data.update(extras(body))
        cfg: dict[str, Any] = {}
        enable_thinking = None
        for key, value in data.items():
            if key in skip:
                continue
            if key == "max_completion_tokens":
                if value is not None:
                    cfg["max_tokens"] = value
                continue
            if key == "chat_template_kwargs":
                kw = value
                if isinstance(kw, str):
                    kw = json_kwargs(kw)
                if isinstance(kw, dict) and "enable_thinking" in kw:
                    enable_thinking = kw.get("enable_thinking")
                elif kw not in (None, {}):
                    raise HTTPError(400, "chat_template_kwargs: only {\"enable_thinking\": bool} is supported",
                                    "InferenceError")
                continue
            if key == "enable_thinking":
                enable_thinking = value
                continue
            allowed = _OPENAI_DEFAULTS.get(key)
            if allowed is not None:
                if "*" in allowed or value in allowed:
                    if key == "stream_options" and value:
                        cfg[key] = value
                    continue
                raise HTTPError(400, f"{key}={value!r} is not supported by this server", "InferenceError")
            if value is None and key in ("max_tokens", "temperature", "top_p", "stop", "top_k", "seed"):
                continue
            cfg[key] = value
        if enable_thinking is not None and not isinstance(enable_thinking, bool):
            raise HTTPError(400, "enable_thinking must be true or false", "InferenceError")
        return cfg, enable_thinking

    # ------------------------------------------------------------------ streaming (SSE)
    def sse(uid: str, it: Iterator[Any], sem: asyncio.Semaphore) -> StreamingResponse:
        """Stream the chunks of ``it`` (a sync iterator) as ``data: {chunk}`` lines, then ``data: [DONE]``.
        A thread of its own drains ``it`` without waiting for a slow reader (the model is freed as soon
        as generation ends); a reader that goes away sets ``cancelled``, which closes ``it`` (stopping
        generation) at the next chunk. ``sem`` (the model's LLM slot) is released when generation ends."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, (kind, item))
            except RuntimeError:  # loop closed (server stopped)
                pass

        def produce() -> None:
            try:
                for chunk in it:
                    if cancelled.is_set():
                        break
                    put("chunk", chunk)
            except BaseException as exc:  # noqa: BLE001 - sent to the client as an SSE error event
                put("error", exc)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001
                        pass
                put("end", None)
                try:
                    loop.call_soon_threadsafe(sem.release)
                except RuntimeError:
                    pass

        state.streams_open += 1
        threading.Thread(target=produce, name=f"xnb-stream-{uid}", daemon=True).start()

        async def body():
            finished = False
            try:
                while True:
                    kind, item = await chunks.get()
                    if kind == "end":
                        break
                    if kind == "error":
                        err = {"message": str(item), "type": _exc_kind(item) if isinstance(item, XinfError)
                               else type(item).__name__,
                               "code": 400 if isinstance(item, (XinfError, ValueError)) else 500}
                        yield f"data: {json.dumps({'error': err})}\n\n"
                        continue
                    yield f"data: {json.dumps(item, ensure_ascii=False, default=str)}\n\n"
                finished = True
                yield "data: [DONE]\n\n"
            finally:
                if not finished:
                    cancelled.set()
                    state.streams_cancelled += 1
                state.streams_open -= 1

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def llm_call(uid: str, handle: Any, method: str, first: Any, cfg: dict[str, Any], **kw: Any):
        sem = llm_limit(uid)
        await sem.acquire()
        stream = bool(cfg.get("stream"))
        try:
            result = await call(getattr(handle, method), first, generate_config=cfg, **kw)
        except ModelNotFound as exc:
            sem.release()
            raise not_found(uid, exc) from None
        except BaseException:
            sem.release()
            raise
        if stream and not isinstance(result, dict):
            return sse(uid, result, sem)  # the producer thread releases sem
        sem.release()
        return result

    # ------------------------------------------------------------------ batching (embeddings, rerank)
    # Batch keys are model uids (so one model runs one batched call at a time); items carry their
    # request's options, and a batch makes one call per distinct set of options.
    def run_embedding_batch(uid: str, items: list[tuple[str, tuple]]) -> list[tuple[Any, float]]:
        """items: (text, frozen options) → (vector, share of the batch's prompt tokens) per text."""
        handle = client.get_model(uid)
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_text, frozen) in enumerate(items):
            groups.setdefault(frozen, []).append(i)
        for frozen, idxs in groups.items():
            texts = [items[i][0] for i in idxs]
            result = handle.create_embedding(texts, **{k: json.loads(v) for k, v in frozen})
            data = sorted(result["data"], key=lambda d: d.get("index", 0))
            # usage is per call: each text gets a share by length (exact for one-text calls)
            total = (result.get("usage") or {}).get("prompt_tokens") or 0
            weights = [len(t) + 1 for t in texts]
            scale = total / sum(weights)
            for i, d, w in zip(idxs, data, weights):
                out[i] = (d["embedding"], w * scale)
        return out

    def run_rerank_batch(uid: str, items: list[tuple[str, Any, tuple]]) -> list[Any]:
        """items: (query as JSON, document, frozen options); one call per distinct query and options."""
        handle = client.get_model(uid)
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (q, _doc, frozen) in enumerate(items):
            groups.setdefault((q, frozen), []).append(i)
        for (q, frozen), idxs in groups.items():
            docs = [items[i][1] for i in idxs]
            res = handle.rerank(docs, json.loads(q), top_n=None, return_documents=True, return_len=True,
                                **{k: json.loads(v) for k, v in frozen})
            tokens = ((res.get("meta") or {}).get("tokens") or {})
            weights = [len(json.dumps(d)) + 1 for d in docs]
            scale_in = (tokens.get("input_tokens") or 0) / sum(weights)
            for r in res["results"]:
                out[idxs[r["index"]]] = (r, weights[r["index"]] * scale_in)
        return out

    state.embed_batcher = Batcher(run_embedding_batch, max_wait_s=settings.batch_wait_ms / 1000,
                                  max_items=settings.max_batch)
    state.rerank_batcher = Batcher(run_rerank_batch, max_wait_s=settings.batch_wait_ms / 1000,
                                   max_items=settings.max_batch)

    # ================================================================== routes
    @app.get("/v1/cluster/auth", tags=["cluster"])
    async def cluster_auth():
        return {"auth": bool(settings.api_key)}

    @app.get("/status", tags=["cluster"])
    async def status():
        return {"status": "ok", "version": __version__}

    @app.get("/v1/cluster/version", tags=["cluster"])
    async def version():
        return {"version": __version__, "full-revisionid": None, "dirty": False, "error": None,
                "date": None}

    # ------------------------------------------------------------------ models
    @app.get("/v1/models", tags=["models"])
    async def list_models():
        models = await call(client.list_models)
        data = []
        for uid, desc in models.items():
            row = {"id": uid, "object": "model", "created": 0, "owned_by": "xinference"}
            row.update({k: v for k, v in dict(desc).items() if k not in ("id",)})
            data.append(row)
        return {"object": "list", "data": data}

    @app.post("/v1/models", tags=["models"])
    async def launch_model(body: LaunchBody, wait_ready: bool = True):
        payload = body.model_dump()
        payload.update(extras(body))
        settings.check_trust_remote_code(payload)
        settings.check_path(payload.get("model_path"), "model_path")
        kwargs = {k: v for k, v in payload.items() if v is not None}
        if kwargs.get("n_worker") == 1:
            kwargs.pop("n_worker")
        from ..spec import normalize_model_type

        model_type = normalize_model_type(kwargs.get("model_type", "LLM"))
        kwargs["model_type"] = model_type
        if model_type == "LLM" and not kwargs.get("model_engine"):
            raise HTTPError(400, "Invalid input. Please specify the `model_engine` field.", "InferenceError")
        if wait_ready:
            uid = await call(client.launch_model, **kwargs)
            return {"model_uid": uid}
        uid = kwargs.get("model_uid") or f"{kwargs['model_name']}-{uuid.uuid4().hex[:8]}"
        kwargs["model_uid"] = uid

        def launch_in_background():
            try:
                client.launch_model(**kwargs)
            except Exception:  # noqa: BLE001 - visible through progress / list_models
                log.exception("background launch of %s failed", uid)

        threading.Thread(target=launch_in_background, name=f"xnb-launch-{uid}", daemon=True).start()
        return {"model_uid": uid}

    @app.get("/v1/models/{model_uid}", tags=["models"])
    async def describe_model(model_uid: str):
        try:
            return await call(client.describe_model, model_uid)
        except ModelNotFound as exc:
            raise not_found(model_uid, exc) from None

    @app.delete("/v1/models/{model_uid}", tags=["models"])
    async def terminate_model(model_uid: str):
        try:
            await call(client.terminate_model, model_uid)
        except ModelNotFound as exc:
            raise not_found(model_uid, exc) from None
        state.llm_limits.pop(model_uid, None)
        return None

    @app.get("/v1/models/{model_uid}/progress", tags=["models"])
    async def launch_progress(model_uid: str):
        try:
            progress = await call(client.get_launch_model_progress, model_uid)
        except ModelNotFound as exc:
            raise not_found(model_uid, exc) from None
        return progress if isinstance(progress, dict) else {"progress": progress}

    @app.post("/v1/models/{model_uid}/cancel", tags=["models"])
    async def cancel_launch(model_uid: str):
        try:
            await call(client.cancel_launch_model, model_uid)
        except ModelNotFound as exc:
            raise not_found(model_uid, exc) from None
        return None

    @app.get("/v1/engines/{model_name}", tags=["models"])
    async def engines_any(model_name: str):
        from ..spec import MODEL_TYPES

        def query():
            last: Optional[Exception] = None
            for model_type in MODEL_TYPES:
                try:
                    return client.query_engine_by_model_name(model_name, model_type)
                except ModelNotFound as exc:
                    last = exc
            raise last or ModelNotFound(model_name)

        return await call(query)

    @app.get("/v1/engines/{model_type}/{model_name}", tags=["models"])
    async def engines(model_type: str, model_name: str):
        return await call(client.query_engine_by_model_name, model_name, model_type)

    @app.post("/v1/models/llm/auto-register", tags=["registrations"])
    async def auto_register(body: AutoRegisterBody):
        settings.check_path(body.model_path, "model_path")
        name = extras(body).get("model_name")

        def parse():
            from ..parse import parse_model
            from ..spec import to_document

            result = parse_model(body.model_path, model_type="LLM", model_family=body.model_family or None,
                                 model_name=name if isinstance(name, str) and name else None)
            spec = getattr(result, "spec", result)
            if isinstance(spec, BaseModel):
                return to_document(spec)
            return spec

        return await call(parse)

    # ------------------------------------------------------------------ registrations
    @app.get("/v1/model_registrations/{model_type}", tags=["registrations"])
    async def list_registrations(model_type: str, detailed: bool = False):
        return await call(client.list_model_registrations, model_type, detailed)

    @app.post("/v1/model_registrations/{model_type}", tags=["registrations"])
    async def register_model(model_type: str, body: RegisterBody):
        from ..spec import normalize_model_type

        model_type = normalize_model_type(model_type)
        settings.check_flexible(model_type)
        doc: Any = body.model
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError:
                doc = body.model  # load_spec explains what is wrong with it
        if isinstance(doc, dict):
            settings.check_document_paths(doc)
            settings.check_trust_remote_code(doc)
        await call(client.register_model, model_type, doc, persist=body.persist, overwrite=body.overwrite)
        return None

    @app.get("/v1/model_registrations/{model_type}/{model_name}", tags=["registrations"])
    async def get_registration(model_type: str, model_name: str):
        return await call(client.get_model_registration, model_type, model_name)

    @app.delete("/v1/model_registrations/{model_type}/{model_name}", tags=["registrations"])
    async def unregister(model_type: str, model_name: str):
        await call(client.unregister_model, model_type, model_name)
        return None

    # ------------------------------------------------------------------ LLM
    @app.post("/v1/completions", tags=["openai"])
    async def completions(request: Request, body: CompletionBody):
        handle = await handle_for(body.model, "generate", "/v1/completions")
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise HTTPError(400, "prompt: send one prompt per request (a string or a list of one string)",
                                "InferenceError")
            prompt = prompt[0]
        cfg, _ = generate_config(body, ("model", "prompt"))
        return await llm_call(body.model, handle, "generate", prompt, cfg)

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request, body: ChatBody):
        handle = await handle_for(body.model, "chat", "/v1/chat/completions")
        cfg, enable_thinking = generate_config(body, ("model", "messages", "tools"))
        kw: dict[str, Any] = {"tools": body.tools}
        if enable_thinking is not None:
            kw["enable_thinking"] = enable_thinking
        return await llm_call(body.model, handle, "chat", body.messages, cfg, **kw)

    # ------------------------------------------------------------------ embeddings / rerank
    @app.post("/v1/embeddings", tags=["openai"])
    async def embeddings(body: EmbeddingBody):
        uid = body.model
        handle = await handle_for(uid, "create_embedding", "/v1/embeddings")
        fmt = body.encoding_format or "float"
        if fmt not in ("float", "base64"):
            raise HTTPError(400, f"encoding_format: {fmt!r} is not supported; use \"float\" or \"base64\"",
                            "InferenceError")
        kw = {k: v for k, v in extras(body).items() if k not in ("user",)}
        if body.dimensions is not None:
            kw["dimensions"] = body.dimensions
        inp = body.input
        texts: Optional[list[str]] = None
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(t, str) for t in inp):
            texts = list(inp)
        elif isinstance(inp, list) and not inp:
            raise HTTPError(400, "input: must not be empty", "InferenceError")
        if texts is not None:
            try:
                frozen = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kw.items()))
            except TypeError:
                frozen = None
            if frozen is not None:
                try:
                    rows = await state.embed_batcher.submit(uid, [(t, frozen) for t in texts])
                except ModelNotFound as exc:
                    raise not_found(uid, exc) from None
                tokens = int(round(sum(t for _, t in rows)))
                data = [{"index": i, "object": "embedding", "embedding": _encode(e, fmt)}
                        for i, (e, _) in enumerate(rows)]
                return {"object": "list", "model": uid, "data": data,
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        try:
            result = await call(handle.create_embedding, inp, **kw)
        except ModelNotFound as exc:
            raise not_found(uid, exc) from None
        if fmt == "base64" and isinstance(result, dict):
            result = dict(result, data=[dict(d, embedding=_encode(d["embedding"], fmt)) for d in result["data"]])
        return result

    @app.post("/v1/rerank", tags=["rerank"])
    async def rerank(body: RerankBody):
        uid = body.model
        await handle_for(uid, "rerank", "/v1/rerank")
        kw = json_kwargs(body.kwargs)
        kw.update({k: v for k, v in extras(body).items() if k not in kw})
        if body.max_chunks_per_doc is not None:
            kw["max_chunks_per_doc"] = body.max_chunks_per_doc
        if not body.documents:
            raise HTTPError(400, "documents: must not be empty", "InferenceError")
        try:
            frozen = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kw.items()))
        except TypeError:
            raise HTTPError(400, "rerank options must be JSON values", "InferenceError") from None
        query = json.dumps(body.query)
        try:
            rows = await state.rerank_batcher.submit(uid, [(query, d, frozen) for d in body.documents])
        except ModelNotFound as exc:
            raise not_found(uid, exc) from None
        results = []
        for i, (r, _tok) in enumerate(rows):
            item = {"index": i, "relevance_score": r["relevance_score"],
                    "document": r.get("document") if body.return_documents else None}
            results.append(item)
        results.sort(key=lambda r: r["relevance_score"], reverse=True)
        if body.top_n is not None:
            results = results[:body.top_n]
        tokens = int(round(sum(t for _, t in rows)))
        meta = {"api_version": None, "billed_units": None, "warnings": None,
                "tokens": {"input_tokens": tokens, "output_tokens": 0} if body.return_len else None}
        return {"id": str(uuid.uuid4()), "results": results, "meta": meta}

    # ------------------------------------------------------------------ images / audio / flexible
    @app.post("/v1/images/generations", tags=["images"])
    async def images(body: ImageBody):
        handle = await handle_for(body.model, "text_to_image", "/v1/images/generations")
        kw = json_kwargs(body.kwargs)
        kw.update(extras(body))
        kw.pop("user", None)
        try:
            return await call(handle.text_to_image, body.prompt, n=body.n, size=body.size or "1024*1024",
                              response_format=body.response_format or "url", **kw)
        except ModelNotFound as exc:
            raise not_found(body.model, exc) from None

    @app.post("/v1/audio/speech", tags=["audio"], response_class=Response,
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": SpeechBody.model_json_schema()}}, "required": True}})
    async def speech(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
            for k in ("speed",):
                if k in data:
                    try:
                        data[k] = float(data[k])
                    except ValueError:
                        raise HTTPError(400, f"{k}: must be a number", "InferenceError") from None
            if "stream" in data:
                data["stream"] = data["stream"].lower() in ("1", "true", "yes")
        else:
            data = await _json_body(request)
        try:
            body = SpeechBody.model_validate(data)
        except Exception as exc:  # pydantic ValidationError
            raise HTTPError(400, _pydantic_message(exc), "InferenceError") from None
        handle = await handle_for(body.model, "speech", "/v1/audio/speech")
        kw = json_kwargs(body.kwargs)
        kw.update({k: v for k, v in extras(body).items() if k not in ("instructions", "stream_format")})
        fmt = body.response_format or "mp3"
        try:
            audio = await call(handle.speech, body.input, voice=body.voice or "", response_format=fmt,
                               speed=body.speed if body.speed is not None else 1.0, stream=bool(body.stream), **kw)
        except ModelNotFound as exc:
            raise not_found(body.model, exc) from None
        media = _AUDIO_TYPES.get(fmt, "application/octet-stream")
        if isinstance(audio, (bytes, bytearray)):
            return Response(bytes(audio), media_type=media)
        if isinstance(audio, str):
            return Response(audio.encode(), media_type=media)

        def pieces():
            for piece in audio:
                yield piece if isinstance(piece, (bytes, bytearray)) else bytes(piece)

        return StreamingResponse(pieces(), media_type=media)

    @app.post("/v1/audio/transcriptions", tags=["audio"],
              openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["model", "file"], "properties": {
                      "model": {"type": "string"}, "file": {"type": "string", "format": "binary"},
                      "language": {"type": "string"}, "prompt": {"type": "string"},
                      "response_format": {"type": "string"}, "temperature": {"type": "number"},
                      "kwargs": {"type": "string"}}}}}, "required": True}})
    async def transcriptions(request: Request):
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPError(400, "send the audio as multipart/form-data with fields model and file",
                            "InferenceError")
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - malformed multipart
            raise HTTPError(400, f"malformed multipart body: {exc}", "InferenceError") from None
        uid = form.get("model")
        upload = form.get("file")
        if not isinstance(uid, str) or not uid:
            raise HTTPError(400, "model: a model uid (string) is required", "InferenceError")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "file: an audio file upload is required", "InferenceError")
        audio = await upload.read()
        handle = await handle_for(uid, "transcriptions", "/v1/audio/transcriptions")
        temperature = form.get("temperature") or 0
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            raise HTTPError(400, "temperature: must be a number", "InferenceError") from None
        grans = [g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)] or None
        fmt = form.get("response_format") or "json"
        try:
            result = await call(handle.transcriptions, audio, language=form.get("language") or None,
                                prompt=form.get("prompt") or None, response_format=fmt, temperature=temperature,
                                timestamp_granularities=grans)
        except ModelNotFound as exc:
            raise not_found(uid, exc) from None
        if isinstance(result, (bytes, bytearray)):
            result = bytes(result).decode("utf-8", errors="replace")
        if isinstance(result, str):
            if fmt in ("json", "verbose_json"):
                return {"text": result}
            return PlainTextResponse(result)
        return result

    @app.post("/v1/flexible/infers", tags=["flexible"])
    async def flexible(body: FlexibleBody):
        handle = await handle_for(body.model, "infer", "/v1/flexible/infers")
        try:
            result = await call(handle.infer, *(body.args or []), **extras(body))
        except ModelNotFound as exc:
            raise not_found(body.model, exc) from None
        return _jsonable(result)

    return app


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg",
                "aac": "audio/aac", "pcm": "audio/pcm", "ogg": "audio/ogg"}


def _encode(vec: Any, fmt: str) -> Any:
    if fmt == "base64":
        values = [float(x) for x in vec]
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return vec


def _jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    try:
        return jsonable_encoder(value)
    except Exception:  # noqa: BLE001
        return {"result": repr(value)}


def _pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors()]
        return "Invalid request:\n" + "\n".join(f"  - {p}" for p in problems)
    return f"Invalid request: {exc}"


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise HTTPError(400, "the request body is empty; send a JSON object", "InferenceError")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"Invalid JSON body: {exc}", "InferenceError") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "the request body must be a JSON object", "InferenceError")
    return data


class _GuardMiddleware:
    """API key and body-size limits, before routing (so they cover unknown routes too)."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.settings.api_key and path != "/v1/cluster/auth" and not self.settings.auth_ok(
                headers.get("authorization")):
            resp = _error(401, "Invalid or missing API key: send the header 'Authorization: Bearer <api_key>'",
                          "PermissionError")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return await resp(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            multipart = headers.get("content-type", "").startswith("multipart/")
            limit = self.settings.max_upload_bytes if multipart else self.settings.max_body_bytes
            length = headers.get("content-length")
            if length is not None:
                try:
                    too_big = int(length) > limit
                except ValueError:
                    return await _error(400, "invalid Content-Length header", "InferenceError")(scope, receive, send)
                if too_big:
                    return await self._too_big(limit, scope, receive, send)
            body = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > limit:
                    return await self._too_big(limit, scope, receive, send)
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    async def _too_big(self, limit: int, scope, receive, send):
        resp = _error(413, f"Request body too large: the limit is {limit} bytes (set max_body_bytes / "
                      "max_upload_bytes when starting the server to change it)", "InferenceError")
        await resp(scope, receive, send)
