"""``handle.map`` (issue 22 item 4): a prompt template over a list, a Series or DataFrame rows, with a
schema; results in order; the on-disk cache (hits run nothing, a changed model file is a miss); an
interrupt keeps what finished and the rerun resumes; the remote handle against a real server. The
tiny random Llama; the engine's own forward-pass counter (the scheduler's ``steps``) says what ran."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from xinference_nb.client.handles import handle_of
from xinference_nb.errors import InferenceError

from public_api import launch_by_path, shared_manager

pytest.importorskip("transformers")
pd = pytest.importorskip("pandas")

GREEDY = {"max_tokens": 6, "temperature": 0}
LABELS = ["positive", "negative", "neutral"]
REVIEW = {"type": "object", "properties": {"label": {"type": "string", "enum": LABELS},
                                           "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["label", "stars"], "additionalProperties": False}
REVIEW_FORMAT = {"type": "json_schema", "json_schema": {"name": "review", "schema": REVIEW, "strict": True}}
TEXTS = ["A wonderful film.", "Terrible, I left early.", "It was fine.", "Best meal of my life!", "Meh."]


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("map-")


@pytest.fixture(scope="module")
def llm(manager, tiny_llama_dir):
    return handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="map-llm"))


def _steps(manager, uid) -> int:
    """Forward passes the model's batch scheduler has run (a real counter of engine work)."""
    return manager.engine_model(uid).scheduler.steps


def _reply(handle, prompt, cfg=GREEDY, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return handle.chat(messages, generate_config=cfg)["choices"][0]["message"]["content"]


# ------------------------------------------------------------------------------------------------
# In, out
# ------------------------------------------------------------------------------------------------
def test_list_in_list_out_in_order(llm):
    prompts = ["Hello", "The cat", "x", "Once upon a time", "Numbers: 1 2 3", "Why?"]
    out = llm.map(prompts, generate_config=GREEDY, progress=False)
    assert out == [_reply(llm, p) for p in prompts]     # each row what it gets alone, in order
    assert llm.map(prompts, "Say: {item}", generate_config=GREEDY, progress=False) == \
        [_reply(llm, f"Say: {p}") for p in prompts]
    rows = [{"name": "Ann", "city": "Oslo"}, {"name": "Bo", "city": "Rome"}]
    out = llm.map(rows, "{name} lives in {city}", system="Be brief.", generate_config=GREEDY, progress=False)
    assert out == [_reply(llm, "Ann lives in Oslo", system="Be brief."), _reply(llm, "Bo lives in Rome",
                                                                                system="Be brief.")]
    out = llm.map([3, 4], lambda n: [{"role": "user", "content": f"{n} + {n} ="}], generate_config=GREEDY,
                  progress=False)
    assert out == [_reply(llm, "3 + 3 ="), _reply(llm, "4 + 4 =")]


def test_series_in_series_out(llm):
    texts = pd.Series(TEXTS[:3], index=["a", "b", "c"], name="text")
    out = llm.map(texts, "Review: {text}", generate_config=GREEDY, progress=False)
    assert isinstance(out, pd.Series) and list(out.index) == ["a", "b", "c"]
    assert list(out) == [_reply(llm, f"Review: {t}") for t in TEXTS[:3]]
    assert list(llm.map(texts, "Review: {item}", generate_config=GREEDY, progress=False)) == list(out)


def _check_reviews(frame, index):
    assert list(frame.columns) == ["label", "stars"]     # no _error column: every row parsed
    assert list(frame.index) == list(index)
    assert set(frame["label"]) <= set(LABELS)
    assert all(isinstance(s, int) and 1 <= s <= 5 for s in frame["stars"].tolist())


def test_dataframe_in_dataframe_out_with_a_schema(llm):
    """Waits for the engines' constraint mask (issue 22 item 1): random weights, valid fields."""
    df = pd.DataFrame({"text": TEXTS, "id": range(5)}, index=[10, 11, 12, 13, 14])
    cfg = {"max_tokens": 300, "temperature": 0}
    frame = llm.map(df, "Review #{id}: {text}\nAnswer in JSON.", response_format=REVIEW_FORMAT,
                    generate_config=cfg, progress=False)
    _check_reviews(frame, df.index)
    assert frame.attrs["map"] == {"rows": 5, "cached": 0, "ran": 5}

    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Review(BaseModel):
        model_config = ConfigDict(extra="forbid")   # else the schema lets a random model add keys forever
        label: Literal["positive", "negative", "neutral"]
        stars: int = Field(ge=1, le=5)

    _check_reviews(llm.map(df, "Review: {text}", response_format=Review, generate_config=cfg, progress=False),
                   df.index)
    reviews = llm.map(TEXTS[:2], response_format=Review, generate_config=cfg, progress=False)
    assert all(isinstance(r, Review) for r in reviews)


def test_a_reply_that_does_not_parse_is_nan_with_the_reason(llm):
    df = pd.DataFrame({"text": TEXTS[:3]})
    with pytest.warns(UserWarning, match="3 of 3 replies did not parse"):
        out = llm.map(df["text"].tolist(), response_format=REVIEW_FORMAT, generate_config={"max_tokens": 1},
                      progress=False)
    assert out == [None, None, None]
    frame = llm.map(df, "{text}", response_format=REVIEW_FORMAT, generate_config={"max_tokens": 1}, progress=False)
    assert list(frame.columns) == ["label", "stars", "_error"]
    assert frame["label"].isna().all() and frame["stars"].isna().all()
    assert all("max_tokens" in why for why in frame["_error"])


def test_bad_input_is_refused_before_anything_runs(llm, manager):
    df = pd.DataFrame({"text": ["a"], "lang": ["en"]})
    before = _steps(manager, llm.model_uid)
    with pytest.raises(InferenceError, match=r"no \{txt\}.*\{text\}, \{lang\}"):
        llm.map(df, "Classify: {txt}")
    with pytest.raises(InferenceError, match="literal brace"):
        llm.map(["a"], 'JSON like {"a": 1}: {item}')
    with pytest.raises(InferenceError, match="prompt="):
        llm.map([{"text": "a"}])
    with pytest.raises(InferenceError, match="list, a pandas Series"):
        llm.map("just a string")
    with pytest.raises(InferenceError, match="stream"):
        llm.map(["a"], generate_config={"stream": True})
    with pytest.raises(InferenceError, match="'n'"):
        llm.map(["a"], generate_config={"n": 2})
    with pytest.raises(InferenceError, match="pass it once"):
        llm.map(["a"], response_format=REVIEW_FORMAT, generate_config={"response_format": REVIEW_FORMAT})
    with pytest.raises(InferenceError, match="temperature"):
        llm.map(["a"], generate_config={"temperature": -1})
    with pytest.raises(InferenceError, match="cache"):
        llm.map(["a"], cache=3)
    with pytest.raises(InferenceError, match="system message"):
        llm.map(["a"], lambda r: [{"role": "system", "content": "s"}, {"role": "user", "content": r}], system="t")
    assert _steps(manager, llm.model_uid) == before


# ------------------------------------------------------------------------------------------------
# The cache
# ------------------------------------------------------------------------------------------------
def test_cache_hit_runs_nothing(llm, manager, tmp_path, monkeypatch):
    monkeypatch.setenv("XINFERENCE_NB_HOME", str(tmp_path / "home"))
    df = pd.DataFrame({"text": TEXTS})
    first = llm.map(df, "Review: {text}", generate_config=GREEDY, cache=True, progress=False)
    folder = tmp_path / "home" / "map_cache"          # the documented default
    files = sorted(folder.rglob("*.json"))
    assert len(files) == 5 and not list(folder.rglob("*.tmp"))
    before = _steps(manager, llm.model_uid)
    second = llm.map(df, "Review: {text}", generate_config=GREEDY, cache=True, progress=False)
    assert _steps(manager, llm.model_uid) == before   # nothing ran
    assert list(second) == list(first) and second.attrs["map"] == {"rows": 5, "cached": 5, "ran": 0}
    # another generate_config, prompt or schema is another key
    for kwargs in ({"generate_config": dict(GREEDY, max_tokens=5)}, {"prompt": "Text: {text}"},
                   {"response_format": {"type": "json_object"}, "generate_config": dict(GREEDY, max_tokens=1)}):
        call = {"prompt": "Review: {text}", "generate_config": GREEDY, **kwargs}
        out = llm.map(df, cache=True, progress=False, **call)
        assert out.attrs["map"]["ran"] == 5, kwargs
    # a folder of one's own
    own = llm.map(TEXTS[:2], generate_config=GREEDY, cache=tmp_path / "own", progress=False)
    assert own == [_reply(llm, t) for t in TEXTS[:2]]
    assert len(list((tmp_path / "own").rglob("*.json"))) == 2


def test_a_changed_model_file_is_a_miss(manager, tiny_llama_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_llama_dir, tmp_path / "llama"))
    uid = launch_by_path(manager, folder, model_uid="map-copy")
    handle = handle_of(manager, uid)
    cache = tmp_path / "cache"
    first = handle.map(TEXTS[:3], generate_config=GREEDY, cache=cache, progress=False)
    before = _steps(manager, uid)
    assert handle.map(TEXTS[:3], generate_config=GREEDY, cache=cache, progress=False) == first
    assert _steps(manager, uid) == before
    config = folder / "config.json"
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # same bytes, newer file
    again = handle.map(pd.Series(TEXTS[:3]), generate_config=GREEDY, cache=cache, progress=False)
    assert again.attrs["map"]["ran"] == 3 and _steps(manager, uid) > before
    assert len(list(cache.rglob("*.json"))) == 6                           # old entries stay, never hit
    manager.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# Interrupt and resume
# ------------------------------------------------------------------------------------------------
def _interrupt_after(manager, uid, steps: int, armed: threading.Event, done: threading.Event) -> threading.Thread:
    """SIGINT to this process (a notebook's interrupt: KeyboardInterrupt in the main thread) once the
    model has run ``steps`` forward passes."""
    def watch():
        while not done.is_set():
            if armed.is_set() and _steps(manager, uid) >= steps:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("cache", [False, True], ids=["memory", "disk"])
def test_an_interrupt_keeps_finished_rows_and_the_rerun_resumes(manager, tiny_llama_dir, tmp_path, cache):
    uid = launch_by_path(manager, tiny_llama_dir, model_uid=f"map-two-{cache}", max_num_seqs=2)
    handle = handle_of(manager, uid)
    rows = pd.Series([f"Row {i}: tell me a story about the number {i}" for i in range(8)])
    cfg = {"max_tokens": 48, "temperature": 0}
    folder = tmp_path / "cache" if cache else False
    start = _steps(manager, uid)
    armed, done = threading.Event(), threading.Event()
    watcher = _interrupt_after(manager, uid, start + 70, armed, done)   # rows 1-2 are done by 50
    try:
        with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="rows are finished and kept"):
            armed.set()
            handle.map(rows, generate_config=cfg, cache=folder, progress=False)
    finally:
        done.set()
        watcher.join()
    resumed_from = _steps(manager, uid)
    out = handle.map(rows, generate_config=cfg, cache=folder, progress=False)
    kept = out.attrs["map"]["cached"]
    assert 1 <= kept < 8 and out.attrs["map"]["ran"] == 8 - kept
    rerun_steps = _steps(manager, uid) - resumed_from
    assert list(out) == [_reply(handle, r, cfg) for r in rows]     # the same as had nothing stopped
    if not cache:   # the completed call left memory: the same call runs every row again
        full_from = _steps(manager, uid)
        assert handle.map(rows, generate_config=cfg, progress=False).attrs["map"]["ran"] == 8
        assert rerun_steps < _steps(manager, uid) - full_from
    manager.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# Remote
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote(llm, tiny_llama_dir, tmp_path_factory):
    pytest.importorskip("fastapi")
    from xinference_nb.client.remote import RemoteClient
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    server = start_in_thread(create_app(allowed_roots=[str(tmp_path_factory.getbasetemp())]), port=0)
    client = RemoteClient(server.url)
    yield client.get_model(llm.model_uid)
    client.close()
    server.stop()


def test_remote_map_matches_in_kernel(remote, llm, manager, tmp_path):
    assert remote.map(TEXTS, "Review: {item}", generate_config=GREEDY, progress=False) == \
        llm.map(TEXTS, "Review: {item}", generate_config=GREEDY, progress=False)
    df = pd.DataFrame({"text": TEXTS[:3]}, index=[7, 8, 9])
    first = remote.map(df, "Review: {text}", generate_config=GREEDY, cache=tmp_path, progress=False)
    assert list(first.index) == [7, 8, 9] and list(first) == [_reply(llm, f"Review: {t}") for t in TEXTS[:3]]
    before = _steps(manager, llm.model_uid)
    again = remote.map(df, "Review: {text}", generate_config=GREEDY, cache=tmp_path, progress=False)
    assert _steps(manager, llm.model_uid) == before and again.attrs["map"]["cached"] == 3
    with pytest.raises(InferenceError, match=r"no \{txt\}"):
        remote.map(df, "{txt}")


def test_remote_map_with_a_schema(remote):
    """Waits for the engines' constraint mask (issue 22 item 1)."""
    df = pd.DataFrame({"text": TEXTS[:3]})
    frame = remote.map(df, "Review: {text}", response_format=REVIEW_FORMAT,
                       generate_config={"max_tokens": 300, "temperature": 0}, progress=False)
    _check_reviews(frame, df.index)
