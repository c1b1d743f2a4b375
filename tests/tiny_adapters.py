"""Tiny LoRA adapters for the tiny models of tiny_models.py (built once per session by conftest).

- :func:`build_peft_lora`: a peft LoRA folder (adapter_config.json + adapter_model.safetensors) on the
  tiny llama, with random non-zero B matrices (``init_lora_weights=False``) so it changes the output.
- :func:`build_merged_llama`: a copy of the tiny llama folder with one adapter merged into its weights
  (peft's ``merge_and_unload``): what the adapter's output must equal.
- :func:`build_gguf_lora`: the same adapter as a llama.cpp GGUF LoRA (``general.type = adapter``,
  ``blk.N.<tensor>.weight.lora_a/lora_b``, q/k rows permuted like the base GGUF's).
- :func:`build_sd_lora`: a diffusers LoRA of the tiny Stable Diffusion UNet (peft on the UNet, saved
  with the pipeline's ``save_lora_weights``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

try:
    import tiny_models
except ImportError:  # pragma: no cover
    from tests import tiny_models

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# HF llama module → llama.cpp tensor name
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


def _base_model(llama_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(llama_dir), dtype="float32").eval()


def build_peft_lora(llama_dir: Path, out_dir: Path, seed: int, rank: int = 4, alpha: int = 16,
                    base: Any = None, **config: Any) -> Path:
    """A LoRA adapter of ``base`` (default: the model of ``llama_dir``) with random A and B; ``config``:
    more LoraConfig keywords (e.g. ``trainable_token_indices``, whose new rows are random too)."""
    import torch
    from peft import LoraConfig, get_peft_model

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model = base if base is not None else _base_model(llama_dir)
    torch.manual_seed(seed)
    lora = LoraConfig(**{"r": rank, "lora_alpha": alpha, "target_modules": LLAMA_TARGETS, "init_lora_weights": False,
                         "task_type": "CAUSAL_LM", "lora_dropout": 0.0, **config})
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():   # big enough to change the tiny model's greedy tokens
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def build_merged_llama(llama_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """``llama_dir`` with ``adapter_dir`` merged into its weights (tokenizer and template copied)."""
    from peft import PeftModel
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(llama_dir, out_dir)
    merged = PeftModel.from_pretrained(_base_model(llama_dir), str(adapter_dir)).merge_and_unload()
    state = {k: v.contiguous() for k, v in merged.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def build_gguf_lora(llama_dir: Path, adapter_dir: Path, out_file: Path) -> Path:
    """The peft adapter ``adapter_dir`` as a llama.cpp LoRA GGUF (F32) for the tiny llama's GGUF."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.exists():
        out_file.unlink()
    cfg = json.loads((Path(llama_dir) / "config.json").read_text())
    adapter_cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    writer = gguf.GGUFWriter(str(out_file), arch="llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(adapter_cfg["lora_alpha"]))
    heads = {"attn_q": cfg["num_attention_heads"], "attn_k": cfg["num_key_value_heads"]}
    for i in range(cfg["num_hidden_layers"]):
        for module, gguf_name in _GGUF_NAMES.items():
            prefix = f"base_model.model.model.layers.{i}.{module}"
            a = np.ascontiguousarray(weights[f"{prefix}.lora_A.weight"].astype(np.float32))   # [r, in]
            b = weights[f"{prefix}.lora_B.weight"].astype(np.float32)                         # [out, r]
            if gguf_name in heads:   # the base GGUF's q/k rows are permuted for llama.cpp's rope
                b = tiny_models._permute_qk(b, heads[gguf_name])
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def build_sd_lora(sd_dir: Path, out_dir: Path, seed: int = 3) -> Path:
    """A diffusers LoRA (pytorch_lora_weights.safetensors) of the tiny SD UNet's attention layers."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    unet = UNet2DConditionModel.from_pretrained(str(sd_dir), subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    return out_dir
