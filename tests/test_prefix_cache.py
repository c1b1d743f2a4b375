"""Prefix caching in the transformers engine (issue 23): greedy output token-for-token identical with
the cache (the default) and without it (enable_prefix_caching=False), for shared prefixes of every
length, concurrent rows, earlier requests, chat turns, adapters, an entry evicted mid-batch and a
model terminated with cached entries; the scheduler's ``prefill_tokens`` shows what was reused.
Tiny real models, no mocks."""
from __future__ import annotations

import gc
import random
import threading
import weakref

import pytest

from xinference_nb.chat import SamplingParams
from xinference_nb.client.handles import handle_of
from xinference_nb.errors import LaunchError, LaunchOptionError

from public_api import concurrently, launch_by_path, shared_manager

pytest.importorskip("transformers")

GREEDY = {"max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("prefix-")


def _launch(manager, path, uid, **kw):
    return launch_by_path(manager, path, model_uid=f"prefix-{uid}", **kw)


@pytest.fixture(scope="module")
def pair(manager, tiny_llama_dir):
    """(cache on: the default, cache off) engines of the same weights."""
    _launch(manager, tiny_llama_dir, "on")
    _launch(manager, tiny_llama_dir, "off", enable_prefix_caching=False)
    return manager.engine_model("prefix-on"), manager.engine_model("prefix-off")


def _ids(seed, n):
    """``n`` ordinary token ids (the tiny tokenizer's BPE range, no special tokens)."""
    rng = random.Random(seed)
    return [rng.randrange(10, 700) for _ in range(n)]


def _run(engine, ids, max_tokens=8, lora=None):
    """The greedy token ids the scheduler generates for prompt ``ids`` (a request of the engine's own
    making, its prompt ids set)."""
    from xinference_nb.engines.batching_llm import wait_result

    req = engine._batch_request("x", SamplingParams(max_tokens=max_tokens, temperature=0, lora_name=lora), False)
    req.prompt_ids = list(ids)
    wait_result(engine.scheduler.submit(req))
    return list(req.ids)


def _computed(engine, fn):
    """(fn's result, prompt tokens the engine's prefills computed meanwhile)."""
    before = engine.scheduler.prefill_tokens
    out = fn()
    return out, engine.scheduler.prefill_tokens - before


_concurrently = concurrently   # tests/public_api.py


@pytest.mark.parametrize("shared", [0, 1, 2, 15, 16, 17, 31, 32, 33, 39, 40, 41])
def test_shared_prefixes_of_every_length_give_identical_greedy_output(pair, shared):
    """Prompt A (40 tokens) then prompt B sharing its first ``shared`` tokens: B's output is the no-cache
    output, and B computes only what the cache lacks (at least its last token). ``shared`` 40 is the whole
    of A (B = A; and A + more with 41), 39 is all of A but its last token. The off engine was launched
    with enable_prefix_caching=False: no store, every prompt token computed."""
    on, off = pair
    assert off.prefix_cache is None and on.prefix_cache is not None
    on.prefix_cache.clear()
    a = _ids(1, 40)
    b = a[:shared] + _ids(100 + shared, 12) if shared < 40 else (a if shared == 40 else a + _ids(7, 5))
    if shared == 39:
        b = a[:39]                                  # B is A without its last token
    assert _run(on, a) == _run(off, a)
    out, computed = _computed(on, lambda: _run(on, b))
    assert out == _run(off, b)
    from xinference_nb.engines.prefix_cache import common_prefix

    assert computed == len(b) - min(common_prefix(a, b), len(b) - 1)
    _, computed_off = _computed(off, lambda: _run(off, b))
    assert computed_off == len(b)                  # enable_prefix_caching=False: every prompt token computed


def test_random_prefixes_property(pair):
    """A property over random prompt pairs (hypothesis): whatever prefix two prompts share, the second's
    greedy output with the cache is the output without it."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings, strategies as st

    on, off = pair
    tokens = st.lists(st.integers(10, 699), min_size=1, max_size=30)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(prefix=tokens, first=st.lists(st.integers(10, 699), max_size=10),
           second=st.lists(st.integers(10, 699), max_size=10))
    def check(prefix, first, second):
        a, b = prefix + first, prefix + second
        _run(on, a, max_tokens=4)
        assert _run(on, b, max_tokens=4) == _run(off, b, max_tokens=4)

    check()
    assert hypothesis is not None and on.prefix_cache.hits > 0


def test_concurrent_rows_sharing_a_prefix_compute_it_once(pair):
    """8 rows (threads: the scheduler batches them) share a 48-token prefix: each row's output is its
    no-cache output, and the prefix is computed once, not 8 times."""
    on, off = pair
    on.prefix_cache.clear()
    prefix = _ids(3, 48)
    prompts = [prefix + _ids(200 + i, 6) for i in range(8)]
    outs, computed = _computed(on, lambda: _concurrently(lambda p: _run(on, p), prompts))
    assert outs == [_run(off, p) for p in prompts]
    assert computed <= 48 + 8 * 6 < sum(map(len, prompts))
    _, again = _computed(on, lambda: _concurrently(lambda p: _run(on, p), prompts))
    assert again < 8 * 6 + 8       # an earlier batch's prefix: only (about) each row's own tail is computed


def test_multi_turn_chat_reuses_the_earlier_turn(pair, manager):
    """Turn 2's prompt starts with turn 1's: it computes only the new part, and both turns equal the
    no-cache launch's (the public chat path, streaming included)."""
    on, off = pair
    h_on, h_off = handle_of(manager, "prefix-on"), handle_of(manager, "prefix-off")
    on.prefix_cache.clear()
    messages = [{"role": "system", "content": "You answer in short words about cats and dogs and birds."},
                {"role": "user", "content": "Tell me about cats please"}]
    first, computed_1 = _computed(on, lambda: h_on.chat(messages, generate_config=GREEDY))
    reply = first["choices"][0]["message"]["content"]
    assert reply == h_off.chat(messages, generate_config=GREEDY)["choices"][0]["message"]["content"]
    turn2 = messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And dogs?"}]
    chunks, computed_2 = _computed(on, lambda: list(h_on.chat(turn2, generate_config={**GREEDY, "stream": True})))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == h_off.chat(turn2, generate_config=GREEDY)["choices"][0]["message"]["content"]
    prompt_2 = chunks[-1]["usage"]["prompt_tokens"]
    assert computed_2 <= prompt_2 - computed_1 + 1 < prompt_2   # turn 1's prompt came from the cache


def test_n_and_constrained_rows_with_a_cached_prefix(pair, manager):
    """n > 1 (rows of one prompt) and a constrained row, after their prefix was cached: the no-cache
    launch's choices."""
    pytest.importorskip("llguidance")
    h_on, h_off = handle_of(manager, "prefix-on"), handle_of(manager, "prefix-off")
    prompt = "A long shared instruction about labelling every sentence as red, green or blue: "
    for cfg in ({"n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5},
                {"max_tokens": 8, "temperature": 0, "guided_choice": ["red", "green", "blue"]},
                {"n": 2, "max_tokens": 8, "temperature": 0, "guided_regex": r"[a-c]{4}"}):
        for tail in ("one", "one", "two"):
            got = [c["text"] for c in h_on.generate(prompt + tail, cfg)["choices"]]
            assert got == [c["text"] for c in h_off.generate(prompt + tail, cfg)["choices"]], cfg
    assert pair[0].prefix_cache.hits > 0


def test_adapters_never_share_cached_keys(manager, tiny_llama_dir, tiny_lora_dirs):
    """The same prompt under adapters a, b and none: each equals the no-cache launch's, and a prefix
    cached under one adapter is not found under another."""
    peft = {"lora_list": [{"lora_name": n, "local_path": str(p)} for n, p in tiny_lora_dirs.items()]}
    _launch(manager, tiny_llama_dir, "lora-on", peft_model_config=peft)
    _launch(manager, tiny_llama_dir, "lora-off", peft_model_config=peft, enable_prefix_caching=False)
    on, off = manager.engine_model("prefix-lora-on"), manager.engine_model("prefix-lora-off")
    try:
        prompt = _ids(5, 30)
        assert _run(on, prompt, lora="a") == _run(off, prompt, lora="a")
        assert on.prefix_cache.lookup_length("a", prompt) == 30
        assert on.prefix_cache.lookup_length("b", prompt) == on.prefix_cache.lookup_length(None, prompt) == 0
        for lora in ("b", None, "a"):
            out, computed = _computed(on, lambda: _run(on, prompt, lora=lora))
            assert out == _run(off, prompt, lora=lora)
            assert computed == (1 if lora == "a" else 30)   # only a's own entry is reused
        outs = _concurrently(lambda lora: _run(on, prompt, lora=lora), ["a", "b", None, "a", "b"])
        assert outs == [_run(off, prompt, lora=lora) for lora in ["a", "b", None, "a", "b"]]
    finally:
        manager.terminate_model("prefix-lora-on")
        manager.terminate_model("prefix-lora-off")


def test_an_entry_evicted_mid_batch_changes_nothing(manager, tiny_llama_dir, pair):
    """A 64-token limit: a long streamed row reuses an entry that the rows joining while it decodes evict;
    every row's output is the no-cache output."""
    _launch(manager, tiny_llama_dir, "small", prefix_cache_max_tokens=64)
    small, off = manager.engine_model("prefix-small"), pair[1]
    h = handle_of(manager, "prefix-small")
    try:
        first = _ids(9, 40)
        _run(small, first)                                    # cached
        assert small.prefix_cache.lookup_length(None, first) == 40
        long_prompt = first + _ids(10, 4)
        req = small._batch_request("x", SamplingParams(max_tokens=40, temperature=0), False)
        req.prompt_ids = long_prompt
        from xinference_nb.engines.batching_llm import BatchTokenStream

        stream = BatchTokenStream(small.scheduler.submit(req), small.tokenizer, small._inflight)
        others = _concurrently(lambda s: _run(small, _ids(s, 40)), [11, 12, 13])   # each evicts the one before
        text = "".join(stream)
        assert small.prefix_cache.lookup_length(None, first) < 40             # evicted
        assert small.prefix_cache.tokens <= 64
        assert req.ids == _run(off, long_prompt, max_tokens=40) and text
        assert others == [_run(off, _ids(s, 40)) for s in (11, 12, 13)]
        assert h.generate("hello", GREEDY)["choices"][0]["text"] == \
            handle_of(manager, "prefix-off").generate("hello", GREEDY)["choices"][0]["text"]
    finally:
        manager.terminate_model("prefix-small")


def test_terminate_with_cached_entries_frees_them(manager, tiny_llama_dir):
    _launch(manager, tiny_llama_dir, "gone")
    engine = manager.engine_model("prefix-gone")
    for seed in (1, 2, 3):
        _run(engine, _ids(seed, 30))
    store, model = engine.prefix_cache, weakref.ref(engine.model)
    assert len(store) and store.nbytes() > 0
    del engine
    manager.terminate_model("prefix-gone")
    assert len(store) == 0 and store.tokens == 0 and store.nbytes() == 0
    gc.collect()
    assert model() is None                      # the weights (and the cache's tensors) are gone


def test_cache_size_is_in_the_memory_estimate_and_the_models_memory(pair, manager, tiny_llama_dir):
    """enable_prefix_caching=False: no store and every prompt token computed; the cache's limit × the
    KV bytes per token is in memory_bytes (list_models) and in the estimate (prefix_cache_max_tokens)."""
    from xinference_nb.memory import PREFIX_CACHE_DEFAULT_TOKENS, estimate_hf_llm

    on, off = pair
    assert off.prefix_cache is None and on.prefix_cache.max_tokens == PREFIX_CACHE_DEFAULT_TOKENS
    cfg = on.model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert on.memory_bytes() - off.memory_bytes() == PREFIX_CACHE_DEFAULT_TOKENS * per_token
    listed = manager.list_models()
    assert listed["prefix-on"]["memory_bytes"] - listed["prefix-off"]["memory_bytes"] == \
        PREFIX_CACHE_DEFAULT_TOKENS * per_token
    assert estimate_hf_llm(tiny_llama_dir, None, 1024).prefix_cache_bytes == PREFIX_CACHE_DEFAULT_TOKENS * per_token
    assert estimate_hf_llm(tiny_llama_dir, None, 1024, prefix_cache_tokens=100).prefix_cache_bytes == 100 * per_token
    assert estimate_hf_llm(tiny_llama_dir, None, 1024, prefix_cache_tokens=0).prefix_cache_bytes == 0
    from xinference_nb.engines.options import prefix_cache_tokens

    assert prefix_cache_tokens({"enable_prefix_caching": False}) == 0
    assert prefix_cache_tokens({"prefix_cache_max_tokens": 77}) == 77
    for _ in range(2):
        _, computed = _computed(off, lambda: _run(off, _ids(4, 25)))
        assert computed == 25


@pytest.mark.parametrize("bad, words", [
    ({"enable_prefix_caching": "yes"}, "enable_prefix_caching"),
    ({"enable_prefix_caching": 1}, "enable_prefix_caching"),
    ({"prefix_cache_max_tokens": 0}, "prefix_cache_max_tokens"),
    ({"prefix_cache_max_tokens": "8"}, "prefix_cache_max_tokens"),
    ({"prefix_cache_max_tokens": True}, "prefix_cache_max_tokens"),
    ({"prefix_cache_max_tokens": 64, "enable_prefix_caching": False}, "prefix_cache_max_tokens"),
    ({"enable_prefix_caching": True, "max_num_seqs": 1}, "enable_prefix_caching"),
    ({"prefix_cache_max_tokens": 64, "max_num_seqs": 1}, "prefix_cache_max_tokens"),
])
def test_bad_prefix_cache_options_are_refused_naming_them(manager, tiny_llama_dir, bad, words):
    with pytest.raises((LaunchOptionError, LaunchError), match=words):
        _launch(manager, tiny_llama_dir, "bad", **bad)
    assert "prefix-bad" not in manager.list_models()
