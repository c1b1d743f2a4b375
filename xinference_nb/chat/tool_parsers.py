"""Tool calls in a model's output, one parser per format, into OpenAI ``tool_calls``.

Which parser a launched model uses (chat.build_chat_format): the registration's ``tool_parser``, else
its built-in family's, else the one whose marker its chat template writes (:data:`TEMPLATE_MARKERS`;
a ``<tool_call>`` template gets "qwen", as before). The names are the ones Xinference 4.1's catalog
uses, plus "mistral", "hermes" and "kimi-k2" for templates outside the catalog's tool families.

Every parser gives ``(content, tool_calls)``: text outside the calls stays content (None when empty),
each call is ``{"id", "type": "function", "function": {"name", "arguments": <JSON string>}}``. A block
that starts like a call but does not parse stays in the content, with a logged warning, never an
exception. Argument values written as text (XML-style formats) become JSON values when they read as
JSON, unless the request's tool schema says the parameter is a string.

Formats, and where each was taken from (Xinference's parsers and tests in xorbitsai/inference
``xinference/model/llm/tool_parsers/``, the chat templates of the built-in catalog, model cards):

- qwen / hermes: ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``; Qwen3-Coder / Qwen3.5+
  bodies ``<function=NAME><parameter=KEY>value</parameter></function>`` (their catalog templates).
- llama3: ``{"name": .., "parameters": {..}}`` objects (``;`` between several), after
  ``<|python_tag|>`` or bare (the catalog's llama-3.1 template; the tag is a special token).
- glm4: ``NAME\\n{json arguments}`` at the start of the reply, again after each ``<|assistant|>``
  (GLM-4-chat's own ``process_response``; Xinference reads it from the model's dict result).
- glm5 (GLM-4.5 … GLM-5): ``<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``.
- deepseek-r1, deepseek_v3, deepseek-v3.1: ``<｜tool▁calls▁begin｜>`` sections of
  ``<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`` items. One item grammar serves the three, because the
  catalog mixes them (DeepSeek-V3.2-Exp is "deepseek-r1" but its template writes the V3.1 form):
  R1 ``function<｜tool▁sep｜>NAME\\n```json\\n{args}\\n```````, V3.1 ``NAME<｜tool▁sep｜>{args}``, V3
  ``{"name": .., "parameters": {..}}``. deepseek_v3 also takes ```json fenced and bare objects of
  that shape (Xinference's deepseek-v3 parser and the catalog template's instructions).
- deepseek-v3.2 / deepseek-v4: DSML ``<｜DSML｜function_calls>`` / ``<｜DSML｜tool_calls>`` (and the
  same tags without ``｜DSML｜``) holding ``invoke name=".."`` / ``parameter name=".." string="true|false"``;
  v3.2 also takes the V3.1 items its catalog template writes. deepseek-v4.1: ``<｜DSML｜ calls>`` with
  a space before each tag name.
- minimax: ``<minimax:tool_call><invoke name=".."><parameter name="..">v</parameter></invoke>…``.
- minimax_m3: the same wrapper, or ``]<]minimax[>[<tool_call>`` (its catalog template), arguments as
  nested XML elements (``<item>`` children are a list), legacy ``<parameter name=..>`` accepted.
- gemma: Gemma 4 ``<|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|>``; Gemma 3 fenced
  ```tool_code``` blocks of Python calls ``name(key=value)`` (Google's Gemma function-calling guide).
- kimi-k3: ``<|open|>tools<|sep|>`` sections of ``<|open|>call tool="..">`` /
  ``<|open|>argument key=".." type="..">`` items; the response/message channel tags are dropped from
  the content. kimi-k2: ``<|tool_calls_section_begin|>`` with ``functions.NAME:i`` ids.
- minicpm5: ``<function name=".."><param name="..">v</param></function>``, CDATA values.
- mistral: ``[TOOL_CALLS][{"name": .., "arguments": {..}}]`` (v0.3 / Nemo) and
  ``[TOOL_CALLS]NAME[ARGS]{..}`` (newer tokenizers); ids are 9 letters/digits as Mistral templates require.

Model output is untrusted (a prompt can make a model write anything): no text makes a parser raise,
no parser takes more than linear time on any text, and every call it returns has a non-empty name,
an id unique in the reply and ``arguments`` that are a JSON object as standard JSON. Model JSON is
read the way Python and JavaScript read it (a repeated key: the last one wins); ``NaN``, ``Infinity``
or a number out of the float range make a call malformed (OpenAI clients cannot read them), and as
text values (XML-style formats) they stay strings. Nesting too deep to read makes a block malformed.

Streaming (:class:`ToolCallStream`): content passes through until a start marker of the format
appears (a partial marker at the end of a delta waits for the next one); from there the text is held
and parsed when the stream ends.

Imports only the standard library (spec validation reads :data:`TOOL_PARSER_NAMES`).
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
import string
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..errors import FieldIssue, SpecError

logger = logging.getLogger(__name__)

# (name, arguments: dict or JSON text, id the model gave or None)
RawCall = tuple[str, Any, Optional[str]]


class Malformed(ValueError):
    """A block that starts like a tool call but is not one: it stays in the content. ``skip``: where
    the broken JSON value it holds was found broken (block openings before it are inside that value)."""

    def __init__(self, message: str, skip: Optional[int] = None):
        super().__init__(message)
        self.skip = skip


def tool_call(name: str, arguments: Any, call_id: Optional[str] = None) -> dict[str, Any]:
    """One OpenAI tool call; ``arguments`` as a JSON string (a dict is dumped, a string kept)."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {"id": call_id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of the float range")
    return value


# model JSON: standard JSON only (json's own decoder takes NaN/Infinity and reads 1e999 as inf, which
# json.dumps then writes as tokens no JSON client reads)
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _checked(call: RawCall) -> RawCall:
    """``call`` with a stripped non-empty name and its arguments as the JSON text of an object
    (Malformed otherwise): what every parser returns goes through here."""
    name, args, call_id = call
    if not isinstance(name, str) or not name.strip():
        raise Malformed("a call without a function name")
    if isinstance(args, str):
        try:
            args = _DECODER.decode(args) if args.strip() else {}
        except ValueError as exc:
            raise Malformed(f"the arguments text is not JSON ({exc})") from None
    if not isinstance(args, dict):
        raise Malformed(f"arguments must be a JSON object, got {type(args).__name__}")
    try:   # values that did not come from JSON (Python literals of tool_code blocks) may not be JSON
        text = json.dumps(args, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError) as exc:
        raise Malformed(f"arguments are not JSON ({exc})") from None
    return name.strip(), text, call_id


def partial_suffix(text: str, markers: Iterable[str]) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of one of ``markers`` (what a
    stream holds back: stop strings, reasoning tags, tool-call markers)."""
    best = 0
    for m in markers:
        # where the end could begin such a marker: at its first character, within its length of the end
        k = text.find(m[:1], max(len(text) - len(m) + 1, 0)) if m else -1
        while k != -1 and len(text) - k > best:
            if m.startswith(text[k:]):
                best = len(text) - k
                break
            k = text.find(m[0], k + 1)
    return best


# ----------------------------------------------------------------------------------------------
# Values: JSON where the text reads as JSON, unless the tool's schema says "string"
# ----------------------------------------------------------------------------------------------

def _param_types(tools: Optional[list], name: str) -> dict[str, Any]:
    for tool in tools or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            return {k: (v.get("type") if isinstance(v, dict) else None) for k, v in props.items()}
    return {}


def _value(raw: str, declared: Any) -> Any:
    if declared == "string" or declared == ["string"]:
        return raw
    try:
        return _DECODER.decode(raw)
    except (ValueError, RecursionError):
        return raw


def _typed(name: str, pairs: list[tuple[str, str]], tools: Optional[list]) -> dict[str, Any]:
    types = _param_types(tools, name)
    return {k: _value(v, types.get(k)) for k, v in pairs}


def _json_object(text: str) -> Any:
    """A JSON value from ``text``, with an optional ```json fence around it."""
    text = text.strip()
    if len(text) >= 6 and text.startswith("```") and text.endswith("```"):   # not a regex: linear on any text
        text = text[3:-3]
        text = text[4:] if text.startswith("json") else text
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise Malformed(f"arguments are not JSON ({exc})") from None


def _arguments(obj: dict, *keys: str) -> Any:
    for key in keys:
        if key in obj:
            args = obj[key]
            if args is None or isinstance(args, (dict, str)):
                return args if args is not None else {}
            raise Malformed(f"{key!r} must be an object, got {type(args).__name__}")
    raise Malformed(f"no {' or '.join(repr(k) for k in keys)} key")


def _named(obj: Any, *arg_keys: str, need_args: bool = False) -> RawCall:
    """A call from ``{"name": .., <arg_key>: {..}}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise Malformed("not an object with a \"name\"")
    if not need_args and not any(k in obj for k in arg_keys):
        return obj["name"], {}, None
    return obj["name"], _arguments(obj, *arg_keys), None


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _deep_at(text: str, limit: int = 500) -> int:
    """Where the JSON nesting from the start of ``text`` first goes ``limit`` deep (strings skipped)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(m.group(0), 0)
        if depth >= limit:
            return m.start()
    return len(text)


def _decode(text: str, pos: int) -> tuple[Any, int]:
    """The JSON value at ``pos`` and where it ends. Read through a window that grows only while the
    value may go on past it: json's errors count the lines before their position, so on the whole
    text each failure would cost the text's length. Failures are Malformed with their ``skip``."""
    size = 1024
    while True:
        window = text[pos:pos + size]
        whole = pos + size >= len(text)
        try:
            obj, end = _DECODER.raw_decode(window)
        except RecursionError:   # nesting only deepens with more text: no need to read on
            raise Malformed("JSON nested too deeply", skip=pos + _deep_at(window)) from None
        except json.JSONDecodeError as exc:
            if whole or not (exc.msg.startswith("Unterminated string") or exc.pos >= len(window) - 16):
                raise Malformed(f"not JSON ({exc.msg} at {pos + exc.pos})", skip=pos + exc.pos) from None
        except ValueError as exc:   # NaN, Infinity, out of the float range
            raise Malformed(f"not JSON ({exc})") from None
        else:
            if whole or end < len(window):
                return obj, pos + end
        size *= 4


_SPACE = re.compile(r"\s*")
_BETWEEN = re.compile(r"[\s;,]*")


def _json_objects(text: str, pos: int, *arg_keys: str) -> tuple[list[RawCall], int]:
    """Consecutive ``{"name": .., <arg_key>: ..}`` objects from ``pos`` (``;``/``,``/whitespace
    between), or one JSON list of them; (calls, where they end)."""
    calls: list[RawCall] = []
    pos = _SPACE.match(text, pos).end()   # type: ignore[union-attr]
    while pos < len(text):
        try:
            obj, end = _decode(text, pos)
        except Malformed:
            if calls:
                break
            raise
        for item in (obj if isinstance(obj, list) else [obj]):
            calls.append(_named(item, *arg_keys, need_args=True))
        pos = end
        after = _BETWEEN.match(text, pos).end()   # type: ignore[union-attr]
        if not text.startswith(("{", "["), after):
            break
        pos = after
    if not calls:
        raise Malformed("no call")
    return calls, pos


def _tagged(text: str, opening: re.Pattern, closing: re.Pattern) -> Iterable[tuple[re.Match, str]]:
    """(match of ``opening``, the text up to the next ``closing``) for each element, in order: what
    ``re.findall(opening + "(.*?)" + closing)`` gives, in linear time (that regex looks for the close
    again from every later opening when there is none)."""
    pos = 0
    while (m := opening.search(text, pos)) is not None:
        c = closing.search(text, m.end())
        if c is None:
            return
        yield m, text[m.end():c.start()]
        pos = c.end()


# ----------------------------------------------------------------------------------------------
# The parser base: blocks between markers
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """One kind of tool-call block. With a ``close``, ``body(text, tools)`` gets the text between
    ``open`` (included when ``keep_open``) and the close and returns the calls; without one,
    ``body(text, start, tools)`` gets the whole text and where the block's body starts (its ``open``
    when ``keep_open``, after it otherwise) and returns (calls, where they end): never a copy of the
    rest per block, which is quadratic on an output full of openings."""

    open: str
    close: Optional[str]
    body: Callable[..., Any]
    keep_open: bool = False


#: what a block's parsing may raise on hostile text; the block then stays content
_BAD_BLOCK = (Malformed, ValueError, SyntaxError, TypeError, KeyError, IndexError, RecursionError)


class ToolParser:
    """A format: its blocks, and markers dropped from the content (channel tags)."""

    name: str = ""
    blocks: tuple[Block, ...] = ()
    drop: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def tags(self) -> Optional[tuple[str, str]]:
        """The first (open, close) marker pair, for display; None for formats without one."""
        for b in self.blocks:
            if b.close:
                return b.open, b.close
        return None

    def new_id(self, given: Optional[str]) -> Optional[str]:
        return given

    # ------------------------------------------------------------------ where calls start
    def _next_block(self, text: str, pos: int, nexts: Optional[list[int]] = None) -> Optional[tuple[int, Block]]:
        """(where the next block opens from ``pos``, its kind): the first, the longest marker there.
        ``nexts`` (-2 per kind at first) keeps where each kind opens next over one scan: a marker is
        looked for again only once passed (a find from every block for a marker that is not there
        would read the rest of the text each time)."""
        nexts = nexts if nexts is not None else [-2] * len(self.blocks)
        for n, b in enumerate(self.blocks):
            if nexts[n] != -1 and nexts[n] < pos:
                nexts[n] = text.find(b.open, pos)
        found = [(i, -len(self.blocks[n].open), n) for n, i in enumerate(nexts) if i != -1]
        if not found:
            return None
        i, _, n = min(found)
        return i, self.blocks[n]

    def find_start(self, text: str, at_output_start: bool) -> tuple[Optional[int], int]:
        """(index where a tool-call block starts, or None; how much of ``text`` is surely content).
        ``at_output_start``: only blank text came before ``text`` (formats that call only at the start look)."""
        hit = self._next_block(text, 0)
        if hit is not None:
            return hit[0], hit[0]
        return None, len(text) - partial_suffix(text, tuple(b.open for b in self.blocks) + self.drop)

    def _find_close(self, text: str, pos: int, close: str) -> int:
        return text.find(close, pos)

    # ------------------------------------------------------------------ parsing
    def _region(self, text: str, tools: Optional[list]) -> tuple[list[str], list[RawCall]]:
        """Content pieces and calls of ``text``, scanning block by block."""
        content: list[str] = []
        calls: list[RawCall] = []
        pos, failed = 0, 0
        nexts = [-2] * len(self.blocks)
        while True:
            hit = self._next_block(text, pos, nexts)
            if hit is None:
                content.append(text[pos:])
                if failed > 1:   # one warning per reply, not one per block of a hostile output
                    logger.warning("tool_parser %r: %d more blocks could not be parsed", self.name, failed - 1)
                return content, calls
            i, block = hit
            content.append(text[pos:i])
            start = i if block.keep_open else i + len(block.open)
            try:
                if block.close is None:
                    got, end = block.body(text, start, tools)
                else:
                    j = self._find_close(text, start, block.close)
                    end = len(text) if j == -1 else j + len(block.close)
                    got = block.body(text[start:len(text) if j == -1 else j], tools)
                if not got:
                    raise Malformed("no call in the block")
                calls.extend([_checked(call) for call in got])
            except _BAD_BLOCK as exc:
                # without a close marker the block's end is unknown: the marker becomes content, and
                # the broken JSON after it as far as it was read (openings inside it are part of it)
                if block.close is None:
                    end = max(i + len(block.open), getattr(exc, "skip", None) or 0)
                failed += 1
                if failed == 1:
                    self._warn(exc, text[i:i + 300] if block.close is None else text[i:min(end, i + 300)])
                content.append(text[i:end])
            pos = max(end, i + 1)

    def _warn(self, exc: BaseException, text: str) -> None:
        logger.warning("tool_parser %r: a tool call could not be parsed (%s: %.200s); it stays in the content: "
                       "%.300r", self.name, type(exc).__name__, exc, text)

    def _clean(self, text: str) -> str:
        for marker in self.drop:
            text = text.replace(marker, "")
        return text

    def split(self, text: str, tools: Optional[list] = None) -> tuple[str, list[dict[str, Any]]]:
        """(the content as written, drop markers removed; OpenAI tool calls, ids unique)."""
        try:
            content, raw = self._region(text, tools)
        except Exception as exc:  # never an exception out of a parser: the text stays content
            logger.warning("tool_parser %r failed on this output (%s: %.200s); it stays content",
                           self.name, type(exc).__name__, exc)
            return self._clean(text), []
        calls, ids = [], set()
        for name, args, given in raw:
            call_id = self.new_id(given if given not in ids else None)
            while call_id is None or call_id in ids:   # a model may write one id twice
                call_id = self.new_id(None) or f"call_{uuid.uuid4().hex[:24]}"
            ids.add(call_id)
            calls.append(tool_call(name, args, call_id))
        # drop markers come out of each piece: a marker is never made by joining the text around a call
        return "".join(self._clean(piece) for piece in content), calls

    def parse(self, text: str, tools: Optional[list] = None) -> tuple[Optional[str], list[dict[str, Any]]]:
        """(content, tool calls). With calls the content is trimmed and None when empty; without,
        the text comes back as it was (only drop markers removed)."""
        content, calls = self.split(text, tools)
        if not calls:
            return content, []
        return content.strip() or None, calls


# ----------------------------------------------------------------------------------------------
# The formats
# ----------------------------------------------------------------------------------------------

TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")   # Qwen / Hermes blocks; GLM and MiniMax-M3 write them too
_XML_PARAM = re.compile(r"<parameter=([^<>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)
_NAME = re.compile(r"[\w.\-:/]+")


class QwenParser(ToolParser):
    """``<tool_call>`` blocks holding JSON, or Qwen3-Coder's ``<function=..>`` XML."""

    def __init__(self, name: str = "qwen", tags: tuple[str, str] = TOOL_CALL_TAGS):
        self.name = name
        self.blocks = (Block(tags[0], tags[1], self._body),)

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        body = body.strip()
        m = re.match(r"<function=([^<>\n]+)>(.*?)(?:</function>\s*)?$", body, re.DOTALL)
        if m:
            name = m.group(1).strip()
            pairs = [(k.strip(), v.strip("\n")) for k, v in _XML_PARAM.findall(m.group(2))]
            return [(name, _typed(name, pairs, tools), None)]
        try:
            obj = _DECODER.decode(body)
        except ValueError as exc:
            raise Malformed(f"not JSON ({exc})") from None
        return [_named(obj, "arguments", "parameters")]


def tool_call_shape(parser: Optional[ToolParser]) -> Optional[tuple[Optional[str], Optional[str], str]]:
    """(open tag, close tag, arguments key) of a format whose calls are JSON objects, which a grammar
    can write (tool_choice "required" or a named function); None for the other formats."""
    if isinstance(parser, QwenParser):
        return parser.blocks[0].open, parser.blocks[0].close, "arguments"
    if isinstance(parser, Llama3Parser):
        return None, None, "parameters"
    return None


class Llama3Parser(ToolParser):
    """``{"name": .., "parameters": ..}`` objects, after ``<|python_tag|>`` or bare."""

    name = "llama3"

    def __init__(self) -> None:
        body = lambda text, start, tools: _json_objects(text, start, "parameters", "arguments")  # noqa: E731
        self.blocks = (Block("<|python_tag|>", None, body), Block('{"name"', None, body, keep_open=True))


class Glm4Parser(ToolParser):
    """``NAME\\n{arguments}`` at the start of the reply or after ``<|assistant|>``."""

    name = "glm4"
    # bounded, so that a stream waits for at most a few hundred characters to know (_MAYBE: the
    # beginnings of _CALL) and never re-reads an ever longer start of the reply
    _CALL = re.compile(r"([A-Za-z_][\w.\-]{0,127})[ \t]{0,64}\n\s{0,64}\{")
    _MAYBE = re.compile(r"([A-Za-z_][\w.\-]{0,127})?([ \t]{0,64}(\n\s{0,64})?)?")

    def __init__(self) -> None:
        self.blocks = (Block("<|assistant|>", None, self._body),)

    def _body(self, text: str, pos: int, tools: Optional[list]) -> tuple[list[RawCall], int]:
        calls: list[RawCall] = []
        while True:
            lead = _SPACE.match(text, pos).end()   # type: ignore[union-attr]
            m = self._CALL.match(text, lead)
            if not m:
                break
            try:
                args, end = _decode(text, m.end() - 1)
            except Malformed:
                if calls:
                    break
                raise
            if not isinstance(args, dict):
                raise Malformed("arguments are not a JSON object")
            calls.append((m.group(1), args, None))
            pos = end
        if not calls:
            raise Malformed("not NAME followed by a JSON object on the next line")
        return calls, pos

    def find_start(self, text: str, at_output_start: bool) -> tuple[Optional[int], int]:
        if at_output_start:
            lead = _SPACE.match(text).end()   # type: ignore[union-attr]
            if self._CALL.match(text, lead):
                return lead, lead
            if self._MAYBE.fullmatch(text, lead):
                return None, lead      # could still become a call: wait (the blank before it is content)
        return super().find_start(text, at_output_start)

    def _region(self, text: str, tools: Optional[list]) -> tuple[list[str], list[RawCall]]:
        lead = _SPACE.match(text).end()   # type: ignore[union-attr]
        if self._CALL.match(text, lead):
            try:
                got, end = self._body(text, lead, tools)
                calls = [_checked(call) for call in got]
            except _BAD_BLOCK as exc:
                self._warn(exc, text[lead:lead + 300])
            else:
                content, more = super()._region(text[end:], tools)
                return [text[:lead]] + content, calls + more
        return super()._region(text, tools)


class Glm5Parser(ToolParser):
    """``<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value>…</tool_call>``."""

    name = "glm5"
    _VALUE = re.compile(r"\s*<arg_value>(.*?)</arg_value>", re.DOTALL)

    def __init__(self) -> None:
        self.blocks = (Block(*TOOL_CALL_TAGS, self._body),)

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        head, _, _ = body.partition("<arg_key>")
        name = head.strip()
        if not _NAME.fullmatch(name):
            raise Malformed(f"{name[:40]!r} is not a function name")
        pairs, pos = [], 0
        while (k := body.find("<arg_key>", pos)) != -1 and (e := body.find("</arg_key>", k)) != -1:
            value = self._VALUE.match(body, e + len("</arg_key>"))
            if value is None:
                raise Malformed("an <arg_key> without its <arg_value>")
            pairs.append((body[k + len("<arg_key>"):e].strip(), value.group(1).strip()))
            pos = value.end()
        return [(name, _typed(name, pairs, tools), None)]


# DeepSeek special tokens
_DS_CALLS, _DS_CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
_DS_CALL, _DS_CALL_END, _DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"


def _ds_item(body: str) -> RawCall:
    """One ``<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`` item in any of the R1 / V3 / V3.1 forms."""
    if _DS_SEP not in body:
        return _named(_json_object(body), "parameters", "arguments", need_args=True)
    left, _, right = body.partition(_DS_SEP)
    left = left.strip()
    if left == "function" and "\n" in right.strip():
        name, _, args = right.strip().partition("\n")
    else:
        name, args = left, right
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise Malformed(f"{name[:40]!r} is not a function name")
    obj = _json_object(args)
    if not isinstance(obj, dict):
        raise Malformed("arguments are not a JSON object")
    return name, obj, None


def _ds_section(body: str, tools: Optional[list]) -> list[RawCall]:
    calls = []
    for part in body.split(_DS_CALL)[1:] if _DS_CALL in body else [body]:
        item, _, tail = part.partition(_DS_CALL_END)
        if tail.strip():
            raise Malformed(f"text between the calls: {tail.strip()[:40]!r}")
        calls.append(_ds_item(item))
    if body.split(_DS_CALL)[0].strip() and _DS_CALL in body:
        raise Malformed("text before the first call")
    return calls


_DS_BLOCKS = (Block(_DS_CALLS, _DS_CALLS_END, _ds_section),
              Block(_DS_CALL, _DS_CALL_END, lambda body, tools: [_ds_item(body)]))


class DeepSeekParser(ToolParser):
    """DeepSeek's ``<｜tool▁calls▁begin｜>`` token format (R1, V3, V3.1 items), optionally with DSML
    sections (V3.2, V4, V4.1) and fenced / bare JSON (the V3 catalog template)."""

    def __init__(self, name: str, dsml: Optional[tuple[str, str, str]] = None, plain: bool = False,
                 tokens: bool = True, bare_json: bool = False):
        self.name = name
        blocks: list[Block] = []
        if dsml is not None:
            tag, prefix, close_prefix = dsml
            for p, c in ((prefix, close_prefix),) + ((("<", ""),) if plain else ()):
                blocks.append(Block(f"{p}{tag}>", f"</{c}{tag}>", self._dsml_body(p, c)))
        if tokens:
            blocks.extend(_DS_BLOCKS)
        if bare_json:
            json_body = lambda text, start, tools: _json_objects(text, start, "parameters", "arguments")  # noqa: E731
            blocks.append(Block("```json", "```", lambda body, tools: json_body(body, 0, tools)[0]))
            blocks.append(Block('{"name"', None, json_body, keep_open=True))
        self.blocks = tuple(blocks)

    @staticmethod
    def _dsml_body(p: str, c: str) -> Callable[[str, Optional[list]], list[RawCall]]:
        invoke = re.compile(re.escape(p) + r'invoke\s+name="([^"<>]+)"\s*>')
        invoke_end = re.compile(re.escape(f"</{c}invoke>"))
        param = re.compile(re.escape(p) + r'parameter\s+name="([^"<>]+)"(?:\s+string="(true|false)")?\s*>')
        param_end = re.compile(re.escape(f"</{c}parameter>"))

        def body(text: str, tools: Optional[list]) -> list[RawCall]:
            calls = []
            for m, inner in _tagged(text, invoke, invoke_end):
                name = m.group(1)
                types = _param_types(tools, name)
                args: dict[str, Any] = {}
                for pm, value in _tagged(inner, param, param_end):
                    key, is_string = pm.group(1), pm.group(2)
                    if is_string == "true":
                        args[key] = value
                    else:
                        args[key] = _value(value.strip(), None if is_string == "false" else types.get(key))
                calls.append((name, args, None))
            return _some_invoked(calls)

        return body


_INVOKE, _INVOKE_END = re.compile(r"<invoke\s+name=[\"']([^\"'<>]+)[\"']\s*>"), re.compile("</invoke>")
_PARAM, _PARAM_END = re.compile(r"<parameter\s+name=[\"']([^\"'<>]+)[\"']\s*>"), re.compile("</parameter>")


def _some_invoked(calls: list[RawCall]) -> list[RawCall]:
    """The calls of an invoke-style block; Malformed when it held no ``invoke`` at all."""
    if not calls:
        raise Malformed("no invoke block")
    return calls


def _invokes(text: str) -> list[tuple[str, str]]:
    """(name, inner text) of each ``<invoke name="..">…</invoke>``."""
    return [(m.group(1), inner) for m, inner in _tagged(text, _INVOKE, _INVOKE_END)]


def _params(text: str) -> list[tuple[str, str]]:
    """(name, stripped value) of each ``<parameter name="..">…</parameter>``."""
    return [(m.group(1), inner.strip()) for m, inner in _tagged(text, _PARAM, _PARAM_END)]


class MiniMaxParser(ToolParser):
    """``<minimax:tool_call><invoke name=..><parameter name=..>v</parameter></invoke>…``."""

    name = "minimax"

    def __init__(self) -> None:
        self.blocks = (Block("<minimax:tool_call>", "</minimax:tool_call>", self._body),)

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        calls = [(name, _typed(name, _params(inner), tools), None) for name, inner in _invokes(body)]
        return _some_invoked(calls)


class MiniMaxM3Parser(ToolParser):
    """MiniMax-M3: invokes whose arguments are nested XML elements."""

    name = "minimax_m3"
    NS = "]<]minimax[>["

    def __init__(self) -> None:
        ns = self.NS
        self.blocks = (Block("<minimax:tool_call>", "</minimax:tool_call>", self._body),
                       Block(*(ns + tag for tag in TOOL_CALL_TAGS), self._body),
                       Block(*TOOL_CALL_TAGS, self._body))

    def _element(self, el: Any, declared: Any = None) -> Any:
        children = list(el)
        if not children:
            return _value((el.text or "").strip(), declared)
        if all(c.tag == "item" for c in children):
            return [self._element(c) for c in children]
        return self._merge((c.tag, self._element(c)) for c in children)

    @staticmethod
    def _merge(pairs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        repeated: set[str] = set()
        for key, value in pairs:
            if key not in out:
                out[key] = value
            elif key in repeated:
                out[key].append(value)
            else:
                out[key] = [out[key], value]
                repeated.add(key)
        return out

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        import xml.etree.ElementTree as ET

        calls = []
        for name, inner in _invokes(body.replace(self.NS, "")):
            types = _param_types(tools, name)
            escaped = re.sub(r"&(?!amp;|lt;|gt;|quot;|apos;|#[0-9]+;|#x[0-9A-Fa-f]+;)", "&amp;", inner)
            try:
                root = ET.fromstring(f"<root>{escaped}</root>")
            except ET.ParseError:
                args = _typed(name, _params(inner), tools)
            else:
                args = self._merge(((el.get("name") if el.tag == "parameter" and el.get("name") else el.tag),
                                    self._element(el, types.get(el.get("name") or el.tag))) for el in root)
            calls.append((name, args, None))
        return _some_invoked(calls)


class GemmaParser(ToolParser):
    """Gemma 4 ``<|tool_call>call:NAME{..}<tool_call|>`` and Gemma 3 ```tool_code``` Python calls."""

    name = "gemma"
    Q = '<|"|>'

    def __init__(self) -> None:
        self.blocks = (Block("<|tool_call>", "<tool_call|>", self._body),
                       Block("```tool_code", "```", self._tool_code))

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        m = re.match(r"\s*call\s*:\s*([^{\s]+)\s*", body)
        if not m:
            raise Malformed("no 'call:NAME'")
        rest = body[m.end():].strip()
        if not rest:
            return [(m.group(1), {}, None)]
        args, end = self._gemma_value(rest, 0)
        if not isinstance(args, dict) or rest[end:].strip():
            raise Malformed("arguments are not one {..} object")
        return [(m.group(1), args, None)]

    def _gemma_value(self, s: str, i: int) -> tuple[Any, int]:
        while i < len(s) and s[i].isspace():
            i += 1
        if s.startswith(self.Q, i):
            j = s.find(self.Q, i + len(self.Q))
            if j == -1:
                raise Malformed("unterminated string")
            return s[i + len(self.Q):j], j + len(self.Q)
        if i < len(s) and s[i] == '"':
            return _DECODER.raw_decode(s, i)
        if i < len(s) and s[i] in "{[":
            closing, items, out = ("}" if s[i] == "{" else "]"), [], {}
            i += 1
            while True:
                while i < len(s) and (s[i].isspace() or s[i] == ","):
                    i += 1
                if i >= len(s):
                    raise Malformed("unterminated object")
                if s[i] == closing:
                    return (out if closing == "}" else items), i + 1
                if closing == "}":
                    if s.startswith(self.Q, i) or s[i] == '"':
                        key, i = self._gemma_value(s, i)
                        colon = s.find(":", i)
                    else:
                        colon = s.find(":", i)
                        key = s[i:colon].strip()
                    if colon == -1 or not key:
                        raise Malformed("a key without ':'")
                    out[key], i = self._gemma_value(s, colon + 1)
                else:
                    value, i = self._gemma_value(s, i)
                    items.append(value)
        m = re.compile(r"[^,}\]]*").match(s, i)
        token = m.group(0).strip() if m else ""
        return _value(token, None), (m.end() if m else i)

    def _tool_code(self, body: str, tools: Optional[list]) -> list[RawCall]:
        import ast

        tree = ast.parse(body.strip())
        calls: list[RawCall] = []
        for stmt in tree.body:
            if not isinstance(stmt, ast.Expr):
                raise Malformed("not a call expression")
            nodes = stmt.value.elts if isinstance(stmt.value, (ast.List, ast.Tuple)) else [stmt.value]
            for node in nodes:
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                        and len(node.args) == 1 and isinstance(node.args[0], ast.Call)):
                    node = node.args[0]
                if not isinstance(node, ast.Call) or node.args or any(k.arg is None for k in node.keywords):
                    raise Malformed("only calls with keyword arguments are tool calls")
                name = ast.unparse(node.func)
                if not _NAME.fullmatch(name):
                    raise Malformed(f"{name[:40]!r} is not a function name")
                calls.append((name, {k.arg: ast.literal_eval(k.value) for k in node.keywords}, None))
        return calls


class KimiK3Parser(ToolParser):
    """Kimi-K3 channels: ``<|open|>tools<|sep|>…<|close|>tools<|sep|>``."""

    name = "kimi-k3"
    drop = ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>")
    _CALL, _CALL_END = re.compile(r"<\|open\|>\s*call\s+([^<]*)<\|sep\|>"), re.compile(r"<\|close\|>\s*call\s*<\|sep\|>")
    _ARG = re.compile(r"<\|open\|>\s*argument\s+([^<]*)<\|sep\|>")
    _ARG_END = re.compile(r"<\|close\|>\s*argument\s*<\|sep\|>")
    _ATTR = re.compile(r'(\w+)="([^"]*)"')

    def __init__(self) -> None:
        self.blocks = (Block("<|open|>tools<|sep|>", "<|close|>tools<|sep|>", self._body),)

    def _attrs(self, text: str) -> dict[str, str]:
        return {k: v.replace("&quot;", '"').replace("&amp;", "&") for k, v in self._ATTR.findall(text)}

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        calls = []
        for m, inner in _tagged(body, self._CALL, self._CALL_END):
            name = self._attrs(m.group(1)).get("tool")
            if not name:
                raise Malformed("a call without tool=")
            args: dict[str, Any] = {}
            for am, value in _tagged(inner, self._ARG, self._ARG_END):
                a = self._attrs(am.group(1))
                if not a.get("key"):
                    raise Malformed("an argument without key=")
                args[a["key"]] = value if a.get("type", "string") == "string" else _value(value, None)
            calls.append((name, args, None))
        return calls


class KimiK2Parser(ToolParser):
    """Kimi-K2: ``<|tool_call_begin|>functions.NAME:i<|tool_call_argument_begin|>{..}<|tool_call_end|>``."""

    name = "kimi-k2"
    _ITEM = re.compile(r"<\|tool_call_begin\|>\s*([^\s<]+)\s*<\|tool_call_argument_begin\|>(.*?)"
                       r"(?:<\|tool_call_end\|>|$)", re.DOTALL)

    def __init__(self) -> None:
        self.blocks = (Block("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", self._body),)

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        calls = []
        for call_id, args in self._ITEM.findall(body):
            name = call_id.split(":")[0]
            name = name[len("functions."):] if name.startswith("functions.") else name
            obj = _json_object(args)
            if not isinstance(obj, dict) or not name:
                raise Malformed("arguments are not a JSON object")
            calls.append((name, obj, call_id))
        return calls


class MiniCPM5Parser(ToolParser):
    """``<function name=".."><param name="..">v</param></function>``, values maybe in CDATA."""

    name = "minicpm5"
    _HEAD = re.compile(r"\s*['\"]([^'\"]+)['\"]\s*>")
    _PARAM_OPEN = re.compile(r"<param\s+name=['\"]([^'\"<>]+)['\"]\s*>")

    def __init__(self) -> None:
        self.blocks = (Block("<function name=", "</function>", self._body),)

    def _find_close(self, text: str, pos: int, close: str) -> int:
        """The close tag, passing over CDATA sections (a value may hold ``</function>``)."""
        j = text.find(close, pos)
        while True:
            if j != -1 and j < pos:   # that one was inside the CDATA: the next (found once per section)
                j = text.find(close, pos)
            cdata = text.find("<![CDATA[", pos, j)
            if j == -1 or cdata == -1 or j < cdata:
                return j
            end = text.find("]]>", cdata)
            if end == -1:
                return -1
            pos = end + 3

    def _body(self, body: str, tools: Optional[list]) -> list[RawCall]:
        m = self._HEAD.match(body)
        if not m:
            raise Malformed("no name=\"..\">")
        name, types, args, pos = m.group(1), _param_types(tools, m.group(1)), {}, m.end()
        while (p := self._PARAM_OPEN.search(body, pos)) is not None:
            end = self._find_close(body, p.end(), "</param>")
            if end == -1:
                raise Malformed("a <param> without </param>")
            raw = body[p.end():end].strip()
            if raw.startswith("<![CDATA[") and raw.endswith("]]>"):
                args[p.group(1)] = raw[len("<![CDATA["):-3]
            else:
                args[p.group(1)] = _value(raw, types.get(p.group(1)))
            pos = end + len("</param>")
        return [(name, args, None)]


class MistralParser(ToolParser):
    """``[TOOL_CALLS][{..}, ..]`` and ``[TOOL_CALLS]NAME[ARGS]{..}``."""

    name = "mistral"
    _ALNUM = string.ascii_letters + string.digits

    def __init__(self) -> None:
        self.blocks = (Block("[TOOL_CALLS]", None, self._body),
                       Block('[{"name"', None, self._body, keep_open=True))

    def new_id(self, given: Optional[str]) -> str:
        if isinstance(given, str) and len(given) == 9 and given.isalnum():
            return given
        return "".join(random.choices(self._ALNUM, k=9))   # Mistral templates refuse other ids

    def _body(self, text: str, start: int, tools: Optional[list]) -> tuple[list[RawCall], int]:
        lead = _SPACE.match(text, start).end()   # type: ignore[union-attr]
        if text.startswith(("[", "{"), lead):
            obj, end = _decode(text, lead)
            calls = []
            for item in (obj if isinstance(obj, list) else [obj]):
                name, args, _ = _named(item, "arguments", "parameters", need_args=True)
                calls.append((name, args, item.get("id") if isinstance(item.get("id"), str) else None))
            return calls, end
        m = re.compile(r"([\w.\-:/]+)(?:\[CALL_ID\](\w+))?\[ARGS\]").match(text, lead)
        if not m:
            raise Malformed("neither a JSON list nor NAME[ARGS]{..}")
        args, end = _decode(text, m.end())
        if not isinstance(args, dict):
            raise Malformed("arguments are not a JSON object")
        return [(m.group(1), args, m.group(2))], end


# ----------------------------------------------------------------------------------------------
# The names
# ----------------------------------------------------------------------------------------------

def _dsml(name: str, tag: str, space: str = "", plain: bool = True, tokens: bool = False) -> DeepSeekParser:
    return DeepSeekParser(name, dsml=(tag, f"<｜DSML｜{space}", f"｜DSML｜{space}"), plain=plain, tokens=tokens)


_FACTORIES: dict[str, Callable[[], ToolParser]] = {
    "qwen": QwenParser,
    "hermes": lambda: QwenParser("hermes"),
    "llama3": Llama3Parser,
    "glm4": Glm4Parser,
    "glm5": Glm5Parser,
    "deepseek-r1": lambda: DeepSeekParser("deepseek-r1"),
    "deepseek_v3": lambda: DeepSeekParser("deepseek_v3", bare_json=True),
    "deepseek-v3.1": lambda: DeepSeekParser("deepseek-v3.1"),
    "deepseek-v3.2": lambda: _dsml("deepseek-v3.2", "function_calls", tokens=True),
    "deepseek-v4": lambda: _dsml("deepseek-v4", "tool_calls"),
    "deepseek-v4.1": lambda: _dsml("deepseek-v4.1", "calls", space=" ", plain=False),
    "minimax": MiniMaxParser,
    "minimax_m3": MiniMaxM3Parser,
    "gemma": GemmaParser,
    "kimi-k3": KimiK3Parser,
    "kimi-k2": KimiK2Parser,
    "minicpm5": MiniCPM5Parser,
    "mistral": MistralParser,
}

#: every accepted ``tool_parser`` value (spec validation lists these)
TOOL_PARSER_NAMES: tuple[str, ...] = tuple(_FACTORIES)

_PARSERS: dict[str, ToolParser] = {}   # parsers hold no state: one each, made on first use

#: (marker in a chat template, parser), first match wins: the more specific markers first
TEMPLATE_MARKERS: tuple[tuple[str, str], ...] = (
    ("<arg_key>", "glm5"),
    (MiniMaxM3Parser.NS, "minimax_m3"),
    ("<minimax:tool_call>", "minimax"),
    ("<｜DSML｜ calls>", "deepseek-v4.1"),
    ("｜DSML｜tool_calls", "deepseek-v4"),
    ("｜DSML｜function_calls", "deepseek-v3.2"),
    (_DS_CALLS, "deepseek-v3.1"),
    ("<|tool_calls_section_begin|>", "kimi-k2"),
    ("<|open|>tools<|sep|>", "kimi-k3"),
    ("<|tool_call>", "gemma"),
    ("[TOOL_CALLS]", "mistral"),
    ("<function name=", "minicpm5"),
    ("<|python_tag|>", "llama3"),
    (TOOL_CALL_TAGS[0], "qwen"),
)


def get_tool_parser(name: str) -> ToolParser:
    """The parser called ``name``; a SpecError listing the known names otherwise."""
    if name not in _FACTORIES:
        raise SpecError([FieldIssue("tool_parser", unknown_tool_parser_message(name))], model_type="LLM")
    if name not in _PARSERS:
        _PARSERS[name] = _FACTORIES[name]()
    return _PARSERS[name]


def unknown_tool_parser_message(name: Any) -> str:
    return f"{name!r} is not a known tool parser; use one of {list(TOOL_PARSER_NAMES)}"


def detect_tool_parser(template: Optional[str]) -> Optional[str]:
    """The parser whose call marker ``template`` writes; None when it writes none we know."""
    for marker, name in TEMPLATE_MARKERS:
        if template and marker in template:
            return name
    return None


# ----------------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------------

class ToolCallStream:
    """One streamed reply through a parser: ``feed`` returns the content safe to send now (text
    before the format's start marker); from the marker on the text is ``held``; ``finish`` parses it."""

    def __init__(self, parser: ToolParser, tools: Optional[list] = None):
        self.parser = parser
        self.tools = tools
        self._held: Optional[list[str]] = None   # pieces, joined once (a str += per token is quadratic)
        self._pending = ""
        self._blank = True        # all the content passed on so far is blank (the reply's start)
        self._sent = False        # some non-empty content went out

    @property
    def held(self) -> Optional[str]:
        """The text from the start marker on (None while there is none)."""
        return None if self._held is None else "".join(self._held)

    def _out(self, text: str) -> str:
        self._blank = self._blank and not text.strip()
        text = self.parser._clean(text)
        self._sent = self._sent or bool(text)
        return text

    def feed(self, text: str) -> str:
        if self._held is not None:
            self._held.append(text)
            return ""
        pending, self._pending = self._pending + text, ""
        start, safe = self.parser.find_start(pending, at_output_start=self._blank)
        if start is not None:
            self._held = [pending[start:]]
            return self._out(pending[:start])
        self._pending = pending[safe:]
        return self._out(pending[:safe])

    def flush(self) -> str:
        """The text kept back for a marker that never came (end of the reply)."""
        pending, self._pending = self._pending, ""
        return self._out(pending) if pending else ""

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(content still to send, tool calls) of the held text: the same split as a whole reply."""
        held = self.held
        if held is None:
            return "", []
        content, calls = self.parser.split(held, self.tools)
        if not calls:
            return content, []
        return (content.rstrip() if self._sent else content.strip()), calls
