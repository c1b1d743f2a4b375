"""Load: 64 concurrent clients, 2048 requests mixed over embeddings, chat and streaming chat on the
tiny models; zero errors and every response checked against the in-kernel result."""
from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

pytest.importorskip("fastapi")
aiohttp = pytest.importorskip("aiohttp")  # httpx.AsyncClient costs ~15 ms of client CPU per request at 64 in flight
np = pytest.importorskip("numpy")

from server_fakes import LiveModels  # noqa: E402

from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.runner import start_in_thread  # noqa: E402

CLIENTS = 64
REQUESTS = 2048


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_llama_dir, minilm_dir):
    pytest.importorskip("sentence_transformers")
    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("load_home")))
    models = LiveModels("load", tiny_llama_dir, minilm_dir)
    running = start_in_thread(create_app(allowed_roots=[str(tiny_llama_dir.parent)]), port=0)
    running.models = models
    yield running
    running.stop()
    models.close()
    mp.undo()


@pytest.mark.slow
def test_64_concurrent_clients_mixed_load(live):
    client = live.models.client
    llm_uid, emb_uid = live.models.llm, live.models.emb
    texts = [f"sentence number {i} about {w}" for i, w in enumerate(
        ["cats", "dogs", "the sea", "mountains", "rain", "bread", "trains", "music"] * 5)]
    ref_vectors = {t: np.array(d["embedding"]) for t, d in zip(
        texts, client.get_model(emb_uid).create_embedding(texts)["data"])}
    prompts = [f"question {i}" for i in range(8)]
    max_tokens = 2

    rng = random.Random(7)
    plan = []
    for i in range(REQUESTS):
        r = rng.random()
        if r < 0.85:
            plan.append(("embed", rng.sample(texts, rng.choice([1, 1, 1, 2, 3]))))
        elif r < 0.95:
            plan.append(("chat", rng.choice(prompts)))
        else:
            plan.append(("stream", rng.choice(prompts)))

    errors: list[str] = []
    counts = {"embed": 0, "chat": 0, "stream": 0}

    def check_chat(body: dict, prompt: str) -> None:
        assert body["object"] == "chat.completion" and body["model"] == llm_uid
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        assert 0 < body["usage"]["completion_tokens"] <= max_tokens or choice["finish_reason"] == "stop"
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

    async def one(session, kind: str, arg) -> None:
        if kind == "embed":
            async with session.post("/v1/embeddings", json={"model": emb_uid, "input": arg}) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            assert [d["index"] for d in body["data"]] == list(range(len(arg)))
            for d, t in zip(body["data"], arg):
                np.testing.assert_allclose(d["embedding"], ref_vectors[t], atol=1e-4)
        elif kind == "chat":
            async with session.post("/v1/chat/completions", json={
                    "model": llm_uid, "messages": [{"role": "user", "content": arg}], "max_tokens": max_tokens,
                    "temperature": 0}) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            check_chat(body, arg)
        else:
            async with session.post("/v1/chat/completions", json={
                    "model": llm_uid, "messages": [{"role": "user", "content": arg}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True}) as r:
                assert r.status == 200, await r.text()
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line.decode().strip() async for line in r.content]
            lines = [line for line in lines if line]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[6:]) for line in lines[:-1]]
            assert all(c["object"] == "chat.completion.chunk" for c in chunks)
            assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        counts[kind] += 1

    async def worker(session, queue: asyncio.Queue) -> None:
        while True:
            try:
                kind, arg = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await one(session, kind, arg)
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(f"{kind} {arg!r}: {type(exc).__name__}: {exc}")

    async def run() -> float:
        queue: asyncio.Queue = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(live.url, connector=connector, timeout=timeout) as session:
            t0 = time.perf_counter()
            await asyncio.gather(*[worker(session, queue) for _ in range(CLIENTS)])
            return time.perf_counter() - t0

    seconds = asyncio.run(run())
    assert not errors, f"{len(errors)} errors, e.g. {errors[:3]}"
    assert sum(counts.values()) == REQUESTS
    stats = live.app.state.embed_batcher.stats
    print(f"\n{REQUESTS} requests from {CLIENTS} clients in {seconds:.1f}s ({REQUESTS / seconds:.0f} req/s); "
          f"{counts}; embeddings: {stats.requests} requests in {stats.calls} batched calls (largest {stats.largest})")
    assert stats.calls < stats.requests  # batching happened
    assert live.app.state.streams_open == 0
