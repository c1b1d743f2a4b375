"""How long reading a GGUF's metadata takes on a Qwen2.5-size vocabulary (150k tokens, 150k merges),
through the launch path and through parse_model.

    python bench/gguf_metadata.py               # 150k tokens, 5 runs
    python bench/gguf_metadata.py --vocab 32000 --runs 20

The GGUF is written with the gguf package: a llama header, a tokenizer of ``--vocab`` tokens with
types and merges, a chat template, and tiny F32 tensors, so the time is the header's alone.

Timed, each as the median of ``--runs`` calls on a file not read before in this process (every run
reads a fresh copy of the file, so no cache is hit across runs):

* launch path: what ModelManager.launch_model and the llama.cpp engine read before ``Llama()``:
  ``memory.estimate_model`` (the memory check) then the engine's metadata read (n_ctx);
* parse_model: the auto-parse of the file into a spec.

The first call of each (imports included) is printed too. Target: launch path ≤ 100 ms.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
            "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
            "{%- endif %}")


def write_gguf(path: Path, vocab: int) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("bench-qwen")
    writer.add_context_length(32768)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e6)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    tokens = [f"tok{i}" for i in range(vocab - 3)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (vocab - 3) + [gguf.TokenType.CONTROL] * 3)
    writer.add_token_merges([f"t ok{i}" for i in range(vocab)])
    writer.add_bos_token_id(vocab - 3)
    writer.add_eos_token_id(vocab - 1)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((8, 64), dtype=np.float32))
    for i in range(2):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(64, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", rng.standard_normal((64, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def launch_read(file: Path) -> None:
    """What a GGUF launch reads before Llama(): the manager's estimate, then the engine's facts."""
    from xinference_nb import memory
    from xinference_nb.engines import llama_cpp

    memory.estimate_model(file, "LLM", "ggufv2", None, 4096)
    if hasattr(llama_cpp, "read_launch_metadata"):        # this change: one fast reader
        llama_cpp.read_launch_metadata(file)
    else:                                                  # before: gguf.GGUFReader via memory
        memory.gguf_metadata(file, {"general.architecture", ".context_length"})


def parse_read(file: Path) -> None:
    from xinference_nb.parse import parse_model

    parse_model(file, model_family="qwen2.5-instruct")


def timed(fn, files: list[Path]) -> tuple[float, float]:
    """(first call, median of the others) in ms; each call on its own copy of the file."""
    times = []
    for f in files:
        t0 = time.perf_counter()
        fn(f)
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:]) if len(times) > 1 else times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    try:
        t0 = time.perf_counter()
        src = write_gguf(tmp / "bench-qwen-q4_k_m.gguf", args.vocab)
        print(f"wrote {src.name}: {src.stat().st_size / 2**20:.1f} MiB, {args.vocab:,} tokens "
              f"({time.perf_counter() - t0:.1f} s)")
        runs = args.runs + 1
        launch_files, parse_files = [], []
        for i in range(runs):
            for kind, out in (("launch", launch_files), ("parse", parse_files)):
                d = tmp / f"{kind}{i}"
                d.mkdir()
                out.append(Path(shutil.copy(src, d / src.name)))
        first, median = timed(launch_read, launch_files)
        print(f"launch path (estimate_model + engine metadata): first {first:.1f} ms, median {median:.1f} ms "
              f"(target ≤ 100 ms)")
        first, median = timed(parse_read, parse_files)
        print(f"parse_model:                                    first {first:.1f} ms, median {median:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
