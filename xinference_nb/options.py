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
  any further keyword (``from_pretrained`` / pipeline arguments), as Xinference passes them.

``check_launch_args(...)`` checks the named arguments (model_name, model_engine, model_path...).
Nothing here imports a backend except ``llama_cpp``, and only when that engine launches.
"""
from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import FieldIssue, LaunchOptionError


@dataclass(frozen=True)
class Opt:
    kind: str            # bool, int, number, str, dtype, dict, str_list, str_dict, any
    about: str = ""
    minimum: Optional[float] = None


# Every option a part of this package reads, with its type. Engines name theirs in ENGINE_OPTIONS.
OPTIONS: dict[str, Opt] = {
    # the launch itself (every engine)
    "check_memory": Opt("bool", "False loads even when the memory estimate says the model will not fit"),
    "show_progress": Opt("bool", "show the launch progress bar"),
    "enable_virtual_env": Opt("bool", "run the model in its own virtualenv process (False: never)"),
    "virtual_env_packages": Opt("str_list", "requirement specifiers to install in the model's virtualenv"),
    "virtual_env_find_links": Opt("str_list", "extra --find-links locations for those packages"),
    "envs": Opt("str_dict", "environment variables of the model's virtualenv process"),
    # engines
    "trust_remote_code": Opt("bool", "import the Python code shipped with the model"),
    "enable_thinking": Opt("bool", "the chat template's default for thinking models"),
    "context_length": Opt("int", "context window in tokens", 1),
    "n_ctx": Opt("int", "llama.cpp context window in tokens (0: the file's)", 0),
    "dtype": Opt("dtype", "weights dtype (\"auto\", \"float16\", \"bfloat16\", ...)"),
    "torch_dtype": Opt("dtype", "weights dtype (older name of dtype)"),
    "revision": Opt("str", "hub revision"),
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
    "chunk_length_s": Opt("number", "seconds per chunk for long audio", 0),
    "batch_size": Opt("int", "pipeline batch size", 1),
    "max_num_seqs": Opt("int", "how many requests share one forward pass (continuous batching; 1: off)", 1),
    "batch_wait_ms": Opt("number", "how long an idle LLM waits for more requests before it starts a batch", 0),
}

LAUNCH_LEVEL = ("check_memory", "show_progress", "enable_virtual_env", "virtual_env_packages",
                "virtual_env_find_links", "envs")
VIRTUALENV_OPTIONS = ("enable_virtual_env", "virtual_env_packages", "virtual_env_find_links", "envs")

# (model_type, engine name) → the options that engine reads (besides LAUNCH_LEVEL)
ENGINE_OPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("LLM", "transformers"): ("trust_remote_code", "dtype", "torch_dtype", "context_length", "revision",
                              "attn_implementation", "quantization_config", "enable_thinking", "max_num_seqs",
                              "batch_wait_ms"),
    ("LLM", "llama.cpp"): ("n_ctx", "context_length", "enable_thinking"),          # + llama_cpp.Llama() keywords
    ("embedding", "sentence_transformers"): ("trust_remote_code", "model_kwargs", "tokenizer_kwargs",
                                             "processor_kwargs", "config_kwargs", "revision", "truncate_dim",
                                             "prompts", "default_prompt_name", "backend", "local_files_only",
                                             "similarity_fn_name"),
    ("rerank", "sentence_transformers"): ("trust_remote_code", "model_kwargs", "tokenizer_kwargs", "processor_kwargs",
                                          "config_kwargs", "revision", "backend", "local_files_only",
                                          "activation_fn"),
    ("image", "diffusers"): ("dtype", "torch_dtype", "cpu_offload", "sequential_cpu_offload", "attention_slicing",
                             "vae_tiling", "revision"),                               # + from_pretrained keywords
    ("audio", "transformers"): ("dtype", "torch_dtype", "trust_remote_code", "model_kwargs", "chunk_length_s",
                                "batch_size"),                                         # + pipeline keywords
    ("flexible", "flexible"): ("launcher_args",),
}

# engines that hand any further keyword to their backend, and what takes it
PASSTHROUGH: dict[tuple[str, str], str] = {
    ("image", "diffusers"): "diffusers' from_pretrained (pipeline components and loading arguments)",
    ("audio", "transformers"): "the transformers pipeline and its call defaults",
}

# Xinference launch options this package has no use for: refused with the reason, whatever the engine
UNSUPPORTED: dict[str, str] = {
    "peft_model_config": "LoRA / PEFT adapters are not supported by the in-kernel engines",
    "request_limits": "the in-kernel manager does not limit concurrent requests per model",
    "worker_ip": "the in-kernel manager has no workers; use Client('http://...') to place models on a cluster",
    "replica_config": "the in-kernel manager runs one replica per model",
    "n_worker": "the in-kernel manager is one worker",
    "quantize": "on-the-fly image model quantization is not supported",
    "quantize_text_encoder": "on-the-fly image model quantization is not supported",
    "lora_model": "LoRA adapters are not supported by the diffusers engine here",
    "lora_load_kwargs": "LoRA adapters are not supported by the diffusers engine here",
    "lora_fuse_kwargs": "LoRA adapters are not supported by the diffusers engine here",
    "gguf_quantization": "GGUF image weights are not supported by the diffusers engine here",
    "lightning_version": "Lightning weights are not supported by the diffusers engine here",
    "lightning_model_file_name_template": "Lightning weights are not supported by the diffusers engine here",
}

# names the passthrough engines never hand to their backend (flexible.backend_options drops them)
NOT_FOR_BACKENDS = frozenset(LAUNCH_LEVEL) | frozenset(UNSUPPORTED) | frozenset(
    {"enable_thinking", "model_engine", "gpu_idx", "n_gpu", "replica"})


# ------------------------------------------------------------------------------------------------
# type checks
# ------------------------------------------------------------------------------------------------

def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_short(value)}"


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
    raise AssertionError(kind)  # pragma: no cover


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


def check_engine_options(model_type: str, engine: str, options: dict[str, Any]) -> None:
    """LaunchOptionError naming every option ``engine`` does not consume (and listing what it does),
    and every backend keyword of the wrong type."""
    accepted = accepted_options(model_type, engine)
    passthrough = PASSTHROUGH.get((model_type, engine))
    issues: list[FieldIssue] = []
    unknown: list[str] = []
    for name, value in options.items():
        if name in UNSUPPORTED:
            issues.append(FieldIssue(name, f"not supported: {UNSUPPORTED[name]}; drop it"))
        elif name in accepted:
            problem = check_value(name, value, accepted[name])
            if problem:
                issues.append(FieldIssue(name, problem))
        elif not passthrough or name in NOT_FOR_BACKENDS:
            unknown.append(name)
    if unknown:
        listing = ", ".join(sorted(accepted))
        for name in unknown:
            issues.append(FieldIssue(name, f"unknown option: the {engine} engine for {model_type} models does not use "
                                           f"it; it accepts: {listing}"))
    if issues:
        raise LaunchOptionError(issues, engine=engine)


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
