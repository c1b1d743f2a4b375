"""What the REST server refuses, and why: API key, allowed model roots, request body limits.

Kept free of FastAPI so the rules are plain functions the app (and tests) call.

* ``api_key``: with a key set, every route but ``GET /v1/cluster/auth`` (which only says whether a key
  is needed, as Xinference's does) needs ``Authorization: Bearer <key>``.
* Allowed roots: a model path sent over REST (``model_path`` of a launch, ``model_uri`` of a
  registration, ``model_path`` of the auto-parse route) must resolve (symlinks and ``..`` followed)
  inside one of the roots: ``allowed_roots=`` of ``serve()``, else ``XINFERENCE_NB_ALLOWED_ROOTS``
  (``os.pathsep``-separated), else the user's home, the Hugging Face cache, ``XINFERENCE_NB_HOME``
  and the working directory. ``allow_any_path=True`` lifts the rule.
* Flexible registrations (which name a Python callable to import) and ``trust_remote_code`` (which runs
  a model repository's Python) are refused over REST unless the server allows them.
* Bodies larger than ``max_body_bytes`` (JSON) or ``max_upload_bytes`` (multipart uploads) get 413.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

ALLOWED_ROOTS_ENV = "XINFERENCE_NB_ALLOWED_ROOTS"


class Refused(Exception):
    """A request the server's settings forbid. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def default_roots() -> list[Path]:
    env = os.environ.get(ALLOWED_ROOTS_ENV)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    roots = [Path.home(), Path.cwd()]
    for var in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XINFERENCE_NB_HOME", "XINFERENCE_HOME"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]).expanduser())
    return roots


@dataclass
class ServerSettings:
    api_key: Optional[str] = None
    allowed_roots: Optional[list[Path]] = None   # None: default_roots() at check time
    allow_any_path: bool = False
    allow_flexible: bool = False
    allow_trust_remote_code: bool = False
    max_body_bytes: int = 8 * 1024 * 1024        # JSON bodies
    max_upload_bytes: int = 64 * 1024 * 1024     # multipart (audio files)
    batch_wait_ms: float = 5.0                   # dynamic batching window for embeddings / rerank
    max_batch: int = 256                         # inputs per batched call
    llm_concurrency: int = 8                     # concurrent LLM calls per model (FIFO beyond that)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.allowed_roots is not None:
            self.allowed_roots = [Path(p).expanduser() for p in self.allowed_roots]

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

    def check_path(self, value: Any, what: str) -> None:
        """Refuse a local path (plain or file:// URI) outside the allowed roots. Hub ids pass."""
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
        for root in self.roots():
            try:
                root_resolved = root.resolve(strict=False)
            except (OSError, RuntimeError):
                continue
            if resolved == root_resolved or root_resolved in resolved.parents:
                return
        roots = ", ".join(str(r) for r in self.roots()) or "(none)"
        raise Refused(f"{what}: {value!r} is outside the server's allowed model roots ({roots}). Move the model "
                      f"under one of them, or restart the server with the folder in {ALLOWED_ROOTS_ENV} "
                      "(or serve(allowed_roots=[...]) / xinf serve --allowed-root PATH, or --allow-any-path).")

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


def _find_true_key(obj: Any, key: str, path: str = "", depth: int = 0) -> Optional[str]:
    if depth > 8:
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if k == key and v not in (None, False, "false", "False", 0, ""):
                return here
            found = _find_true_key(v, key, here, depth + 1)
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _find_true_key(v, key, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


def parse_roots(values: Iterable[str] | None) -> Optional[list[Path]]:
    if not values:
        return None
    return [Path(v).expanduser() for v in values]
