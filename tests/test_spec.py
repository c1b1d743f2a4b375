"""Version-2 documents: round trips, Xinference's forms and rules, field-named errors."""
from __future__ import annotations

import json

import pytest

from seeds import SEED_TYPES, seed
from xinference_nb.errors import SpecError
from xinference_nb.spec import (
    MODEL_TYPES,
    float_to_size,
    load_spec,
    local_path_of,
    normalize_model_type,
    path_issues,
    size_to_float,
)


@pytest.mark.parametrize("kind", sorted(SEED_TYPES))
def test_seed_template_round_trips_unchanged(kind):
    doc = seed(kind)
    spec = load_spec(SEED_TYPES[kind], json.dumps(doc))
    assert json.loads(spec.model_dump_json()) == doc
    # and again from the dict and from the spec object itself
    assert json.loads(load_spec(SEED_TYPES[kind], doc).model_dump_json()) == doc
    assert json.loads(load_spec(SEED_TYPES[kind], spec).model_dump_json()) == doc


@pytest.mark.parametrize("given,expected", [("llm", "LLM"), ("LLM", "LLM"), ("Llm", "LLM"), ("EMBEDDING", "embedding"),
                                            ("Rerank", "rerank"), ("image", "image"), (" audio ", "audio"),
                                            ("Flexible", "flexible")])
def test_model_type_is_case_insensitive(given, expected):
    assert normalize_model_type(given) == expected


def test_unknown_model_type_lists_the_valid_ones():
    with pytest.raises(SpecError) as err:
        normalize_model_type("video")
    assert err.value.fields == ["model_type"]
    for name in MODEL_TYPES:
        assert name in str(err.value)


@pytest.mark.parametrize("size", [7, 0.5, "0_5", "1_5", 72])
def test_size_keeps_the_form_written(size):
    doc = seed("llm")
    doc["model_specs"][0]["model_size_in_billions"] = size
    out = json.loads(load_spec("LLM", doc).model_dump_json())
    assert out["model_specs"][0]["model_size_in_billions"] == size
    assert type(out["model_specs"][0]["model_size_in_billions"]) is type(size)


@pytest.mark.parametrize("size", ["7\n", "0_5\n", "0_0", "abc", -1, 0, True])
def test_bad_sizes_name_the_field(size):
    doc = seed("llm")
    doc["model_specs"][0]["model_size_in_billions"] = size
    with pytest.raises(SpecError) as err:
        load_spec("LLM", doc)
    assert err.value.fields == ["model_specs[0].model_size_in_billions"]


def test_size_conversions():
    assert size_to_float("0_5") == 0.5
    assert size_to_float("1_5") == 1.5
    assert size_to_float(7) == 7.0
    assert float_to_size(0.5) == "0_5"
    assert float_to_size(7.0) == 7
    assert float_to_size(1.54) == "1_54"


def test_defaults_follow_xinference():
    spec = load_spec("llm", {"model_name": "m", "model_family": "my-fam", "model_ability": ["generate"],
                             "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                                              "model_uri": "/tmp/x"}]})
    doc = spec.model_dump(mode="json")
    assert doc["context_length"] == 2048
    assert doc["model_specs"][0]["quantization"] == "none"
    assert doc["model_specs"][0]["model_hub"] == "huggingface"
    assert doc["virtualenv"]["inherit_pip_config"] is True
    assert doc["is_builtin"] is False
    # keys Xinference's template does not have are not invented on output
    assert "tool_parser" not in doc and "model_file_name_template" not in doc["model_specs"][0]


def test_optional_catalog_keys_are_kept_when_given():
    doc = seed("llm")
    doc["tool_parser"] = "qwen"
    doc["model_specs"][0]["model_file_name_template"] = "m-{quantization}.gguf"
    out = load_spec("LLM", doc).model_dump(mode="json")
    assert out["tool_parser"] == "qwen"
    assert out["model_specs"][0]["model_file_name_template"] == "m-{quantization}.gguf"


@pytest.mark.parametrize("name", ["custom-qwen-2.5", "my-bge-large-zh-v1.5", "a", "9x", "A_b-c.d"])
def test_good_names(name):
    doc = seed("embedding")
    doc["model_name"] = name
    assert load_spec("embedding", doc).model_name == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "_x", "a/b", "a\\b", "a b", "a+b", "a?b", "a%b", "a#b", "a&b",
                                  "a=b", "..", "a..b", "../x", "x" * 201, "ünï",
                                  # the whole string must match: "$" alone lets a trailing newline through
                                  "abc\n", "abc\r\n", "a\nb", "abc\x00", "\nabc"])
def test_bad_names_name_the_field(name):
    doc = seed("embedding")
    doc["model_name"] = name
    with pytest.raises(SpecError) as err:
        load_spec("embedding", doc)
    assert err.value.fields == ["model_name"]


def test_launcher_args_string_or_object_kept_as_written():
    doc = seed("flexible")
    doc["launcher_args"] = '{"task": "text-classification"}'
    spec = load_spec("flexible", doc)
    assert spec.launcher_kwargs == {"task": "text-classification"}
    assert json.loads(spec.model_dump_json())["launcher_args"] == '{"task": "text-classification"}'
    doc["launcher_args"] = {"task": "fill-mask"}
    spec = load_spec("flexible", doc)
    assert spec.launcher_kwargs == {"task": "fill-mask"}
    assert json.loads(spec.model_dump_json())["launcher_args"] == {"task": "fill-mask"}


def test_flexible_device_is_accepted_and_checked():
    doc = seed("flexible")
    doc["device"] = "cuda:1"
    assert load_spec("flexible", doc).device == "cuda:1"
    doc["device"] = "gpu please"
    with pytest.raises(SpecError) as err:
        load_spec("flexible", doc)
    assert err.value.fields == ["device"]


def test_every_bad_field_is_reported_at_once():
    doc = seed("llm")
    doc["model_name"] = "bad name"
    doc["context_length"] = "long"
    doc["model_specs"][0]["model_format"] = "safetensors"
    doc["colour"] = "blue"
    with pytest.raises(SpecError) as err:
        load_spec("LLM", doc)
    assert set(err.value.fields) == {"model_name", "context_length", "model_specs[0].model_format", "colour"}


def test_file_uri_plain_path_and_hf_cache_folder(tmp_path):
    cache = tmp_path / "models--Qwen--Qwen2.5-0.5B"
    (cache / "refs").mkdir(parents=True)
    old = cache / "snapshots" / "aaa"
    new = cache / "snapshots" / "bbb"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    (cache / "refs" / "main").write_text("aaa")
    assert local_path_of(f"file://{cache}") == old  # refs/main wins over the newest snapshot
    (cache / "refs" / "main").unlink()
    import os
    os.utime(old, (1, 1))
    assert local_path_of(str(cache)) == new  # else the newest snapshot
    assert local_path_of(f"file://{tmp_path}") == tmp_path
    assert local_path_of(str(tmp_path)) == tmp_path


def test_relative_and_remote_uris_are_refused():
    doc = seed("llm")
    doc["model_specs"][0]["model_uri"] = "models/qwen"
    with pytest.raises(SpecError, match="relative path") as err:
        load_spec("LLM", doc)
    assert err.value.fields == ["model_specs[0].model_uri"]
    doc["model_specs"][0]["model_uri"] = "s3://bucket/model"
    with pytest.raises(SpecError, match="s3://"):
        load_spec("LLM", doc)


def test_path_issues_check_kind(tmp_path):
    gguf_dir = tmp_path / "dir.gguf"
    gguf_dir.mkdir()
    doc = seed("llm")
    doc["model_specs"][0].update(model_format="ggufv2", quantization="Q4_K_M", model_uri=str(gguf_dir))
    issues = path_issues(load_spec("LLM", doc))
    assert [i.path for i in issues] == ["model_specs[0].model_uri"]
    assert "is a directory" in issues[0].message
    # a folder is fine for ggufv2 when a file name template picks the file
    doc["model_specs"][0]["model_file_name_template"] = "m-{quantization}.gguf"
    assert path_issues(load_spec("LLM", doc)) == []
