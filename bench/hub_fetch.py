"""Fetching from the hub and listing the cache (issue 24), as ratios against huggingface_hub itself in the
same run.

    .venv/bin/python bench/hub_fetch.py [--mib 400] [--rounds 3] [--repos 40] [--json out.json]

The hub is tests/local_hub.py's stand-in on 127.0.0.1 (the hub's file API; no network), serving a
repository shaped like a real one: config.json, a tokenizer, a ``--mib`` MiB model.safetensors and what
a launch must not fetch (a GGUF, an ONNX copy, pytorch_model.bin of the same size, training state).

* (a) ``download_model`` (our fetch: the files the launch needs, streamed with our resumable transfer)
  vs ``huggingface_hub.hf_hub_download`` of the same files one after the other (what snapshot_download
  does per file; the stand-in hub has no tree API for snapshot_download itself), each into an empty
  cache: wall time ratio (target <= 1.1x: the resume support costs nothing), and the bytes a download
  of the whole repository would have moved instead;
* (b) a second ``download_model`` on the filled cache (nothing fetched: the files at that commit are
  reused) vs the first;
* (c) ``list_cached_models`` over a cache of ``--repos`` repositories vs ``huggingface_hub.scan_cache_dir``
  (what it reads the cache with; the rest is the metadata of each revision): ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("XINFERENCE_NB_PROGRESS", "0")
MiB = 1 << 20


def repo_files(mib: int) -> dict[str, bytes]:
    """A model folder's files and the decoys a launch skips; the weights are random bytes (only moved)."""
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 256, "max_position_embeddings": 2048}
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    weights = len(header).to_bytes(8, "little") + header + os.urandom(mib * MiB)
    return {"config.json": json.dumps(config).encode(), "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
            "generation_config.json": b"{}", "model.safetensors": weights, "pytorch_model.bin": weights,
            "onnx/model.onnx": os.urandom(mib * MiB // 4), "model-f16.gguf": os.urandom(mib * MiB // 2),
            "optimizer.pt": os.urandom(mib * MiB // 8), "README.md": b"# bench\n"}


def point_at(hub, cache: Path) -> None:
    from huggingface_hub import constants

    os.environ.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="0")
    constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = hub.url, str(cache), False
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"


def register(client, name: str) -> None:
    doc = {"version": 2, "context_length": 2048, "model_name": name, "model_lang": ["en"],
           "model_ability": ["generate"], "model_family": "bench-llama",
           "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "quantization": "none",
                            "model_id": "bench/model", "model_hub": "huggingface", "model_revision": "main"}]}
    client.register_model("LLM", doc, persist=False, overwrite=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fetch_round(hub, work: Path, client, files: list[str], ours_first: bool) -> dict[str, float]:
    from huggingface_hub import hf_hub_download

    ours_cache, theirs_cache = work / "ours", work / "theirs"
    for c in (ours_cache, theirs_cache):
        shutil.rmtree(c, ignore_errors=True)
    out: dict[str, float] = {}

    def theirs() -> None:
        point_at(hub, theirs_cache)
        out["hf_s"] = timed(lambda: [hf_hub_download("bench/model", f, cache_dir=str(theirs_cache)) for f in files])

    def ours() -> None:
        point_at(hub, ours_cache)
        out["ours_s"] = timed(lambda: client.download_model("LLM", "bench-model", show_progress=False))
        out["again_s"] = timed(lambda: client.download_model("LLM", "bench-model", show_progress=False))

    for step in ((ours, theirs) if ours_first else (theirs, ours)):   # alternate: the second one writes while
        os.sync()                                                     # the first one's pages are flushed
        step()
    return out


def fill_cache(cache: Path, repos: int) -> None:
    import hashlib

    for i in range(repos):
        folder = cache / f"models--org--model-{i}"
        commit = hashlib.sha1(str(i).encode()).hexdigest()
        snap = folder / "snapshots" / commit
        snap.mkdir(parents=True)
        (folder / "blobs").mkdir()
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
        for name, data in (("config.json", json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
                            .encode()), ("model.safetensors", b"\x10" + b"\0" * 7 + b'{"__metadata__":{}}' + b"\0" * 4096)):
            blob = folder / "blobs" / hashlib.sha256(data + name.encode()).hexdigest()
            blob.write_bytes(data)
            (snap / name).symlink_to(os.path.relpath(blob, snap))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repos", type=int, default=40)
    ap.add_argument("--json")
    args = ap.parse_args()
    from huggingface_hub import scan_cache_dir

    from local_hub import LocalHub
    from xinference_nb import Client
    from xinference_nb.hub.files import needed_files

    work = Path(tempfile.mkdtemp(prefix="xnb-bench-hub-"))
    os.environ["XINFERENCE_NB_HOME"] = str(work / "home")
    hub = LocalHub()
    try:
        published = repo_files(args.mib)
        hub.add("bench/model", published)
        files = needed_files(sorted(published), "pytorch", None)
        client = Client()
        register(client, "bench-model")
        fetch_round(hub, work, client, files, True)           # warm-up: imports and the first connection
        rounds = [fetch_round(hub, work, client, files, i % 2 == 0) for i in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        needed = sum(len(published[f]) for f in files)
        whole = sum(len(v) for v in published.values())
        cache = work / "listing"
        fill_cache(cache, args.repos)
        point_at(hub, cache)
        client.list_cached_models()                        # warm the imports
        listing = statistics.median(timed(client.list_cached_models) for _ in range(args.rounds))
        scan = statistics.median(timed(lambda: scan_cache_dir(cache)) for _ in range(args.rounds))
        out = {
            "files_fetched": files, "needed_mib": round(needed / MiB, 1), "whole_repo_mib": round(whole / MiB, 1),
            "(a) download_model s": round(med["ours_s"], 3), "(a) hf_hub_download same files s": round(med["hf_s"], 3),
            "(a) ratio ours / huggingface_hub": round(med["ours_s"] / med["hf_s"], 3),
            "(a) MiB/s ours": round(needed / MiB / med["ours_s"], 1),
            "(b) cached again s": round(med["again_s"], 4),
            "(b) cached / first": round(med["again_s"] / med["ours_s"], 4),
            f"(c) list_cached_models of {args.repos} repos ms": round(listing * 1e3, 1),
            "(c) scan_cache_dir ms": round(scan * 1e3, 1),
            "(c) ratio list / scan": round(listing / scan, 2),
        }
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    finally:
        hub.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
