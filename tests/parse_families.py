"""Model folders of popular LLM families, built from facts, for the parse tests.

Facts come from two references in the repository's reference/ folder (reference/README.md):

* ``reference/xinference-catalog/llm.jsonl``: Xinference 4.1's catalog — per family the
  architecture, context length, chat template, stop ids and stop strings, and per spec the hub model
  id and the architecture sizes (vocab, hidden, layers, heads, intermediate);
* ``reference/corpus/<Org--Name>/``: real config.json / tokenizer_config.json / generation_config.json
  files of popular models (copied over the generated ones when a case names them).

A folder is what a metadata-only download would hold: config.json, tokenizer_config.json (special
tokens in ``added_tokens_decoder``; the template there, in chat_template.jinja or in chat_template.json),
generation_config.json (eos as an int or a list), model.safetensors.index.json whose ``total_size``
is the parameter count (from the sizes) times the bytes per weight. No weights.

The expected parse results are written literally in tests/test_parse.py, not computed here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from reference import CATALOG as CATALOG_DIR, CORPUS as CORPUS_DIR


@lru_cache(maxsize=None)
def catalog(kind: str = "llm") -> dict[str, dict]:
    out = {}
    with open(CATALOG_DIR / f"{kind}.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                out[doc["model_name"]] = doc
    return out


# config.json model_type of the architectures the cases use
ARCH_MODEL_TYPE = {
    "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral", "Gemma2ForCausalLM": "gemma2", "Gemma3ForConditionalGeneration": "gemma3",
    "Qwen2VLForConditionalGeneration": "qwen2_vl", "Phi3ForCausalLM": "phi3", "GlmForCausalLM": "glm",
}
SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim")


@dataclass
class FamilyCase:
    key: str                                   # pytest id
    family: str                                # catalog family the facts come from
    model_id: str                              # as in the catalog (may hold "{quantization}")
    quantization: str = "none"                 # which spec of that id
    template_file: str = "tokenizer_config"    # tokenizer_config | jinja | chat_template.json | none
    gen_eos: str = "list"                      # generation_config.json eos_token_id: list | int | none
    context_key: str = "max_position_embeddings"
    base_context: Optional[int] = None         # written instead of the catalog's context (rope cases)
    rope_scaling: Optional[dict] = None
    vision: bool = False                       # add vision_config + an image processor
    nest_text_config: bool = False             # text sizes under text_config (Gemma 3 style)
    tokens: dict[int, str] = field(default_factory=dict)   # extra token texts (facts of the real tokenizer)
    eos_token: Optional[str] = None            # tokenizer_config eos_token (default: text of the config eos)
    corpus: Optional[str] = None               # corpus folder whose files replace the generated ones
    layout: str = "plain"                      # plain | hf_cache
    tokenizer: bool = True                     # write tokenizer_config.json (when the corpus has none)
    write_index: bool = True


@dataclass
class Built:
    path: Path          # what the test passes to parse_model
    folder: Path        # where the files are (the snapshot for hf_cache)
    revision: Optional[str] = None


def _spec_of(fam: dict, model_id: str, quantization: str) -> dict:
    for spec in fam["model_specs"]:
        if spec.get("model_id") == model_id and (quantization in (spec.get("quantizations") or ["none"])):
            return spec
    raise KeyError(f"{model_id} ({quantization}) is not in the catalog family {fam['model_name']}")


def _sizes(fam: dict, spec: dict) -> dict:
    meta = spec.get("metadata")
    if not meta:  # another spec of the same size carries the architecture sizes
        meta = next((s["metadata"] for s in fam["model_specs"]
                     if s.get("metadata") and s["model_size_in_billions"] == spec["model_size_in_billions"]), None)
    if not meta:
        raise KeyError(f"no architecture sizes for {spec['model_id']} in the catalog")
    return {k: meta[k] for k in SIZE_KEYS if k in meta}


def dense_parameters(sizes: dict, tied: bool) -> int:
    """Parameter count of a dense decoder with these sizes (embeddings, attention, gated MLP, norms)."""
    h, layers, vocab = sizes["hidden_size"], sizes["num_hidden_layers"], sizes["vocab_size"]
    heads = sizes["num_attention_heads"]
    kv = sizes.get("num_key_value_heads") or heads
    head_dim = sizes.get("head_dim") or h // heads
    attn = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    mlp = 3 * h * sizes["intermediate_size"]
    return vocab * h * (1 if tied else 2) + layers * (attn + mlp + 2 * h) + h


def build_family(case: FamilyCase, root: Path) -> Built:
    """Write the folder of ``case`` under ``root`` and say where it is. Files of ``case.corpus`` are
    copied first; the catalog's facts write the files the corpus folder does not have."""
    model_id = case.model_id.replace("{quantization}", case.quantization)
    org, name = model_id.split("/", 1)
    revision = None
    if case.layout == "hf_cache":
        repo = root / "hub" / f"models--{org}--{name}"
        revision = hashlib.sha1(model_id.encode()).hexdigest()
        folder = repo / "snapshots" / revision
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)
        path = repo
    else:
        folder = path = root / name
    folder.mkdir(parents=True)
    copied: set[str] = set()
    if case.corpus:
        src = CORPUS_DIR / case.corpus
        for file in src.rglob("*"):
            if file.is_file() and file.name != "SOURCE.txt":
                dest = folder / file.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, dest)
                copied.add(str(file.relative_to(src)))

    fam = catalog("llm").get(case.family)
    bits = None
    if "config.json" not in copied:
        spec = _spec_of(fam, case.model_id, case.quantization)
        bits = _write_config(case, fam, spec, folder)
    config = json.loads((folder / "config.json").read_text())
    if fam is not None:
        stop_ids: list[int] = list(fam.get("stop_token_ids") or [])
        stops: list[str] = list(fam.get("stop") or [])
    else:
        stop_ids, stops = [], []
    if case.tokenizer and "tokenizer_config.json" not in copied:
        _write_tokenizer(case, fam, stop_ids, stops, folder)
    if case.gen_eos != "none" and stop_ids and "generation_config.json" not in copied:
        gen = {"bos_token_id": config.get("bos_token_id", 1),
               "eos_token_id": stop_ids if case.gen_eos == "list" else stop_ids[0], "do_sample": True}
        (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if case.write_index and "model.safetensors.index.json" not in copied:
        sizes = config.get("text_config") or config
        tied = sizes.get("tie_word_embeddings", config.get("tie_word_embeddings",
                                                           str(config.get("model_type", "")).startswith("gemma")))
        params = dense_parameters(sizes, bool(tied))
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        per_weight = bits / 8 if bits else (4 if dtype == "float32" else 2)
        shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        index = {"metadata": {"total_size": int(params * per_weight)},
                 "weight_map": {"model.embed_tokens.weight": shards[0], "lm_head.weight": shards[1]}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return Built(path, folder, revision)


def _write_config(case: FamilyCase, fam: dict, spec: dict, folder: Path) -> Optional[int]:
    sizes = _sizes(fam, spec)
    arch = fam["architectures"][0]
    model_type = ARCH_MODEL_TYPE[arch]
    stop_ids = list(fam.get("stop_token_ids") or [])
    text_cfg: dict[str, Any] = dict(sizes)
    text_cfg[case.context_key] = case.base_context or fam["context_length"]
    text_cfg["tie_word_embeddings"] = model_type.startswith("gemma")
    if case.rope_scaling:
        text_cfg["rope_scaling"] = case.rope_scaling
    config: dict[str, Any] = {"architectures": [arch], "model_type": model_type, "torch_dtype": "bfloat16",
                              "transformers_version": "4.51.0"}
    if stop_ids:
        config["eos_token_id"] = stop_ids[0]
    if case.nest_text_config:
        config["text_config"] = dict(text_cfg, model_type=f"{model_type}_text")
    else:
        config.update(text_cfg)
    if case.vision:
        config["vision_config"] = {"hidden_size": 1152, "num_hidden_layers": 27, "patch_size": 14,
                                   "model_type": "siglip_vision_model"}
        (folder / "preprocessor_config.json").write_text(json.dumps(
            {"image_processor_type": "SiglipImageProcessor", "image_mean": [0.5, 0.5, 0.5],
             "image_std": [0.5, 0.5, 0.5], "size": {"height": 896, "width": 896}}, indent=2))
    bits = None
    if spec["model_format"] in ("gptq", "awq"):
        bits = int("".join(c for c in case.quantization if c.isdigit()) or 4)
        qc: dict[str, Any] = {"quant_method": spec["model_format"], "bits": bits, "group_size": 128}
        if spec["model_format"] == "gptq":
            qc.update(desc_act=False, sym=True)
        else:
            qc.update(version="gemm", zero_point=True)
        config["quantization_config"] = qc
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return bits


def _write_tokenizer(case: FamilyCase, fam: Optional[dict], stop_ids: list[int], stops: list[str],
                     folder: Path) -> None:
    token_texts = dict(zip(stop_ids, stops)) if len(stop_ids) == len(stops) else {}
    token_texts.update(case.tokens)
    tok: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1000000000000000019884624838656,   # the usual "unknown" sentinel
        "added_tokens_decoder": {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False}
                                 for i, t in sorted(token_texts.items())},
    }
    eos_text = case.eos_token or (token_texts.get(stop_ids[0]) if stop_ids else None)
    if eos_text:
        tok["eos_token"] = eos_text
    template = (fam or {}).get("chat_template")
    if template and case.template_file == "tokenizer_config":
        tok["chat_template"] = template
    elif template and case.template_file == "jinja":
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    elif template and case.template_file == "chat_template.json":
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(tok, indent=2, ensure_ascii=False))


def copy_corpus(name: str, dest: Path) -> Path:
    """A writable copy of one corpus folder (config files of a real model) at ``dest``."""
    shutil.copytree(CORPUS_DIR / name, dest, ignore=shutil.ignore_patterns("SOURCE.txt"))
    return dest


# --------------------------------------------------------------------------------------------------
# Embedding / rerank layouts
# --------------------------------------------------------------------------------------------------

def build_sentence_transformer(root: Path, model_id: str, *, hidden: int, max_seq_length: int,
                               pooling: tuple[str, ...] = ("cls",), dense_out: Optional[int] = None,
                               model_type: str = "bert", max_position_embeddings: int = 512,
                               nested: bool = False, language: Optional[list[str]] = None) -> Path:
    """A sentence-transformers folder: modules.json, 1_Pooling, optional 2_Dense and 3_Normalize,
    sentence_bert_config.json, config.json (in 0_Transformer/ when ``nested``, the old layout)."""
    folder = root / model_id.split("/", 1)[1]
    folder.mkdir(parents=True)
    tdir = folder / "0_Transformer" if nested else folder
    tdir.mkdir(exist_ok=True)
    (tdir / "config.json").write_text(json.dumps({
        "architectures": ["XLMRobertaModel" if model_type == "xlm-roberta" else "BertModel"],
        "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": hidden * 4, "max_position_embeddings": max_position_embeddings, "vocab_size": 1000,
    }, indent=2))
    (tdir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                "do_lower_case": False}))
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer" if nested else "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (folder / "1_Pooling").mkdir()
    modes = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, **{v: (k in pooling) for k, v in modes.items()}}, indent=2))
    if dense_out:
        (folder / "2_Dense").mkdir()
        (folder / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": hidden * len(pooling), "out_features": dense_out, "bias": True,
             "activation_function": "torch.nn.modules.activation.Tanh"}))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                    "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine"}))
    if language:
        (folder / "README.md").write_text("---\nlanguage:\n" + "".join(f"- {x}\n" for x in language)
                                          + "license: mit\n---\n# " + model_id + "\n")
    return folder


def build_cross_encoder_config(root: Path, model_id: str, *, model_type: str = "xlm-roberta",
                               max_position_embeddings: int = 8194) -> Path:
    """A cross-encoder reranker's config (one label) without weights."""
    folder = root / model_id.split("/", 1)[1]
    folder.mkdir(parents=True)
    arch = "XLMRobertaForSequenceClassification" if model_type == "xlm-roberta" else "BertForSequenceClassification"
    (folder / "config.json").write_text(json.dumps({
        "architectures": [arch], "model_type": model_type, "hidden_size": 1024, "num_hidden_layers": 24,
        "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
        "max_position_embeddings": max_position_embeddings, "vocab_size": 250002,
    }, indent=2))
    return folder


# --------------------------------------------------------------------------------------------------
# GGUF files whose tensor data is a hole (sparse): real headers of big models, no disk used
# --------------------------------------------------------------------------------------------------

def llama_tensor_shapes(hidden: int, layers: int, vocab: int, intermediate: int, heads: int,
                        kv_heads: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and shapes (GGUF order: fastest dimension first) of a llama-architecture GGUF."""
    head_dim = hidden // heads
    out = [("token_embd.weight", (hidden, vocab)), ("output_norm.weight", (hidden,)),
           ("output.weight", (hidden, vocab))]
    for i in range(layers):
        out += [(f"blk.{i}.attn_norm.weight", (hidden,)), (f"blk.{i}.ffn_norm.weight", (hidden,)),
                (f"blk.{i}.attn_q.weight", (hidden, heads * head_dim)),
                (f"blk.{i}.attn_k.weight", (hidden, kv_heads * head_dim)),
                (f"blk.{i}.attn_v.weight", (hidden, kv_heads * head_dim)),
                (f"blk.{i}.attn_output.weight", (heads * head_dim, hidden)),
                (f"blk.{i}.ffn_gate.weight", (hidden, intermediate)),
                (f"blk.{i}.ffn_up.weight", (hidden, intermediate)),
                (f"blk.{i}.ffn_down.weight", (intermediate, hidden))]
    return out


def write_sparse_gguf(path: Path, arch: str, kv: dict[str, Any], tensors: list[tuple[str, tuple[int, ...]]],
                      file_type: int, qtype: str = "Q4_K", tokens: Optional[list[str]] = None) -> Path:
    """A GGUF file with a real header (metadata ``kv`` written with the matching typed adders, tensor
    infos of ``tensors`` in ``qtype``) whose tensor data is left as a hole: the file is as long as
    the model, but sparse. 1-D tensors are F32, as llama.cpp writes norms."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_file_type(file_type)
    for key, value in kv.items():
        getattr(writer, f"add_{key}")(value)
    if tokens is not None:
        writer.add_token_list(tokens)
    quant = gguf.GGMLQuantizationType[qtype]
    for name, shape in tensors:
        kind = quant if len(shape) > 1 else gguf.GGMLQuantizationType.F32
        block, size = gguf.GGML_QUANT_SIZES[kind]
        numel = 1
        for d in shape:
            numel *= d
        # add_tensor_info takes the numpy (slowest-first) shape and writes it reversed
        writer.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), numel // block * size,
                               raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    start = fout.tell()
    start += (-start) % writer.data_alignment
    total = sum(writer.ggml_pad(ti.nbytes, writer.data_alignment) for ti in writer.tensors[0].values())
    writer.close()
    os.truncate(path, start + total)
    return path
