"""The in-kernel model manager: one per process, behind ``Client()``.

``launch_model`` resolves the registration (built-in or custom) and the spec entry matching
format / size / quantization, the files (``model_path`` overrides the spec's uri; a model_id's files are
fetched from the hub into the Hugging Face cache, ``hub.fetch``), the engine, and
the device plan; estimates the memory from metadata and compares it with what is free (and with an
optional budget, terminating least recently used idle models to make room); loads with a progress
bar; and keeps the model under a uid. A failed launch frees what it loaded and leaves no entry.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import secrets
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .engines import DevicePlan, Engine, EngineModel, LoadRequest, engines_for, find_engine
from .errors import EngineUnavailable, LaunchError, ModelNotFound, XinfError
from .engines.options import (check_engine_options, check_launch_args, check_path_value, duration_seconds,
                              lora_adapters, parse_launch_options, prefix_cache_tokens)
from .memory import (
    MemoryEstimate,
    cuda_available,
    estimate_model,
    format_bytes,
    free_memory,
    gpu_allocated_bytes,
    parse_bytes,
    process_rss_bytes,
    release_memory,
    safetensors_stats,
)
from .metadata.quant import BNB_QUANTIZATIONS  # on-the-fly quantizations of pytorch weights
from .model_types import spec_types
from .progress import LaunchProgress, check_show
from .spec import check_model_name, local_path_of, normalize_model_type, same_size, size_to_float, to_document

# keep_alive=0 frees a model when its call ends; one only looked at (engine_model) is freed by the
# reaper after this long, so the look-up of a call about to start is not undone under it
KEEP_ALIVE_ZERO_GRACE_S = 1.0
SPEC_TYPES = spec_types()                           # types whose documents have model_specs (model_types)
_DESCRIBE_SKIP = {"model_specs", "chat_template", "virtualenv", "cache_config", "stop", "stop_token_ids",
                  "version", "model_uri", "controlnet", "gguf_model_file_name_template", "lightning_model_file_name_template",
                  "launcher_args"}


@dataclass
class RunningModel:
    model_uid: str
    model_type: str
    model_name: str
    engine: Engine
    spec: Any
    model_spec: Any
    model_format: Optional[str]
    model_size_in_billions: Any
    quantization: Optional[str]
    model_path: Optional[Path]
    device: DevicePlan
    options: dict[str, Any]
    model: Optional[EngineModel]         # None while keep_alive has it unloaded (status UNLOADED)
    memory_bytes: Optional[int] = None
    estimate: Optional[MemoryEstimate] = None
    launched_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    busy: int = 0
    load_seconds: float = 0.0
    plan: Optional["LaunchPlan"] = None  # what loads it again after keep_alive freed it
    keep_alive: Optional[float] = None   # seconds unused before its weights are freed (None: never)
    check_memory: bool = True
    show_progress: Optional[bool] = None
    context_length: Optional[int] = None   # the engine model's, kept while it is unloaded
    load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def unused_limit(self) -> float:
        """How long the reaper lets it sit unused before freeing its weights (keep_alive set)."""
        return max(self.keep_alive or 0.0, KEEP_ALIVE_ZERO_GRACE_S if self.keep_alive == 0 else 0.0)

    def describe(self) -> dict[str, Any]:
        doc = to_document(self.spec) if self.spec is not None else {}
        out: dict[str, Any] = {k: v for k, v in doc.items() if k not in _DESCRIBE_SKIP}
        out.update({
            "model_uid": self.model_uid,
            "model_type": self.model_type,
            "model_name": self.model_name,
            "model_engine": self.engine.name,
            "model_format": self.model_format,
            "model_size_in_billions": self.model_size_in_billions,
            "quantization": self.quantization,
            "model_hub": getattr(self.model_spec, "model_hub", None),
            "revision": getattr(self.model_spec, "model_revision", None),
            "replica": 1,
            "address": "in-kernel",
            "accelerators": [str(i) for i in self.device.gpu_ids],
            "model_path": str(self.model_path) if self.model_path is not None else None,
            "memory_bytes": self.memory_bytes,
            "memory_estimate_bytes": self.estimate.total_bytes if self.estimate else None,
            "status": "READY" if self.model is not None else "UNLOADED",
            "busy": self.busy > 0,
            "launched_at": self.launched_at,
            "last_used_at": self.last_used,
            "load_seconds": round(self.load_seconds, 3),
            "keep_alive": self.keep_alive,
        })
        if self.model_type == "LLM" and self.context_length:
            out["context_length"] = self.context_length
        return out


@dataclass
class LaunchPlan:
    """What ``_prepare`` resolved for a launch: everything needed to make room and load."""

    request: LoadRequest                 # what the engine's loader gets (spec, entry, path, device, options)
    engine: Engine
    estimate: Optional[MemoryEstimate]   # None when the metadata could not say
    size: Any                            # the chosen model_size_in_billions (as the spec writes it)
    use_venv: bool                       # load in the model's own virtualenv process


def _infer_format(path: Path) -> Optional[str]:
    """ggufv2 for a .gguf file or a folder of .gguf files without config.json; None otherwise."""
    if path.is_file():
        return "ggufv2" if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf")):
        return "ggufv2"
    return None


def _fmt_sizes(entries: list) -> str:
    sizes = []
    for e in entries:
        s = getattr(e, "model_size_in_billions", None)
        if s is None:
            continue
        if not any(same_size(s, t) for t in sizes):
            sizes.append(s)
    return ", ".join(str(s) for s in sizes)

def _existing_path(value: Any, field: str, label: str, fix: str) -> Path:
    """The local path of a model_path / model_uri value that must exist; a LaunchError naming ``label``
    (and saying ``fix``) for a malformed value, one the file system refuses, or one that is missing."""
    problem = check_path_value(value, field)
    if problem:
        raise LaunchError(f"{label} {problem}; {fix}")
    try:
        path = local_path_of(str(value))
        exists = path.exists()
    except (ValueError, OSError) as exc:
        raise LaunchError(f"{label}: {exc}") from None
    if not exists:
        raise LaunchError(f"{label} {str(value)!r} does not exist; {fix}")
    return path


class ModelManager:
    """Owns every model running in this kernel."""

    terminate_wait_s: float = 30.0  # terminate_model waits this long for running calls to stop

    def __init__(self, memory_budget: Union[int, str, None] = None, idle_ttl: Optional[float] = None):
        self._models: dict[str, RunningModel] = {}
        self._launching: dict[str, LaunchProgress] = {}
        self._terminated: set[str] = set()
        self._lock = threading.RLock()
        self.memory_budget: Optional[int] = None
        self.idle_ttl: Optional[float] = None
        self._reaper: Optional[threading.Thread] = None
        self._reaper_running = False        # set and cleared under self._lock (the loop's exit is decided there)
        self._reaper_wake = threading.Event()
        env_budget = os.environ.get("XINFERENCE_NB_MEMORY_BUDGET")
        self.set_memory_budget(memory_budget if memory_budget is not None else env_budget)
        env_ttl = os.environ.get("XINFERENCE_NB_IDLE_TTL")
        self.set_idle_ttl(idle_ttl if idle_ttl is not None else (float(env_ttl) if env_ttl else None))

    # ------------------------------------------------------------------ settings
    def set_memory_budget(self, budget: Union[int, str, None]) -> None:
        """Most bytes the running models may hold together ("8GiB", 8 * 2**30, None for no budget).
        A launch over budget first terminates the least recently used idle models."""
        try:
            self.memory_budget = None if budget in (None, "", 0, "0") else parse_bytes(budget)
        except ValueError as exc:
            raise LaunchError(f"memory budget: {exc}") from None

    def set_idle_ttl(self, seconds: Optional[float]) -> None:
        """Terminate models unused for this many seconds (None: never)."""
        if seconds is not None and seconds <= 0:
            raise LaunchError(f"idle TTL must be a positive number of seconds, got {seconds}")
        self.idle_ttl = seconds
        self._start_reaper()

    def _start_reaper(self) -> None:
        """Wakes the thread that terminates idle models (idle TTL) and unloads those past their
        keep_alive, starting it when there is something for it to watch; it ends when there is not."""
        with self._lock:
            self._reaper_wake.set()
            if self._reaper_running or self._reap_interval() is None:
                return
            self._reaper_running = True
            self._reaper = threading.Thread(target=self._reap_loop, name="xinf-idle-reaper", daemon=True)
            self._reaper.start()

    def _reap_interval(self) -> Optional[float]:
        """How often the reaper looks: a quarter of the shortest TTL / keep_alive (0.05 to 30 s)."""
        with self._lock:
            periods = [m.unused_limit() for m in self._models.values()
                       if m.keep_alive is not None and m.model is not None]
        if self.idle_ttl:
            periods.append(self.idle_ttl)
        return min(max(min(periods) / 4, 0.05), 30.0) if periods else None

    def _reap_loop(self) -> None:
        while True:
            with self._lock:
                wait = self._reap_interval()
                if wait is None:
                    self._reaper_running = False
                    return
                self._reaper_wake.clear()
            self._reaper_wake.wait(wait)
            try:
                self.reap_idle()
            except Exception:  # pragma: no cover - never kill the kernel from a daemon thread
                pass

    def reap_idle(self) -> list[str]:
        """Unload the models unused for longer than their keep_alive, and terminate those idle for
        longer than the TTL; returns the uids terminated."""
        now = time.time()
        with self._lock:
            expired = [m for m in self._models.values() if m.keep_alive is not None and m.model is not None
                       and m.busy == 0 and now - m.last_used > m.unused_limit()]
        for entry in expired:
            self._unload(entry)
        ttl = self.idle_ttl
        if not ttl:
            return []
        with self._lock:
            stale = [m.model_uid for m in self._models.values() if m.busy == 0 and now - m.last_used > ttl]
        done = []
        for uid in stale:
            try:
                self.terminate_model(uid)
                done.append(uid)
            except ModelNotFound:
                pass
        if done:
            warnings.warn(f"terminated idle model(s) {', '.join(done)} (unused for more than {ttl:g} s)",
                          stacklevel=2)
        return done

    # ------------------------------------------------------------------ launch
    def launch_model(self, model_name: str, model_type: str = "LLM", model_engine: Optional[str] = None,
                     model_format: Optional[str] = None, model_size_in_billions: Union[int, float, str, None] = None,
                     quantization: Optional[str] = None, model_uid: Optional[str] = None,
                     model_path: Union[str, Path, None] = None, n_gpu: Union[int, str, None] = "auto",
                     gpu_idx: Union[int, list[int], None] = None, replica: int = 1, **kwargs: Any) -> str:
        """Launch a registered (or built-in) model in this kernel and return its uid.

        Our own options: ``check_memory=False`` loads even when the estimate says it will not fit;
        ``show_progress=False`` hides the progress bar. Every other keyword goes to the engine.
        """
        check_launch_args(model_name, model_type, model_engine, model_format, quantization, model_path,
                          model_size_in_billions, gpu_idx)
        model_type = normalize_model_type(model_type)
        kwargs = parse_launch_options(kwargs)   # typed: the engines read these values as they are
        if replica not in (1, None):
            raise LaunchError(f"replica={replica}: the in-kernel manager runs one replica per model; use replica=1 "
                              "(or a Xinference cluster through Client('http://...') for replicas)")
        check_memory = kwargs.pop("check_memory", True)  # parsed: a real boolean
        show_progress = kwargs.pop("show_progress", None)
        keep_alive = duration_seconds(kwargs.pop("keep_alive", -1))   # parsed: a valid duration
        self.reap_idle()
        uid = self._reserve_uid(model_name, model_uid, show_progress)
        progress = self._launching[uid]
        model: Optional[EngineModel] = None
        try:
            plan = self._prepare(uid, model_name, model_type, model_engine, model_format, model_size_in_billions,
                                 quantization, model_path, n_gpu, gpu_idx, kwargs, progress)
            request, engine, estimate = plan.request, plan.engine, plan.estimate
            self._make_room(uid, model_name, estimate, request.device, check_memory)
            model, measured, seconds = self._load_measured(plan, request)
            running = RunningModel(model_uid=uid, model_type=model_type, model_name=model_name, engine=engine,
                                   spec=request.spec, model_spec=request.model_spec,
                                   model_format=request.model_format, quantization=request.quantization,
                                   model_size_in_billions=plan.size, model_path=request.model_path,
                                   device=request.device, options=request.options, model=model,
                                   memory_bytes=measured, estimate=estimate, load_seconds=seconds, plan=plan,
                                   keep_alive=keep_alive, check_memory=check_memory, show_progress=show_progress,
                                   context_length=getattr(model, "context_length", None))
            self._add_running(running, progress)
            model = None
            self._start_reaper()   # when keep_alive gives it something to watch
            return uid
        except BaseException:
            if model is not None:
                try:
                    model.close()
                except Exception:
                    pass
                model = None
            release_memory()
            raise
        finally:
            with self._lock:
                self._launching.pop(uid, None)
            progress.close()

    def _add_running(self, running: RunningModel, progress: LaunchProgress) -> None:
        """Enters a loaded model in the running table (unless its launch was cancelled) and puts
        stop_generation last among the exit hooks."""
        uid = running.model_uid
        with self._lock:
            if progress.cancelled:
                raise LaunchError(f"launch of {uid!r} was cancelled")
            self._models[uid] = running
            self._terminated.discard(uid)
        # last registered, first run: stop generation before the exit hooks that the backends this
        # launch imported registered (torch's among them) tear anything down
        atexit.unregister(self.stop_generation)
        atexit.register(self.stop_generation)

    def _load_measured(self, plan: LaunchPlan, request: LoadRequest) -> tuple[EngineModel, int, float]:
        """(the engine model, the bytes it holds, seconds it took) of loading ``request`` with ``plan``'s
        engine, its progress going from "loading" to "ready": a launch's and a keep_alive reload's."""
        request.progress("loading", 0.01)
        rss0, gpu0 = process_rss_bytes(), gpu_allocated_bytes(request.device.gpu_ids)
        t0 = time.perf_counter()
        model = self._load(plan.engine, request, plan.use_venv)
        request.progress("ready", 1.0)
        return model, self._loaded_bytes(model, request.device, rss0, gpu0), time.perf_counter() - t0

    @staticmethod
    def _loaded_bytes(model: EngineModel, device: DevicePlan, rss0: int, gpu0: int) -> int:
        """What a loaded model holds: its engine's count, else what the load added to the GPUs'
        allocation (or, on the CPU, to the process's resident memory)."""
        measured = model.memory_bytes()
        if measured is None:
            measured = (gpu_allocated_bytes(device.gpu_ids) - gpu0 if device.uses_cuda
                        else process_rss_bytes() - rss0)
            measured = max(0, int(measured))
        return measured

    def _reserve_uid(self, model_name: str, model_uid: Optional[str], show_progress: Optional[bool]) -> str:
        with self._lock:
            if model_uid is not None:
                if not isinstance(model_uid, str):
                    raise LaunchError(f"model_uid must be a string, got {type(model_uid).__name__}")
                try:
                    check_model_name(model_uid, "model_uid")
                except ValueError as exc:
                    raise LaunchError(f"model_uid: {exc}") from None
                if model_uid in self._models or model_uid in self._launching:
                    raise LaunchError(f"model_uid {model_uid!r} is already in use by a running model; terminate it "
                                      f"first (terminate_model({model_uid!r})) or choose another uid")
                uid = model_uid
            else:
                uid = model_name
                while uid in self._models or uid in self._launching:
                    uid = f"{model_name}-{secrets.token_hex(4)}"
            self._launching[uid] = LaunchProgress(uid, show_progress)
            return uid

    # ------------------------------------------------------------------ resolution
    def _prepare(self, uid: str, model_name: str, model_type: str, model_engine: Optional[str],
                 model_format: Optional[str], size: Any, quantization: Optional[str], model_path: Any,
                 n_gpu: Any, gpu_idx: Any, options: dict[str, Any], progress: LaunchProgress) -> LaunchPlan:
        from .registry import builtin_family, get_registry

        progress("resolving", 0.0)
        model_type, spec = get_registry().find(model_name, model_type)
        path = self._user_path(model_path)
        family = getattr(spec, "model_family", None)
        if model_type in SPEC_TYPES:
            model_spec, fmt, quant = self._choose_entry(spec, model_type, model_name, model_engine, model_format, size,
                                                        quantization, path)
            chosen_size = getattr(model_spec, "model_size_in_billions", None)
        else:
            model_spec, fmt, quant = None, model_format, quantization
            chosen_size = size
        engine = self._choose_engine(model_type, model_name, model_engine, fmt, family)
        if not engine.available():
            raise EngineUnavailable(f"The {engine.name} engine for {model_type} models needs "
                                    f"{', '.join(engine.missing())}, which is not installed.",
                                    package=engine.package, extra=engine.extra)
        check_engine_options(model_type, engine.name, options)
        use_venv = self._use_virtualenv(spec, options, engine)
        if path is None:
            path = self._spec_path(spec, model_spec, model_name, model_type, fmt, quant, progress,
                                   projector=options.get("multimodal_projector"))
        if fmt == "ggufv2" and path is not None:
            from .engines.llama_cpp import resolve_gguf_file

            path = resolve_gguf_file(path, model_spec, quant)
        elif model_type == "LLM" and path is not None and path.is_file() and fmt != "ggufv2":
            raise LaunchError(f"{path} is a file, but {fmt or 'this'} format loads a model folder (config.json and "
                              "weights); pass the folder, or model_format='ggufv2' with model_engine='llama.cpp' for "
                              "a .gguf file")
        if (model_type == "LLM" and fmt != "ggufv2" and path is not None and path.is_dir()
                and not (path / "config.json").is_file()):
            found = sorted(p.name for p in path.iterdir())[:8]
            raise LaunchError(f"{path} has no config.json, so it is not a Hugging Face model folder for the "
                              f"{engine.name} engine (it holds: {', '.join(found) or 'nothing'}); point model_path "
                              "at the folder with config.json and the weights, or at a .gguf file with "
                              "model_engine='llama.cpp'")
        device = self._device_plan(n_gpu, gpu_idx)
        ctx = options.get("context_length") or options.get("n_ctx") or getattr(spec, "context_length", None)
        estimate = None
        try:
            estimate = estimate_model(path, model_type, fmt, quant, ctx,
                                      dtype=options.get("dtype") or options.get("torch_dtype"),
                                      adapters=[a.path for a in lora_adapters(options)],
                                      prefix_cache_tokens=prefix_cache_tokens(options))
        except Exception:  # an estimate is advice: unreadable metadata must not block a launch
            estimate = None
        request = LoadRequest(model_uid=uid, model_type=model_type, model_name=model_name, spec=spec,
                              model_spec=model_spec, model_path=path, model_format=fmt, quantization=quant,
                              device=device, options=options, progress=progress,
                              family_spec=builtin_family(family) if model_type == "LLM" else None)
        return LaunchPlan(request=request, engine=engine, estimate=estimate, size=chosen_size, use_venv=use_venv)

    @staticmethod
    def _user_path(model_path: Any) -> Optional[Path]:
        if model_path is None or model_path == "":
            return None
        return _existing_path(model_path, "model_path", "model_path",
                              "pass the folder holding config.json and the weights (or the .gguf file)")

    @staticmethod
    def _spec_path(spec: Any, model_spec: Any, model_name: str, model_type: str, fmt: Optional[str],
                   quant: Optional[str], progress: Optional[LaunchProgress] = None, revision: Optional[str] = None,
                   show: Optional[bool] = None, projector: Any = None) -> Optional[Path]:
        """The local files of the registration: its model_uri, else its model_id's files fetched from the
        hub into the Hugging Face cache (hub.fetch: only what ``fmt`` / ``quant`` need; reused when cached).
        A flexible model's model_id is its launcher's to read: only a snapshot already cached is passed."""
        holder = model_spec if model_spec is not None else spec
        uri = getattr(holder, "model_uri", None)
        if uri:
            return _existing_path(uri, "model_uri", f"{model_name}: model_uri",
                                  "fix the registration (register_model(..., overwrite=True)) or pass model_path=...")
        model_id = getattr(holder, "model_id", None)
        if not model_id:
            return None
        from .hub import cached_snapshot, repo_id_problem
        from .hub.fetch import HubModel, fetch

        if model_type == "flexible":
            return cached_snapshot(model_id) if repo_id_problem(model_id) is None else None
        if progress is not None:
            progress(f"downloading {model_id}", 0.0)
        return fetch(HubModel.of(holder, fmt, quant, revision=revision, projector=projector), progress=progress,
                     show=progress.show if progress is not None else show)

    def download_model(self, model_name: str, model_type: str = "LLM", model_engine: Optional[str] = None,
                       model_format: Optional[str] = None, model_size_in_billions: Union[int, float, str, None] = None,
                       quantization: Optional[str] = None, revision: Optional[str] = None,
                       show_progress: Optional[bool] = None) -> Path:
        """Fetches the files a launch of this registration with these choices would load (model_id /
        model_hub / model_revision, ``revision`` instead of the latter), without loading them; returns the
        local path: the snapshot folder, or the .gguf file (a model_uri registration: its path)."""
        from .registry import get_registry

        check_launch_args(model_name, model_type, model_engine, model_format, quantization, None,
                          model_size_in_billions, None)
        check_show(show_progress)
        model_type, spec = get_registry().find(model_name, normalize_model_type(model_type))
        if model_type == "flexible":
            raise LaunchError(f"{model_name} is a flexible model: its launcher finds its own files, so there is "
                              "nothing to download")
        if model_type in SPEC_TYPES:
            model_spec, fmt, quant = self._choose_entry(spec, model_type, model_name, model_engine, model_format,
                                                        model_size_in_billions, quantization, None)
        else:
            model_spec, fmt, quant = None, model_format, quantization
        holder = model_spec if model_spec is not None else spec
        if revision is not None and not getattr(holder, "model_id", None):
            raise LaunchError(f"revision={revision!r}: {model_name} has no model_id, so no hub revision to choose")
        path = self._spec_path(spec, model_spec, model_name, model_type, fmt, quant, revision=revision,
                               show=show_progress)
        if path is None:
            raise LaunchError(f"{model_name}: the registration has neither model_uri nor model_id, so there is "
                              "nothing to download")
        return path

    def _choose_entry(self, spec: Any, model_type: str, model_name: str, model_engine: Optional[str],
                      model_format: Optional[str], size: Any, quantization: Optional[str], path: Optional[Path]):
        """(entry, format, quantization) of the model_specs entry a launch uses: the entries narrowed by
        format, engine, size and a GGUF file's name, then the quantization asked for, else the first
        entry an installed engine serves."""
        entries = list(spec.model_specs)
        fmt = model_format or (_infer_format(path) if path is not None else None)
        entries = self._entries_in_format(entries, model_name, model_format, fmt, quantization, path)
        if model_engine is not None:
            entries = self._entries_for_engine(entries, model_type, model_name, model_engine)
        sizes_known = all(getattr(e, "model_size_in_billions", None) is not None for e in entries)
        if size is not None and sizes_known:
            try:
                sized = [e for e in entries if same_size(e.model_size_in_billions, size)]
            except (TypeError, ValueError):
                sized = []
            if not sized:
                raise LaunchError(f"{model_name} has no size {size!r}"
                                  f"{' in format ' + repr(fmt) if fmt else ''}; model_size_in_billions choices: "
                                  f"{_fmt_sizes(entries)}")
            entries = sized
        elif sizes_known and path is not None and len({size_to_float(e.model_size_in_billions) for e in entries}) > 1:
            entries = self._closest_size(entries, path)
        if quantization is None and fmt == "ggufv2" and path is not None and path.is_file():
            entries = self._entries_named_by_file(entries, path)
        if quantization is not None:
            return self._entry_with_quantization(entries, model_name, fmt, quantization)
        # prefer an entry an installed engine can serve
        for e in entries:
            if any(eng.available() for eng in engines_for(model_type, e.model_format)):
                return e, e.model_format, e.quantization
        chosen = entries[0]
        return chosen, chosen.model_format, chosen.quantization

    @staticmethod
    def _entries_in_format(entries: list, model_name: str, model_format: Optional[str], fmt: Optional[str],
                           quantization: Optional[str], path: Optional[Path]) -> list:
        """The entries in format ``fmt`` (for a model_path in a format the document lacks: its first entry
        relabelled); no format known and a folder given: the entries that are not GGUF."""
        if model_format is None and fmt is None and path is not None:
            # a Hugging Face folder: anything but GGUF
            non_gguf = [e for e in entries if e.model_format != "ggufv2"]
            entries = non_gguf or entries
        if fmt is not None:
            matching = [e for e in entries if e.model_format == fmt]
            if not matching:
                if path is None:
                    formats = sorted({e.model_format for e in entries})
                    raise LaunchError(f"{model_name} has no {fmt!r} weights; its model_format choices are "
                                      f"{', '.join(formats)}")
                base = entries[0]
                matching = [base.model_copy(update={"model_format": fmt, "quantization": quantization or "none",
                                                    "model_uri": None, "model_file_name_template": None})]
            entries = matching
        return entries

    @staticmethod
    def _entries_for_engine(entries: list, model_type: str, model_name: str, model_engine: str) -> list:
        """The entries the named engine serves (an engine name not found is left to the engine choice)."""
        engine = find_engine(model_type, model_engine)
        if engine is None:
            return entries
        served = [e for e in entries if engine.serves(e.model_format)]
        if not served:
            formats = sorted({e.model_format for e in entries})
            able = sorted({e.name for f in formats for e in engines_for(model_type, f)})
            raise LaunchError(f"the {engine.name} engine cannot serve {model_name} in format "
                              f"{', '.join(formats)}; engines that can: {', '.join(able) or 'none'}")
        return served

    @staticmethod
    def _entries_named_by_file(entries: list, path: Path) -> list:
        """A GGUF file given directly: the entries whose quantization its name holds (longest first),
        else the first entry with the quantization the name reads as (``unknown`` when none)."""
        # its name usually says the quantization (model-Q4_K_M.gguf)
        named = [e for e in entries if e.quantization.lower() in path.name.lower()]
        if named:
            return sorted(named, key=lambda e: -len(e.quantization))
        from .metadata.quant import gguf_name_quantization

        named_quant = gguf_name_quantization(path.name)
        return [entries[0].model_copy(update={"quantization": named_quant or "unknown"})]

    @staticmethod
    def _entry_with_quantization(entries: list, model_name: str, fmt: Optional[str], quantization: str):
        """(entry, format, quantization) for the quantization asked for: an entry that has it, else the
        pytorch entry quantized on the fly by bitsandbytes; a LaunchError listing the choices otherwise."""
        exact = [e for e in entries if e.quantization.lower() == str(quantization).lower()]
        if exact:
            chosen = exact[0]
            return chosen, chosen.model_format, chosen.quantization
        pytorch = [e for e in entries if e.model_format == "pytorch"]
        if pytorch and str(quantization).lower() in BNB_QUANTIZATIONS:
            return pytorch[0], "pytorch", str(quantization).lower()
        choices = sorted({e.quantization for e in entries} | (set(BNB_QUANTIZATIONS) if pytorch else set()))
        raise LaunchError(f"{model_name} has no quantization {quantization!r}"
                          f"{' for format ' + repr(fmt) if fmt else ''}; choices: {', '.join(choices)}")

    @staticmethod
    def _closest_size(entries: list, path: Path) -> list:
        try:
            stats = safetensors_stats(path) if path.is_dir() else None
        except Exception:
            stats = None
        if not stats or not stats[0]:
            return entries
        billions = stats[0] / 1e9
        best = min(entries, key=lambda e: abs((size_to_float(e.model_size_in_billions) or 0) - billions))
        return [e for e in entries if same_size(e.model_size_in_billions, best.model_size_in_billions)]

    @staticmethod
    def _choose_engine(model_type: str, model_name: str, model_engine: Optional[str], fmt: Optional[str],
                       family: Optional[str]) -> Engine:
        all_engines = engines_for(model_type)
        able = engines_for(model_type, fmt, family)
        if model_engine is not None:
            engine = find_engine(model_type, model_engine)
            if engine is None:
                names = ", ".join(sorted({e.name for e in all_engines})) or "none"
                raise LaunchError(f"unknown model_engine {model_engine!r} for {model_type} models; use one of: {names}")
            if not engine.serves(fmt, family):
                what = f"format {fmt!r}" if fmt else f"family {family!r}"
                names = ", ".join(e.name for e in able) or "none"
                raise LaunchError(f"the {engine.name} engine cannot serve {model_name} ({what}); engines that can: "
                                  f"{names}")
            return engine
        if not able:
            what = f"format {fmt!r}" if fmt else f"family {family!r}"
            raise LaunchError(f"no {model_type} engine serves {model_name} ({what}); engines: "
                              f"{', '.join(e.name for e in all_engines) or 'none'}")
        for engine in able:
            if engine.available():
                return engine
        return able[0]

    @staticmethod
    def _device_plan(n_gpu: Any, gpu_idx: Any) -> DevicePlan:
        if gpu_idx is not None and not isinstance(gpu_idx, (list, tuple)):
            gpu_idx = [gpu_idx]
        if n_gpu is None or n_gpu == 0:
            if gpu_idx:
                raise LaunchError("gpu_idx was given with n_gpu=None (CPU only); drop one of them")
            return DevicePlan()
        if n_gpu != "auto" and (isinstance(n_gpu, bool) or not isinstance(n_gpu, int) or n_gpu < 0):
            raise LaunchError(f"n_gpu must be 'auto', None (CPU) or a number of GPUs, got {n_gpu!r}")
        if not cuda_available():
            if n_gpu != "auto" or gpu_idx:
                raise LaunchError(f"n_gpu={n_gpu!r}{' gpu_idx=' + str(list(gpu_idx)) if gpu_idx else ''} asks for "
                                  "GPUs but no CUDA GPU is visible; use n_gpu=None to run on the CPU")
            return DevicePlan()
        import torch

        count = torch.cuda.device_count()
        if gpu_idx:
            ids = [int(i) for i in gpu_idx]
            bad = [i for i in ids if not 0 <= i < count]
            if bad:
                raise LaunchError(f"gpu_idx {bad} not visible; this machine has GPUs 0..{count - 1}")
        elif n_gpu == "auto":
            ids = list(range(count))
        else:
            if n_gpu > count:
                raise LaunchError(f"n_gpu={n_gpu} but only {count} GPU(s) are visible")
            ids = list(range(n_gpu))
        device_map: Any = {"": f"cuda:{ids[0]}"} if len(ids) == 1 else "auto"
        return DevicePlan(device_map=device_map, device=f"cuda:{ids[0]}", gpu_ids=ids, n_gpu_layers=-1)

    # ------------------------------------------------------------------ memory
    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.memory_bytes or 0 for m in self._models.values())

    def _make_room(self, uid: str, model_name: str, estimate: Optional[MemoryEstimate], device: DevicePlan,
                   check_memory: bool) -> None:
        if estimate is None:
            return
        needed = estimate.total_bytes
        if self.memory_budget is not None:
            evicted = []
            with self._lock:
                idle = sorted((m for m in self._models.values() if m.busy == 0 and m.model is not None),
                              key=lambda m: m.last_used)
            while self.used_bytes() + needed > self.memory_budget and idle:
                victim = idle.pop(0)
                try:
                    self.terminate_model(victim.model_uid)
                    evicted.append(victim.model_uid)
                except ModelNotFound:
                    pass
            if evicted:
                warnings.warn(f"memory budget {format_bytes(self.memory_budget)}: terminated the least recently used "
                              f"idle model(s) {', '.join(evicted)} to make room for {model_name!r} "
                              f"(needs about {format_bytes(needed)})", stacklevel=3)
            if check_memory and self.used_bytes() + needed > self.memory_budget:
                raise LaunchError(f"{model_name} needs about {estimate.describe()}, but the memory budget "
                                  f"{format_bytes(self.memory_budget)} has only "
                                  f"{format_bytes(max(0, self.memory_budget - self.used_bytes()))} left after "
                                  "terminating every idle model; terminate busy models, raise the budget "
                                  "(set_memory_budget), use quantization='4-bit' or a shorter context_length, or "
                                  "pass check_memory=False to try anyway")
        if not check_memory:
            return
        free, where = free_memory(device.gpu_ids)
        if needed > free:
            raise LaunchError(f"{model_name} needs about {estimate.describe()} ({estimate.source}), but only "
                              f"{format_bytes(free)} of {where} is free. Terminate other models "
                              "(terminate_model), use quantization='4-bit' / '8-bit' or a smaller GGUF, a shorter "
                              "context_length, or pass check_memory=False to try anyway")

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _use_virtualenv(spec: Any, options: dict[str, Any], engine: Engine) -> bool:
        """Whether the model runs in its own virtualenv process. Xinference's rule: it does when it has
        packages to install, from its document or from launch_model(virtual_env_packages=...), unless
        enable_virtual_env=False; enable_virtual_env=True asks for one even without packages. Every
        package entry is checked here (a pip option or a bare path is a SpecError), before anything
        is loaded or evicted; venv options that would go unused are errors."""
        from .isolation.virtualenv import venv_packages

        packages = venv_packages(getattr(spec, "virtualenv", None), options, engine.name)
        enable = options.get("enable_virtual_env")
        use_venv = enable is True or (bool(packages) and enable is not False)
        if not use_venv:
            unused = [k for k in ("virtual_env_packages", "virtual_env_find_links", "envs") if options.get(k)]
            if unused:
                from .errors import FieldIssue, LaunchOptionError

                why = ("enable_virtual_env=False" if enable is False else
                       "the model has no virtualenv packages to install")
                raise LaunchOptionError([FieldIssue(k, f"applies to a model running in its own virtualenv process, "
                                                       f"and this one runs in the kernel ({why}). Drop it, or pass "
                                                       "enable_virtual_env=True (envs: or set os.environ in the "
                                                       "notebook before launching)") for k in unused],
                                        engine=engine.name)
        return use_venv

    def _load(self, engine: Engine, request: LoadRequest, use_venv: Optional[bool] = None) -> EngineModel:
        if use_venv is None:
            use_venv = self._use_virtualenv(request.spec, request.options, engine)
        try:
            if use_venv:
                from .isolation.virtualenv import load_in_virtualenv

                return load_in_virtualenv(engine, request)
            return engine.load(request)
        except Exception as exc:  # a backend's error: say what went wrong and how to fix it
            if isinstance(exc, XinfError):
                raise
            err = LaunchError(self._explain(exc, engine, request))
            err.original = exc  # type: ignore[attr-defined]
            raise err from None

    @staticmethod
    def _explain(exc: Exception, engine: Engine, request: LoadRequest) -> str:
        where = str(request.model_path) if request.model_path is not None else (
            getattr(request.model_spec, "model_id", None) or getattr(request.spec, "model_id", None) or "?")
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        text = str(exc)
        if request.model_path is None:
            hint = (" The files are not on this machine (no model_uri and not in the Hugging Face cache, and the "
                    "hub is offline or unreachable): download them and pass model_path=... ")
        elif "config.json" in text or "Unrecognized model" in text or "does not appear to have" in text:
            hint = (f" {where} does not look like a Hugging Face model folder for this engine (config.json and "
                    "weights); check model_path, model_format and model_engine.")
        elif isinstance(exc, ImportError):
            hint = f" A package the model needs is missing: {msg}."
        elif "trust_remote_code" in text:
            hint = " The model ships its own code: pass trust_remote_code=True if you trust it."
        elif "CUDA" in text or "out of memory" in text.lower():
            hint = " Try n_gpu=None (CPU), quantization='4-bit', or a smaller model."
        return (f"the {engine.name} engine could not load {request.model_name!r} from {where}: "
                f"{type(exc).__name__}: {msg}.{hint}".rstrip())

    # ------------------------------------------------------------------ running models
    # The interface handles use: running_model (the record), use_model (one call on the engine
    # model: busy and recently used), engine_model (a look-up that marks it recently used).
    def running_model(self, model_uid: str) -> RunningModel:
        """The record of a running model (ModelNotFound, saying why, when there is none)."""
        with self._lock:
            entry = self._models.get(model_uid)
        if entry is None:
            raise ModelNotFound(self._missing(model_uid))
        return entry

    def _missing(self, uid: str) -> str:
        if uid in self._terminated:
            return (f"Model not found in the model list, uid: {uid} — it was terminated; launch it again with "
                    "launch_model(...)")
        with self._lock:
            running = sorted(self._models)
        return (f"Model not found in the model list, uid: {uid} (running: "
                f"{', '.join(running) if running else 'none'}; see list_models())")

    @contextmanager
    def use_model(self, model_uid: str) -> Iterator[EngineModel]:
        """The engine model of ``model_uid`` for the duration of one call: busy (never evicted nor
        reaped meanwhile), and marked recently used."""
        uid = model_uid
        with self._lock:
            entry = self._models.get(uid)
            if entry is None:
                raise ModelNotFound(self._missing(uid))
            entry.busy += 1
            entry.last_used = time.time()
        try:
            yield self._loaded(entry)
        finally:
            with self._lock:
                entry.busy -= 1
                entry.last_used = time.time()
                after_each = entry.keep_alive == 0 and entry.busy == 0
            if after_each:
                self._unload(entry)

    def engine_model(self, model_uid: str) -> EngineModel:
        """The engine model of ``model_uid`` (marked recently used, not busy, loaded again if
        keep_alive had freed it): for reading its properties (chat format, abilities); calls into it
        go through ``use_model``."""
        with self._lock:
            entry = self._models.get(model_uid)
            if entry is None:
                raise ModelNotFound(self._missing(model_uid))
            entry.last_used = time.time()
        return self._loaded(entry)

    # ------------------------------------------------------------------ keep_alive
    def _loaded(self, entry: RunningModel) -> EngineModel:
        """``entry``'s engine model, loaded again first (once, whoever asks meanwhile waits) when
        keep_alive freed it."""
        model = entry.model
        if model is not None:
            return model
        with entry.load_lock:
            if entry.model is None:
                self._reload(entry)
            return entry.model  # type: ignore[return-value]

    def _reload(self, entry: RunningModel) -> None:
        """Loads ``entry`` again from its launch plan (room made as at launch, a progress bar); a model
        terminated meanwhile is closed again and ModelNotFound."""
        plan, uid = entry.plan, entry.model_uid
        assert plan is not None
        progress = LaunchProgress(uid, entry.show_progress)
        model: Optional[EngineModel] = None
        try:
            self._make_room(uid, entry.model_name, plan.estimate, plan.request.device, entry.check_memory)
            model, measured, seconds = self._load_measured(plan, dataclasses.replace(plan.request, progress=progress))
            with self._lock:
                if self._models.get(uid) is not entry:
                    raise ModelNotFound(self._missing(uid))
                entry.model, entry.memory_bytes, entry.load_seconds = model, measured, seconds
            model = None
        finally:
            progress.close()
            if model is not None:
                model.close()
                del model
                release_memory()
        if entry.keep_alive is not None:
            self._start_reaper()

    def _unload(self, entry: RunningModel) -> bool:
        """Frees ``entry``'s weights (keep_alive): only when no call is in it; it stays listed, UNLOADED,
        and the next call loads it again. False when it was busy, already unloaded or loading."""
        if not entry.load_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if entry.busy or entry.model is None or self._models.get(entry.model_uid) is not entry:
                    return False
                model, entry.model, entry.memory_bytes = entry.model, None, 0
            try:
                model.close()
            except Exception as exc:  # the weights are dropped either way; say what the backend said
                warnings.warn(f"keep_alive: closing {entry.model_uid!r} failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
            del model
        finally:
            entry.load_lock.release()
            release_memory()
        return True


    def list_models(self) -> dict[str, dict[str, Any]]:
        self.reap_idle()
        with self._lock:
            entries = list(self._models.values())
        return {m.model_uid: m.describe() for m in entries}

    def describe_model(self, model_uid: str) -> dict[str, Any]:
        return self.running_model(model_uid).describe()

    def terminate_model(self, model_uid: str) -> None:
        with self._lock:
            entry = self._models.pop(model_uid, None)
            launching = self._launching.get(model_uid)
            if entry is not None:
                self._terminated.add(model_uid)
        if entry is None:
            if launching is not None:
                launching.cancel()
                return
            raise ModelNotFound(self._missing(model_uid))
        model = entry.model
        entry.model = None
        if model is None:             # unloaded by keep_alive: nothing is held
            return
        try:
            # calls running on it stop at their next token with InferenceError("model terminated ...");
            # the backend is freed only once they have left it (or, past the wait, by the last of them)
            model.cancel()
            if not model.wait_idle(self.terminate_wait_s):
                warnings.warn(f"terminate_model({model_uid!r}): a call was still running in the model after "
                              f"{self.terminate_wait_s:g} s; its memory is freed when that call ends", stacklevel=2)
            model.close()
        finally:
            del model, entry
            release_memory()

    def stop_generation(self, timeout: float = 5.0) -> None:
        """At interpreter exit: stop every call running in a model (the generation threads are daemons;
        one still inside torch when the interpreter tears down aborts the process with "terminate called
        without an active exception") and wait up to ``timeout`` s for them to leave the backends."""
        with self._lock:
            models = [e.model for e in self._models.values() if e.model is not None]
        deadline = time.monotonic() + timeout
        for model in models:
            model.cancel()
        for model in models:
            model.wait_idle(max(0.0, deadline - time.monotonic()))

    def terminate_all(self) -> None:
        for uid in list(self._models):
            try:
                self.terminate_model(uid)
            except ModelNotFound:
                pass

    def get_launch_model_progress(self, model_uid: str) -> dict[str, Any]:
        with self._lock:
            progress = self._launching.get(model_uid)
            running = model_uid in self._models
        if progress is not None:
            return {"progress": progress.fraction, "step": progress.step}
        if running:
            return {"progress": 1.0, "step": "ready"}
        raise ModelNotFound(self._missing(model_uid))

    def cancel_launch_model(self, model_uid: str) -> None:
        with self._lock:
            progress = self._launching.get(model_uid)
        if progress is None:
            raise ModelNotFound(f"no launch in progress for uid {model_uid!r}")
        progress.cancel()

    def query_engine_by_model_name(self, model_name: str, model_type: str = "LLM") -> dict[str, list[dict[str, Any]]]:
        """engine name → the format / size / quantization choices it can run for this model."""
        from .registry import get_registry

        model_type, spec = get_registry().find(model_name, normalize_model_type(model_type))
        family = getattr(spec, "model_family", None)
        out: dict[str, list[dict[str, Any]]] = {}
        for engine in engines_for(model_type):
            rows: list[dict[str, Any]] = []
            if model_type in SPEC_TYPES:
                groups: dict[tuple, dict[str, Any]] = {}
                for e in spec.model_specs:
                    if not engine.serves(e.model_format, family):
                        continue
                    e_size = getattr(e, "model_size_in_billions", None)
                    key = (e.model_format, size_to_float(e_size))
                    row = groups.setdefault(key, {"model_name": model_name, "model_format": e.model_format,
                                                  "model_size_in_billions": e_size,
                                                  "quantizations": [], "available": engine.available()})
                    if e.quantization not in row["quantizations"]:
                        row["quantizations"].append(e.quantization)
                    if model_type == "LLM" and e.model_format == "pytorch" and engine.name == "transformers":
                        for q in BNB_QUANTIZATIONS:
                            if q not in row["quantizations"]:
                                row["quantizations"].append(q)
                rows = list(groups.values())
            elif engine.serves(None, family):
                rows = [{"model_name": model_name, "available": engine.available()}]
            if rows:
                out[engine.name] = rows
        return out


_manager: Optional[ModelManager] = None
_manager_lock = threading.Lock()


def get_manager() -> ModelManager:
    """The process-wide manager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = ModelManager()
        return _manager
