"""Flexible models (a launcher defined here, the shipped transformers-pipeline and python-callable
launchers) and a model in its own virtualenv whose package only that venv has."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from xinference_nb.errors import InferenceError, LaunchError
from public_api import launch, terminate  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Everything goes through the public Client: register, launch, get_model, terminate.
# ------------------------------------------------------------------------------------------------
def flexible_doc(name, launcher, launcher_args=None, model_uri=None, virtualenv=None):
    doc = {"version": 2, "model_name": name, "model_description": "test model", "model_uri": model_uri,
           "launcher": launcher, "launcher_args": json.dumps(launcher_args or {}), "is_builtin": False}
    if virtualenv is not None:
        doc["virtualenv"] = virtualenv
    return doc


# a launcher defined in this test module ---------------------------------------------------------
class EchoModel:
    def __init__(self, model_uid, model_path, greeting="hello"):
        self.model_uid, self.model_path, self.greeting = model_uid, model_path, greeting
        self.loaded = False

    def load(self):
        self.loaded = True

    def infer(self, name, shout=False):
        text = f"{self.greeting}, {name} from {self.model_uid}"
        return {"text": text.upper() if shout else text, "loaded": self.loaded, "path": self.model_path}


def echo_launcher(model_uid, model_path, **launcher_args):
    return EchoModel(model_uid, model_path, **launcher_args)


def test_flexible_launcher_from_test_module(tmp_path):
    uid, h = launch("flexible", flexible_doc("echo", f"{__name__}.echo_launcher", {"greeting": "hi"},
                                             model_uri=str(tmp_path)))
    try:
        out = h.infer(name="Ada")
        assert out == {"text": f"hi, Ada from {uid}", "loaded": True, "path": str(tmp_path)}
        assert h.infer(name="Ada", shout=True)["text"] == f"HI, ADA FROM {uid.upper()}"
        with pytest.raises(InferenceError, match="nope"):
            h.infer(name="Ada", nope=1)
    finally:
        terminate(uid, h)


def test_python_callable_launcher():
    uid, h = launch("flexible", flexible_doc("dumper", "xinference_nb.engines.flexible.python_callable",
                                             {"callable": "json:dumps"}))
    try:
        assert h.infer(obj={"a": [1, 2]}, sort_keys=True) == '{"a": [1, 2]}'
    finally:
        terminate(uid, h)


@pytest.mark.parametrize("launcher", ["xinference_nb.engines.flexible.transformers_pipeline",
                                      "xinference.model.flexible.launchers.transformers"])
def test_transformers_pipeline_launcher(cross_encoder_dir, launcher):
    from transformers import pipeline

    name = "clf-" + launcher.split(".")[0]
    uid, h = launch("flexible", flexible_doc(name, launcher, {"task": "text-classification"},
                                             model_uri=f"file://{cross_encoder_dir}"))
    try:
        out = h.infer(inputs="Where is the station?")
        expected = pipeline("text-classification", model=str(cross_encoder_dir))("Where is the station?")
        assert out[0]["label"] == expected[0]["label"]
        assert out[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-5)
    finally:
        terminate(uid, h)


def test_flexible_launch_errors(tmp_path):
    with pytest.raises(LaunchError, match="no_such_module"):
        launch("flexible", flexible_doc("bad1", "no_such_module.launcher"))
    with pytest.raises(LaunchError, match="task"):
        launch("flexible", flexible_doc("bad2", "xinference_nb.engines.flexible.transformers_pipeline", {},
                                        model_uri=str(tmp_path)))
    with pytest.raises(LaunchError, match="callable"):
        launch("flexible", flexible_doc("bad3", "xinference_nb.engines.flexible.python_callable", {}))


# virtualenv ------------------------------------------------------------------------------------
def _worker_pids():
    import psutil

    me = psutil.Process()
    pids = set()
    for child in me.children(recursive=True):
        try:
            if "xinference_nb.isolation.venv_worker" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            pass
    return pids


def test_model_in_its_own_virtualenv(local_package_dir, nb_home):
    assert importlib.util.find_spec("xnb_tiny_pkg") is None, "the kernel must not have the venv-only package"
    # a local package is a requirement with a direct reference, never a bare path (see test_security.py, item 1)
    venv_settings = {"packages": [f"xnb-tiny-pkg @ {local_package_dir.as_uri()}"], "inherit_pip_config": False,
                     "no_build_isolation": True}
    doc = flexible_doc("tiny-pkg-model", "xinference_nb.engines.flexible.python_callable",
                       {"callable": "xnb_tiny_pkg:shout"}, virtualenv=venv_settings)
    before = _worker_pids()
    uid, h = launch("flexible", doc)
    try:
        assert h.infer(text="hello") == "HELLO!"
        with pytest.raises(InferenceError):
            h.infer(text="hello", volume=11)  # shout() takes no such argument: our error, across the pipe
        venv = nb_home / "virtualenv" / "tiny-pkg-model"
        assert (venv / "install.log").is_file() and "xnb" in (venv / "install.log").read_text().lower()
        assert list(venv.glob("lib/python*/site-packages/xnb_tiny_pkg/__init__.py"))
        assert len(_worker_pids() - before) == 1
    finally:
        terminate(uid, h)
    assert _worker_pids() == before, "terminate must stop the virtualenv process"
    assert "xnb_tiny_pkg" not in sys.modules
    assert importlib.util.find_spec("xnb_tiny_pkg") is None

    # a second launch reuses the venv (no reinstall) and works the same
    log_size = (nb_home / "virtualenv" / "tiny-pkg-model" / "install.log").stat().st_size
    uid, h = launch("flexible", doc)
    try:
        assert h.infer(text="again") == "AGAIN!"
    finally:
        terminate(uid, h)
    assert (nb_home / "virtualenv" / "tiny-pkg-model" / "install.log").stat().st_size == log_size


def test_virtualenv_install_failure_keeps_log(tmp_path, nb_home):
    missing = tmp_path / "no-such-package-folder"
    doc = flexible_doc("broken-venv", "xinference_nb.engines.flexible.python_callable", {"callable": "json:dumps"},
                       virtualenv={"packages": [f"no-such-package @ {missing.as_uri()}"], "inherit_pip_config": False})
    with pytest.raises(LaunchError, match="install.log") as info:
        launch("flexible", doc)
    assert str(missing) in str(info.value)
    log = nb_home / "virtualenv" / "broken-venv" / "install.log"
    assert log.is_file() and str(missing) in log.read_text()


def test_enable_virtual_env_and_envs_are_applied(nb_home):
    """enable_virtual_env=True runs the model in its own process even without packages, and envs sets
    that process's environment (not the kernel's); envs without a virtualenv is an error, never dropped."""
    import os

    from xinference_nb.errors import LaunchOptionError

    doc = flexible_doc("env-reader", "xinference_nb.engines.flexible.python_callable", {"callable": "os:getenv"})
    assert "XNB_TEST_ENV" not in os.environ
    with pytest.raises(LaunchOptionError, match="envs") as err:
        launch("flexible", doc, envs={"XNB_TEST_ENV": "from-envs"})
    assert err.value.fields == ["envs"]
    before = _worker_pids()
    uid, h = launch("flexible", doc, enable_virtual_env=True, envs={"XNB_TEST_ENV": "from-envs"})
    try:
        assert h.infer(key="XNB_TEST_ENV") == "from-envs"
        assert len(_worker_pids() - before) == 1
        assert "XNB_TEST_ENV" not in os.environ
    finally:
        terminate(uid, h)
