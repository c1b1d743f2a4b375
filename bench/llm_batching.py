"""Continuous batching (issue 14): tokens/s at 1, 4, 8 and 16 concurrent chat requests, in one run.

    .venv/bin/python bench/llm_batching.py [--tokens 32] [--per-stream 1] [--levels 1,4,8,16] [--rounds 3]
                                           [--json out.json]

The model: a random Llama of about 100M parameters (hidden 768, 12 layers, 12 heads, MLP 3072), built
like tests/tiny_models.py's with a bigger config, registered the same way on every system
(bench/vs_xinference.py's custom registration). Every request: the same kind of short chat, greedy
(temperature 0), ``--tokens`` new tokens, streamed so that time to first token is measured.
Systems (all loaded first, then measured in turns: at each level every system runs alone on the 2
cores, one after the other, for ``--rounds`` rounds; each cell is the median round, so a slower minute
of a shared machine falls on every system alike):

* ``today``       in-kernel, ``max_num_seqs=1``: one ``model.generate`` per request (the old path);
* ``in-kernel``   in-kernel, continuous batching (default ``max_num_seqs=16``), concurrent threads;
* ``nb-rest``     our REST server (``xinf serve``, its own process), concurrent clients;
* ``xinference``  Xinference 4.1 (``xinference-local`` from .venv-xinference), the same clients.

At concurrency c, c clients each send ``--per-stream`` requests (c × per-stream in all, at least 6 at
c=1); tokens/s = all completion tokens / wall time. TTFT p50/p95 at the highest level. Then the
notebook batch API: ``chat_batch`` over ``--batch`` prompts against a Python loop of ``chat``
(timed over ``--loop`` prompts, per prompt). Ratios printed against the targets: at 8 and 16
concurrent ours ≥ 1.5× Xinference; single stream ≥ 0.95× today's; batch API ≥ 4× the loop.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))             # reference/ (the reference data)
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import xinference_cluster as xc  # noqa: E402
from vs_xinference import NbServer, remote_client, tiny_llm_doc  # noqa: E402

BIG_LLAMA = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
             "num_key_value_heads": 12, "initializer_range": 0.02}


def build_model(workdir: Path, small: bool = False, context: Optional[int] = None) -> Path:
    """The ~100M Llama (``small``: tests/tiny_models.py's tiny one, for a quick check of the bench);
    ``context``: its max_position_embeddings, when the config's is too short for the bench's prompts."""
    import tiny_models

    overrides = {} if small else dict(BIG_LLAMA)
    if context:
        overrides["max_position_embeddings"] = context
    path = workdir / ("tiny-llama" if small else "llama-100m")
    with tiny_models.quiet():
        tiny_models.build_tiny_llama(path, overrides=overrides or None)
    return path


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Story number {i}: tell me about a robot who learns to write poems."}]


STREAM = True   # --no-stream: whole answers (time to first token is then the whole request)


def one_request(handle: Any, i: int, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first content, total seconds, completion tokens) of one streamed chat."""
    if not STREAM:
        t0 = time.perf_counter()
        out = handle.chat(prompt(i), generate_config={"temperature": 0, "max_tokens": tokens})
        total = time.perf_counter() - t0
        return total, total, int((out.get("usage") or {}).get("completion_tokens") or 0)
    cfg = {"temperature": 0, "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first: Optional[float] = None
    pieces, used = 0, None
    for chunk in handle.chat(prompt(i), generate_config=cfg):
        choices = chunk.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            pieces += 1
            if first is None:
                first = time.perf_counter() - t0
        if chunk.get("usage"):
            used = chunk["usage"].get("completion_tokens")
    total = time.perf_counter() - t0
    return first if first is not None else total, total, used if used is not None else pieces


def level(handle: Any, clients: int, per_stream: int, tokens: int) -> dict[str, Any]:
    results: list[tuple[float, float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for k in range(per_stream):
            try:
                r = one_request(handle, c * 1000 + k, tokens)
            except Exception as exc:  # noqa: BLE001 - reported in the row
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = sorted(r[0] for r in results)
    out = {"clients": clients, "requests": len(results), "tokens": sum(r[2] for r in results), "wall_s": wall}
    out["tok_s"] = out["tokens"] / wall if wall else 0.0
    if ttft:
        out["ttft_p50_ms"] = 1000 * statistics.median(ttft)
        out["ttft_p95_ms"] = 1000 * ttft[min(len(ttft) - 1, int(round(0.95 * (len(ttft) - 1))))]
    if errors:
        out["errors"] = errors[:3]
    return out


def batch_api(handle: Any, n_batch: int, n_loop: int, tokens: int) -> dict[str, Any]:
    cfg = {"temperature": 0, "max_tokens": tokens}
    t0 = time.perf_counter()
    for i in range(n_loop):
        handle.chat(prompt(i), generate_config=cfg)
    loop_s = (time.perf_counter() - t0) / n_loop
    t0 = time.perf_counter()
    out = handle.chat_batch([prompt(i) for i in range(n_batch)], cfg, progress=False)
    batch_s = (time.perf_counter() - t0) / n_batch
    assert len(out) == n_batch
    return {"loop_s_per_prompt": loop_s, "batch_s_per_prompt": batch_s, "gain": loop_s / batch_s}


class System:
    """One system under test: its client, the launched model and the measured runs per level."""

    def __init__(self, name: str, client: Any, doc: dict, launch_kw: dict, levels: list[int]):
        self.name, self.client, self.levels = name, client, levels
        self.row: dict[str, Any] = {"system": name, "levels": {}, "runs": {c: [] for c in levels}}
        self.handle: Any = None
        self.uid: Optional[str] = None
        try:
            try:
                client.register_model("LLM", json.dumps(doc), persist=False)
            except Exception as exc:  # noqa: BLE001 - in-kernel rows share this process's registry
                if "already registered" not in str(exc):
                    raise
            t0 = time.perf_counter()
            self.uid = client.launch_model(doc["model_name"], model_type="LLM", model_uid=f"bench-{name}", **launch_kw)
            self.row["launch_s"] = time.perf_counter() - t0
            self.handle = client.get_model(self.uid)
            one_request(self.handle, 0, 4)   # warm up
        except Exception as exc:  # noqa: BLE001 - a bench row reports what failed and goes on
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.handle = None
        print(f"   {self.name} failed: {self.row['error']}", flush=True)

    def measure(self, c: int, args: argparse.Namespace) -> None:
        if self.handle is None or c not in self.levels:
            return
        per = max(args.per_stream, 6) if c == 1 else args.per_stream
        try:
            res = level(self.handle, c, per, args.tokens)
        except Exception as exc:  # noqa: BLE001
            return self.fail(exc)
        self.row["runs"][c].append(res)
        print(f"   {self.name:>10} {c:>2} concurrent: {res['tok_s']:7.1f} tok/s  ({res['requests']} requests, "
              f"{res['wall_s']:.1f} s, TTFT p50 {res.get('ttft_p50_ms', 0):.0f} ms)"
              + (f"  errors: {res['errors']}" if res.get("errors") else ""), flush=True)

    def settle(self) -> dict[str, Any]:
        """Each level's run of median tokens/s (with every round's tokens/s beside it)."""
        for c, runs in self.row.pop("runs").items():
            if runs:
                ordered = sorted(runs, key=lambda r: r["tok_s"])
                self.row["levels"][c] = dict(ordered[(len(ordered) - 1) // 2],
                                             tok_s_rounds=[round(r["tok_s"], 1) for r in runs])
        return self.row

    def close(self) -> None:
        if self.uid is not None:
            try:
                self.client.terminate_model(self.uid)
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass


def report(rows: list[dict[str, Any]], levels: list[int]) -> list[str]:
    by = {r["system"]: r for r in rows}
    lines = ["| system | " + " | ".join(f"{c} concurrent tok/s" for c in levels) +
             f" | TTFT p50 / p95 at {levels[-1]} (ms) |", "|---" * (len(levels) + 2) + "|"]
    for r in rows:
        cells = [f"{r['levels'][c]['tok_s']:.1f}" if c in r["levels"] else "—" for c in levels]
        top = r["levels"].get(levels[-1], {})
        ttft = f"{top['ttft_p50_ms']:.0f} / {top['ttft_p95_ms']:.0f}" if "ttft_p50_ms" in top else "—"
        lines.append(f"| {r['system']} | " + " | ".join(cells) + f" | {ttft} |")

    def ratio(ours: str, other: str, c: int) -> Optional[float]:
        """The median of the per-round ratios (the two ran next to each other in each round), or the
        ratio of the medians when the rounds do not pair up."""
        a = by.get(ours, {}).get("levels", {}).get(c, {})
        b = by.get(other, {}).get("levels", {}).get(c, {})
        if not a.get("tok_s") or not b.get("tok_s"):
            return None
        ra, rb = a.get("tok_s_rounds") or [], b.get("tok_s_rounds") or []
        if len(ra) == len(rb) and ra and all(rb):
            return statistics.median(x / y for x, y in zip(ra, rb))
        return a["tok_s"] / b["tok_s"]

    lines.append("")
    lines.append("ratios: the median over the rounds of ours / theirs in the same round")
    for ours in ("in-kernel", "nb-rest"):
        for c in levels:
            r = ratio(ours, "xinference", c)
            if r:
                target = "  (target ≥ 1.5)" if c in (8, 16) else ""
                lines.append(f"{ours} / xinference at {c:>2}: {r:.2f}x{target}")
    r = ratio("in-kernel", "today", 1)
    if r:
        lines.append(f"single stream in-kernel / today: {r:.2f}x  (target ≥ 0.95)")
    r = ratio("nb-rest", "today", 1)
    if r:
        lines.append(f"single stream nb-rest / today (in-kernel): {r:.2f}x")
    batch = by.get("in-kernel", {}).get("batch_api")
    if batch:
        lines.append(f"chat_batch / loop of chat: {batch['gain']:.2f}x  (target ≥ 4)")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--per-stream", type=int, default=1, help="requests per concurrent client")
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--batch", type=int, default=32, help="prompts for chat_batch (0: skip)")
    ap.add_argument("--loop", type=int, default=4, help="prompts for the loop of chat it is compared with")
    ap.add_argument("--systems", default="today,in-kernel,nb-rest,xinference")
    ap.add_argument("--rounds", type=int, default=3, help="each level is measured this many times per system, "
                                                          "the systems taking turns; medians are reported")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--small", action="store_true", help="the tiny test model instead of the ~100M one "
                                                          "(checks the bench itself; its numbers mean nothing)")
    ap.add_argument("--no-stream", action="store_true",
                    help="whole answers instead of streams (TTFT is then the whole request)")
    args = ap.parse_args(argv)
    global STREAM
    STREAM = not args.no_stream
    levels = [int(x) for x in args.levels.split(",")]
    wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bench-llm-batching-"))
    os.environ["XINFERENCE_NB_HOME"] = str(workdir / "nb-home")
    path = build_model(workdir, small=args.small)
    doc = tiny_llm_doc(path)
    doc.update(model_name="bench-llama-100m")
    doc["model_specs"][0]["model_size_in_billions"] = "0_1"
    print(f"LLM batching bench — {os.cpu_count()} CPUs, model {path}, {args.tokens} new tokens, greedy", flush=True)
    from xinference_nb.client import Client

    systems: list[System] = []
    server, xl = None, None
    try:
        if "today" in wanted:
            systems.append(System("today", Client(), doc, {"model_engine": "transformers", "max_num_seqs": 1,
                                                           "show_progress": False}, [1]))
        if "in-kernel" in wanted:
            systems.append(System("in-kernel", Client(), doc, {"model_engine": "transformers",
                                                               "show_progress": False}, levels))
        if "nb-rest" in wanted:
            server = NbServer(workdir)
            systems.append(System("nb-rest", remote_client(server.endpoint), doc, {"model_engine": "transformers"},
                                  levels))
        if "xinference" in wanted:
            reason = xc.xinference_missing_reason()
            if reason:
                print(f"skipping Xinference: {reason}")
            else:
                xl = xc.XinferenceLocal(workdir=workdir / "xinference", roots=[workdir])
                xl.start()
                print(f"xinference-local up in {xl.startup_seconds:.1f}s", flush=True)
                systems.append(System("xinference", remote_client(xl.endpoint), doc,
                                      {"model_engine": "transformers", "n_gpu": None}, levels))
        # every model is loaded and idle; the systems take turns, level by level, round after round,
        # so that a slower minute of the machine falls on all of them alike (medians are reported)
        for r in range(args.rounds):
            print(f"== round {r + 1} of {args.rounds}", flush=True)
            for c in levels:
                for system in systems:
                    system.measure(c, args)
        batch_of = next((s for s in systems if s.name == "in-kernel" and s.handle is not None), None)
        if args.batch and batch_of is not None:
            batch_of.row["batch_api"] = b = batch_api(batch_of.handle, args.batch, args.loop, args.tokens)
            print(f"   chat_batch over {args.batch}: {b['batch_s_per_prompt']*1000:.0f} ms/prompt; loop of chat: "
                  f"{b['loop_s_per_prompt']*1000:.0f} ms/prompt ({b['gain']:.2f}x)", flush=True)
    finally:
        for system in systems:
            system.close()
        if server is not None:
            server.stop()
        if xl is not None:
            xl.stop()
    rows = [system.settle() for system in systems]
    print()
    print("\n".join(report(rows, levels)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
