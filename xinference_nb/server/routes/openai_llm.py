"""OpenAI's LLM routes: /v1/completions and /v1/chat/completions, streamed as SSE on request.

A model takes ``settings.llm_concurrency`` calls at a time (``deps.llm_slots``); a streamed call holds
its slot until generation ends (the SSE producer releases it), not until the reader has read it all.
Image parts that name files are read only inside the server's allowed roots (``security.check_path``).
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...chat import GenerateConfig, tool_calls_in_final_chunk
from ...chat.images import local_paths
from ...model_types import model_type
from ..bodies import ChatBody, CompletionBody, request_fields
from ..deps import ClientDep, SettingsDep, StateDep, call_model, handle_for, llm_slots
from ..openai import single_prompt, to_generate_config
from ..sse import sse_response

router = APIRouter(tags=["openai"])

COMPLETIONS = model_type("LLM").routes["generate"]
CHAT_COMPLETIONS = model_type("LLM").routes["chat"]


async def llm_call(state: Any, uid: str, handle: Any, method: str, first: Any, cfg: GenerateConfig, **kw: Any):
    """``handle.<method>(first, generate_config=cfg, **kw)`` in one of the model's LLM slots: the
    result, or an SSE response for a stream. ``cfg`` is already checked: the handle takes it as it is."""
    sem = llm_slots(state, uid)
    await sem.acquire()
    try:
        result = await call_model(uid, getattr(handle, method), first, generate_config=cfg, **kw)
    except BaseException:
        sem.release()
        raise
    if cfg.stream and not isinstance(result, dict):
        if method == "chat":  # Xinference's wire shape: a stream's tool calls in its final chunk
            result = tool_calls_in_final_chunk(result)
        return sse_response(result, release=sem.release, counters=state, name=uid)  # the producer releases sem
    sem.release()
    return result


@router.post(COMPLETIONS)
async def completions(request: Request, body: CompletionBody, client: ClientDep, state: StateDep):
    handle = await handle_for(client, body.model, "generate", COMPLETIONS)
    prompt = single_prompt(body.prompt)
    cfg, _ = to_generate_config(body)
    return await llm_call(state, body.model, handle, "generate", prompt, cfg)


@router.post(CHAT_COMPLETIONS)
async def chat_completions(request: Request, body: ChatBody, client: ClientDep, state: StateDep,
                           settings: SettingsDep):
    handle = await handle_for(client, body.model, "chat", CHAT_COMPLETIONS)
    for where, path in local_paths(body.messages):   # image files: inside the allowed roots, like model paths
        settings.check_path(path, f"{where} image path", walk=False)
    cfg, enable_thinking = to_generate_config(body)
    kw: dict[str, Any] = {"tools": body.tools}   # tool_choice is in cfg: the handle applies it
    if enable_thinking is not None:
        kw["enable_thinking"] = enable_thinking
    return await llm_call(state, body.model, handle, "chat", body.messages, cfg, **kw)
