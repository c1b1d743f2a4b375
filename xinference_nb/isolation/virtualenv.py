"""Per-model virtual environments: a model whose ``virtualenv.packages`` is non-empty runs in a child
process on the Python of its own venv, so the kernel never imports the isolated packages.

How the venv is made (once per model, under ``$XINFERENCE_NB_HOME/virtualenv/<model_name>``):

* ``python -m venv --without-pip`` with the kernel's interpreter: fast and offline.
* A ``_xinference_nb_parent.pth`` file in the venv's site-packages adds the kernel environment's
  site-packages *after* the venv's own (``site.addsitedir``, so its ``.pth`` files, editable installs
  included, work). This is ``--system-site-packages`` against the kernel's environment rather than
  the base interpreter's: torch, transformers, pip and xinference_nb itself are inherited without a
  download, which is what lets this work without a network, while anything installed into the venv
  shadows the kernel's copy. (``venv --system-site-packages`` alone would expose the *base*
  interpreter's packages, not the kernel venv's.)
* The packages are installed with ``<venv python> -m pip install`` (or ``uv pip install`` when
  ``XINFERENCE_NB_VENV_INSTALLER=uv`` and uv is on PATH), with ``index_url``, ``extra_index_url``,
  ``find_links``, ``trusted_host`` and ``no_build_isolation`` from the spec. With
  ``inherit_pip_config`` false, pip runs ``--isolated`` (no pip.conf, no ``PIP_*`` variables).
  Xinference's ``#system_<pkg>#`` / ``#..._dependencies#`` placeholders are dropped (the kernel's
  packages are visible anyway), and an entry ending in ``; #engine# == "name"`` is installed only
  for that engine.
* Every package entry must be a requirement specifier (``packaging.requirements.Requirement``):
  ``name``, ``name>=1.0``, ``name[extra]; python_version>"3.9"`` or, for a local package,
  ``name @ file:///abs/path``. A pip option (``--no-index``) or a bare path is a SpecError, in the
  kernel as over REST (``check_package``, which the server also uses, with its allowed roots). pip
  options have their own fields: the document's ``index_url``, ``extra_index_url``, ``find_links``,
  ``trusted_host``, ``no_build_isolation`` and ``inherit_pip_config`` (pip.conf / ``PIP_*``
  variables still apply with it), and ``launch_model(virtual_env_find_links=[...])``.
  Output is appended to ``<venv>/install.log`` and each line is reported to the launch progress;
  a failed install raises LaunchError with the log's tail and path, and is retried on the next launch.
  A finished install is recorded in ``<venv>/xinference_nb_packages.json`` so the next launch with
  the same packages skips pip.

The child runs ``python -m xinference_nb.isolation.venv_worker`` with the venv's Python, talking over
two private pipes (``multiprocessing.connection`` framing, pickle): it loads the model with the
same engine loader, then serves method calls. ``VirtualEnvModel`` is the kernel-side proxy: its
methods are the child model's public methods, results come back as plain values (an iterator
result, e.g. streamed speech, comes back as an iterator over its items), errors of ours come back as
the same exception class. ``close()`` stops the child. Its stdout/stderr go to ``<venv>/worker.log``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .. import errors as _errors
from ..errors import LaunchError, XinfError
from ..engines import Engine, EngineModel, LoadRequest

INSTALL_LOG = "install.log"
WORKER_LOG = "worker.log"
STAMP = "xinference_nb_packages.json"
PTH_NAME = "_xinference_nb_parent.pth"


class VirtualEnvWorkerError(XinfError, RuntimeError):
    """The model's virtualenv process failed (it exited, or raised an error that is not ours)."""


# ------------------------------------------------------------------------------------------------
# the venv
# ------------------------------------------------------------------------------------------------

def venv_root() -> Path:
    home = os.environ.get("XINFERENCE_NB_HOME") or str(Path.home() / ".xinference_nb")
    return Path(home).expanduser() / "virtualenv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _venv_site_packages(venv: Path) -> Path:
    if os.name == "nt":  # pragma: no cover
        return venv / "Lib" / "site-packages"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def _parent_site_dirs() -> list[str]:
    dirs = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path and path not in dirs:
            dirs.append(path)
    for path in sys.path:
        if path.endswith(("site-packages", "dist-packages")) and path not in dirs and os.path.isdir(path):
            dirs.append(path)
    return dirs


def _package_root() -> str:
    """The folder holding the ``xinference_nb`` package (put first on the child's path)."""
    return str(Path(__file__).resolve().parents[2])


def create_venv(venv: Path, log: Path) -> None:
    """Make the venv (no pip inside: pip comes from the kernel's environment through the .pth)."""
    venv.mkdir(parents=True, exist_ok=True)
    python = venv_python(venv)
    if not python.exists():
        _log(log, f"$ {sys.executable} -m venv --without-pip {venv}")
        proc = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                              text=True)
        _log(log, proc.stdout + proc.stderr)
        if proc.returncode != 0 or not python.exists():
            raise LaunchError(f"could not create the virtualenv {venv} (exit {proc.returncode}); see {log}:\n"
                              + _tail(log))
    site_dir = _venv_site_packages(venv)
    site_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"import site; site.addsitedir({d!r})" for d in _parent_site_dirs()]
    (site_dir / PTH_NAME).write_text("\n".join(lines) + "\n")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def install_command(venv: Path, settings: Any, packages: list[str]) -> tuple[list[str], dict[str, str]]:
    """The pip (or uv) command line and environment that install ``packages`` into ``venv``."""
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env.pop("PYTHONPATH", None)
    python = str(venv_python(venv))
    installer = os.environ.get("XINFERENCE_NB_VENV_INSTALLER", "pip").lower()
    uv = shutil.which("uv") if installer == "uv" else None
    if uv:
        cmd = [uv, "pip", "install", "--python", python]
        if getattr(settings, "index_strategy", None):
            cmd += ["--index-strategy", settings.index_strategy]
        if not settings.inherit_pip_config:
            cmd += ["--no-config"]
    else:
        cmd = [python, "-m", "pip", "install", "--progress-bar", "off"]
        if not settings.inherit_pip_config:
            cmd.insert(4, "--isolated")
            env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
            env["PIP_CONFIG_FILE"] = os.devnull
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if settings.index_url:
        cmd += ["--index-url", settings.index_url]
    for url in _as_list(settings.extra_index_url):
        cmd += ["--extra-index-url", url]
    for link in _as_list(settings.find_links):
        cmd += ["--find-links", link]
    if not uv:
        for host in _as_list(settings.trusted_host):
            cmd += ["--trusted-host", host]
    if settings.no_build_isolation:
        cmd += ["--no-build-isolation"]
    return cmd + packages, env


def _log(log: Path, text: str) -> None:
    if not text:
        return
    with open(log, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def _tail(log: Path, lines: int = 25) -> str:
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# what may be installed: one check, used in-kernel (here) and by the REST server (server/security.py)
# ------------------------------------------------------------------------------------------------

_ENGINE_MARKER = re.compile(r"""(?:\s+and\s+)?#engine#\s*(==|!=)\s*(["'])([^"']*)\2(?:\s+and\s+)?""")
_PLACEHOLDER = re.compile(r"^#[A-Za-z0-9_.\-]+#$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}"
                   r"[A-Za-z0-9])?)*(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")
REQUIREMENT_HELP = ("write requirement specifiers: 'name', 'name==1.2', 'name[extra]>=1.0; python_version>\"3.9\"', "
                    "or 'name @ file:///abs/path' for a local package. pip options go in the document's virtualenv "
                    "fields (index_url, extra_index_url, find_links, trusted_host, no_build_isolation, "
                    "inherit_pip_config) or launch_model(virtual_env_find_links=[...]), never in the package list")


def _pip_entry(value: Any, field: str, what: str, help_text: str) -> tuple[str, Callable[[str], Exception]]:
    """(``value`` stripped, the SpecError maker for ``field``) of one entry of a pip list: a non-empty
    string that is no pip option. ``what`` names what the entry is, ``help_text`` says how to write one."""
    from ..errors import FieldIssue, SpecError

    def bad(message: str) -> SpecError:
        return SpecError([FieldIssue(field, message)])

    if not isinstance(value, str) or not value.strip():
        raise bad(f"must be a non-empty string ({what}), got {type(value).__name__} {value!r}; {help_text}")
    if value.strip().startswith("-"):
        raise bad(f"{value!r} is a pip option, not {what}; {help_text}")
    return value.strip(), bad


def _inside(path: Path, roots: list[Path]) -> bool:
    try:
        resolved = path.expanduser().resolve(strict=False)
    except (OSError, RuntimeError, ValueError):
        return False
    for root in roots:
        try:
            r = root.expanduser().resolve(strict=False)
        except (OSError, RuntimeError, ValueError):
            continue
        if resolved == r or r in resolved.parents:
            return True
    return False


def _file_url_path(url: str) -> Optional[Path]:
    """The local path of a file: URL (None for other schemes)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url!r} names host {parsed.netloc!r}; write file:///absolute/path")
    return Path(unquote(parsed.path))


def check_package(entry: Any, field: str, roots: Optional[list[Path]] = None, engine: Optional[str] = None
                  ) -> Optional[str]:
    """One entry of a virtualenv package list → the requirement to install, or None when it is to be
    skipped: Xinference's placeholders (``#system_torch#``, ``#vllm_dependencies#``: packages of the
    serving environment, which the venv inherits from the kernel) and entries whose
    ``; #engine# == "name"`` condition does not hold for ``engine``.

    The entry must parse as a ``packaging.requirements.Requirement``: never a pip option
    (``--no-index``), a bare path or a URL on its own. ``roots`` is the REST server's allowed roots:
    then a ``name @ file:///...`` must lie inside one of them and other URLs are refused; ``None``
    (in-kernel, the user's own code) allows any direct reference. SpecError naming ``field`` otherwise.
    ``engine`` None checks every entry and keeps those with an engine condition."""
    from packaging.requirements import InvalidRequirement, Requirement

    text, bad = _pip_entry(entry, field, "a package", REQUIREMENT_HELP)
    if any(c in text for c in "\r\n\x00"):
        raise bad(f"{entry!r} spans several lines; give one requirement per entry")
    req_text, _, marker = text.partition(";")
    holds = True
    if "#engine#" in marker:
        m = _ENGINE_MARKER.search(marker)
        if m is None:
            raise bad(f"{entry!r}: write the engine condition as '; #engine# == \"name\"'")
        rest = (marker[:m.start()] + " " + marker[m.end():]).strip()
        if rest.startswith(("or ", "and ")) or rest.endswith((" or", " and")) or "#engine#" in rest:
            raise bad(f"{entry!r}: only '; #engine# == \"name\"' joined with 'and' is understood")
        if engine is not None:   # None: check the entry whatever the engine (the server does)
            wanted = m.group(3).strip().lower().replace("-", "_")
            here = engine.strip().lower().replace("-", "_")
            holds = (here == wanted) if m.group(1) == "==" else (here != wanted)
        text = req_text.strip() + (f"; {rest}" if rest else "")
    if _PLACEHOLDER.match(req_text.strip()):
        return None      # Xinference's "#system_torch#" / "#..._dependencies#": the kernel's packages
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise bad(f"{entry!r} is not a requirement specifier ({first}); {REQUIREMENT_HELP}") from None
    if req.url:
        try:
            local = _file_url_path(req.url)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if roots is not None:
            if local is None:
                raise bad(f"{entry!r}: a package from a URL is refused over REST; name a package of the index, "
                          "or a 'name @ file:///...' inside the server's allowed model roots")
            if not _inside(local, roots):
                raise bad(f"{entry!r}: {local} is outside the server's allowed model roots "
                          f"({', '.join(str(r) for r in roots) or 'none'})")
    return text if holds else None


def check_location(value: Any, field: str, roots: Optional[list[Path]] = None) -> str:
    """An index URL or a find-links location: an http(s) URL, or (find links) a local folder / file:
    URL, inside ``roots`` when given. Never a pip option. SpecError naming ``field`` otherwise."""
    text, bad = _pip_entry(value, field, "a URL or a folder", "give one such as https://pypi.org/simple")
    if any(c.isspace() or c == "\x00" for c in text):
        raise bad(f"{value!r} contains whitespace; give one URL or folder per entry")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return text
    if scheme and scheme != "file":
        raise bad(f"{value!r}: use an http(s):// URL, a file:// URL or a folder")
    try:
        local = _file_url_path(text) if scheme == "file" else Path(text)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if roots is not None and (local is None or not _inside(local, roots)):
        raise bad(f"{value!r} is outside the server's allowed model roots "
                  f"({', '.join(str(r) for r in roots) or 'none'})")
    return text


def check_settings(settings: Any, prefix: str = "virtualenv", roots: Optional[list[Path]] = None) -> None:
    """The pip settings of a document's ``virtualenv`` (a VirtualEnvSettings or a dict)."""
    from ..errors import FieldIssue, SpecError

    get = settings.get if isinstance(settings, dict) else (lambda key: getattr(settings, key, None))
    if get("index_url") is not None:
        check_location(get("index_url"), f"{prefix}.index_url", roots)
    for key in ("extra_index_url", "find_links"):
        value = get(key)
        values = [value] if isinstance(value, str) else value
        if values is None:
            continue
        if not isinstance(values, list):
            raise SpecError([FieldIssue(f"{prefix}.{key}", "must be a string or a list of strings")])
        for i, item in enumerate(values):
            check_location(item, f"{prefix}.{key}" + (f"[{i}]" if not isinstance(value, str) else ""), roots)
    hosts = get("trusted_host")
    for i, host in enumerate([hosts] if isinstance(hosts, str) else (hosts or [])):
        if not isinstance(host, str) or not _HOST.match(host.strip()):
            raise SpecError([FieldIssue(f"{prefix}.trusted_host", f"{host!r} is not a host name (host or host:port)")])


@contextmanager
def as_launch_option_error() -> Iterator[None]:
    """A SpecError about a launch_model option becomes a LaunchOptionError (same issues)."""
    from ..errors import LaunchOptionError, SpecError

    try:
        yield
    except LaunchOptionError:
        raise
    except SpecError as exc:
        raise LaunchOptionError(exc.issues) from None


def venv_packages(settings: Any, options: dict[str, Any], engine: Optional[str] = None) -> list[str]:
    """What to install for a launch: the document's ``virtualenv.packages`` and
    ``launch_model(virtual_env_packages=...)``, each checked by ``check_package`` (SpecError naming
    the entry), Xinference's placeholders and other engines' entries left out. The document's pip
    settings and ``virtual_env_find_links`` are checked too."""
    packages: list[str] = []
    doc_packages = list(getattr(settings, "packages", None) or []) if settings is not None else []
    for i, entry in enumerate(doc_packages):
        req = check_package(entry, f"virtualenv.packages[{i}]", engine=engine)
        if req:
            packages.append(req)
    if settings is not None:
        check_settings(settings)
    with as_launch_option_error():
        launch_packages = options.get("virtual_env_packages")
        for i, entry in enumerate([launch_packages] if isinstance(launch_packages, str) else (launch_packages or [])):
            req = check_package(entry, f"virtual_env_packages[{i}]", engine=engine)
            if req:
                packages.append(req)
        links = options.get("virtual_env_find_links")
        for i, link in enumerate([links] if isinstance(links, str) else (links or [])):
            check_location(link, f"virtual_env_find_links[{i}]")
    return packages


def ensure_venv(model_name: str, settings: Any, packages: list[str], progress: Any = None) -> Path:
    """Create the venv of ``model_name`` if needed and install ``packages`` unless the last install
    with the same packages and settings succeeded. Returns the venv folder."""
    venv = venv_root() / model_name
    log = venv / INSTALL_LOG
    venv.mkdir(parents=True, exist_ok=True)
    fingerprint = hashlib.sha256(json.dumps({"packages": packages, "settings": settings.model_dump(mode="json"),
                                             "python": sys.version}, sort_keys=True).encode()).hexdigest()
    stamp = venv / STAMP
    if venv_python(venv).exists() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
                create_venv(venv, log)  # refresh the .pth (cheap) in case the kernel's env moved
                return venv
        except (OSError, ValueError):
            pass
    if progress:
        progress("creating virtualenv", 0.02)
    create_venv(venv, log)
    if not packages:
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "packages": packages}))
        return venv
    cmd, env = install_command(venv, settings, packages)
    _log(log, f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(cmd)}")
    stamp.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(venv), bufsize=1)
    fraction = 0.05
    try:
        with open(log, "a", encoding="utf-8") as f:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if progress and line.strip():
                    fraction = min(0.45, fraction + 0.01)
                    progress(f"pip: {line.strip()[:80]}", fraction)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise LaunchError(f"installing virtualenv.packages {packages} for {model_name!r} failed (pip exit {code}). "
                          f"The venv and its log are kept: {log}\n--- last lines ---\n{_tail(log)}"
                          "Fix the package list or the index settings (index_url, find_links, ...) and launch again.")
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "packages": packages}))
    return venv


# ------------------------------------------------------------------------------------------------
# the child process and its proxy
# ------------------------------------------------------------------------------------------------

def rebuild_error(payload: dict[str, Any]) -> BaseException:
    """An error sent by the worker → an exception of the same class when it is one of ours."""
    name, message, attrs = payload.get("type"), payload.get("message", ""), payload.get("attrs") or {}
    cls = getattr(_errors, name or "", None)
    if isinstance(cls, type) and issubclass(cls, XinfError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        for key, value in attrs.items():
            try:
                setattr(exc, key, value)
            except Exception:
                pass
        return exc
    trace = payload.get("traceback") or ""
    return VirtualEnvWorkerError(f"{name}: {message}\n(in the model's virtualenv process)\n{trace}".rstrip())


class VirtualEnvModel(EngineModel):
    """Kernel-side proxy of a model running in its virtualenv's child process."""

    def __init__(self, request: LoadRequest, engine: Engine, venv: Path, proc: subprocess.Popen,
                 send: Any, recv: Any, methods: list[str], model_type: str, abilities: tuple[str, ...]):
        self.model_uid = request.model_uid
        self.venv = venv
        self.engine_name = engine.name
        self.model_type = model_type
        self.abilities = abilities
        self._proc = proc
        self._send = send
        self._recv = recv
        self._methods = set(methods)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | self._methods)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self.__dict__.get("_methods", ()):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._request(("call", name, args, kwargs))

        call.__name__ = name
        return call

    def _request(self, message: tuple) -> Any:
        with self._lock:
            if self._closed:
                raise VirtualEnvWorkerError(f"model {self.model_uid!r}: its virtualenv process was stopped")
            try:
                self._send.send(message)
                reply = self._recv.recv()
            except (EOFError, OSError, BrokenPipeError):
                code = self._proc.poll()
                raise VirtualEnvWorkerError(
                    f"model {self.model_uid!r}: the virtualenv process exited (code {code}); see "
                    f"{self.venv / WORKER_LOG}\n{_tail(self.venv / WORKER_LOG)}") from None
            except Exception as exc:  # the result could not be unpickled here
                raise VirtualEnvWorkerError(
                    f"model {self.model_uid!r}: the result of {message[1] if len(message) > 1 else message[0]}() "
                    f"could not be received in the kernel ({type(exc).__name__}: {exc}); return plain values "
                    "(dict, list, str, bytes, numbers) from the model, not objects of the venv's packages") from None
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "iter":
            return iter(reply[1])
        raise rebuild_error(reply[1])

    def memory_bytes(self) -> Optional[int]:
        try:
            return self._request(("memory",))
        except XinfError:
            return None

    def close(self) -> None:
        """Ask the child to free the model and exit; a child busy with a call for more than 10 s (or
        deaf to the request) is terminated, then killed."""
        got = self._lock.acquire(timeout=10)
        try:
            if self._closed:
                return
            self._closed = True
            if got:
                try:
                    self._send.send(("close",))
                    if self._recv.poll(10):
                        self._recv.recv()
                except (EOFError, OSError, BrokenPipeError):
                    pass
            else:
                self._proc.terminate()
        finally:
            if got:
                self._lock.release()
        _stop(self._proc)
        for conn in (self._send, self._recv):
            try:
                conn.close()
            except OSError:
                pass


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _request_payload(request: LoadRequest) -> dict[str, Any]:
    return {
        "model_uid": request.model_uid, "model_type": request.model_type, "model_name": request.model_name,
        "spec": request.spec, "model_spec": request.model_spec,
        "model_path": str(request.model_path) if request.model_path is not None else None,
        "model_format": request.model_format, "quantization": request.quantization,
        "device": asdict(request.device), "options": dict(request.options), "family_spec": request.family_spec,
    }


def start_worker(engine: Engine, request: LoadRequest, venv: Path) -> VirtualEnvModel:
    from multiprocessing.connection import Connection

    python = venv_python(venv)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["XINFERENCE_NB_IN_VIRTUALENV"] = str(venv)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update({str(k): str(v) for k, v in (request.options.get("envs") or {}).items()})  # launch_model(envs=...)
    log = venv / WORKER_LOG
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] worker for {request.model_uid}\n")
        out.flush()
        proc = subprocess.Popen([str(python), "-m", "xinference_nb.isolation.venv_worker", str(to_child_r),
                                 str(from_child_w)], pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(venv))
    os.close(to_child_r)
    os.close(from_child_w)
    send = Connection(to_child_w, readable=False)
    recv = Connection(from_child_r, writable=False)
    try:
        send.send(("load", {"engine": {"name": engine.name, "model_type": engine.model_type,
                                       "loader": engine.loader}, "request": _request_payload(request)}))
        while True:
            while not recv.poll(0.2):
                if proc.poll() is not None:
                    raise VirtualEnvWorkerError(f"the virtualenv process of {request.model_name!r} exited (code "
                                                f"{proc.returncode}) while loading; see {log}:\n{_tail(log)}")
            try:
                reply = recv.recv()
            except EOFError:
                proc.wait(5)
                raise VirtualEnvWorkerError(f"the virtualenv process of {request.model_name!r} exited (code "
                                            f"{proc.poll()}) while loading; see {log}:\n{_tail(log)}") from None
            if reply[0] == "progress":
                step, fraction = reply[1], reply[2]
                request.progress(f"venv: {step}", 0.5 + 0.5 * float(fraction))
                continue
            if reply[0] == "ready":
                info = reply[1]
                return VirtualEnvModel(request, engine, venv, proc, send, recv, info["methods"],
                                       info.get("model_type") or request.model_type,
                                       tuple(info.get("abilities") or ()))
            raise rebuild_error(reply[1])
    except BaseException:
        try:
            send.send(("close",))
        except (OSError, BrokenPipeError):
            pass
        _stop(proc, grace=2.0)
        send.close()
        recv.close()
        raise


def load_in_virtualenv(engine: Engine, request: LoadRequest) -> EngineModel:
    """Install the spec's virtualenv packages (once) and load the model in a child process there."""
    from ..spec.common import VirtualEnvSettings

    # launch_model(virtual_env_packages=...) works for a document without virtualenv settings too
    settings = request.spec.virtualenv or VirtualEnvSettings()
    options = dict(request.options or {})
    packages = venv_packages(settings, options, engine.name)
    find_links = _as_list(options.pop("virtual_env_find_links", None))
    for key in ("virtual_env_packages", "enable_virtual_env"):
        options.pop(key, None)
    if find_links:
        settings = settings.model_copy(update={"find_links": _as_list(settings.find_links) + find_links})
    request.options = options
    request.progress("virtualenv", 0.01)
    from filelock import FileLock

    venv_root().mkdir(parents=True, exist_ok=True)
    # one install at a time per model, across threads and kernels
    with FileLock(str(venv_root() / f".{request.model_name}.lock")):
        venv = ensure_venv(request.model_name, settings, packages, request.progress)
    request.progress("starting the virtualenv process", 0.5)
    return start_worker(engine, request, venv)
