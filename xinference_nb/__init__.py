"""xinference_nb: register, parse, launch and use your own AI models inside a Jupyter kernel.

Public names are loaded on first use so that ``import xinference_nb`` stays fast and never imports
torch, transformers, diffusers, llama_cpp, fastapi or ipywidgets.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name → submodule that defines it
_LAZY = {
    "Client": "client",
    "XinfError": "errors",
    "SpecError": "errors",
    "RegistryError": "errors",
    "ParseError": "errors",
    "LaunchError": "errors",
    "EngineUnavailable": "errors",
    "ModelNotFound": "errors",
    "InferenceError": "errors",
    "CacheError": "errors",
    "load_spec": "spec",
    "MODEL_TYPES": "spec",
    "get_registry": "registry",
    "ModelManager": "manager",
    "get_manager": "manager",
    "parse_model": "parse",
    "ParsedModel": "parse",
    "serve": "server.runner",
    "stop_server": "server.runner",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client
    from .errors import (CacheError, EngineUnavailable, InferenceError, LaunchError, ModelNotFound, ParseError,
                         RegistryError, SpecError, XinfError)
    from .parse import ParsedModel, parse_model
    from .registry import get_registry
    from .server.runner import serve, stop_server
    from .spec import MODEL_TYPES, load_spec


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xinference_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext xinference_nb`` registers the %xinf magics."""
    from .commands.magics import load_ipython_extension as _load

    _load(ipython)
