"""Request bodies and the helpers that read what a request sent.

The bodies are typed for /openapi.json; extra keys are kept (``extras``) and passed on. Strict: JSON
types are taken as sent (no "true" -> True, no true -> 1, no "3" -> 3) and numbers are finite.
Everything here refuses with ``InferenceError`` (a 400 naming the field), and needs no app.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal, Optional, Union

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


class RegisterBody(_Body):
    model: Union[str, dict[str, Any]]
    persist: bool = False
    worker_ip: Optional[str] = None
    overwrite: bool = False


class AutoRegisterBody(_Body):
    model_path: str
    model_family: Optional[str] = None


class _GenerateBody(_Body):
    """The sampling fields that completions and chat requests share (typed here; the rest of an OpenAI
    request is mapped by server/openai.py, and the values are checked by chat.parse_generate_config)."""

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
    model: str
    prompt: Union[str, list[str]]


class ChatBody(_GenerateBody):
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
    unknown = sorted(set(form.keys()) - allowed)
    if unknown:
        raise InferenceError(f"unknown form field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the "
                             f"fields are {', '.join(sorted(allowed))}")
    return form


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


async def json_body(request: Request) -> Any:
    """The request's body as a JSON object (a route that reads its body itself)."""
    raw = await request.body()
    if not raw:
        raise InferenceError("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InferenceError(f"Invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InferenceError("the request body must be a JSON object")
    return data
