"""Engine-independent chat logic shared by every LLM engine.

- chat templates: which one to use (the registration's, else the model's own files, else the built-in
  family's) and how to render it (the same Jinja semantics as transformers' ``apply_chat_template``);
- generate_config: validation into ``SamplingParams`` (unknown keys are an ``InferenceError``);
- stop strings (output cut before the stop string, also while streaming);
- reasoning: ``reasoning_start_tag`` / ``reasoning_end_tag`` split into ``reasoning_content``, also
  when the template itself opened the block and the model only emits the end tag;
- tool calls: ``<tool_call>{json}</tool_call>`` blocks into OpenAI ``tool_calls``;
- the OpenAI / Xinference result and chunk shapes.

``ChatLLM`` is the interface engines implement (``complete`` and ``stream`` on a rendered prompt);
handles.py turns it into ``generate`` / ``chat``.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from .engines import EngineModel
from .errors import InferenceError

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


# ----------------------------------------------------------------------------------------------
# Which template, stops and tags a launched model uses
# ----------------------------------------------------------------------------------------------

TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")


def read_own_chat_template(path: Optional[Path]) -> Optional[str]:
    """The chat template shipped with a Hugging Face model folder: ``chat_template.jinja``
    (transformers 5 layout), ``chat_template.json``, else the ``chat_template`` key of
    ``tokenizer_config.json`` (a string, or a list of named templates: "default" wins)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir():
        return None
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        text = jinja_file.read_text(encoding="utf-8")
        if text.strip():
            return text
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, list):
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next(iter(named.values()), None)
        if isinstance(value, str) and value.strip():
            return value
    return None


@dataclass
class ChatFormat:
    """Everything chat needs about one launched model."""

    template: Optional[str] = None
    template_source: str = "none"      # "registration" | "model" | "built-in family" | "none"
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    reasoning_start_tag: Optional[str] = None
    reasoning_end_tag: Optional[str] = None
    tool_call_tags: Optional[tuple[str, str]] = None
    template_vars: dict[str, Any] = field(default_factory=dict)   # bos_token, eos_token, enable_thinking …

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


def choose_chat_template(spec: Any, own_template: Optional[str]) -> tuple[Optional[str], str]:
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
    family = getattr(spec, "model_family", None)
    if family:
        try:
            from .registry.registry import builtin_specs

            builtin = builtin_specs("LLM").get(family)
        except Exception:  # pragma: no cover - a catalog problem must not break a launch
            builtin = None
        if builtin is not None and builtin.chat_template:
            return builtin.chat_template, "built-in family"
    return None, "none"


def build_chat_format(spec: Any, own_template: Optional[str] = None, *, eos_token_ids: Iterable[int] = (),
                      template_vars: Optional[dict[str, Any]] = None,
                      token_of: Any = None) -> ChatFormat:
    """Combine the spec with what the engine read from the model.

    ``token_of(text) -> Optional[int]`` maps a stop string to a single token id when the tokenizer
    has it as one (special) token; such stop strings become stop token ids too, because decoded text
    skips special tokens.
    """
    template, source = choose_chat_template(spec, own_template)
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
    tool_tags = TOOL_CALL_TAGS if template and TOOL_CALL_TAGS[0] in template else None
    return ChatFormat(template=template, template_source=source, stop=stop, stop_token_ids=stop_ids,
                      reasoning_start_tag=start if start and end else None,
                      reasoning_end_tag=end if start and end else None,
                      tool_call_tags=tool_tags, template_vars=dict(template_vars or {}))


# ----------------------------------------------------------------------------------------------
# generate_config
# ----------------------------------------------------------------------------------------------

GENERATE_CONFIG_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream", "stream_options")
DEFAULT_MAX_TOKENS = 512


@dataclass
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: Optional[float] = None   # None: the model's defaults; 0: greedy
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    seed: Optional[int] = None

    @property
    def greedy(self) -> bool:
        return self.temperature is not None and self.temperature <= 0


def _number(key: str, value: Any, *, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise InferenceError(f"generate_config[{key!r}] must be {kind}, got {type(value).__name__} {value!r}")
    return value


def parse_generate_config(generate_config: Optional[dict[str, Any]], chat_format: Optional[ChatFormat] = None
                          ) -> tuple[SamplingParams, bool]:
    """(sampling parameters, stream?) from a generate_config dict; unknown keys are refused."""
    cfg = generate_config or {}
    if not isinstance(cfg, dict):
        raise InferenceError(f"generate_config must be a dict, got {type(cfg).__name__}")
    unknown = [k for k in cfg if k not in GENERATE_CONFIG_KEYS]
    if unknown:
        raise InferenceError(f"unknown generate_config key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(k) for k in unknown)}; the valid keys are "
                             f"{', '.join(GENERATE_CONFIG_KEYS)}")
    params = SamplingParams()
    if cfg.get("max_tokens") is not None:
        params.max_tokens = _number("max_tokens", cfg["max_tokens"], integer=True)
        if params.max_tokens <= 0:
            raise InferenceError(f"generate_config['max_tokens'] must be positive, got {params.max_tokens}")
    if cfg.get("temperature") is not None:
        params.temperature = float(_number("temperature", cfg["temperature"]))
        if params.temperature < 0:
            raise InferenceError("generate_config['temperature'] must be >= 0 (0 means greedy)")
    if cfg.get("top_p") is not None:
        params.top_p = float(_number("top_p", cfg["top_p"]))
        if not 0 < params.top_p <= 1:
            raise InferenceError(f"generate_config['top_p'] must be in (0, 1], got {params.top_p}")
    if cfg.get("top_k") is not None:
        params.top_k = _number("top_k", cfg["top_k"], integer=True)
        if params.top_k < -1:
            raise InferenceError(f"generate_config['top_k'] must be >= 0 (0 or -1: off), got {params.top_k}")
    if cfg.get("seed") is not None:
        params.seed = _number("seed", cfg["seed"], integer=True)
    stop = cfg.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise InferenceError("generate_config['stop'] must be a string or a list of strings")
        params.stop = [s for s in stop if s]
    stream = cfg.get("stream", False)
    if not isinstance(stream, bool):
        raise InferenceError(f"generate_config['stream'] must be true or false, got {stream!r}")
    if chat_format is not None:
        params.stop = list(dict.fromkeys(params.stop + chat_format.stop))
        params.stop_token_ids = list(chat_format.stop_token_ids)
    return params, stream


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


def _partial_suffix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``markers``."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best


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
        keep = _partial_suffix(text, self.stop)
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
            keep = _partial_suffix(text, markers)
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

def _tool_call(name: str, arguments: Any) -> dict[str, Any]:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def parse_tool_calls(text: str, tags: tuple[str, str] = TOOL_CALL_TAGS) -> tuple[Optional[str], list[dict]]:
    """(remaining content or None, OpenAI tool_calls) from ``<tool_call>{"name", "arguments"}</tool_call>``
    blocks. A block that is not valid JSON with a name stays in the content."""
    start, end = tags
    if start not in text:
        return text, []
    calls: list[dict] = []
    content_parts: list[str] = []
    rest = text
    while start in rest:
        before, _, after = rest.partition(start)
        content_parts.append(before)
        body, closed, rest = after.partition(end)
        try:
            obj = json.loads(body.strip())
            name = obj.get("name") if isinstance(obj, dict) else None
        except ValueError:
            obj, name = None, None
        if isinstance(name, str) and name:
            calls.append(_tool_call(name, obj.get("arguments", obj.get("parameters", {}))))
        else:
            content_parts.append(start + body + closed)
    content_parts.append(rest)
    content = "".join(content_parts).strip()
    return (content or None), calls


# ----------------------------------------------------------------------------------------------
# The engine interface
# ----------------------------------------------------------------------------------------------

@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str   # "stop" | "length"


class TokenStream:
    """What ``ChatLLM.stream`` returns: iterate for text deltas; after the end (or ``close()``)
    ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` hold the totals."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Stop generating now (the consumer went away or a stop string was hit)."""


class ChatLLM(EngineModel):
    """Base of the LLM engines' models: a chat format, a context length, and two ways to run a
    rendered prompt. Engines stop on ``params.stop_token_ids`` and cap ``max_tokens`` by the context."""

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
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_uid,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk
