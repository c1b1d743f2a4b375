"""The two ASGI middlewares around every route: ``GuardMiddleware`` (Host rule, API key, body-size
limits, JSON bodies too deep or not Unicode text, before routing so they cover unknown routes too)
and, outermost, ``ErrorMiddleware`` (any exception left becomes a JSON error on a connection that
stays usable)."""
from __future__ import annotations

from fastapi import FastAPI

from ..errors import InferenceError, SpecError
from .bodies import check_json_bytes
from .http_errors import BAD_INPUT, REFUSED, error_parts, error_response
from .security import UPLOAD_ROUTES, ServerSettings


def install_middleware(app: FastAPI, settings: ServerSettings) -> None:
    app.add_middleware(GuardMiddleware, settings=settings)
    app.add_middleware(ErrorMiddleware)  # added last: the outermost, so it also covers the guard


class ErrorMiddleware:
    """Answers any exception the app's handlers left (a TypeError from a library, a bug of ours) as a
    JSON error (``error_parts``), so it never reaches Starlette's ServerErrorMiddleware, which
    re-raises, and uvicorn, which then resets the kept-alive connection. An exception after the
    response started (a streamed body cut short) can only end the connection: uvicorn logs it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:  # noqa: BLE001 - answered below
            if started:
                raise
            status, detail, kind = error_parts(exc, f"{scope.get('method')} {scope.get('path')}")
            issues = getattr(exc, "issues", None) if isinstance(exc, SpecError) else None
            await error_response(status, detail, kind, issues)(scope, receive, send)


#: bodies that are forms, not JSON (Starlette decodes their fields; ``bodies.check_form_text`` checks them)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class GuardMiddleware:
    """Host rule, API key, body-size limits and the JSON body check (``bodies.check_json_bytes``: depth,
    lone surrogates), before routing (so they cover unknown routes too)."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope.get("path", ""), headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            return await self._with_body(scope, receive, send, headers)
        return await self.app(scope, receive, send)

    def _refusal(self, path: str, headers: dict[str, str]):
        """The answer to a request refused by its Host or its API key; None when it may pass."""
        host = headers.get("host")
        if not self.settings.host_ok(host):
            return error_response(403, self.settings.host_refusal(host or ""), REFUSED)
        if self.settings.api_key and path != "/v1/cluster/auth" and not self.settings.auth_ok(
                headers.get("authorization")):
            resp = error_response(401, "Invalid or missing API key: send the header 'Authorization: Bearer "
                                  "<api_key>'", REFUSED)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return None

    async def _with_body(self, scope, receive, send, headers: dict[str, str]):
        """Read the body up to its limit, then replay it to the app."""
        # the upload limit only where a file upload is taken; any other body gets the JSON limit
        upload = scope.get("path", "") in UPLOAD_ROUTES and \
            headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.settings.max_upload_bytes if upload else self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                return await error_response(400, "invalid Content-Length header", BAD_INPUT)(scope, receive, send)
            if too_big:
                return await self._too_big(limit, scope, receive, send)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return await self._too_big(limit, scope, receive, send)
        content_type = headers.get("content-type", "").lower()
        if body and not content_type.startswith(FORM_TYPES):   # a JSON body (or one a route reads as JSON)
            try:
                check_json_bytes(bytes(body))
            except InferenceError as exc:
                return await error_response(400, str(exc), BAD_INPUT)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_big(self, limit: int, scope, receive, send):
        resp = error_response(413, f"Request body too large: the limit is {limit} bytes (set max_body_bytes / "
                              "max_upload_bytes when starting the server to change it)", BAD_INPUT)
        await resp(scope, receive, send)
