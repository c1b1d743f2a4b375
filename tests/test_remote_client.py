"""RemoteClient: the Client methods over HTTP, same results and same exception classes as in-kernel."""
from __future__ import annotations

import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from server_fakes import FakeClient, LiveModels, embedding_doc, fake_vector, wait_until  # noqa: E402

from xinference_nb.errors import InferenceError, ModelNotFound, RegistryError, SpecError, XinfError  # noqa: E402
from xinference_nb.client.remote import (RemoteClient, RemoteEmbeddingHandle, RemoteError, RemoteLLMHandle,  # noqa: E402
                                  RemoteRerankHandle, ServerUnreachable)
from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.runner import start_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    client = FakeClient()
    running = start_in_thread(create_app(client, allowed_roots=[tmp_path_factory.getbasetemp()]), port=0)
    running.client = client
    yield running
    running.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_llama_dir, minilm_dir, cross_encoder_dir):
    pytest.importorskip("sentence_transformers")
    mp = pytest.MonkeyPatch()
    home = str(tmp_path_factory.mktemp("remote_home"))
    mp.setenv("XINFERENCE_NB_HOME", home)
    models = LiveModels("rc", tiny_llama_dir, minilm_dir, cross_encoder_dir)
    running = start_in_thread(create_app(allowed_roots=[str(tiny_llama_dir.parent), str(minilm_dir),
                                                        str(cross_encoder_dir.parent)]), port=0)
    running.models = models
    running.home = home  # where the models are registered
    yield running
    running.stop()
    models.close()
    mp.undo()



# ------------------------------------------------------------------------------------------------
# Against fake models: method shapes and error mapping
# ------------------------------------------------------------------------------------------------
def test_models_and_handles(fake):
    rc = RemoteClient(fake.url)
    assert repr(rc) == f"Client({fake.url!r})"
    models = rc.list_models()
    assert {"emb", "rr", "llm"} <= set(models) and models["emb"]["model_type"] == "embedding"
    assert rc.describe_model("llm")["model_type"] == "LLM"
    emb = rc.get_model("emb")
    assert isinstance(emb, RemoteEmbeddingHandle)
    out = emb.create_embedding(["a", "b"])
    assert [d["embedding"] for d in out["data"]] == [pytest.approx(fake_vector("a")), pytest.approx(fake_vector("b"))]
    rr = rc.get_model("rr")
    assert isinstance(rr, RemoteRerankHandle)
    res = rr.rerank(["a b", "c"], "a", top_n=1, return_documents=True)
    assert len(res["results"]) == 1 and res["results"][0]["document"] == {"text": "a b"}
    llm = rc.get_model("llm")
    assert isinstance(llm, RemoteLLMHandle)
    assert llm.generate("abc")["choices"][0]["text"] == "cba"
    assert llm.chat("hi", generate_config={"max_tokens": 2})["choices"][0]["message"]["content"] == "w0 w1 "
    chunks = list(llm.chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 3, "stream": True}))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["w0 ", "w1 ", "w2 "]
    chunks = list(llm.generate("x", generate_config={"max_tokens": 2, "stream": True}))
    assert [c["choices"][0]["text"] for c in chunks] == ["w0 ", "w1 "]
    assert rc.get_launch_model_progress("emb") == {"progress": 1.0}
    uid = rc.launch_model("made-up", model_type="embedding", model_uid="tmp-emb")
    assert uid == "tmp-emb" and "tmp-emb" in rc.list_models()
    rc.terminate_model("tmp-emb")
    assert "tmp-emb" not in rc.list_models()
    uid = rc.launch_model("bg", model_type="embedding", wait_ready=False)  # launches in the background
    assert uid.startswith("bg-")
    assert wait_until(lambda: uid in rc.list_models())
    rc.terminate_model(uid)


def test_errors_come_back_as_our_classes(fake):
    rc = RemoteClient(fake.url)
    with pytest.raises(ModelNotFound, match="Model not found in the model list, uid: nope") as err:
        rc.describe_model("nope")
    assert err.value.status_code == 400
    with pytest.raises(ModelNotFound):
        rc.get_model("nope")
    with pytest.raises(ModelNotFound):
        rc.terminate_model("nope")
    with pytest.raises(InferenceError, match="bogus"):
        rc.get_model("llm").chat("hi", generate_config={"bogus": 1})
    with pytest.raises(InferenceError):  # streaming errors are raised before the first chunk
        rc.get_model("llm").chat("hi", generate_config={"bogus": 1, "stream": True})
    with pytest.raises(SpecError) as spec_err:
        rc.register_model("LLM", {"version": 2, "model_name": "bad name!", "model_specs": "nope"})
    assert spec_err.value.issues and all(i.message for i in spec_err.value.issues)
    assert any("model_specs" in i.path for i in spec_err.value.issues)
    with pytest.raises(ModelNotFound):
        rc.get_model_registration("LLM", "no-such-model")
    with pytest.raises(RemoteError) as refused:
        rc.register_model("flexible", {"version": 2, "model_name": "f", "launcher": "os.system"})
    assert refused.value.status_code == 403
    assert isinstance(refused.value, XinfError)


def test_registrations_roundtrip(fake, tmp_path):
    rc = RemoteClient(fake.url)
    folder = tmp_path / "emb"
    folder.mkdir()
    doc = embedding_doc(folder, "remote-reg")
    rc.register_model("embedding", doc)
    assert any(r["model_name"] == "remote-reg" for r in rc.list_model_registrations("embedding"))
    assert rc.get_model_registration("embedding", "remote-reg")["dimensions"] == 384
    with pytest.raises(RegistryError, match="already registered"):
        rc.register_model("embedding", json.dumps(doc))
    rc.register_model("embedding", dict(doc, dimensions=128), overwrite=True)
    assert rc.get_model_registration("embedding", "remote-reg")["dimensions"] == 128
    detailed = rc.list_model_registrations("embedding", detailed=True)
    assert any(r.get("dimensions") == 128 for r in detailed)
    rc.unregister_model("embedding", "remote-reg")
    with pytest.raises(ModelNotFound):
        rc.unregister_model("embedding", "remote-reg")


def test_closing_a_stream_stops_generation(fake):
    llm_model = fake.client.models["llm"]
    before = llm_model.closed
    rc = RemoteClient(fake.url)
    llm_model.delay = 0.005
    try:
        it = rc.get_model("llm").generate("x", generate_config={"max_tokens": 100000, "stream": True})
        next(it)
        next(it)
        it.close()
        assert wait_until(lambda: llm_model.closed == before + 1)
        assert wait_until(lambda: fake.app.state.streams_open == 0)
    finally:
        llm_model.delay = 0.0


def test_api_key_and_unreachable():
    running = start_in_thread(create_app(FakeClient(), api_key="k1"), port=0)
    try:
        assert RemoteClient(running.url, api_key="k1").list_models()
        with pytest.raises(RemoteError) as err:
            RemoteClient(running.url).list_models()
        assert err.value.status_code == 401 and "api_key" in str(err.value)
        with pytest.raises(RemoteError):
            RemoteClient(running.url, api_key="wrong").get_model("emb")
    finally:
        running.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable, match="xinf serve"):
        RemoteClient(f"http://127.0.0.1:{port}").list_models()


def test_endpoint_from_environment(monkeypatch, fake):
    monkeypatch.setenv("XINFERENCE_NB_ENDPOINT", fake.url.replace("http://", ""))
    assert RemoteClient().endpoint == fake.url
    assert "emb" in RemoteClient().list_models()


# ------------------------------------------------------------------------------------------------
# Against real tiny models: the same results as the in-kernel Client
# ------------------------------------------------------------------------------------------------
def test_remote_matches_in_kernel(live, monkeypatch):
    monkeypatch.setenv("XINFERENCE_NB_HOME", live.home)
    import numpy as np

    from xinference_nb.client import Client

    local, rc = Client(), RemoteClient(live.url)
    uids = live.models.uids
    msgs = [{"role": "user", "content": "hello"}]
    cfg = {"max_tokens": 5, "temperature": 0}
    assert rc.get_model(uids["LLM"]).chat(msgs, generate_config=cfg)["choices"][0]["message"]["content"] == \
        local.get_model(uids["LLM"]).chat(msgs, generate_config=cfg)["choices"][0]["message"]["content"]
    remote_stream = list(rc.get_model(uids["LLM"]).chat(msgs, generate_config=dict(cfg, stream=True)))
    local_stream = list(local.get_model(uids["LLM"]).chat(msgs, generate_config=dict(cfg, stream=True)))
    assert [c["choices"][0]["delta"] for c in remote_stream] == [c["choices"][0]["delta"] for c in local_stream]
    assert remote_stream[-1]["usage"] == local_stream[-1]["usage"]

    texts = ["one sentence", "another one"]
    r = rc.get_model(uids["embedding"]).create_embedding(texts)
    l_ = local.get_model(uids["embedding"]).create_embedding(texts)
    np.testing.assert_allclose([d["embedding"] for d in r["data"]], [d["embedding"] for d in l_["data"]], atol=1e-5)

    docs = ["a dog runs", "stocks fell", "a puppy plays"]
    r = rc.get_model(uids["rerank"]).rerank(docs, "dogs", return_documents=True)
    l_ = local.get_model(uids["rerank"]).rerank(docs, "dogs", return_documents=True)
    assert [x["index"] for x in r["results"]] == [x["index"] for x in l_["results"]]

    engines = rc.query_engine_by_model_name("rc-tiny-llama")
    assert engines == local.query_engine_by_model_name("rc-tiny-llama")
    assert rc.describe_model(uids["LLM"])["model_name"] == "rc-tiny-llama"
    assert set(rc.list_models()) == set(local.list_models())


def test_launch_llm_without_engine_like_in_kernel(live, monkeypatch):
    monkeypatch.setenv("XINFERENCE_NB_HOME", live.home)
    rc = RemoteClient(live.url)
    uid = rc.launch_model("rc-tiny-llama", model_uid="rc-llm-2", n_gpu=None)
    try:
        assert rc.describe_model(uid)["model_engine"] == "transformers"
        out = rc.get_model(uid).generate("hi", generate_config={"max_tokens": 2})
        assert out["usage"]["completion_tokens"] <= 2
    finally:
        rc.terminate_model(uid)


def test_remote_launch_shows_the_servers_progress(live, monkeypatch, capfd):
    """The same tqdm bar as an in-kernel launch, fed by polling the server's progress route."""
    monkeypatch.setenv("XINFERENCE_NB_HOME", live.home)
    from xinference_nb import progress
    from xinference_nb.client import remote

    seen = []
    real_call = progress.LaunchProgress.__call__

    def record(self, step, fraction):
        seen.append((step, fraction))
        return real_call(self, step, fraction)

    monkeypatch.setattr(progress.LaunchProgress, "__call__", record)
    monkeypatch.setattr(remote._ProgressFollower, "interval_s", 0.005)
    # a warm tiny model loads in milliseconds: hold the real load a moment so the poller sees it run
    from xinference_nb.engines import transformers_llm

    real_load = transformers_llm.load

    def slow_load(request):
        time.sleep(0.3)
        return real_load(request)

    monkeypatch.setattr(transformers_llm, "load", slow_load)
    rc = RemoteClient(live.url)
    uid = rc.launch_model("rc-tiny-llama", model_engine="transformers", model_uid="rc-progress", n_gpu=None,
                          show_progress=True)
    try:
        steps = [step for step, _ in seen]
        assert steps[0] == "launching on the server" and steps[-1] == "ready" and seen[-1][1] == 1.0
        assert "loading on the server" in steps, seen  # a sample of the server's own progress
        assert f"rc-progress @ {live.url}" in capfd.readouterr().err
    finally:
        rc.terminate_model(uid)
    seen.clear()
    uid = rc.launch_model("rc-tiny-llama", model_engine="transformers", model_uid="rc-quiet", n_gpu=None,
                          show_progress=False)
    rc.terminate_model(uid)
    # (the in-process server's own launch still reports to its manager; the client shows no bar)
    assert not [step for step, _ in seen if step.endswith("on the server")]


def test_parse_on_server(live, tiny_llama_dir):
    doc = RemoteClient(live.url).parse_model(str(tiny_llama_dir), "my-tiny")
    assert doc["model_specs"][0]["model_format"] == "pytorch" and doc["context_length"] > 0
