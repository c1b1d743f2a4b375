"""RemoteClient: the ``Client`` methods over HTTP, for our server or a real Xinference (4.x) server.

    client = RemoteClient("http://127.0.0.1:9997", api_key=None)
    uid = client.launch_model("my-llm", model_engine="transformers")
    model = client.get_model(uid)             # RemoteLLMHandle, RemoteEmbeddingHandle, ...
    for chunk in model.chat([{"role": "user", "content": "hi"}], generate_config={"stream": True}): ...

Method names, arguments and result shapes are the in-kernel ``Client``'s. Errors come back as the
same exception classes: our server names the class in the ``X-Xinf-Error`` header; from a plain
Xinference server the ``{"detail": ...}`` message is classified (``Model not found`` → ModelNotFound,
the rest of the 400s → InferenceError / SpecError by route). Transport failures raise
``ServerUnreachable`` with the fix in the message. On a Xinference cluster, ``launch_model`` first
checks the local path the launch reads on the worker(s) it may run on (the pre-flight, below).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Optional, Union
from urllib.parse import quote

from ..errors import (EngineUnavailable, FieldIssue, InferenceError, LaunchError, LaunchOptionError, SpecError,
                      XinfError, error_class, kind_of, short_value, shorten)
from ..protocols import SpeechToTextMethods
from .cache import CacheAliases

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"
ENDPOINT_ENV = "XINFERENCE_NB_ENDPOINT"


class RemoteError(XinfError):
    """An error answer from the server that maps to no more specific class (401, 403, 404, 413, 5xx)."""

    def __init__(self, message: str, status_code: int = 0):
        super().__init__(message)
        self.status_code = status_code


class ServerUnreachable(RemoteError):
    """No server answered at the endpoint."""


def _make_error(kind: str, detail: str, status: int, issues_header: Optional[str] = None) -> XinfError:
    cls = error_class(kind)  # the one table of wire names (xinference_nb.errors.WIRE_ERRORS)
    if cls is SpecError:
        issues: list[FieldIssue] = []
        if issues_header:
            try:
                issues = [FieldIssue(i.get("path", ""), i.get("message", "")) for i in json.loads(issues_header)]
            except (ValueError, TypeError, AttributeError):
                issues = []
        exc: XinfError = SpecError.__new__(SpecError)
        Exception.__init__(exc, detail)
        exc.issues = issues or [FieldIssue("", detail)]  # type: ignore[attr-defined]
        exc.model_type = None  # type: ignore[attr-defined]
    elif cls is EngineUnavailable:
        exc = EngineUnavailable.__new__(EngineUnavailable)
        Exception.__init__(exc, detail)
        install = detail.split("Install it with:", 1)[1].strip() if "Install it with:" in detail else ""
        exc.install = install  # type: ignore[attr-defined]
        exc.package = install.replace("pip install", "").strip().strip('"') or "?"  # type: ignore[attr-defined]
        exc.extra = None  # type: ignore[attr-defined]
    elif cls is not None:
        exc = cls(detail)
    else:
        exc = RemoteError(detail, status)
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


def raise_for_response(resp: Any, what: str = "") -> None:
    """Raise the exception an error response stands for (no-op for 2xx)."""
    if resp.status_code < 400:
        return
    try:
        body = json.loads(resp.content) if resp.content else {}
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    if detail is None:
        detail = (resp.text or "").strip() or f"HTTP {resp.status_code}"
    elif not isinstance(detail, str):
        detail = json.dumps(detail)
    kind = resp.headers.get("x-xinf-error")
    if not kind:  # a real Xinference server: classify by status and message
        if resp.status_code == 400 and "not found" in detail.lower():
            kind = "ModelNotFound"
        elif resp.status_code == 400:
            kind = {"register": "SpecError", "launch": "LaunchError", "cache": "CacheError"}.get(what, "InferenceError")
        elif resp.status_code >= 500 and what == "launch":
            kind = "LaunchError"  # Xinference answers 500 when a model cannot be loaded
        else:
            kind = ""
    if resp.status_code == 401:
        detail = f"{detail} (pass api_key=... to the client, or set it with -ak/--api-key)"
    raise _make_error(kind, detail, resp.status_code, resp.headers.get("x-xinf-issues"))


class _ProgressFollower:
    """Polls GET /v1/models/{uid}/progress in a thread while a launch request is in flight and
    drives the same LaunchProgress bar an in-kernel launch shows. Polling errors (the uid is not
    known yet, an older server without the route) only leave the bar where it is."""

    interval_s = 0.5

    def __init__(self, http: "_HTTP", uid: str):
        import threading

        self.http, self.uid = http, uid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"xinf-progress-{uid}", daemon=True)
        self.bar: Any = None

    def __enter__(self) -> "_ProgressFollower":
        import httpx

        from ..progress import LaunchProgress

        # its own connection: the launch request holds the main one until the model is ready
        self._client = httpx.Client(base_url=self.http.endpoint, headers=self.http.headers, timeout=5.0,
                                    trust_env=False)
        self.bar = LaunchProgress(f"{self.uid} @ {self.http.endpoint}", show=True)
        self.bar("launching on the server", 0.01)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._client.close()
        if exc_type is None:
            self.bar("ready", 1.0)
        self.bar.close()

    def _poll(self) -> None:
        import httpx

        while not self._done.wait(self.interval_s):
            try:
                resp = self._client.get(f"/v1/models/{_q(self.uid)}/progress")
                fraction = float(resp.json().get("progress", 0.0)) if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError, TypeError):
                fraction = None
            if fraction is not None and not self._done.is_set():
                self.bar("loading on the server", min(fraction, 0.99))


class _HTTP:
    """A small httpx wrapper: base URL, bearer token, errors mapped to our classes."""

    def __init__(self, endpoint: str, api_key: Optional[str], timeout: Optional[float]):
        import httpx

        self.endpoint = endpoint.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self.client = httpx.Client(base_url=self.endpoint, headers=self.headers,
                                   timeout=httpx.Timeout(timeout, connect=10.0), trust_env=False)

    def request(self, method: str, path: str, what: str = "", **kwargs: Any) -> Any:
        try:
            try:
                resp = self.client.request(method, path, **kwargs)
            except (self._httpx.RemoteProtocolError, self._httpx.ReadError):
                # a server may close a kept-alive connection (e.g. after an error); one fresh try
                resp = self.client.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            raise ServerUnreachable(f"Cannot reach the server at {self.endpoint} ({type(exc).__name__}: {exc}). "
                                    "Start one with `xinf serve` or xinference_nb.serve(), or pass the right "
                                    f"endpoint (-e/--endpoint, {ENDPOINT_ENV}).") from None
        raise_for_response(resp, what)
        return resp

    def json(self, method: str, path: str, what: str = "", **kwargs: Any) -> Any:
        resp = self.request(method, path, what, **kwargs)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def _open_stream(self, path: str, body: dict[str, Any]) -> tuple[Any, Any]:
        """POST ``body`` as a streamed request: (context manager, response), or our error for an
        error status (raised before any data, with the connection closed)."""
        try:
            cm = self.client.stream("POST", path, json=body)
            resp = cm.__enter__()
        except self._httpx.TransportError as exc:
            raise ServerUnreachable(f"Cannot reach the server at {self.endpoint}: {exc}") from None
        if resp.status_code >= 400:
            try:
                resp.read()
                raise_for_response(resp)
            finally:
                cm.__exit__(None, None, None)
        return cm, resp

    def stream_sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body``; yield the JSON of each ``data:`` line until ``[DONE]``. Raises before the
        first chunk for an error status; closing the iterator closes the connection (which
        stops the generation on the server)."""
        return self._iter_sse(*self._open_stream(path, body))

    def stream_bytes(self, path: str, body: dict[str, Any]) -> Iterator[bytes]:
        """POST ``body``; yield the response body in pieces as they arrive."""
        cm, resp = self._open_stream(path, body)

        def pieces() -> Iterator[bytes]:
            try:
                yield from resp.iter_bytes()
            finally:
                cm.__exit__(None, None, None)

        return pieces()

    @staticmethod
    def _iter_sse(cm: Any, resp: Any) -> Iterator[dict[str, Any]]:
        try:
            for line in resp.iter_lines():
                line = line.strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if isinstance(chunk, dict) and chunk.get("error") is not None:
                    err = chunk["error"]
                    message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                    kind = err.get("type", "") if isinstance(err, dict) else ""
                    raise _make_error(kind, message, int(err.get("code") or 500) if isinstance(err, dict) else 500)
                yield chunk
        finally:
            cm.__exit__(None, None, None)

    def close(self) -> None:
        self.client.close()


def _q(value: str) -> str:
    return quote(str(value), safe="")


class RemoteClient(CacheAliases):
    """``Client``'s methods against a server at ``endpoint`` (ours or Xinference's)."""

    def __init__(self, endpoint: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: Optional[float] = 600.0):
        endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        self.endpoint = endpoint.rstrip("/")
        self.api_key = api_key
        self._http = _HTTP(self.endpoint, api_key, timeout)

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RemoteClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ registrations
    def register_model(self, model_type: str, model: Any, persist: bool = False, worker_ip: Optional[str] = None,
                       overwrite: bool = False) -> None:
        if hasattr(model, "model_dump_json"):
            model = model.model_dump_json()
        elif isinstance(model, dict):
            model = json.dumps(model)
        elif isinstance(model, (bytes, bytearray)):
            model = model.decode("utf-8")
        body: dict[str, Any] = {"model": model, "persist": persist, "worker_ip": worker_ip}
        if overwrite:
            body["overwrite"] = True
        self._http.request("POST", f"/v1/model_registrations/{_q(model_type)}", "register", json=body)

    def unregister_model(self, model_type: str, model_name: str) -> None:
        self._http.request("DELETE", f"/v1/model_registrations/{_q(model_type)}/{_q(model_name)}")

    def list_model_registrations(self, model_type: str, detailed: bool = False) -> list[dict[str, Any]]:
        return self._http.json("GET", f"/v1/model_registrations/{_q(model_type)}",
                               params={"detailed": "true" if detailed else "false"})

    def get_model_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        from .registrations import Registration

        doc = self._http.json("GET", f"/v1/model_registrations/{_q(model_type)}/{_q(model_name)}")
        return Registration(doc, model_type) if isinstance(doc, dict) else doc

    def export_registrations(self, path: Optional[str] = None, model_types: Optional[list[str]] = None
                             ) -> dict[str, Any]:
        """The server's custom registrations as one document (``Client.export_registrations``)."""
        from .registrations import export_registrations

        return export_registrations(self, path, model_types)

    def import_registrations(self, source: Any, overwrite: bool = False, persist: bool = True) -> list[str]:
        """Registers an export's models on the server, all or nothing (``Client.import_registrations``)."""
        from .registrations import import_registrations

        return import_registrations(self, source, overwrite=overwrite, persist=persist)

    # ------------------------------------------------------------------ the model cache (client/cache.py)
    def list_cached_models(self, model_name: Optional[str] = None, worker_ip: Optional[str] = None
                           ) -> list[dict[str, Any]]:
        """GET /v1/cache/models: the server's cached models (``Client.list_cached_models``)."""
        from .cache import CACHE_ROUTE

        params = {k: v for k, v in (("model_name", model_name), ("worker_ip", worker_ip)) if v is not None}
        answer = self._http.json("GET", CACHE_ROUTE, "cache", params=params)
        return list(answer.get("list") or []) if isinstance(answer, dict) else []

    def remove_cached_model(self, model_version: str, delete_user_files: bool = False, dry_run: bool = False,
                            worker_ip: Optional[str] = None) -> dict[str, Any]:
        """Deletes a cached model on the server (``Client.remove_cached_model``); our server does it only
        when started with --allow-cache-delete, a Xinference server in its own cache only."""
        from .cache import remote_removal

        return remote_removal(self._http, model_version, delete_user_files, dry_run, worker_ip)

    def download_model(self, model_type: str, model_name: str, model_engine: Optional[str] = None,
                       model_format: Optional[str] = None, model_size_in_billions: Any = None,
                       quantization: Optional[str] = None, revision: Optional[str] = None,
                       show_progress: Optional[bool] = None) -> str:
        """Our server fetches the registration's hub files into its Hugging Face cache without launching
        (``Client.download_model``) and returns the path there. A Xinference server has no such route:
        it downloads when the model is launched."""
        from ..progress import check_show
        from .cache import DOWNLOAD_ROUTE

        check_show(show_progress)     # checked, though the server's download draws no bar here
        body = {"model_type": model_type, "model_name": model_name, "model_engine": model_engine,
                "model_format": model_format, "model_size_in_billions": model_size_in_billions,
                "quantization": quantization, "revision": revision}
        try:
            answer = self._http.json("POST", DOWNLOAD_ROUTE, "launch", json=body)
        except RemoteError as exc:
            if getattr(exc, "status_code", None) in (404, 405):
                raise LaunchError(f"the server at {self.endpoint} has no download route (a Xinference server "
                                  "downloads a model when it is launched): launch_model() it there") from None
            raise
        return str(answer["path"])

    def parse_model(self, model_path: str, model_family: Optional[str] = None) -> dict[str, Any]:
        """The auto-parse route: a partial LLM document from the files at ``model_path`` (on the server)."""
        return self._http.json("POST", "/v1/models/llm/auto-register",
                               json={"model_path": model_path, "model_family": model_family or ""})

    # ------------------------------------------------------------------ models
    def launch_model(self, model_name: str, model_type: str = "LLM", model_engine: Optional[str] = None,
                     model_format: Optional[str] = None,
                     model_size_in_billions: Optional[Union[int, float, str]] = None,
                     quantization: Optional[str] = None, model_uid: Optional[str] = None,
                     model_path: Optional[str] = None, n_gpu: Optional[Union[int, str]] = "auto",
                     gpu_idx: Optional[Union[int, list[int]]] = None, replica: int = 1,
                     wait_ready: bool = True, show_progress: Optional[bool] = None, **kwargs: Any) -> str:
        """Launch on the server and return the uid. While the server loads, the same tqdm bar as an
        in-kernel launch follows its progress route (``show_progress=False`` or
        XINFERENCE_NB_PROGRESS=0 turns it off)."""
        if isinstance(model_size_in_billions, float):
            model_size_in_billions = (int(model_size_in_billions) if model_size_in_billions.is_integer()
                                      else str(model_size_in_billions).replace(".", "_"))
        if model_type and model_type.lower() == "llm" and not model_engine:
            model_engine = self._default_engine(model_name, model_format)
        payload: dict[str, Any] = {
            "model_uid": model_uid, "model_name": model_name, "model_engine": model_engine,
            "model_type": model_type, "model_size_in_billions": model_size_in_billions,
            "model_format": model_format, "quantization": quantization, "replica": replica, "n_gpu": n_gpu,
            "gpu_idx": gpu_idx, "model_path": model_path,
        }
        payload.update(kwargs)
        if isinstance(model_path, os.PathLike):
            payload["model_path"] = os.fspath(model_path)
        # on a Xinference cluster: the local path the launch reads must exist on its worker(s)
        note = _cluster_preflight(self, payload)
        params = None if wait_ready else {"wait_ready": "false"}
        from ..progress import progress_enabled

        try:
            if not (wait_ready and progress_enabled(show_progress)):
                return self._http.json("POST", "/v1/models", "launch", json=payload, params=params)["model_uid"]
            # both servers name a model after model_name unless told otherwise: follow that uid's progress
            with _ProgressFollower(self._http, model_uid or model_name):
                return self._http.json("POST", "/v1/models", "launch", json=payload, params=params)["model_uid"]
        except LaunchError as exc:
            if note is None:
                raise
            raise _with_note(exc, note) from None

    def _default_engine(self, model_name: str, model_format: Optional[str]) -> Optional[str]:
        """Xinference's server wants model_engine for an LLM; the in-kernel client picks one. Pick the
        server's first installed engine that serves the format, so both calls look the same.
        Xinference 4.x also lists engines it cannot run, with the import error as a string instead
        of the list of choices: those are skipped, and when none is left their reasons are the error."""
        try:
            engines = self.query_engine_by_model_name(model_name, "LLM")
        except ServerUnreachable:
            raise
        except XinfError:
            return None  # let the server explain (unknown model, not an LLM...)
        if not isinstance(engines, dict) or not engines:
            return None
        usable = {name: choices for name, choices in engines.items() if isinstance(choices, list)}
        for name, choices in usable.items():
            if model_format is None or any(isinstance(c, dict) and c.get("model_format") == model_format
                                           for c in choices):
                return name
        reasons = "; ".join(f"{name}: {why}" for name, why in engines.items() if not isinstance(why, list))
        formats = sorted({c.get("model_format") for cs in usable.values() for c in cs if isinstance(c, dict)})
        raise LaunchError(
            f"No engine on {self._http.endpoint} can run {model_name!r}"
            + (f" as {model_format}" if model_format else "")
            + (f" (installed engines serve: {', '.join(map(str, formats))})" if formats else "")
            + (f". Unavailable engines: {reasons}" if reasons else "")
            + ". Install the engine's package where the server runs, or pass model_engine=... explicitly.")

    def terminate_model(self, model_uid: str) -> None:
        self._http.request("DELETE", f"/v1/models/{_q(model_uid)}")

    def list_models(self) -> dict[str, dict[str, Any]]:
        data = self._http.json("GET", "/v1/models")
        return {item["id"]: item for item in data["data"]}

    def describe_model(self, model_uid: str) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/models/{_q(model_uid)}")

    def get_launch_model_progress(self, model_uid: str) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/models/{_q(model_uid)}/progress")

    def cancel_launch_model(self, model_uid: str) -> None:
        self._http.request("POST", f"/v1/models/{_q(model_uid)}/cancel")

    def query_engine_by_model_name(self, model_name: str, model_type: Optional[str] = "LLM") -> dict[str, Any]:
        path = (f"/v1/engines/{_q(model_type)}/{_q(model_name)}" if model_type
                else f"/v1/engines/{_q(model_name)}")
        return self._http.json("GET", path)

    def get_model(self, model_uid: str) -> "RemoteModelHandle":
        """The handle class the model-type table names for the model's type (RemoteFlexibleHandle for
        a type it does not know)."""
        from ..model_types import find_model_type

        desc = self.describe_model(model_uid)
        model_type = desc.get("model_type", "LLM")
        row = find_model_type(model_type)
        cls: type[RemoteModelHandle] = globals()[row.remote_handle] if row is not None else RemoteFlexibleHandle
        return cls(self._http, model_uid, model_type, desc)


# ------------------------------------------------------------------------------------------------
# Cluster pre-flight: the local path a launch reads, checked on the worker(s) it may run on
# ------------------------------------------------------------------------------------------------
# Xinference 4.1 has no route that tests a path on a worker (GET /v1/cache/models* name only its
# own cache). Registering a model with ``worker_ip`` does run the registration's model_uri check
# (``os.path.exists`` after its ``parse_uri``) in that worker's process, so the pre-flight asks each
# worker with a throwaway flexible registration (not persisted, removed at once) and reads the answer.

_PROBE_TYPE = "flexible"
_PROBE_PREFIX = "xinference-nb-path-check-"
_PROBE_LAUNCHER = "xinference.model.flexible.launchers.transformers"
#: what a worker answers for a model_uri that fails the check (xinference/model/utils.py is_valid_model_uri)
_PROBE_MISSING = ("Invalid model URI", "cannot be a relative path")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def _cluster_preflight(client: "RemoteClient", payload: dict[str, Any]) -> Optional[str]:
    """Before a launch on a Xinference cluster: a LaunchError naming the worker(s) and the path when
    the local path the launch reads (``model_path``, else the model_uri of the registration's spec it
    loads) is missing on a worker it may run on (``worker_ip``'s workers, else every worker: the
    supervisor places by load). Nothing to check (hub ids, remote schemes), or our own server (no
    GET /v1/workers): None, and the launch goes as before. A path that could not be checked (4.x API
    keys may not list workers or register) returns the note the launch's own error gets."""
    target = _local_target(client, payload)
    if target is None:
        return None
    label, shown, uri = target
    try:
        workers = client._http.json("GET", "/v1/workers")
    except ServerUnreachable:
        raise
    except XinfError as exc:
        if getattr(exc, "status_code", 0) == 404:
            return None  # not a Xinference cluster: our server checks paths itself
        return f"the pre-flight could not list the workers to check {label} {shown!r} on them: {exc}"
    addresses = [w["work-ip"] for w in workers if isinstance(w, dict) and isinstance(w.get("work-ip"), str)] \
        if isinstance(workers, list) else []
    if not addresses:
        return None
    candidates = _target_workers(client, payload.get("worker_ip"), addresses)
    if uri is None:  # a relative model_path: read against the worker process's own folder
        raise LaunchError(
            f"Cannot launch {payload.get('model_name')!r} on {client.endpoint}: model_path {shown!r} is not an "
            f"absolute path. On a cluster the path is read on the worker ({', '.join(candidates)}), not in "
            "this notebook, and a worker expands neither '~' nor this notebook's working folder: pass the "
            "absolute path as the worker sees it. Nothing was launched.")
    answers = [(address, *_path_on_worker(client, address, uri)) for address in candidates]
    missing = [(address, said) for address, ok, said in answers if ok is False]
    if missing:
        present = [address for address, ok, _ in answers if ok]
        raise _missing_path_error(client, payload, label, shown, missing, present, payload.get("worker_ip"))
    unknown = [f"{address}: {said}" for address, ok, said in answers if ok is None]
    if unknown:
        return f"the pre-flight could not check {label} {shown!r} on worker {'; '.join(unknown)}"
    return None


def _local_target(client: "RemoteClient", payload: dict[str, Any]) -> Optional[tuple[str, str, Optional[str]]]:
    """(what, the value as given, the model_uri a worker checks: None for a relative model_path) of the
    local path a launch reads; None when it reads none (a hub id, a remote scheme, no registration)."""
    model_path = payload.get("model_path")
    if model_path is not None:
        from ..engines.options import check_path_value

        problem = check_path_value(model_path, "model_path")
        if problem is None and _unencodable(model_path):
            problem = "is not valid Unicode text (a lone surrogate); pass a real path"
        if problem:
            raise LaunchOptionError([FieldIssue("model_path", problem)])
        if not model_path.startswith("/"):
            return "model_path", model_path, None
        # percent-encoded, so that the worker's parse_uri checks this exact path ("#", "?", "*" included)
        return "model_path", model_path, "file://" + quote(model_path)
    try:
        doc = client.get_model_registration(payload.get("model_type") or "LLM", payload.get("model_name"))
    except ServerUnreachable:
        raise
    except XinfError:
        return None  # unknown model, built-in the server cannot show...: the launch explains
    found = _launch_uri(doc, payload)
    # a registration's model_uri is sent as it is: the worker checks it the way the launch reads it
    return None if found is None else (f"the registration's {found[0]}", found[1], found[1])


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _launch_uri(doc: Any, payload: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(field, model_uri) of the part of a registration a launch loads: the first spec matching the
    launch's model_format / model_size_in_billions / quantization (Xinference's order), or the
    document's own model_uri (image, audio, flexible). None for a hub id, a remote scheme (s3://,
    oci://...) or no matching spec (the server explains that)."""
    if not isinstance(doc, dict):
        return None
    specs = doc.get("model_specs")
    if isinstance(specs, list):
        spec = next((s for s in specs if isinstance(s, dict) and _spec_matches(s, payload)), None)
        field, uri = (f"model_specs[{specs.index(spec)}].model_uri", spec.get("model_uri")) if spec else ("", None)
    else:
        field, uri = "model_uri", doc.get("model_uri")
    if not isinstance(uri, str) or not uri.strip() or (_SCHEME.match(uri) and not uri.lower().startswith("file://")):
        return None
    return field, uri


def _spec_matches(spec: dict[str, Any], payload: dict[str, Any]) -> bool:
    fmt, size, quant = payload.get("model_format"), payload.get("model_size_in_billions"), payload.get("quantization")
    if fmt and spec.get("model_format") != fmt:
        return False
    if size not in (None, "") and "model_size_in_billions" in spec and \
            str(spec["model_size_in_billions"]).replace(".", "_") != str(size).replace(".", "_"):
        return False
    if quant:
        have = spec.get("quantizations") or [spec.get("quantization")]
        return any(isinstance(q, str) and q.lower() == str(quant).lower() for q in have)
    return True


def _worker_host(address: str) -> str:
    """The host of a worker address ("ip:port", "[v6]:port"), as Xinference's supervisor reads it."""
    if address.startswith("[") and "]" in address:
        return address[1:address.index("]")]
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


def _target_workers(client: "RemoteClient", worker_ip: Any, addresses: list[str]) -> list[str]:
    """The workers a launch may run on: every worker without ``worker_ip``; else the ones it names, as
    Xinference resolves them (a full "ip:port" picks that worker, a bare IP every worker on the host,
    several comma-separated or in a list). A name of no worker is a LaunchError listing the workers."""
    if worker_ip is None:
        return addresses
    if isinstance(worker_ip, str):
        entries = worker_ip.split(",")
    elif isinstance(worker_ip, (list, tuple)) and all(isinstance(e, str) for e in worker_ip):
        entries = [part for e in worker_ip for part in e.split(",")]
    else:
        raise LaunchOptionError([FieldIssue("worker_ip", "must be a worker address ('ip' or 'ip:port'), several "
                                                         f"comma-separated or a list of them, got "
                                                         f"{kind_of(worker_ip)} {short_value(worker_ip)}")])
    entries = [e.strip() for e in entries if e.strip()]
    if not entries:
        raise LaunchOptionError([FieldIssue("worker_ip", "is empty; pass a worker address ('ip' or 'ip:port') "
                                                         "or leave it out to let the supervisor choose")])
    chosen: list[str] = []
    for entry in entries:
        matched = [a for a in addresses if entry in (a, _worker_host(a))]
        if not matched:
            raise LaunchError(f"worker_ip {shorten(entry, 80)!r} names no worker of the cluster at {client.endpoint}; "
                              f"its workers are {', '.join(addresses)} (pass one of them, or a bare IP for every "
                              "worker on that host). Nothing was launched.")
        chosen += [a for a in matched if a not in chosen]
    return chosen


def _path_on_worker(client: "RemoteClient", address: str, uri: str) -> tuple[Optional[bool], str]:
    """Whether ``uri`` passes Xinference's model_uri check on the worker at ``address``: (True, ""),
    (False, the worker's words) or (None, why the worker could not be asked)."""
    import uuid

    name = f"{_PROBE_PREFIX}{uuid.uuid4().hex[:16]}"
    doc = {"version": 2, "model_name": name, "model_id": None, "model_uri": uri, "launcher": _PROBE_LAUNCHER,
           "launcher_args": "{}", "virtualenv": None,
           "model_description": "xinference_nb launch pre-flight: checks that a path exists on this worker"}
    registered = False
    try:
        client.register_model(_PROBE_TYPE, doc, persist=False, worker_ip=address)
        registered = True
        return True, ""
    except ServerUnreachable:
        raise
    except XinfError as exc:
        said = re.sub(r"^\[address=[^\]]*\]\s*", "", str(exc))
        return (False if any(m in said for m in _PROBE_MISSING) else None), said
    finally:
        try:
            client.unregister_model(_PROBE_TYPE, name)
        except XinfError as exc:
            if registered:
                import warnings

                warnings.warn(f"The launch pre-flight could not remove its check registration {name!r} from worker "
                              f"{address} ({exc}); remove it with client.unregister_model('flexible', {name!r}).",
                              RuntimeWarning, stacklevel=4)


def _missing_path_error(client: "RemoteClient", payload: dict[str, Any], label: str, shown: str,
                        missing: list[tuple[str, str]], present: list[str], worker_ip: Any) -> LaunchError:
    where = ", ".join(address for address, _ in missing)
    said = missing[0][1]  # the worker's words, when they say more than "missing" (a relative model_uri)
    said = "" if said.startswith(_PROBE_MISSING[0]) else f"; the worker says: {said.rstrip('.')}"
    text = (f"Cannot launch {payload.get('model_name')!r} on {client.endpoint}: {label} {shown!r} does not exist "
            f"on worker{'s' if len(missing) > 1 else ''} {where} (checked on the worker before the launch{said}). "
            "Nothing was launched.")
    if present:
        text += f" It exists on {', '.join(present)}: pass worker_ip={present[0]!r} to launch there"
        text += "." if worker_ip is not None else \
            " (without worker_ip the supervisor may place the model on any worker, so the path must exist on each)."
    text += (" Pass model_path as the worker sees it, or copy the model there." if label == "model_path" else
             " Copy the model files to that path on the worker, register the model again with the path the "
             "workers see, or launch with model_path=... (a folder on the worker).")
    return LaunchError(text)


def _with_note(exc: LaunchError, note: str) -> LaunchError:
    """The same error (class and attributes) with ``note`` added to its message."""
    noted = type(exc).__new__(type(exc))
    Exception.__init__(noted, f"{exc} ({note})")
    noted.__dict__.update(exc.__dict__)
    return noted


# ------------------------------------------------------------------------------------------------
# Handles
# ------------------------------------------------------------------------------------------------

class RemoteModelHandle:
    model_type = ""

    def __init__(self, http: _HTTP, model_uid: str, model_type: str = "", description: Optional[dict] = None):
        self._http = http
        self.model_uid = model_uid
        if model_type:
            self.model_type = model_type
        self._description = description or {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model_uid={self.model_uid!r} at {self._http.endpoint}>"

    def describe(self) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/models/{_q(self.model_uid)}")

    def _route(self, method: str) -> str:
        """The REST route of one of this handle's methods, from the model-type table."""
        from ..model_types import model_type

        return model_type(type(self).model_type).routes[method]


class RemoteLLMHandle(RemoteModelHandle):
    model_type = "LLM"

    def generate(self, prompt: str, generate_config: Optional[dict[str, Any]] = None
                 ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]:
        body: dict[str, Any] = {"model": self.model_uid, "prompt": prompt}
        _wire_constraints(body, generate_config)
        if body.get("stream"):
            return self._http.stream_sse(self._route("generate"), body)
        return self._http.json("POST", self._route("generate"), json=body)

    def chat(self, messages: Union[str, list[dict[str, Any]]], tools: Optional[list[dict[str, Any]]] = None,
             enable_thinking: Optional[bool] = None, generate_config: Optional[dict[str, Any]] = None
             ) -> Union[dict[str, Any], Iterator[dict[str, Any]]]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        from ..chat.images import for_remote

        # PIL images and this machine's image files travel as data URLs (the server cannot read them here)
        body: dict[str, Any] = {"model": self.model_uid, "messages": for_remote(messages)}
        if tools is not None:
            body["tools"] = tools
        model_class = _wire_constraints(body, generate_config)
        if enable_thinking is not None:
            kw = dict(body.get("chat_template_kwargs") or {})
            kw["enable_thinking"] = enable_thinking
            body["chat_template_kwargs"] = kw
        if body.get("stream"):
            return self._http.stream_sse(self._route("chat"), body)
        result = self._http.json("POST", self._route("chat"), json=body)
        if model_class is not None:   # the server parsed a dict; the caller asked for its pydantic class
            _parse_as(result, model_class)
        return result


    def generate_batch(self, prompts: list[str], generate_config: Optional[dict[str, Any]] = None,
                       progress: bool = True) -> list[dict[str, Any]]:
        """``generate`` for each prompt, sent concurrently (the server batches them), results in order."""
        from .handles import BATCH_WORKERS, check_batch
        from ..progress import map_in_order

        prompts, cfg = check_batch(prompts, "prompts", generate_config, progress)
        return map_in_order(lambda p: self.generate(p, cfg), prompts, workers=BATCH_WORKERS, progress=progress,
                            desc=f"generate {self.model_uid}")

    def chat_batch(self, messages_list: list[Union[str, list[dict[str, Any]]]],
                   generate_config: Optional[dict[str, Any]] = None, progress: bool = True) -> list[dict[str, Any]]:
        """``chat`` for each message list, sent concurrently (the server batches them), results in order."""
        from .handles import BATCH_WORKERS, check_batch
        from ..progress import map_in_order

        items, cfg = check_batch(messages_list, "messages_list", generate_config, progress)
        return map_in_order(lambda m: self.chat(m, generate_config=cfg), items, workers=BATCH_WORKERS,
                            progress=progress, desc=f"chat {self.model_uid}")

    def map(self, items: Any, prompt: Any = None, *, response_format: Any = None, system: Optional[str] = None,
            generate_config: Optional[dict[str, Any]] = None, cache: Any = False, progress: bool = True) -> Any:
        """The in-kernel handle's ``map`` (see ``LLMHandle.map``), each row a chat request sent
        concurrently (the server batches them). Rows of a call that did not complete are kept on
        this connection. The cache key names the endpoint, the uid and what the server's describe()
        says (asked afresh with the cache on): a model file changed on the server is not seen."""
        from .handles import BATCH_WORKERS
        from .table import remote_identity, run_map

        def identity() -> dict[str, Any]:
            desc = self.describe() if cache or not self._description else self._description
            return remote_identity(desc, self.model_uid, self._http.endpoint)

        return run_map(self.chat, items, prompt, response_format=response_format, system=system,
                       generate_config=generate_config, cache=cache, progress=progress, workers=BATCH_WORKERS,
                       identity=identity, owner=self._http, name=self.model_uid)


def _wire_constraints(body: dict[str, Any], generate_config: Optional[dict[str, Any]]) -> Any:
    """``generate_config`` into a request body, a pydantic class (response_format / guided_json) as its
    JSON schema; returns that class (None without one), to read the reply back as it."""
    from ..chat.structured import is_pydantic_model, model_schema, wire_form

    model_class = None
    for key, value in (generate_config or {}).items():
        if is_pydantic_model(value):
            model_class = value
            value = model_schema(value) if key == "guided_json" else wire_form(value)
        body[key] = value
    return model_class


def _parse_as(result: dict[str, Any], model_class: Any) -> None:
    """Each choice's ``parsed`` (the server's dict) made an instance of ``model_class``."""
    from ..chat.structured import Constraint, parse_reply

    constraint = Constraint("json_schema", None, name=model_class.__name__, model=model_class)
    for choice in result.get("choices") or []:
        message = choice.get("message") or {}
        if "parsed" in message:
            parsed, why = parse_reply(message.get("content"), constraint, choice.get("finish_reason") or "stop")
            message["parsed"] = parsed
            if why is not None:
                message["parse_error"] = why


class RemoteEmbeddingHandle(RemoteModelHandle):
    model_type = "embedding"

    def create_embedding(self, input: Any, **kwargs: Any) -> dict[str, Any]:  # noqa: A002
        body = {"model": self.model_uid, "input": input}
        body.update(kwargs)
        return self._http.json("POST", self._route("create_embedding"), json=body)

    def convert_ids_to_tokens(self, input: Any, **kwargs: Any) -> Any:  # noqa: A002
        """Token ids → token strings (a list of ids → a list of str; a list of lists → a list of lists)."""
        body = {"model": self.model_uid, "input": input}
        body.update(kwargs)
        return self._http.json("POST", self._route("convert_ids_to_tokens"), json=body)


class RemoteRerankHandle(RemoteModelHandle):
    model_type = "rerank"

    def rerank(self, documents: list[Any], query: Any, top_n: Optional[int] = None,
               max_chunks_per_doc: Optional[int] = None, return_documents: Optional[bool] = None,
               return_len: Optional[bool] = None, **kwargs: Any) -> dict[str, Any]:
        body = {"model": self.model_uid, "documents": documents, "query": query, "top_n": top_n,
                "max_chunks_per_doc": max_chunks_per_doc, "return_documents": return_documents,
                "return_len": return_len, "kwargs": json.dumps(kwargs)}
        return self._http.json("POST", self._route("rerank"), json=body)


def _upload_bytes(value: Any, field: str) -> bytes:
    """An image argument as the bytes to upload: bytes, a PIL image (sent as PNG), a path to an image
    file, or base64 image data (a ``data:image/...`` URI too): the forms the in-kernel engine takes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image
        import io

        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(value, (str, os.PathLike)):
        text = str(value)
        if os.path.isfile(text):
            with open(text, "rb") as f:
                return f.read()
        import base64
        import binascii

        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InferenceError(f"{field}: {text[:60]!r} is neither an image file on this machine nor base64 "
                                 "image data") from None
    raise InferenceError(f"{field} must be image bytes, a PIL image, a file path or base64 data, got "
                         f"{type(value).__name__}")


def _form(fields: dict[str, Any]) -> dict[str, str]:
    """Multipart form fields: None left out, numbers as text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}


class RemoteImageHandle(RemoteModelHandle):
    model_type = "image"

    def text_to_image(self, prompt: str, n: int = 1, size: str = "1024*1024", response_format: str = "url",
                      **kwargs: Any) -> dict[str, Any]:
        body = {"model": self.model_uid, "prompt": prompt, "n": n, "size": size,
                "response_format": response_format, "kwargs": json.dumps(kwargs)}
        return self._http.json("POST", self._route("text_to_image"), json=body)

    def _images(self, method: str, files: list[tuple[str, Any]], prompt: Any, negative_prompt: Optional[str],
                n: int, size: Optional[str], response_format: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = _form({"model": self.model_uid, "negative_prompt": negative_prompt, "n": n,
                                        "size": size, "response_format": response_format,
                                        "kwargs": json.dumps(kwargs) if kwargs else None})
        if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
            fields["prompt"] = list(prompt)  # one form field per prompt
        elif isinstance(prompt, str):
            fields["prompt"] = prompt
        elif prompt is not None:
            raise InferenceError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        uploads = [(name, (name, _upload_bytes(value, name), "application/octet-stream")) for name, value in files]
        return self._http.json("POST", self._route(method), data=fields, files=uploads)

    def image_to_image(self, image: Any, prompt: str, negative_prompt: Optional[str] = None, n: int = 1,
                       size: Optional[str] = None, response_format: str = "url", **kwargs: Any) -> dict[str, Any]:
        """A new image from ``image`` and ``prompt`` (a list of images sends each as ``image``)."""
        images = image if isinstance(image, list) else [image]
        if not images:
            raise InferenceError("image: the list of images is empty; pass at least one image")
        return self._images("image_to_image", [("image", i) for i in images], prompt, negative_prompt, n, size,
                            response_format, kwargs)

    def inpainting(self, image: Any, mask_image: Any, prompt: str, negative_prompt: Optional[str] = None,
                   n: int = 1, size: Optional[str] = None, response_format: str = "url",
                   **kwargs: Any) -> dict[str, Any]:
        """Repaint the white parts of ``mask_image`` in ``image`` after ``prompt``."""
        return self._images("inpainting", [("image", image), ("mask_image", mask_image)], prompt, negative_prompt,
                            n, size, response_format, kwargs)


class RemoteAudioHandle(SpeechToTextMethods, RemoteModelHandle):
    model_type = "audio"

    def speech(self, input: str, voice: str = "", response_format: str = "mp3", speed: float = 1.0,  # noqa: A002
               stream: bool = False, **kwargs: Any) -> Union[bytes, Iterator[bytes]]:
        body = {"model": self.model_uid, "input": input, "voice": voice, "response_format": response_format,
                "speed": speed, "stream": stream, "kwargs": json.dumps(kwargs)}
        if stream:
            return self._http.stream_bytes(self._route("speech"), body)
        return self._http.request("POST", self._route("speech"), json=body).content

    def _recognize(self, method: str, audio: bytes, language: Optional[str], prompt: Optional[str],
                   response_format: str, temperature: float, timestamp_granularities: Optional[list[str]]) -> Any:
        data: dict[str, Any] = {"model": self.model_uid, "response_format": response_format,
                                "temperature": str(temperature)}
        if language:
            data["language"] = language
        if prompt:
            data["prompt"] = prompt
        if timestamp_granularities:
            data["timestamp_granularities[]"] = list(timestamp_granularities)
        resp = self._http.request("POST", self._route(method), data=data,
                                  files={"file": ("audio", bytes(audio), "application/octet-stream")})
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text


class RemoteFlexibleHandle(RemoteModelHandle):
    model_type = "flexible"

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        body: dict[str, Any] = {"model": self.model_uid, "args": list(args)}
        body.update(kwargs)
        return self._http.json("POST", self._route("infer"), json=body)
