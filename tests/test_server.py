"""The REST server: the HTTP layer against instant fake models (batching, SSE, dropped streams, auth,
limits, refusals, the bad-request matrix, schemathesis), then the real xinference-client and openai
packages against the server serving real tiny models from this process's manager."""
from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from server_fakes import FakeClient, fake_vector  # noqa: E402

from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.runner import ServerError, serve, start_in_thread, stop_server  # noqa: E402
from xinference_nb.server.security import ServerSettings  # noqa: E402


@pytest.fixture
def fake_server(tmp_path):
    client = FakeClient(embed_delay=0.02)
    settings = ServerSettings(allowed_roots=[tmp_path], batch_wait_ms=5)
    running = start_in_thread(create_app(client, settings=settings), port=0)
    running.client = client
    yield running
    running.stop()


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------
def test_concurrent_embeddings_are_batched_and_split_correctly(fake_server):
    texts = [f"text number {i}" for i in range(64)]

    async def run():
        async with httpx.AsyncClient(base_url=fake_server.url, timeout=30) as ac:
            return await asyncio.gather(*[ac.post("/v1/embeddings", json={"model": "emb", "input": t})
                                          for t in texts])

    responses = asyncio.run(run())
    for text, resp in zip(texts, responses):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["object"] == "list" and body["model"] == "emb"
        assert [d["index"] for d in body["data"]] == [0]
        assert body["data"][0]["embedding"] == pytest.approx(fake_vector(text))
        assert body["usage"]["prompt_tokens"] >= 1
    calls = fake_server.client.models["emb"].calls
    assert sum(calls) == 64
    assert len(calls) < 64 / 4, f"requests were not batched: {calls}"


def test_batched_multi_input_requests_keep_their_order(fake_server):
    groups = [[f"g{g} item {i}" for i in range(g % 5 + 1)] for g in range(20)]

    async def run():
        async with httpx.AsyncClient(base_url=fake_server.url, timeout=30) as ac:
            return await asyncio.gather(*[ac.post("/v1/embeddings", json={"model": "emb", "input": g})
                                          for g in groups])

    for group, resp in zip(groups, asyncio.run(run())):
        data = resp.json()["data"]
        assert [d["index"] for d in data] == list(range(len(group)))
        assert [d["embedding"] for d in data] == [pytest.approx(fake_vector(t)) for t in group]


def test_one_bad_request_in_a_batch_fails_alone(fake_server):
    inputs = ["fine a", "BOOM", "fine b", "fine c"]

    async def run():
        async with httpx.AsyncClient(base_url=fake_server.url, timeout=30) as ac:
            return await asyncio.gather(*[ac.post("/v1/embeddings", json={"model": "emb", "input": t})
                                          for t in inputs])

    codes = [r.status_code for r in asyncio.run(run())]
    assert codes == [200, 400, 200, 200]


def test_concurrent_rerank_requests_are_batched(fake_server):
    docs = ["a b c", "b c", "c d", "x y"]

    async def run():
        async with httpx.AsyncClient(base_url=fake_server.url, timeout=30) as ac:
            return await asyncio.gather(*[ac.post("/v1/rerank", json={
                "model": "rr", "query": "b c", "documents": docs, "top_n": 2, "return_documents": True})
                for _ in range(16)])

    responses = asyncio.run(run())
    expected = fake_server.client.models["rr"].rerank(docs, "b c", top_n=2, return_documents=True)["results"]
    for resp in responses:
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert [r["index"] for r in results] == [r["index"] for r in expected]
        assert [r["document"] for r in results] == [r["document"] for r in expected]
    calls = fake_server.client.models["rr"].calls
    assert len(calls) < 16 + 1 and max(calls) > len(docs)  # several requests went through one call


# ------------------------------------------------------------------------------------------------
# Streaming
# ------------------------------------------------------------------------------------------------
def test_sse_stream_format(fake_server):
    with httpx.Client(base_url=fake_server.url) as c:
        with c.stream("POST", "/v1/chat/completions", json={
                "model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                "stream": True}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            text = resp.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "w0 w1 w2 "


def test_dropped_stream_cancels_generation_and_frees_its_slot(fake_server):
    llm = fake_server.client.models["llm"]
    app = fake_server.app
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={
                "model": "llm", "prompt": "x", "max_tokens": 100000, "stream": True, "delay": 0.005}) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(3)]
            assert got[0].startswith("data: ")
    # the client is gone: the generator is closed, long before its 100000 chunks
    assert _wait(lambda: llm.closed == 1), "generation was not stopped"
    assert llm.produced < 5000
    assert _wait(lambda: app.state.streams_open == 0)
    assert app.state.streams_cancelled >= 1
    sem = app.state.llm_limits["llm"]
    assert _wait(lambda: sem._value == app.state.settings.llm_concurrency), "slot not freed"
    # and the model serves the next request
    with httpx.Client(base_url=fake_server.url) as c:
        r = c.post("/v1/completions", json={"model": "llm", "prompt": "abc"})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "cba"


def test_slow_stream_reader_does_not_block_other_clients(fake_server):
    with httpx.Client(base_url=fake_server.url, timeout=30) as slow, httpx.Client(base_url=fake_server.url) as fast:
        with slow.stream("POST", "/v1/chat/completions", json={
                "model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
                "stream": True}) as resp:
            next(resp.iter_lines())  # the slow client reads one line and waits
            t0 = time.monotonic()
            for _ in range(10):
                r = fast.post("/v1/chat/completions", json={"model": "llm", "messages": [
                    {"role": "user", "content": "hi"}], "max_tokens": 2})
                assert r.status_code == 200
                r = fast.post("/v1/embeddings", json={"model": "emb", "input": "x"})
                assert r.status_code == 200
            assert time.monotonic() - t0 < 5


# ------------------------------------------------------------------------------------------------
# Hardening
# ------------------------------------------------------------------------------------------------
def test_api_key_required_on_every_route(tmp_path):
    running = start_in_thread(create_app(FakeClient(), api_key="s3cret"), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            assert c.get("/v1/cluster/auth").json() == {"auth": True}
            for method, path in [("GET", "/v1/models"), ("GET", "/openapi.json"), ("POST", "/v1/embeddings"),
                                 ("GET", "/v1/model_registrations/LLM"), ("GET", "/nowhere")]:
                r = c.request(method, path, json={"model": "emb", "input": "x"})
                assert r.status_code == 401, (method, path)
                assert "detail" in r.json()
            r = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = c.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200
            r = c.post("/v1/embeddings", json={"model": "emb", "input": "x"},
                       headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == 200
    finally:
        running.stop()


def test_body_size_limit(tmp_path):
    running = start_in_thread(create_app(FakeClient(), max_body_bytes=1000), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            r = c.post("/v1/embeddings", json={"model": "emb", "input": "x" * 5000})
            assert r.status_code == 413 and "limit" in r.json()["detail"]

            def chunks():  # no Content-Length: counted while reading
                for _ in range(10):
                    yield b"x" * 500

            r = c.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413
            assert c.post("/v1/embeddings", json={"model": "emb", "input": "x"}).status_code == 200
    finally:
        running.stop()


def test_refusals_flexible_trust_remote_code_and_paths(fake_server, tmp_path):
    inside = tmp_path / "models" / "m"
    inside.mkdir(parents=True)
    with httpx.Client(base_url=fake_server.url) as c:
        flex = {"model_name": "f1", "launcher": "os.system", "launcher_args": "{}", "version": 2}
        r = c.post("/v1/model_registrations/flexible", json={"model": json.dumps(flex), "persist": False})
        assert r.status_code == 403 and "flexible" in r.json()["detail"]
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "trust_remote_code": True})
        assert r.status_code == 403 and "trust_remote_code" in r.json()["detail"]
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding",
                                       "model_path": "/etc"})
        assert r.status_code == 403 and "allowed model roots" in r.json()["detail"]
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding",
                                       "model_path": str(inside / ".." / ".." / ".." / "..")})
        assert r.status_code == 403
        doc = {"version": 2, "model_name": "e1", "dimensions": 8, "max_tokens": 8, "language": ["en"],
               "model_specs": [{"model_format": "pytorch", "model_uri": "file:///etc", "quantization": "none"}]}
        r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
        assert r.status_code == 403 and "model_specs[0].model_uri" in r.json()["detail"]
        r = c.post("/v1/models/llm/auto-register", json={"model_path": "/etc", "model_family": "x"})
        assert r.status_code == 403
        r = c.post("/v1/models", json={"model_name": "x", "model_type": "embedding", "model_path": str(inside)})
        assert r.status_code == 200, r.text
    # the options lift the refusals
    running = start_in_thread(create_app(fake_server.client, allow_flexible=True, allow_trust_remote_code=True,
                                         allow_any_path=True), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            r = c.post("/v1/models", json={"model_name": "y", "model_type": "embedding", "trust_remote_code": True,
                                           "model_path": "/etc"})
            assert r.status_code == 200, r.text
            flex = {"model_name": "f2", "launcher": "xinference_nb.engines.flexible.nothing", "version": 2}
            r = c.post("/v1/model_registrations/flexible", json={"model": json.dumps(flex), "persist": False})
            assert r.status_code in (200, 400), r.text  # no longer refused (400 only if the document is invalid)
            assert r.status_code == 200 or "refused" not in r.json()["detail"]
    finally:
        running.stop()


def test_binds_localhost_by_default_and_port_in_use_is_a_clear_error():
    server = serve(port=0, client=FakeClient())
    try:
        assert server.host == "127.0.0.1"
        with pytest.raises(ServerError, match="already running"):
            serve(port=0, client=FakeClient())
        with pytest.raises(ServerError) as err:
            start_in_thread(create_app(FakeClient()), port=server.port)
        msg = str(err.value)
        assert "already in use" in msg and "stop_server()" in msg and f"port={server.port + 1}" in msg
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/v1/models").status_code == 200
    finally:
        stop_server()
    assert not server.running
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", server.port))


def test_lazy_public_serve():
    import xinference_nb

    assert xinference_nb.serve is serve and xinference_nb.stop_server is stop_server


def test_base64_embeddings(fake_server):
    with httpx.Client(base_url=fake_server.url) as c:
        r = c.post("/v1/embeddings", json={"model": "emb", "input": ["a", "b"], "encoding_format": "base64"})
    data = r.json()["data"]
    for d, t in zip(data, ["a", "b"]):
        raw = base64.b64decode(d["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(fake_vector(t), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad-request matrix: each a 4xx with {"detail": str}, never a 500
# ------------------------------------------------------------------------------------------------
CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "hi"}]
BAD_REQUESTS = [
    # (method, path, body (dict -> JSON, bytes -> raw), expected status)
    ("POST", CHAT, b"{not json", 400),
    ("POST", CHAT, b"", 400),
    ("POST", CHAT, b"[1, 2]", 400),
    ("POST", CHAT, b"\xff\xfe garbage", 400),
    ("POST", CHAT, {"messages": MSGS}, 400),                                  # no model
    ("POST", CHAT, {"model": "llm"}, 400),                                   # no messages
    ("POST", CHAT, {"model": "llm", "messages": "hi"}, 400),                 # wrong type
    ("POST", CHAT, {"model": "llm", "messages": [1, 2]}, 400),
    ("POST", CHAT, {"model": 5, "messages": MSGS}, 400),
    ("POST", CHAT, {"model": "nope", "messages": MSGS}, 400),                # unknown uid
    ("POST", CHAT, {"model": "emb", "messages": MSGS}, 400),                 # wrong model type
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "max_tokens": "many"}, 400),
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "stream": "yes please"}, 400),
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "n": 3}, 400),         # unsupported OpenAI option
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "bogus_option": 1}, 400),
    ("POST", "/v1/completions", {"model": "llm"}, 400),
    ("POST", "/v1/completions", {"model": "llm", "prompt": ["a", "b"]}, 400),
    ("POST", "/v1/completions", {"model": "rr", "prompt": "a"}, 400),
    ("POST", "/v1/embeddings", {"model": "emb"}, 400),
    ("POST", "/v1/embeddings", {"model": "emb", "input": []}, 400),
    ("POST", "/v1/embeddings", {"model": "emb", "input": {"x": object.__name__}, "encoding_format": "hex"}, 400),
    ("POST", "/v1/embeddings", {"model": "llm", "input": "x"}, 400),
    ("POST", "/v1/embeddings", {"model": "gone", "input": "x"}, 400),
    ("POST", "/v1/rerank", {"model": "rr", "query": "q"}, 400),
    ("POST", "/v1/rerank", {"model": "rr", "query": "q", "documents": []}, 400),
    ("POST", "/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "top_n": -1}, 400),
    ("POST", "/v1/rerank", {"model": "rr", "query": "q", "documents": ["a"], "kwargs": "{bad"}, 400),
    ("POST", "/v1/rerank", {"model": "emb", "query": "q", "documents": ["a"]}, 400),
    ("POST", "/v1/images/generations", {"model": "llm", "prompt": "cat"}, 400),
    ("POST", "/v1/images/generations", {"model": "llm", "prompt": "cat", "n": 0}, 400),
    ("POST", "/v1/audio/speech", {"model": "llm", "input": "hi"}, 400),
    ("POST", "/v1/audio/speech", b"{oops", 400),
    ("POST", "/v1/audio/speech", {"model": "llm"}, 400),
    ("POST", "/v1/audio/transcriptions", {"model": "llm"}, 400),             # not multipart
    ("POST", "/v1/flexible/infers", {"model": "emb"}, 400),
    ("POST", "/v1/flexible/infers", {"model": "x", "args": "notalist"}, 400),
    ("POST", "/v1/models", {}, 400),
    ("POST", "/v1/models", {"model_name": "x"}, 400),                        # LLM without model_engine
    ("POST", "/v1/models", {"model_name": "x", "model_type": "spaceship"}, 400),
    ("POST", "/v1/models", {"model_name": ["x"], "model_type": "embedding"}, 400),
    ("GET", "/v1/models/unknown-uid", None, 400),
    ("DELETE", "/v1/models/unknown-uid", None, 400),
    ("GET", "/v1/models/unknown-uid/progress", None, 400),
    ("POST", "/v1/models/unknown-uid/cancel", None, 400),
    ("POST", "/v1/model_registrations/LLM", {"model": "{bad json"}, 400),
    ("POST", "/v1/model_registrations/LLM", {"model": "{}"}, 400),
    ("POST", "/v1/model_registrations/LLM", {"persist": True}, 400),
    ("POST", "/v1/model_registrations/LLM", {"model": 42}, 400),
    ("POST", "/v1/model_registrations/spaceship", {"model": "{}"}, 400),
    ("GET", "/v1/model_registrations/LLM/no-such-model", None, 400),
    ("DELETE", "/v1/model_registrations/LLM/no-such-model", None, 400),
    ("GET", "/v1/model_registrations/spaceship", None, 400),
    ("GET", "/v1/engines/no-such-model", None, 400),
    ("POST", "/v1/models/llm/auto-register", {}, 400),
    ("GET", "/v1/no/such/route", None, 404),
    ("PUT", "/v1/models", {}, 405),
]


@pytest.mark.parametrize("method,path,body,status", BAD_REQUESTS,
                         ids=[f"{i}-{m}-{p}" for i, (m, p, _b, _s) in enumerate(BAD_REQUESTS)])
def test_bad_request_matrix(fake_server, method, path, body, status):
    kwargs = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    with httpx.Client(base_url=fake_server.url) as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail


def test_bad_request_matrix_is_big_enough():
    assert len(BAD_REQUESTS) >= 30


def test_unknown_uid_phrasing(fake_server):
    with httpx.Client(base_url=fake_server.url) as c:
        detail = c.get("/v1/models/abc").json()["detail"]
    assert "Model not found in the model list, uid: abc" in detail


# ------------------------------------------------------------------------------------------------
# Schemathesis: no 500 anywhere in /openapi.json
# ------------------------------------------------------------------------------------------------
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings as hsettings  # noqa: E402


@pytest.fixture
def fuzz_schema(tmp_path):
    app = create_app(FakeClient(), allowed_roots=[tmp_path])
    return schemathesis.openapi.from_asgi("/openapi.json", app)


fuzz = schemathesis.pytest.from_fixture("fuzz_schema")


@fuzz.parametrize()
@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz_finds_no_500(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json().get("detail"), str)
