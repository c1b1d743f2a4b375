"""Parse depth: a folder with config files but no weights gets its size estimated from the
architecture in config.json (dense, MoE, latent attention, encoders), and a GGUF without tensors (a
vocabulary-only file) parses with its size estimated from the header's hyperparameters.

The known parameter counts are the models' published sizes (the number in the model name or the
model card's total), written literally below with where they come from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xinference_nb.errors import ParseError
from xinference_nb.metadata.estimate import estimate_parameters, gguf_config
from xinference_nb.metadata.gguf import read_gguf
from xinference_nb.metadata.safetensors import count_parameters, read_safetensors_header
from xinference_nb.parse import parse_model

import parse_families as pf


# corpus folder → (published parameters in billions, where that number is stated)
CORPUS_KNOWN = {
    "TinyLlama--TinyLlama-1.1B-Chat-v1.0": (1.1, "model name: 1.1B"),
    "google--gemma-2-2b-it": (2.61, "model card: 2.61B parameters (name: 2b)"),
    "meta-llama--Meta-Llama-3-8B-Instruct": (8.03, "model card: 8.03B parameters (name: 8B)"),
    "mistralai--Mistral-7B-Instruct-v0.2": (7.24, "model card: 7.24B parameters (name: 7B)"),
    "Qwen--Qwen3-1.7B": (1.7, "model name: 1.7B (card: 1.7B, 1.4B non-embedding)"),
    "BAAI--bge-large-zh-v1.5": (0.326, "model card: 326M parameters"),
    "BAAI--bge-reranker-base": (0.278, "model card: 278M parameters (XLM-RoBERTa base)"),
}
# no config.json in the corpus (only generation_config.json): nothing to estimate from
CORPUS_WITHOUT_CONFIG = ("microsoft--Phi-3-mini-4k-instruct",)

# MoE and latent-attention configs (their architecture keys, as in each model's config.json), with the
# total parameters their model cards state
MOE_CONFIGS = {
    "Mixtral-8x7B-v0.1": (46.7, "model card / Mistral AI: 46.7B total parameters", {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
        "vocab_size": 32000, "tie_word_embeddings": False, "hidden_act": "silu"}),
    "Qwen3-30B-A3B": (30.5, "model card: 30.5B total, 3.3B activated", {
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "vocab_size": 151936, "tie_word_embeddings": False, "hidden_act": "silu"}),
    "Qwen1.5-MoE-A2.7B": (14.3, "model card: 14.3B total, 2.7B activated", {
        "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
        "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
        "vocab_size": 151936, "tie_word_embeddings": False, "hidden_act": "silu"}),
    "DeepSeek-V2-Lite": (15.7, "model card: 15.7B total, 2.4B activated", {
        "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
        "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16, "n_routed_experts": 64,
        "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_experts_per_tok": 6,
        "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "vocab_size": 102400, "tie_word_embeddings": False, "hidden_act": "silu"}),
    "DeepSeek-V3": (671, "model card: 671B main-model parameters (685B with the MTP module)", {
        "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
        "n_shared_experts": 1, "first_k_dense_replace": 3, "moe_layer_freq": 1, "num_experts_per_tok": 8,
        "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "num_nextn_predict_layers": 1, "vocab_size": 129280, "tie_word_embeddings": False,
        "hidden_act": "silu"}),
}


def _within(estimate: int, known_billions: float, tolerance: float) -> bool:
    return abs(estimate / 1e9 - known_billions) <= tolerance * known_billions


@pytest.mark.parametrize("name", sorted(CORPUS_KNOWN))
def test_corpus_config_estimate_is_near_the_published_count(name):
    known, where = CORPUS_KNOWN[name]
    config = json.loads((pf.CORPUS_DIR / name / "config.json").read_text())
    estimate = estimate_parameters(config)
    assert estimate is not None
    assert _within(estimate, known, 0.10), f"{name}: {estimate / 1e9:.3f}B estimated, {known}B known ({where})"


@pytest.mark.parametrize("name", sorted(MOE_CONFIGS))
def test_moe_config_estimate_is_near_the_published_total(name):
    known, where, config = MOE_CONFIGS[name]
    estimate = estimate_parameters(config)
    assert estimate is not None
    assert _within(estimate, known, 0.10), f"{name}: {estimate / 1e9:.3f}B estimated, {known}B known ({where})"


def test_moe_experts_are_counted_not_one_dense_mlp():
    """Dropping the expert keys turns Mixtral into Mistral-7B: the experts are what the estimate counts."""
    config = dict(MOE_CONFIGS["Mixtral-8x7B-v0.1"][2])
    dense = {k: v for k, v in config.items() if k not in ("num_local_experts", "num_experts_per_tok")}
    assert _within(estimate_parameters(dense), 7.24, 0.02)
    # DeepSeek's first dense layers use intermediate_size, the rest experts: more dense layers → fewer params
    v3 = dict(MOE_CONFIGS["DeepSeek-V3"][2])
    assert estimate_parameters({**v3, "first_k_dense_replace": 10}) < estimate_parameters(v3)


def test_config_without_sizes_estimates_nothing():
    assert estimate_parameters({"model_type": "llama", "hidden_size": 64}) is None
    assert estimate_parameters({"hidden_size": True, "num_hidden_layers": 2, "vocab_size": 10}) is None


def test_config_only_folder_parses_with_an_estimated_size_and_a_warning(tmp_path):
    """A download with config files but no weights yet: the size comes from the architecture, and the
    warning says it was estimated (a folder name without a size, so the estimate decides)."""
    folder = pf.copy_corpus("mistralai--Mistral-7B-Instruct-v0.2", tmp_path / "my-finetune")
    config = json.loads((folder / "config.json").read_text())
    config.pop("_name_or_path", None)          # no name that states a size either
    (folder / "config.json").write_text(json.dumps(config))
    parsed = parse_model(folder, model_family=None)
    entry = parsed.to_dict()["model_specs"][0]
    assert parsed.facts["parameters"] == estimate_parameters(config)
    assert entry["model_size_in_billions"] in (7, "7_2")
    warning = next(w for w in parsed.warnings if "estimated" in w)
    assert "no weight files" in warning and "config.json" in warning and "~7.24B" in warning
    assert "estimate from the architecture in config.json" in parsed.sources["model_specs[0].model_size_in_billions"]


def test_corpus_folder_without_config_is_refused(tmp_path):
    folder = pf.copy_corpus(CORPUS_WITHOUT_CONFIG[0], tmp_path / "phi3")
    with pytest.raises(ParseError, match="no config.json"):
        parse_model(folder)


def test_tiny_model_estimate_matches_its_weights(tiny_llama_dir, tmp_path):
    """The tiny llama of tests/tiny_models.py: the estimate from its config.json alone is within 3 % of
    the parameters its safetensors header counts, and parse of the config-only copy says so."""
    counted = count_parameters([read_safetensors_header(tiny_llama_dir / "model.safetensors")])
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    estimate = estimate_parameters(config)
    assert abs(estimate - counted) <= 0.03 * counted, (estimate, counted)

    folder = tmp_path / "tiny-config-only"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "chat_template.jinja"):
        shutil.copyfile(tiny_llama_dir / name, folder / name)
    parsed = parse_model(folder)
    assert parsed.facts["parameters"] == estimate
    assert any("estimated" in w and "no weight files" in w for w in parsed.warnings)


# ------------------------------------------------------------------------------------------------
# A GGUF without tensors
# ------------------------------------------------------------------------------------------------

def write_vocab_only_gguf(llama_dir: Path, out: Path) -> Path:
    """What ``convert_hf_to_gguf.py --vocab-only`` writes: the hyperparameters and tokenizer of
    ``llama_dir``, no tensors, and (as llama.cpp's ggml-vocab-*.gguf files) no padding after the
    metadata, so the aligned data start lies past the end of the file."""
    import gguf

    cfg = json.loads((llama_dir / "config.json").read_text())
    tok = json.loads((llama_dir / "tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in tok["added_tokens"]})
    tokens = [""] * (max(vocab.values()) + 1)
    for text, tid in vocab.items():
        tokens[tid] = text
    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_name("tiny vocab")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_chat_template((llama_dir / "chat_template.jinja").read_text())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()        # no tensor infos, no padding: the vocab-only layout
    writer.close()
    return out


def test_vocab_only_gguf_parses(tiny_llama_dir, tmp_path):
    import gguf

    file = write_vocab_only_gguf(tiny_llama_dir, tmp_path / "ggml-vocab-tiny.gguf")
    size = file.stat().st_size
    assert gguf.GGUFReader(str(file)).data_offset > size      # the data section starts past the end
    info = read_gguf(file)
    assert info.tensor_count == 0 and info.parameters == 0
    assert info.vocab_size == json.loads((tiny_llama_dir / "config.json").read_text())["vocab_size"]

    parsed = parse_model(file)
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    estimate = parsed.facts["parameters"]
    assert estimate == estimate_parameters(gguf_config("llama", info.raw, info.vocab_size))
    counted = count_parameters([read_safetensors_header(tiny_llama_dir / "model.safetensors")])
    assert abs(estimate - counted) <= 0.03 * counted
    assert any("holds no tensors" in w and "cannot be launched" in w for w in parsed.warnings)
    assert any("estimated" in w and "llama.*" in w for w in parsed.warnings)
    assert parsed.spec.chat_template == (tiny_llama_dir / "chat_template.jinja").read_text()
    assert parsed.spec.stop_token_ids == [config["eos_token_id"]]


def test_gguf_with_tensors_cut_short_is_still_truncated(tiny_gguf_file, tmp_path):
    """The vocab-only allowance is for files without tensors only: a cut file with tensors is refused."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(tiny_gguf_file).read_bytes()[:-64])
    with pytest.raises(ParseError, match="truncated GGUF file"):
        read_gguf(cut)
