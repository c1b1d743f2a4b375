"""Model files read as metadata, never as weights: the one place the package reads them.

parse (a spec from a model's files), memory (estimates before a launch), chat (the model's own chat
template), the engines (what llama.cpp needs before ``Llama()``) and the widgets all read through
this package, so each fact has one reader and one answer.

* :mod:`.gguf` – the GGUF header (a fast ``struct`` walk over a memory map; cached per file), split
  files;
* :mod:`.safetensors` – safetensors headers (checked against the file size), parameter counts;
* :mod:`.weights` – which files hold a folder's weights, parameters from headers / index / file
  sizes, dtype sizes, the size of weight files;
* :mod:`.hf` – config.json, tokenizer files, generation_config.json, context length, the chat
  template lookup, the model card's languages;
* :mod:`.quant` – quantization names (quantization_config, GGUF file types and file names);
* :mod:`.sizes` – Xinference's written form of a model size ("0_5");
* :mod:`.estimate` – parameters from the architecture sizes in config.json or a GGUF header (a
  download without weights, a vocabulary-only GGUF).

Only the standard library is imported here; ``gguf`` (numpy) is imported by the GGUF reader when a
file has tensors to size.
"""
from __future__ import annotations

from .gguf import GGUFInfo, SPLIT_GGUF, file_type_name, looks_like_gguf, read_gguf, split_siblings
from .hf import (
    chat_template,
    context_length,
    llm_config,
    maybe_json,
    read_config,
    read_json,
    read_json_object,
)
from .quant import Quantization, gguf_name_quantization, quantization_of, strip_gguf_quantization
from .safetensors import SafetensorsHeader, count_parameters, read_safetensors_header
from .estimate import estimate_parameters, gguf_config
from .sizes import round_billions, size_form
from .weights import (
    TORCH_DTYPE_BYTES,
    WEIGHT_SUFFIXES,
    WeightInfo,
    safetensors_stats,
    weight_files_bytes,
    weight_info,
)

__all__ = [
    "GGUFInfo", "SPLIT_GGUF", "file_type_name", "looks_like_gguf", "read_gguf", "split_siblings",
    "chat_template", "context_length", "llm_config", "maybe_json", "read_config", "read_json", "read_json_object",
    "Quantization", "gguf_name_quantization", "quantization_of", "strip_gguf_quantization",
    "SafetensorsHeader", "count_parameters", "read_safetensors_header", "round_billions", "size_form",
    "estimate_parameters", "gguf_config",
    "TORCH_DTYPE_BYTES", "WEIGHT_SUFFIXES", "WeightInfo", "safetensors_stats", "weight_files_bytes", "weight_info",
]
