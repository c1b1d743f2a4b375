"""The transformers LLM engine's OpenAI sampling surface and structured outputs (issue 22), on the tiny
llama, on the batched path (the default launch) and the one-request ``generate`` path
(``max_num_seqs=1``): logit_bias, logprobs / top_logprobs against the model's own logits (the HF model
called directly on the same ids), presence / frequency penalties against OpenAI's formula, min_p, and
JSON schema / regex / choice / Lark and GBNF grammar constraints enforced while decoding (valid over
many seeds, finish "stop"; "length" inside the structure; bad constraints refused before any token;
constrained and free rows with different schemas in one batch; the grammar cache). Both paths give
the same replies, whole and streamed. Tests run at the engine level
(``manager.engine_model(uid).complete / .stream`` with the SamplingParams of
``parse_generate_config``) and through the public handle (``Client().get_model(uid).generate``)."""
from __future__ import annotations

import json
import re
import threading

import pytest

from xinference_nb.chat import parse_generate_config
from xinference_nb.errors import InferenceError

from public_api import concurrently, launch_by_path, shared_manager

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

PROMPT = "Hello there, how are"
SCHEMA = {"type": "object",
          "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999},
                         "color": {"enum": ["red", "green", "blue"]},
                         "word": {"type": "string", "maxLength": 6}},
          "required": ["n", "color", "word"], "additionalProperties": False}
REGEX = r"[a-c]{3}-[0-9]{2}"
CHOICES = ["yes", "no", "maybe later"]
LARK = 'start: greeting " " name\ngreeting: "hi" | "hello"\nname: /[a-z]{1,5}/'
LARK_TEXT = r"(hi|hello) [a-z]{1,5}"
GBNF = 'root ::= ("yes" | "no") " " [0-9] [0-9]?'
GBNF_TEXT = r"(yes|no) [0-9][0-9]?"
# each constraint as a generate_config, and how its reply is checked
CONSTRAINTS = {
    "json_schema": ({"response_format": {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}}},
                    lambda text: jsonschema.validate(json.loads(text), SCHEMA) is None),
    "regex": ({"guided_regex": REGEX}, lambda text: re.fullmatch(REGEX, text) is not None),
    "choice": ({"guided_choice": CHOICES}, lambda text: text in CHOICES),
    "lark": ({"guided_grammar": LARK}, lambda text: re.fullmatch(LARK_TEXT, text) is not None),
    "gbnf": ({"guided_grammar": GBNF}, lambda text: re.fullmatch(GBNF_TEXT, text) is not None),
}


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("sampling-")


@pytest.fixture(scope="module")
def engines(manager, tiny_llama_dir):
    """(batched engine model, one-request-at-a-time engine model) on the same weights."""
    batched = launch_by_path(manager, tiny_llama_dir, model_uid="sampling-batched")
    serial = launch_by_path(manager, tiny_llama_dir, model_uid="sampling-serial", max_num_seqs=1)
    b, s = manager.engine_model(batched), manager.engine_model(serial)
    assert b.scheduler is not None and s.scheduler is None
    return b, s


def _params(engine, **cfg):
    return parse_generate_config(cfg, engine.chat_format)[0]


def _run(engine, prompt=PROMPT, **cfg):
    return engine.complete(prompt, _params(engine, **cfg))


def _stream(engine, prompt=PROMPT, **cfg):
    tokens = engine.stream(prompt, _params(engine, **cfg))
    text = "".join(tokens)
    return text, tokens.finish_reason, tokens.logprobs


def _prompt_ids(engine, prompt=PROMPT):
    return engine.tokenizer(prompt, add_special_tokens=True)["input_ids"]


def _reference(engine, n, adjust=None, prompt=PROMPT):
    """(greedy ids, raw float32 logits of each step) from the HF model itself, a full forward pass of
    the prompt and the ids so far at each step; ``adjust(logits, generated)`` changes the logits
    before the argmax (not the recorded ones). Stops after a stop token."""
    ids, out, rows = _prompt_ids(engine, prompt), [], []
    stops = set(engine.chat_format.stop_token_ids)
    for _ in range(n):
        with torch.inference_mode():
            logits = engine.model(torch.tensor([ids + out])).logits[0, -1].float()
        rows.append(logits)
        picked = adjust(logits.clone(), out) if adjust else logits
        out.append(int(picked.argmax()))
        if out[-1] in stops:
            break
    return out, rows


def _text(engine, ids):
    stops = set(engine.chat_format.stop_token_ids)
    return engine.tokenizer.decode([t for t in ids if t not in stops], skip_special_tokens=True)


_concurrently = concurrently   # tests/public_api.py


# ------------------------------------------------------------------ logit_bias


def test_logit_bias_removes_and_forces_a_token(engines, manager):
    """-100 on the greedy first token removes it; +100 on another token makes every token that one
    (engine level and through the public handle); an id past the vocabulary is an InferenceError
    naming it, and the model serves the next request."""
    from xinference_nb.client import Client

    forced = engines[0].tokenizer.convert_tokens_to_ids("a")
    for engine in engines:
        ref, _ = _reference(engine, 1)
        first = ref[0]
        banned = _run(engine, temperature=0, max_tokens=6, logprobs=True, logit_bias={str(first): -100})
        assert banned.logprobs[0]["token"] != engine.tokenizer.decode([first])
        plain = _run(engine, temperature=0, max_tokens=6)
        assert banned.text != plain.text
        got = Client().get_model(engine.model_uid).generate(PROMPT, {"temperature": 0.7, "seed": 1, "max_tokens": 5,
                                                                     "logit_bias": {forced: 100}})
        assert got["choices"][0]["text"] == "a" * 5
        with pytest.raises(InferenceError, match=r"logit_bias.*token id 772.*ids 0 to 771"):
            _run(engine, max_tokens=3, logit_bias={772: 5})
        assert _run(engine, temperature=0, max_tokens=6).text == plain.text


# ------------------------------------------------------------------ logprobs


def test_logprobs_are_the_models_own_log_softmax(engines):
    """Each entry is log_softmax of the model's raw logits at that step (the HF model called on the
    same ids, atol 1e-4): the chosen token's, and the top_logprobs sorted by logprob, the greedy
    choice first. The raw logits, not the biased ones: a token forced by logit_bias keeps its own
    logprob. Whole and streamed the same; off unless asked."""
    n = 10
    for engine in engines:
        ids, rows = _reference(engine, n)
        res = _run(engine, temperature=0, max_tokens=n, logprobs=True, top_logprobs=5)
        assert res.text == _text(engine, ids)
        kept = [t for t in ids if t not in engine.chat_format.stop_token_ids]
        assert len(res.logprobs) == len(kept) == res.completion_tokens - (len(ids) - len(kept))
        for entry, tid, logits in zip(res.logprobs, kept, rows):
            logp = torch.log_softmax(logits, -1)
            assert entry["token"] == engine.tokenizer.decode([tid])
            assert "\ufffd" in entry["token"] or entry["bytes"] == list(entry["token"].encode())
            assert entry["logprob"] == pytest.approx(float(logp[tid]), abs=1e-4)
            top = entry["top_logprobs"]
            assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
            want = torch.topk(logp, 5)
            assert [t["logprob"] for t in top] == pytest.approx(want.values.tolist(), abs=1e-4)
            assert [t["token"] for t in top] == [engine.tokenizer.decode([i]) for i in want.indices.tolist()]
            assert top[0]["token"] == entry["token"] and top[0]["logprob"] == pytest.approx(entry["logprob"])
        text, finish, streamed = _stream(engine, temperature=0, max_tokens=n, logprobs=True, top_logprobs=5)
        assert (text, finish) == (res.text, res.finish_reason) and streamed == res.logprobs
        assert _run(engine, temperature=0, max_tokens=3).logprobs is None
        forced = engine.tokenizer.convert_tokens_to_ids("a")
        biased = _run(engine, temperature=0, max_tokens=1, logprobs=True, logit_bias={forced: 100})
        assert biased.logprobs[0]["token"] == "a"
        assert biased.logprobs[0]["logprob"] == pytest.approx(float(torch.log_softmax(rows[0], -1)[forced]), abs=1e-4)
        assert biased.logprobs[0]["logprob"] < -1.0   # the model's own (it is not the top token)


# ------------------------------------------------------------------ penalties and min_p


def _openai_penalty(presence, frequency):
    def adjust(logits, generated):
        counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=logits.shape[-1]).float() \
            if generated else torch.zeros_like(logits)
        return logits - presence * (counts > 0).float() - frequency * counts
    return adjust


def _repeats(ids):
    return len(ids) - len(set(ids))


def test_presence_and_frequency_penalties_follow_openais_formula(engines):
    """Greedy with presence / frequency penalties is the argmax of ``logit - presence * (count > 0) -
    frequency * count`` over the generated tokens (the HF model's logits); positive penalties repeat
    fewer tokens than none, negative ones more."""
    n = 24
    plain, _ = _reference(engine := engines[0], n)
    assert _repeats(plain) > 0   # the tiny model repeats itself: something to penalise
    cases = [(1.5, 0.0), (0.0, 1.0), (0.8, 0.6), (-2.0, 0.0), (0.0, -1.5)]
    for presence, frequency in cases:
        ids, _ = _reference(engine, n, _openai_penalty(presence, frequency))
        if presence + frequency > 0:
            assert _repeats(ids) < _repeats(plain), (presence, frequency)
        else:
            assert _repeats(ids) > _repeats(plain), (presence, frequency)
        for e in engines:
            res = _run(e, temperature=0, max_tokens=n, presence_penalty=presence, frequency_penalty=frequency)
            assert res.text == _text(e, ids), (e.model_uid, presence, frequency)
    # the penalties count the generated tokens only, not the prompt's: on prompts that hold tokens of
    # the model's own continuation, penalising the prompt's tokens too would pick other tokens
    told = 0
    for j in range(1, 16):
        prompt = engine.tokenizer.decode(_prompt_ids(engine) + plain[:j])
        ids, _ = _reference(engine, 6, _openai_penalty(2.0, 2.0), prompt=prompt)
        prompt_ids = _prompt_ids(engine, prompt)
        wrong, _ = _reference(engine, 6, lambda logits, g: _openai_penalty(2.0, 2.0)(logits, prompt_ids + g),
                              prompt=prompt)
        if wrong == ids:
            continue
        told += 1
        for e in engines:
            got = _run(e, prompt, temperature=0, max_tokens=6, presence_penalty=2.0, frequency_penalty=2.0).text
            assert got == _text(e, ids), (e.model_uid, j)
    assert told


def test_min_p_one_samples_the_greedy_token(engines):
    """min_p=1.0 keeps only the most likely token: sampling at any temperature and seed is greedy;
    min_p 0.3 with the same seed is the same reply on both paths, and differs from plain sampling
    somewhere over the seeds."""
    batched, serial = engines
    greedy = _run(batched, temperature=0, max_tokens=12).text
    differs = 0
    for seed in range(6):
        for engine in engines:
            assert _run(engine, temperature=1.5, seed=seed, max_tokens=12, min_p=1.0).text == greedy
        cfg = dict(temperature=1.3, seed=seed, max_tokens=12, min_p=0.3)
        assert _run(batched, **cfg).text == _run(serial, **cfg).text
        differs += _run(batched, **cfg).text != _run(batched, temperature=1.3, seed=seed, max_tokens=12).text
    assert differs


# ------------------------------------------------------------------ constraints


def _check(kind, res_text, finish):
    assert finish == "stop", (kind, res_text, finish)
    assert CONSTRAINTS[kind][1](res_text), (kind, res_text)


def test_constrained_replies_validate_over_many_seeds(engines):
    """A property: for any seed, a sampled reply under each constraint (JSON schema, regex, choice,
    Lark and GBNF grammars) is valid and finishes "stop" (30 seeds x 5 constraints on the batched
    path, the five of one seed sharing a batch)."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    batched = engines[0]
    seen: set[str] = set()

    @hypothesis.settings(max_examples=30, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(seed=st.integers(0, 2**31 - 1), temperature=st.sampled_from([0.7, 1.0, 1.5]))
    def check(seed, temperature):
        jobs = list(CONSTRAINTS.items())
        out = _concurrently(lambda job: _run(batched, temperature=temperature, seed=seed, max_tokens=64, **job[1][0]),
                            jobs)
        for (kind, _), res in zip(jobs, out):
            _check(kind, res.text, res.finish_reason)
            seen.add(res.text)

    check()
    assert len(seen) > 10   # the seeds drew different replies: the constraint did not pin one


def test_batched_and_one_request_paths_agree(engines):
    """The same request, whole and streamed, gives the same text, finish reason and logprobs on the
    batched path and the one-request ``generate`` path: constraints, penalties, logit_bias, min_p,
    sampling with a seed, logprobs."""
    batched, serial = engines
    cases = [dict(temperature=0, max_tokens=12, logprobs=True, top_logprobs=3),
             dict(temperature=1.1, seed=5, max_tokens=12, logprobs=True, presence_penalty=0.5, frequency_penalty=0.4,
                  logit_bias={"5": 4.0, "9": -3.0}, min_p=0.05, top_k=50, top_p=0.9, repetition_penalty=1.2),
             *[dict(temperature=1.0, seed=seed, max_tokens=64, logprobs=True, **CONSTRAINTS[kind][0])
               for seed, kind in enumerate(CONSTRAINTS)]]
    for cfg in cases:
        whole = [_run(e, **cfg) for e in engines]
        assert (whole[0].text, whole[0].finish_reason, whole[0].completion_tokens) == \
               (whole[1].text, whole[1].finish_reason, whole[1].completion_tokens), cfg
        assert [e["token"] for e in whole[0].logprobs] == [e["token"] for e in whole[1].logprobs]
        assert [e["logprob"] for e in whole[0].logprobs] == pytest.approx([e["logprob"] for e in whole[1].logprobs],
                                                                         abs=1e-4)
        for e in engines:
            text, finish, logprobs = _stream(e, **cfg)
            assert (text, finish) == (whole[0].text, whole[0].finish_reason), (e.model_uid, cfg)
            assert [x["token"] for x in logprobs] == [x["token"] for x in whole[0].logprobs]
    # the bytes of the logprobs make up the reply (a token may hold part of a UTF-8 character: its
    # text alone has a replacement character, its bytes are its own)
    for e in engines:
        res = _run(e, temperature=1.0, seed=3, max_tokens=64, logprobs=True, **CONSTRAINTS["json_schema"][0])
        assert b"".join(bytes(x["bytes"]) for x in res.logprobs).decode() == res.text
        assert any("\ufffd" in x["token"] for x in res.logprobs)   # this seed's reply has such a token


def test_constrained_and_free_rows_share_one_batch(manager, engines, tiny_llama_dir):
    """Two different schemas, a regex and two free rows (greedy with logprobs, sampled with
    penalties) run in one batch: each reply equals the same request alone, and they shared forward
    passes (fewer steps than their tokens)."""
    uid = launch_by_path(manager, tiny_llama_dir, model_uid="sampling-mixed", max_num_seqs=5, batch_wait_ms=3000)
    mixed = manager.engine_model(uid)
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}, "k": {"enum": ["x", "yy", "zzz"]}},
             "required": ["ok", "k"], "additionalProperties": False}
    jobs = [dict(temperature=1.0, seed=1, max_tokens=64, **CONSTRAINTS["json_schema"][0]),
            dict(temperature=0, max_tokens=20, logprobs=True, top_logprobs=2),
            dict(temperature=1.2, seed=2, max_tokens=64, guided_json=other),
            dict(temperature=0.9, seed=3, max_tokens=24, presence_penalty=1.0, frequency_penalty=0.5),
            dict(temperature=1.0, seed=4, max_tokens=64, **CONSTRAINTS["regex"][0])]
    alone = [_run(engines[0], **cfg) for cfg in jobs]
    before = mixed.scheduler.steps
    together = _concurrently(lambda cfg: _run(mixed, **cfg), jobs)
    steps = mixed.scheduler.steps - before
    for a, t in zip(alone, together):
        assert (t.text, t.finish_reason, t.completion_tokens) == (a.text, a.finish_reason, a.completion_tokens)
    assert [e["token"] for e in together[1].logprobs] == [e["token"] for e in alone[1].logprobs]
    assert [e["logprob"] for e in together[1].logprobs] == pytest.approx([e["logprob"] for e in alone[1].logprobs],
                                                                        abs=1e-4)
    _check("json_schema", together[0].text, together[0].finish_reason)
    jsonschema.validate(json.loads(together[2].text), other)
    _check("regex", together[4].text, together[4].finish_reason)
    assert steps <= max(r.completion_tokens for r in together) < sum(r.completion_tokens for r in together)
    manager.terminate_model(uid)


def test_max_tokens_inside_the_structure_finishes_length(engines):
    """A reply cut by max_tokens before its structure is complete finishes "length" (a prefix of a
    valid reply), whole and streamed, on both paths."""
    for engine in engines:
        for kind in ("json_schema", "lark"):
            res = _run(engine, temperature=1.0, seed=0, max_tokens=3, **CONSTRAINTS[kind][0])
            assert res.finish_reason == "length" and res.completion_tokens == 3, (engine.model_uid, kind, res)
            full = _run(engine, temperature=1.0, seed=0, max_tokens=64, **CONSTRAINTS[kind][0])
            assert full.text.startswith(res.text) and full.finish_reason == "stop"
            assert _stream(engine, temperature=1.0, seed=0, max_tokens=3, **CONSTRAINTS[kind][0])[:2] == \
                   (res.text, "length")


BAD = [({"guided_json": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}},
        r"guided_json cannot be enforced.*not"),
       ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
           "type": "integer", "minimum": 5, "maximum": 2}}}}, r"response_format cannot be enforced.*minimum"),
       ({"guided_regex": "[a-"}, r"guided_regex.*regex"),
       ({"guided_grammar": "start: ???"}, r"guided_grammar cannot be enforced"),
       ({"guided_grammar": 'root ::= ("a"'}, r"guided_grammar: not a valid GBNF grammar")]


def test_a_constraint_that_cannot_be_enforced_is_refused_before_any_token(engines):
    """An unenforceable schema, a bad regex or grammar: an InferenceError naming the field and the
    problem, raised when the request starts (no forward pass, whole or streamed), and the model
    serves the next request."""
    batched, serial = engines
    good = _run(batched, temperature=0, max_tokens=5).text
    for cfg, match in BAD:
        for engine in engines:
            steps = batched.scheduler.steps
            with pytest.raises(InferenceError, match=match):
                _run(engine, max_tokens=10, **cfg)
            with pytest.raises(InferenceError, match=match):
                engine.stream(PROMPT, _params(engine, max_tokens=10, **cfg))   # before the first token is read
            assert batched.scheduler.steps == steps
            assert _run(engine, temperature=0, max_tokens=5).text == good


def test_compiled_constraints_are_cached_per_model(engines):
    """The same constraint compiles once per model (``Grammars.compiles`` does not grow on a repeat);
    another one compiles once more."""
    for engine in engines:
        cfg = {"guided_choice": ["cache-a", "cache-b", engine.model_uid]}
        before = engine.grammars.compiles
        first = _run(engine, temperature=1.0, seed=1, max_tokens=32, **cfg)
        assert engine.grammars.compiles == before + 1
        again = _run(engine, temperature=1.0, seed=1, max_tokens=32, **cfg)
        assert engine.grammars.compiles == before + 1 and again.text == first.text
        _run(engine, temperature=1.0, seed=1, max_tokens=32, guided_regex=f"{engine.model_uid}-[0-9]")
        assert engine.grammars.compiles == before + 2


def test_the_vision_engine_applies_the_same_surface(tiny_llava_dir, tmp_path, monkeypatch):
    """The transformers vision engine (one ``generate`` per request) goes through the same pick: a chat
    turn with an image under a choice constraint and a JSON schema gives valid replies with logprobs,
    and logit_bias forces a token."""
    pil = pytest.importorskip("PIL.Image")
    from xinference_nb.client import Client
    from xinference_nb.parse import parse_model

    monkeypatch.setenv("XINFERENCE_NB_HOME", str(tmp_path))
    client = Client()
    client.register_model("LLM", parse_model(tiny_llava_dir, model_name="sampling-llava").to_json(), overwrite=True)
    uid = client.launch_model("sampling-llava", model_engine="transformers", model_uid="sampling-llava", n_gpu=None,
                              show_progress=False)
    try:
        handle = client.get_model(uid)
        image = pil.new("RGB", (32, 32), (200, 30, 30))
        ask = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                            {"type": "text", "text": "What is it?"}]}]
        for seed in range(4):
            for kind in ("choice", "json_schema"):
                cfg = dict(CONSTRAINTS[kind][0], temperature=1.0, seed=seed, max_tokens=64, logprobs=True)
                res = handle.chat(ask, generate_config=cfg)["choices"][0]
                _check(kind, res["message"]["content"], res["finish_reason"])
                assert res["logprobs"]["content"] and all(e["logprob"] <= 0 for e in res["logprobs"]["content"])
        from xinference_nb.manager import get_manager

        tok = get_manager().engine_model(uid).tokenizer
        forced = tok.convert_tokens_to_ids("a")
        assert tok.decode([forced]) == "a"
        res = handle.chat(ask, generate_config={"temperature": 0, "max_tokens": 4, "logit_bias": {forced: 100}})
        assert res["choices"][0]["message"]["content"] == "a" * 4
    finally:
        client.terminate_model(uid)
