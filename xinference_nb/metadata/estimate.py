"""A model's parameter count from its architecture sizes, for folders whose weights are not there
yet (a config-only download) and vocabulary-only GGUF files: the sizes in config.json (or a GGUF
header's hyperparameters) → embeddings + layers × (attention + MLP or experts + norms) + head.

The count follows the transformers model classes closely enough to name a model's size (within a
few percent for dense decoders, Mixtral/Qwen-MoE/DeepSeek-style MoE and BERT-style encoders); it is
an estimate and parse says so. Standard library only.
"""
from __future__ import annotations

from typing import Any, Optional

from .hf import layer_count

# config model_type prefixes whose config class ties the input and output embeddings unless
# config.json says otherwise (transformers' defaults; the rest default to separate matrices)
TIED_BY_DEFAULT = ("gemma", "paligemma", "recurrent_gemma", "vaultgemma", "bert", "roberta", "xlm_roberta",
                   "distilbert", "electra", "albert", "camembert", "deberta", "mpnet", "modernbert", "gpt2",
                   "gpt_bigcode", "gpt_neo", "opt", "bloom", "falcon", "cohere", "starcoder2", "smollm3", "mpt",
                   "ernie4_5", "lfm2", "minicpm3", "jetmoe", "xglm", "t5", "mt5")
# encoders and GPT-2-style decoders: learned positions, biases everywhere, an up/down MLP (no gate)
CLASSIC_TYPES = ("bert", "roberta", "xlm_roberta", "distilbert", "electra", "camembert", "mpnet", "gpt2",
                 "gpt_bigcode", "gpt_neo", "opt", "xglm")
# activations of gated (gate/up/down) MLPs; Gemma's gelu variants are gated too
GATED_ACTIVATIONS = ("silu", "swiglu", "swish")


def _ints(cfg: dict) -> Any:
    """``get(*keys)``: the first key holding a positive integer (booleans are not sizes)."""
    def get(*keys: str) -> Optional[int]:
        for key in keys:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None
    return get


def _model_type(config: dict, cfg: dict) -> str:
    return str(cfg.get("model_type") or config.get("model_type") or "").lower().replace("-", "_")


def _is_moe_layer(i: int, cfg: dict, get: Any) -> bool:
    """Whether decoder layer ``i`` has experts (DeepSeek's first_k_dense_replace / moe_layer_freq,
    Qwen-MoE's mlp_only_layers / decoder_sparse_step)."""
    first_dense = get("first_k_dense_replace") or 0
    if i < first_dense:
        return False
    only_mlp = cfg.get("mlp_only_layers")
    if isinstance(only_mlp, list) and i in only_mlp:
        return False
    step = get("decoder_sparse_step")
    if step and (i + 1) % step:
        return False
    freq = get("moe_layer_freq")
    return not (freq and isinstance(cfg.get("moe_layer_freq"), int) and (i - first_dense) % freq)


def estimate_parameters(config: dict) -> Optional[int]:
    """A decoder's (or BERT-style encoder's) parameter count from its config sizes (dense, MoE with
    routed and shared experts, multi-head latent attention), None when the config lacks the sizes.
    A multimodal config's ``text_config`` is counted (the language model)."""
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    get = _ints(cfg)
    hidden = get("hidden_size", "n_embd", "d_model")
    layers = layer_count(cfg)
    vocab = get("vocab_size", "padded_vocab_size")
    if not (hidden and layers and vocab):
        return None
    mtype = _model_type(config, cfg)
    classic = mtype.startswith(CLASSIC_TYPES) or cfg.get("position_embedding_type") == "absolute"
    attn = _attention_parameters(cfg, get, hidden, classic)
    norms = (4 if classic else 2) * hidden
    body = layers * (attn + norms) + _mlp_parameters(cfg, get, hidden, layers, mtype, classic)

    # ---- embeddings (+ the output head unless tied), learned positions, the last norm
    tied = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    if not isinstance(tied, bool):
        tied = mtype.startswith(TIED_BY_DEFAULT)
    embed = vocab * hidden * (1 if tied else 2)
    if classic:   # position (and token type) tables; one LayerNorm with bias after embeddings or at the end
        positions = get("max_position_embeddings", "n_positions") or 0
        return embed + (positions + (get("type_vocab_size") or 0)) * hidden + 2 * hidden + body
    return embed + body + hidden


def _attention_parameters(cfg: dict, get: Any, hidden: int, classic: bool) -> int:
    """One layer's attention: multi-head latent attention (DeepSeek V2/V3) or q/k/v/o projections
    (with biases for classic models and ``attention_bias``)."""
    heads = get("num_attention_heads", "n_head") or max(1, hidden // 64)
    kv = get("num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads
    head_dim = get("head_dim") or hidden // heads
    kv_rank = get("kv_lora_rank")
    if kv_rank:
        nope, rope = get("qk_nope_head_dim") or head_dim, get("qk_rope_head_dim") or 0
        v_dim = get("v_head_dim") or head_dim
        q_rank = get("q_lora_rank")
        q = hidden * q_rank + q_rank + q_rank * heads * (nope + rope) if q_rank else hidden * heads * (nope + rope)
        return q + hidden * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v_dim) + heads * v_dim * hidden
    attn = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim
    if classic or cfg.get("attention_bias") is True:
        attn += 2 * heads * head_dim + 2 * kv * head_dim if classic else (heads + 2 * kv) * head_dim
    return attn


def _mlp_parameters(cfg: dict, get: Any, hidden: int, layers: int, mtype: str, classic: bool) -> int:
    """All layers' MLPs: gated (gate, up, down) or classic (up, down with biases) dense ones, and the
    routed and shared experts with their router in the layers that have experts."""
    act = str(cfg.get("hidden_act") or cfg.get("hidden_activation") or cfg.get("activation_function")
              or "silu").lower()
    gated = not classic and (any(a in act for a in GATED_ACTIVATIONS) or mtype.startswith("gemma"))
    inter = get("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim") or 4 * hidden
    dense_mlp = 3 * hidden * inter if gated else 2 * hidden * inter + (inter + hidden if classic else 0)
    experts = get("num_experts", "num_local_experts", "n_routed_experts")
    if not (experts and experts > 1):
        return layers * dense_mlp
    expert_inter = get("moe_intermediate_size") or inter
    moe_mlp = experts * 3 * hidden * expert_inter + hidden * experts            # experts + router
    moe_mlp += (get("n_shared_experts") or 0) * 3 * hidden * expert_inter        # DeepSeek's shared experts
    shared_inter = get("shared_expert_intermediate_size")                         # Qwen-MoE's shared expert
    if shared_inter:
        moe_mlp += 3 * hidden * shared_inter + hidden
    moe_layers = sum(_is_moe_layer(i, cfg, get) for i in range(layers))
    return moe_layers * moe_mlp + (layers - moe_layers) * dense_mlp


# GGUF hyperparameter ({arch}.<key>) → the config.json key estimate_parameters reads
_GGUF_KEYS = {
    "embedding_length": "hidden_size", "block_count": "num_hidden_layers", "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim", "vocab_size": "vocab_size", "expert_count": "num_experts",
    "expert_feed_forward_length": "moe_intermediate_size", "expert_shared_count": "n_shared_experts",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "leading_dense_block_count": "first_k_dense_replace", "attention.q_lora_rank": "q_lora_rank",
    "attention.kv_lora_rank": "kv_lora_rank", "context_length": "max_position_embeddings",
}


def gguf_config(arch: str, raw: dict[str, Any], vocab_size: Optional[int]) -> dict[str, Any]:
    """A config-shaped dict from a GGUF header's ``{arch}.*`` hyperparameters (for
    :func:`estimate_parameters` on a file without tensors)."""
    config: dict[str, Any] = {"model_type": arch}
    for key, name in _GGUF_KEYS.items():
        value = raw.get(f"{arch}.{key}")
        if isinstance(value, int) and not isinstance(value, bool):
            config[name] = value
    if "vocab_size" not in config and vocab_size:
        config["vocab_size"] = vocab_size
    return config
