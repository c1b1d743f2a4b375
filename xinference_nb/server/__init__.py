"""Optional REST server (``pip install "xinference-nb[server]"``): Xinference- and OpenAI-compatible
routes over the kernel's ``Client``. FastAPI and uvicorn are imported only by ``app`` and ``runner``'s
functions, never by ``import xinference_nb``."""
