"""A local stand-in for the Hugging Face Hub: model repositories served over HTTP the way the hub
serves them to huggingface_hub (``/api/models/{repo}/revision/{rev}`` with siblings; HEAD / GET
``/{repo}/resolve/{rev}/{file}`` with X-Repo-Commit, ETag, Content-Length and Range), so the real
huggingface_hub client does the work with no network. The hub-fetch tests use it, and the example
notebook on keeping models (notebooks/_helpers.py ``local_hub``)."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

MiB = 1 << 20


# --------------------------------------------------------------------------------------------------
# a local hub
# --------------------------------------------------------------------------------------------------
class LocalHub:
    """Model repositories served over HTTP the way the Hugging Face Hub serves them to huggingface_hub.

    ``add(repo, files, revision)`` publishes a commit (its id derived from the content) under a branch or
    tag name; ``requests`` records (method, path, Range header) of every request; ``stall`` makes the
    next GET of one file send ``after`` bytes, then SIGINT ``pid`` once ``partial`` holds 10 MiB (the
    client's first chunk on disk), and hold the connection until the client drops it (or, with
    ``then``, call it and send the rest)."""

    def __init__(self) -> None:
        self.refs: dict[str, dict[str, str]] = {}            # repo → revision name → commit
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}   # repo → commit → file → content
        self.requests: list[tuple[str, str, Optional[str]]] = []
        self.sums: dict[int, tuple[str, str]] = {}                # id(file content) → (sha1, sha256)
        self.lock = threading.Lock()
        self.stall: Optional[dict[str, Any]] = None
        self.bad_etag: set[str] = set()                      # file names answered with a hostile ETag
        self.extra_siblings: list[str] = []                  # names listed but never served
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main") -> str:
        digest = hashlib.sha1(repo.encode() + revision.encode())
        for name in sorted(files):
            sha256 = hashlib.sha256(files[name])
            self.sums[id(files[name])] = (hashlib.sha1(files[name]).hexdigest(), sha256.hexdigest())
            digest.update(name.encode() + sha256.digest())
        commit = digest.hexdigest()
        self.refs.setdefault(repo, {})[revision] = commit
        self.commits.setdefault(repo, {})[commit] = dict(files)
        return commit

    def _sums(self, data: bytes) -> tuple[str, str]:
        """(sha1, sha256) of a published file, computed once when it was added (a big file is not hashed
        again on every request: the bench measures the client, not this server)."""
        sums = self.sums.get(id(data))
        return sums if sums is not None else (hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest())

    def file_requests(self, method: str = "GET") -> list[str]:
        """The files asked for with ``method``, in order."""
        with self.lock:
            return [path.split("/resolve/", 1)[1].split("/", 1)[1] for m, path, _ in self.requests
                    if m == method and "/resolve/" in path]

    def api_requests(self) -> list[str]:
        with self.lock:
            return [path for m, path, _ in self.requests if path.startswith("/api/")]

    # -------------------------------------------------------------- answering
    def _answer(self, h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        with self.lock:
            self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._model_info(h, path[len("/api/models/"):])
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(h, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._error(h, 404, "EntryNotFound", head)

    def _commit(self, repo: str, revision: str) -> Optional[str]:
        if revision in self.commits.get(repo, {}):
            return revision
        return self.refs.get(repo, {}).get(revision)

    def _model_info(self, h, rest: str) -> None:
        repo, _, revision = rest.partition("/revision/")
        if repo not in self.refs:
            return self._error(h, 404, "RepoNotFound", False)
        commit = self._commit(repo, revision or "main")
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", False)
        files = self.commits[repo][commit]
        siblings = [{"rfilename": name, "size": len(data), "blobId": self._sums(data)[0]}
                    for name, data in sorted(files.items())]
        siblings += [{"rfilename": name, "size": 10} for name in self.extra_siblings]
        body = json.dumps({"id": repo, "modelId": repo, "sha": commit, "private": False,
                           "siblings": siblings}).encode()
        self._send(h, 200, {"Content-Type": "application/json"}, body, False)

    def _resolve(self, h, repo: str, revision: str, name: str, head: bool) -> None:
        if repo not in self.refs:
            return self._error(h, 404, "RepoNotFound", head)
        commit = self._commit(repo, revision)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound", head)
        data = self.commits[repo][commit].get(name)
        if data is None:
            return self._error(h, 404, "EntryNotFound", head, {"X-Repo-Commit": commit})
        etag = '"../../outside"' if name in self.bad_etag else f'"{self._sums(data)[1]}"'
        headers = {"X-Repo-Commit": commit, "ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start = 0
        wanted = h.headers.get("Range")
        if not head and wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if not head and self.stall is not None and self.stall["file"] == name and not start:
            stall, self.stall = self.stall, None
            return self._stall(h, headers, data, stall)
        self._send(h, 206 if start else 200, headers, data[start:], head)

    def _stall(self, h, headers: dict[str, str], data: bytes, stall: dict[str, Any]) -> None:
        h.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data[:stall["after"]])
        h.wfile.flush()
        partial = Path(stall["partial"])
        deadline = time.monotonic() + 120          # a bound on a hung client, not a timing assert
        while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size >= 10 * MiB):
            time.sleep(0.05)
        if "then" in stall:                        # e.g. cancel the launch, then send the rest
            stall["then"]()
            h.wfile.write(data[stall["after"]:])
            return
        os.kill(stall["pid"], signal.SIGINT)
        h.connection.settimeout(120)
        try:
            while h.connection.recv(65536):        # until the interrupted client closes the connection
                pass
        except OSError:
            pass
        h.close_connection = True

    def _error(self, h, status: int, code: str, head: bool, extra: Optional[dict[str, str]] = None) -> None:
        self._send(h, status, {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json",
                               **(extra or {})}, json.dumps({"error": code}).encode(), head)

    @staticmethod
    def _send(h, status: int, headers: dict[str, str], body: bytes, head: bool) -> None:
        h.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(key, value)
        h.end_headers()
        if not head:
            h.wfile.write(body)
