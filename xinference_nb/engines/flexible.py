"""Flexible models: anything behind a launcher callable, and helpers the other engines share.

A flexible document names a ``launcher``: a dotted path (``package.module.function``, or
``package.module:function``) to a callable taking ``(model_uid, model_path, **launcher_args)``
and returning an object with ``load()`` and ``infer(**kwargs)``. The handle's ``infer(**kwargs)``
calls that object's ``infer``.

Launchers shipped here:

* ``xinference_nb.engines.flexible.transformers_pipeline`` — ``launcher_args``: ``{"task": ...}``
  plus any ``transformers.pipeline`` keyword; ``infer(inputs=..., **call_kwargs)`` runs the pipeline.
  Xinference's ``xinference.model.flexible.launchers.transformers`` is accepted as an alias.
* ``xinference_nb.engines.flexible.python_callable`` — ``launcher_args``:
  ``{"callable": "pkg.module:function"}``; ``infer(**kwargs)`` returns ``function(**kwargs)``.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Optional

from ..errors import InferenceError, LaunchError
from ..memory import release_memory
from . import EngineModel, LoadRequest

# Xinference's launcher names → ours.
LAUNCHER_ALIASES = {
    "xinference.model.flexible.launchers.transformers": "xinference_nb.engines.flexible.transformers_pipeline",
    "xinference.model.flexible.launchers.transformers_launcher": "xinference_nb.engines.flexible.transformers_pipeline",
    "xinference.model.flexible.launchers.transformers_launcher.launcher":
        "xinference_nb.engines.flexible.transformers_pipeline",
}


# ------------------------------------------------------------------------------------------------
# Helpers shared by the engines of this package (torch is imported only when a model holds tensors)
# ------------------------------------------------------------------------------------------------

def torch_memory_bytes(*modules: Any) -> Optional[int]:
    """Bytes of the parameters and buffers of the given torch modules (shared tensors counted once)."""
    total, seen, found = 0, set(), False
    for module in modules:
        if module is None or not hasattr(module, "parameters"):
            continue
        found = True
        tensors = list(module.parameters())
        if hasattr(module, "buffers"):
            tensors += list(module.buffers())
        for t in tensors:
            try:
                key = (t.data_ptr(), t.numel())
            except Exception:  # meta tensors and the like
                key = (id(t), 0)
            if key in seen:
                continue
            seen.add(key)
            total += t.numel() * t.element_size()
    return total if found else None


# launch_model keywords that are about the launch itself, never backend arguments
from .options import NOT_FOR_BACKENDS as LAUNCH_KEYS  # noqa: E402


def backend_options(options: dict[str, Any]) -> dict[str, Any]:
    """launch_model's extra kwargs minus the launch-level ones (what a backend may receive)."""
    return {k: v for k, v in (options or {}).items() if k not in LAUNCH_KEYS and v is not None}


def import_object(path: str, what: str = "launcher") -> Any:
    """``pkg.mod:attr`` or ``pkg.mod.attr`` → the object. LaunchError naming the path otherwise."""
    path = LAUNCHER_ALIASES.get(path, path)
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise LaunchError(f"{what} {path!r} is not a dotted path; write 'package.module.function' or "
                          "'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LaunchError(f"{what} {path!r}: cannot import module {module_name!r} ({exc}); install the package "
                          "that provides it (or list it in virtualenv.packages) or fix the path") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LaunchError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------

def _launcher_arg(value: Optional[str], key: str, launcher: str, needs: str) -> str:
    """The ``launcher_args`` entry a launcher cannot do without; a LaunchError saying what it needs."""
    if not value:
        raise LaunchError(f"launcher_args.{key} is missing: the {launcher} launcher needs {needs}")
    return value


class TransformersPipelineModel:
    """A ``transformers.pipeline`` built from the model folder; ``infer(inputs, **kw)`` calls it."""

    def __init__(self, model_uid: str, model_path: Optional[str], task: Optional[str] = None,
                 device: Optional[str] = None, **pipeline_kwargs: Any):
        self.task = _launcher_arg(task, "task", "transformers",
                                  "a pipeline task, e.g. '{\"task\": \"text-classification\"}'")
        self.model_uid, self.model_path, self.device = model_uid, model_path, device
        self.pipeline_kwargs = pipeline_kwargs
        self.pipeline = None

    def load(self) -> None:
        try:
            from transformers import pipeline
        except ImportError:
            from ..errors import EngineUnavailable

            raise EngineUnavailable("The transformers flexible launcher needs transformers, which is not installed.",
                                    package="transformers", extra="transformers") from None
        kwargs = dict(self.pipeline_kwargs)
        if self.device and self.device != "auto":
            kwargs.setdefault("device", self.device)
        try:
            self.pipeline = pipeline(self.task, model=self.model_path, **kwargs)
        except Exception as exc:
            raise LaunchError(f"transformers.pipeline({self.task!r}, model={self.model_path!r}) failed: "
                              f"{type(exc).__name__}: {exc}") from exc

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        if self.pipeline is None:
            raise InferenceError("the pipeline is not loaded")
        if not args:
            for key in ("inputs", "input", "text", "texts"):
                if key in kwargs:
                    args = (kwargs.pop(key),)
                    break
        if not args:
            raise InferenceError(f"infer() needs the pipeline input: infer(inputs=...) for task {self.task!r}")
        return self.pipeline(*args, **kwargs)

    def memory_bytes(self) -> Optional[int]:
        return torch_memory_bytes(getattr(self.pipeline, "model", None))

    def close(self) -> None:
        self.pipeline = None


def transformers_pipeline(model_uid: str, model_path: Optional[str], task: Optional[str] = None,
                          device: Optional[str] = None, **launcher_args: Any) -> TransformersPipelineModel:
    """Launcher: a transformers pipeline (``launcher_args``: task + pipeline kwargs)."""
    return TransformersPipelineModel(model_uid, model_path, task=task, device=device, **launcher_args)


class PythonCallableModel:
    """Wraps a plain function: ``infer(**kwargs)`` returns ``function(**kwargs)``."""

    def __init__(self, model_uid: str, model_path: Optional[str], callable: Optional[str] = None,  # noqa: A002
                 **extra: Any):
        self.path = _launcher_arg(callable, "callable", "python_callable",
                                  "'{\"callable\": \"package.module:function\"}'")
        self.model_uid, self.model_path = model_uid, model_path
        self.extra = extra
        self.function: Optional[Callable[..., Any]] = None

    def load(self) -> None:
        function = import_object(self.path, "launcher_args.callable")
        if not callable(function):
            raise LaunchError(f"launcher_args.callable {self.path!r} is a {type(function).__name__}, not a callable")
        self.function = function

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        if self.function is None:
            raise InferenceError("the callable is not loaded")
        kwargs = {**self.extra, **kwargs}
        check_call(self.function, args, kwargs, self.path)
        return self.function(*args, **kwargs)


def python_callable(model_uid: str, model_path: Optional[str], **launcher_args: Any) -> PythonCallableModel:
    """Launcher: any Python function (``launcher_args``: {"callable": "pkg.module:function"})."""
    return PythonCallableModel(model_uid, model_path, **launcher_args)


# ------------------------------------------------------------------------------------------------
# The engine model
# ------------------------------------------------------------------------------------------------

class FlexibleModel(EngineModel):
    model_type = "flexible"
    abilities = ("infer",)

    def __init__(self, model_uid: str, model: Any):
        self.model_uid = model_uid
        self.model = model

    def infer(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("model", None)  # the REST body names the model uid; it is not an argument
        if self.model is None:
            raise InferenceError(f"model {self.model_uid!r} is closed")
        check_call(self.model.infer, args, kwargs, f"infer() of {self.model_uid!r}")
        return self.model.infer(*args, **kwargs)

    def memory_bytes(self) -> Optional[int]:
        own = getattr(self.model, "memory_bytes", None)
        if callable(own):
            try:
                return own()
            except Exception:
                return None
        return None

    def close(self) -> None:
        model, self.model = self.model, None
        closer = getattr(model, "close", None) or getattr(model, "unload", None)
        if callable(closer):
            try:
                closer()
            except Exception:
                pass
        del model
        release_memory()


def check_call(func: Any, args: tuple, kwargs: dict, what: str) -> None:
    """InferenceError naming the signature when ``func`` cannot take these arguments (a user
    mistake); errors raised inside ``func`` itself are left alone."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InferenceError(f"{what} refused the arguments: {exc}; it takes {signature}") from None


def load(request: LoadRequest) -> FlexibleModel:
    spec = request.spec
    launcher_path = spec.launcher
    launcher = import_object(launcher_path, "launcher")
    if not callable(launcher):
        raise LaunchError(f"launcher {launcher_path!r} is not callable")
    launcher_args = dict(spec.launcher_kwargs)
    launcher_args.update(backend_options(request.options).get("launcher_args") or {})
    if getattr(spec, "device", None) and "device" not in launcher_args and _accepts(launcher, "device"):
        launcher_args["device"] = spec.device
    elif request.device.uses_cuda and "device" not in launcher_args and _accepts(launcher, "device"):
        launcher_args["device"] = request.device.device
    model_path = str(request.model_path) if request.model_path is not None else (spec.model_id or None)
    request.progress("launcher", 0.1)
    model = None
    try:
        try:
            model = launcher(request.model_uid, model_path, **launcher_args)
        except TypeError as exc:
            raise LaunchError(f"launcher {launcher_path!r} refused launcher_args {sorted(launcher_args)}: {exc}") from exc
        if not hasattr(model, "infer"):
            raise LaunchError(f"launcher {launcher_path!r} returned a {type(model).__name__} without an infer() "
                              "method; return an object with load() and infer(**kwargs)")
        request.progress("load", 0.3)
        loader = getattr(model, "load", None)
        if callable(loader):
            loader()
    except LaunchError:
        _close_quietly(model)
        raise
    except Exception as exc:
        _close_quietly(model)
        raise LaunchError(f"flexible model {request.model_name!r}: launcher {launcher_path!r} failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc
    request.progress("ready", 1.0)
    return FlexibleModel(request.model_uid, model)


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _close_quietly(model: Any) -> None:
    closer = getattr(model, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception:
            pass
    release_memory()
