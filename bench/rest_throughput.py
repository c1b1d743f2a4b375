"""REST overhead and dynamic-batching throughput for short embeddings.

Model: the packaged all-MiniLM-L6-v2 registered as a custom embedding and launched in this process;
the server is ``xinference_nb.serve()`` in a background thread of the same process (as in a notebook),
the HTTP clients (httpx one by one, aiohttp concurrently) run in the same process.

1. Latency of 1 short embedding: ``handle.create_embedding(text)`` in-kernel vs ``POST /v1/embeddings``
   over a keep-alive connection (median of interleaved rounds). Prints REST/in-kernel.
2. Throughput: 64 different short texts sent as 64 concurrent requests (the server batches them
   dynamically) vs the same 64 requests one by one. Prints concurrent/sequential; target >= 4x.

    python bench/rest_throughput.py [--rounds 50] [--waves 5] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import asyncio
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tiny_models  # noqa: E402 - the test suite's builders and the packaged MiniLM's path


def minilm_path() -> Path:
    """tests/tiny_models.minilm_path; a missing package ends the bench with its message."""
    try:
        return tiny_models.minilm_path()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SystemExit(str(exc)) from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="latency rounds")
    parser.add_argument("--waves", type=int, default=5, help="throughput waves (each: concurrent + sequential)")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    os.environ.setdefault("XINFERENCE_NB_HOME", tempfile.mkdtemp(prefix="xnb-bench-"))
    import httpx

    import xinference_nb as xnb
    from xinference_nb.client import Client

    path = minilm_path()
    client = Client()
    client.register_model("embedding", {
        "version": 2, "model_name": "bench-minilm", "dimensions": 384, "max_tokens": 256, "language": ["en"],
        "model_specs": [{"model_format": "pytorch", "model_uri": f"file://{path}", "quantization": "none"}]},
        overwrite=True)
    uid = client.launch_model("bench-minilm", model_type="embedding", n_gpu=None)
    handle = client.get_model(uid)
    server = xnb.serve(port=0, allowed_roots=[str(path)])
    try:
        # ---------------------------------------------------------------- 1. latency
        text = "hello world"
        http = httpx.Client(base_url=server.url, timeout=60)

        def rest():
            r = http.post("/v1/embeddings", json={"model": uid, "input": text})
            r.raise_for_status()

        def local():
            handle.create_embedding(text)

        for _ in range(5):
            rest(), local()
        lat_local, lat_rest = [], []
        for i in range(args.rounds):
            for fn, out in ((local, lat_local), (rest, lat_rest)) if i % 2 == 0 else ((rest, lat_rest),
                                                                                      (local, lat_local)):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
        ml, mr = statistics.median(lat_local), statistics.median(lat_rest)
        print(f"1 short embedding: in-kernel {ml * 1000:7.2f} ms   REST {mr * 1000:7.2f} ms   "
              f"REST/in-kernel {mr / ml:5.2f}x  (REST adds {(mr - ml) * 1000:.2f} ms)")

        # ---------------------------------------------------------------- 2. throughput
        n = args.concurrency

        async def concurrent(texts):
            # aiohttp, not httpx.AsyncClient: the latter spends ~15 ms of client CPU per request when 64
            # are in flight, which would measure the client instead of the server
            import aiohttp

            conn = aiohttp.TCPConnector(limit=n)
            async with aiohttp.ClientSession(server.url, connector=conn) as session:
                async def get(path):
                    async with session.get(path) as r:
                        await r.read()
                await asyncio.gather(*[get("/status") for _ in range(n)])  # open the connections

                async def post(x):
                    async with session.post("/v1/embeddings", json={"model": uid, "input": x}) as r:
                        assert r.status == 200, await r.text()
                        return await r.json()

                t = time.perf_counter()
                await asyncio.gather(*[post(x) for x in texts])
                return time.perf_counter() - t

        def sequential(texts):
            t = time.perf_counter()
            for x in texts:
                http.post("/v1/embeddings", json={"model": uid, "input": x}).raise_for_status()
            return time.perf_counter() - t

        conc, seq = [], []
        stats = server.app.state.embed_batcher.stats
        conc_calls = conc_reqs = 0

        def run_concurrent(texts):
            nonlocal conc_calls, conc_reqs
            calls0, reqs0 = stats.calls, stats.requests
            conc.append(asyncio.run(concurrent(texts)))
            conc_calls += stats.calls - calls0
            conc_reqs += stats.requests - reqs0

        for w in range(args.waves):
            texts = [f"short text {w}-{i}" for i in range(n)]
            if w % 2 == 0:
                run_concurrent(texts)
                seq.append(sequential(texts))
            else:
                seq.append(sequential(texts))
                run_concurrent(texts)
        mc, ms = statistics.median(conc), statistics.median(seq)
        print(f"{n} short embeddings: one by one {ms * 1000:8.1f} ms ({n / ms:6.0f} req/s)   "
              f"{n} concurrent {mc * 1000:8.1f} ms ({n / mc:6.0f} req/s)   "
              f"concurrent/sequential throughput {ms / mc:5.2f}x  {'OK' if ms / mc >= 4 else 'under the 4x target'}")
        print(f"dynamic batching: the {conc_reqs} concurrent requests went through {conc_calls} model calls "
              f"(largest batch {stats.largest} requests)")
        http.close()
    finally:
        xnb.stop_server()
        client.terminate_model(uid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
