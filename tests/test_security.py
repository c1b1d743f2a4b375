"""Issue 11, server hardening: one section per item. Each test failed on the code before the fix.

Sections (REST side first; other items' sections follow at the end):
  item 4  - any exception is a JSON error on a connection that stays usable; SSE errors end the stream
  item 5  - allowed roots never include / or system folders; explicit too-broad roots refused at start
  item 6  - Host rule without an API key (DNS rebinding); exposure warning; upload limit per route
  item 10 - strict request bodies over REST: each bad field a 400 naming it
  fuzz    - every REST route's body, against the real app serving real tiny models
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from server_fakes import FakeClient, FakeLLM, embedding_doc, wait_until  # noqa: E402

from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.runner import RootTooBroad, current_server, serve, start_in_thread, stop_server  # noqa: E402
from xinference_nb.server.security import ALLOWED_ROOTS_ENV, ServerSettings, default_roots, root_problem  # noqa: E402

MSGS = [{"role": "user", "content": "hi"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeepAlive:
    """One HTTP/1.1 connection (http.client): ``request`` fails the test if the server closed or reset it."""

    def __init__(self, port: int, timeout: float = 60):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.connect()
        self.sock = self.conn.sock

    def request(self, method: str, path: str, body=None, headers=None):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body, allow_nan=True)
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        data = resp.read()
        assert self.conn.sock is self.sock, f"the server closed the connection after {method} {path}"
        assert (resp.getheader("connection") or "").lower() != "close", (method, path, resp.status, data[:300])
        return resp.status, dict(resp.getheaders()), data

    def close(self):
        self.conn.close()


# ================================================================================================
# Item 4: every error is JSON {"detail"} with the right status; the kept-alive connection survives
# ================================================================================================
class RaisingLLM(FakeLLM):
    """A fake LLM whose reply depends on the last message: "type" raises a TypeError (bad input a
    library chokes on: 400), "bug" a RuntimeError (a bug of ours: 500); "stream-type" / "stream-bug"
    stream two chunks, then raise."""

    def chat(self, messages, tools=None, enable_thinking=None, generate_config=None):
        what = messages[-1].get("content")
        if what == "type":
            return "a" + 1
        if what == "bug":
            raise RuntimeError("boom: an unexpected state")
        if what in ("stream-type", "stream-bug"):
            def chunks():
                yield from self._chunks(2, 0, "chat")
                if what == "stream-type":
                    raise TypeError("unsupported operand type(s)")
                raise RuntimeError("boom in the middle of a stream")
            return chunks()
        return super().chat(messages, tools, enable_thinking, generate_config)


@pytest.fixture
def raising_server(tmp_path):
    client = FakeClient()
    client.models["raising"] = RaisingLLM()
    running = start_in_thread(create_app(client, allowed_roots=[tmp_path]), port=0)
    yield running
    running.stop()


def test_item4_non_package_exception_keeps_the_connection(raising_server, caplog):
    caplog.set_level(logging.INFO)
    conn = KeepAlive(raising_server.port)
    try:
        for content, status, kind in [("type", 400, "InferenceError"), ("bug", 500, "XinfError")]:
            code, headers, data = conn.request("POST", "/v1/chat/completions",
                                               {"model": "raising", "messages": [{"role": "user", "content": content}]})
            assert code == status, data
            assert headers["x-xinf-error"] == kind
            detail = json.loads(data)["detail"]
            assert ("TypeError" if content == "type" else "RuntimeError") in detail
            # a good request on the same socket
            code, _, data = conn.request("POST", "/v1/chat/completions", {"model": "llm", "messages": MSGS})
            assert code == 200 and json.loads(data)["object"] == "chat.completion"
    finally:
        conn.close()
    texts = [r.getMessage() for r in caplog.records]
    assert not any("Exception in ASGI application" in t for t in texts), texts
    # our bug (the 500) is logged once, with its traceback; the 400 is no error log
    bug_logs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(bug_logs) == 1 and bug_logs[0].exc_info and bug_logs[0].exc_info[0] is RuntimeError


def test_item4_error_in_an_sse_stream_is_its_last_event(raising_server):
    conn = KeepAlive(raising_server.port)
    try:
        for content, code in [("stream-type", 400), ("stream-bug", 500)]:
            status, _, data = conn.request("POST", "/v1/chat/completions", {
                "model": "raising", "messages": [{"role": "user", "content": content}], "stream": True})
            assert status == 200
            events = [e[len("data: "):] for e in data.decode().split("\n\n") if e]
            assert len(events) == 3 and "[DONE]" not in events, events
            assert [json.loads(e)["object"] for e in events[:2]] == ["chat.completion.chunk"] * 2
            err = json.loads(events[2])["error"]
            assert err["code"] == code and err["message"] and isinstance(err["type"], str)
            status, _, _ = conn.request("GET", "/v1/models")
            assert status == 200
    finally:
        conn.close()


def test_item4_remote_client_sees_the_stream_error_and_the_model_serves_on(raising_server):
    from xinference_nb.errors import InferenceError
    from xinference_nb.client.remote import RemoteClient

    rc = RemoteClient(raising_server.url)
    handle = rc.get_model("raising")
    with pytest.raises(InferenceError, match="unsupported operand"):
        list(handle.chat([{"role": "user", "content": "stream-type"}], generate_config={"stream": True}))
    assert handle.chat(MSGS)["object"] == "chat.completion"


# ================================================================================================
# Item 5: allowed roots never include / or system folders
# ================================================================================================
@pytest.mark.parametrize("path", ["/", "/etc", "/etc/ssl", "/usr", "/var", "/proc/self", "/sys", "/dev", "/boot",
                                  "/bin", "/lib", "/sbin", "/home"])
def test_item5_system_folders_are_too_broad(path):
    assert root_problem(path), path


def test_item5_model_folders_are_fine(tmp_path):
    assert root_problem(tmp_path) is None
    assert root_problem(tmp_path / "models" / "m") is None
    assert root_problem(os.path.expanduser("~")) is None
    assert root_problem(os.path.expanduser("~/models")) is None


def test_item5_cwd_root_is_not_a_default_root(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOWED_ROOTS_ENV, raising=False)
    monkeypatch.chdir("/")
    roots = [str(r) for r in default_roots()]
    assert "/" not in roots
    running = start_in_thread(create_app(FakeClient()), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            for uri in ("/etc", "file:///etc", "/usr/share"):
                doc = dict(embedding_doc("/x", "etc-model"))
                doc["model_specs"] = [dict(doc["model_specs"][0], model_uri=uri)]
                r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
                assert r.status_code == 403, (uri, r.text)
                assert "allowed model roots" in r.json()["detail"]
            r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "model_path": "/etc"})
            assert r.status_code == 403
    finally:
        running.stop()


@pytest.mark.parametrize("root", ["/", "/etc", "/usr"])
def test_item5_explicit_too_broad_root_is_refused_at_start(root, monkeypatch):
    with pytest.raises(RootTooBroad, match="allow_any_path") as err:
        ServerSettings(allowed_roots=[root])
    assert root in str(err.value)
    with pytest.raises(RootTooBroad):
        create_app(FakeClient(), allowed_roots=[root])
    with pytest.raises(RootTooBroad):
        serve(port=0, client=FakeClient(), allowed_roots=[root])
    assert current_server() is None
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, root)
    with pytest.raises(RootTooBroad, match=ALLOWED_ROOTS_ENV):
        create_app(FakeClient())


def test_item5_xinf_serve_refuses_a_too_broad_root_with_exit_code_2(tmp_path):
    env = dict(os.environ, XINFERENCE_NB_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "xinference_nb.commands.cli", "serve", "--port", str(_free_port()),
                           "--allowed-root", "/", "--log-level", "warning"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "too broad" not in proc.stdout
    err = proc.stderr.strip()
    assert err.startswith("Error: ") and "allowed model root" in err and "--allow-any-path" in err


# ================================================================================================
# Item 6: Host rule (DNS rebinding), exposure warning, upload limit only on upload routes
# ================================================================================================
def test_item6_without_a_key_only_loopback_hosts_are_answered():
    running = start_in_thread(create_app(FakeClient()), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            for host in ("evil.example.com", f"evil.example.com:{running.port}", "192.168.1.20", "localhost.evil.com",
                         "127.0.0.1.nip.io"):
                r = c.get("/v1/models", headers={"Host": host})
                assert r.status_code == 403, host
                detail = r.json()["detail"]
                assert "Host" in detail and "API key" in detail and "allowed_hosts" in detail
                assert r.headers["x-xinf-error"] == "PermissionError"
                r = c.post("/v1/embeddings", json={"model": "emb", "input": "x"}, headers={"Host": host})
                assert r.status_code == 403
            for host in ("localhost", f"localhost:{running.port}", "127.0.0.1", f"127.0.0.1:{running.port}",
                         "[::1]", f"[::1]:{running.port}", "notebook.localhost", "LOCALHOST."):
                assert c.get("/v1/models", headers={"Host": host}).status_code == 200, host
    finally:
        running.stop()


def test_item6_with_a_key_or_an_allowed_host_any_host():
    keyed = start_in_thread(create_app(FakeClient(), api_key="k"), port=0)
    listed = start_in_thread(create_app(FakeClient(), allowed_hosts=["my.box"]), port=0)
    try:
        with httpx.Client(base_url=keyed.url) as c:
            r = c.get("/v1/models", headers={"Host": "evil.example.com", "Authorization": "Bearer k"})
            assert r.status_code == 200
            assert c.get("/v1/models", headers={"Host": "evil.example.com"}).status_code == 401
        with httpx.Client(base_url=listed.url) as c:
            assert c.get("/v1/models", headers={"Host": "my.box:9997"}).status_code == 200
            assert c.get("/v1/models", headers={"Host": "other.box"}).status_code == 403
            assert c.get("/v1/models").status_code == 200
    finally:
        keyed.stop()
        listed.stop()


def test_item6_bind_to_all_interfaces_without_a_key_warns(caplog):
    caplog.set_level(logging.WARNING, logger="xinference_nb.server")
    server = serve(host="0.0.0.0", port=0, client=FakeClient())
    try:
        assert any("WITHOUT an API key" in r.getMessage() for r in caplog.records)
        with httpx.Client(base_url=server.url) as c:  # loopback names still answered
            assert c.get("/v1/models").status_code == 200
    finally:
        stop_server()
    caplog.clear()
    server = serve(host="0.0.0.0", port=0, client=FakeClient(), api_key="k")
    stop_server()
    server = serve(port=0, client=FakeClient())
    stop_server()
    assert not any("WITHOUT an API key" in r.getMessage() for r in caplog.records)


def test_item6_xinf_serve_on_all_interfaces_prints_the_warning(tmp_path):
    port = _free_port()
    env = dict(os.environ, XINFERENCE_NB_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "xinference_nb.commands.cli", "serve", "--host", "0.0.0.0", "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def up():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                return False
        assert wait_until(up, 90)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "WITHOUT an API key" in err and "0.0.0.0" in err


def _multipart(size: int) -> tuple[bytes, str]:
    boundary = "xnbboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nemb\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_item6_multipart_gets_the_upload_limit_only_on_upload_routes():
    running = start_in_thread(create_app(FakeClient(), max_body_bytes=10_000, max_upload_bytes=1_000_000), port=0)
    try:
        body, ctype = _multipart(50_000)
        with httpx.Client(base_url=running.url) as c:
            for path in ("/v1/embeddings", "/v1/chat/completions", "/v1/models", "/v1/model_registrations/LLM"):
                r = c.post(path, content=body, headers={"content-type": ctype})
                assert r.status_code == 413, (path, r.text)
            # the upload route takes it (and then says what is wrong with the request: emb cannot transcribe)
            r = c.post("/v1/audio/transcriptions", content=body, headers={"content-type": ctype})
            assert r.status_code == 400 and "transcriptions" in r.json()["detail"]
            big, ctype = _multipart(2_000_000)
            r = c.post("/v1/audio/transcriptions", content=big, headers={"content-type": ctype})
            assert r.status_code == 413
    finally:
        running.stop()


# ================================================================================================
# Item 10 (REST side): strict bodies; every bad field a 400 naming the field
# ================================================================================================
CHAT = "/v1/chat/completions"
STRICT_CASES = [
    # (path, body, field the 400 must name)
    (CHAT, {"model": "llm", "messages": MSGS, "stream": "true"}, "stream"),
    (CHAT, {"model": "llm", "messages": MSGS, "stream": 1}, "stream"),
    (CHAT, {"model": "llm", "messages": MSGS, "max_tokens": True}, "max_tokens"),
    (CHAT, {"model": "llm", "messages": MSGS, "max_tokens": "3"}, "max_tokens"),
    (CHAT, {"model": "llm", "messages": MSGS, "max_tokens": 2.0}, "max_tokens"),
    (CHAT, {"model": "llm", "messages": MSGS, "max_completion_tokens": True}, "max_completion_tokens"),
    (CHAT, {"model": "llm", "messages": MSGS, "temperature": "0.5"}, "temperature"),
    (CHAT, b'{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
    (CHAT, b'{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}', "top_p"),
    (CHAT, {"model": "llm", "messages": MSGS, "stream_options": "x"}, "stream_options"),
    (CHAT, {"model": "llm", "messages": MSGS, "n": "3"}, "n"),
    (CHAT, {"model": "llm", "messages": MSGS, "n": True}, "n"),
    (CHAT, {"model": "llm", "messages": MSGS, "logprobs": 0}, "logprobs"),
    (CHAT, {"model": "llm", "messages": MSGS, "presence_penalty": False}, "presence_penalty"),
    (CHAT, {"model": "llm", "messages": MSGS, "seed": "7"}, "seed"),
    (CHAT, {"model": "llm", "messages": MSGS, "top_k": True}, "top_k"),
    ("/v1/completions", {"model": "llm", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ("/v1/completions", {"model": "llm", "prompt": "x", "stream": "false"}, "stream"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "encoding_format": 5}, "encoding_format"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "dimensions": "abc"}, "dimensions"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "dimensions": "8"}, "dimensions"),
    ("/v1/embeddings", {"model": "emb", "input": "x", "dimensions": True}, "dimensions"),
    ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "top_n": "3"}, "top_n"),
    ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "top_n": True}, "top_n"),
    ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents"),
    ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "return_len": 1}, "return_len"),
    ("/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "max_chunks_per_doc": "2"}, "max_chunks_per_doc"),
    ("/v1/images/generations", {"model": "llm", "prompt": "cat", "n": "2"}, "n"),
    ("/v1/images/generations", {"model": "llm", "prompt": "cat", "n": True}, "n"),
    ("/v1/audio/speech", {"model": "llm", "input": "hi", "speed": "1.5"}, "speed"),
    ("/v1/audio/speech", {"model": "llm", "input": "hi", "stream": "yes"}, "stream"),
    ("/v1/model_registrations/LLM", {"model": "{}", "persist": "true"}, "persist"),
    ("/v1/model_registrations/LLM", {"model": "{}", "overwrite": 1}, "overwrite"),
    ("/v1/models", {"model_name": "x", "model_type": "embedding", "replica": "2"}, "replica"),
]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("strict_roots")
    running = start_in_thread(create_app(FakeClient(), allowed_roots=[root]), port=0)
    yield running
    running.stop()


@pytest.mark.parametrize("path,body,field", STRICT_CASES,
                         ids=[f"{i}-{p.rsplit('/', 1)[-1]}-{f}" for i, (p, _b, f) in enumerate(STRICT_CASES)])
def test_item10_strict_bodies(strict_server, path, body, field):
    kwargs = ({"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes)
              else {"json": body})
    with httpx.Client(base_url=strict_server.url) as c:
        r = c.post(path, **kwargs)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"], r.json()["detail"]


def _form(fields: dict) -> dict:
    """httpx arguments for a multipart/form-data body of text fields only."""
    boundary = "xnbform"
    body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                   for k, v in fields.items()) + f"--{boundary}--\r\n"
    return {"content": body.encode(), "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def test_item10_strict_form_fields(strict_server):
    with httpx.Client(base_url=strict_server.url) as c:
        r = c.post("/v1/audio/speech", **_form({"model": "llm", "input": "hi", "stream": "maybe"}))
        assert r.status_code == 400 and "stream" in r.json()["detail"]
        r = c.post("/v1/audio/speech", **_form({"model": "llm", "input": "hi", "speed": "nan"}))
        assert r.status_code == 400 and "speed" in r.json()["detail"]
        r = c.post("/v1/audio/speech", **_form({"model": "llm", "input": "hi", "stream": "false"}))
        assert r.status_code == 400 and "cannot speech" in r.json()["detail"]  # past the fields: llm has no voice
        files = {"file": ("a.wav", b"\0" * 100, "audio/wav")}
        r = c.post("/v1/audio/transcriptions", data={"model": "llm", "bogus": "1"}, files=files)
        assert r.status_code == 400 and "bogus" in r.json()["detail"]
        r = c.post("/v1/audio/transcriptions", data={"model": "llm", "temperature": "inf"}, files=files)
        assert r.status_code == 400 and "temperature" in r.json()["detail"]
        r = c.post("/v1/audio/transcriptions", data={"model": "llm", "kwargs": '{"beam": 3}'}, files=files)
        assert r.status_code == 400 and "kwargs" in r.json()["detail"]


def test_item10_valid_values_still_pass(strict_server):
    with httpx.Client(base_url=strict_server.url) as c:
        r = c.post(CHAT, json={"model": "llm", "messages": MSGS, "max_tokens": 2, "temperature": 0, "top_p": 1,
                               "n": 1, "logprobs": False, "presence_penalty": 0.0, "stream": False})
        assert r.status_code == 200, r.text
        r = c.post("/v1/rerank", json={"model": "rr", "query": "q", "documents": ["a", "b"], "top_n": 1,
                                       "return_documents": True, "return_len": True})
        assert r.status_code == 200 and len(r.json()["results"]) == 1
        r = c.post("/v1/embeddings", json={"model": "emb", "input": ["a"], "encoding_format": "base64"})
        assert r.status_code == 200


# ================================================================================================
# Real tiny models behind the real server (item 4 and 10 on real engines; the fuzz)
# ================================================================================================
@pytest.fixture(scope="module")
def live_sec(tmp_path_factory, tiny_llama_dir, minilm_dir, cross_encoder_dir):
    pytest.importorskip("sentence_transformers")
    from server_fakes import LiveModels

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("sec_home")))
    models = LiveModels("sec", tiny_llama_dir, minilm_dir, cross_encoder_dir)
    roots = [tiny_llama_dir.parent, minilm_dir, cross_encoder_dir.parent]
    running = start_in_thread(create_app(models.client, allowed_roots=[str(r) for r in roots]), port=0)
    running.models = models
    running.dirs = {"llm": tiny_llama_dir, "minilm": minilm_dir, "rr": cross_encoder_dir}
    yield running
    running.stop()
    models.close()
    mp.undo()


def test_item4_and_10_real_models_bad_input_is_400_on_the_same_connection(live_sec):
    llm, emb = live_sec.models.llm, live_sec.models.emb
    conn = KeepAlive(live_sec.port)
    good = {"model": llm, "messages": MSGS, "max_tokens": 2, "temperature": 0}
    try:
        bad_bodies = [
            ({"model": llm, "messages": [{"role": "user", "content": 5}], "max_tokens": 2}, "content"),
            ({"model": llm, "messages": [{"role": "user", "content": {"x": 1}}], "max_tokens": 2}, "content"),
            ({"model": llm, "messages": MSGS, "max_tokens": 2, "seed": 2**70}, "seed"),
            ({"model": llm, "messages": MSGS, "max_tokens": 2, "stream": True, "stream_options": {"bogus": 1}},
             "stream_options"),
            ({"model": emb, "input": "x", "dimensions": -1}, "dimensions"),
            ({"model": emb, "input": "x", "dimensions": 0}, "dimensions"),
        ]
        for body, field in bad_bodies:
            path = CHAT if "messages" in body else "/v1/embeddings"
            status, headers, data = conn.request("POST", path, body)
            assert status == 400, (body, data)
            assert field in json.loads(data)["detail"], (body, data)
            status, _, data = conn.request("POST", CHAT, good)
            assert status == 200, data
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------
# Fuzz: every REST route's body (hypothesis), real app, real tiny models, one kept-alive connection
# ------------------------------------------------------------------------------------------------
_DROP = object()  # a mutation that removes the field


def _fuzz_strategies(uids: list[str], dirs: dict):
    """Per route: a valid body with one or two fields replaced by hostile values (or dropped, or an
    unknown key added), or a body made of hostile values only. LLM bodies always cap generation."""
    from hypothesis import strategies as st

    llm, emb, rr = uids
    hostile_text = st.sampled_from(["", " ", "true", "false", "0", "1", "NaN", "null", "\x00", "a\x00b", "../../etc",
                                    "/etc/passwd", "file:///etc", "x" * 300, "é☃", "{}", "[]", "--no-index",
                                    "<script>", "LLM", "embedding", "auto", "base64", "float", "\ud800",
                                    "a\udfffb", "\ud83d\ude00", "\udbff\ud800"])
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([2**31, 2**63, 2**70, -2**70]),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), hostile_text)
    keys = st.text(max_size=6) | st.sampled_from(["\ud800", "k\udc00", "\ud83d\ude00"])
    values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(keys, ch, max_size=3),
                          max_leaves=6)
    model = st.sampled_from(uids + ["nope", "", "sec-tiny-llama"]) | values
    small = st.sampled_from([1, 2, 0, -1, 2**70, True, False, "2", 1.5, [], {}, _DROP])  # never a long generation
    message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "system", "assistant", "tool",
                                                                           "bogus", 5, None]),
                                                  "content": st.sampled_from(["hi", "", None, 5]) | values,
                                                  "name": values, "tool_calls": values})
    messages = st.lists(message, max_size=3) | values
    junk_name = st.text(alphabet="abcxyz-_.0/\n", min_size=0, max_size=10).map(lambda s: "fz-" + s) | values
    paths = st.sampled_from([str(dirs["llm"]), "/etc", "/", "relative/dir", "~", "", "x" * 5000, "a\x00b"]) | values
    emb_docs = st.sampled_from([json.dumps(embedding_doc("/etc", "fz-e")),
                                json.dumps(embedding_doc(dirs["minilm"], "fz-e"))])

    def route(base: dict, fields: dict, capped: tuple = ()):
        fields = dict(fields, zz_unknown=values)
        hostile = {k: (v | st.just(_DROP)) if k not in capped else small for k, v in fields.items()}

        def apply(changes: dict) -> dict:
            out = dict(base, **changes)
            return {k: v for k, v in out.items() if v is not _DROP}

        mutated = st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=2, unique=True).flatmap(
            lambda keys: st.fixed_dictionaries({k: hostile[k] for k in keys})).map(apply)
        wild = st.fixed_dictionaries({k: small for k in capped},
                                     optional={k: v for k, v in fields.items() if k not in capped}).map(
            lambda d: {k: v for k, v in d.items() if v is not _DROP})
        return mutated | wild

    gen = {"stream": st.booleans() | values, "temperature": values, "top_p": values, "top_k": values,
           "seed": values, "stop": values, "n": values, "logprobs": values, "user": values,
           "stream_options": values, "response_format": values, "presence_penalty": values,
           "repetition_penalty": values, "chat_template_kwargs": values, "enable_thinking": values}
    capped = ("max_tokens", "max_completion_tokens")
    return {
        ("POST", CHAT): route({"model": llm, "messages": MSGS, "max_tokens": 2},
                             dict(gen, model=model, messages=messages, tools=values,
                                  max_tokens=small, max_completion_tokens=small), capped),
        ("POST", "/v1/completions"): route({"model": llm, "prompt": "hi", "max_tokens": 2},
                                           dict(gen, model=model, prompt=values, max_tokens=small,
                                                max_completion_tokens=small), capped),
        ("POST", "/v1/embeddings"): route({"model": emb, "input": ["a b", "c"]},
                                          {"model": model, "input": values, "encoding_format": values,
                                           "dimensions": values, "user": values}),
        ("POST", "/v1/rerank"): route({"model": rr, "query": "q", "documents": ["a", "b"]},
                                      {"model": model, "query": values, "documents": values, "top_n": values,
                                       "return_documents": values, "return_len": values,
                                       "max_chunks_per_doc": values, "kwargs": values}),
        ("POST", "/v1/images/generations"): route({"model": llm, "prompt": "cat"},
                                                  {"model": model, "prompt": values, "n": values, "size": values,
                                                   "response_format": values, "kwargs": values}),
        ("POST", "/v1/audio/speech"): route({"model": llm, "input": "hi"},
                                            {"model": model, "input": values, "voice": values, "speed": values,
                                             "response_format": values, "stream": values, "kwargs": values}),
        ("POST", "/v1/flexible/infers"): route({"model": emb, "args": []}, {"model": model, "args": values}),
        ("POST", "/v1/models"): route({"model_name": "fz-none", "model_type": "embedding"},
                                      {"model_name": junk_name, "model_type": values, "model_engine": values,
                                       "model_uid": values, "model_path": paths, "replica": values, "n_gpu": values,
                                       "gpu_idx": values, "quantization": values, "trust_remote_code": values,
                                       "virtual_env_packages": values, "envs": values,
                                       "enable_virtual_env": values}),
        ("POST", "/v1/model_registrations/LLM"): route({"model": "{}"}, {
            "model": values | values.map(lambda v: json.dumps(v, allow_nan=True)), "persist": values,
            "overwrite": values}),
        ("POST", "/v1/model_registrations/embedding"): route(
            {"model": json.dumps(embedding_doc(dirs["minilm"], "fz-e")), "persist": False, "overwrite": True},
            {"model": emb_docs | values, "persist": values, "overwrite": values}),
        ("POST", "/v1/models/llm/auto-register"): route({"model_path": str(dirs["llm"])},
                                                        {"model_path": paths, "model_family": values,
                                                         "model_name": values}),
    }


def test_fuzz_every_route_body_against_real_models(live_sec, tmp_path):
    """Hypothesis bodies for every POST route (hostile values in every field, extra keys), sent on one
    kept-alive connection to the server serving the tiny LLM, MiniLM and reranker: never a 5xx, every
    error a JSON {"detail": str}, the connection never dropped, and the server serves real requests after."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings as hsettings
    from hypothesis import strategies as st
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))
    uids = [live_sec.models.llm, live_sec.models.emb, live_sec.models.rr]
    conn = KeepAlive(live_sec.port)
    seen: dict[str, dict[int, int]] = {}
    try:
        for (method, path), strategy in _fuzz_strategies(uids, live_sec.dirs).items():
            codes = seen.setdefault(path, {})

            deep = [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
                    b'{"model": "\\ud800"}', b'{"\xed\xa0\x80": 1}']

            @given(body=strategy, raw=st.sampled_from([None] * 9 + [b"{", b"[]", b"\xff", b"", b"null"] + deep))
            @hsettings(max_examples=30, deadline=None, database=None, derandomize=True,
                       suppress_health_check=list(HealthCheck))
            def check(body, raw):
                status, headers, data = conn.request(method, path, raw if raw is not None else body)
                codes[status] = codes.get(status, 0) + 1
                assert status < 500, (path, body, data[:500])
                if status >= 400:
                    detail = json.loads(data)["detail"]
                    assert isinstance(detail, str) and detail and headers.get("x-xinf-error")

            check()
        for path in ("/v1/models/fz-none", "/v1/models/fz-none/progress", "/v1/model_registrations/LLM/fz-x",
                     "/v1/engines/fz-x", "/v1/engines/LLM/fz-x", "/v1/model_registrations/spaceship"):
            status, _, data = conn.request("GET", path)
            assert 400 <= status < 500 and json.loads(data)["detail"]
        # still serving, on the same connection, with real answers
        status, _, data = conn.request("POST", CHAT, {"model": uids[0], "messages": MSGS, "max_tokens": 3})
        assert status == 200 and json.loads(data)["choices"][0]["message"]["role"] == "assistant"
        status, _, data = conn.request("POST", "/v1/embeddings", {"model": uids[1], "input": "still here"})
        assert status == 200 and len(json.loads(data)["data"][0]["embedding"]) == 384
        status, _, data = conn.request("GET", "/v1/models")
        assert status == 200 and set(uids) <= {m["id"] for m in json.loads(data)["data"]}
    finally:
        conn.close()
    assert len(seen) >= 10
    assert sum(c.get(200, 0) for c in seen.values()) > 0, seen  # some bodies were valid and served


# ------------------------------------------------------------------------------------------------
# Issue 20 item 8: text that is not Unicode (lone surrogates) and bodies nested 100,000 deep are a
# 400 {"detail"} naming where, on every route, on the same connection (before: a 500 text/plain, the
# error itself unencodable, or a 500 RecursionError)
# ------------------------------------------------------------------------------------------------
_DEEP = 100_000


def _spoiled_bodies(base: dict) -> list[tuple[bytes, str]]:
    """(raw body, what its 400 detail names): ``base`` with lone surrogates in keys and values at
    several depths (as JSON escapes and as raw bytes), and deep lists and dicts."""
    text = json.dumps(base)                      # ascii: a lone surrogate travels as its \\uXXXX escape

    def plus(value_json: str) -> bytes:
        return (text[:-1] + (", " if base else "") + '"zz": ' + value_json + "}").encode()

    return [
        (json.dumps(dict(base, model="\ud800")).encode(), "model"),
        (json.dumps(dict(base, **{"\udc00": 1})).encode(), "the key"),
        (plus('"abc\\udfff"'), "zz"),
        (plus('[{"a": ["ok", "\\ud83d"]}]'), "zz[0].a[1]"),
        (plus('{"a": {"b": {"\\ud800x": 1}}}'), "zz.a.b: the key"),
        (plus('{"a": "\\ud83d\\ude00 fine", "b": "\\\\ud800 fine", "c": "\\udbff"}'), "zz.c"),
        (text[:-1].encode() + (b", " if base else b"") + b'"zz": ["\xed\xa0\x80"]}', "zz[0]"),
        (plus("[" * _DEEP + "]" * _DEEP), "nested deeper"),
        (plus('{"a": ' * _DEEP + "1" + "}" * _DEEP), "nested deeper"),
        (plus('[{"a": ' * (_DEEP // 2) + "1" + "}]" * (_DEEP // 2)), "nested deeper"),
        (b"[" * _DEEP + b"]" * _DEEP, "nested deeper"),
    ]


def test_issue20_item8_lone_surrogates_and_deep_nesting_are_400_on_every_route(live_sec):
    uids = {"llm": live_sec.models.llm, "emb": live_sec.models.emb, "rr": live_sec.models.rr}
    bases = {CHAT: {"model": uids["llm"], "messages": MSGS, "max_tokens": 2},
             "/v1/completions": {"model": uids["llm"], "prompt": "hi", "max_tokens": 2},
             "/v1/embeddings": {"model": uids["emb"], "input": "hi"},
             "/v1/rerank": {"model": uids["rr"], "query": "q", "documents": ["a"]},
             "/v1/audio/speech": {"model": uids["llm"], "input": "hi"},
             "/v1/flexible/infers": {"model": uids["emb"], "args": []},
             "/v1/models": {"model_name": "fz-none", "model_type": "embedding"},
             "/v1/models/llm/auto-register": {"model_path": str(live_sec.dirs["llm"])}}
    conn = KeepAlive(live_sec.port)
    try:
        status, _, data = conn.request("GET", "/openapi.json")
        paths = [p for p, ops in json.loads(data)["paths"].items() if "post" in ops]
        assert {CHAT, "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/images/generations",
                "/v1/audio/speech", "/v1/flexible/infers", "/v1/audio/transcriptions"} <= set(paths)
        for template in paths + ["/v1/no-such-route"]:
            path = template.replace("{model_uid}", "fz-x").replace("{model_type}", "LLM")
            for raw, named in _spoiled_bodies(bases.get(path, {"model": uids["emb"]})):
                status, headers, data = conn.request("POST", path, raw)
                assert status == 400, (path, raw[:80], data[:300])
                assert headers.get("content-type") == "application/json", (path, headers)
                detail = json.loads(data)["detail"]
                assert named in detail and headers.get("x-xinf-error") == "InferenceError", (path, raw[:80], detail)
        # multipart fields Starlette decodes with the charset the request names (utf-7 makes surrogates)
        boundary = "fzbound"

        def form(fields: dict, charset: str = "utf-7") -> tuple[bytes, dict]:
            parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                            for k, v in fields.items())
            return (parts + f"--{boundary}--\r\n").encode(), {
                "Content-Type": f"multipart/form-data; boundary={boundary}; charset={charset}"}

        for path, fields, named in [("/v1/audio/speech", {"model": "+2AA-", "input": "hi"}, "model"),
                                    ("/v1/audio/speech", {"model": uids["llm"], "input": "a+3AA-"}, "input"),
                                    ("/v1/audio/transcriptions", {"model": "+2AA-", "file": "x"}, "model"),
                                    ("/v1/audio/transcriptions", {"+2D8-": "x"}, "the field name")]:
            status, headers, data = conn.request("POST", path, *form(fields))
            assert status == 400 and named in json.loads(data)["detail"], (path, fields, data[:300])
        # query strings and paths: percent-escaped surrogate bytes decode to U+FFFD, never to a surrogate
        for path in ("/v1/models/%ED%A0%80", "/v1/models/%ED%A0%80/progress", "/v1/engines/%ED%A0%80",
                     "/v1/model_registrations/LLM?detailed=%ED%A0%80", "/v1/model_registrations/%ED%A0%80",
                     "/v1/models?%ED%A0%80=1"):
            status, headers, data = conn.request("GET", path)
            assert status < 500 and headers.get("content-type") == "application/json", (path, data[:300])
        # and it serves on, on the same connection: a surrogate PAIR is text
        status, _, data = conn.request("POST", "/v1/embeddings", {"model": uids["emb"], "input": "\ud83d\ude00"})
        assert status == 200 and len(json.loads(data)["data"][0]["embedding"]) == 384
        status, _, data = conn.request("POST", CHAT, {"model": uids["llm"], "messages": MSGS, "max_tokens": 2})
        assert status == 200, data
    finally:
        conn.close()


def test_issue20_item8_error_answers_always_render():
    """The one renderer of error answers escapes what UTF-8 cannot encode, whatever raised it."""
    from xinference_nb.server.http_errors import error_response

    resp = error_response(400, "Model not found in the model list, uid: \ud800x", "ModelNotFound")
    assert json.loads(resp.body) == {"detail": "Model not found in the model list, uid: \\ud800x"}


# ================================================================================================
# Items 7-10 (values): chat messages, generate_config, embedding/rerank options, registry store
# failures, the whole-string name rule and stale temp files. Each is checked in-kernel and, for
# request values, over REST (fastapi's TestClient on create_app serving this kernel's models).
# ================================================================================================
import errno as _errno  # noqa: E402
import os as _os  # noqa: E402
import time as _time  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

from xinference_nb.errors import InferenceError, LaunchError, RegistryError, SpecError  # noqa: E402


@pytest.fixture(scope="module")
def b2_models(tmp_path_factory, tiny_llama_dir, minilm_dir, cross_encoder_dir):
    """The tiny LLM (transformers), MiniLM embedding and cross-encoder, launched in this kernel, and a
    TestClient on the app that serves them."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from server_fakes import LiveModels

    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("b2_home")))
    models = LiveModels("b2", tiny_llama_dir, minilm_dir, cross_encoder_dir)
    client = Client()
    roots = [str(tmp_path_factory.getbasetemp()), str(minilm_dir)]
    with TestClient(create_app(client, allowed_roots=roots), base_url="http://127.0.0.1") as rest:  # loopback Host
        models.rest = rest
        models.handle = {kind: client.get_model(uid) for kind, uid in models.uids.items()}
        yield models
    models.close()
    mp.undo()


def _refused_over_rest(rest, path: str, body: dict, *fields: str) -> str:
    r = rest.post(path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})
    assert r.status_code == 400, (path, body, r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    for field in fields:
        assert field in detail, (field, detail)
    return detail


# ------------------------------------------------------------------ chat messages
_IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
_BAD_MESSAGES = [
    ([{"content": "hi"}], "messages[0].role"),
    ([{"role": 5, "content": "hi"}], "messages[0].role"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": None, "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": "a"}, {"role": "user"}], "messages[1].content"),
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "tool"}], "messages[0].content"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "user", "content": {"text": "hi"}}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages[0].content[0].text"),
    ([{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
     "messages[0].content[0] has unknown key 'cache_control'"),
    ([{"role": "user", "content": [{"type": "video_game"}]}], "messages[0].content[0].type"),
    ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]"),
    (["hi"], "messages[0]"),    # over REST the body's schema answers first: "messages.0"
    ([{"role": "assistant", "content": None, "tool_calls": "x"}], "messages[0].tool_calls"),
    ([], "messages"),
]


@pytest.mark.parametrize("messages,field", _BAD_MESSAGES)
def test_bad_chat_messages_name_the_field_in_kernel_and_over_rest(b2_models, messages, field):
    with pytest.raises(InferenceError) as err:
        b2_models.handle["LLM"].chat(messages)
    assert field in str(err.value)
    rest_field = "messages.0" if messages == ["hi"] else field
    _refused_over_rest(b2_models.rest, "/v1/chat/completions", {"model": b2_models.llm, "messages": messages},
                       rest_field)


def test_image_part_for_a_text_only_model_names_the_missing_vision_ability(b2_models):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"}, _IMAGE]}]
    with pytest.raises(InferenceError) as err:
        b2_models.handle["LLM"].chat(messages)
    text = str(err.value)
    assert "messages[2].content[1]" in text and "'vision'" in text and "chat" in text
    _refused_over_rest(b2_models.rest, "/v1/chat/completions", {"model": b2_models.llm, "messages": messages},
                       "messages[2].content[1]", "vision")


def test_valid_message_forms_still_work(b2_models):
    h = b2_models.handle["LLM"]
    cfg = {"max_tokens": 2, "temperature": 0}
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    ok = [
        [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": calls},
         {"role": "tool", "content": "42", "tool_call_id": "c1"}],
        [{"role": "user", "content": ""}],
        "plain string",
    ]
    for messages in ok:
        assert h.chat(messages, generate_config=cfg)["object"] == "chat.completion"
    r = b2_models.rest.post("/v1/chat/completions", json={"model": b2_models.llm, "messages": ok[1], **cfg})
    assert r.status_code == 200, r.text


def test_tools_and_enable_thinking_values_are_checked(b2_models):
    h = b2_models.handle["LLM"]
    with pytest.raises(InferenceError, match=r"tools\[0\]"):
        h.chat("q", tools=[{"type": "function"}])
    with pytest.raises(InferenceError, match="tools must be a list"):
        h.chat("q", tools="get_weather")
    with pytest.raises(InferenceError, match="enable_thinking"):
        h.chat("q", enable_thinking="false")


# ------------------------------------------------------------------ generate_config values
_BAD_CONFIG = [
    ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", -0.5), ("temperature", True),
    ("temperature", "0.7"),
    ("top_p", float("nan")), ("top_p", 0), ("top_p", 1.5), ("top_p", True),
    ("top_k", -2), ("top_k", 2.5), ("top_k", True),
    ("repetition_penalty", float("nan")), ("repetition_penalty", float("-inf")), ("repetition_penalty", 0),
    ("repetition_penalty", -1.0), ("repetition_penalty", True), ("repetition_penalty", "1.1"),
    ("max_tokens", True), ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", "10"), ("max_tokens", 2.0),
    ("seed", 2**70), ("seed", -1), ("seed", True), ("seed", 1.5), ("seed", "7"),
    ("stop", 5), ("stop", [1]), ("stop", {"a": 1}), ("stop", ["ok", None]),
    ("stream", "true"), ("stream", 1),
    ("stream_options", "x"), ("stream_options", ["include_usage"]), ("stream_options", {"include_usage": "yes"}),
    ("stream_options", {"include_usage": True, "chunk_size": 4}),
]


@pytest.mark.parametrize("key,value", _BAD_CONFIG, ids=lambda v: repr(v)[:24])
def test_bad_generate_config_values_name_the_key(b2_models, key, value):
    h = b2_models.handle["LLM"]
    cfg = {key: value}
    if key == "stream_options":
        cfg["stream"] = True
    for call in (lambda: h.generate("Once", dict(cfg)), lambda: h.chat("Once", generate_config=dict(cfg))):
        with pytest.raises(InferenceError) as err:
            call()
        assert repr(key) in str(err.value)
    rest = b2_models.rest
    _refused_over_rest(rest, "/v1/completions", {"model": b2_models.llm, "prompt": "Once", **cfg}, key)
    _refused_over_rest(rest, "/v1/chat/completions",
                       {"model": b2_models.llm, "messages": [{"role": "user", "content": "Hi"}], **cfg}, key)


def test_generate_config_error_says_what_is_accepted(b2_models):
    h = b2_models.handle["LLM"]
    with pytest.raises(InferenceError, match=r"'seed'.*from 0 to 4294967294"):
        h.generate("Once", {"seed": 2**70})       # torch's ValueError before
    with pytest.raises(InferenceError, match=r"'temperature'.*finite number >= 0"):
        h.generate("Once", {"temperature": float("nan")})
    with pytest.raises(InferenceError, match=r"'stream_options'.*only allowed with stream=True"):
        h.generate("Once", {"stream_options": {"include_usage": True}})
    with pytest.raises(InferenceError, match="generate_config must be a dict"):
        h.generate("Once", [("max_tokens", 2)])


def test_stream_options_and_repetition_penalty_are_applied(b2_models, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    h = b2_models.handle["LLM"]
    base = {"max_tokens": 3, "temperature": 0, "stream": True}
    last = list(h.generate("Once", dict(base, stream_options={"include_usage": False})))[-1]
    assert "usage" not in last and last["choices"][0]["finish_reason"]
    last = list(h.generate("Once", dict(base, stream_options={"include_usage": True})))[-1]
    assert last["usage"]["completion_tokens"] >= 1
    # repetition_penalty reaches the engine: the same text as transformers' own greedy generate with it
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = tok("Once upon a time", return_tensors="pt").input_ids
    n = 48
    texts = {}
    for penalty in (1.0, 1.5):
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=n, do_sample=False, repetition_penalty=penalty)
        expected = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
        out = h.generate("Once upon a time", {"max_tokens": n, "temperature": 0, "repetition_penalty": penalty})
        texts[penalty] = out["choices"][0]["text"]
        assert texts[penalty] == expected
    assert texts[1.0] != texts[1.5]     # the penalty changed the greedy path (as it does in transformers)
    # ... and over REST the same value is applied, not refused as an "OpenAI default"
    llm = b2_models.uids["LLM"]
    r = b2_models.rest.post("/v1/completions", json={"model": llm, "prompt": "Once upon a time", "max_tokens": n,
                                                     "temperature": 0, "repetition_penalty": 1.5})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == texts[1.5]


# ------------------------------------------------------------------ embedding and rerank values
_BAD_EMBEDDING = [
    ({"dimensions": "abc"}, "dimensions"), ({"dimensions": -1}, "dimensions"), ({"dimensions": 0}, "dimensions"),
    ({"dimensions": True}, "dimensions"), ({"dimensions": 385}, "dimensions"), ({"dimensions": 1.5}, "dimensions"),
    ({"encoding_format": "hex"}, "encoding_format"), ({"encoding_format": 5}, "encoding_format"),
    ({"encoding_format": False}, "encoding_format"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": True}, "batch_size"),
    ({"normalize_embeddings": "yes"}, "normalize_embeddings"),
]


@pytest.mark.parametrize("options,field", _BAD_EMBEDDING, ids=lambda v: repr(v)[:30])
def test_bad_embedding_options_name_the_field(b2_models, options, field):
    with pytest.raises(InferenceError) as err:
        b2_models.handle["embedding"].create_embedding("hello", **options)
    assert field in str(err.value)
    _refused_over_rest(b2_models.rest, "/v1/embeddings", {"model": b2_models.emb, "input": "hello", **options},
                       field)


@pytest.mark.parametrize("value", [5, 1.5, None, {"text": "x"}, [], ["ok", 3], [["a"]]],
                         ids=lambda v: repr(v)[:20])
def test_bad_embedding_input_names_the_field(b2_models, value):
    with pytest.raises(InferenceError) as err:
        b2_models.handle["embedding"].create_embedding(value)
    assert "input" in str(err.value)
    _refused_over_rest(b2_models.rest, "/v1/embeddings", {"model": b2_models.emb, "input": value}, "input")


@pytest.mark.parametrize("kwargs,field", [
    ({"top_n": 0}, "top_n"), ({"top_n": -1}, "top_n"), ({"top_n": True}, "top_n"), ({"top_n": "2"}, "top_n"),
    ({"documents": ["a", 3]}, "documents[1]"), ({"documents": 5}, "documents"), ({"documents": []}, "documents"),
    ({"documents": [{"text": "a"}]}, "documents[0]"), ({"query": 5}, "query"),
    ({"return_documents": "yes"}, "return_documents"), ({"return_len": 1}, "return_len"),
    ({"max_chunks_per_doc": 0}, "max_chunks_per_doc"),
], ids=lambda v: repr(v)[:30])
def test_bad_rerank_values_name_the_field(b2_models, kwargs, field):
    args = {"documents": ["a cat", "a dog"], "query": "pets", **kwargs}
    with pytest.raises(InferenceError) as err:
        b2_models.handle["rerank"].rerank(**args)
    assert field in str(err.value)
    _refused_over_rest(b2_models.rest, "/v1/rerank", {"model": b2_models.rr, **args}, field.split("[")[0])


# ------------------------------------------------------------------ item 8: the whole-string name rule
@pytest.mark.parametrize("launcher", ["pkg.fn\n", "pkg.fn\r\n", "pkg.fn\nimport os"])
def test_flexible_launcher_path_matches_the_whole_string(launcher):
    from xinference_nb.spec.flexible import FlexibleSpec

    with pytest.raises(Exception, match="dotted path"):
        FlexibleSpec.model_validate({"version": 2, "model_name": "flex", "launcher": launcher})


def test_hub_id_matches_the_whole_string():
    from xinference_nb.parse.locate import HUB_ID

    assert HUB_ID.fullmatch("org/name") and not HUB_ID.fullmatch("org/name\n")


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "a\nb", "abc\x00"])
def test_name_rule_matches_the_whole_string(name, b2_models, tmp_path, minilm_dir):
    from server_fakes import embedding_doc

    from xinference_nb.client import Client
    from xinference_nb.spec import check_model_name

    Client().register_model("embedding", embedding_doc(minilm_dir, "b2-minilm"), overwrite=True)

    with pytest.raises(ValueError):
        check_model_name(name)
    doc = {"version": 2, "model_name": name, "dimensions": 384, "max_tokens": 128, "language": ["en"],
           "model_specs": [{"model_format": "pytorch", "model_uri": str(tmp_path), "quantization": "none"}]}
    with pytest.raises(SpecError) as err:
        Client().register_model("embedding", doc, persist=True)
    assert "model_name" in err.value.fields
    assert not any(_Path(_os.environ["XINFERENCE_NB_HOME"]).rglob("abc*"))
    with pytest.raises(LaunchError, match="model_uid"):
        Client().launch_model("b2-minilm", model_type="embedding", model_uid=name, n_gpu=None)
    r = b2_models.rest.post("/v1/model_registrations/embedding", json={"model": doc, "persist": True})
    assert r.status_code == 400 and "model_name" in r.json()["detail"]
    r = b2_models.rest.post("/v1/models", json={"model_name": "b2-minilm", "model_type": "embedding",
                                                "model_uid": name})
    assert r.status_code == 400 and "model_uid" in r.json()["detail"], r.text


# ------------------------------------------------------------------ item 7: registry store failures
def _emb_doc(folder, name="store-emb"):
    return {"version": 2, "model_name": name, "dimensions": 384, "max_tokens": 128, "language": ["en"],
            "model_specs": [{"model_format": "pytorch", "model_uri": str(folder), "quantization": "none"}]}


def _registered(name="store-emb"):
    from xinference_nb.client import Client

    return [r["model_name"] for r in Client().list_model_registrations("embedding") if r["model_name"] == name]


def test_read_only_home_refuses_persisting_but_session_registration_works(tmp_path, monkeypatch):
    from xinference_nb.client import Client

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the home's parent folder should be")
    monkeypatch.setenv("XINFERENCE_NB_HOME", str(blocker / "home"))
    client = Client()
    with pytest.raises(RegistryError) as err:
        client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    text = str(err.value)
    assert str(blocker) in text and "XINFERENCE_NB_HOME" in text and "persist=False" in text
    assert _registered() == []
    client.register_model("embedding", _emb_doc(tmp_path), persist=False)
    assert _registered() == ["store-emb"]
    assert client.get_model_registration("embedding", "store-emb")["model_name"] == "store-emb"
    client.register_model("embedding", _emb_doc(tmp_path), persist=False, overwrite=True)
    client.unregister_model("embedding", "store-emb")
    assert _registered() == []


@pytest.mark.skipif(not hasattr(_os, "geteuid") or _os.geteuid() == 0,
                    reason="running as root: chmod does not stop root from writing (the monkeypatched "
                           "EACCES test below covers permission denied)")
def test_read_only_home_by_permissions(tmp_path, monkeypatch, nb_home):
    from xinference_nb.client import Client

    nb_home.mkdir(parents=True)
    nb_home.chmod(0o555)
    try:
        with pytest.raises(RegistryError, match="permission denied"):
            Client().register_model("embedding", _emb_doc(tmp_path), persist=True)
        Client().register_model("embedding", _emb_doc(tmp_path), persist=False)
        assert _registered() == ["store-emb"]
    finally:
        nb_home.chmod(0o755)


@pytest.mark.parametrize("target,code,why", [
    ("os.replace", _errno.ENOSPC, "disk is full"),
    ("os.fsync", _errno.ENOSPC, "disk is full"),
    ("os.replace", _errno.EACCES, "permission denied"),
    ("tempfile.mkstemp", _errno.EACCES, "permission denied"),
    ("tempfile.mkstemp", _errno.EROFS, "read-only"),
])
def test_failed_write_is_a_registry_error_and_changes_nothing(tmp_path, monkeypatch, nb_home, target, code, why):
    import importlib

    from xinference_nb.client import Client

    client = Client()
    client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    stored = nb_home / "model" / "embedding" / "store-emb.json"
    before = stored.read_bytes()
    module, attr = target.split(".")

    def fail(*args, **kwargs):
        raise OSError(code, _os.strerror(code))

    changed = dict(_emb_doc(tmp_path), max_tokens=64)
    with monkeypatch.context() as m, pytest.raises(RegistryError) as err:
        m.setattr(importlib.import_module(module), attr, fail)
        client.register_model("embedding", changed, persist=True, overwrite=True)
    text = str(err.value)
    assert str(stored) in text and why in text and ("XINFERENCE_NB_HOME" in text or "free some space" in text)
    assert stored.read_bytes() == before
    assert not list(stored.parent.glob(".*.tmp"))
    assert client.get_model_registration("embedding", "store-emb")["max_tokens"] == 128


def test_a_folder_or_file_in_the_way_is_a_registry_error(tmp_path, nb_home):
    from xinference_nb.client import Client

    client = Client()
    folder = nb_home / "model" / "embedding"
    (folder / "store-emb.json").mkdir(parents=True)
    with pytest.raises(RegistryError) as err:
        client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    assert str(folder / "store-emb.json") in str(err.value) and "folder is in the way" in str(err.value)
    assert not list(folder.glob(".*.tmp"))
    (folder / "store-emb.json").rmdir()
    folder.rmdir()
    folder.write_text("a file where the embedding folder belongs")
    with pytest.raises(RegistryError) as err:
        client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    assert str(folder) in str(err.value) and "remove or rename it" in str(err.value)
    folder.unlink()
    lock = nb_home / "model" / ".lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    with pytest.raises(RegistryError) as err:
        client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    assert ".lock" in str(err.value)
    assert _registered() == []


def test_failed_unregister_changes_nothing(tmp_path, monkeypatch, nb_home):
    from xinference_nb.client import Client

    client = Client()
    client.register_model("embedding", _emb_doc(tmp_path), persist=True)
    stored = nb_home / "model" / "embedding" / "store-emb.json"

    def fail(*args, **kwargs):
        raise PermissionError(_errno.EACCES, "Permission denied")

    with monkeypatch.context() as m, pytest.raises(RegistryError) as err:
        m.setattr(_os, "unlink", fail)
        client.unregister_model("embedding", "store-emb")
    assert str(stored) in str(err.value) and "permission denied" in str(err.value)
    assert stored.is_file() and _registered() == ["store-emb"]


def test_registry_store_failure_over_rest_is_4xx(b2_models, tmp_path, monkeypatch):
    import tempfile

    def fail(*args, **kwargs):
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    r = b2_models.rest.post("/v1/model_registrations/embedding", json={"model": _emb_doc(tmp_path), "persist": True})
    assert r.status_code == 400 and "disk is full" in r.json()["detail"], r.text


# ------------------------------------------------------------------ item 9: stale temp files
def test_stale_temp_files_are_removed_when_the_registry_opens(nb_home, tmp_path):
    from xinference_nb.registry.registry import Registry
    from xinference_nb.registry.store import STALE_TMP_S

    Registry(nb_home).register("embedding", _emb_doc(tmp_path), persist=True)
    folder = nb_home / "model" / "embedding"
    stale = folder / ".store-emb.k1ll3d_x.tmp"
    fresh = folder / ".store-emb.wr1t1ng.tmp"
    other = folder / "notes.tmp"
    for f in (stale, fresh, other):
        f.write_text('{"half": ')
    old = _time.time() - STALE_TMP_S - 30
    _os.utime(stale, (old, old))
    _os.utime(other, (old, old))
    Registry(nb_home)
    assert not stale.exists()
    assert fresh.exists() and other.exists()        # a writer may still be using it; not ours
    assert (folder / "store-emb.json").is_file()


# ================================================================================================
# Items 1, 2, 7 and 10 (launch side): what launch_model and a registration may ask for.
# Item 1: over REST nothing installs packages or sets a model process's environment unless the
# server allows it (allow_virtualenv); even then, and in the kernel, every package entry is a
# requirement specifier (never a pip option or a bare path). Item 2: boolean options are real
# booleans, and the guard and the engine read the same parsed value. Item 7: bad launch_model
# arguments are package errors naming the field. Item 10: options no engine consumes are errors.
# ================================================================================================
from xinference_nb.client import Client  # noqa: E402
from xinference_nb.errors import LaunchError, LaunchOptionError, SpecError  # noqa: E402


def _setup_py_package(root):
    """The issue's attack: a source folder whose setup.py writes a marker file when pip builds it."""
    pkg = root / "evil-pkg"
    pkg.mkdir(parents=True)
    marker = root / "SETUP_PY_RAN"
    (pkg / "setup.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                  "from setuptools import setup\nsetup(name='evil-pkg', version='0.1')\n")
    return pkg, marker


@pytest.fixture
def venv_server_factory(tmp_path):
    """Servers over a FakeClient with tmp_path as the only allowed root (stopped at the end)."""
    started = []

    def make(**options):
        client = FakeClient()
        running = start_in_thread(create_app(client, allowed_roots=[tmp_path], **options), port=0)
        running.client = client
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def test_item1_issue_request_is_refused_and_setup_py_never_runs(tmp_path, nb_home, minilm_dir):
    """The request of the issue, against the real in-kernel Client: 403 by default, 400 for the pip
    options with allow_virtualenv; the package's setup.py never runs, nothing is launched."""
    pkg, marker = _setup_py_package(tmp_path)
    client = Client()
    client.register_model("embedding", embedding_doc(minilm_dir, "sec-venv-emb"), overwrite=True)
    body = {"model_name": "sec-venv-emb", "model_type": "embedding", "model_uid": "sec-venv-emb",
            "virtual_env_packages": ["--no-build-isolation", "--no-index", str(pkg)]}
    for allow, status in ((False, 403), (True, 400)):
        running = start_in_thread(create_app(client, allowed_roots=[tmp_path], allow_virtualenv=allow), port=0)
        try:
            with httpx.Client(base_url=running.url, timeout=120) as c:
                r = c.post("/v1/models", json=body)
        finally:
            running.stop()
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        if allow:
            assert "virtual_env_packages[0]" in detail and "pip option" in detail
        else:
            assert "virtual_env_packages" in detail and "allow_virtualenv=True" in detail
            assert "--allow-virtualenv" in detail
        assert not marker.exists(), "setup.py ran"
        assert "sec-venv-emb" not in client.list_models()
        assert not (nb_home / "virtualenv" / "sec-venv-emb").exists()


@pytest.mark.parametrize("route,body,where", [
    ("/v1/models", {"virtual_env_packages": ["numpy"]}, "virtual_env_packages"),
    ("/v1/models", {"virtual_env_find_links": ["https://example.com/wheels"]}, "virtual_env_find_links"),
    ("/v1/models", {"enable_virtual_env": True}, "enable_virtual_env"),
    ("/v1/models", {"envs": {"LD_PRELOAD": "/tmp/x.so"}}, "envs"),
    ("/v1/models", {"model_kwargs": {"envs": {"PYTHONPATH": "/tmp"}}}, "model_kwargs.envs"),
    ("/v1/models", {"launcher_args": {"virtualenv": {"packages": ["x"]}}}, "launcher_args.virtualenv"),
    ("reg", {"virtualenv": {"packages": ["numpy"]}}, "virtualenv"),
    ("reg", {"virtualenv": {"packages": [], "index_url": "https://evil.example.com/simple"}}, "virtualenv"),
    ("reg", {"virtualenv": {"find_links": "/tmp"}}, "virtualenv"),
    ("reg", {"virtualenv": {"no_build_isolation": True}}, "virtualenv"),
    ("reg", {"virtualenv": {"inherit_pip_config": False}}, "virtualenv"),
    ("reg", {"virtualenv": {"trusted_host": "evil.example.com"}}, "virtualenv"),
    ("reg", {"model_specs": [{"virtualenv": {"packages": ["numpy"]}}]}, "model_specs[0].virtualenv"),
])
def test_item1_everything_that_installs_or_sets_env_is_403_by_default(venv_server_factory, tmp_path, route, body,
                                                                       where):
    running = venv_server_factory()
    with httpx.Client(base_url=running.url) as c:
        if route == "/v1/models":
            r = c.post(route, json=dict({"model_name": "x", "model_type": "embedding"}, **body))
        else:
            doc = embedding_doc(tmp_path, "sec-venv-reg")
            doc.update(body)
            r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
    assert r.status_code == 403, r.text
    detail = r.json()["detail"]
    assert detail.startswith(where) and "allow_virtualenv=True" in detail and "--allow-virtualenv" in detail
    assert running.client.launched == []
    assert "sec-venv-reg" not in {m["model_name"] for m in Client().list_model_registrations("embedding")}


def test_item1_inert_values_are_not_refused(venv_server_factory, tmp_path):
    """What asks for nothing passes: empty lists, envs {}, enable_virtual_env false, and the
    virtualenv block every Xinference document carries (packages [], pip settings null)."""
    running = venv_server_factory()
    with httpx.Client(base_url=running.url) as c:
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "virtual_env_packages": [],
                                       "envs": {}, "enable_virtual_env": False, "virtual_env_find_links": None})
        assert r.status_code == 200, r.text
        doc = embedding_doc(tmp_path, "sec-venv-inert")
        doc["virtualenv"] = {"packages": [], "inherit_pip_config": True, "index_url": None, "extra_index_url": None,
                             "find_links": None, "trusted_host": None, "no_build_isolation": None}
        r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
        assert r.status_code == 200, r.text
    Client().unregister_model("embedding", "sec-venv-inert")


def test_item1_allowed_entries_must_be_requirements_inside_the_roots(venv_server_factory, tmp_path):
    pkg, marker = _setup_py_package(tmp_path)
    running = venv_server_factory(allow_virtualenv=True)
    launch = {"model_name": "x", "model_type": "embedding"}
    bad_launches = [
        ({"virtual_env_packages": ["numpy", "--no-index"]}, "virtual_env_packages[1]", "pip option"),
        ({"virtual_env_packages": ["-e", str(pkg)]}, "virtual_env_packages[0]", "pip option"),
        ({"virtual_env_packages": [str(pkg)]}, "virtual_env_packages[0]", "not a requirement specifier"),
        ({"virtual_env_packages": ["evil @ file:///etc/evil"]}, "virtual_env_packages[0]", "allowed model roots"),
        ({"virtual_env_packages": ["evil @ https://example.com/evil.tar.gz"]}, "virtual_env_packages[0]", "URL"),
        ({"virtual_env_packages": ["numpy\n--index-url=https://evil"]}, "virtual_env_packages[0]", "lines"),
        ({"virtual_env_packages": [5]}, "virtual_env_packages", "string"),
        ({"virtual_env_find_links": ["--index-url=https://evil"]}, "virtual_env_find_links[0]", "pip option"),
        ({"virtual_env_find_links": ["/etc"]}, "virtual_env_find_links[0]", "allowed model roots"),
        ({"envs": {"A": 1}}, "envs", "string"),
    ]
    bad_docs = [
        ({"packages": ["--no-index"]}, "virtualenv.packages[0]", "pip option"),
        ({"packages": ["evil-pkg @ file:///etc/evil"]}, "virtualenv.packages[0]", "allowed model roots"),
        ({"index_url": "file:///etc"}, "virtualenv.index_url", "allowed model roots"),
        ({"extra_index_url": ["-i", "https://x"]}, "virtualenv.extra_index_url[0]", "pip option"),
        ({"find_links": "ftp://example.com/x"}, "virtualenv.find_links", "http"),
        ({"trusted_host": "a b"}, "virtualenv.trusted_host", "host"),
    ]
    with httpx.Client(base_url=running.url) as c:
        for extra, field, words in bad_launches:
            r = c.post("/v1/models", json=dict(launch, **extra))
            assert r.status_code == 400, (extra, r.text)
            assert field in r.json()["detail"] and words in r.json()["detail"], (extra, r.json()["detail"])
        for venv, field, words in bad_docs:
            doc = dict(embedding_doc(tmp_path, "sec-venv-bad"), virtualenv=dict({"packages": []}, **venv))
            r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
            assert r.status_code == 400, (venv, r.text)
            assert field in r.json()["detail"] and words in r.json()["detail"], (venv, r.json()["detail"])
        assert running.client.launched == []
        # requirement specifiers, a local package inside the roots, find links inside the roots: accepted
        good = {"virtual_env_packages": ["numpy>=1.0", f"evil-pkg @ {pkg.as_uri()}", "x[y]==1; python_version>'3'"],
                "virtual_env_find_links": [str(tmp_path), "https://example.com/wheels"], "envs": {"A": "1"}}
        r = c.post("/v1/models", json=dict(launch, **good))
        assert r.status_code == 200, r.text
        sent = running.client.launched[-1]
        assert sent["virtual_env_packages"] == good["virtual_env_packages"] and sent["envs"] == {"A": "1"}
    assert not marker.exists()


def test_item1_in_kernel_pip_options_and_paths_are_spec_errors(tmp_path, nb_home, minilm_dir):
    """In the kernel too a package entry is a requirement specifier: a pip option or a bare path is a
    SpecError naming the entry, raised before anything is installed or loaded."""
    pkg, marker = _setup_py_package(tmp_path)
    client = Client()
    running = set(client.list_models())   # other tests' models may be running
    client.register_model("embedding", embedding_doc(minilm_dir, "sec-kernel-emb"), overwrite=True)
    for packages, words in ((["--no-build-isolation", "--no-index", str(pkg)], "pip option"),
                            ([str(pkg)], "not a requirement specifier"), (["./evil-pkg"], "not a requirement")):
        with pytest.raises(SpecError, match=words) as err:
            client.launch_model("sec-kernel-emb", model_type="embedding", virtual_env_packages=packages,
                                show_progress=False)
        assert err.value.fields == ["virtual_env_packages[0]"]
        assert isinstance(err.value, LaunchError)
    doc = dict(embedding_doc(minilm_dir, "sec-kernel-doc"), virtualenv={"packages": ["--no-index"]})
    client.register_model("embedding", doc, overwrite=True)
    with pytest.raises(SpecError, match="pip option") as err:
        client.launch_model("sec-kernel-doc", model_type="embedding", show_progress=False)
    assert err.value.fields == ["virtualenv.packages[0]"]
    assert set(client.list_models()) == running and not marker.exists()
    assert not (nb_home / "virtualenv").exists()


def test_item1_check_package_reads_xinference_markers():
    from xinference_nb.isolation.virtualenv import check_package

    assert check_package("#system_torch#", "p") is None
    assert check_package('#system_torch# ; #engine# == "sentence_transformers"', "p",
                         engine="sentence_transformers") is None
    assert check_package('vllm>=0.14.0 ; #engine# == "vllm"', "p", engine="transformers") is None
    assert check_package('Pillow ; #engine# == "sentence_transformers"', "p", engine="sentence_transformers") == "Pillow"
    assert check_package('FlagEmbedding ; #engine# != "flag"', "p", engine="sentence_transformers") == "FlagEmbedding"
    assert check_package("x @ https://example.com/x.whl", "p") == "x @ https://example.com/x.whl"  # in-kernel
    with pytest.raises(SpecError, match="URL"):
        check_package("x @ https://example.com/x.whl", "p", roots=[])
    with pytest.raises(SpecError, match="pip option"):   # checked whatever the engine condition says
        check_package('--no-index ; #engine# == "vllm"', "p", engine="transformers")


# ------------------------------------------------------------------------------------------------
# Item 2: booleans are booleans; the guard and the engine read the same parsed value
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["false", "False", "0", "", 1, 0, "true", [], {}])
def test_item2_non_boolean_trust_remote_code_is_400_naming_it(venv_server_factory, value):
    for running in (venv_server_factory(), venv_server_factory(allow_trust_remote_code=True)):
        with httpx.Client(base_url=running.url) as c:
            r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "trust_remote_code": value})
        assert r.status_code == 400, r.text
        assert "trust_remote_code" in r.json()["detail"] and "boolean" in r.json()["detail"]
        assert running.client.launched == []


def test_item2_booleans_reach_the_client_as_parsed(venv_server_factory):
    running = venv_server_factory()
    with httpx.Client(base_url=running.url) as c:
        for body, field in [({"enable_thinking": "true"}, "enable_thinking"), ({"check_memory": "no"}, "check_memory"),
                            ({"model_kwargs": {"trust_remote_code": "false"}}, "model_kwargs.trust_remote_code"),
                            ({"local_files_only": 1}, "local_files_only")]:
            r = c.post("/v1/models", json=dict({"model_name": "x", "model_type": "embedding"}, **body))
            assert r.status_code == 400 and field in r.json()["detail"], r.text
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "trust_remote_code": False,
                                       "model_kwargs": {"trust_remote_code": False}})
        assert r.status_code == 200, r.text
        assert running.client.launched[-1]["trust_remote_code"] is False
        # nested in a document (e.g. a pipeline's default config), anything but false is refused
        doc = {"model_name": "sec-img", "default_model_config": {"trust_remote_code": "false"}}
        r = c.post("/v1/model_registrations/image", json={"model": json.dumps(doc), "persist": False})
        assert r.status_code == 403 and "default_model_config.trust_remote_code" in r.json()["detail"]


def test_item2_in_kernel_non_booleans_are_spec_errors(nb_home, minilm_dir):
    client = Client()
    running = set(client.list_models())   # other tests' models may be running
    client.register_model("embedding", embedding_doc(minilm_dir, "sec-bool-emb"), overwrite=True)
    for key, value in [("trust_remote_code", "false"), ("trust_remote_code", "0"), ("trust_remote_code", 1),
                       ("check_memory", "False"), ("show_progress", 0), ("local_files_only", "yes"),
                       ("enable_virtual_env", "false")]:
        with pytest.raises(SpecError, match=key) as err:
            client.launch_model("sec-bool-emb", model_type="embedding", **{key: value})
        assert err.value.fields == [key] and isinstance(err.value, LaunchOptionError)
    assert set(client.list_models()) == running


def test_item2_registration_booleans_are_strict(tmp_path):
    from xinference_nb.spec import load_spec

    base = embedding_doc(tmp_path, "sec-strict-doc")
    for patch, field in [({"is_builtin": "false"}, "is_builtin"), ({"is_builtin": 0}, "is_builtin"),
                         ({"virtualenv": {"packages": [], "inherit_pip_config": "false"}},
                          "virtualenv.inherit_pip_config"),
                         ({"virtualenv": {"packages": [], "no_build_isolation": 1}}, "virtualenv.no_build_isolation")]:
        with pytest.raises(SpecError) as err:
            load_spec("embedding", dict(base, **patch))
        assert field in err.value.fields, (patch, str(err.value))
    assert load_spec("embedding", dict(base, is_builtin=False)).is_builtin is False


# ------------------------------------------------------------------------------------------------
# Item 7 (launch side): bad launch_model arguments are package errors naming the field
# ------------------------------------------------------------------------------------------------
def test_item7_bad_launch_arguments_name_the_field(nb_home, minilm_dir, tmp_path):
    client = Client()
    running = set(client.list_models())   # other tests' models may be running
    client.register_model("embedding", embedding_doc(minilm_dir, "sec-args-emb"), overwrite=True)
    cases = [
        (dict(model_name="sec-args-emb", model_engine=5), "model_engine"),             # AttributeError before
        (dict(model_name=None), "model_name"),                                         # TypeError (difflib) before
        (dict(model_name=5), "model_name"),
        (dict(model_name="sec-args-emb", model_path="x" * 5000), "model_path"),        # OSError ENAMETOOLONG before
        (dict(model_name="sec-args-emb", model_path="/" + "a" * 300), "model_path"),
        (dict(model_name="sec-args-emb", model_path=str(tmp_path) + "/a\x00b"), "model_path"),
        (dict(model_name="sec-args-emb", model_size_in_billions=True), "model_size_in_billions"),
        (dict(model_name="sec-args-emb", gpu_idx="0"), "gpu_idx"),
        (dict(model_name="sec-args-emb", quantization=4), "quantization"),
    ]
    for kwargs, field in cases:
        with pytest.raises(LaunchError) as err:
            client.launch_model(model_type="embedding", show_progress=False, **kwargs)
        assert isinstance(err.value, SpecError) and err.value.fields == [field], (kwargs, str(err.value))
    # a registration's 5,000-character model_uri is a SpecError naming it, never an OSError
    for uri in ("/" + "a" * 5000, "/" + "a/" * 2500, "/" + "a" * 300, "/tmp/a\x00b"):
        doc = embedding_doc(minilm_dir, "sec-long-uri")
        doc["model_specs"][0]["model_uri"] = uri
        with pytest.raises(SpecError) as err:
            client.register_model("embedding", doc, overwrite=True)
        assert err.value.fields == ["model_specs[0].model_uri"]
    assert set(client.list_models()) == running


def test_item7_nul_and_long_model_path_over_rest_are_400(venv_server_factory, tmp_path):
    for running in (venv_server_factory(), venv_server_factory(allow_any_path=True)):
        with httpx.Client(base_url=running.url) as c:
            for path in (str(tmp_path) + "/a\x00b", "x" * 5000, str(tmp_path) + "/" + "a" * 300):
                r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "model_path": path})
                assert r.status_code == 400, r.text
                assert r.json()["detail"].startswith("model_path")
        assert running.client.launched == []


# ------------------------------------------------------------------------------------------------
# Item 10 (launch side): an option no part of the chosen engine consumes is an error
# ------------------------------------------------------------------------------------------------
def test_item10_unknown_launch_options_name_the_key_and_what_is_accepted(nb_home, minilm_dir, cross_encoder_dir,
                                                                         tiny_llama_dir):
    from server_fakes import llm_doc, rerank_doc

    client = Client()
    running = set(client.list_models())   # other tests' models may be running
    client.register_model("embedding", embedding_doc(minilm_dir, "sec-opt-emb"), overwrite=True)
    client.register_model("rerank", rerank_doc(cross_encoder_dir, "sec-opt-rr"), overwrite=True)
    client.register_model("LLM", llm_doc(tiny_llama_dir, "sec-opt-llm"), overwrite=True)
    cases = [
        ("sec-opt-emb", "embedding", None, {"bogus": 1}, "bogus", "truncate_dim"),
        ("sec-opt-emb", "embedding", None, {"n_ctx": 128}, "n_ctx", "sentence_transformers"),
        ("sec-opt-emb", "embedding", None, {"enable_thinking": True}, "enable_thinking", "trust_remote_code"),
        ("sec-opt-emb", "embedding", None, {"peft_model_config": {"lora_list": []}}, "peft_model_config",
         "not supported"),
        ("sec-opt-emb", "embedding", None, {"worker_ip": "10.0.0.2"}, "worker_ip", "not supported"),
        ("sec-opt-emb", "embedding", None, {"envs": {"A": "1"}}, "envs", "virtualenv"),
        ("sec-opt-emb", "embedding", None, {"truncate_dim": "16"}, "truncate_dim", "integer"),
        ("sec-opt-rr", "rerank", None, {"truncate_dim": 16}, "truncate_dim", "activation_fn"),
        ("sec-opt-llm", "LLM", "transformers", {"foo": "bar"}, "foo", "trust_remote_code"),
        ("sec-opt-llm", "LLM", "transformers", {"n_threads": 2}, "n_threads", "attn_implementation"),
        ("sec-opt-llm", "LLM", "transformers", {"context_length": 0}, "context_length", "at least 1"),
    ]
    for name, mtype, engine, options, field, listed in cases:
        with pytest.raises(LaunchOptionError) as err:
            client.launch_model(name, model_type=mtype, model_engine=engine, n_gpu=None, show_progress=False,
                                **options)
        assert err.value.fields == [field] and listed in str(err.value), (options, str(err.value))
        assert isinstance(err.value, LaunchError)
    assert set(client.list_models()) == running
    # an option the engine does consume is applied: truncate_dim really cuts the vectors
    uid = client.launch_model("sec-opt-emb", model_type="embedding", n_gpu=None, truncate_dim=16, show_progress=False)
    try:
        out = client.get_model(uid).create_embedding("hello")
        assert len(out["data"][0]["embedding"]) == 16
    finally:
        client.terminate_model(uid)


def test_item10_llama_cpp_takes_its_llama_keywords_typed(nb_home, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    client = Client()
    for options, field, words in [({"bogus": 1}, "bogus", "n_threads"), ({"use_mmap": "no"}, "use_mmap", "boolean"),
                                  ({"n_threads": "2"}, "n_threads", "integer"),
                                  ({"trust_remote_code": False}, "trust_remote_code", "llama.cpp")]:
        with pytest.raises(LaunchOptionError) as err:
            client.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                                n_gpu=None, show_progress=False, **options)
        assert err.value.fields == [field] and words in str(err.value), str(err.value)
    uid = client.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                              n_gpu=None, show_progress=False, n_threads=1, n_ctx=256, use_mmap=False)
    try:
        assert client.describe_model(uid)["context_length"] == 256
    finally:
        client.terminate_model(uid)


def test_item10_flexible_takes_launcher_args_only(nb_home):
    client = Client()
    doc = {"version": 2, "model_name": "sec-flex", "model_description": "x", "model_uri": None,
           "launcher": "xinference_nb.engines.flexible.python_callable", "launcher_args": "{}", "is_builtin": False}
    client.register_model("flexible", doc, overwrite=True)
    with pytest.raises(LaunchOptionError, match="launcher_args") as err:
        client.launch_model("sec-flex", model_type="flexible", callable="json:dumps", show_progress=False)
    assert err.value.fields == ["callable"]
    uid = client.launch_model("sec-flex", model_type="flexible", launcher_args={"callable": "json:dumps"},
                              show_progress=False)
    try:
        assert client.get_model(uid).infer(obj=[1]) == "[1]"
    finally:
        client.terminate_model(uid)


def test_item10_unknown_launch_option_over_rest_is_400(live_sec, minilm_dir):
    Client().register_model("embedding", embedding_doc(minilm_dir, "sec-opt-rest-emb"), overwrite=True)
    with httpx.Client(base_url=live_sec.url, timeout=120) as c:
        r = c.post("/v1/models", json={"model_name": "sec-opt-rest-emb", "model_type": "embedding",
                                       "model_uid": "sec-opt-rest", "bogus_key": 1})
        assert r.status_code == 400, r.text
        assert "bogus_key" in r.json()["detail"] and "truncate_dim" in r.json()["detail"]
        assert r.headers["x-xinf-error"] == "SpecError"
        assert "sec-opt-rest" not in {m["id"] for m in c.get("/v1/models").json()["data"]}


# ------------------------------------------------------------------------------------------------
# n_gpu=None over REST means "CPU only", as in-kernel and in Xinference, never the default "auto"
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sent, expected", [({"n_gpu": None}, None), ({}, "auto"), ({"n_gpu": "auto"}, "auto"),
                                            ({"n_gpu": 0}, 0)])
def test_rest_launch_keeps_an_explicit_n_gpu_none(sent, expected):
    from fastapi.testclient import TestClient
    from server_fakes import FakeClient

    from xinference_nb.server.app import create_app

    client = FakeClient()
    with TestClient(create_app(client), base_url="http://127.0.0.1") as rest:
        r = rest.post("/v1/models", json={"model_name": "m", "model_type": "embedding", **sent})
        assert r.status_code == 200, r.text
    got = client.launched[-1]
    assert got.get("n_gpu", "auto") == expected, got


def test_in_kernel_register_refuses_worker_ip_instead_of_ignoring_it(minilm_dir):
    from server_fakes import embedding_doc

    from xinference_nb.client import Client

    with pytest.raises(SpecError, match="worker_ip") as err:
        Client().register_model("embedding", embedding_doc(minilm_dir, "wip-emb"), worker_ip="10.0.0.2")
    assert "worker_ip" in err.value.fields
    assert "wip-emb" not in {r["model_name"] for r in Client().list_model_registrations("embedding")}
    Client().register_model("embedding", embedding_doc(minilm_dir, "wip-emb"), worker_ip=None)


# ------------------------------------------------------------------------------------------------
# Fields a route does not use are refused by name, never dropped (registration, auto-register, speech)
# ------------------------------------------------------------------------------------------------
class _FakeSpeech:
    model_type = "audio"

    def __init__(self):
        self.calls: list[dict] = []

    def speech(self, text, **kw):
        self.calls.append(dict(kw, text=text))
        return b"RIFF0000WAVE"


def test_rest_routes_refuse_fields_they_do_not_use(tmp_path):
    from fastapi.testclient import TestClient
    from server_fakes import FakeClient, embedding_doc

    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app

    folder = tmp_path / "emb"
    folder.mkdir()
    client = FakeClient()
    tts = client.models["tts"] = _FakeSpeech()
    with TestClient(create_app(client, allowed_roots=[str(tmp_path)]), base_url="http://127.0.0.1") as rest:
        doc = embedding_doc(folder, "extra-emb")
        r = rest.post("/v1/model_registrations/embedding", json={"model": doc, "bogus": 1})
        assert r.status_code == 400 and "'bogus'" in r.json()["detail"] and "persist" in r.json()["detail"]
        r = rest.post("/v1/model_registrations/embedding", json={"model": doc, "worker_ip": "10.0.0.2"})
        assert r.status_code == 400 and "worker_ip" in r.json()["detail"], r.text
        assert "extra-emb" not in {m["model_name"] for m in Client().list_model_registrations("embedding")}
        r = rest.post("/v1/models/llm/auto-register", json={"model_path": str(folder), "model_familly": "qwen"})
        assert r.status_code == 400 and "'model_familly'" in r.json()["detail"], r.text
        r = rest.post("/v1/audio/speech", json={"model": "tts", "input": "hi", "instructions": "whisper it"})
        assert r.status_code == 400 and "instructions" in r.json()["detail"], r.text
        r = rest.post("/v1/audio/speech", json={"model": "tts", "input": "hi", "stream_format": "sse"})
        assert r.status_code == 400 and "stream_format" in r.json()["detail"], r.text
        assert tts.calls == []
        r = rest.post("/v1/audio/speech", json={"model": "tts", "input": "hi", "instructions": "",
                                                 "stream_format": "audio", "response_format": "wav"})
        assert r.status_code == 200 and r.content == b"RIFF0000WAVE"
        r = rest.post("/v1/model_registrations/embedding", json={"model": doc, "worker_ip": None})
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------------
# Launch options that run hub code or name paths get the same guards as trust_remote_code / model_path
# ------------------------------------------------------------------------------------------------
def _deep(value, levels: int) -> dict:
    for _ in range(levels):
        value = {"x": value}
    return value


def test_rest_launch_guards_hub_kernels_option_paths_and_deep_nesting(tmp_path):
    from fastapi.testclient import TestClient
    from server_fakes import FakeClient

    from xinference_nb.server.app import create_app

    client = FakeClient()
    base = {"model_name": "m", "model_type": "LLM", "model_engine": "transformers"}
    with TestClient(create_app(client, allowed_roots=[str(tmp_path)]), base_url="http://127.0.0.1") as rest:
        for opts in ({"attn_implementation": "kernels-community/flash-attn"},
                     {"model_kwargs": {"attn_implementation": "org/kernel:v1"}}):
            r = rest.post("/v1/models", json={**base, **opts})
            assert r.status_code == 403 and "attn_implementation" in r.json()["detail"], r.text
        for opts, field in (({"model_kwargs": {"offload_folder": "/etc/xnb"}}, "model_kwargs.offload_folder"),
                            ({"model_kwargs": {"cache_dir": "/var/tmp/x"}}, "model_kwargs.cache_dir"),
                            ({"tokenizer_kwargs": {"vocab_file": "/etc/passwd"}}, "tokenizer_kwargs.vocab_file")):
            r = rest.post("/v1/models", json={**base, **opts})
            assert r.status_code == 403 and field in r.json()["detail"], r.text
        r = rest.post("/v1/models", json={**base, "model_kwargs": _deep({"trust_remote_code": True}, 20)})
        assert r.status_code == 400 and "nested" in r.json()["detail"], r.text
        assert client.launched == []
        ok = {"attn_implementation": "sdpa", "model_kwargs": {"offload_folder": str(tmp_path / "off")}}
        r = rest.post("/v1/models", json={**base, **ok})
        assert r.status_code == 200, r.text
        assert client.launched[-1]["model_kwargs"] == {"offload_folder": str(tmp_path / "off")}
    with TestClient(create_app(FakeClient(), allowed_roots=[str(tmp_path)], allow_trust_remote_code=True),
                    base_url="http://127.0.0.1") as rest:
        r = rest.post("/v1/models", json={**base, "attn_implementation": "kernels-community/flash-attn"})
        assert r.status_code == 200, r.text
