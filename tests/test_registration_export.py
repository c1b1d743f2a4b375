"""Exporting every custom registration to one file and importing it again (issue 24, item 6): in the
kernel, over our REST server through Client(url), and from one to the other; all or nothing (a bad
entry, a taken name or a register refused part-way leaves the registrations as they were)."""
from __future__ import annotations

import copy
import json

import pytest

from xinference_nb import Client
from xinference_nb.client.registrations import EXPORT_FORMAT, MAX_IMPORT_BYTES
from xinference_nb.errors import SpecError, XinfError
from xinference_nb.registry import Registry

from seeds import seed_with_paths


def _custom(client, model_type):
    return sorted(r["model_name"] for r in client.list_model_registrations(model_type) if not r.get("is_builtin"))


@pytest.fixture
def docs(tmp_path):
    llm = seed_with_paths("llm", tmp_path / "models")
    emb = seed_with_paths("embedding", tmp_path / "models")
    return {"LLM": llm, "embedding": emb}


@pytest.fixture
def client(docs):
    c = Client()
    for model_type, doc in docs.items():
        c.register_model(model_type, json.dumps(doc), persist=True)
    yield c
    for model_type in ("LLM", "embedding"):
        for name in _custom(c, model_type):
            c.unregister_model(model_type, name)


def test_export_then_import_gives_back_the_same_documents(client, docs, tmp_path, nb_home):
    before = {t: client.get_model_registration(t, d["model_name"]) for t, d in docs.items()}
    path = tmp_path / "out" / "registrations.json"
    exported = client.export_registrations(str(path))
    assert exported["format"] == EXPORT_FORMAT and exported["version"] == 1
    assert [(m["model_type"], m["model"]["model_name"]) for m in exported["models"]] == [
        ("LLM", docs["LLM"]["model_name"]), ("embedding", docs["embedding"]["model_name"])]
    assert json.loads(path.read_text()) == exported                    # built-in models are not in it
    for t, d in docs.items():
        client.unregister_model(t, d["model_name"])
    assert _custom(client, "LLM") == _custom(client, "embedding") == []
    assert client.import_registrations(str(path)) == [docs["LLM"]["model_name"], docs["embedding"]["model_name"]]
    assert {t: client.get_model_registration(t, d["model_name"]) for t, d in docs.items()} == before
    # persisted: a registry reading the same folder from scratch has them
    assert docs["LLM"]["model_name"] in [r["model_name"] for r in Registry().list("LLM")]
    # one type only; JSON text and a dict are sources too
    only = client.export_registrations(model_types=["embedding"])
    assert [m["model_type"] for m in only["models"]] == ["embedding"]
    client.unregister_model("embedding", docs["embedding"]["model_name"])
    assert client.import_registrations(json.dumps(only)) == [docs["embedding"]["model_name"]]


def test_a_taken_name_is_refused_unless_overwrite_and_a_builtin_name_always(client, docs):
    exported = client.export_registrations()
    with pytest.raises(SpecError, match="already registered; pass overwrite=True") as err:
        client.import_registrations(exported)
    assert len(err.value.issues) == 2
    changed = copy.deepcopy(exported)
    changed["models"][0]["model"]["model_description"] = "edited"
    assert client.import_registrations(changed, overwrite=True)
    assert client.get_model_registration("LLM", docs["LLM"]["model_name"])["model_description"] == "edited"
    builtin = copy.deepcopy(exported)
    builtin["models"] = [builtin["models"][0]]
    builtin["models"][0]["model"]["model_name"] = "qwen2.5-instruct"
    with pytest.raises(SpecError):
        client.import_registrations(builtin, overwrite=True)
    assert client.get_model_registration("LLM", "qwen2.5-instruct")["is_builtin"] is True


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["models"][1]["model"].update(dimensions="many"), "models[1].dimensions"),
    (lambda d: d["models"][0]["model"].pop("model_name"), "models[0].model_name"),
    (lambda d: d["models"].append(copy.deepcopy(d["models"][0])), "models[2].model_name"),
    (lambda d: d["models"][0].update(model_type="video"), "models[0].model_type"),
    (lambda d: d["models"][0].update(extra=1), "models[0]"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(format="something"), "format"),
    (lambda d: d.update(models={}), "models"),
    (lambda d: d.update(comment="x"), "comment"),
])
def test_a_bad_export_registers_nothing(client, docs, mutate, field):
    exported = client.export_registrations()
    for t, d in docs.items():
        client.unregister_model(t, d["model_name"])
    mutate(exported)
    with pytest.raises(SpecError) as err:
        client.import_registrations(exported)
    assert field in [i.path for i in err.value.issues], err.value
    assert _custom(client, "LLM") == _custom(client, "embedding") == []


@pytest.mark.parametrize("source, says", [
    ("{not json", "is not JSON"), ("/no/such/file.json", "cannot read"), (42, "must be a path, JSON text or a dict")])
def test_unreadable_sources_are_spec_errors(source, says):
    with pytest.raises(SpecError, match=says):
        Client().import_registrations(source)


def test_flags_must_be_booleans_and_a_huge_file_is_not_read(tmp_path):
    with pytest.raises(SpecError, match="overwrite: must be true or false"):
        Client().import_registrations({}, overwrite="yes")
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_IMPORT_BYTES + 1)
    with pytest.raises(SpecError, match="larger than"):
        Client().import_registrations(str(big))


def test_over_rest_a_register_refused_part_way_is_undone(client, docs, tmp_path):
    """Into our server through Client(url): the server refuses the second model's folder (outside its
    allowed roots) after the first was registered; the first is taken back, and an overwritten one
    gets its earlier document back."""
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    inside = tmp_path / "models"
    exported = client.export_registrations()
    outside = seed_with_paths("embedding", tmp_path / "elsewhere")
    outside["model_name"] = "outside-emb"
    exported["models"][1]["model"] = outside
    exported["models"][0]["model"] = dict(exported["models"][0]["model"], model_description="from the file")
    original = client.get_model_registration("LLM", docs["LLM"]["model_name"])
    server = start_in_thread(create_app(Client(), allowed_roots=[str(inside)]), port=0)
    try:
        remote = Client(server.url)
        for overwrite in (True, False):
            if not overwrite:
                remote.unregister_model("LLM", docs["LLM"]["model_name"])
            with pytest.raises(XinfError) as err:
                remote.import_registrations(exported, overwrite=overwrite)
            assert "allowed" in str(err.value) and "elsewhere" in str(err.value), err.value
            assert "outside-emb" not in _custom(remote, "embedding")
            if overwrite:
                assert remote.get_model_registration("LLM", docs["LLM"]["model_name"]) == original
            else:
                assert docs["LLM"]["model_name"] not in _custom(remote, "LLM")
        # the kernel's export imports on the server unchanged
        exported["models"].pop()
        assert remote.import_registrations(exported) == [docs["LLM"]["model_name"]]
        assert remote.export_registrations()["models"][0]["model"]["model_description"] == "from the file"
    finally:
        server.stop()


def test_the_export_and_import_commands_of_the_magics_and_the_cli(client, docs, tmp_path, capsys):
    """``%xinf`` / ``xinf`` export-registrations and import-registrations: the file written, the
    registrations back, what each says, and a second import refused (exit 1) with nothing changed."""
    from IPython.core.interactiveshell import InteractiveShell

    from xinference_nb.commands.cli import main
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    names = [docs["LLM"]["model_name"], docs["embedding"]["model_name"]]
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xinference_nb")
    path = tmp_path / "all.json"
    said = ip.run_line_magic("xinf", f"export-registrations {path}")
    assert str(said) == f"exported 2 custom registrations to {path}"
    assert [m["model"]["model_name"] for m in json.loads(path.read_text())["models"]] == names
    for t, d in docs.items():
        client.unregister_model(t, d["model_name"])
    said = ip.run_line_magic("xinf", f"import-registrations {path} --no-persist")
    assert str(said) == f"imported 2 registrations: {', '.join(names)} (for this session)"  # magic's wording
    assert _custom(client, "LLM") == [names[0]] and _custom(client, "embedding") == [names[1]]
    assert names[0] not in [r["model_name"] for r in Registry().list("LLM")]     # --no-persist: not on disk

    capsys.readouterr()       # what the shell printed above (load_ext's "already loaded" in a long session)
    server = start_in_thread(create_app(Client(), allowed_roots=[str(tmp_path)]), port=0)
    try:
        one = tmp_path / "embedding.json"
        assert main(["export-registrations", str(one), "-t", "embedding", "-e", server.url]) == 0
        assert capsys.readouterr().out.strip() == f"Exported 1 custom registration to {one}"
        client.unregister_model("embedding", names[1])
        assert main(["import-registrations", str(one), "-e", server.url]) == 0
        assert capsys.readouterr().out.strip() == f"Imported 1 registration: {names[1]} (persisted)"
        assert main(["import-registrations", str(one), "-e", server.url]) == 1
        assert "already registered" in capsys.readouterr().err and _custom(client, "embedding") == [names[1]]
    finally:
        server.stop()
