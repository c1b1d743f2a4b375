"""One bad request never hurts another, and a stream always says what the whole reply says.

- a row of the transformers engine's continuous batch that fails (NaN logits, a stop-string check
  that raises, a prefill its input breaks) fails alone: the other requests of its batch get exactly
  the output they get alone;
- temperatures so small that logits/temperature overflows float32 (and extreme repetition
  penalties) work on every engine path: they are greedy;
- the concatenated deltas of a stream equal the whole reply's text, also when a reply stops inside a
  multi-byte UTF-8 character (the whole reply ends in "\\ufffd": so does the stream), on the batched
  and unbatched transformers paths, llama.cpp, chat and generate, and over REST.

Tiny real models (tests/tiny_models.py); the faulty rows come from a real model with one broken
token embedding (NaN) or from a fault put into one row's step of the real scheduler.
"""
from __future__ import annotations

import shutil
import threading

import pytest

from xinference_nb.chat import GREEDY_TEMPERATURE, REPETITION_PENALTY_RANGE, parse_generate_config
from xinference_nb.errors import InferenceError
from xinference_nb.client.handles import handle_of

from public_api import launch_by_path, shared_manager

pytest.importorskip("transformers")

try:
    import tiny_models
except ImportError:  # pragma: no cover
    from tests import tiny_models

POISON = "<tool_call>"    # an added token of the tiny tokenizer: its embedding is NaN in the poisoned model
UNCOVERED = "<oov>"       # a token of the poisoned model's tokenizer past its embeddings
REPLY = "é中😀ж"          # the forced model's reply: 2 + 3 + 4 + 2 bytes, one byte token each


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("isolation-")


@pytest.fixture(scope="module")
def poisoned_dir(tiny_llama_dir, tmp_path_factory):
    """tiny_llama_dir whose embedding of POISON is NaN (a request with it in its prompt gets NaN logits)
    and whose tokenizer has one more token, UNCOVERED, than the model has embeddings."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("poisoned") / "poisoned-llama"
    shutil.copytree(tiny_llama_dir, out)
    weights = load_file(str(out / "model.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(out))
    weights["model.embed_tokens.weight"][tok.convert_tokens_to_ids(POISON)] = float("nan")
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    tok.add_tokens([UNCOVERED])
    with tiny_models.quiet():
        tiny_models._save_chat_tokenizer(tok, out, (tiny_llama_dir / "chat_template.jinja").read_text())
    return out


@pytest.fixture(scope="module")
def poisoned(manager, poisoned_dir):
    """(batched handle, its scheduler, a batched handle for requests alone, one-request-at-a-time
    handle) of the poisoned model. The first waits for 8 requests (or 3 s) before it starts, so a
    burst of 8 shares one prefill."""
    uid = launch_by_path(manager, poisoned_dir, model_uid="isolation-poisoned", max_num_seqs=8, batch_wait_ms=3000)
    alone = launch_by_path(manager, poisoned_dir, model_uid="isolation-poisoned-alone")
    serial = launch_by_path(manager, poisoned_dir, model_uid="isolation-poisoned-serial", max_num_seqs=1)
    return handle_of(manager, uid), manager.engine_model(uid).scheduler, handle_of(manager, alone), handle_of(manager, serial)


def _concurrently(fn, items):
    """fn(i, item) for every item at once, in threads: [(result, None) or (None, exception)]."""
    out = [None] * len(items)

    def run(i):
        try:
            out[i] = (fn(i, items[i]), None)
        except BaseException as exc:  # noqa: BLE001 - compared by the test
            out[i] = (None, exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _run(handle, job):
    """One job (prompt, generate_config, stream?) → (text, finish_reason, usage)."""
    prompt, cfg, stream = job
    if not stream:
        choice = (res := handle.generate(prompt, cfg))["choices"][0]
        return choice["text"], choice["finish_reason"], res["usage"]
    chunks = list(handle.generate(prompt, dict(cfg, stream=True)))
    return ("".join(c["choices"][0]["text"] for c in chunks), chunks[-1]["choices"][0]["finish_reason"],
            chunks[-1]["usage"])


# ------------------------------------------------------------------ item 1: a failing row fails alone

GOOD_JOBS = [
    ("Once upon a time", {"temperature": 0, "max_tokens": 24}, False),
    ("The cat", {"temperature": 0.9, "top_p": 0.9, "seed": 3, "max_tokens": 20}, True),
    ("Numbers: 1 2 3", {"temperature": 1e-40, "max_tokens": 22}, False),    # greedy (it broke every row)
    ("Hello", {"temperature": 1.2, "top_k": 40, "seed": 11, "max_tokens": 24, "repetition_penalty": 1.3}, False),
    ("A much longer prompt that goes on about many things", {"temperature": 0, "max_tokens": 18, "stop": ["e"]}, True),
    ("x", {"temperature": 1e-38, "top_p": 0.5, "max_tokens": 16}, True),
]


def test_one_failing_row_leaves_the_other_rows_of_its_batch_alone(poisoned, monkeypatch):
    """8 requests in one batch: one whose prompt gives NaN logits (streamed), one whose stop-string check
    raises; each fails with its own InferenceError and the 6 others equal their outputs alone, token
    for token (text, finish reason, usage)."""
    batched, scheduler, solo, _ = poisoned
    alone = [_run(solo, job) for job in GOOD_JOBS]
    assert not any(POISON in text for text, _, _ in alone)

    real_finished = scheduler._finished

    def finished(r, tid):   # the stop-string check of one row breaks (as a failing detokenizer would)
        if "boom-stop" in r.stop_strings:
            raise ValueError("the detokenizer broke on this row")
        return real_finished(r, tid)

    monkeypatch.setattr(scheduler, "_finished", finished)
    jobs = list(GOOD_JOBS)
    jobs.insert(1, (f"Please {POISON} now", {"temperature": 0, "max_tokens": 20}, True))
    jobs.insert(5, ("Tell me", {"temperature": 0, "max_tokens": 20, "stop": ["boom-stop"]}, False))
    before = scheduler.steps
    out = _concurrently(lambda i, job: _run(batched, job), jobs)
    nan_row, boom_row = out.pop(1), out.pop(4)
    assert isinstance(nan_row[1], InferenceError) and "NaN or infinite logits" in str(nan_row[1]), nan_row
    assert isinstance(boom_row[1], InferenceError) and "detokenizer broke" in str(boom_row[1]), boom_row
    assert [error for _, error in out] == [None] * len(GOOD_JOBS)
    assert [result for result, _ in out] == alone
    # they ran together: one prefill and fewer decode steps than their tokens
    tokens = sum(u["completion_tokens"] for _, _, u in alone)
    assert scheduler.steps - before <= max(u["completion_tokens"] for _, _, u in alone) < tokens


def test_a_prefill_that_fails_is_retried_one_request_at_a_time(poisoned, monkeypatch):
    """A forward pass that raises for one joiner's input is run again joiner by joiner: only that
    request fails. A prompt token past the model's embeddings is refused before any forward pass, on
    both transformers paths (on CUDA such an index is a device-side assert for every request)."""
    batched, scheduler, solo, serial = poisoned
    jobs = GOOD_JOBS[:3]
    alone = [_run(solo, job) for job in jobs]
    real_forward = scheduler._forward

    def forward(input_ids, mask, positions, cache, rows):
        if any("bad-prefill" in r.stop_strings for r in rows):
            raise RuntimeError("this input breaks the forward pass")
        return real_forward(input_ids, mask, positions, cache, rows)

    monkeypatch.setattr(scheduler, "_forward", forward)
    mixed = [jobs[0], ("Hi", {"temperature": 0, "max_tokens": 5, "stop": ["bad-prefill"]}, False), jobs[1],
             (f"Say {UNCOVERED}", {"temperature": 0, "max_tokens": 5}, False), jobs[2]]
    out = _concurrently(lambda i, job: _run(batched, job), mixed)
    assert "this input breaks the forward pass" in str(out[1][1])
    assert isinstance(out[3][1], InferenceError) and "embeddings do not cover" in str(out[3][1])
    assert [out[0], out[2], out[4]] == [(a, None) for a in alone]
    with pytest.raises(InferenceError, match=r"'<oov>' \(id 772\).*embeddings do not cover"):
        serial.generate(f"Say {UNCOVERED}", {"max_tokens": 3})
    with pytest.raises(InferenceError, match="NaN or infinite logits"):   # generate() took token 0 silently
        serial.generate(f"Please {POISON} now", {"temperature": 0, "max_tokens": 3})


# ------------------------------------------------------------------ item 1: tiny temperatures are greedy

TINY = [{"temperature": 1e-40}, {"temperature": 1e-38, "top_p": 0.9}, {"temperature": 2e-45, "top_k": 5},
        {"temperature": 1e-300, "top_p": 0.3, "top_k": 2, "seed": 4}, {"temperature": GREEDY_TEMPERATURE / 2}]


def test_tiny_temperatures_are_greedy_on_every_engine(manager, tiny_llama_dir, tiny_gguf_file):
    """A temperature at which logits/temperature overflows float32 is greedy on the batched and the
    unbatched transformers paths and on llama.cpp (alone and together in one batch); extreme
    repetition penalties and a huge temperature are numerically safe (a reply, no error)."""
    pytest.importorskip("llama_cpp")
    for cfg in TINY:
        assert parse_generate_config(cfg)[0].temperature == 0.0
    assert parse_generate_config({"temperature": GREEDY_TEMPERATURE})[0].temperature == GREEDY_TEMPERATURE
    assert parse_generate_config({"repetition_penalty": 1e-300})[0].repetition_penalty == REPETITION_PENALTY_RANGE[0]
    batched = handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="isolation-temp-batched"))
    serial = handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="isolation-temp-serial",
                                              max_num_seqs=1))
    gguf = handle_of(manager, manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp",
                                                  model_path=str(tiny_gguf_file), model_uid="isolation-temp-gguf",
                                                  show_progress=False))
    prompts = ["Hello", "The weather today", "Once upon a time there was"]
    for handle in (batched, serial, gguf):
        greedy = [handle.generate(p, {"temperature": 0, "max_tokens": 16})["choices"][0]["text"] for p in prompts]
        for cfg in TINY:
            got = [handle.generate(p, dict(cfg, max_tokens=16))["choices"][0]["text"] for p in prompts]
            assert got == greedy, (handle.model_uid, cfg)
        streamed = "".join(c["choices"][0]["text"] for c in handle.generate(
            prompts[0], dict(TINY[0], max_tokens=16, stream=True)))
        assert streamed == greedy[0], handle.model_uid
        for extreme in ({"temperature": 0.8, "repetition_penalty": 1e-40, "seed": 1},
                        {"temperature": 0.8, "repetition_penalty": 1e40, "seed": 1},
                        {"temperature": 0, "repetition_penalty": 1e-300}, {"temperature": 1e300, "seed": 2}):
            res = handle.generate(prompts[0], dict(extreme, max_tokens=8))
            assert res["usage"]["completion_tokens"] >= 1, (handle.model_uid, extreme)
    # all of them at once in one batch
    jobs = [(p, dict(cfg, max_tokens=16), False) for cfg in TINY for p in prompts]
    together = _concurrently(lambda i, job: _run(batched, job)[0], jobs)
    greedy = {p: batched.generate(p, {"temperature": 0, "max_tokens": 16})["choices"][0]["text"] for p in prompts}
    assert together == [(greedy[p], None) for p, _, _ in jobs]


# ------------------------------------------------------------------ item 9: stream == whole

@pytest.fixture(scope="module")
def forced_dir(tiny_llama_dir, tmp_path_factory):
    """A tiny model that always answers REPLY, one byte token at a time (then <|im_end|>)."""
    byte_symbols = tiny_models._bytes_to_unicode()
    pieces = [byte_symbols[b] for b in REPLY.encode("utf-8")]
    with tiny_models.quiet():
        return tiny_models.build_forced_llama(tiny_llama_dir, tmp_path_factory.mktemp("forced_bytes") / "bytes-llama",
                                              pieces)


@pytest.fixture(scope="module")
def server(manager):
    pytest.importorskip("fastapi")
    from xinference_nb import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    running = start_in_thread(create_app(Client()), port=0)   # the global manager: this module's models
    yield running
    running.stop()


def _remote(server, uid):
    from xinference_nb.client.remote import RemoteClient

    return RemoteClient(server.url).get_model(uid)


def _whole_and_stream(handle, chat, prompt, cfg):
    """(the whole reply's text, the stream's concatenated deltas) for one request."""
    if chat:
        msgs = [{"role": "user", "content": prompt}]
        whole = handle.chat(msgs, generate_config=cfg)["choices"][0]["message"]["content"]
        chunks = list(handle.chat(msgs, generate_config=dict(cfg, stream=True)))
        return whole, "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    whole = handle.generate(prompt, cfg)["choices"][0]["text"]
    return whole, "".join(c["choices"][0]["text"] for c in handle.generate(prompt, dict(cfg, stream=True)))


@pytest.fixture(scope="module")
def forced_handles(manager, forced_dir, tmp_path_factory, server):
    handles = {"batched": handle_of(manager, launch_by_path(manager, forced_dir, model_uid="isolation-bytes")),
               "serial": handle_of(manager, launch_by_path(manager, forced_dir, model_uid="isolation-bytes-serial",
                                                          max_num_seqs=1))}
    handles["rest"] = _remote(server, "isolation-bytes")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:  # pragma: no cover
        return handles
    with tiny_models.quiet():
        gguf_file = tiny_models.build_tiny_gguf(forced_dir, tmp_path_factory.mktemp("forced_gguf") / "bytes.gguf")
    handles["llama.cpp"] = handle_of(manager, manager.launch_model(
        "qwen2.5-instruct", model_engine="llama.cpp", model_path=str(gguf_file), model_uid="isolation-bytes-gguf",
        show_progress=False))
    return handles


@pytest.mark.parametrize("path", ["batched", "serial", "llama.cpp", "rest"])
def test_a_reply_cut_inside_a_character_streams_as_it_ends(forced_handles, path):
    """The forced reply cut after every byte count: the whole reply is the bytes so far decoded with
    "\ufffd" for the cut character (the same text on every engine), and the stream's deltas add up to
    exactly that."""
    if path not in forced_handles:
        pytest.skip("llama_cpp is not installed")
    handle = forced_handles[path]
    data = REPLY.encode("utf-8")
    for n in range(1, len(data) + 2):
        expected = data[:n].decode("utf-8", errors="replace")
        for chat in (False, True):
            cfg = {"max_tokens": n, "temperature": 0 if n % 2 else 0.3, "seed": n}
            whole, streamed = _whole_and_stream(handle, chat, "Say:\n", cfg)
            assert (whole, streamed) == (expected, expected), (n, chat)


@pytest.fixture(scope="module")
def random_handles(manager, tiny_llama_dir, tiny_gguf_file, server):
    """The random tiny model (its replies are full of byte tokens: characters split over tokens, lone
    continuation bytes) on every path."""
    handles = {"batched": handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="isolation-prop")),
               "serial": handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="isolation-prop-serial",
                                                          max_num_seqs=1))}
    handles["rest"] = _remote(server, "isolation-prop")
    try:
        import llama_cpp  # noqa: F401

        handles["llama.cpp"] = handle_of(manager, manager.launch_model(
            "qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
            model_uid="isolation-prop-gguf", show_progress=False))
    except ImportError:  # pragma: no cover
        pass
    return handles


@pytest.mark.parametrize("path", ["batched", "serial", "llama.cpp", "rest"])
def test_stream_deltas_add_up_to_the_whole_reply(random_handles, path, tmp_path):
    """Property: for any seed, length, temperature, stop string and prompt, chat and generate, the
    stream's concatenated deltas equal the whole reply's text."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.configuration import set_hypothesis_home_dir

    if path not in random_handles:
        pytest.skip("llama_cpp is not installed")
    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))
    handle = random_handles[path]

    @given(seed=st.integers(0, 2**16), max_tokens=st.integers(1, 40), chat=st.booleans(),
           temperature=st.sampled_from([0, 0.7, 1.0, 1.4]), stop=st.sampled_from([None, "e", " t", "\n"]),
           prompt=st.sampled_from(["Hello", "Numbers: 1 2 3", "The weather", "é中"]))
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(seed, max_tokens, chat, temperature, stop, prompt):
        cfg = {"seed": seed, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            cfg["stop"] = [stop]
        whole, streamed = _whole_and_stream(handle, chat, prompt, cfg)
        assert streamed == whole

    check()
