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

from server_fakes import FakeClient, fake_vector, wait_until  # noqa: E402

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


@pytest.fixture(scope="module")
def shared_fake_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("roots")
    running = start_in_thread(create_app(FakeClient(), allowed_roots=[root]), port=0)
    yield running
    running.stop()



# ------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------
def post_concurrently(url: str, path: str, bodies: list) -> list[tuple[int, dict]]:
    """(status, JSON) for each body, all sent at once (aiohttp: a client fast enough not to be the
    bottleneck; httpx.AsyncClient spends ~15 ms per request with 64 in flight)."""
    aiohttp = pytest.importorskip("aiohttp")

    async def run():
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=len(bodies))) as session:
            async def one(body):
                async with session.post(path, json=body) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*[one(b) for b in bodies])

    return asyncio.run(run())


def test_concurrent_embeddings_are_batched_and_split_correctly(fake_server):
    texts = [f"text number {i}" for i in range(64)]
    responses = post_concurrently(fake_server.url, "/v1/embeddings", [{"model": "emb", "input": t} for t in texts])
    for text, (status, body) in zip(texts, responses):
        assert status == 200, body
        assert body["object"] == "list" and body["model"] == "emb"
        assert [d["index"] for d in body["data"]] == [0]
        assert body["data"][0]["embedding"] == pytest.approx(fake_vector(text))
        assert body["usage"]["prompt_tokens"] >= 1
    calls = fake_server.client.models["emb"].calls
    assert sum(calls) == 64
    assert len(calls) < 64 / 4, f"requests were not batched: {calls}"
    assert fake_server.app.state.embed_batcher.stats.largest > 1


def test_batched_multi_input_requests_keep_their_order(fake_server):
    groups = [[f"g{g} item {i}" for i in range(g % 5 + 1)] for g in range(20)]
    responses = post_concurrently(fake_server.url, "/v1/embeddings", [{"model": "emb", "input": g} for g in groups])
    for group, (status, body) in zip(groups, responses):
        assert status == 200, body
        data = body["data"]
        assert [d["index"] for d in data] == list(range(len(group)))
        assert [d["embedding"] for d in data] == [pytest.approx(fake_vector(t)) for t in group]


def test_requests_with_different_options_share_a_batch_but_not_a_call(fake_server):
    bodies = [{"model": "emb", "input": f"t{i}", **({"dimensions": 4} if i % 2 else {})} for i in range(16)]
    responses = post_concurrently(fake_server.url, "/v1/embeddings", bodies)
    assert all(status == 200 for status, _ in responses)
    assert sum(fake_server.client.models["emb"].calls) == 16


def test_one_bad_request_in_a_batch_fails_alone(fake_server):
    inputs = ["fine a", "BOOM", "fine b", "fine c"]
    responses = post_concurrently(fake_server.url, "/v1/embeddings", [{"model": "emb", "input": t} for t in inputs])
    assert [status for status, _ in responses] == [200, 400, 200, 200]
    assert "BOOM" in responses[1][1]["detail"]


def test_concurrent_rerank_requests_are_batched(fake_server):
    docs = ["a b c", "b c", "c d", "x y"]
    responses = post_concurrently(fake_server.url, "/v1/rerank", [
        {"model": "rr", "query": "b c", "documents": docs, "top_n": 2, "return_documents": True}] * 16)
    expected = fake_server.client.models["rr"].rerank(docs, "b c", top_n=2, return_documents=True)["results"]
    for status, body in responses:
        assert status == 200, body
        results = body["results"]
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
    llm.delay = 0.005
    app = fake_server.app
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={
                "model": "llm", "prompt": "x", "max_tokens": 100000, "stream": True}) as resp:
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(3)]
            assert got[0].startswith("data: ")
    # the client is gone: the generator is closed, long before its 100000 chunks
    assert wait_until(lambda: llm.closed == 1), "generation was not stopped"
    assert llm.produced < 5000
    assert wait_until(lambda: app.state.streams_open == 0)
    assert app.state.streams_cancelled >= 1
    sem = app.state.llm_limits["llm"]
    assert wait_until(lambda: sem._value == app.state.settings.llm_concurrency), "slot not freed"
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


def test_llm_requests_beyond_the_limit_queue_first_come_first_served():
    client = FakeClient()
    llm_model = client.models["llm"]
    llm_model.delay = 0.03
    llm_model.hold = threading.Event()   # request 0 keeps the slot until the other three wait in line
    app = create_app(client, llm_concurrency=1)
    running = start_in_thread(app, port=0)
    order: list[int] = []
    produced_at_start: list[int] = []
    started = threading.Event()

    def go(i: int) -> None:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            with c.stream("POST", "/v1/completions", json={"model": "llm", "prompt": "x", "max_tokens": 10,
                                                           "stream": True}) as r:
                lines = r.iter_lines()
                first = next(lines)
                started.set()
                produced_at_start.append(llm_model.produced)
                assert first.startswith("data: ")
                assert [line for line in lines if line][-1] == "data: [DONE]"
        order.append(i)

    try:
        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        threads[0].start()
        assert started.wait(10)  # request 0 holds the model's only slot
        for i in range(1, 4):
            threads[i].start()  # each waits in line before the next one arrives
            assert wait_until(lambda: len(app.state.llm_limits["llm"]._waiters or ()) == i, 10)
        llm_model.hold.set()
        for t in threads:
            t.join(30)
        assert order == [0, 1, 2, 3]
        # one generation at a time: each stream started after the previous one had produced all it had
        assert produced_at_start == sorted(produced_at_start)
    finally:
        running.stop()


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
        xinference_client = pytest.importorskip("xinference_client")
        assert "emb" in xinference_client.RESTfulClient(running.url, api_key="s3cret").list_models()
        with pytest.raises(RuntimeError, match="API key"):
            xinference_client.RESTfulClient(running.url).list_models()
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
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "n": 17}, 400),        # over the n limit (1-16)
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "n": "3"}, 400),       # n is an integer
    ("POST", CHAT, {"model": "llm", "messages": MSGS, "best_of": 3}, 400),   # unsupported OpenAI option
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
def test_bad_request_matrix(shared_fake_server, method, path, body, status):
    kwargs = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    with httpx.Client(base_url=shared_fake_server.url) as c:
        r = c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail


def test_bad_request_matrix_is_big_enough():
    assert len(BAD_REQUESTS) >= 30



def test_a_chat_body_is_checked_once_at_the_route(tmp_path):
    """/v1/chat/completions and /v1/completions turn their body into a checked chat.GenerateConfig and
    hand the model that: a bad value or an unknown key is a 400 in generate_config's words before any
    handle runs (even one that checks nothing itself)."""
    from server_fakes import FakeLLM

    class Recording(FakeLLM):
        def __init__(self):
            super().__init__()
            self.configs: list = []

        def _cfg(self, generate_config):
            self.configs.append(generate_config)
            return super()._cfg(generate_config)

    client = FakeClient()
    client.models["llm"] = llm = Recording()
    running = start_in_thread(create_app(client, allowed_roots=[tmp_path]), port=0)
    try:
        with httpx.Client(base_url=running.url) as c:
            r = c.post("/v1/completions", json={"model": "llm", "prompt": "x", "temperature": -1})
            assert r.status_code == 400, r.text
            assert r.json()["detail"].startswith("generate_config['temperature'] must be a finite number >= 0")
            r = c.post(CHAT, json={"model": "llm", "messages": MSGS, "bogus": 1})
            assert r.status_code == 400
            assert r.json()["detail"].startswith("unknown generate_config key 'bogus'; the valid keys are max_tokens")
            assert llm.configs == []     # the refused requests never reached the model
            r = c.post(CHAT, json={"model": "llm", "messages": MSGS, "max_completion_tokens": 3, "temperature": 0.5})
            assert r.status_code == 200, r.text
        from xinference_nb.chat import GenerateConfig

        (got,) = llm.configs
        assert isinstance(got, GenerateConfig)
        assert dict(got) == {"stream": False, "max_tokens": 3, "temperature": 0.5}
    finally:
        running.stop()

def test_unknown_uid_phrasing(fake_server):
    with httpx.Client(base_url=fake_server.url) as c:
        detail = c.get("/v1/models/abc").json()["detail"]
    assert "Model not found in the model list, uid: abc" in detail


# ------------------------------------------------------------------------------------------------
# Schemathesis: no 500 anywhere in /openapi.json
# ------------------------------------------------------------------------------------------------
def test_openapi_fuzz_finds_no_500(tmp_path):
    """Schemathesis generates requests for every operation of /openapi.json; each is sent as generated
    and again with ``model`` set to each running fake model (to get past the uid check)."""
    pytest.importorskip("hypothesis")
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))  # its caches go to the test's tmp dir, not the repo
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings as hsettings

    # schemathesis's ASGI client sends "Host: testserver": named, as the Host rule answers only
    # loopback names without an API key
    app = create_app(FakeClient(), allowed_roots=[tmp_path], allowed_hosts=["testserver"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        codes = seen.setdefault(f"{op.method.upper()} {op.path}", {})

        @given(case=op.as_strategy())
        @hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            variants = [None]
            if isinstance(case.body, dict) and "model" in case.body:
                variants += ["llm", "emb", "rr"]
            for model in variants:
                if model is not None:
                    case.body = dict(case.body, model=model)
                response = case.call()
                codes[response.status_code] = codes.get(response.status_code, 0) + 1
                assert response.status_code < 500, (case.method, case.path, case.body, response.text)
                if response.status_code >= 400:
                    assert isinstance(response.json().get("detail"), str)

        check()
    assert len(seen) >= 18
    assert any(200 in c for c in seen.values())


# ================================================================================================
# End to end: the real xinference-client and openai packages against the server serving real
# tiny models launched in this process's manager.
# ================================================================================================
@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_llama_dir, minilm_dir, cross_encoder_dir):
    pytest.importorskip("sentence_transformers")
    from server_fakes import LiveModels

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("live_home")))
    models = LiveModels("srv", tiny_llama_dir, minilm_dir, cross_encoder_dir)
    roots = [tiny_llama_dir.parent, minilm_dir, cross_encoder_dir.parent]
    server = serve(port=0, allowed_roots=[str(r) for r in roots])
    server.models = models
    server.dirs = {"llm": tiny_llama_dir, "minilm": minilm_dir, "rr": cross_encoder_dir}
    yield server
    stop_server()
    models.close()
    mp.undo()


def test_xinference_client_models_chat_generate(live):
    from xinference_client import RESTfulClient

    xc = RESTfulClient(live.url)
    uids = live.models.uids
    models = xc.list_models()
    assert {uids["LLM"], uids["embedding"], uids["rerank"]} <= set(models)
    assert models[uids["LLM"]]["model_type"] == "LLM"
    assert xc.describe_model(uids["LLM"])["model_engine"] == "transformers"

    llm = xc.get_model(uids["LLM"])
    out = llm.chat([{"role": "user", "content": "hello"}], generate_config={"max_tokens": 5, "temperature": 0})
    assert out["object"] == "chat.completion" and out["model"] == uids["LLM"]
    assert isinstance(out["choices"][0]["message"]["content"], str)
    assert out["usage"]["completion_tokens"] <= 5
    # the same greedy reply as in the notebook
    local = live.models.client.get_model(uids["LLM"]).chat(
        [{"role": "user", "content": "hello"}], generate_config={"max_tokens": 5, "temperature": 0})
    assert out["choices"][0]["message"]["content"] == local["choices"][0]["message"]["content"]

    chunks = list(llm.chat([{"role": "user", "content": "hello"}],
                           generate_config={"max_tokens": 5, "temperature": 0, "stream": True}))
    assert chunks[0]["object"] == "chat.completion.chunk"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    local_chunks = live.models.client.get_model(uids["LLM"]).chat(
        [{"role": "user", "content": "hello"}], generate_config={"max_tokens": 5, "temperature": 0, "stream": True})
    assert text == "".join(c["choices"][0]["delta"].get("content") or "" for c in local_chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    comp = llm.generate("Once upon", generate_config={"max_tokens": 4, "temperature": 0})
    assert comp["object"] == "text_completion" and isinstance(comp["choices"][0]["text"], str)
    stream = list(llm.generate("Once upon", generate_config={"max_tokens": 4, "temperature": 0, "stream": True}))
    local_stream = live.models.client.get_model(uids["LLM"]).generate(
        "Once upon", generate_config={"max_tokens": 4, "temperature": 0, "stream": True})
    assert "".join(c["choices"][0]["text"] for c in stream) == "".join(c["choices"][0]["text"] for c in local_stream)


def test_xinference_client_embeddings_and_rerank(live):
    import numpy as np
    from xinference_client import RESTfulClient

    xc = RESTfulClient(live.url)
    uids = live.models.uids
    texts = ["The quick brown fox.", "A cat sits on a chair."]
    emb = xc.get_model(uids["embedding"]).create_embedding(texts)
    local = live.models.client.get_model(uids["embedding"]).create_embedding(texts)
    assert [d["index"] for d in emb["data"]] == [0, 1] and len(emb["data"][0]["embedding"]) == 384
    np.testing.assert_allclose([d["embedding"] for d in emb["data"]], [d["embedding"] for d in local["data"]],
                               atol=1e-5)
    assert emb["usage"] == local["usage"]

    docs = ["A man is eating food.", "A man is riding a horse.", "The girl is carrying a baby."]
    rr = xc.get_model(uids["rerank"]).rerank(docs, "A man is eating pasta.", top_n=2, return_documents=True)
    local_rr = live.models.client.get_model(uids["rerank"]).rerank(docs, "A man is eating pasta.", top_n=2,
                                                                   return_documents=True)
    assert [r["index"] for r in rr["results"]] == [r["index"] for r in local_rr["results"]]
    assert [r["relevance_score"] for r in rr["results"]] == pytest.approx(
        [r["relevance_score"] for r in local_rr["results"]], abs=1e-5)
    assert rr["results"][0]["document"] == local_rr["results"][0]["document"]


def test_xinference_client_register_launch_terminate_shares_the_kernel(live, tmp_path):
    from server_fakes import embedding_doc
    from xinference_client import RESTfulClient

    from xinference_nb.client import Client
    from xinference_nb.errors import ModelNotFound

    xc = RESTfulClient(live.url)
    doc = embedding_doc(live.dirs["minilm"], "rest-minilm")
    xc.register_model("embedding", json.dumps(doc), persist=False)
    names = [r["model_name"] for r in xc.list_model_registrations("embedding")]
    assert "rest-minilm" in names
    assert xc.get_model_registration("embedding", "rest-minilm")["dimensions"] == 384

    uid = xc.launch_model("rest-minilm", model_type="embedding", model_uid="rest-emb", n_gpu=None)
    assert uid == "rest-emb"
    # launched over REST → usable in the notebook
    local = Client().get_model(uid).create_embedding("hi")
    assert len(local["data"][0]["embedding"]) == 384
    assert xc.get_launch_model_progress(uid)["progress"] == 1.0
    xc.terminate_model(uid)
    with pytest.raises(ModelNotFound):
        Client().describe_model(uid)
    with pytest.raises(RuntimeError, match="Model not found in the model list"):
        xc.describe_model(uid)
    xc.unregister_model("embedding", "rest-minilm")
    assert "rest-minilm" not in [r["model_name"] for r in xc.list_model_registrations("embedding")]


def test_launch_in_notebook_is_served_at_once(live, minilm_dir):
    from server_fakes import embedding_doc
    from xinference_client import RESTfulClient

    from xinference_nb.client import Client

    client = Client()
    client.register_model("embedding", embedding_doc(minilm_dir, "nb-minilm"), overwrite=True)
    uid = client.launch_model("nb-minilm", model_type="embedding", model_uid="nb-emb", n_gpu=None)
    try:
        xc = RESTfulClient(live.url)
        assert uid in xc.list_models()
        assert len(xc.get_model(uid).create_embedding("hi")["data"]) == 1
    finally:
        client.terminate_model(uid)


def test_openai_package(live):
    import numpy as np
    from openai import BadRequestError, OpenAI

    oa = OpenAI(base_url=live.url + "/v1", api_key="not-needed", max_retries=0)
    uids = live.models.uids
    res = oa.chat.completions.create(model=uids["LLM"], messages=[{"role": "user", "content": "hi"}],
                                     max_tokens=4, temperature=0)
    assert res.choices[0].message.role == "assistant" and isinstance(res.choices[0].message.content, str)
    assert res.usage.completion_tokens <= 4
    pieces = []
    finish = None
    for chunk in oa.chat.completions.create(model=uids["LLM"], messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4, temperature=0, stream=True):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) and finish in ("stop", "length")

    comp = oa.completions.create(model=uids["LLM"], prompt="Hello", max_tokens=3, temperature=0)
    assert isinstance(comp.choices[0].text, str)

    emb = oa.embeddings.create(model=uids["embedding"], input=["hello world", "bye"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
    b64 = oa.embeddings.create(model=uids["embedding"], input="hello world", encoding_format="base64")
    vec = b64.data[0].embedding
    if isinstance(vec, str):  # the openai package hands back what it did not ask for itself
        vec = np.frombuffer(base64.b64decode(vec), dtype="<f4")
    np.testing.assert_allclose(vec, emb.data[0].embedding, atol=1e-5)

    with pytest.raises(BadRequestError) as err:
        oa.embeddings.create(model=uids["LLM"], input="x")
    assert err.value.status_code == 400
    with pytest.raises(BadRequestError):
        oa.chat.completions.create(model="no-such-uid", messages=[{"role": "user", "content": "x"}])


def test_auto_register_route_parses_the_model(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        r = c.post("/v1/models/llm/auto-register", json={"model_path": str(live.dirs["llm"]),
                                                          "model_family": "my-tiny"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["context_length"] > 0 and doc["model_specs"][0]["model_format"] == "pytorch"
        assert doc["chat_template"] and "chat" in doc["model_ability"]
        r = c.post("/v1/models/llm/auto-register", json={"model_path": str(live.dirs["llm"] / "nope"),
                                                          "model_family": "x"})
        assert r.status_code == 400 and isinstance(r.json()["detail"], str)


def test_dropped_stream_on_a_real_llm_frees_the_model(live):
    uid = live.models.uids["LLM"]
    app = live.app
    with httpx.Client(base_url=live.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json={
                "model": uid, "messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 2000,
                "stream": True}) as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("data: ")
    assert wait_until(lambda: app.state.streams_open == 0, 30)
    sem = app.state.llm_limits[uid]
    assert wait_until(lambda: sem._value == app.state.settings.llm_concurrency, 30)
    assert wait_until(lambda: not live.models.client.describe_model(uid)["busy"], 30)
    with httpx.Client(base_url=live.url, timeout=60) as c:
        r = c.post("/v1/chat/completions", json={"model": uid, "messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": 2})
        assert r.status_code == 200


def test_real_models_bad_requests_are_4xx(live):
    uids = live.models.uids
    cases = [
        ("/v1/embeddings", {"model": uids["embedding"], "input": ["ok", 3]}),
        ("/v1/embeddings", {"model": uids["embedding"], "input": "x", "dimensions": 100000}),
        ("/v1/embeddings", {"model": uids["embedding"], "input": "x", "bogus": 1}),
        ("/v1/rerank", {"model": uids["rerank"], "query": "q", "documents": ["a"], "bogus": True}),
        ("/v1/chat/completions", {"model": uids["LLM"], "messages": [{"role": "user", "content": "x"}],
                                  "temperature": -1}),
        ("/v1/chat/completions", {"model": uids["LLM"], "messages": [{"role": "user", "content": "x"}],
                                  "max_tokens": 0}),
        ("/v1/chat/completions", {"model": uids["LLM"], "messages": [{"role": "user", "content": "x"}],
                                  "top_p": 7, "stream": True}),
        ("/v1/completions", {"model": uids["LLM"], "prompt": "x", "stop": [1, 2]}),
        ("/v1/images/generations", {"model": uids["embedding"], "prompt": "x"}),
        ("/v1/flexible/infers", {"model": uids["rerank"]}),
    ]
    with httpx.Client(base_url=live.url, timeout=60) as c:
        for path, body in cases:
            r = c.post(path, json=body)
            assert 400 <= r.status_code < 500, (path, body, r.text)
            assert isinstance(r.json()["detail"], str)


# ------------------------------------------------------------------------------------------------
# Images and audio over REST (tiny diffusers / VITS / Whisper models)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_images_speech_transcription_over_rest(live, tiny_sd_dir, tiny_vits_dir, tiny_whisper_dir):
    import io
    import wave

    import numpy as np
    from openai import OpenAI
    from xinference_client import RESTfulClient

    from xinference_nb.client import Client

    client = Client()
    docs = {
        "image": {"version": 2, "model_name": "srv-sd", "model_family": "stable_diffusion",
                  "model_uri": str(tiny_sd_dir), "model_ability": ["text2image"],
                  "default_generate_config": {"num_inference_steps": 2}},
        "tts": {"version": 2, "model_name": "srv-vits", "model_family": "MMS", "model_uri": f"file://{tiny_vits_dir}",
                "model_ability": ["text2audio"], "multilingual": False},
        "asr": {"version": 2, "model_name": "srv-whisper", "model_family": "whisper",
                "model_uri": f"file://{tiny_whisper_dir}", "model_ability": ["audio2text"], "multilingual": False},
    }
    uids = {}
    try:
        for key, doc in docs.items():
            mtype = "image" if key == "image" else "audio"
            client.register_model(mtype, doc, overwrite=True)
            uids[key] = client.launch_model(doc["model_name"], model_type=mtype, model_uid=f"srv-{key}", n_gpu=None)
        xc = RESTfulClient(live.url)
        oa = OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0)

        img = xc.get_model(uids["image"]).text_to_image("a red square", n=1, size="64*64", response_format="b64_json")
        png = base64.b64decode(img["data"][0]["b64_json"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img2 = oa.images.generate(model=uids["image"], prompt="a cat", n=1, size="64x64", response_format="b64_json")
        assert base64.b64decode(img2.data[0].b64_json)[:4] == b"\x89PNG"

        wav = xc.get_model(uids["tts"]).speech("hello world", response_format="wav")
        assert wav[:4] == b"RIFF"
        wav2 = oa.audio.speech.create(model=uids["tts"], voice="alloy", input="hello", response_format="wav")
        assert wav2.content[:4] == b"RIFF"

        t = np.arange(16000) / 16000
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
        audio = buf.getvalue()
        out = xc.get_model(uids["asr"]).transcriptions(audio)
        assert isinstance(out["text"], str)
        out2 = oa.audio.transcriptions.create(model=uids["asr"], file=("tone.wav", audio))
        assert isinstance(out2.text, str)
        from xinference_nb.client.remote import RemoteClient

        rc = RemoteClient(live.url)
        assert rc.get_model(uids["asr"]).transcriptions(audio)["text"] == out["text"]
        streamed = b"".join(rc.get_model(uids["tts"]).speech("hello world", response_format="wav", stream=True))
        assert len(streamed) > 44
        assert rc.get_model(uids["image"]).text_to_image("a cat", size="64*64", response_format="b64_json")["data"]
        with httpx.Client(base_url=live.url, timeout=60) as c:
            r = c.post("/v1/audio/transcriptions", data={"model": uids["asr"]},
                       files={"file": ("x.wav", b"not audio at all")})
            assert r.status_code == 400
    finally:
        for uid in uids.values():
            client.terminate_model(uid)


@pytest.mark.slow
def test_serve_inside_a_jupyter_kernel(tmp_path):
    """serve() from a notebook cell: the kernel keeps running cells while the server answers."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in [
        "import httpx, xinference_nb as xnb\nserver = xnb.serve(port=0)",
        "print(httpx.get(server.url + '/v1/models').json()['object'])",
        "print(xnb.Client().list_model_registrations('LLM') == "
        "httpx.get(server.url + '/v1/model_registrations/LLM').json())",
        "xnb.stop_server()\nprint(server.running)",
    ]]
    import os

    env_home = os.environ.get("XINFERENCE_NB_HOME")
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "XINFERENCE_NB_HOME": env_home or str(tmp_path)})
    outputs = ["".join(o.get("text", "") for o in c.get("outputs", [])).strip() for c in nb.cells]
    assert outputs[1:] == ["list", "True", "False"]
