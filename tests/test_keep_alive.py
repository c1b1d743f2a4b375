"""keep_alive (issue 24): a launched model frees its weights after it has been unused that long, stays
listed (status UNLOADED, no memory), and the next call loads it again and answers as before (greedy:
the same tokens). 0 frees after each request (a batch counts as one), -1 / the default never. Tiny real
models, real engines, a real server; no mocks."""
from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref

import httpx
import pytest

from xinference_nb.client.handles import handle_of
from xinference_nb.engines.options import duration_seconds
from xinference_nb.errors import LaunchOptionError, ModelNotFound

from public_api import concurrently, launch_by_path, own_manager

pytest.importorskip("transformers")

GREEDY = {"max_tokens": 6, "temperature": 0}
HI = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def manager():
    yield from own_manager()


def _weights(manager, uid):
    """A weak reference to the torch module of ``uid``'s engine model (loaded as it is now)."""
    return weakref.ref(manager.running_model(uid).model.model)


def _wait(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while not predicate() and time.time() < deadline:
        time.sleep(0.05)
    return predicate()


def _reply(handle, **cfg):
    return handle.chat(HI, generate_config=dict(GREEDY, **cfg))["choices"][0]["message"]["content"]


@pytest.mark.parametrize("value, seconds", [
    (0, 0.0), (0.5, 0.5), (30, 30.0), ("30", 30.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0),
    ("500ms", 0.5), ("-1", None), (-1, None), (-5, None), (" 2M ", 120.0)])
def test_durations_read_as_ollama_writes_them(value, seconds):
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize("value", [True, False, "soon", "5 m", "m5", "", "1x", float("nan"), float("inf"), [5],
                                   {"s": 1}, "5m-"])
def test_bad_keep_alive_is_refused_before_anything_loads(manager, tiny_llama_dir, value):
    with pytest.raises(LaunchOptionError, match="keep_alive") as err:
        launch_by_path(manager, tiny_llama_dir, model_uid="ka-bad", keep_alive=value)
    assert "30s" in str(err.value) and "-1" in str(err.value)
    assert manager.list_models() == {}


def test_unused_model_unloads_and_the_next_call_reloads_it(manager, tiny_llama_dir):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="ka-timer", keep_alive="1s")
    weights = _weights(manager, uid)
    handle = handle_of(manager, uid)
    first = _reply(handle)
    listed = manager.list_models()[uid]
    assert listed["status"] == "READY" and listed["memory_bytes"] > 0 and listed["keep_alive"] == 1.0
    # the reaper thread frees it (nobody calls list_models meanwhile)
    assert _wait(lambda: manager.running_model(uid).model is None)
    gc.collect()
    assert weights() is None, "the torch module outlived the unload"
    listed = manager.list_models()[uid]
    assert listed["status"] == "UNLOADED" and listed["memory_bytes"] == 0 and manager.used_bytes() == 0
    assert listed["context_length"] and listed["model_name"] == "qwen2.5-instruct"
    assert _reply(handle) == first                       # loaded again, the same greedy answer
    assert manager.list_models()[uid]["status"] == "READY" and manager.used_bytes() > 0
    assert _wait(lambda: manager.running_model(uid).model is None)   # and freed again after it


def test_keep_alive_zero_frees_after_each_request_and_a_batch_counts_as_one(manager, tiny_llama_dir):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="ka-zero", keep_alive=0)
    handle = handle_of(manager, uid)
    loads = []
    original = manager._load
    manager._load = lambda *a, **k: loads.append(1) or original(*a, **k)
    first = _reply(handle)                               # on the weights the launch loaded
    assert manager.list_models()[uid]["status"] == "UNLOADED" and loads == []
    streamed = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in handle.chat(HI, generate_config=dict(GREEDY, stream=True)))
    assert streamed == first and manager.running_model(uid).model is None and loads == [1]
    rows = handle.chat_batch([HI] * 5, generate_config=GREEDY, progress=False)
    assert [r["choices"][0]["message"]["content"] for r in rows] == [first] * 5
    assert loads == [1, 1], "a batch loads once and frees at its end"
    assert manager.running_model(uid).model is None
    assert handle.map(["a", "b"], progress=False, generate_config=GREEDY) and loads == [1] * 3
    assert manager.running_model(uid).model is None


def test_concurrent_calls_share_one_reload_and_never_see_it_half_unloaded(manager, tiny_llama_dir):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="ka-race", keep_alive="50ms")
    handle = handle_of(manager, uid)
    first = _reply(handle)
    assert _wait(lambda: manager.running_model(uid).model is None)
    loads = []
    original = manager._load
    manager._load = lambda *a, **k: loads.append(1) or original(*a, **k)
    # 6 callers arrive while it is unloaded; later rounds race the 50 ms reaper
    for _ in range(3):
        assert concurrently(lambda _: _reply(handle), range(6)) == [first] * 6
        time.sleep(0.08)
    assert 1 <= len(loads) <= 3
    assert _wait(lambda: manager.running_model(uid).model is None)


def test_never_and_the_default_keep_the_weights(manager, tiny_llama_dir):
    never = launch_by_path(manager, tiny_llama_dir, model_uid="ka-never", keep_alive="-1")
    default = launch_by_path(manager, tiny_llama_dir, model_uid="ka-default")
    _reply(handle_of(manager, never))
    time.sleep(0.3)
    listed = manager.list_models()
    assert listed[never]["status"] == listed[default]["status"] == "READY"
    assert listed[never]["keep_alive"] is None and listed[default]["keep_alive"] is None
    assert manager._reaper is None or not manager._reaper.is_alive()   # nothing to watch: no thread


def test_terminate_an_unloaded_model_and_a_budget_counts_only_loaded_ones(manager, tiny_llama_dir):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="ka-term", keep_alive=0)
    handle = handle_of(manager, uid)
    _reply(handle)
    assert manager.running_model(uid).model is None
    manager.terminate_model(uid)
    assert uid not in manager.list_models()
    with pytest.raises(ModelNotFound, match="terminated"):
        _reply(handle)
    # an unloaded model holds nothing, so a budget that fits one model fits a second beside it
    a = launch_by_path(manager, tiny_llama_dir, model_uid="ka-a", keep_alive=0)
    _reply(handle_of(manager, a))
    size = manager.running_model(a).estimate.total_bytes
    manager.set_memory_budget(int(size * 1.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no eviction warning: nothing had to be terminated
        b = launch_by_path(manager, tiny_llama_dir, model_uid="ka-b")
    assert set(manager.list_models()) == {a, b} and manager.used_bytes() == manager.running_model(b).memory_bytes
    # reloading a over budget makes room the way a launch does: the idle b is terminated
    manager.set_memory_budget(size + manager.used_bytes() // 2)
    with pytest.warns(UserWarning, match="terminated the least recently used"):
        _reply(handle_of(manager, a))
    assert set(manager.list_models()) == {a}


def test_a_model_terminated_while_it_reloads_is_freed(manager, tiny_llama_dir):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="ka-mid", keep_alive=0)
    handle = handle_of(manager, uid)
    _reply(handle)
    loaded, go_on, kept = threading.Event(), threading.Event(), []
    original = manager._load

    def slow_load(*a, **k):
        model = original(*a, **k)
        kept.append(weakref.ref(model.model))
        loaded.set()
        go_on.wait(30)
        return model

    manager._load = slow_load
    errors = []
    caller = threading.Thread(target=lambda: errors.append(pytest.raises(ModelNotFound, _reply, handle)))
    caller.start()
    assert loaded.wait(30)
    manager.terminate_model(uid)
    go_on.set()
    caller.join(30)
    assert errors and "terminated" in str(errors[0].value)
    gc.collect()
    assert kept and kept[0]() is None
    assert manager.list_models() == {}


def test_over_rest_keep_alive_is_a_launch_option_and_list_models_says_unloaded(tiny_llama_dir):
    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    server = start_in_thread(create_app(Client(), allowed_roots=[str(tiny_llama_dir.parent)]), port=0)
    body = {"model_name": "qwen2.5-instruct", "model_engine": "transformers", "model_path": str(tiny_llama_dir),
            "n_gpu": None}
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            r = c.post("/v1/models", json=dict(body, model_uid="ka-rest-bad", keep_alive="a while"))
            assert r.status_code == 400 and "keep_alive" in r.json()["detail"], r.text
            r = c.post("/v1/models", json=dict(body, model_uid="ka-rest", keep_alive="0s"))
            assert r.status_code == 200, r.text
            chat = {"model": "ka-rest", "messages": HI, **GREEDY}
            first = c.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
            listed = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
            assert listed["ka-rest"]["status"] == "UNLOADED", listed
            again = c.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
            assert again == first
            assert c.delete("/v1/models/ka-rest").status_code == 200
    finally:
        server.stop()
