"""launch_model's options: one typed parse, and what each engine accepts, in one place.

``launch_model(**kwargs)`` takes Xinference's rule (extra keywords go to the engine) only where the
engine really takes them. Two steps, both raising ``LaunchOptionError`` (a SpecError and a
LaunchError, 400 over REST) that names each bad option and says what is accepted:

* ``parse_launch_options(options)``: before anything else (in-kernel in ``ModelManager.launch_model``,
  over REST in the launch route *before its guards*, so the guard and the engine read the same value).
  Every option of the table below must have its type: booleans are real booleans (``"false"``,
  ``"0"`` or ``1`` for ``trust_remote_code`` is an error, never ``bool("false")``), numbers are
  numbers, and so on. ``None`` means "not given" and is dropped. Unknown names are left for step 2.
* ``check_engine_options(model_type, engine, options)``: once the engine is chosen, every option must
  be one that engine (or the launch itself) consumes. The llama.cpp engine also takes every keyword
  of ``llama_cpp.Llama()`` (typed from its defaults); diffusers and transformers audio pipelines take
  any further keyword (``from_pretrained`` / pipeline arguments), as Xinference passes them. Xinference's
  options for its other engines (vLLM's ``gpu_memory_utilization``, SGLang's ``mem_fraction_static``,
  ... in ``OTHER_ENGINE_OPTIONS``) are not errors, as in Xinference, but a warning says they had no
  effect and no backend receives them; ``UNSUPPORTED`` ones are refused with the reason.

``check_launch_args(...)`` checks the named arguments (model_name, model_engine, model_path...).
Nothing here imports a backend except ``llama_cpp``, and only when that engine launches.
"""
from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import ENGINES
from ..errors import FieldIssue, LaunchOptionError, short_value


@dataclass(frozen=True)
class Opt:
    kind: str            # bool, int, number, str, dtype, dict, str_list, str_dict, peft, duration, any
    about: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None


# Every option a part of this package reads, with its type. Engines name theirs in their ENGINES row.
OPTIONS: dict[str, Opt] = {
    # the launch itself (every engine)
    "check_memory": Opt("bool", "False loads even when the memory estimate says the model will not fit"),
    "show_progress": Opt("bool", "show the launch progress bar"),
    "enable_virtual_env": Opt("bool", "run the model in its own virtualenv process (False: never)"),
    "virtual_env_packages": Opt("str_list", "requirement specifiers to install in the model's virtualenv"),
    "virtual_env_find_links": Opt("str_list", "extra --find-links locations for those packages"),
    "envs": Opt("str_dict", "environment variables of the model's virtualenv process"),
    "keep_alive": Opt("duration", "free the weights after this long unused (seconds, or \"30s\", \"5m\", \"1h\"; "
                                  "0: after each request; -1: never, the default); the next call reloads them"),
    # engines
    "trust_remote_code": Opt("bool", "import the Python code shipped with the model"),
    "enable_thinking": Opt("bool", "the chat template's default for thinking models"),
    "context_length": Opt("int", "context window in tokens", 1),
    "n_ctx": Opt("int", "llama.cpp context window in tokens (0: the file's)", 0),
    "dtype": Opt("dtype", "weights dtype (\"auto\", \"float16\", \"bfloat16\", ...)"),
    "torch_dtype": Opt("dtype", "weights dtype (older name of dtype)"),
    "attn_implementation": Opt("str", "\"eager\", \"sdpa\", \"flash_attention_2\""),
    "quantization_config": Opt("dict", "BitsAndBytesConfig arguments"),
    "model_kwargs": Opt("dict", "arguments of the model's from_pretrained"),
    "tokenizer_kwargs": Opt("dict", "arguments of the tokenizer's from_pretrained"),
    "processor_kwargs": Opt("dict", "arguments of the processor's from_pretrained"),
    "config_kwargs": Opt("dict", "arguments of the config's from_pretrained"),
    "truncate_dim": Opt("int", "cut embeddings to this many dimensions", 1),
    "prompts": Opt("str_dict", "named prompts prepended to inputs"),
    "default_prompt_name": Opt("str", "the prompt used by default"),
    "backend": Opt("str", "\"torch\", \"onnx\" or \"openvino\""),
    "local_files_only": Opt("bool", "never reach the hub"),
    "similarity_fn_name": Opt("str", "\"cosine\", \"dot\", \"euclidean\", \"manhattan\""),
    "activation_fn": Opt("any", "the activation applied to the scores"),
    "launcher_args": Opt("dict", "arguments merged into the document's launcher_args"),
    "cpu_offload": Opt("bool", "enable_model_cpu_offload()"),
    "sequential_cpu_offload": Opt("bool", "enable_sequential_cpu_offload()"),
    "attention_slicing": Opt("bool", "enable_attention_slicing()"),
    "vae_tiling": Opt("bool", "enable_vae_tiling()"),
    "vae_slicing": Opt("bool", "enable_vae_slicing()"),
    "gguf_model_path": Opt("str", "a GGUF file of the image model's transformer (or UNet), loaded quantized in place "
                                  "of the folder's"),
    "chunk_length_s": Opt("number", "seconds per chunk for long audio", 0),
    "batch_size": Opt("int", "pipeline batch size", 1),
    "max_num_seqs": Opt("int", "how many requests share one forward pass (continuous batching; 1: off)", 1),
    "batch_wait_ms": Opt("number", "how long an idle LLM waits for more requests before it starts a batch", 0),
    "enable_prefix_caching": Opt("bool", "reuse the key/values of prompts' shared token prefixes (transformers: on "
                                         "by default; False computes every prompt token)"),
    "prefix_cache_max_tokens": Opt("int", "how many prompt tokens of key/values the prefix cache keeps (LRU)", 1),
    "multimodal_projector": Opt("str", "a vision GGUF's projector (mmproj) file: its name beside the model file, or "
                                       "an absolute path (llama.cpp; Xinference's name)"),
    "chat_handler": Opt("str", "the llama_cpp.llama_chat_format handler class that loads a vision GGUF's projector "
                               "(\"Llava15ChatHandler\", \"Qwen25VLChatHandler\", ...; default: the family's)"),
    "peft_model_config": Opt("peft", "LoRA adapters: {\"lora_list\": [{\"lora_name\": ..., \"local_path\": ...}], "
                                     "\"image_lora_load_kwargs\": {...}, \"image_lora_fuse_kwargs\": {...}}"),
}

LAUNCH_LEVEL = ("check_memory", "show_progress", "keep_alive", "enable_virtual_env", "virtual_env_packages",
                "virtual_env_find_links", "envs")
VIRTUALENV_OPTIONS = ("enable_virtual_env", "virtual_env_packages", "virtual_env_find_links", "envs")

# (model_type, engine name) → the options that engine reads (besides LAUNCH_LEVEL): its ENGINES row's
ENGINE_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {(e.model_type, e.name): e.options for e in ENGINES}

# engines that hand any further keyword to their backend, and what takes it (their ENGINES row's)
PASSTHROUGH: dict[tuple[str, str], str] = {(e.model_type, e.name): e.passthrough for e in ENGINES if e.passthrough}

# Xinference launch options this package has no use for: refused with the reason, whatever the engine
UNSUPPORTED: dict[str, str] = {
    "revision": "a launch fetches the revision the document's model_revision names (set it in the registration); "
                "client.download_model(..., revision=...) fetches another one without launching",
    "request_limits": "the in-kernel manager does not limit concurrent requests per model",
    "worker_ip": "the in-kernel manager has no workers; use Client('http://...') to place models on a cluster",
    "replica_config": "the in-kernel manager runs one replica per model",
    "n_worker": "the in-kernel manager is one worker",
    "quantize": "on-the-fly image model quantization is not supported",
    "quantize_text_encoder": "on-the-fly image model quantization is not supported",
    "lora_model": "Xinference fills it from peft_model_config; pass peft_model_config={\"lora_list\": "
                  "[{\"lora_name\": ..., \"local_path\": ...}]} instead",
    "lora_load_kwargs": "Xinference fills it from peft_model_config; pass peft_model_config="
                        "{\"image_lora_load_kwargs\": {...}} instead",
    "lora_fuse_kwargs": "Xinference fills it from peft_model_config; pass peft_model_config="
                        "{\"image_lora_fuse_kwargs\": {...}} instead",
    "gguf_quantization": "it picks a file of the document's gguf_model_id on the hub, which is never downloaded "
                         "here; pass gguf_model_path=<the .gguf file> instead",
    "gguf_model_file_name_template": "it names a file of gguf_model_id on the hub; pass gguf_model_path=<the .gguf "
                                     "file> instead",
    "lightning_version": "Lightning weights (Xinference applies them to Qwen-Image only) are not loaded by the "
                         "diffusers engine here",
    "lightning_model_path": "Lightning weights (Xinference applies them to Qwen-Image only) are not loaded by the "
                            "diffusers engine here",
    "lightning_model_file_name_template": "Lightning weights are not loaded by the diffusers engine here",
    "transformer_quantization": "on-the-fly image model quantization (bitsandbytes / torchao) is not supported; "
                                "a pre-quantized GGUF transformer loads with gguf_model_path",
    "transformer_quantize_method": "on-the-fly image model quantization is not supported",
    "transformer_nf4": "on-the-fly image model quantization is not supported",
    "text_encoder_quantize_method": "on-the-fly image model quantization is not supported",
    "text_encoder_quantization": "on-the-fly image model quantization is not supported",
    "controlnet": "ControlNet models are not loaded by the diffusers engine here",
    "deepcache": "DeepCache is not supported by the diffusers engine here",
    "deepcache_cache_interval": "DeepCache is not supported by the diffusers engine here",
    "deepcache_cache_branch_id": "DeepCache is not supported by the diffusers engine here",
}

# Xinference launch options of its other LLM engines (vLLM's VLLMModelConfig, SGLang's SGLANGModelConfig,
# MLX's): accepted by Xinference whatever the engine, so a launch that names one is not refused here
# either, but it has no effect on these engines: a one-line warning says so, and no backend receives it
OTHER_ENGINE_OPTIONS: dict[str, str] = {
    **dict.fromkeys((
        "tokenizer_mode", "tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend",
        "block_size", "swap_space", "gpu_memory_utilization", "max_num_batched_tokens", "max_model_len",
        "limit_mm_per_prompt", "guided_decoding_backend", "scheduling_policy", "model_quantization",
        "mm_processor_kwargs", "min_pixels", "max_pixels", "enable_expert_parallel", "speculative_config",
        "rope_scaling", "hf_overrides", "enforce_eager", "enable_chunked_prefill",
        "cpu_offload_gb", "kv_cache_dtype", "xinference_vllm_executor_backend"), "vLLM"),
    **dict.fromkeys(("tp_size", "mem_fraction_static", "log_level", "attention_reduce_in_fp32", "dist_init_addr",
                     "chunked_prefill_size"), "SGLang"),
    **dict.fromkeys(("nnodes", "node_rank"), "vLLM and SGLang"),
    **dict.fromkeys(("cache_limit_gb", "max_kv_size"), "MLX"),
}

def prefix_cache_tokens(options: dict[str, Any]) -> int:
    """How many prompt tokens the transformers engine's prefix cache keeps for these (parsed) launch
    options: 0 with enable_prefix_caching=False, else prefix_cache_max_tokens or the default (what the
    memory estimate counts: ``memory.estimate_model(prefix_cache_tokens=...)``)."""
    from ..memory import PREFIX_CACHE_DEFAULT_TOKENS

    if options.get("enable_prefix_caching") is False:
        return 0
    return int(options.get("prefix_cache_max_tokens") or PREFIX_CACHE_DEFAULT_TOKENS)


# names the passthrough engines never hand to their backend (flexible.backend_options drops them)
NOT_FOR_BACKENDS = frozenset(LAUNCH_LEVEL) | frozenset(UNSUPPORTED) | frozenset(
    {"enable_thinking", "model_engine", "gpu_idx", "n_gpu", "replica", "peft_model_config"})


# ------------------------------------------------------------------------------------------------
# type checks
# ------------------------------------------------------------------------------------------------

def _got(value: Any) -> str:
    return f"got {type(value).__name__} {short_value(value)}"


def check_value(name: str, value: Any, opt: Opt) -> Optional[str]:
    """None when ``value`` has the type of ``opt``, else what is wrong (without the name)."""
    kind = opt.kind
    if kind == "any":
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false (a boolean), {_got(value)}"
    if kind in ("int", "number"):
        ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            return f"must be {'an integer' if kind == 'int' else 'a number'}, {_got(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if opt.minimum is not None and value < opt.minimum:
            return f"must be at least {opt.minimum:g}, got {value!r}"
        if opt.maximum is not None and value > opt.maximum:
            return f"must be at most {opt.maximum:g}, got {value!r}"
        return None
    if kind == "str":
        return None if isinstance(value, str) and value else f"must be a non-empty string, {_got(value)}"
    if kind == "dtype":
        if isinstance(value, str) and value:
            return None
        cls = type(value)
        if cls.__module__ == "torch" and cls.__name__ == "dtype":   # torch.float16 in a notebook
            return None
        return f"must be a dtype name such as \"float16\" or \"auto\" (or a torch.dtype), {_got(value)}"
    if kind == "dict":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return f"must be an object with string keys, {_got(value)}"
        return None
    if kind == "str_list":
        if not isinstance(value, (list, tuple)):
            return f"must be a list of strings, {_got(value)}"
        for i, item in enumerate(value):
            if not isinstance(item, str):
                return f"[{i}] must be a string, {_got(item)}"
        return None
    if kind == "str_dict":
        if not isinstance(value, dict):
            return f"must be an object of string values, {_got(value)}"
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                return f"[{k!r}] must be a string, {_got(v)}"
        return None
    if kind == "peft":
        return peft_problem(value)
    if kind == "duration":
        try:
            duration_seconds(value)
        except ValueError as exc:
            return str(exc)
        return None
    raise AssertionError(kind)  # pragma: no cover


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: Any) -> Optional[float]:
    """``keep_alive``'s value in seconds, Ollama's forms: a number of seconds, a string of one or more
    ``<number><unit>`` parts (units ms, s, m, h: "90s", "5m", "1h30m"), 0 (after each request), or any
    negative number / "-1" (never: None). ValueError says what is accepted."""
    accepted = ("must be seconds (a number; 0: after each request; -1: never) or a duration such as \"30s\", "
                "\"5m\", \"1h30m\"")
    if isinstance(value, bool):
        raise ValueError(f"{accepted}, {_got(value)}")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            value = float(text)          # "300", "-1"
        except ValueError:
            parts = _DURATION.findall(text)
            if not text or "".join(a + b for a, b in parts) != text:
                raise ValueError(f"{accepted}, got {short_value(value)}") from None
            return sum(float(a) * _DURATION_UNITS[b] for a, b in parts)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{accepted}, {_got(value)}")
    return None if value < 0 else float(value)


# ------------------------------------------------------------------------------------------------
# LoRA adapters: peft_model_config, as Xinference spells it
# ------------------------------------------------------------------------------------------------

PEFT_KEYS = ("lora_list", "image_lora_load_kwargs", "image_lora_fuse_kwargs")
LORA_KEYS = ("lora_name", "local_path")
# the keywords of diffusers' load_lora_weights / fuse_lora that mean something for a local adapter
# (adapter_name is each adapter's lora_name; hub keywords have no use: local_path is local)
IMAGE_LORA_LOAD_KWARGS: dict[str, Opt] = {
    "weight_name": Opt("str"), "subfolder": Opt("str"), "use_safetensors": Opt("bool"),
    "low_cpu_mem_usage": Opt("bool")}
# How much of a LoRA's update is applied (diffusers' fuse_lora, llama.cpp's lora_scale): 1 is the
# adapter as trained, 0 none, negative subtracts it; past a few the output is noise, and 1e30 gives
# inf / NaN weights (an all-black image, NaN logits). So at most MAX_LORA_SCALE either way.
MAX_LORA_SCALE = 100.0
IMAGE_LORA_FUSE_KWARGS: dict[str, Opt] = {
    "lora_scale": Opt("number", minimum=-MAX_LORA_SCALE, maximum=MAX_LORA_SCALE), "components": Opt("str_list"),
    "safe_fusing": Opt("bool"), "adapter_names": Opt("str_list")}
BASE_ADAPTER = "__base__"   # peft's name for "no adapter" in a mixed batch: never an adapter's name
_LORA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class LoraAdapter:
    """One entry of ``peft_model_config["lora_list"]``."""

    name: str
    path: str


def peft_problem(value: Any) -> Optional[str]:
    """What is wrong with a peft_model_config value (None: fine); the first problem, with its path."""
    if not isinstance(value, dict):
        return f"must be an object with keys {', '.join(PEFT_KEYS)}, {_got(value)}"
    unknown = [k for k in value if k not in PEFT_KEYS]
    if unknown:
        return f"unknown key {', '.join(repr(k) for k in unknown)}; it takes {', '.join(PEFT_KEYS)}"
    names: list[str] = []
    loras = value.get("lora_list")
    if loras is not None:
        if not isinstance(loras, (list, tuple)):
            return f"lora_list must be a list of {{\"lora_name\": ..., \"local_path\": ...}} objects, {_got(loras)}"
        for i, item in enumerate(loras):
            where = f"lora_list[{i}]"
            if not isinstance(item, dict):
                return f"{where} must be an object {{\"lora_name\": ..., \"local_path\": ...}}, {_got(item)}"
            extra = [k for k in item if k not in LORA_KEYS]
            if extra:
                return (f"{where} has unknown key {', '.join(repr(k) for k in extra)}; an adapter has lora_name "
                        "and local_path")
            name = item.get("lora_name")
            if not isinstance(name, str) or not _LORA_NAME.fullmatch(name) or name == BASE_ADAPTER:
                return (f"{where}.lora_name must be 1 to 64 letters, digits, '_' or '-' (and not {BASE_ADAPTER!r}), "
                        f"{_got(name)}")
            if name in names:
                return f"{where}.lora_name {name!r} is given twice; each adapter needs its own name"
            names.append(name)
            path = item.get("local_path")
            if path is None or path == "":
                return f"{where}.local_path is missing: the adapter's local file or folder"
            problem = check_path_value(path, "local_path")
            if problem:
                return f"{where}.local_path {problem}"
    for key, table in (("image_lora_load_kwargs", IMAGE_LORA_LOAD_KWARGS),
                       ("image_lora_fuse_kwargs", IMAGE_LORA_FUSE_KWARGS)):
        kwargs = value.get(key)
        if kwargs is None:
            continue
        if not isinstance(kwargs, dict):
            return f"{key} must be an object of keyword arguments, {_got(kwargs)}"
        if kwargs and not names:
            return f"{key} has no adapter to apply to: give lora_list too"
        for k, v in kwargs.items():
            opt = table.get(k)
            if opt is None:
                note = " (adapter_name is each adapter's lora_name)" if k == "adapter_name" else ""
                return f"{key}[{k!r}] is not accepted{note}; it takes {', '.join(table)}"
            problem = check_value(k, v, opt)
            if problem is None and k in ("weight_name", "subfolder") and (
                    v.startswith(("/", "\\", "~")) or ".." in v.replace("\\", "/").split("/")):
                problem = "must name a file or folder inside local_path (no absolute path, no '..')"
            if problem:
                return f"{key}[{k!r}] {problem}"
        stray = [n for n in kwargs.get("adapter_names") or () if n not in names]
        if stray:
            return f"{key}['adapter_names'] names {', '.join(map(repr, stray))}, not in lora_list ({', '.join(names)})"
    return None


def lora_adapters(options: dict[str, Any]) -> list[LoraAdapter]:
    """The adapters of a launch's (parsed) ``peft_model_config``, in order; [] without one. ``~`` is
    expanded here, once, so every engine (and the memory estimate) reads the same folder."""
    config = options.get("peft_model_config") or {}
    return [LoraAdapter(item["lora_name"], os.path.expanduser(os.fspath(item["local_path"])))
            for item in config.get("lora_list") or ()]


def image_lora_kwargs(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(load_lora_weights keywords, fuse_lora keywords) of a launch's ``peft_model_config``."""
    config = options.get("peft_model_config") or {}
    return dict(config.get("image_lora_load_kwargs") or {}), dict(config.get("image_lora_fuse_kwargs") or {})


def _nested_bools(value: Any, path: str, issues: list[FieldIssue], depth: int = 0) -> None:
    """``trust_remote_code`` anywhere inside a dict option (model_kwargs, ...) must be a real boolean too:
    the backend reads it with ``if trust_remote_code:``."""
    if depth > 8:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}"
            if k == "trust_remote_code" and v is not None and not isinstance(v, bool):
                issues.append(FieldIssue(here, f"must be true or false (a boolean), {_got(v)}"))
            _nested_bools(v, here, issues, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _nested_bools(v, f"{path}[{i}]", issues, depth + 1)


def parse_launch_options(options: dict[str, Any]) -> dict[str, Any]:
    """The launch options with their types checked (see the module doc); ``None`` values dropped.
    Unknown names are kept for ``check_engine_options``. LaunchOptionError lists every bad one."""
    if not isinstance(options, dict):
        raise LaunchOptionError([FieldIssue("", f"launch options must be keyword arguments, {_got(options)}")])
    out: dict[str, Any] = {}
    issues: list[FieldIssue] = []
    for name, value in options.items():
        if not isinstance(name, str):
            issues.append(FieldIssue(str(name), "option names must be strings"))
            continue
        if value is None:
            continue
        opt = OPTIONS.get(name)
        if opt is not None:
            problem = check_value(name, value, opt)
            if problem:
                issues.append(FieldIssue(name, problem))
                continue
        _nested_bools(value, name, issues)
        out[name] = value
    if issues:
        raise LaunchOptionError(issues)
    return out


# ------------------------------------------------------------------------------------------------
# per engine
# ------------------------------------------------------------------------------------------------

def llama_init_params() -> dict[str, Opt]:
    """The keywords of ``llama_cpp.Llama()`` (but model_path), typed from their annotations
    (``int``, ``Optional[int]``, ``bool``, ...; anything else: any value)."""
    from llama_cpp import Llama

    kinds = {"int": "int", "bool": "bool", "float": "number", "str": "str"}
    out = {}
    for name, p in inspect.signature(Llama.__init__).parameters.items():
        if name in ("self", "model_path") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        note = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        if note.startswith("Optional[") and note.endswith("]"):
            note = note[len("Optional["):-1]
        out[name] = Opt(kinds.get(note, "any"), f"llama_cpp.Llama({name}=...)")
    return out


_EXTRA_ACCEPTED: dict[tuple[str, str], Callable[[], dict[str, Opt]]] = {
    ("LLM", "llama.cpp"): llama_init_params,
}


def accepted_options(model_type: str, engine: str) -> dict[str, Opt]:
    """Every option ``engine`` consumes for ``model_type`` (launch-level ones included), with types."""
    names = LAUNCH_LEVEL + ENGINE_OPTIONS.get((model_type, engine), ())
    out = {name: OPTIONS[name] for name in names}
    extra = _EXTRA_ACCEPTED.get((model_type, engine))
    if extra is not None:
        try:
            for name, opt in extra().items():
                out.setdefault(name, opt)
        except ImportError:  # the backend is missing: the launch stops at EngineUnavailable anyway
            pass
    return out


def bnb_config_problem(value: dict[str, Any]) -> Optional[str]:
    """quantization_config keys BitsAndBytesConfig does not name (it would keep them unused): refused."""
    try:
        from transformers import BitsAndBytesConfig
    except ImportError:  # the engine is unavailable: the launch stops there
        return None
    params = inspect.signature(BitsAndBytesConfig.__init__).parameters
    named = [k for k, p in params.items() if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = sorted(k for k in value if k not in named)
    if unknown:
        return f"unknown key {', '.join(map(repr, unknown))}: BitsAndBytesConfig takes {', '.join(named)}"
    return None


def check_engine_options(model_type: str, engine: str, options: dict[str, Any]) -> None:
    """LaunchOptionError naming every option ``engine`` does not consume (and listing what it does),
    and every backend keyword of the wrong type. Options of Xinference's other engines
    (``OTHER_ENGINE_OPTIONS``) are taken out of ``options`` with a warning that they had no effect."""
    accepted = accepted_options(model_type, engine)
    passthrough = PASSTHROUGH.get((model_type, engine))
    issues: list[FieldIssue] = []
    unknown: list[str] = []
    no_effect: list[str] = []
    for name, value in options.items():
        if name in UNSUPPORTED:
            issues.append(FieldIssue(name, f"not supported: {UNSUPPORTED[name]}; drop it"))
        elif name == "peft_model_config" and name not in accepted:
            issues.append(FieldIssue(name, f"not supported by the {engine} engine for {model_type} models: LoRA "
                                           f"adapters load on LLM (transformers, llama.cpp) and image (diffusers) "
                                           "models; drop it"))
        elif name in accepted:
            problem = check_value(name, value, accepted[name])
            if problem is None and name == "peft_model_config" and model_type != "image":
                image_keys = [k for k in ("image_lora_load_kwargs", "image_lora_fuse_kwargs") if value.get(k)]
                if image_keys:
                    problem = (f"{' and '.join(image_keys)} {'apply' if len(image_keys) > 1 else 'applies'} to image "
                               "models only; drop it for an LLM")
            if problem is None and name == "quantization_config":
                problem = bnb_config_problem(value)
            if problem:
                issues.append(FieldIssue(name, problem))
        elif name in OTHER_ENGINE_OPTIONS:
            no_effect.append(name)
        elif not passthrough or name in NOT_FOR_BACKENDS:
            unknown.append(name)
    if unknown:
        listing = ", ".join(sorted(accepted))
        for name in unknown:
            issues.append(FieldIssue(name, f"unknown option: the {engine} engine for {model_type} models does not use "
                                           f"it; it accepts: {listing}"))
    if issues:
        raise LaunchOptionError(issues, engine=engine)
    for name in no_effect:      # accepted as Xinference accepts them, never handed to a backend
        warnings.warn(f"{name}: a {OTHER_ENGINE_OPTIONS[name]} launch option; it has no effect on the {engine} engine "
                      f"for {model_type} models and was ignored", UserWarning, stacklevel=3)
        options.pop(name)


# ------------------------------------------------------------------------------------------------
# the named arguments of launch_model
# ------------------------------------------------------------------------------------------------

MAX_PATH_CHARS = 4096


def check_path_value(value: Any, field: str) -> Optional[str]:
    """What is wrong with a model_path / model_uri value before it reaches the file system (None: fine)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return f"must be a path string, {_got(value)}"
    if "\x00" in value:
        return "contains a NUL byte; pass a real path"
    if len(value) > MAX_PATH_CHARS:
        return f"is {len(value)} characters long; a path has at most {MAX_PATH_CHARS}"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in value.replace("\\", "/").split("/")):
        return "has a path component longer than 255 bytes, which no file system allows"
    return None


def check_launch_args(model_name: Any, model_type: Any, model_engine: Any, model_format: Any,
                      quantization: Any, model_path: Any, model_size_in_billions: Any = None,
                      gpu_idx: Any = None) -> None:
    """LaunchOptionError for named arguments of the wrong type (before they reach code that would
    raise AttributeError / TypeError / OSError on them)."""
    issues: list[FieldIssue] = []
    if not isinstance(model_name, str) or not model_name.strip():
        issues.append(FieldIssue("model_name", f"must be a non-empty string (a registered or built-in model name), "
                                                f"{_got(model_name)}"))
    if not isinstance(model_type, str):
        issues.append(FieldIssue("model_type", f"must be a string such as \"LLM\" or \"embedding\", {_got(model_type)}"))
    for name, value, example in (("model_engine", model_engine, "\"transformers\""),
                                 ("model_format", model_format, "\"pytorch\""),
                                 ("quantization", quantization, "\"none\"")):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            issues.append(FieldIssue(name, f"must be a string such as {example} or None, {_got(value)}"))
    if model_path is not None and model_path != "":
        problem = check_path_value(model_path, "model_path")
        if problem:
            issues.append(FieldIssue("model_path", problem))
    size = model_size_in_billions
    if size is not None:
        try:
            ok = not isinstance(size, bool) and isinstance(size, (int, float, str)) and \
                float(str(size).replace("_", ".")) > 0 and math.isfinite(float(str(size).replace("_", ".")))
        except ValueError:
            ok = False
        if not ok:
            issues.append(FieldIssue("model_size_in_billions", f"must be a positive number of billions such as 7, 0.5 "
                                                              f"or \"0_5\", {_got(size)}"))
    if gpu_idx is not None:
        ids = gpu_idx if isinstance(gpu_idx, (list, tuple)) else [gpu_idx]
        if any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            issues.append(FieldIssue("gpu_idx", f"must be a GPU index or a list of them (integers), {_got(gpu_idx)}"))
    if issues:
        raise LaunchOptionError(issues)
