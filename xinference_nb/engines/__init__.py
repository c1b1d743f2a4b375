"""The engine table: which backend loads which model type and format.

Each engine is a loader function in one module of this package, imported only when a model
launches. A loader takes a ``LoadRequest`` and returns an ``EngineModel``; the manager does
everything around it (choosing the spec and engine, memory checks, progress, uids, cleanup).

Engine names follow Xinference's spelling ("transformers", "llama.cpp", "sentence_transformers");
lookups ignore case.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import EngineUnavailable, InferenceError, LaunchError
from ..threads import scope_cancelled

# the error of a call stopped by its thread's cancel scope (a batch method that was interrupted)
CANCELLED = "call cancelled: the batch it belonged to was interrupted (KeyboardInterrupt) or failed"


@dataclass
class DevicePlan:
    """Where to put the weights, from launch_model's n_gpu / gpu_idx.

    ``device_map`` is what accelerate understands ("auto", "cpu", or {"": "cuda:1"}); ``device``
    is one torch device string for pipelines that take a single device; ``n_gpu_layers`` is for
    llama.cpp (-1: all layers on the GPU, 0: CPU only)."""

    device_map: Any = "cpu"
    device: str = "cpu"
    gpu_ids: list[int] = field(default_factory=list)
    n_gpu_layers: int = 0

    @property
    def uses_cuda(self) -> bool:
        return bool(self.gpu_ids)


@dataclass
class LoadRequest:
    model_uid: str
    model_type: str
    model_name: str
    spec: Any                          # the whole document (LLMSpec, EmbeddingSpec, …)
    model_spec: Any = None             # the chosen model_specs entry (LLM, embedding, rerank), else None
    model_path: Optional[Path] = None  # local file/folder to load (hub files are fetched first); None: flexible only
    model_format: Optional[str] = None
    quantization: Optional[str] = None
    device: DevicePlan = field(default_factory=DevicePlan)
    options: dict[str, Any] = field(default_factory=dict)  # the rest of launch_model's kwargs
    progress: Callable[[str, float], None] = lambda step, fraction: None
    family_spec: Any = None            # LLM: the built-in document of spec.model_family (registry.builtin_family)

    @property
    def source(self) -> str:
        """What to pass to from_pretrained: the local path. The manager fetches a model_id's files into the
        Hugging Face cache before the load (hub.fetch), so only a flexible model's launcher gets a hub id."""
        if self.model_path is not None:
            return str(self.model_path)
        model_id = getattr(self.model_spec, "model_id", None) or getattr(self.spec, "model_id", None)
        if not model_id:
            raise LaunchError(f"{self.model_name}: no local files and no model_id; pass model_path=... or set "
                              "model_uri in the registration")
        return model_id


class EngineModel:
    """Base of what loaders return. Subclasses add the methods of their abilities."""

    model_type: str = ""
    abilities: tuple[str, ...] = ()
    _inflight: Optional["InFlight"] = None  # engines whose calls can be cancelled set one in __init__

    def memory_bytes(self) -> Optional[int]:
        """Bytes this model holds (weights + caches), measured after loading; None if unknown."""
        return None

    def cancel(self) -> None:
        """Stop the calls running on this model at their next step (terminate_model): they raise
        InferenceError("model terminated ..."), and so does every later call."""
        if self._inflight is not None:
            self._inflight.cancel()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no call runs in the backend; False when one still does after ``timeout`` s."""
        return self._inflight.wait_idle(timeout) if self._inflight is not None else True

    def close(self) -> None:
        """Free everything the model holds. Called once by terminate_model (after cancel() and
        wait_idle()) and by failed launches."""


class InFlight:
    """The backend work running on one model, and the flag that stops it.

    Engine code runs every stretch that touches the backend inside ``with inflight.step():`` (never
    across a ``yield``: a suspended stream holds no step). ``cancel()`` makes every later ``step()``
    and ``check()`` raise InferenceError("model terminated ..."), so generation stops between two
    tokens; ``wait_idle(timeout)`` waits until the steps already running have ended and the worker
    threads started by ``spawn`` have exited, after which the backend can be freed safely (and the
    interpreter can exit: a daemon thread still inside torch when it tears down aborts the process with
    "terminate called without an active exception"). ``event`` is set on cancel (for callbacks such as
    stopping criteria).
    """

    def __init__(self, model_uid: str):
        self.model_uid = model_uid
        self.event = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a daemon thread that works on the backend; ``wait_idle`` also waits for it to exit."""
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def error(self) -> InferenceError:
        return InferenceError(f"model terminated: {self.model_uid!r} was terminated (terminate_model) while this "
                              "call was running; launch it again to continue")

    def check(self) -> None:
        if self.event.is_set():
            raise self.error()
        if scope_cancelled():
            raise InferenceError(CANCELLED)

    @contextmanager
    def step(self) -> Iterator[None]:
        with self._cond:
            if self.event.is_set():
                raise self.error()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._active == 0

    def cancel(self) -> None:
        with self._cond:
            self.event.set()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: self._active == 0, timeout):
                return False
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)


def detached(exc: BaseException) -> BaseException:
    """``exc`` without the tracebacks of it and of the exceptions it chains to: their frames hold the
    tensors of the call that failed, and an exception that leaves an ``InFlight.step`` must not carry
    them off to be freed on another thread outside the step (at interpreter exit, that aborts)."""
    seen: set[int] = set()
    todo: list[Optional[BaseException]] = [exc]
    while todo:
        e = todo.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            e.__traceback__ = None
            todo += [e.__cause__, e.__context__]
    return exc


@dataclass(frozen=True)
class Engine:
    name: str
    model_type: str
    formats: tuple[str, ...]        # model_format values it serves ("*" for types without formats)
    loader: str                     # "module:function" inside xinference_nb.engines
    requires: tuple[str, ...]       # importable module names it needs
    package: str                    # pip package to name in errors
    extra: str                      # our pip extra that installs it
    families: tuple[str, ...] = ()  # for audio/image: model_family values it serves ("*" = any)
    vision_loader: str = ""         # the loader of registrations with the "vision" ability, when it differs
    options: tuple[str, ...] = ()   # launch options it reads besides options.LAUNCH_LEVEL (typed in options.OPTIONS)
    passthrough: str = ""           # what takes any further keyword, when the engine hands those on

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def serves(self, model_format: Optional[str], family: Optional[str] = None) -> bool:
        format_ok = "*" in self.formats or model_format is None or model_format in self.formats
        family_ok = not self.families or "*" in self.families or (family or "").lower() in {
            f.lower() for f in self.families}
        return format_ok and family_ok

    def loader_for(self, spec: Any) -> str:
        """The loader of this registration: ``vision_loader`` when it declares the vision ability."""
        vision = "vision" in (getattr(spec, "model_ability", None) or ())
        return self.vision_loader if vision and self.vision_loader else self.loader

    def load(self, request: LoadRequest) -> EngineModel:
        if not self.available():
            raise EngineUnavailable(f"The {self.name} engine needs {', '.join(self.missing())}, which is not "
                                    "installed.", package=self.package, extra=self.extra)
        module_name, func = self.loader_for(request.spec).split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, func)(request)


ENGINES: list[Engine] = [
    Engine("transformers", "LLM", ("pytorch", "gptq", "awq", "fp8", "bnb"), "transformers_llm:load",
           ("torch", "transformers", "accelerate"), "transformers", "transformers",
           vision_loader="transformers_vision:load",
           options=("trust_remote_code", "dtype", "torch_dtype", "context_length", "attn_implementation",
                    "quantization_config", "enable_thinking", "max_num_seqs", "batch_wait_ms", "peft_model_config",
                    "enable_prefix_caching", "prefix_cache_max_tokens")),
    Engine("llama.cpp", "LLM", ("ggufv2",), "llama_cpp:load", ("llama_cpp",), "llama-cpp-python", "llama-cpp",
           vision_loader="llama_cpp_vision:load",
           options=("n_ctx", "context_length", "enable_thinking", "peft_model_config", "enable_prefix_caching",
                    "prefix_cache_max_tokens", "multimodal_projector", "chat_handler")),  # + Llama() keywords
    Engine("sentence_transformers", "embedding", ("pytorch",), "sentence_transformers:load_embedding",
           ("torch", "sentence_transformers"), "sentence-transformers", "embedding",
           options=("trust_remote_code", "model_kwargs", "tokenizer_kwargs", "processor_kwargs", "config_kwargs",
                    "truncate_dim", "prompts", "default_prompt_name", "backend", "local_files_only",
                    "similarity_fn_name")),
    Engine("sentence_transformers", "rerank", ("pytorch",), "sentence_transformers:load_rerank",
           ("torch", "sentence_transformers"), "sentence-transformers", "embedding",
           options=("trust_remote_code", "model_kwargs", "tokenizer_kwargs", "processor_kwargs", "config_kwargs",
                    "backend", "local_files_only", "activation_fn")),
    Engine("diffusers", "image", ("*",), "diffusers_image:load", ("torch", "diffusers"), "diffusers", "image",
           families=("stable_diffusion", "*"),
           options=("dtype", "torch_dtype", "cpu_offload", "sequential_cpu_offload", "attention_slicing",
                    "vae_tiling", "vae_slicing", "gguf_model_path", "peft_model_config"),
           passthrough="diffusers' from_pretrained (pipeline components and loading arguments)"),
    Engine("transformers", "audio", ("*",), "audio:load", ("torch", "transformers"), "transformers", "audio",
           families=("*",),
           options=("dtype", "torch_dtype", "trust_remote_code", "model_kwargs", "chunk_length_s", "batch_size"),
           passthrough="the transformers pipeline and its call defaults"),
    Engine("flexible", "flexible", ("*",), "flexible:load", (), "xinference-nb", "all", options=("launcher_args",)),
]


def engines_for(model_type: str, model_format: Optional[str] = None, family: Optional[str] = None) -> list[Engine]:
    """Engines that can serve this type (and format/family), installed or not, in preference order."""
    return [e for e in ENGINES if e.model_type == model_type and e.serves(model_format, family)]


def find_engine(model_type: str, name: str) -> Optional[Engine]:
    wanted = name.strip().lower().replace("-", "_")
    for e in ENGINES:
        if e.model_type == model_type and e.name.lower().replace("-", "_") == wanted:
            return e
    # Xinference spells some engines differently ("Transformers", "llama_cpp", "SentenceTransformers")
    aliases = {"llama_cpp": "llama.cpp", "llamacpp": "llama.cpp", "sentencetransformers": "sentence_transformers",
               "hf": "transformers", "huggingface": "transformers"}
    alias = aliases.get(wanted)
    if alias:
        return find_engine(model_type, alias)
    return None
