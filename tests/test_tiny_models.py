"""The tiny test models really load and run with their real libraries (no mocks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

try:
    import tiny_models
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests import tiny_models

pytestmark = pytest.mark.slow

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, what is the weather?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


# --------------------------------------------------------------------------------------------------
# 1. tiny llama (transformers)
# --------------------------------------------------------------------------------------------------
def test_tiny_llama_files_and_config(tiny_llama_dir):
    names = {p.name for p in tiny_llama_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= names
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    tok_cfg = json.loads((tiny_llama_dir / "tokenizer_config.json").read_text())
    gen = json.loads((tiny_llama_dir / "generation_config.json").read_text())
    assert "chat_template" not in tok_cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["model_type"] == "llama"
    assert cfg["torch_dtype"] == "float32"
    assert cfg["tie_word_embeddings"] is False
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (
        64,
        2,
        4,
        2,
    )
    assert cfg["max_position_embeddings"] == 2048
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (0, 2)
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (0, 2)
    assert (tiny_llama_dir / "chat_template.jinja").read_text() == tiny_models.chatml_template()


def test_tiny_llama_tokenizer_and_template(tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    assert len(tok) == cfg["vocab_size"] == 772
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"])
    assert ids == [0, 1, 2, 768, 769]
    assert tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"]) == [770, 771]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|endoftext|>")
    assert "<|im_start|>" in tok.all_special_tokens
    # <think>/<tool_call> are added but not special (like Qwen): they survive skip_special_tokens.
    enc = tok("<think>hi</think><|im_end|>").input_ids
    assert enc[0] == 768 and enc[-1] == 2
    assert tok.decode(enc, skip_special_tokens=True) == "<think>hi</think>"
    assert tok.decode(tok("Hello, world!").input_ids) == "Hello, world!"

    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHello, what is the weather?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_gen = tok.apply_chat_template(MESSAGES[1:], add_generation_prompt=False, tokenize=False)
    assert no_gen == "<|im_start|>user\nHello, what is the weather?<|im_end|>\n"

    history = MESSAGES + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ],
        },
        {"role": "tool", "content": '{"temp": 12}'},
    ]
    with_tools = tok.apply_chat_template(history, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert with_tools.startswith("<|im_start|>system\nYou are terse.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in with_tools
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
    ) in with_tools
    assert "<|im_start|>user\n<tool_response>\n{\"temp\": 12}\n</tool_response><|im_end|>\n" in with_tools
    assert with_tools.endswith("<|im_start|>assistant\n")
    # OpenAI-style string arguments are inserted verbatim (not double-encoded).
    history[2]["tool_calls"][0]["function"]["arguments"] = '{"city": "Rome"}'
    rendered = tok.apply_chat_template(history, tools=TOOLS, tokenize=False)
    assert '{"name": "get_weather", "arguments": {"city": "Rome"}}' in rendered


def test_tiny_llama_generates(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32
    assert model.get_output_embeddings().weight.shape == (772, 64)
    inputs = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    n_in = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert out.shape == (1, n_in + 10)
    assert isinstance(tok.decode(out[0, n_in:]), str)
    # greedy decoding is deterministic
    with torch.no_grad():
        again = model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert torch.equal(out, again)


def test_tiny_llama_is_deterministic(tiny_llama_dir, tmp_path):
    with tiny_models.quiet():
        again = tiny_models.build_tiny_llama(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "config.json"):
        assert (again / name).read_bytes() == (tiny_llama_dir / name).read_bytes(), name


def test_tiny_reasoning_llama(tiny_reasoning_llama_dir, tiny_llama_dir):
    from transformers import AutoTokenizer

    assert (tiny_reasoning_llama_dir / "model.safetensors").read_bytes() == (
        tiny_llama_dir / "model.safetensors"
    ).read_bytes()
    tok = AutoTokenizer.from_pretrained(tiny_reasoning_llama_dir)
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nHello, what is the weather?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    history = MESSAGES + [
        {"role": "assistant", "content": "<think>\nit is cold\n</think>\n\nCold."},
        {"role": "user", "content": "Thanks"},
    ]
    rendered = tok.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>assistant\nCold.<|im_end|>\n" in rendered
    assert "it is cold" not in rendered
    assert rendered.endswith("<|im_start|>assistant\n<think>\n")


# --------------------------------------------------------------------------------------------------
# 2. GGUF (llama.cpp)
# --------------------------------------------------------------------------------------------------
def test_tiny_gguf_metadata(tiny_gguf_file):
    import gguf

    reader = gguf.GGUFReader(str(tiny_gguf_file))

    def field(key):
        f = reader.fields[key]
        return f.contents()

    assert field("general.architecture") == "llama"
    assert field("general.name") == "tiny-llama"
    assert field("llama.block_count") == 2
    assert field("llama.context_length") == 2048
    assert field("llama.embedding_length") == 64
    assert field("llama.attention.head_count_kv") == 2
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.eos_token_id") == 2
    assert field("tokenizer.ggml.bos_token_id") == 0
    assert field("tokenizer.chat_template") == tiny_models.chatml_template()
    tokens = field("tokenizer.ggml.tokens")
    types = field("tokenizer.ggml.token_type")
    assert len(tokens) == 772 and tokens[1] == "<|im_start|>" and tokens[768] == "<think>"
    assert types[2] == gguf.TokenType.CONTROL and types[768] == gguf.TokenType.USER_DEFINED
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.attn_q.weight", "blk.1.ffn_down.weight"} <= names
    assert len(names) == 3 + 2 * 9


def test_tiny_gguf_runs_in_llama_cpp(tiny_gguf_file, tiny_llama_dir):
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = llama_cpp.Llama(model_path=str(tiny_gguf_file), n_ctx=256, logits_all=True, verbose=False, seed=0)
    assert llm.n_vocab() == 772
    assert (llm.token_bos(), llm.token_eos()) == (0, 2)

    # same tokenization as the HF tokenizer (special tokens and <think> included)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = "<|im_start|>user\nHello, what's the weather in Paris today?<think> ok</think><|im_end|>\n"
    hf_ids = tok(text).input_ids
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == hf_ids

    # same logits as transformers (q/k permuted correctly for llama.cpp's rope); F16 KV cache => atol
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        hf_logits = model(torch.tensor([hf_ids])).logits[0].numpy()
    llm.reset()
    llm.eval(hf_ids)
    cpp_logits = np.asarray(llm.scores[: len(hf_ids)])
    assert cpp_logits.shape == hf_logits.shape == (len(hf_ids), 772)
    np.testing.assert_allclose(cpp_logits, hf_logits, atol=0.05)

    # llama-cpp-python renders the embedded template exactly like transformers does
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<|endoftext|>"
    )
    history = MESSAGES + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert formatter(messages=history, tools=TOOLS).prompt == tok.apply_chat_template(
        history, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )

    out = llm.create_completion("hello", max_tokens=8, temperature=0.0)
    assert isinstance(out["choices"][0]["text"], str) and out["usage"]["completion_tokens"] <= 8
    chat = llm.create_chat_completion(
        [{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.0
    )
    msg = chat["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    prompt_ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    assert chat["usage"]["prompt_tokens"] == len(prompt_ids)


def test_tiny_reasoning_gguf(tiny_reasoning_gguf_file):
    llama_cpp = pytest.importorskip("llama_cpp")

    llm = llama_cpp.Llama(model_path=str(tiny_reasoning_gguf_file), n_ctx=256, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == tiny_models.chatml_template(reasoning=True)
    assert llm.metadata["general.name"] == "tiny-reasoning-llama"
    chat = llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0.0)
    assert isinstance(chat["choices"][0]["message"]["content"], str)


# --------------------------------------------------------------------------------------------------
# 3. Stable Diffusion (diffusers)
# --------------------------------------------------------------------------------------------------
def test_tiny_sd_generates_image(tiny_sd_dir):
    import torch
    from diffusers import DiffusionPipeline
    from PIL import Image

    assert (tiny_sd_dir / "model_index.json").is_file()
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (tiny_sd_dir / "tokenizer").iterdir()}
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd_dir))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.tokenizer.model_max_length == 77
    pipe.set_progress_bar_config(disable=True)
    result = pipe("a photo of a cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    image = result.images[0]
    assert isinstance(image, Image.Image)
    assert image.size == (64, 64) and image.mode == "RGB"
    arr = pipe(
        "a red apple", negative_prompt="blue", num_inference_steps=1, height=32, width=32, output_type="np"
    ).images
    assert arr.shape == (1, 32, 32, 3)


# --------------------------------------------------------------------------------------------------
# 4. VITS text-to-speech (transformers)
# --------------------------------------------------------------------------------------------------
def test_tiny_vits_speaks(tiny_vits_dir):
    import numpy as np
    import transformers

    tts = transformers.pipeline("text-to-speech", model=str(tiny_vits_dir))
    out = tts("Hello world, this is a test!")
    assert out["sampling_rate"] == 16000
    audio = np.asarray(out["audio"])
    assert audio.dtype == np.float32 and audio.ndim >= 1 and audio.size > 100
    assert np.isfinite(audio).all()


# --------------------------------------------------------------------------------------------------
# 5. Whisper speech recognition (transformers)
# --------------------------------------------------------------------------------------------------
def test_tiny_whisper_transcribes(tiny_whisper_dir):
    import numpy as np
    import transformers

    asr = transformers.pipeline("automatic-speech-recognition", model=str(tiny_whisper_dir))
    assert asr.feature_extractor.feature_size == asr.model.config.num_mel_bins == 80
    assert len(asr.tokenizer) == asr.model.config.vocab_size
    sine = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    out = asr(sine)
    assert isinstance(out, dict) and isinstance(out["text"], str)
    out = asr({"raw": sine, "sampling_rate": 16000}, generate_kwargs={"language": "en", "task": "transcribe"})
    assert isinstance(out["text"], str)
    out = asr(sine, return_timestamps=True)
    assert isinstance(out["chunks"], list)


# --------------------------------------------------------------------------------------------------
# 6. packaged MiniLM, 7. cross-encoder (sentence-transformers)
# --------------------------------------------------------------------------------------------------
def test_minilm_embeds(minilm_dir):
    from sentence_transformers import SentenceTransformer

    assert (minilm_dir / "modules.json").is_file()
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    emb = st.encode(["hello world", "good morning"])
    assert emb.shape == (2, 384)


def test_cross_encoder_scores_pairs(cross_encoder_dir):
    import numpy as np
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(cross_encoder_dir), device="cpu")
    pairs = [
        ("what is the capital of france", "Paris is the capital of France."),
        ("what is the capital of france", "Cats sleep a lot."),
        ("what is the capital of france", "Berlin is in Germany."),
    ]
    scores = ce.predict(pairs)
    assert isinstance(scores, np.ndarray) and scores.shape == (3,)
    assert np.isfinite(scores).all()
    ranked = ce.rank(pairs[0][0], [d for _, d in pairs])
    assert sorted(r["corpus_id"] for r in ranked) == [0, 1, 2]


# --------------------------------------------------------------------------------------------------
# 8. local pip package
# --------------------------------------------------------------------------------------------------
def test_local_package_installs_offline(local_package_dir, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-build-isolation",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(local_package_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run(
        [sys.executable, "-c", "import xnb_tiny_pkg as m; print(m.shout('hi'), m.__version__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["HI!", "0.1.0"]
