"""LangChain classes over a launched model, in this kernel or behind ``Client(url)``::

    from xinference_nb.integrations.langchain import XinfChatModel, XinfEmbeddings

    chat = XinfChatModel(model_uid="my-llm")                       # in-kernel
    chat = XinfChatModel(model_uid="my-llm", client=Client(url))   # our server or Xinference
    emb = XinfEmbeddings(model_uid="my-minilm", client=client)

``XinfChatModel`` is a ``BaseChatModel``: ``invoke``, ``stream``, ``batch``, ``bind_tools`` (tool calls
come back as ``AIMessage.tool_calls``; ``tool_choice`` "any" / "required" / a tool's name forces the
call), ``with_structured_output`` (a pydantic class, JSON schema, OpenAI tool or TypedDict, enforced
while decoding: ``method`` "json_schema" sends ``response_format``, "function_calling" forces a call of
the schema as a tool, "json_mode" any JSON object; ``include_raw``), and ``ainvoke`` / ``astream``,
which run the blocking call on a worker thread so the kernel's event loop never blocks (both as a stream
underneath: cancelling the await stops generation; but ``ainvoke`` with tools makes the non-stream call,
as Xinference parses tool calls only in non-stream answers: cancelling it stops an in-kernel model at
its next token, while a remote server finishes that answer). ``generate_config`` holds defaults for
every call (``max_tokens``, ``temperature``...); a call's keyword arguments override them, and the model
refuses keys it does not know with an ``InferenceError`` naming them. Needs ``pip install
"xinference-nb[langchain]"`` (langchain-core).
"""
from __future__ import annotations

from ._common import require

require("langchain_core", "langchain-core", "langchain")

import asyncio  # noqa: E402
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Sequence, Union  # noqa: E402

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.language_models import BaseChatModel, LanguageModelInput  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult  # noqa: E402
from langchain_core.runnables import Runnable  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402
from langchain_core.utils.function_calling import convert_to_openai_tool  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr  # noqa: E402

from ..chat import chunk_delta, first_choice  # noqa: E402
from ..errors import InferenceError  # noqa: E402
from ._common import (  # noqa: E402
    aiter_in_thread,
    as_stream,
    cached_handle,
    call_in_thread_cancellable,
    check_stream,
    check_tool_choice,
    gather_stream,
    generate_config,
    parse_arguments,
)

__all__ = ["XinfChatModel", "XinfEmbeddings"]


def _usage_metadata(usage: Optional[dict]) -> Optional[dict[str, int]]:
    if not usage:
        return None
    return {"input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0)}


def _tool_calls(calls: Optional[list[dict]]) -> list[dict[str, Any]]:
    return [{"name": c["function"]["name"], "args": parse_arguments(c["function"].get("arguments")),
             "id": c.get("id"), "type": "tool_call"} for c in calls or []]


class XinfChatModel(BaseChatModel):
    """A LangChain chat model over a launched LLM (``model_uid``) of ``client`` (``Client()`` when None)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_uid: str
    """The uid of a launched LLM with the chat ability."""
    client: Any = Field(default=None, exclude=True)
    """``Client()`` (None: the in-kernel one), ``Client("http://host:port")`` or the endpoint URL."""
    generate_config: dict[str, Any] = Field(default_factory=dict)
    """Defaults for every call: max_tokens, temperature, top_p, top_k, stop, seed..."""
    enable_thinking: Optional[bool] = None
    """Passed to the chat template of a reasoning model (None: the template's default)."""

    _handle: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "xinference-nb-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_uid": self.model_uid, "endpoint": getattr(self.client, "endpoint", None),
                "generate_config": self.generate_config}

    def _model(self) -> Any:
        return cached_handle(self, "chat")

    def bind_tools(self, tools: Sequence[Union[dict[str, Any], type, Callable, BaseTool]], *,
                   tool_choice: Optional[str] = None, **kwargs: Any) -> Runnable[LanguageModelInput, BaseMessage]:
        """The model with ``tools`` (LangChain tools, functions, pydantic classes or OpenAI tool dicts)
        sent on every call; tool calls come back in ``AIMessage.tool_calls``."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        check_tool_choice(tool_choice, formatted)
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(self, schema: Union[dict[str, Any], type], *, include_raw: bool = False,
                               method: str = "json_schema", strict: Optional[bool] = None, **kwargs: Any
                               ) -> Runnable[LanguageModelInput, Any]:
        """The model answering as ``schema`` (a pydantic class: its instance; a JSON schema, an OpenAI
        tool or a TypedDict: a dict), enforced while decoding. ``method``: "json_schema" (the reply is
        the JSON, through ``response_format``), "function_calling" (the reply is a call of ``schema`` as
        a tool, through ``tool_choice``) or "json_mode" (any JSON object, then parsed as ``schema``).
        ``include_raw``: a dict {"raw": AIMessage, "parsed": ..., "parsing_error": ...} that never raises
        for a reply that does not parse."""
        if kwargs:
            raise InferenceError(f"with_structured_output got unknown arguments {sorted(kwargs)}; it takes "
                                 "schema, include_raw, method and strict")
        return _structured_output(self, schema, include_raw, method, strict)

    # ------------------------------------------------------------------ the call
    def _request(self, messages: list[BaseMessage], stop: Optional[list[str]], stream: bool,
                 kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        kwargs = dict(kwargs)
        tools, choice = check_tool_choice(kwargs.pop("tool_choice", None), kwargs.pop("tools", None))
        cfg = generate_config(self.generate_config, stop, **kwargs)
        if choice is not None:     # the handle constrains the reply to a call (of the named tool)
            cfg["tool_choice"] = choice
        if stream:
            cfg["stream"] = True
        call = {"messages": convert_to_openai_messages(messages), "tools": tools or None, "generate_config": cfg}
        if self.enable_thinking is not None:
            call["enable_thinking"] = self.enable_thinking
        return self._model(), call

    @staticmethod
    def _result(result: dict[str, Any]) -> ChatResult:
        choice = first_choice(result)
        message = choice.get("message") or {}
        extra = {}
        if message.get("reasoning_content") is not None:
            extra["reasoning_content"] = message["reasoning_content"]
        if message.get("parsed") is not None:   # a response_format's value (as ChatOpenAI keeps it)
            extra["parsed"] = message["parsed"]
        ai = AIMessage(content=message.get("content") or "", tool_calls=_tool_calls(message.get("tool_calls")),
                       additional_kwargs=extra, usage_metadata=_usage_metadata(result.get("usage")),
                       response_metadata={"finish_reason": choice.get("finish_reason"),
                                          "model_name": result.get("model")}, id=result.get("id"))
        return ChatResult(generations=[ChatGeneration(message=ai, generation_info={
            "finish_reason": choice.get("finish_reason")})], llm_output={"model_uid": result.get("model")})

    @staticmethod
    def _chunk(chunk: dict[str, Any]) -> ChatGenerationChunk:
        choice, delta = first_choice(chunk), chunk_delta(chunk)
        extra = {}
        if delta.get("reasoning_content"):
            extra["reasoning_content"] = delta["reasoning_content"]
        pieces = [{"name": (c.get("function") or {}).get("name"), "args": _args_text(c), "id": c.get("id"),
                   "index": c.get("index", i), "type": "tool_call_chunk"}
                  for i, c in enumerate(delta.get("tool_calls") or [])]
        finish = choice.get("finish_reason")
        message = AIMessageChunk(content=delta.get("content") or "", additional_kwargs=extra,
                                 tool_call_chunks=pieces, usage_metadata=_usage_metadata(chunk.get("usage")),
                                 response_metadata={"finish_reason": finish} if finish else {})
        return ChatGenerationChunk(message=message, generation_info={"finish_reason": finish} if finish else None)

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        handle, call = self._request(messages, stop, False, kwargs)
        return self._result(handle.chat(**call))

    def _stream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        handle, call = self._request(messages, stop, True, kwargs)
        it = check_stream(handle.chat(**call), "chat")
        try:
            for raw in it:
                chunk = self._chunk(raw)
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close:
                close()

    async def _agenerate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                         run_manager: Optional[AsyncCallbackManagerForLLMRun] = None, **kwargs: Any) -> ChatResult:
        def call() -> dict[str, Any]:
            handle, request = self._request(messages, stop, False, kwargs)
            return handle.chat(**request)

        def start() -> Iterator[dict[str, Any]]:   # a stream underneath: a cancelled await stops generation
            handle, request = self._request(messages, stop, False, kwargs)
            request["generate_config"] = as_stream(request["generate_config"])
            return check_stream(handle.chat(**request), "chat")

        if check_tool_choice(kwargs.get("tool_choice"), kwargs.get("tools"))[0]:   # non-stream: see the module doc
            return self._result(await call_in_thread_cancellable(call))
        return self._result(await gather_stream(start, "chat"))

    async def _astream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                       run_manager: Optional[AsyncCallbackManagerForLLMRun] = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        def start() -> Iterator[dict[str, Any]]:
            handle, request = self._request(messages, stop, True, kwargs)
            return check_stream(handle.chat(**request), "chat")

        async for raw in aiter_in_thread(start):
            chunk = self._chunk(raw)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


STRUCTURED_METHODS = ("json_schema", "function_calling", "json_mode")


def _is_model(schema: Any) -> bool:
    from langchain_core.utils.pydantic import is_basemodel_subclass

    return isinstance(schema, type) and is_basemodel_subclass(schema)


def _json_schema_of(schema: Any) -> tuple[str, dict[str, Any]]:
    """(name, JSON schema) of a pydantic class, a JSON schema (with a "title"), an OpenAI tool or a TypedDict."""
    if _is_model(schema):
        from ..chat.structured import model_schema

        return schema.__name__, model_schema(schema)
    from langchain_core.utils.function_calling import convert_to_json_schema

    js = convert_to_json_schema(schema)
    return str(js.get("title") or "output"), js


def _parse_reply(schema: Any, name: str, message: BaseMessage) -> Any:
    """The reply's JSON as ``schema`` (a pydantic instance for a class, else a dict); an
    OutputParserException saying why when it is not (max_tokens reached inside the structure...)."""
    import json

    from langchain_core.exceptions import OutputParserException

    text = message.content if isinstance(message.content, str) else message.text
    try:
        return schema.model_validate_json(text) if _is_model(schema) else json.loads(text)
    except Exception as exc:  # noqa: BLE001 - pydantic's or json's error, reported with the reply
        cut = message.response_metadata.get("finish_reason") == "length"
        why = " (the reply hit max_tokens before the structure completed: raise max_tokens)" if cut else ""
        raise OutputParserException(f"the reply is not valid for {name}{why}: {type(exc).__name__}: {exc}",
                                    llm_output=text) from None


def _structured_output(model: "XinfChatModel", schema: Any, include_raw: bool, method: str,
                       strict: Optional[bool]) -> Runnable[LanguageModelInput, Any]:
    """``XinfChatModel.with_structured_output``: the bound model piped into the parser of ``method``."""
    from functools import partial
    from operator import itemgetter

    from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
    from langchain_core.runnables import RunnableLambda, RunnableMap, RunnablePassthrough

    if method not in STRUCTURED_METHODS:
        raise InferenceError(f"method={method!r:.60} is not one of {', '.join(map(repr, STRUCTURED_METHODS))}")
    if schema is None and method != "json_mode":
        raise InferenceError(f"with_structured_output(method={method!r}) needs a schema (a pydantic class, a JSON "
                             "schema, an OpenAI tool or a TypedDict)")
    traced = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}}
    if method == "function_calling":
        tool = convert_to_openai_tool(schema, strict=strict)
        name = tool["function"]["name"]
        llm = model.bind_tools([tool], tool_choice=name, parallel_tool_calls=False, **traced)
        parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if _is_model(schema)
                            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    else:
        name, js = _json_schema_of(schema) if schema is not None else ("a JSON object", None)
        spec = {"name": name, "schema": js, **({} if strict is None else {"strict": strict})}
        fmt = {"type": "json_schema", "json_schema": spec} if method == "json_schema" else {"type": "json_object"}
        llm = model.bind(response_format=fmt, **traced)
        parser = RunnableLambda(partial(_parse_reply, schema if _is_model(schema) else None, name))
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def _args_text(call: dict[str, Any]) -> Optional[str]:
    import json

    args = (call.get("function") or {}).get("arguments")
    return json.dumps(args, ensure_ascii=False) if isinstance(args, dict) else args


class XinfEmbeddings(Embeddings):
    """LangChain embeddings over a launched embedding model (``model_uid``) of ``client``."""

    def __init__(self, model_uid: str, client: Any = None, **create_kwargs: Any):
        self.model_uid = model_uid
        self.client = client
        self.create_kwargs = create_kwargs
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"XinfEmbeddings(model_uid={self.model_uid!r})"

    def _model(self) -> Any:
        return cached_handle(self, "create_embedding")

    def _embed(self, texts: Union[str, list[str]]) -> list[list[float]]:
        result = self._model().create_embedding(texts, **self.create_kwargs)
        return [list(map(float, d["embedding"])) for d in sorted(result["data"], key=lambda d: d["index"])]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in one call to the model."""
        return self._embed(list(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
