"""CUDA paths on a real GPU (marker ``gpu``; every test skips with a reason where no CUDA device is
visible). Run them with ``scripts/gpu-check.sh`` on a GPU machine.

* transformers LLM with ``n_gpu="auto"`` (one GPU: every weight on cuda:0, logits equal to a CPU
  copy), ``gpu_idx=[i]``, and GPU requests that cannot be met (clear LaunchError, nothing left);
* bitsandbytes 4-bit / 8-bit on CUDA (skipped with a reason when bitsandbytes is not installed);
* diffusers on CUDA (float16 by default, float32 on request, images close to the CPU's);
* sentence-transformers embeddings on CUDA (equal to the CPU's);
* the memory estimate against ``torch.cuda.max_memory_allocated`` of a ~90M-parameter Llama that
  fills its context (within 25 %, float32 and bfloat16);
* terminate gives the CUDA memory back (``torch.cuda.memory_allocated`` back to the baseline).
* continuous batching (concurrent greedy requests equal the serial answers), peft LoRA adapters
  (adapter answer equal to peft's merged model) and vision chat (the image reaches the model), on CUDA.

Memory is compared after ``gc`` + ``empty_cache`` with torch's per-thread cuBLAS workspaces
cleared: those are torch's cache for whichever thread ran a matmul (a streaming generation runs in
its own thread), not memory a model holds.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from xinference_nb import Client
from xinference_nb.errors import LaunchError
from xinference_nb.client.handles import handle_of
from xinference_nb.manager import ModelManager, get_manager

try:  # tests/ is a rootdir-relative module dir (no __init__.py) ...
    import tiny_models
    from public_api import launch_by_path
except ImportError:  # pragma: no cover - ... or a package
    from tests import tiny_models
    from tests.public_api import launch_by_path

MiB = 2 ** 20
FREED_TOLERANCE = 4 * MiB        # "back to the baseline": within a few MB
ESTIMATE_TOLERANCE = 0.25        # the estimate within 25 % of the measured peak
GREEDY = {"temperature": 0, "max_tokens": 16}
MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]


def _no_cuda_reason() -> str | None:
    """Why the gpu tests cannot run here (None: they can). Imports torch only where a GPU may be."""
    nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/gpus", "/dev/dxg")
    if not any(os.path.exists(p) for p in nodes) and shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine (no /dev/nvidia*); run scripts/gpu-check.sh on a CUDA machine"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA device"
    return None


_REASON = _no_cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def manager():
    m = ModelManager()
    yield m
    m.terminate_all()


@pytest.fixture(autouse=True)
def _terminate_leftovers():
    """Models launched through Client() live in the process-wide manager: none outlives its test."""
    yield
    get_manager().terminate_all()


def _settled_cuda_bytes() -> int:
    """torch.cuda.memory_allocated() once garbage, cached blocks and cuBLAS workspaces are gone."""
    import gc

    import torch

    gc.collect()
    torch.cuda.synchronize()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated())


def _assert_freed(baseline: int, what: str) -> None:
    now = _settled_cuda_bytes()
    assert now - baseline <= FREED_TOLERANCE, (
        f"{what}: {(now - baseline) / MiB:.1f} MiB of CUDA memory still allocated after terminate "
        f"(baseline {baseline / MiB:.1f} MiB, now {now / MiB:.1f} MiB)")


def _warm_cublas() -> None:
    """Run fp32 / bf16 / fp16 matmuls once so the cuBLAS(Lt) workspaces of this thread exist already."""
    import torch

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.ones(8, 64, device="cuda", dtype=dtype)
        w = torch.ones(64, 64, device="cuda", dtype=dtype)
        torch.nn.functional.linear(x, w)
        torch.nn.functional.linear(x, w, torch.ones(64, device="cuda", dtype=dtype))
    torch.cuda.synchronize()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


_launch_llm = launch_by_path   # the built-in qwen2.5-instruct family from the tiny model's own files


def _hf_model(manager, uid):
    return manager.running_model(uid).model.model


def _param_devices(module) -> set[str]:
    return {str(p.device) for p in module.parameters()} | {str(b.device) for b in module.buffers()}


# ------------------------------------------------------------------------------------------------
# transformers LLM: placement
# ------------------------------------------------------------------------------------------------
def test_transformers_n_gpu_auto_puts_every_weight_on_the_gpu(manager, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    baseline = _settled_cuda_bytes()
    uid = _launch_llm(manager, tiny_llama_dir, n_gpu="auto")
    count = _gpu_count()
    desc = manager.describe_model(uid)
    assert desc["accelerators"] == [str(i) for i in range(count)]
    hf = _hf_model(manager, uid)
    devices = _param_devices(hf)
    assert all(d.startswith("cuda") for d in devices), devices
    if count == 1:
        assert devices == {"cuda:0"}
        assert str(manager.running_model(uid).model.device) == "cuda:0"
    assert next(hf.parameters()).dtype == torch.float32  # dtype "auto": config.json's float32

    # the same numbers as the weights on the CPU
    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    ids = tok("Hello, how are you today? The quick brown fox.", return_tensors="pt").input_ids
    with torch.no_grad():
        want = ref(ids).logits
        got = hf(ids.to(next(hf.parameters()).device)).logits.float().cpu()
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-3), (got - want).abs().max()
    del hf, ref

    h = handle_of(manager, uid)
    res = h.chat(MESSAGES, generate_config=GREEDY)
    assert res["usage"]["completion_tokens"] > 0
    chunks = list(h.chat(MESSAGES, generate_config={**GREEDY, "stream": True}))
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert desc["memory_bytes"] and desc["memory_bytes"] > 0
    manager.terminate_model(uid)
    _assert_freed(baseline, "tiny Llama on the GPU")


def test_transformers_n_gpu_none_stays_on_the_cpu(manager, tiny_llama_dir):
    baseline = _settled_cuda_bytes()
    uid = _launch_llm(manager, tiny_llama_dir, n_gpu=None)
    assert manager.describe_model(uid)["accelerators"] == []
    assert _param_devices(_hf_model(manager, uid)) == {"cpu"}
    assert handle_of(manager, uid).chat(MESSAGES, generate_config=GREEDY)["usage"]["completion_tokens"] > 0
    assert _settled_cuda_bytes() - baseline <= FREED_TOLERANCE  # nothing went to the GPU
    manager.terminate_model(uid)


def test_transformers_gpu_idx(manager, tiny_llama_dir):
    count = _gpu_count()
    last = count - 1
    baseline = _settled_cuda_bytes()
    uid = _launch_llm(manager, tiny_llama_dir, gpu_idx=[last])
    assert manager.describe_model(uid)["accelerators"] == [str(last)]
    assert _param_devices(_hf_model(manager, uid)) == {f"cuda:{last}"}
    assert handle_of(manager, uid).chat(MESSAGES, generate_config=GREEDY)["usage"]["completion_tokens"] > 0
    manager.terminate_model(uid)
    _assert_freed(baseline, f"tiny Llama on gpu_idx=[{last}]")

    # GPUs that are not there: a clear error, nothing launched
    with pytest.raises(LaunchError, match=r"gpu_idx \[%d\] not visible" % count):
        _launch_llm(manager, tiny_llama_dir, gpu_idx=[count])
    with pytest.raises(LaunchError, match=r"n_gpu=%d but only %d GPU" % (count + 1, count)):
        _launch_llm(manager, tiny_llama_dir, n_gpu=count + 1)
    assert manager.list_models() == {} and manager._launching == {}


# ------------------------------------------------------------------------------------------------
# bitsandbytes on CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantization", ["4-bit", "8-bit"])
def test_bitsandbytes_on_cuda(manager, tiny_llama_dir, quantization):
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (scripts/gpu-wheels.sh carries "
                                                     "its CUDA wheel in .whl/)")
    import torch

    baseline = _settled_cuda_bytes()
    full = _launch_llm(manager, tiny_llama_dir, n_gpu="auto")
    uid = _launch_llm(manager, tiny_llama_dir, n_gpu="auto", quantization=quantization)
    desc = manager.describe_model(uid)
    assert desc["quantization"] == quantization and desc["model_format"] == "pytorch"
    hf = _hf_model(manager, uid)
    cls = bnb.nn.Linear4bit if quantization == "4-bit" else bnb.nn.Linear8bitLt
    layers = [m for m in hf.modules() if isinstance(m, cls)]
    assert layers, f"no {cls.__name__} layer in the {quantization} model"
    stored = torch.uint8 if quantization == "4-bit" else torch.int8
    for layer in layers:
        assert layer.weight.device.type == "cuda" and layer.weight.dtype == stored
    assert all(d.startswith("cuda") for d in _param_devices(hf))
    del hf, layers
    assert desc["memory_bytes"] < manager.describe_model(full)["memory_bytes"]

    h = handle_of(manager, uid)
    assert h.chat(MESSAGES, generate_config=GREEDY)["usage"]["completion_tokens"] > 0
    chunks = list(h.chat(MESSAGES, generate_config={**GREEDY, "stream": True}))
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    manager.terminate_model(uid)
    manager.terminate_model(full)
    _assert_freed(baseline, f"tiny Llama {quantization}")


# ------------------------------------------------------------------------------------------------
# diffusers on CUDA
# ------------------------------------------------------------------------------------------------
def _image_doc(path, name):
    return {"version": 2, "model_name": name, "model_family": "stable_diffusion", "model_uri": str(path),
            "model_ability": ["text2image", "image2image"], "default_generate_config": {"num_inference_steps": 2}}


def _pixels(result):
    import base64
    import io

    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(result["data"][0]["b64_json"])))
    assert img.size == (64, 64)
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def test_diffusers_on_cuda(tiny_sd_dir):
    pytest.importorskip("diffusers")
    import numpy as np
    import torch

    client = Client()
    client.register_model("image", json.dumps(_image_doc(tiny_sd_dir, "gpu-tiny-sd")), persist=False,
                          overwrite=True)

    def run(**launch):
        uid = client.launch_model("gpu-tiny-sd", model_type="image", **launch)
        pipe = get_manager().running_model(uid).model.pipe
        modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
        devices = set().union(*(_param_devices(c) for c in modules))
        dtype = pipe.unet.dtype
        del pipe, modules
        out = client.get_model(uid).text_to_image("a red apple on a wooden table", size="64*64",
                                                  response_format="b64_json", seed=0)
        client.terminate_model(uid)
        return devices, dtype, _pixels(out)

    cpu_devices, cpu_dtype, cpu = run(n_gpu=None)
    assert cpu_devices == {"cpu"} and cpu_dtype == torch.float32

    on_gpus = {"cuda:0"} if _gpu_count() == 1 else {f"cuda:{i}" for i in range(_gpu_count())}
    baseline = _settled_cuda_bytes()
    devices, dtype, fp16 = run(n_gpu="auto")
    assert devices <= on_gpus and dtype == torch.float16   # one GPU: pipe.to("cuda:0") in float16
    _assert_freed(baseline, "tiny SD pipeline (float16)")
    devices, dtype, fp32 = run(n_gpu="auto", torch_dtype="float32")
    assert devices <= on_gpus and dtype == torch.float32
    _assert_freed(baseline, "tiny SD pipeline (float32)")

    # the same seed gives (nearly) the same picture on the GPU as on the CPU
    assert np.abs(fp32 - cpu).mean() <= 2.0, np.abs(fp32 - cpu).mean()
    assert fp16.std() > 0, "the float16 image is one flat colour (NaNs decoded to black?)"
    # float16 vs the CPU is not compared pixel by pixel: with random weights, many denoising steps amplify
    # float16 rounding (seen on an H200: mean difference 44 of 255, while float32 matched the CPU within 2)
    assert np.isfinite(fp16).all()


# ------------------------------------------------------------------------------------------------
# sentence-transformers on CUDA
# ------------------------------------------------------------------------------------------------
ST_DIM = 32


def _build_tiny_sentence_transformer(path):
    """A tiny random BERT (the tiny Llama's BPE tokenizer) saved as a sentence-transformers folder
    (modules.json: Transformer + mean Pooling), the layout all-MiniLM-L6-v2 has."""
    from transformers import BertConfig, BertModel

    path.mkdir(parents=True)
    tok = tiny_models.build_tiny_llama_tokenizer()
    tok.model_max_length = 128
    tok.save_pretrained(path)
    cfg = tiny_models._portable_tokenizer_config(path)
    cfg.pop("chat_template", None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for extra in ("chat_template.jinja",):
        (path / extra).unlink(missing_ok=True)
    tiny_models._seed()
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=ST_DIM, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
              ).eval().save_pretrained(path, safe_serialization=True)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": ST_DIM, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    return path


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    with tiny_models.quiet():
        return _build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_st") / "tiny-st")


def test_sentence_transformers_embedding_on_cuda(tiny_st_dir):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    texts = ["The quick brown fox jumps over the lazy dog.", "A cat sits on a blue chair.", "Hello!"]
    want = SentenceTransformer(str(tiny_st_dir), device="cpu").encode(texts, convert_to_numpy=True)
    assert want.shape == (3, ST_DIM)

    doc = {"version": 2, "model_name": "gpu-tiny-st", "dimensions": ST_DIM, "max_tokens": 128, "language": ["en"],
           "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface",
                            "model_uri": f"file://{tiny_st_dir}", "quantization": "none"}]}
    client = Client()
    client.register_model("embedding", json.dumps(doc), persist=False, overwrite=True)
    baseline = _settled_cuda_bytes()
    uid = client.launch_model("gpu-tiny-st", model_type="embedding", n_gpu="auto")
    assert client.describe_model(uid)["accelerators"] == [str(i) for i in range(_gpu_count())]
    st = get_manager().running_model(uid).model.model
    assert str(st.device) == "cuda:0" and all(d.startswith("cuda") for d in _param_devices(st))
    del st
    out = client.get_model(uid).create_embedding(texts)
    got = np.array([row["embedding"] for row in out["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert out["usage"]["total_tokens"] > 0
    client.terminate_model(uid)
    _assert_freed(baseline, "tiny sentence-transformers model")


# ------------------------------------------------------------------------------------------------
# memory: the estimate against the measured peak, and terminate giving it back
# ------------------------------------------------------------------------------------------------
MEMORY_CONTEXT = 1024
# ~89M parameters (14 layers of hidden 768, MLP 2048, 12 heads / 4 KV heads): big enough that
# weights and KV cache, not constant overheads, make up the footprint.
MEMORY_LLAMA = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 14, "num_attention_heads": 12,
                "num_key_value_heads": 4, "max_position_embeddings": MEMORY_CONTEXT, "initializer_range": 0.02}


@pytest.fixture(scope="module")
def memory_llama_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    with tiny_models.quiet():
        return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("memory_llama") / "memory-llama",
                                            overrides=MEMORY_LLAMA)


def _long_prompt(path, tokens: int) -> str:
    """Text of about ``tokens`` tokens for the model at ``path``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    ids = tok(tiny_models.CORPUS * 8, add_special_tokens=False)["input_ids"]
    assert len(ids) > tokens
    return tok.decode(ids[:tokens])


@pytest.mark.parametrize("dtype", [None, "bfloat16"], ids=["float32", "bfloat16"])
def test_memory_estimate_matches_cuda_peak(manager, memory_llama_dir, dtype):
    import torch

    _settled_cuda_bytes()
    _warm_cublas()
    baseline = int(torch.cuda.memory_allocated())
    torch.cuda.reset_peak_memory_stats()
    options = {"dtype": dtype} if dtype else {}
    uid = _launch_llm(manager, memory_llama_dir, n_gpu="auto", context_length=MEMORY_CONTEXT, **options)
    desc = manager.describe_model(uid)
    hf = _hf_model(manager, uid)
    params = sum(p.numel() for p in hf.parameters())
    assert 50e6 < params < 100e6
    assert next(hf.parameters()).dtype == (torch.bfloat16 if dtype else torch.float32)
    del hf

    # fill the context: a prompt of nearly MEMORY_CONTEXT tokens, then a few new ones
    res = handle_of(manager, uid).generate(_long_prompt(memory_llama_dir, MEMORY_CONTEXT - 96),
                                          generate_config={"temperature": 0, "max_tokens": 64})
    assert res["usage"]["prompt_tokens"] >= MEMORY_CONTEXT - 160
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated()) - baseline
    estimate = desc["memory_estimate_bytes"]
    detail = (f"estimate {estimate / MiB:.1f} MiB vs measured peak {peak / MiB:.1f} MiB "
              f"({(estimate - peak) / peak:+.1%}); footprint after load {desc['memory_bytes'] / MiB:.1f} MiB, "
              f"{params / 1e6:.1f}M parameters, {res['usage']['total_tokens']} tokens in context")
    print(f"[{dtype or 'float32'}] {detail}")
    assert abs(estimate - peak) <= ESTIMATE_TOLERANCE * peak, detail
    manager.terminate_model(uid)


def test_terminate_gives_cuda_memory_back(manager, memory_llama_dir):
    import torch

    baseline = _settled_cuda_bytes()
    uid = _launch_llm(manager, memory_llama_dir, n_gpu="auto", context_length=MEMORY_CONTEXT)
    loaded = _settled_cuda_bytes() - baseline
    params = sum(p.numel() * p.element_size() for p in _hf_model(manager, uid).parameters())
    assert loaded >= params * 0.95, f"only {loaded / MiB:.1f} MiB on the GPU for {params / MiB:.1f} MiB of weights"

    h = handle_of(manager, uid)
    assert h.chat(MESSAGES, generate_config=GREEDY)["usage"]["completion_tokens"] > 0
    stream = h.chat(MESSAGES, generate_config={"temperature": 0, "max_tokens": 64, "stream": True})
    next(stream), next(stream)  # the role chunk, then the first generated text: generation is running
    stream.close()              # a stream left half-read, then closed: its generation thread stops
    del stream, h
    manager.terminate_model(uid)
    assert manager.list_models() == {}
    _assert_freed(baseline, "~90M-parameter Llama after chat and a closed stream")
    print(f"loaded {loaded / MiB:.1f} MiB, freed to within {(_settled_cuda_bytes() - baseline) / MiB:.2f} MiB "
          f"of the baseline on {torch.cuda.get_device_name(0)}")


# ------------------------------------------------------------------------------------------------
# continuous batching, LoRA adapters and vision chat on CUDA
# ------------------------------------------------------------------------------------------------
def test_continuous_batching_on_cuda(manager, tiny_llama_dir):
    """Concurrent greedy requests share forward passes on the GPU and each gets what it gets alone
    (float32, TF32 off: a batch's matmuls may pick other kernels than one row's, so at most one of
    the six answers may part from the serial one by a near-tie of the random tiny model)."""
    import threading

    prompts = ["Hello", "Once upon a time there was a", "The cat", "A longer prompt about many things", "x", "1 2 3"]
    batched = handle_of(manager, _launch_llm(manager, tiny_llama_dir, n_gpu="auto", model_uid="gpu-batched"))
    serial = handle_of(manager, _launch_llm(manager, tiny_llama_dir, n_gpu="auto", model_uid="gpu-serial",
                                           max_num_seqs=1))
    assert manager.engine_model("gpu-batched").scheduler is not None
    alone = [serial.generate(p, GREEDY)["choices"][0]["text"] for p in prompts]
    together: list = [None] * len(prompts)

    def run(i: int) -> None:
        together[i] = batched.generate(prompts[i], GREEDY)["choices"][0]["text"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(t, str) for t in together), together
    assert sum(a != b for a, b in zip(alone, together)) <= 1, list(zip(alone, together))


def test_lora_adapters_on_cuda(manager, tiny_llama_dir, tiny_lora_dirs, tiny_lora_merged_dir):
    """peft adapters on a CUDA base: adapter "a" answers what peft's merged model answers, on the GPU."""
    loras = {"lora_list": [{"lora_name": n, "local_path": str(p)} for n, p in tiny_lora_dirs.items()]}
    with_loras = handle_of(manager, _launch_llm(manager, tiny_llama_dir, n_gpu="auto", model_uid="gpu-lora",
                                               peft_model_config=loras))
    merged = handle_of(manager, _launch_llm(manager, tiny_lora_merged_dir, n_gpu="auto", model_uid="gpu-merged"))
    assert _param_devices(_hf_model(manager, "gpu-lora")) == {"cuda:0"}
    a = with_loras.chat(MESSAGES, generate_config=dict(GREEDY, lora_name="a"))["choices"][0]["message"]["content"]
    base = with_loras.chat(MESSAGES, generate_config=GREEDY)["choices"][0]["message"]["content"]
    assert a == merged.chat(MESSAGES, generate_config=GREEDY)["choices"][0]["message"]["content"]
    assert a != base


def test_vision_chat_on_cuda(tiny_llava_dir):
    """A vision model on the GPU: the image reaches it (black and white give different answers)."""
    from PIL import Image

    from xinference_nb.parse import parse_model

    client = Client()
    client.register_model("LLM", parse_model(tiny_llava_dir, model_name="gpu-llava").to_json(), overwrite=True)
    try:
        uid = client.launch_model("gpu-llava", model_engine="transformers", n_gpu="auto", show_progress=False)
        handle = client.get_model(uid)
        assert _param_devices(get_manager().running_model(uid).model.model) == {"cuda:0"}
        answers = []
        for color in ("black", "white"):
            msg = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                {"type": "image_url", "image_url": {"url": Image.new("RGB", (32, 32), color)}}]}]
            answers.append(handle.chat(msg, generate_config=GREEDY)["choices"][0]["message"]["content"])
        assert answers[0] != answers[1], answers
    finally:
        get_manager().terminate_all()
        client.unregister_model("LLM", "gpu-llava")
