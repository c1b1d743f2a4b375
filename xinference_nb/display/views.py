"""Rich views of the plain results that Client and the handles return.

Every view *wraps* a result without changing it: dict results become a ``dict`` subclass that holds
exactly the same keys and values (``view == result``), list results a ``list`` subclass; bytes and
other objects are held in ``.data``. Each view has ``_repr_html_`` / ``_repr_mimebundle_`` for
Jupyter and a readable ``text/plain`` for terminals and logs.
"""
from __future__ import annotations

import base64
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from ..chat import chunk_delta, first_choice
from ..errors import shorten
from ._html import esc, human_bytes, markdown, table, text_table, wrap
from ..parse.where import flatten_document


class _View:
    """Mixin: text/plain from ``_text()``, text/html from ``_html()``."""

    def _html(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return self._html()

    def _extra_bundle(self) -> dict[str, Any]:
        return {}

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        bundle = {"text/plain": self._text(), "text/html": self._html()}
        bundle.update(self._extra_bundle())
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's text/plain in a terminal
        p.text(self._text())


class _DictView(_View, dict):
    def __init__(self, result: Mapping[str, Any] | None = None, **context: Any):
        dict.__init__(self, result or {})
        self.context = context

    @property
    def data(self) -> dict:
        """The plain dict (a copy of the keys; values are shared)."""
        return dict(self)


class _ListView(_View, list):
    def __init__(self, result: Iterable[Any] | None = None, **context: Any):
        list.__init__(self, result or [])
        self.context = context

    @property
    def data(self) -> list:
        return list(self)


# ------------------------------------------------------------------------------------------ messages
class Message(_View):
    """A one-line status ("Registered 'x'", an error) shown as text or a styled line."""

    def __init__(self, text: str, level: str = "info", detail: Optional[str] = None):
        self.text, self.level, self.detail = text, level, detail

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Message({self.text!r}, level={self.level!r})"

    def _text(self) -> str:
        return self.text + (f"\n{self.detail}" if self.detail else "")

    def _html(self) -> str:
        icon = {"ok": "✓", "error": "✗", "warning": "⚠"}.get(self.level, "•")
        cls = " class='err'" if self.level == "error" else ""
        detail = f"<pre>{esc(self.detail)}</pre>" if self.detail else ""
        return wrap(f"<div{cls}>{icon} {esc(self.text)}</div>{detail}")


# ------------------------------------------------------------------------------------------ chat
def _is_image_part(part: Any) -> bool:
    from ..chat.images import IMAGE_PART_TYPES

    return isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES


def _message_text(content: Any, images: bool = True) -> str:
    """The text of a message's content; image parts as ``[image]`` (left out with ``images=False``,
    where the HTML shows them as thumbnails)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        parts = []
        for part in content:
            if _is_image_part(part):
                if images:
                    parts.append("[image]")
            elif isinstance(part, dict):
                parts.append(part.get("text") or f"[{part.get('type', 'part')}]")
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return str(content)


def _images_html(content: Any) -> str:
    """Small thumbnails of a message's image parts (a placeholder for one that cannot be read here)."""
    if not isinstance(content, list):
        return ""
    from ..chat.images import THUMBNAIL_PX, thumbnail_url

    tiles = []
    for i, part in enumerate(p for p in content if _is_image_part(p)):
        url = thumbnail_url(part)
        if url is None:
            tiles.append(f"<span class='meta'>[image {i + 1}: not shown]</span>")
        else:
            tiles.append(f"<img src='{url}' alt='image {i + 1}' style='max-width:{THUMBNAIL_PX}px;"
                         f"max-height:{THUMBNAIL_PX}px;margin:2px;border-radius:3px'>")
    return f"<div class='images'>{''.join(tiles)}</div>" if tiles else ""


def _tool_calls_html(calls: list[dict]) -> str:
    rows = []
    for call in calls or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.dumps(json.loads(args), indent=1, ensure_ascii=False)
            except (ValueError, TypeError):
                pass
        rows.append((call.get("id", ""), fn.get("name", ""), f"<pre>{esc(args)}</pre>"))
    return "<div class='meta'>tool calls</div>" + table(["id", "function", "arguments"], rows, raw_cols=[2])


def _usage_text(usage: Optional[Mapping], stats: Optional[Mapping] = None) -> str:
    bits = []
    if usage:
        bits.append(f"tokens: prompt {usage.get('prompt_tokens', '?')}, completion "
                    f"{usage.get('completion_tokens', '?')}, total {usage.get('total_tokens', '?')}")
    if stats:
        if stats.get("ttft_s") is not None:
            bits.append(f"time to first token {stats['ttft_s'] * 1000:.0f} ms")
        if stats.get("tokens_per_s") is not None:
            bits.append(f"{stats['tokens_per_s']:.1f} tokens/s")
        if stats.get("elapsed_s") is not None:
            bits.append(f"{stats['elapsed_s']:.2f} s")
    return " · ".join(bits)


STOPPED_MARK = "[stopped]"  # after a reply the user stopped (ChatBox's Stop), in the html and the text


def message_html(msg: Mapping[str, Any], streaming: bool = False, stopped: bool = False) -> str:
    role = str(msg.get("role", "assistant"))
    body = ""
    reasoning = msg.get("reasoning_content")
    if reasoning:
        opened = " open" if streaming and not msg.get("content") else ""
        body += f"<details{opened}><summary>reasoning</summary>{markdown(reasoning)}</details>"
    body += _images_html(msg.get("content"))
    body += markdown(_message_text(msg.get("content"), images=False))
    if streaming:
        body += " ▌"
    if stopped:
        body += f"<div class='meta stopped'>{STOPPED_MARK}</div>"
    if msg.get("tool_calls"):
        body += _tool_calls_html(msg["tool_calls"])
    name = f" ({esc(msg['name'])})" if msg.get("name") else ""
    return f"<div class='msg {esc(role)}'><div class='role'>{esc(role)}{name}</div>{body}</div>"


def message_text(msg: Mapping[str, Any], stopped: bool = False) -> str:
    lines = [f"{msg.get('role', 'assistant')}:"]
    if msg.get("reasoning_content"):
        lines.append("  [reasoning] " + str(msg["reasoning_content"]).replace("\n", "\n  "))
    content = _message_text(msg.get("content"))
    if content:
        lines.append("  " + content.replace("\n", "\n  "))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        lines.append(f"  [tool call] {fn.get('name')}({fn.get('arguments')})")
    if stopped:
        lines.append("  " + STOPPED_MARK)
    return "\n".join(lines)


class ChatView(_DictView):
    """A ChatCompletion (or Completion) dict, rendered as a transcript: the prompt messages given in
    ``messages=`` (optional), then the answer with its reasoning collapsed, tool calls and usage.
    ``stopped``: the reader stopped the stream before its end (``stream_chat(..., stop=)``); the answer
    is the part that came, marked "[stopped]", and its finish_reason is ``STOPPED_FINISH``."""

    def __init__(self, result: Mapping[str, Any] | None = None, messages: Optional[list] = None,
                 stats: Optional[Mapping] = None, streaming: bool = False, title: Optional[str] = None,
                 stopped: bool = False):
        super().__init__(result)
        self.messages = list(messages or [])
        self.stats = dict(stats or {})
        self.streaming = streaming
        self.title = title
        self.stopped = stopped

    @property
    def answer(self) -> dict:
        """The assistant message (for a Completion: {"role": "assistant", "content": text})."""
        choices = self.get("choices") or [{}]
        choice = choices[0] or {}
        if "message" in choice:
            return dict(choice["message"] or {})
        return {"role": "assistant", "content": choice.get("text", "")}

    @property
    def content(self) -> str:
        return _message_text(self.answer.get("content"))

    def _html(self) -> str:
        parts = [message_html(m) for m in self.messages]
        parts.append(message_html(self.answer, streaming=self.streaming, stopped=self.stopped))
        meta = _usage_text(self.get("usage"), self.stats)
        finish = ((self.get("choices") or [{}])[0] or {}).get("finish_reason")
        if finish and not self.streaming:
            meta = (meta + " · " if meta else "") + f"finish: {finish}"
        if self.get("model"):
            meta = (meta + " · " if meta else "") + f"model: {self['model']}"
        if meta:
            parts.append(f"<div class='meta'>{esc(meta)}</div>")
        return wrap("".join(parts), self.title)

    def _text(self) -> str:
        parts = [message_text(m) for m in self.messages] + [message_text(self.answer, stopped=self.stopped)]
        meta = _usage_text(self.get("usage"), self.stats)
        if meta:
            parts.append(f"[{meta}]")
        return "\n".join(parts)


def transcript(messages: list, title: Optional[str] = None) -> "ChatTranscript":
    return ChatTranscript(messages, title=title)


class ChatTranscript(_ListView):
    """A list of chat messages (a conversation) rendered as a transcript; the replies at the indexes
    in ``stopped`` are marked "[stopped]" (the ChatBox's Stop cut them short)."""

    def __init__(self, messages: Iterable[Mapping] | None = None, title: Optional[str] = None,
                 stopped: Iterable[int] = ()):
        super().__init__(messages)
        self.title = title
        self.stopped = frozenset(stopped)

    def _html(self) -> str:
        return wrap("".join(message_html(m, stopped=i in self.stopped) for i, m in enumerate(self))
                    or "<i>(empty conversation)</i>", self.title)

    def _text(self) -> str:
        return ("\n".join(message_text(m, stopped=i in self.stopped) for i, m in enumerate(self))
                or "(empty conversation)")


# ------------------------------------------------------------------------------------------ streaming
class StreamAccumulator:
    """Folds OpenAI chunk dicts (chat.completion.chunk or text_completion chunks) into one
    ChatCompletion-shaped dict, measuring time to first token and tokens/s on the way."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first_token_at: Optional[float] = None
        self.end: Optional[float] = None
        self.content = ""
        self.reasoning = ""
        self.tool_calls: dict[int, dict] = {}
        self.n_chunks = 0
        self.usage: Optional[dict] = None
        self.finish_reason = None
        self.id = None
        self.model = None
        self.created = None
        self.kind = "chat"

    def add(self, chunk: Mapping[str, Any]) -> None:
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        choice, delta = first_choice(chunk), chunk_delta(chunk)
        got = False
        if "text" in choice and "delta" not in choice:
            self.kind = "completion"
            if choice.get("text"):
                self.content += choice["text"]
                got = True
        if delta.get("content"):
            self.content += delta["content"]
            got = True
        if delta.get("reasoning_content"):
            self.reasoning += delta["reasoning_content"]
            got = True
        for call in delta.get("tool_calls") or []:
            idx = call.get("index", len(self.tool_calls))
            slot = self.tool_calls.setdefault(idx, {"id": call.get("id"), "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
            slot["id"] = slot["id"] or call.get("id")
            fn = call.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            args = fn.get("arguments")
            slot["function"]["arguments"] += args if isinstance(args, str) else (json.dumps(args) if args else "")
            got = True
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if got:
            self.n_chunks += 1
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()

    def finish(self) -> None:
        self.end = time.perf_counter()

    @property
    def completion_tokens(self) -> int:
        if self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return self.n_chunks

    @property
    def stats(self) -> dict:
        end = self.end or time.perf_counter()
        ttft = (self.first_token_at - self.start) if self.first_token_at else None
        gen_time = end - (self.first_token_at or self.start)
        tokens = self.completion_tokens
        tps = tokens / gen_time if gen_time > 0 and tokens else None
        return {"ttft_s": ttft, "tokens_per_s": tps, "elapsed_s": end - self.start, "completion_tokens": tokens}

    def message(self) -> dict:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            msg["reasoning_content"] = self.reasoning
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return msg

    def result(self) -> dict:
        if self.kind == "completion":
            choice = {"index": 0, "text": self.content, "finish_reason": self.finish_reason}
            obj = "text_completion"
        else:
            choice = {"index": 0, "message": self.message(), "finish_reason": self.finish_reason}
            obj = "chat.completion"
        out = {"id": self.id, "object": obj, "created": self.created or int(time.time()), "model": self.model,
               "choices": [choice]}
        if self.usage:
            out["usage"] = self.usage
        return out


def _ipython_active() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    return get_ipython() is not None


STOPPED_FINISH = "cancelled"  # a stopped answer's finish_reason (not OpenAI's: the reader stopped it, not the model)


def _close(chunks: Any) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def stream_chat(chunks: Iterable[Mapping[str, Any]], messages: Optional[list] = None, show: Optional[bool] = None,
                every_s: float = 0.1, title: Optional[str] = None, on_update=None,
                stop: Optional[Callable[[], bool]] = None) -> ChatView:
    """Consume a stream of chunks, updating one display in place (in IPython), and return the whole
    answer as a ChatView (a ChatCompletion-shaped dict with ``.stats``). ``on_update(view)`` is
    called on each refresh (the widgets use it). ``stop()`` is asked after each chunk: once it is true
    (and the answer has not finished) the stream is closed here, on the thread reading it (a model
    in this kernel stops at its next token, a server's stream is disconnected), and the view holds the
    part that came, ``stopped``, with finish_reason ``STOPPED_FINISH``."""
    if show is None:
        show = _ipython_active()
    acc = StreamAccumulator()
    handle = None
    view = ChatView(acc.result(), messages=messages, streaming=True, title=title)
    if show:
        from IPython.display import display

        handle = display(view, display_id=True)
    last = 0.0
    stopped = False
    try:
        for chunk in chunks:
            waiting = acc.first_token_at is None
            acc.add(chunk)
            if stop is not None and acc.finish_reason is None and stop():
                stopped = True
                break
            now = time.perf_counter()
            if now - last >= every_s or (waiting and acc.first_token_at is not None):   # the first text at once
                last = now
                view = ChatView(acc.result(), messages=messages, stats=acc.stats, streaming=True, title=title)
                if handle is not None:
                    handle.update(view)
                if on_update is not None:
                    on_update(view)
    finally:
        acc.finish()
    if stopped:
        _close(chunks)
        acc.finish_reason = STOPPED_FINISH
    view = ChatView(acc.result(), messages=messages, stats=acc.stats, title=title, stopped=stopped)
    if handle is not None:
        handle.update(view)
    if on_update is not None:
        on_update(view)
    return view


# ------------------------------------------------------------------------------------------ media
def sniff_mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0):
        return "audio/mpeg"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        return "audio/ogg"
    return "application/octet-stream"


def _image_bytes(item: Mapping[str, Any]) -> tuple[Optional[bytes], Optional[str]]:
    """(bytes, remote url) of one image entry: b64_json decoded, a local path or file:// read."""
    if item.get("b64_json"):
        return base64.b64decode(item["b64_json"]), None
    url = item.get("url")
    if not url:
        return None, None
    if url.startswith(("http://", "https://", "data:")):
        return None, url
    path = Path(url[7:] if url.startswith("file://") else url)
    try:
        return path.read_bytes(), None
    except OSError:
        return None, url


class ImageView(_DictView):
    """A text_to_image result ({"created", "data": [{"url"} | {"b64_json"}]}) shown inline with the
    parameters it was made with (``params=``: prompt, size, steps...)."""

    def __init__(self, result: Mapping[str, Any] | None = None, params: Optional[Mapping] = None):
        super().__init__(result)
        self.params = dict(params or {})

    def images(self) -> list[tuple[Optional[bytes], Optional[str]]]:
        return [_image_bytes(item) for item in self.get("data") or []]

    def _html(self) -> str:
        tiles = []
        for i, (data, url) in enumerate(self.images()):
            if data:
                src = f"data:{sniff_mime(data)};base64,{base64.b64encode(data).decode()}"
            elif url:
                src = url
            else:
                tiles.append(f"<div class='err'>image {i}: not readable</div>")
                continue
            tiles.append(f"<img src='{esc(src)}' alt='image {i}' style='max-width:512px;margin:2px;"
                         "image-rendering:auto;min-width:128px'>")
        params = table(["parameter", "value"], self.params.items()) if self.params else ""
        n = len(self.get("data") or [])
        return wrap(f"<div>{''.join(tiles)}</div>{params}", f"{n} image{'s' if n != 1 else ''}")

    def _text(self) -> str:
        lines = [f"{len(self.get('data') or [])} image(s)"]
        for i, item in enumerate(self.get("data") or []):
            lines.append(f"  [{i}] " + (item.get("url") or f"b64_json ({len(item.get('b64_json') or '')} chars)"))
        for k, v in self.params.items():
            lines.append(f"  {k}: {v}")
        return "\n".join(lines)

    def _extra_bundle(self) -> dict:
        for data, _ in self.images():
            if data and sniff_mime(data) in ("image/png", "image/jpeg"):
                return {sniff_mime(data): base64.b64encode(data).decode()}
        return {}


class AudioView(_View):
    """Audio bytes (what ``speech`` returns) with an inline player; ``.data`` is the bytes."""

    def __init__(self, data: bytes, text: Optional[str] = None, params: Optional[Mapping] = None):
        self.data = bytes(data)
        self.text = text
        self.params = dict(params or {})

    @property
    def mime(self) -> str:
        return sniff_mime(self.data)

    def duration_s(self) -> Optional[float]:
        """Duration of a WAV (from its header); None for other formats."""
        if self.mime != "audio/wav":
            return None
        import io
        import wave

        try:
            with wave.open(io.BytesIO(self.data)) as w:
                return w.getnframes() / float(w.getframerate())
        except (wave.Error, EOFError, ZeroDivisionError):
            return None

    def _describe(self) -> str:
        dur = self.duration_s()
        return f"{self.mime}, {human_bytes(len(self.data))}" + (f", {dur:.2f} s" if dur is not None else "")

    def _html(self) -> str:
        src = f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"
        said = f"<div>“{esc(self.text)}”</div>" if self.text else ""
        params = table(["parameter", "value"], self.params.items()) if self.params else ""
        return wrap(f"{said}<audio controls src='{src}'></audio><div class='meta'>{esc(self._describe())}</div>"
                    f"{params}", "speech")

    def _text(self) -> str:
        return f"<audio: {self._describe()}>" + (f" {self.text!r}" if self.text else "")


def _fmt_time(t: Any) -> str:
    try:
        t = float(t)
    except (TypeError, ValueError):
        return "?"
    return f"{int(t // 60)}:{t % 60:05.2f}"


class TranscriptionView(_DictView):
    """A transcription ({"text", optional "segments"/"words" with start/end}) with timings."""

    def segments(self) -> list[dict]:
        return list(self.get("segments") or self.get("chunks") or self.get("words") or [])

    def _seg_row(self, seg: Mapping) -> tuple:
        start = seg.get("start", (seg.get("timestamp") or [None, None])[0])
        end = seg.get("end", (seg.get("timestamp") or [None, None])[-1])
        return _fmt_time(start), _fmt_time(end), seg.get("text", seg.get("word", ""))

    def _html(self) -> str:
        body = f"<div>{esc(self.get('text', ''))}</div>"
        segs = self.segments()
        if segs:
            body += table(["start", "end", "text"], [self._seg_row(s) for s in segs])
        meta = [f"{k}: {self[k]}" for k in ("language", "duration") if self.get(k) is not None]
        if meta:
            body += f"<div class='meta'>{esc(' · '.join(meta))}</div>"
        return wrap(body, "transcription")

    def _text(self) -> str:
        lines = [str(self.get("text", ""))]
        for s in self.segments():
            start, end, text = self._seg_row(s)
            lines.append(f"[{start} → {end}] {text}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ rerank / embed
def _doc_text(doc: Any) -> str:
    if isinstance(doc, Mapping):
        return str(doc.get("text", doc))
    return "" if doc is None else str(doc)


class RerankView(_DictView):
    """A rerank result as a ranked table with scores (``documents=`` fills texts that the result
    does not carry, ``query=`` is shown as the title)."""

    def __init__(self, result: Mapping[str, Any] | None = None, documents: Optional[list] = None,
                 query: Optional[str] = None):
        super().__init__(result)
        self.documents = list(documents or [])
        self.query = query

    def rows(self) -> list[tuple[int, int, float, str]]:
        rows = []
        for rank, r in enumerate(self.get("results") or [], 1):
            idx = r.get("index")
            text = _doc_text(r.get("document"))
            if not text and self.documents and isinstance(idx, int) and idx < len(self.documents):
                text = _doc_text(self.documents[idx])
            rows.append((rank, idx, float(r.get("relevance_score", float("nan"))), text))
        return rows

    def _html(self) -> str:
        rows = self.rows()
        scores = [s for _, _, s, _ in rows if not math.isnan(s)]
        lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
        out = []
        for rank, idx, score, text in rows:
            width = 60 if hi == lo else int(6 + 54 * (score - lo) / (hi - lo))
            out.append((rank, idx, f"<span class='bar' style='width:{width}px'></span> {score:.4f}", esc(text)))
        title = f"rerank: {self.query}" if self.query else "rerank"
        return wrap(table(["rank", "index", "relevance_score", "document"], out, raw_cols=[2, 3]), title)

    def _text(self) -> str:
        return text_table(["rank", "index", "score", "document"],
                          [[r, i, f"{s:.4f}", t] for r, i, s, t in self.rows()])


def _heat_color(v: float) -> str:
    v = max(-1.0, min(1.0, v))
    if v >= 0:
        return f"rgba(58,155,93,{0.1 + 0.85 * v:.2f})"
    return f"rgba(192,57,43,{0.1 + 0.85 * -v:.2f})"


class EmbeddingView(_DictView):
    """An embedding result: shape and norms, and for several inputs a cosine-similarity heatmap
    (``inputs=`` labels the rows)."""

    def __init__(self, result: Mapping[str, Any] | None = None, inputs: Optional[list] = None):
        super().__init__(result)
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])

    def matrix(self):
        import numpy as np

        rows = [d.get("embedding") for d in self.get("data") or []]
        if not rows or not all(isinstance(r, (list, tuple)) for r in rows):
            return np.zeros((len(rows), 0))
        return np.asarray(rows, dtype=float)

    @property
    def shape(self) -> tuple[int, int]:
        m = self.matrix()
        return (int(m.shape[0]), int(m.shape[1]) if m.ndim == 2 else 0)

    def norms(self) -> list[float]:
        import numpy as np

        m = self.matrix()
        return [float(x) for x in np.linalg.norm(m, axis=1)] if m.size else []

    def cosine(self):
        import numpy as np

        m = self.matrix()
        if not m.size:
            return np.zeros((0, 0))
        n = np.linalg.norm(m, axis=1, keepdims=True)
        n[n == 0] = 1.0
        u = m / n
        return u @ u.T

    def _label(self, i: int) -> str:
        text = str(self.inputs[i]) if i < len(self.inputs) else f"#{i}"
        return shorten(text, 40, "…")

    def _summary(self) -> str:
        n, d = self.shape
        norms = self.norms()
        norm_txt = (f"norm {min(norms):.3f}" if norms and max(norms) - min(norms) < 1e-3
                    else f"norms {min(norms):.3f}–{max(norms):.3f}" if norms else "")
        usage = self.get("usage") or {}
        tok = f", {usage.get('total_tokens')} tokens" if usage.get("total_tokens") is not None else ""
        return f"{n} × {d} embedding{'s' if n != 1 else ''}, {norm_txt}{tok}" + (
            f" · model {self['model']}" if self.get("model") else "")

    def _html(self) -> str:
        body = f"<div>{esc(self._summary())}</div>"
        n, _ = self.shape
        if 2 <= n <= 40:
            sim = self.cosine()
            head = "<tr><th></th>" + "".join(f"<th title='{esc(self._label(j))}'>{j}</th>" for j in range(n)) + "</tr>"
            rows = []
            for i in range(n):
                cells = "".join(f"<td style='background:{_heat_color(float(sim[i, j]))};text-align:right'>"
                                f"{sim[i, j]:.2f}</td>" for j in range(n))
                rows.append(f"<tr><th>{i}: {esc(self._label(i))}</th>{cells}</tr>")
            body += f"<div class='meta'>cosine similarity</div><table>{head}{''.join(rows)}</table>"
        elif n == 1:
            vec = self.matrix()[0][:8]
            body += f"<div class='meta'>[{', '.join(f'{x:.4f}' for x in vec)}, …]</div>"
        return wrap(body, "embedding")

    def _text(self) -> str:
        lines = [self._summary()]
        n, _ = self.shape
        if 2 <= n <= 12:
            sim = self.cosine()
            lines.append("cosine similarity:")
            for i in range(n):
                lines.append(f"  {i:>2} " + " ".join(f"{sim[i, j]:+.2f}" for j in range(n)) + f"  {self._label(i)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ tables
MODEL_COLUMNS = ["model_type", "model_name", "model_engine", "model_format", "model_size_in_billions",
                 "quantization", "memory_bytes", "status"]


class ModelsTable(_DictView):
    """list_models() ({uid: description}) as a table with memory and status."""

    def rows(self) -> list[list[Any]]:
        out = []
        for uid, desc in self.items():
            desc = desc if isinstance(desc, Mapping) else {"status": desc}
            row = [uid]
            for col in MODEL_COLUMNS:
                value = desc.get(col)
                if col == "memory_bytes":
                    value = human_bytes(value) if value is not None else "?"
                if col == "status" and value is None:
                    value = "running"
                row.append("" if value is None else value)
            out.append(row)
        return out

    def _headers(self) -> list[str]:
        return ["uid", "type", "name", "engine", "format", "size (B)", "quantization", "memory", "status"]

    def _html(self) -> str:
        if not self:
            return wrap("<i>no running models</i>", "running models")
        return wrap(table(self._headers(), self.rows()), f"{len(self)} running model{'s' if len(self) != 1 else ''}")

    def _text(self) -> str:
        if not self:
            return "no running models"
        return text_table(self._headers(), self.rows())


class RegistrationsTable(_ListView):
    """list_model_registrations() as a table (custom first, then built-in)."""

    def __init__(self, result: Iterable[Mapping] | None = None, model_type: Optional[str] = None):
        super().__init__(result)
        self.model_type = model_type

    _EXTRA = ("model_family", "model_ability", "dimensions", "max_tokens", "context_length", "model_uri")

    def rows(self) -> tuple[list[str], list[list[Any]]]:
        extra = [k for k in self._EXTRA if any(isinstance(r, Mapping) and k in r for r in self)]
        headers = ["model_name", "is_builtin"] + extra
        items = sorted(self, key=lambda r: (bool(r.get("is_builtin")), str(r.get("model_name")).lower()))
        rows = []
        for r in items:
            row = [r.get("model_name"), r.get("is_builtin")]
            for k in extra:
                v = r.get(k)
                row.append(", ".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v))
            rows.append(row)
        return headers, rows

    def _title(self) -> str:
        custom = sum(1 for r in self if not r.get("is_builtin"))
        what = f"{self.model_type} registrations" if self.model_type else "registrations"
        return f"{what}: {custom} custom, {len(self) - custom} built-in"

    def _html(self) -> str:
        headers, rows = self.rows()
        return wrap(table(headers, rows), self._title())

    def _text(self) -> str:
        headers, rows = self.rows()
        return self._title() + "\n" + text_table(headers, rows)


class CachedModelsTable(_ListView):
    """list_cached_models() as a table: name, model_version, type, format, quantization, refs, size
    (human readable), path, the registrations that point at it and the running models that use it."""

    HEADERS = ["model_name", "model_version", "type", "format", "quantization", "refs", "size", "path",
               "registrations", "running"]

    def rows(self) -> list[list[Any]]:
        """One row per cached model, the cells as text (``model_version`` is what remove-cache takes)."""
        out = []
        for r in self:
            quant = r.get("quantization") or ", ".join(r.get("quantizations") or ())
            out.append([r.get("model_name"), r.get("model_version"), r.get("model_type") or "",
                        r.get("model_format") or "", quant, ", ".join(r.get("refs") or ()),
                        human_bytes(r.get("size_bytes")), r.get("path"), ", ".join(r.get("registrations") or ()),
                        ", ".join(r.get("running") or ())])
        return out

    def _title(self) -> str:
        total = sum(r.get("size_bytes") or 0 for r in self)
        return f"{len(self)} cached model{'s' if len(self) != 1 else ''}, {human_bytes(total)} on disk"

    def _html(self) -> str:
        if not self:
            return wrap("<i>no cached models</i>", "model cache")
        return wrap(table(self.HEADERS, self.rows()), self._title())

    def _text(self) -> str:
        if not self:
            return "no cached models"
        return self._title() + "\n" + text_table(self.HEADERS, self.rows())


# ------------------------------------------------------------------------------------------ parsed spec
def _cell(value: Any) -> str:
    return shorten(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), 160, "…")


class ParsedView(_View):
    """A ParsedModel (from parse_model): every field with its value and where it came from, the
    warnings, and for an LLM the chat template rendered on sample messages. ``.data`` is the parsed
    object."""

    def __init__(self, parsed: Any, preview_messages: Optional[list] = None):
        self.data = parsed
        self.preview_messages = preview_messages

    def document(self) -> dict:
        spec = getattr(self.data, "spec", None)
        if spec is not None and hasattr(spec, "model_dump"):
            return spec.model_dump(mode="json")
        to_json = getattr(self.data, "to_json", None)
        if to_json:
            doc = to_json()
            return json.loads(doc) if isinstance(doc, str) else dict(doc)
        return {}

    def rows(self) -> list[tuple[str, str, str]]:
        sources = getattr(self.data, "sources", {}) or {}
        rows = []
        for path, value in flatten_document(self.document()).items():
            if path in ("version", "virtualenv", "is_builtin") or value is None:
                continue
            rows.append((path, _cell(value), sources.get(path, "")))
        return rows

    def preview(self) -> Optional[str]:
        fn = getattr(self.data, "preview", None)
        if fn is None or getattr(self.data, "model_type", None) not in (None, "LLM"):
            return None
        if not self.document().get("chat_template"):
            return None
        try:
            return fn(self.preview_messages) if self.preview_messages else fn()
        except Exception as exc:  # a broken template is shown, not raised
            return f"(chat template does not render: {exc})"

    def _title(self) -> str:
        doc = self.document()
        return f"parsed {getattr(self.data, 'model_type', '') or ''} model {doc.get('model_name', '')}".replace("  ", " ")

    def _html(self) -> str:
        body = table(["field", "value", "from"], self.rows())
        warnings = list(getattr(self.data, "warnings", []) or [])
        if warnings:
            body += "".join(f"<div class='err'>⚠ {esc(w)}</div>" for w in warnings)
        prev = self.preview()
        if prev:
            body += f"<details><summary>chat template preview</summary><pre>{esc(prev)}</pre></details>"
        return wrap(body, self._title())

    def _text(self) -> str:
        lines = [self._title(), text_table(["field", "value", "from"], [list(r) for r in self.rows()])]
        lines += [f"warning: {w}" for w in getattr(self.data, "warnings", []) or []]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ dispatch
def detect_kind(result: Any) -> Optional[str]:
    """Guess which view a plain result needs from its shape."""
    if isinstance(result, (bytes, bytearray)):
        return "audio"
    if hasattr(result, "sources") and hasattr(result, "spec"):
        return "parsed"
    if isinstance(result, list):
        if result and all(isinstance(r, Mapping) and "model_version" in r and "size_bytes" in r for r in result):
            return "cached"
        if not result or all(isinstance(r, Mapping) and "model_name" in r for r in result):
            return "registrations"
        if all(isinstance(r, Mapping) and "role" in r for r in result):
            return "transcript"
        return None
    if not isinstance(result, Mapping):
        return None
    obj = result.get("object")
    if obj in ("chat.completion", "text_completion", "chat.completion.chunk"):
        return "chat"
    if "choices" in result:
        return "chat"
    if "results" in result and all(isinstance(r, Mapping) and "relevance_score" in r for r in result["results"] or []):
        return "rerank"
    data = result.get("data")
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        if "embedding" in data[0]:
            return "embedding"
        if "url" in data[0] or "b64_json" in data[0]:
            return "image"
    if "model_name" in result and "version" in result:   # a registration's document
        return "registration"
    if "text" in result and not ("choices" in result):
        return "transcription"
    if result and all(isinstance(v, Mapping) and ("model_type" in v or "model_name" in v) for v in result.values()):
        return "models"
    if not result:
        return "models"
    return None


VIEWS = {
    "chat": ChatView, "completion": ChatView, "generate": ChatView, "image": ImageView, "audio": AudioView,
    "speech": AudioView, "transcription": TranscriptionView, "rerank": RerankView, "embedding": EmbeddingView,
    "models": ModelsTable, "registrations": RegistrationsTable, "cached": CachedModelsTable, "parsed": ParsedView, "transcript": ChatTranscript,
}


def as_display(result: Any, kind: Optional[str] = None, **context: Any) -> Any:
    """Wrap ``result`` in the view for ``kind`` (guessed from its shape when omitted). Keyword
    context goes to the view (``messages=`` for chat, ``inputs=`` for embeddings, ``documents=``
    and ``query=`` for rerank, ``params=`` for images/audio). Unknown shapes come back unchanged."""
    if isinstance(result, _View):
        return result
    kind = kind or detect_kind(result)
    if kind == "registration":   # the clients' own class (a dict shown as JSON)
        from ..client.registrations import Registration

        return result if isinstance(result, Registration) else Registration(result, **context)
    cls = VIEWS.get(kind or "")
    if cls is None:
        return result
    return cls(result, **context)


def show(result: Any, kind: Optional[str] = None, **context: Any) -> None:
    """Display ``result`` richly in the notebook (or print its text outside one). Returns None, so
    that ``show(x)`` as a cell's last line displays once; ``as_display(x)`` gives the view itself."""
    view = as_display(result, kind, **context)
    if _ipython_active():
        from IPython.display import display

        display(view)
    else:
        print(view._text() if isinstance(view, _View) else view)


class LaunchedModel(str):
    """The uid launch_model returned (a plain ``str``), shown with what was launched."""

    def __new__(cls, uid: str, details: Optional[Mapping] = None, var: Optional[str] = None):
        obj = str.__new__(cls, uid)
        obj.details = dict(details or {})
        obj.var = var
        return obj

    def _summary(self) -> str:
        d = {k: v for k, v in self.details.items() if v not in (None, "")}
        what = ", ".join(f"{k}={v}" for k, v in d.items())
        var = f"; handle in variable {self.var!r}" if self.var else ""
        return f"launched uid {str(self)!r}" + (f" ({what})" if what else "") + var

    def _repr_html_(self) -> str:
        return wrap(f"<div>{esc(self._summary())}</div>")

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(str(self)))
