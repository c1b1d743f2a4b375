"""Engine-independent chat logic shared by every LLM engine.

- chat templates: which one to use (the registration's, else the model's own files, else the built-in
  family's) and how to render it (the same Jinja semantics as transformers' ``apply_chat_template``);
- generate_config: ``GenerateConfig`` (its keys, types and ranges) into ``SamplingParams`` (unknown keys
  and bad values are an ``InferenceError``);
- stop strings (output cut before the stop string, also while streaming);
- reasoning: ``reasoning_start_tag`` / ``reasoning_end_tag`` split into ``reasoning_content``, also
  when the template itself opened the block and the model only emits the end tag;
- tool calls: which parser of chat/tool_parsers.py a model uses (``ChatFormat.tool_parser``), and
  ``parse_tool_calls`` for ``<tool_call>{json}</tool_call>`` blocks;
- the OpenAI / Xinference result and chunk shapes.

``ChatLLM`` is the interface engines implement (``complete`` and ``stream`` on a rendered prompt);
client/handles.py turns it into ``generate`` / ``chat``.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..engines import EngineModel
from ..errors import InferenceError
from ..errors import kind_of as _kind
from .structured import CONSTRAINT_KEYS, Constraint, check_constraint_field, constraint_of
from .tool_parsers import (TOOL_CALL_TAGS, QwenParser, ToolParser, detect_tool_parser, get_tool_parser,
                           partial_suffix)

# ----------------------------------------------------------------------------------------------
# Jinja rendering, like transformers' apply_chat_template
# ----------------------------------------------------------------------------------------------


def _raise_exception(message: str):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers overrides Jinja's tojson: no HTML escaping, and the json.dumps options exposed
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment():
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}…{% endgeneration %}`` (assistant masks in transformers): rendered as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=64)
def compile_chat_template(template: str):
    """The compiled Jinja template (cached: rendering a known template costs no parse)."""
    from jinja2.exceptions import TemplateSyntaxError

    try:
        return _environment().from_string(template)
    except TemplateSyntaxError as exc:
        raise InferenceError(f"the chat template is not valid Jinja: {exc.message} (line {exc.lineno}); fix the "
                             "chat_template of the registration or the model's chat_template.jinja") from None


def render_chat_template(template: str, messages: list[dict[str, Any]], tools: Optional[list[dict]] = None,
                         add_generation_prompt: bool = True, **special_tokens: Any) -> str:
    """Render ``messages`` with ``template`` the way transformers' ``apply_chat_template`` does.

    ``tools`` and ``add_generation_prompt`` are passed through; every other keyword (``bos_token``,
    ``eos_token``, ``enable_thinking``, ``documents`` …) becomes a template variable.
    """
    from jinja2.exceptions import TemplateError

    compiled = compile_chat_template(template)
    try:
        return compiled.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                               **special_tokens)
    except TemplateError as exc:
        raise InferenceError(f"the chat template refused these messages: {exc}") from None
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        raise InferenceError(f"the chat template failed on these messages: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Which template, stops and tags a launched model uses
# ----------------------------------------------------------------------------------------------


def read_own_chat_template(path: Optional[Path]) -> Optional[str]:
    """The chat template shipped with a Hugging Face model folder, found the way parse finds it
    (:func:`metadata.hf.chat_template`: ``chat_template.jinja``, ``chat_template.json``, else
    tokenizer_config.json's ``chat_template``, a string or a list of named templates where "default"
    wins); None when there is none. An unreadable file is passed over: a launch goes on without it."""
    from ..metadata.hf import chat_template

    if path is None:
        return None
    found = chat_template(Path(path), strict=False)
    return found[0] if found else None


@dataclass
class ChatFormat:
    """Everything chat needs about one launched model."""

    template: Optional[str] = None
    template_source: str = "none"      # "registration" | "model" | "built-in family" | "none"
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    reasoning_start_tag: Optional[str] = None
    reasoning_end_tag: Optional[str] = None
    tool_call_tags: Optional[tuple[str, str]] = None   # the parser's (open, close) markers, for display
    template_vars: dict[str, Any] = field(default_factory=dict)   # bos_token, eos_token, enable_thinking …
    lora_names: tuple[str, ...] = ()   # the LoRA adapters a request may choose (generate_config lora_name)
    tool_parser: Optional[ToolParser] = None   # None: tool calls stay text

    def __post_init__(self) -> None:
        # tags alone (the older form) stand for a <tool_call>{json}</tool_call> parser with those tags
        if self.tool_parser is None and self.tool_call_tags:
            self.tool_parser = QwenParser(tags=tuple(self.tool_call_tags))  # type: ignore[arg-type]
        elif self.tool_parser is not None and self.tool_call_tags is None:
            self.tool_call_tags = self.tool_parser.tags

    def render(self, messages: list[dict[str, Any]], tools: Optional[list[dict]] = None,
               add_generation_prompt: bool = True, **kwargs: Any) -> str:
        if not self.template:
            raise InferenceError("this model has no chat template (not in the registration, not in the model's "
                                 "files, no built-in family): register it with a chat_template, or use "
                                 "generate(prompt) instead of chat(messages)")
        variables = dict(self.template_vars)
        variables.update({k: v for k, v in kwargs.items() if v is not None})
        return render_chat_template(self.template, messages, tools=tools,
                                    add_generation_prompt=add_generation_prompt, **variables)

    @property
    def has_reasoning(self) -> bool:
        return bool(self.reasoning_start_tag and self.reasoning_end_tag)

    def reasoning_opened_by(self, prompt: str) -> bool:
        """True when the rendered prompt itself opens the reasoning block (Qwen3 / R1 style)."""
        if not self.has_reasoning:
            return False
        tail = prompt.rstrip()
        return tail.endswith(self.reasoning_start_tag)  # type: ignore[arg-type]


# ``family_spec`` below is the built-in document of ``spec.model_family`` (None when that names no
# built-in model): the launcher looks it up (registry.builtin_family) and passes it down, so this
# module never reads the catalog.
def choose_chat_template(spec: Any, own_template: Optional[str],
                         family_spec: Any = None) -> tuple[Optional[str], str]:
    """(template, where it came from): the registration's, else the model's own, else the built-in
    family's."""
    spec_template = getattr(spec, "chat_template", None)
    is_builtin = bool(getattr(spec, "is_builtin", False))
    if spec_template and spec_template.strip() and not is_builtin:
        return spec_template, "registration"
    if own_template and own_template.strip():
        return own_template, "model"
    if spec_template and spec_template.strip():
        return spec_template, "built-in family"
    family_template = getattr(family_spec, "chat_template", None)
    if family_template:
        return family_template, "built-in family"
    return None, "none"


def choose_tool_parser(spec: Any, template: Optional[str], family_spec: Any = None) -> Optional[ToolParser]:
    """The registration's ``tool_parser``, else its built-in family's, else the one whose marker the
    chat template writes (``<tool_call>`` → qwen); None when there is none."""
    name = getattr(spec, "tool_parser", None) or getattr(family_spec, "tool_parser", None)
    name = name or detect_tool_parser(template)
    return get_tool_parser(name) if name else None


def build_chat_format(spec: Any, own_template: Optional[str] = None, *, family_spec: Any = None,
                      eos_token_ids: Iterable[int] = (), template_vars: Optional[dict[str, Any]] = None,
                      token_of: Any = None) -> ChatFormat:
    """Combine the spec (and its built-in family's document, ``family_spec``) with what the engine
    read from the model.

    ``token_of(text) -> Optional[int]`` maps a stop string to a single token id when the tokenizer
    has it as one (special) token; such stop strings become stop token ids too, because decoded text
    skips special tokens.
    """
    template, source = choose_chat_template(spec, own_template, family_spec)
    stop = [s for s in (getattr(spec, "stop", None) or []) if s]
    stop_ids = [int(i) for i in (getattr(spec, "stop_token_ids", None) or [])]
    for i in eos_token_ids:
        if i is not None and int(i) not in stop_ids:
            stop_ids.append(int(i))
    if token_of is not None:
        for s in stop:
            tid = token_of(s)
            if tid is not None and tid not in stop_ids:
                stop_ids.append(tid)
    start = getattr(spec, "reasoning_start_tag", None)
    end = getattr(spec, "reasoning_end_tag", None)
    return ChatFormat(template=template, template_source=source, stop=stop, stop_token_ids=stop_ids,
                      reasoning_start_tag=start if start and end else None,
                      reasoning_end_tag=end if start and end else None,
                      tool_parser=choose_tool_parser(spec, template, family_spec),
                      template_vars=dict(template_vars or {}))


# ----------------------------------------------------------------------------------------------
# Messages and tools
# ----------------------------------------------------------------------------------------------

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# content part types that need an ability the model may lack
_MEDIA_PARTS = {"image_url": "vision", "image": "vision", "input_image": "vision", "video_url": "video",
                "video": "video", "input_audio": "audio", "audio_url": "audio", "audio": "audio"}


def _abilities_text(abilities: Iterable[str]) -> str:
    names = [str(a) for a in abilities]
    return ", ".join(names) if names else "none"


def _check_content(content: Any, where: str, model_uid: str, abilities: tuple[str, ...],
                   media: tuple[str, ...] = ()) -> Any:
    """The text of one message's content: a string, or a list of text parts joined (OpenAI's form).
    With image parts (a model with the vision ability whose engine takes images: ``media``), the
    parts as a list: ``{"type": "text", "text"}`` and ``{"type": "image", "image": source}``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InferenceError(f"{where} must be a string or a list of content parts such as "
                             f"[{{'type': 'text', 'text': '...'}}], got {_kind(content)} {content!r:.60}")
    texts = []
    parts: list[dict[str, Any]] = []
    images = False
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise InferenceError(f"{at} must be an object such as {{'type': 'text', 'text': '...'}}, "
                                 f"got {_kind(part)} {part!r:.60}")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InferenceError(f"{at}.text must be a string, got {_kind(text)}")
            extra = sorted(str(k) for k in part if k not in ("type", "text"))
            if extra:   # e.g. cache_control: nothing here would apply it
                raise InferenceError(f"{at} has unknown key {', '.join(repr(k) for k in extra)}; a text part takes "
                                     "'type' and 'text'")
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif isinstance(kind, str) and kind in _MEDIA_PARTS:
            need = _MEDIA_PARTS[kind]
            if need == "vision" and need in abilities and need in media:
                from .images import part_source

                parts.append({"type": "image", "image": part_source(part, at)})
                images = True
                continue
            if need in abilities:
                raise InferenceError(f"{at}: {kind!r} parts are not supported by this engine yet; model "
                                     f"{model_uid!r} takes text parts only here")
            raise InferenceError(f"{at}: a part of type {kind!r} needs a model with the {need!r} ability; model "
                                 f"{model_uid!r} has the abilities {_abilities_text(abilities)} (text only): "
                                 "send text parts or a string")
        else:
            raise InferenceError(f"{at}.type must be 'text' (or a media type such as 'image_url' for a model "
                                 f"with that ability), got {_kind(kind)} {kind!r:.60}")
    return parts if images else "".join(texts)


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise InferenceError(f"{where} must be a list of tool calls, got {_kind(calls)}")
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InferenceError(f"{at} must be an object such as {{'type': 'function', 'function': "
                                 "{'name': '...', 'arguments': '{...}'}}")
        if not isinstance(fn.get("arguments", ""), (str, dict)):
            raise InferenceError(f"{at}.function.arguments must be a JSON string or an object, "
                                 f"got {_kind(fn.get('arguments'))}")


def validate_messages(messages: Any, *, model_uid: str = "", abilities: Iterable[str] = ("generate", "chat"),
                      media: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Check OpenAI chat messages and return them ready for a text template: a string becomes one user
    message, and content given as text parts becomes one string. Every problem is an ``InferenceError``
    naming the field (``messages[2].content``) and what it accepts.

    ``media``: the abilities the engine takes beside text (the engine model's ``abilities``). Image
    parts pass only when both the model (``abilities``) and its engine have ``vision``; such content
    stays a list of parts for ``chat_images.take_images``."""
    abilities = tuple(abilities or ())
    media = tuple(media or ())
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InferenceError("messages must be a non-empty list of {'role': ..., 'content': ...} objects "
                             f"(or a string for one user message), got {_kind(messages)}"
                             + (" (empty)" if isinstance(messages, (list, tuple)) else ""))
    out = []
    for i, message in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InferenceError(f"{at} must be an object such as {{'role': 'user', 'content': 'Hi'}}, "
                                 f"got {_kind(message)} {message!r:.60}")
        if "role" not in message:
            raise InferenceError(f"{at}.role is missing; use one of {', '.join(CHAT_ROLES)}")
        role = message["role"]
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise InferenceError(f"{at}.role must be one of {', '.join(CHAT_ROLES)}, got {_kind(role)} {role!r:.60}")
        for key in ("name", "tool_call_id"):
            if message.get(key) is not None and not isinstance(message[key], str):
                raise InferenceError(f"{at}.{key} must be a string, got {_kind(message[key])}")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant":
                raise InferenceError(f"{at}.tool_calls is only allowed on an assistant message, not {role!r}")
            _check_tool_calls(calls, f"{at}.tool_calls")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (calls or message.get("function_call") is not None):
                out.append(message)   # a tool-calling turn may have no text
                continue
            raise InferenceError(f"{at}.content is missing; a {role} message needs its text as a string "
                                 "(only an assistant message with tool_calls may leave it out)")
        text = _check_content(content, f"{at}.content", model_uid, abilities, media)
        out.append(message if text is content else dict(message, content=text))
    return out


def validate_tools(tools: Any) -> Optional[list[dict[str, Any]]]:
    """``tools``: None, or a list of ``{"type": "function", "function": {"name": ..., ...}}``."""
    if tools is None:
        return None
    if not isinstance(tools, (list, tuple)):
        raise InferenceError(f"tools must be a list of {{'type': 'function', 'function': {{'name': ...}}}} "
                             f"objects, got {_kind(tools)}")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InferenceError(f"tools[{i}] must be an object such as {{'type': 'function', 'function': "
                                 "{'name': 'get_weather', 'parameters': {...}}}")
        if tool.get("type", "function") != "function":
            raise InferenceError(f"tools[{i}].type must be 'function', got {tool.get('type')!r:.60}")
    return list(tools) or None


# ----------------------------------------------------------------------------------------------
# generate_config
# ----------------------------------------------------------------------------------------------

DEFAULT_MAX_TOKENS = 512
# every engine can apply it: torch takes 64 bits, llama.cpp 32 (and reads 0xFFFFFFFF as "random")
MAX_SEED = 2**32 - 2
# Engines sample from float32 logits. A temperature below GREEDY_TEMPERATURE is greedy (0): at such a
# temperature sampling picks the argmax anyway (two float32 logits that differ, differ by far more
# than 104 x 1e-20, so exp of their scaled difference underflows to 0), while dividing by it overflows
# float32 into inf/NaN probabilities (transformers below ~1e-37, llama.cpp's float temperature turns
# subnormal below 1.2e-38). The repetition penalty divides or multiplies logits the same way: values
# outside REPETITION_PENALTY_RANGE act as its ends (the penalised tokens already win or lose outright).
GREEDY_TEMPERATURE = 1e-20
# the stop strings one request may set: each is looked for after every new token (OpenAI takes 4)
MAX_STOPS = 64
MAX_STOP_CHARS = 1000
REPETITION_PENALTY_RANGE = (1e-20, 1e20)
MAX_N = 16                 # choices one request may ask for (each is a row of the batch)
MAX_TOP_LOGPROBS = 20      # OpenAI's limit
MAX_LOGIT_BIAS = 1024      # tokens one request may bias
TOOL_CHOICES = ("none", "auto", "required")


@dataclass
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: Optional[float] = None   # None: the model's defaults; 0 (or below GREEDY_TEMPERATURE): greedy
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None   # None or 1.0: off
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: Optional[int] = None
    include_usage: bool = True   # stream_options.include_usage: usage in the last chunk of a stream
    lora_name: Optional[str] = None   # the LoRA adapter of this request (None: the base model)
    # set by the chat handle when a request has tools, never a generate_config key: the special tokens
    # a tool-call format writes ([TOOL_CALLS], <|python_tag|>, DeepSeek's) stay in the decoded text
    keep_special_tokens: bool = False
    # OpenAI's sampling surface (engines apply each; None / empty: off)
    logprobs: bool = False                  # each new token's log-probability (of the model's own logits)
    top_logprobs: int = 0                   # and the most likely alternatives at each position
    presence_penalty: Optional[float] = None    # subtracted once from every token already generated
    frequency_penalty: Optional[float] = None   # subtracted per occurrence in the generated tokens
    logit_bias: dict[int, float] = field(default_factory=dict)   # token id -> added to its logit
    min_p: Optional[float] = None           # drop tokens below min_p x the top token's probability
    # structured output (chat/structured.py), enforced by the engine while decoding
    constraint: Optional["Constraint"] = None

    @property
    def greedy(self) -> bool:
        return self.temperature is not None and self.temperature <= 0


def _whole(low: int, high: Optional[int] = None, note: str = "") -> Any:
    """A whole-number key from ``low`` (to ``high``); its description is what its error says it accepts."""
    span = f">= {low}" if high is None else f"from {low} to {high}"
    return Field(None, ge=low, le=high, description=f"a whole number {span}{note}")


def _finite(*, gt: Optional[float] = None, ge: Optional[float] = None, le: Optional[float] = None,
            note: str = "") -> Any:
    """A finite-number key above ``gt`` or from ``ge`` (up to ``le``), described by its range."""
    if le is None:
        text = f"a finite number > {gt}" if gt is not None else f"a finite number >= {ge}"
    else:
        text = f"a number in ({gt}, {le}]" if gt is not None else f"a number in [{ge}, {le}]"
    return Field(None, gt=gt, ge=ge, le=le, description=text + note)


class StreamOptions(BaseModel):
    """``generate_config['stream_options']``: what a stream adds to its chunks."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    include_usage: Optional[bool] = Field(None, description="true or false")


class GenerateConfig(BaseModel):
    """The generate_config keys, their types and ranges: the one place they are written (every engine
    and handle reads them through ``parse_generate_config``; the server's chat and completion routes
    check their body with it once, ``server/openai.to_generate_config``). ``check`` makes one from a
    dict, refusing (``InferenceError``) with the key and what it accepts; ``to_sampling_params`` is
    what an engine samples with. Checked once and frozen; ``dict(config)`` is the generate_config it
    was made from (after the float32 clamps), so a handle that takes a plain dict takes one too."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    max_tokens: Optional[int] = _whole(1)
    temperature: Optional[float] = _finite(ge=0, note=" (0 means greedy)")
    top_p: Optional[float] = _finite(gt=0, le=1)
    top_k: Optional[int] = _whole(-1, note=" (0 or -1: off)")
    repetition_penalty: Optional[float] = _finite(gt=0, note=" (1.0: off)")
    stop: Optional[Union[str, list[str], tuple[str, ...]]] = Field(None, description="a string or a list of strings")
    seed: Optional[int] = _whole(0, MAX_SEED)
    stream: Optional[bool] = Field(None, description="true or false")
    stream_options: Optional[StreamOptions] = Field(None, description="an object such as {'include_usage': true}")
    lora_name: Optional[str] = Field(None, min_length=1,
                                     description="the name of a LoRA adapter loaded at launch (a string)")
    n: Optional[int] = _whole(1, MAX_N, note=" (the choices to return)")
    logprobs: Optional[bool] = Field(None, description="true or false")
    top_logprobs: Optional[int] = _whole(0, MAX_TOP_LOGPROBS, note=" (needs logprobs=true)")
    presence_penalty: Optional[float] = _finite(ge=-2.0, le=2.0)
    frequency_penalty: Optional[float] = _finite(ge=-2.0, le=2.0)
    logit_bias: Optional[dict[Union[int, str], float]] = Field(
        None, description=f"an object of at most {MAX_LOGIT_BIAS} token ids (as strings or numbers) to a bias "
                          "from -100 to 100")
    min_p: Optional[float] = _finite(ge=0.0, le=1.0)
    response_format: Optional[Any] = Field(None, description="an object such as {'type': 'json_object'} or "
                                           "{'type': 'json_schema', 'json_schema': {...}}, or a pydantic model class")
    guided_json: Optional[Any] = Field(None, description="a JSON schema (an object or its JSON text)")
    guided_regex: Optional[str] = Field(None, description="a regular expression (a string)")
    guided_choice: Optional[list[str]] = Field(None, description="a list of strings")
    guided_grammar: Optional[str] = Field(None, description="a Lark or GBNF grammar (a string)")
    guided_json_object: Optional[bool] = Field(None, description="true or false")
    guided_whitespace_pattern: Optional[str] = Field(None, description="a regular expression (a string)")
    guided_decoding_backend: Optional[str] = Field(None, description="'auto', 'guidance' or 'llguidance'")
    tool_choice: Optional[Union[str, dict[str, Any]]] = Field(
        None, description="'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")
    parallel_tool_calls: Optional[bool] = Field(None, description="true or false")

    @field_validator(*CONSTRAINT_KEYS)
    @classmethod
    def _constraint_well_formed(cls, value: Any, info: Any) -> Any:
        return check_constraint_field(info.field_name, value)

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_ids(cls, value: Optional[dict]) -> Optional[dict]:
        if value is None:
            return None
        if len(value) > MAX_LOGIT_BIAS:
            raise InferenceError(f"generate_config['logit_bias'] biases {len(value)} tokens; at most {MAX_LOGIT_BIAS}")
        out: dict[int, float] = {}
        for key, bias in value.items():
            tid = key if isinstance(key, int) else int(key) if isinstance(key, str) and key.isdigit() else None
            if tid is None or tid < 0:
                raise InferenceError(f"generate_config['logit_bias'] keys are token ids (whole numbers >= 0, as "
                                     f"strings or numbers), got {key!r:.40}")
            if not -100.0 <= bias <= 100.0 or bias != bias:
                raise InferenceError(f"generate_config['logit_bias'][{key!r:.40}] must be from -100 to 100, got {bias!r}")
            out[tid] = float(bias)
        return out

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_shape(cls, value: Any) -> Any:
        if value is None or value in TOOL_CHOICES:
            return value
        fn = value.get("function") if isinstance(value, dict) else None
        if (isinstance(value, dict) and value.get("type") == "function" and set(value) <= {"type", "function"}
                and isinstance(fn, dict) and set(fn) == {"name"} and isinstance(fn["name"], str) and fn["name"]):
            return value
        raise InferenceError("generate_config['tool_choice'] must be 'none', 'auto', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {value!r:.80}")

    @field_validator("temperature")
    @classmethod
    def _tiny_temperature_is_greedy(cls, value: Optional[float]) -> Optional[float]:
        return 0.0 if value is not None and value < GREEDY_TEMPERATURE else value

    @field_validator("stop")
    @classmethod
    def _stops_within_bounds(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else list(value or ())
        longest = max((len(s) for s in stops), default=0)
        if len(stops) > MAX_STOPS or longest > MAX_STOP_CHARS:
            raise InferenceError(f"generate_config['stop'] takes at most {MAX_STOPS} strings of at most "
                                 f"{MAX_STOP_CHARS} characters each (each is looked for after every new token, "
                                 f"in a batch shared with other requests), got {len(stops)} of up to {longest}")
        return value

    @field_validator("repetition_penalty")
    @classmethod
    def _penalty_within_float32(cls, value: Optional[float]) -> Optional[float]:
        low, high = REPETITION_PENALTY_RANGE
        return None if value is None else min(max(value, low), high)

    @model_validator(mode="after")
    def _stream_options_need_a_stream(self) -> "GenerateConfig":
        if self.stream_options is not None and self.stream_options.model_fields_set and not self.stream:
            raise InferenceError("generate_config['stream_options'] is only allowed with stream=True")
        if self.top_logprobs and not self.logprobs:
            raise InferenceError("generate_config['top_logprobs'] needs logprobs=true")
        constraint_of(self)   # two constraints in one request
        return self

    @classmethod
    def check(cls, generate_config: Any) -> "GenerateConfig":
        """``generate_config`` (a dict or None; a GenerateConfig is returned as it is) checked: an
        unknown key or a bad value is an ``InferenceError`` naming the key and what it accepts."""
        if isinstance(generate_config, cls):
            return generate_config
        if generate_config is None:
            generate_config = {}
        if not isinstance(generate_config, dict):
            raise InferenceError(f"generate_config must be a dict, got {type(generate_config).__name__}")
        unknown = [k for k in generate_config if k not in cls.model_fields]
        if unknown:
            raise InferenceError(f"unknown generate_config key{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(repr(k) for k in unknown)}; the valid keys are "
                                 f"{', '.join(cls.model_fields)}")
        try:
            return cls.model_validate(generate_config)
        except ValidationError as exc:
            raise _config_error(exc.errors()[0], generate_config) from None

    def keys(self) -> list[str]:
        """The keys it was made from (with ``__getitem__``: ``dict(config)``)."""
        return [k for k in type(self).model_fields if k in self.model_fields_set]

    def __getitem__(self, key: str) -> Any:
        if key not in self.model_fields_set:
            raise KeyError(key)
        value = getattr(self, key)
        return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value

    def get(self, key: str, default: Any = None) -> Any:
        """As a dict's ``get`` (a handle may read the config it is given as the dict it was made from)."""
        return self[key] if key in self.model_fields_set else default

    def __contains__(self, key: object) -> bool:
        return key in self.model_fields_set

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    def to_sampling_params(self, chat_format: Optional[ChatFormat] = None) -> tuple[SamplingParams, bool]:
        """(what an engine samples with, stream?); ``chat_format`` adds the model's stop strings and
        stop tokens, and checks ``lora_name`` against the adapters it was launched with."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or ())
        usage = None if self.stream_options is None else self.stream_options.include_usage
        params = SamplingParams(max_tokens=DEFAULT_MAX_TOKENS if self.max_tokens is None else self.max_tokens,
                                temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                repetition_penalty=self.repetition_penalty, stop=[s for s in stop if s],
                                seed=self.seed, include_usage=True if usage is None else usage,
                                lora_name=self.lora_name, logprobs=bool(self.logprobs),
                                top_logprobs=self.top_logprobs or 0, presence_penalty=self.presence_penalty or None,
                                frequency_penalty=self.frequency_penalty or None,
                                logit_bias=dict(self.logit_bias or {}), min_p=self.min_p or None,
                                constraint=constraint_of(self))
        if chat_format is not None:
            params.stop = list(dict.fromkeys(params.stop + chat_format.stop))
            params.stop_token_ids = list(chat_format.stop_token_ids)
            check_lora_name(params.lora_name, chat_format.lora_names)
        return params, bool(self.stream)


GENERATE_CONFIG_KEYS = tuple(GenerateConfig.model_fields)
STREAM_OPTIONS_KEYS = tuple(StreamOptions.model_fields)


def _config_error(error: Any, sent: dict[str, Any]) -> InferenceError:
    """The first problem pydantic found in ``sent``, in generate_config's words: the key (inside
    stream_options, its key), what it accepts, and what was sent."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InferenceError):      # a rule across keys: its own words
        return cause
    if not error["loc"]:
        return InferenceError(f"generate_config: {error['msg']}")
    key, inner = error["loc"][0], error["loc"][1:2]
    where, value = f"generate_config[{key!r}]", sent[key]
    accepted = GenerateConfig.model_fields[key].description
    if key == "stream_options" and inner and isinstance(value, dict):
        fields = StreamOptions.model_fields
        if inner[0] not in fields:
            unknown = ", ".join(repr(k) for k in value if k not in fields)
            return InferenceError(f"{where} has unknown key {unknown}; the valid keys are {', '.join(fields)}")
        where, value, accepted = f"{where}[{inner[0]!r}]", value[inner[0]], fields[inner[0]].description
    return InferenceError(f"{where} must be {accepted}, got {type(value).__name__} {value!r:.60}")


def parse_generate_config(generate_config: Any, chat_format: Optional[ChatFormat] = None
                          ) -> tuple[SamplingParams, bool]:
    """(sampling parameters, stream?) from a generate_config: a dict (or None) checked by
    ``GenerateConfig.check``, or a ``GenerateConfig`` already checked (what the server's routes hand a
    handle), taken as it is; ``chat_format`` as in ``GenerateConfig.to_sampling_params``."""
    return GenerateConfig.check(generate_config).to_sampling_params(chat_format)


def check_lora_name(lora_name: Optional[str], loaded: tuple[str, ...]) -> None:
    """InferenceError unless ``lora_name`` is None (the base model) or one of the ``loaded`` adapters."""
    if lora_name is None or lora_name in loaded:
        return
    if not loaded:
        raise InferenceError(f"generate_config['lora_name']={lora_name!r:.80}: this model was launched without LoRA "
                             "adapters; launch it with peft_model_config={'lora_list': [{'lora_name': ..., "
                             "'local_path': ...}]} (xinf launch -lm NAME PATH), or leave lora_name out")
    raise InferenceError(f"generate_config['lora_name']={lora_name!r:.80} is not an adapter of this model; it has "
                         f"{', '.join(repr(n) for n in loaded)} (leave lora_name out for the base model)")


# ----------------------------------------------------------------------------------------------
# Stop strings
# ----------------------------------------------------------------------------------------------

def cut_at_stop(text: str, stop: Iterable[str]) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one was found)."""
    cut = -1
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (cut == -1 or i < cut):
            cut = i
    return (text, False) if cut == -1 else (text[:cut], True)


class StopFilter:
    """Streaming stop strings: ``feed(delta) -> (safe text, hit)``; text that might start a stop
    string is held back until it is known not to."""

    def __init__(self, stop: Iterable[str]):
        self.stop = [s for s in stop if s]
        self._held = ""
        self.hit = False

    def feed(self, delta: str) -> tuple[str, bool]:
        if self.hit:
            return "", True
        if not self.stop:
            return delta, False
        text = self._held + delta
        cut, hit = cut_at_stop(text, self.stop)
        if hit:
            self._held, self.hit = "", True
            return cut, True
        keep = partial_suffix(text, self.stop)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.hit else held


# ----------------------------------------------------------------------------------------------
# Reasoning split
# ----------------------------------------------------------------------------------------------

def split_reasoning(text: str, start_tag: Optional[str], end_tag: Optional[str], opened: bool = False
                    ) -> tuple[Optional[str], str]:
    """(reasoning_content, content) of a whole reply.

    ``<think>r</think>c`` → ("r", "c"); ``r</think>c`` (the template opened the block) → ("r", "c");
    no tags and ``opened`` → everything is reasoning (the model never closed the block)."""
    if not (start_tag and end_tag):
        return None, text
    if start_tag in text:
        before, _, rest = text.partition(start_tag)
        if end_tag in rest:
            reasoning, _, after = rest.partition(end_tag)
            return reasoning.strip(), (before + after.lstrip())
        return rest.strip(), before
    if end_tag in text:
        reasoning, _, after = text.partition(end_tag)
        return reasoning.strip(), after.lstrip()
    if opened:
        return text.strip(), ""
    return None, text


class ReasoningSplitter:
    """Streaming reasoning split: ``feed(delta)`` returns [("reasoning_content" | "content", text)]."""

    def __init__(self, start_tag: str, end_tag: str, opened: bool = False):
        self.start, self.end = start_tag, end_tag
        self.state = "reasoning" if opened else "before"   # before → reasoning → content
        self._held = ""
        self._strip_next = opened   # leading whitespace after a tag is dropped
        self.reasoning_seen = opened

    def _emit(self, out: list, kind: str, text: str) -> None:
        if self._strip_next:
            text = text.lstrip()
            if text:
                self._strip_next = False
        if text:
            out.append((kind, text))

    def feed(self, delta: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        text = self._held + delta
        self._held = ""
        while text:
            if self.state == "content":
                self._emit(out, "content", text)
                break
            # in "before", an end tag alone also closes (the template opened the block silently)
            markers = [self.start, self.end] if self.state == "before" else [self.end]
            found = [(text.find(m), m) for m in markers if m in text]
            if found:
                i, m = min(found)
                head, text = text[:i], text[i + len(m):]
                if self.state == "before" and m == self.start:
                    self._emit(out, "content", head)
                    self.state, self._strip_next, self.reasoning_seen = "reasoning", True, True
                else:
                    self._emit(out, "reasoning_content", head)
                    self.state, self._strip_next, self.reasoning_seen = "content", True, True
                continue
            keep = partial_suffix(text, markers)
            body, self._held = (text[:len(text) - keep], text[len(text) - keep:]) if keep else (text, "")
            kind = "content" if self.state == "before" else "reasoning_content"
            if kind == "content" and body and not body.isspace():
                # plain content before any tag: the model does not reason this turn
                self.state = "content"
            self._emit(out, kind, body)
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        held, self._held = self._held, ""
        if not held:
            return []
        return [("content" if self.state != "reasoning" else "reasoning_content", held)]


# ----------------------------------------------------------------------------------------------
# Tool calls
# ----------------------------------------------------------------------------------------------

def parse_tool_calls(text: str, tags: tuple[str, str] = TOOL_CALL_TAGS) -> tuple[Optional[str], list[dict]]:
    """(remaining content or None, OpenAI tool_calls) from ``<tool_call>{"name", "arguments"}</tool_call>``
    blocks (the "qwen" parser). A block that is not valid JSON with a name stays in the content."""
    if tuple(tags) == TOOL_CALL_TAGS:
        return get_tool_parser("qwen").parse(text)
    return QwenParser(tags=(tags[0], tags[1])).parse(text)


# ----------------------------------------------------------------------------------------------
# The engine interface
# ----------------------------------------------------------------------------------------------

@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str   # "stop" | "length"
    # with params.logprobs: one entry per generated token (the stop token left out), OpenAI's shape:
    # {"token": str, "logprob": float, "bytes": [int], "top_logprobs": [{"token", "logprob", "bytes"}]}
    logprobs: Optional[list[dict[str, Any]]] = None


def decode_text(tokenizer: Any, ids: list[int], keep_special: bool = False, drop_ids: Iterable[int] = ()) -> str:
    """The text of generated ids (a transformers tokenizer). Special tokens are left out, unless
    ``keep_special`` (a request with tools: the markers of its tool-call format are often special
    tokens): then only the tokenizer's bos/eos/pad/unk tokens and ``drop_ids`` (the request's stop
    ids, which end the output) are."""
    return _decoder(tokenizer, keep_special, drop_ids)(ids)


def _decoder(tokenizer: Any, keep_special: bool, drop_ids: Iterable[int]) -> Callable[[list[int]], str]:
    """:func:`decode_text` for one request, with its set of dropped ids made once (a stream decodes
    at every token)."""
    if not keep_special:
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
    framing = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")}
    drop = frozenset(framing.union(drop_ids))
    return lambda ids: tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)


def incremental_deltas(tokenizer: Any, ids: Iterator[int], stopped: Any = None, keep_special: bool = False,
                       drop_ids: Iterable[int] = ()) -> Iterator[str]:
    """Text deltas of a growing token sequence: each new piece once it decodes to whole characters
    (a "\ufffd" at the end, perhaps the start of a UTF-8 sequence split over tokens, waits for the
    next token). When the ids end, what is still held comes out as :func:`decode_text` gives it (a
    reply cut inside a character ends in "\ufffd"): the deltas add up to the whole reply's text. Once
    ``stopped`` is set the remaining ids are consumed without text. ``keep_special``, ``drop_ids``:
    as in :func:`decode_text`."""
    seen: list[int] = []
    prefix, read = 0, 0
    decode = _decoder(tokenizer, keep_special, drop_ids)

    def pending() -> tuple[str, str]:
        return (decode(seen[prefix:read]) if read > prefix else ""), decode(seen[prefix:])

    for tid in ids:
        seen.append(tid)
        if stopped is not None and stopped.is_set():
            continue
        prefix_text, new_text = pending()
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            prefix, read = read, len(seen)
            yield new_text[len(prefix_text):]
    if read < len(seen) and not (stopped is not None and stopped.is_set()):
        prefix_text, new_text = pending()
        if len(new_text) > len(prefix_text):
            yield new_text[len(prefix_text):]


def split_stops(params: "SamplingParams", token_of: Callable[[str], Optional[int]]) -> tuple[list[int], list[str]]:
    """A request's stops as an engine checks them: the stop token ids plus every stop string that is
    one token (in order, once each), and the stop strings that are not (matched on the text)."""
    ids = list(dict.fromkeys(params.stop_token_ids))
    strings = []
    for s in params.stop:
        tid = token_of(s)
        if tid is None:
            strings.append(s)
        elif tid not in ids:
            ids.append(tid)
    return ids, strings


class TokenStream:
    """What ``ChatLLM.stream`` returns: iterate for text deltas; after the end (or ``close()``)
    ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` hold the totals."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    # with params.logprobs: the entries of Completion.logprobs, appended as tokens come (an engine sets
    # it to a list; a reader takes the new ones after each delta)
    logprobs: Optional[list[dict[str, Any]]] = None
    _iter: Iterator[str]      # set by each engine's stream: the generator of text deltas

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        """Stop generating now (the consumer went away or a stop string was hit)."""


class ChatLLM(EngineModel):
    """Base of the LLM engines' models: a chat format, a context length, and two ways to run a
    rendered prompt. Engines stop on ``params.stop_token_ids`` and cap ``max_tokens`` by the context.
    An engine with "vision" in its ``abilities`` also takes ``images=`` (decoded PIL images, in the
    order of the prompt's image placeholders); handles pass it to no other engine."""

    model_type = "LLM"
    abilities = ("generate", "chat")
    chat_format: ChatFormat
    context_length: int = 2048

    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> Completion:
        raise NotImplementedError

    def stream(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> TokenStream:
        raise NotImplementedError


def check_prompt_fits(prompt_tokens: int, params: SamplingParams, context_length: int) -> int:
    """The max new tokens allowed: ``max_tokens`` capped by what the context has left."""
    room = context_length - prompt_tokens
    if room <= 0:
        raise InferenceError(f"the prompt is {prompt_tokens} tokens but the context length is {context_length}; "
                             "shorten the messages or launch with a larger context_length")
    return max(1, min(params.max_tokens, room))


# ----------------------------------------------------------------------------------------------
# Result shapes (OpenAI / Xinference)
# ----------------------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_result(model_uid: str, text: str, finish_reason: str, prompt_tokens: int,
                      completion_tokens: int) -> dict[str, Any]:
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model_uid,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(cid: str, created: int, model_uid: str, text: str, finish_reason: Optional[str] = None,
                     usage_: Optional[dict] = None) -> dict[str, Any]:
    chunk = {"id": cid, "object": "text_completion", "created": created, "model": model_uid,
             "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def chat_message(content: Optional[str], reasoning: Optional[str] = None, tool_calls: Optional[list] = None,
                 with_reasoning: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if with_reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def chat_result(model_uid: str, message: dict[str, Any], finish_reason: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model_uid,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(cid: str, created: int, model_uid: str, delta: dict[str, Any], finish_reason: Optional[str] = None,
               usage_: Optional[dict] = None) -> dict[str, Any]:
    """One chunk of a chat stream, shaped like Xinference's: the last chunk (the one with a
    ``finish_reason``) and a chunk of tool calls carry ``"content": ""`` in their delta, as every
    Xinference chunk has a ``content`` key (langchain-xinference reads ``delta["content"]`` of each)."""
    if (finish_reason is not None or "tool_calls" in delta) and "content" not in delta:
        delta = {**delta, "content": ""}
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_uid,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk


def first_choice(result: Any) -> dict[str, Any]:
    """The first choice of a result or a chunk ({} when it has none, as a usage-only chunk)."""
    choices = result.get("choices") if isinstance(result, Mapping) else None
    return choices[0] if choices else {}


def chunk_delta(chunk: Any) -> dict[str, Any]:
    """What a chat chunk adds: its first choice's ``delta`` ({} for a usage-only or completion chunk)."""
    return first_choice(chunk).get("delta") or {}


def tool_calls_in_final_chunk(chunks: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A chat stream with its tool calls moved into the final chunk, the way Xinference sends a
    stream's tool calls: one delta ``{"content": "", "tool_calls": [...]}`` with
    ``finish_reason="tool_calls"`` (langchain-xinference reads tool calls only from the chunk that
    finishes with "tool_calls"; the openai package accepts both shapes). Other chunks pass unchanged.
    Closing this iterator closes ``chunks`` (a dropped stream stops generation)."""
    held: dict[Any, list[dict[str, Any]]] = {}   # per choice: tool-call chunks not yet followed by its final chunk
    try:
        for chunk in chunks:
            choice, delta = first_choice(chunk), chunk_delta(chunk)
            mine = held.setdefault(choice.get("index", 0), [])
            if choice.get("finish_reason") is None and delta.get("tool_calls") and not delta.get("content"):
                mine.append(chunk)
                continue
            if mine and choice.get("finish_reason") is not None:
                calls = [call for h in mine for call in chunk_delta(h)["tool_calls"]]
                final = dict(chunk, choices=[dict(choice, delta={**delta, "content": delta.get("content") or "",
                                                               "tool_calls": calls})])
                mine.clear()
                yield final
                continue
            yield from mine
            mine.clear()
            yield chunk
        for rest in held.values():
            yield from rest
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
