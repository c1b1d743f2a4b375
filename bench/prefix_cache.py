"""Prefix caching (issue 23): what reusing the key/values of a shared prompt prefix saves, in one run, as ratios.

    .venv/bin/python bench/prefix_cache.py [--rounds 3] [--rows 24] [--instruction 1800] [--turns 10]
                                           [--turn-tokens 170] [--tokens 8] [--small] [--json out.json]

The model: bench/llm_batching.py's random Llama of about 100M parameters (``--small``: the tiny test
model and smaller prompts, to check the bench itself), on the transformers engine (continuous batching)
and on llama.cpp (the same weights as an F32 GGUF, built like tests/tiny_models.py's ``build_tiny_gguf``),
in the kernel. Each engine is launched with ``enable_prefix_caching=True`` (the default) and ``False``;
an engine that does not take the option yet is reported "not available". Greedy, ``--tokens`` new tokens.
Every system runs every workload alone, one after the other, round after round (each cell the median
round); each round's prompts start with a fresh nonce, so nothing is cached from an earlier round.

* (a) ``chat_batch`` of ``--rows`` chats sharing an instruction of ``--instruction`` tokens (a short varying
  ticket each): wall time, cache off / on (target >= 3x);
* (b) a ``--turns``-turn chat whose history grows by ``--turn-tokens`` tokens a turn: time to first token
  (streamed) of the last turn / the first (target <= 2x with the cache; without it, it grows with the
  history);
* (c) two conversations of about ``--instruction`` tokens each, alternating A, B, A, B, A, B: time to first
  token of a resumed turn. On llama.cpp the live context holds one conversation; the other comes back
  from a saved state (``llama.cpp, no saved states``: ``prefix_cache_max_tokens=1``, live prefix only).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

# bench/ is the script's folder; importing llm_batching puts the repository, tests/ and bench/ on
# sys.path and sets the offline environment (its preamble, the one copy)
from llm_batching import build_model  # noqa: E402

SENTENCES = ("Read the ticket carefully before you answer. ", "Label it billing, bug, account or other. ",
             "Never explain the label and never apologise. ", "A refund or an invoice is billing. ",
             "A crash, an error or a wrong page is a bug. ", "A password or a login problem is account. ")
# (engine, label, launch options): a system whose engine does not take its options is "not available"
SYSTEMS = (("transformers", "transformers, cache on", {"enable_prefix_caching": True}),
           ("transformers", "transformers, cache off", {"enable_prefix_caching": False}),
           ("llama.cpp", "llama.cpp, cache on", {"enable_prefix_caching": True}),
           ("llama.cpp", "llama.cpp, no saved states", {"enable_prefix_caching": True, "prefix_cache_max_tokens": 1}),
           ("llama.cpp", "llama.cpp, cache off", {"enable_prefix_caching": False}))


def text_of(tokenizer: Any, tokens: int, start: str) -> str:
    """``start`` followed by the instruction's sentences until the text is ``tokens`` tokens long."""
    text, i = start, 0
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += SENTENCES[i % len(SENTENCES)]
        i += 1
    return text


def greedy(tokens: int, stream: bool = False) -> dict[str, Any]:
    return {"temperature": 0, "max_tokens": tokens, **({"stream": True} if stream else {})}


def first_token_s(handle: Any, messages: list[dict[str, str]], tokens: int) -> tuple[float, str]:
    """(seconds to the first content chunk of a streamed chat, the reply)."""
    t0 = time.perf_counter()
    first: Optional[float] = None
    reply = ""
    for chunk in handle.chat(messages, generate_config=greedy(tokens, stream=True)):
        choices = chunk.get("choices") or []
        piece = (choices[0].get("delta") or {}).get("content") if choices else None
        if piece:
            reply += piece
            if first is None:
                first = time.perf_counter() - t0
    return (first if first is not None else time.perf_counter() - t0), reply


def batch_wall_s(handle: Any, tokenizer: Any, args: argparse.Namespace, nonce: str) -> float:
    """(a): one chat_batch of ``--rows`` chats sharing the instruction."""
    instruction = text_of(tokenizer, args.instruction, f"Session {nonce}. ")
    rows = [[{"role": "system", "content": instruction}, {"role": "user", "content": f"Ticket {i}: issue #{i * 7}"}]
            for i in range(args.rows)]
    t0 = time.perf_counter()
    handle.chat_batch(rows, generate_config=greedy(args.tokens), progress=False)
    return time.perf_counter() - t0


def turn_ttfts(handle: Any, tokenizer: Any, args: argparse.Namespace, nonce: str) -> list[float]:
    """(b): the time to first token of each turn of one chat whose history grows."""
    messages: list[dict[str, str]] = []
    out = []
    for turn in range(args.turns):
        messages.append({"role": "user", "content": text_of(tokenizer, args.turn_tokens, f"Turn {turn} of {nonce}. ")})
        ttft, reply = first_token_s(handle, messages, args.tokens)
        out.append(ttft)
        messages.append({"role": "assistant", "content": reply})
    return out


def alternating_ttft(handle: Any, tokenizer: Any, args: argparse.Namespace, nonce: str) -> float:
    """(c): the median time to first token of the resumed turns of two alternating conversations."""
    chats = {name: [{"role": "system", "content": text_of(tokenizer, args.instruction, f"Chat {name} {nonce}. ")}]
             for name in ("A", "B")}
    resumed = []
    for i in range(6):
        messages = chats["AB"[i % 2]]
        messages.append({"role": "user", "content": f"Question {i}: what is the label?"})
        ttft, reply = first_token_s(handle, messages, args.tokens)
        messages.append({"role": "assistant", "content": reply})
        if i >= 2:
            resumed.append(ttft)
    return statistics.median(resumed)


def launch_all(manager: Any, hf_dir: Path, gguf: Path) -> dict[str, Any]:
    """label → (handle) for each system its engine can run; label → "not available: ..." otherwise."""
    from xinference_nb.client.handles import handle_of
    from xinference_nb.engines.options import accepted_options

    out: dict[str, Any] = {}
    for i, (engine, label, options) in enumerate(SYSTEMS):
        missing = [k for k in options if k not in accepted_options("LLM", engine)]
        if missing:
            out[label] = f"not available: the {engine} engine does not take {', '.join(missing)}"
            continue
        path = gguf if engine == "llama.cpp" else hf_dir
        uid = manager.launch_model("qwen2.5-instruct", model_engine=engine, model_path=str(path),
                                   show_progress=False, model_uid=f"bench-prefix-{i}", **options)
        out[label] = handle_of(manager, uid)
    return out


def measure(systems: dict[str, Any], tokenizer: Any, args: argparse.Namespace) -> dict[str, dict[str, list]]:
    cells: dict[str, dict[str, list]] = {label: {"batch_s": [], "turns": [], "alternating_s": []}
                                         for label, h in systems.items() if not isinstance(h, str)}
    for label in cells:   # warm-up: the first call of each pays for its lazy setup
        systems[label].chat([{"role": "user", "content": "hello"}], generate_config=greedy(2))
    for r in range(args.rounds):
        for label, cell in cells.items():
            handle, nonce = systems[label], f"r{r}-{label}"
            cell["batch_s"].append(batch_wall_s(handle, tokenizer, args, nonce))
            cell["turns"].append(turn_ttfts(handle, tokenizer, args, nonce))
            cell["alternating_s"].append(alternating_ttft(handle, tokenizer, args, nonce))
            print(f"  round {r + 1} {label}: batch {cell['batch_s'][-1]:.2f} s, turn 1 / {args.turns} TTFT "
                  f"{cell['turns'][-1][0] * 1000:.0f} / {cell['turns'][-1][-1] * 1000:.0f} ms, alternating TTFT "
                  f"{cell['alternating_s'][-1] * 1000:.0f} ms", flush=True)
    return cells


def summarize(cells: dict[str, dict[str, list]]) -> dict[str, dict[str, float]]:
    out = {}
    for label, cell in cells.items():
        first = statistics.median(t[0] for t in cell["turns"])
        last = statistics.median(t[-1] for t in cell["turns"])
        out[label] = {"batch_s": statistics.median(cell["batch_s"]), "turn1_ttft_s": first, "last_turn_ttft_s": last,
                      "last_over_first": last / first, "alternating_ttft_s": statistics.median(cell["alternating_s"])}
    return out


def report(summary: dict[str, dict[str, float]], unavailable: dict[str, str], args: argparse.Namespace) -> dict:
    ratios: dict[str, Any] = {}
    for label, why in unavailable.items():
        print(f"  {label}: {why}")
    for label, s in summary.items():
        print(f"  {label}: chat_batch {s['batch_s']:.2f} s; TTFT turn 1 {s['turn1_ttft_s'] * 1000:.0f} ms, turn "
              f"{args.turns} {s['last_turn_ttft_s'] * 1000:.0f} ms ({s['last_over_first']:.2f}x); alternating "
              f"resumed TTFT {s['alternating_ttft_s'] * 1000:.0f} ms")
    for engine in ("transformers", "llama.cpp"):
        on, off = summary.get(f"{engine}, cache on"), summary.get(f"{engine}, cache off")
        if on:
            ratios[f"{engine} turn {args.turns} / turn 1, cache on"] = r = on["last_over_first"]
            print(f"  {engine}: turn {args.turns} TTFT / turn 1, cache on: {r:.2f}x (target <= 2x)")
        if on and off:
            ratios[f"{engine} chat_batch off / on"] = r = off["batch_s"] / on["batch_s"]
            print(f"  {engine}: chat_batch of {args.rows}, cache off / on: {r:.2f}x (target >= 3x)")
            print(f"  {engine}: turn {args.turns} TTFT / turn 1, cache off: {off['last_over_first']:.2f}x")
        else:
            print(f"  {engine}: cache on vs off: not available")
    live, on = summary.get("llama.cpp, no saved states"), summary.get("llama.cpp, cache on")
    if live and on:
        ratios["llama.cpp alternating, no saved states / saved states"] = r = (live["alternating_ttft_s"]
                                                                              / on["alternating_ttft_s"])
        print(f"  llama.cpp: alternating conversations, resumed TTFT without / with saved states: {r:.2f}x")
    return ratios


def main(argv: Any = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--instruction", type=int, default=1800, help="tokens of the shared instruction")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--turn-tokens", type=int, default=170, help="tokens each turn adds to the history")
    ap.add_argument("--tokens", type=int, default=8, help="new tokens per reply")
    ap.add_argument("--small", action="store_true", help="the tiny test model and smaller prompts (checks the bench)")
    ap.add_argument("--json", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.rows, args.instruction, args.turns, args.turn_tokens = 1, 6, 400, 4, 80
    workdir = Path(tempfile.mkdtemp(prefix="bench-prefix-"))
    os.environ["XINFERENCE_NB_HOME"] = str(workdir / "nb-home")
    import tiny_models
    from transformers import AutoTokenizer

    from xinference_nb.manager import get_manager

    hf_dir = build_model(workdir, small=args.small, context=4096)   # 10 turns of history pass 2,048 tokens
    gguf = tiny_models.build_tiny_gguf(hf_dir, workdir / f"{hf_dir.name}-f32.gguf")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    manager = get_manager()
    systems = launch_all(manager, hf_dir, gguf)
    print(f"prefix cache bench — {os.cpu_count()} CPUs, model {hf_dir.name}, {args.rows} rows sharing "
          f"{args.instruction} tokens, {args.turns} turns of {args.turn_tokens} tokens, {args.tokens} new tokens, "
          f"greedy, {args.rounds} rounds", flush=True)
    try:
        summary = summarize(measure(systems, tokenizer, args))
    finally:
        manager.terminate_all()
    unavailable = {k: v for k, v in systems.items() if isinstance(v, str)}
    out = {"args": vars(args), "systems": summary, "not_available": unavailable,
           "ratios": report(summary, unavailable, args)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
