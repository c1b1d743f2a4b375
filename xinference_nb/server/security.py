"""What the REST server refuses, and why: API key, allowed model roots, request body limits.

Kept free of FastAPI so the rules are plain functions the app (and tests) call.

* ``api_key``: with a key set, every route but ``GET /v1/cluster/auth`` (which only says whether a key
  is needed, as Xinference's does) needs ``Authorization: Bearer <key>``.
* Allowed roots: a model path sent over REST (``model_path`` of a launch, ``model_uri`` of a
  registration, ``model_path`` of the auto-parse route) must resolve (symlinks and ``..`` followed)
  inside one of the roots: ``allowed_roots=`` of ``serve()``, else ``XINFERENCE_NB_ALLOWED_ROOTS``
  (``os.pathsep``-separated), else the user's home, the Hugging Face cache, ``XINFERENCE_NB_HOME``
  and the working directory. A folder is walked: every file and folder in it (links followed) must
  resolve inside the roots too, since an engine reads them. ``allow_any_path=True`` lifts the rule.
  A default root that is too broad (``/``, a system folder such as ``/etc`` or ``/usr``: see
  ``root_problem``) is skipped; an explicit one is refused at start (``RootTooBroad``).
* Host header (DNS rebinding): without an API key, only requests addressed to a loopback name
  (``localhost``, ``*.localhost``, ``127.0.0.1``, ``[::1]``, a loopback name the server was bound to)
  or a name in ``allowed_hosts`` are answered; others get 403. With a key, any Host.
* Flexible registrations (which name a Python callable to import) and ``trust_remote_code`` (which runs
  a model repository's Python) are refused over REST unless the server allows them.
* Removing a cached model (``DELETE /v1/cache/models``) deletes files: refused unless the server was
  started with ``allow_cache_delete``, and then only inside the allowed roots.
* Bodies larger than ``max_body_bytes`` get 413; multipart bodies on the upload routes
  (``UPLOAD_ROUTES``) get ``max_upload_bytes`` instead.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import XinfError
from ..model_types import model_type

ALLOWED_ROOTS_ENV = "XINFERENCE_NB_ALLOWED_ROOTS"
# a folder sent over REST is walked (every file an engine may open must resolve inside the roots):
# at most this many entries, this deep (a model folder has tens of files, a diffusers one two levels)
MAX_FOLDER_ENTRIES = 20_000
MAX_FOLDER_DEPTH = 16
# the routes that take file uploads: only there a multipart body gets max_upload_bytes
UPLOAD_ROUTES = frozenset([model_type("audio").routes[m] for m in ("transcriptions", "speech", "translations")]
                          + [model_type("image").routes[m] for m in ("image_to_image", "inpainting")])


class ServerError(XinfError):
    """The server could not start (port in use, bad host, unsafe settings) or is not running."""


class RootTooBroad(ServerError):
    """An allowed model root that would open system folders (``/``, ``/etc``, ``/usr``...) to REST clients."""


class Refused(Exception):
    """A request the server's settings forbid. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


# Folders that are never a model root: the root itself, and each of these (the whole tree for the
# ones in _SYSTEM_TREES), unless it is the user's home.
_SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
                "/run", "/sbin", "/snap", "/sys", "/usr", "/var", "/Users", "/System", "/Library", "/private",
                "/private/etc", "/private/var", "/Applications", "/Volumes")
_SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/root", "/sys", "/private/etc")


def _resolved(path: Any) -> Path:
    p = Path(path).expanduser()
    try:
        return p.resolve(strict=False)
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def _system_dirs() -> tuple[set[Path], set[Path]]:
    dirs, trees = set(), set()
    for d in _SYSTEM_DIRS:
        dirs.update({Path(d), _resolved(d)})
    for d in _SYSTEM_TREES:
        trees.update({Path(d), _resolved(d)})
    for var in ("SystemRoot", "windir", "ProgramFiles", "ProgramFiles(x86)", "ProgramData"):  # Windows
        if os.environ.get(var):
            trees.add(_resolved(os.environ[var]))
    return dirs, trees


def root_problem(path: Any) -> Optional[str]:
    """Why ``path`` is too broad to be an allowed model root (None when it is fine): the file-system
    root, a system folder (/etc, /usr, /var, /root unless it is the home...) or a folder inside
    /etc, /proc, /sys, /dev, /boot."""
    p = _resolved(path)
    if p == Path(p.anchor):
        return "the root of the file system"
    try:
        home = _resolved(Path.home())
    except (RuntimeError, KeyError, OSError):
        home = None
    if home is not None and home != Path(home.anchor) and (p == home or home in p.parents):
        return None
    dirs, trees = _system_dirs()
    if p in dirs:
        return "a system folder"
    for tree in trees:
        if p == tree or tree in p.parents:
            return f"inside the system folder {tree}"
    return None


def check_roots(roots: Iterable[Any], where: str) -> None:
    """Raise ``RootTooBroad`` naming every root in ``roots`` that ``root_problem`` refuses."""
    bad = [(str(r), why) for r in roots if (why := root_problem(r))]
    if bad:
        listed = "; ".join(f"{r} ({why})" for r, why in bad)
        raise RootTooBroad(f"{where}: refused allowed model root{'s' if len(bad) > 1 else ''} {listed}: it would let "
                           "any REST client load files from system folders. Name the folder that holds your models "
                           "(e.g. ~/models) instead; to accept model paths anywhere on purpose, use "
                           "allow_any_path=True (xinf serve --allow-any-path).")


def env_roots() -> Optional[list[Path]]:
    env = os.environ.get(ALLOWED_ROOTS_ENV)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return None


def default_roots() -> list[Path]:
    """``XINFERENCE_NB_ALLOWED_ROOTS`` when set, else the home, the working directory, the Hugging Face
    caches and the package homes, each only when ``root_problem`` finds it narrow enough (a server
    started from ``/`` does not open ``/``)."""
    explicit = env_roots()
    candidates = explicit if explicit is not None else [Path.home(), Path.cwd()]
    if explicit is None:
        for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XINFERENCE_NB_HOME", "XINFERENCE_HOME"):
            if os.environ.get(var):
                candidates.append(Path(os.environ[var]).expanduser())
    return [r for r in candidates if root_problem(r) is None]


@dataclass
class ServerSettings:
    api_key: Optional[str] = None
    allowed_roots: Optional[list[Path]] = None   # None: default_roots() at check time
    allow_any_path: bool = False
    allow_flexible: bool = False
    allow_trust_remote_code: bool = False
    allow_virtualenv: bool = False               # REST may install packages / set a model process's env
    allow_cache_delete: bool = False             # REST may delete cached models' files (DELETE /v1/cache/models)
    allowed_hosts: Optional[list[str]] = None    # Host names answered without an API key, beside loopback ("*": any)
    bind_hosts: list[str] = field(default_factory=list)  # loopback names the server was bound to (note_bind_host)
    max_body_bytes: int = 8 * 1024 * 1024        # JSON bodies
    max_upload_bytes: int = 64 * 1024 * 1024     # multipart (audio files)
    batch_wait_ms: float = 0.0                   # extra batching window for embeddings / rerank (0: none)
    max_batch: int = 256                         # inputs per batched call
    llm_concurrency: int = 16                    # concurrent LLM calls per model (FIFO beyond that; = max_num_seqs)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.allowed_roots is not None:
            self.allowed_roots = [Path(p).expanduser() for p in self.allowed_roots]
            check_roots(self.allowed_roots, "allowed_roots")
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str) or not all(isinstance(h, str) and h.strip()
                                                              for h in self.allowed_hosts):
                raise ServerError("allowed_hosts: must be a list of host names (or [\"*\"] for any), got "
                                  f"{self.allowed_hosts!r}")
            self.allowed_hosts = [_host_name(h) if h.strip() != "*" else "*" for h in self.allowed_hosts]

    def check_start(self) -> None:
        """The checks that read the environment, run when an app is created: a too-broad root in
        ``XINFERENCE_NB_ALLOWED_ROOTS`` is refused like one passed as ``allowed_roots``."""
        if self.allowed_roots is None:
            roots = env_roots()
            if roots is not None:
                check_roots(roots, ALLOWED_ROOTS_ENV)

    # ------------------------------------------------------------------ Host header (DNS rebinding)
    def note_bind_host(self, host: str) -> None:
        """Answer Host names equal to the bound interface's name when it is a loopback one."""
        name = _host_name(host)
        if name and name not in self.bind_hosts and _resolves_to_loopback(name):
            self.bind_hosts.append(name)

    def host_ok(self, host_header: Optional[str]) -> bool:
        if self.api_key or not host_header:  # no Host header: not a browser (they always send one)
            return True
        if self.allowed_hosts and "*" in self.allowed_hosts:
            return True
        name = _host_name(host_header)
        return _is_loopback_name(name) or name in self.bind_hosts or name in (self.allowed_hosts or ())

    def host_refusal(self, host_header: str) -> str:
        return (f"Host {host_header[:100]!r} is refused: without an API key this server answers only requests addressed "
                "to a loopback name (localhost, 127.0.0.1, [::1]), so that a web page cannot reach it through DNS "
                "rebinding. Fix: set an API key (serve(api_key=...) / xinf serve -ak KEY), or name the host in "
                "allowed_hosts (serve(allowed_hosts=[...]) / xinf serve --allowed-host NAME).")

    def exposure_warning(self, host: str) -> Optional[str]:
        """The warning for a bind address other machines can reach while no API key is set."""
        if self.api_key or _resolves_to_loopback(_host_name(host)):
            return None
        return (f"WARNING: the server listens on {host}, reachable from other machines, WITHOUT an API key. "
                "Anyone who can reach this port can launch models and read what they produce (the Host rule "
                "only stops web pages; other clients can forge it). Set an API key (xinf serve -ak KEY / "
                "serve(api_key=...)), or bind 127.0.0.1.")

    # ------------------------------------------------------------------ api key
    def auth_ok(self, authorization: Optional[str]) -> bool:
        if not self.api_key:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode("utf-8"), self.api_key.encode("utf-8"))

    # ------------------------------------------------------------------ paths
    def roots(self) -> list[Path]:
        return list(self.allowed_roots) if self.allowed_roots is not None else default_roots()

    def check_path(self, value: Any, what: str, *, walk: bool = True) -> None:
        """Refuse a local path (plain or file:// URI) outside the allowed roots. Hub ids pass. A folder is
        walked (``walk``; False for a path that must be a file, such as an image's: its reader refuses
        a folder with its own 400)."""
        if isinstance(value, str):
            from ..engines.options import check_path_value

            problem = check_path_value(value, what)   # NUL bytes, over-long names: 400, whatever the roots
            if problem:
                raise Refused(f"{what}: {problem}", status=400)
        if self.allow_any_path or value is None or value == "":
            return
        if not isinstance(value, str):
            raise Refused(f"{what}: must be a string path", status=400)
        path = _local_path(value)
        if path is None:
            return
        try:
            resolved = path.expanduser().resolve(strict=False)
        except (OSError, RuntimeError) as exc:
            raise Refused(f"{what}: {value!r} cannot be resolved ({exc})", status=400) from None
        roots = self._resolved_roots()
        if not _inside(resolved, roots):
            raise Refused(f"{what}: {value!r} is outside the server's allowed model roots ({self._roots_text()}). "
                          f"Move the model under one of them, or restart the server with the folder in "
                          f"{ALLOWED_ROOTS_ENV} (or serve(allowed_roots=[...]) / xinf serve --allowed-root PATH, or "
                          "--allow-any-path).")
        if walk and resolved.is_dir():
            self._check_folder(resolved, roots, what, value)

    def _resolved_roots(self) -> list[Path]:
        out = []
        for root in self.roots():
            try:
                out.append(root.resolve(strict=False))
            except (OSError, RuntimeError):
                continue
        return out

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.roots()) or "(none)"

    def _check_folder(self, folder: Path, roots: list[Path], what: str, value: str) -> None:
        """Every file and folder under ``folder`` (a model or adapter folder an engine will read) must
        resolve inside the roots too: a link inside an allowed folder to a file outside would be read
        all the same. Linked folders inside the roots are walked as well (once each); at most
        MAX_FOLDER_ENTRIES entries, MAX_FOLDER_DEPTH levels."""
        seen = {folder}
        stack = [(folder, folder, 0)]   # (the folder, the path it has under ``folder``, its depth)
        count = 0
        while stack:
            current, shown, depth = stack.pop()
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue   # unreadable: the engine cannot read it either
            for entry in entries:
                count += 1
                if count > MAX_FOLDER_ENTRIES:
                    raise Refused(f"{what}: {value!r} holds more than {MAX_FOLDER_ENTRIES} files and folders; the "
                                  "server checks each one an engine may open against its allowed roots. Give the "
                                  "model's (or adapter's) own folder", status=400)
                entry_path, shown_path = Path(entry.path), shown / entry.name
                try:
                    link = entry.is_symlink()
                    target = entry_path.resolve(strict=False) if link else entry_path
                    is_dir = target.is_dir() if link else entry.is_dir(follow_symlinks=False)
                except (OSError, RuntimeError):
                    raise Refused(f"{what}: {shown_path} (in {value!r}) cannot be resolved", status=400) from None
                if link and not _inside(target, roots):
                    raise Refused(f"{what}: {shown_path} (in {value!r}) links to {target}, outside the server's "
                                  f"allowed model roots ({self._roots_text()}); an engine would read it. Copy the file "
                                  "into the folder, or add the folder it links to to the allowed roots.")
                if is_dir and target not in seen:
                    if depth + 1 > MAX_FOLDER_DEPTH:
                        raise Refused(f"{what}: {value!r} has folders more than {MAX_FOLDER_DEPTH} levels deep "
                                      f"({shown_path}); give the model's (or adapter's) own folder", status=400)
                    seen.add(target)
                    stack.append((target, shown_path, depth + 1))

    def check_document_paths(self, doc: Any) -> None:
        """Every ``model_uri`` in a registration document (top level and model_specs[])."""
        if not isinstance(doc, dict):
            return
        self.check_path(doc.get("model_uri"), "model_uri")
        specs = doc.get("model_specs")
        if isinstance(specs, list):
            for i, spec in enumerate(specs):
                if isinstance(spec, dict):
                    self.check_path(spec.get("model_uri"), f"model_specs[{i}].model_uri")
                    self._check_beside(spec.get("model_uri"), spec.get("multimodal_projectors"),
                                       f"model_specs[{i}].multimodal_projectors")

    def _check_beside(self, model: Any, names: Any, what: str) -> None:
        """Projector files named relative to a model (a llama.cpp vision GGUF's mmproj, which the engine
        opens in the model file's folder) must resolve inside the roots too (a link there may lead out)."""
        if not isinstance(model, str) or not model or not isinstance(names, (list, tuple)):
            return
        base = _local_path(model)
        if base is None:
            return
        folder = base.expanduser() if base.expanduser().is_dir() else base.expanduser().parent
        for i, name in enumerate(names):
            if isinstance(name, str) and name and _relative_name(name):
                self.check_path(str(folder / name), f"{what}[{i}]", walk=False)

    # ------------------------------------------------------------------ deleting files
    def check_cache_delete(self, paths: Iterable[str]) -> None:
        """Removing a cached model over REST deletes files: refused (403) unless ``allow_cache_delete``;
        when allowed, every path it deletes must lie inside the allowed roots (unless ``allow_any_path``)."""
        if not self.allow_cache_delete:
            raise Refused("removing a cached model over REST is refused: it deletes files on the server. Remove it "
                          "in the notebook (Client().remove_cached_model(...)), or restart the server with "
                          "allow_cache_delete=True (xinf serve --allow-cache-delete).")
        for path in paths:
            self.check_path(path, "model_version", walk=False)

    # ------------------------------------------------------------------ code execution
    def check_flexible(self, model_type: str) -> None:
        if model_type == "flexible" and not self.allow_flexible:
            raise Refused("registering a flexible model over REST is refused: its launcher is Python code the "
                          "server would import. Register it in the notebook (Client().register_model(...)), or "
                          "restart the server with allow_flexible=True (xinf serve --allow-flexible).")

    def check_trust_remote_code(self, body: Any) -> None:
        if self.allow_trust_remote_code:
            return
        hit = _find_true_key(body, "trust_remote_code")
        if hit:
            raise Refused(f"{hit}: trust_remote_code=True is refused over REST: it runs Python code shipped with the "
                          "model. Launch it in the notebook, or restart the server with "
                          "allow_trust_remote_code=True (xinf serve --allow-trust-remote-code).")

    def check_hub_code(self, body: Any) -> None:
        """``attn_implementation="org/repo"`` makes transformers fetch and run a kernel from the hub: the
        same trust as ``trust_remote_code``, refused over REST unless that option is allowed."""
        if self.allow_trust_remote_code:
            return
        for where, value in _key_values(body, ("attn_implementation",)):
            if isinstance(value, str) and ("/" in value or ":" in value):
                raise Refused(f"{where}: {value!r} names a hub kernel, which runs code fetched from the hub; "
                              "use a built-in implementation (\"eager\", \"sdpa\", \"flash_attention_2\"), or "
                              "restart the server with allow_trust_remote_code=True.")

    def check_option_paths(self, options: Any, model_path: Any = None) -> None:
        """Every path a launch option names (``cache_dir``, ``offload_folder``, ``*_file``, ``*_dir``,
        ``*_path``, ``*_folder`` at any nesting, e.g. ``model_kwargs.offload_folder``, and
        ``multimodal_projector``) must lie inside the allowed roots, like ``model_path``: an engine reads
        or writes there. A relative ``multimodal_projector`` is a file beside the model: checked in
        ``model_path``'s folder (without one, beside the registration's model_uri, checked when the
        registration came in)."""
        if isinstance(options, dict) and isinstance(options.get("multimodal_projector"), str) \
                and _relative_name(options["multimodal_projector"]):
            options = dict(options)
            self._check_beside(model_path, [options.pop("multimodal_projector")], "multimodal_projector")
        for where, value in _key_values(options, _PATH_KEYS):
            if isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    self.check_path(item, f"{where}[{i}]")
            elif value is not None:
                self.check_path(value if isinstance(value, str) else str(value), where)

    # ------------------------------------------------------------------ package installs / process env
    def check_virtualenv(self, body: Any) -> None:
        """Everything that installs packages or sets a model process's environment, at any nesting
        level of a launch body or a registration document: ``virtual_env_packages``,
        ``virtual_env_find_links``, ``enable_virtual_env: true``, ``envs`` and a ``virtualenv`` object
        with packages or pip settings. Refused (403) unless ``allow_virtualenv``; when allowed, every
        package must be a requirement specifier and every local path or file: URL (packages,
        find_links, index URLs) must lie inside the allowed roots (SpecError naming the entry: 400)."""
        hits = _venv_hits(body)
        if not hits:
            return
        if not self.allow_virtualenv:
            path = hits[0][0]
            raise Refused(f"{path}: installing packages into a model's virtualenv or setting a model process's "
                          "environment is refused over REST: a package's setup code runs as the server's user. "
                          "Launch or register it in the notebook, or restart the server with allow_virtualenv=True "
                          "(xinf serve --allow-virtualenv).")
        from ..isolation.virtualenv import as_launch_option_error, check_location, check_package, check_settings
        from ..errors import FieldIssue, SpecError

        roots = None if self.allow_any_path else self.roots()
        for path, key, value in hits:
            if key in ("virtual_env_packages", "virtual_env_find_links"):
                if not isinstance(value, list):
                    raise SpecError([FieldIssue(path, f"must be a list of strings, got {type(value).__name__}")])
                with as_launch_option_error():
                    for i, entry in enumerate(value):
                        if key == "virtual_env_packages":
                            check_package(entry, f"{path}[{i}]", roots=roots)
                        else:
                            check_location(entry, f"{path}[{i}]", roots)
            elif key == "virtualenv":
                if not isinstance(value, dict):
                    raise SpecError([FieldIssue(path, f"must be an object, got {type(value).__name__}")])
                packages = value.get("packages")
                if packages is not None and not isinstance(packages, list):
                    raise SpecError([FieldIssue(f"{path}.packages", "must be a list of strings")])
                for i, entry in enumerate(packages or []):
                    check_package(entry, f"{path}.packages[{i}]", roots=roots)
                check_settings(value, path, roots)
            elif key == "envs" and not (isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
                raise SpecError([FieldIssue(path, "must be an object of string values")])


def _inside(resolved: Path, roots: list[Path]) -> bool:
    return any(resolved == root or root in resolved.parents for root in roots)


def _local_path(value: str) -> Optional[Path]:
    """A Path for local-looking values (absolute, ~, ./, file://); None for hub ids like 'org/name'."""
    v = value.strip()
    if v.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(v).path))
    if "://" in v:
        return None  # http(s)://, s3://...: not a local path
    if v.startswith(("/", "~", ".", "\\")) or (len(v) > 1 and v[1] == ":"):
        return Path(v)
    # a relative path that exists is a local path; "org/name" hub ids are not
    if os.path.exists(v):
        return Path(v)
    if v.count("/") == 1 and not v.startswith("/"):
        return None
    return Path(v)


_MAX_DEPTH = 16


def _too_deep(path: str) -> Refused:
    return Refused(f"{path or 'body'}: nested more than {_MAX_DEPTH} levels deep; flatten the request", status=400)


def _relative_name(value: str) -> bool:
    """A name relative to a model's folder (no absolute path, ~, URI or '..'): where the llama.cpp
    engine looks for a projector."""
    v = value.strip()
    return not (v.startswith(("/", "\\", "~")) or "://" in v or (len(v) > 1 and v[1] == ":")
                or ".." in v.replace("\\", "/").split("/"))


def _is_path_key(key: str) -> bool:
    return key in ("cache_dir", "offload_folder", "gguf_file", "multimodal_projector") or key.endswith(
        ("_file", "_files", "_dir", "_path", "_folder"))


def _PATH_KEYS(key: str) -> bool:  # noqa: N802 - a predicate used where a key tuple fits
    return _is_path_key(key) and key != "model_path"   # model_path: checked by the launch route itself


def _key_values(obj: Any, keys: Any, path: str = "", depth: int = 0) -> Iterable[tuple[str, Any]]:
    """(json path, value) of every key in ``keys`` (a tuple, or a predicate on the key) at any nesting."""
    if depth > _MAX_DEPTH:
        raise _too_deep(path)
    match = keys if callable(keys) else (lambda k: k in keys)
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and match(k):
                yield here, v
            yield from _key_values(v, keys, here, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _key_values(v, keys, f"{path}[{i}]", depth + 1)


def _find_true_key(obj: Any, key: str) -> Optional[str]:
    """The path of the first ``key`` whose value is not None or False (strict: "false" or 0 is not False)."""
    return next((where for where, v in _key_values(obj, (key,)) if v is not None and v is not False), None)


_VENV_DEFAULTS = {"packages": [], "inherit_pip_config": True}


def _venv_active(value: Any, key: str) -> bool:
    """Whether a virtualenv-related value asks for anything (None, [], {}, false and the document
    defaults do not)."""
    if key == "enable_virtual_env":
        return value is not None and value is not False
    if key == "virtualenv":
        if value is None:
            return False
        if not isinstance(value, dict):
            return True
        return any(v is not None and v != _VENV_DEFAULTS.get(k, None) and v != [] and v != ""
                   for k, v in value.items())
    return value not in (None, [], {}, "")


def _venv_hits(obj: Any) -> list[tuple[str, str, Any]]:
    """(path, key, value) of every active virtualenv-related key in ``obj``, at any depth."""
    keys = ("virtual_env_packages", "virtual_env_find_links", "enable_virtual_env", "envs", "virtualenv")
    return [(where, where.rsplit(".", 1)[-1], v) for where, v in _key_values(obj, keys)
            if _venv_active(v, where.rsplit(".", 1)[-1])]


def _host_name(host: str) -> str:
    """The name part of a Host header or bind address: no port, no brackets, lower case, no trailing dot."""
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _resolves_to_loopback(name: str) -> bool:
    """True for a loopback name, or a name every address of which is a loopback one (e.g. a
    machine name mapped to 127.0.1.1). Wildcards (0.0.0.0, ::) are not loopback."""
    if _is_loopback_name(name):
        return True
    if not name or name in ("0.0.0.0", "::"):
        return False
    try:
        ipaddress.ip_address(name)
        return False  # an address that is not loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    addrs = {info[4][0].split("%", 1)[0] for info in infos}
    return bool(addrs) and all(_is_loopback_name(a) for a in addrs)


def parse_roots(values: Iterable[str] | None) -> Optional[list[Path]]:
    if not values:
        return None
    return [Path(v).expanduser() for v in values]
