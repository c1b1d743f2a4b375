"""Continuous batching of the transformers LLM engine (issue 14): concurrent requests share forward
passes and each gets exactly what it gets alone; per-request limits, stops, seeds, streaming,
cancellation and terminate mid-batch; the notebook batch API in-kernel and over REST; llama.cpp
serializes concurrent requests on one GGUF without mixing them up. Tiny real models."""
from __future__ import annotations

import threading

import pytest

from xinference_nb.errors import InferenceError, LaunchOptionError
from xinference_nb.client.handles import handle_of
from xinference_nb.manager import ModelManager

from public_api import launch_by_path, shared_manager

pytest.importorskip("transformers")

PROMPTS = ["Hello", "Once upon a time there was a", "The cat", "A much longer prompt that goes on about many things",
           "x", "Numbers: 1 2 3"]


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("batching-")


def _launch(manager, path, uid, **kw):
    return launch_by_path(manager, path, model_uid=f"batching-{uid}", **kw)


@pytest.fixture(scope="module")
def pair(manager, tiny_llama_dir):
    """(batched handle, one-request-at-a-time handle) on the same weights."""
    batched = _launch(manager, tiny_llama_dir, "batched")
    serial = _launch(manager, tiny_llama_dir, "serial", max_num_seqs=1)
    return handle_of(manager, batched), handle_of(manager, serial)


def _concurrently(fn, items):
    out = [None] * len(items)
    errors = []

    def run(i):
        try:
            out[i] = fn(i, items[i])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def _count_forwards(manager, uid):
    model = manager.engine_model(uid).model
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    return calls, hook


def test_options_and_fallback(manager, pair, tiny_llama_dir, tiny_gguf_file):
    batched, serial = pair
    assert manager.engine_model(batched.model_uid).scheduler is not None
    assert manager.engine_model(batched.model_uid).max_num_seqs == 16
    assert manager.engine_model(serial.model_uid).scheduler is None       # max_num_seqs=1: model.generate per call
    for bad in ({"max_num_seqs": 0}, {"max_num_seqs": "8"}, {"batch_wait_ms": -1}, {"batch_wait_ms": True}):
        with pytest.raises(LaunchOptionError, match=next(iter(bad))):
            _launch(manager, tiny_llama_dir, "bad", **bad)
    pytest.importorskip("llama_cpp")
    with pytest.raises(LaunchOptionError, match="max_num_seqs"):   # llama.cpp has no batch scheduler
        manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                             show_progress=False, max_num_seqs=4)
    assert "batching-bad" not in manager.list_models()


def test_greedy_batch_equals_each_request_alone(manager, pair):
    batched, serial = pair
    cfgs = [{"temperature": 0, "max_tokens": 24 - 3 * i} for i in range(len(PROMPTS))]
    alone = [serial.generate(p, c) for p, c in zip(PROMPTS, cfgs)]
    calls, hook = _count_forwards(manager, batched.model_uid)
    try:
        together = _concurrently(lambda i, p: batched.generate(p, cfgs[i]), PROMPTS)
    finally:
        hook.remove()
    for a, b in zip(alone, together):
        assert b["choices"][0]["text"] == a["choices"][0]["text"]
        assert b["choices"][0]["finish_reason"] == a["choices"][0]["finish_reason"]
        assert b["usage"] == a["usage"]
    # they shared forward passes: far fewer than one per token per request
    tokens = sum(r["usage"]["completion_tokens"] for r in together)
    assert len(calls) < tokens / 2, (len(calls), tokens)
    # chat, the same through the batched model alone and together
    msgs = [[{"role": "user", "content": p}] for p in PROMPTS]
    solo = [serial.chat(m, generate_config={"temperature": 0, "max_tokens": 16}) for m in msgs]
    many = batched.chat_batch(msgs, {"temperature": 0, "max_tokens": 16}, progress=False)
    assert [r["choices"][0]["message"] for r in many] == [r["choices"][0]["message"] for r in solo]


def test_per_request_seeds_stops_and_lengths_in_one_batch(pair):
    batched, _ = pair
    sampled = {"temperature": 1.5, "top_p": 0.9, "top_k": 50, "seed": 7, "max_tokens": 12}
    alone = batched.generate("Numbers:", sampled)["choices"][0]["text"]
    full = batched.generate("Once upon", {"temperature": 0, "max_tokens": 30})["choices"][0]["text"]
    stop = next((full[i:i + 2] for i in range(3, len(full) - 2) if full[i:i + 2].strip() == full[i:i + 2]), None)
    jobs = [("Numbers:", sampled), ("Once upon", {"temperature": 0, "max_tokens": 30, "stop": [stop]}),
            ("Hello", {"temperature": 0, "max_tokens": 3}), ("Numbers:", dict(sampled, seed=8)),
            ("Numbers:", sampled)]
    out = _concurrently(lambda i, job: batched.generate(*job), jobs)
    assert out[0]["choices"][0]["text"] == alone == out[4]["choices"][0]["text"]   # own generator per request
    assert out[1]["choices"][0]["text"] == full[:full.index(stop)]
    assert out[1]["choices"][0]["finish_reason"] == "stop"
    assert out[2]["usage"]["completion_tokens"] <= 3
    if out[2]["choices"][0]["finish_reason"] == "length":
        assert out[2]["usage"]["completion_tokens"] == 3


def test_streams_in_a_batch_and_a_reader_that_goes_away(pair):
    batched, serial = pair
    msgs = [{"role": "user", "content": "Tell me a story"}]
    cfg = {"temperature": 0, "max_tokens": 40}
    expected = serial.chat(msgs, generate_config=cfg)["choices"][0]["message"]["content"]
    started = threading.Barrier(3)

    def read(i, close_early):
        stream = batched.chat(msgs, generate_config=dict(cfg, stream=True))
        next(stream)
        started.wait(30)
        if close_early:
            next(stream)
            stream.close()
            return None
        chunks = list(stream)
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks[-1]

    out = _concurrently(read, [False, True, False])
    for text, last in (out[0], out[2]):
        assert text == expected
        assert last["usage"]["completion_tokens"] > 0
    for t in threading.enumerate():   # the worker leaves once nothing runs
        if t.name == f"xinf-generate-{batched.model_uid}":
            t.join(10)
            assert not t.is_alive()


def test_terminate_ends_every_request_in_the_batch(manager, tiny_llama_dir):
    uid = _launch(manager, tiny_llama_dir, "doomed")
    handle = handle_of(manager, uid)
    scheduler = manager.engine_model(uid).scheduler
    results = []

    def call(i, stream):
        cfg = {"temperature": 0, "max_tokens": 2000}
        try:
            if stream:
                for _ in handle.generate("Tell me", dict(cfg, stream=True)):
                    pass
            else:
                handle.generate("Tell me a long story", cfg)
            results.append("finished")
        except InferenceError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=call, args=(i, i % 2 == 0)) for i in range(4)]
    for t in threads:
        t.start()
    from server_fakes import wait_until

    assert wait_until(lambda: len(scheduler._rows) == 4 and scheduler.steps > 3, 60)
    manager.terminate_model(uid)
    for t in threads:
        t.join(60)
    assert len(results) == 4 and all("model terminated" in r for r in results), results


def test_batch_api_in_order_and_refusals(pair):
    batched, serial = pair
    prompts = [f"Item {i}:" for i in range(20)]
    out = batched.generate_batch(prompts, {"temperature": 0, "max_tokens": 6}, progress=False)
    assert [r["choices"][0]["text"] for r in out] == \
        [serial.generate(p, {"temperature": 0, "max_tokens": 6})["choices"][0]["text"] for p in prompts]
    assert batched.generate_batch([], progress=False) == []
    with pytest.raises(InferenceError, match="stream"):
        batched.chat_batch([[{"role": "user", "content": "hi"}]], {"stream": True})
    with pytest.raises(InferenceError, match="must be a list"):
        batched.generate_batch("one prompt")
    with pytest.raises(InferenceError, match=r"prompts\[1\]"):
        batched.generate_batch(["ok", 3])
    with pytest.raises(InferenceError, match=r"messages_list\[1\]"):
        batched.chat_batch([[{"role": "user", "content": "hi"}], [{"role": "nobody", "content": "x"}]])
    with pytest.raises(InferenceError, match="max_tokens"):
        batched.chat_batch([[{"role": "user", "content": "hi"}]], {"max_tokens": -1})
    with pytest.raises(InferenceError, match="progress"):
        batched.generate_batch(["a"], progress="yes")


def test_remote_batch_api_through_the_server(manager, pair, tmp_path):
    pytest.importorskip("fastapi")
    from xinference_nb import Client
    from xinference_nb.client.remote import RemoteClient
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    batched, serial = pair
    client = Client()   # the global manager: the module's models, served
    server = start_in_thread(create_app(client, allowed_roots=[str(tmp_path)]), port=0)
    try:
        remote = RemoteClient(server.url).get_model(batched.model_uid)
        scheduler = manager.engine_model(batched.model_uid).scheduler
        before = scheduler.steps
        msgs = [[{"role": "user", "content": f"Question {i}"}] for i in range(8)]
        out = remote.chat_batch(msgs, {"temperature": 0, "max_tokens": 12}, progress=False)
        solo = [serial.chat(m, generate_config={"temperature": 0, "max_tokens": 12}) for m in msgs]
        assert [r["choices"][0]["message"]["content"] for r in out] == \
            [r["choices"][0]["message"]["content"] for r in solo]
        tokens = sum(r["usage"]["completion_tokens"] for r in out)
        assert scheduler.steps - before < tokens   # concurrent requests over REST shared forward passes
        with pytest.raises(InferenceError, match="stream"):
            remote.generate_batch(["a"], {"stream": True})
    finally:
        server.stop()


def test_llama_cpp_concurrent_requests_are_serialized(tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    m = ModelManager()
    try:
        uid = m.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                             show_progress=False)
        handle = handle_of(m, uid)
        cfgs = [{"temperature": 0, "max_tokens": 20}, {"temperature": 0.9, "seed": 5, "max_tokens": 20}] * 2
        prompts = ["Once upon a time", "Numbers:", "The cat", "Hello"]
        sequential = [handle.generate(p, c)["choices"][0]["text"] for p, c in zip(prompts, cfgs)]
        together = _concurrently(lambda i, p: handle.generate(p, cfgs[i])["choices"][0]["text"], prompts)
        assert together == sequential
        streamed = _concurrently(lambda i, p: "".join(c["choices"][0]["text"] for c in handle.generate(
            p, dict(cfgs[i], stream=True))), prompts)
        assert streamed == sequential
        assert handle.generate_batch(prompts, cfgs[0], progress=False)[0]["choices"][0]["text"] == sequential[0]
    finally:
        m.terminate_all()


def test_growing_cache_layer_equals_dynamic_cache_past_its_capacity(tiny_llama_dir):
    """The scheduler's cache layers (key/value views of buffers written in place) give the numbers of
    transformers' DynamicLayer (torch.cat every step), also after the buffers grow and after the
    tensors were replaced from outside (what a merge or a drop does)."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from xinference_nb.engines.batching_llm import growing_layer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    ids = torch.tensor([[5, 9, 30, 41, 7, 12, 3, 18], [0, 0, 0, 22, 8, 19, 4, 27]])
    mask = (ids != 0).long()

    def run(grow: bool, steps: int = 150):
        cache = DynamicCache(config=model.config)
        if grow:
            cache.layers = [growing_layer() for _ in cache.layers]
        m, out, logits = mask.clone(), [], []
        with torch.inference_mode():
            res = model(input_ids=ids, attention_mask=m, position_ids=(m.cumsum(-1) - 1).clamp(min=0),
                        cache=cache, use_cache=True)
            for step in range(steps):
                nxt = res.logits[:, -1].argmax(-1, keepdim=True)
                out.append(nxt)
                logits.append(res.logits[:, -1])
                if step == 70:   # replaced from outside, as _merge / _drop do: the buffers are rebuilt
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys.clone(), layer.values.clone()
                positions = m.sum(-1, keepdim=True)
                m = torch.cat([m, torch.ones((2, 1), dtype=m.dtype)], -1)
                res = model(input_ids=nxt, attention_mask=m, position_ids=positions, cache=cache,
                            use_cache=True)
        return torch.cat(out, -1), torch.stack(logits), cache

    plain_ids, plain_logits, _ = run(False)
    grown_ids, grown_logits, cache = run(True)
    assert torch.equal(plain_ids, grown_ids)
    torch.testing.assert_close(grown_logits, plain_logits, rtol=0, atol=1e-5)
    layer = cache.layers[0]
    assert layer.keys.shape[-2] == 8 + 150 and layer._kbuf.shape[-2] >= 8 + 150 > 8 + 64   # it grew
    assert layer.keys.data_ptr() == layer._kbuf.data_ptr()   # a view of the buffer, not a copy


def test_llm_batching_bench_smoke_run(tmp_path):
    """bench/llm_batching.py runs end to end on the tiny model (in-kernel systems, two interleaved
    rounds) and reports every level with its rounds, the paired ratios and the batch API figure."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out_json = tmp_path / "rows.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, str(root / "bench" / "llm_batching.py"), "--small", "--systems",
                          "today,in-kernel", "--levels", "1,3", "--rounds", "2", "--tokens", "4", "--batch", "3",
                          "--loop", "1", "--json", str(out_json)], capture_output=True, text=True, timeout=600,
                         env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = {r["system"]: r for r in json.loads(out_json.read_text())}
    assert set(rows) == {"today", "in-kernel"} and not any("error" in r for r in rows.values())
    assert set(rows["in-kernel"]["levels"]) == {"1", "3"} and set(rows["today"]["levels"]) == {"1"}
    for cell in rows["in-kernel"]["levels"].values():
        assert len(cell["tok_s_rounds"]) == 2 and round(cell["tok_s"], 1) in cell["tok_s_rounds"]   # a median round
        assert cell["tokens"] > 0 and cell["ttft_p50_ms"] > 0
    assert rows["in-kernel"]["batch_api"]["gain"] > 0
    assert "single stream in-kernel / today:" in run.stdout and "chat_batch / loop of chat:" in run.stdout
