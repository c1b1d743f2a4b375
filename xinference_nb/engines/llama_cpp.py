"""GGUF LLMs through llama-cpp-python.

``n_ctx`` comes from the launch option ``n_ctx`` / ``context_length``, else the spec's context length
capped by the file's; ``n_gpu_layers`` from the device plan (n_gpu). Other launch options that are
``llama_cpp.Llama`` parameters (n_threads, n_batch, flash_attn, …) are passed to it (``chat_format``, read
only by llama-cpp-python's own chat completion, is refused). When the model path is a folder, the file is
picked with the spec's ``model_file_name_template``. A registration with the ``vision`` ability loads
here too, with its projector: ``llama_cpp_vision.py`` (``load_gguf`` is the load they share).

LoRA: ``peft_model_config``'s adapters are GGUF LoRA files, loaded once on the model
(``llama_adapter_lora_init``); each request picks one with ``generate_config={"lora_name": ...}``
(none = the base model), set on the context before its prompt is evaluated (at scale ``lora_scale``,
default 1.0). Calls take turns on one context, and a change of adapter drops the cached prompt.
``Llama(lora_path=...)`` still applies one adapter to every request.

Prefix reuse (launch option ``enable_prefix_caching``, on unless ``False``): llama-cpp-python's
``generate(tokens, reset=True)`` keeps the longest common prefix of the context and the new prompt and
evaluates only the rest (the next turn of a chat, the rows of a chat_batch sharing an instruction). A
request that would overwrite a long context (another conversation) first saves it (llama.cpp's
sequence state: its KV, with its tokens and adapter) in ``_StateCache``, an LRU of
``prefix_cache_max_tokens`` tokens in all (the transformers engine's option and default); a later request that continues one of those saved contexts further than the live
one loads it back (conversations A, B, A, B each resume where they were). A saved state is only reused
with the adapter it was computed with; ``False`` evaluates every prompt whole.

Sampling (the same semantics as the transformers engine, chat/__init__.SamplingParams): logprobs,
presence / frequency penalties (over the generated tokens only, OpenAI's definition, not llama.cpp's
window of the last 64 tokens), logit_bias, min_p (after temperature) and structured outputs (a
llguidance token mask, engines/structured.py) run in one logits processor, ``_Sampling``, which
llama-cpp-python calls first in its sampler chain with the raw logits of the last position; its own
repetition penalty, top_k / top_p, temperature and greedy / random pick follow.
"""
from __future__ import annotations

import codecs
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..chat import (ChatLLM, Completion, SamplingParams, TokenStream, build_chat_format, check_lora_name,
                    check_prompt_fits, split_stops)
from ..errors import FieldIssue, InferenceError, LaunchError, LaunchOptionError, ParseError
from ..metadata.gguf import GGUFInfo, read_gguf
from .options import MAX_LORA_SCALE, LoraAdapter, Opt, check_value, lora_adapters, prefix_cache_tokens
from .structured import Grammars, RowConstraint, llama_lltokenizer
from . import InFlight, LoadRequest


def token_bytes(llm: Any, tid: int, special: bool = False) -> bytes:
    """The bytes of one token. llama-cpp-python's ``detokenize`` reads each piece into a 32-byte
    buffer and silently drops a longer one (llama_token_to_piece answers with minus the size it
    needs); real vocabularies hold longer tokens (runs of spaces, dashes, or one whole added token), so
    the piece is read here with the size llama.cpp asks for."""
    import ctypes

    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    if vocab is None:  # pragma: no cover - a llama-cpp-python without the attribute: its own reader
        return llm.detokenize([tid], special=special)
    size = 64
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(tid), buf, size, 0, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n
    raise InferenceError(f"llama.cpp could not read the text of token {tid}")  # pragma: no cover


def logprob_entry(llm: Any, tid: int, logprobs: Any, top: int) -> dict[str, Any]:
    """OpenAI's entry of one generated token: its text, log-probability and bytes, and the ``top``
    most likely tokens at its position (highest first, ties by id), from ``logprobs`` (numpy, the
    log-softmax of the raw logits)."""
    import numpy as np

    def one(t: int) -> dict[str, Any]:
        data = token_bytes(llm, t, special=True)
        return {"token": data.decode("utf-8", errors="replace"), "logprob": float(logprobs[t]), "bytes": list(data)}

    entry = one(tid)
    k = min(top, logprobs.shape[0])
    best: list[int] = []
    if k > 0:
        idx = np.argpartition(-logprobs, k - 1)[:k]
        best = [int(t) for t in idx[np.lexsort((idx, -logprobs[idx]))]]
    entry["top_logprobs"] = [one(t) for t in best]
    return entry


class _Sampling:
    """One request's logits processor (llama-cpp-python's ``logits_processor``), called with the raw
    logits of the last position before each token: records their log-softmax (logprobs), then applies
    presence / frequency penalties over the generated ids, logit_bias, the constraint's mask and min_p
    (after temperature; only when sampling). ``take(tid)`` is told each token generate yields."""

    def __init__(self, llm: Any, params: SamplingParams, n_vocab: int, row: Optional[RowConstraint], temp: float):
        import math

        import numpy as np

        self._llm = llm
        self.generated: list[int] = []
        self.row = row
        self._presence = params.presence_penalty or 0.0
        self._frequency = params.frequency_penalty or 0.0
        self._counts = np.zeros(n_vocab, dtype=np.float32) if (self._presence or self._frequency) else None
        self._bias_ids = np.array(sorted(params.logit_bias), dtype=np.int64)
        self._bias = np.array([params.logit_bias[t] for t in self._bias_ids.tolist()], dtype=np.float32)
        # min_p: p / p_max >= min_p after temperature  <=>  logit >= max logit + temp * log(min_p)
        sampling = not params.greedy and temp > 0
        self._min_p = temp * math.log(params.min_p) if params.min_p and sampling else None
        self._logprobs = params.logprobs
        self._top = params.top_logprobs
        self._lp: Any = None
        self.entries: list[dict[str, Any]] = []

    @staticmethod
    def wanted(params: SamplingParams) -> bool:
        return bool(params.logprobs or params.presence_penalty or params.frequency_penalty or params.logit_bias
                    or params.min_p or params.constraint is not None)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        raw = np.asarray(scores, dtype=np.float32)
        if self._logprobs:
            x = raw.astype(np.float64)
            top = x.max()
            self._lp = x - top - np.log(np.exp(x - top).sum())
        out = raw.copy()
        if self._counts is not None:
            out -= self._presence * (self._counts > 0) + self._frequency * self._counts
        if self._bias_ids.size:
            out[self._bias_ids] += self._bias
        if self.row is not None:
            out = self.row.mask(self.generated, out)
        if self._min_p is not None:
            out[out < out.max() + self._min_p] = -np.inf
        return out

    def take(self, tid: int) -> bool:
        """Record the token generate chose; True when it completed the constraint's structure."""
        self.generated.append(tid)
        if self._counts is not None:
            self._counts[tid] += 1
        if self._logprobs:
            self.entries.append(logprob_entry(self._llm, tid, self._lp, self._top))
        if self.row is None:
            return False
        self.row.accept(self.generated)
        return self.row.stopped


def _format_name(template: str, quantization: str) -> str:
    return template.replace("{quantization}", quantization)


def resolve_gguf_file(path: Path, model_spec: Any = None, quantization: Optional[str] = None) -> Path:
    """The .gguf file to load: ``path`` itself, or the file the spec's model_file_name_template names
    inside the folder ``path``. Errors say which files the folder holds."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            try:
                with open(path, "rb") as fh:
                    magic = fh.read(4)
            except OSError:
                magic = b""
            if magic != b"GGUF":
                raise LaunchError(f"{path} is not a GGUF file (it does not start with the GGUF magic); the "
                                  "llama.cpp engine needs a .gguf file: convert the model or use "
                                  "model_engine='transformers' for a Hugging Face folder")
        return path
    if not path.exists():
        raise LaunchError(f"{path} does not exist; pass model_path= the .gguf file (or its folder with "
                          "model_file_name_template in the registration)")
    found = sorted(p.name for p in path.glob("*.gguf"))
    listing = f" The folder holds: {', '.join(found)}." if found else " The folder holds no .gguf file."
    template = getattr(model_spec, "model_file_name_template", None)
    q = quantization or getattr(model_spec, "quantization", None) or ""
    if template:
        name = _format_name(template, q)
        candidate = path / name
        if candidate.is_file():
            return candidate
        for other in path.glob("*.gguf"):
            if other.name.lower() == name.lower():
                return other
        split = getattr(model_spec, "model_file_name_split_template", None)
        parts = (getattr(model_spec, "quantization_parts", None) or {}).get(q)
        if split and parts:
            first = path / split.replace("{quantization}", q).replace("{part}", parts[0])
            if first.is_file():
                return first
        raise LaunchError(f"{candidate} not found: model_file_name_template {template!r} with quantization "
                          f"{q!r} names {name!r}.{listing} Pick the quantization that matches a file.")
    raise LaunchError(f"{path} is a directory, but a ggufv2 model is one .gguf file: pass "
                      f"model_path='{path}/<name>.gguf', or register model_uri as the folder with "
                      f"model_file_name_template (e.g. 'model-{{quantization}}.gguf').{listing}")


def _llama_params() -> set[str]:
    from .options import llama_init_params   # the same list the manager checks launch options against

    return set(llama_init_params())


def read_launch_metadata(file: Path) -> GGUFInfo:
    """The GGUF header facts a launch needs (context length, chat template, end-of-generation ids,
    add_bos), read once by the package's GGUF reader (the manager's memory estimate has usually
    read it already); LaunchError when the file is not a complete GGUF."""
    try:
        return read_gguf(file)
    except ParseError as exc:
        raise LaunchError(f"{exc}; is it a complete .gguf file?") from None


def check_gguf_loras(adapters: list[LoraAdapter], options: dict[str, Any]) -> None:
    """LaunchError unless every adapter is a GGUF LoRA file (checked before the model loads); the
    LoRA keywords of ``Llama()`` that would clash or do nothing are refused."""
    if options.get("lora_base") is not None:
        raise LaunchOptionError([FieldIssue("lora_base", "llama-cpp-python keeps it but never reads it; drop it")])
    if adapters and options.get("lora_path") is not None:
        raise LaunchOptionError([FieldIssue("lora_path", "give adapters either in peft_model_config's lora_list "
                                                         "(chosen per request) or as lora_path (always on), not both")])
    if options.get("lora_scale") is not None and not adapters and options.get("lora_path") is None:
        raise LaunchOptionError([FieldIssue("lora_scale", "scales a LoRA adapter, and there is none: give "
                                                          "peft_model_config's lora_list (or lora_path), or drop it")])
    if options.get("lora_scale") is not None:   # 1e30 makes every logit NaN
        problem = check_value("lora_scale", options["lora_scale"],
                              Opt("number", minimum=-MAX_LORA_SCALE, maximum=MAX_LORA_SCALE))
        if problem:
            raise LaunchOptionError([FieldIssue("lora_scale", f"{problem} (1 applies the adapter as trained, 0 not at "
                                                              "all, negative subtracts it)")])
    checks = [(f"peft_model_config lora_list adapter {a.name!r} ({a.path})", a.path) for a in adapters]
    if options.get("lora_path") is not None:   # llama-cpp-python would run without an adapter it cannot read
        checks.append((f"lora_path ({options['lora_path']})", options["lora_path"]))
    for where, path in checks:
        file = Path(path).expanduser()
        if not file.is_file():
            raise LaunchError(f"{where} {'is a folder' if file.is_dir() else 'does not exist'}; the llama.cpp engine "
                              "takes a GGUF LoRA file (convert a peft adapter with llama.cpp's convert_lora_to_gguf.py)")
        try:
            kind = read_gguf(file).raw.get("general.type")
        except ParseError as exc:
            raise LaunchError(f"{where} is not a GGUF LoRA file: {exc}") from None
        if kind != "adapter":
            raise LaunchError(f"{where} is a GGUF {kind or 'model'} file, not a LoRA adapter (general.type "
                              "'adapter')")


def _load_loras(llm: Any, adapters: list[LoraAdapter]) -> dict[str, Any]:
    """Each adapter loaded on the model (freed with it); LaunchError naming one llama.cpp refuses."""
    import llama_cpp

    out: dict[str, Any] = {}
    if adapters and not (hasattr(llama_cpp, "llama_set_adapters_lora") and hasattr(getattr(llm, "_ctx", None), "ctx")
                         and hasattr(getattr(llm, "_model", None), "model")):
        raise LaunchError("this llama-cpp-python cannot switch LoRA adapters per request (no llama_set_adapters_lora); "
                          "upgrade llama-cpp-python (0.3.36 can), or pass one adapter as lora_path=...")
    for a in adapters:
        handle = llama_cpp.llama_adapter_lora_init(llm._model.model, str(Path(a.path).expanduser()).encode("utf-8"))
        if not handle:
            raise LaunchError(f"peft_model_config lora_list adapter {a.name!r} ({a.path}): llama.cpp cannot load it on "
                              "this model (another architecture or shapes: is it a LoRA of this base model?)")
        out[a.name] = handle
    return out


def model_file(request: LoadRequest) -> Path:
    """The .gguf file a launch loads; LaunchError when it has none."""
    if request.model_path is None:
        raise LaunchError(f"{request.model_name}: the llama.cpp engine needs a local .gguf file; pass "
                          "model_path=... or set model_uri in the registration")
    return resolve_gguf_file(request.model_path, request.model_spec, request.quantization)


# launch options that load a vision GGUF's projector (engines/llama_cpp_vision.py reads them)
VISION_OPTIONS = ("multimodal_projector", "chat_handler")


def load(request: LoadRequest) -> "LlamaCppLLM":
    """A text GGUF (a registration without the vision ability)."""
    given = [k for k in VISION_OPTIONS if k in request.options]
    if given:
        raise LaunchOptionError([FieldIssue(k, f"loads a vision GGUF's projector, and {request.model_name!r} is "
                                               "registered without the 'vision' ability: add \"vision\" to its "
                                               "model_ability (with multimodal_projectors on its ggufv2 spec), or drop "
                                               "it") for k in given])
    return load_gguf(request, LlamaCppLLM)


def load_gguf(request: LoadRequest, make: Callable[..., "LlamaCppLLM"]) -> "LlamaCppLLM":
    """Load the GGUF of ``request`` and wrap it: ``make(llm, request, file, info, loras=...)`` builds the
    engine model; if anything fails after ``Llama()``, the model is freed before the error leaves."""
    from llama_cpp import Llama

    from ..memory import estimate_gguf

    if "chat_format" in request.options:   # read only by llama-cpp-python's create_chat_completion
        raise LaunchOptionError([FieldIssue("chat_format", "llama-cpp-python's chat formats are not used here: the "
                                                           "prompt comes from the registration's chat_template (or "
                                                           "the GGUF's tokenizer.chat_template); drop it")])
    file = model_file(request)
    opts = request.options
    adapters = lora_adapters(opts)
    check_gguf_loras(adapters, opts)
    request.progress("reading GGUF metadata", 0.05)
    info = read_launch_metadata(file)
    file_ctx = info.context_length
    n_ctx = opts.get("n_ctx") or opts.get("context_length")
    if not n_ctx:
        known = [c for c in (getattr(request.spec, "context_length", None), file_ctx) if c]
        n_ctx = int(min(known)) if known else 0
    kwargs: dict[str, Any] = {"n_ctx": int(n_ctx), "n_gpu_layers": request.device.n_gpu_layers, "verbose": False}
    if request.device.gpu_ids:
        kwargs["main_gpu"] = request.device.gpu_ids[0]
    accepted = _llama_params()
    for key, value in opts.items():
        if key in accepted and key not in ("n_ctx",) + VISION_OPTIONS:
            kwargs[key] = value
    if kwargs.get("lora_path"):
        kwargs["lora_path"] = str(Path(kwargs["lora_path"]).expanduser())
    request.progress("loading weights", 0.2)
    try:
        llm = Llama(model_path=str(file), **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        raise LaunchError(f"llama.cpp could not load {file}: {exc}. Check that the file is a complete GGUF "
                          "of an architecture this llama-cpp-python supports (pip install -U llama-cpp-python)"
                          ) from None
    try:
        if kwargs.get("lora_path") and not getattr(llm, "_lora_adapter", None):   # a NULL adapter: not loaded
            raise LaunchError(f"lora_path ({kwargs['lora_path']}): llama.cpp cannot load it on this model (another "
                              "architecture or shapes: is it a LoRA of this base model?)")
        if adapters:
            request.progress("loading LoRA adapters", 0.9)
        loras = _load_loras(llm, adapters)
        request.progress("preparing chat", 0.95)
        model = make(llm, request, file, info, loras=loras)
        model._estimate = estimate_gguf(file, llm.n_ctx(), [a.path for a in adapters],
                                        prefix_cache_tokens(request.options)).total_bytes
    except BaseException:
        llm.close()
        raise
    request.progress("ready", 1.0)
    return model


_MIN_STATE_TOKENS = 64                  # a context shorter than this is cheaper to evaluate again than to keep


def _common_prefix(a: Any, b: Any) -> int:
    """The length of the common prefix of two int sequences (numpy)."""
    import numpy as np

    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class _StateCache:
    """llama.cpp contexts saved when a request would overwrite them: (tokens, adapter, sequence state)
    in LRU order, ``limit`` tokens in all (``bytes``: their size). ``best`` finds the one sharing the longest prefix with a
    prompt, computed with the same adapter; it leaves the cache when loaded (the live context holds it)."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.entries: list[tuple[Any, Optional[str], Any]] = []   # oldest first
        self.bytes = 0
        self.tokens = 0

    def save(self, llm: Any, lora: Optional[str]) -> bool:
        import ctypes

        import llama_cpp

        n = llm.n_tokens
        if n > self.limit:
            return False
        tokens = llm.input_ids[:n].copy()
        if any(e[1] == lora and len(e[0]) >= n and _common_prefix(e[0], tokens) == n for e in self.entries):
            return False   # already kept (this context is a prefix of a saved one)
        size = int(llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, 0))
        if size <= 0:
            return False
        buf = (ctypes.c_uint8 * size)()
        if int(llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buf, size, 0)) != size:
            return False
        self.entries.append((tokens, lora, buf))
        self.bytes += size
        self.tokens += n
        while self.tokens > self.limit:
            self.take(0)
        return True

    def best(self, ids: list[int], lora: Optional[str]) -> tuple[int, int]:
        """(index, common prefix length) of the saved context that shares most with ``ids`` (-1, 0: none)."""
        best, length = -1, 0
        for i, (tokens, name, _) in enumerate(self.entries):
            if name == lora:
                n = _common_prefix(tokens, ids)
                if n > length:
                    best, length = i, n
        return best, length

    def take(self, index: int) -> tuple[Any, Optional[str], Any]:
        entry = self.entries.pop(index)
        self.bytes -= len(entry[2])
        self.tokens -= len(entry[0])
        return entry

    @staticmethod
    def load(llm: Any, entry: tuple[Any, Optional[str], Any]) -> bool:
        """Put a saved context (``take``n from the cache) in sequence 0; False (context cleared) when
        llama.cpp refuses it."""
        import llama_cpp

        tokens, _, buf = entry
        if int(llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(buf), 0)) == 0:
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            return False
        llm.input_ids[:len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        llm._requires_eval = True   # the logits are not the loaded context's: generate replays a token
        return True

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = self.tokens = 0


def _sampler_args(params: SamplingParams) -> tuple[float, float, int, float]:
    """(temp, top_p, top_k, min_p) for llama-cpp-python's sampler chain. Without a temperature, its
    defaults (0.8, 0.95, 40, min_p 0.05); with one, only what the request asks. A request's min_p is
    applied by ``_Sampling`` after temperature (llama.cpp's runs before it), so llama.cpp's is then 0."""
    if params.temperature is None:
        temp, top_p, top_k, min_p = 0.8, 0.95, 40, 0.05     # llama-cpp-python's defaults
    else:
        temp, top_p, top_k, min_p = params.temperature, 1.0, 0, 0.0
    if params.top_p is not None:
        top_p = params.top_p
    if params.top_k is not None:
        top_k = max(0, params.top_k)
    if params.min_p is not None:
        min_p = 0.0
    return temp, top_p, top_k, min_p


class LlamaCppLLM(ChatLLM):
    def __init__(self, llm: Any, request: LoadRequest, file: Path, info: Optional[GGUFInfo] = None,
                 loras: Optional[dict[str, Any]] = None):
        self.llm = llm
        self._loras = dict(loras or {})    # lora_name → llama.cpp adapter, chosen per request
        self._lora_scale = float(request.options.get("lora_scale", 1.0))
        self._active_lora: Optional[str] = None
        self._prefix_caching = request.options.get("enable_prefix_caching") is not False
        # a recurrent model's state cannot be cut back to a prefix: generate evaluates it whole anyway
        recurrent = getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False)
        self._states = _StateCache(0 if recurrent else prefix_cache_tokens(request.options))
        self.file = file
        self.model_uid = request.model_uid
        # llama.cpp pads its context (n_ctx=24 gives 256), but llama-cpp-python's token buffers hold the
        # n_ctx asked for: a longer prompt would overflow them (ValueError in eval)
        self.context_length = int(min(llm.n_ctx(), len(getattr(llm, "input_ids", ())) or llm.n_ctx()))
        info = info if info is not None else read_launch_metadata(file)
        own = info.chat_template
        eos = llm.token_eos()
        eos_ids = [eos] if eos is not None and eos >= 0 else []
        eos_ids += [tid for key, tid in info.stop_token_ids if key != "eos"]   # eot, eom
        variables: dict[str, Any] = {}
        for name, tid in (("bos_token", llm.token_bos()), ("eos_token", eos)):
            if tid is not None and tid >= 0:
                variables[name] = self._piece(tid, special=True)
        if request.options.get("enable_thinking") is not None:
            variables["enable_thinking"] = request.options["enable_thinking"]
        self._eog_ids = set(eos_ids)
        self._lock = threading.RLock()
        self._inflight = InFlight(request.model_uid)
        self._add_bos = info.add_bos_token is not False
        self.chat_format = build_chat_format(request.spec, own, family_spec=request.family_spec, eos_token_ids=eos_ids,
                                             template_vars=variables, token_of=self._token_of)
        self._n_vocab = n_vocab = llm.n_vocab()
        self.chat_format.stop_token_ids = [i for i in self.chat_format.stop_token_ids if 0 <= i < n_vocab]
        self.chat_format.lora_names = tuple(self._loras)
        self._estimate = None
        # structured outputs: llguidance's view of the vocabulary, built on the first constrained request
        self.grammars = Grammars(self._lltokenizer)

    def _lltokenizer(self) -> Any:
        import warnings

        with warnings.catch_warnings():   # llguidance reads each token's attributes by a deprecated name
            warnings.simplefilter("ignore", DeprecationWarning)
            return llama_lltokenizer(self.llm, sorted(self._eog_ids))

    def _piece(self, tid: int, special: bool = False) -> str:
        return token_bytes(self.llm, tid, special).decode("utf-8", errors="replace")

    def _token_of(self, text: str) -> Optional[int]:
        try:
            ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        except Exception:
            return None
        if len(ids) == 1 and self._piece(ids[0], special=False) == "":
            return ids[0]   # a control token: it never shows in the decoded text, so stop on its id
        return None

    def _prompt_ids(self, prompt: str, chat: bool) -> list[int]:
        ids = self.llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos, special=True)
        bos = self.llm.token_bos()
        if len(ids) >= 2 and ids[0] == ids[1] == bos:
            ids = ids[1:]   # the template already wrote the BOS token
        return ids

    def _run(self, prompt: str, params: SamplingParams, chat: bool, state: TokenStream,
             check_stops: bool, images: Optional[list[Any]] = None) -> Iterator[str]:
        # one llama.cpp context: calls from different threads (a server, a widget) take turns;
        # a call waiting for its turn gives up when the model is terminated
        while not self._lock.acquire(timeout=0.05):
            self._inflight.check()
        try:
            yield from self._run_locked(prompt, params, chat, state, check_stops, images)
        finally:
            self._lock.release()

    def _run_locked(self, prompt: str, params: SamplingParams, chat: bool, state: TokenStream,
                    check_stops: bool, images: Optional[list[Any]] = None) -> Iterator[str]:
        # Every stretch that calls into llama.cpp runs inside an in-flight step and never across a
        # yield: terminate_model cancels (the next step raises "model terminated"), waits for the
        # running step, and only then frees the context.
        with self._inflight.step():
            llm = self.llm
            gen, setup = self._start(llm, prompt, params, chat, state, images)
        try:
            yield from self._tokens(llm, gen, setup, state, check_stops)
        finally:
            gen.close()  # llama-cpp-python's generate has no cleanup of its own: no native call here

    def _use_lora(self, llm: Any, name: Optional[str]) -> None:
        """Put adapter ``name`` (None: none) on the context; a change drops the cached prompt, whose
        keys and values were computed with the other adapter."""
        check_lora_name(name, tuple(self._loras))
        if name == self._active_lora:
            return
        import ctypes

        import llama_cpp

        self._keep_context(llm)   # computed with the adapter being replaced: kept under its name
        if name is None:
            failed = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loras[name])
            scales = (ctypes.c_float * 1)(self._lora_scale)
            failed = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, handles, 1, scales)
        llm.reset()
        if failed:
            self._active_lora = "?"   # unknown: the next request sets its own again
            raise InferenceError(f"llama.cpp could not switch to LoRA adapter {name!r} (error {failed})")
        self._active_lora = name

    def _keep_context(self, llm: Any) -> None:
        """Save the live context in the state cache before it is overwritten (when long enough)."""
        if self._states.limit > 0 and self._active_lora != "?" and llm.n_tokens >= _MIN_STATE_TOKENS:
            self._states.save(llm, self._active_lora)

    def _reuse_prefix(self, llm: Any, ids: list[int]) -> None:
        """Before ``generate(ids, reset=True)``, which keeps the longest common prefix of the live context
        and ``ids``: load the saved context that shares a longer one (saving the live one first when
        ``ids`` would overwrite much of it). With prefix caching off, the context is dropped."""
        if not self._prefix_caching:
            llm.reset()
            return
        if self._states.limit <= 0 or self._active_lora == "?":
            return
        live = _common_prefix(llm.input_ids[:llm.n_tokens], ids) if llm.n_tokens else 0
        index, saved = self._states.best(ids, self._active_lora)
        overwrites = llm.n_tokens - live >= _MIN_STATE_TOKENS
        if saved >= live + _MIN_STATE_TOKENS:
            entry = self._states.take(index)
            if overwrites:
                self._keep_context(llm)
            self._states.load(llm, entry)
        elif overwrites:
            self._keep_context(llm)

    def _check_request(self, params: SamplingParams) -> None:
        """InferenceError, before any token, for a logit_bias id past the vocabulary or a constraint
        llguidance cannot enforce (compiled here once, then cached for the request's start)."""
        bad = sorted(t for t in params.logit_bias if t >= self._n_vocab)
        if bad:
            raise InferenceError(f"generate_config['logit_bias'] names token id{'s' if len(bad) > 1 else ''} "
                                 f"{', '.join(map(str, bad[:8]))}, but this model's vocabulary has {self._n_vocab} "
                                 f"tokens (ids 0 to {self._n_vocab - 1})")
        if params.constraint is not None:
            with self._inflight.step():
                self.grammars.matcher(params.constraint)

    def _decode_ids(self, ids: list[int]) -> str:
        return b"".join(token_bytes(self.llm, t, special=True) for t in ids).decode("utf-8", errors="replace")

    def _start(self, llm: Any, prompt: str, params: SamplingParams, chat: bool, state: TokenStream,
               images: Optional[list[Any]] = None):
        self._use_lora(llm, params.lora_name)
        ids, max_new = self._prefill(llm, prompt, params, chat, state, images)
        return self._generator(llm, ids, params, max_new, state)

    def _prefill(self, llm: Any, prompt: str, params: SamplingParams, chat: bool, state: TokenStream,
                 images: Optional[list[Any]] = None) -> tuple[list[int], int]:
        """(the prompt's ids, the max new tokens), with ``state.prompt_tokens`` set and the context
        ready for ``generate(ids)``: the longest prefix it shares with the live (or a saved) context
        is kept. A text model takes no ``images`` (the vision subclass evaluates them)."""
        ids = self._prompt_ids(prompt, chat)
        state.prompt_tokens = len(ids)
        max_new = check_prompt_fits(len(ids), params, self.context_length)
        self._reuse_prefix(llm, ids)
        return ids, max_new

    def _generator(self, llm: Any, ids: list[int], params: SamplingParams, max_new: int, state: TokenStream):
        ids_list, stop_strings = split_stops(params, self._token_of)
        stop_ids = set(ids_list)
        longest = max((len(s) for s in stop_strings), default=0)
        if params.seed is not None:
            llm.set_seed(params.seed)
        temp, top_p, top_k, min_p = _sampler_args(params)
        proc = None
        if _Sampling.wanted(params):
            row = self.grammars.start(params.constraint, self._decode_ids) if params.constraint is not None else None
            proc = _Sampling(llm, params, self._n_vocab, row, temp)
            state.logprobs = proc.entries if params.logprobs else None
        state.finish_reason = "length"
        gen = llm.generate(ids, top_k=top_k, top_p=top_p, min_p=min_p, temp=temp,
                           repeat_penalty=params.repetition_penalty or 1.0, reset=True,
                           logits_processor=None if proc is None else [proc])
        return gen, (max_new, stop_ids, stop_strings, longest, params.keep_special_tokens, proc)

    def _tokens(self, llm: Any, gen: Iterator[int], setup: tuple, state: TokenStream,
                check_stops: bool) -> Iterator[str]:
        max_new, stop_ids, stop_strings, longest, keep_special, proc = setup
        # bytes of a character split over tokens wait in the decoder; when the reply ends they come out
        # as "\ufffd" (final=True), in a whole reply and a stream alike
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""

        def cut(piece: str) -> tuple[str, bool]:
            """(the piece up to a stop string, hit) when the engine checks stops itself."""
            nonlocal text
            if not (check_stops and stop_strings):
                return piece, False
            window_start = max(0, len(text) - longest)
            text += piece
            window = text[window_start:]
            hits = [window.find(s) for s in stop_strings if s in window]
            if not hits:
                return piece, False
            end = window_start + min(hits)
            return piece[:max(0, len(piece) - (len(text) - end))], True

        while True:
            with self._inflight.step():  # one token: evaluate, sample, detokenize
                tid = next(gen, None)
                if tid is None:
                    state.finish_reason = "stop"
                    break
                state.completion_tokens += 1
                if tid in stop_ids or tid in self._eog_ids:
                    state.finish_reason = "stop"
                    break
                done = proc is not None and proc.take(tid)   # the constraint's structure is complete
                # a request with tools keeps the special tokens its tool-call format writes
                piece = decoder.decode(token_bytes(llm, tid, keep_special))
            if piece:
                piece, hit = cut(piece)
                if piece:
                    yield piece
                if hit:
                    state.finish_reason = "stop"
                    return
            if done:
                state.finish_reason = "stop"
                break
            if state.completion_tokens >= max_new:
                break
        piece, hit = cut(decoder.decode(b"", final=True))
        if piece:
            yield piece
        if hit:
            state.finish_reason = "stop"

    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> Completion:
        return self._complete(prompt, params, chat)

    def _complete(self, prompt: str, params: SamplingParams, chat: bool,
                  images: Optional[list[Any]] = None) -> Completion:
        self._check_request(params)
        state = TokenStream()
        text = "".join(self._run(prompt, params, chat, state, check_stops=True, images=images))
        return Completion(text, state.prompt_tokens, state.completion_tokens, state.finish_reason,
                          logprobs=state.logprobs)

    def stream(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> TokenStream:
        self._check_request(params)
        return _LlamaTokenStream(self, prompt, params, chat)

    def memory_bytes(self) -> Optional[int]:
        """The load's estimate, plus the saved contexts of other conversations now held."""
        return None if self._estimate is None else self._estimate + self._states.bytes

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            self._states.clear()
            self._inflight.cancel()
            # free the context now only when no call runs in it (terminate_model waited for them);
            # otherwise the last reference, held by the running call, frees it when that call ends
            if self._inflight.idle:
                try:
                    llm.close()
                except Exception:
                    pass


class _LlamaTokenStream(TokenStream):
    def __init__(self, model: LlamaCppLLM, prompt: str, params: SamplingParams, chat: bool,
                 images: Optional[list[Any]] = None):
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.logprobs = None
        self._iter = model._run(prompt, params, chat, self, check_stops=False, images=images)

    def close(self) -> None:
        self._iter.close()
