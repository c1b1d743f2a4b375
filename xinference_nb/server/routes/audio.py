"""/v1/audio/speech (JSON or form) and /v1/audio/transcriptions (multipart upload)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from ...errors import InferenceError
from ...model_types import model_type
from ..bodies import (SpeechBody, check_form_text, extras, form_bool, form_number, json_body, json_kwargs,
                      pydantic_message, read_form)
from ..deps import ClientDep, call_model, handle_for

router = APIRouter(tags=["audio"])
ROUTES = model_type("audio").routes   # speech, transcriptions, translations

AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg",
               "aac": "audio/aac", "pcm": "audio/pcm", "ogg": "audio/ogg"}
TRANSCRIPTION_FIELDS = frozenset({"model", "file", "language", "prompt", "response_format", "temperature",
                                  "timestamp_granularities[]", "kwargs"})
_SPEECH_OPENAPI = {"requestBody": {"content": {"application/json": {"schema": SpeechBody.model_json_schema()}},
                                   "required": True}}
_TRANSCRIPTION_OPENAPI = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model", "file"], "properties": {
        "model": {"type": "string"}, "file": {"type": "string", "format": "binary"},
        "language": {"type": "string"}, "prompt": {"type": "string"},
        "response_format": {"type": "string"}, "temperature": {"type": "number"},
        "kwargs": {"type": "string"}}}}}, "required": True}}


async def speech_body(request: Request) -> SpeechBody:
    """The speech request, sent as JSON or as a form."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        check_form_text(form)
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        if "speed" in data:
            data["speed"] = form_number("speed", data["speed"])
        if "stream" in data:
            data["stream"] = form_bool("stream", data["stream"])
    else:
        data = await json_body(request)
    try:
        return SpeechBody.model_validate(data)
    except Exception as exc:  # pydantic ValidationError
        raise InferenceError(pydantic_message(exc)) from None


def audio_response(audio: Any, fmt: str) -> Response:
    """Audio bytes, text or an iterator of pieces (a stream) as a response of the format's type."""
    media = AUDIO_TYPES.get(fmt, "application/octet-stream")
    if isinstance(audio, (bytes, bytearray)):
        return Response(bytes(audio), media_type=media)
    if isinstance(audio, str):
        return Response(audio.encode(), media_type=media)

    def pieces():
        for piece in audio:
            yield piece if isinstance(piece, (bytes, bytearray)) else bytes(piece)

    return StreamingResponse(pieces(), media_type=media)


@router.post(ROUTES["speech"], response_class=Response, openapi_extra=_SPEECH_OPENAPI)
async def speech(request: Request, client: ClientDep):
    body = await speech_body(request)
    handle = await handle_for(client, body.model, "speech", ROUTES["speech"])
    kw = json_kwargs(body.kwargs)
    extra = extras(body)
    # OpenAI's TTS fields at their "nothing asked" values are dropped; any other value is refused, not ignored
    for key, inert in (("instructions", (None, "")), ("stream_format", (None, "audio"))):
        if key in extra and extra.pop(key) not in inert:
            raise InferenceError(f"{key}: not supported by this server's speech models; leave it out "
                                 f"(accepted: {', '.join(repr(v) for v in inert if v is not None)})")
    kw.update(extra)
    fmt = body.response_format or "mp3"
    audio = await call_model(body.model, handle.speech, body.input, voice=body.voice or "", response_format=fmt,
                             speed=body.speed if body.speed is not None else 1.0, stream=bool(body.stream), **kw)
    return audio_response(audio, fmt)


async def transcription_form(request: Request) -> tuple[Any, str, Any, float]:
    """(form, model uid, upload, temperature) of a transcription request; every field checked."""
    form = await read_form(request, TRANSCRIPTION_FIELDS,
                           "send the audio as multipart/form-data with fields model and file")
    uid = form.get("model")
    upload = form.get("file")
    if not isinstance(uid, str) or not uid:
        raise InferenceError("model: a model uid (string) is required")
    if upload is None or isinstance(upload, str):
        raise InferenceError("file: an audio file upload is required")
    temperature = form_number("temperature", form.get("temperature") or 0)
    extra = json_kwargs(form.get("kwargs"))
    if extra:
        raise InferenceError(f"kwargs: transcription takes no extra options (got {', '.join(sorted(extra))}); "
                             "use the fields language, prompt, response_format, temperature, "
                             "timestamp_granularities[]")
    return form, uid, upload, temperature


async def speech_to_text(request: Request, client: ClientDep, method: str, route: str):
    """/v1/audio/transcriptions and /v1/audio/translations: the same form, a different handle method."""
    form, uid, upload, temperature = await transcription_form(request)
    handle = await handle_for(client, uid, method, route)
    audio = await upload.read()
    grans = [g for g in form.getlist("timestamp_granularities[]") if isinstance(g, str)] or None
    fmt = form.get("response_format") or "json"
    result = await call_model(uid, getattr(handle, method), audio, language=form.get("language") or None,
                              prompt=form.get("prompt") or None, response_format=fmt, temperature=temperature,
                              timestamp_granularities=grans)
    if isinstance(result, (bytes, bytearray)):
        result = bytes(result).decode("utf-8", errors="replace")
    if isinstance(result, str):
        return PlainTextResponse(result) if fmt not in ("json", "verbose_json") else {"text": result}
    return result


@router.post(ROUTES["transcriptions"], openapi_extra=_TRANSCRIPTION_OPENAPI)
async def transcriptions(request: Request, client: ClientDep):
    return await speech_to_text(request, client, "transcriptions", ROUTES["transcriptions"])


@router.post(ROUTES["translations"], openapi_extra=_TRANSCRIPTION_OPENAPI)
async def translations(request: Request, client: ClientDep):
    """Speech → English text, with the fields of /v1/audio/transcriptions."""
    return await speech_to_text(request, client, "translations", ROUTES["translations"])

