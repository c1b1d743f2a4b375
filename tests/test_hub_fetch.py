"""Launching from a hub id: the files come down through huggingface_hub's real client from a local
HTTP server in the test process that speaks the part of the Hugging Face Hub API the client uses
(``/api/models/{repo}/revision/{rev}`` with siblings; HEAD / GET ``/{repo}/resolve/{rev}/{file}`` with
X-Repo-Commit, ETag, Content-Length and Range). The server counts what it is asked, so the tests see
which files were fetched, that a cached launch asks for none, and that a resumed one sends a Range.

In-process tests point huggingface_hub at the server the way it reads its settings at call time
(``constants.ENDPOINT`` / ``HUGGINGFACE_CO_URL_TEMPLATE`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE``, and
the environment); the interrupt test runs the launch in a fresh process configured through the
environment alone (HF_ENDPOINT, HF_HUB_CACHE, no HF_HUB_OFFLINE) and interrupts it with SIGINT, the
kernel's interrupt.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import pytest

from xinference_nb import Client
from xinference_nb.errors import LaunchError, LaunchOptionError, ParseError

from local_hub import MiB, LocalHub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A LocalHub that huggingface_hub talks to (online, its cache in tmp_path / "hf-cache")."""
    from huggingface_hub import constants

    server = LocalHub()
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("XINFERENCE_NB_PROGRESS", "0")
    server.cache = cache
    yield server
    server.close()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hub_doc(source: Path, name: str, repo: str, revision: Optional[str] = None, **entry: Any) -> dict[str, Any]:
    """The document parse_model writes for ``source``, its files moved to ``repo`` on the hub."""
    from xinference_nb.parse import parse_model
    from xinference_nb.spec import to_document

    doc = to_document(parse_model(str(source), model_type="LLM", model_name=name).spec)
    for spec in doc["model_specs"]:
        spec.update({"model_uri": None, "model_id": repo, "model_hub": "huggingface", "model_revision": revision,
                     **entry})
    return doc


# decoys a pytorch launch must not fetch: other formats, training state, an older .bin beside safetensors
DECOYS = {"onnx/model.onnx": b"onnx" * 64, "tiny-llama-f32.gguf": b"GGUF" + b"\0" * 64,
          "original/consolidated.00.pth": b"pth" * 64, "optimizer.pt": b"opt" * 64,
          "pytorch_model.bin": b"bin" * 64, "flax_model.msgpack": b"flax" * 64, ".gitattributes": b"*.x lfs\n"}


def _publish_llama(hub: LocalHub, tiny_llama_dir: Path, repo: str = "acme/tiny-llama") -> tuple[dict, str]:
    files = {**_files(tiny_llama_dir), "README.md": b"---\nlanguage:\n- en\n---\n# tiny\n", **DECOYS}
    return files, hub.add(repo, files)


# --------------------------------------------------------------------------------------------------
# launching from the hub
# --------------------------------------------------------------------------------------------------
def test_launch_from_a_hub_id_fetches_only_the_folder_files_and_a_second_launch_fetches_nothing(
        hub, tiny_llama_dir):
    files, commit = _publish_llama(hub, tiny_llama_dir)
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-tiny", "acme/tiny-llama"))
    uid = client.launch_model("hub-tiny", model_engine="transformers", n_gpu=None)
    needed = sorted(set(files) - set(DECOYS))
    assert sorted(hub.file_requests("GET")) == needed
    snapshot = hub.cache.resolve() / "models--acme--tiny-llama" / "snapshots" / commit
    assert client.describe_model(uid)["model_path"] == str(snapshot)
    assert (snapshot.parent.parent / "refs" / "main").read_text() == commit
    for name in needed:
        assert _sha((snapshot / name).read_bytes()) == _sha(files[name]), name
    assert not any((snapshot / name).exists() for name in DECOYS)
    reply = client.get_model(uid).chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 3})
    assert reply["choices"][0]["message"]["role"] == "assistant"
    client.terminate_model(uid)

    before = len(hub.requests)
    uid = client.launch_model("hub-tiny", model_engine="transformers", n_gpu=None)
    later = hub.requests[before:]
    assert [m for m, path, _ in later if "/resolve/" in path] == []        # no HEAD, no GET of a file
    assert [path for _, path, _ in later] == ["/api/models/acme/tiny-llama"]     # the file list, once
    assert client.describe_model(uid)["model_path"] == str(snapshot)
    client.terminate_model(uid)


def test_a_gguf_repository_with_two_quantizations_fetches_one(hub, tiny_llama_dir, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    decoy = os.urandom(256 * 1024)
    files = {"tiny-llama-F32.gguf": tiny_gguf_file.read_bytes(), "tiny-llama-Q8_0.gguf": decoy,
             "README.md": b"# gguf\n"}
    commit = hub.add("acme/tiny-gguf", files)
    doc = _hub_doc(tiny_gguf_file, "hub-gguf", "acme/tiny-gguf", quantization="F32")
    client = Client()
    client.register_model("LLM", doc)
    uid = client.launch_model("hub-gguf", model_engine="llama.cpp", n_gpu=None)
    assert hub.file_requests("GET") == ["tiny-llama-F32.gguf"]
    snapshot = hub.cache.resolve() / "models--acme--tiny-gguf" / "snapshots" / commit
    assert client.describe_model(uid)["model_path"] == str(snapshot / "tiny-llama-F32.gguf")
    reply = client.get_model(uid).chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 3})
    assert reply["choices"][0]["message"]["role"] == "assistant"
    client.terminate_model(uid)

    # model_file_name_template names the other one: download_model fetches exactly it, and returns it
    templated = dict(doc["model_specs"][0], quantization="Q8_0",
                     model_file_name_template="tiny-llama-{quantization}.gguf")
    doc["model_specs"].append(templated)
    client.register_model("LLM", doc, overwrite=True)
    path = client.download_model("LLM", "hub-gguf", quantization="Q8_0")
    assert path == str(snapshot / "tiny-llama-Q8_0.gguf")
    assert hub.file_requests("GET") == ["tiny-llama-F32.gguf", "tiny-llama-Q8_0.gguf"]
    assert _sha(Path(path).read_bytes()) == _sha(decoy)
    heads = len(hub.file_requests("HEAD"))
    assert client.download_model("LLM", "hub-gguf", quantization="F32") == str(snapshot / "tiny-llama-F32.gguf")
    assert len(hub.file_requests("GET")) == 2 and len(hub.file_requests("HEAD")) == heads   # cached: not asked


def test_a_vision_gguf_from_the_hub_fetches_its_projector_and_sees_images(hub, tiny_gguf_file, tmp_path):
    """A ggufv2 entry with multimodal_projectors: the launch fetches the model file and the projector
    it loads (not the other one), and chats with an image; a listed projector the repository lacks
    is named before any byte is fetched."""
    pytest.importorskip("llama_cpp")
    import base64
    import io

    import tiny_models
    from PIL import Image

    tiny_models.build_tiny_mmproj(tmp_path / "mmproj-tiny-f32.gguf")
    projector = (tmp_path / "mmproj-tiny-f32.gguf").read_bytes()
    files = {"tiny-llama-F32.gguf": tiny_gguf_file.read_bytes(), "mmproj-tiny-f32.gguf": projector,
             "mmproj-other-f16.gguf": os.urandom(4096)}
    commit = hub.add("acme/tiny-vision-gguf", files)
    doc = _hub_doc(tiny_gguf_file, "hub-vision", "acme/tiny-vision-gguf", quantization="F32",
                   multimodal_projectors=["mmproj-tiny-f32.gguf", "mmproj-other-f16.gguf"])
    doc["model_ability"] = sorted(set(doc["model_ability"]) | {"vision"})
    doc["chat_template"] = tiny_models.VISION_TEMPLATE
    client = Client()
    client.register_model("LLM", doc)
    uid = client.launch_model("hub-vision", model_engine="llama.cpp", n_gpu=None)
    try:
        assert sorted(hub.file_requests("GET")) == ["mmproj-tiny-f32.gguf", "tiny-llama-F32.gguf"]
        snapshot = hub.cache.resolve() / "models--acme--tiny-vision-gguf" / "snapshots" / commit
        assert _sha((snapshot / "mmproj-tiny-f32.gguf").read_bytes()) == _sha(projector)
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        reply = client.get_model(uid).chat([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is it?"}]}],
            generate_config={"max_tokens": 3, "temperature": 0})
        assert reply["usage"]["prompt_tokens"] > tiny_models.MMPROJ_IMAGE_TOKENS
    finally:
        client.terminate_model(uid)
    doc["model_specs"][0]["multimodal_projectors"] = ["mmproj-missing.gguf"]
    doc["model_name"] = "hub-vision-missing"
    client.register_model("LLM", doc)
    before = len(hub.file_requests("GET"))
    with pytest.raises(LaunchError, match="has no projector 'mmproj-missing.gguf'"):
        client.download_model("LLM", "hub-vision-missing")
    assert len(hub.file_requests("GET")) == before


def test_download_model_returns_the_path_and_parse_model_reads_the_cached_repo_by_id(hub, tiny_llama_dir):
    from xinference_nb.parse import parse_model

    files, commit = _publish_llama(hub, tiny_llama_dir)
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-dl", "acme/tiny-llama"))
    path = Path(client.download_model("LLM", "hub-dl"))
    assert path == hub.cache.resolve() / "models--acme--tiny-llama" / "snapshots" / commit
    assert _sha((path / "model.safetensors").read_bytes()) == _sha(files["model.safetensors"])
    assert client.list_models() == {}                     # nothing was launched

    before = len(hub.requests)
    parsed = parse_model("acme/tiny-llama")
    assert len(hub.requests) == before                    # parse looks in the cache only
    entry = parsed.spec.model_specs[0]
    assert (entry.model_id, entry.model_revision) == ("acme/tiny-llama", commit)
    assert parsed.path == path and parsed.spec.chat_template and parsed.spec.context_length == 2048
    assert parsed.sources["model_specs[0].model_id"] == "hub id argument"


def test_download_model_over_rest_fetches_into_the_servers_cache(hub, tiny_llama_dir):
    """Client(url).download_model: our server fetches into its cache and answers the path; a field the
    route does not take, or a wrong type, is a 4xx naming it, with nothing fetched."""
    import httpx

    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    files, commit = _publish_llama(hub, tiny_llama_dir)
    server = start_in_thread(create_app(Client()), port=0)
    try:
        remote = Client(server.url)
        remote.register_model("LLM", json.dumps(_hub_doc(tiny_llama_dir, "hub-rest", "acme/tiny-llama")))
        for body, says in (({"model_name": "hub-rest", "model_path": "/etc"}, "model_path"),
                           ({"model_name": "hub-rest", "revision": 3}, "revision"),
                           ({"model_name": "no-such-model"}, "no-such-model")):
            r = httpx.post(server.url + "/v1/cache/models/download", json=body)
            assert 400 <= r.status_code < 500 and says in r.text, (body, r.status_code, r.text)
        assert hub.file_requests() == []
        path = Path(remote.download_model("LLM", "hub-rest"))
        assert path == hub.cache.resolve() / "models--acme--tiny-llama" / "snapshots" / commit
        assert "model.safetensors" in hub.file_requests() and remote.list_models() == {}
        with pytest.raises(LaunchError, match="show_progress"):
            remote.download_model("LLM", "hub-rest", show_progress="yes")
    finally:
        server.stop()


def test_model_revision_is_honoured_and_a_wrong_one_is_named(hub, tiny_llama_dir):
    files, main = _publish_llama(hub, tiny_llama_dir)
    v1 = hub.add("acme/tiny-llama", {**files, "README.md": b"# version one\n"}, revision="v1")
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-rev", "acme/tiny-llama", revision="v1"))
    path = Path(client.download_model("LLM", "hub-rev"))
    assert path.name == v1 and (path / "README.md").read_bytes() == b"# version one\n"
    assert (path.parent.parent / "refs" / "v1").read_text() == v1
    assert "/api/models/acme/tiny-llama/revision/v1" in hub.api_requests()
    # download_model(revision=) picks another one, a commit here
    other = Path(client.download_model("LLM", "hub-rev", revision=main))
    assert other.name == main and (other / "README.md").read_bytes() == files["README.md"]

    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-bad-rev", "acme/tiny-llama", revision="no-such-tag"))
    with pytest.raises(LaunchError, match="no revision 'no-such-tag'") as err:
        client.launch_model("hub-bad-rev", model_engine="transformers", n_gpu=None)
    assert "acme/tiny-llama" in str(err.value) and client.list_models() == {}
    with pytest.raises(LaunchError, match="no revision 'v2'"):
        client.download_model("LLM", "hub-rev", revision="v2")


def test_a_missing_repository_is_named(hub, tiny_llama_dir):
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-missing", "acme/absent"))
    with pytest.raises(LaunchError, match="acme/absent: no such model repository") as err:
        client.launch_model("hub-missing", model_engine="transformers", n_gpu=None)
    assert "check model_id" in str(err.value) and hub.file_requests("GET") == []
    assert client.list_models() == {}


def test_offline_or_unreachable_names_the_repository_and_how_to_get_the_files(hub, tiny_llama_dir, monkeypatch):
    from huggingface_hub import constants

    files, commit = _publish_llama(hub, tiny_llama_dir)
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-off", "acme/tiny-llama"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LaunchError) as err:
        client.launch_model("hub-off", model_engine="transformers", n_gpu=None)
    text = str(err.value)
    assert "acme/tiny-llama" in text and "HF_HUB_OFFLINE" in text and "model_uri" in text and "download_model" in text
    assert hub.requests == [] and client.list_models() == {}

    # unreachable: the same advice, with why
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    closed = _closed_port_url()
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(LaunchError, match="unreachable") as err:
        client.download_model("LLM", "hub-off")
    assert "acme/tiny-llama" in str(err.value) and "model_path" in str(err.value)

    # once the files are cached, offline launches use them without asking anything
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    path = client.download_model("LLM", "hub-off")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    uid = client.launch_model("hub-off", model_engine="transformers", n_gpu=None)
    assert client.describe_model(uid)["model_path"] == path and len(hub.requests) == before
    client.terminate_model(uid)


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------------------------------
# an interrupted download resumes
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wide_llama_dir(tmp_path_factory):
    """tiny_llama with an 8192-wide MLP: a 13 MB model.safetensors, more than the client's 10 MiB chunk."""
    pytest.importorskip("transformers")
    import tiny_models

    with tiny_models.quiet():
        return tiny_models.build_tiny_llama(tmp_path_factory.mktemp("wide_llama") / "wide-llama",
                                            overrides={"intermediate_size": 8192})


CHILD = r"""
import json, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from xinference_nb import Client
client = Client()
client.register_model("LLM", json.loads(os.environ["HUB_DOC"]))
try:
    uid = client.launch_model("hub-wide", model_engine="transformers", n_gpu=None)
except KeyboardInterrupt as exc:
    print(json.dumps({"interrupted": True, "notes": getattr(exc, "__notes__", [])}))
    sys.exit(0)
reply = client.get_model(uid).chat([{"role": "user", "content": "hi"}], generate_config={"max_tokens": 3})
print(json.dumps({"interrupted": False, "path": client.describe_model(uid)["model_path"],
                  "role": reply["choices"][0]["message"]["role"]}))
"""


def _child_env(hub: LocalHub, cache: Path, doc: dict, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HOME=str(home / "hf-home"),
               XINFERENCE_NB_HOME=str(home / "xnb"), XINFERENCE_NB_PROGRESS="1", HUB_DOC=json.dumps(doc),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run_child(env: dict[str, str], hub: Optional[LocalHub] = None, stall: Optional[dict] = None):
    proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if stall is not None:
        hub.stall = {**stall, "pid": proc.pid}
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), err


def test_an_interrupted_download_resumes_with_a_range_request_on_the_next_launch(tmp_path, wide_llama_dir):
    hub = LocalHub()
    try:
        files = _files(wide_llama_dir)
        weights = files["model.safetensors"]
        assert len(weights) > 11 * MiB
        commit = hub.add("acme/wide-llama", files)
        cache = tmp_path / "hf-cache"
        env = _child_env(hub, cache, _hub_doc(wide_llama_dir, "hub-wide", "acme/wide-llama"), tmp_path)
        blobs = cache / "models--acme--wide-llama" / "blobs"
        partial = blobs / (_sha(weights) + ".incomplete")
        first, err = _run_child(env, hub, {"file": "model.safetensors", "after": 11 * MiB, "partial": str(partial)})
        assert first["interrupted"], first
        assert any("launching again" in note and "resumes" in note for note in first["notes"]), first
        assert partial.stat().st_size >= 10 * MiB and not (blobs / _sha(weights)).exists()
        assert "acme/wide-llama" in err and "B/s" in err       # the download's bar: bytes and speed

        kept = partial.stat().st_size
        before = len(hub.requests)
        second, _ = _run_child(env)
        assert not second["interrupted"] and second["role"] == "assistant", second
        ranges = [r for m, path, r in hub.requests[before:] if m == "GET" and path.endswith("/model.safetensors")]
        assert ranges == [f"bytes={kept}-"]
        snapshot = cache.resolve() / "models--acme--wide-llama" / "snapshots" / commit
        assert second["path"] == str(snapshot)
        assert _sha((snapshot / "model.safetensors").read_bytes()) == _sha(weights)
        assert not partial.exists()
    finally:
        hub.close()


def test_cancel_launch_model_stops_a_download_and_the_next_launch_resumes_it(hub, wide_llama_dir):
    files = _files(wide_llama_dir)
    weights = files["model.safetensors"]
    commit = hub.add("acme/wide-llama", files)
    client = Client()
    client.register_model("LLM", _hub_doc(wide_llama_dir, "hub-wide", "acme/wide-llama"))
    partial = hub.cache / "models--acme--wide-llama" / "blobs" / (_sha(weights) + ".incomplete")
    seen: dict[str, Any] = {}

    def cancel() -> None:
        seen["progress"] = client.get_launch_model_progress("wide")
        client.cancel_launch_model("wide")

    hub.stall = {"file": "model.safetensors", "after": 11 * MiB, "partial": str(partial), "then": cancel}
    failed: list[BaseException] = []

    def launch() -> None:
        try:
            client.launch_model("hub-wide", model_uid="wide", model_engine="transformers", n_gpu=None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failed.append(exc)

    worker = threading.Thread(target=launch)
    worker.start()
    worker.join(300)
    assert len(failed) == 1 and isinstance(failed[0], LaunchError) and "cancelled" in str(failed[0]), failed
    assert seen["progress"]["step"].startswith("downloading acme/wide-llama: ")
    assert partial.stat().st_size >= 10 * MiB and client.list_models() == {}

    kept = partial.stat().st_size
    before = len(hub.requests)
    uid = client.launch_model("hub-wide", model_uid="wide", model_engine="transformers", n_gpu=None)
    assert [r for m, p, r in hub.requests[before:] if m == "GET" and p.endswith("/model.safetensors")] == \
        [f"bytes={kept}-"]
    snapshot = hub.cache.resolve() / "models--acme--wide-llama" / "snapshots" / commit
    assert _sha((snapshot / "model.safetensors").read_bytes()) == _sha(weights) and not partial.exists()
    client.terminate_model(uid)


# --------------------------------------------------------------------------------------------------
# red team: what a careless user or a hostile hub sends
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", ["../etc/passwd", "/abs/path", "acme/../x", "acme/x/y", "acme/na me",
                                      "acme/x;rm -rf", "acme/--x", "acme/x.", "-acme/x", "acme/x\n", "a" * 97 + "/x",
                                      "https://evil.example/acme/x", "acme\\x"])
def test_a_model_id_that_is_no_repository_id_is_refused_before_any_request(hub, tiny_llama_dir, model_id):
    client = Client()
    doc = _hub_doc(tiny_llama_dir, "hub-weird", "acme/ok")
    doc["model_specs"][0]["model_id"] = model_id
    client.register_model("LLM", doc)
    with pytest.raises(LaunchError, match="not a hub repository id"):
        client.download_model("LLM", "hub-weird")
    with pytest.raises(LaunchError, match="not a hub repository id"):
        client.launch_model("hub-weird", model_engine="transformers", n_gpu=None)
    assert hub.requests == [] and not hub.cache.exists()


@pytest.mark.parametrize("revision", ["../../refs", "/etc", "a b", "main\n", "v1/../../x", "x" * 201, "a//b"])
def test_a_revision_that_is_no_branch_tag_or_commit_is_refused(hub, tiny_llama_dir, revision):
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-weird-rev", "acme/tiny-llama"))
    with pytest.raises(LaunchError, match="is not a revision"):
        client.download_model("LLM", "hub-weird-rev", revision=revision)
    assert hub.requests == []


def test_bad_download_model_arguments_and_hubs_are_refused(hub, tiny_llama_dir):
    import importlib.util

    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-args", "acme/tiny-llama"))
    with pytest.raises(LaunchError, match="must be a branch, tag or commit name, got int"):
        client.download_model("LLM", "hub-args", revision=5)
    with pytest.raises(LaunchOptionError, match="model_name"):
        client.download_model("LLM", None)
    with pytest.raises(LaunchError, match="show_progress"):
        client.download_model("LLM", "hub-args", show_progress="yes")
    with pytest.raises(LaunchError, match="no quantization 'Q4_K_M'"):
        client.download_model("LLM", "hub-args", quantization="Q4_K_M")
    doc = _hub_doc(tiny_llama_dir, "hub-s3", "acme/tiny-llama", model_hub="s3")
    client.register_model("LLM", doc)
    with pytest.raises(LaunchError, match="model_hub 's3'.*'huggingface' or 'modelscope'"):
        client.download_model("LLM", "hub-s3")
    if importlib.util.find_spec("modelscope") is None:
        client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-ms", "acme/tiny-llama", model_hub="modelscope"))
        with pytest.raises(LaunchError, match="pip install modelscope"):
            client.launch_model("hub-ms", model_engine="transformers", n_gpu=None)
    assert hub.requests == []


def test_a_hostile_hub_cannot_write_outside_the_cache(hub, tiny_llama_dir, tmp_path):
    files, _ = _publish_llama(hub, tiny_llama_dir)
    hub.extra_siblings = ["../escape.json", "/abs.json", "sub/../../up.json", "a\\b.json"]
    client = Client()
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-hostile", "acme/tiny-llama"))
    client.download_model("LLM", "hub-hostile")
    asked = hub.file_requests("GET") + hub.file_requests("HEAD")
    assert not any(".." in name or name.startswith("/") or "\\" in name for name in asked)
    assert not (hub.cache / "escape.json").exists() and not (tmp_path / "escape.json").exists()

    hub.add("acme/etag", {"config.json": b"{}", "model.safetensors": b"weights"})
    hub.bad_etag = {"model.safetensors"}
    client.register_model("LLM", _hub_doc(tiny_llama_dir, "hub-etag", "acme/etag"))
    with pytest.raises(LaunchError, match="no blob name"):
        client.download_model("LLM", "hub-etag")
    assert not (hub.cache / "models--acme--etag" / "outside").exists() and not (hub.cache / "outside").exists()


def test_parse_model_refuses_ids_that_are_not_repositories_and_never_downloads(hub, tiny_llama_dir):
    from xinference_nb.parse import parse_model

    _publish_llama(hub, tiny_llama_dir, "acme/on-the-hub")      # on the hub, not in the cache
    with pytest.raises(ParseError, match="neither a local path nor a model in the local Hugging Face cache"):
        parse_model("acme/on-the-hub")
    for text in ("acme/../etc", "../acme/x", "acme/x/../../y"):
        with pytest.raises(ParseError, match="no such file or folder"):
            parse_model(text)
    assert hub.requests == []


# --------------------------------------------------------------------------------------------------
# which files a format needs (the repository's list alone)
# --------------------------------------------------------------------------------------------------
def test_folder_files_keep_one_weight_format_per_folder():
    from xinference_nb.hub.files import folder_files, needed_files

    st = ["modules.json", "config.json", "model.safetensors", "pytorch_model.bin", "1_Pooling/config.json",
          "2_Dense/model.safetensors", "2_Dense/pytorch_model.bin", "onnx/model.onnx", "openvino/x.bin",
          "tokenizer.model", "merges.txt", "vocab.txt", "README.md", "notes.md", "training_args.bin"]
    assert folder_files(st) == sorted(["modules.json", "config.json", "model.safetensors", "1_Pooling/config.json",
                                       "2_Dense/model.safetensors", "tokenizer.model", "merges.txt", "vocab.txt",
                                       "README.md"])
    mistral = ["config.json", "consolidated.safetensors", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "model.safetensors.index.json", "params.json"]
    assert "consolidated.safetensors" not in folder_files(mistral)
    diffusers = ["model_index.json", "v1-5-pruned.safetensors", "v1-5-pruned.ckpt", "unet/config.json",
                 "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                 "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert folder_files(diffusers) == ["model_index.json", "unet/config.json",
                                       "unet/diffusion_pytorch_model.safetensors",
                                       "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert folder_files(["config.json", "pytorch_model.bin", "optimizer.pt"]) == ["config.json", "pytorch_model.bin"]
    with pytest.raises(LaunchError, match="no weights for model_format 'pytorch'.*ggufv2"):
        needed_files(["config.json", "model-q4_k_m.gguf"], "pytorch", "none", where="acme/x")


def test_gguf_files_pick_one_quantization_with_its_parts():
    from xinference_nb.hub.files import needed_files

    names = ["m-Q4_K_M.gguf", "m-Q8_0.gguf", "m-Q4_K_S.gguf", "mmproj-m-f16.gguf", "README.md",
             "big-Q2_K-00001-of-00002.gguf", "big-Q2_K-00002-of-00002.gguf"]
    assert needed_files(names, "ggufv2", "q4_k_m") == ["m-Q4_K_M.gguf"]
    assert needed_files(names, "ggufv2", "Q2_K") == ["big-Q2_K-00001-of-00002.gguf", "big-Q2_K-00002-of-00002.gguf"]
    assert needed_files(names, "ggufv2", "Q8_0", template="m-{quantization}.gguf") == ["m-Q8_0.gguf"]
    split = ["x/m-Q4-00001-of-00002.gguf", "x/m-Q4-00002-of-00002.gguf"]
    assert needed_files(split, "ggufv2", "Q4", template="m-{quantization}.gguf", split_template=
                        "x/m-{quantization}-{part}.gguf", parts={"Q4": ["00001-of-00002", "00002-of-00002"]}) == split
    assert needed_files(["model.gguf"], "ggufv2", "Q4_K_M") == ["model.gguf"]
    with pytest.raises(LaunchError, match="no GGUF file states quantization 'Q5_K_M'.*m-Q4_K_M.gguf"):
        needed_files(names, "ggufv2", "Q5_K_M", where="acme/m")
    with pytest.raises(LaunchError, match="has no 'm-IQ1.gguf'"):
        needed_files(names, "ggufv2", "IQ1", template="m-{quantization}.gguf", where="acme/m")
    with pytest.raises(LaunchError, match="lacks"):
        needed_files(["big-Q2_K-00001-of-00002.gguf"], "ggufv2", "Q2_K")


def test_import_does_not_import_huggingface_hub():
    code = ("import sys, xinference_nb; from xinference_nb import Client; Client(); "
            "print('huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
