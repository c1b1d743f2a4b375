"""The model cache, visible (issue 24, item 3): ``list_cached_models`` / ``remove_cached_model`` over a
real Hugging Face cache layout (``models--Org--Name`` with ``blobs/``, ``refs/`` and ``snapshots/<commit>``
links, which huggingface_hub's own ``scan_cache_dir`` reads) and over custom registrations' own
``model_uri`` files; the refusals (a running model, a registration's own folder without the flag, a link
that leads out of the cache, bad arguments); the REST routes (refused unless the server allows them) and
the ``cached`` / ``remove-cache`` commands of the CLI and the magics."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from xinference_nb import Client
from xinference_nb.errors import CacheError

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


# --------------------------------------------------------------------------------------------------
# a Hugging Face cache, laid out as huggingface_hub lays it out
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache in tmp_path, the one in use (as huggingface_hub reads it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_revision(cache: Path, repo: str, files: dict[str, bytes], commit: str, refs=("main",)) -> Path:
    """Adds one revision of ``repo``: each file a blob named by its sha256, linked from the snapshot by
    a relative link, as huggingface_hub writes them; ``refs`` point at the commit. Returns the snapshot."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snapshot


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def blob_bytes(cache: Path, repo: str) -> int:
    return sum(p.stat().st_size for p in (cache / ("models--" + repo.replace("/", "--")) / "blobs").iterdir())


def register_llm(client: Client, path: Path, name: str, **entry) -> dict:
    """A custom LLM registration of the tiny llama's files at ``path`` (its document from parse)."""
    from xinference_nb.parse import parse_model
    from xinference_nb.spec import to_document

    doc = to_document(parse_model(str(path), model_type="LLM", model_name=name).spec)
    for spec in doc["model_specs"]:
        spec.update(entry)
    client.register_model("LLM", json.dumps(doc), persist=False)
    return doc


@pytest.fixture
def cached(hf_cache, tiny_llama_dir, tiny_gguf_file):
    """acme/tiny-llama with two revisions (main → B, v1 → A; A has one file more) and acme/tiny-gguf
    with two quantizations of one GGUF."""
    files = folder_files(tiny_llama_dir)
    snap_a = put_revision(hf_cache, "acme/tiny-llama", {**files, "notes.txt": b"older revision\n"}, COMMIT_A,
                          refs=("v1",))
    snap_b = put_revision(hf_cache, "acme/tiny-llama", files, COMMIT_B)
    gguf = Path(tiny_gguf_file).read_bytes()
    snap_g = put_revision(hf_cache, "acme/tiny-gguf", {"tiny-Q8_0.gguf": gguf, "tiny-F16.gguf": gguf + b"\0"},
                          COMMIT_A)
    return {"llama_a": snap_a, "llama_b": snap_b, "gguf": snap_g, "files": files}


def by_version(rows):
    return {r["model_version"]: r for r in rows}


# --------------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------------
def test_the_listing_shows_each_revision_with_its_facts_and_the_registrations_that_point_at_it(
        cached, hf_cache, tmp_path, tiny_llama_dir):
    client = Client()
    own = tmp_path / "own-model"
    shutil.copytree(tiny_llama_dir, own)
    register_llm(client, own, "own-llama")                                    # a model_uri outside the cache
    register_llm(client, tiny_llama_dir, "hub-llama", model_uri=None, model_id="acme/tiny-llama",
                 model_hub="huggingface", model_revision="main")             # a hub id, no local files
    rows = by_version(client.list_cached_models())
    a, b = rows[f"acme/tiny-llama@{COMMIT_A}"], rows[f"acme/tiny-llama@{COMMIT_B}"]
    assert (a["refs"], b["refs"]) == (["v1"], ["main"])
    assert a["path"] == str(cached["llama_a"]) and a["source"] == b["source"] == "huggingface"
    assert a["revision"] == COMMIT_A and a["model_id"] == "acme/tiny-llama"
    assert a["repo_path"] == str(hf_cache / "models--acme--tiny-llama")
    # sizes on disk: a revision counts its blobs; the two share every blob but notes.txt
    assert b["size_bytes"] == sum(len(v) for v in cached["files"].values())
    assert a["size_bytes"] == b["size_bytes"] + len(b"older revision\n")
    for row in (a, b):
        assert (row["model_type"], row["model_format"], row["quantization"]) == ("LLM", "pytorch", "none")
        assert row["file_formats"] == ["safetensors"] and row["model_size_in_billions"] is not None
        assert row["registrations"] == ["LLM/hub-llama"] and row["running"] == []
    g = rows[f"acme/tiny-gguf@{COMMIT_A}"]
    assert (g["model_format"], g["quantization"], g["registrations"]) == ("ggufv2", None, [])
    assert sorted(g["quantizations"]) == ["F16", "Q8_0"]
    mine = rows[str(own)]
    assert (mine["source"], mine["model_name"], mine["registrations"]) == ("model_uri", "own-llama", ["LLM/own-llama"])
    assert mine["size_bytes"] == sum(p.stat().st_size for p in own.rglob("*") if p.is_file())
    # a name keeps that model's rows: a registration's name, a repository id
    assert sorted(r["model_version"] for r in client.list_cached_models("hub-llama")) == sorted(
        [f"acme/tiny-llama@{COMMIT_A}", f"acme/tiny-llama@{COMMIT_B}"])
    assert [r["model_version"] for r in client.list_cached_models("acme/tiny-gguf")] == [f"acme/tiny-gguf@{COMMIT_A}"]
    assert client.list_cached_models("no-such-model") == []


def test_an_empty_or_missing_cache_lists_nothing_and_the_table_says_so(hf_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from xinference_nb.display import CachedModelsTable

    assert Client().list_cached_models() == []
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "never-made"))
    assert Client().list_cached_models() == []
    assert "no cached models" in CachedModelsTable([])._repr_html_()


def test_the_table_display_shows_versions_sizes_and_links(cached):
    from xinference_nb.display import CachedModelsTable

    view = CachedModelsTable(Client().list_cached_models())
    html, text = view._repr_html_(), str(view._text())
    assert f"acme/tiny-llama@{COMMIT_B}" in html and "3 cached models" in html
    assert "KiB" in html or "MiB" in html
    assert f"acme/tiny-gguf@{COMMIT_A}" in text and "main" in text


# --------------------------------------------------------------------------------------------------
# removal
# --------------------------------------------------------------------------------------------------
def test_a_dry_run_deletes_nothing_and_a_revision_goes_alone(cached, hf_cache):
    client = Client()
    repo = hf_cache / "models--acme--tiny-llama"
    before = folder_files(repo)
    plan = client.remove_cached_model(f"acme/tiny-llama@{COMMIT_A}", dry_run=True)
    assert plan["deleted"] is False and plan["source"] == "huggingface"
    assert str(cached["llama_a"]) in plan["paths"] and plan["size_bytes"] == len(b"older revision\n")
    assert folder_files(repo) == before
    assert client.list_deletable_models(f"acme/tiny-llama@{COMMIT_A}")["paths"] == plan["paths"]
    # by ref: v1 is commit A
    done = client.remove_cached_model("acme/tiny-llama@v1")
    assert done["deleted"] is True and not cached["llama_a"].exists()
    assert folder_files(cached["llama_b"]) == cached["files"]               # the other revision is whole
    assert [r["revision"] for r in client.list_cached_models("acme/tiny-llama")] == [COMMIT_B]
    # the whole repository, by its id
    assert client.confirm_and_remove_model("acme/tiny-llama") is True
    assert not repo.exists() and (hf_cache / "models--acme--tiny-gguf").exists()


def test_a_repository_folder_path_names_the_whole_repository(cached, hf_cache):
    repo = hf_cache / "models--acme--tiny-gguf"
    result = Client().remove_cached_model(str(repo))
    assert result["deleted"] and not repo.exists()


def test_removal_is_refused_while_a_model_uses_the_files(cached, tiny_llama_dir):
    client = Client()
    register_llm(client, cached["llama_b"], "snap-llama")
    uid = client.launch_model(model_name="snap-llama", model_type="LLM", model_engine="transformers")
    try:
        row = by_version(client.list_cached_models())[f"acme/tiny-llama@{COMMIT_B}"]
        assert row["running"] == [uid] and "LLM/snap-llama" in row["registrations"]
        for version in (f"acme/tiny-llama@{COMMIT_B}", "acme/tiny-llama", str(cached["llama_b"])):
            with pytest.raises(CacheError, match=f"running model {uid} uses these files.*Nothing was deleted"):
                client.remove_cached_model(version)
        assert folder_files(cached["llama_b"]) == cached["files"]
        # another revision of the same repository is not in use
        assert client.remove_cached_model(f"acme/tiny-llama@{COMMIT_A}")["deleted"]
    finally:
        client.terminate_model(uid)
    result = client.remove_cached_model("acme/tiny-llama")
    assert result["deleted"] and result["registrations"] == ["LLM/snap-llama"]
    assert client.get_model_registration("LLM", "snap-llama")["model_name"] == "snap-llama"   # kept


def test_a_registrations_own_folder_needs_the_explicit_flag(hf_cache, tmp_path, tiny_llama_dir, tiny_gguf_file):
    client = Client()
    own = tmp_path / "own-model"
    shutil.copytree(tiny_llama_dir, own)
    register_llm(client, own, "own-llama")
    with pytest.raises(CacheError, match="registration's own model_uri.*delete_user_files=True.*Nothing was deleted"):
        client.remove_cached_model(str(own))
    assert folder_files(own) == folder_files(tiny_llama_dir)
    plan = client.remove_cached_model(str(own), dry_run=True)
    assert plan["needs_delete_user_files"] is True and plan["paths"] == [str(own)]
    result = client.remove_cached_model(str(own), delete_user_files=True)
    assert result["deleted"] and not own.exists() and result["registrations"] == ["LLM/own-llama"]
    assert client.list_cached_models() == []


def test_a_registrations_gguf_file_goes_alone_not_its_folder(hf_cache, tmp_path, tiny_gguf_file):
    client = Client()
    folder = tmp_path / "ggufs"
    folder.mkdir()
    model = folder / "tiny-Q8_0.gguf"
    shutil.copy(tiny_gguf_file, model)
    (folder / "keep.txt").write_text("not a model")
    from xinference_nb.parse import parse_model
    from xinference_nb.spec import to_document

    doc = to_document(parse_model(str(model), model_type="LLM", model_name="own-gguf", model_family="qwen2.5-instruct"
                                  ).spec)
    client.register_model("LLM", json.dumps(doc), persist=False)
    row = by_version(client.list_cached_models())[str(model)]
    assert (row["model_format"], row["quantization"]) == ("ggufv2", "Q8_0")
    client.remove_cached_model(str(model), delete_user_files=True)
    assert not model.exists() and (folder / "keep.txt").exists()


def test_links_and_protected_folders_are_never_deleted(hf_cache, tmp_path, tiny_llama_dir, monkeypatch):
    client = Client()
    real = tmp_path / "real-model"
    shutil.copytree(tiny_llama_dir, real)
    link = tmp_path / "linked-model"
    link.symlink_to(real)
    register_llm(client, link, "linked-llama")
    with pytest.raises(CacheError, match="symbolic link.*Nothing was deleted"):
        client.remove_cached_model(str(link), delete_user_files=True)
    assert link.is_symlink() and folder_files(real) == folder_files(tiny_llama_dir)
    # a folder that holds the working directory
    holder = tmp_path / "holder"
    shutil.copytree(tiny_llama_dir, holder)
    (holder / "work").mkdir()
    monkeypatch.chdir(holder / "work")
    register_llm(client, holder, "holder-llama")
    with pytest.raises(CacheError, match="holds the working directory"):
        client.remove_cached_model(str(holder), delete_user_files=True)
    assert (holder / "config.json").exists()


def test_a_snapshot_file_that_links_out_of_the_cache_is_refused_whole(cached, hf_cache, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    evil = cached["gguf"] / "evil.txt"
    evil.symlink_to(victim)
    repo = hf_cache / "models--acme--tiny-gguf"
    before = sorted(p.name for p in repo.rglob("*"))
    rows = Client().list_cached_models("acme/tiny-gguf")    # huggingface_hub lists the link as a file of it
    assert [r["model_version"] for r in rows] == [f"acme/tiny-gguf@{COMMIT_A}"]
    # a revision's removal would delete the link's target as an unused blob; the repository's, the link
    for version in (f"acme/tiny-gguf@{COMMIT_A}", "acme/tiny-gguf", str(repo)):
        with pytest.raises(CacheError, match="leads outside the repository's folder.*Nothing was deleted"):
            Client().remove_cached_model(version)
    assert victim.read_text() == "precious" and sorted(p.name for p in repo.rglob("*")) == before


@pytest.mark.parametrize("kwargs, says", [
    ({"model_version": ""}, "give a cached model's model_version"),
    ({"model_version": 5}, "give a cached model's model_version"),
    ({"model_version": "acme/nothing"}, "not a cached model"),
    ({"model_version": "acme/tiny-llama@" + "c" * 40}, "not a cached model"),
    ({"model_version": "/etc"}, "not a cached model"),
    ({"model_version": "acme/tiny-llama", "delete_user_files": "yes"}, "delete_user_files='yes': must be True or False"),
    ({"model_version": "acme/tiny-llama", "dry_run": 1}, "dry_run=1: must be True or False"),
    ({"model_version": "acme/tiny-llama", "worker_ip": "10.0.0.2"}, "this kernel's cache has no workers"),
])
def test_bad_arguments_are_refused_and_change_nothing(cached, hf_cache, kwargs, says):
    before = sorted(str(p) for p in hf_cache.rglob("*"))
    with pytest.raises(CacheError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Client().remove_cached_model(**kwargs)
    assert sorted(str(p) for p in hf_cache.rglob("*")) == before
    with pytest.raises(CacheError):
        Client().list_cached_models(model_name=3)


# --------------------------------------------------------------------------------------------------
# over REST, the CLI and the magics
# --------------------------------------------------------------------------------------------------
def _server(**options):
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    return start_in_thread(create_app(Client(), **options), port=0)


def test_rest_lists_and_refuses_deleting_unless_the_server_allows_it(cached, hf_cache, tmp_path):
    import httpx

    server = _server()
    try:
        remote = Client(server.url)
        rows = by_version(remote.list_cached_models())
        assert set(rows) == {f"acme/tiny-llama@{COMMIT_A}", f"acme/tiny-llama@{COMMIT_B}", f"acme/tiny-gguf@{COMMIT_A}"}
        assert rows[f"acme/tiny-llama@{COMMIT_B}"]["refs"] == ["main"]
        plan = remote.remove_cached_model("acme/tiny-gguf", dry_run=True)       # GET .../files: allowed
        assert plan["deleted"] is False and plan["paths"]
        with pytest.raises(Exception, match="allow_cache_delete"):
            remote.remove_cached_model("acme/tiny-gguf")
        assert (hf_cache / "models--acme--tiny-gguf").exists()
        r = httpx.delete(server.url + "/v1/cache/models", params={"model_version": "acme/tiny-gguf"})
        assert r.status_code == 403 and (hf_cache / "models--acme--tiny-gguf").exists()
        r = httpx.get(server.url + "/v1/cache/models", params={"model_name": "x", "evil": "1"})
        assert r.status_code == 400 and "evil" in r.text
        r = httpx.delete(server.url + "/v1/cache/models", params={"model_version": "acme/tiny-gguf",
                                                                  "delete_user_files": "maybe"})
        assert r.status_code in (400, 403, 422) and (hf_cache / "models--acme--tiny-gguf").exists()
    finally:
        server.stop()
    # allowed, but only inside the allowed roots
    server = _server(allow_cache_delete=True, allowed_roots=[str(tmp_path / "elsewhere")])
    (tmp_path / "elsewhere").mkdir()
    try:
        with pytest.raises(Exception, match="allowed"):
            Client(server.url).remove_cached_model("acme/tiny-gguf")
        assert (hf_cache / "models--acme--tiny-gguf").exists()
    finally:
        server.stop()
    server = _server(allow_cache_delete=True, allowed_roots=[str(hf_cache)])
    try:
        for flag in ("1", "yes", "on", "True"):                              # booleans are booleans
            r = httpx.delete(server.url + "/v1/cache/models", params={"model_version": "acme/tiny-gguf",
                                                                      "delete_user_files": flag})
            assert r.status_code == 400 and "must be true or false" in r.text, (flag, r.text)
        assert (hf_cache / "models--acme--tiny-gguf").exists()
        remote = Client(server.url)
        assert remote.remove_cached_model("acme/tiny-gguf")["deleted"] is True
        assert not (hf_cache / "models--acme--tiny-gguf").exists()
        assert remote.confirm_and_remove_model(f"acme/tiny-llama@{COMMIT_A}") is True
        assert [r["revision"] for r in remote.list_cached_models()] == [COMMIT_B]
    finally:
        server.stop()


def test_the_cli_lists_and_removes_after_asking(cached, hf_cache, capsys, monkeypatch):
    import io
    import sys

    from xinference_nb.commands.cli import main

    server = _server(allow_cache_delete=True, allowed_roots=[str(hf_cache)])
    try:
        assert main(["cached", "--json", "-e", server.url]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {r["model_version"] for r in listed} >= {f"acme/tiny-gguf@{COMMIT_A}"}
        assert main(["cached", "-n", "acme/tiny-gguf", "-e", server.url]) == 0
        out = capsys.readouterr().out
        assert f"acme/tiny-gguf@{COMMIT_A}" in out and "tiny-llama" not in out
        monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
        assert main(["remove-cache", "-n", "acme/tiny-gguf", "-e", server.url]) == 1
        out = capsys.readouterr().out
        assert "Aborted: nothing was deleted" in out and f"\n{hf_cache / 'models--acme--tiny-gguf'}\n" in out
        assert (hf_cache / "models--acme--tiny-gguf").exists()
        assert main(["remove-cache", "-n", "acme/tiny-gguf", "--check", "-e", server.url]) == 0
        assert "deleted" in capsys.readouterr().out and not (hf_cache / "models--acme--tiny-gguf").exists()
        assert main(["remove-cache", "-n", "acme/tiny-gguf", "--check", "-e", server.url]) == 1
        assert "not a cached model" in capsys.readouterr().err
    finally:
        server.stop()


def test_the_magics_list_show_and_remove_in_the_kernel(cached, hf_cache):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xinference_nb")
    table = ip.run_line_magic("xinf", "cached")
    assert f"acme/tiny-gguf@{COMMIT_A}" in table._repr_html_()
    shown = ip.run_line_magic("xinf", "remove-cache -n acme/tiny-gguf")
    assert "--check" in str(shown) and shown._text().endswith(str(hf_cache / "models--acme--tiny-gguf"))
    assert (hf_cache / "models--acme--tiny-gguf").exists()
    done = ip.run_line_magic("xinf", "remove-cache -n acme/tiny-gguf --check")
    assert "deleted the cache of acme/tiny-gguf" in str(done)
    assert not (hf_cache / "models--acme--tiny-gguf").exists()
