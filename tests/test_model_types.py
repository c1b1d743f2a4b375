"""The one model-type table (xinference_nb.model_types): every part of the package that lists the
six types reads it, so the lists cannot disagree."""
from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

from xinference_nb.errors import ParseError, SpecError
from xinference_nb.model_types import (MODEL_TYPE_TABLE, find_model_type, model_type, spec_types,
                                       type_names)

XINFERENCE_TYPES = ["LLM", "embedding", "rerank", "image", "audio", "flexible"]


def test_the_six_types_in_xinference_spelling():
    assert type_names() == XINFERENCE_TYPES
    for name in XINFERENCE_TYPES:
        for spelling in (name, name.upper(), name.lower(), f"  {name.title()} "):
            assert find_model_type(spelling).name == name
    assert find_model_type("video") is None and find_model_type(None) is None
    with pytest.raises(SpecError, match="'video' is not a model type; use one of LLM, embedding, rerank"):
        model_type("video")


def test_spec_reads_the_table():
    from xinference_nb.spec import MODEL_TYPES, model_type_of, normalize_model_type

    assert list(MODEL_TYPES) == type_names()
    for row in MODEL_TYPE_TABLE:
        cls = row.spec_class()
        assert MODEL_TYPES[row.name] is cls
        assert normalize_model_type(row.name.upper()) == row.name
        # has_model_specs says what the document class says
        assert row.has_model_specs == ("model_specs" in cls.model_fields), row.name
    assert spec_types() == ("LLM", "embedding", "rerank")
    with pytest.raises(SpecError, match="use one of LLM, embedding, rerank, image, audio, flexible"):
        normalize_model_type("images")
    minimal = {"version": 2, "model_name": "f", "model_uri": "/tmp", "launcher": "a.b"}
    from xinference_nb.spec import load_spec

    assert model_type_of(load_spec("FLEXIBLE", minimal)) == "flexible"


def test_registry_catalogs_and_session_tables_follow_the_table():
    from xinference_nb.registry import get_registry
    from xinference_nb.registry.registry import builtin_specs

    reg = get_registry()
    assert list(reg._session) == type_names()
    for row in MODEL_TYPE_TABLE:
        if row.catalog is None:
            assert builtin_specs(row.name) == {}
            continue
        assert resources.files("xinference_nb.registry").joinpath("builtin", row.catalog).is_file()
        specs = builtin_specs(row.name)
        assert specs and all(type(s) is row.spec_class() for s in specs.values()), row.name


def test_manager_and_engines_follow_the_table():
    from xinference_nb.engines import ENGINES, engines_for
    from xinference_nb.manager import SPEC_TYPES

    assert SPEC_TYPES == spec_types()
    assert {e.model_type for e in ENGINES} == set(type_names())   # every engine serves a known type, each type has one
    for row in MODEL_TYPE_TABLE:
        assert row.default_engine == engines_for(row.name)[0].name
    assert model_type("LLM").default_engine == "transformers"
    assert model_type("embedding").default_engine == "sentence_transformers"


def test_handles_follow_the_table():
    from xinference_nb.client.handles import FlexibleHandle, new_handle
    from xinference_nb.manager import ModelManager
    from xinference_nb.client.remote import RemoteFlexibleHandle, RemoteModelHandle

    manager = ModelManager()
    for row in MODEL_TYPE_TABLE:
        local = new_handle(manager, "uid", row.name)
        assert type(local) is row.handle_class() and local.model_type == row.name
        assert issubclass(row.remote_handle_class(), RemoteModelHandle)
        assert row.remote_handle_class().model_type == row.name
    assert type(new_handle(manager, "uid", "video")) is FlexibleHandle   # a type the table does not know
    assert RemoteFlexibleHandle.model_type == "flexible"


def test_parse_follows_the_table(tiny_gguf_file, tmp_path):
    from xinference_nb.parse import parse_model

    with pytest.raises(ParseError, match="flexible models have no files to parse"):
        parse_model(tmp_path, model_type="flexible")
    gguf_types = [r.name for r in MODEL_TYPE_TABLE if r.parses_gguf]
    assert gguf_types == ["LLM", "embedding"]
    with pytest.raises(ParseError, match=r"cannot be parsed as a rerank model \(LLM or embedding only\)"):
        parse_model(tiny_gguf_file, model_type="rerank")
    for row in MODEL_TYPE_TABLE:
        assert (row.parser() is None) == (row.name == "flexible")


def test_launch_form_types_and_fields():
    pytest.importorskip("ipywidgets")
    from xinference_nb.client import Client
    from xinference_nb.widgets import LaunchForm
    from xinference_nb.widgets import register as register_widget

    assert register_widget.TYPES == ["auto", *type_names()]
    form = LaunchForm(client=Client(), model_type="image")
    assert list(form.model_type.options) == type_names()
    hidden = {name for name in ("model_format", "size", "quantization")
              if getattr(form, name).layout.display == "none"}
    assert hidden == {"model_format", "size", "quantization"}   # image documents have no model_specs
    form.model_type.value = "LLM"
    assert all(getattr(form, name).layout.display is None for name in ("model_format", "size", "quantization"))


def test_the_table_is_light():
    code = ("import sys, xinference_nb.model_types, xinference_nb.protocols\n"
            "print(' '.join(m for m in ('torch', 'transformers', 'fastapi', 'numpy', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
