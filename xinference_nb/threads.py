"""Thread helpers, standard library only.

``drain_in_thread``: a blocking iterator drained on a thread of its own, its items handed to an asyncio
loop (the REST server's SSE producer, server/sse.py, and the async methods of the framework classes,
integrations/), so a model's generation never runs on the event loop.

``cancel_scope`` / ``scope_cancelled``: an event that the calls made on one thread watch (a batch method's
workers, progress.map_in_order): once it is set, a generation running for that thread stops at its next
token (``engines.InFlight.check`` and the engines' wait loops ask ``scope_cancelled``).
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

_SCOPE = threading.local()


@contextmanager
def cancel_scope(event: threading.Event) -> Iterator[None]:
    """Inside the block, calls made on this thread stop once ``event`` is set."""
    previous = getattr(_SCOPE, "event", None)
    _SCOPE.event = event
    try:
        yield
    finally:
        _SCOPE.event = previous


def scope_event() -> Optional[threading.Event]:
    """The event of this thread's cancel scope (None outside one)."""
    return getattr(_SCOPE, "event", None)


def scope_cancelled() -> bool:
    event = scope_event()
    return event is not None and event.is_set()


def drain_in_thread(make: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop, *, name: str,
                    on_done: Optional[Callable[[], None]] = None) -> tuple[asyncio.Queue, threading.Event]:
    """Iterate ``make()`` (a blocking call returning a blocking iterator) in a daemon thread.

    The returned queue receives ``("item", x)`` for each item, then ``("error", exc)`` if one was
    raised, then ``("end", None)``. Setting the returned event stops the thread at the next item; the
    iterator is closed on that thread either way (generation stops), and ``on_done`` is then called on
    the loop. A loop that is gone stops the thread too."""
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(kind: str, item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
        except RuntimeError:  # the loop is closed: nobody reads any more
            stop.set()

    def produce() -> None:
        it = None
        try:
            it = make()
            for item in it:
                if stop.is_set():
                    break
                put("item", item)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            put("error", exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
            put("end", None)
            if on_done is not None:
                try:
                    loop.call_soon_threadsafe(on_done)
                except RuntimeError:
                    pass

    threading.Thread(target=produce, name=name, daemon=True).start()
    return queue, stop
