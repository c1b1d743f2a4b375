"""Issue 20 ("one bad request must never hurt another"), items 2-6: LoRA adapters that would have
hurt the kernel or other users, refused before they can.

2. a weight file whose header lies (a rank-120000 matrix announced in a 536-byte file) and adapters
   bigger than their base (rank above a layer's width, more parameters than the model);
3. a non-finite or absurd scaling (lora_alpha NaN or 1e308, an image / GGUF lora_scale of 1e30);
4. weights for layers the config does not target (peft dropped them silently);
5. target_modules / rank_pattern / ... patterns that make Python's regex engine backtrack with the GIL
   held (the REST server stalled meanwhile);
6. links to files outside the server's allowed roots inside an allowed adapter or model folder.

Real tiny models and adapters (tests/tiny_models.py, tests/tiny_adapters.py), a real server for REST."""
from __future__ import annotations

import gc
import json
import os
import shutil
import struct
import threading
import weakref

import pytest

from xinference_nb.errors import LaunchError, LaunchOptionError, ParseError
from xinference_nb.client.handles import handle_of
from xinference_nb.engines.options import parse_launch_options

from public_api import launch_by_path, shared_manager

pytest.importorskip("peft")
pytest.importorskip("transformers")

GREEDY = {"temperature": 0, "max_tokens": 12}
PROMPTS = ["Once upon a time", "The cat"]
A_KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
B_KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("guard-")


def _launch(manager, path, uid, **kw):
    return launch_by_path(manager, path, model_uid=f"guard-{uid}", n_gpu=None, **kw)


def _peft(**loras) -> dict:
    return {"lora_list": [{"lora_name": name, "local_path": str(path)} for name, path in loras.items()]}


def _text(result) -> str:
    return result["choices"][0]["text"]


@pytest.fixture
def loads(monkeypatch):
    """Weak references to every base model AutoModelForCausalLM.from_pretrained loads in the test."""
    import transformers

    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        model = real(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(recording))
    return loaded


def _freed(loads) -> bool:
    gc.collect()
    return all(ref() is None for ref in loads)


def _copy(src, dst, **changes):
    """A copy of the adapter folder ``src`` with ``changes`` written into its adapter_config.json
    (a value of None removes the key)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def _safetensors(tensors: dict, data_bytes: int) -> bytes:
    """A safetensors file: ``tensors`` name → (dtype, shape, [begin, end]) and ``data_bytes`` zero bytes."""
    header = {k: {"dtype": d, "shape": s, "data_offsets": o} for k, (d, s, o) in tensors.items()}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * data_bytes


def _keep_weights(folder, keep):
    """Rewrite the adapter's weight file with only the tensors whose key satisfies ``keep``
    (a function of the key) or with keys renamed (``keep`` returns the new key, None drops it)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for k, v in state.items():
        new = keep(k)
        if new:
            out[new if isinstance(new, str) else k] = v
    save_file(out, str(folder / "adapter_model.safetensors"))
    return folder


# ============================================================ 2. headers that lie, adapters bigger than the base
@pytest.mark.parametrize("tensors,data_bytes,words", [
    ({"w": ("F32", [1000], [0, 40])}, 40, "'w' (F32 of shape [1000]) takes 4000 bytes, but its data_offsets [0, 40] "
                                          "hold 40"),
    ({"w": ("F32", [120000, 64], [0, 256])}, 256, "takes 30720000 bytes"),
    ({"w": ("F4", [3], [0, 2])}, 2, "takes 12 bits"),
    ({"w": ("F32", [10], [0, 40])}, 20, "tensor 'w' ends at byte 40 of the data section, which has 20 bytes"),
    ({"a": ("F32", [10], [0, 40]), "b": ("F32", [10], [20, 60])}, 60, "tensors 'a' and 'b' share bytes"),
    ({"w": ("Q9", [10], [0, 40])}, 40, "'w' has dtype 'Q9', not a safetensors dtype"),
    ({"w": ("F32", [10], [40, 0])}, 40, "'w' has data_offsets [40, 0]"),
    ({"w": ("F32", [10], None)}, 40, "'w' has data_offsets None"),
    ({"w": ("F32", [True, 10], [0, 40])}, 40, "'w' has shape [True, 10], not a list of sizes"),
    ({"w": ("F32", [-1, 10], [0, 0])}, 40, "not a list of sizes"),
])
def test_safetensors_headers_must_describe_their_bytes(tmp_path, tiny_llama_dir, tensors, data_bytes, words):
    """The one safetensors reader (adapters and models): each tensor's dtype x shape is exactly its byte
    range, inside the data section, sharing no byte with another tensor."""
    from xinference_nb.metadata.safetensors import read_safetensors_header
    from xinference_nb.parse import parse_model

    file = tmp_path / "x.safetensors"
    file.write_bytes(_safetensors(tensors, data_bytes))
    with pytest.raises(ParseError) as err:
        read_safetensors_header(file)
    assert str(err.value).startswith(f"{file}: ") and words in str(err.value), str(err.value)
    model = shutil.copytree(tiny_llama_dir, tmp_path / "model")       # a model's weights: the same reader
    (model / "model.safetensors").write_bytes(file.read_bytes())
    with pytest.raises(ParseError, match="model.safetensors: .*" + words.split("(")[0][:20].replace("[", r"\[")):
        parse_model(model)


def test_consistent_headers_still_read(tmp_path, tiny_llama_dir, tiny_lora_dirs):
    from xinference_nb.metadata.safetensors import read_safetensors_header

    file = tmp_path / "ok.safetensors"   # zero-sized tensors may share an offset; F4 pairs fill a byte
    file.write_bytes(_safetensors({"e": ("F32", [0, 4], [0, 0]), "f": ("F32", [0], [0, 0]),
                                   "h": ("F4", [4], [0, 2]), "w": ("BF16", [3, 2], [2, 14])}, 14))
    header = read_safetensors_header(file)
    assert set(header) == {"e", "f", "h", "w"} and header.data_bytes == 14
    for path in (tiny_llama_dir / "model.safetensors", tiny_lora_dirs["a"] / "adapter_model.safetensors"):
        header = read_safetensors_header(path)
        assert 8 + header.header_bytes + header.data_bytes == path.stat().st_size


def test_rank_bomb_adapter_is_refused_before_anything_is_allocated(manager, loads, tiny_llama_dir, tiny_lora_dirs,
                                                                   tmp_path):
    """536 bytes announcing rank-120000 matrices with r=120000 in the config: peft allocated them
    (+949 MiB in 1.2 s on the 64-wide tiny llama) before loading failed."""
    bomb = _copy(tiny_lora_dirs["a"], tmp_path / "bomb", r=120000, lora_alpha=120000, target_modules=["q_proj"])
    (bomb / "adapter_model.safetensors").write_bytes(_safetensors(
        {A_KEY: ("F32", [120000, 64], [0, 128]), B_KEY: ("F32", [64, 120000], [128, 256])}, 256))
    assert (bomb / "adapter_model.safetensors").stat().st_size < 700
    running = set(manager.list_models())
    with pytest.raises(LaunchError) as err:
        _launch(manager, tiny_llama_dir, "bomb", peft_model_config=_peft(z=bomb))
    message = str(err.value)
    assert "adapter 'z'" in message and "adapter_model.safetensors" in message, message
    assert f"tensor {A_KEY!r}" in message and "takes 30720000 bytes" in message, message
    assert not loads and set(manager.list_models()) == running


def test_adapter_rank_and_size_are_capped_by_the_base(manager, loads, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    """Consistent files, but more than a LoRA of this base can be: a rank above min(inputs, outputs) of
    its layer (64-wide layers, rank 80), or more parameters than the base model (full-rank matrices on
    every layer, the embeddings and lm_head). Refused on the loaded base before peft allocates; the
    base is freed."""
    from tiny_adapters import LLAMA_TARGETS, build_peft_lora

    wide = build_peft_lora(tiny_llama_dir, tmp_path / "wide", seed=3, rank=80, target_modules=["q_proj"])
    whole = build_peft_lora(tiny_llama_dir, tmp_path / "whole", seed=4, rank=64,
                            target_modules=[*LLAMA_TARGETS, "embed_tokens", "lm_head"],
                            rank_pattern={"k_proj": 32, "v_proj": 32})
    running = set(manager.list_models())
    for folder, words in [(wide, "have rank 80, and that layer is 64 x 64: a rank above min(inputs, outputs) = 64"),
                          (whole, "parameters, more than the base model's")]:
        loads.clear()
        with pytest.raises(LaunchError) as err:
            _launch(manager, tiny_llama_dir, "big", peft_model_config=_peft(a=tiny_lora_dirs["a"], z=folder))
        assert "adapter 'z'" in str(err.value) and words in str(err.value), str(err.value)
        del err
        assert loads and _freed(loads)
    assert set(manager.list_models()) == running


# ================================================================== 3. scaling
@pytest.mark.parametrize("changes,words", [
    ({"lora_alpha": float("nan")}, "lora_alpha=nan: it must be a finite number"),
    ({"lora_alpha": float("inf")}, "lora_alpha=inf: it must be a finite number"),
    ({"lora_alpha": 1e308}, "lora_alpha=1e+308, a scaling alpha / r of 2.5e+307"),
    ({"lora_alpha": -1e6}, "a scaling alpha / r of -250000"),
    ({"lora_alpha": "16"}, "lora_alpha='16': it must be a finite number"),
    ({"lora_alpha": True}, "it must be a finite number"),
    ({"lora_alpha": 4004}, "a scaling alpha / r of 1001"),                      # just past the bound (r = 4)
    ({"use_rslora": True, "lora_alpha": 2004}, "a scaling alpha / sqrt(r) of 1002"),
    ({"alpha_pattern": {"q_proj": 1e308}}, "alpha_pattern['q_proj']=1e+308"),
    ({"alpha_pattern": {"q_proj": float("nan")}}, "alpha_pattern['q_proj']=nan"),
    ({"rank_pattern": {"q_proj": 1}, "lora_alpha": 1001}, "(rank 1)"),         # the smallest rank gets the most
])
def test_non_finite_or_absurd_lora_alpha_is_refused_before_the_base_loads(manager, loads, tiny_llama_dir,
                                                                          tiny_lora_dirs, tmp_path, changes, words):
    """lora_alpha NaN or 1e308 launched: greedy answers came back '' and sampled ones crashed."""
    bad = _copy(tiny_lora_dirs["a"], tmp_path / "bad", **changes)
    with pytest.raises(LaunchError) as err:
        _launch(manager, tiny_llama_dir, "alpha", peft_model_config=_peft(z=bad))
    assert "adapter 'z'" in str(err.value) and words in str(err.value), str(err.value)
    assert not loads


def test_a_large_but_sane_alpha_still_launches(manager, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    ok = _copy(tiny_lora_dirs["a"], tmp_path / "ok", lora_alpha=4000)          # alpha / r = 1000: the bound
    uid = _launch(manager, tiny_llama_dir, "alpha-ok", peft_model_config=_peft(ok=ok))
    try:
        assert handle_of(manager, uid).generate("The cat", {**GREEDY, "lora_name": "ok"})["usage"]["completion_tokens"]
    finally:
        manager.terminate_model(uid)


@pytest.mark.parametrize("scale", [1e308, 1e30, -1e30, 100.5, float("nan")])
def test_image_lora_scale_is_bounded_at_launch(scale):
    """An image LoRA fused with lora_scale 1e308 or 1e30 gave an all-black image."""
    value = {"lora_list": [{"lora_name": "x", "local_path": "/x"}], "image_lora_fuse_kwargs": {"lora_scale": scale}}
    with pytest.raises(LaunchOptionError) as err:
        parse_launch_options({"peft_model_config": value})
    assert err.value.fields == ["peft_model_config"], err.value.fields
    assert "image_lora_fuse_kwargs['lora_scale'] must be" in str(err.value), str(err.value)
    for fine in (0.7, -1, 0, 100):
        value["image_lora_fuse_kwargs"]["lora_scale"] = fine
        assert parse_launch_options({"peft_model_config": value})


def test_image_lora_scale_is_refused_by_a_real_launch(tiny_sd_dir, tiny_sd_lora_dir):
    from xinference_nb.client import Client

    pytest.importorskip("diffusers")
    client = Client()
    client.register_model("image", {"version": 2, "model_name": "guard-sd", "model_family": "stable_diffusion",
                                    "model_uri": str(tiny_sd_dir), "model_ability": ["text2image"]}, overwrite=True)
    running = set(client.list_models())
    with pytest.raises(LaunchOptionError, match=r"lora_scale'\] must be at most 100, got 1e\+30"):
        client.launch_model("guard-sd", model_type="image", n_gpu=None, show_progress=False, peft_model_config={
            "lora_list": [{"lora_name": "x", "local_path": str(tiny_sd_lora_dir)}],
            "image_lora_fuse_kwargs": {"lora_scale": 1e30}})
    assert set(client.list_models()) == running


def test_llama_cpp_lora_scale_is_bounded(manager, tiny_gguf_file, tiny_gguf_loras):
    pytest.importorskip("llama_cpp")
    for scale in (1e30, -1e30):
        with pytest.raises(LaunchOptionError, match="lora_scale: must be (at most 100|at least -100)"):
            manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_format="ggufv2",
                                 model_path=str(tiny_gguf_file), model_uid="guard-gguf", n_gpu=None,
                                 show_progress=False, peft_model_config=_peft(a=tiny_gguf_loras["a"]),
                                 lora_scale=scale)
    assert "guard-gguf" not in manager.list_models()


# ================================================================== 4. weights and config must match
def test_weights_the_config_does_not_target_are_refused(manager, loads, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    """target_modules=['q_proj'] with weights for seven modules launched, peft dropping six of them
    (another adapter than the trained one). Refused, naming them; the base is freed. The reverse
    (layers targeted without weights, weights for a layer the base lacks) is refused too."""
    only_q = _copy(tiny_lora_dirs["a"], tmp_path / "only-q", target_modules=["q_proj"])
    as_regex = _copy(tiny_lora_dirs["a"], tmp_path / "regex", target_modules=r".*\.(q_proj|v_proj)")
    no_k = _keep_weights(_copy(tiny_lora_dirs["a"], tmp_path / "no-k"), lambda k: "k_proj" not in k)
    layer_9 = _keep_weights(_copy(tiny_lora_dirs["a"], tmp_path / "layer-9"),
                            lambda k: k.replace("layers.1.", "layers.9."))
    running = set(manager.list_models())
    for folder, words in [
            (only_q, "its weight file has LoRA weights for 12 layers its adapter_config.json does not target "
                     "(model.layers.0.mlp.down_proj, model.layers.0.mlp.gate_proj, model.layers.0.mlp.up_proj, ...), "
                     "which peft would drop"),
            (as_regex, "LoRA weights for 10 layers its adapter_config.json does not target"),
            (no_k, "its weights do not cover the layers it targets"),
            (layer_9, "has LoRA weights for layer 'model.layers.9.")]:
        loads.clear()
        with pytest.raises(LaunchError) as err:
            _launch(manager, tiny_llama_dir, "match", peft_model_config=_peft(a=tiny_lora_dirs["b"], z=folder))
        assert "adapter 'z'" in str(err.value) and words in str(err.value), str(err.value)
        del err
        assert loads and _freed(loads)
    assert set(manager.list_models()) == running


def test_a_pattern_that_targets_every_weight_loads_the_same_adapter(manager, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    regex = _copy(tiny_lora_dirs["a"], tmp_path / "regex",
                  target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    uid = _launch(manager, tiny_llama_dir, "regex", peft_model_config=_peft(r=regex, a=tiny_lora_dirs["a"]))
    try:
        model = handle_of(manager, uid)
        for prompt in PROMPTS:
            assert (_text(model.generate(prompt, {**GREEDY, "lora_name": "r"}))
                    == _text(model.generate(prompt, {**GREEDY, "lora_name": "a"})))
    finally:
        manager.terminate_model(uid)


# ================================================================== 5. patterns
BACKTRACKING = "(.|.){1,23}Z"   # 8.3 s to launch, the GIL held: a REST server stalled 3.3 s per request


@pytest.mark.parametrize("changes,words", [
    ({"target_modules": BACKTRACKING}, "target_modules '(.|.){1,23}Z' is not accepted: it has a repeat of a group"),
    ({"target_modules": ".?" * 20 + "Z"}, "target_modules '.?.?"),
    ({"target_modules": ".*.*.*.*q_proj"}, "may take too long to match"),
    ({"target_modules": "(a+)+q"}, "a repeat of a group"),
    ({"target_modules": r"(q)\1"}, r"the escape \1"),
    ({"target_modules": "(?=q).*"}, "a lookaround"),
    ({"target_modules": "q" * 300}, "is 300 characters long; at most 256"),
    ({"exclude_modules": BACKTRACKING}, "exclude_modules '(.|.){1,23}Z' is not accepted"),
    ({"rank_pattern": {BACKTRACKING: 4}}, "rank_pattern key '(.|.){1,23}Z' is not accepted"),
    ({"alpha_pattern": {".*.*.*q_proj": 16}}, "alpha_pattern key '.*.*.*q_proj' may take too long"),
    ({"modules_to_save": [BACKTRACKING]}, "modules_to_save entry '(.|.){1,23}Z' is not accepted"),
    ({"modules_to_save": [".*.*lm_head"]}, "modules_to_save entry '.*.*lm_head' may take too long"),  # peft wraps it
    ({"layers_to_transform": [0], "layers_pattern": BACKTRACKING}, "layers_pattern '(.|.){1,23}Z' is not accepted"),
])
def test_patterns_that_backtrack_are_refused_before_the_base_loads(manager, loads, tiny_llama_dir, tiny_lora_dirs,
                                                                   tmp_path, changes, words):
    bad = _copy(tiny_lora_dirs["a"], tmp_path / "bad", **changes)
    with pytest.raises(LaunchError) as err:
        _launch(manager, tiny_llama_dir, "pattern", peft_model_config=_peft(z=bad))
    assert "adapter 'z'" in str(err.value) and words in str(err.value), str(err.value)
    assert not loads


def test_the_pattern_rule_accepts_what_adapters_use():
    from xinference_nb.engines.lora_guards import MAX_PATTERN_WORK, pattern_problem, pattern_work

    for fine in [r".*\.(q_proj|v_proj)", r"(.*\.)?(q_proj|k_proj)$", r"model\.layers\.\d+\.self_attn\.(q_proj|k_proj)",
                 r"^model\.layers\.[0-9]{1,3}\.mlp\.(gate|up|down)_proj$", r".*(?:attn|mlp).*proj", "q_proj",
                 r"model.layers.0.self_attn.q_proj", r"[qkv]_proj", r"\bq_proj"]:
        assert pattern_problem(fine) is None, (fine, pattern_problem(fine))
    # the bound is on the work: each repeat in a row multiplies it by about a name's length
    one, two, three = (pattern_work(".*" * n + "q_proj") for n in (1, 2, 3))
    assert one < two <= MAX_PATTERN_WORK < three and two / one > 30 and three / two > 30
    assert pattern_work("(q|k|v)_proj") < pattern_work("(q|k|v)_proj" + "?" ) < 2 * pattern_work("(q|k|v)_proj") + 300


def test_rest_launch_with_a_backtracking_pattern_is_refused_and_the_server_keeps_answering(
        loads, tiny_llama_dir, tiny_lora_dirs, tmp_path):
    """Over a real server: the launch is a 400 naming the key, before the base loads (nothing was
    matched); the server answers other requests meanwhile and after."""
    import httpx

    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    root = tmp_path / "root"
    bad = _copy(tiny_lora_dirs["a"], root / "bad", target_modules=BACKTRACKING)
    server = start_in_thread(create_app(Client(), allowed_roots=[str(tiny_llama_dir.parent), str(root)]), port=0)
    body = {"model_name": "qwen2.5-instruct", "model_engine": "transformers", "model_path": str(tiny_llama_dir),
            "model_uid": "guard-rest-pattern", "n_gpu": None, "peft_model_config": _peft(z=bad)}
    answered, done = [], threading.Event()

    def poll():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while True:   # at least once, until the launch is answered
                answered.append(c.get("/v1/models").status_code)
                if done.is_set():
                    break

    poller = threading.Thread(target=poll)
    try:
        poller.start()
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post("/v1/models", json=body)
            assert r.status_code == 400, r.text
            assert "target_modules '(.|.){1,23}Z' is not accepted" in r.json()["detail"], r.text
            done.set()
            poller.join(60)
            assert c.get("/v1/models").status_code == 200
        assert answered and set(answered) == {200}
        assert not loads
    finally:
        done.set()
        server.stop()


# ================================================================== 6. links inside allowed folders
def test_rest_refuses_links_out_of_the_roots_inside_allowed_folders(tiny_llama_dir, tiny_lora_dirs, tmp_path):
    """An adapter folder inside the roots whose adapter_model.safetensors links outside launched with
    200 (links on the folder itself were refused). Every file an engine may open in a folder sent
    over REST (adapter, model_path, a registration's model_uri) is resolved against the roots; links
    that stay inside the roots (the Hugging Face cache's snapshots → blobs) are fine."""
    import httpx

    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    from server_fakes import embedding_doc

    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(tiny_lora_dirs["a"], outside / "adapter")
    shutil.copytree(tiny_llama_dir, outside / "model")
    linked_weights = shutil.copytree(tiny_lora_dirs["a"], root / "linked-weights")
    (linked_weights / "adapter_model.safetensors").unlink()
    os.symlink(outside / "adapter" / "adapter_model.safetensors", linked_weights / "adapter_model.safetensors")
    linked_config = shutil.copytree(tiny_lora_dirs["a"], root / "linked-config")
    (linked_config / "adapter_config.json").unlink()
    os.symlink(outside / "adapter" / "adapter_config.json", linked_config / "adapter_config.json")
    linked_sub = shutil.copytree(tiny_lora_dirs["a"], root / "linked-sub")
    os.symlink(outside / "adapter", linked_sub / "more")               # a folder inside, linking out
    model = shutil.copytree(tiny_llama_dir, root / "model")
    (model / "model.safetensors").unlink()
    os.symlink(outside / "model" / "model.safetensors", model / "model.safetensors")
    # inside the roots: a weight file linked to a blob elsewhere in the roots, as the HF cache does
    blobs = root / "blobs"
    blobs.mkdir()
    cached = shutil.copytree(tiny_lora_dirs["a"], root / "snapshot")
    shutil.move(str(cached / "adapter_model.safetensors"), str(blobs / "0123abcd"))
    os.symlink(os.path.join("..", "blobs", "0123abcd"), cached / "adapter_model.safetensors")
    os.symlink(root / "linked-config", cached / "sub")                 # a folder link inside the roots: walked

    client = Client()
    running = set(client.list_models())
    server = start_in_thread(create_app(client, allowed_roots=[str(tiny_llama_dir.parent), str(root)]), port=0)
    body = {"model_name": "qwen2.5-instruct", "model_engine": "transformers", "model_path": str(tiny_llama_dir),
            "model_uid": "guard-rest-links", "n_gpu": None}
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for folder, file in [(linked_weights, linked_weights / "adapter_model.safetensors"),
                                 (linked_config, linked_config / "adapter_config.json"),
                                 (linked_sub, linked_sub / "more"),
                                 (cached, cached / "sub" / "adapter_config.json")]:
                r = c.post("/v1/models", json={**body, "peft_model_config": _peft(z=folder)})
                detail = r.json()["detail"]
                assert r.status_code == 403, (folder, r.text)
                assert "peft_model_config.lora_list[0].local_path" in detail and f"{file} (in " in detail, detail
                assert "outside the server's allowed model roots" in detail, detail
            r = c.post("/v1/models", json={**body, "model_path": str(model)})
            assert r.status_code == 403 and f"{model / 'model.safetensors'} (in " in r.json()["detail"], r.text
            doc = embedding_doc(str(model), "guard-linked-emb")
            r = c.post("/v1/model_registrations/embedding", json={"model": json.dumps(doc), "persist": False})
            assert r.status_code == 403 and "model.safetensors (in " in r.json()["detail"], r.text
            assert set(client.list_models()) == running
            (cached / "sub").unlink()
            r = c.post("/v1/models", json={**body, "peft_model_config": _peft(z=cached)})
            assert r.status_code == 200, r.text
            r = c.post("/v1/completions", json={"model": "guard-rest-links", "prompt": "The cat", "lora_name": "z",
                                                **GREEDY})
            assert r.status_code == 200 and r.json()["choices"][0]["text"], r.text
    finally:
        if "guard-rest-links" in client.list_models():
            client.terminate_model("guard-rest-links")
        server.stop()
