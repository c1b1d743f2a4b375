"""OpenAI's ``n`` and ``logprobs`` in results: several choices of one request, and per-token
log-probabilities in the shapes OpenAI's clients read.

- ``n``: the handle runs the request ``n`` times at once (rows of one batch on a batching engine; with a
  seed, choice ``i`` samples with ``seed + i``); ``merge_results`` / ``merge_streams`` put the choices
  into one result (``index`` 0..n-1, the prompt counted once in ``usage``) or one stream (each choice's
  chunks as they come, usage once at the end).
- logprobs: an engine gives one entry per generated token (``chat.Completion.logprobs``);
  ``chat_logprobs`` is a chat choice's ``{"content": [...], "refusal": None}``, ``completion_logprobs``
  the legacy /v1/completions shape (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator, Optional

from .structured import Constraint


def choice_params(params: Any, n: int) -> list[Any]:
    """The sampling parameters of each of ``n`` choices: the same, but choice ``i`` seeded ``seed + i``."""
    if n == 1 or params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=(params.seed + i) % (2**32 - 1)) for i in range(n)]


def trim_logprobs(entries: Optional[list[dict[str, Any]]], text: str) -> Optional[list[dict[str, Any]]]:
    """The entries whose tokens make up ``text`` (the reply after a stop string cut it)."""
    if entries is None:
        return None
    out, seen = [], 0
    for e in entries:
        if seen >= len(text):
            break
        out.append(e)
        seen += len(e["token"])
    return out


def chat_logprobs(entries: Optional[list[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    return None if entries is None else {"content": entries, "refusal": None}


def completion_logprobs(entries: Optional[list[dict[str, Any]]], offset: int = 0) -> Optional[dict[str, Any]]:
    """The legacy completions shape; ``offset``: where these tokens start in the whole text."""
    if entries is None:
        return None
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result of ``n`` choices from ``n`` one-choice results of the same prompt."""
    if len(results) == 1:
        return results[0]
    out = dict(results[0])
    out["choices"] = [dict(r["choices"][0], index=i) for i, r in enumerate(results)]
    completion = sum(r["usage"]["completion_tokens"] for r in results)
    prompt = results[0]["usage"]["prompt_tokens"]
    out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return out


_END = object()


def merge_streams(streams: list[Iterator[dict[str, Any]]], with_usage: bool) -> Iterator[dict[str, Any]]:
    """One stream of ``n`` choices: each stream's chunks as they come, its choice ``index`` set, the
    usage of the choices summed into one last chunk. Closing it closes every stream."""
    if len(streams) == 1:
        yield from streams[0]
        return
    q: "queue.Queue[Any]" = queue.Queue()
    stop = threading.Event()

    def pump(i: int, it: Iterator[dict[str, Any]]) -> None:
        try:
            for chunk in it:
                q.put((i, chunk))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - raised in the reader's thread
            q.put((i, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            q.put((i, _END))

    threads = [threading.Thread(target=pump, args=(i, s), daemon=True, name=f"xinf-choice-{i}")
               for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    yield from _merged(q, len(streams), with_usage, stop)


def _merged(q: "queue.Queue[Any]", n: int, with_usage: bool, stop: threading.Event) -> Iterator[dict[str, Any]]:
    live, usage, last = n, None, None
    try:
        while live:
            i, item = q.get()
            if item is _END:
                live -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            chunk = dict(item)
            part = chunk.pop("usage", None)
            if part is not None:
                usage = part if usage is None else {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": usage["completion_tokens"] + part["completion_tokens"],
                    "total_tokens": usage["total_tokens"] + part["completion_tokens"]}
            chunk["choices"] = [dict(c, index=i) for c in chunk.get("choices") or []]
            last = chunk
            yield chunk
        if with_usage and usage is not None and last is not None:
            yield dict(last, choices=[], usage=usage)
    finally:
        stop.set()


def parsed_fields(message: dict[str, Any], constraint: Optional[Constraint], finish_reason: str,
                  parse: Callable[..., tuple[Any, Optional[str]]]) -> None:
    """Put ``parsed`` (and ``parse_error`` when it is None for a reason) in a chat message whose
    request had a constraint from response_format / guided_* (not from tool_choice)."""
    if constraint is None or constraint.source == "tool_choice":
        return
    parsed, why = parse(message.get("content"), constraint, finish_reason)
    message["parsed"] = parsed
    if why is not None:
        message["parse_error"] = why
