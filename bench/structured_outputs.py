"""Structured outputs (issue 22): what a constraint costs while decoding, in one run, as ratios.

    .venv/bin/python bench/structured_outputs.py [--tokens 48] [--levels 1,8] [--rounds 3] [--rows 64]
                                                 [--small] [--json out.json]

The model: bench/llm_batching.py's random Llama of about 100M parameters (``--small``: the tiny test
model, to check the bench itself), in the kernel, continuous batching. Measured, the two kinds taking
turns round after round (each cell the median round):

* tokens/s of ``json_schema`` decoding against free decoding, at 1 and 8 concurrent chats (target
  >= 0.9x). The schema holds one long string (at least 1,500 characters), so every row writes ``--tokens``
  tokens either way and the batches stay the same size;
* the mask's share of a decode step: the time inside ``RowConstraint.mask`` (computing llguidance's
  mask, applying it) over the whole wall time of the constrained run, per token;
* schema compile time, first (a schema not seen before) and cached (the same schema again);
* ``map`` over ``--rows`` rows against a loop of ``chat`` (timed over a few rows, per row): target >= 4x.

The vocabulary of this model is small (the tiny tokenizer's ~770 tokens); bench/structured_libraries.py
measures the mask on a 150,000-token vocabulary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# bench/ is the script's folder; importing llm_batching puts the repository, tests/ and bench/ on
# sys.path and sets the offline environment (its preamble, the one copy)
from llm_batching import build_model  # noqa: E402

LONG_TEXT = {"type": "object", "properties": {"text": {"type": "string", "minLength": 1500, "maxLength": 2000}},
             "required": ["text"], "additionalProperties": False}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "long_text", "schema": LONG_TEXT}}
ROW_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["spam", "ham"]},
                                               "score": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["label", "score"], "additionalProperties": False}


class MaskTimer:
    """Time spent inside ``RowConstraint.mask`` (wrapped for the bench only)."""

    def __init__(self) -> None:
        from xinference_nb.engines import structured

        self.seconds, self.calls = 0.0, 0
        self._lock = threading.Lock()
        original = structured.RowConstraint.mask

        def timed(row: Any, generated: list[int], scores: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(row, generated, scores)
            finally:
                with self._lock:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1
        structured.RowConstraint.mask = timed

    def take(self) -> tuple[float, int]:
        with self._lock:
            out = (self.seconds, self.calls)
            self.seconds, self.calls = 0.0, 0
        return out


def run_level(handle: Any, c: int, tokens: int, constrained: bool) -> tuple[float, int]:
    """(wall seconds, completion tokens) of ``c`` concurrent chats (two each)."""
    cfg: dict[str, Any] = {"temperature": 0, "max_tokens": tokens}
    if constrained:
        cfg["response_format"] = RESPONSE_FORMAT
    used = [0] * (2 * c)

    def one(i: int) -> None:
        out = handle.chat([{"role": "user", "content": f"Write note {i} about robots."}], generate_config=cfg)
        used[i] = out["usage"]["completion_tokens"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2 * c)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(used)


def compile_times(model: Any) -> dict[str, float]:
    from xinference_nb.chat.structured import constraint_of

    schema = {"type": "object", "properties": {f"field_{i}": {"type": ["string", "integer"], "maxLength": 30}
                                               for i in range(40)}, "required": ["field_0"]}
    c = constraint_of({"guided_json": schema})
    model.grammars.tokenizer   # built once per model; not part of a schema's compile
    t0 = time.perf_counter()
    model.grammars.matcher(c)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.grammars.matcher(c)
    return {"first_ms": first * 1000, "cached_ms": (time.perf_counter() - t0) * 1000}


def map_vs_loop(handle: Any, rows: int, loop: int) -> dict[str, float]:
    items = [f"message {i}: win a prize now" for i in range(rows)]
    cfg = {"temperature": 0, "max_tokens": 24}
    t0 = time.perf_counter()
    handle.map(items, "Classify: {item}", response_format={"type": "json_schema", "json_schema": {
        "name": "row", "schema": ROW_SCHEMA}}, generate_config=cfg, progress=False)
    mapped = (time.perf_counter() - t0) / rows
    t0 = time.perf_counter()
    for item in items[:loop]:
        handle.chat(f"Classify: {item}", generate_config={**cfg, "guided_json": ROW_SCHEMA})
    looped = (time.perf_counter() - t0) / loop
    return {"map_s_per_row": mapped, "loop_s_per_row": looped, "speedup": looped / mapped}


def main(argv: Any = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=64, help="rows for map (0: skip)")
    ap.add_argument("--loop", type=int, default=6, help="rows for the loop of chat it is compared with")
    ap.add_argument("--small", action="store_true", help="the tiny test model (checks the bench itself)")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-structured-"))
    os.environ["XINFERENCE_NB_HOME"] = str(workdir / "nb-home")
    path = build_model(workdir, small=args.small)
    from public_api import launch_by_path
    from xinference_nb.client.handles import handle_of
    from xinference_nb.manager import get_manager

    manager = get_manager()
    uid = launch_by_path(manager, path, model_uid="bench-structured")
    handle, model = handle_of(manager, uid), manager.engine_model(uid)
    timer = MaskTimer()
    print(f"structured outputs bench — {os.cpu_count()} CPUs, model {path.name}, {args.tokens} new tokens, greedy",
          flush=True)
    run_level(handle, 1, 4, True)       # warm-up (and the tokenizer, grammar cache)
    levels = [int(x) for x in args.levels.split(",")]
    cells: dict[tuple[int, bool], list[tuple[float, int, float, int]]] = {}
    for r in range(args.rounds):
        for c in levels:
            for constrained in (False, True):
                timer.take()
                wall, used = run_level(handle, c, args.tokens, constrained)
                cells.setdefault((c, constrained), []).append((wall, used, *timer.take()))
    out: dict[str, Any] = {"levels": {}}
    for c in levels:
        free = statistics.median(u / w for w, u, _, _ in cells[(c, False)])
        cons = statistics.median(u / w for w, u, _, _ in cells[(c, True)])
        share = statistics.median(s / w for w, _, s, _ in cells[(c, True)])
        per_call = statistics.median(s / max(n, 1) * 1e6 for _, _, s, n in cells[(c, True)])
        out["levels"][c] = {"free_tok_s": free, "json_schema_tok_s": cons, "ratio": cons / free,
                            "mask_share_of_wall": share, "mask_us_per_token": per_call}
        print(f"  {c:>2} concurrent: free {free:7.1f} tok/s, json_schema {cons:7.1f} tok/s, ratio {cons / free:4.2f}x "
              f"(target >= 0.9x); mask {per_call:6.0f} us/token, {share * 100:4.1f}% of the wall time", flush=True)
    out["compile"] = compile_times(model)
    print(f"  schema compile (40 properties): first {out['compile']['first_ms']:.1f} ms, cached "
          f"{out['compile']['cached_ms']:.2f} ms", flush=True)
    if args.rows:
        out["map"] = m = map_vs_loop(handle, args.rows, args.loop)
        print(f"  map over {args.rows} rows: {m['map_s_per_row'] * 1000:.0f} ms/row; loop of chat "
              f"{m['loop_s_per_row'] * 1000:.0f} ms/row: {m['speedup']:.1f}x (target >= 4x)", flush=True)
    manager.terminate_model(uid)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
