"""How the server answers an error: ``{"detail": ...}`` with a status and ``X-Xinf-Error``.

``error_parts`` is the one mapping of any exception to ``(status, detail, X-Xinf-Error)``, used by the
JSON answers (``ErrorMiddleware``, the exception handlers) and the SSE error events. Classes of ours
travel as ``xinference_nb.errors.WIRE_ERRORS`` says (the table RemoteClient reads back).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import XinfError, wire_error
from .security import Refused

log = logging.getLogger("xinference_nb.server")

#: X-Xinf-Error of what the server's settings refuse (401, 403): RemoteClient raises RemoteError
REFUSED = "PermissionError"
#: X-Xinf-Error of bad input (a bad body, or a library's ValueError/TypeError on what was sent)
BAD_INPUT = "InferenceError"

# exceptions not of ours that bad input makes libraries raise (a wrong type or value reaching them)
INPUT_ERRORS = (ValueError, TypeError, KeyError, LookupError)


class HTTPError(Exception):
    """An answer a route decides itself: ``status``, ``detail`` and the X-Xinf-Error ``kind``."""

    def __init__(self, status: int, detail: str, kind: str = "XinfError"):
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) written as ``\\udXXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, detail: str, kind: Optional[str] = None, issues: Any = None) -> JSONResponse:
    """The JSON error answer (always encodable); a SpecError's ``issues`` also go in ``X-Xinf-Issues``
    (when short)."""
    headers = {"X-Xinf-Error": kind} if kind else {}
    if issues:
        text = json.dumps([{"path": i.path, "message": i.message} for i in issues])
        if len(text) < 16_000:
            headers["X-Xinf-Issues"] = text
    # a detail quoting what was sent may hold a lone surrogate: escaped, so the answer always renders
    return JSONResponse({"detail": printable(detail)}, status_code=status, headers=headers)


def error_parts(exc: BaseException, where: str) -> tuple[int, str, str]:
    """(status, detail, X-Xinf-Error) for any exception: the one mapping of exceptions to answers,
    for JSON responses and SSE error events. A 500 (a bug of ours) is logged here, once."""
    if isinstance(exc, HTTPError):
        return exc.status, exc.detail, exc.kind
    if isinstance(exc, Refused):
        return exc.status, str(exc), REFUSED
    if isinstance(exc, XinfError):
        kind, status = wire_error(exc)
        return status, str(exc), kind
    if isinstance(exc, INPUT_ERRORS):
        log.debug("%s: %s answered as 400", where, type(exc).__name__, exc_info=exc)
        return 400, f"{type(exc).__name__}: {exc}", BAD_INPUT
    log.error("unexpected error on %s", where, exc_info=exc)
    return 500, f"Internal error: {type(exc).__name__}: {exc}", "XinfError"


def not_found(uid: str, exc: Optional[BaseException] = None) -> HTTPError:
    """The answer for an unknown model uid, in the words Xinference uses (RemoteClient and
    Xinference's own client recognise them)."""
    message = str(exc) if exc is not None else ""
    if "Model not found in the model list" not in message:
        message = f"Model not found in the model list, uid: {uid}"
    return HTTPError(400, message, "ModelNotFound")


def validation_message(exc: RequestValidationError) -> tuple[str, str]:
    """(detail, X-Xinf-Error) for a body FastAPI could not validate: every bad field, by its path."""
    problems = []
    for err in exc.errors():
        typ = err.get("type", "")
        if typ in ("json_invalid", "json_type"):
            ctx = err.get("ctx") or {}
            return (f"Invalid JSON body: {ctx.get('error', err.get('msg', 'not JSON'))}. Send a JSON object with "
                    "Content-Type: application/json."), BAD_INPUT
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    if not problems:
        problems = ["the request body is invalid"]
    return "Invalid request (" + str(len(problems)) + " problem" + ("s" if len(problems) != 1 else "") + "):\n" + \
        "\n".join(f"  - {p}" for p in problems), BAD_INPUT


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail, kind = validation_message(exc)
    return error_response(400, detail, kind)


async def on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"Not Found: no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, detail, "XinfError")


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's own errors (validation, 404, 405) as our JSON answers. Every other exception is
    answered by ``middleware.ErrorMiddleware``: a handler for Exception would run in Starlette's
    ServerErrorMiddleware, which re-raises after answering, and uvicorn then closes the kept-alive
    connection."""
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
