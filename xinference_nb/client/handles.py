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
    GenerateConfig,
    first_choice,
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
from ..chat.choices import (chat_logprobs, choice_params, completion_logprobs, merge_results, merge_streams,
                            parsed_fields, trim_logprobs)
from ..chat.images import take_images
from ..chat.structured import parse_reply, tool_call_constraint
from ..errors import InferenceError
from ..progress import map_in_order
from ..protocols import SpeechToTextMethods
from ..chat.tool_parsers import ToolCallStream, tool_call_shape

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
        """A completion for ``prompt`` (an iterator of chunks with ``{"stream": True}``); ``n``
        choices, ``logprobs`` (the legacy completions shape) and the sampling keys of
        ``chat.GenerateConfig``. Tools, tool_choice and response_format belong to ``chat``... except
        the guided_* / response_format constraints, which apply to a completion too."""
        if not isinstance(prompt, str):
            raise InferenceError(f"prompt must be a string, got {type(prompt).__name__}")
        model = self._llm()
        config = GenerateConfig.check(generate_config)
        _refuse_chat_only(config)
        params, stream = config.to_sampling_params(model.chat_format)
        each = choice_params(params, config.n or 1)
        if stream:
            return merge_streams([self._generate_stream(prompt, p) for p in each], params.include_usage)
        return merge_results(_run_choices(lambda p: self._generate_once(prompt, p), each))

    def _generate_once(self, prompt: str, params) -> dict[str, Any]:
        with self._use() as model:
            res = model.complete(prompt, params)
        text, hit = cut_at_stop(res.text, params.stop)
        result = completion_result(self.model_uid, text, "stop" if hit else res.finish_reason, res.prompt_tokens,
                                   res.completion_tokens)
        first_choice(result)["logprobs"] = completion_logprobs(trim_logprobs(res.logprobs, text))
        return result

    def _generate_stream(self, prompt: str, params) -> Iterator[dict[str, Any]]:
        cid, created, uid = new_id("cmpl"), int(time.time()), self.model_uid
        with self._use() as model:
            tokens = model.stream(prompt, params)
            finish, sent, offset = None, 0, 0

            def chunk(text: str, *args: Any) -> dict[str, Any]:
                nonlocal sent, offset
                out = completion_chunk(cid, created, uid, text, *args)
                if params.logprobs and tokens.logprobs is not None:
                    new = tokens.logprobs[sent:]
                    sent += len(new)
                    first_choice(out)["logprobs"] = completion_logprobs(new, offset)
                    offset += sum(len(e["token"]) for e in new)
                return out
            try:
                stop = StopFilter(params.stop)
                for delta in tokens:
                    safe, hit = stop.feed(delta)
                    if safe:
                        yield chunk(safe)
                    if hit:
                        finish = "stop"
                        tokens.close()
                        break
                else:
                    tail = stop.flush()
                    if tail:
                        yield chunk(tail)
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
        with self._use():   # held across the batch: keep_alive=0 frees the weights once, at its end
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
        with self._use():   # held across the batch: keep_alive=0 frees the weights once, at its end
            return map_in_order(lambda m: self.chat(m, generate_config=cfg), items, workers=self._workers(model),
                                progress=progress, desc=f"chat {self.model_uid}")

    # ------------------------------------------------------------------ chat
    def chat(self, messages: Messages, tools: Optional[list[dict[str, Any]]] = None,
             enable_thinking: Optional[bool] = None, generate_config: Optional[dict[str, Any]] = None
             ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]:
        """An OpenAI chat completion for ``messages`` (an iterator of chunks with ``{"stream": True}``).
        ``generate_config`` takes the keys of ``chat.GenerateConfig``: sampling, ``n`` choices,
        ``logprobs`` / ``top_logprobs``, a structured output (``response_format``: a dict or a pydantic
        class; ``guided_*``), whose value is at ``choices[i]["message"]["parsed"]``, and ``tool_choice`` /
        ``parallel_tool_calls``."""
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
        config = GenerateConfig.check(generate_config)
        params, stream = config.to_sampling_params(fmt)
        tools, params, max_calls = _tool_choice(config, tools, params, fmt)
        extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
        prompt = fmt.render(messages, tools=tools, add_generation_prompt=True, **extra)
        opened = fmt.reasoning_opened_by(prompt)
        if params.constraint is not None and opened:   # the thinking stays free, the reply is constrained
            params = dataclasses.replace(params, constraint=dataclasses.replace(
                params.constraint, start_after=fmt.reasoning_end_tag))
        use_tools = bool(tools) and fmt.tool_parser is not None
        if use_tools:   # the markers of many tool-call formats are special tokens
            params = dataclasses.replace(params, keep_special_tokens=True)
        each = choice_params(params, config.n or 1)
        if stream:
            return merge_streams([self._chat_stream(prompt, p, opened, tools if use_tools else None, media, max_calls)
                                  for p in each], params.include_usage)
        return merge_results(_run_choices(lambda p: self._chat_once(prompt, p, opened, tools if use_tools else None,
                                                                    media, max_calls), each))

    def _chat_once(self, prompt: str, params, opened: bool, tools: Optional[list], media: dict,
                   max_calls: Optional[int] = None) -> dict[str, Any]:
        with self._use() as model:
            fmt = model.chat_format
            res = model.complete(prompt, params, chat=True, **media)
        text, hit = cut_at_stop(res.text, params.stop)
        finish = "stop" if hit else res.finish_reason
        reasoning = None
        entries = trim_logprobs(res.logprobs, text)
        if fmt.has_reasoning:
            reasoning, text = split_reasoning(text, fmt.reasoning_start_tag, fmt.reasoning_end_tag, opened)
        content: Optional[str] = text
        calls: list = []
        if tools:
            content, calls = fmt.tool_parser.parse(text, tools)  # type: ignore[union-attr]
            calls = calls[:max_calls] if max_calls else calls   # parallel_tool_calls=false: the first call
            if calls:
                finish = "tool_calls"
        message = chat_message(content, reasoning, calls, with_reasoning=fmt.has_reasoning)
        parsed_fields(message, params.constraint, finish, parse_reply)
        result = chat_result(self.model_uid, message, finish, res.prompt_tokens, res.completion_tokens)
        first_choice(result)["logprobs"] = chat_logprobs(entries)
        return result

    def _chat_stream(self, prompt: str, params, opened: bool, tools: Optional[list], media: Optional[dict] = None,
                     max_calls: Optional[int] = None) -> Iterator[dict[str, Any]]:
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
            sent = 0

            def chunk(delta: dict[str, Any], *args: Any) -> dict[str, Any]:
                nonlocal sent
                out = chat_chunk(cid, created, uid, delta, *args)
                if params.logprobs and tokens.logprobs is not None:
                    new = tokens.logprobs[sent:]
                    sent += len(new)
                    first_choice(out)["logprobs"] = chat_logprobs(new)
                return out

            def pieces(text: str, final: bool = False):
                parts = [("content", text)] if splitter is None else splitter.feed(text)
                if final and splitter is not None:
                    parts += splitter.flush()
                for kind, piece in parts:
                    if kind == "content" and hold is not None:
                        piece = hold.feed(piece)
                    if piece:
                        yield chunk({kind: piece})
                if final and hold is not None:
                    tail = hold.flush()
                    if tail:
                        yield chunk({"content": tail})

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
                calls = calls[:max_calls] if max_calls else calls
                if leftover:
                    yield chunk({"content": leftover})
                if calls:
                    finish = "tool_calls"
                    yield chunk({"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]})
            yield chunk({}, finish, usage(tokens.prompt_tokens, tokens.completion_tokens)
                        if params.include_usage else None)

    # ------------------------------------------------------------------ map over a table
    def map(self, items: Any, prompt: Any = None, *, response_format: Any = None, system: Optional[str] = None,
            generate_config: Optional[dict[str, Any]] = None, cache: Any = False, progress: bool = True) -> Any:
        """Run a prompt over each row of ``items`` (a list of strings / dicts, a pandas Series, or a
        DataFrame: each row a dict of its columns), the rows together (continuous batching: as many at
        once as the model's ``max_num_seqs``), results in the rows' order, with a progress bar.

        ``prompt``: a template filled per row with ``str.format_map`` (``"Classify: {text}"``; a
        scalar row is ``{item}``, a Series' values also go by its name), a function of the row that
        returns a prompt or a messages list, or None (each row is the prompt). A placeholder a row
        lacks is an InferenceError naming it and the columns there are, before anything runs.
        ``system``: a system message put first. ``response_format``: a JSON schema form
        (``{"type": "json_schema", ...}``) or a pydantic class, enforced while decoding.

        Returns: for a list, a list (each reply's text, or its parsed value: a dict / pydantic
        instance, None where it did not parse, with a warning); for a Series or DataFrame, with a
        JSON schema a DataFrame of the parsed fields (one column per schema property, the input's
        index, NaN and an ``_error`` column where a row did not parse), else a Series of replies.

        Interrupting (or an error in one row) keeps the rows that finished: the same call again
        runs only the others. ``cache=True`` also keeps every row on disk under
        ``$XINFERENCE_NB_HOME/map_cache`` (or the folder given), keyed on the model (its files' sizes
        and mtimes included: a changed file is a miss), the row's messages, generate_config and
        the schema; a cached sampled row returns the same reply."""
        from .table import local_identity, run_map

        model = self._llm()
        with self._use():   # held across the rows: keep_alive=0 frees the weights once, at the end
            return run_map(self.chat, items, prompt, response_format=response_format, system=system,
                           generate_config=generate_config, cache=cache, progress=progress,
                           workers=self._workers(model), identity=lambda: local_identity(self._manager, self.model_uid),
                           owner=self._manager, name=self.model_uid,
                           check=lambda cfg: parse_generate_config(cfg, model.chat_format))


def _run_choices(fn: Any, each: list[Any]) -> list[dict[str, Any]]:
    """``[fn(p) for p in each]``, the choices at once (rows of one batch on a batching engine)."""
    if len(each) == 1:
        return [fn(each[0])]
    return map_in_order(fn, each, workers=len(each), progress=False)


def _refuse_chat_only(config: GenerateConfig) -> None:
    """generate(): a completion has no tools to choose."""
    for key in ("tool_choice", "parallel_tool_calls"):
        if key in config:
            raise InferenceError(f"generate_config[{key!r}] applies to chat() with tools; generate() has none")


def _tool_choice(config: GenerateConfig, tools: Optional[list], params, fmt
                 ) -> tuple[Optional[list], Any, Optional[int]]:
    """(the tools the template gets, the params, the most calls a reply keeps) after ``tool_choice`` / ``parallel_tool_calls``:
    "none" sends no tools; "required" or a named function constrains the reply to calls in the
    model's own format whose arguments follow the tool's parameters schema; parallel_tool_calls=false
    allows one call."""
    choice = config.tool_choice
    if (choice is not None or config.parallel_tool_calls is not None) and not tools:
        if choice not in (None, "none", "auto"):
            raise InferenceError(f"tool_choice={choice!r:.80} needs tools; the request has none")
        return tools, params, None
    if choice == "none":
        return None, params, None
    parallel = config.parallel_tool_calls is not False
    if choice in (None, "auto") and parallel:
        return tools, params, None
    parser = fmt.tool_parser
    forced = choice not in (None, "auto")   # else parallel_tool_calls=false: text, or the first call only
    if not forced:
        return tools, params, 1
    if params.constraint is not None:
        raise InferenceError(f"tool_choice={choice!r:.80} and {params.constraint.source} both constrain the reply; "
                             "send one of them")
    shape = tool_call_shape(parser)
    if shape is None:
        raise InferenceError(f"tool_choice={choice!r:.80} / parallel_tool_calls=false: this model's tool-call format "
                             f"({getattr(parser, 'name', None) or 'none'}) cannot be constrained here; the formats that can "
                             "are the <tool_call> JSON blocks (qwen, hermes) and llama3's JSON calls")
    return tools, dataclasses.replace(params, constraint=tool_call_constraint(
        tools, choice, parallel, open_tag=shape[0], close_tag=shape[1], args_key=shape[2])), None if parallel else 1


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
