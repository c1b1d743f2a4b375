"""Registry and Client registration API: seeds, persistence, concurrency, bad documents."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seeds import SEED_TYPES, seed_with_paths
from xinference_nb import Client
from xinference_nb.errors import ModelNotFound, RegistryError, SpecError, XinfError
from xinference_nb.registry import builtin_specs, get_registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client():
    return Client()


def _snapshot(client):
    """Everything a registration could change: listings of every type and the files on disk."""
    home = Path(os.environ["XINFERENCE_NB_HOME"])
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*.json")) if home.exists() else []
    return {t: client.list_model_registrations(t) for t in SEED_TYPES.values()}, files


# ---------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("kind", sorted(SEED_TYPES))
@pytest.mark.parametrize("persist", [False, True])
def test_seed_registers_lists_gets_back_equal_and_unregisters(kind, persist, client, tmp_path):
    model_type = SEED_TYPES[kind]
    doc = seed_with_paths(kind, tmp_path)
    name = doc["model_name"]
    client.register_model(model_type=model_type.lower(), model=json.dumps(doc), persist=persist)

    rows = client.list_model_registrations(model_type)
    assert {"model_name": name, "is_builtin": False} in rows
    detailed = [r for r in client.list_model_registrations(model_type, detailed=True) if r["model_name"] == name]
    assert detailed and detailed[0]["is_builtin"] is False and detailed[0]["model_specs" if "model_specs" in doc
                                                                            else "model_uri"] is not None
    assert client.get_model_registration(model_type, name) == doc
    stored = Path(os.environ["XINFERENCE_NB_HOME"]) / "model" / model_type.lower() / f"{name}.json"
    assert stored.is_file() == persist
    if persist:
        assert json.loads(stored.read_text()) == doc

    client.unregister_model(model_type, name)
    assert name not in [r["model_name"] for r in client.list_model_registrations(model_type)]
    assert not stored.exists()
    with pytest.raises(ModelNotFound):
        client.get_model_registration(model_type, name)


def test_register_accepts_dict_and_spec_object(client, tmp_path):
    doc = seed_with_paths("embedding", tmp_path)
    client.register_model("embedding", doc)
    spec = get_registry().get("embedding", doc["model_name"])
    client.unregister_model("embedding", doc["model_name"])
    client.register_model("embedding", spec)
    assert client.get_model_registration("embedding", doc["model_name"]) == doc


def test_existing_name_needs_overwrite(client, tmp_path):
    doc = seed_with_paths("embedding", tmp_path)
    client.register_model("embedding", doc, persist=True)
    changed = dict(doc, dimensions=768)
    with pytest.raises(RegistryError, match="overwrite=True"):
        client.register_model("embedding", changed, persist=True)
    assert client.get_model_registration("embedding", doc["model_name"])["dimensions"] == 1024
    client.register_model("embedding", changed, persist=True, overwrite=True)
    assert client.get_model_registration("embedding", doc["model_name"])["dimensions"] == 768


def test_builtins_are_listed_and_protected(client):
    rows = client.list_model_registrations("LLM")
    names = {r["model_name"] for r in rows if r["is_builtin"]}
    for family in ["qwen1.5-chat", "qwen2.5-instruct", "qwen3", "llama-2-chat", "llama-3.1-instruct",
                   "llama-3.2-instruct", "mistral-instruct-v0.3", "gemma-2-it", "phi-3-mini-4k-instruct",
                   "deepseek-r1-distill-qwen", "glm4-chat", "internlm2.5-chat", "Yi-1.5-chat", "tiny-llama"]:
        assert family in names, family
    assert len(names) >= 30
    qwen = client.get_model_registration("LLM", "qwen2.5-instruct")
    assert qwen["context_length"] == 32768 and "<|im_start|>" in qwen["chat_template"]
    assert qwen["stop_token_ids"] == [151643, 151644, 151645]
    r1 = client.get_model_registration("LLM", "deepseek-r1-distill-qwen")
    assert (r1["reasoning_start_tag"], r1["reasoning_end_tag"]) == ("<think>", "</think>")
    assert len(builtin_specs("embedding")) >= 10 and len(builtin_specs("rerank")) >= 5
    assert builtin_specs("embedding")["bge-large-zh-v1.5"].dimensions == 1024
    assert builtin_specs("image") and builtin_specs("audio")
    with pytest.raises(RegistryError, match="built-in"):
        client.unregister_model("LLM", "qwen2.5-instruct")


def test_listing_is_sorted_and_has_both_kinds(client, tmp_path):
    doc = seed_with_paths("rerank", tmp_path)
    client.register_model("rerank", doc)
    rows = client.list_model_registrations("rerank")
    assert [r["model_name"].lower() for r in rows] == sorted(r["model_name"].lower() for r in rows)
    assert {r["is_builtin"] for r in rows} == {True, False}


# ---------------------------------------------------------------------------- persistence
def _run(code: str, env_home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, XINFERENCE_NB_HOME=str(env_home))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_persisted_registration_is_seen_by_another_process(tmp_path, nb_home):
    doc = seed_with_paths("llm", tmp_path)
    Client().register_model("LLM", doc, persist=True)
    Client().register_model("embedding", seed_with_paths("embedding", tmp_path), persist=False)
    out = _run("""
        import json; from xinference_nb import Client
        c = Client()
        print(json.dumps([c.get_model_registration("LLM", "custom-qwen-2.5"),
                          [r["model_name"] for r in c.list_model_registrations("embedding") if not r["is_builtin"]]]))
    """, nb_home)
    assert out.returncode == 0, out.stderr
    got, session_only = json.loads(out.stdout)
    assert got == doc
    assert session_only == []  # persist=False stays in this process

    # and a registration made by the other process shows up here without restarting
    out = _run(f"""
        import json; from xinference_nb import Client
        doc = json.loads({json.dumps(json.dumps(seed_with_paths('rerank', tmp_path)))})
        Client().register_model("rerank", doc, persist=True)
    """, nb_home)
    assert out.returncode == 0, out.stderr
    assert {"model_name": "my-bge-reranker-base", "is_builtin": False} in Client().list_model_registrations("rerank")


def test_concurrent_registration_from_two_processes_loses_nothing(tmp_path, nb_home):
    n = 25
    folder = seed_with_paths("embedding", tmp_path)["model_specs"][0]["model_uri"]
    code = """
        import json, sys
        from xinference_nb import Client
        tag, n, uri = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        c = Client()
        for i in range(n):
            doc = {"version": 2, "model_name": f"emb-{tag}-{i}", "dimensions": 8, "max_tokens": 16,
                   "language": ["en"], "model_specs": [{"model_format": "pytorch", "model_uri": uri}]}
            c.register_model("embedding", json.dumps(doc), persist=True)
    """
    env = dict(os.environ, XINFERENCE_NB_HOME=str(nb_home))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), tag, str(n), folder], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    custom = {r["model_name"] for r in Client().list_model_registrations("embedding") if not r["is_builtin"]}
    assert custom == {f"emb-{t}-{i}" for t in "ab" for i in range(n)}
    assert not list((nb_home / "model" / "embedding").glob("*.tmp"))


def test_corrupt_file_is_skipped_with_a_warning_naming_it(client, tmp_path, nb_home):
    client.register_model("embedding", seed_with_paths("embedding", tmp_path), persist=True)
    bad = nb_home / "model" / "embedding" / "broken.json"
    bad.write_text('{"model_name": "broken", ')
    invalid = nb_home / "model" / "embedding" / "invalid.json"
    invalid.write_text('{"model_name": "invalid"}')
    with pytest.warns(UserWarning) as record:
        rows = client.list_model_registrations("embedding")
    messages = " ".join(str(w.message) for w in record)
    assert str(bad) in messages and str(invalid) in messages
    names = {r["model_name"] for r in rows}
    assert "my-bge-large-zh-v1.5" in names and "broken" not in names and "invalid" not in names


# ---------------------------------------------------------------------------- bad documents
def _llm(tmp_path, **changes):
    doc = seed_with_paths("llm", tmp_path)
    for key, value in changes.items():
        if key.startswith("spec_"):
            doc["model_specs"][0][key[5:]] = value
        elif value is _DROP:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


_DROP = object()


def _bad_cases(tmp_path):
    """(model_type, document, field the error must name)."""
    gguf_dir = tmp_path / "weights.gguf"
    gguf_dir.mkdir(exist_ok=True)
    a_file = tmp_path / "a-file.bin"
    a_file.write_text("x")
    emb = seed_with_paths("embedding", tmp_path)
    rer = seed_with_paths("rerank", tmp_path)
    img = seed_with_paths("image", tmp_path)
    aud = seed_with_paths("audio", tmp_path)
    flx = seed_with_paths("flexible", tmp_path)
    return [
        ("LLM", _llm(tmp_path, model_name="../x"), "model_name"),
        ("LLM", _llm(tmp_path, model_name="a/b"), "model_name"),
        ("LLM", _llm(tmp_path, model_name="has space"), "model_name"),
        ("LLM", _llm(tmp_path, model_name="-dash-first"), "model_name"),
        ("LLM", _llm(tmp_path, model_name="a..b"), "model_name"),
        ("LLM", _llm(tmp_path, model_name="q?x"), "model_name"),
        ("LLM", _llm(tmp_path, model_name=""), "model_name"),
        ("LLM", _llm(tmp_path, model_name=_DROP), "model_name"),
        ("LLM", _llm(tmp_path, model_family=_DROP), "model_family"),
        ("LLM", _llm(tmp_path, model_family="qwen2.5-instruct"), "model_family"),
        ("LLM", _llm(tmp_path, model_specs=_DROP), "model_specs"),
        ("LLM", _llm(tmp_path, model_specs=[]), "model_specs"),
        ("LLM", _llm(tmp_path, context_length="long"), "context_length"),
        ("LLM", _llm(tmp_path, context_length=-1), "context_length"),
        ("LLM", _llm(tmp_path, model_lang="en"), "model_lang"),
        ("LLM", _llm(tmp_path, model_ability=["generate", "teleport"]), "model_ability"),
        ("LLM", _llm(tmp_path, model_ability=["chat"]), "chat_template"),
        ("LLM", _llm(tmp_path, stop_token_ids=["eos"]), "stop_token_ids[0]"),
        ("LLM", _llm(tmp_path, reasoning_start_tag="<think>"), "reasoning_end_tag"),
        ("LLM", _llm(tmp_path, colour="blue"), "colour"),
        ("LLM", _llm(tmp_path, version=1), "version"),
        ("LLM", _llm(tmp_path, is_builtin=True), "is_builtin"),
        ("LLM", _llm(tmp_path, spec_model_format="safetensors"), "model_specs[0].model_format"),
        ("LLM", _llm(tmp_path, spec_model_size_in_billions="big"), "model_specs[0].model_size_in_billions"),
        ("LLM", _llm(tmp_path, spec_model_size_in_billions=-3), "model_specs[0].model_size_in_billions"),
        ("LLM", _llm(tmp_path, spec_quantization=""), "model_specs[0].quantization"),
        ("LLM", _llm(tmp_path, spec_model_uri="/does/not/exist"), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_model_uri="relative/path"), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_model_uri="https://example.com/m"), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_model_uri=None), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_model_uri=str(a_file)), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_model_format="ggufv2", spec_quantization="Q4_K_M",
                     spec_model_uri=f"file://{gguf_dir}"), "model_specs[0].model_uri"),
        ("LLM", _llm(tmp_path, spec_extra_key=1), "model_specs[0].extra_key"),
        ("LLM", "", ""),
        ("LLM", "{not json", ""),
        ("LLM", "[1, 2]", ""),
        ("LLM", "{}", ""),
        ("embedding", dict(emb, dimensions="wide"), "dimensions"),
        ("embedding", dict(emb, dimensions=0), "dimensions"),
        ("embedding", {k: v for k, v in emb.items() if k != "max_tokens"}, "max_tokens"),
        ("rerank", dict(rer, type="magic"), "type"),
        ("image", {k: v for k, v in img.items() if k != "model_family"}, "model_family"),
        ("image", dict(img, model_ability=["paint"]), "model_ability"),
        ("audio", dict(aud, model_ability=["sing-along"]), "model_ability"),
        ("audio", dict(aud, multilingual="yes please"), "multilingual"),
        ("flexible", dict(flx, launcher="not a path"), "launcher"),
        ("flexible", dict(flx, launcher_args="{oops"), "launcher_args"),
        ("flexible", dict(flx, launcher_args="[1]"), "launcher_args"),
        ("flexible", dict(flx, virtualenv={"packages": "numpy"}), "virtualenv.packages"),
        ("flexible", dict(flx, virtualenv={"pakages": ["numpy"]}), "virtualenv.pakages"),
    ]


def test_bad_document_matrix(client, tmp_path):
    cases = _bad_cases(tmp_path)
    assert len(cases) >= 30
    client.register_model("embedding", seed_with_paths("embedding", tmp_path), persist=True)
    before = _snapshot(client)
    for model_type, doc, field in cases:
        model = json.dumps(doc) if isinstance(doc, dict) else doc
        with pytest.raises(SpecError) as err:
            client.register_model(model_type, model, persist=True)
        assert field in err.value.fields, (field, str(err.value))
        issue = next(i for i in err.value.issues if i.path == field)
        assert len(issue.message) > 15  # says what to do, not only that it failed
        if field:
            assert f"{field}:" in str(err.value)
        assert _snapshot(client) == before, (field, "registry changed")


def test_builtin_name_clash_is_refused_and_changes_nothing(client, tmp_path):
    before = _snapshot(client)
    doc = seed_with_paths("embedding", tmp_path)
    doc["model_name"] = "bge-large-zh-v1.5"
    with pytest.raises(RegistryError, match="model_name: 'bge-large-zh-v1.5' is a built-in"):
        client.register_model("embedding", doc, persist=True)
    doc = _llm(tmp_path, model_name="qwen2.5-instruct")
    with pytest.raises(XinfError):
        client.register_model("LLM", doc)
    assert _snapshot(client) == before


def test_unknown_names_are_clear(client):
    with pytest.raises(ModelNotFound, match="qwen2.5-instruct"):
        client.get_model_registration("LLM", "qwen2.5-instrct")
    with pytest.raises(ModelNotFound):
        client.unregister_model("LLM", "never-registered")
    with pytest.raises(SpecError, match="model_type"):
        client.list_model_registrations("video")


def test_registrations_survive_a_failed_write(client, tmp_path, monkeypatch):
    reg = get_registry()
    doc = seed_with_paths("embedding", tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(reg.store, "write", boom)
    with pytest.raises(OSError):
        client.register_model("embedding", copy.deepcopy(doc), persist=True)
    assert "my-bge-large-zh-v1.5" not in {r["model_name"] for r in client.list_model_registrations("embedding")}
