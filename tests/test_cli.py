"""`xinf` against a live server: register, registrations, launch, list, chat, generate, terminate,
unregister, parse; `xinf serve` as a standalone process."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from server_fakes import LiveModels, embedding_doc  # noqa: E402

from xinference_nb.commands.cli import build_parser, main, table  # noqa: E402
from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.runner import start_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_llama_dir, minilm_dir):
    pytest.importorskip("sentence_transformers")
    mp = pytest.MonkeyPatch()
    home = str(tmp_path_factory.mktemp("cli_home"))
    mp.setenv("XINFERENCE_NB_HOME", home)
    models = LiveModels("cli", tiny_llama_dir)
    running = start_in_thread(create_app(allowed_roots=[str(tiny_llama_dir.parent), str(minilm_dir)]), port=0)
    running.models = models
    running.home = home
    yield running
    running.stop()
    models.close()
    mp.undo()


@pytest.fixture
def xinf(live, monkeypatch, capsys):
    monkeypatch.setenv("XINFERENCE_NB_HOME", live.home)

    def run(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv) + ["-e", live.url])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_table_layout():
    text = table(["A", "Long header"], [["x", 1], ["yyyy", None], ["z", ["a", "b"]]])
    lines = text.splitlines()
    assert lines[0].split() == ["A", "Long", "header"] and set(lines[1]) <= {"-", " "}
    assert lines[3].startswith("yyyy") and lines[4].endswith("a, b")


def test_flags_mirror_xinference():
    parser = build_parser()
    args = parser.parse_args(["launch", "-n", "m", "-t", "embedding", "-en", "sentence_transformers", "-u", "u1",
                              "-s", "7", "-f", "pytorch", "-q", "none", "-r", "1", "--n-gpu", "none", "-mp", "/x",
                              "-ev", "A", "B", "-qc", "k", "1", "--trust-remote-code", "-ak", "key"])
    assert (args.model_name, args.model_type, args.model_engine, args.model_uid) == ("m", "embedding",
                                                                                     "sentence_transformers", "u1")
    assert args.env == [["A", "B"]] and args.quantization_config == [["k", "1"]] and args.api_key == "key"
    args = parser.parse_args(["register", "-t", "LLM", "-f", "m.json", "-p"])
    assert args.persist and args.file == "m.json"
    args = parser.parse_args(["unregister", "-t", "LLM", "-n", "m"])
    assert args.model_name == "m"


def test_register_launch_list_terminate_unregister(xinf, live, minilm_dir, tmp_path):
    doc_file = tmp_path / "emb.json"
    doc_file.write_text(json.dumps(embedding_doc(minilm_dir, "cli-minilm")))
    code, out, err = xinf("register", "-t", "embedding", "-f", str(doc_file))
    assert code == 0, err
    code, out, _ = xinf("registrations", "-t", "embedding")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:3] == ["Type", "Name", "Language"]
    row = next(line for line in out.splitlines() if "cli-minilm" in line)
    assert "384" in row and "False" in row

    code, out, err = xinf("launch", "-n", "cli-minilm", "-t", "embedding", "-u", "cli-emb", "--n-gpu", "none")
    assert code == 0, err
    assert out.strip() == "Model uid: cli-emb"
    code, out, _ = xinf("list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["UID", "Type", "Name"]
    assert any(line.split()[:3] == ["cli-emb", "embedding", "cli-minilm"] for line in out.splitlines())
    code, out, _ = xinf("list", "--json")
    assert "cli-emb" in json.loads(out)
    code, out, _ = xinf("terminate", "--model-uid", "cli-emb")
    assert code == 0 and "cli-emb" in out
    code, out, err = xinf("terminate", "--model-uid", "cli-emb")
    assert code == 1 and "Model not found in the model list" in err
    code, out, _ = xinf("unregister", "-t", "embedding", "-n", "cli-minilm")
    assert code == 0
    code, out, _ = xinf("registrations", "-t", "embedding")
    assert "cli-minilm" not in out


def test_chat_and_generate_read_stdin(xinf, live):
    uid = live.models.llm
    code, out, err = xinf("chat", "--model-uid", uid, "--max_tokens", "3", stdin="hello\nhow are you\nexit\n")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    code, out, err = xinf("chat", "--model-uid", uid, "--max_tokens", "3", "--no-stream", stdin="hello\n")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    code, out, err = xinf("generate", "--model-uid", uid, "--max_tokens", "3", stdin="Once upon a time\n")
    assert code == 0, err
    code, out, err = xinf("chat", "--model-uid", "nope", stdin="hi\n")
    assert code == 1 and err.startswith("Error:")


def test_launch_llm_and_registrations_table(xinf, live):
    code, out, _ = xinf("registrations", "-t", "LLM")
    assert code == 0 and out.splitlines()[0].split() == ["Type", "Name", "Language", "Ability", "Is-built-in"]
    assert any("cli-tiny-llama" in line for line in out.splitlines())
    code, out, err = xinf("launch", "-n", "cli-tiny-llama", "-u", "cli-llm-2", "--n-gpu", "none")
    assert code == 0, err
    code, _, err = xinf("terminate", "-u", "cli-llm-2")
    assert code == 0, err


def test_parse_local_and_on_server(xinf, tiny_llama_dir, tmp_path):
    code, out, err = xinf("parse", str(tiny_llama_dir), "--model-family", "my-tiny")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model_specs"][0]["model_format"] == "pytorch" and doc["context_length"] > 0
    target = tmp_path / "parsed.json"
    code, out, err = xinf("parse", str(tiny_llama_dir), "--on-server", "-o", str(target))
    assert code == 0, err
    assert json.loads(target.read_text())["model_specs"]
    code, out, err = xinf("parse", str(tmp_path / "missing"))
    assert code == 1 and "Error:" in err


def test_unreachable_endpoint_is_one_line(monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("XINFERENCE_NB_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: Cannot reach the server") and len(err.strip().splitlines()) == 1


def test_xinf_serve_standalone_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XINFERENCE_NB_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "xinference_nb.commands.cli", "serve", "--port", str(port), "-ak", "k9",
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(url + "/v1/cluster/auth", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert r.json() == {"auth": True}
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer k9"}).json() == {
            "object": "list", "data": []}
        # a second server on the same port: a clear error, exit code 1
        second = subprocess.run([sys.executable, "-m", "xinference_nb.commands.cli", "serve", "--port", str(port)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already in use" in second.stderr and "--port" in second.stderr
        # the CLI against it
        out = subprocess.run([sys.executable, "-m", "xinference_nb.commands.cli", "list", "-e", url, "-ak", "k9"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.splitlines()[0].startswith("UID")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
