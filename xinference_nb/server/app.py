"""The REST app: Xinference's and OpenAI's routes over a ``Client``. No model logic here.

    app = create_app()                       # serves Client() (the kernel's manager)
    app = create_app(client, settings=ServerSettings(api_key="..."))

Every route calls the same ``Client`` a notebook holds, in a worker thread (never on the event loop).
Errors are ``{"detail": "<message>"}``: 400 for user mistakes (bad JSON, wrong types, unknown uid,
wrong model type for the route, invalid documents), 401 without the API key, 403 for what the
server's settings refuse (and for a non-loopback Host without an API key), 404 for unknown routes,
413 for bodies over the limit, 500 only for a bug of ours (logged once with its traceback). Every
error, whatever raised it, is answered this way on a connection that stays usable, and an error
inside an SSE stream is its last event. Error responses also carry ``X-Xinf-Error: <exception
class>`` so ``RemoteClient`` raises the same exception class as the in-kernel client.

Request bodies are validated strictly: ``"stream": "yes"``, ``"max_tokens": true``, ``"n": "3"`` or
a NaN are a 400 naming the field, never coerced.

The parts: ``routes/`` (one APIRouter per area), ``deps`` (what routes share, from ``app.state``),
``bodies`` (request bodies), ``openai`` (OpenAI request → generate_config), ``sse`` (the stream
producer), ``http_errors`` + ``middleware`` (how errors are answered; guard of Host, key and sizes),
``batching`` (dynamic batches), ``security`` (``ServerSettings``).
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

from fastapi import FastAPI

from .._version import __version__
from .deps import close_state, init_state
from .http_errors import install_error_handlers
from .middleware import install_middleware
from .routes import ROUTERS
from .routes.embeddings import make_batchers
from .security import ServerSettings


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    await close_state(app.state)


def create_app(client: Any = None, settings: Optional[ServerSettings] = None, **options: Any) -> FastAPI:
    """A FastAPI app serving ``client`` (default: ``Client()``, the kernel's manager).
    ``options`` are ``ServerSettings`` fields (api_key, allowed_roots, allow_any_path, ...)."""
    if client is None:
        from ..client import Client

        client = Client()
    settings = settings or ServerSettings(**options)
    settings.check_start()
    app = FastAPI(title="xinference_nb", version=__version__, lifespan=_lifespan,
                  description="Xinference- and OpenAI-compatible REST API over the notebook's models.")
    init_state(app.state, client, settings)
    app.state.embed_batcher, app.state.rerank_batcher = make_batchers(client, settings)
    install_middleware(app, settings)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
