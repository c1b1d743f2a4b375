"""The SSE producer: a model's chunk iterator as ``data: {chunk}`` events, then ``data: [DONE]``.

    response = sse_response(it, release=sem.release, counters=app.state, name=uid)

A thread of its own drains ``it`` (a sync iterator) without waiting for a slow reader, so the model is
freed as soon as generation ends. A reader that goes away sets ``cancelled``, which stops the thread
and closes ``it`` (stopping generation) at the next chunk. The stream ends at ``[DONE]`` or at its
first error event (``{"error": {"message", "type", "code"}}``, as Xinference's does). ``release`` is
called once, on the event loop, when generation ends. ``counters`` is anything with the int attributes
``streams_open`` and ``streams_cancelled`` (the app's state). Needs a running loop, not an app.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Callable, Iterator

from fastapi.responses import StreamingResponse

from ..threads import drain_in_thread
from .http_errors import error_parts

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def error_event(exc: BaseException, where: str) -> str:
    """The SSE event for an error: the same status, message and class as a JSON error answer."""
    status, detail, kind = error_parts(exc, where)
    return f"data: {json.dumps({'error': {'message': detail, 'type': kind, 'code': status}})}\n\n"


def chunk_event(chunk: Any) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False, default=str)}\n\n"


def _start_producer(it: Iterator[Any], release: Callable[[], None], name: str,
                    loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Queue, threading.Event]:
    """Drain ``it`` in a daemon thread into a queue of ("item" | "error" | "end", item)."""
    return drain_in_thread(lambda: it, loop, name=f"xnb-stream-{name}", on_done=release)


def stream_events(it: Iterator[Any], *, release: Callable[[], None], counters: Any,
                  name: str = "model") -> AsyncIterator[str]:
    """Start draining ``it`` now; return the async iterator of its SSE events (see the module doc)."""
    chunks, cancelled = _start_producer(it, release, name, asyncio.get_running_loop())
    counters.streams_open += 1
    where = f"the stream of {name}"

    async def events() -> AsyncIterator[str]:
        finished = False
        try:
            while True:
                kind, item = await chunks.get()
                if kind == "end":
                    finished = True
                    yield "data: [DONE]\n\n"
                    break
                if kind == "error":
                    finished = True
                    yield error_event(item, where)
                    break
                try:
                    line = chunk_event(item)
                except Exception as exc:  # noqa: BLE001 - a chunk that is not JSON: our bug, told in-stream
                    finished = True
                    cancelled.set()
                    yield error_event(exc, where)
                    break
                yield line
        finally:
            if not finished:
                cancelled.set()
                counters.streams_cancelled += 1
            counters.streams_open -= 1

    return events()


def sse_response(it: Iterator[Any], *, release: Callable[[], None], counters: Any,
                 name: str = "model") -> StreamingResponse:
    """``stream_events`` as a ``text/event-stream`` response."""
    return StreamingResponse(stream_events(it, release=release, counters=counters, name=name),
                             media_type="text/event-stream", headers=dict(SSE_HEADERS))
