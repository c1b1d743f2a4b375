"""Rich displays: each view wraps the plain result unchanged and renders text/plain + text/html."""
from __future__ import annotations

import base64
import io
import json
import wave

import pytest

from xinference_nb import display as d

CHAT = {"id": "chat-1", "object": "chat.completion", "created": 1, "model": "tiny",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "**Paris** is the capital.\n\n- one\n- two",
                                 "reasoning_content": "The user asks about France.",
                                 "tool_calls": [{"id": "call_0", "type": "function",
                                                 "function": {"name": "get_weather",
                                                              "arguments": "{\"city\": \"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}


def bundle(view):
    return view._repr_mimebundle_()


def test_chat_view_keeps_the_dict_and_renders_a_transcript():
    view = d.ChatView(CHAT, messages=[{"role": "user", "content": "Capital of <France>?"}])
    assert view == CHAT and isinstance(view, dict) and view.data == CHAT
    assert json.loads(json.dumps(view)) == CHAT  # still serialisable as the plain shape
    b = bundle(view)
    html = b["text/html"]
    assert "<b>Paris</b>" in html and "<li>one</li>" in html          # markdown
    assert "<details><summary>reasoning</summary>" in html               # reasoning collapsed
    assert "The user asks about France." in html
    assert "get_weather" in html and "call_0" in html                    # tool calls
    assert "prompt 7" in html and "total 12" in html                     # usage
    assert "Capital of &lt;France&gt;?" in html                          # user message escaped
    assert "<France>" not in html
    text = b["text/plain"]
    assert text.startswith("user:") and "assistant:" in text and "[reasoning]" in text
    assert "[tool call] get_weather" in text and "total 12" in text


def test_markdown_never_injects_html():
    view = d.ChatView({"choices": [{"message": {"role": "assistant", "content": "<script>alert(1)</script>"}}]})
    assert "<script>" not in view._repr_html_()
    assert "&lt;script&gt;" in view._repr_html_()


def test_completion_result_renders_as_chat_view():
    result = {"object": "text_completion", "choices": [{"index": 0, "text": "once upon", "finish_reason": "length"}]}
    view = d.as_display(result)
    assert isinstance(view, d.ChatView) and view.content == "once upon"
    assert "once upon" in view._repr_html_() and "finish: length" in view._repr_html_()


def _chunks():
    yield {"id": "c", "object": "chat.completion.chunk", "model": "m", "created": 3,
           "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    for piece in ("thinking ", "hard"):
        yield {"id": "c", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None}]}
    for piece in ("Hello", ", ", "world"):
        yield {"id": "c", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
    yield {"id": "c", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t1", "function": {
               "name": "f", "arguments": "{\"a\""}}]}, "finish_reason": None}]}
    yield {"id": "c", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}}


def test_stream_chat_assembles_chunks_and_measures():
    updates = []
    view = d.stream_chat(_chunks(), messages=[{"role": "user", "content": "hi"}], show=False, every_s=0,
                         on_update=updates.append)
    assert view["object"] == "chat.completion"
    msg = view["choices"][0]["message"]
    assert msg["content"] == "Hello, world" and msg["reasoning_content"] == "thinking hard"
    assert msg["tool_calls"][0]["function"] == {"name": "f", "arguments": "{\"a\": 1}"}
    assert view["choices"][0]["finish_reason"] == "stop" and view["usage"]["total_tokens"] == 9
    assert view.stats["completion_tokens"] == 6 and view.stats["ttft_s"] is not None
    assert len(updates) >= 3 and updates[0].streaming and not updates[-1].streaming
    assert "▌" in updates[1]._repr_html_()   # streaming cursor while it runs


def test_stream_chat_updates_one_display_in_place():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    published = []
    pub = shell.display_pub
    original = pub.publish

    def publish(data, metadata=None, source=None, *, transient=None, update=False, **kw):
        published.append((data, transient, update))

    pub.publish = publish
    try:
        d.stream_chat(_chunks(), show=True, every_s=0)
    finally:
        pub.publish = original
    ids = {t["display_id"] for _, t, _ in published if t}
    assert len(ids) == 1                                       # one display...
    assert published[0][2] is False and all(u for _, _, u in published[1:])  # ...updated in place
    assert "Hello, world" in published[-1][0]["text/html"]


def test_stream_of_text_completion_chunks():
    chunks = [{"object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": None}]}
              for t in ("a", "b")]
    view = d.stream_chat(chunks, show=False)
    assert view["object"] == "text_completion" and view["choices"][0]["text"] == "ab"


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_view_b64_and_local_path(tmp_path):
    png = _png()
    f = tmp_path / "img.png"
    f.write_bytes(png)
    result = {"created": 1, "data": [{"b64_json": base64.b64encode(png).decode()}, {"url": str(f)}]}
    view = d.ImageView(result, params={"prompt": "a red square", "size": "8*8"})
    assert view == result
    b = bundle(view)
    assert b["text/html"].count("data:image/png;base64,") == 2
    assert "a red square" in b["text/html"] and "2 images" in b["text/html"]
    assert base64.b64decode(b["image/png"]) == png
    assert "2 image(s)" in b["text/plain"] and str(f) in b["text/plain"]
    assert isinstance(d.as_display(result), d.ImageView)


def _wav(seconds=0.5, rate=16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))
    return buf.getvalue()


def test_audio_view_player():
    wav = _wav()
    view = d.as_display(wav)
    assert isinstance(view, d.AudioView) and view.data == wav and view.mime == "audio/wav"
    b = bundle(view)
    assert "<audio controls src='data:audio/wav;base64," in b["text/html"]
    assert "0.50 s" in b["text/plain"]
    assert d.sniff_mime(b"ID3...") == "audio/mpeg"


def test_transcription_view_with_timing():
    result = {"text": "hello world", "language": "en",
              "segments": [{"start": 0.0, "end": 1.25, "text": "hello"}, {"start": 61.5, "end": 62.0, "text": "world"}]}
    view = d.as_display(result)
    assert isinstance(view, d.TranscriptionView) and view == result
    b = bundle(view)
    assert "0:01.25" in b["text/html"] and "1:01.50" in b["text/html"] and "language: en" in b["text/html"]
    assert "[0:00.00 → 0:01.25] hello" in b["text/plain"]


def test_rerank_view_ranked_table():
    result = {"id": "r", "results": [{"index": 2, "relevance_score": 0.9, "document": {"text": "cats nap"}},
                                     {"index": 0, "relevance_score": 0.1, "document": None}],
              "meta": {"tokens": None}}
    view = d.as_display(result, documents=["stocks fell", "x", "cats nap"], query="where do cats rest?")
    assert isinstance(view, d.RerankView) and view == result
    assert view.rows() == [(1, 2, 0.9, "cats nap"), (2, 0, 0.1, "stocks fell")]
    b = bundle(view)
    assert "rerank: where do cats rest?" in b["text/html"] and "0.9000" in b["text/html"]
    assert b["text/plain"].splitlines()[2].split()[:3] == ["1", "2", "0.9000"]


def test_embedding_view_summary_and_heatmap():
    result = {"object": "list", "model": "m", "usage": {"prompt_tokens": 4, "total_tokens": 4},
              "data": [{"index": 0, "object": "embedding", "embedding": [1.0, 0.0]},
                       {"index": 1, "object": "embedding", "embedding": [0.0, 2.0]},
                       {"index": 2, "object": "embedding", "embedding": [3.0, 3.0]}]}
    view = d.as_display(result, inputs=["a", "b", "c"])
    assert isinstance(view, d.EmbeddingView) and view == result
    assert view.shape == (3, 2)
    assert view.norms()[1] == pytest.approx(2.0)
    assert view.cosine()[0][2] == pytest.approx(2 ** -0.5)
    b = bundle(view)
    assert "3 × 2 embeddings" in b["text/html"] and "cosine similarity" in b["text/html"]
    assert b["text/html"].count("<td style='background:") == 9
    assert "0.71" in b["text/html"]
    one = d.EmbeddingView({"data": [{"embedding": [0.6, 0.8]}]})
    assert "norm 1.000" in one._repr_html_() and "cosine" not in one._repr_html_()


def test_models_and_registrations_tables():
    models = {"uid-1": {"model_type": "LLM", "model_name": "tiny", "model_engine": "transformers",
                        "model_format": "pytorch", "quantization": "none", "memory_bytes": 3 * 1024 ** 2,
                        "status": "running"}}
    view = d.as_display(models)
    assert isinstance(view, d.ModelsTable) and view == models
    b = bundle(view)
    assert "3.0 MiB" in b["text/html"] and "running" in b["text/html"] and "uid-1" in b["text/plain"]
    assert "no running models" in d.ModelsTable({})._repr_html_()
    regs = [{"model_name": "qwen", "is_builtin": True}, {"model_name": "mine", "is_builtin": False}]
    view = d.as_display(regs, model_type="LLM")
    assert isinstance(view, d.RegistrationsTable) and view == regs and isinstance(view, list)
    assert view.rows()[1][0] == ["mine", False]   # custom first
    assert "LLM registrations: 1 custom, 1 built-in" in bundle(view)["text/plain"]


def test_parsed_view_shows_sources_and_preview():
    from types import SimpleNamespace

    from xinference_nb.spec import load_spec

    spec = load_spec("LLM", {"model_name": "m", "model_family": "f", "context_length": 4096, "model_ability": ["chat"],
                             "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}",
                             "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                                              "model_uri": "/tmp/m"}]})
    parsed = SimpleNamespace(spec=spec, model_type="LLM", warnings=["no README"],
                             sources={"context_length": "config.json: max_position_embeddings"},
                             preview=lambda messages=None: "<user>hi")
    view = d.as_display(parsed)
    assert isinstance(view, d.ParsedView)
    html = view._repr_html_()
    assert "config.json: max_position_embeddings" in html and "4096" in html
    assert "model_specs[0].model_uri" in html and "no README" in html and "&lt;user&gt;hi" in html
    assert "config.json: max_position_embeddings" in view._repr_mimebundle_()["text/plain"]


def test_message_and_unknown_shapes():
    m = d.Message("registered 'x'", "ok")
    assert "✓" in m._repr_html_() and str(m) == "registered 'x'"
    assert d.as_display(42) == 42 and d.as_display({"weird": 1}) == {"weird": 1}
    uid = d.LaunchedModel("u-1", {"model_name": "m"}, var="llm")
    assert uid == "u-1" and isinstance(uid, str) and "llm" in uid._repr_html_()


def test_show_outside_ipython_prints_text(capsys, monkeypatch):
    import xinference_nb.display.views as views

    monkeypatch.setattr(views, "_ipython_active", lambda: False)
    d.show({"text": "hello there"})
    assert "hello there" in capsys.readouterr().out


def test_stream_chat_stop_closes_the_stream_and_marks_the_answer():
    from xinference_nb.display import ChatTranscript, stream_chat

    closed, asked = [], []

    def chunks():
        try:
            yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
            for i in range(1000):
                yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
        finally:
            closed.append(True)

    def stop():
        asked.append(1)
        return len(asked) >= 4

    view = stream_chat(chunks(), show=False, stop=stop)
    assert closed == [True] and view.stopped and view.content == "w0 w1 w2 "
    assert view["choices"][0]["finish_reason"] == "cancelled"
    assert "[stopped]" in view._repr_html_() and "[stopped]" in view._text()
    # a stop asked once the answer has finished changes nothing
    late = []

    def done():
        yield {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
        late.append(True)   # Stop clicked as the last chunk comes
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}

    finished = stream_chat(done(), show=False, stop=lambda: bool(late))
    assert not finished.stopped and finished["choices"][0]["finish_reason"] == "stop" and finished["usage"]
    t = ChatTranscript([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], stopped={1})
    assert t._repr_html_().count("[stopped]") == 1 and t._text().endswith("[stopped]")
