"""Prefix reuse on the llama.cpp engine (issue 23): consecutive requests evaluate only what differs from
the live context (the next turn of a chat, the rows of a chat_batch sharing an instruction), alternating
conversations resume from their saved state, a LoRA switch never reuses keys and values computed with
another adapter, and ``enable_prefix_caching=False`` evaluates every prompt whole. Counted with
llama.cpp's own counters (``llama_perf_context``: the tokens each decode evaluated), and every reply
compared with a cold run (the context reset first), greedy, on the tiny GGUF."""
from __future__ import annotations

import pytest

from xinference_nb.chat import parse_generate_config
from xinference_nb.client.handles import handle_of
from xinference_nb.manager import ModelManager

llama_cpp = pytest.importorskip("llama_cpp")

INSTRUCTION = ("You label support tickets. Read the ticket, then answer with one word: billing, bug, account, "
               "or other. Be brief and never explain. ") * 6
GREEDY = {"temperature": 0, "max_tokens": 6}


def _peft(**loras) -> dict:
    return {"lora_list": [{"lora_name": name, "local_path": str(path)} for name, path in loras.items()]}


@pytest.fixture(scope="module")
def manager():
    m = ModelManager()
    yield m
    m.terminate_all()


@pytest.fixture(scope="module")
def gguf(manager, tiny_gguf_file, tiny_gguf_loras):
    uid = manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                               show_progress=False, model_uid="prefix-gguf",
                               peft_model_config=_peft(a=tiny_gguf_loras["a"], b=tiny_gguf_loras["b"]))
    engine = manager.engine_model(uid)
    engine.complete("warm up", _params(engine, max_tokens=3))   # the counters start past their floor of 1
    return engine


def _params(engine, **cfg):
    return parse_generate_config({**GREEDY, **cfg}, engine.chat_format)[0]


def _evaluated(engine) -> int:
    """Tokens llama.cpp has evaluated in this context so far (prompt batches and single tokens)."""
    perf = llama_cpp.llama_perf_context(engine.llm._ctx.ctx)
    return perf.n_p_eval + perf.n_eval


def _run(engine, prompt: str, cold: bool = False, **cfg):
    """(text, prompt tokens llama.cpp evaluated for it, prompt length). The last sampled token (cut by
    max_tokens, or the end of generation) is never evaluated: a reply of c tokens evaluates c - 1."""
    if cold:
        _forget(engine)
    before = _evaluated(engine)
    res = engine.complete(prompt, _params(engine, **cfg))
    assert res.completion_tokens >= 1
    return res.text, _evaluated(engine) - before - (res.completion_tokens - 1), res.prompt_tokens


def _forget(engine) -> None:
    """A cold start: the live context and the saved ones dropped."""
    engine.llm.reset()
    engine._states.clear()


def _chat(handle, messages, cold: bool = False):
    if cold:
        _forget(handle._llm())
    return handle.chat(messages, generate_config=GREEDY)["choices"][0]["message"]["content"]


def test_the_next_request_evaluates_only_what_differs(gguf):
    _run(gguf, INSTRUCTION + "Ticket: my card was charged twice.")
    text, evaluated, n = _run(gguf, INSTRUCTION + "Ticket: the app crashes on start.")
    assert n > 150 and evaluated <= 12, (n, evaluated)       # the instruction came from the context
    cold_text, cold_evaluated, _ = _run(gguf, INSTRUCTION + "Ticket: the app crashes on start.", cold=True)
    assert cold_evaluated == n                               # a reset context evaluates the whole prompt
    assert text == cold_text
    # the same prompt again: one token replayed to refresh the logits, the same reply
    again, evaluated, _ = _run(gguf, INSTRUCTION + "Ticket: the app crashes on start.")
    assert evaluated == 1 and again == cold_text


def test_multi_turn_chat_evaluates_only_the_new_turn(manager, gguf):
    handle = handle_of(manager, gguf.model_uid)
    messages = [{"role": "system", "content": INSTRUCTION}]
    replies, costs = [], []
    for turn in range(4):
        messages.append({"role": "user", "content": f"Ticket {turn}: something about order number {turn * 37}."})
        before = _evaluated(gguf)
        replies.append(_chat(handle, messages))
        costs.append(_evaluated(gguf) - before)
        messages.append({"role": "assistant", "content": replies[-1]})
    history = len(gguf._prompt_ids(gguf.chat_format.render(messages[:-1], add_generation_prompt=True), True))
    assert history > 200 and max(costs[1:]) < 60, (history, costs)   # each turn: its new messages only
    for turn in range(4):   # every reply equals the reply of a cold context to the same history
        assert _chat(handle, messages[:2 + 2 * turn], cold=True) == replies[turn], turn


def test_chat_batch_evaluates_the_shared_instruction_once(manager, gguf):
    handle = handle_of(manager, gguf.model_uid)
    rows = [[{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": f"Ticket {i}: help {i}"}]
            for i in range(6)]
    _forget(gguf)
    before = _evaluated(gguf)
    out = [r["choices"][0]["message"]["content"] for r in handle.chat_batch(rows, generate_config=GREEDY,
                                                                            progress=False)]
    spent = _evaluated(gguf) - before
    one = len(gguf._prompt_ids(gguf.chat_format.render(rows[0], add_generation_prompt=True), True))
    assert one > 150 and spent < one + 6 * 30, (one, spent)   # the instruction once, not six times
    assert out == [_chat(handle, row, cold=True) for row in rows]


def test_alternating_conversations_resume_from_their_saved_state(gguf):
    a = INSTRUCTION + "Conversation A: a refund for order 1234, please. " * 3
    b = "Something else entirely. " * 40 + "Conversation B."
    _run(gguf, a)
    _run(gguf, b)                                                  # A's context is saved, B's evaluated
    text_a, evaluated_a, n_a = _run(gguf, a + " And a second question.")
    assert n_a > 200 and evaluated_a <= 12, (n_a, evaluated_a)     # A resumed from its saved state
    text_b, evaluated_b, n_b = _run(gguf, b + " Another one.")
    assert n_b > 150 and evaluated_b <= 12, (n_b, evaluated_b)
    states = gguf._states   # A's context, saved again when B took over (B's is the live one)
    assert [len(e[0]) > 200 for e in states.entries] == [True] or len(states.entries) > 1
    assert states.bytes == sum(len(e[2]) for e in states.entries) > 0
    assert states.tokens == sum(len(e[0]) for e in states.entries) <= states.limit
    assert text_a == _run(gguf, a + " And a second question.", cold=True)[0]
    assert text_b == _run(gguf, b + " Another one.", cold=True)[0]


def test_a_lora_switch_never_reuses_another_adapters_context(gguf):
    prompt = INSTRUCTION + "Ticket: the adapters must not share keys."
    cold = {name: _run(gguf, prompt, cold=True, lora_name=name)[0] for name in ("a", "b", None)}
    assert len(set(cold.values())) == 3            # the adapters change the reply: a wrong reuse would show
    _, _, n = _run(gguf, prompt, lora_name="a")
    for name in ("b", None, "a", "b"):             # each switch: the whole prompt again, or that adapter's own state
        text, evaluated, _ = _run(gguf, prompt, lora_name=name)
        assert text == cold[name], name
        assert evaluated == n or (evaluated <= 2 and gguf._active_lora == name), (name, evaluated, n)
    text, evaluated, _ = _run(gguf, prompt, lora_name="b")    # the same adapter again: reused
    assert evaluated == 1 and text == cold["b"]


def test_enable_prefix_caching_false_evaluates_every_prompt(manager, tiny_gguf_file):
    uid = manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                               show_progress=False, model_uid="prefix-off", enable_prefix_caching=False)
    engine = manager.engine_model(uid)
    try:
        engine.complete("warm up", _params(engine, max_tokens=3))
        first, _, _ = _run(engine, INSTRUCTION + "Ticket: one.")
        for prompt in (INSTRUCTION + "Ticket: two.", INSTRUCTION + "Ticket: one."):
            text, evaluated, n = _run(engine, prompt)
            assert evaluated == n, (evaluated, n)
        assert text == first and engine._states.limit == 0 and not engine._states.entries
    finally:
        manager.terminate_model(uid)


def test_saved_contexts_are_in_the_estimate_and_the_memory_list(manager, tiny_gguf_file):
    """The saved contexts are f16 key/values of up to prefix_cache_max_tokens tokens: counted in the
    estimate (the budget sees them before they exist), 0 with the cache off; what one saved context
    really takes matches the per-token figure."""
    from xinference_nb.memory import PREFIX_CACHE_DEFAULT_TOKENS, estimate_gguf
    from xinference_nb.metadata import read_gguf

    info = read_gguf(tiny_gguf_file)
    per_token = 2 * info.block_count * (info.head_count_kv or info.head_count) * info.head_dim * 2
    assert estimate_gguf(tiny_gguf_file, 512).prefix_cache_bytes == per_token * PREFIX_CACHE_DEFAULT_TOKENS
    assert estimate_gguf(tiny_gguf_file, 512, prefix_cache_tokens=300).prefix_cache_bytes == per_token * 300
    off = estimate_gguf(tiny_gguf_file, 512, prefix_cache_tokens=0)
    assert off.prefix_cache_bytes == 0
    assert estimate_gguf(tiny_gguf_file, 512).total_bytes == off.total_bytes + per_token * PREFIX_CACHE_DEFAULT_TOKENS
    sizes = {}
    for uid, opts in (("est-on", {"prefix_cache_max_tokens": 3000}), ("est-off", {"enable_prefix_caching": False})):
        manager.launch_model("qwen2.5-instruct", model_engine="llama.cpp", model_path=str(tiny_gguf_file),
                             show_progress=False, model_uid=uid, **opts)
    try:
        listed = manager.list_models()
        sizes = {uid: listed[uid]["memory_bytes"] for uid in ("est-on", "est-off")}
        assert sizes["est-on"] - sizes["est-off"] == per_token * 3000, sizes
        engine = manager.engine_model("est-on")
        engine.complete(INSTRUCTION + "Ticket: saved.", _params(engine))
        engine.complete("Something else entirely, so the first context is saved.", _params(engine))
        assert engine._states.entries
        tokens = engine._states.tokens
        # llama.cpp's sequence state: the f16 key/values of its tokens plus a small header
        assert per_token * tokens <= engine._states.bytes <= per_token * tokens * 1.1 + 64 * 1024
    finally:
        for uid in ("est-on", "est-off"):
            manager.terminate_model(uid)
