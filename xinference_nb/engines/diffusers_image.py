"""Image models through diffusers.

The pipeline is loaded from the model folder with ``AutoPipelineForText2Image`` (falling back to
``DiffusionPipeline`` for families the auto class does not map), with the spec's
``default_model_config`` plus launch_model's kwargs as ``from_pretrained`` arguments. Placement
follows the launch's DevicePlan: one CUDA device → ``pipe.to("cuda:N")`` in float16, several →
``device_map="balanced"``, none → CPU in float32; ``cpu_offload=True`` enables model CPU offload (a GPU
launch only). ``vae_tiling`` / ``vae_slicing`` switch the VAE's; ``gguf_model_path`` loads the
transformer (or UNet) from a GGUF file with diffusers' GGUFQuantizationConfig. Nothing is dropped: a
from_pretrained keyword diffusers would ignore is refused, and the Xinference catalog's
default_model_config keys this engine cannot apply (``quantize``...) warn that they had no effect.

``text_to_image`` returns Xinference's shape ``{"created": ts, "data": [{"url": path, "b64_json":
None}, ...]}``; "url" writes PNG files under ``$XINFERENCE_NB_HOME/image/`` and returns their paths,
"b64_json" returns base64 PNGs. ``default_generate_config`` gives defaults for every call.

LoRA (Xinference's ``peft_model_config``): each adapter of ``lora_list`` is loaded with
``pipe.load_lora_weights(local_path, adapter_name=lora_name, **image_lora_load_kwargs)``, then all are
fused into the weights with ``pipe.fuse_lora(**image_lora_fuse_kwargs)``: every call uses them.
"""
from __future__ import annotations

import base64
import importlib
import inspect
import io
import logging
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional

from ..errors import InferenceError, LaunchError
from ..metadata.gguf import looks_like_gguf
from ..metadata.hf import read_json_object
from .options import ENGINE_OPTIONS, UNSUPPORTED, LoraAdapter, image_lora_kwargs, lora_adapters
from . import EngineModel, LoadRequest
from ..memory import release_memory
from .flexible import backend_options, torch_memory_bytes

# Xinference's model-config keys that are not from_pretrained arguments
_PLACEMENT_OPTIONS = ("cpu_offload", "sequential_cpu_offload", "attention_slicing", "vae_tiling", "vae_slicing")
_CALL_ALIASES = {"steps": "num_inference_steps"}


def image_dir() -> Path:
    home = os.environ.get("XINFERENCE_NB_HOME") or str(Path.home() / ".xinference_nb")
    return Path(home).expanduser() / "image"


def parse_size(size: Any) -> Optional[tuple[int, int]]:
    """"1024*1024", "512x768", (w, h) → (width, height); None/"" → None (the pipeline's default)."""
    if size is None or size == "":
        return None
    if isinstance(size, (tuple, list)) and len(size) == 2:
        w, h = size
    elif isinstance(size, str) and re.fullmatch(r"\s*\d+\s*[*xX×,:]\s*\d+\s*", size):
        w, h = (int(p) for p in re.split(r"[*xX×,:]", size))
    else:
        raise InferenceError(f"size={size!r} is not a size; write \"width*height\" such as \"512*512\"")
    w, h = int(w), int(h)
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise InferenceError(f"size={size!r}: width and height must be positive multiples of 8 (e.g. \"512*512\")")
    return w, h


def _dtype(value: Any) -> Any:
    import torch

    if isinstance(value, str):
        name = value.replace("torch.", "")
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise LaunchError(f"torch_dtype={value!r} is not a torch dtype; use \"float16\", \"bfloat16\" or \"float32\"")
        return dtype
    return value


def _to_pil(image: Any, field: str) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    data = None
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        text = str(image)
        if text.startswith("data:image"):
            text = text.split(",", 1)[1]
        if os.path.isfile(text):
            return Image.open(text).convert("RGB")
        try:
            data = base64.b64decode(text, validate=True)
        except Exception:
            raise InferenceError(f"{field}: {text[:60]!r} is neither an image file nor base64 image data") from None
    if data is None:
        raise InferenceError(f"{field} must be a PIL image, image bytes, a file path or base64 data, "
                             f"got {type(image).__name__}")
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:
        raise InferenceError(f"{field}: the bytes are not an image ({exc})") from None


class DiffusersImageModel(EngineModel):
    model_type = "image"
    abilities = ("text2image", "image2image", "inpainting")

    def __init__(self, model_uid: str, pipe: Any, generate_defaults: dict[str, Any], device: str,
                 uses_cuda: bool = False):
        self.model_uid = model_uid
        self.pipe = pipe
        self.generate_defaults = dict(generate_defaults or {})
        self.device = device
        self._uses_cuda = uses_cuda
        self._derived: dict[str, Any] = {}

    # ----------------------------------------------------------------- helpers
    def _pipeline(self, kind: str) -> Any:
        if self.pipe is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        if kind == "text2image":
            return self.pipe
        if kind not in self._derived:
            import diffusers

            auto = {"image2image": diffusers.AutoPipelineForImage2Image,
                    "inpainting": diffusers.AutoPipelineForInpainting}[kind]
            try:
                self._derived[kind] = auto.from_pipe(self.pipe)
            except Exception as exc:
                raise InferenceError(f"{type(self.pipe).__name__} has no {kind} variant ({exc})") from None
        return self._derived[kind]

    def _call_kwargs(self, pipe: Any, size: Any, n: int, kwargs: dict[str, Any], method: str) -> dict[str, Any]:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise InferenceError(f"n={n!r}: pass a positive whole number of images")
        kwargs.pop("model", None)
        kwargs.pop("user", None)
        merged = {**self.generate_defaults, **kwargs}
        for old, new in _CALL_ALIASES.items():
            if old in merged:
                merged.setdefault(new, merged.pop(old))
        seed = merged.pop("seed", None)
        wh = parse_size(size)
        if wh is not None:
            merged["width"], merged["height"] = wh
        merged["num_images_per_prompt"] = n
        try:
            params = inspect.signature(pipe.__call__).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        # diffusers pipelines take **kwargs only for deprecated callbacks: check against named parameters
        named = {k for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if named:
            unknown = sorted(k for k in merged if k not in named)
            if unknown:
                allowed = sorted(k for k in named if k not in ("self", "prompt", "image", "mask_image"))
                raise InferenceError(f"{method}() got argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                     f"that {type(pipe).__name__} does not take; it takes {', '.join(allowed)}")
        if seed is not None:
            import torch

            if not isinstance(seed, int) or isinstance(seed, bool):
                raise InferenceError(f"seed={seed!r} must be a whole number")
            merged["generator"] = torch.Generator(device="cpu").manual_seed(seed)
        return merged

    def _run(self, pipe: Any, method: str, **kwargs: Any) -> list[Any]:
        try:
            result = pipe(**kwargs)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"{method}() failed on its arguments: {exc}") from exc
        return list(result.images)

    def _result(self, images: list[Any], response_format: str) -> dict[str, Any]:
        created = int(time.time())
        if response_format == "url":
            folder = image_dir()
            folder.mkdir(parents=True, exist_ok=True)
            data = []
            for img in images:
                path = folder / f"{uuid.uuid4().hex}.png"
                img.save(path, format="PNG")
                data.append({"url": str(path), "b64_json": None})
            return {"created": created, "data": data}
        out = []
        for img in images:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            out.append({"url": None, "b64_json": base64.b64encode(buf.getvalue()).decode("ascii")})
        return {"created": created, "data": out}

    @staticmethod
    def _check_format(response_format: str) -> None:
        if response_format not in ("url", "b64_json"):
            raise InferenceError(f"response_format={response_format!r} is not supported; use \"url\" (PNG files) "
                                 "or \"b64_json\"")

    @staticmethod
    def _check_prompt(prompt: Any) -> None:
        if not isinstance(prompt, str) and not (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)):
            raise InferenceError(f"prompt must be a string, got {type(prompt).__name__}")

    # ----------------------------------------------------------------- Xinference methods
    def text_to_image(self, prompt: str, n: int = 1, size: Optional[str] = "1024*1024",
                      response_format: str = "url", **kwargs: Any) -> dict[str, Any]:
        """Generate ``n`` images of ``size`` ("width*height") from ``prompt``; extra kwargs
        (negative_prompt, num_inference_steps, guidance_scale, seed, ...) go to the pipeline."""
        self._check_prompt(prompt)
        self._check_format(response_format)
        pipe = self._pipeline("text2image")
        call = self._call_kwargs(pipe, size, n, kwargs, "text_to_image")
        return self._result(self._run(pipe, "text_to_image", prompt=prompt, **call), response_format)

    def image_to_image(self, image: Any, prompt: Optional[str] = None, negative_prompt: Optional[str] = None,
                       n: int = 1, size: Optional[str] = None, response_format: str = "url",
                       **kwargs: Any) -> dict[str, Any]:
        self._check_format(response_format)
        pipe = self._pipeline("image2image")
        init = _to_pil(image, "image")
        if negative_prompt is not None:
            kwargs["negative_prompt"] = negative_prompt
        call = self._call_kwargs(pipe, None, n, kwargs, "image_to_image")
        wh = parse_size(size)
        if wh is not None:
            init = init.resize(wh)
        return self._result(self._run(pipe, "image_to_image", prompt=prompt or "", image=init, **call),
                            response_format)

    def inpainting(self, image: Any, mask_image: Any, prompt: Optional[str] = None,
                   negative_prompt: Optional[str] = None, n: int = 1, size: Optional[str] = None,
                   response_format: str = "url", **kwargs: Any) -> dict[str, Any]:
        self._check_format(response_format)
        pipe = self._pipeline("inpainting")
        init, mask = _to_pil(image, "image"), _to_pil(mask_image, "mask_image")
        if negative_prompt is not None:
            kwargs["negative_prompt"] = negative_prompt
        wh = parse_size(size) or init.size
        call = self._call_kwargs(pipe, f"{wh[0]}*{wh[1]}", n, kwargs, "inpainting")
        return self._result(self._run(pipe, "inpainting", prompt=prompt or "", image=init, mask_image=mask, **call),
                            response_format)

    # ----------------------------------------------------------------- lifecycle
    def memory_bytes(self) -> Optional[int]:
        if self.pipe is None:
            return 0
        return torch_memory_bytes(*[c for c in getattr(self.pipe, "components", {}).values() if hasattr(c, "parameters")])

    def close(self) -> None:
        if self.pipe is None:
            return
        self._derived.clear()
        self.pipe = None
        release_memory()


def _pipeline_utils_names() -> set[str]:
    try:
        from diffusers.pipelines import pipeline_utils

        return set(vars(pipeline_utils))
    except Exception:  # pragma: no cover
        return set()


def check_lora_paths(adapters: list[LoraAdapter]) -> None:
    """LaunchError for an adapter path that does not exist (before the pipeline loads)."""
    for a in adapters:
        if not Path(a.path).expanduser().exists():
            raise LaunchError(f"peft_model_config lora_list adapter {a.name!r} ({a.path}) does not exist; local_path is "
                              "a diffusers LoRA file (.safetensors) or the folder holding it")


def apply_loras(pipe: Any, adapters: list[LoraAdapter], load_kwargs: dict[str, Any],
                fuse_kwargs: dict[str, Any]) -> Optional[str]:
    """Load every adapter under its lora_name, then fuse them; what went wrong (None: all applied).
    Returns instead of raising so that no traceback keeps the pipeline alive after a failure."""
    current = adapters[0]
    try:
        for current in adapters:
            pipe.load_lora_weights(str(Path(current.path).expanduser()), adapter_name=current.name, **load_kwargs)
            loaded = {n for names in pipe.get_list_adapters().values() for n in names}
            if current.name not in loaded:   # diffusers only warns when no key matches a component
                return (f"peft_model_config lora_list adapter {current.name!r} ({current.path}) matched no layer of "
                        f"{type(pipe).__name__}: is it a LoRA of this kind of pipeline?")
        current = None
        pipe.fuse_lora(**fuse_kwargs)
    except Exception as exc:  # noqa: BLE001 - diffusers/peft say why in many classes
        what = (f"peft_model_config lora_list adapter {current.name!r} ({current.path})" if current is not None
                else "fuse_lora with image_lora_fuse_kwargs")
        return f"{what} failed: {type(exc).__name__}: {str(exc)[:400]}"
    return None


# ------------------------------------------------------------------------------------------------
# options applied or refused, never dropped
# ------------------------------------------------------------------------------------------------

def no_effect_in_document(config: dict[str, Any]) -> None:
    """Keys of a document's default_model_config that Xinference's catalog uses and this engine cannot
    apply (on-the-fly quantization, GGUF / Lightning variants from the hub): taken out with a warning
    that they had no effect. Given as launch options they are refused (``options.UNSUPPORTED``)."""
    for key in [k for k in config if k in UNSUPPORTED]:
        warnings.warn(f"default_model_config {key}={config.pop(key)!r} had no effect: {UNSUPPORTED[key]}",
                      UserWarning, stacklevel=3)


def enable_vae(pipe: Any, what: str) -> None:
    """vae_tiling / vae_slicing on the pipeline's VAE; a pipeline without one that can is refused."""
    method = getattr(getattr(pipe, "vae", None), f"enable_{what}", None)
    if method is None:
        raise LaunchError(f"vae_{what}=True: {type(pipe).__name__} has no VAE with enable_{what}(); drop vae_{what}")
    method()


def gguf_component(source: Any, gguf_path: str, dtype_key: str, dtype: Any) -> tuple[str, Any]:
    """(component name, model) for ``gguf_model_path``: the pipeline's transformer (or UNet) read from
    the GGUF file with diffusers' GGUFQuantizationConfig (weights stay quantized, computed in
    ``dtype``), its config from the model folder's component."""
    from diffusers import GGUFQuantizationConfig

    path = Path(gguf_path).expanduser()
    if not path.is_file() or not looks_like_gguf(path):
        raise LaunchError(f"gguf_model_path={gguf_path!r} is not a GGUF file (missing, or without the GGUF magic "
                          "bytes); pass the .gguf file of the model's transformer")
    index = read_json_object(Path(source) / "model_index.json", "diffusers model index")
    name = next((n for n in ("transformer", "unet") if isinstance(index.get(n), list) and index[n][:1] != [None]),
                None)
    if name is None:
        raise LaunchError(f"gguf_model_path: {source} has no transformer or unet component for the GGUF weights")
    module, cls_name = index[name][:2]
    cls = getattr(importlib.import_module("diffusers"), cls_name, None) if module == "diffusers" else None
    if cls is None or not hasattr(cls, "from_single_file"):
        raise LaunchError(f"gguf_model_path: the {name} class {module}.{cls_name} cannot load a GGUF file with "
                          "diffusers' from_single_file")
    try:
        model = cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                                     config=str(source), subfolder=name, **{dtype_key: dtype})
    except Exception as exc:  # noqa: BLE001 - diffusers says why in many classes
        raise LaunchError(f"gguf_model_path={gguf_path!r}: diffusers could not load it as the {name} "
                          f"({cls_name}): {type(exc).__name__}: {str(exc)[:300]}") from None
    return name, model


class IgnoredKwargs(logging.Handler):
    """While a pipeline loads, catches diffusers' "Keyword arguments {...} are not expected by X and
    will be ignored", so an option that reached from_pretrained and was dropped is refused instead."""

    LOGGER = "diffusers.pipelines.pipeline_utils"

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "are not expected by" in text and "will be ignored" in text:
            self.messages.append(text)

    def __enter__(self) -> "IgnoredKwargs":
        logger = logging.getLogger(self.LOGGER)
        self._level = logger.level
        if not logger.isEnabledFor(logging.WARNING):
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._level)

    def check(self, pipe: Any, config: dict[str, Any]) -> None:
        names = sorted(k for k in config if any(f"'{k}'" in m for m in self.messages))
        if self.messages:
            components = ", ".join(sorted(getattr(pipe, "components", {}) or {}))
            raise LaunchError(f"{', '.join(names) or self.messages[0]}: not an argument of "
                              f"{type(pipe).__name__}.from_pretrained (diffusers would ignore it); the diffusers "
                              f"engine takes {', '.join(sorted(ENGINE_OPTIONS[('image', 'diffusers')]))}, the "
                              f"pipeline's components ({components}) and from_pretrained's loading arguments "
                              "(variant, use_safetensors, low_cpu_mem_usage, device_map, ...)")


def _from_pretrained(source: Any, config: dict[str, Any]) -> Any:
    """The pipeline in ``source``: diffusers' text-to-image auto pipeline, else (a folder with
    model_index.json, no device_map) its DiffusionPipeline; an argument diffusers ignores is refused."""
    import diffusers

    with IgnoredKwargs() as ignored:
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(source, **config)
        except (ValueError, KeyError) as auto_exc:
            if "device_map" in config or not (Path(source) / "model_index.json").is_file():
                raise auto_exc
            pipe = diffusers.DiffusionPipeline.from_pretrained(source, **config)
    ignored.check(pipe, config)
    return pipe


def _place(pipe: Any, placement: dict[str, Any], device_mapped: bool, device: str) -> Any:
    """The pipeline on its device (CPU offload, or moved unless a device_map placed it), with the
    memory options of ``placement`` enabled and diffusers' progress bars off."""
    if placement.get("sequential_cpu_offload"):
        pipe.enable_sequential_cpu_offload()
    elif placement.get("cpu_offload"):
        pipe.enable_model_cpu_offload()
    elif not device_mapped:
        pipe = pipe.to(device)
    if placement.get("attention_slicing"):
        pipe.enable_attention_slicing()
    for what in ("tiling", "slicing"):
        if placement.get(f"vae_{what}"):
            enable_vae(pipe, what)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def load(request: LoadRequest) -> DiffusersImageModel:
    import diffusers  # noqa: F401 - imported before the options are read: a broken install fails as itself
    import torch

    spec = request.spec
    config = dict(spec.default_model_config or {})
    adapters = lora_adapters(request.options)
    check_lora_paths(adapters)
    lora_load, lora_fuse = image_lora_kwargs(request.options)
    config.update(backend_options(request.options))
    placement = {k: config.pop(k) for k in _PLACEMENT_OPTIONS if k in config}
    no_effect_in_document(config)
    gguf_path = config.pop("gguf_model_path", None)
    device = request.device
    offload = [k for k in ("cpu_offload", "sequential_cpu_offload") if placement.get(k)]
    if offload and not device.uses_cuda:
        raise LaunchError(f"{offload[0]}=True moves the pipeline's parts between a GPU and the CPU, and this launch "
                          "runs on the CPU (no GPU chosen or found); drop it, or launch on a GPU")
    dtype = config.pop("torch_dtype", None) or config.pop("dtype", None)
    dtype = _dtype(dtype) if dtype is not None else (torch.float16 if device.uses_cuda else torch.float32)
    # diffusers >= 0.36 names it ``dtype`` (``torch_dtype`` still works there, with a warning)
    dtype_key = "dtype" if "_resolve_dtype" in _pipeline_utils_names() else "torch_dtype"
    config[dtype_key] = dtype
    if len(device.gpu_ids) > 1 and not placement.get("cpu_offload"):
        config.setdefault("device_map", "balanced")
    source = request.source
    request.progress("load", 0.1)
    pipe = None
    try:
        if gguf_path is not None:
            name, config[name] = gguf_component(source, gguf_path, dtype_key, dtype)
        pipe = _from_pretrained(source, config)
        request.progress("place", 0.8)
        pipe = _place(pipe, placement, "device_map" in config, device.device)
        if adapters:
            request.progress("LoRA adapters", 0.9)
            problem = apply_loras(pipe, adapters, lora_load, lora_fuse)
            if problem is not None:
                raise LaunchError(f"image model {request.model_name!r}: {problem}")
        model = DiffusersImageModel(request.model_uid, pipe, spec.default_generate_config or {}, device.device,
                                    device.uses_cuda)
    except LaunchError:
        pipe = None
        release_memory()
        raise
    except Exception as exc:
        pipe = None
        release_memory()
        raise LaunchError(f"image model {request.model_name!r}: diffusers could not load {source}: "
                          f"{type(exc).__name__}: {exc}. model_uri must be a diffusers pipeline folder "
                          "(with model_index.json)") from exc
    request.progress("ready", 1.0)
    return model
