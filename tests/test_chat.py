"""chat.py: template rendering and choice, generate_config, stop strings, reasoning split, tool calls —
plus the LLM handle end to end on a scripted engine (exact outputs that random weights never give)."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from xinference_nb.chat import (
    ChatFormat,
    ChatLLM,
    Completion,
    ReasoningSplitter,
    SamplingParams,
    StopFilter,
    TokenStream,
    build_chat_format,
    check_prompt_fits,
    choose_chat_template,
    cut_at_stop,
    parse_generate_config,
    parse_tool_calls,
    read_own_chat_template,
    render_chat_template,
    split_reasoning,
)
from xinference_nb.errors import InferenceError, ModelNotFound
from xinference_nb.client.handles import handle_of
from xinference_nb.spec import load_spec

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _llm_doc(**over):
    doc = {"version": 2, "model_name": "chat-doc", "model_family": "chat-doc-fam", "model_ability": ["chat"],
           "chat_template": "REGISTERED {{ messages[0].content }}",
           "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "quantization": "none",
                            "model_id": "x/y"}]}
    doc.update(over)
    return doc


# ------------------------------------------------------------------ rendering
def test_render_matches_transformers_apply_chat_template(tiny_llama_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & \"here\"",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Weather?"}],
        [{"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
             "name": "get_weather", "arguments": {"city": "Paris"}}}]},
         {"role": "tool", "content": "sunny"}],
    ]
    template = (tiny_llama_dir / "chat_template.jinja").read_text()
    for messages in conversations:
        for use_tools in (None, tools):
            for agp in (True, False):
                ours = render_chat_template(template, messages, tools=use_tools, add_generation_prompt=agp)
                theirs = tok.apply_chat_template(messages, tools=use_tools, add_generation_prompt=agp, tokenize=False)
                assert ours == theirs


def test_render_globals_and_errors():
    out = render_chat_template("{{ x | tojson }}|{{ strftime_now('%Y') | length }}|{{ bos_token }}",
                               [], x={"a": "<é>"}, bos_token="<s>")
    assert out == '{"a": "<é>"}|4|<s>'
    with pytest.raises(InferenceError, match="no system"):
        render_chat_template("{{ raise_exception('no system') }}", [])
    with pytest.raises(InferenceError, match="not valid Jinja"):
        render_chat_template("{% for %}", [])
    # loop controls and trim_blocks / lstrip_blocks as in transformers
    assert render_chat_template("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
                                "{{ m.content }}{% endfor %}", [{"content": "a"}, {"content": "b"}]) == "a"


# ------------------------------------------------------------------ which template
def test_template_precedence(tmp_path):
    registered = load_spec("LLM", _llm_doc())
    assert choose_chat_template(registered, "OWN") == ("REGISTERED {{ messages[0].content }}", "registration")
    from xinference_nb.registry.registry import builtin_specs

    builtin = builtin_specs("LLM")["qwen2.5-instruct"]
    assert choose_chat_template(builtin, "OWN") == ("OWN", "model")
    template, source = choose_chat_template(builtin, None)
    assert source == "built-in family" and template == builtin.chat_template
    bare = load_spec("LLM", _llm_doc(model_ability=["generate"], chat_template=None))
    assert choose_chat_template(bare, None) == (None, "none")
    fmt = build_chat_format(bare, None)
    with pytest.raises(InferenceError, match="no chat template"):
        fmt.render([{"role": "user", "content": "x"}])


def test_read_own_chat_template(tmp_path):
    assert read_own_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "FROM_CONFIG"}))
    assert read_own_chat_template(tmp_path) == "FROM_CONFIG"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT"}]}))
    assert read_own_chat_template(tmp_path) == "DEFAULT"
    (tmp_path / "chat_template.jinja").write_text("FROM_JINJA")
    assert read_own_chat_template(tmp_path) == "FROM_JINJA"


def test_build_chat_format_stops_and_tags():
    spec = load_spec("LLM", _llm_doc(stop=["<|im_end|>", "END"], stop_token_ids=[5], reasoning_start_tag="<think>",
                                     reasoning_end_tag="</think>", chat_template="x <tool_call> y"))
    fmt = build_chat_format(spec, None, eos_token_ids=[7, 5], token_of={"<|im_end|>": 9}.get)
    assert fmt.stop == ["<|im_end|>", "END"]
    assert fmt.stop_token_ids == [5, 7, 9]
    assert fmt.has_reasoning and fmt.tool_call_tags == ("<tool_call>", "</tool_call>")
    assert fmt.reasoning_opened_by("...assistant\n<think>\n")
    assert not fmt.reasoning_opened_by("...assistant\n<think>\n\n</think>\n\n")


# ------------------------------------------------------------------ generate_config
def test_generate_config_validation():
    params, stream = parse_generate_config({"max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": 3,
                                            "stop": "x", "seed": 1, "stream": True})
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k, params.stop, params.seed, stream) == \
        (7, 0.0, 0.5, 3, ["x"], 1, True)
    assert params.greedy
    params, stream = parse_generate_config(None)
    assert params.max_tokens == 512 and params.temperature is None and not stream
    with pytest.raises(InferenceError) as err:
        parse_generate_config({"max_new_tokens": 5})
    assert "'max_new_tokens'" in str(err.value) and "max_tokens" in str(err.value) and "top_k" in str(err.value)
    for bad in ({"max_tokens": 0}, {"max_tokens": "5"}, {"temperature": -1}, {"top_p": 2}, {"stop": [1]},
                {"stream": "yes"}, {"seed": 1.5}, {"max_tokens": True}, {"temperature": float("nan")},
                {"temperature": float("inf")}, {"top_p": True}, {"top_k": -2}, {"repetition_penalty": 0},
                {"repetition_penalty": float("nan")}, {"seed": 2**70}, {"seed": -1}, {"seed": False},
                {"stream_options": "x"}, {"stream": True, "stream_options": {"include_usage": 1}},
                {"stream": True, "stream_options": {"chunk": 1}}, {"stream_options": {"include_usage": True}}):
        with pytest.raises(InferenceError) as err:
            parse_generate_config(bad)
        assert repr(list(bad)[-1]) in str(err.value)
    with pytest.raises(InferenceError, match="must be a dict"):
        parse_generate_config([])
    params, stream = parse_generate_config({"repetition_penalty": 1.3, "stream": True,
                                            "stream_options": {"include_usage": False}})
    assert params.repetition_penalty == 1.3 and stream and not params.include_usage
    fmt = ChatFormat(stop=["<|im_end|>"], stop_token_ids=[3])
    params, _ = parse_generate_config({"stop": ["A"]}, fmt)
    assert params.stop == ["A", "<|im_end|>"] and params.stop_token_ids == [3]



def test_generate_config_keys_and_ranges_live_on_one_model():
    """chat.GenerateConfig holds the generate_config keys, types and ranges; parse_generate_config
    checks a dict with it and takes a checked one as it is (what the server hands a handle)."""
    from xinference_nb.chat import GENERATE_CONFIG_KEYS, GenerateConfig

    assert GENERATE_CONFIG_KEYS == tuple(GenerateConfig.model_fields)
    sent = {"max_tokens": 7, "temperature": 1e-30, "stop": "x", "stream": True, "repetition_penalty": 1e30,
            "stream_options": {"include_usage": False}}
    config = GenerateConfig.check(sent)
    assert GenerateConfig.check(config) is config   # a checked one is not checked again
    # it reads as the dict that was sent (a handle that takes a plain dict takes it), with the clamps applied
    assert dict(config) == dict(sent, temperature=0.0, repetition_penalty=1e20)
    fmt = ChatFormat(stop=["<|im_end|>"], stop_token_ids=[3])
    params, stream = parse_generate_config(config, fmt)
    assert (params, stream) == parse_generate_config(sent, fmt)
    assert params.greedy and params.stop == ["x", "<|im_end|>"] and not params.include_usage and stream
    for bad, text in (({"top_p": 2}, "generate_config['top_p'] must be a number in (0, 1], got int 2"),
                      ({"seed": -1}, "generate_config['seed'] must be a whole number from 0 to 4294967294, "
                                     "got int -1"),
                      ({"stream": True, "stream_options": {"include_usage": 1}},
                       "generate_config['stream_options']['include_usage'] must be true or false, got int 1")):
        with pytest.raises(InferenceError) as err:
            GenerateConfig.check(bad)
        assert str(err.value) == text
    with pytest.raises(ValueError, match="top_p"):   # built directly: the same ranges
        GenerateConfig(top_p=2)
    with pytest.raises(ValueError):                   # checked once, never changed after
        config.max_tokens = 0  # type: ignore[misc]

def test_prompt_must_fit_context():
    assert check_prompt_fits(10, SamplingParams(max_tokens=512), 100) == 90
    assert check_prompt_fits(10, SamplingParams(max_tokens=5), 100) == 5
    with pytest.raises(InferenceError, match="context length is 100"):
        check_prompt_fits(100, SamplingParams(), 100)


# ------------------------------------------------------------------ stop strings
def test_cut_at_stop():
    assert cut_at_stop("hello world", ["wor", "llo"]) == ("he", True)
    assert cut_at_stop("hello", ["x"]) == ("hello", False)
    assert cut_at_stop("hello", []) == ("hello", False)


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_stop_filter_streams_like_cut(size):
    text = "abc STOP-HERE def"
    f = StopFilter(["STOP", "zzz"])
    out, hit = "", False
    for i in range(0, len(text), size):
        piece, hit = f.feed(text[i:i + size])
        out += piece
        if hit:
            break
    assert hit and out == "abc "
    f = StopFilter(["STX"])
    out = "".join(f.feed(c)[0] for c in "a ST b S") + f.flush()
    assert out == "a ST b S"


# ------------------------------------------------------------------ reasoning
def test_split_reasoning():
    assert split_reasoning("<think>r</think>\n\nc", "<think>", "</think>") == ("r", "c")
    assert split_reasoning("r</think>\n\nc", "<think>", "</think>") == ("r", "c")
    assert split_reasoning("no tags", "<think>", "</think>") == (None, "no tags")
    assert split_reasoning("still thinking", "<think>", "</think>", opened=True) == ("still thinking", "")
    assert split_reasoning("<think>half", "<think>", "</think>") == ("half", "")
    assert split_reasoning("x", None, None) == (None, "x")


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
@pytest.mark.parametrize("text,opened,expected", [
    ("<think>\nplan it\n</think>\n\nanswer", False, ("plan it\n", "answer")),
    ("plan it</think>\n\nanswer", True, ("plan it", "answer")),
    ("just an answer", False, ("", "just an answer")),
    ("thinking forever", True, ("thinking forever", "")),
])
def test_reasoning_splitter_streaming(size, text, opened, expected):
    splitter = ReasoningSplitter("<think>", "</think>", opened)
    parts = {"reasoning_content": "", "content": ""}
    for i in range(0, len(text), size):
        for kind, piece in splitter.feed(text[i:i + size]):
            parts[kind] += piece
    for kind, piece in splitter.flush():
        parts[kind] += piece
    assert (parts["reasoning_content"], parts["content"]) == expected


# ------------------------------------------------------------------ tool calls
def test_parse_tool_calls():
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    content, calls = parse_tool_calls("<tool_call>not json</tool_call>")
    assert calls == [] and content == "<tool_call>not json</tool_call>"
    assert parse_tool_calls("plain") == ("plain", [])
    # unclosed block at the end (generation stopped at the close tag)
    content, calls = parse_tool_calls('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert content is None and calls[0]["function"]["name"] == "f"


# ------------------------------------------------------------------ handle end to end, scripted engine
class ScriptedLLM(ChatLLM):
    """An engine whose output is a fixed string, streamed one character per token."""

    def __init__(self, output: str, chat_format: ChatFormat):
        self.output = output
        self.chat_format = chat_format
        self.context_length = 4096
        self.prompts: list[str] = []
        self.closed = False

    def complete(self, prompt, params, *, chat=False):
        self.prompts.append(prompt)
        text = self.output[:params.max_tokens]
        finish = "length" if len(self.output) > params.max_tokens else "stop"
        return Completion(text, len(prompt), len(text), finish)

    def stream(self, prompt, params, *, chat=False):
        self.prompts.append(prompt)
        outer = self

        class S(TokenStream):
            def __init__(self):
                self.prompt_tokens = len(prompt)
                self.completion_tokens = 0
                self.finish_reason = "stop"
                self._it = self._gen()

            def _gen(self) -> Iterator[str]:
                for ch in outer.output[:params.max_tokens]:
                    self.completion_tokens += 1
                    yield ch
                if len(outer.output) > params.max_tokens:
                    self.finish_reason = "length"

            def __iter__(self):
                return self._it

            def close(self):
                self._it.close()

        return S()

    def close(self):
        self.closed = True


@pytest.fixture
def scripted():
    """(manager, install(output, **chat_format) -> handle)."""
    from xinference_nb.engines import DevicePlan, find_engine
    from xinference_nb.manager import ModelManager, RunningModel

    manager = ModelManager()

    def install(output: str, uid: str = "scripted", **fmt):
        fmt.setdefault("template", CHATML)
        model = ScriptedLLM(output, ChatFormat(**fmt))
        spec = load_spec("LLM", _llm_doc())
        manager._models[uid] = RunningModel(
            model_uid=uid, model_type="LLM", model_name="chat-doc", engine=find_engine("LLM", "transformers"),
            spec=spec, model_spec=spec.model_specs[0], model_format="pytorch", model_size_in_billions=1,
            quantization="none", model_path=None, device=DevicePlan(), options={}, model=model)
        return handle_of(manager, uid)

    yield manager, install
    manager.terminate_all()


def _collect(chunks):
    chunks = list(chunks)
    text = {"content": "", "reasoning_content": ""}
    calls = []
    for ch in chunks[1:]:
        delta = ch["choices"][0]["delta"]
        for k in text:
            text[k] += delta.get(k) or ""
        calls += delta.get("tool_calls", [])
    return chunks, text, calls


def test_handle_reasoning_end_to_end(scripted):
    _, install = scripted
    tags = dict(reasoning_start_tag="<think>", reasoning_end_tag="</think>")
    # the template opens <think> itself; the model only emits the end tag
    handle = install("step 1, step 2</think>\n\nThe answer.<|im_end|>junk", stop=["<|im_end|>"],
                     template=CHATML + "{% if add_generation_prompt %}<think>\n{% endif %}", **tags)
    res = handle.chat([{"role": "user", "content": "q"}])
    msg = res["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "The answer.", "reasoning_content": "step 1, step 2"}
    assert res["choices"][0]["finish_reason"] == "stop"
    chunks, text, _ = _collect(handle.chat([{"role": "user", "content": "q"}], generate_config={"stream": True}))
    assert text == {"content": "The answer.", "reasoning_content": "step 1, step 2"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "usage" in chunks[-1]
    # the model writes both tags
    handle = install("<think>hmm</think>Yes.", uid="two-tags", **tags)
    assert handle.chat("q")["choices"][0]["message"]["reasoning_content"] == "hmm"
    _, text, _ = _collect(handle.chat("q", generate_config={"stream": True}))
    assert text == {"content": "Yes.", "reasoning_content": "hmm"}


def test_handle_tool_calls_end_to_end(scripted):
    _, install = scripted
    out = 'Checking.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    handle = install(out, tool_call_tags=("<tool_call>", "</tool_call>"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    res = handle.chat("weather?", tools=tools)
    choice = res["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    chunks, text, calls = _collect(handle.chat("weather?", tools=tools, generate_config={"stream": True}))
    assert text["content"] == "Checking." and calls[0]["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # without tools the text stays text
    assert handle.chat("weather?")["choices"][0]["message"]["content"] == out


def test_handle_stop_and_shapes(scripted):
    manager, install = scripted
    handle = install("Hello there. STOP and more")
    res = handle.generate("p", {"stop": ["STOP"]})
    assert res["object"] == "text_completion" and res["id"].startswith("cmpl-") and res["model"] == "scripted"
    assert res["choices"][0]["text"] == "Hello there. " and res["choices"][0]["finish_reason"] == "stop"
    assert set(res["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    chunks = list(handle.generate("p", {"stop": "STOP", "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello there. "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["object"] == "text_completion"
    res = handle.chat("hi", generate_config={"max_tokens": 5})
    assert res["object"] == "chat.completion" and res["id"].startswith("chatcmpl-")
    assert res["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert res["choices"][0]["finish_reason"] == "length"
    with pytest.raises(InferenceError, match="unknown generate_config key 'foo'"):
        handle.chat("hi", generate_config={"foo": 1})
    with pytest.raises(InferenceError):
        handle.chat([])
    manager.terminate_model("scripted")
    with pytest.raises(ModelNotFound, match="terminated"):
        handle.chat("hi")


def test_handle_validates_messages_and_stream_options(scripted):
    _, install = scripted
    handle = install("Hello")
    for messages, field in (([{"content": "x"}], "messages[0].role"),
                            ([{"role": 1, "content": "x"}], "messages[0].role"),
                            ([{"role": "user", "content": 3}], "messages[0].content"),
                            ([{"role": "user", "content": "a"}, {"role": "user", "content": {"a": 1}}],
                             "messages[1].content"),
                            ([{"role": "user"}], "messages[0].content")):
        with pytest.raises(InferenceError) as err:
            handle.chat(messages)
        assert field in str(err.value)
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    with pytest.raises(InferenceError, match=r"messages\[0\]\.content\[0\].*'vision' ability.*abilities chat"):
        handle.chat([{"role": "user", "content": [image]}])
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    ok = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": calls},
          {"role": "tool", "content": "1", "tool_call_id": "1"}]
    tolerant = install("Hello", uid="tolerant", template="{% for m in messages %}{{ m.content or '' }}{% endfor %}")
    assert tolerant.chat(ok)["choices"][0]["message"]["content"] == "Hello"
    chunks = list(handle.chat("q", generate_config={"stream": True, "stream_options": {"include_usage": False}}))
    assert "usage" not in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    chunks = list(handle.generate("q", {"stream": True, "stream_options": {"include_usage": True}}))
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_handle_enable_thinking_reaches_template(scripted):
    _, install = scripted
    template = ("{% for m in messages %}{{ m.content }}{% endfor %}"
                "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}")
    handle = install("ok", template=template, reasoning_start_tag="<think>", reasoning_end_tag="</think>")
    model = handle._manager.engine_model(handle.model_uid)
    handle.chat([{"role": "user", "content": [{"type": "text", "text": "q"}]}], enable_thinking=False)
    assert model.prompts[-1] == "q<think>\n\n</think>\n\n"
    res = handle.chat("q")
    assert model.prompts[-1] == "q"
    # the template did not open a reasoning block: plain text is content
    assert res["choices"][0]["message"] == {"role": "assistant", "content": "ok", "reasoning_content": None}
    assert handle.describe()["model_uid"] == handle.model_uid


def test_stop_strings_are_bounded():
    """Every stop string is looked for after every new token of a batch shared with other requests: a
    request may set 64 of up to 1000 characters (OpenAI takes 4), more is refused naming the limits."""
    from xinference_nb.chat import MAX_STOP_CHARS, MAX_STOPS, parse_generate_config

    params, _ = parse_generate_config({"stop": ["x" * MAX_STOP_CHARS] * MAX_STOPS})
    assert len(params.stop) == MAX_STOPS
    for stop in (["x"] * (MAX_STOPS + 1), "x" * (MAX_STOP_CHARS + 1), ["a", "y" * 100_000]):
        with pytest.raises(InferenceError, match=r"'stop'\] takes at most 64 strings of at most 1000 characters"):
            parse_generate_config({"stop": stop})


def test_a_checked_config_reads_as_the_dict_it_was_made_from():
    """The server hands a handle a checked GenerateConfig: a handle that reads it as a dict (``get``,
    ``in``, ``items``, ``dict()``) sees the keys that were sent, with the float32 clamps applied."""
    from xinference_nb.chat import GenerateConfig

    config = GenerateConfig.check({"max_tokens": 5, "stream": True, "temperature": 1e-40})
    assert config.get("stream") is True and config.get("seed") is None and config.get("seed", 7) == 7
    assert "max_tokens" in config and "seed" not in config
    assert dict(config) == dict(config.items()) == {"max_tokens": 5, "stream": True, "temperature": 0.0}
