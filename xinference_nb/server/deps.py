"""What routes share, reached through FastAPI dependencies that read ``app.state``.

``init_state`` puts it there (create_app calls it once): ``client`` (the ``Client`` served),
``settings`` (``ServerSettings``), ``llm_limits`` (uid → the model's LLM slots, an asyncio.Semaphore),
``streams_open`` / ``streams_cancelled`` (SSE counters), ``embed_batcher`` / ``rerank_batcher``.
A route asks for them by type: ``client: ClientDep``, ``settings: SettingsDep``, ``state: StateDep``.
The dependencies are coroutines, so FastAPI runs them on the loop (no thread hop per request).
"""
from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from ..errors import InferenceError, ModelNotFound
from .batching import Batcher
from .http_errors import not_found
from .security import ServerSettings


def init_state(state: State, client: Any, settings: ServerSettings) -> None:
    state.client = client
    state.settings = settings
    state.streams_open = 0
    state.streams_cancelled = 0
    state.llm_limits = {}


async def close_state(state: State) -> None:
    for name in ("embed_batcher", "rerank_batcher"):
        batcher = getattr(state, name, None)
        if batcher is not None:
            await batcher.aclose()


async def get_state(request: Request) -> State:
    return request.app.state


async def get_client(request: Request) -> Any:
    return request.app.state.client


async def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


async def get_embed_batcher(request: Request) -> Batcher:
    return request.app.state.embed_batcher


async def get_rerank_batcher(request: Request) -> Batcher:
    return request.app.state.rerank_batcher


StateDep = Annotated[State, Depends(get_state)]
ClientDep = Annotated[Any, Depends(get_client)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
EmbedBatcherDep = Annotated[Batcher, Depends(get_embed_batcher)]
RerankBatcherDep = Annotated[Batcher, Depends(get_rerank_batcher)]


async def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a worker thread (a Client call never runs on the event loop)."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def handle_for(client: Any, uid: Any, ability: str, route: str):
    """The handle of model ``uid`` if it has ``ability`` (a method name); else a 400 naming the route."""
    if not isinstance(uid, str) or not uid:
        raise InferenceError("model: a model uid (string) is required")
    try:
        # a dict lookup under a short lock in the manager: done on the loop, as a thread hop per
        # request costs more than the lookup (and would spread out arrivals the batcher groups)
        handle = client.get_model(uid)
    except ModelNotFound as exc:
        raise not_found(uid, exc) from None
    if not callable(getattr(handle, ability, None)):
        kind = getattr(handle, "model_type", "") or type(handle).__name__
        raise InferenceError(f"Model {uid!r} is a {kind} model and cannot {ability}; {route} needs a model "
                             f"with that ability (see GET /v1/models)")
    return handle


async def call_model(uid: str, fn, *args, **kwargs):
    """``call`` for a model's method: the model's ModelNotFound (terminated meanwhile) is the 400
    Xinference answers for an unknown uid."""
    try:
        return await call(fn, *args, **kwargs)
    except ModelNotFound as exc:
        raise not_found(uid, exc) from None


def llm_slots(state: State, uid: str) -> asyncio.Semaphore:
    """Model ``uid``'s LLM slots (``settings.llm_concurrency`` calls at a time); made on first use."""
    sem = state.llm_limits.get(uid)
    if sem is None:
        sem = state.llm_limits[uid] = asyncio.Semaphore(max(1, state.settings.llm_concurrency))
    return sem
