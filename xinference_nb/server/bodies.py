"""Request bodies and the helpers that read what a request sent.

The bodies are typed for /openapi.json; extra keys are kept (``extras``) and passed on. Strict: JSON
types are taken as sent (no "true" -> True, no true -> 1, no "3" -> 3) and numbers are finite.
Everything here refuses with ``InferenceError`` (a 400 naming the field), and needs no app.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar, Literal, Optional, Union

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InferenceError


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class LaunchBody(_Body):
    model_name: str
    model_type: str = "LLM"
    model_engine: Optional[str] = None
    model_uid: Optional[str] = None
    model_format: Optional[str] = None
    model_size_in_billions: Optional[Union[int, float, str]] = None
    quantization: Optional[str] = None
    model_path: Optional[str] = None
    replica: Optional[int] = 1
    n_gpu: Optional[Union[int, str]] = "auto"
    gpu_idx: Optional[Union[int, list[int]]] = None


class DownloadBody(_Body):
    """``download_model``'s fields; nothing else (a launch option has no meaning for a download)."""
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model_name: str
    model_type: str = "LLM"
    model_engine: Optional[str] = None
    model_format: Optional[str] = None
    model_size_in_billions: Optional[Union[int, float, str]] = None
    quantization: Optional[str] = None
    revision: Optional[str] = None


class RegisterBody(_Body):
    model: Union[str, dict[str, Any]]
    persist: bool = False
    worker_ip: Optional[str] = None
    overwrite: bool = False


class AutoRegisterBody(_Body):
    model_path: str
    model_family: Optional[str] = None


class _GenerateBody(_Body):
    """The sampling fields that completions and chat requests share, typed here for /openapi.json. The
    body becomes one checked ``chat.GenerateConfig`` (``openai.to_generate_config``: OpenAI's fields
    mapped, then every generate_config key and range checked once) that the route hands the model."""

    call_fields: ClassVar[tuple[str, ...]] = ("model",)   # what the route hands the call apart
    chat: ClassVar[bool] = False                           # a chat template reads the thinking fields
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None


class CompletionBody(_GenerateBody):
    call_fields: ClassVar[tuple[str, ...]] = ("model", "prompt")
    model: str
    prompt: Union[str, list[str]]


class ChatBody(_GenerateBody):
    call_fields: ClassVar[tuple[str, ...]] = ("model", "messages", "tools")
    chat: ClassVar[bool] = True
    model: str
    messages: list[dict[str, Any]]
    tools: Optional[list[dict[str, Any]]] = None


class EmbeddingBody(_Body):
    model: str
    input: Union[str, list[str], list[int], list[list[int]], dict[str, Any], list[dict[str, Any]]]
    encoding_format: Optional[Literal["float", "base64"]] = "float"
    dimensions: Optional[int] = None


class RerankBody(_Body):
    model: str
    query: Union[str, dict[str, Any]]
    documents: list[Union[str, dict[str, Any]]]
    top_n: Optional[int] = Field(default=None, ge=1)
    max_chunks_per_doc: Optional[int] = None
    return_documents: Optional[bool] = None
    return_len: Optional[bool] = None
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class ImageBody(_Body):
    model: str
    prompt: Union[str, list[str]]
    n: int = Field(default=1, ge=1, le=10)
    size: Optional[str] = "1024*1024"
    response_format: Optional[str] = "url"
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class SpeechBody(_Body):
    model: str
    input: str
    voice: Optional[Union[str, dict[str, Any]]] = ""
    response_format: Optional[str] = "mp3"
    speed: Optional[float] = 1.0
    stream: Optional[bool] = False
    kwargs: Optional[Union[str, dict[str, Any]]] = None


class FlexibleBody(_Body):
    model: str
    args: Optional[list[Any]] = None


# ------------------------------------------------------------------------------------------------
# Reading what was sent
# ------------------------------------------------------------------------------------------------

def extras(body: BaseModel) -> dict[str, Any]:
    """The keys a request sent beyond its body's declared fields."""
    return dict(body.model_extra or {})


async def read_form(request: Request, allowed: frozenset, not_multipart: str) -> Any:
    """The multipart form of an upload route, with no field outside ``allowed`` (a 400 naming them);
    ``not_multipart`` is the error for a body of another type."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InferenceError(not_multipart)
    try:
        form = await request.form()
    except Exception as exc:  # noqa: BLE001 - malformed multipart
        raise InferenceError(f"malformed multipart body: {exc}") from None
    check_form_text(form)
    unknown = sorted(set(form.keys()) - allowed)
    if unknown:
        raise InferenceError(f"unknown form field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the "
                             f"fields are {', '.join(sorted(allowed))}")
    return form


def check_form_text(form: Any) -> None:
    """Refuse (a 400 naming the field) a form field name, value or file name that is not Unicode text:
    Starlette decodes multipart fields with the charset the request names, and some (utf-7,
    unicode_escape) make lone surrogates."""
    for name, value in form.multi_items():
        texts = [("the field name", name)] + ([("the value", value)] if isinstance(value, str) else
                                               [("the file name", getattr(value, "filename", None) or "")])
        for what, text in texts:
            if not _is_text(text):
                raise InferenceError(f"form field {name!r:.60}: {what} {text!r:.60} is not "
                                     "Unicode text (it holds a lone surrogate); send UTF-8 text")


def refuse_extras(body: BaseModel, route: str, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The extra keys of a body whose route takes none beyond ``allowed``: any other is a 400 naming it
    and what the route accepts (never dropped silently). Returns the allowed extras."""
    sent = extras(body)
    unknown = sorted(k for k in sent if k not in allowed)
    if unknown:
        accepted = ", ".join(sorted(set(type(body).model_fields) | set(allowed)))
        raise InferenceError(f"{route}: unknown field{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(k) for k in unknown)}; this route accepts: {accepted}")
    return sent


def request_fields(body: BaseModel) -> dict[str, Any]:
    """Every field of a body (declared ones with their defaults) and the extra keys it was sent with."""
    data = body.model_dump(exclude_unset=False)
    data.update(extras(body))
    return data


def json_kwargs(value: Any) -> dict[str, Any]:
    """A ``kwargs`` field: a JSON object, or a string holding one (or nothing)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InferenceError(f"kwargs: not valid JSON ({exc.msg})") from None
        if parsed is None:
            return {}
        if isinstance(parsed, dict):
            return parsed
    raise InferenceError("kwargs: must be a JSON object")


def form_bool(name: str, value: Any) -> bool:
    """A form field (always a string) as a boolean: true/false, 1/0, yes/no; anything else is a 400."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise InferenceError(f"{name}: must be true or false, got {value!r:.60}")


def form_number(name: str, value: Any) -> float:
    """A form field as a finite number; anything else is a 400 naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise InferenceError(f"{name}: must be a finite number, got {value!r:.60}")
    return number


def pydantic_message(exc: Exception) -> str:
    """A pydantic ValidationError as 'Invalid request:' and one line per bad field."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors()]
        return "Invalid request:\n" + "\n".join(f"  - {p}" for p in problems)
    return f"Invalid request: {exc}"


#: the deepest nesting of arrays and objects a JSON body may have (deeper: a 400 before it is decoded,
#: as Python's json, pydantic and our own walks over a body recurse)
MAX_JSON_DEPTH = 128
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def check_json_bytes(raw: bytes) -> None:
    """Refuse (InferenceError: a 400) a JSON body nested deeper than ``MAX_JSON_DEPTH``, or holding a
    key or string that is not Unicode text (a lone surrogate: a ``\\ud800`` escape without its pair,
    or its raw bytes), naming where it is. Run on every JSON body before any route decodes it
    (``middleware.GuardMiddleware``); a body that is not JSON is left to the route's parser. Byte
    scans only, unless the body may hold a lone surrogate: then it is decoded to find where."""
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        depth = 0
        structure = _JSON_STRING.sub(b"", raw)      # exact for valid JSON: what is left is structure
        for b in structure.translate(None, _NOT_BRACKETS):
            depth += 1 if b in b"[{" else -1
            if depth > MAX_JSON_DEPTH:
                raise InferenceError(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} arrays/objects; "
                                     "send a flatter body")
    try:
        raw.isascii() or raw.decode("utf-8")       # strict: refuses the UTF-8 bytes of a surrogate
    except UnicodeDecodeError:
        pass
    else:
        if _SURROGATE_ESCAPE.search(raw) is None:
            return
        # without an escaped backslash every backslash starts an escape: strip the pairs, look again
        if b"\\\\" not in raw and _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub(b"", raw)) is None:
            return
    try:
        data = json.loads(raw)                     # bytes: decoded with surrogatepass, as the routes do
    except (ValueError, RecursionError):
        return
    where = _not_text(data)
    if where is not None:
        path, text, is_key = where
        what = f"the key {text!r:.80}" if is_key else f"{text!r:.80}"   # repr escapes a surrogate
        raise InferenceError(f"{path}: {what} is not Unicode text: it holds a lone surrogate (a \\uD800-\\uDBFF "
                             "escape must be followed by a \\uDC00-\\uDFFF one); send UTF-8 text")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _not_text(data: Any) -> Optional[tuple[str, str, bool]]:
    """(path, string, is a key) of the first key or string in ``data`` that UTF-8 cannot encode."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                return path or "body", value, False
        elif isinstance(value, dict):
            for key in value:
                if not _is_text(key):
                    return path or "body", key, True
            stack.extend(((f"{path}.{key}" if path else key) if _NAME.fullmatch(key) else
                          f"{path or 'body'}[{key!r}]", value[key]) for key in reversed(list(value)))
        elif isinstance(value, list):
            stack.extend((f"{path or 'body'}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def json_body(request: Request) -> Any:
    """The request's body as a JSON object (a route that reads its body itself)."""
    raw = await request.body()
    if not raw:
        raise InferenceError("the request body is empty; send a JSON object")
    check_json_bytes(raw)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InferenceError(f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InferenceError("the request body must be a JSON object")
    return data
