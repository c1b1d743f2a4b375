"""Handles: what ``client.get_model(uid)`` returns, with the method names of Xinference's client.

A handle holds only the manager and the uid: every call looks the running model up (a clear
``ModelNotFound`` once it was terminated) and marks it as recently used (LRU eviction, idle TTL).
LLM handles run chat logic from chat/__init__.py on top of an engine's ``ChatLLM``; the other handles forward
to the engine model's method of the same name, arguments and result unchanged.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from ..chat import (
    ChatLLM,
    ReasoningSplitter,
    StopFilter,
    chat_chunk,
    chat_message,
    chat_result,
    completion_chunk,
    completion_result,
    cut_at_stop,
    new_id,
    parse_generate_config,
    split_reasoning,
    usage,
    validate_messages,
    validate_tools,
)
from ..chat.images import take_images
from ..errors import InferenceError
from ..progress import map_in_order
from ..protocols import SpeechToTextMethods
from ..chat.tool_parsers import ToolCallStream

if TYPE_CHECKING:  # pragma: no cover
    from ..manager import ModelManager


class ModelHandle:
    """Base handle: ``model_uid``, ``model_type`` and access to the running model."""

    model_type: str = ""

    def __init__(self, manager: "ModelManager", model_uid: str, model_type: Optional[str] = None):
        self._manager = manager
        self.model_uid = model_uid
        if model_type:
            self.model_type = model_type

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model_uid={self.model_uid!r}>"

    def _use(self):
        """Context manager: the engine model, marked busy and recently used for the call."""
        return self._manager.use_model(self.model_uid)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._use() as model:
            fn = getattr(model, method, None)
            if fn is None:
                raise InferenceError(f"model {self.model_uid!r} ({self.model_type}) cannot {method}: its engine "
                                     f"{type(model).__name__} has no such ability")
            return fn(*args, **kwargs)

    def describe(self) -> dict[str, Any]:
        return self._manager.describe_model(self.model_uid)


# ----------------------------------------------------------------------------------------------
# LLM
# ----------------------------------------------------------------------------------------------

Messages = Union[str, list[dict[str, Any]]]


def check_batch(items: Any, what: str, generate_config: Optional[dict[str, Any]], progress: Any
                ) -> tuple[list[Any], dict[str, Any]]:
    """The argument checks of ``chat_batch`` / ``generate_batch`` (in-kernel and remote): a list of
    inputs, a generate_config without streaming, a boolean ``progress``."""
    if not isinstance(items, (list, tuple)):
        raise InferenceError(f"{what} must be a list, got {type(items).__name__} {items!r:.60}")
    if not isinstance(progress, bool):
        raise InferenceError(f"progress must be true or false, got {type(progress).__name__} {progress!r:.60}")
    if generate_config is not None and not isinstance(generate_config, dict):
        raise InferenceError(f"generate_config must be a dict or None, got {type(generate_config).__name__}")
    cfg = dict(generate_config or {})
    if cfg.get("stream"):
        raise InferenceError("generate_config['stream'] is not accepted by the batch methods: they return one "
                             "result per input; use chat()/generate() with stream=True to stream one")
    return list(items), cfg


BATCH_WORKERS = 16   # calls in flight at once from a batch method (the default max_num_seqs)


class LLMHandle(ModelHandle):
    """``generate(prompt, generate_config)`` and ``chat(messages, tools, enable_thinking, generate_config)``,
    and their batch forms ``generate_batch`` / ``chat_batch`` (results in order, with a progress bar)."""

    model_type = "LLM"

    def _llm(self) -> ChatLLM:
        model = self._manager.engine_model(self.model_uid)
        if not isinstance(model, ChatLLM):
            raise InferenceError(f"model {self.model_uid!r} is not a chat/generate LLM")
        return model

    def _abilities(self, model: ChatLLM) -> tuple[str, ...]:
        """The model's abilities: its registration's model_ability, else its engine's."""
        declared = getattr(self._manager.running_model(self.model_uid).spec, "model_ability", None)
        return tuple(declared) if declared else tuple(getattr(model, "abilities", ()) or ())

    # ------------------------------------------------------------------ generate
    def generate(self, prompt: str, generate_config: Optional[dict[str, Any]] = None
                 ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]:
        """A completion for ``prompt`` (an iterator of chunks with ``{"stream": True}``)."""
        if not isinstance(prompt, str):
            raise InferenceError(f"prompt must be a string, got {type(prompt).__name__}")
        model = self._llm()
        params, stream = parse_generate_config(generate_config, model.chat_format)
        if stream:
            return self._generate_stream(prompt, params)
        with self._use() as model:
            res = model.complete(prompt, params)
        text, hit = cut_at_stop(res.text, params.stop)
        return completion_result(self.model_uid, text, "stop" if hit else res.finish_reason, res.prompt_tokens,
                                 res.completion_tokens)

    def _generate_stream(self, prompt: str, params) -> Iterator[dict[str, Any]]:
        cid, created, uid = new_id("cmpl"), int(time.time()), self.model_uid
        with self._use() as model:
            tokens = model.stream(prompt, params)
            finish = None
            try:
                stop = StopFilter(params.stop)
                for delta in tokens:
                    safe, hit = stop.feed(delta)
                    if safe:
                        yield completion_chunk(cid, created, uid, safe)
                    if hit:
                        finish = "stop"
                        tokens.close()
                        break
                else:
                    tail = stop.flush()
                    if tail:
                        yield completion_chunk(cid, created, uid, tail)
            finally:
                tokens.close()
            yield completion_chunk(cid, created, uid, "", finish or tokens.finish_reason,
                                   usage(tokens.prompt_tokens, tokens.completion_tokens) if params.include_usage
                                   else None)

    # ------------------------------------------------------------------ batches
    def _workers(self, model: ChatLLM) -> int:
        return max(1, int(getattr(model, "max_num_seqs", 1) or 1))

    def generate_batch(self, prompts: list[str], generate_config: Optional[dict[str, Any]] = None,
                       progress: bool = True) -> list[dict[str, Any]]:
        """``[generate(p, generate_config) for p in prompts]``, run together (the engine batches them
        into shared forward passes), results in order, with a progress bar."""
        prompts, cfg = check_batch(prompts, "prompts", generate_config, progress)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise InferenceError(f"prompts[{i}] must be a string, got {type(p).__name__}")
        model = self._llm()
        parse_generate_config(cfg, model.chat_format)
        return map_in_order(lambda p: self.generate(p, cfg), prompts, workers=self._workers(model),
                            progress=progress, desc=f"generate {self.model_uid}")

    def chat_batch(self, messages_list: list[Messages], generate_config: Optional[dict[str, Any]] = None,
                   progress: bool = True) -> list[dict[str, Any]]:
        """``[chat(m, generate_config=generate_config) for m in messages_list]``, run together (the
        engine batches them into shared forward passes), results in order, with a progress bar."""
        items, cfg = check_batch(messages_list, "messages_list", generate_config, progress)
        model = self._llm()
        abilities = self._abilities(model)
        for i, messages in enumerate(items):
            try:
                validate_messages(messages, model_uid=self.model_uid, abilities=abilities, media=model.abilities)
            except InferenceError as exc:
                raise InferenceError(f"messages_list[{i}]: {exc}") from None
        parse_generate_config(cfg, model.chat_format)
        return map_in_order(lambda m: self.chat(m, generate_config=cfg), items, workers=self._workers(model),
                            progress=progress, desc=f"chat {self.model_uid}")

    # ------------------------------------------------------------------ chat
    def chat(self, messages: Messages, tools: Optional[list[dict[str, Any]]] = None,
             enable_thinking: Optional[bool] = None, generate_config: Optional[dict[str, Any]] = None
             ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]:
        """An OpenAI chat completion for ``messages`` (an iterator of chunks with ``{"stream": True}``)."""
        model = self._llm()
        messages = validate_messages(messages, model_uid=self.model_uid, abilities=self._abilities(model),
                                     media=model.abilities)
        messages, images = take_images(messages)   # image parts → template placeholders + decoded images
        media = {"images": images} if images else {}
        tools = validate_tools(tools)
        if enable_thinking is not None and not isinstance(enable_thinking, bool):
            raise InferenceError(f"enable_thinking must be true, false or None, got {type(enable_thinking).__name__} "
                                 f"{enable_thinking!r:.60}")
        fmt = model.chat_format
        params, stream = parse_generate_config(generate_config, fmt)
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        prompt = fmt.render(messages, tools=tools, add_generation_prompt=True, **extra)
        opened = fmt.reasoning_opened_by(prompt)
        use_tools = bool(tools) and fmt.tool_parser is not None
        if use_tools:   # the markers of many tool-call formats are special tokens
            params = dataclasses.replace(params, keep_special_tokens=True)
        if stream:
            return self._chat_stream(prompt, params, opened, tools if use_tools else None, media)
        with self._use() as model:
            res = model.complete(prompt, params, chat=True, **media)
        text, hit = cut_at_stop(res.text, params.stop)
        finish = "stop" if hit else res.finish_reason
        reasoning = None
        if fmt.has_reasoning:
            reasoning, text = split_reasoning(text, fmt.reasoning_start_tag, fmt.reasoning_end_tag, opened)
        content: Optional[str] = text
        calls: list = []
        if use_tools:
            content, calls = fmt.tool_parser.parse(text, tools)  # type: ignore[union-attr]
            if calls:
                finish = "tool_calls"
        message = chat_message(content, reasoning, calls, with_reasoning=fmt.has_reasoning)
        return chat_result(self.model_uid, message, finish, res.prompt_tokens, res.completion_tokens)

    def _chat_stream(self, prompt: str, params, opened: bool, tools: Optional[list], media: Optional[dict] = None
                     ) -> Iterator[dict[str, Any]]:
        cid, created, uid = new_id("chatcmpl"), int(time.time()), self.model_uid
        with self._use() as model:
            fmt = model.chat_format
            yield chat_chunk(cid, created, uid, {"role": "assistant", "content": ""})
            tokens = model.stream(prompt, params, chat=True, **(media or {}))
            splitter = (ReasoningSplitter(fmt.reasoning_start_tag, fmt.reasoning_end_tag, opened)  # type: ignore
                        if fmt.has_reasoning else None)
            # tools: the request's, when the model has a tool parser (content streams until a call starts)
            hold = ToolCallStream(fmt.tool_parser, tools) if tools else None  # type: ignore[arg-type]
            stop = StopFilter(params.stop)
            finish = None

            def pieces(text: str, final: bool = False):
                parts = [("content", text)] if splitter is None else splitter.feed(text)
                if final and splitter is not None:
                    parts += splitter.flush()
                for kind, piece in parts:
                    if kind == "content" and hold is not None:
                        piece = hold.feed(piece)
                    if piece:
                        yield chat_chunk(cid, created, uid, {kind: piece})
                if final and hold is not None:
                    tail = hold.flush()
                    if tail:
                        yield chat_chunk(cid, created, uid, {"content": tail})

            try:
                for delta in tokens:
                    safe, hit = stop.feed(delta)
                    yield from pieces(safe)
                    if hit:
                        finish = "stop"
                        tokens.close()
                        break
                yield from pieces(stop.flush(), final=True)
            finally:
                tokens.close()
            finish = finish or tokens.finish_reason
            if hold is not None and hold.held is not None:
                leftover, calls = hold.finish()
                if leftover:
                    yield chat_chunk(cid, created, uid, {"content": leftover})
                if calls:
                    finish = "tool_calls"
                    yield chat_chunk(cid, created, uid, {"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]})
            yield chat_chunk(cid, created, uid, {}, finish, usage(tokens.prompt_tokens, tokens.completion_tokens)
                             if params.include_usage else None)


# ----------------------------------------------------------------------------------------------
# The other model types: forward to the engine model, unchanged
# ----------------------------------------------------------------------------------------------

class EmbeddingHandle(ModelHandle):
    model_type = "embedding"

    def create_embedding(self, input: Any, **kwargs: Any) -> Any:  # noqa: A002 - Xinference's name
        return self._call("create_embedding", input, **kwargs)

    def convert_ids_to_tokens(self, input: Any, **kwargs: Any) -> Any:  # noqa: A002
        return self._call("convert_ids_to_tokens", input, **kwargs)


class RerankHandle(ModelHandle):
    model_type = "rerank"

    def rerank(self, documents: list[str], query: str, top_n: Optional[int] = None,
               max_chunks_per_doc: Optional[int] = None, return_documents: Optional[bool] = None,
               return_len: Optional[bool] = None, **kwargs: Any) -> Any:
        return self._call("rerank", documents, query, top_n=top_n, max_chunks_per_doc=max_chunks_per_doc,
                          return_documents=return_documents, return_len=return_len, **kwargs)


class ImageHandle(ModelHandle):
    model_type = "image"

    def text_to_image(self, prompt: str, n: int = 1, size: str = "1024*1024", response_format: str = "url",
                      **kwargs: Any) -> Any:
        return self._call("text_to_image", prompt, n=n, size=size, response_format=response_format, **kwargs)

    def image_to_image(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("image_to_image", *args, **kwargs)

    def inpainting(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("inpainting", *args, **kwargs)


class AudioHandle(SpeechToTextMethods, ModelHandle):
    model_type = "audio"

    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Any:
        return self._call("speech", input, voice=voice, response_format=response_format, speed=speed,
                          stream=stream, **kwargs)

    def _recognize(self, method: str, audio: bytes, language: Optional[str], prompt: Optional[str],
                   response_format: str, temperature: float, timestamp_granularities: Optional[list[str]]) -> Any:
        return self._call(method, audio, language=language, prompt=prompt, response_format=response_format,
                          temperature=temperature, timestamp_granularities=timestamp_granularities)


class FlexibleHandle(ModelHandle):
    model_type = "flexible"

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("infer", *args, **kwargs)


def new_handle(manager: "ModelManager", model_uid: str, model_type: str) -> ModelHandle:
    """The handle class the model-type table names for ``model_type`` (FlexibleHandle for an unknown type)."""
    from ..model_types import find_model_type

    row = find_model_type(model_type)
    cls: type[ModelHandle] = globals()[row.handle] if row is not None else FlexibleHandle
    return cls(manager, model_uid, model_type)


def handle_of(manager: "ModelManager", model_uid: str) -> ModelHandle:
    """The handle of the running model ``model_uid`` of ``manager`` (marked recently used): what
    ``Client().get_model(uid)`` returns; ModelNotFound, saying why, when it is not running."""
    entry = manager.running_model(model_uid)
    entry.last_used = time.time()
    return new_handle(manager, model_uid, entry.model_type)
