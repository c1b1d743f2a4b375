"""Moved to :mod:`xinference_nb.metadata` (config, tokenizer and template files in ``metadata.hf``,
safetensors headers in ``metadata.safetensors``, weights in ``metadata.weights``, quantization in
``metadata.quant``); these names stay importable."""
from __future__ import annotations

from ..metadata.hf import (  # noqa: F401
    CONTEXT_KEYS,
    MAX_TOKENIZER_JSON,
    SENTINEL_CONTEXT,
    TokenTable,
    chat_template,
    context_length,
    eos_ids,
    file_names,
    maybe_json,
    read_json,
    read_json_object,
    readme_languages,
    special_token,
    token_content,
)
from ..metadata.quant import Quantization, quantization_of  # noqa: F401
from ..metadata.safetensors import (  # noqa: F401
    DTYPE_BYTES,
    MAX_SAFETENSORS_HEADER,
    SafetensorsHeader,
    count_parameters,
    read_safetensors_header,
)
from ..metadata.weights import (  # noqa: F401
    TORCH_DTYPE_BYTES,
    WeightInfo,
    bytes_per_parameter,
    estimate_parameters,
    weight_info,
)
