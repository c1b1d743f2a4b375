"""Run the REST app: in a background thread of the kernel (``serve``) or in the foreground (``xinf serve``).

    import xinference_nb as xnb
    server = xnb.serve()              # http://127.0.0.1:9997, sharing this kernel's models
    xnb.stop_server()

The background server serves the same ``Client()`` the notebook uses, so a model launched in the
notebook is served at once and one launched over REST is usable in the notebook.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .security import RootTooBroad, ServerError, ServerSettings, parse_roots

__all__ = ["RootTooBroad", "RunningServer", "ServerError", "current_server", "serve", "serve_forever",
           "start_in_thread", "stop_server"]

log = logging.getLogger("xinference_nb.server")
_lock = threading.Lock()
_current: Optional["RunningServer"] = None


@dataclass
class RunningServer:
    host: str
    port: int
    app: Any
    server: Any = field(repr=False)
    thread: Optional[threading.Thread] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def __repr__(self) -> str:
        return f"<xinference_nb server {self.url} ({'running' if self.running else 'stopped'})>"

    def _repr_html_(self) -> str:
        return (f"<b>xinference_nb server</b> at <a href='{self.url}/docs' target='_blank'>{self.url}</a> "
                f"({'running' if self.running else 'stopped'}); stop it with <code>xinference_nb.stop_server()</code>")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such sockets
    # (without it every response waits ~40 ms for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise ServerError(
                f"Port {port} on {host} is already in use. Fix: stop what holds it (if it is an earlier "
                f"server of this kernel: xinference_nb.stop_server(); otherwise find it with `lsof -i :{port}`), "
                f"or pick another port: xinference_nb.serve(port={port + 1}) / xinf serve --port {port + 1}"
            ) from None
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Use host=\"127.0.0.1\" "
                          "(this machine only) or \"0.0.0.0\" (all interfaces).") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _require_server_extra() -> None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise ServerError(f"The REST server needs {', '.join(missing)}, which is not installed. Install it with: "
                          'pip install "xinference-nb[server]"')


def _config(app: Any, log_level: str, foreground: bool = False):
    import uvicorn

    # in a kernel, leave the notebook's logging setup alone (log_config=None): uvicorn's records still
    # reach the root logger; in the foreground (xinf serve) use uvicorn's own console format
    extra: dict[str, Any] = {} if foreground else {"log_config": None}
    return uvicorn.Config(app, log_level=log_level, access_log=foreground and log_level == "debug",
                          lifespan="on", timeout_keep_alive=30, backlog=2048, ws="none", **extra)


def build_settings(api_key: Optional[str] = None, allowed_roots: Optional[Iterable[str]] = None,
                   allow_any_path: bool = False, allow_flexible: bool = False,
                   allow_trust_remote_code: bool = False, allow_virtualenv: bool = False,
                   **more: Any) -> ServerSettings:
    return ServerSettings(api_key=api_key or None, allowed_roots=parse_roots(allowed_roots),
                          allow_any_path=allow_any_path, allow_flexible=allow_flexible,
                          allow_trust_remote_code=allow_trust_remote_code, allow_virtualenv=allow_virtualenv,
                          **more)


def serve(host: str = "127.0.0.1", port: int = 9997, api_key: Optional[str] = None, *,
          allowed_roots: Optional[Iterable[str]] = None, allow_any_path: bool = False,
          allow_flexible: bool = False, allow_trust_remote_code: bool = False, allow_virtualenv: bool = False,
          allowed_hosts: Optional[Iterable[str]] = None, client: Any = None, log_level: str = "warning",
          **settings: Any) -> RunningServer:
    """Start the REST server in a background thread, serving this kernel's models; returns it
    (``.url``, ``.stop()``). ``port=0`` picks a free port. Binds 127.0.0.1 unless ``host`` says
    otherwise. ``settings``: other ``ServerSettings`` fields (allowed_hosts, max_body_bytes,
    batch_wait_ms, ...). A too-broad ``allowed_roots`` entry raises ``RootTooBroad``; a host other
    machines can reach without ``api_key`` logs a warning."""
    global _current
    with _lock:
        if _current is not None and _current.running:
            raise ServerError(f"A server is already running at {_current.url}; stop it first with "
                              "xinference_nb.stop_server()")
        _require_server_extra()
        from .app import create_app

        conf = build_settings(api_key, allowed_roots, allow_any_path, allow_flexible, allow_trust_remote_code,
                              allow_virtualenv, allowed_hosts=list(allowed_hosts) if allowed_hosts is not None
                              else None, **settings)
        running = start_in_thread(create_app(client, settings=conf), host, port, log_level)
        _current = running
        return running


def _prepare(app: Any, host: str) -> Optional[str]:
    """Tell the app's settings which host it is bound to (a loopback name is then a valid Host);
    returns the warning for a reachable bind without an API key (None when there is none)."""
    settings = getattr(getattr(app, "state", None), "settings", None)
    if not isinstance(settings, ServerSettings):
        return None
    settings.note_bind_host(host)
    return settings.exposure_warning(host)


def start_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> RunningServer:
    """Serve ``app`` from a daemon thread; returns once it accepts connections."""
    import uvicorn

    warning = _prepare(app, host)
    sock = _bind(host, port)
    if warning:
        log.warning(warning)
    actual_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, log_level))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"xinference_nb-server-{actual_port}", daemon=True)
    running = RunningServer(host, actual_port, app, server, thread)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServerError(f"The server did not start on {host}:{actual_port}"
                              + (f": {failure[0]!r}" if failure else ""))
        time.sleep(0.01)
    return running


def stop_server() -> None:
    """Stop the server ``serve()`` started (no-op when none runs)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.stop()


def current_server() -> Optional[RunningServer]:
    return _current if _current is not None and _current.running else None


def serve_forever(host: str = "127.0.0.1", port: int = 9997, api_key: Optional[str] = None,
                  log_level: str = "info", **options: Any) -> None:
    """``xinf serve``: run in the foreground until Ctrl-C."""
    _require_server_extra()
    # oneDNN (torch's CPU kernels) caches a compiled primitive per input shape, 1024 by default: with
    # embedding batches of ever new shapes the server's RSS crept up ~2 % per 10k requests until the
    # cache filled. 128 keeps it flat at no measured speed cost (bench/server_memory.py). Read when
    # torch first runs a model, i.e. after this (torch is imported lazily); a value already set wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "128")
    # torch's OpenMP threads spin between kernels by default; when the server's other threads (the
    # event loop, the clients on the same machine) take a core, every kernel of a decode step waits
    # for a spinning thread the OS has descheduled: on 2 busy cores a 100M model's step took 4x as
    # long (bench/decode_floor.py, "OpenMP passive wait"). Passive waiting sleeps instead. Read when
    # torch loads, i.e. after this; a value already set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from .app import create_app

    conf = build_settings(api_key, **options)
    app = create_app(None, settings=conf)
    warning = _prepare(app, host)
    sock = _bind(host, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
        if log.hasHandlers():
            log.warning(warning)
    shown = host if ":" not in host else f"[{host}]"
    print(f"xinference_nb server on http://{shown}:{sock.getsockname()[1]} "
          f"({'API key required' if conf.api_key else 'no API key'}); Ctrl-C to stop", flush=True)
    try:
        uvicorn.Server(_config(app, log_level, foreground=True)).run(sockets=[sock])
    finally:
        sock.close()
