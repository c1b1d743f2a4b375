"""ChatBox (streaming chat with one launched model) and CompareView (one prompt, several models,
answers side by side with time to first token, tokens/s and memory)."""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import ipywidgets as W

from ..display import ChatTranscript, ChatView, stream_chat
from ..display._html import esc, human_bytes
from ..display.views import STOPPED_FINISH
from ..chat.images import user_message
from ..errors import InferenceError, XinfError
from ..threads import cancel_scope
from ._common import default_client, is_remote, status_html, where


def _is_handle(model: Any) -> bool:
    return not isinstance(model, str) and hasattr(model, "model_uid") and (hasattr(model, "chat")
                                                                           or hasattr(model, "generate"))


def _handle_endpoint(handle: Any) -> Optional[str]:
    """The server a remote handle talks to (None for an in-kernel handle)."""
    http = getattr(handle, "_http", None)
    return getattr(http, "endpoint", None)


class ChatBox(W.VBox):
    """A chat with one launched model. From code: ``send("hello")`` returns the answer's ChatView;
    ``send("what is this?", images=["cat.png"])`` attaches images (paths, file:// or data URLs, PIL
    images) for a vision model, as does the "images" upload button; the transcript shows them as
    thumbnails. ``messages`` holds the conversation; ``reset()`` forgets it. ``model`` is a uid (of
    ``client``'s models: in-kernel by default, or a server's with ``client=Client("http://...")``) or
    a model handle from either.

    The Send button runs the turn on a thread of its own (``start``), so the kernel stays free to take
    the Stop button's click (widget callbacks run on the kernel's main thread, one at a time): Stop
    closes the stream at the next chunk (a model in this kernel stops at its next token, a server's
    stream is disconnected; a call that does not stream is cancelled in this kernel, a server finishes
    it). The part of the reply that came stays in ``messages`` as a plain assistant message, so the
    next turn goes on from it; its index is in ``stopped``, the transcript marks it "[stopped]" and
    ``last`` (its ChatView) has finish_reason "cancelled"."""

    def __init__(self, model_uid: Any, client: Any = None, system: Optional[str] = None,
                 max_tokens: int = 256, stream: bool = True, generate_config: Optional[dict] = None):
        self._client = client
        self._handle = model_uid if _is_handle(model_uid) else None
        self.model_uid = self._handle.model_uid if self._handle is not None else model_uid
        endpoint = (_handle_endpoint(self._handle) if self._handle is not None
                    else (client.endpoint if is_remote(client) else None))
        self.title = f"chat with {self.model_uid}" + (f" on {endpoint}" if endpoint else "")
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.stopped: set[int] = set()   # indexes in ``messages`` of the replies Stop cut short
        self.last: Optional[ChatView] = None
        self.pending: Optional[ChatView] = None   # the reply being streamed, as far as it came
        self.generate_config = dict(generate_config or {})
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self._worker: Optional[threading.Thread] = None
        self.transcript = W.HTML(ChatTranscript(self.messages, title=self.title)._repr_html_(),
                                 layout=W.Layout(width="100%"))
        self.input = W.Textarea(value="", placeholder="Your message…", layout=W.Layout(width="80%", height="4em"))
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop",
                                    layout=W.Layout(display="none"))
        self.reset_button = W.Button(description="Reset", icon="trash")
        self.max_tokens = W.BoundedIntText(value=max_tokens, min=1, max=32768, description="max tokens",
                                           layout=W.Layout(width="180px"))
        self.stream = W.Checkbox(value=stream, description="stream", indent=False)
        self.images = W.FileUpload(accept="image/*", multiple=True, description="images")
        self.status = W.HTML("")
        self.send_button.on_click(lambda _: self._send_clicked())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        self.add_class("xnb-chatbox")
        super().__init__([self.transcript,
                          W.HBox([self.input, W.VBox([self.send_button, self.stop_button, self.reset_button])]),
                          W.HBox([self.max_tokens, self.stream, self.images]), self.status])

    @property
    def client(self) -> Any:
        self._client = default_client(self._client)
        return self._client

    @property
    def busy(self) -> bool:
        """A reply is being generated."""
        return self._busy

    def _render(self, pending: Optional[ChatView] = None) -> None:
        self.pending = pending
        html = ChatTranscript(self.messages, title=self.title, stopped=self.stopped)._repr_html_()
        if pending is not None:
            html += pending._repr_html_()
        self.transcript.value = html

    def _uploaded(self) -> list[str]:
        """The images of the upload button, as data URLs."""
        import base64

        urls = []
        for item in self.images.value or ():
            kind = item.get("type") or "image/png"
            urls.append(f"data:{kind};base64,{base64.b64encode(bytes(item['content'])).decode('ascii')}")
        return urls

    # ------------------------------------------------------------------ a turn
    def send(self, text: Optional[str] = None, images: Optional[list[Any]] = None) -> Optional[ChatView]:
        """Send ``text`` (default: the input box) with ``images`` (default: the uploaded ones) and wait
        for the answer. A cell calling this holds the kernel until the answer is complete, so there the
        Stop button cannot be clicked (``stop()`` from another thread still stops it); the Send button
        uses ``start``."""
        turn = self._begin(text, images)
        return None if turn is None else self._run(*turn)

    def start(self, text: Optional[str] = None, images: Optional[list[Any]] = None) -> Optional[threading.Thread]:
        """What the Send button does: ``send`` on a thread of its own, returned (None when there was
        nothing to send); ``wait()`` joins it, ``stop()`` stops it."""
        turn = self._begin(text, images)
        if turn is None:
            return None
        self._worker = threading.Thread(target=self._run, args=turn, name=f"xnb-chatbox-{self.model_uid}",
                                        daemon=True)
        self._worker.start()
        return self._worker

    def _send_clicked(self) -> None:
        try:
            self.start()
        except InferenceError as exc:   # a click while a reply is still coming: said, not raised into a log
            self.status.value = status_html(str(exc), "error")

    def stop(self) -> bool:
        """Stop the reply being generated (the Stop button); False when none is."""
        if not self._busy:
            return False
        self._stop.set()
        self.stop_button.disabled = True
        self.status.value = status_html("stopping…")
        return True

    def wait(self, timeout: Optional[float] = None) -> Optional[ChatView]:
        """Wait for the turn ``start`` began; returns ``last``."""
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        return self.last

    def _begin(self, text: Optional[str], images: Optional[list[Any]]) -> Optional[tuple]:
        """Take the message (and clear the input box it came from) and mark the box busy; None when
        there is nothing to send or the images are refused (said in the status line)."""
        from_input = text is None
        text = self.input.value if from_input else text
        if not text.strip():
            return None
        with self._lock:
            if self._busy:
                raise InferenceError("ChatBox: a reply is still being generated; stop() it or wait() for it first")
            self._busy = True
        try:
            user = user_message(text, self._uploaded() if images is None else images)
        except XinfError as exc:
            self._end()
            self.status.value = status_html(str(exc), "error")
            return None
        config = dict(self.generate_config, max_tokens=int(self.max_tokens.value))
        if self.stream.value:
            config["stream"] = True
        self._stop.clear()
        if from_input:
            self.input.value = ""
        self.send_button.disabled = True
        self.stop_button.disabled = False
        self.stop_button.layout.display = None
        self.status.value = status_html("…")
        return user, config, text if from_input else None, images is None

    def _end(self) -> None:
        self.stop_button.layout.display = "none"
        self.send_button.disabled = False
        self._busy = False

    def _run(self, user: dict, config: dict, typed: Optional[str], uploaded: bool) -> Optional[ChatView]:
        try:
            view = self._turn(user, config, typed)
            if view is not None:
                self._keep(view, uploaded, streamed=bool(config.get("stream")))
            return view
        finally:
            self._end()

    def _turn(self, user: dict, config: dict, typed: Optional[str]) -> Optional[ChatView]:
        """The answer's view; on a failure None (said in the status line). Stopped before anything came
        (a call that does not stream, cancelled; a stream still waiting for its first token): an empty
        reply, stopped."""
        try:
            with cancel_scope(self._stop):   # a call that does not stream stops too (in this kernel)
                return self._answer(user, config)
        except XinfError as exc:
            if not self._stop.is_set():
                self._failed(str(exc), typed)
                return None
        except Exception as exc:  # noqa: BLE001 - on the Send button's thread: shown, never lost in a log
            self._failed(f"{type(exc).__name__}: {exc}", typed)
            if threading.current_thread() is not self._worker:
                raise   # send() from code: the caller sees it too
            return None
        if not self.messages or self.messages[-1] is not user:
            self.messages.append(user)
        return ChatView({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                      "finish_reason": STOPPED_FINISH}]}, stopped=True)

    def _answer(self, user: dict, config: dict) -> ChatView:
        handle = self._handle if self._handle is not None else self.client.get_model(self.model_uid)
        result = handle.chat(self.messages + [user], generate_config=config)
        self.messages.append(user)
        if config.get("stream"):
            return stream_chat(result, show=False, on_update=lambda v: self._render(v), stop=self._stop.is_set)
        return ChatView(result)

    def _failed(self, message: str, typed: Optional[str]) -> None:
        if typed is not None and not self.input.value:
            self.input.value = typed   # the message comes back to the box, to send again
        self._render()
        self.status.value = status_html(message, "error")

    def _keep(self, view: ChatView, uploaded: bool, streamed: bool) -> None:
        """The answer (or the part of it that came) into the conversation, the transcript and the status."""
        answer = view.answer
        self.messages.append({k: v for k, v in answer.items() if k in ("role", "content", "reasoning_content",
                                                                       "tool_calls")})
        if view.stopped:
            self.stopped.add(len(self.messages) - 1)
        self.last = view
        if uploaded:
            self.images.value = ()
        self._render()
        stats = view.stats
        bits = ["stopped: the reply so far is kept"] if view.stopped else []
        if view.get("usage"):
            bits.append(f"{view['usage'].get('completion_tokens', '?')} tokens")
        if stats.get("ttft_s") is not None:
            bits.append(f"first token {stats['ttft_s'] * 1000:.0f} ms")
        if stats.get("tokens_per_s"):
            bits.append(f"{stats['tokens_per_s']:.1f} tokens/s")
        if self._stop.is_set() and not view.stopped and not streamed:
            bits.append("Stop came too late: a call that does not stream runs to its end on a server")
        self.status.value = status_html(" · ".join(bits))

    def reset(self) -> None:
        """Forget the conversation (a reply being generated is stopped first)."""
        if self.stop():
            self.wait()
        self.messages = [m for m in self.messages if m.get("role") == "system"]
        self.stopped = set()
        self.last = None
        self._render()
        self.status.value = status_html("conversation reset")


class CompareView(W.VBox):
    """One prompt to several launched models, answers in columns. From code: ``run("prompt")``
    returns one row per model: {"model_uid", "endpoint", "label", "content", "ttft_s", "tokens_per_s",
    "completion_tokens", "memory_bytes", "error"}.

    Models may live in different places: ``uids`` entries are uids of ``client``'s models,
    ``(client, uid)`` pairs, or model handles (in-kernel or remote), mixed freely; ``clients`` adds
    every running LLM of more clients to the choices, e.g.
    ``CompareView(clients=[Client(), Client("http://gpu-box:9997")])``. A model not of ``client`` is
    labelled ``uid @ endpoint`` (``uid @ kernel`` for an in-kernel one)."""

    def __init__(self, uids: Optional[list[Any]] = None, client: Any = None, max_tokens: int = 128,
                 generate_config: Optional[dict] = None, clients: Optional[list[Any]] = None):
        self._client = client
        self.generate_config = dict(generate_config or {})
        self.results: list[dict] = []
        self.targets: dict[str, tuple[Any, str, Any]] = {}   # label -> (client, uid, handle or None)
        options: list[str] = []
        for c in [None] + list(clients or []):
            running = self._running(c)
            llms = [u for u, d in running.items() if (d or {}).get("model_type", "LLM") == "LLM"] or list(running)
            for u in llms:
                label = self._add(c, u)
                if label not in options:
                    options.append(label)
        chosen = [self._add_entry(entry) for entry in uids or []]
        for label in chosen:
            if label not in options:
                options.append(label)
        self.models = W.SelectMultiple(options=options, value=tuple(chosen or options), description="models",
                                       rows=min(6, max(2, len(options))))
        self.prompt = W.Textarea(value="", placeholder="One prompt for every model…",
                                 layout=W.Layout(width="90%", height="4em"))
        self.max_tokens = W.BoundedIntText(value=max_tokens, min=1, max=32768, description="max tokens",
                                           layout=W.Layout(width="180px"))
        self.run_button = W.Button(description="Compare", button_style="primary", icon="columns")
        self.columns = W.HBox([], layout=W.Layout(width="100%", align_items="flex-start"))
        self.status = W.HTML("")
        self.run_button.on_click(lambda _: self.run())
        self.add_class("xnb-compare")
        super().__init__([W.HTML("<b>Compare models</b>"), self.models, self.prompt,
                          W.HBox([self.max_tokens, self.run_button]), self.status, self.columns])

    @property
    def client(self) -> Any:
        self._client = default_client(self._client)
        return self._client

    # ------------------------------------------------------------------ targets
    def _place(self, client: Any) -> str:
        return where(self._client) if client is None else where(client)

    def _label(self, place: str, uid: str) -> str:
        return uid if place == self._place(None) else f"{uid} @ {place}"

    def _add(self, client: Any, uid: str) -> str:
        label = self._label(self._place(client), uid)
        self.targets.setdefault(label, (client, uid, None))
        return label

    def _add_entry(self, entry: Any) -> str:
        if isinstance(entry, str):
            return self._add(None, entry)
        if isinstance(entry, tuple) and len(entry) == 2:
            return self._add(entry[0], entry[1])
        if _is_handle(entry):
            label = self._label(_handle_endpoint(entry) or "kernel", entry.model_uid)
            self.targets[label] = (None, entry.model_uid, entry)
            return label
        raise TypeError(f"CompareView: {entry!r} is not a uid, a (client, uid) pair or a model handle")

    def _client_of(self, client: Any) -> Any:
        return self.client if client is None else client

    def _running(self, client: Any = None) -> dict:
        try:
            return dict(self._client_of(client).list_models())
        except XinfError:
            return {}

    @staticmethod
    def _column_html(row: dict, pending: Optional[ChatView] = None) -> str:
        head = f"<div style='font-weight:600'>{esc(row.get('label') or row['model_uid'])}</div>"
        if row.get("error"):
            return head + f"<div style='color:#c0392b'>{esc(row['error'])}</div>"
        body = (pending._repr_html_() if pending is not None else "")
        bits = []
        if row.get("ttft_s") is not None:
            bits.append(f"first token {row['ttft_s'] * 1000:.0f} ms")
        if row.get("tokens_per_s"):
            bits.append(f"{row['tokens_per_s']:.1f} tokens/s")
        if row.get("completion_tokens") is not None:
            bits.append(f"{row['completion_tokens']} tokens")
        bits.append(f"memory {human_bytes(row.get('memory_bytes'))}")
        return head + body + f"<div style='font-size:11px;opacity:.75'>{esc(' · '.join(bits))}</div>"

    def run(self, prompt: Optional[str] = None) -> list[dict]:
        prompt = self.prompt.value if prompt is None else prompt
        uids = list(self.models.value)
        if not prompt.strip() or not uids:
            self.status.value = status_html("choose at least one model and write a prompt", "error")
            return []
        running_of: dict[int, dict] = {}
        cells = [W.HTML("", layout=W.Layout(flex="1 1 0", min_width="200px", margin="0 6px")) for _ in uids]
        self.columns.children = cells
        self.results = []
        messages = [{"role": "user", "content": prompt}]
        self.run_button.disabled = True
        try:
            for label, cell in zip(uids, cells):
                owner, uid, handle = self.targets.get(label, (None, label, None))
                if handle is not None:
                    endpoint = _handle_endpoint(handle)
                    memory = None
                else:
                    c = self._client_of(owner)
                    endpoint = c.endpoint if is_remote(c) else None
                    if id(c) not in running_of:
                        running_of[id(c)] = self._running(c)
                    memory = (running_of[id(c)].get(uid) or {}).get("memory_bytes")
                row: dict[str, Any] = {"model_uid": uid, "endpoint": endpoint, "label": label, "content": None,
                                       "ttft_s": None, "tokens_per_s": None, "completion_tokens": None,
                                       "memory_bytes": memory, "error": None}
                self.status.value = status_html(f"asking {label}…")
                try:
                    if handle is None:
                        handle = self._client_of(owner).get_model(uid)
                    config = dict(self.generate_config, max_tokens=int(self.max_tokens.value), stream=True)
                    t0 = time.perf_counter()
                    if hasattr(handle, "chat"):
                        chunks = handle.chat(messages, generate_config=config)
                    else:
                        chunks = handle.generate(prompt, generate_config=config)
                    view = stream_chat(chunks, show=False,
                                       on_update=lambda v, r=row, c=cell: setattr(c, "value", self._column_html(r, v)))
                    row.update(content=view.content, ttft_s=view.stats.get("ttft_s"),
                               tokens_per_s=view.stats.get("tokens_per_s"),
                               completion_tokens=view.stats.get("completion_tokens"),
                               elapsed_s=time.perf_counter() - t0)
                    cell.value = self._column_html(row, view)
                except (XinfError, ValueError) as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    cell.value = self._column_html(row)
                self.results.append(row)
        finally:
            self.run_button.disabled = False
        self.status.value = status_html(f"compared {len(uids)} model{'s' if len(uids) != 1 else ''}", "ok")
        return self.results
