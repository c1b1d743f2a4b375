"""The routes, one APIRouter per area. ``ROUTERS`` is the order create_app includes them in.

A route reads what it shares with the others through ``..deps`` (client, settings, batchers, LLM
slots, stream counters), and refuses with the package's errors (``InferenceError``...) or
``http_errors.HTTPError``; ``ErrorMiddleware`` turns either into ``{"detail": ...}``. To add a route:
put it on the router of its area (or a new module here, added to ``ROUTERS``), with its body in
``..bodies``.
"""
from __future__ import annotations

from . import audio, cache, cluster, embeddings, flexible, handle_methods, images, models, openai_llm, registrations

ROUTERS = (cluster.router, models.router, registrations.router, openai_llm.router, embeddings.router,
           images.router, audio.router, flexible.router, handle_methods.router, cache.router)

__all__ = ["ROUTERS"]
