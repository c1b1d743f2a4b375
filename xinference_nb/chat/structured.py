"""Structured outputs: what a request asks the reply to be, and the reply read back as that.

    constraint = constraint_of(config)        # None, or a Constraint from response_format / guided_*
    parsed, why = parse_reply(text, constraint, finish_reason)

A request names one constraint, in OpenAI's or vLLM's words:

- ``response_format``: ``{"type": "text"}`` (none), ``{"type": "json_object"}`` (any JSON object),
  ``{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}``, or, in the
  kernel, a pydantic model class (its JSON schema; ``message["parsed"]`` is the validated instance);
- vLLM's extra-body fields (the names Xinference's vLLM engine passes on): ``guided_json`` (a schema,
  as a dict or JSON text), ``guided_regex``, ``guided_choice`` (a list of strings), ``guided_grammar``
  (a Lark grammar, or GBNF when it has ``::=``), ``guided_json_object: true``.

The engines enforce it while decoding (engines/structured.py: a token mask on the logits), never by
retrying. Everything here is pure Python (no torch, no llguidance): shapes, limits, and reading a
reply back. ``Constraint.start_after`` is the reasoning end tag when the chat template opened a
reasoning block: the thinking stays free and the constraint starts after the tag.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InferenceError

# what one request may ask for: a schema or grammar this big compiles in well under a second
MAX_CONSTRAINT_CHARS = 200_000
MAX_CHOICES = 1_000
GUIDED_KEYS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_json_object")
# vLLM's two options of its guided decoding (Xinference's vLLM engine passes them on): the one backend
# here is llguidance (vLLM calls it "guidance"); the whitespace pattern applies to JSON constraints
GUIDED_BACKENDS = ("auto", "guidance", "llguidance")
CONSTRAINT_KEYS = ("response_format",) + GUIDED_KEYS
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
# JSON schema of "any JSON object" (response_format json_object)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Constraint:
    """What the reply must be. ``kind``: "json_schema" (``value`` the schema dict), "regex" (a
    pattern the whole reply matches), "choice" (``value`` a tuple of strings), "grammar" (Lark or
    GBNF text). ``model``: the pydantic class the schema came from (in-kernel only);
    ``start_after``: free text up to and including this tag (a reasoning block), then the constraint.
    "tool_calls" (``tool_call_constraint``): ``value`` holds the format's tags, the calls' schema and
    whether several calls may follow each other."""

    kind: str
    value: Any
    name: Optional[str] = None
    model: Any = None
    start_after: Optional[str] = None
    source: str = "response_format"    # the request field it came from, for error messages
    whitespace: Optional[str] = None   # JSON kinds: the regex of the blanks allowed between tokens

    def key(self) -> str:
        """The compiled grammar's cache key: the same constraint, the same key."""
        return json.dumps([self.kind, self.value, self.whitespace], sort_keys=True, separators=(",", ":"),
                          default=str)

    def describe(self) -> str:
        return {"json_schema": f"JSON schema {self.name!r}" if self.name else "a JSON schema",
                "regex": "a regular expression", "choice": "one of the given choices",
                "grammar": "a grammar", "tool_calls": "a tool call"}[self.kind]


def is_pydantic_model(value: Any) -> bool:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a dependency
        return False
    return isinstance(value, type) and issubclass(value, BaseModel)


def model_schema(model: Any) -> dict[str, Any]:
    """The JSON schema a pydantic class is generated with: its own, with ``additionalProperties: false``
    on every object that does not say (as OpenAI's strict mode does; pydantic's default ``extra="ignore"``
    drops unknown keys on validation anyway, so forbidding them loses nothing and keeps a model from
    inventing keys until max_tokens)."""
    def close(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: close(v) for k, v in node.items()}
            if "oneOf" in out and "discriminator" in out:   # a tagged union: its branches never overlap,
                out["anyOf"] = out.pop("oneOf")              # so anyOf is the same (and llguidance enforces it)
            if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [close(v) for v in node]
        return node
    return close(model.model_json_schema())


def _size_check(field: str, text: str) -> None:
    if len(text) > MAX_CONSTRAINT_CHARS:
        raise InferenceError(f"{field} is {len(text):,} characters; at most {MAX_CONSTRAINT_CHARS:,} are accepted "
                             "(a constraint that large would take too long to compile)")


def _schema(field: str, schema: Any) -> dict[str, Any]:
    """A JSON schema given as a dict, JSON text or a boolean-free object; InferenceError otherwise."""
    if isinstance(schema, str):
        _size_check(field, schema)
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise InferenceError(f"{field} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise InferenceError(f"{field} must be a JSON schema object, got {type(schema).__name__} {schema!r:.60}")
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"{field} is not JSON: {exc}") from None
    _size_check(field, text)
    return schema


def _response_format(value: Any) -> Optional[Constraint]:
    if is_pydantic_model(value):
        return Constraint("json_schema", model_schema(value), name=value.__name__, model=value)
    if not isinstance(value, dict):
        raise InferenceError("response_format must be an object such as {'type': 'json_object'} or "
                             "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} (in the kernel also "
                             f"a pydantic model class), got {type(value).__name__} {value!r:.60}")
    kind = value.get("type")
    if kind not in RESPONSE_FORMAT_TYPES:
        raise InferenceError(f"response_format['type'] must be one of {', '.join(map(repr, RESPONSE_FORMAT_TYPES))}, "
                             f"got {kind!r:.60}")
    extra = sorted(set(value) - {"type", "json_schema"} if kind == "json_schema" else set(value) - {"type"})
    if extra:
        raise InferenceError(f"response_format of type {kind!r} has unknown key{'s' if len(extra) > 1 else ''} "
                             f"{', '.join(map(repr, extra))}")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_schema", ANY_OBJECT, name=None)
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise InferenceError("response_format['json_schema'] must be an object {'name': ..., 'schema': {...}, "
                             f"'strict': true}}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if unknown:
        raise InferenceError(f"response_format['json_schema'] has unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; it takes name, schema, strict and description")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise InferenceError(f"response_format['json_schema']['name'] must be a string, got {type(name).__name__}")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise InferenceError("response_format['json_schema']['strict'] must be true or false")
    if "schema" not in spec:
        raise InferenceError("response_format['json_schema'] needs 'schema' (the JSON schema the reply follows)")
    return Constraint("json_schema", _schema("response_format['json_schema']['schema']", spec["schema"]), name=name)


def _guided(key: str, value: Any) -> Optional[Constraint]:
    if key == "guided_json":
        if is_pydantic_model(value):
            return Constraint("json_schema", model_schema(value), name=value.__name__, model=value, source=key)
        return Constraint("json_schema", _schema(key, value), source=key)
    if key == "guided_json_object":
        if not isinstance(value, bool):
            raise InferenceError(f"guided_json_object must be true or false, got {type(value).__name__}")
        return Constraint("json_schema", ANY_OBJECT, source=key) if value else None
    if key == "guided_choice":
        if (not isinstance(value, (list, tuple)) or not value or len(value) > MAX_CHOICES
                or not all(isinstance(c, str) and c for c in value)):
            raise InferenceError(f"guided_choice must be a list of 1 to {MAX_CHOICES} non-empty strings, "
                                 f"got {value!r:.80}")
        _size_check(key, "".join(value))
        return Constraint("choice", tuple(value), source=key)
    if not isinstance(value, str) or not value:
        raise InferenceError(f"{key} must be a non-empty string, got {type(value).__name__} {value!r:.60}")
    _size_check(key, value)
    return Constraint("regex" if key == "guided_regex" else "grammar", value, source=key)


def constraint_of(fields: Any) -> Optional[Constraint]:
    """The constraint a generate_config (a dict or ``GenerateConfig``) asks for, or None; an
    InferenceError for a malformed one or for two of them in one request."""
    asked = [(k, fields.get(k)) for k in CONSTRAINT_KEYS if fields.get(k) is not None]
    found = [(k, c) for k, c in ((k, _response_format(v) if k == "response_format" else _guided(k, v))
                                  for k, v in asked) if c is not None]
    if len(found) > 1:
        raise InferenceError(f"{' and '.join(k for k, _ in found)} both constrain the reply; send one of them")
    backend = fields.get("guided_decoding_backend")
    if backend is not None and backend not in GUIDED_BACKENDS:
        raise InferenceError(f"guided_decoding_backend={backend!r:.60}: this server decodes with llguidance; it "
                             f"accepts {', '.join(map(repr, GUIDED_BACKENDS))} (or leave it out)")
    blanks = fields.get("guided_whitespace_pattern")
    if blanks is not None:
        if not found or found[0][1].kind != "json_schema":
            raise InferenceError("guided_whitespace_pattern applies to a JSON constraint (response_format, "
                                 "guided_json, guided_json_object); the request has none")
        if not isinstance(blanks, str) or len(blanks) > 1000:
            raise InferenceError("guided_whitespace_pattern must be a regular expression of at most 1000 characters")
        return dataclasses.replace(found[0][1], whitespace=blanks)
    return found[0][1] if found else None


def check_constraint_field(key: str, value: Any) -> Any:
    """``value`` when it is a well-formed ``key`` (one of CONSTRAINT_KEYS); InferenceError otherwise."""
    if value is not None:
        _response_format(value) if key == "response_format" else _guided(key, value)
    return value


def wire_form(value: Any) -> Any:
    """A constraint field as it travels over HTTP: a pydantic class becomes OpenAI's json_schema form."""
    if is_pydantic_model(value):
        return {"type": "json_schema", "json_schema": {"name": value.__name__, "schema": model_schema(value),
                                                       "strict": True}}
    return value


def parse_reply(text: Optional[str], constraint: Optional[Constraint], finish_reason: str
                ) -> tuple[Any, Optional[str]]:
    """(the reply read as its constraint, None) or (None, why not). JSON kinds give the parsed value
    (a pydantic instance when the constraint came from a model class), the others the text."""
    if constraint is None:
        return None, None
    if finish_reason == "length":
        return None, ("the reply hit max_tokens before it completed " + constraint.describe()
                      + "; raise max_tokens")
    if text is None:
        return None, "the reply has no content (it was a tool call)"
    if constraint.kind != "json_schema":
        return text, None
    try:
        if constraint.model is not None:
            return constraint.model.model_validate_json(text), None
        return json.loads(text), None
    except Exception as exc:  # noqa: BLE001 - a stop string cut it, or a schema feature not enforced
        return None, f"the reply is not valid for {constraint.describe()}: {type(exc).__name__}: {str(exc)[:200]}"


# ----------------------------------------------------------------------------------------------
# tool_choice "required" / a named function: a grammar of the model's own tool-call format
# ----------------------------------------------------------------------------------------------

def _call_schema(tool: dict[str, Any], args_key: str) -> dict[str, Any]:
    fn = tool.get("function") or {}
    params = fn.get("parameters") or {"type": "object"}
    return {"type": "object", "properties": {"name": {"const": fn.get("name")}, args_key: params},
            "required": ["name", args_key], "additionalProperties": False}


def tool_call_constraint(tools: list[dict[str, Any]], tool_choice: Any, parallel: bool, *,
                         open_tag: Optional[str], close_tag: Optional[str], args_key: str) -> Constraint:
    """The grammar of a reply that is only tool calls (one when ``parallel`` is False), each a call of
    one of ``tools`` (of the named one for ``{"type": "function", "function": {"name": ...}}``) whose
    arguments follow that tool's parameters schema, written as the model's format writes them:
    ``open_tag`` JSON ``close_tag`` blocks, or bare JSON objects when the format has no tags."""
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        chosen = [t for t in tools if (t.get("function") or {}).get("name") == name]
        if not chosen:
            names = ", ".join(repr((t.get("function") or {}).get("name")) for t in tools)
            raise InferenceError(f"tool_choice names function {name!r}, which is not among the request's tools "
                                 f"({names})")
    else:
        chosen = tools
    schema: dict[str, Any] = ({"anyOf": [_call_schema(t, args_key) for t in chosen]} if len(chosen) > 1
                              else _call_schema(chosen[0], args_key))
    return Constraint("tool_calls", {"open": open_tag, "close": close_tag, "schema": schema, "parallel": parallel},
                      source="tool_choice")
