"""%xinf / %%xinf driven through a real in-process IPython shell. Model calls go to a recording
fake client (registrations are the real ones); the end-to-end tests at the bottom use the real
Client on tiny models."""
from __future__ import annotations

import importlib.util
import json

import pytest
from IPython.core.interactiveshell import InteractiveShell

from xinference_nb import display as d
from xinference_nb.client import Client


def chunks(text: str):
    yield {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    for word in text.split(" "):
        yield {"id": "c", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}]}
    yield {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}


class FakeHandle:
    def __init__(self, uid, calls):
        self.uid, self.calls = uid, calls

    def chat(self, messages, tools=None, generate_config=None, **kw):
        self.calls.append(("chat", self.uid, [dict(m) for m in messages], dict(generate_config or {})))
        answer = f"answer {len(messages)}"
        if (generate_config or {}).get("stream"):
            return chunks(answer)
        return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                                                          "message": {"role": "assistant", "content": answer}}]}

    def generate(self, prompt, generate_config=None):
        self.calls.append(("generate", self.uid, prompt, dict(generate_config or {})))
        if (generate_config or {}).get("stream"):
            return iter([{"object": "text_completion", "choices": [{"index": 0, "text": "once upon"}]}])
        return {"object": "text_completion", "choices": [{"index": 0, "text": "once upon", "finish_reason": "stop"}]}


class FakeClient(Client):
    """Real registrations; launch / list / terminate / get_model are recorded."""

    def __init__(self):
        super().__init__()
        self.calls: list = []
        self.models: dict = {}

    def launch_model(self, model_name, model_type="LLM", **kwargs):
        uid = kwargs.get("model_uid") or f"{model_name}-{len(self.models)}"
        self.calls.append(("launch", dict(kwargs, model_name=model_name, model_type=model_type)))
        self.models[uid] = {"model_type": model_type, "model_name": model_name, "memory_bytes": 2048,
                            "status": "running"}
        return uid

    def list_models(self):
        return dict(self.models)

    def describe_model(self, model_uid):
        return dict(self.models[model_uid], model_uid=model_uid)

    def terminate_model(self, model_uid):
        from xinference_nb.errors import ModelNotFound

        if model_uid not in self.models:
            raise ModelNotFound(f"no running model with uid {model_uid!r}")
        self.calls.append(("terminate", model_uid))
        del self.models[model_uid]

    def get_model(self, model_uid):
        return FakeHandle(model_uid, self.calls)


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xinference_nb")
    magics = ip.magics_manager.registry["XinfMagics"]
    fake = FakeClient()
    magics._client_factory = lambda endpoint: fake
    magics._clients.clear()
    magics.conversations.clear()
    ip.fake = fake
    ip.xinf = magics
    yield ip
    magics._client_factory = None
    magics._clients.clear()


def run(ip, code):
    result = ip.run_cell(code)
    assert result.error_in_exec is None, result.error_in_exec
    assert result.error_before_exec is None, result.error_before_exec
    return result.result


def test_load_ext_registers_line_and_cell_magic(shell):
    magics = shell.magics_manager.magics
    assert "xinf" in magics["line"] and "xinf" in magics["cell"]


def test_launch_long_flags(shell):
    uid = run(shell, "%xinf launch --model-name tiny --model-type LLM --model-engine transformers "
                     "--model-format pytorch --size-in-billions 0_5 --quantization 4-bit --model-uid u1 "
                     "--model-path /m --n-gpu none --gpu-idx 0,1")
    assert uid == "u1" and isinstance(uid, d.LaunchedModel)
    _, kwargs = shell.fake.calls[-1]
    assert kwargs == {"model_name": "tiny", "model_type": "LLM", "model_engine": "transformers",
                      "model_format": "pytorch", "model_size_in_billions": "0_5", "quantization": "4-bit",
                      "model_uid": "u1", "model_path": "/m", "n_gpu": None, "gpu_idx": [0, 1]}


def test_launch_short_flags_name_and_var_expansion(shell):
    shell.user_ns["which"] = "tiny-embed"
    uid = run(shell, "%xinf launch -n {which} -t embedding -en sentence_transformers -f pytorch -s 7 -q none "
                     "-u {which}-x -mp /models/e --name emb")
    assert uid == "tiny-embed-x"
    _, kwargs = shell.fake.calls[-1]
    assert kwargs["model_name"] == "tiny-embed" and kwargs["model_type"] == "embedding"
    assert kwargs["model_engine"] == "sentence_transformers" and kwargs["model_size_in_billions"] == 7
    assert kwargs["n_gpu"] == "auto" and kwargs["model_path"] == "/models/e"
    assert isinstance(shell.user_ns["emb"], FakeHandle) and shell.user_ns["emb"].uid == "tiny-embed-x"
    assert "emb" in uid._repr_html_()
    assert run(shell, "x = %xinf launch -n m2\nx") == "m2-1"


@pytest.mark.parametrize("line, expected", [
    ("launch --bogus 1 -n x", "unrecognized arguments: --bogus"),
    ("launch -n x --model-nam y", "unrecognized arguments: --model-nam"),
    ("launch -t LLM", "the following arguments are required: -n/--model-name"),
    ("launch -n x -s big", "is not a size in billions"),
    ("launch -n x --n-gpu lots", "use auto, none"),
    ("launch -n x --name 1bad", "is not a Python variable name"),
    ("frobnicate", "unknown command 'frobnicate'"),
    ("", "a command is required"),
    ("register -t LLM", "-f/--file"),
    ("terminate", "the model uid is required"),
    ("launch -n 'unclosed", "cannot split the arguments"),
])
def test_bad_flags_print_usage_and_error_without_traceback(shell, capsys, line, expected):
    result = shell.run_cell(f"%xinf {line}")
    assert result.success and result.result is None
    err = capsys.readouterr().err
    assert "usage: %xinf" in err and expected in err
    assert "Traceback" not in err


def test_help_is_printed_not_raised(shell, capsys):
    run(shell, "%xinf launch --help")
    out = capsys.readouterr().out
    assert "--model-engine" in out and "-en" in out and "-mp" in out
    run(shell, "%xinf help")
    assert "registrations" in capsys.readouterr().out


DOC = {"version": 2, "model_name": "my-embed", "dimensions": 4, "max_tokens": 8, "language": ["en"],
       "model_specs": [{"model_format": "pytorch", "model_uri": None, "quantization": "none"}]}


def test_register_registrations_unregister(shell, tmp_path, nb_home):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    doc = dict(DOC, model_specs=[dict(DOC["model_specs"][0], model_uri=str(model_dir))])
    f = tmp_path / "doc.json"
    f.write_text(json.dumps(doc))
    msg = run(shell, f"%xinf register -t embedding -f {f} --persist")
    assert isinstance(msg, d.Message) and "my-embed" in str(msg) and "persisted" in str(msg)
    assert list((nb_home / "model" / "embedding").glob("*.json"))
    table = run(shell, "%xinf registrations -t embedding --custom")
    assert isinstance(table, d.RegistrationsTable) and [r["model_name"] for r in table] == ["my-embed"]
    full = run(shell, "%xinf registrations -t embedding")
    assert len(full) > 1 and "my-embed" in full._repr_html_()
    assert run(shell, "%xinf register -t embedding -f " + str(f) + " -p --overwrite").level == "ok"
    run(shell, "%xinf unregister -t embedding -n my-embed")
    assert "my-embed" not in [r["model_name"] for r in Client().list_model_registrations("embedding")]


def test_user_mistakes_print_one_clear_line(shell, capsys, tmp_path):
    assert run(shell, "%xinf unregister -t embedding -n nope") is None
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "Traceback" not in err
    run(shell, f"%xinf register -t embedding -f {tmp_path / 'missing.json'}")
    assert "cannot read it" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_name": "../x", "dimensions": -1, "max_tokens": 1, "model_specs": []}))
    run(shell, f"%xinf register -t embedding -f {bad}")
    err = capsys.readouterr().err
    assert "dimensions" in err and "model_name" in err and "Traceback" not in err
    run(shell, "%xinf terminate nope")
    assert "nope" in capsys.readouterr().err


def test_list_describe_terminate(shell):
    run(shell, "%xinf launch -n a -u ua")
    table = run(shell, "%xinf list")
    assert isinstance(table, d.ModelsTable) and "ua" in table and "2.0 KiB" in table._repr_html_()
    assert run(shell, "%xinf describe ua")["model_uid"] == "ua"
    assert run(shell, "%xinf terminate -u ua").level == "ok"
    assert ("terminate", "ua") in shell.fake.calls
    assert len(run(shell, "%xinf list")) == 0


def test_chat_cell_streams_and_keeps_the_conversation(shell, capsys):
    shell.user_ns["uid"] = "m1"
    assert run(shell, "%%xinf chat {uid} --system 'Be brief.' --max-tokens 8\nHello there") is None
    kind, uid, messages, config = shell.fake.calls[-1]
    assert (kind, uid) == ("chat", "m1") and config == {"max_tokens": 8, "stream": True}
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert shell.xinf.last.content == "answer 2 "
    run(shell, "%%xinf chat m1\nAnd again?")
    _, _, messages, _ = shell.fake.calls[-1]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "answer 2 "
    history = run(shell, "%xinf chat m1")
    assert isinstance(history, d.ChatTranscript) and len(history) == 5
    assert run(shell, "%xinf chat m1 --reset").level == "ok"
    view = run(shell, "%%xinf chat m1 --no-stream --temperature 0.5\nFresh start")
    assert isinstance(view, d.ChatView) and view.content == "answer 1"
    _, _, messages, config = shell.fake.calls[-1]
    # max_tokens defaults to 512 as in the xinference CLI (xinference_nb.commands: one default for xinf and %xinf)
    assert messages == [{"role": "user", "content": "Fresh start"}] and config == {"max_tokens": 512,
                                                                                   "temperature": 0.5}
    assert "answer" in capsys.readouterr().out  # the streamed answer was displayed


def test_chat_streaming_updates_one_display(shell):
    published = []
    original = shell.display_pub.publish

    def publish(data, metadata=None, source=None, *, transient=None, update=False, **kw):
        published.append((data, transient, update))

    shell.display_pub.publish = publish
    try:
        run(shell, "%%xinf chat m1\nHi")
    finally:
        shell.display_pub.publish = original
    assert len({t["display_id"] for _, t, _ in published if t}) == 1
    assert "answer 1" in published[-1][0]["text/html"] and published[-1][2]


def test_generate_line_and_cell(shell):
    view = run(shell, "%xinf generate m1 --prompt 'Once' --no-stream --max-tokens 3")
    assert isinstance(view, d.ChatView) and view.content == "once upon"
    assert shell.fake.calls[-1] == ("generate", "m1", "Once", {"max_tokens": 3})
    run(shell, "%%xinf generate -u m1\nTell a story")
    assert shell.fake.calls[-1][2] == "Tell a story" and shell.xinf.last.content == "once upon"


def test_serve_and_stop_server(shell, monkeypatch):
    from xinference_nb.server import runner

    seen = []
    monkeypatch.setattr(runner, "serve", lambda host, port: seen.append((host, port)) or
                        type("S", (), {"url": f"http://{host}:{port}"})(), raising=False)
    monkeypatch.setattr(runner, "stop_server", lambda: seen.append("stop"), raising=False)
    msg = run(shell, "%xinf serve --port 9998")
    assert seen == [("127.0.0.1", 9998)] and "http://127.0.0.1:9998" in str(msg)
    run(shell, "%xinf stop-server")
    assert seen[-1] == "stop"


def test_widget_commands_return_widgets(shell):
    pytest.importorskip("ipywidgets")
    from xinference_nb.widgets import ChatBox, CompareView, LaunchForm, RegisterForm

    assert isinstance(run(shell, "%xinf register-form /tmp/x -t LLM"), RegisterForm)
    assert isinstance(run(shell, "%xinf launch-form"), LaunchForm)
    assert isinstance(run(shell, "%xinf chatbox m1"), ChatBox)
    assert isinstance(run(shell, "%xinf compare m1 m2"), CompareView)


def test_register_form_edit_flag(shell, minilm_dir, capsys):
    pytest.importorskip("ipywidgets")
    doc = {"version": 2, "model_name": "magic-edit", "dimensions": 384, "max_tokens": 256, "language": ["en"],
           "model_specs": [{"model_format": "pytorch", "model_uri": f"file://{minilm_dir}", "quantization": "none"}]}
    Client().register_model("embedding", doc)
    form = run(shell, "%xinf register-form --edit magic-edit")        # the type found from the name
    assert form.editing == ("embedding", "magic-edit") and form.fields["dimensions"].value == 384
    assert form.register_button.description == "Save"
    assert run(shell, "%xinf register-form -t embedding --edit magic-edit").editing == ("embedding", "magic-edit")
    capsys.readouterr()
    for line, says in (("--edit qwen2.5-instruct -t LLM", "built-in LLM model and cannot be edited"),
                       ("--edit qwen2.5-instruct", "built-in LLM model and cannot be edited"),
                       ("--edit magic-edit -t LLM", "no LLM model named 'magic-edit'"),
                       ("--edit nothing-like-it", "no model named 'nothing-like-it'"),
                       ("--edit magic-edit -t nonsense", "'nonsense' is not a model type"),
                       ("/tmp/x --edit magic-edit", "give no PATH with it")):
        assert run(shell, f"%xinf register-form {line}") is None, line
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, (line, err)


def test_endpoint_default_and_endpoint_flags_on_widget_commands(shell):
    pytest.importorskip("ipywidgets")
    from xinference_nb.widgets import CompareView, LaunchForm

    made = {}

    def factory(endpoint):
        made[endpoint] = FakeClient()
        made[endpoint].endpoint = endpoint  # looks remote to the widgets when it has a URL
        return made[endpoint]

    shell.xinf._client_factory = factory
    try:
        assert "this kernel" in run(shell, "%xinf endpoint").text
        assert run(shell, "%xinf endpoint gpu-box:9997").level == "ok"
        assert shell.xinf.default_endpoint == "http://gpu-box:9997"
        assert isinstance(run(shell, "%xinf launch-form"), LaunchForm) and "http://gpu-box:9997" in made
        form = run(shell, "%xinf launch-form -e kernel -t embedding")
        assert form.client is made[None] and form.model_type.value == "embedding"
        run(shell, "%xinf chatbox m1 -e http://other:1")
        assert "http://other:1" in made
        view = run(shell, "%xinf compare m1 m2@kernel m3@http://other:1")
        assert isinstance(view, CompareView)
        assert [view.targets[label][1] for label in view.models.value] == ["m1", "m2", "m3"]
        assert view.targets["m2 @ kernel"][0] is made[None]
        assert list(view.models.value) == ["m1", "m2 @ kernel", "m3 @ http://other:1"]
        assert view.targets["m3 @ http://other:1"][0] is made["http://other:1"]
        assert run(shell, "%xinf endpoint --reset").level == "ok" and shell.xinf.default_endpoint is None
        assert run(shell, "%xinf endpoint kernel").level == "ok" and shell.xinf.default_endpoint is None
    finally:
        shell.xinf.default_endpoint = None


# ---------------------------------------------------------------------------------- real models
def _have(*names):
    return all(importlib.util.find_spec(n) is not None for n in names)


needs_parse = pytest.mark.skipif(not _have("xinference_nb.parse") or not hasattr(
    importlib.import_module("xinference_nb.parse"), "parse_model"), reason="parse_model is not available")


@needs_parse
def test_parse_shows_fields_with_sources(shell, tiny_llama_dir):
    view = run(shell, f"%xinf parse {tiny_llama_dir} --family my-tiny --name parsed")
    assert isinstance(view, d.ParsedView)
    html = view._repr_html_()
    assert "config.json" in html and "context_length" in html
    assert shell.user_ns["parsed"].spec.model_family == "my-tiny"


@pytest.mark.slow
def test_end_to_end_launch_and_chat_with_a_real_model(shell, tiny_llama_dir):
    if not hasattr(Client, "launch_model"):
        pytest.skip("Client.launch_model is not available")
    shell.xinf._client_factory = None
    shell.xinf._clients.clear()
    from xinference_nb.parse import parse_model

    doc = json.loads(parse_model(tiny_llama_dir, model_family="magic-tiny-family", model_name="magic-tiny").to_json())
    f = tiny_llama_dir.parent / "magic-tiny.json"
    f.write_text(json.dumps(doc))
    run(shell, f"%xinf register -t LLM -f {f}")
    uid = run(shell, "%xinf launch -n magic-tiny -en transformers --n-gpu none --name llm")
    try:
        assert uid in Client().list_models()
        run(shell, f"%%xinf chat {uid} --max-tokens 5\nHello!")
        assert shell.xinf.last["choices"][0]["message"]["role"] == "assistant"
        assert shell.xinf.last["usage"]["completion_tokens"] <= 5
        assert "running" in run(shell, "%xinf list")._repr_html_() or uid in run(shell, "%xinf list")
    finally:
        run(shell, f"%xinf terminate {uid}")
    assert uid not in Client().list_models()
