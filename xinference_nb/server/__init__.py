"""Optional REST server (``pip install "xinference-nb[server]"``): Xinference- and OpenAI-compatible
routes over the kernel's ``Client``. ``app.create_app`` assembles the routers of ``routes/``; FastAPI
and uvicorn are imported by those modules and by ``runner``'s functions, never by ``import
xinference_nb`` (``runner`` and ``security`` import neither at module level)."""
