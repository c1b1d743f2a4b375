"""Importing a backend without what it drags in but our launch does not use.

sentence-transformers imports ``transformers.trainer_utils`` (for its model cards), which imports peft
when it is installed, which imports bitsandbytes: about 2.4 s of a cold embedding launch here, and
bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community ... pip install kernels" on
every CPU with AVX512-BF16, for a launch that uses neither adapters nor quantization.
``import_without_peft`` imports such a backend while transformers' ``is_peft_available``
answers False on the importing thread only: the function (cached once computed, so its own answer is
never touched) is swapped in ``transformers.utils`` for one that asks the thread first, and swapped
back after, also in the modules that bound it meanwhile. Other threads, ``import peft`` itself and other
libraries' checks (diffusers') are untouched, and peft imports normally afterwards. The only
import-time binding on that path, ``transformers.trainer_utils``' ``PeftModel`` / ``PeftMixedModel``
(read by the Trainer), is filled in the moment peft is imported, by anyone.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Optional

_LOCK = threading.Lock()
# module name -> the names it binds from peft at import time (what a peft-less import left out)
_PEFT_BINDINGS = {"transformers.trainer_utils": ("PeftModel", "PeftMixedModel")}


def _peft_installed() -> bool:
    return "peft" in sys.modules or importlib.util.find_spec("peft") is not None


def import_without_peft(name: str) -> ModuleType:
    """``importlib.import_module(name)`` with peft (and so bitsandbytes) left unimported; a plain import
    when peft is not installed or already imported, or transformers has no ``is_peft_available``."""
    if name in sys.modules or "peft" in sys.modules or not _peft_installed():
        return importlib.import_module(name)
    try:
        import transformers.utils as utils
        from transformers.utils import import_utils
    except ImportError:
        return importlib.import_module(name)
    real = getattr(import_utils, "is_peft_available", None)
    if real is None:
        return importlib.import_module(name)
    owner = threading.get_ident()
    holding = [True]

    def is_peft_available() -> bool:
        if holding[0] and threading.get_ident() == owner:
            return False
        return real()

    with _LOCK:
        before = set(sys.modules)
        homes = [m for m in (utils, import_utils) if getattr(m, "is_peft_available", None) is real]
        for home in homes:
            home.is_peft_available = is_peft_available
        try:
            module = importlib.import_module(name)
        finally:
            holding[0] = False
            for home in homes:
                home.is_peft_available = real
            for new in set(sys.modules) - before:   # the modules that bound the stand-in meanwhile
                mod = sys.modules.get(new)
                if getattr(mod, "is_peft_available", None) is is_peft_available:
                    mod.is_peft_available = real  # type: ignore[union-attr]
        missing = [m for m, names in _PEFT_BINDINGS.items()
                   if m in sys.modules and not all(hasattr(sys.modules[m], n) for n in names)]
        if "peft" in sys.modules:   # imported meanwhile on another thread
            fill_peft_bindings(sys.modules["peft"])
        elif missing and not any(isinstance(f, _FillOnPeftImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _FillOnPeftImport())
        return module


def fill_peft_bindings(peft: Any) -> None:
    """Give the modules imported without peft the names they would have bound from it."""
    for module_name, names in _PEFT_BINDINGS.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for attr in names:
            if not hasattr(module, attr) and hasattr(peft, attr):
                setattr(module, attr, getattr(peft, attr))


class _FillOnPeftImport(importlib.abc.MetaPathFinder):
    """Waits for the first ``import peft`` and fills the bindings once it has run; then steps aside."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if fullname != "peft":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("peft")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            fill_peft_bindings(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
