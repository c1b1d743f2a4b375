"""The metadata layer: one reader for each fact of a model's files, and one answer where copies of it
used to disagree (GGUF read two ways, two safetensors header readers, the chat-template list case,
"0_0002" vs "0_00017", three GGUF-quantization patterns, two weight-suffix lists, "free_memory"
meaning a probe and an action, the split-file pattern)."""
from __future__ import annotations

import json
import shutil

import pytest

from xinference_nb import memory
from xinference_nb.errors import LaunchError, ParseError
from xinference_nb.metadata import gguf as gguf_meta
from xinference_nb.metadata.gguf import read_gguf, split_siblings
from xinference_nb.metadata.hf import chat_template
from xinference_nb.metadata.quant import gguf_name_quantization, strip_gguf_quantization
from xinference_nb.metadata.safetensors import read_safetensors_header
from xinference_nb.metadata.sizes import round_billions, size_form
from xinference_nb.metadata.weights import WEIGHT_SUFFIXES, safetensors_stats, weight_files_bytes
from xinference_nb.parse import parse_model


# ------------------------------------------------------------------------------------------------
# GGUF: one reader, read once per launch
# ------------------------------------------------------------------------------------------------

def test_gguf_launch_path_and_parse_read_through_one_walker(tiny_gguf_file, tmp_path, monkeypatch):
    """The memory estimate, the llama.cpp engine's pre-load read and parse all use metadata.read_gguf
    (never gguf.GGUFReader), and a launch walks the header once."""
    import gguf

    from xinference_nb.engines import llama_cpp

    file = shutil.copy(tiny_gguf_file, tmp_path / "copy-f32.gguf")

    def refuse(*_a, **_k):
        raise AssertionError("GGUFReader used: the package has one GGUF reader, metadata.read_gguf")

    monkeypatch.setattr(gguf, "GGUFReader", refuse)
    walks = []
    real = gguf_meta._read_file
    monkeypatch.setattr(gguf_meta, "_read_file", lambda path, size: walks.append(path) or real(path, size))

    estimate = memory.estimate_model(file, "LLM", "ggufv2", None, 512)
    info = llama_cpp.read_launch_metadata(file)
    assert memory.estimate_gguf(file, 512).total_bytes == estimate.total_bytes
    assert len(walks) == 1                                 # estimate, engine, re-estimate: one walk
    assert info is read_gguf(file)
    head_dim = info.embedding_length // info.head_count
    assert estimate.kv_cache_bytes == 2 * info.block_count * info.head_count_kv * head_dim * 512 * 2
    assert (info.chat_template, info.add_bos_token, info.eos_token_id) == (
        memory.gguf_metadata(file)["tokenizer.chat_template"], False, 2)
    assert memory.gguf_metadata(file, {".context_length"}) == {"llama.context_length": 2048}
    parsed = parse_model(file)
    assert parsed.spec.context_length == info.context_length and len(walks) == 1


def test_gguf_header_agrees_with_gguf_package_on_launch_fields(tiny_gguf_file):
    import gguf

    gguf_meta.clear_cache()
    info = read_gguf(tiny_gguf_file)
    reader = gguf.GGUFReader(str(tiny_gguf_file))
    field = lambda name: reader.fields[name].contents()  # noqa: E731
    assert info.block_count == field("llama.block_count")
    assert info.head_count == field("llama.attention.head_count")
    assert info.head_count_kv == field("llama.attention.head_count_kv")
    assert info.embedding_length == field("llama.embedding_length")
    assert info.add_bos_token is field("tokenizer.ggml.add_bos_token") is False
    assert info.file_type_name == "F32"


def test_truncated_gguf_is_one_error_everywhere(tiny_gguf_file, tmp_path):
    from xinference_nb.engines import llama_cpp

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf_file.read_bytes()[:2000])
    with pytest.raises(ParseError, match="truncated GGUF"):
        read_gguf(cut)
    with pytest.raises(ParseError, match="truncated GGUF"):
        parse_model(cut)
    with pytest.raises(LaunchError, match="truncated GGUF.*complete .gguf file"):
        llama_cpp.read_launch_metadata(cut)
    est = memory.estimate_gguf(cut, 512)
    assert est.kv_cache_bytes == 0 and "KV cache not counted" in est.notes[0]
    assert est.weights_bytes == 2000


def test_split_gguf_names_are_one_pattern(tmp_path):
    parts = [tmp_path / f"model-q4_k_m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for p in parts[:2]:
        p.write_bytes(b"GGUF")
    assert split_siblings(parts[0]) == parts
    assert memory.gguf_files(parts[0]) == parts[:2]          # the parts that exist
    assert memory.gguf_files(tmp_path / "single.gguf") == [tmp_path / "single.gguf"]
    assert gguf_meta.is_first_part(parts[0].name) and not gguf_meta.is_first_part(parts[1].name)
    assert gguf_name_quantization(parts[1].name) == "q4_k_m"


# ------------------------------------------------------------------------------------------------
# Quantization names in GGUF file names: one pattern (manager, parse's name and family lookup)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,quant", [
    ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "q4_k_m"), ("Qwen3-8B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("model-IQ4_XS.gguf", "IQ4_XS"), ("tiny-llama-f32.gguf", "f32"), ("llama-q4_0-instruct.gguf", "q4_0"),
    ("phi-3-fp16.gguf", "fp16"), ("model.gguf", None), ("qwen2.5-7b-instruct.gguf", None),
])
def test_gguf_quantization_in_file_names(name, quant):
    assert gguf_name_quantization(name) == quant


def test_strip_gguf_quantization_for_family_lookup():
    assert strip_gguf_quantization("qwen2.5-7b-instruct-q4_k_m") == "qwen2.5-7b-instruct"
    assert strip_gguf_quantization("Qwen3-8B-UD-Q4_K_XL") == "Qwen3-8B"
    assert strip_gguf_quantization("qwen2.5-7b-instruct") == "qwen2.5-7b-instruct"


def test_launch_takes_the_quantization_a_gguf_name_states(tiny_gguf_file, tmp_path):
    """A GGUF file whose quantization no spec entry names: the manager reads it from the file name
    with the same pattern parse uses ("UD-Q4_K_XL", not the "Q4_K" the manager's own regex took)."""
    pytest.importorskip("llama_cpp")
    from xinference_nb import Client
    from xinference_nb.manager import ModelManager

    file = shutil.copy(tiny_gguf_file, tmp_path / "tiny-UD-Q4_K_XL.gguf")
    Client().register_model("LLM", {
        "version": 2, "model_name": "named-quant", "model_family": "named-quant", "context_length": 512,
        "model_lang": ["en"], "model_ability": ["generate"],
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_0002", "quantization": "Q8_0",
                         "model_uri": str(tmp_path), "model_file_name_template": "tiny-{quantization}.gguf"}]})
    manager = ModelManager()
    try:
        uid = manager.launch_model("named-quant", model_engine="llama.cpp", model_path=str(file), n_gpu=None,
                                   show_progress=False)
        assert manager.describe_model(uid)["quantization"] == "UD-Q4_K_XL"
    finally:
        manager.terminate_all()


# ------------------------------------------------------------------------------------------------
# safetensors headers: one reader, one contract
# ------------------------------------------------------------------------------------------------

def test_one_safetensors_header_reader(tiny_llama_dir, tmp_path):
    assert memory.read_safetensors_header is read_safetensors_header
    header = read_safetensors_header(tiny_llama_dir / "model.safetensors")
    assert dict(header.items()) == header.tensors and "__metadata__" not in header
    params, stored = safetensors_stats(tiny_llama_dir)
    assert params == 172864 and stored == header.data_bytes
    assert params == parse_model(tiny_llama_dir).facts["parameters"]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    for read in (read_safetensors_header, memory.read_safetensors_header):
        with pytest.raises(ParseError, match="truncated safetensors file"):
            read(broken / "model.safetensors")
    with pytest.raises(ParseError, match="truncated safetensors file"):
        parse_model(broken)
    assert safetensors_stats(broken) is None              # estimates never fail on it
    assert memory.estimate_hf_llm(broken).source == "weight file sizes"


# ------------------------------------------------------------------------------------------------
# The model's own chat template: one lookup for parse and the runtime
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("templates,expected", [
    ([{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}], "DEFAULT"),
    ([{"name": "rag", "template": None}, {"name": "tool_use", "template": "TOOLS"}], "TOOLS"),
    ([{"name": "default", "template": " "}, {"name": "tool_use", "template": "TOOLS"}], "TOOLS"),
    ([{"name": "rag", "template": None}], None),
])
def test_chat_template_list_case_is_one_answer(tiny_llama_dir, tmp_path, templates, expected):
    from xinference_nb.chat import read_own_chat_template

    folder = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = templates
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert read_own_chat_template(folder) == expected
    found = chat_template(folder)
    assert (found[0] if found else None) == expected
    parsed = parse_model(folder)
    assert parsed.spec.chat_template == expected
    if expected:
        assert parsed.sources["chat_template"].startswith("tokenizer_config.json chat_template (")


def test_runtime_passes_over_an_unreadable_template_file_parse_names_it(tmp_path):
    from xinference_nb.chat import read_own_chat_template

    (tmp_path / "chat_template.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "FROM_CONFIG"}))
    assert read_own_chat_template(tmp_path) == "FROM_CONFIG"
    with pytest.raises(ParseError, match="chat_template.json: is not valid JSON"):
        chat_template(tmp_path)


# ------------------------------------------------------------------------------------------------
# Sizes: Xinference's form keeps the number's digits
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("billions,form", [
    (0.00017, "0_00017"), (0.5, "0_5"), (1.54, "1_54"), (7.0, 7), (46.7, "46_7"), (2779.93, "2779_93"),
    (1e-07, "0_0000001"), (0.1 + 0.2, "0_3"),
])
def test_one_size_form(billions, form):
    from xinference_nb.spec import float_to_size, size_to_float

    assert float_to_size(billions) == size_form(billions) == form
    assert abs(size_to_float(form) - billions) < 1e-12


def test_size_form_refuses_non_sizes():
    from xinference_nb.spec import float_to_size

    for bad in (0, -1.5, float("nan"), True):
        with pytest.raises(ValueError, match="positive number of billions"):
            float_to_size(bad)
    assert size_form(round_billions(0.000172864)) == "0_0002"   # rounding is round_billions' job


# ------------------------------------------------------------------------------------------------
# Weight files and free memory
# ------------------------------------------------------------------------------------------------

def test_widget_and_estimate_count_the_same_weight_files(tmp_path):
    pytest.importorskip("ipywidgets")
    from xinference_nb.widgets.launch import files_size

    for i, suffix in enumerate(WEIGHT_SUFFIXES):
        (tmp_path / f"w{i}{suffix}").write_bytes(b"x" * (i + 1))
    (tmp_path / "README.md").write_text("not weights")
    total = sum(range(1, len(WEIGHT_SUFFIXES) + 1))
    assert files_size(str(tmp_path)) == weight_files_bytes(tmp_path) == memory.estimate_files(tmp_path).weights_bytes \
        == total
    assert files_size(f"file://{tmp_path}") == total
    assert files_size(str(tmp_path / "nothing-here")) is None


def test_free_memory_is_the_probe_release_memory_the_action():
    from xinference_nb.engines import flexible

    free, where = memory.free_memory()
    assert free > 0 and where == "RAM"
    assert not hasattr(flexible, "free_memory")
    assert flexible.release_memory is memory.release_memory
    assert memory.release_memory() is None
