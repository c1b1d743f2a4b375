"""parse_model: a model's own files → a ready spec, with where each field came from.

Inputs: the tiny real models of tests/conftest.py, folders of 15+ popular families built from the
catalog and corpus facts (tests/parse_families.py), GGUF headers written here, and bad inputs.
Every expected value is written literally below.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xinference_nb.errors import ParseError
from xinference_nb.parse import ParsedModel, parse_model

import parse_families as pf
from parse_families import FamilyCase



def spec0(parsed: ParsedModel) -> dict:
    return parsed.to_dict()["model_specs"][0]


# ================================================================================================
# 1. The tiny real models (conftest fixtures)
# ================================================================================================

def test_tiny_llama_folder(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir)
    spec = parsed.spec
    assert parsed.model_type == "LLM"
    assert parsed.sources["model_type"] == "detected: config.json architectures ['LlamaForCausalLM']"
    assert spec.model_name == "custom-tiny-llama"
    assert spec.model_family == "custom-tiny-llama"
    assert spec.context_length == 2048
    assert parsed.sources["context_length"] == "config.json max_position_embeddings"
    assert spec.model_ability == ["generate", "chat", "tools"]
    assert spec.model_lang == ["en"]
    assert parsed.sources["model_lang"] == "assumed"
    assert spec.stop_token_ids == [2]
    assert spec.stop == ["<|im_end|>"]
    assert parsed.sources["chat_template"] == "chat_template.jinja"
    assert spec.chat_template == (Path(tiny_llama_dir) / "chat_template.jinja").read_text()
    assert spec.reasoning_start_tag is None and spec.reasoning_end_tag is None
    entry = spec0(parsed)
    assert entry["model_format"] == "pytorch"
    assert entry["quantization"] == "none"
    assert entry["model_size_in_billions"] == "0_0002"          # 172,864 parameters
    assert parsed.facts["parameters"] == 172864
    assert parsed.sources["model_specs[0].model_size_in_billions"] == "model.safetensors header (172,864 parameters)"
    assert entry["model_uri"] == "file://" + str(tiny_llama_dir)
    assert parsed.path == Path(tiny_llama_dir)
    assert parsed.template_opens_reasoning is False
    assert parsed.special_tokens["eos_token"] == "<|im_end|>"
    assert parsed.special_tokens["bos_token"] == "<|endoftext|>"


def test_tiny_reasoning_llama_template_opens_think(tiny_reasoning_llama_dir):
    parsed = parse_model(tiny_reasoning_llama_dir)
    assert parsed.spec.model_ability == ["generate", "chat", "tools", "reasoning"]
    assert (parsed.spec.reasoning_start_tag, parsed.spec.reasoning_end_tag) == ("<think>", "</think>")
    assert parsed.template_opens_reasoning is True
    assert parsed.sources["reasoning_start_tag"] == "chat_template.jinja (its generation prompt opens <think> itself)"
    assert parsed.preview().endswith("<|im_start|>assistant\n<think>\n")


def test_tiny_gguf(tiny_gguf_file):
    parsed = parse_model(tiny_gguf_file)
    spec = parsed.spec
    assert parsed.model_type == "LLM"
    assert parsed.sources["model_type"] == "detected: a GGUF file (general.architecture 'llama')"
    assert spec.model_name == "tiny-llama-f32"
    assert spec.context_length == 2048
    assert parsed.sources["context_length"] == "GGUF llama.context_length"
    assert spec.model_ability == ["generate", "chat", "tools"]
    assert parsed.sources["chat_template"] == "GGUF tokenizer.chat_template"
    assert spec.stop_token_ids == [2]
    assert spec.stop == ["<|im_end|>"]
    assert parsed.special_tokens == {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
    entry = spec0(parsed)
    assert entry["model_format"] == "ggufv2"
    assert entry["quantization"] == "F32"
    assert entry["model_size_in_billions"] == "0_0002"
    assert entry["model_uri"] == "file://" + str(tiny_gguf_file)
    assert parsed.facts["architecture"] == "llama"


def test_tiny_reasoning_gguf(tiny_reasoning_gguf_file):
    parsed = parse_model(tiny_reasoning_gguf_file)
    assert parsed.template_opens_reasoning is True
    assert parsed.spec.reasoning_start_tag == "<think>"
    assert "reasoning" in parsed.spec.model_ability


def test_gguf_header_reader_agrees_with_gguf_package(tiny_gguf_file):
    """Our header walk and gguf.GGUFReader read the same facts from the same file."""
    import gguf

    from xinference_nb.parse.gguf import read_gguf

    info = read_gguf(tiny_gguf_file)
    reader = gguf.GGUFReader(str(tiny_gguf_file))
    field = lambda name: reader.fields[name].contents()  # noqa: E731
    assert info.architecture == field("general.architecture") == "llama"
    assert info.context_length == field("llama.context_length") == 2048
    assert info.chat_template == field("tokenizer.chat_template")
    assert info.eos_token_id == field("tokenizer.ggml.eos_token_id") == 2
    assert info.tokens[2] == reader.fields["tokenizer.ggml.tokens"].contents(2) == "<|im_end|>"
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors) == 172864
    assert info.tensor_count == len(reader.tensors) == 21


def test_minilm_embedding(minilm_dir):
    parsed = parse_model(minilm_dir)
    spec = parsed.spec
    assert parsed.model_type == "embedding"
    assert parsed.sources["model_type"] == "detected: modules.json (a sentence-transformers model)"
    assert spec.dimensions == 384
    assert parsed.sources["dimensions"] == "1_Pooling/config.json word_embedding_dimension"
    assert spec.max_tokens == 256
    assert parsed.sources["max_tokens"] == "sentence_bert_config.json max_seq_length"
    assert spec.language == ["en"]
    assert parsed.sources["language"] == "README.md front matter language"
    assert spec0(parsed)["model_format"] == "pytorch"


def test_cross_encoder_rerank(cross_encoder_dir):
    parsed = parse_model(cross_encoder_dir)
    spec = parsed.spec
    assert parsed.model_type == "rerank"
    assert parsed.sources["model_type"] == (
        "detected: config.json architectures ['BertForSequenceClassification'] with one label (a cross-encoder)")
    assert spec.type == "normal"
    assert spec.max_tokens == 512
    assert parsed.sources["max_tokens"] == "tokenizer_config.json model_max_length"
    assert spec.language == ["en"] and parsed.sources["language"] == "assumed"


def test_tiny_sd_image(tiny_sd_dir):
    parsed = parse_model(tiny_sd_dir)
    spec = parsed.spec
    assert parsed.model_type == "image"
    assert parsed.sources["model_type"] == "detected: model_index.json (a diffusers pipeline)"
    assert spec.model_family == "stable_diffusion"
    assert parsed.sources["model_family"] == (
        "model_index.json _class_name 'StableDiffusionPipeline' (a diffusers pipeline)")
    assert spec.model_ability == ["text2image", "image2image"]
    assert spec.model_uri == "file://" + str(tiny_sd_dir)
    assert parsed.facts["pipeline_class"] == "StableDiffusionPipeline"


def test_tiny_vits_audio(tiny_vits_dir):
    parsed = parse_model(tiny_vits_dir)
    spec = parsed.spec
    assert parsed.model_type == "audio"
    assert parsed.sources["model_type"] == "detected: config.json model_type 'vits'"
    assert spec.model_family == "vits"
    assert spec.model_ability == ["text2audio"]
    assert spec.language == ["en"]                            # VitsTokenizer language "eng"
    assert parsed.sources["language"] == "tokenizer_config.json language"
    assert spec.multilingual is False


def test_tiny_whisper_audio(tiny_whisper_dir):
    parsed = parse_model(tiny_whisper_dir)
    spec = parsed.spec
    assert parsed.model_type == "audio"
    assert spec.model_family == "whisper"
    assert spec.model_ability == ["audio2text"]
    assert spec.multilingual is True
    assert parsed.sources["multilingual"] == "generation_config.json is_multilingual"
    assert spec.language == ["en", "zh", "de", "es", "fr", "ja"]
    assert parsed.sources["language"] == "generation_config.json lang_to_id"


def test_parsed_specs_register(tiny_llama_dir, tiny_gguf_file, minilm_dir):
    from xinference_nb.registry import get_registry

    reg = get_registry()
    for path in (tiny_llama_dir, tiny_gguf_file, minilm_dir):
        parsed = parse_model(path)
        reg.register(parsed.model_type, parsed.to_json())
        assert reg.get(parsed.model_type, parsed.spec.model_name).model_dump() == parsed.spec.model_dump()


# ================================================================================================
# 2. Families built from the catalog and the corpus
# ================================================================================================

QWEN25_STOPS = (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], [151643, 151644, 151645])

FAMILY_CASES = [
    # (case, expected)
    (FamilyCase("qwen2.5-0.5b-hf-cache", "qwen2.5-instruct", "Qwen/Qwen2.5-0.5B-Instruct", layout="hf_cache"),
     dict(context_length=32768, size="0_5", format="pytorch", quantization="none",
          ability=["generate", "chat", "tools"], lang=["en", "zh"], stop_ids=QWEN25_STOPS[1], stop=QWEN25_STOPS[0],
          family="qwen2.5-instruct", tool_parser="qwen", model_id="Qwen/Qwen2.5-0.5B-Instruct",
          sources={"chat_template": "tokenizer_config.json chat_template",
                   "model_lang": "family default (qwen2.5-instruct)"})),
    (FamilyCase("qwen2.5-7b-yarn-int-eos", "qwen2.5-instruct", "Qwen/Qwen2.5-7B-Instruct", gen_eos="int",
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
     dict(context_length=131072, size=7, format="pytorch", quantization="none",
          ability=["generate", "chat", "tools"], lang=["en", "zh"], stop_ids=[151643], stop=["<|endoftext|>"],
          family="qwen2.5-instruct", tool_parser="qwen",
          sources={"context_length": "config.json max_position_embeddings with rope_scaling yarn factor 4 "
                                     "(original_max_position_embeddings=32768 × 4)",
                   "stop_token_ids": "generation_config.json eos_token_id 151643"})),
    (FamilyCase("qwen2.5-7b-gptq", "qwen2.5-instruct", "Qwen/Qwen2.5-7B-Instruct-GPTQ-{quantization}",
                quantization="Int4"),
     dict(context_length=32768, size=7, format="gptq", quantization="Int4",
          ability=["generate", "chat", "tools"], lang=["en", "zh"], stop_ids=QWEN25_STOPS[1], stop=QWEN25_STOPS[0],
          family="qwen2.5-instruct", tool_parser="qwen",
          sources={"model_specs[0].quantization": "config.json quantization_config.quant_method='gptq', bits=4"})),
    (FamilyCase("qwen3-8b-jinja-only", "qwen3", "Qwen/Qwen3-8B", template_file="jinja"),
     dict(context_length=40960, size=8, format="pytorch", quantization="none",
          ability=["generate", "chat", "tools", "reasoning", "hybrid"], lang=["en", "zh"],
          stop_ids=QWEN25_STOPS[1], stop=QWEN25_STOPS[0], reasoning=("<think>", "</think>"), family="qwen3",
          tool_parser="qwen",
          opens_reasoning=False, sources={"chat_template": "chat_template.jinja"})),
    (FamilyCase("llama-3.1-8b-awq", "llama-3.1-instruct", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
                quantization="Int4",
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
     dict(context_length=131072, size=8, format="awq", quantization="Int4",
          ability=["generate", "chat", "tools"], lang=["en", "de", "fr", "it", "pt", "hi", "es", "th"],
          stop_ids=[128001, 128008, 128009], stop=["<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"],
          family="llama-3.1-instruct", tool_parser="llama3",
          sources={"context_length": "config.json max_position_embeddings"})),
    (FamilyCase("llama-3-8b-corpus-no-tokenizer", "llama-3-instruct", "meta-llama/Meta-Llama-3-8B-Instruct",
                tokenizer=False, corpus="meta-llama--Meta-Llama-3-8B-Instruct"),
     dict(context_length=8192, size=8, format="pytorch", quantization="none", ability=["generate", "chat"],
          lang=["en"], stop_ids=[128001, 128009], stop=["<|end_of_text|>", "<|eot_id|>"], family="llama-3-instruct",
          sources={"chat_template": "family default (llama-3-instruct): the model's files have none",
                   "stop_token_ids": "generation_config.json eos_token_id [128001, 128009]",
                   "stop": "token texts of stop_token_ids (family default (llama-3-instruct) for [128001, 128009])"},
          warning="the model's files have no chat template: using the 'llama-3-instruct' family's")),
    (FamilyCase("llama-2-7b", "llama-2-chat", "meta-llama/Llama-2-7b-chat-hf", gen_eos="int",
                tokens={1: "<s>", 2: "</s>"}),
     dict(context_length=4096, size=7, format="pytorch", quantization="none", ability=["generate", "chat"],
          lang=["en"], stop_ids=[2], stop=["</s>"], family="llama-2-chat")),
    (FamilyCase("mistral-7b-v0.2-corpus", "mistral-instruct-v0.2", "mistralai/Mistral-7B-Instruct-v0.2",
                corpus="mistralai--Mistral-7B-Instruct-v0.2"),
     dict(context_length=32768, size=7, format="pytorch", quantization="none", ability=["generate", "chat"],
          lang=["en"], stop_ids=[2], stop=["</s>"], family="mistral-instruct-v0.2",
          sources={"model_specs[0].model_size_in_billions":
                   "name 'Mistral-7B-Instruct-v0.2' states 7B; 7.24B counted from model.safetensors.index.json "
                   "metadata.total_size=28966928384 ÷ 4 bytes (config.json torch_dtype=float32)"})),
    (FamilyCase("mistral-7b-v0.3", "mistral-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", gen_eos="int",
                tokens={1: "<s>"}),
     dict(context_length=32768, size=7, format="pytorch", quantization="none", ability=["generate", "chat", "tools"],
          lang=["en"], stop_ids=[2], stop=["</s>"], family="mistral-instruct-v0.3")),
    (FamilyCase("gemma-2-2b-corpus", "gemma-2-it", "google/gemma-2-2b-it", corpus="google--gemma-2-2b-it"),
     dict(context_length=8192, size=2, format="pytorch", quantization="none", ability=["generate", "chat"],
          lang=["en"], stop_ids=[1, 107], stop=["<eos>", "<end_of_turn>"], family="gemma-2-it")),
    (FamilyCase("gemma-3-4b-vision", "gemma-3-it", "google/gemma-3-4b-it", vision=True, nest_text_config=True),
     dict(context_length=131072, size=4, format="pytorch", quantization="none",
          ability=["generate", "chat", "vision"], lang=["en"], stop_ids=[1, 105, 106],
          stop=["<eos>", "<end_of_turn>", "<start_of_turn>"], family="gemma-3-it",
          sources={"context_length": "config.json text_config.max_position_embeddings"})),
    (FamilyCase("qwen2-vl-2b", "qwen2-vl-instruct", "Qwen/Qwen2-VL-2B-Instruct", vision=True,
                template_file="chat_template.json", rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
     dict(context_length=32768, size=2, format="pytorch", quantization="none",
          ability=["generate", "chat", "vision"], lang=["en", "zh"], stop_ids=[151645, 151643],
          stop=["<|im_end|>", "<|endoftext|>"], family="qwen2-vl-instruct",
          sources={"chat_template": "chat_template.json"})),
    (FamilyCase("phi-3-mini-4k", "phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct",
                corpus="microsoft--Phi-3-mini-4k-instruct"),
     dict(context_length=4096, size=4, format="pytorch", quantization="none", ability=["generate", "chat"],
          lang=["en"], stop_ids=[32000, 32001, 32007], stop=["<|endoftext|>", "<|assistant|>", "<|end|>"],
          family="phi-3-mini-4k-instruct",
          sources={"model_specs[0].model_size_in_billions":
                   "family default (phi-3-mini-4k-instruct): the family's size nearest to the 3.82B counted from "
                   "model.safetensors.index.json metadata.total_size=7642159104 ÷ 2 bytes "
                   "(config.json torch_dtype=bfloat16)"})),
    (FamilyCase("deepseek-r1-distill-1.5b", "deepseek-r1-distill-qwen", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                gen_eos="int"),
     dict(context_length=131072, size="1_5", format="pytorch", quantization="none",
          ability=["generate", "chat", "reasoning"], lang=["en", "zh"], stop_ids=[151643],
          stop=["<｜end▁of▁sentence｜>"], reasoning=("<think>", "</think>"), opens_reasoning=True,
          family="deepseek-r1-distill-qwen")),
    (FamilyCase("glm-4-9b-seq-length", "glm4-chat", "zai-org/glm-4-9b-chat-hf", context_key="seq_length"),
     dict(context_length=131072, size=9, format="pytorch", quantization="none", ability=["generate", "chat", "tools"],
          lang=["en", "zh"], stop_ids=[151329, 151336, 151338], stop=["<|endoftext|>", "<|user|>", "<|observation|>"],
          family="glm4-chat", tool_parser="glm4", sources={"context_length": "config.json seq_length"})),
]


@pytest.mark.parametrize("case,expected", FAMILY_CASES, ids=[c.key for c, _ in FAMILY_CASES])
def test_family_folder(tmp_path, case, expected):
    built = pf.build_family(case, tmp_path)
    parsed = parse_model(built.path)
    spec = parsed.spec
    entry = spec0(parsed)
    assert parsed.model_type == "LLM"
    assert spec.context_length == expected["context_length"]
    assert entry["model_size_in_billions"] == expected["size"]
    assert entry["model_format"] == expected["format"]
    assert entry["quantization"] == expected["quantization"]
    assert spec.model_ability == expected["ability"]
    assert spec.model_lang == expected["lang"]
    assert spec.stop_token_ids == expected["stop_ids"]
    assert spec.stop == expected["stop"]
    assert (spec.reasoning_start_tag, spec.reasoning_end_tag) == expected.get("reasoning", (None, None))
    assert parsed.template_opens_reasoning is expected.get("opens_reasoning", False)
    assert parsed.family == expected["family"]
    assert spec.tool_parser == expected.get("tool_parser")
    # the family is built in, so the spec's family is the model's own name (a registrable custom family)
    assert spec.model_family == spec.model_name
    assert spec.chat_template
    if "model_id" in expected:
        assert entry["model_id"] == expected["model_id"]
    for key, source in expected.get("sources", {}).items():
        assert parsed.sources[key] == source, key
    if "warning" in expected:
        assert expected["warning"] in parsed.warnings
    # what we produce is a valid, registrable custom document
    from xinference_nb.registry import get_registry

    get_registry().register("LLM", parsed.to_json(), check_paths=True)


def test_family_hf_cache_layout_resolves_snapshot(tmp_path):
    built = pf.build_family(FamilyCase("c", "qwen2.5-instruct", "Qwen/Qwen2.5-0.5B-Instruct", layout="hf_cache"),
                            tmp_path)
    assert built.path.name == "models--Qwen--Qwen2.5-0.5B-Instruct"
    parsed = parse_model(built.path)
    assert parsed.path == built.folder
    assert parsed.spec.model_name == "Qwen2.5-0.5B-Instruct"
    entry = spec0(parsed)
    assert entry["model_uri"] == "file://" + str(built.folder)
    assert entry["model_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert entry["model_revision"] == built.revision
    assert parsed.sources["model_path"] == ("Hugging Face cache folder models--Qwen--Qwen2.5-0.5B-Instruct → "
                                            f"snapshots/{built.revision}")
    # the snapshot itself, and a file:// URI of it, give the same spec
    again = parse_model("file://" + str(built.folder))
    assert again.to_dict() == parsed.to_dict()


def test_hub_id_from_local_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    built = pf.build_family(FamilyCase("c", "qwen2.5-instruct", "Qwen/Qwen2.5-0.5B-Instruct", layout="hf_cache"),
                            tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    parsed = parse_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert parsed.path == built.folder.resolve()
    assert spec0(parsed)["model_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert spec0(parsed)["model_revision"] == built.revision
    assert parsed.sources["model_specs[0].model_id"] == "hub id argument"
    with pytest.raises(ParseError, match="not in the local Hugging Face cache|neither a local path"):
        parse_model("Qwen/Qwen2.5-72B-Instruct")


def test_corpus_qwen3_index_only(tmp_path):
    folder = pf.copy_corpus("Qwen--Qwen3-1.7B", tmp_path / "Qwen3-1.7B")
    parsed = parse_model(folder)
    spec = parsed.spec
    assert spec.context_length == 40960
    assert spec0(parsed)["model_size_in_billions"] == "1_7"
    assert parsed.facts["parameters"] == 1720574976          # 3441149952 bytes ÷ 2 (bfloat16)
    assert spec.stop_token_ids == [151645]                    # config.json eos; no generation_config.json
    assert spec.stop == ["<|im_end|>"]
    assert spec.model_ability == ["generate", "chat", "tools", "reasoning", "hybrid"]
    assert parsed.family == "qwen3"
    assert parsed.sources["family"] == "inferred: folder name 'Qwen3-1.7B' is a model id of built-in 'qwen3'"
    assert any("only the index" in w for w in parsed.warnings)


def test_corpus_tinyllama_config_only(tmp_path):
    folder = pf.copy_corpus("TinyLlama--TinyLlama-1.1B-Chat-v1.0", tmp_path / "TinyLlama-1.1B-Chat-v1.0")
    parsed = parse_model(folder)
    spec = parsed.spec
    assert spec.model_ability == ["generate"]
    assert spec.chat_template is None
    assert "no chat template found: chat ability not set (add chat_template to chat with this model)" in parsed.warnings
    assert spec.context_length == 2048
    assert spec0(parsed)["model_size_in_billions"] == "1_1"
    assert parsed.sources["model_specs[0].model_size_in_billions"] == (
        "name 'TinyLlama-1.1B-Chat-v1.0' states 1_1B; 1.1B counted from an estimate from the architecture in "
        "config.json (no weight files)")
    assert spec.stop_token_ids == [2]
    assert spec.stop is None
    assert ("no token text for stop id(s) [2] (no tokenizer file names them): the stop strings miss them"
            in parsed.warnings)


def test_corpus_embedding_and_reranker(tmp_path):
    emb = parse_model(pf.copy_corpus("BAAI--bge-large-zh-v1.5", tmp_path / "bge-large-zh-v1.5"))
    assert emb.model_type == "embedding"
    assert emb.sources["model_type"] == "detected: config_sentence_transformers.json (a sentence-transformers model)"
    assert (emb.spec.dimensions, emb.spec.max_tokens, emb.spec.language) == (1024, 512, ["zh"])
    assert emb.sources["dimensions"] == "1_Pooling/config.json word_embedding_dimension"
    assert emb.sources["language"] == "family default (bge-large-zh-v1.5)"

    rr = parse_model(pf.copy_corpus("BAAI--bge-reranker-base", tmp_path / "bge-reranker-base"))
    assert rr.model_type == "rerank"
    assert rr.sources["model_type"] == "detected: config_sentence_transformers.json model_type 'CrossEncoder'"
    assert (rr.spec.type, rr.spec.max_tokens, rr.spec.language) == ("normal", 512, ["en", "zh"])
    assert rr.sources["max_tokens"] == "config.json max_position_embeddings 514 − 2 (RoBERTa-style position offset)"


def test_sentence_transformers_dense_and_old_layout(tmp_path):
    dense = parse_model(pf.build_sentence_transformer(
        tmp_path, "acme/labse-like", hidden=768, max_seq_length=256, pooling=("cls",), dense_out=512,
        language=["en", "de", "fr"]))
    assert (dense.spec.dimensions, dense.spec.max_tokens) == (512, 256)
    assert dense.sources["dimensions"] == "2_Dense/config.json out_features"
    assert dense.spec.language == ["en", "de", "fr"]

    concat = parse_model(pf.build_sentence_transformer(tmp_path, "acme/concat-pool", hidden=384,
                                                       max_seq_length=128, pooling=("cls", "mean")))
    assert concat.spec.dimensions == 768
    assert concat.sources["dimensions"] == "1_Pooling/config.json word_embedding_dimension 384 × 2 pooling modes"

    old = parse_model(pf.build_sentence_transformer(tmp_path, "acme/old-layout", hidden=312, max_seq_length=64,
                                                    nested=True))
    assert (old.spec.dimensions, old.spec.max_tokens) == (312, 64)
    assert old.sources["max_tokens"] == "0_Transformer/sentence_bert_config.json max_seq_length"


def test_reranker_family_inferred(tmp_path):
    parsed = parse_model(pf.build_cross_encoder_config(tmp_path, "BAAI/bge-reranker-v2-m3"))
    assert parsed.model_type == "rerank"
    assert parsed.spec.max_tokens == 8192
    assert parsed.spec.language == ["en", "zh", "multilingual"]
    assert parsed.family == "bge-reranker-v2-m3"


# ================================================================================================
# 3. GGUF headers of big models (sparse files: the data is a hole)
# ================================================================================================

def test_gguf_quantized_family_inferred(tmp_path):
    import gguf

    path = pf.write_sparse_gguf(
        tmp_path / "tinyllama-1.1b-chat-v0.3.Q4_K_M.gguf", "llama",
        {"context_length": 2048, "embedding_length": 2048, "block_count": 22, "head_count": 32, "head_count_kv": 4,
         "bos_token_id": 1, "eos_token_id": 2},
        pf.llama_tensor_shapes(hidden=2048, layers=22, vocab=32003, intermediate=5632, heads=32, kv_heads=4),
        gguf.LlamaFileType.MOSTLY_Q4_K_M, tokens=["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(32000)])
    assert os.stat(path).st_blocks * 512 < 10 * 1024 * 1024 < os.stat(path).st_size   # sparse
    parsed = parse_model(path)
    entry = spec0(parsed)
    assert entry["quantization"] == "Q4_K_M"
    assert parsed.sources["model_specs[0].quantization"] == "GGUF general.file_type=15"
    assert entry["model_size_in_billions"] == "1_1"
    assert parsed.facts["parameters"] == 1100060672
    assert parsed.family == "tiny-llama"
    assert parsed.spec.model_ability == ["generate"]
    assert parsed.spec.stop == ["</s>"]
    assert parsed.spec.model_lang == ["en"]


def test_gguf_with_family_template(tmp_path):
    """A GGUF without a template takes the family's; its size comes from general.size_label."""
    import gguf

    path = pf.write_sparse_gguf(
        tmp_path / "my-finetune.gguf", "qwen2",
        {"context_length": 32768, "size_label": "0.5B", "bos_token_id": 0, "eos_token_id": 2},
        pf.llama_tensor_shapes(hidden=896, layers=24, vocab=151936, intermediate=4864, heads=14, kv_heads=2),
        gguf.LlamaFileType.MOSTLY_Q8_0, qtype="Q8_0", tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    parsed = parse_model(path, model_family="qwen2.5-instruct")
    assert parsed.spec.model_family == "my-finetune"
    assert parsed.family == "qwen2.5-instruct"
    assert parsed.spec.chat_template == pf.catalog("llm")["qwen2.5-instruct"]["chat_template"]
    assert parsed.sources["chat_template"] == "family default (qwen2.5-instruct): the model's files have none"
    assert parsed.spec.model_ability == ["generate", "chat", "tools"]
    assert spec0(parsed)["model_size_in_billions"] == "0_5"
    assert spec0(parsed)["quantization"] == "Q8_0"
    assert parsed.spec.stop_token_ids == [2] and parsed.spec.stop == ["<|im_end|>"]


def test_folder_with_one_gguf(tiny_gguf_file, tmp_path):
    folder = tmp_path / "only-gguf"
    folder.mkdir()
    shutil.copyfile(tiny_gguf_file, folder / "model-q.gguf")
    parsed = parse_model(folder)
    assert spec0(parsed)["model_uri"] == "file://" + str(folder / "model-q.gguf")
    assert spec0(parsed)["model_format"] == "ggufv2"


# ================================================================================================
# 4. Families passed by the caller
# ================================================================================================

def test_builtin_family_fills_gaps_own_files_win(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir, model_family="qwen2.5-instruct")
    spec = parsed.spec
    assert parsed.family == "qwen2.5-instruct"
    assert spec.model_family == "custom-tiny-llama"          # a custom family may not be a built-in name
    assert parsed.sources["model_family"].startswith("model_name (a custom LLM's family may not be a built-in name")
    assert spec.model_lang == ["en", "zh"]
    assert parsed.sources["model_lang"] == "family default (qwen2.5-instruct)"
    assert parsed.sources["chat_template"] == "chat_template.jinja"     # the model's own template wins
    assert spec.stop_token_ids == [2]                                   # and its own stops
    assert parsed.facts["family_chat_template_differs"] is True


def test_builtin_family_template_is_the_fallback(tmp_path):
    folder = pf.copy_corpus("TinyLlama--TinyLlama-1.1B-Chat-v1.0", tmp_path / "my-llama")
    parsed = parse_model(folder, model_family="llama-2-chat")
    assert parsed.spec.chat_template == pf.catalog("llm")["llama-2-chat"]["chat_template"]
    assert parsed.sources["chat_template"] == "family default (llama-2-chat): the model's files have none"
    assert parsed.spec.model_ability == ["generate", "chat"]
    assert "the model's files have no chat template: using the 'llama-2-chat' family's" in parsed.warnings
    assert parsed.spec.model_family == "my-llama"


def test_new_family_name_is_kept(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir, model_family="acme-chat", model_name="acme-tiny")
    assert parsed.spec.model_family == "acme-chat"
    assert parsed.spec.model_name == "acme-tiny"
    assert parsed.family is None
    assert parsed.sources["family"] == "model_family argument: a new family (no fallback facts)"
    assert parsed.spec.model_lang == ["en"] and parsed.sources["model_lang"] == "assumed"


def test_registered_custom_family_gives_facts(tiny_llama_dir, tiny_gguf_file):
    from xinference_nb.registry import get_registry

    first = parse_model(tiny_llama_dir, model_family="acme-chat", model_name="acme-one")
    doc = first.to_dict()
    doc["model_lang"] = ["en", "fr"]
    get_registry().register("LLM", doc)
    second = parse_model(tiny_gguf_file, model_family="acme-chat", model_name="acme-two")
    assert second.family == "acme-chat"
    assert second.spec.model_family == "acme-chat"
    assert second.spec.model_lang == ["en", "fr"]
    assert second.sources["model_lang"] == "family default (acme-chat: registered 'acme-one')"


def test_family_that_does_not_exist(tiny_llama_dir):
    with pytest.raises(ParseError, match=r"'qwen2\.5-instrcut' is not a built-in LLM family .* did you mean "
                                         r"'qwen2\.5-instruct'\?"):
        parse_model(tiny_llama_dir, model_family="qwen2.5-instrcut")
    with pytest.raises(ParseError, match="model_family"):
        parse_model(tiny_llama_dir, model_family="bad family!")
    with pytest.raises(ParseError, match="not a built-in embedding model"):
        parse_model(tiny_llama_dir, model_type="embedding", model_family="no-such-embedder")
    # a deliberate extension of a built-in name is a new family, with a warning
    parsed = parse_model(tiny_llama_dir, model_family="my-qwen2.5-instruct")
    assert parsed.spec.model_family == "my-qwen2.5-instruct"
    assert any("pass that to use its template" in w for w in parsed.warnings)


def test_builtin_family_case_insensitive(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir, model_family="Qwen2.5-Instruct")
    assert parsed.family == "qwen2.5-instruct"


def test_derived_name_that_is_builtin_gets_prefixed(tiny_llama_dir, tmp_path):
    folder = tmp_path / "qwen2.5-instruct"
    shutil.copytree(tiny_llama_dir, folder)
    parsed = parse_model(folder)
    assert parsed.spec.model_name == "custom-qwen2.5-instruct"
    assert any("is a built-in LLM model's name" in w for w in parsed.warnings)


def test_name_sanitised(tiny_llama_dir, tmp_path):
    folder = tmp_path / "My Model (v2)+final"
    shutil.copytree(tiny_llama_dir, folder)
    parsed = parse_model(folder)
    assert parsed.spec.model_name == "My-Model-v2-final"
    assert parsed.sources["model_name"] == "folder name 'My Model (v2)+final' (made a valid name: 'My-Model-v2-final')"


# ================================================================================================
# 5. Bad inputs: a clear ParseError naming the file
# ================================================================================================

def test_missing_path(tmp_path):
    with pytest.raises(ParseError, match=str(tmp_path / "nope") + ": no such file or folder"):
        parse_model(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("hi")
    with pytest.raises(ParseError, match=str(tmp_path / "empty") + ": no config.json"):
        parse_model(tmp_path / "empty")


def test_broken_config_json(tiny_llama_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    with pytest.raises(ParseError, match=str(folder / "config.json") + ": is not valid JSON"):
        parse_model(folder)


def test_truncated_gguf(tiny_gguf_file, tmp_path):
    data = Path(tiny_gguf_file).read_bytes()
    cut_header = tmp_path / "cut-header.gguf"
    cut_header.write_bytes(data[:200])
    with pytest.raises(ParseError, match=str(cut_header) + ": truncated GGUF header"):
        parse_model(cut_header)
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ParseError, match=str(cut_data) + ": truncated GGUF file"):
        parse_model(cut_data)
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ParseError, match=str(tiny) + ": truncated GGUF file"):
        parse_model(tiny)
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ParseError, match=str(not_gguf) + ": is not a GGUF file"):
        parse_model(not_gguf)


def _safetensors(header: dict, data_bytes: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\x00" * data_bytes


def test_bad_safetensors_headers(tiny_llama_dir, tmp_path):
    folder = tmp_path / "st"
    shutil.copytree(tiny_llama_dir, folder)
    weights = folder / "model.safetensors"

    weights.write_bytes(struct.pack("<Q", 5000) + b"{}")
    with pytest.raises(ParseError, match=str(weights) + ": truncated safetensors header"):
        parse_model(folder)
    weights.write_bytes(struct.pack("<Q", 8) + b"not json")
    with pytest.raises(ParseError, match=str(weights) + ": the safetensors header is not valid JSON"):
        parse_model(folder)
    weights.write_bytes(_safetensors({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, 100))
    with pytest.raises(ParseError, match=str(weights) + ": truncated safetensors file"):
        parse_model(folder)
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(ParseError, match=str(weights) + ": truncated safetensors file"):
        parse_model(folder)


def test_other_bad_inputs(tmp_path, cross_encoder_dir):
    with pytest.raises(ParseError, match="not a model type"):
        parse_model(tmp_path, model_type="video")
    with pytest.raises(ParseError, match="http://x/y: only local paths"):
        parse_model("http://x/y")
    stray = tmp_path / "weights.bin"
    stray.write_bytes(b"\x00" * 10)
    with pytest.raises(ParseError, match="is a file but not a GGUF model"):
        parse_model(stray)
    folder = tmp_path / "classifier"
    shutil.copytree(cross_encoder_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ParseError, match="a sequence classifier with 3 labels"):
        parse_model(folder)
    empty_cache = tmp_path / "models--acme--thing"
    empty_cache.mkdir()
    with pytest.raises(ParseError, match="a Hugging Face cache folder without a snapshot"):
        parse_model(empty_cache)


def test_incomplete_download_warns(tiny_llama_dir, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {"total_size": 691456},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    parsed = parse_model(folder)
    assert any("1 are missing (model-00002-of-00002.safetensors)" in w for w in parsed.warnings)
    assert parsed.facts["parameters"] == 172864          # 691456 bytes ÷ 4 (float32)


# ================================================================================================
# 6. Safetensors headers: only the header is read
# ================================================================================================

def test_parameters_from_headers_of_sharded_and_quantized_weights(tmp_path, tiny_llama_dir):
    folder = tmp_path / "shards"
    shutil.copytree(tiny_llama_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    # GPTQ 4-bit: qweight int32 [in/8, out] holds 8 weights per value; scales/qzeros/g_idx are bookkeeping
    shard1 = {"model.embed_tokens.weight": {"dtype": "F16", "shape": [1000, 64], "data_offsets": [0, 128000]},
              "layers.0.q_proj.qweight": {"dtype": "I32", "shape": [8, 64], "data_offsets": [128000, 130048]},
              "layers.0.q_proj.scales": {"dtype": "F16", "shape": [1, 64], "data_offsets": [130048, 130176]},
              "layers.0.q_proj.qzeros": {"dtype": "I32", "shape": [1, 8], "data_offsets": [130176, 130208]},
              "layers.0.q_proj.g_idx": {"dtype": "I32", "shape": [64], "data_offsets": [130208, 130464]}}
    shard2 = {"lm_head.weight": {"dtype": "F16", "shape": [1000, 64], "data_offsets": [0, 128000]},
              "__metadata__": {"format": "pt"}}
    (folder / "model-00001-of-00002.safetensors").write_bytes(_safetensors(shard1, 130464))
    (folder / "model-00002-of-00002.safetensors").write_bytes(_safetensors(shard2, 128000))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard1}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (folder / "config.json").write_text(json.dumps(cfg))
    parsed = parse_model(folder)
    assert parsed.facts["parameters"] == 64000 + 64 * 64 + 64000       # embed + unpacked q_proj + lm_head
    assert parsed.sources["model_specs[0].model_size_in_billions"] == (
        "2 safetensors headers (model-00001-of-00002.safetensors, …) (132,096 parameters)")
    assert spec0(parsed)["model_format"] == "gptq"


def test_big_sparse_safetensors_parse_fast_path(tmp_path, tiny_llama_dir):
    """A 4 GB shard whose data is a hole: parsing reads its header only (no timing asserted here;
    bench/parse_speed.py measures it)."""
    folder = tmp_path / "big-model"
    shutil.copytree(tiny_llama_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    n = 2 * 1024 ** 3 // 2                                          # 1 Gi bf16 values per tensor
    header = {f"t{i}": {"dtype": "BF16", "shape": [n], "data_offsets": [i * 2 * n, (i + 1) * 2 * n]} for i in range(2)}
    raw = json.dumps(header).encode()
    path = folder / "model.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
    os.truncate(path, 8 + len(raw) + 4 * n)
    parsed = parse_model(folder)
    assert parsed.facts["parameters"] == 2 * n
    assert spec0(parsed)["model_size_in_billions"] == "2_1"            # 2.147B counted, no size in the name


# ================================================================================================
# 7. Locating inputs
# ================================================================================================

def test_file_uri_and_config_path(tiny_llama_dir):
    by_uri = parse_model("file://" + str(tiny_llama_dir))
    assert by_uri.sources["model_path"] == "file:// URI"
    by_config = parse_model(Path(tiny_llama_dir) / "config.json")
    assert by_config.path == Path(tiny_llama_dir)
    assert by_uri.to_dict() == by_config.to_dict() == parse_model(str(tiny_llama_dir)).to_dict()


def test_relative_path(tiny_llama_dir, monkeypatch):
    monkeypatch.chdir(Path(tiny_llama_dir).parent)
    parsed = parse_model(Path(tiny_llama_dir).name)
    assert parsed.path == Path(tiny_llama_dir)


# ================================================================================================
# 8. Preview, table, repr, JSON
# ================================================================================================

TINY_PREVIEW = (
    "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist "
    "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city, e.g. '
    'Paris"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n"
    "<|im_start|>user\nAnd what is the weather like there today?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_preview_with_tools(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir)
    assert parsed.preview() == TINY_PREVIEW


def test_preview_custom_messages(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir)
    text = parsed.preview([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n"


def test_preview_template_without_system_role(tmp_path):
    parsed = parse_model(pf.copy_corpus("google--gemma-2-2b-it", tmp_path / "gemma-2-2b-it"))
    assert parsed.preview() == (
        "<bos><start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nThe capital of France is Paris.<end_of_turn>\n"
        "<start_of_turn>user\nAnd what is the weather like there today?<end_of_turn>\n<start_of_turn>model\n")
    assert any(w.startswith("the chat template refuses a system message") for w in parsed.warnings)
    with pytest.raises(ParseError, match="failed to render"):
        parsed.preview([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])


def test_preview_without_template(minilm_dir):
    with pytest.raises(ParseError, match="has no chat template to preview"):
        parse_model(minilm_dir).preview()


def test_preview_matches_transformers(tiny_llama_dir):
    from transformers import AutoTokenizer

    from xinference_nb.parse import SAMPLE_MESSAGES, SAMPLE_TOOLS

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    want = tok.apply_chat_template(SAMPLE_MESSAGES, tools=SAMPLE_TOOLS, tokenize=False, add_generation_prompt=True)
    assert parse_model(tiny_llama_dir).preview([dict(m) for m in SAMPLE_MESSAGES], tools=SAMPLE_TOOLS) == want


def test_table_repr_and_json(tiny_llama_dir):
    parsed = parse_model(tiny_llama_dir)
    rows = {field: (value, source) for field, value, source in parsed.table()}
    assert rows["model_type"] == ("LLM", "detected: config.json architectures ['LlamaForCausalLM']")
    assert rows["context_length"] == (2048, "config.json max_position_embeddings")
    assert rows["model_lang"] == (["en"], "assumed")
    assert rows["model_specs[0].model_format"] == ("pytorch", "no quantization_config in config.json")
    assert rows["model_specs[0].model_hub"] == ("huggingface", "default")
    assert "virtualenv" not in rows
    text = repr(parsed)
    assert text.startswith(f"ParsedModel(LLM 'custom-tiny-llama' from {tiny_llama_dir})")
    assert "context_length" in text and "← config.json max_position_embeddings" in text
    doc = json.loads(parsed.to_json())
    assert doc["model_family"] == "custom-tiny-llama" and doc["version"] == 2 and doc["is_builtin"] is False


def test_lazy_public_names():
    import xinference_nb

    assert xinference_nb.parse_model is parse_model
    assert xinference_nb.ParsedModel is ParsedModel


def test_import_is_light():
    code = ("import sys, xinference_nb.parse; "
            "print(sorted(m for m in ('torch', 'transformers', 'gguf', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ================================================================================================
# 9. Sizes in Xinference's form
# ================================================================================================

@pytest.mark.parametrize("name,sizes", [
    ("Qwen2.5-0.5B-Instruct", [0.5]), ("internlm2_5-1_8b-chat", [1.8]), ("Meta-Llama-3-8B-Instruct", [8.0]),
    ("Qwen3-30B-A3B", [30.0]), ("SmolLM2-135M-Instruct", [0.135]), ("Mixtral-8x7B-Instruct-v0.1", []),
    ("Phi-3-mini-4k-instruct", []),
])
def test_sizes_in_name(name, sizes):
    from xinference_nb.parse import sizes_in_name

    assert sizes_in_name(name) == sizes


@pytest.mark.parametrize("billions,form", [
    (0.494, "0_5"), (1.54, "1_5"), (7.62, "7_6"), (14.77, 15), (0.000172864, "0_0002"), (2.0, 2),
])
def test_size_rounding(billions, form):
    from xinference_nb.parse import round_billions, size_form

    assert size_form(round_billions(billions)) == form


# ================================================================================================
# 10. Detection corners
# ================================================================================================

def test_chatglm_style_config(tmp_path):
    """Old GLM-4 exports: architectures ChatGLMModel, context in seq_length, no *ForCausalLM."""
    folder = tmp_path / "glm-4-9b-chat"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["ChatGLMModel"], "model_type": "chatglm", "hidden_size": 4096, "num_layers": 40,
        "ffn_hidden_size": 13696, "num_attention_heads": 32, "multi_query_group_num": 2, "padded_vocab_size": 151552,
        "seq_length": 131072, "eos_token_id": [151329, 151336, 151338], "torch_dtype": "bfloat16"}))
    parsed = parse_model(folder)
    assert parsed.model_type == "LLM"
    assert parsed.sources["model_type"] == "detected: config.json architectures ['ChatGLMModel'] (a decoder's sizes)"
    assert parsed.spec.context_length == 131072
    assert parsed.sources["context_length"] == "config.json seq_length"
    assert spec0(parsed)["model_size_in_billions"] == 9
    assert parsed.spec.stop_token_ids == [151329, 151336, 151338]
    assert parsed.family == "glm4-chat"                  # the GGUF repo legraphista/glm-4-9b-chat-GGUF
    assert parsed.spec.chat_template                     # the family's, since the folder has none
    assert any("whose architecture is ['GlmForCausalLM']" in w for w in parsed.warnings)


def test_image_processor_means_vision(tiny_llama_dir, tmp_path):
    folder = tmp_path / "tiny-vlm"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "image_mean": [0.48, 0.46, 0.41]}))
    parsed = parse_model(folder)
    assert parsed.spec.model_ability == ["generate", "chat", "vision", "tools"]
    assert "vision: preprocessor_config.json (an image processor)" in parsed.sources["model_ability"]


def test_gguf_encoder_is_embedding(tmp_path):
    import gguf

    path = pf.write_sparse_gguf(
        tmp_path / "bge-small-en-v1.5-f16.gguf", "bert",
        {"context_length": 512, "embedding_length": 384, "block_count": 12, "pooling_type": gguf.PoolingType.CLS},
        [("token_embd.weight", (384, 30522))], gguf.LlamaFileType.MOSTLY_F16, qtype="F16")
    parsed = parse_model(path)
    assert parsed.model_type == "embedding"
    assert (parsed.spec.dimensions, parsed.spec.max_tokens) == (384, 512)
    assert spec0(parsed)["model_format"] == "ggufv2"
    assert spec0(parsed)["quantization"] == "F16"
    assert parsed.spec.language == ["en"]
    assert parsed.sources["language"] == "family default (bge-small-en-v1.5)"


def test_image_and_audio_families_by_builtin_name(tiny_sd_dir, tiny_whisper_dir):
    sd = parse_model(tiny_sd_dir, model_family="stable-diffusion-inpainting")
    assert sd.spec.model_family == "stable_diffusion"
    assert sd.spec.model_ability == ["inpainting"]
    assert sd.sources["model_ability"] == "family default (stable-diffusion-inpainting)"
    named = parse_model(tiny_sd_dir, model_family="my_diffusion")
    assert named.spec.model_family == "my_diffusion"
    assert named.spec.model_ability == ["text2image", "image2image"]

    wh = parse_model(tiny_whisper_dir, model_family="whisper-tiny")
    assert wh.spec.model_family == "whisper"
    assert wh.spec.model_ability == ["audio2text"]
    assert wh.spec.language == ["en", "zh", "de", "es", "fr", "ja"]   # the files' languages win


@pytest.mark.parametrize("name,typo_of", [
    ("qwen2.5-instrcut", "qwen2.5-instruct"), ("qwen25-instruct", "qwen2.5-instruct"),
    ("lama-3-instruct", "llama-3-instruct"), ("Qwen2.5-Instrcut", "qwen2.5-instruct"),
    ("llama-3.4-instruct", None),       # another version number: a new family
    ("qwen2.5-instruct-ft", None), ("my-qwen2.5-instruct", None),  # a built-in name plus an affix
    ("acme-chat", None),
])
def test_family_typo_rule(name, typo_of):
    from xinference_nb.parse import _typo_of
    from xinference_nb.registry import builtin_specs

    assert _typo_of(name, list(builtin_specs("LLM"))) == typo_of


def test_quantization_formats(tiny_llama_dir, tmp_path):
    def with_config(name: str, **extra) -> ParsedModel:
        folder = tmp_path / name
        shutil.copytree(tiny_llama_dir, folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(extra)
        (folder / "config.json").write_text(json.dumps(cfg))
        return parse_model(folder)

    mlx = with_config("mlx", quantization={"group_size": 64, "bits": 4},
                      quantization_config={"group_size": 64, "bits": 4})
    assert (spec0(mlx)["model_format"], spec0(mlx)["quantization"]) == ("mlx", "4bit")
    fp8 = with_config("fp8", quantization_config={"quant_method": "fp8", "activation_scheme": "dynamic",
                                                  "weight_block_size": [128, 128]})
    assert (spec0(fp8)["model_format"], spec0(fp8)["quantization"]) == ("fp8", "FP8")
    bnb = with_config("bnb", quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True,
                                                  "bnb_4bit_quant_type": "nf4"})
    assert (spec0(bnb)["model_format"], spec0(bnb)["quantization"]) == ("bnb", "4-bit")
    awq8 = with_config("awq8", quantization_config={"quant_method": "awq", "bits": 8, "group_size": 128})
    assert (spec0(awq8)["model_format"], spec0(awq8)["quantization"]) == ("awq", "Int8")
    odd = with_config("hqq", quantization_config={"quant_method": "hqq"})
    assert spec0(odd)["model_format"] == "pytorch"
    assert any("'hqq'" in w for w in odd.warnings)
