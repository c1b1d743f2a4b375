"""LoRA adapters as Xinference spells them (issue 13 item 2): ``peft_model_config={"lora_list": [...],
"image_lora_load_kwargs": ..., "image_lora_fuse_kwargs": ...}`` at launch, ``generate_config={"lora_name":
...}`` per request. Tiny real models and tiny real adapters (tests/tiny_adapters.py): an adapter's output
equals peft's merged model's, the base equals the plain model, batched requests with different adapters
each equal their solo output, bad adapters fail the launch and free it; llama.cpp GGUF LoRAs; a
diffusers LoRA fused into the tiny Stable Diffusion; REST, `xinf launch -lm`, `%xinf launch -lm`, the
LaunchForm field and the memory estimate."""
from __future__ import annotations

import gc
import json
import weakref

import pytest
from test_llm_batching import _concurrently  # noqa: E402 - threads, results in order, errors re-raised

from xinference_nb.client import Client
from xinference_nb.errors import InferenceError, LaunchError, LaunchOptionError
from xinference_nb.options import parse_launch_options

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
    from xinference_nb.manager import get_manager   # the one a Client (and so the server) uses

    m = get_manager()
    yield m
    for uid in list(m.list_models()):
        if uid.startswith("lora-"):
            m.terminate_model(uid)


def _launch(manager, path, uid, **kw):
    return manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(path),
                                show_progress=False, model_uid=f"lora-{uid}", n_gpu=None, **kw)


@pytest.fixture(scope="module")
def hf(manager, tiny_llama_dir, tiny_lora_dirs, tiny_lora_merged_dir):
    """Handles: "lora" (adapters a and b, batched), "serial" (the same, max_num_seqs=1), "plain" (the base
    model) and "merged" (adapter a merged into the weights by peft)."""
    loras = _peft(**tiny_lora_dirs)
    uids = {"lora": _launch(manager, tiny_llama_dir, "hf", peft_model_config=loras),
            "serial": _launch(manager, tiny_llama_dir, "hf-serial", peft_model_config=loras, max_num_seqs=1),
            "plain": _launch(manager, tiny_llama_dir, "hf-plain"),
            "merged": _launch(manager, tiny_lora_merged_dir, "hf-merged")}
    return {k: manager.get_model(uid) for k, uid in uids.items()}


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
    peft_model = manager._peek(hf["lora"].model_uid).model      # what peft_model_config built
    tok = manager._peek(hf["lora"].model_uid).tokenizer
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
    model = manager._peek(hf["lora"].model_uid).model
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
        return manager.get_model(manager.launch_model(
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
        assert _text(manager.get_model(uid).generate("The cat", GREEDY)) == merged != plain
    finally:
        manager.terminate_model(uid)
    # lora_scale scales the chosen adapter (0: as if none)
    uid = launch(peft_model_config=_peft(a=tiny_gguf_loras["a"]), lora_scale=0.0)
    try:
        assert _text(manager.get_model(uid).generate("The cat", {**GREEDY, "lora_name": "a"})) == plain
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

    from xinference_nb.cli import main
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
