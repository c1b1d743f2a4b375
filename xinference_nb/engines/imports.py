"""Importing a backend without what it drags in but our launch does not use.

sentence-transformers imports ``transformers.trainer_utils`` (for its model cards), which imports peft
when it is installed, which imports bitsandbytes: about 2.4 s of a cold embedding launch here, and
bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community ... pip install kernels" on
every CPU with AVX512-BF16, for a launch that uses neither adapters nor quantization.
``import_without_peft`` imports such a backend while peft looks absent (``sys.modules["peft"] = None``
makes ``importlib.util.find_spec`` answer None, which is how transformers asks), then puts everything
back: peft imports normally afterwards. The only import-time binding on that path,
``transformers.trainer_utils``' ``PeftModel`` / ``PeftMixedModel`` (read by the Trainer), is filled in
the moment peft is imported, by anyone.
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
    """``importlib.import_module(name)`` with peft (and so bitsandbytes) left unimported; a no-op
    wrapper when peft is not installed or already imported."""
    with _LOCK:
        if name in sys.modules or "peft" in sys.modules or not _peft_installed():
            return importlib.import_module(name)
        sys.modules["peft"] = None  # type: ignore[assignment]
        try:
            module = importlib.import_module(name)
        finally:
            if "peft" in sys.modules and sys.modules["peft"] is None:
                del sys.modules["peft"]
        missing = [m for m, names in _PEFT_BINDINGS.items()
                   if m in sys.modules and not all(hasattr(sys.modules[m], n) for n in names)]
        if missing and not any(isinstance(f, _FillOnPeftImport) for f in sys.meta_path):
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
