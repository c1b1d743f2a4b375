"""LLMs through transformers: AutoModelForCausalLM with an accelerate device map, the dtype of the
config, and optional 4-bit / 8-bit quantization through bitsandbytes.

Launch options read here: ``trust_remote_code`` (off unless given), ``dtype`` / ``torch_dtype``,
``context_length``, ``attn_implementation``, ``quantization_config`` (a dict for
BitsAndBytesConfig), ``enable_thinking`` (the chat template's default), ``max_num_seqs`` (how many
requests share one forward pass, default 16; 1 runs one ``generate`` per request) and
``batch_wait_ms`` (how long an idle model waits for more requests before it starts a batch),
``peft_model_config`` (LoRA adapters loaded with peft on the one base model; each request picks one
with ``generate_config={"lora_name": ...}``, none = the base model with the adapters off),
``enable_prefix_caching`` (on by default: the batch scheduler reuses the key/values of prompt
prefixes it computed before, ``prefix_cache.PrefixCache``; False computes every prompt token) and
``prefix_cache_max_tokens`` (its size in tokens, LRU; counted in ``memory_bytes``). One request at a
time (``max_num_seqs=1``, or a model that cannot batch) has no prefix cache: asking for one there is a
LaunchError.

Concurrent requests are batched continuously by ``batching_llm.BatchScheduler`` (requests with
different adapters share forward passes: peft applies each row's own adapter).

OpenAI's sampling surface (logprobs / top_logprobs, presence / frequency penalties, logit_bias, min_p)
and structured outputs (``SamplingParams.constraint``, compiled by ``self.grammars``: llguidance,
imported by the first constrained request) pick each token with ``sampling``'s code on both paths: the
batch's rows, and, one request at a time, a ``_RowPick`` logits processor that makes the whole pick
inside ``generate`` (whose greedy search then takes it). A constraint or logit_bias that cannot apply
is an InferenceError when the request starts, before any token.
"""
from __future__ import annotations

import dataclasses
import json
import queue
import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..chat import (ChatLLM, Completion, SamplingParams, TokenStream, build_chat_format, check_lora_name,
                    check_prompt_fits, decode_text, incremental_deltas, read_own_chat_template, split_stops)
from ..errors import InferenceError, LaunchError
from ..metadata.quant import BNB_QUANTIZATIONS, bnb_quantization
from .options import BASE_ADAPTER, LoraAdapter, lora_adapters
from ..threads import scope_event
from . import InFlight, LoadRequest, detached
from .lora_guards import adapter_fits_base, config_patterns_problem, dropped_weights, scaling_problem

DEFAULT_MAX_NUM_SEQS = 16
DEFAULT_BATCH_WAIT_MS = 2.0


def _bnb_config(quantization: Optional[str], options: dict[str, Any], model_format: Optional[str]):
    q = bnb_quantization(quantization)
    extra = options.get("quantization_config") or {}
    if model_format not in (None, "pytorch"):
        if extra:   # it would be dropped: the checkpoint's own config.json quantization_config applies
            raise LaunchError(f"quantization_config applies to pytorch weights only; model_format={model_format!r} "
                              "checkpoints carry their own quantization_config in config.json (leave the option "
                              "out, or launch the pytorch weights)")
        return None  # gptq / awq / fp8 / bnb checkpoints carry their own quantization_config
    if q == "none":
        if extra:
            from transformers import BitsAndBytesConfig

            return BitsAndBytesConfig(**extra)
        return None
    if q is None:
        raise LaunchError(f"quantization {quantization!r} is not supported by the transformers engine for "
                          f"pytorch weights; use one of {', '.join(BNB_QUANTIZATIONS)} (GGUF quantizations such as "
                          "Q4_K_M need model_format='ggufv2' and model_engine='llama.cpp')")
    from transformers import BitsAndBytesConfig

    kwargs = {"load_in_4bit": True} if q == "4-bit" else {"load_in_8bit": True}
    kwargs.update(extra)
    return BitsAndBytesConfig(**kwargs)


def _max_memory(gpu_ids: list[int]) -> Optional[dict]:
    if not gpu_ids:
        return None
    import psutil
    import torch

    out: dict[Any, Any] = {i: int(torch.cuda.mem_get_info(i)[0] * 0.95) for i in gpu_ids}
    out["cpu"] = int(psutil.virtual_memory().available * 0.9)
    return out


def pretrained_kwargs(request: LoadRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(for every file, for the weights) keywords of from_pretrained: trust_remote_code; then dtype,
    device map, memory, quantization and attention (shared with transformers_vision). ``revision`` is
    refused by engines/options.py: the files are local."""
    opts = request.options
    trust = opts.get("trust_remote_code") is True   # parsed by options.parse_launch_options: a real bool
    common: dict[str, Any] = {"trust_remote_code": trust}
    quant_config = _bnb_config(request.quantization, opts, request.model_format)
    kwargs: dict[str, Any] = dict(common)
    kwargs["dtype"] = opts.get("dtype") or opts.get("torch_dtype") or "auto"
    plan = request.device
    kwargs["device_map"] = plan.device_map
    max_memory = _max_memory(plan.gpu_ids) if plan.device_map == "auto" and len(plan.gpu_ids) > 1 else None
    if max_memory:
        kwargs["max_memory"] = max_memory
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
    if opts.get("attn_implementation"):
        kwargs["attn_implementation"] = opts["attn_implementation"]
    return common, kwargs


def load(request: LoadRequest) -> "TransformersLLM":
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = request.source
    common, kwargs = pretrained_kwargs(request)
    plan = request.device
    adapters = lora_adapters(request.options)
    check_lora_folders(adapters)   # before any weights load: a bad adapter changes nothing
    check_prefix_options(request.options)
    request.progress("loading tokenizer", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    request.progress("loading weights", 0.15)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    try:
        model.eval()
        if adapters:
            request.progress("loading LoRA adapters", 0.85)
            model = attach_lora_adapters(model, adapters)
        request.progress("preparing chat", 0.95)
        llm = TransformersLLM(model, tokenizer, request)
    except BaseException:
        del model
        raise
    if plan.uses_cuda:
        torch.cuda.synchronize()
    request.progress("ready", 1.0)
    return llm


# adapter_config.json: at most this many bytes (a real one is about 1 KB)
MAX_ADAPTER_CONFIG_BYTES = 1024 * 1024
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")   # peft's order
# init_lora_weights values whose adapters load as plain LoRA; the others (pissa, corda, olora,
# loftq, lora_ga, mica...) rewrite the base weights or change the forward when peft loads them
_PLAIN_LORA_INITS = (True, False, "gaussian", "eva", "orthogonal")
# LoRA variants that cannot be chosen per request (peft's adapter_names) or change the base model
_LORA_VARIANTS = {
    "use_dora": "DoRA adapters cannot be chosen per request (peft refuses adapter_names with DoRA)",
    "target_parameters": "adapters on nn.Parameters (target_parameters) cannot be chosen per request in peft",
    "alora_invocation_tokens": "an activated LoRA (aLoRA) turns on after its invocation tokens, which a "
                               "per-request adapter does not do",
    "layer_replication": "layer_replication duplicates layers of the base model, which changes the base model "
                         "and every other adapter",
    "megatron_config": "Megatron parallel layers are not supported (peft would import megatron_core)",
    **{key: f"{name} adapters are not supported with an adapter chosen per request" for key, name in (
        ("use_qalora", "QA-LoRA"), ("use_bdlora", "block-diagonal LoRA"), ("velora_config", "VeLoRA"),
        ("monteclora_config", "MonteCLoRA"), ("kasa_config", "KaSA"), ("arrow_config", "Arrow routing"))},
}


def _lora_config_problem(config: dict[str, Any]) -> Optional[str]:
    """What in a LoRA adapter_config.json this engine cannot honour for an adapter chosen per request
    (None: a plain LoRA)."""
    import peft
    from peft import LoraConfig

    for key, why in _LORA_VARIANTS.items():
        if config.get(key) not in (None, False, {}, []):
            return f"sets {key}={config[key]!r:.80}: {why}; use a plain LoRA, or a model with this one merged in"
    init = config.get("init_lora_weights", True)
    if not any(init is v or (isinstance(init, str) and init == v) for v in _PLAIN_LORA_INITS):
        return (f"was made with init_lora_weights={init!r:.40}, which peft applies to the base weights when it loads "
                "the adapter (the base model and every other adapter would change); convert it to a plain LoRA "
                "(peft's save_pretrained(path_initial_model_for_weight_conversion=...)) or merge it, and launch that")
    if config.get("bias", "none") != "none":
        return (f"sets bias={config['bias']!r:.40}: its trained biases would replace the base model's for every "
                "request; merge it into the weights (merge_and_unload) and launch that")
    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown = [k for k, v in config.items() if k not in known and v not in (None, False, {}, [], "")]
    if unknown:
        return (f"sets {', '.join(map(repr, unknown[:5]))}, unknown to the installed peft {peft.__version__} (the "
                f"adapter was saved by peft {config.get('peft_version') or '?'}); upgrade peft")
    patterns = config.get("rank_pattern") or {}
    ranks = [config.get("r", 8), *(patterns.values() if isinstance(patterns, dict) else [patterns])]
    if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ranks):
        return f"has a rank (r / rank_pattern) that is not a positive integer: {ranks[:5]!r:.80}"
    return None


def _config_rank(config: dict[str, Any]) -> int:
    """The largest rank a (checked) adapter_config.json asks for: r and the rank_pattern values."""
    return max([config.get("r", 8), *(config.get("rank_pattern") or {}).values()])


def _weight_shapes(file: Path) -> dict[str, list[int]]:
    """The shape of every tensor in an adapter's weight file, from its header (safetensors: checked
    against the file's bytes by metadata.safetensors) or its tensors on the meta device (a .bin
    pickle, read with torch's weights-only loader: no code runs, nothing allocated)."""
    if file.suffix == ".safetensors":
        from ..metadata.safetensors import read_safetensors_header

        return {name: list(t["shape"]) for name, t in read_safetensors_header(file).items()}
    import torch

    state = torch.load(file, map_location="meta", weights_only=True)
    return {k: list(v.shape) for k, v in (state.items() if isinstance(state, dict) else ()) if hasattr(v, "shape")}


def _weights_file(folder: Path) -> Optional[Path]:
    return next((folder / n for n in ADAPTER_WEIGHTS if (folder / n).is_file()), None)


def check_lora_folders(adapters: list[LoraAdapter]) -> None:
    """LaunchError unless every adapter is a local peft folder of a plain LoRA this engine can choose
    per request, with weights of the ranks its config asks for (peft allocates the config's shapes
    before it reads the weights). Checked before the base model loads: a bad adapter changes nothing."""
    import torch

    for a in adapters:
        where = f"peft_model_config lora_list adapter {a.name!r} ({a.path})"
        if hasattr(torch.nn.ModuleDict(), a.name) or hasattr(torch.nn.ParameterDict(), a.name):
            raise LaunchError(f"{where}: lora_name {a.name!r} is an attribute of torch modules, and peft keeps each "
                              "adapter under its name in a module dict; pick another name")
        folder = Path(a.path)
        config_file = folder / "adapter_config.json"
        if not folder.exists():
            raise LaunchError(f"{where} does not exist; local_path must be a folder saved by peft's save_pretrained")
        if not config_file.is_file():
            raise LaunchError(f"{where} is not a peft adapter folder: it has no adapter_config.json (save the adapter "
                              "with peft's save_pretrained; a .gguf LoRA needs model_engine='llama.cpp')")
        try:
            with open(config_file, "rb") as fh:   # bounded: a size can lie (a link into /proc)
                raw = fh.read(MAX_ADAPTER_CONFIG_BYTES + 1)
            if len(raw) > MAX_ADAPTER_CONFIG_BYTES:
                raise ValueError(f"over {MAX_ADAPTER_CONFIG_BYTES // 1024} KB")
            config = json.loads(raw.decode("utf-8"))
            if not isinstance(config, dict):
                raise ValueError(f"a JSON {type(config).__name__}, not an object")
        except (OSError, ValueError) as exc:
            raise LaunchError(f"{where}: adapter_config.json is not a readable JSON object ({exc})") from None
        peft_type = config.get("peft_type")
        if str(peft_type).upper() != "LORA":
            raise LaunchError(f"{where} is a {peft_type} adapter; only LoRA adapters (peft_type LORA) can be chosen "
                              "per request")
        problem = _lora_config_problem(config) or config_patterns_problem(config) or scaling_problem(config)
        weights = _weights_file(folder)
        if problem is None and weights is None:
            # (peft would look for it on the Hugging Face Hub under that path)
            problem = f"has no {' or '.join(ADAPTER_WEIGHTS)}"
        if problem is None:
            try:
                have = {int(s[0]) for k, s in _weight_shapes(weights).items()
                        if ("lora_A" in k or "lora_embedding_A" in k) and s}
            except Exception as exc:  # noqa: BLE001 - a corrupt header, a pickle the weights-only loader refuses
                raise LaunchError(f"{where}: {weights.name} is not readable: {type(exc).__name__}: "
                                  f"{str(exc)[:300]}") from None
            want = _config_rank(config)
            if not have:
                problem = f"{weights.name} holds no LoRA matrices (lora_A)"
            elif want > max(have):
                problem = (f"asks for rank {want} (adapter_config.json r / rank_pattern), but the matrices in "
                           f"{weights.name} have rank {max(have)}: the config does not belong to these weights")
        if problem is None and len(adapters) > 1:
            whole = [k for k in ("modules_to_save", "trainable_token_indices") if config.get(k)]
            if whole:   # peft's wrappers of those layers fail (KeyError) for a request on another adapter
                problem = (f"sets {whole[0]}, which peft cannot mix with other adapters chosen per request; launch "
                           "it as the only adapter")
        if problem:
            raise LaunchError(f"{where} {problem}")


def attach_lora_adapters(model: Any, adapters: list[LoraAdapter]) -> Any:
    """``model`` wrapped by peft with every adapter loaded under its lora_name (the first with
    ``PeftModel.from_pretrained``, the rest with ``load_adapter``). An adapter that does not fit the
    model (layers it lacks, other widths, a rank or a size the base cannot hold: checked from the
    weight file's header before peft allocates anything; weights peft would drop, missing weights)
    is a LaunchError naming it; the caller frees the model."""
    from peft import PeftModel

    peft_model: Any = None
    problem: Optional[str] = None
    current = adapters[0]
    layers: dict[str, set[str]] = {}
    try:
        for current in adapters:   # all of them before peft wraps the model
            file = _weights_file(Path(current.path))
            problem, layers[current.name] = adapter_fits_base(model, file.name, _weight_shapes(file))
            if problem:
                break
        for current in adapters if problem is None else ():
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(model, current.path, adapter_name=current.name)
                    missing = [str(w.message).partition("Found ")[2] for w in seen
                               if "missing adapter keys" in str(w.message)]
                else:
                    result = peft_model.load_adapter(current.path, adapter_name=current.name)
                    # peft's list can hold other adapters' keys (it matches the name anywhere in the key):
                    # keep the ones of this adapter, "<module>.lora_X.<name>[.weight]"
                    own = re.compile(rf"\.lora_\w+\.{re.escape(current.name)}(\.\w+)?$")
                    missing = [k for k in result.missing_keys if own.search(k)]
            if missing:
                problem = f"its weights do not cover the layers it targets ({str(missing[0])[:200]})"
                break
            problem = dropped_weights(peft_model, current.name, layers[current.name])
            if problem:
                break
        if peft_model is not None:
            peft_model.eval()
    except Exception as exc:  # noqa: BLE001 - peft/torch say why in many classes (shape mismatch, bad files)
        problem = f"{type(exc).__name__}: {str(exc)[:400]}"
    if problem is not None:
        # raised outside the except block, with no reference to the weights left in this frame
        del model, peft_model
        raise LaunchError(f"peft_model_config lora_list adapter {current.name!r} ({current.path}) does not load on this "
                          f"model: {problem}. Is it a LoRA adapter trained for this base model?")
    return peft_model


def check_prefix_options(options: dict[str, Any], batching: bool = True) -> None:
    """LaunchError for prefix-cache options that could not apply: enable_prefix_caching=True or
    prefix_cache_max_tokens without the batch scheduler (``max_num_seqs=1``, or ``batching`` False: a
    model whose cache cannot batch), prefix_cache_max_tokens with enable_prefix_caching=False."""
    enabled, size = options.get("enable_prefix_caching"), options.get("prefix_cache_max_tokens")
    if enabled is False and size is not None:
        raise LaunchError("prefix_cache_max_tokens sizes the prefix cache, which enable_prefix_caching=False turns "
                          "off; drop one of them")
    if enabled is not True and size is None:
        return
    named = "enable_prefix_caching=True" if enabled is True else "prefix_cache_max_tokens"
    if int(options.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS) <= 1:
        raise LaunchError(f"{named}: the prefix cache belongs to the batch scheduler, which max_num_seqs=1 turns "
                          "off (one generate per request); drop one of them")
    if not batching:
        raise LaunchError(f"{named}: this model's cache (sliding-window or quantized layers) does not batch, so it "
                          "runs one generate per request without a prefix cache; drop the option")


def _prefix_cache(model: Any, options: dict[str, Any]) -> Any:
    """The model's PrefixCache (None with enable_prefix_caching=False)."""
    from .options import prefix_cache_tokens
    from .prefix_cache import PrefixCache

    tokens = prefix_cache_tokens(options)
    return PrefixCache(tokens) if tokens else None


def _kv_bytes_per_token(model: Any) -> int:
    """The key/value bytes one token takes in the model's cache (every layer), from its config and dtype."""
    from ..memory import kv_cache_bytes
    from ..metadata.hf import layer_count

    cfg = getattr(model, "config", None)
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    hidden = getattr(text, "hidden_size", None)
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if hidden and heads else None)
    try:
        size = next(model.parameters()).element_size()
    except (StopIteration, AttributeError):
        size = 2
    return kv_cache_bytes(layer_count(text.to_dict()) if text is not None else None, kv_heads, head_dim, 1,
                          size)


class _EventCriteria:
    """A StoppingCriteria that stops when one of its events is set (a consumer closed the stream,
    or the model was terminated)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _FiniteLogits:
    """A logits processor of ``generate`` (after the repetition penalty): NaN or +inf logits end the
    generation with the InferenceError the batch scheduler gives such a row, where ``generate`` would
    sample from NaN probabilities (a RuntimeError) or take the argmax of NaN (token 0) silently."""

    def __init__(self, adapter: Optional[str] = None):
        self.adapter = adapter
        self.start: Optional[int] = None   # the prompt's length: the length at the first call

    def __call__(self, input_ids, scores):
        from .batching_llm import broken_logits_error

        if self.start is None:
            self.start = int(input_ids.shape[-1])
        if not bool((scores < float("inf")).all()):   # false for NaN and +inf
            raise broken_logits_error(int(input_ids.shape[-1]) - self.start + 1, self.adapter)
        return scores


class _RowPick:
    """A logits processor of ``generate`` (after ``_FiniteLogits``) that makes the whole pick of a
    one-request generation with the batch's code (``sampling``): the logprobs of the raw logits, the
    request's processors (penalties, logit_bias, the constraint's mask), then greedy or sampling with
    the request's seeded generator. It returns -inf everywhere but the picked token, which
    ``generate``'s greedy search then takes. ``complete``: the constraint's structure is complete
    (``_ConstraintDone`` stops the generation there)."""

    def __init__(self, llm: "TransformersLLM", params: SamplingParams, n_prompt: int, stop_ids: list[int]):
        self.processors, self.constraint, self.logprobs = llm._row_state(params, n_prompt)
        self.sampling = llm._row_sampling(params)
        self.top_logprobs = params.top_logprobs
        self.n_prompt = n_prompt
        self.stop_ids = llm._ending_ids(stop_ids)
        self.piece = llm._piece

    def __call__(self, input_ids, scores):
        import torch

        from .sampling import logprob_entry, sample_token

        ids, raw = input_ids[0].tolist(), scores[0]
        row = raw
        for fn in self.processors:
            row = fn(ids, row)
        s = self.sampling
        tid = sample_token(row, s["temperature"] if s["sample"] else 0.0, s["top_p"], s["top_k"], s["generator"],
                           s["min_p"])
        if self.logprobs is not None and tid not in self.stop_ids:
            self.logprobs.append(logprob_entry(raw, tid, self.top_logprobs, self.piece))
        out = torch.full_like(scores, float("-inf"))
        out[:, tid] = 0.0
        return out

    @property
    def complete(self) -> bool:
        return self.constraint is not None and self.constraint.stopped

    def consume(self, input_ids: Any) -> bool:
        """The constraint takes the tokens picked so far; True once its structure is complete."""
        if self.constraint is None:
            return False
        self.constraint.accept(input_ids[0, self.n_prompt:].tolist())
        return self.constraint.stopped


class _ConstraintDone:
    """A StoppingCriteria that ends the generation when the request's constraint is complete."""

    def __init__(self, pick: _RowPick):
        self.pick = pick

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = self.pick.consume(input_ids)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _picked_criteria(pick: Optional[_RowPick]) -> list[Any]:
    return [_ConstraintDone(pick)] if pick is not None and pick.constraint is not None else []


def _logits_width(model: Any, tokenizer: Any) -> int:
    """How many scores the model gives each step: its output embeddings' rows, else the (text) config's
    vocab_size, else the tokenizer's length."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    rows = getattr(getattr(head, "weight", None), "shape", None)
    if rows:
        return int(rows[0])
    cfg = getattr(model, "config", None)
    text = getattr(cfg, "get_text_config", lambda: cfg)()
    return int(getattr(text, "vocab_size", None) or len(tokenizer))


def _generation_error(exc: BaseException) -> InferenceError:
    return exc if isinstance(exc, InferenceError) else InferenceError(f"generation failed: {type(exc).__name__}: {exc}")


def _context_length(cfg: Any, request: LoadRequest) -> int:
    """The context_length option, else the smaller of the spec's and the model config's
    max_position_embeddings, else 2048."""
    max_pos = getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "max_position_embeddings", None)
    spec_ctx = getattr(request.spec, "context_length", None)
    explicit = request.options.get("context_length")
    if explicit:
        return int(explicit)
    known = [c for c in (spec_ctx, max_pos) if c]
    return int(min(known)) if known else 2048


def _eos_ids(gen_cfg: Any, tokenizer: Any) -> list[int]:
    """The generation config's eos ids, then the tokenizer's eos id if it is not among them."""
    eos = getattr(gen_cfg, "eos_token_id", None)
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    return eos_ids


def _own_chat_template(request: LoadRequest, tokenizer: Any) -> Optional[str]:
    """The model's own chat template: its folder's template files, else the tokenizer's (the default
    of a named set), else None."""
    local = request.model_path if request.model_path is not None and Path(request.model_path).is_dir() else None
    own = read_own_chat_template(local) if local else None
    if own is None:
        tmpl = getattr(tokenizer, "chat_template", None)
        if isinstance(tmpl, dict):
            tmpl = tmpl.get("default") or next(iter(tmpl.values()), None)
        own = tmpl if isinstance(tmpl, str) else None
    return own


class TransformersLLM(ChatLLM):
    def __init__(self, model: Any, tokenizer: Any, request: LoadRequest):
        self.model = model
        self.tokenizer = tokenizer
        self.model_uid = request.model_uid
        opts = request.options
        cfg = getattr(model, "config", None)
        self.context_length = _context_length(cfg, request)
        gen_cfg = getattr(model, "generation_config", None)
        eos_ids = _eos_ids(gen_cfg, tokenizer)
        self._added = dict(tokenizer.get_added_vocab())
        own = _own_chat_template(request, tokenizer)
        variables = {k: v for k, v in getattr(tokenizer, "special_tokens_map", {}).items() if isinstance(v, str)}
        if opts.get("enable_thinking") is not None:
            variables["enable_thinking"] = opts["enable_thinking"]
        self.chat_format = build_chat_format(request.spec, own, family_spec=request.family_spec, eos_token_ids=eos_ids,
                                             template_vars=variables, token_of=self._token_of)
        # the adapters peft loaded (attach_lora_adapters): what generate_config's lora_name may choose
        self.lora_names = tuple(getattr(model, "peft_config", None) or ())
        self.chat_format.lora_names = self.lora_names
        # peft applies a call's adapter_names through hooks on the whole model: one generate at a time
        self._adapter_lock = threading.Lock()
        vocab = getattr(cfg, "vocab_size", None) or len(tokenizer)
        # a built-in family's ids may not exist in this tokenizer (own files launched as that family)
        self.chat_format.stop_token_ids = [i for i in self.chat_format.stop_token_ids if 0 <= i < max(vocab, len(tokenizer))]
        self._sample_by_default = bool(getattr(gen_cfg, "do_sample", False))
        self.pad_token_id = (getattr(gen_cfg, "pad_token_id", None) if getattr(gen_cfg, "pad_token_id", None)
                             is not None else tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                             else (eos_ids[0] if eos_ids else None))
        self.device = getattr(model, "device", None)
        embeddings = getattr(model, "get_input_embeddings", lambda: None)()
        # a prompt token past the embeddings fails the forward pass (a device-side assert on CUDA)
        self._n_embeddings = getattr(embeddings, "num_embeddings", None)
        self._lock = threading.Lock()
        # generation runs in in-flight steps that terminate_model cancels (stopping criteria) and waits for
        self._inflight = InFlight(request.model_uid)
        self.max_num_seqs = int(opts.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
        wait = opts.get("batch_wait_ms")
        self.batch_wait_ms = float(DEFAULT_BATCH_WAIT_MS if wait is None else wait)
        self._gen_defaults = gen_cfg
        self._setup_sampling(eos_ids)
        self.scheduler = None
        self.prefix_cache = None
        if self.max_num_seqs > 1:
            from .batching_llm import BatchScheduler, supports_batching

            batching = supports_batching(model)
            check_prefix_options(opts, batching)
            if batching:
                self.prefix_cache = _prefix_cache(model, opts)
                self.scheduler = BatchScheduler(model, tokenizer, self._inflight, request.model_uid,
                                                max_num_seqs=self.max_num_seqs, batch_wait_ms=self.batch_wait_ms,
                                                pad_token_id=self.pad_token_id, device=self.device,
                                                adapters=bool(self.lora_names), prefix_cache=self.prefix_cache)

    def _setup_sampling(self, eos_ids: list[int]) -> None:
        """The request-level sampling state of the model: its logits width, each token's text alone
        (logprobs) and its compiled constraints (``self.grammars``: llguidance is imported by the first
        request with a constraint)."""
        from .sampling import token_piece
        from .structured import Grammars, hf_lltokenizer

        tokenizer = self.tokenizer
        self.n_logits = _logits_width(self.model, tokenizer)
        self._piece = token_piece(tokenizer)
        ends = list(dict.fromkeys([*self.chat_format.stop_token_ids, *eos_ids]))
        n_logits = self.n_logits
        self.grammars = Grammars(lambda: hf_lltokenizer(tokenizer, ends, n_logits))

    # ------------------------------------------------------------------ helpers
    def _token_of(self, text: str) -> Optional[int]:
        """The id of ``text`` when the tokenizer has it as one added/special token."""
        return self._added.get(text)

    def _check_ids(self, ids: list[int]) -> None:
        """InferenceError for a prompt token the model's embeddings do not cover (a tokenizer with
        tokens the model was not resized for), before it reaches a forward pass."""
        n = self._n_embeddings
        bad = [i for i in ids if n is not None and not 0 <= i < n]
        if bad:
            piece = self.tokenizer.convert_ids_to_tokens(bad[0])
            raise InferenceError(f"the prompt holds token {piece!r} (id {bad[0]}), which this model's embeddings do "
                                 f"not cover (ids 0 to {n - 1}): its tokenizer has tokens the model was not resized "
                                 "for; leave that text out of the prompt")

    def _encode(self, prompt: str, chat: bool):
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
        input_ids = enc["input_ids"]
        self._check_ids(input_ids[0].tolist())
        attention = enc.get("attention_mask")
        if self.device is not None and str(self.device) != "cpu":
            input_ids = input_ids.to(self.device)
            attention = attention.to(self.device) if attention is not None else None
        return input_ids, attention

    def _adapter(self, params: SamplingParams) -> Optional[str]:
        """The request's LoRA adapter (None: the base model); InferenceError for one not loaded."""
        check_lora_name(params.lora_name, self.lora_names)
        return params.lora_name

    @contextmanager
    def _adapter_turn(self) -> Iterator[None]:
        """With adapters, one ``generate`` at a time (a terminated model stops the wait)."""
        if not self.lora_names:
            yield
            return
        while not self._adapter_lock.acquire(timeout=0.05):
            self._inflight.check()
        try:
            yield
        finally:
            self._adapter_lock.release()

    def _gen_kwargs(self, params: SamplingParams, max_new: int) -> tuple[dict[str, Any], list[int]]:
        from transformers import LogitsProcessorList

        stop_ids, strings = split_stops(params, self._token_of)
        kw: dict[str, Any] = {"max_new_tokens": max_new,
                              "logits_processor": LogitsProcessorList([_FiniteLogits(params.lora_name)])}
        if self.lora_names:   # peft's per-call choice; "__base__" turns every adapter off
            kw["adapter_names"] = [self._adapter(params) or BASE_ADAPTER]
        if stop_ids:
            kw["eos_token_id"] = stop_ids
        if self.pad_token_id is not None:
            kw["pad_token_id"] = self.pad_token_id
        sampling = self._sample_by_default
        if params.temperature is not None:
            sampling = params.temperature > 0
            kw["do_sample"] = sampling
            if sampling:
                kw["temperature"] = params.temperature
        if sampling:
            if params.top_p is not None:
                kw["top_p"] = params.top_p
            if params.top_k is not None:
                kw["top_k"] = params.top_k if params.top_k > 0 else None
        if params.repetition_penalty is not None:
            kw["repetition_penalty"] = params.repetition_penalty
        if strings:
            kw["stop_strings"] = strings
            kw["tokenizer"] = self.tokenizer
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)
        return kw, stop_ids

    @staticmethod
    def _finish(new_ids: list[int], stop_ids: list[int], max_new: int, pick: Optional["_RowPick"] = None) -> str:
        if new_ids and new_ids[-1] in stop_ids:
            return "stop"
        if pick is not None and pick.complete:   # the constraint's structure ended the reply
            return "stop"
        return "length" if len(new_ids) >= max_new else "stop"

    def _row_pick(self, params: SamplingParams, kw: dict[str, Any], n_prompt: int,
                  stop_ids: list[int]) -> Optional["_RowPick"]:
        """With a field only ``sampling`` applies (logprobs, penalties, logit_bias, min_p, a constraint):
        the ``_RowPick`` that makes each pick of this ``generate`` as the batch does (``kw`` is changed:
        greedy over its one-hot scores, none of ``generate``'s own sampling or penalties). None otherwise."""
        from .sampling import uses_row_pick

        if not uses_row_pick(params):
            return None
        pick = _RowPick(self, params, n_prompt, stop_ids)
        for key in ("temperature", "top_p", "top_k"):
            kw.pop(key, None)
        # the generation config's own sampling and repetition penalty stay off: the pick applies them
        kw.update(do_sample=False, repetition_penalty=1.0)
        kw["logits_processor"].append(pick)
        return pick

    def _row_sampling(self, params: SamplingParams) -> dict[str, Any]:
        """How one request samples (the batch's and the one-request pick's keywords): sample or greedy,
        temperature, top_p, top_k and min_p (the generation config's where the request has none), and
        its seeded ``torch.Generator``."""
        import torch

        gen = self._gen_defaults
        sample = self._sample_by_default if params.temperature is None else params.temperature > 0
        temperature = params.temperature if params.temperature is not None else getattr(gen, "temperature", None)
        top_p = params.top_p if params.top_p is not None else getattr(gen, "top_p", None)
        top_k = params.top_k if params.top_k is not None else getattr(gen, "top_k", None)
        generator = None
        if sample and params.seed is not None:
            device = self.device if self.device is not None and str(self.device) != "cpu" else "cpu"
            generator = torch.Generator(device=device).manual_seed(params.seed)
        return {"sample": sample, "temperature": float(temperature or 1.0), "top_p": top_p,
                "top_k": top_k if top_k and top_k > 0 else None, "generator": generator, "min_p": params.min_p}

    def _row_state(self, params: SamplingParams, n_prompt: int) -> tuple[list[Any], Any, Optional[list]]:
        """(logits processors, constraint state, logprobs list) of one request, before it starts: a
        logit_bias id past the vocabulary or a constraint that cannot be enforced is an InferenceError
        here, before any token."""
        from .sampling import row_processors

        constraint = None
        if params.constraint is not None:
            tokenizer = self.tokenizer
            constraint = self.grammars.start(params.constraint,
                                             lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        processors = row_processors(params, n_prompt, self.n_logits, constraint)
        return processors, constraint, ([] if params.logprobs else None)

    def _ending_ids(self, stop_ids: list[int]) -> set[int]:
        """The ids that end a request: its stop ids, else (as generate()) the generation config's eos ids."""
        if stop_ids:
            return set(stop_ids)
        eos = getattr(self._gen_defaults, "eos_token_id", None)
        return set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])

    def _batch_request(self, prompt: str, params: SamplingParams, chat: bool):
        """The scheduler's request for one call: prompt ids, limits, stops, sampling, seed, processors
        and constraint."""
        from .batching_llm import BatchRequest

        ids = self.tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
        self._check_ids(ids)
        max_new = check_prompt_fits(len(ids), params, self.context_length)
        ids_list, strings = split_stops(params, self._token_of)
        stop_ids = self._ending_ids(ids_list)
        adapter = self._adapter(params)
        processors, constraint, logprobs = self._row_state(params, len(ids))
        return BatchRequest(list(ids), params, max_new, stop_ids, strings, adapter=adapter,
                            logits_processors=processors, constraint=constraint, logprobs=logprobs,
                            piece=self._piece, **self._row_sampling(params))

    # ------------------------------------------------------------------ ChatLLM
    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> Completion:
        import torch

        if self.scheduler is not None:
            from .batching_llm import wait_result

            self._inflight.check()
            req = self.scheduler.submit(self._batch_request(prompt, params, chat))
            wait_result(req)
            text = decode_text(self.tokenizer, req.ids, params.keep_special_tokens, req.stop_ids)
            return Completion(text, len(req.prompt_ids), len(req.ids), req.finish_reason, logprobs=req.logprobs)
        with self._inflight.step():
            try:
                return self._complete_here(prompt, params, chat)
            except BaseException as exc:
                if not self._inflight.cancelled:
                    raise
                failure = detached(exc)   # the frames (and tensors) it held are freed inside the step
        raise failure

    def _complete_here(self, prompt: str, params: SamplingParams, chat: bool) -> Completion:
        """One request's ``generate`` on the calling thread (no scheduler), inside the caller's step."""
        import torch
        from transformers import StoppingCriteriaList

        inflight = self._inflight
        scoped = [e for e in (scope_event(),) if e is not None]   # an interrupted batch method stops it too
        input_ids, attention = self._encode(prompt, chat)
        n_prompt = int(input_ids.shape[1])
        max_new = check_prompt_fits(n_prompt, params, self.context_length)
        kw, stop_ids = self._gen_kwargs(params, max_new)
        pick = self._row_pick(params, kw, n_prompt, stop_ids)
        try:
            with self._adapter_turn(), torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=attention,
                                          stopping_criteria=StoppingCriteriaList(
                                              [_EventCriteria(inflight.event, *scoped), *_picked_criteria(pick)]),
                                          **kw)
        except Exception as exc:  # noqa: BLE001 - the generation failed: say how, as an InferenceError
            inflight.check()   # terminated meanwhile: say so
            raise _generation_error(exc) from None
        inflight.check()  # terminated while generating: the text was cut short
        new_ids = out[0, n_prompt:].tolist()
        text = decode_text(self.tokenizer, new_ids, params.keep_special_tokens, stop_ids)
        return Completion(text, n_prompt, len(new_ids), self._finish(new_ids, stop_ids, max_new, pick),
                          logprobs=pick.logprobs if pick is not None else None)

    def stream(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> TokenStream:
        if self.scheduler is not None:
            from .batching_llm import BatchTokenStream

            self._inflight.check()
            req = self.scheduler.submit(self._batch_request(prompt, params, chat))
            return BatchTokenStream(req, self.tokenizer, self._inflight)
        with self._inflight.step():
            input_ids, attention = self._encode(prompt, chat)
            n_prompt = int(input_ids.shape[1])
            max_new = check_prompt_fits(n_prompt, params, self.context_length)
            kw, stop_ids = self._gen_kwargs(params, max_new)
            pick = self._row_pick(params, kw, n_prompt, stop_ids)
            return _HFTokenStream(self, input_ids, attention, kw, n_prompt, max_new, stop_ids,
                                  params.keep_special_tokens, pick)

    def memory_bytes(self) -> Optional[int]:
        """The weights, plus the prefix cache at its size limit (what it may come to hold)."""
        try:
            weights = int(self.model.get_memory_footprint())
        except Exception:
            return None
        cache = self.prefix_cache
        return weights + (cache.max_tokens * _kv_bytes_per_token(self.model) if cache is not None else 0)

    def close(self) -> None:
        self._inflight.cancel()
        if getattr(self, "prefix_cache", None) is not None:
            self.prefix_cache.clear()
        for name in ("model", "tokenizer"):
            if hasattr(self, name):
                delattr(self, name)


class _HFTokenStream(TokenStream):
    """Generation in a background thread, tokens handed over through a queue and decoded
    incrementally here; ``close()`` stops generation at the next step."""

    _DONE = object()

    def __init__(self, llm: TransformersLLM, input_ids: Any, attention: Any, kw: dict[str, Any], n_prompt: int,
                 max_new: int, stop_ids: list[int], keep_special: bool = False, pick: Optional[_RowPick] = None):
        from transformers import StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        self.prompt_tokens = n_prompt
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self._llm = llm
        self._tok = llm.tokenizer
        self._inflight = inflight = llm._inflight
        self._q: "queue.Queue[Any]" = queue.Queue()
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._ids: list[int] = []
        self._max_new = max_new
        self._stop_ids = stop_ids
        self._keep_special = keep_special
        self._pick = pick
        self.logprobs = pick.logprobs if pick is not None else None   # appended as tokens are picked
        q = self._q

        class _Streamer(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                q.put(value.reshape(-1).tolist())

            def end(self):
                pass

        def run():
            import torch

            try:
                with llm._adapter_turn(), inflight.step():
                    try:
                        with torch.inference_mode():
                            llm.model.generate(input_ids=input_ids, attention_mask=attention, streamer=_Streamer(),
                                               stopping_criteria=StoppingCriteriaList(
                                                   [_EventCriteria(self._stop, inflight.event),
                                                    *_picked_criteria(pick)]), **kw)
                    except BaseException as exc:  # handed to the consumer, without the frames (and tensors)
                        self._error = detached(exc)  # its traceback holds: those are freed inside the step
            except BaseException as exc:  # terminated before the step began
                self._error = exc
            finally:
                q.put(self._DONE)

        self._thread = inflight.spawn(run, f"xinf-generate-{llm.model_uid}")
        self._iter = self._decode()

    def _decode(self) -> Iterator[str]:
        ids = self._ids

        def new_ids() -> Iterator[int]:
            while True:
                item = self._q.get()
                if item is self._DONE or self._inflight.cancelled:
                    return
                for tid in item:
                    ids.append(tid)
                    self.completion_tokens = len(ids)
                    yield tid

        yield from incremental_deltas(self._tok, new_ids(), stopped=self._stop, keep_special=self._keep_special,
                                      drop_ids=self._stop_ids)
        self._thread.join()  # a terminated model's generation stops at its next token
        self._finished = True
        self.finish_reason = TransformersLLM._finish(ids, self._stop_ids, self._max_new, self._pick)
        if self._inflight.cancelled and not self._stop.is_set():
            raise self._inflight.error()
        if self._error is not None and not self._stop.is_set():
            raise _generation_error(self._error)

    _finished = False

    def close(self) -> None:
        if not self._finished and not self._stop.is_set():
            self._stop.set()
            self.finish_reason = "stop"
        self._iter.close()
        self._thread.join(timeout=30)
