"""Vision LLMs through transformers: AutoProcessor + AutoModelForImageTextToText.

The engine of an LLM registration with the ``vision`` ability (``ENGINES`` picks it through the
transformers row's ``vision_loader``). Everything but the inputs is ``TransformersLLM``'s: launch
options, quantization, device map, stops, sampling, streaming and cancellation. A chat turn's
images (decoded by ``chat_images.take_images``) go through the processor together with the rendered
prompt, which expands each image placeholder of the chat template into the model's image tokens.

Chat template: the registration's (a custom one), else the model's files (``chat_template.jinja`` /
``chat_template.json``, written by the processor), else the processor's or tokenizer's, else the
built-in family's (``chat.choose_chat_template``).

Requests run one ``generate`` each: the continuous-batching scheduler (``batching_llm``) is for text
prompts, so ``max_num_seqs`` above 1 and ``batch_wait_ms`` are refused here.
"""
from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from ..chat import Completion, SamplingParams, TokenStream
from ..errors import InferenceError, LaunchError
from . import LoadRequest
from .transformers_llm import TransformersLLM, pretrained_kwargs

# launch options of the transformers LLM engine this engine applies (options.ENGINE_OPTIONS names them
# for the engine; any other one given is refused here rather than dropped)
APPLIED_OPTIONS = ("trust_remote_code", "dtype", "torch_dtype", "context_length", "attn_implementation",
                   "quantization_config", "enable_thinking", "max_num_seqs")


def _check_options(options: dict[str, Any]) -> None:
    from .options import ENGINE_OPTIONS

    taken = ENGINE_OPTIONS.get(("LLM", "transformers"), ())
    refused = [k for k in options if k in taken and k not in APPLIED_OPTIONS]
    seqs = options.get("max_num_seqs")
    if seqs is not None and seqs != 1:
        refused.append("max_num_seqs")
    if refused:
        raise LaunchError(f"the transformers engine for vision models does not take "
                          f"{', '.join(sorted(set(refused)))}; it takes "
                          f"{', '.join(k for k in APPLIED_OPTIONS if k != 'max_num_seqs')} and max_num_seqs=1 "
                          "(vision requests run one generate each: continuous batching is for text models)")


def load(request: LoadRequest) -> "TransformersVision":
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _check_options(request.options)
    source = request.source
    common, kwargs = pretrained_kwargs(request)
    request.progress("loading processor", 0.05)
    try:
        processor = AutoProcessor.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else ""
        raise LaunchError(f"{request.model_name!r} is registered with the vision ability, but its processor could "
                          f"not be loaded from {source} ({type(exc).__name__}: {why}"
                          "): a vision model needs its processor files (processor_config.json or "
                          "preprocessor_config.json); remove 'vision' from model_ability to chat in text only"
                          ) from None
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise LaunchError(f"{request.model_name!r} is registered with the vision ability, but {source} holds a "
                          f"{type(processor).__name__}, not an image-text processor (a tokenizer and an image "
                          "processor): a vision model needs its processor files (processor_config.json or "
                          "preprocessor_config.json); remove 'vision' from model_ability to chat in text only")
    request.progress("loading weights", 0.15)
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    try:
        model.eval()
        request.progress("preparing chat", 0.95)
        llm = TransformersVision(model, processor, request)
    except BaseException:
        del model
        raise
    if request.device.uses_cuda:
        torch.cuda.synchronize()
    request.progress("ready", 1.0)
    return llm


class TransformersVision(TransformersLLM):
    """A TransformersLLM whose chat turns may carry images (``complete`` / ``stream`` take ``images=``)."""

    abilities = ("generate", "chat", "vision")

    def __init__(self, model: Any, processor: Any, request: LoadRequest):
        self.processor = processor
        tokenizer = processor.tokenizer
        if not getattr(tokenizer, "chat_template", None) and isinstance(getattr(processor, "chat_template", None),
                                                                        str):
            tokenizer.chat_template = processor.chat_template   # TransformersLLM reads the tokenizer's
        # one generate per request: the batching scheduler feeds token ids only
        one_at_a_time = dataclasses.replace(request, options={**request.options, "max_num_seqs": 1})
        super().__init__(model, tokenizer, one_at_a_time)
        self.image_token = getattr(processor, "image_token", None)
        self._call = threading.local()   # this call's images and extra inputs, see _encode / _gen_kwargs

    # A call's images ride on a thread-local from complete()/stream() to the two hooks of
    # TransformersLLM that build the inputs (_encode) and the generate keywords (_gen_kwargs); both run
    # in the calling thread before generation starts, so concurrent calls never see each other's.
    @contextmanager
    def _images(self, images: Optional[list[Any]]) -> Iterator[None]:
        self._call.images, self._call.extra = list(images or []), {}
        try:
            yield
        finally:
            self._call.images, self._call.extra = [], {}

    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False,
                 images: Optional[list[Any]] = None) -> Completion:
        with self._images(images):
            return super().complete(prompt, params, chat=chat)

    def stream(self, prompt: str, params: SamplingParams, *, chat: bool = False,
               images: Optional[list[Any]] = None) -> TokenStream:
        with self._images(images):
            return super().stream(prompt, params, chat=chat)

    def _encode(self, prompt: str, chat: bool):
        images = getattr(self._call, "images", None)
        if not images:
            return super()._encode(prompt, chat)
        if self.image_token and prompt.count(self.image_token) != len(images):
            raise InferenceError(f"the prompt has {prompt.count(self.image_token)} image placeholder(s) "
                                 f"({self.image_token!r}) for {len(images)} image(s): either a message's text holds "
                                 f"{self.image_token!r} (send images as image parts instead), or the chat template "
                                 "does not render image parts ({'type': 'image'}); use one that does, such as the "
                                 "model's own")
        try:
            inputs = self.processor(text=[prompt], images=images, return_tensors="pt", add_special_tokens=not chat)
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, RuntimeError) as exc:
            raise InferenceError(f"the processor refused these images: {type(exc).__name__}: {exc}") from None
        dtype = getattr(self.model, "dtype", None)
        on_device = self.device is not None and str(self.device) != "cpu"
        extra = {}
        for key, value in inputs.items():
            if key in ("input_ids", "attention_mask") or not hasattr(value, "to"):
                continue
            if value.is_floating_point() and dtype is not None:
                value = value.to(dtype)
            extra[key] = value.to(self.device) if on_device else value
        self._call.extra = extra
        input_ids, attention = inputs["input_ids"], inputs.get("attention_mask")
        if on_device:
            input_ids = input_ids.to(self.device)
            attention = attention.to(self.device) if attention is not None else None
        return input_ids, attention

    def _gen_kwargs(self, params: SamplingParams, max_new: int) -> tuple[dict[str, Any], list[int]]:
        kw, stop_ids = super()._gen_kwargs(params, max_new)
        kw.update(getattr(self._call, "extra", None) or {})   # pixel_values, image_sizes, image_grid_thw ...
        return kw, stop_ids

    def close(self) -> None:
        super().close()
        if hasattr(self, "processor"):
            del self.processor
