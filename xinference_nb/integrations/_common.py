"""What the LangChain and LlamaIndex classes share: finding the handle, building generate_config,
reading tool calls out of results and streams, and running a blocking call or stream on a worker
thread for the async methods (so an event loop, such as a Jupyter kernel's, never blocks). Every
async method that generates runs a stream underneath (``gather_stream`` for the non-stream ones), so
cancelling it stops generation; a non-stream chat with tools runs as it is asked instead
(``call_in_thread_cancellable``: Xinference parses tool calls only in non-stream answers)."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Optional

from ..chat import chunk_delta, first_choice
from ..errors import EngineUnavailable, InferenceError
from ..threads import cancel_scope, drain_in_thread

#: what each class needs of the model's handle, and the abilities that stand for it
NEEDS = {"chat": "an LLM with the chat ability", "generate": "an LLM with the generate ability",
         "create_embedding": "an embedding model"}


def require(module: str, package: str, extra: str) -> None:
    """Raise EngineUnavailable (with the pip command) when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise EngineUnavailable(f"This integration needs {package}.", package=package, extra=extra)


def resolve_handle(client: Any, model_uid: str, method: str) -> Any:
    """The handle of ``model_uid`` from ``client`` (``Client()`` when None), checked to have ``method``."""
    if not isinstance(model_uid, str) or not model_uid:
        raise InferenceError(f"model_uid must be the uid of a launched model (a non-empty string), "
                             f"got {type(model_uid).__name__} {model_uid!r:.60}")
    if client is None:
        from ..client import Client

        client = Client()
    elif isinstance(client, str):
        from ..client import Client

        client = Client(client)
    elif not callable(getattr(client, "get_model", None)):
        raise InferenceError(f"client must be a Client() or Client('http://host:port') (or an endpoint URL), "
                             f"got {type(client).__name__}")
    handle = client.get_model(model_uid)
    if not callable(getattr(handle, method, None)):
        kind = getattr(handle, "model_type", "") or type(handle).__name__
        raise InferenceError(f"model {model_uid!r} is a {kind} model; this class needs {NEEDS[method]} "
                             f"(its handle has no {method}())")
    return handle


def cached_handle(owner: Any, method: str) -> Any:
    """``owner._handle``: the handle of ``owner.model_uid`` on ``owner.client`` (checked to have
    ``method``), resolved on first use and kept, for every integration class."""
    if owner._handle is None:
        owner._handle = resolve_handle(owner.client, owner.model_uid, method)
    return owner._handle


def generate_config(defaults: Optional[dict], stop: Optional[list[str]] = None, **kwargs: Any) -> dict[str, Any]:
    """``defaults`` updated by a call's ``generate_config`` and other keyword arguments, plus ``stop``.
    Nothing is dropped: the model refuses keys it does not know, naming them."""
    cfg = dict(defaults or {})
    cfg.update(kwargs.pop("generate_config", None) or {})
    cfg.update({k: v for k, v in kwargs.items() if v is not None})
    if stop:
        cfg["stop"] = list(stop)
    return cfg


def check_tool_choice(tool_choice: Any, tools: Optional[list]) -> tuple[Optional[list], Any]:
    """(the tools to send, the OpenAI ``tool_choice`` to send: None for the model's own choice) for a
    LangChain / LlamaIndex ``tool_choice``: None / "auto" keep the tools and let the model decide;
    "none" drops them; "any" / "required" force a call of one of them (``True`` too, or a call of the
    only tool); a tool's name or ``{"type": "function", "function": {"name": ...}}`` forces a call
    of that tool (the model's handle constrains the reply to it). Anything else is refused."""
    if tool_choice in (None, "auto"):
        return tools, None
    if tool_choice == "none":
        return None, None
    names = [(t.get("function") or {}).get("name") for t in tools or [] if isinstance(t, dict)]
    if not names:
        raise InferenceError(f"tool_choice={tool_choice!r:.60} needs tools; none were given")
    if tool_choice is True:
        tool_choice = names[0] if len(names) == 1 else "required"
    if tool_choice in ("any", "required"):
        return tools, "required"
    name = tool_choice
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
    if isinstance(name, str) and name in names:
        return tools, {"type": "function", "function": {"name": name}}
    raise InferenceError(f"tool_choice={tool_choice!r:.80} is not supported; use None or 'auto' (the model decides), "
                         f"'none' (no tools), 'any' / 'required' (a call of one of the tools) or the name of one "
                         f"of them ({', '.join(map(repr, names))})")


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string or an object) as a dict."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        raise InferenceError(f"the model's tool call arguments are not JSON: {arguments!r:.120}") from None
    if not isinstance(value, dict):
        raise InferenceError(f"the model's tool call arguments are not a JSON object: {arguments!r:.120}")
    return value


def check_stream(it: Any, method: str) -> Iterator[dict[str, Any]]:
    if isinstance(it, dict):  # pragma: no cover - a handle that ignored stream=True
        raise InferenceError(f"{method}(stream=True) returned one result instead of a stream of chunks")
    return it


async def aiter_in_thread(make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """Iterate ``make()`` (a blocking call returning a blocking iterator) on one worker thread and
    yield its items here without blocking the event loop. Leaving early closes the iterator on
    that thread (generation stops); an error raised there is raised here."""
    queue, stop = drain_in_thread(make, asyncio.get_running_loop(), name="xnb-integration-stream")
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()


async def call_in_thread_cancellable(fn: Callable[[], Any]) -> Any:
    """``fn()`` (a blocking call) run on a worker thread of its own inside a cancel scope
    (``threads.cancel_scope``), its result or error returned here. Cancelling the await (``task.cancel()``,
    a timeout) sets the scope's event and re-raises at once, without waiting for the thread: an in-kernel
    model stops that call at its next token (it then raises, unseen, on that thread). A remote handle's
    (``Client(url)``) HTTP call cannot be stopped from here: the await still returns at once, but the
    server generates that answer to the end. Used for the non-stream chats with tools, which must not
    run as a stream (Xinference's transformers engine parses tool calls only in non-stream answers)."""
    event = threading.Event()

    def make() -> Iterator[Any]:
        with cancel_scope(event):
            yield fn()

    queue, stop = drain_in_thread(make, asyncio.get_running_loop(), name="xnb-integration-call")
    try:
        kind, item = await queue.get()   # ("item", result) or ("error", exc): make() yields once
    except asyncio.CancelledError:
        event.set()
        stop.set()
        raise
    if kind == "error":
        raise item
    return item


def as_stream(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` of a non-stream call, for running it as a stream underneath (see ``gather_stream``):
    ``stream_options`` stays refused as the non-stream call refuses it."""
    if cfg.get("stream_options"):
        raise InferenceError("generate_config['stream_options'] is only allowed with stream=True (use the "
                             "streaming method)")
    return dict(cfg, stream=True)


async def gather_stream(make: Callable[[], Iterator[dict[str, Any]]], kind: str) -> dict[str, Any]:
    """The non-stream result (an OpenAI chat completion for ``kind`` "chat", a completion for
    "generate") of a call made as a stream: ``make()`` starts it on a worker thread and its chunks
    are gathered here. This is how the async non-stream methods run, so that cancelling the await
    (``task.cancel()``, a timeout) closes the stream and generation stops at the next token, in-kernel
    and over REST (a blocking non-stream call on a thread would run on to max_tokens). Not for a chat
    with tools: see ``call_in_thread_cancellable``."""
    from ..chat import chat_message, chat_result, completion_result

    first: dict[str, Any] = {}
    text: list[str] = []
    reasoning: Optional[list[str]] = None
    calls = ToolCallAccumulator()
    finish, used = None, None
    async for chunk in aiter_in_thread(make):
        first = first or chunk
        if isinstance(chunk, dict) and chunk.get("usage"):
            used = chunk["usage"]
        choice = first_choice(chunk)
        finish = choice.get("finish_reason") or finish
        if kind == "generate":
            text.append(choice.get("text") or "")
            continue
        delta = chunk_delta(chunk)
        text.append(delta.get("content") or "")
        if "reasoning_content" in delta:
            reasoning = (reasoning or []) + [delta["reasoning_content"] or ""]
        calls.add(delta.get("tool_calls"))
    model = first.get("model") if isinstance(first, dict) else None
    tokens = (int((used or {}).get("prompt_tokens") or 0), int((used or {}).get("completion_tokens") or 0))
    if kind == "generate":
        result = completion_result(model, "".join(text), finish or "stop", *tokens)
    else:
        content = "".join(text)
        message = chat_message(content if content or not calls.calls else None,
                               None if reasoning is None else "".join(reasoning), calls.calls,
                               with_reasoning=reasoning is not None)
        result = chat_result(model, message, finish or "stop", *tokens)
    for key in ("id", "created"):     # the stream's own
        if isinstance(first, dict) and first.get(key) is not None:
            result[key] = first[key]
    result["usage"] = used             # as the stream sent it (None when it sent none)
    return result


class ToolCallAccumulator:
    """Tool calls of a stream, from deltas that carry them whole (ours, Xinference's) or in pieces
    by ``index`` (OpenAI's): ``add(delta_tool_calls)``, then ``calls`` (OpenAI tool_calls)."""

    def __init__(self) -> None:
        self._by_index: dict[int, dict[str, Any]] = {}

    def add(self, deltas: Optional[list[dict[str, Any]]]) -> None:
        for n, d in enumerate(deltas or []):
            i = d.get("index", n) if isinstance(d.get("index", n), int) else n
            call = self._by_index.setdefault(i, {"id": None, "type": "function",
                                                 "function": {"name": "", "arguments": ""}})
            if d.get("id"):
                call["id"] = d["id"]
            fn = d.get("function") or {}
            if fn.get("name"):
                call["function"]["name"] += fn["name"]
            args = fn.get("arguments")
            if isinstance(args, dict):
                args = json.dumps(args, ensure_ascii=False)
            if args:
                call["function"]["arguments"] += args

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [self._by_index[i] for i in sorted(self._by_index)]
