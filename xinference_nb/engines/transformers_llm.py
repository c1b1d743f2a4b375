"""LLMs through transformers: AutoModelForCausalLM with an accelerate device map, the dtype of the
config, and optional 4-bit / 8-bit quantization through bitsandbytes.

Launch options read here: ``trust_remote_code`` (off unless given), ``dtype`` / ``torch_dtype``,
``context_length``, ``revision``, ``attn_implementation``, ``quantization_config`` (a dict for
BitsAndBytesConfig), ``enable_thinking`` (the chat template's default), ``max_num_seqs`` (how many
requests share one forward pass, default 16; 1 runs one ``generate`` per request) and
``batch_wait_ms`` (how long an idle model waits for more requests before it starts a batch).

Concurrent requests are batched continuously by ``batching_llm.BatchScheduler``.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

from ..chat import (ChatLLM, Completion, SamplingParams, TokenStream, build_chat_format, check_prompt_fits,
                    incremental_deltas, read_own_chat_template, split_stops)
from ..errors import InferenceError, LaunchError
from . import InFlight, LoadRequest

QUANTIZATIONS = ("none", "4-bit", "8-bit")
DEFAULT_MAX_NUM_SEQS = 16
DEFAULT_BATCH_WAIT_MS = 2.0


def _bnb_config(quantization: Optional[str], options: dict[str, Any], model_format: Optional[str]):
    q = (quantization or "none").strip().lower()
    extra = options.get("quantization_config") or {}
    if model_format not in (None, "pytorch"):
        return None  # gptq / awq / fp8 / bnb checkpoints carry their own quantization_config
    if q in ("none", ""):
        if extra:
            from transformers import BitsAndBytesConfig

            return BitsAndBytesConfig(**extra)
        return None
    if q not in ("4-bit", "8-bit"):
        raise LaunchError(f"quantization {quantization!r} is not supported by the transformers engine for "
                          f"pytorch weights; use one of {', '.join(QUANTIZATIONS)} (GGUF quantizations such as "
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


def load(request: LoadRequest) -> "TransformersLLM":
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    opts = request.options
    source = request.source
    trust = opts.get("trust_remote_code") is True   # parsed by options.parse_launch_options: a real bool
    common: dict[str, Any] = {"trust_remote_code": trust}
    if opts.get("revision"):
        common["revision"] = opts["revision"]
    quant_config = _bnb_config(request.quantization, opts, request.model_format)
    request.progress("loading tokenizer", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    request.progress("loading weights", 0.15)
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
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    try:
        model.eval()
        request.progress("preparing chat", 0.95)
        llm = TransformersLLM(model, tokenizer, request)
    except BaseException:
        del model
        raise
    if plan.uses_cuda:
        torch.cuda.synchronize()
    request.progress("ready", 1.0)
    return llm


class _EventCriteria:
    """A StoppingCriteria that stops when one of its events is set (a consumer closed the stream,
    or the model was terminated)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class TransformersLLM(ChatLLM):
    def __init__(self, model: Any, tokenizer: Any, request: LoadRequest):
        self.model = model
        self.tokenizer = tokenizer
        self.model_uid = request.model_uid
        opts = request.options
        cfg = getattr(model, "config", None)
        max_pos = getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "max_position_embeddings", None)
        spec_ctx = getattr(request.spec, "context_length", None)
        explicit = opts.get("context_length")
        if explicit:
            self.context_length = int(explicit)
        else:
            known = [c for c in (spec_ctx, max_pos) if c]
            self.context_length = int(min(known)) if known else 2048
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(tokenizer.eos_token_id)
        self._added = dict(tokenizer.get_added_vocab())
        local = request.model_path if request.model_path is not None and Path(request.model_path).is_dir() else None
        own = read_own_chat_template(local) if local else None
        if own is None:
            tmpl = getattr(tokenizer, "chat_template", None)
            if isinstance(tmpl, dict):
                tmpl = tmpl.get("default") or next(iter(tmpl.values()), None)
            own = tmpl if isinstance(tmpl, str) else None
        variables = {k: v for k, v in getattr(tokenizer, "special_tokens_map", {}).items() if isinstance(v, str)}
        if opts.get("enable_thinking") is not None:
            variables["enable_thinking"] = opts["enable_thinking"]
        self.chat_format = build_chat_format(request.spec, own, eos_token_ids=eos_ids, template_vars=variables,
                                             token_of=self._token_of)
        vocab = getattr(cfg, "vocab_size", None) or len(tokenizer)
        # a built-in family's ids may not exist in this tokenizer (own files launched as that family)
        self.chat_format.stop_token_ids = [i for i in self.chat_format.stop_token_ids if 0 <= i < max(vocab, len(tokenizer))]
        self._sample_by_default = bool(getattr(gen_cfg, "do_sample", False))
        self.pad_token_id = (getattr(gen_cfg, "pad_token_id", None) if getattr(gen_cfg, "pad_token_id", None)
                             is not None else tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                             else (eos_ids[0] if eos_ids else None))
        self.device = getattr(model, "device", None)
        self._lock = threading.Lock()
        # generation runs in in-flight steps that terminate_model cancels (stopping criteria) and waits for
        self._inflight = InFlight(request.model_uid)
        self.max_num_seqs = int(opts.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS)
        wait = opts.get("batch_wait_ms")
        self.batch_wait_ms = float(DEFAULT_BATCH_WAIT_MS if wait is None else wait)
        self._gen_defaults = gen_cfg
        self.scheduler = None
        if self.max_num_seqs > 1:
            from .batching_llm import BatchScheduler, supports_batching

            if supports_batching(model):
                self.scheduler = BatchScheduler(model, tokenizer, self._inflight, request.model_uid,
                                                max_num_seqs=self.max_num_seqs, batch_wait_ms=self.batch_wait_ms,
                                                pad_token_id=self.pad_token_id, device=self.device)

    # ------------------------------------------------------------------ helpers
    def _token_of(self, text: str) -> Optional[int]:
        """The id of ``text`` when the tokenizer has it as one added/special token."""
        return self._added.get(text)

    def _encode(self, prompt: str, chat: bool):
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
        input_ids = enc["input_ids"]
        attention = enc.get("attention_mask")
        if self.device is not None and str(self.device) != "cpu":
            input_ids = input_ids.to(self.device)
            attention = attention.to(self.device) if attention is not None else None
        return input_ids, attention

    def _gen_kwargs(self, params: SamplingParams, max_new: int) -> tuple[dict[str, Any], list[int]]:
        stop_ids, strings = split_stops(params, self._token_of)
        kw: dict[str, Any] = {"max_new_tokens": max_new}
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
    def _finish(new_ids: list[int], stop_ids: list[int], max_new: int) -> str:
        if new_ids and new_ids[-1] in stop_ids:
            return "stop"
        return "length" if len(new_ids) >= max_new else "stop"

    def _batch_request(self, prompt: str, params: SamplingParams, chat: bool):
        """The scheduler's request for one call: prompt ids, limits, stops, sampling and seed."""
        import torch

        from .batching_llm import BatchRequest

        ids = self.tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
        max_new = check_prompt_fits(len(ids), params, self.context_length)
        ids_list, strings = split_stops(params, self._token_of)
        stop_ids = set(ids_list)
        if not stop_ids:   # as generate(): the generation config's end-of-sequence ids
            eos = getattr(self._gen_defaults, "eos_token_id", None)
            stop_ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        gen = self._gen_defaults
        sample = self._sample_by_default if params.temperature is None else params.temperature > 0
        temperature = params.temperature if params.temperature is not None else getattr(gen, "temperature", None)
        top_p = params.top_p if params.top_p is not None else getattr(gen, "top_p", None)
        top_k = params.top_k if params.top_k is not None else getattr(gen, "top_k", None)
        generator = None
        if sample and params.seed is not None:
            device = self.device if self.device is not None and str(self.device) != "cpu" else "cpu"
            generator = torch.Generator(device=device).manual_seed(params.seed)
        return BatchRequest(list(ids), params, max_new, stop_ids, strings, sample,
                            temperature=float(temperature or 1.0), top_p=top_p,
                            top_k=top_k if top_k and top_k > 0 else None, generator=generator)

    # ------------------------------------------------------------------ ChatLLM
    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False) -> Completion:
        import torch

        if self.scheduler is not None:
            from .batching_llm import wait_result

            self._inflight.check()
            req = self.scheduler.submit(self._batch_request(prompt, params, chat))
            wait_result(req)
            text = self.tokenizer.decode(req.ids, skip_special_tokens=True)
            return Completion(text, len(req.prompt_ids), len(req.ids), req.finish_reason)
        from transformers import StoppingCriteriaList

        inflight = self._inflight
        with inflight.step():
            model, tokenizer = self.model, self.tokenizer
            input_ids, attention = self._encode(prompt, chat)
            n_prompt = int(input_ids.shape[1])
            max_new = check_prompt_fits(n_prompt, params, self.context_length)
            kw, stop_ids = self._gen_kwargs(params, max_new)
            try:
                with torch.inference_mode():
                    out = model.generate(input_ids=input_ids, attention_mask=attention,
                                         stopping_criteria=StoppingCriteriaList([_EventCriteria(inflight.event)]),
                                         **kw)
            except (ValueError, TypeError) as exc:
                raise InferenceError(f"generation failed: {exc}") from None
            inflight.check()  # terminated while generating: the text was cut short
            new_ids = out[0, n_prompt:].tolist()
            text = tokenizer.decode(new_ids, skip_special_tokens=True)
        return Completion(text, n_prompt, len(new_ids), self._finish(new_ids, stop_ids, max_new))

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
            return _HFTokenStream(self, input_ids, attention, kw, n_prompt, max_new, stop_ids)

    def memory_bytes(self) -> Optional[int]:
        try:
            return int(self.model.get_memory_footprint())
        except Exception:
            return None

    def close(self) -> None:
        self._inflight.cancel()
        for name in ("model", "tokenizer"):
            if hasattr(self, name):
                delattr(self, name)


class _HFTokenStream(TokenStream):
    """Generation in a background thread, tokens handed over through a queue and decoded
    incrementally here; ``close()`` stops generation at the next step."""

    _DONE = object()

    def __init__(self, llm: TransformersLLM, input_ids: Any, attention: Any, kw: dict[str, Any], n_prompt: int,
                 max_new: int, stop_ids: list[int]):
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
                with inflight.step(), torch.inference_mode():
                    llm.model.generate(input_ids=input_ids, attention_mask=attention, streamer=_Streamer(),
                                       stopping_criteria=StoppingCriteriaList(
                                           [_EventCriteria(self._stop, inflight.event)]), **kw)
            except BaseException as exc:  # handed to the consumer
                self._error = exc
            finally:
                q.put(self._DONE)

        self._thread = threading.Thread(target=run, name=f"xinf-generate-{llm.model_uid}", daemon=True)
        self._thread.start()
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

        yield from incremental_deltas(self._tok, new_ids(), stopped=self._stop)
        self._thread.join()  # a terminated model's generation stops at its next token
        self._finished = True
        self.finish_reason = TransformersLLM._finish(ids, self._stop_ids, self._max_new)
        if self._inflight.cancelled and not self._stop.is_set():
            raise self._inflight.error()
        if self._error is not None and not self._stop.is_set():
            raise InferenceError(f"generation failed: {type(self._error).__name__}: {self._error}")

    _finished = False

    def close(self) -> None:
        if not self._finished and not self._stop.is_set():
            self._stop.set()
            self.finish_reason = "stop"
        self._iter.close()
        self._thread.join(timeout=30)
