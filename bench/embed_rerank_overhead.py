"""Overhead of ``handle.create_embedding`` / ``handle.rerank`` over sentence-transformers called directly.

Same model files (the packaged all-MiniLM-L6-v2, and a MiniLM cross-encoder built from it), same
inputs, same process, interleaved rounds (direct, handle, handle, direct, ...) so machine noise
hits both sides alike. Each side's time is its fastest round (medians are printed too). Prints the
handle/direct ratio for 1 short input and for 512 inputs; the target is <= 1.03x.

    python bench/embed_rerank_overhead.py [--rounds 30] [--big-rounds 3]

The baseline is ``SentenceTransformer.encode(texts)`` (a numpy array) and
``CrossEncoder.predict(pairs)``; the handle side includes everything a user gets: the manager's
lookup, argument checks, token counting, and the conversion to the JSON-ready Xinference shape.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("XINFERENCE_NB_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(label: str, direct, handle, rounds: int) -> float:
    """Interleaved rounds; the ratio is of the fastest rounds (the least disturbed by other load on
    the machine), with the ratio of medians shown next to it."""
    direct(), handle()  # warm up both
    d, h = [], []
    for i in range(rounds):
        if i % 2 == 0:
            d.append(_timed(direct))
            h.append(_timed(handle))
        else:
            h.append(_timed(handle))
            d.append(_timed(direct))
    ratio = min(h) / min(d)
    median_ratio = statistics.median(h) / statistics.median(d)
    print(f"{label:<34} direct {min(d) * 1000:9.2f} ms   handle {min(h) * 1000:9.2f} ms   ratio {ratio:5.3f}x "
          f"(medians {median_ratio:5.3f}x)  {'OK' if ratio <= 1.03 else 'over 1.03x'}")
    return ratio


def wrapper_cost(emb, emb_uid, rr, rr_uid, short, many, query, st, ce) -> None:
    """What our layers alone cost per call, independent of machine load: the same handle calls with
    the backend's encode/predict replaced by a function returning its precomputed output."""
    manager = getattr(emb, "_manager", None)
    if manager is None or not hasattr(manager, "_peek"):
        return
    emb_model, rr_model = manager.engine_model(emb_uid).model, manager.engine_model(rr_uid).model
    cases = [("create_embedding", emb_model, "encode", st.encode, short, many, lambda x: emb.create_embedding(x),
              lambda x: st.encode(x)),
             ("rerank", rr_model, "predict", ce.predict, short, many, lambda x: rr.rerank(x, query),
              lambda x: ce.predict([(query, d) for d in x]))]
    print("our layers alone (backend call replaced by its precomputed result):")
    for name, backend, attr, real, one, lots, call, baseline in cases:
        for label, inputs in (("1 input", one), (f"{len(lots)} inputs", lots)):
            cached = real([(query, d) for d in inputs]) if attr == "predict" else real(inputs)
            setattr(backend, attr, lambda *a, _c=cached, **k: _c)
            try:
                n = 200 if len(inputs) == 1 else 20
                call(inputs)
                t = time.perf_counter()
                for _ in range(n):
                    call(inputs)
                cost = (time.perf_counter() - t) / n
            finally:
                delattr(backend, attr)
            base = min(_timed(lambda: baseline(inputs)) for _ in range(3 if len(inputs) == 1 else 1))
            print(f"  {name}, {label:<11} {cost * 1e6:9.1f} us per call = {100 * cost / base:6.3f}% of the "
                  f"backend call ({base * 1000:.2f} ms now)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds for the 1-input cases")
    parser.add_argument("--big-rounds", type=int, default=3, help="rounds for the 512-input cases")
    args = parser.parse_args()

    import tiny_models
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from xinference_nb.client import Client

    home = tempfile.mkdtemp(prefix="xnb-bench-")
    os.environ["XINFERENCE_NB_HOME"] = home
    minilm = tiny_models.minilm_path()
    with tiny_models.quiet():
        reranker = tiny_models.build_cross_encoder(Path(home) / "tiny-reranker")

    client = Client()
    client.register_model("embedding", json.dumps({
        "version": 2, "model_name": "bench-minilm", "dimensions": 384, "max_tokens": 256, "language": ["en"],
        "model_specs": [{"model_format": "pytorch", "model_uri": str(minilm), "quantization": "none"}]}))
    client.register_model("rerank", json.dumps({
        "version": 2, "model_name": "bench-reranker", "type": "normal", "language": ["en"], "max_tokens": 512,
        "model_specs": [{"model_format": "pytorch", "model_uri": str(reranker), "quantization": "none"}]}))
    emb_uid = client.launch_model(model_name="bench-minilm", model_type="embedding", n_gpu=None)
    rr_uid = client.launch_model(model_name="bench-reranker", model_type="rerank", n_gpu=None)
    emb, rr = client.get_model(emb_uid), client.get_model(rr_uid)

    st = SentenceTransformer(str(minilm), device="cpu")
    ce = CrossEncoder(str(reranker), device="cpu")

    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
    short = ["What is the capital of France?"]
    many = [f"Document {i}: the weather in city number {i % 37} is {['sunny', 'cloudy', 'rainy'][i % 3]} "
            f"and about {i % 30} degrees today." for i in range(512)]
    query = "Where is it sunny and warm today?"

    ratios = {
        "embedding, 1 short input": compare("create_embedding, 1 short input", lambda: st.encode(short),
                                            lambda: emb.create_embedding(short), args.rounds),
        "embedding, 512 inputs": compare("create_embedding, 512 inputs", lambda: st.encode(many),
                                         lambda: emb.create_embedding(many), args.big_rounds),
        "rerank, 1 document": compare("rerank, 1 document", lambda: ce.predict([(query, short[0])]),
                                      lambda: rr.rerank(short, query), args.rounds),
        "rerank, 512 documents": compare("rerank, 512 documents", lambda: ce.predict([(query, d) for d in many]),
                                         lambda: rr.rerank(many, query), args.big_rounds),
    }
    wrapper_cost(emb, emb_uid, rr, rr_uid, short, many, query, st, ce)
    client.terminate_model(emb_uid)
    client.terminate_model(rr_uid)
    worst = max(ratios.values())
    print(f"worst ratio {worst:.3f}x (target <= 1.03x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
