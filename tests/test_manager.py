"""The in-kernel manager: resolution of spec / files / engine / device, errors that leave nothing behind,
uids, terminate, memory estimate and budget, idle TTL, progress and cancel, virtualenv hand-off and the
generic handles."""
from __future__ import annotations

import sys
import time
import types
import warnings

import pytest

from xinference_nb import Client
from xinference_nb import manager as manager_module
from xinference_nb.engines import EngineModel, LoadRequest
from xinference_nb.errors import EngineUnavailable, LaunchError, ModelNotFound
from xinference_nb.client.handles import handle_of
from xinference_nb.manager import ModelManager, get_manager
from xinference_nb.memory import (
    estimate_gguf,
    estimate_hf_llm,
    estimate_model,
    format_bytes,
    parse_bytes,
    read_safetensors_header,
)

from public_api import own_manager


@pytest.fixture
def manager():
    yield from own_manager()


class FakeModel(EngineModel):
    model_type = "LLM"

    def __init__(self, request: LoadRequest):
        self.request = request
        self.closed = False

    def memory_bytes(self):
        return 1000

    def close(self):
        self.closed = True


@pytest.fixture
def fake_loader(monkeypatch):
    """Replace the transformers loader: records each LoadRequest and returns a FakeModel."""
    import xinference_nb.engines.transformers_llm as tl

    calls: list = []

    def load(request):
        request.progress("fake loading", 0.5)
        model = FakeModel(request)
        calls.append(model)
        return model

    monkeypatch.setattr(tl, "load", load)
    return calls


def _register(name, specs, **extra):
    doc = {"version": 2, "model_name": name, "model_family": f"{name}-family", "context_length": 1024,
           "model_lang": ["en"], "model_ability": ["generate"], "model_specs": specs}
    doc.update(extra)
    Client().register_model("LLM", doc)


def _pytorch(path, **kw):
    return dict({"model_format": "pytorch", "model_size_in_billions": "0_01", "quantization": "none",
                 "model_uri": str(path)}, **kw)


def _nothing_left(m: ModelManager):
    assert m.list_models() == {} and m._launching == {}


# ------------------------------------------------------------------ resolution
def test_launch_request_resolution(manager, fake_loader, tiny_llama_dir, tmp_path):
    (tmp_path / "elsewhere-not-used").mkdir()
    _register("reso", [_pytorch(tmp_path / "elsewhere-not-used", model_size_in_billions=1),
                       _pytorch(tiny_llama_dir, model_size_in_billions=2)])
    uid = manager.launch_model("reso", model_size_in_billions=2, model_engine="Transformers", n_gpu=None,
                               trust_remote_code=True, show_progress=False, check_memory=True)
    assert uid == "reso"
    req = fake_loader[-1].request
    assert req.model_path == tiny_llama_dir and req.model_format == "pytorch" and req.quantization == "none"
    assert req.options == {"trust_remote_code": True}       # ours popped, the engine's untouched
    assert req.device.device_map == "cpu" and not req.device.uses_cuda
    assert req.model_spec.model_size_in_billions == 2 and req.model_uid == uid
    desc = manager.describe_model(uid)
    for key in ("model_type", "model_name", "model_engine", "model_format", "model_size_in_billions",
                "quantization", "replica", "address", "memory_bytes", "status"):
        assert key in desc
    assert desc["memory_bytes"] == 1000 and desc["model_engine"] == "transformers" and desc["replica"] == 1
    assert manager.get_launch_model_progress(uid)["progress"] == 1.0
    # model_path (file:// form) overrides the uri; the default uid gets a suffix when taken
    uid2 = manager.launch_model("reso", model_path=f"file://{tiny_llama_dir}", model_size_in_billions=1,
                                show_progress=False)
    assert uid2.startswith("reso-") and fake_loader[-1].request.model_path == tiny_llama_dir
    assert set(manager.list_models()) == {uid, uid2}


def test_launch_errors_leave_nothing(manager, fake_loader, tiny_llama_dir, tmp_path):
    _register("errs", [_pytorch(tiny_llama_dir)])
    cases = [
        (dict(model_path=str(tmp_path / "missing")), LaunchError, "does not exist"),
        (dict(model_path="relative/path"), LaunchError, "relative"),
        (dict(model_engine="vllm"), LaunchError, "llama.cpp, transformers"),
        (dict(quantization="Q4_K_M"), LaunchError, "4-bit, 8-bit, none"),
        (dict(model_engine="llama.cpp"), LaunchError, "engines that can: transformers"),
        (dict(model_format="ggufv2", model_path=str(tiny_llama_dir)), LaunchError, "is a directory"),
        (dict(model_format="gptq"), LaunchError, "model_format choices are pytorch"),
        (dict(model_size_in_billions=7), LaunchError, "choices: 0_01"),
        (dict(replica=2), LaunchError, "replica"),
        (dict(n_gpu=2), LaunchError, "no CUDA GPU"),
    ]
    for kwargs, exc, words in cases:
        if kwargs.get("n_gpu") and manager_module.cuda_available():
            continue
        with pytest.raises(exc, match=words):
            manager.launch_model("errs", show_progress=False, **kwargs)
        _nothing_left(manager)
    with pytest.raises(ModelNotFound, match="errs"):
        manager.launch_model("errs-typo", show_progress=False)
    assert fake_loader == []   # nothing reached the loader


def test_directory_as_gguf_lists_files(manager, tiny_llama_dir, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    _register("dir-gguf", [_pytorch(tiny_llama_dir)])
    with pytest.raises(LaunchError, match=r"is a directory.*tiny-llama-f32\.gguf"):
        manager.launch_model("dir-gguf", model_engine="llama.cpp", model_format="ggufv2",
                             model_path=str(tiny_gguf_file.parent), show_progress=False)
    _nothing_left(manager)
    # a built-in family's file name template that matches no file in the folder
    with pytest.raises(LaunchError, match=r"not found.*holds: tiny-llama-f32\.gguf"):
        manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_format="ggufv2",
                             model_path=str(tiny_gguf_file.parent), show_progress=False)
    _nothing_left(manager)
    # a GGUF file handed to the transformers engine
    with pytest.raises(LaunchError, match="engines that can: llama.cpp"):
        manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(tiny_gguf_file),
                             show_progress=False)
    _nothing_left(manager)


def test_backend_failure_becomes_launch_error(manager, monkeypatch, tiny_llama_dir):
    import xinference_nb.engines.transformers_llm as tl

    def boom(request):
        request.progress("about to fail", 0.3)
        raise RuntimeError("weights are corrupt")

    monkeypatch.setattr(tl, "load", boom)
    with pytest.raises(LaunchError, match="weights are corrupt") as err:
        manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(tiny_llama_dir),
                             show_progress=False)
    assert err.value.__suppress_context__ and isinstance(err.value.original, RuntimeError)
    _nothing_left(manager)


def test_real_failed_load_is_clean(manager, tmp_path):
    pytest.importorskip("transformers")
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "README.md").write_text("hello")
    with pytest.raises(LaunchError, match="no config.json"):
        manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(bad),
                             show_progress=False)
    _nothing_left(manager)


def test_engine_unavailable(manager, monkeypatch, tiny_llama_dir):
    from xinference_nb.engines import Engine

    monkeypatch.setattr(Engine, "available", lambda self: False)
    monkeypatch.setattr(Engine, "missing", lambda self: list(self.requires))
    with pytest.raises(EngineUnavailable, match="pip install"):
        manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(tiny_llama_dir),
                             show_progress=False)
    _nothing_left(manager)


# ------------------------------------------------------------------ uids, terminate, handles
def test_uid_twice_and_terminate(manager, fake_loader, tiny_llama_dir):
    uid = manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="mine",
                               show_progress=False)
    assert uid == "mine"
    with pytest.raises(LaunchError, match="already in use"):
        manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="mine",
                             show_progress=False)
    with pytest.raises(LaunchError, match="model_uid"):
        manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="bad uid!",
                             show_progress=False)
    assert list(manager.list_models()) == ["mine"]
    handle = handle_of(manager, "mine")
    assert handle.model_uid == "mine" and handle.model_type == "LLM"
    manager.terminate_model("mine")
    assert fake_loader[0].closed and manager.list_models() == {}
    with pytest.raises(ModelNotFound, match="terminated"):
        handle.generate("x")
    with pytest.raises(ModelNotFound, match="Model not found in the model list, uid: mine"):
        manager.terminate_model("mine")
    with pytest.raises(ModelNotFound):
        manager.describe_model("mine")
    # the uid is free again
    assert manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="mine",
                                show_progress=False) == "mine"


def test_terminate_frees_memory(manager, tiny_llama_dir):
    pytest.importorskip("transformers")
    import gc
    import weakref

    uid = manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(tiny_llama_dir),
                               show_progress=False)
    assert manager.list_models()[uid]["memory_bytes"] > 0
    torch_model = weakref.ref(manager.engine_model(uid).model)
    handle_of(manager, uid).generate("hi", {"max_tokens": 2})
    manager.terminate_model(uid)
    gc.collect()
    assert torch_model() is None


def test_progress_and_cancel(manager, monkeypatch, tiny_llama_dir):
    import xinference_nb.engines.transformers_llm as tl

    seen = {}

    def load(request):
        request.progress("half way", 0.5)
        seen["progress"] = manager.get_launch_model_progress(request.model_uid)
        manager.cancel_launch_model(request.model_uid)
        request.progress("next step", 0.6)      # raises: cancelled
        raise AssertionError("not reached")

    monkeypatch.setattr(tl, "load", load)
    with pytest.raises(LaunchError, match="cancelled"):
        manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="c", show_progress=True)
    assert seen["progress"] == {"progress": 0.5, "step": "half way"}
    _nothing_left(manager)
    with pytest.raises(ModelNotFound):
        manager.get_launch_model_progress("c")
    with pytest.raises(ModelNotFound):
        manager.cancel_launch_model("c")


def test_virtualenv_branch(manager, fake_loader, monkeypatch, tiny_llama_dir):
    calls = []
    fake = types.ModuleType("xinference_nb.isolation.virtualenv")

    def load_in_virtualenv(engine, request):
        calls.append((engine.name, request.model_uid))
        return FakeModel(request)

    fake.load_in_virtualenv = load_in_virtualenv
    import xinference_nb.isolation.virtualenv as real

    fake.venv_packages = real.venv_packages   # the package check stays real
    monkeypatch.setitem(sys.modules, "xinference_nb.isolation.virtualenv", fake)
    _register("venv-llm", [_pytorch(tiny_llama_dir)], virtualenv={"packages": ["some-pkg==1.0"]})
    manager.launch_model("venv-llm", model_uid="v1", show_progress=False)
    assert calls == [("transformers", "v1")] and fake_loader == []
    manager.launch_model("venv-llm", model_uid="v2", enable_virtual_env=False, show_progress=False)
    assert len(calls) == 1 and len(fake_loader) == 1
    _register("no-venv", [_pytorch(tiny_llama_dir)])
    manager.launch_model("no-venv", show_progress=False)
    assert len(calls) == 1 and len(fake_loader) == 2


class Recorder(EngineModel):
    """Records calls; used behind every generic handle."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return {"method": name}

        return method


def _install(m, uid, model_type, model):
    from xinference_nb.engines import DevicePlan, engines_for
    from xinference_nb.manager import RunningModel
    from xinference_nb.spec import load_spec

    docs = {"flexible": {"version": 2, "model_name": "f", "model_uri": "/tmp", "launcher": "a.b"}}
    spec = load_spec(model_type, docs.get(model_type)) if model_type in docs else None
    m._models[uid] = RunningModel(model_uid=uid, model_type=model_type, model_name=uid,
                                  engine=engines_for(model_type)[0], spec=spec, model_spec=None, model_format=None,
                                  model_size_in_billions=None, quantization=None, model_path=None,
                                  device=DevicePlan(), options={}, model=model)


def test_generic_handles_forward(manager):
    from xinference_nb.client.handles import AudioHandle, EmbeddingHandle, FlexibleHandle, ImageHandle, RerankHandle

    rec = Recorder()
    for model_type in ("embedding", "rerank", "image", "audio", "flexible"):
        _install(manager, model_type, model_type, rec)
    emb = handle_of(manager, "embedding")
    assert isinstance(emb, EmbeddingHandle) and emb.model_type == "embedding"
    assert emb.create_embedding(["a"], dimensions=3) == {"method": "create_embedding"}
    assert rec.calls[-1] == ("create_embedding", (["a"],), {"dimensions": 3})
    emb.convert_ids_to_tokens([1, 2])
    assert rec.calls[-1] == ("convert_ids_to_tokens", ([1, 2],), {})
    rr = handle_of(manager, "rerank")
    assert isinstance(rr, RerankHandle)
    rr.rerank(["d1", "d2"], "q", top_n=1, return_documents=True)
    assert rec.calls[-1] == ("rerank", (["d1", "d2"], "q"), {"top_n": 1, "max_chunks_per_doc": None,
                                                              "return_documents": True, "return_len": None})
    img = handle_of(manager, "image")
    assert isinstance(img, ImageHandle)
    img.text_to_image("cat", n=2)
    assert rec.calls[-1] == ("text_to_image", ("cat",), {"n": 2, "size": "1024*1024", "response_format": "url"})
    img.image_to_image(b"img", "prompt", n=1)
    assert rec.calls[-1] == ("image_to_image", (b"img", "prompt"), {"n": 1})
    img.inpainting(b"img", b"mask", "p")
    assert rec.calls[-1][0] == "inpainting"
    audio = handle_of(manager, "audio")
    assert isinstance(audio, AudioHandle)
    audio.speech("hello", voice="v")
    assert rec.calls[-1] == ("speech", ("hello",), {"voice": "v", "response_format": "mp3", "speed": 1.0,
                                                     "stream": False})
    audio.transcriptions(b"wav", language="en")
    assert rec.calls[-1] == ("transcriptions", (b"wav",), {"language": "en", "prompt": None,
                                                            "response_format": "json", "temperature": 0,
                                                            "timestamp_granularities": None})
    audio.translations(b"wav")
    assert rec.calls[-1][0] == "translations"
    flex = handle_of(manager, "flexible")
    assert isinstance(flex, FlexibleHandle)
    flex.infer(1, x=2)
    assert rec.calls[-1] == ("infer", (1,), {"x": 2})
    # every call marks the model as used
    before = manager._models["flexible"].last_used
    time.sleep(0.01)
    flex.infer()
    assert manager._models["flexible"].last_used > before
    del manager._models["flexible"]
    manager._terminated.add("flexible")
    with pytest.raises(ModelNotFound, match="terminated"):
        flex.infer()
    manager._models.clear()


# ------------------------------------------------------------------ memory
def test_memory_estimates(tiny_llama_dir, tiny_gguf_file):
    import json

    header = read_safetensors_header(tiny_llama_dir / "model.safetensors")
    params = 0
    for name, info in header.items():
        if name != "__metadata__":
            n = 1
            for d in info["shape"]:
                n *= d
            params += n
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    none = estimate_hf_llm(tiny_llama_dir, "none", 1024)
    assert none.parameters == params and none.weights_bytes == params * 4       # float32 config
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert none.kv_cache_bytes == 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 1024 * 4
    four, eight = estimate_hf_llm(tiny_llama_dir, "4-bit", 1024), estimate_hf_llm(tiny_llama_dir, "8-bit", 1024)
    assert four.weights_bytes < eight.weights_bytes < none.weights_bytes
    # context capped by the model's max_position_embeddings
    assert estimate_hf_llm(tiny_llama_dir, None, 10 ** 6).kv_cache_bytes == \
        estimate_hf_llm(tiny_llama_dir, None, cfg["max_position_embeddings"]).kv_cache_bytes
    g = estimate_gguf(tiny_gguf_file, 512)
    assert g.weights_bytes == tiny_gguf_file.stat().st_size and g.kv_cache_bytes > 0
    assert estimate_model(tiny_gguf_file, "LLM", "ggufv2", None, 512).total_bytes == g.total_bytes
    assert estimate_model(tiny_llama_dir, "embedding").weights_bytes == (tiny_llama_dir / "model.safetensors").stat().st_size
    assert estimate_model(None, "LLM") is None
    assert parse_bytes("8GiB") == 8 * 2 ** 30 and parse_bytes("1.5 GB") == 1_500_000_000 and parse_bytes(10) == 10
    with pytest.raises(ValueError, match="8GiB"):
        parse_bytes("lots")
    assert format_bytes(3 * 2 ** 20) == "3.0 MiB"


def test_estimate_follows_the_launch_dtype(manager, fake_loader, tiny_llama_dir):
    fp32 = estimate_hf_llm(tiny_llama_dir, "none", 1024)
    bf16 = estimate_hf_llm(tiny_llama_dir, "none", 1024, dtype="bfloat16")
    assert bf16.weights_bytes * 2 == fp32.weights_bytes and bf16.kv_cache_bytes * 2 == fp32.kv_cache_bytes
    assert estimate_hf_llm(tiny_llama_dir, "none", 1024, dtype="auto").total_bytes == fp32.total_bytes
    uid = manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), torch_dtype="torch.float16",
                               context_length=1024, show_progress=False)
    assert manager.describe_model(uid)["memory_estimate_bytes"] == \
        estimate_hf_llm(tiny_llama_dir, "none", 1024, dtype="float16").total_bytes


def test_refuses_when_it_cannot_fit(manager, fake_loader, monkeypatch, tiny_llama_dir):
    monkeypatch.setattr(manager_module, "free_memory", lambda gpu_ids=None: (1000, "RAM"))
    with pytest.raises(LaunchError, match=r"needs about .* only 1000 B of RAM is free.*check_memory=False"):
        manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), show_progress=False)
    _nothing_left(manager)
    uid = manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), check_memory=False,
                               show_progress=False)
    assert manager.describe_model(uid)["memory_estimate_bytes"] > 1000


def test_budget_evicts_least_recently_used_idle(manager, fake_loader, tiny_llama_dir):
    est = estimate_model(tiny_llama_dir, "LLM", "pytorch", "none", 2048).total_bytes
    # room for one estimate plus the measured 1000 bytes of each fake, not for two estimates
    manager.set_memory_budget(est + 1500)
    manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="a", show_progress=False)
    manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="b", show_progress=False)
    with pytest.warns(UserWarning, match="terminated the least recently used idle model.*a"):
        manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="c", show_progress=False)
    assert set(manager.list_models()) == {"b", "c"}
    # a busy model is never evicted; "c" is older-used than "b" now
    handle_of(manager, "b")
    with manager.use_model("c"):
        with pytest.warns(UserWarning, match="idle model.*b"):
            manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="d",
                                 show_progress=False)
    assert set(manager.list_models()) == {"c", "d"}
    manager.set_memory_budget(1000)
    with pytest.raises(LaunchError, match="memory budget"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with manager.use_model("c"), manager.use_model("d"):
                manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="e",
                                     show_progress=False)
    assert "e" not in manager.list_models()
    with pytest.raises(LaunchError, match="memory size"):
        manager.set_memory_budget("a lot")


def test_idle_ttl(manager, fake_loader, tiny_llama_dir):
    manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="idle", show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager.set_idle_ttl(0.2)
        deadline = time.time() + 10
        while "idle" in manager._models and time.time() < deadline:   # the reaper thread's work
            time.sleep(0.05)
        assert manager.list_models() == {}
        manager.set_idle_ttl(None)
        manager._reaper.join(timeout=10)
    assert fake_loader[0].closed


# ------------------------------------------------------------------ client and queries
def test_client_delegates_to_process_manager(fake_loader, tiny_llama_dir):
    client = Client()
    uid = client.launch_model(model_name="qwen2.5-instruct", model_path=str(tiny_llama_dir), model_uid="cl",
                              enable_thinking=False, show_progress=False)
    try:
        assert uid in get_manager().list_models() and uid in client.list_models()
        assert fake_loader[-1].request.options == {"enable_thinking": False}
        assert client.describe_model(uid)["model_name"] == "qwen2.5-instruct"
        assert client.get_launch_model_progress(uid)["progress"] == 1.0
        assert client.get_model(uid).model_uid == uid
        with pytest.raises(LaunchError, match="n_worker"):
            client.launch_model(model_name="qwen2.5-instruct", n_worker=2)
    finally:
        client.terminate_model(uid)
    assert uid not in client.list_models()
    engines = client.query_engine_by_model_name("qwen2.5-instruct")
    assert set(engines) == {"transformers", "llama.cpp"}
    row = engines["transformers"][0]
    assert row["model_format"] == "pytorch" and {"none", "4-bit", "8-bit"} <= set(row["quantizations"])
    assert all(r["model_format"] == "ggufv2" for r in engines["llama.cpp"])


def test_launch_shows_progress(manager, fake_loader, tiny_llama_dir, capsys):
    manager.launch_model("qwen2.5-instruct", model_path=str(tiny_llama_dir), show_progress=True)
    err = capsys.readouterr().err
    assert "qwen2.5-instruct" in err and "%" in err


def test_device_plan_from_n_gpu_and_gpu_idx(monkeypatch):
    plan = ModelManager._device_plan
    assert plan(None, None).device_map == "cpu" and plan(None, None).n_gpu_layers == 0
    assert plan(0, None).gpu_ids == []
    with pytest.raises(LaunchError, match="n_gpu"):
        plan("two", None)
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(manager_module, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    auto = plan("auto", None)
    assert auto.gpu_ids == [0, 1] and auto.device_map == "auto" and auto.n_gpu_layers == -1 and auto.uses_cuda
    one = plan(1, None)
    assert one.gpu_ids == [0] and one.device_map == {"": "cuda:0"} and one.device == "cuda:0"
    picked = plan("auto", 1)
    assert picked.gpu_ids == [1] and picked.device_map == {"": "cuda:1"}
    with pytest.raises(LaunchError, match="not visible"):
        plan("auto", [5])
    with pytest.raises(LaunchError, match="only 2 GPU"):
        plan(3, None)
    with pytest.raises(LaunchError, match="CPU only"):
        plan(None, [0])


def test_model_path_hf_cache_folder(manager, fake_loader, tiny_llama_dir, tmp_path):
    cache = tmp_path / "models--Org--Tiny"
    snapshot = cache / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(tiny_llama_dir, target_is_directory=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("abc123")
    manager.launch_model("qwen2.5-instruct", model_path=str(cache), show_progress=False)
    assert fake_loader[-1].request.model_path == snapshot


def test_estimate_takes_the_bnb_names_the_engine_takes(tiny_llama_dir):
    """The memory estimate and the transformers engine read one list of on-the-fly bitsandbytes names
    (metadata.quant.BNB_QUANTIZATIONS): a spelling the engine refuses ("nf4", "int4", ...) is not
    estimated as 4-bit, and one it takes (any case, spaces around) is."""
    from xinference_nb.engines.transformers_llm import _bnb_config

    none, four = estimate_hf_llm(tiny_llama_dir, "none", 1024), estimate_hf_llm(tiny_llama_dir, "4-bit", 1024)
    for refused in ("nf4", "int4", "4bit", "fp4", "int8", "8bit"):
        with pytest.raises(LaunchError, match="use one of none, 4-bit, 8-bit"):
            _bnb_config(refused, {}, "pytorch")
        assert estimate_hf_llm(tiny_llama_dir, refused, 1024).total_bytes == none.total_bytes
    assert _bnb_config(" 4-Bit ", {}, "pytorch").load_in_4bit
    assert estimate_hf_llm(tiny_llama_dir, " 4-Bit ", 1024).total_bytes == four.total_bytes < none.total_bytes


def test_estimate_reads_the_layer_count_the_parameter_count_reads(tmp_path):
    """memory's KV cache and metadata.estimate read config.json's layer count one way (metadata.hf
    layer_count: the first of LAYER_KEYS holding a positive integer; a boolean is no count)."""
    import json

    from xinference_nb.metadata.estimate import estimate_parameters

    cfg = {"num_hidden_layers": True, "n_layer": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
           "hidden_size": 8, "vocab_size": 16, "max_position_embeddings": 64}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert estimate_hf_llm(tmp_path, None, 64).kv_cache_bytes == 2 * 2 * 2 * 4 * 64 * 4   # 2 layers, float32
    assert estimate_parameters(cfg) == estimate_parameters(dict(cfg, num_hidden_layers=2))
