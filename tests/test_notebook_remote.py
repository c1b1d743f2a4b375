"""The notebook layer on a remote endpoint: ``%xinf endpoint`` / ``-e`` on every magic (widgets
included), RegisterForm parsing on the server or here and registering there, LaunchForm launching
there, ChatBox on a remote model and CompareView mixing in-kernel and remote models.

The "remote" is OUR REST server started in this process (xinference_nb.serve(port=0)) serving the
tiny real models: every call below goes through HTTP and RemoteClient, while the files stay
readable here, so "parse on the server" is chosen explicitly (or by pretending the path is not
local)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from xinference_nb import display as d  # noqa: E402
from xinference_nb.client import Client  # noqa: E402
from xinference_nb.client.remote import RemoteClient, RemoteLLMHandle  # noqa: E402
from xinference_nb.widgets import ChatBox, CompareView, LaunchForm, RegisterForm  # noqa: E402
from xinference_nb.widgets import _common  # noqa: E402
from xinference_nb.parse import where as where_module  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir, minilm_dir):
    from xinference_nb.server.runner import serve, stop_server

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("remote_nb_home")))
    running = serve(port=0, allowed_roots=[str(tiny_llama_dir.parent), str(minilm_dir)])
    yield running.url
    stop_server()
    mp.undo()


@pytest.fixture
def rc(server):
    client = RemoteClient(server)
    yield client
    for uid in list(client.list_models()):  # the models of one test never leak into the next
        client.terminate_model(uid)
    client.close()


def _llm_doc(path, name):
    from server_fakes import llm_doc

    return llm_doc(path, name)


@pytest.fixture
def remote_llm(rc, tiny_llama_dir):
    """A tiny LLM registered and launched through the server; its uid."""
    rc.register_model("LLM", json.dumps(_llm_doc(tiny_llama_dir, "remote-tiny")), overwrite=True)
    return rc.launch_model("remote-tiny", model_engine="transformers", model_uid="r-llm", n_gpu=None)


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xinference_nb")
    magics = ip.magics_manager.registry["XinfMagics"]
    magics._client_factory = None
    magics._clients.clear()
    magics.conversations.clear()
    magics.default_endpoint = None
    ip.xinf = magics
    yield ip
    magics.default_endpoint = None
    magics._clients.clear()
    magics.conversations.clear()


def run(ip, code):
    result = ip.run_cell(code)
    assert result.error_in_exec is None, result.error_in_exec
    assert result.error_before_exec is None, result.error_before_exec
    return result.result


# ------------------------------------------------------------------------------------------- magics
def test_endpoint_magic_then_register_launch_list_chat(shell, server, rc, tiny_llama_dir, tmp_path, capsys):
    assert "this kernel" in run(shell, "%xinf endpoint").text
    msg = run(shell, f"%xinf endpoint {server}")
    assert msg.level == "ok" and server in msg.text and shell.xinf.default_endpoint == server
    assert isinstance(shell.xinf.client(), RemoteClient)
    assert type(shell.xinf.client("kernel")) is Client          # -e kernel still reaches this kernel

    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(_llm_doc(tiny_llama_dir, "magic-remote-tiny")))
    run(shell, f"%xinf register -f {doc}")
    assert any(r["model_name"] == "magic-remote-tiny" for r in rc.list_model_registrations("LLM"))
    uid = run(shell, "%xinf launch -n magic-remote-tiny -en transformers -u m-llm --n-gpu none --name llm")
    assert uid == "m-llm" and isinstance(shell.user_ns["llm"], RemoteLLMHandle)
    assert "m-llm" in rc.list_models()
    table = run(shell, "%xinf list")
    assert isinstance(table, d.ModelsTable) and "m-llm" in table

    view = run(shell, "%%xinf chat m-llm --no-stream --max-tokens 4\nHello there")
    assert isinstance(view, d.ChatView) and view.answer["role"] == "assistant"
    assert len(shell.xinf.conversations[f"m-llm@{server}"]) == 2      # kept per (model, server)

    assert run(shell, "%xinf endpoint --reset").level == "ok" and shell.xinf.default_endpoint is None
    assert type(shell.xinf.client()) is Client
    run(shell, f"%xinf terminate m-llm -e {server}")
    assert "m-llm" not in rc.list_models()


def test_endpoint_magic_refuses_an_unreachable_server(shell, capsys):
    assert run(shell, "%xinf endpoint http://127.0.0.1:9") is None
    assert "Cannot reach the server" in capsys.readouterr().err
    assert shell.xinf.default_endpoint is None


def test_widget_magics_take_an_endpoint(shell, server, remote_llm, tiny_llama_dir):
    form = run(shell, f"%xinf launch-form -e {server}")
    assert isinstance(form, LaunchForm) and form.client.endpoint == server
    reg = run(shell, f"%xinf register-form /srv/models/x -t LLM --parse-on server -e {server}")
    assert isinstance(reg, RegisterForm) and reg.client.endpoint == server and reg.parse_on.value == "server"
    box = run(shell, f"%xinf chatbox {remote_llm} -e {server}")
    assert isinstance(box, ChatBox) and box.client.endpoint == server and server in box.title
    view = run(shell, f"%xinf compare {remote_llm} -e {server}")
    assert isinstance(view, CompareView) and list(view.models.value) == [remote_llm]
    # %xinf parse with a server: where the files are (here when the path exists here, or as told)
    view = run(shell, f"%xinf parse {tiny_llama_dir} --parse-on server -e {server} -n srv-magic --name p")
    assert isinstance(view, d.ParsedView) and isinstance(shell.user_ns["p"], _common.ServerParsed)
    assert "auto-parse of" in view._repr_html_() and view.document()["model_name"] == "srv-magic"
    view = run(shell, f"%xinf parse {tiny_llama_dir} -e {server} --name p")
    assert not isinstance(shell.user_ns["p"], _common.ServerParsed)
    # a default endpoint, then -e kernel and uid@kernel / uid@URL to mix
    run(shell, f"%xinf endpoint {server}")
    assert run(shell, "%xinf launch-form").client.endpoint == server
    assert type(run(shell, "%xinf launch-form -e kernel").client) is Client
    view = run(shell, f"%xinf compare {remote_llm} {remote_llm}@kernel")
    assert list(view.models.value) == [remote_llm, f"{remote_llm} @ kernel"]
    owner, uid, _ = view.targets[f"{remote_llm} @ kernel"]
    assert type(owner) is Client and uid == remote_llm


# ------------------------------------------------------------------------------------------ widgets
def test_register_form_parses_on_the_server_and_registers_there(rc, tiny_llama_dir, monkeypatch):
    form = RegisterForm(client=rc, path=str(tiny_llama_dir), parse_on="server", model_name="srv-parsed")
    assert form.parse_on.layout.display is None                      # the toggle shows for a remote client
    parsed = form.parse()
    assert isinstance(parsed, _common.ServerParsed) and form.parsed_on == "server"
    assert "parsed on the server" in form.status.value
    assert form.model_type.value == "LLM" and form.fields["model_name"].value == "srv-parsed"
    assert form.fields["context_length"].value > 0
    assert "the server (auto-parse" in form.fields["context_length"].source_hint
    assert form.validate() == []
    assert form.register(), form.status.value
    assert server_doc(rc, "srv-parsed")["model_specs"][0]["model_format"] == "pytorch"

    # auto: a path this machine does not have is parsed where the files are, on the server
    monkeypatch.setattr(where_module, "path_is_local", lambda path: False)
    form = RegisterForm(client=rc, path=str(tiny_llama_dir), model_name="srv-auto")
    assert isinstance(form.parse(), _common.ServerParsed) and form.parsed_on == "server"
    # a server's missing path is the server's error, shown in the form
    form = RegisterForm(client=rc, path=str(tiny_llama_dir / "nope"), parse_on="server")
    assert form.parse() is None and "✗" in form.status.value and "nope" in form.status.value


def server_doc(rc, name, model_type="LLM"):
    return rc.get_model_registration(model_type, name)


def test_register_form_parses_a_local_path_here_and_registers_on_the_server(rc, minilm_dir):
    form = RegisterForm(client=rc, path=str(minilm_dir), model_name="here-minilm")
    parsed = form.parse()
    assert form.parsed_on == "here" and not isinstance(parsed, _common.ServerParsed)
    assert form.model_type.value == "embedding" and "config.json" in form.fields["dimensions"].source_hint
    form.persist.value = False
    assert form.register(), form.status.value
    assert "on " + rc.endpoint in form.status.value
    assert server_doc(rc, "here-minilm", "embedding")["dimensions"] == 384
    # the server's route parses LLMs only: asking it for an embedding model is a clear error
    form = RegisterForm(client=rc, path=str(minilm_dir), model_type="embedding", parse_on="server")
    assert form.parse() is None and "LLMs only" in form.status.value
    # an in-kernel client hides the toggle and always parses here
    local = RegisterForm(client=Client(), path=str(minilm_dir))
    assert local.parse_on.layout.display == "none"
    local.parse()
    assert local.parsed_on == "here"


def test_launch_form_lists_and_launches_on_the_server(rc, tiny_llama_dir):
    rc.register_model("LLM", json.dumps(_llm_doc(tiny_llama_dir, "form-remote-tiny")), overwrite=True)
    form = LaunchForm(client=rc, model_name="form-remote-tiny")
    assert "form-remote-tiny" in form.model_name.options
    assert "transformers" in [v for _, v in form.engine.options]
    assert "the server at" in form.memory.value and form.estimate() is None
    form.engine.value = "transformers"
    form.n_gpu.value = None
    form.model_uid.value = "form-r-llm"
    shown = form.launch()
    assert shown == "form-r-llm" and form.uid == "form-r-llm", form.status.value
    assert isinstance(form.model, RemoteLLMHandle) and "form-r-llm" in rc.list_models()
    assert rc.endpoint in form.status.value


def test_chatbox_on_a_remote_model(rc, remote_llm):
    box = ChatBox(remote_llm, client=rc, max_tokens=4)
    view = box.send("Hello")
    assert view is not None, box.status.value
    assert [m["role"] for m in box.messages] == ["user", "assistant"]
    assert rc.endpoint in box.transcript.value
    # a remote handle works as well as a uid
    box = ChatBox(rc.get_model(remote_llm), max_tokens=4, stream=False)
    assert box.send("Hi") is not None and box.messages[-1]["role"] == "assistant"


def test_compare_view_mixes_in_kernel_and_remote_models(rc, remote_llm, tiny_llama_dir):
    kernel = Client()
    kernel.register_model("LLM", _llm_doc(tiny_llama_dir, "kernel-tiny"), overwrite=True)
    k_uid = kernel.launch_model("kernel-tiny", model_engine="transformers", model_uid="k-llm", n_gpu=None)
    try:
        view = CompareView(uids=[k_uid, (rc, remote_llm)], client=kernel, max_tokens=4)
        assert list(view.models.value) == ["k-llm", f"{remote_llm} @ {rc.endpoint}"]
        rows = view.run("Say hi")
        assert [r["model_uid"] for r in rows] == ["k-llm", remote_llm]
        assert [r["endpoint"] for r in rows] == [None, rc.endpoint]
        assert all(r["error"] is None and r["content"] for r in rows), rows
        assert rows[1]["memory_bytes"]                                     # from the server's list_models
        assert len(view.columns.children) == 2 and all("first token" in c.value for c in view.columns.children)
        assert rc.endpoint in view.columns.children[1].value

        # handles from both places, and the running models of several clients offered together
        view = CompareView(uids=[kernel.get_model(k_uid), rc.get_model(remote_llm)], max_tokens=4)
        assert list(view.models.value) == ["k-llm", f"{remote_llm} @ {rc.endpoint}"]
        assert all(r["content"] and r["error"] is None for r in view.run("Hi"))
        view = CompareView(client=rc, clients=[kernel])
        assert {remote_llm, f"{k_uid} @ kernel"} <= set(view.models.options)
    finally:
        kernel.terminate_model(k_uid)


def test_endpoint_magic_with_an_api_key(shell, capsys):
    """A server with a key: refused without it (nothing changes), then everything goes there with it."""
    from server_fakes import FakeClient as ServerFake

    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    running = start_in_thread(create_app(ServerFake(), api_key="s3cret"), port=0)
    try:
        assert run(shell, f"%xinf endpoint {running.url}") is None
        assert "api_key" in capsys.readouterr().err and shell.xinf.default_endpoint is None
        assert run(shell, f"%xinf endpoint {running.url} -ak s3cret").level == "ok"
        assert "llm" in run(shell, "%xinf list")
        box = run(shell, "%xinf chatbox llm")
        box.max_tokens.value = 3
        assert box.send("hi") is not None and box.messages[-1]["content"] == "w0 w1 w2 "
    finally:
        running.stop()
