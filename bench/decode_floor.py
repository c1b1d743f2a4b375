"""The decode step against the machine's floor (issue 23 (d)), in one run, as ratios.

    .venv/bin/python bench/decode_floor.py [--batches 1,8,16] [--prompt 128] [--steps 48] [--rounds 3]
                                           [--attempts] [--small] [--json out.json]

The model: bench/llm_batching.py's random Llama of about 100M parameters (``--small``: the tiny test model).

* **step / forward**: for the same batch size and cache length, the continuous-batching scheduler's whole
  decode step (``BatchScheduler._decode``: the inputs, the forward pass, picking each row's token, stop
  checks, streaming it out; timed by wrapping the method of the launched model) against the raw model
  forward alone on the same kind of inputs (``model(input_ids, attention_mask, position_ids, cache)`` with
  the scheduler's growing cache layers, one new token per row after a ``--prompt``-token prefill). The
  decode steps with all ``B`` rows running are compared, cell = the median step over the round, each figure
  the median round. Target: <= 1.1x. Also the model forward timed inside those same steps (the model's
  ``forward`` wrapped on the instance): step / its own forward is the scheduler's overhead alone, free of
  the run-to-run variation between two separate loops.
* **attempts to lower the floor** (``--attempts``), each the raw forward against the default one, in the
  same rounds, with whether greedy tokens stay identical: SDPA vs eager attention; one torch thread vs the
  default (``torch.get_num_threads()``) on this machine as it is; bf16 weights (when the CPU has
  avx512_bf16 / AMX); a static-shape decode step (``StaticCache`` + ``torch.compile``) where it compiles;
  OpenMP's passive wait (``OMP_WAIT_POLICY=PASSIVE``, what ``xinf serve`` sets) against its default spinning,
  in child processes (the policy is read once, when torch loads).
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
from typing import Any, Callable, Optional

# bench/ is the script's folder; importing llm_batching puts the repository, tests/ and bench/ on
# sys.path and sets the offline environment (its preamble, the one copy)
from llm_batching import build_model  # noqa: E402


def prompt_ids(batch: int, length: int, vocab: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab - 10, (batch, length), generator=g)


def cache_arg(model: Any) -> str:
    """The forward's name for the cache (transformers >= 5.2x says ``cache``; ``past_key_values`` before)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def raw_decode(model: Any, ids: Any, steps: int, growing: bool = True,
               cache_factory: Optional[Callable[[], Any]] = None) -> tuple[list[float], list[list[int]]]:
    """Seconds of each raw decode forward after a prefill of ``ids``, and the greedy tokens."""
    import torch
    from transformers import DynamicCache

    from xinference_nb.engines.batching_llm import growing_layer

    arg = cache_arg(model)
    with torch.inference_mode():
        if cache_factory is not None:
            cache = cache_factory()
        else:
            cache = DynamicCache(config=model.config)
            if growing:
                cache.layers = [growing_layer() for _ in cache.layers]
        b, n = ids.shape
        mask = torch.ones((b, n), dtype=torch.long)
        out = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(n).expand(b, n),
                    use_cache=True, logits_to_keep=1, **{arg: cache})
        last = out.logits[:, -1, :].float().argmax(-1, keepdim=True)
        times, tokens = [], [last[:, 0].tolist()]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype)], dim=-1)
            positions = mask.sum(-1, keepdim=True) - 1
            t0 = time.perf_counter()
            out = model(input_ids=last, attention_mask=mask, position_ids=positions, use_cache=True,
                        logits_to_keep=1, **{arg: cache})
            last = out.logits[:, -1, :].float().argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t0)
            tokens.append(last[:, 0].tolist())
    return times, tokens


def scheduler_decode(client: Any, uid: str, texts: list[str], steps: int) -> tuple[list[float], list[float]]:
    """Seconds of each scheduler decode step with all rows running, and of the model forward inside
    that step, for ``len(texts)`` concurrent greedy requests of ``steps`` tokens (the step method and
    the model's forward are wrapped on the instances, for this run only)."""
    from xinference_nb.manager import get_manager

    sched = get_manager().engine_model(uid).scheduler
    inner, forward, times, inside = sched._decode, sched.model.forward, [], []
    spent: list[float] = []

    def timed_forward(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return forward(*a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    def timed() -> None:
        full = len(sched._rows) == len(texts)
        spent.clear()
        t0 = time.perf_counter()
        inner()
        if full:
            times.append(time.perf_counter() - t0)
            inside.append(sum(spent))

    sched._decode = timed
    sched.model.forward = timed_forward
    handle = client.get_model(uid)
    try:
        threads = [threading.Thread(target=handle.generate, args=(t,),
                                    kwargs={"generate_config": {"temperature": 0, "max_tokens": steps}})
                   for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del sched._decode
        del sched.model.forward
    return times, inside


def on_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a thread of its own, as the scheduler runs its steps (an OpenMP team per thread)."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)))
    worker.start()
    worker.join()
    return out[0]


def texts_of(tokenizer: Any, batch: int, length: int, seed: int) -> list[str]:
    """``batch`` prompts of ``length`` tokens each (as text that encodes back to that many tokens)."""
    words = ("river", "stone", "lamp", "orchard", "signal", "copper", "meadow", "harbor", "lantern", "quiet")
    out = []
    for i in range(batch):
        text, k = f"[{seed}-{i}]", 0
        while len(tokenizer(text)["input_ids"]) < length:
            text += " " + words[(k * 7 + i + seed) % len(words)]
            k += 1
        out.append(text)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def step_vs_forward(client: Any, uid: str, model: Any, tokenizer: Any, args: argparse.Namespace) -> dict:
    """Per batch size: the median scheduler step and the median raw forward (ms), and their ratio."""
    rows: dict[str, dict[str, list[float]]] = {}
    raw_decode(model, prompt_ids(2, 8, model.config.vocab_size, seed=0), 4)     # warm-up: first calls
    scheduler_decode(client, uid, texts_of(tokenizer, 2, 8, seed=0), 4)
    for r in range(args.rounds):
        for b in args.batches:
            texts = texts_of(tokenizer, b, args.prompt, seed=r * 100 + b)
            steps, inside = scheduler_decode(client, uid, texts, args.steps)
            ids = prompt_ids(b, args.prompt, model.config.vocab_size, seed=r * 100 + b)
            fwd = median(on_worker(raw_decode, model, ids, args.steps)[0])
            cell = rows.setdefault(str(b), {"step_ms": [], "forward_ms": [], "inside_ms": []})
            cell["step_ms"].append(median(steps) * 1000)
            cell["inside_ms"].append(median(inside) * 1000)
            cell["forward_ms"].append(fwd * 1000)
    out = {}
    for b, cell in rows.items():
        s, f, i = median(cell["step_ms"]), median(cell["forward_ms"]), median(cell["inside_ms"])
        out[b] = {"step_ms": round(s, 2), "forward_ms": round(f, 2), "ratio": round(s / f, 3),
                  "forward_in_step_ms": round(i, 2), "step_vs_own_forward": round(s / i, 3)}
    return out


def attempt_variants(model_dir: Path, args: argparse.Namespace) -> dict[str, Callable[[], tuple[Any, Any]]]:
    """name -> a function returning (model, how to run its decode) for each attempt."""
    import torch
    from transformers import AutoModelForCausalLM

    def load(**kw: Any) -> Any:
        return AutoModelForCausalLM.from_pretrained(model_dir, **kw).eval()

    variants: dict[str, Callable[[], tuple[Any, Any]]] = {
        "sdpa (default)": lambda: (load(attn_implementation="sdpa"), {}),
        "eager attention": lambda: (load(attn_implementation="eager"), {}),
        "one torch thread": lambda: (load(attn_implementation="sdpa"), {"threads": 1}),
    }
    if torch.backends.mkldnn.is_available():
        variants["bf16 weights"] = lambda: (load(attn_implementation="sdpa", dtype=torch.bfloat16), {})
    variants["static cache + torch.compile"] = lambda: (load(attn_implementation="sdpa"), {"compile": True})
    return variants


def run_attempt(model: Any, how: dict, ids: Any, steps: int) -> tuple[list[float], list[list[int]]]:
    import torch

    threads = torch.get_num_threads()
    try:
        if how.get("threads"):
            torch.set_num_threads(how["threads"])
        if how.get("compile"):
            return compiled_decode(model, ids, steps)
        return on_worker(raw_decode, model, ids, steps)
    finally:
        torch.set_num_threads(threads)


def compiled_decode(model: Any, ids: Any, steps: int) -> tuple[list[float], list[list[int]]]:
    """The raw decode with a StaticCache and the forward compiled (the first steps compile: dropped)."""
    import torch
    from transformers import StaticCache

    b, n = ids.shape
    fwd = torch.compile(model.forward, dynamic=False, fullgraph=False)
    total = n + steps + 1
    arg = cache_arg(model)
    with torch.inference_mode():
        cache = StaticCache(config=model.config, max_cache_len=total)
        mask = torch.zeros((b, total), dtype=torch.long)
        mask[:, :n] = 1
        out = model(input_ids=ids, attention_mask=mask[:, :n], position_ids=torch.arange(n).expand(b, n),
                    use_cache=True, cache_position=torch.arange(n), logits_to_keep=1, **{arg: cache})
        last = out.logits[:, -1, :].float().argmax(-1, keepdim=True)
        times, tokens = [], [last[:, 0].tolist()]
        for k in range(steps):
            pos = n + k
            mask[:, pos] = 1
            t0 = time.perf_counter()
            out = fwd(input_ids=last, attention_mask=mask, position_ids=torch.full((b, 1), pos),
                      use_cache=True, cache_position=torch.tensor([pos]), logits_to_keep=1, **{arg: cache})
            last = out.logits[:, -1, :].float().argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t0)
            tokens.append(last[:, 0].tolist())
    return times[3:], tokens


def attempts(model_dir: Path, model: Any, args: argparse.Namespace) -> dict:
    """Each attempt's raw forward (ms, median step) against the default, at the largest batch, and
    whether its greedy tokens equal the default's."""
    b = max(args.batches)
    variants = attempt_variants(model_dir, args)
    loaded: dict[str, tuple[Any, Any]] = {}
    for name, make in variants.items():
        try:
            loaded[name] = make()
        except Exception as exc:  # noqa: BLE001 - reported, the others still run
            print(f"  {name}: not available ({type(exc).__name__}: {exc})", flush=True)
    cells: dict[str, list[float]] = {name: [] for name in loaded}
    same: dict[str, bool] = {}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        ids = prompt_ids(b, args.prompt, model.config.vocab_size, seed=1000 + r)
        if r == 0:                      # warm-up: first calls (and compiling) are not decode steps
            for m, how in loaded.values():
                try:
                    run_attempt(m, how, ids[:, :8], 6)
                except Exception:  # noqa: BLE001 - the round reports it
                    pass
        base_tokens = None
        for name, (m, how) in loaded.items():
            if name in failed:
                continue
            try:
                times, tokens = run_attempt(m, how, ids, args.steps)
            except Exception as exc:  # noqa: BLE001
                failed[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            if base_tokens is None:
                base_tokens = tokens
            same[name] = same.get(name, True) and tokens == base_tokens
            cells[name].append(median(times) * 1000)
    base = median(cells["sdpa (default)"])
    out = {name: {"forward_ms": round(median(ms), 2), "vs_default": round(median(ms) / base, 3),
                  "identical_tokens": same.get(name)} for name, ms in cells.items() if ms}
    out.update({name: {"failed": why} for name, why in failed.items()})
    return out


OPENMP_VARIANTS = {"OpenMP default wait (child)": {}, "OpenMP passive wait (child)": {"OMP_WAIT_POLICY": "PASSIVE"}}


def openmp_attempts(model_dir: Path, args: argparse.Namespace) -> dict:
    """The raw forward at the largest batch in child processes that differ only in OMP_WAIT_POLICY
    (libgomp reads it once, when torch loads): alternating, one child per variant per round."""
    import subprocess

    cells: dict[str, list[float]] = {name: [] for name in OPENMP_VARIANTS}
    tokens: dict[str, Any] = {}
    for r in range(args.rounds):
        for name, env in OPENMP_VARIANTS.items():
            cmd = [sys.executable, __file__, "--raw-only", str(model_dir), "--batches", str(max(args.batches)),
                   "--prompt", str(args.prompt), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1800)
            if out.returncode:
                return {name: {"failed": out.stderr[-300:]}}
            got = json.loads(out.stdout.strip().splitlines()[-1])
            cells[name].append(got["forward_ms"])
            tokens.setdefault(name, got["tokens"])
    base = median(cells["OpenMP default wait (child)"])
    first = next(iter(tokens.values()))
    return {name: {"forward_ms": round(median(ms), 2), "vs_default": round(median(ms) / base, 3),
                   "identical_tokens": tokens[name] == first} for name, ms in cells.items()}


def raw_only(model_dir: str, args: argparse.Namespace) -> None:
    """Child of ``openmp_attempts``: one raw decode, its median step and tokens as one JSON line."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = prompt_ids(max(args.batches), args.prompt, model.config.vocab_size, seed=7)
    on_worker(raw_decode, model, ids[:, :8], 4)
    times, tokens = on_worker(raw_decode, model, ids, args.steps)
    print(json.dumps({"forward_ms": median(times) * 1000, "tokens": tokens}))


def main(argv: Any = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per row before the decode")
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--attempts", action="store_true", help="also the attempts to lower the floor")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--raw-only", help=argparse.SUPPRESS)   # a child of the OpenMP attempt
    args = ap.parse_args(argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    if args.raw_only:
        return raw_only(args.raw_only, args)
    import torch
    import xinference_nb as xnb

    work = Path(tempfile.mkdtemp(prefix="decode-floor-"))
    os.environ["XINFERENCE_NB_HOME"] = str(work / "home")
    model_dir = build_model(work, small=args.small)
    client = xnb.Client()
    uid = client.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(model_dir),
                              show_progress=False, max_num_seqs=max(args.batches), enable_prefix_caching=False)
    from xinference_nb.manager import get_manager

    engine = get_manager().engine_model(uid)
    model, tokenizer = engine.scheduler.model, engine.scheduler.tokenizer
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {model_dir.name}; "
          f"prompt {args.prompt}, {args.steps} steps, {args.rounds} rounds", flush=True)
    result: dict[str, Any] = {"step_vs_forward": step_vs_forward(client, uid, model, tokenizer, args)}
    for b, cell in result["step_vs_forward"].items():
        print(f"  batch {b:>2}: step {cell['step_ms']:.2f} ms, raw forward {cell['forward_ms']:.2f} ms, "
              f"ratio {cell['ratio']:.3f} (target <= 1.1); the forward inside the step "
              f"{cell['forward_in_step_ms']:.2f} ms, step / it {cell['step_vs_own_forward']:.3f}", flush=True)
    client.terminate_model(uid)
    if args.attempts:
        result["attempts"] = {**attempts(model_dir, model, args), **openmp_attempts(model_dir, args)}
        for name, cell in result["attempts"].items():
            print(f"  {name}: {cell}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
