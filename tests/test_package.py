"""The package itself: fast import with no heavy libraries, lazy public names, error tree."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ["torch", "transformers", "diffusers", "llama_cpp", "fastapi", "ipywidgets", "sentence_transformers",
         "accelerate", "bitsandbytes", "uvicorn", "numpy"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_import_pulls_no_heavy_library():
    loaded = _modules_after("import xinference_nb")
    assert not {m for m in HEAVY if m in loaded}


def test_registration_api_pulls_no_heavy_library():
    loaded = _modules_after("from xinference_nb import Client\nClient().list_model_registrations('LLM')")
    assert not {m for m in HEAVY if m in loaded and m != "numpy"}


def test_importtime_shows_no_heavy_library():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import xinference_nb"],
                         capture_output=True, text=True, timeout=120)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY)


def test_lazy_public_names_resolve():
    import xinference_nb

    assert xinference_nb.Client.__name__ == "Client"
    assert issubclass(xinference_nb.SpecError, xinference_nb.XinfError)
    assert issubclass(xinference_nb.EngineUnavailable, xinference_nb.LaunchError)
    with pytest.raises(AttributeError):
        xinference_nb.does_not_exist  # noqa: B018
    for name in xinference_nb.__all__:
        assert getattr(xinference_nb, name) is not None


def test_engine_unavailable_says_how_to_install():
    from xinference_nb.errors import EngineUnavailable

    err = EngineUnavailable("The llama.cpp engine needs llama_cpp.", package="llama-cpp-python", extra="llama-cpp")
    assert 'pip install "xinference-nb[llama-cpp]"' in str(err)
