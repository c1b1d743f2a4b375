"""LoRA adapters as Xinference spells them (issue 13 item 2): ``peft_model_config={"lora_list": [...],
"image_lora_load_kwargs": ..., "image_lora_fuse_kwargs": ...}`` at launch, ``generate_config={"lora_name":
...}`` per request. Tiny real models and tiny real adapters (tests/tiny_adapters.py): an adapter's output
equals peft's merged model's, the base equals the plain model, batched requests with different adapters
each equal their solo output, bad adapters fail the launch and free it; llama.cpp GGUF LoRAs; a
diffusers LoRA fused into the tiny Stable Diffusion; REST, `xinf launch -lm`, `%xinf launch -lm`, the
LaunchForm field and the memory estimate. The last section keeps what red-teaming found: adapter
configs and files the engines must refuse before loading anything, hostile paths, pickles and
lora_name values over REST, races between adapters and terminate during adapter requests."""
from __future__ import annotations

import gc
import importlib.util
import json
import weakref

import pytest
from test_llm_batching import _concurrently  # noqa: E402 - threads, results in order, errors re-raised

from xinference_nb.client import Client
from xinference_nb.errors import InferenceError, LaunchError, LaunchOptionError
from xinference_nb.client.handles import handle_of
from xinference_nb.engines.options import parse_launch_options

from public_api import launch_by_path, shared_manager

pytest.importorskip("peft")
pytest.importorskip("transformers")

PROMPTS = ["Once upon a time", "The cat", "Numbers: 1 2 3", "Hello"]
GREEDY = {"temperature": 0, "max_tokens": 20}


def _peft(**loras) -> dict:
    return {"lora_list": [{"lora_name": name, "local_path": str(path)} for name, path in loras.items()]}


def _text(result) -> str:
    return result["choices"][0]["text"]


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("lora-")


def _launch(manager, path, uid, **kw):
    return launch_by_path(manager, path, model_uid=f"lora-{uid}", n_gpu=None, **kw)


@pytest.fixture(scope="module")
def hf(manager, tiny_llama_dir, tiny_lora_dirs, tiny_lora_merged_dir):
    """Handles: "lora" (adapters a and b, batched), "serial" (the same, max_num_seqs=1), "plain" (the base
    model) and "merged" (adapter a merged into the weights by peft)."""
    loras = _peft(**tiny_lora_dirs)
    uids = {"lora": _launch(manager, tiny_llama_dir, "hf", peft_model_config=loras),
            "serial": _launch(manager, tiny_llama_dir, "hf-serial", peft_model_config=loras, max_num_seqs=1),
            "plain": _launch(manager, tiny_llama_dir, "hf-plain"),
            "merged": _launch(manager, tiny_lora_merged_dir, "hf-merged")}
    return {k: handle_of(manager, uid) for k, uid in uids.items()}


# ------------------------------------------------------------------ the option's shape
@pytest.mark.parametrize("value,words", [
    ([], "must be an object"),
    ({"lora": []}, "unknown key 'lora'"),
    ({"lora_list": "a"}, "lora_list must be a list"),
    ({"lora_list": [{"lora_name": "a"}]}, "lora_list[0].local_path is missing"),
    ({"lora_list": [{"lora_name": "a.b", "local_path": "/x"}]}, "lora_list[0].lora_name"),
    ({"lora_list": [{"lora_name": "__base__", "local_path": "/x"}]}, "__base__"),
    ({"lora_list": [{"lora_name": "a", "local_path": "/x", "scale": 1}]}, "unknown key 'scale'"),
    ({"lora_list": [{"lora_name": "a", "local_path": "/x"}, {"lora_name": "a", "local_path": "/y"}]}, "twice"),
    ({"image_lora_fuse_kwargs": {"lora_scale": 0.5}}, "give lora_list too"),
    ({"lora_list": [{"lora_name": "a", "local_path": "/x"}], "image_lora_load_kwargs": {"adapter_name": "z"}},
     "adapter_name is each adapter's lora_name"),
    ({"lora_list": [{"lora_name": "a", "local_path": "/x"}], "image_lora_fuse_kwargs": {"lora_scale": "1"}},
     "must be a number"),
    ({"lora_list": [{"lora_name": "a", "local_path": "/x"}], "image_lora_load_kwargs": {"weight_name": "../k.bin"}},
     "inside local_path"),   # over REST it would read outside the allowed roots
    ({"lora_list": [{"lora_name": "a", "local_path": "/x"}], "image_lora_fuse_kwargs": {"adapter_names": ["b"]}},
     "not in lora_list"),
])
def test_peft_model_config_shape_is_checked_before_anything(value, words):
    with pytest.raises(LaunchOptionError) as err:
        parse_launch_options({"peft_model_config": value})
    assert err.value.fields == ["peft_model_config"] and words in str(err.value), str(err.value)


def test_engines_without_adapters_and_image_keys_on_an_llm_are_refused(manager, tiny_llama_dir, tiny_lora_dirs,
                                                                       minilm_dir):
    from server_fakes import embedding_doc

    client = Client()
    running = set(client.list_models())
    client.register_model("embedding", embedding_doc(minilm_dir, "lora-emb"), overwrite=True)
    with pytest.raises(LaunchOptionError, match="not supported by the sentence_transformers engine"):
        client.launch_model("lora-emb", model_type="embedding", n_gpu=None, show_progress=False,
                            peft_model_config=_peft(a=tiny_lora_dirs["a"]))
    with pytest.raises(LaunchOptionError, match="image_lora_fuse_kwargs applies to image models only"):
        _launch(manager, tiny_llama_dir, "bad", peft_model_config={**_peft(a=tiny_lora_dirs["a"]),
                                                                  "image_lora_fuse_kwargs": {"lora_scale": 0.5}})
    assert set(client.list_models()) == running


# ------------------------------------------------------------------ transformers
def test_adapter_equals_peft_merged_model_and_base_equals_plain(hf):
    for prompt in PROMPTS:
        plain = _text(hf["plain"].generate(prompt, GREEDY))
        merged = _text(hf["merged"].generate(prompt, GREEDY))
        assert _text(hf["lora"].generate(prompt, GREEDY)) == plain                   # no lora_name: the base
        assert _text(hf["lora"].generate(prompt, {**GREEDY, "lora_name": "a"})) == merged
        assert _text(hf["serial"].generate(prompt, {**GREEDY, "lora_name": "a"})) == merged   # model.generate path
        assert _text(hf["serial"].generate(prompt, GREEDY)) == plain
    changed = [p for p in PROMPTS if _text(hf["plain"].generate(p, GREEDY)) != _text(hf["merged"].generate(p, GREEDY))]
    assert changed, "adapter a must change the output"
    b = [_text(hf["lora"].generate(p, {**GREEDY, "lora_name": "b"})) for p in PROMPTS]
    assert b != [_text(hf["lora"].generate(p, {**GREEDY, "lora_name": "a"})) for p in PROMPTS]
    # chat and streaming take it too
    msgs = [{"role": "user", "content": "Tell me a story"}]
    want = hf["merged"].chat(msgs, generate_config=GREEDY)["choices"][0]["message"]["content"]
    assert hf["lora"].chat(msgs, generate_config={**GREEDY, "lora_name": "a"})["choices"][0]["message"]["content"] == want

    def streamed(handle, cfg):
        chunks = handle.chat(msgs, generate_config={**GREEDY, **cfg, "stream": True})
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)

    assert streamed(hf["serial"], {"lora_name": "a"}) == streamed(hf["merged"], {})
    assert streamed(hf["lora"], {"lora_name": "a"}) == streamed(hf["merged"], {})


def test_adapter_logits_equal_peft_merged_logits(manager, hf, tiny_lora_merged_dir):
    import torch
    from transformers import AutoModelForCausalLM

    running = manager.running_model(hf["lora"].model_uid)
    assert [a["lora_name"] for a in running.options["peft_model_config"]["lora_list"]] == ["a", "b"]
    peft_model = manager.engine_model(hf["lora"].model_uid).model      # what peft_model_config built
    tok = manager.engine_model(hf["lora"].model_uid).tokenizer
    ids = tok("Once upon a time there was", return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(str(tiny_lora_merged_dir), dtype="float32").eval()
    with torch.inference_mode():
        want = merged(input_ids=ids).logits
        got = peft_model(input_ids=ids, adapter_names=["a"]).logits
        base = peft_model(input_ids=ids, adapter_names=["__base__"]).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(base, want, atol=1e-2)


def test_concurrent_requests_with_different_adapters_each_equal_their_solo_output(manager, hf):
    jobs = [(p, lora) for p in PROMPTS[:3] for lora in ("a", "b", None)]
    cfg = lambda lora: {**GREEDY, **({"lora_name": lora} if lora else {})}  # noqa: E731
    solo = [_text(hf["serial"].generate(p, cfg(lora))) for p, lora in jobs]
    model = manager.engine_model(hf["lora"].model_uid).model
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        together = _concurrently(lambda i, job: _text(hf["lora"].generate(job[0], cfg(job[1]))), jobs)
    finally:
        hook.remove()
    assert together == solo
    assert len(calls) < len(jobs) * GREEDY["max_tokens"] / 2, len(calls)   # they shared forward passes
    # and the one-request-at-a-time model serializes adapters instead of mixing them
    assert _concurrently(lambda i, job: _text(hf["serial"].generate(job[0], cfg(job[1]))), jobs) == solo


def test_unknown_lora_name_lists_the_loaded_ones(hf):
    with pytest.raises(InferenceError, match=r"'c' is not an adapter of this model; it has 'a', 'b'"):
        hf["lora"].generate("x", {"lora_name": "c"})
    with pytest.raises(InferenceError, match="'c' is not an adapter"):
        hf["lora"].chat([{"role": "user", "content": "x"}], generate_config={"lora_name": "c", "stream": True})
    with pytest.raises(InferenceError, match="launched without LoRA adapters"):
        hf["plain"].generate("x", {"lora_name": "a"})
    with pytest.raises(InferenceError, match="lora_name"):
        hf["lora"].generate("x", {"lora_name": 3})


def test_bad_adapter_fails_the_launch_and_frees_the_base(manager, monkeypatch, tiny_llama_dir, tiny_lora_dirs,
                                                         tmp_path):
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from tiny_adapters import build_peft_lora

    other = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    foreign = build_peft_lora(None, tmp_path / "foreign", seed=5, base=other)
    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):   # the real loader, remembering what it loaded
        model = real(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(recording))
    running = set(manager.list_models())
    cases = [(tmp_path / "missing", "does not exist", False),
             (tiny_llama_dir, "no adapter_config.json", False),          # a model folder, not an adapter
             (foreign, "does not load on this model", True)]             # an adapter of another base model
    for path, words, base_loaded in cases:
        loaded.clear()
        with pytest.raises(LaunchError, match=words) as err:
            _launch(manager, tiny_llama_dir, "bad", peft_model_config=_peft(a=tiny_lora_dirs["a"], z=path))
        assert "'z'" in str(err.value)
        assert bool(loaded) == base_loaded           # bad paths fail before the base loads
        del err
        gc.collect()
        assert all(ref() is None for ref in loaded)  # the base model (and the adapter a on it) is freed
    assert set(manager.list_models()) == running


def test_memory_estimate_counts_the_adapters(manager, hf, tiny_llama_dir, tiny_lora_dirs):
    from xinference_nb.memory import estimate_model
    from xinference_nb.metadata.weights import weight_files_bytes

    adapters = [str(p) for p in tiny_lora_dirs.values()]
    size = sum(weight_files_bytes(p) for p in tiny_lora_dirs.values())
    assert size > 0
    plain = estimate_model(tiny_llama_dir, "LLM", "pytorch")
    with_loras = estimate_model(tiny_llama_dir, "LLM", "pytorch", adapters=adapters)
    assert with_loras.weights_bytes - plain.weights_bytes == size and "2 LoRA adapters" in " ".join(with_loras.notes)
    listed = manager.list_models()
    assert (listed[hf["lora"].model_uid]["memory_estimate_bytes"] - listed[hf["plain"].model_uid]["memory_estimate_bytes"]
            == with_loras.total_bytes - plain.total_bytes)


# ------------------------------------------------------------------ llama.cpp
@pytest.fixture(scope="module")
def gguf(manager, tiny_gguf_file, tiny_gguf_loras):
    pytest.importorskip("llama_cpp")

    def launch(uid, path, **kw):
        return handle_of(manager, manager.launch_model(
            "qwen2.5-instruct", model_engine="llama.cpp", model_format="ggufv2", model_path=str(path),
            show_progress=False, model_uid=f"lora-{uid}", n_gpu=None, **kw))

    return {"lora": launch("gguf", tiny_gguf_file, peft_model_config=_peft(a=tiny_gguf_loras["a"],
                                                                           b=tiny_gguf_loras["b"])),
            "plain": launch("gguf-plain", tiny_gguf_file),
            "merged": launch("gguf-merged", tiny_gguf_loras["merged"])}


def test_llama_cpp_adapters_are_chosen_per_request(gguf, hf):
    for prompt in PROMPTS[:3]:
        plain = _text(gguf["plain"].generate(prompt, GREEDY))
        merged = _text(gguf["merged"].generate(prompt, GREEDY))
        # switching back and forth: the cached prompt of one adapter is never reused by another
        assert _text(gguf["lora"].generate(prompt, {**GREEDY, "lora_name": "a"})) == merged
        assert _text(gguf["lora"].generate(prompt, GREEDY)) == plain
        assert _text(gguf["lora"].generate(prompt, {**GREEDY, "lora_name": "a"})) == merged
        b = _text(gguf["lora"].generate(prompt, {**GREEDY, "lora_name": "b"}))
        assert b == _text(hf["lora"].generate(prompt, {**GREEDY, "lora_name": "b"}))   # the same adapter in peft
    assert any(_text(gguf["plain"].generate(p, GREEDY)) != _text(gguf["merged"].generate(p, GREEDY)) for p in PROMPTS)
    with pytest.raises(InferenceError, match="it has 'a', 'b'"):
        gguf["lora"].generate("x", {"lora_name": "c"})
    with pytest.raises(InferenceError, match="launched without LoRA adapters"):
        gguf["plain"].generate("x", {"lora_name": "a"})


def test_llama_cpp_bad_adapters_fail_cleanly(manager, gguf, tiny_gguf_file, tiny_gguf_loras, tiny_lora_dirs,
                                             tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    from tiny_adapters import build_gguf_lora, build_peft_lora

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    config.save_pretrained(tmp_path / "other")
    foreign = build_gguf_lora(tmp_path / "other", build_peft_lora(None, tmp_path / "foreign", 5,
                                                                    base=LlamaForCausalLM(config)),
                              tmp_path / "foreign.gguf")
    running = set(manager.list_models())

    def launch(**kw):
        return manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_format="ggufv2",
                                    model_path=str(tiny_gguf_file), show_progress=False, n_gpu=None,
                                    model_uid="lora-gguf-more", **kw)

    for path, words in [(tmp_path / "missing.gguf", "does not exist"), (tiny_lora_dirs["a"], "is a folder"),
                        (tiny_gguf_file, "not a LoRA adapter"), (foreign, "llama.cpp cannot load it")]:
        with pytest.raises(LaunchError, match=words):
            launch(peft_model_config=_peft(z=path))
    # Llama(lora_path=...) ran on without the adapter when llama.cpp could not load it: silently the base
    for path, words in [(tmp_path / "missing.gguf", "does not exist"), (tiny_lora_dirs["a"], "is a folder"),
                        (tiny_gguf_file, "not a LoRA adapter"), (foreign, "llama.cpp cannot load it")]:
        with pytest.raises(LaunchError, match=f"lora_path .*{words}"):
            launch(lora_path=str(path))
    with pytest.raises(LaunchOptionError, match="not both"):
        launch(peft_model_config=_peft(a=tiny_gguf_loras["a"]), lora_path=str(tiny_gguf_loras["b"]))
    with pytest.raises(LaunchOptionError, match="lora_base"):
        launch(lora_base=str(tiny_gguf_file))
    with pytest.raises(LaunchOptionError, match="lora_scale: scales a LoRA adapter, and there is none"):
        launch(lora_scale=0.5)
    assert set(manager.list_models()) == running
    merged, plain = (_text(gguf[k].generate("The cat", GREEDY)) for k in ("merged", "plain"))
    # Llama(lora_path=...) still applies one adapter to every request
    uid = launch(lora_path=str(tiny_gguf_loras["a"]))
    try:
        assert _text(handle_of(manager, uid).generate("The cat", GREEDY)) == merged != plain
    finally:
        manager.terminate_model(uid)
    # lora_scale scales the chosen adapter (0: as if none)
    uid = launch(peft_model_config=_peft(a=tiny_gguf_loras["a"]), lora_scale=0.0)
    try:
        assert _text(handle_of(manager, uid).generate("The cat", {**GREEDY, "lora_name": "a"})) == plain
    finally:
        manager.terminate_model(uid)


# ------------------------------------------------------------------ diffusers
def _image_doc(path, name="lora-sd"):
    return {"version": 2, "model_name": name, "model_family": "stable_diffusion", "model_uri": str(path),
            "model_ability": ["text2image"], "default_generate_config": {"num_inference_steps": 2}}


def test_image_lora_is_loaded_and_fused(tiny_sd_dir, tiny_sd_lora_dir, tmp_path):
    import base64
    import io

    import torch
    from diffusers import StableDiffusionPipeline

    pytest.importorskip("diffusers")
    client = Client()
    client.register_model("image", _image_doc(tiny_sd_dir), overwrite=True)

    def image(uid):
        out = client.get_model(uid).text_to_image("a red apple", size="64*64", seed=0, response_format="b64_json")
        return out["data"][0]["b64_json"]

    config = {**_peft(x=tiny_sd_lora_dir), "image_lora_load_kwargs": {"weight_name": "pytorch_lora_weights.safetensors"},
              "image_lora_fuse_kwargs": {"lora_scale": 0.7}}
    base = client.launch_model("lora-sd", model_type="image", n_gpu=None, show_progress=False)
    fused = client.launch_model("lora-sd", model_type="image", n_gpu=None, show_progress=False,
                                peft_model_config=config)
    try:
        with_lora = image(fused)
        assert with_lora != image(base)
        pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(tiny_sd_lora_dir), adapter_name="x")
        pipe.fuse_lora(lora_scale=0.7)
        manual = pipe("a red apple", width=64, height=64, num_inference_steps=2,
                      generator=torch.Generator("cpu").manual_seed(0)).images[0]
        buf = io.BytesIO()
        manual.save(buf, format="PNG")
        assert base64.b64encode(buf.getvalue()).decode("ascii") == with_lora
    finally:
        client.terminate_model(base)
        client.terminate_model(fused)
    running = set(client.list_models())
    (tmp_path / "empty").mkdir()
    for options, words in [({"peft_model_config": _peft(x=tmp_path / "missing")}, "does not exist"),
                           ({"peft_model_config": _peft(x=tmp_path / "empty")}, "'x'"),
                           ({"lora_model": [str(tiny_sd_lora_dir)]}, "peft_model_config"),
                           ({"lora_fuse_kwargs": {"lora_scale": 1}}, "image_lora_fuse_kwargs")]:
        with pytest.raises(LaunchError, match=words):
            client.launch_model("lora-sd", model_type="image", n_gpu=None, show_progress=False, **options)
    assert set(client.list_models()) == running


# ------------------------------------------------------------------ REST, xinf, %xinf, LaunchForm
def test_rest_launch_paths_and_lora_name(tiny_llama_dir, tiny_lora_dirs, hf, tmp_path_factory, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from xinference_nb.server.app import create_app

    client = Client()
    running = set(client.list_models())
    roots = [str(tiny_llama_dir.parent), str(tiny_lora_dirs["a"].parent)]
    body = {"model_name": "qwen2.5-instruct", "model_engine": "transformers", "model_path": str(tiny_llama_dir),
            "model_uid": "lora-rest", "n_gpu": None}
    with TestClient(create_app(client, allowed_roots=roots), base_url="http://127.0.0.1") as rest:
        outside = tmp_path / "elsewhere"
        r = rest.post("/v1/models", json={**body, "peft_model_config": _peft(a=outside)})
        assert r.status_code == 403 and "peft_model_config.lora_list[0].local_path" in r.json()["detail"], r.text
        r = rest.post("/v1/models", json={**body, "peft_model_config": {"lora_list": "x"}})
        assert r.status_code == 400 and "lora_list must be a list" in r.json()["detail"], r.text
        assert set(client.list_models()) == running
        r = rest.post("/v1/models", json={**body, "peft_model_config": _peft(**tiny_lora_dirs)})
        assert r.status_code == 200, r.text
        try:
            msgs = [{"role": "user", "content": "Tell me a story"}]
            want = hf["merged"].chat(msgs, generate_config=GREEDY)["choices"][0]["message"]["content"]
            r = rest.post("/v1/chat/completions", json={"model": "lora-rest", "messages": msgs, "lora_name": "a",
                                                         **GREEDY})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == want, r.text
            r = rest.post("/v1/completions", json={"model": "lora-rest", "prompt": "x", "lora_name": "nope"})
            assert r.status_code == 400 and "it has 'a', 'b'" in r.json()["detail"], r.text
        finally:
            client.terminate_model("lora-rest")


def test_xinf_launch_lm_and_magic(tiny_llama_dir, tiny_lora_dirs, hf, capsys):
    pytest.importorskip("fastapi")
    from IPython.core.interactiveshell import InteractiveShell

    from xinference_nb.commands.cli import main
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    client = Client()
    want = _text(hf["merged"].generate("The cat", GREEDY))
    server = start_in_thread(create_app(client, allowed_roots=[str(tiny_llama_dir.parent),
                                                               str(tiny_lora_dirs["a"].parent)]), port=0)
    try:
        code = main(["launch", "-e", server.url, "-n", "qwen2.5-instruct", "-en", "transformers", "-u", "lora-cli",
                     "-mp", str(tiny_llama_dir), "--n-gpu", "none", "-lm", "a", str(tiny_lora_dirs["a"]),
                     "-lm", "b", str(tiny_lora_dirs["b"])])
        assert code == 0, capsys.readouterr().err
        assert _text(client.get_model("lora-cli").generate("The cat", {**GREEDY, "lora_name": "a"})) == want
        client.terminate_model("lora-cli")
    finally:
        server.stop()
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xinference_nb")
    magics = ip.magics_manager.registry["XinfMagics"]
    magics._client_factory, magics._clients = None, {}
    ip.run_line_magic("xinf", f"launch -n qwen2.5-instruct -en transformers -u lora-magic -mp {tiny_llama_dir} "
                              f"--n-gpu none -lm a {tiny_lora_dirs['a']}")
    try:
        assert _text(client.get_model("lora-magic").generate("The cat", {**GREEDY, "lora_name": "a"})) == want
    finally:
        client.terminate_model("lora-magic")
        magics._clients.clear()


def test_launch_form_lora_field(tiny_llama_dir, tiny_lora_dirs):
    pytest.importorskip("ipywidgets")
    from xinference_nb.metadata.weights import weight_files_bytes
    from xinference_nb.widgets import LaunchForm

    Client().register_model("LLM", {
        "version": 2, "model_name": "lora-form", "model_family": "lora-form-family", "model_ability": ["generate"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "model_uri": str(tiny_llama_dir)}]},
        overwrite=True)
    form = LaunchForm(client=Client(), model_name="lora-form")
    assert form.lora.layout.display is None
    before = form.estimate_bytes()
    form.lora.value = f"a {tiny_lora_dirs['a']}\n\nb   {tiny_lora_dirs['b']}\n"
    kwargs = form.launch_kwargs()
    assert kwargs["peft_model_config"] == _peft(**tiny_lora_dirs)
    assert form.estimate_bytes() - before == sum(weight_files_bytes(p) for p in tiny_lora_dirs.values())
    form.model_uid.value = "lora-form-1"
    uid = form.launch()
    try:
        assert uid and form.model.generate("x", {"lora_name": "b", "max_tokens": 2})["usage"]["completion_tokens"] >= 1
    finally:
        Client().terminate_model("lora-form-1")
    form.lora.value = "only-a-name"
    assert form.launch() is None and "NAME PATH" in form.status.value
    form.model_type.value = "embedding"
    assert form.lora.layout.display == "none" and "peft_model_config" not in form.launch_kwargs()
    assert json.dumps(kwargs)   # what REST would send


# ------------------------------------------------------------------ red team: hostile or careless input
# Each case below was a hole (a 500, a silently wrong model, a changed base model, a launch that
# loaded the base for nothing) or is a non-hole worth keeping (pickles, hub names, auto_mapping).
def _adapter_copy(src, dst, **changes):
    """A copy of the adapter folder ``src`` with ``changes`` written into its adapter_config.json."""
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


class _OpensAFile:
    """Pickled, it asks the unpickler to call open(path, "w"): what a hostile adapter_model.bin does."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _bin_weights(folder, extra=None):
    """``folder``'s adapter weights as adapter_model.bin (a pickle, as old peft saved them)."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    if extra is not None:
        state["evil"] = extra
    torch.save(state, str(folder / "adapter_model.bin"))
    (folder / "adapter_model.safetensors").unlink()
    return folder


@pytest.mark.parametrize("changes,words", [
    ({"use_dora": True}, "use_dora=True: DoRA adapters cannot be chosen per request"),   # every request failed
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa'"),    # peft rewrote the base weights on load
    ({"init_lora_weights": "olora"}, "the base model and every other adapter would change"),
    ({"init_lora_weights": "mica"}, "init_lora_weights='mica'"),      # a different forward: wrong output
    ({"layer_replication": [[0, 2], [1, 2]]}, "changes the base model"),
    ({"alora_invocation_tokens": [5]}, "activated LoRA"),             # launched, silently wrong output
    ({"target_parameters": ["mlp.up_proj.weight"]}, "nn.Parameters"),
    ({"megatron_config": {"x": 1}, "megatron_core": "megatron.evil"}, "would import megatron_core"),
    ({"bias": "all"}, "biases would replace the base model's"),
    ({"use_future_variant": True}, "unknown to the installed peft"),  # peft drops it: a silently other adapter
    ({"r": 10 ** 9}, "asks for rank 1000000000"),                     # peft allocated 256 GB before reading
    ({"rank_pattern": {"q_proj": 4096}}, "asks for rank 4096"),
    ({"r": "4"}, "not a positive integer"),
    ({"rank_pattern": ["q_proj"]}, "not a positive integer"),         # was an AttributeError
    ({"peft_type": "IA3"}, "is a IA3 adapter"),
])
def test_adapter_configs_this_engine_cannot_honour_fail_before_the_base_loads(manager, monkeypatch, tiny_llama_dir,
                                                                              tiny_lora_dirs, tmp_path, changes, words):
    import transformers

    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(lambda *a, **k: loaded.append(1) or real(*a, **k)))
    bad = _adapter_copy(tiny_lora_dirs["a"], tmp_path / "bad", **changes)
    running = set(manager.list_models())
    with pytest.raises(LaunchError, match="adapter 'z'") as err:
        _launch(manager, tiny_llama_dir, "bad", peft_model_config=_peft(a=tiny_lora_dirs["a"], z=bad))
    assert words in str(err.value), str(err.value)
    assert not loaded and set(manager.list_models()) == running


def _config_list(d):
    (d / "adapter_config.json").write_text("[1, 2]")


def _config_huge(d):
    (d / "adapter_config.json").write_text(" " * (2 * 1024 * 1024) + "{}")


def _no_weights(d):   # peft then looked the folder's path up on the Hugging Face Hub
    (d / "adapter_model.safetensors").unlink()


def _header_bomb(d):
    import struct

    (d / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")


def _no_lora_matrices(d):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "adapter_model.safetensors"))
    save_file({k: v for k, v in state.items() if "lora_B" in k}, str(d / "adapter_model.safetensors"))


@pytest.mark.parametrize("spoil,words", [
    (_config_list, "not a readable JSON object (a JSON list"),
    (_config_huge, "over 1024 KB"),
    (_no_weights, "has no adapter_model.safetensors or adapter_model.bin"),
    (_header_bomb, "adapter_model.safetensors is not readable"),
    (_no_lora_matrices, "holds no LoRA matrices"),
])
def test_broken_adapter_files_fail_before_the_base_loads(manager, monkeypatch, tiny_llama_dir, tiny_lora_dirs,
                                                         tmp_path, spoil, words):
    import transformers

    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        staticmethod(lambda *a, **k: loaded.append(1) or real(*a, **k)))
    bad = _adapter_copy(tiny_lora_dirs["a"], tmp_path / "bad")
    spoil(bad)
    with pytest.raises(LaunchError, match="adapter 'z'") as err:
        _launch(manager, tiny_llama_dir, "bad", peft_model_config=_peft(z=bad))
    assert words in str(err.value), str(err.value)
    assert not loaded


def test_pickled_adapter_weights_load_without_running_code(manager, hf, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    marker = tmp_path / "opened-by-the-pickle"
    hostile = _bin_weights(_adapter_copy(tiny_lora_dirs["a"], tmp_path / "hostile"), extra=_OpensAFile(marker))
    with pytest.raises(LaunchError, match="adapter_model.bin is not readable.*UnpicklingError"):
        _launch(manager, tiny_llama_dir, "pickle", peft_model_config=_peft(z=hostile))
    assert not marker.exists()   # torch's weights-only loader refused the call (so does peft's own load)
    # a plain pickle of tensors (old peft's adapter_model.bin) loads and is the same adapter
    plain = _bin_weights(_adapter_copy(tiny_lora_dirs["a"], tmp_path / "plain"))
    uid = _launch(manager, tiny_llama_dir, "pickle", peft_model_config=_peft(p=plain))
    try:
        assert (_text(handle_of(manager, uid).generate("The cat", {**GREEDY, "lora_name": "p"}))
                == _text(hf["merged"].generate("The cat", GREEDY)))
    finally:
        manager.terminate_model(uid)


def test_harmless_config_keys_names_peft_confuses_and_tilde_paths(manager, hf, monkeypatch, tiny_llama_dir,
                                                                  tiny_lora_dirs, tmp_path):
    """auto_mapping (AutoPeftModel would import its parent_library; PeftModel never reads it), a hub
    base_model_name_or_path (never downloaded) and keys a newer peft writes as null are fine. Names
    that are pieces of peft's parameter names ("lora_A", "0", "layers") used to fail the launch
    (peft's missing-key list matched them in other adapters' keys); "eval" is a torch attribute."""
    x = _adapter_copy(tiny_lora_dirs["a"], tmp_path / "x", auto_mapping={"base_model_class": "system",
                                                                         "parent_library": "os"},
                      base_model_name_or_path="some-org/never-downloaded", revision="main", task_type=None,
                      init_lora_weights="eva", a_newer_peft_key=None)
    monkeypatch.setenv("HOME", str(tmp_path))      # "~/x" is this x
    loras = {"lora_A": "~/x", "0": str(tiny_lora_dirs["b"]), "layers": str(tiny_lora_dirs["a"])}
    for extra in ({}, {"max_num_seqs": 1}):
        uid = _launch(manager, tiny_llama_dir, "names", peft_model_config=_peft(**loras), **extra)
        try:
            model = handle_of(manager, uid)
            for prompt in PROMPTS[:2]:
                merged = _text(hf["merged"].generate(prompt, GREEDY))
                assert _text(model.generate(prompt, {**GREEDY, "lora_name": "lora_A"})) == merged
                assert _text(model.generate(prompt, {**GREEDY, "lora_name": "layers"})) == merged
                assert (_text(model.generate(prompt, {**GREEDY, "lora_name": "0"}))
                        == _text(hf["lora"].generate(prompt, {**GREEDY, "lora_name": "b"})))
                assert _text(model.generate(prompt, GREEDY)) == _text(hf["plain"].generate(prompt, GREEDY))
        finally:
            manager.terminate_model(uid)
    with pytest.raises(LaunchError, match="lora_name 'eval' is an attribute of torch modules"):
        _launch(manager, tiny_llama_dir, "names", peft_model_config=_peft(eval=tiny_lora_dirs["a"]))


@pytest.mark.parametrize("whole", [{"trainable_token_indices": [3, 4, 5]}, {"modules_to_save": ["lm_head"]}])
def test_adapters_with_whole_layers_load_alone(manager, monkeypatch, tiny_llama_dir, tiny_lora_dirs, tmp_path, whole):
    """peft's copies of whole layers (modules_to_save, trainable tokens) fail with KeyError for a request
    on another adapter (and loading a plain LoRA after trainable tokens failed): such an adapter is
    launched alone, and then equals peft's own model, base included."""
    import torch
    import transformers
    from peft import PeftModel
    from tiny_adapters import build_peft_lora

    folder = build_peft_lora(tiny_llama_dir, tmp_path / "whole", seed=9, **whole)
    key = next(iter(whole))
    real = transformers.AutoModelForCausalLM.from_pretrained
    loaded = []
    with monkeypatch.context() as patch:
        patch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                      staticmethod(lambda *a, **k: loaded.append(1) or real(*a, **k)))
        for loras in ({"w": folder, "b": tiny_lora_dirs["b"]}, {"b": tiny_lora_dirs["b"], "w": folder}):
            with pytest.raises(LaunchError, match=f"adapter 'w'.* sets {key}, which peft cannot mix"):
                _launch(manager, tiny_llama_dir, "whole", peft_model_config=_peft(**loras))
    assert not loaded
    for extra in ({}, {"max_num_seqs": 1}):
        uid = _launch(manager, tiny_llama_dir, "whole", peft_model_config=_peft(w=folder), **extra)
        try:
            ids = torch.tensor([[1, 5, 3, 4, 9, 3]])
            solo = PeftModel.from_pretrained(real(str(tiny_llama_dir), dtype="float32"), str(folder)).eval()
            ours = manager.engine_model(uid).model
            with torch.inference_mode():
                want = solo(input_ids=ids).logits
                assert torch.allclose(ours(input_ids=ids, adapter_names=["w"]).logits, want, atol=1e-5)
                with solo.disable_adapter():
                    base = solo(input_ids=ids).logits
                assert torch.allclose(ours(input_ids=ids, adapter_names=["__base__"]).logits, base, atol=1e-5)
                assert not torch.allclose(want, base, atol=1e-3)
            handle = handle_of(manager, uid)
            assert _text(handle.generate("The cat", {**GREEDY, "lora_name": "w"})) != _text(
                handle.generate("The cat", GREEDY))
        finally:
            manager.terminate_model(uid)


def test_memory_estimate_reads_only_the_adapter_folders_own_files(tiny_llama_dir, tiny_lora_dirs, tmp_path):
    """A local_path such as "~" or "/" (a careless user, the LaunchForm's field while typing) made the
    estimate walk the whole tree before the launch refused it."""
    from xinference_nb.memory import estimate_model
    from xinference_nb.metadata.weights import weight_files_bytes

    folder = _adapter_copy(tiny_lora_dirs["a"], tmp_path / "a")
    (folder / "deep" / "deeper").mkdir(parents=True)
    (folder / "deep" / "deeper" / "other.safetensors").write_bytes(b"x" * 100_000)
    plain = estimate_model(tiny_llama_dir, "LLM", "pytorch")
    with_lora = estimate_model(tiny_llama_dir, "LLM", "pytorch", adapters=[str(folder)])
    assert with_lora.weights_bytes - plain.weights_bytes == weight_files_bytes(tiny_lora_dirs["a"])


def test_rest_refuses_hostile_adapter_paths_and_lora_names(tiny_llama_dir, tiny_lora_dirs, hf, tmp_path):
    pytest.importorskip("fastapi")
    import os

    from fastapi.testclient import TestClient

    from xinference_nb.server.app import create_app

    client = Client()
    running = set(client.list_models())
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "link")      # inside the root, pointing out of it
    os.symlink(tiny_lora_dirs["a"], root / "a")          # a link to an adapter outside: what it reads is outside
    roots = [str(tiny_llama_dir.parent), str(root)]
    body = {"model_name": "qwen2.5-instruct", "model_engine": "transformers", "model_path": str(tiny_llama_dir),
            "model_uid": "lora-rest-hostile", "n_gpu": None}
    with TestClient(create_app(client, allowed_roots=roots), base_url="http://127.0.0.1") as rest:
        for path, status, words in [(str(root / "link"), 403, "outside the server's allowed model roots"),
                                    (str(root / "a"), 403, "outside the server's allowed model roots"),
                                    (str(root / ".." / "outside"), 403, "outside"),
                                    ("~/x", 403, "outside"),
                                    ("file:///etc", 403, "outside"),
                                    (str(root) + "/\u0000x", 400, "NUL"),
                                    ("/" + "a" * 5000, 400, "at most"),
                                    ("some-org/some-adapter", 400, "does not exist"),   # a hub name: never fetched
                                    ("https://example.com/adapter", 400, "does not exist"),
                                    (str(tiny_llama_dir), 400, "no adapter_config.json")]:
            r = rest.post("/v1/models", json={**body, "peft_model_config": {"lora_list": [
                {"lora_name": "z", "local_path": path}]}})
            assert r.status_code == status and words in r.json()["detail"], (path, r.status_code, r.text[:300])
        assert set(client.list_models()) == running
        inside = _adapter_copy(tiny_lora_dirs["a"], root / "adapters" / "a")
        config = {"lora_list": [{"lora_name": "lora_A", "local_path": str(inside)}]}
        r = rest.post("/v1/models", json={**body, "peft_model_config": config})
        assert r.status_code == 200, r.text
        try:
            for value in [3, ["lora_A"], {"lora_A": 1}, True, "", "__base__", "x" * 100_000]:
                for route, extra in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                                     ("/v1/completions", {"prompt": "hi"})):
                    r = rest.post(route, json={"model": "lora-rest-hostile", "lora_name": value, "max_tokens": 2,
                                               **extra})
                    assert r.status_code == 400 and "lora_name" in r.json()["detail"], (value, r.text[:300])
                    assert len(r.text) < 1000, len(r.text)    # a 100 KB name is not echoed back
            r = rest.post("/v1/completions", json={"model": "lora-rest-hostile", "prompt": "The cat",
                                                   "lora_name": "lora_A", **GREEDY})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == _text(
                hf["merged"].generate("The cat", GREEDY)), r.text
        finally:
            client.terminate_model("lora-rest-hostile")


def test_llama_cpp_concurrent_requests_each_get_their_adapter(gguf):
    """One llama.cpp context, many threads, three adapters (a, b, none), plain and streamed calls: the
    adapter is switched under the call lock, so each call equals the same call made alone."""
    jobs = [(p, lora, stream) for p in PROMPTS[:3] for lora in ("a", "b", None) for stream in (False, True)]

    def run(i, job):
        prompt, lora, stream = job
        cfg = {**GREEDY, **({"lora_name": lora} if lora else {})}
        if stream:
            return "".join(c["choices"][0]["text"] for c in gguf["lora"].generate(prompt, {**cfg, "stream": True}))
        return _text(gguf["lora"].generate(prompt, cfg))

    solo = [run(i, job) for i, job in enumerate(jobs)]
    assert len(set(solo)) > 3
    for _ in range(3):
        assert _concurrently(run, jobs) == solo


@pytest.fixture(scope="module")
def endless(endless_llama_dir, tiny_lora_dirs):
    """The never-ending tiny llama (conftest), its GGUF and adapter a as a GGUF LoRA of it."""
    import tiny_models
    from tiny_adapters import build_gguf_lora

    files = {"dir": endless_llama_dir}
    if importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("gguf"):
        gguf_file = endless_llama_dir.parent / "endless-llama-f32.gguf"   # test_terminate's name for it
        files["gguf"] = gguf_file if gguf_file.exists() else tiny_models.build_tiny_gguf(endless_llama_dir, gguf_file)
        files["lora"] = build_gguf_lora(endless_llama_dir, tiny_lora_dirs["a"], endless_llama_dir.parent / "lora-a.gguf")
    return files


@pytest.mark.parametrize("engine", ["transformers", "transformers-serial", "llama.cpp"])
def test_terminate_during_adapter_requests_stops_them_and_frees_the_model(manager, endless, tiny_lora_dirs,
                                                                          engine):
    """A stream on adapter a and a call on adapter b (waiting for its turn on the serial engines) both
    end with "model terminated" when the model is terminated; the model is freed; a relaunch works."""
    import threading

    if engine == "llama.cpp":
        if "gguf" not in endless:
            pytest.skip("llama_cpp is not installed")
        kw = {"model_engine": "llama.cpp", "model_format": "ggufv2", "model_path": str(endless["gguf"]),
              "peft_model_config": _peft(a=endless["lora"], b=endless["lora"])}
    else:
        kw = {"model_engine": "transformers", "model_path": str(endless["dir"]),
              "peft_model_config": _peft(a=tiny_lora_dirs["a"], b=tiny_lora_dirs["b"]),
              **({"max_num_seqs": 1} if engine == "transformers-serial" else {})}
    for attempt in range(2):   # the second launch: the same uid and adapters after a terminate
        uid = manager.launch_model("qwen2.5-instruct", show_progress=False, n_gpu=None, model_uid="lora-term", **kw)
        handle = handle_of(manager, uid)
        engine_model = manager.engine_model(uid)
        model_ref = weakref.ref(engine_model.llm if engine == "llama.cpp" else engine_model.model)   # the weights
        del engine_model
        chunks = handle.generate("Once upon a time", {"lora_name": "a", "temperature": 0, "max_tokens": 1500,
                                                      "stream": True})
        first = next(iter(chunks))
        ended = {}

        def other():
            try:
                handle.generate("The cat", {"lora_name": "b", "temperature": 0, "max_tokens": 1500})
                ended["b"] = "finished"
            except InferenceError as exc:
                ended["b"] = str(exc)

        waiter = threading.Thread(target=other)
        waiter.start()
        manager.terminate_model(uid)
        with pytest.raises(InferenceError, match="model terminated"):
            for _ in chunks:
                pass
        waiter.join(60)
        assert not waiter.is_alive() and "model terminated" in ended["b"], ended
        assert first["choices"][0]["text"] is not None
        del handle, chunks, first
        gc.collect()
        assert model_ref() is None, gc.get_referrers(model_ref())


def test_image_lora_pickles_run_no_code_and_bad_names_fail_cleanly(tiny_sd_dir, tiny_sd_lora_dir, tmp_path):
    """diffusers reads a LoRA .bin with torch's weights-only loader (use_safetensors=False asks for it)."""
    import shutil

    import torch

    pytest.importorskip("diffusers")
    client = Client()
    client.register_model("image", _image_doc(tiny_sd_dir, "lora-sd-hostile"), overwrite=True)
    marker = tmp_path / "opened-by-the-pickle"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    torch.save({"unet.evil": _OpensAFile(marker)}, str(hostile / "pytorch_lora_weights.bin"))
    named = shutil.copytree(tiny_sd_lora_dir, tmp_path / "named")
    running = set(client.list_models())
    for config, words in [({**_peft(x=hostile), "image_lora_load_kwargs": {"use_safetensors": False}},
                           "Unable to load weights"),
                          (_peft(eval=named), "'eval'")]:
        with pytest.raises(LaunchError, match=words):
            client.launch_model("lora-sd-hostile", model_type="image", n_gpu=None, show_progress=False,
                                peft_model_config=config)
    assert not marker.exists()
    assert set(client.list_models()) == running
