"""LlamaIndex classes over a launched model, in this kernel or behind ``Client(url)``::

    from xinference_nb.integrations.llamaindex import XinfLLM, XinfEmbedding

    llm = XinfLLM(model_uid="my-llm")                          # in-kernel
    llm = XinfLLM(model_uid="my-llm", client=Client(url))      # our server or Xinference
    Settings.embed_model = XinfEmbedding(model_uid="my-minilm", client=client)

``XinfLLM`` is a ``FunctionCallingLLM``: ``chat`` / ``complete`` and their ``stream_`` forms, tools
(``chat_with_tools``, ``predict_and_call``, agents; ``tool_required=True`` or a ``tool_choice`` forces
the call, its arguments valid for the tool's schema), structured prediction (``structured_predict``,
``as_structured_llm``: LlamaIndex's FunctionCallingProgram, a forced call of the output class), and the
``a``-prefixed async forms, which run the blocking call on a worker thread so the kernel's event loop
never blocks (as a stream underneath: cancelling the await stops generation; but ``achat`` with tools
makes the non-stream call, as Xinference parses tool calls only in non-stream answers: cancelling it
stops an in-kernel model at its next token, while a remote server finishes that answer).
``XinfEmbedding`` is a ``BaseEmbedding`` (one model call per batch). Needs ``pip install
"xinference-nb[llamaindex]"`` (llama-index-core).
"""
from __future__ import annotations

from ._common import require

require("llama_index.core", "llama-index-core", "llamaindex")

import asyncio  # noqa: E402
from typing import Any, Optional, Sequence, Union  # noqa: E402

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback  # noqa: E402
from llama_index.core.llms.function_calling import FunctionCallingLLM  # noqa: E402
from llama_index.core.llms.llm import ToolSelection  # noqa: E402

from ..chat import chunk_delta, first_choice  # noqa: E402
from ..errors import InferenceError  # noqa: E402
from ._common import (  # noqa: E402
    ToolCallAccumulator,
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

__all__ = ["XinfLLM", "XinfEmbedding"]

_PASSED = ("tools", "tool_choice")   # chat keyword arguments that are not generate_config keys


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as OpenAI messages (tool calls and tool results included)."""
    out = []
    for m in messages:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        if role == "chatbot":
            role = "assistant"
        if role == "model":
            role = "assistant"
        item: dict[str, Any] = {"role": role, "content": m.content or ""}
        calls = m.additional_kwargs.get("tool_calls")
        if calls:
            item["tool_calls"] = [c if isinstance(c, dict) else c.model_dump() for c in calls]
        if m.additional_kwargs.get("tool_call_id"):
            item["tool_call_id"] = m.additional_kwargs["tool_call_id"]
        if m.additional_kwargs.get("name"):
            item["name"] = m.additional_kwargs["name"]
        out.append(item)
    return out


def _message(content: Optional[str], calls: Optional[list], reasoning: Optional[str] = None) -> ChatMessage:
    extra: dict[str, Any] = {}
    if calls:
        extra["tool_calls"] = calls
    if reasoning:
        extra["reasoning_content"] = reasoning
    return ChatMessage(role=MessageRole.ASSISTANT, content=content or "", additional_kwargs=extra)


def _openai_tool(tool: Any) -> dict[str, Any]:
    """``tool`` as an OpenAI tool, its parameters the schema a pydantic ``fn_schema`` generates with
    (``chat.structured.model_schema``: objects closed to other keys, as OpenAI's strict mode; LlamaIndex's
    ``to_openai_tool`` drops ``additionalProperties``): a forced call's arguments (tool_choice) then have
    no keys the tool does not take."""
    from ..chat.structured import is_pydantic_model, model_schema

    spec = tool.metadata.to_openai_tool()
    fn_schema = getattr(tool.metadata, "fn_schema", None)
    if is_pydantic_model(fn_schema):
        spec["function"]["parameters"] = model_schema(fn_schema)
    return spec


class XinfLLM(FunctionCallingLLM):
    """A LlamaIndex LLM over a launched LLM (``model_uid``) of ``client`` (``Client()`` when None)."""

    model_uid: str = Field(description="The uid of a launched LLM.")
    client: Any = Field(default=None, exclude=True,
                        description="Client() (None: in-kernel), Client('http://host:port') or the endpoint URL.")
    generate_config: dict[str, Any] = Field(default_factory=dict,
                                            description="Defaults for every call: max_tokens, temperature...")
    context_window: Optional[int] = Field(default=None, description="None: the model's context_length.")
    num_output: int = Field(default=256, description="What LlamaIndex reserves for the answer (and the default "
                                                     "max_tokens when generate_config has none).")

    _handle: Any = PrivateAttr(default=None)
    _description: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "XinfLLM"

    def _model(self) -> Any:
        return cached_handle(self, "chat")

    def _describe(self) -> dict[str, Any]:
        if self._description is None:
            self._description = self._model().describe()
        return self._description

    @property
    def metadata(self) -> LLMMetadata:
        desc = self._describe()
        abilities = desc.get("model_ability") or []
        return LLMMetadata(context_window=int(self.context_window or desc.get("context_length") or 2048),
                           num_output=self.num_output, is_chat_model="chat" in abilities or not abilities,
                           is_function_calling_model=True, model_name=self.model_uid)

    def _config(self, kwargs: dict[str, Any], stream: bool) -> dict[str, Any]:
        cfg = generate_config({"max_tokens": self.num_output, **self.generate_config},
                              **{k: v for k, v in kwargs.items() if k not in _PASSED})
        if stream:
            cfg["stream"] = True
        return cfg

    def _chat_call(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], stream: bool,
                   gathered: bool = False) -> Any:
        """``chat``; ``gathered``: a non-stream call made as a stream (``gather_stream``)."""
        tools, choice = check_tool_choice(kwargs.get("tool_choice"), kwargs.get("tools"))
        cfg = as_stream(self._config(kwargs, False)) if gathered else self._config(kwargs, stream)
        if choice is not None:   # "required" or a named tool: the handle constrains the reply to the call
            cfg["tool_choice"] = choice
        return self._model().chat(to_openai_messages(messages), tools=tools or None, generate_config=cfg)

    @staticmethod
    def _chat_response(result: dict[str, Any]) -> ChatResponse:
        msg = first_choice(result).get("message") or {}
        return ChatResponse(message=_message(msg.get("content"), msg.get("tool_calls"), msg.get("reasoning_content")),
                            raw=result, additional_kwargs={"usage": result.get("usage")})

    @staticmethod
    def _chat_stream(chunks: Any):
        """(ChatResponse per chunk) as a generator over an iterator of chunks."""
        text, calls = "", ToolCallAccumulator()
        for chunk in chunks:
            delta = chunk_delta(chunk)
            piece = delta.get("content") or ""
            text += piece
            calls.add(delta.get("tool_calls"))
            yield ChatResponse(message=_message(text, calls.calls or None), delta=piece, raw=chunk)

    # ------------------------------------------------------------------ sync
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(self._chat_call(messages, kwargs, stream=False))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._chat_stream(check_stream(self._chat_call(messages, kwargs, stream=True), "chat"))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self._model().generate(prompt, generate_config=self._config(kwargs, stream=False))
        return CompletionResponse(text=first_choice(result).get("text") or "", raw=result)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        chunks = check_stream(self._model().generate(prompt, generate_config=self._config(kwargs, stream=True)),
                              "generate")

        def gen() -> CompletionResponseGen:
            text = ""
            for chunk in chunks:
                piece = first_choice(chunk).get("text") or ""
                text += piece
                yield CompletionResponse(text=text, delta=piece, raw=chunk)

        return gen()

    # ------------------------------------------------------------------ async: the blocking work on a thread
    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if kwargs.get("tools"):   # the non-stream call (Xinference parses tool calls only there): module doc
            return self._chat_response(await call_in_thread_cancellable(
                lambda: self._chat_call(messages, kwargs, stream=False)))
        # a stream underneath, gathered: a cancelled await closes it and generation stops
        result = await gather_stream(lambda: check_stream(self._chat_call(messages, kwargs, True, gathered=True),
                                                          "chat"), "chat")
        return self._chat_response(result)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            text, calls = "", ToolCallAccumulator()
            async for chunk in aiter_in_thread(lambda: check_stream(self._chat_call(messages, kwargs, True), "chat")):
                delta = chunk_delta(chunk)
                piece = delta.get("content") or ""
                text += piece
                calls.add(delta.get("tool_calls"))
                yield ChatResponse(message=_message(text, calls.calls or None), delta=piece, raw=chunk)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        cfg = as_stream(self._config(kwargs, stream=False))   # a stream underneath, as achat
        result = await gather_stream(lambda: check_stream(self._model().generate(prompt, generate_config=cfg),
                                                          "generate"), "generate")
        return CompletionResponse(text=first_choice(result).get("text") or "", raw=result)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any
                               ) -> CompletionResponseAsyncGen:
        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            cfg = self._config(kwargs, stream=True)
            async for chunk in aiter_in_thread(lambda: check_stream(self._model().generate(prompt, generate_config=cfg),
                                                                    "generate")):
                piece = first_choice(chunk).get("text") or ""
                text += piece
                yield CompletionResponse(text=text, delta=piece, raw=chunk)

        return gen()

    # ------------------------------------------------------------------ tools
    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: Optional[Union[str, ChatMessage]] = None,
                                 chat_history: Optional[list[ChatMessage]] = None, verbose: bool = False,
                                 allow_parallel_tool_calls: bool = False, tool_required: bool = False,
                                 tool_choice: Any = None, **kwargs: Any) -> dict[str, Any]:
        """The chat call for ``chat_with_tools`` / ``predict_and_call`` (and so ``structured_predict``,
        ``as_structured_llm``: a call of the output class as a tool, ``tool_required=True``):
        ``tool_required`` or a ``tool_choice`` ("required", a tool's name) constrains the reply to a
        call whose arguments follow the tool's schema, one call unless ``allow_parallel_tool_calls``."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        openai_tools = [_openai_tool(t) for t in tools] or None
        if tool_choice is None and tool_required:
            tool_choice = "required"
        _, choice = check_tool_choice(tool_choice, openai_tools)
        call = {"messages": messages, "tools": openai_tools, **kwargs}
        if choice is not None:
            call["tool_choice"] = choice
            if not allow_parallel_tool_calls:
                call["parallel_tool_calls"] = False
        elif tool_choice is not None:
            call["tool_choice"] = tool_choice      # "none" / "auto", read again by _chat_call
        return call

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True,
                                     **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise InferenceError(f"the model answered without a tool call: {response.message.content!r:.200}")
        return [ToolSelection(tool_id=c.get("id") or f"call_{i}", tool_name=c["function"]["name"],
                              tool_kwargs=parse_arguments(c["function"].get("arguments")))
                for i, c in enumerate(calls)]


class XinfEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model over a launched embedding model (``model_uid``) of ``client``."""

    model_uid: str = Field(description="The uid of a launched embedding model.")
    client: Any = Field(default=None, exclude=True,
                        description="Client() (None: in-kernel), Client('http://host:port') or the endpoint URL.")

    _handle: Any = PrivateAttr(default=None)

    def __init__(self, model_uid: str, client: Any = None, **kwargs: Any):
        kwargs.setdefault("model_name", model_uid)
        super().__init__(model_uid=model_uid, client=client, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "XinfEmbedding"

    def _model(self) -> Any:
        return cached_handle(self, "create_embedding")

    def _embed(self, texts: Union[str, list[str]]) -> list[list[float]]:
        result = self._model().create_embedding(texts)
        return [list(map(float, d["embedding"])) for d in sorted(result["data"], key=lambda d: d["index"])]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(list(texts)) if texts else []

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
