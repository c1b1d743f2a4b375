"""Overhead of ``handle.chat`` over calling the same engine directly, measured in the same run.

    python bench/llm_overhead.py                      # tiny models built on the fly (worst case: tiny compute)
    python bench/llm_overhead.py --hf-path /models/qwen2.5-0.5b-instruct --gguf-path /models/q.gguf

For each engine the same loaded model answers the same messages greedily, alternating between the
direct call (transformers: apply_chat_template + generate + decode; llama.cpp:
create_chat_completion) and ``client.get_model(uid).chat``; the best (minimum) latencies are compared
(medians printed too). Target: ratio <= 1.03.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("XINFERENCE_NB_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me a short story about a cat and a mouse in the kitchen."}]


def build_tiny(workdir: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models

    with tiny_models.quiet():
        hf = tiny_models.build_tiny_llama(workdir / "tiny-llama")
    gguf = tiny_models.build_tiny_gguf(hf, workdir / "gguf" / "tiny-llama-f32.gguf")
    return hf, gguf


def compare(name: str, direct, ours, runs: int) -> float:
    """Interleaved runs; the ratio of the best (minimum) latencies, which shared or busy machines
    disturb least, with the medians printed alongside."""
    direct(), ours()  # warm up both paths
    d_times, o_times = [], []
    tokens = (0, 0)
    for _ in range(runs):   # interleave so drift hits both the same way
        t0 = time.perf_counter()
        dtok = direct()
        t1 = time.perf_counter()
        otok = ours()
        t2 = time.perf_counter()
        d_times.append(t1 - t0), o_times.append(t2 - t1)
        tokens = (dtok, otok)
    d_best, o_best = min(d_times), min(o_times)
    d_med, o_med = statistics.median(d_times), statistics.median(o_times)
    ratio = o_best / d_best
    print(f"{name:13s} direct: best {d_best * 1000:7.2f} ms ({tokens[0] / d_best:7.1f} tok/s), median "
          f"{d_med * 1000:7.2f} ms | handle.chat: best {o_best * 1000:7.2f} ms ({tokens[1] / o_best:7.1f} tok/s), "
          f"median {o_med * 1000:7.2f} ms | {tokens[1]} tokens | ratio best {ratio:.3f}x, median "
          f"{o_med / d_med:.3f}x")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-path", help="a Hugging Face chat model folder (default: a tiny random Llama)")
    parser.add_argument("--gguf-path", help="a .gguf chat model (default: the tiny Llama as GGUF)")
    parser.add_argument("--family", default="qwen2.5-instruct", help="built-in family to launch the files as")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch / llama.cpp threads (default 1: steadier)")
    args = parser.parse_args()

    from xinference_nb import Client

    tmp = tempfile.TemporaryDirectory(prefix="xnb-bench-")
    hf_path, gguf_path = (Path(args.hf_path) if args.hf_path else None), (Path(args.gguf_path) if args.gguf_path else None)
    if hf_path is None or gguf_path is None:
        tiny_hf, tiny_gguf = build_tiny(Path(tmp.name))
        hf_path, gguf_path = hf_path or tiny_hf, gguf_path or tiny_gguf
    client = Client()
    cfg = {"max_tokens": args.max_tokens, "temperature": 0}
    ratios = {}

    # ---------------------------------------------------------------- transformers
    import torch

    torch.set_num_threads(args.threads)
    uid = client.launch_model(args.family, model_engine="transformers", model_path=str(hf_path), n_gpu=None)
    handle = client.get_model(uid)
    from xinference_nb.manager import get_manager

    hf = get_manager().engine_model(uid)
    model, tok = hf.model, hf.tokenizer
    stop_ids = hf.chat_format.stop_token_ids

    def direct_hf() -> int:
        enc = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():   # as the engine does
            out = model.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False, eos_token_id=stop_ids,
                                 pad_token_id=hf.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        tok.decode(new, skip_special_tokens=True)
        return int(new.shape[0])

    def ours() -> int:
        return handle.chat(MESSAGES, generate_config=cfg)["usage"]["completion_tokens"]

    ratios["transformers"] = compare("transformers", direct_hf, ours, args.runs)
    client.terminate_model(uid)

    # ---------------------------------------------------------------- llama.cpp
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp      skipped: llama-cpp-python is not installed")
    else:
        uid = client.launch_model(args.family, model_engine="llama.cpp", model_path=str(gguf_path), n_gpu=None,
                                  n_threads=args.threads)
        handle = client.get_model(uid)
        llm = get_manager().engine_model(uid).llm

        def direct_llama() -> int:
            res = llm.create_chat_completion(MESSAGES, max_tokens=args.max_tokens, temperature=0)
            return res["usage"]["completion_tokens"]

        def ours_llama() -> int:
            return handle.chat(MESSAGES, generate_config=cfg)["usage"]["completion_tokens"]

        ratios["llama.cpp"] = compare("llama.cpp", direct_llama, ours_llama, args.runs)
        client.terminate_model(uid)

    worst = max(ratios.values())
    print(f"worst latency ratio {worst:.3f}x (target <= 1.03x): {'OK' if worst <= 1.03 else 'OVER'}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
