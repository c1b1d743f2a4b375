"""Start and stop a real Xinference (4.x) from its own virtual environment, for the cluster tests and
the side-by-side bench.

Xinference lives in ``.venv-xinference`` (made by ``scripts/install-xinference.sh``): it pins versions
ours may not share, so we never import it; we run its console scripts as child processes:

    with XinferenceLocal(roots=[tmp]) as xl:           # one ``xinference-local`` (supervisor + worker)
        RESTfulClient(xl.endpoint) ...

    with XinferenceCluster(workers=2) as cl:            # ``xinference-supervisor`` + two ``xinference-worker``
        cl.worker_addresses                             # ["127.0.0.1:p1", "127.0.0.2:p2"]

Each process runs in its own process group (``start_new_session``) with ``XINFERENCE_HOME`` under a
temp dir and ``XINFERENCE_AUTH_ADVANCED=false`` (4.x otherwise wants a first-run admin account), logs
to a file under that dir, and is killed as a group on ``stop()`` (TERM, then KILL), so no server
outlives the test session. Start-up failures raise :class:`XinferenceStartError` carrying the tail
of every log.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
XINFERENCE_VENV = Path(os.environ.get("XINFERENCE_VENV", REPO / ".venv-xinference"))
XINFERENCE_BIN = XINFERENCE_VENV / "bin"
START_TIMEOUT = float(os.environ.get("XINFERENCE_START_TIMEOUT", "180"))


def xinference_missing_reason() -> Optional[str]:
    """Why the real Xinference cannot run here, or None when it can."""
    for script in ("xinference-local", "xinference-supervisor", "xinference-worker"):
        if not (XINFERENCE_BIN / script).exists():
            return (f"{XINFERENCE_BIN / script} not found: run ./scripts/install-xinference.sh to install "
                    "xinference==4.1.0 into .venv-xinference (or set XINFERENCE_VENV)")
    return None


def xinference_python() -> Path:
    return XINFERENCE_BIN / "python"


# Ports for Xinference's processes come from below Linux's ephemeral range (32768-60999): a port the
# kernel hands out for ``bind(0)`` is free only until the next process asks, and Xinference's actor
# pools bind their own ephemeral ports with SO_REUSEPORT, so a supervisor given an ephemeral port could
# share it with another running Xinference's pool (its messages then reach the wrong process).
PORT_RANGE = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    import random

    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:   # the range is full: any free one
        s.bind((host, 0))
        return s.getsockname()[1]


def loopback_alias_works(host: str = "127.0.0.2") -> bool:
    """Linux routes all of 127/8 to lo, so a second 'machine' can bind 127.0.0.2."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


class XinferenceStartError(RuntimeError):
    pass


def http_json(method: str, url: str, body: Any = None, timeout: float = 30.0,
              headers: Optional[dict] = None) -> tuple[int, Any]:
    """A tiny stdlib HTTP helper (no proxies): (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class _Proc:
    """One Xinference console-script process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(log_dir))

    stopped = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def stop(self, grace: float = 10.0) -> None:
        # Xinference starts helpers (start_supervisor.py, start_api.py, model pools) in new sessions
        # of their own: collect every descendant first, then stop the group and each of them.
        family = descendants(self.popen.pid)
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, sig)
                try:
                    self.popen.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        family += [p for p in descendants(self.popen.pid) if p not in family]
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        self.stopped = True


def _base_env(home: Path, roots: Sequence[Path] = (), extra: Optional[dict] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XINFERENCE", "VIRTUAL_ENV", "PYTHONPATH", "PYTEST"))}
    env.update({
        "XINFERENCE_HOME": str(home),
        "XINFERENCE_AUTH_ADVANCED": "false",  # else 4.x wants a first-run admin account
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "NO_PROXY": "127.0.0.1,localhost,127.0.0.2",
        "no_proxy": "127.0.0.1,localhost,127.0.0.2",
        "PATH": f"{XINFERENCE_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    if roots:
        env["XINFERENCE_MODEL_REGISTER_ROOTS"] = os.pathsep.join(str(Path(r).resolve()) for r in roots)
    env.update(extra or {})
    return env


class _Base:
    """Shared start/stop/log plumbing."""

    def __init__(self, workdir: Optional[Path] = None, roots: Sequence[Path] = (), env: Optional[dict] = None,
                 host: str = "127.0.0.1", auth: bool = False):
        reason = xinference_missing_reason()
        if reason:
            raise XinferenceStartError(reason)
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="xinference-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.roots = list(roots)
        self.extra_env = dict(env or {})
        self.auth = auth
        if auth:  # 4.x "advanced" auth: first-run admin setup, logins, API keys
            self.extra_env["XINFERENCE_AUTH_ADVANCED"] = "true"
        self.host = host
        self.port = free_port(host)
        self.procs: list[_Proc] = []
        self.startup_seconds: Optional[float] = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, name: str, script: str, args: list[str], home: Optional[Path] = None) -> _Proc:
        env = _base_env(home or self.home, self.roots, self.extra_env)
        proc = _Proc(name, [str(XINFERENCE_BIN / script), *args], env, self.workdir)
        self.procs.append(proc)
        if len(self.procs) == 1:
            atexit.register(self.stop)  # even if the test run is interrupted
        return proc

    def logs(self, chars: int = 4000) -> str:
        return "\n".join(f"----- {p.name} ({p.log_path}) -----\n{p.log_tail(chars)}" for p in self.procs)

    def _fail(self, why: str) -> None:
        msg = f"{why}\n{self.logs()}"
        self.stop()
        raise XinferenceStartError(msg)

    def _wait(self, ready, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if not p.alive()]
            if dead:
                self._fail(f"{dead[0].name} exited with code {dead[0].popen.returncode} while waiting for {what}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.5)
        self._fail(f"timed out after {timeout:.0f}s waiting for {what}")

    def _api_ready(self) -> bool:
        status, _ = http_json("GET", f"{self.endpoint}/v1/models", timeout=5)
        return status == 200 or (self.auth and status in (401, 403))

    # ---- 4.x advanced auth (auth=True)
    def setup_token(self, timeout: float = 30.0) -> str:
        """The first-run setup token 4.x logs while no account exists."""
        import re

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                found = re.findall(r"Setup token: (\S+)", proc.log_tail(200_000))
                if found:
                    return found[-1]
            time.sleep(0.5)
        raise XinferenceStartError(f"no setup token in the logs\n{self.logs()}")

    def create_admin_and_api_key(self, username: str = "admin", password: str = "xnb-test-password",
                                 key_name: str = "xinference-nb-tests") -> str:
        """Finish the first-run setup, log in, and create an API key; returns the key. The admin's
        session token is kept in ``self.access_token`` (4.x API keys reach only model query and
        inference routes; registering takes a user session)."""
        status, body = http_json("POST", f"{self.endpoint}/v1/admin/setup",
                                 {"setup_token": self.setup_token(), "username": username, "password": password})
        if status >= 400:
            raise RuntimeError(f"POST /v1/admin/setup answered {status}: {body}")
        status, body = http_json("POST", f"{self.endpoint}/token", {"username": username, "password": password})
        if status >= 400 or not isinstance(body, dict) or "access_token" not in body:
            raise RuntimeError(f"POST /token answered {status}: {body}")
        self.access_token = body["access_token"]
        bearer = {"Authorization": f"Bearer {self.access_token}"}
        status, body = http_json("POST", f"{self.endpoint}/v1/admin/keys", {"name": key_name}, headers=bearer)
        if status >= 400 or not isinstance(body, dict) or "key" not in body:
            raise RuntimeError(f"POST /v1/admin/keys answered {status}: {body}")
        return body["key"]

    def workers(self) -> list[dict]:
        status, body = http_json("GET", f"{self.endpoint}/v1/workers", timeout=10)
        if status != 200:
            raise RuntimeError(f"GET /v1/workers answered {status}: {body}")
        return body if isinstance(body, list) else []

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if not proc.stopped:
                proc.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


class XinferenceLocal(_Base):
    """``xinference-local --host H --port P``: one supervisor with one in-process worker."""

    def start(self) -> "XinferenceLocal":
        t0 = time.monotonic()
        self._spawn("xinference-local", "xinference-local",
                    ["--host", self.host, "--port", str(self.port), "--log-level", "WARNING"])
        self._wait(self._api_ready, f"xinference-local to answer GET {self.endpoint}/v1/models")
        self.startup_seconds = time.monotonic() - t0
        return self


class XinferenceCluster(_Base):
    """``xinference-supervisor`` plus ``workers`` × ``xinference-worker`` joined to it.

    Worker i binds 127.0.0.(i+1) when the loopback alias works (so each worker has its own IP, as on
    separate machines, and a bare ``worker_ip`` picks it), else 127.0.0.1 with its own port (then pass
    the full "ip:port" address as ``worker_ip``). Each process gets its own XINFERENCE_HOME.
    """

    def __init__(self, workers: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.n_workers = workers
        self.supervisor_port = free_port(self.host)
        distinct = loopback_alias_works()
        self.worker_hosts = [f"127.0.0.{i + 1}" if distinct else "127.0.0.1" for i in range(workers)]
        self.worker_ports = [free_port(h) for h in self.worker_hosts]
        self.worker_addresses = [f"{h}:{p}" for h, p in zip(self.worker_hosts, self.worker_ports)]

    def start(self) -> "XinferenceCluster":
        t0 = time.monotonic()
        self._spawn("xinference-supervisor", "xinference-supervisor",
                    ["-H", self.host, "--port", str(self.port), "--supervisor-port", str(self.supervisor_port),
                     "--log-level", "WARNING"])
        self._wait(self._api_ready, f"xinference-supervisor to answer GET {self.endpoint}/v1/models")
        for i, (host, port) in enumerate(zip(self.worker_hosts, self.worker_ports)):
            home = self.workdir / f"home-worker{i}"
            home.mkdir(exist_ok=True)
            self._spawn(f"xinference-worker{i}", "xinference-worker",
                        ["-e", self.endpoint, "-H", host, "--worker-port", str(port), "--log-level", "WARNING"],
                        home=home)
        self._wait(self._workers_joined, f"{self.n_workers} workers to join {self.endpoint}")
        self.startup_seconds = time.monotonic() - t0
        return self

    def worker_addresses_seen(self) -> set[str]:
        found = set()
        for info in self.workers():
            text = json.dumps(info)
            found.update(a for a in self.worker_addresses if a in text)
        return found

    def _workers_joined(self) -> bool:
        return len(self.worker_addresses_seen()) == self.n_workers
