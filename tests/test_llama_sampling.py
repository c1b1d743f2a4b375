"""The llama.cpp engine's OpenAI sampling surface and structured outputs (issue 22), on the tiny GGUF,
at the engine level (``manager.engine_model(uid).complete / .stream`` with the SamplingParams that
``parse_generate_config`` makes): logit_bias, logprobs / top_logprobs against the model's own logits (a
second ``llama_cpp.Llama`` with ``logits_all=True`` on the same file), presence / frequency penalties
against OpenAI's formula, min_p, and JSON schema / regex / choice constraints enforced while decoding
(valid over many seeds, finish "stop", "length" inside the structure, bad constraints refused before
any token, streams equal to whole replies)."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from xinference_nb.chat import parse_generate_config
from xinference_nb.errors import InferenceError
from xinference_nb.manager import ModelManager

llama_cpp = pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")
pytest.importorskip("llguidance")

PROMPT = "Hello there, how are"
SEEDS = range(20)
SCHEMA = {"type": "object",
          "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 999},
                         "color": {"enum": ["red", "green", "blue"]},
                         "word": {"type": "string", "maxLength": 6}},
          "required": ["n", "color", "word"], "additionalProperties": False}
REGEX = r"[a-c]{3}-[0-9]{2}"
CHOICES = ["yes", "no", "maybe later"]


@pytest.fixture(scope="module")
def model(tiny_gguf_file):
    manager = ModelManager()
    uid = manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                               show_progress=False)
    yield manager.engine_model(uid)
    manager.terminate_all()


@pytest.fixture(scope="module")
def ref(tiny_gguf_file):
    """The same GGUF, keeping every position's logits (``scores``)."""
    llm = llama_cpp.Llama(model_path=str(tiny_gguf_file), logits_all=True, n_ctx=512, verbose=False)
    yield llm
    llm.close()


def _params(model, **cfg):
    return parse_generate_config(cfg, model.chat_format)[0]


def _piece(llm, tid) -> bytes:
    from xinference_nb.engines.llama_cpp import token_bytes

    return token_bytes(llm, tid, special=True)


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def _prompt_ids(ref, prompt=PROMPT):
    return ref.tokenize(prompt.encode(), add_bos=False, special=True)


def _reference_greedy(ref, n, adjust=None, prompt=PROMPT):
    """(greedy ids, raw logits of each step) of ``prompt`` on ``ref``; ``adjust(logits, generated)``
    changes the logits before the argmax (not the recorded ones)."""
    ref.reset()
    ref.eval(_prompt_ids(ref, prompt))
    out, rows = [], []
    for _ in range(n):
        logits = np.array(ref.scores[ref.n_tokens - 1], dtype=np.float64)
        rows.append(logits.copy())
        tid = int(np.argmax(adjust(logits, out) if adjust else logits))
        out.append(tid)
        ref.eval([tid])
    return out, rows


def _text_of(ref, ids) -> str:
    return b"".join(_piece(ref, t) for t in ids).decode("utf-8", errors="replace")


def _stop_ids(model):
    return set(model.chat_format.stop_token_ids) | set(model._eog_ids)


# ------------------------------------------------------------------------------------------------
# logit_bias, logprobs, penalties, min_p
# ------------------------------------------------------------------------------------------------

def test_logit_bias_removes_the_greedy_token_and_forces_another(model, ref):
    ids, rows = _reference_greedy(ref, 1)
    first = ids[0]
    lowered = model.complete(PROMPT, _params(model, temperature=0, max_tokens=1, logprobs=True,
                                             logit_bias={str(first): -100}))
    second = int(np.argsort(-rows[0])[1])                       # the runner-up of the raw logits
    assert lowered.logprobs[0]["bytes"] == list(_piece(ref, second)) != list(_piece(ref, first))
    (forced,) = ref.tokenize(b"a", add_bos=False, special=False)
    c = model.complete(PROMPT, _params(model, temperature=0, max_tokens=6, logit_bias={forced: 100}))
    assert c.text == "a" * 6 and c.finish_reason == "length"
    sampled = model.complete(PROMPT, _params(model, temperature=1.0, seed=3, max_tokens=6, logit_bias={forced: 100}))
    assert sampled.text == "a" * 6


def test_logit_bias_past_the_vocabulary_is_refused_and_the_model_still_serves(model):
    n = model.llm.n_vocab()
    for call in (model.complete, model.stream):
        with pytest.raises(InferenceError, match=rf"logit_bias.*\b{n + 5}\b.*{n} tokens"):
            call(PROMPT, _params(model, temperature=0, max_tokens=4, logit_bias={n + 5: 1.0}))
    assert model.complete(PROMPT, _params(model, temperature=0, max_tokens=4)).completion_tokens == 4


def test_logprobs_are_the_log_softmax_of_the_model_logits(model, ref):
    ids, rows = _reference_greedy(ref, 8)
    assert not set(ids) & _stop_ids(model)
    c = model.complete(PROMPT, _params(model, temperature=0, max_tokens=8, logprobs=True, top_logprobs=5))
    assert c.finish_reason == "length" and len(c.logprobs) == c.completion_tokens == 8
    for entry, tid, row in zip(c.logprobs, ids, rows):
        lp = _log_softmax(row)
        assert entry["bytes"] == list(_piece(ref, tid))
        assert entry["token"] == _piece(ref, tid).decode("utf-8", errors="replace")
        assert entry["logprob"] == pytest.approx(lp[tid], abs=1e-4)
        tops = entry["top_logprobs"]
        assert len(tops) == 5
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert [t["bytes"] for t in tops] == [list(_piece(ref, int(t))) for t in np.argsort(-lp, kind="stable")[:5]]
        assert [t["logprob"] for t in tops] == pytest.approx(sorted(lp, reverse=True)[:5], abs=1e-4)
    assert b"".join(bytes(e["bytes"]) for e in c.logprobs).decode("utf-8", errors="replace") == c.text
    plain = model.complete(PROMPT, _params(model, temperature=0, max_tokens=8, logprobs=True))
    assert plain.text == c.text and all(e["top_logprobs"] == [] for e in plain.logprobs)
    assert model.complete(PROMPT, _params(model, temperature=0, max_tokens=8)).logprobs is None


def test_logprobs_stream_like_the_whole_reply_and_leave_the_stop_token_out(model, ref):
    params = _params(model, temperature=0.9, seed=11, max_tokens=10, logprobs=True, top_logprobs=2)
    whole = model.complete(PROMPT, params)
    stream = model.stream(PROMPT, params)
    seen = []
    for _ in stream:
        seen.append(len(stream.logprobs))    # entries arrive with the text
    assert seen == sorted(seen) and seen[-1] == len(stream.logprobs)
    assert stream.logprobs == whole.logprobs and len(whole.logprobs) == whole.completion_tokens
    # the reply's end-of-sequence token (forced here) is counted but has no entry
    eos = model.llm.token_eos()
    ended = model.complete(PROMPT, _params(model, temperature=0, max_tokens=5, logprobs=True, logit_bias={eos: 100}))
    assert ended.finish_reason == "stop" and ended.text == "" and ended.logprobs == []


def _openai_penalties(presence, frequency):
    def adjust(logits, generated):
        counts = np.bincount(np.array(generated, dtype=np.int64), minlength=logits.shape[0]).astype(np.float64)
        return logits - presence * (counts > 0) - frequency * counts
    return adjust


@pytest.mark.parametrize("presence,frequency", [(1.5, 0.0), (0.0, 1.2), (0.7, 0.6), (-2.0, 0.0)])
def test_presence_and_frequency_penalties_follow_openai_over_generated_tokens(model, ref, presence, frequency):
    """Over the whole reply: llama.cpp's own penalties only count the last 64 generated tokens (with
    them the first three cases go another way after 85 to 98 tokens)."""
    n = 100
    stops = sorted(_stop_ids(model))                  # kept out (logit_bias -100) so the reply runs 100 tokens
    penalties = _openai_penalties(presence, frequency)

    def adjust(logits, generated):
        out = penalties(logits, generated)
        out[stops] -= 100
        return out

    plain = _reference_greedy(ref, n, lambda logits, generated: adjust(logits, []))[0]
    expected = _reference_greedy(ref, n, adjust)[0]
    assert expected != plain                     # the penalty changes this greedy reply
    c = model.complete(PROMPT, _params(model, temperature=0, max_tokens=n, presence_penalty=presence,
                                       frequency_penalty=frequency, logit_bias={t: -100 for t in stops}))
    assert c.text == _text_of(ref, expected) and c.completion_tokens == n
    if presence > 0:
        assert len(set(expected)) > len(set(plain))   # fewer repeats than without it


def test_penalties_count_the_generated_tokens_only(model, ref):
    """OpenAI's penalties (and this engine's) count the reply's tokens only, never the prompt's. On a
    prompt where counting the prompt too would pick differently (it holds tokens greedy would pick),
    the engine picks OpenAI's."""
    n, penalty = 12, _openai_penalties(2.0, 0.0)
    plain = _reference_greedy(ref, n)[0]
    for k in range(2 * n):
        prompt = PROMPT + _text_of(ref, plain[:k])
        ids = _prompt_ids(ref, prompt)
        expected = _reference_greedy(ref, n, penalty, prompt=prompt)[0]
        with_prompt = _reference_greedy(ref, n, lambda logits, gen: penalty(logits, ids + gen), prompt=prompt)[0]
        if expected != with_prompt and expected != _reference_greedy(ref, n, prompt=prompt)[0]:
            break
    else:
        pytest.fail("no prompt where penalizing the prompt's tokens, or none, changes the greedy reply")
    c = model.complete(prompt, _params(model, temperature=0, max_tokens=n, presence_penalty=2.0))
    assert c.text == _text_of(ref, expected)


def test_min_p_one_keeps_only_the_most_likely_token(model):
    greedy = model.complete(PROMPT, _params(model, temperature=0, max_tokens=12)).text
    free = {model.complete(PROMPT, _params(model, temperature=1.5, seed=s, max_tokens=12)).text for s in range(4)}
    assert free != {greedy}                               # sampling alone does wander off
    for seed in range(4):
        c = model.complete(PROMPT, _params(model, temperature=1.5, seed=seed, max_tokens=12, min_p=1.0))
        assert c.text == greedy


def test_min_p_applies_after_temperature(model, ref):
    """min_p keeps the tokens whose probability AFTER temperature is at least min_p x the top one's:
    logit >= top logit + T log(min_p). At T = 3 and min_p = exp(-d / 2) (d: the gap between the two
    best logits) that keeps the runner-up, which min_p at temperature 1 (llama.cpp's own order) drops."""
    _, rows = _reference_greedy(ref, 1)
    logits = rows[0]
    order = np.argsort(-logits)
    gap = float(logits[order[0]] - logits[order[1]])
    temperature, min_p = 3.0, float(np.exp(-gap / 2))
    kept = {bytes(_piece(ref, int(t))) for t in np.flatnonzero(logits >= logits.max() + temperature * np.log(min_p))}
    assert len(kept) >= 2
    seen = set()
    for seed in range(30):
        c = model.complete(PROMPT, _params(model, temperature=temperature, seed=seed, max_tokens=1, min_p=min_p,
                                           logprobs=True))
        seen.add(bytes(c.logprobs[0]["bytes"]))
    assert seen <= kept and len(seen) >= 2


# ------------------------------------------------------------------------------------------------
# structured outputs
# ------------------------------------------------------------------------------------------------

def _check_schema_reply(text):
    value = json.loads(text)
    assert set(value) == {"n", "color", "word"}
    assert isinstance(value["n"], int) and 0 <= value["n"] <= 999
    assert value["color"] in ("red", "green", "blue")
    assert isinstance(value["word"], str) and len(value["word"]) <= 6
    return value


CONSTRAINED = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}}},
     _check_schema_reply),
    ({"guided_json": SCHEMA}, _check_schema_reply),
    ({"guided_regex": REGEX}, lambda text: re.fullmatch(REGEX, text) or pytest.fail(f"{text!r} !~ {REGEX}")),
    ({"guided_choice": CHOICES}, lambda text: text in CHOICES or pytest.fail(f"{text!r} not a choice")),
]


@pytest.mark.parametrize("cfg,check", CONSTRAINED, ids=["json_schema", "guided_json", "regex", "choice"])
def test_constrained_replies_are_valid_over_many_seeds(model, cfg, check):
    texts = set()
    for seed in SEEDS:
        c = model.complete(PROMPT, _params(model, temperature=1.2, seed=seed, max_tokens=120, **cfg))
        assert c.finish_reason == "stop", (seed, c.text)
        check(c.text)
        texts.add(c.text)
    assert len(texts) > 1 or "guided_choice" in cfg          # sampled, not one fixed reply
    greedy = model.complete(PROMPT, _params(model, temperature=0, max_tokens=120, **cfg))
    assert greedy.finish_reason == "stop"
    check(greedy.text)


def test_unconstrained_replies_would_not_validate(model):
    """The tiny model's free replies are not JSON: the constraint is what makes them valid."""
    for seed in range(5):
        text = model.complete(PROMPT, _params(model, temperature=1.2, seed=seed, max_tokens=40)).text
        with pytest.raises(ValueError):
            json.loads(text)


def test_max_tokens_inside_the_structure_is_length(model):
    c = model.complete(PROMPT, _params(model, temperature=1.0, seed=1, max_tokens=4, guided_json=SCHEMA))
    assert c.finish_reason == "length" and c.completion_tokens == 4
    assert c.text.startswith('{"') and len(c.text) < 20
    with pytest.raises(ValueError):
        json.loads(c.text)


@pytest.mark.parametrize("cfg,needle", [
    ({"guided_json": {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}},
     r"guided_json.*no-such-format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     r"response_format.*nonsense"),
    ({"guided_regex": "(unclosed"}, r"guided_regex.*unclosed"),
    ({"guided_grammar": "start: undefined_rule"}, r"guided_grammar.*undefined_rule"),
])
def test_a_bad_constraint_is_refused_before_any_token(model, cfg, needle):
    params = _params(model, temperature=0, max_tokens=8, **cfg)
    with pytest.raises(InferenceError, match=needle):
        model.complete(PROMPT, params)
    with pytest.raises(InferenceError, match=needle):
        model.stream(PROMPT, params)                       # at the call, not at the first token
    c = model.complete(PROMPT, _params(model, temperature=0, max_tokens=8, guided_choice=CHOICES))
    assert c.text in CHOICES and c.finish_reason == "stop"   # the model still serves


@pytest.mark.parametrize("cfg", [{"guided_json": SCHEMA}, {"guided_regex": REGEX}, {"guided_choice": CHOICES}],
                         ids=["json", "regex", "choice"])
def test_a_constrained_stream_gives_the_whole_reply(model, cfg):
    for seed in range(5):
        params = _params(model, temperature=1.2, seed=seed, max_tokens=120, logprobs=True, **cfg)
        whole = model.complete(PROMPT, params)
        stream = model.stream(PROMPT, params)
        deltas = list(stream)
        assert "".join(deltas) == whole.text and (len(deltas) > 1 or whole.completion_tokens == 1)
        assert stream.finish_reason == whole.finish_reason == "stop"
        assert stream.completion_tokens == whole.completion_tokens
        assert stream.logprobs == whole.logprobs


def test_constraint_with_logprobs_reports_the_raw_model_probabilities(model, ref):
    c = model.complete(PROMPT, _params(model, temperature=0, max_tokens=40, logprobs=True, top_logprobs=3,
                                       guided_choice=["zzz"]))
    assert c.text == "zzz" and c.finish_reason == "stop"
    ref.reset()
    ids = _prompt_ids(ref)
    ref.eval(ids)
    first = _log_softmax(ref.scores[ref.n_tokens - 1])
    entry = c.logprobs[0]
    tid = ref.tokenize(bytes(entry["bytes"]), add_bos=False, special=False)
    assert len(tid) == 1 and entry["logprob"] == pytest.approx(first[tid[0]], abs=1e-4)
    # the alternatives are the model's, not the constraint's
    assert entry["top_logprobs"][0]["logprob"] == pytest.approx(first.max(), abs=1e-4)


def test_the_constraint_starts_after_the_reasoning_tag(model, ref):
    """With ``start_after`` (set by the chat handle for a reasoning template) the tokens up to the tag
    are free: the tag is forced here by logit_bias, then the choice follows and ends the reply."""
    (tag,) = ref.tokenize(b"</think>", add_bos=False, special=True)
    params = _params(model, temperature=0, max_tokens=20, guided_choice=CHOICES, logit_bias={tag: 100})
    params = dataclasses.replace(params, constraint=dataclasses.replace(params.constraint, start_after="</think>"))
    c = model.complete(PROMPT, params)
    assert c.text.startswith("</think>") and c.text[len("</think>"):] in CHOICES and c.finish_reason == "stop"


def test_grammars_compile_once_per_constraint(model):
    before = model.grammars.compiles
    schema = dict(SCHEMA, title="compiled-once")
    for seed in range(3):
        model.complete(PROMPT, _params(model, temperature=1.0, seed=seed, max_tokens=120, guided_json=schema))
    assert model.grammars.compiles == before + 1


def test_no_llguidance_import_without_a_constraint(tiny_gguf_file):
    code = f"""
import sys
from xinference_nb.manager import ModelManager
from xinference_nb.chat import parse_generate_config
m = ModelManager()
e = m.engine_model(m.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path={str(tiny_gguf_file)!r},
                                  show_progress=False))
cfg = {{"temperature": 0.7, "seed": 1, "max_tokens": 5, "logprobs": True, "top_logprobs": 2, "presence_penalty": 1.0,
       "logit_bias": {{"5": 2.0}}, "min_p": 0.1}}
c = e.complete("Hi", parse_generate_config(cfg, e.chat_format)[0])
assert len(c.logprobs) == c.completion_tokens, c
print("llguidance" in sys.modules)
m.terminate_all()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
