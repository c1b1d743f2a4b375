"""How long parse_model takes on a model folder whose weights total several GB, against listing the
folder's files, and whether that time depends on the size of the weights.

    python bench/parse_speed.py                 # folders of 1, 8 and 32 GB of weights
    python bench/parse_speed.py --sizes 4,16 --runs 50

Each folder holds a 32-layer Llama layout whose hidden size makes its size in bf16 (config.json,
tokenizer_config.json with a Qwen3-size chat template, generation_config.json,
model.safetensors.index.json and ~5 GB safetensors shards with real headers, 291 tensors). The
shards' tensor data is a hole (sparse files), so the folders cost no disk; parse_model
must read only the headers, so its time must not grow with the weights.

Prints, per folder: the baseline (os.scandir + stat of every file), parse_model's first call (cold:
imports and the built-in catalog load), the median of the warm calls, and the ratio warm / baseline.
Target: warm ≤ 50 ms, flat across sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = """{%- if tools %}{{- '<|im_start|>system\\n' }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}
{{- '<|im_end|>\\n' }}{%- endif %}
{%- for message in messages %}
    {%- if message.role == "assistant" and '</think>' in message.content %}
        {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}
    {%- else %}{%- set content = message.content %}{%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
""" * 8   # about the size of Qwen3's template


LAYERS, VOCAB = 32, 32000


def llama_tensors(hidden: int, layers: int = LAYERS) -> list[tuple[str, list[int]]]:
    inter = hidden * 43 // 16 // 128 * 128          # Llama's 11008 / 4096
    out = [("model.embed_tokens.weight", [VOCAB, hidden]), ("model.norm.weight", [hidden]),
           ("lm_head.weight", [VOCAB, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden])]
        out += [(p + f"self_attn.{x}_proj.weight", [hidden, hidden]) for x in "qkvo"]
        out += [(p + "mlp.gate_proj.weight", [inter, hidden]), (p + "mlp.up_proj.weight", [inter, hidden]),
                (p + "mlp.down_proj.weight", [hidden, inter])]
    return out


def numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_sparse_shard(path: Path, tensors: list[tuple[str, list[int]]]) -> int:
    """A bf16 safetensors file with a real header and a hole where the data would be."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = 2 * numel(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * ((-len(raw)) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
    os.truncate(path, 8 + len(raw) + offset)
    return 8 + len(raw) + offset


def build_folder(root: Path, total_gb: float, shard_gb: float = 5.0) -> Path:
    """A 32-layer Llama-layout folder whose hidden size makes ``total_gb`` GB of bf16 weights, in
    shards of about ``shard_gb`` GB as Hugging Face saves them. The tensor count is the same for
    every size (291 tensors), so only the bytes grow."""
    hidden = 128
    while sum(2 * numel(s) for _, s in llama_tensors(hidden + 128)) <= total_gb * 1e9:
        hidden += 128
    tensors = llama_tensors(hidden)
    folder = root / f"llama-{total_gb:g}gb"
    folder.mkdir()
    shards: list[list[tuple[str, list[int]]]] = [[]]
    size = 0
    for t in tensors:
        if size > shard_gb * 1e9:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += 2 * numel(t[1])
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    for name, part in zip(names, shards):
        total += write_sparse_shard(folder / name, part)
        weight_map.update({t: name for t, _ in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": hidden * 43 // 16 // 128 * 128, "num_hidden_layers": LAYERS, "num_attention_heads": 32,
        "num_key_value_heads": 32, "max_position_embeddings": 4096, "vocab_size": VOCAB, "torch_dtype": "bfloat16",
        "eos_token_id": 2, "bos_token_id": 1}, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2], "bos_token_id": 1}))
    added = {str(i): {"content": t, "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": added, "eos_token": "</s>", "bos_token": "<s>", "chat_template": TEMPLATE,
         "model_max_length": 4096}, indent=2))
    return folder


def list_files(folder: Path) -> int:
    n = 0
    for entry in os.scandir(folder):
        entry.stat()
        n += 1
    return n


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,8,32", help="GB of weights per folder, comma separated")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]

    root = Path(tempfile.mkdtemp(prefix="xnb-parse-bench-"))
    try:
        folders = [(gb, build_folder(root, gb)) for gb in sizes]
        t0 = time.perf_counter()
        from xinference_nb.parse import parse_model   # noqa: E402 - timed as part of the cold call
        import_ms = (time.perf_counter() - t0) * 1000
        print(f"{'weights':>10} {'on disk':>9} {'list files':>11} {'parse cold':>11} {'parse warm':>11} "
              f"{'ratio':>7}  result")
        warm_all = []
        for i, (gb, folder) in enumerate(folders):
            apparent = sum(p.stat().st_size for p in folder.iterdir())
            used = sum(p.stat().st_blocks * 512 for p in folder.iterdir())
            t0 = time.perf_counter()
            parsed = parse_model(folder)
            cold = (time.perf_counter() - t0) * 1000 + (import_ms if i == 0 else 0)
            warm = statistics.median(timed(lambda: parse_model(folder), args.runs))
            base = statistics.median(timed(lambda: list_files(folder), args.runs))
            warm_all.append(warm)
            size = parsed.spec.model_specs[0].model_size_in_billions
            print(f"{apparent / 1e9:>8.1f}GB {used / 1e6:>7.1f}MB {base:>9.3f}ms {cold:>9.1f}ms {warm:>9.2f}ms "
                  f"{warm / base:>6.0f}x  {parsed.facts['parameters']:,} params → {size}B, "
                  f"ctx {parsed.spec.context_length}")
        spread = max(warm_all) / min(warm_all)
        ok = max(warm_all) <= 50
        print(f"\nwarm parse: {min(warm_all):.2f}–{max(warm_all):.2f} ms across {sizes[0]:g}–{sizes[-1]:g} GB "
              "of weights "
              f"(max/min {spread:.2f}); target ≤ 50 ms: {'met' if ok else 'MISSED'}. "
              "The cold column includes importing xinference_nb.parse (first row) and loading the built-in catalog.")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
