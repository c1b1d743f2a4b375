"""tool_parsers.py: one parser per tool-call format (the names of Xinference's catalog, plus mistral,
hermes, kimi-k2), how a launched model's parser is chosen, the streaming path, and one launch of a
tiny model forced to answer in Mistral's format.

The outputs below are written from each family's documented format (see the tool_parsers module
docstring for the source of each)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

try:
    from test_chat import scripted  # noqa: F401 - the fixture is used by name
    from tiny_models import build_forced_llama, quiet
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.test_chat import scripted  # noqa: F401
    from tests.tiny_models import build_forced_llama, quiet

from xinference_nb.chat import ChatFormat, build_chat_format, choose_tool_parser
from xinference_nb.errors import SpecError
from xinference_nb.spec import load_spec
from xinference_nb.tool_parsers import (
    TEMPLATE_MARKERS,
    TOOL_PARSER_NAMES,
    ToolCallStream,
    detect_tool_parser,
    get_tool_parser,
)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}}}},
]
WEATHER = ("get_weather", {"city": "Paris"})
TIME = ("get_time", {"zone": "UTC"})
BEFORE = "Let me check."

# DeepSeek's special tokens
CALLS, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"


def _dsml(calls, p="<｜DSML｜", c="｜DSML｜", tag="function_calls"):
    invokes = "".join(f'{p}invoke name="{n}">\n' + "".join(
        f'{p}parameter name="{k}" string="true">{v}</{c}parameter>\n' for k, v in a.items()) + f"</{c}invoke>\n"
        for n, a in calls)
    return f"{p}{tag}>\n{invokes}</{c}{tag}>"


def _minimax(calls, ns=""):
    return f"{ns}<minimax:tool_call>\n" + "".join(
        f'<invoke name="{n}">\n' + "".join(f'<parameter name="{k}">{v}</parameter>\n' for k, v in a.items())
        + "</invoke>\n" for n, a in calls) + "</minimax:tool_call>"


def _kimi3(calls):
    return "<|open|>tools<|sep|>" + "".join(
        f'<|open|>call tool="{n}" index="{i}"<|sep|>' + "".join(
            f'<|open|>argument key="{k}" type="string"<|sep|>{v}<|close|>argument<|sep|>' for k, v in a.items())
        + "<|close|>call<|sep|>" for i, (n, a) in enumerate(calls)) + "<|close|>tools<|sep|><|close|>message<|sep|>"


def _kimi2(calls):
    return "<|tool_calls_section_begin|>" + "".join(
        f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{json.dumps(a)}<|tool_call_end|>"
        for i, (n, a) in enumerate(calls)) + "<|tool_calls_section_end|>"


def _qwen(n, a):
    return f'<tool_call>\n{{"name": "{n}", "arguments": {json.dumps(a)}}}\n</tool_call>'


def _glm5(n, a):
    return f"<tool_call>{n}\n" + "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n"
                                          for k, v in a.items()) + "</tool_call>"


def _r1(n, a):
    return f"{CALL}function{SEP}{n}\n```json\n{json.dumps(a)}\n```{CALL_END}"


def _v31(n, a):
    return f"{CALL}{n}{SEP}{json.dumps(a)}{CALL_END}"


def _minicpm(n, a):
    return f'<function name="{n}">' + "".join(f'<param name="{k}">{v}</param>' for k, v in a.items()) + "</function>"


def _gemma(n, a):
    return f"<|tool_call>call:{n}{{" + ",".join(f'{k}:<|"|>{v}<|"|>' for k, v in a.items()) + "}<tool_call|>"


# name → {"one": output with WEATHER, "two": WEATHER then TIME, "before": BEFORE then WEATHER,
#         "malformed": an output that starts a call but is not one}
CASES: dict[str, dict[str, str]] = {
    "qwen": {"one": _qwen(*WEATHER), "two": _qwen(*WEATHER) + "\n" + _qwen(*TIME),
             "malformed": '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'},
    "hermes": {"one": _qwen(*WEATHER), "two": _qwen(*WEATHER) + _qwen(*TIME),
               "malformed": "<tool_call>get_weather(city='Paris')</tool_call>"},
    "llama3": {"one": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
               "two": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
                      '{"name": "get_time", "parameters": {"zone": "UTC"}}',
               "before": BEFORE + '\n<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}',
               "malformed": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}'},
    "glm4": {"one": 'get_weather\n{"city": "Paris"}',
             "two": 'get_weather\n{"city": "Paris"}<|assistant|>get_time\n{"zone": "UTC"}',
             "before": BEFORE + '<|assistant|>get_weather\n{"city": "Paris"}',
             "malformed": 'get_weather\n{"city": "Paris"'},
    "glm5": {"one": _glm5(*WEATHER), "two": _glm5(*WEATHER) + "\n" + _glm5(*TIME),
             "malformed": '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'},
    "deepseek-r1": {"one": CALLS + _r1(*WEATHER) + CALLS_END, "two": CALLS + _r1(*WEATHER) + "\n" + _r1(*TIME) + CALLS_END,
                    "malformed": CALLS + _r1(*WEATHER).replace('"Paris"', "Paris") + CALLS_END},
    "deepseek_v3": {"one": '```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```',
                    "two": f'{CALLS} {CALL} {{"name": "get_weather", "parameters": {{"city": "Paris"}}}} {CALL_END} '
                           f'{CALL} {{"name": "get_time", "parameters": {{"zone": "UTC"}}}} {CALL_END} {CALLS_END}',
                    "malformed": '```json\n{"name": "get_weather", "parameters": \n```'},
    "deepseek-v3.1": {"one": CALLS + _v31(*WEATHER) + CALLS_END, "two": CALLS + _v31(*WEATHER) + _v31(*TIME) + CALLS_END,
                      "malformed": CALLS + f'{CALL}get_weather{SEP}{{"city": }}{CALL_END}' + CALLS_END},
    "deepseek-v3.2": {"one": _dsml([WEATHER]), "two": _dsml([WEATHER, TIME], p="<", c=""),
                      "malformed": "<｜DSML｜function_calls>get_weather</｜DSML｜function_calls>"},
    "deepseek-v4": {"one": _dsml([WEATHER], tag="tool_calls"), "two": _dsml([WEATHER, TIME], tag="tool_calls"),
                    "malformed": "<tool_calls>\n<invoke>get_weather</invoke>\n</tool_calls>"},
    "deepseek-v4.1": {"one": _dsml([WEATHER], p="<｜DSML｜ ", c="｜DSML｜ ", tag="calls"),
                      "two": _dsml([WEATHER, TIME], p="<｜DSML｜ ", c="｜DSML｜ ", tag="calls"),
                      "malformed": "<｜DSML｜ calls>broken</｜DSML｜ calls>"},
    "minimax": {"one": _minimax([WEATHER]), "two": _minimax([WEATHER, TIME]),
                "malformed": "<minimax:tool_call>\nget_weather(city=Paris)\n</minimax:tool_call>"},
    "minimax_m3": {"one": '<minimax:tool_call><invoke name="get_weather"><city>Paris</city></invoke></minimax:tool_call>',
                   "two": ']<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="get_weather">]<]minimax[>[<city>Paris'
                          ']<]minimax[>[</city>]<]minimax[>[</invoke>\n]<]minimax[>[<invoke name="get_time">'
                          ']<]minimax[>[<zone>UTC]<]minimax[>[</zone>]<]minimax[>[</invoke>\n]<]minimax[>[</tool_call>',
                   "malformed": "<minimax:tool_call>get_weather</minimax:tool_call>"},
    "gemma": {"one": _gemma(*WEATHER), "two": _gemma(*WEATHER) + _gemma(*TIME),
              "before": BEFORE + '\n```tool_code\nprint(get_weather(city="Paris"))\n```',
              "malformed": "<|tool_call>get_weather Paris<tool_call|>"},
    "kimi-k3": {"one": _kimi3([WEATHER]), "two": _kimi3([WEATHER, TIME]),
                "before": f"<|open|>response<|sep|>{BEFORE}<|close|>response<|sep|>" + _kimi3([WEATHER]),
                "malformed": "<|open|>tools<|sep|><|open|>call<|sep|>get_weather<|close|>tools<|sep|>"},
    "kimi-k2": {"one": _kimi2([WEATHER]), "two": _kimi2([WEATHER, TIME]),
                "malformed": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                             "<|tool_call_argument_begin|>{city: Paris}<|tool_call_end|><|tool_calls_section_end|>"},
    "minicpm5": {"one": _minicpm(*WEATHER), "two": _minicpm(*WEATHER) + "\n" + _minicpm(*TIME),
                 "malformed": "<function name=get_weather>Paris</function>"},
    "mistral": {"one": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]',
                "two": '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}',
                "malformed": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}'},
}
for _case in CASES.values():
    _case.setdefault("before", BEFORE + "\n" + _case["one"])


def _calls(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def _streamed(parser, text, tools=TOOLS, pieces=None):
    """(content, calls) of ``text`` through a ToolCallStream, fed in ``pieces`` (default: char by char)."""
    stream = ToolCallStream(parser, tools)
    content = "".join(stream.feed(p) for p in (pieces if pieces is not None else text)) + stream.flush()
    left, calls = stream.finish()
    return content + left, calls


def test_every_name_has_cases_and_the_catalog_names_are_known():
    assert set(CASES) == set(TOOL_PARSER_NAMES)
    catalog = json.loads((Path(__file__).parents[1] / "xinference_nb/registry/builtin/llm.json").read_text())
    used = {doc["tool_parser"] for doc in catalog if doc.get("tool_parser")}
    assert used and used <= set(TOOL_PARSER_NAMES)
    for name in TOOL_PARSER_NAMES:
        assert get_tool_parser(name).name == name


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_call(name):
    content, calls = get_tool_parser(name).parse(CASES[name]["one"], TOOLS)
    assert content is None and _calls(calls) == [WEATHER]
    call = calls[0]
    assert call["type"] == "function" and isinstance(call["id"], str) and call["id"]
    assert isinstance(call["function"]["arguments"], str)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_calls(name):
    content, calls = get_tool_parser(name).parse(CASES[name]["two"], TOOLS)
    assert content is None and _calls(calls) == [WEATHER, TIME]
    assert calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_text_before_the_call_stays_content(name):
    content, calls = get_tool_parser(name).parse(CASES[name]["before"], TOOLS)
    assert content == BEFORE and _calls(calls) == [WEATHER]


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_call_is_content_with_a_warning(name, caplog):
    text = CASES[name]["malformed"]
    with caplog.at_level(logging.WARNING, logger="xinference_nb.tool_parsers"):
        content, calls = get_tool_parser(name).parse(text, TOOLS)
    assert calls == [] and content == text
    assert any(name in r.getMessage() and "stays in the content" in r.getMessage() for r in caplog.records)


def test_plain_text_is_left_alone():
    for name in TOOL_PARSER_NAMES:
        assert get_tool_parser(name).parse("It is sunny, 20 °C.", TOOLS) == ("It is sunny, 20 °C.", [])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("kind", ["one", "two", "before", "malformed"])
def test_stream_char_by_char_matches_non_stream(name, kind, scripted):
    """Through the handle's streaming path, one character per token: the same content and calls."""
    _, install = scripted
    text = CASES[name][kind]
    handle = install(text, tool_parser=get_tool_parser(name))
    whole = handle.chat("weather?", tools=TOOLS)["choices"][0]
    chunks = list(handle.chat("weather?", tools=TOOLS, generate_config={"stream": True}))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert streamed.strip() == (whole["message"]["content"] or "")
    assert _calls(calls) == _calls(whole["message"].get("tool_calls", []))
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"] == \
        ("tool_calls" if calls else "stop")
    assert [c["index"] for c in calls] == list(range(len(calls)))
    if kind == "before":   # the text before the call streams as it comes, not held to the end
        texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
        assert len([t for t in texts if t]) >= 3 and "".join(t or "" for t in texts).startswith(BEFORE)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_split_anywhere_in_two_pieces(name):
    parser = get_tool_parser(name)
    text = CASES[name]["before"] + "\nDone."
    want = parser.parse(text, TOOLS)
    assert _calls(want[1]) == [WEATHER] and want[0] is not None and want[0].endswith("Done.")
    for i in range(len(text) + 1):
        content, calls = _streamed(parser, text, pieces=[text[:i], text[i:]])
        assert (content.strip(), _calls(calls)) == (want[0], _calls(want[1])), i


def test_partial_marker_that_turns_out_to_be_text_is_released():
    for name, text in (("qwen", "a <tool_ b < c"), ("deepseek-v4.1", "x <｜DSML｜ y"), ("mistral", "[TOOL_ z"),
                       ("glm4", "get_weather is not called"), ("kimi-k3", "<|open|>respo")):
        parser = get_tool_parser(name)
        assert _streamed(parser, text) == (text, []), name
        assert parser.parse(text, TOOLS) == (text, [])


def test_qwen3_coder_function_bodies_and_schema_types():
    text = ("<tool_call>\n<function=get_weather>\n<parameter=city>\n2024\n</parameter>\n<parameter=days>\n3\n"
            "</parameter>\n</function>\n</tool_call>")
    _, calls = get_tool_parser("qwen").parse(text, TOOLS)
    # "city" is a string in the schema: kept as written; "days" is not in it: read as JSON
    assert _calls(calls) == [("get_weather", {"city": "2024", "days": 3})]
    _, calls = get_tool_parser("qwen").parse(text)
    assert _calls(calls) == [("get_weather", {"city": 2024, "days": 3})]
    # an unclosed block at the end (generation stopped at the close tag) is still a call
    _, calls = get_tool_parser("qwen").parse('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert _calls(calls) == [("f", {"a": 1})]


def test_formats_details():
    # DSML string="false" values are JSON, string="true" kept as text
    text = ('<｜DSML｜tool_calls><｜DSML｜invoke name="f"><｜DSML｜parameter name="n" string="false">42'
            '</｜DSML｜parameter><｜DSML｜parameter name="s" string="true">001</｜DSML｜parameter></｜DSML｜invoke>'
            "</｜DSML｜tool_calls>")
    assert _calls(get_tool_parser("deepseek-v4").parse(text)[1]) == [("f", {"n": 42, "s": "001"})]
    # MiniMax-M3 nested XML arguments: objects, <item> lists, repeated tags, bare ampersands
    text = ('<minimax:tool_call><invoke name="search"><filters><unit>c</unit><range><min>-5</min></range></filters>'
            "<cities><item>Rome</item><item>Oslo</item></cities><tag>a & b</tag><tag>c</tag></invoke></minimax:tool_call>")
    assert _calls(get_tool_parser("minimax_m3").parse(text)[1]) == [
        ("search", {"filters": {"unit": "c", "range": {"min": -5}}, "cities": ["Rome", "Oslo"], "tag": ["a & b", "c"]})]
    # Gemma 4 values: <|"|> strings (with commas), numbers, lists, nested objects
    text = '<|tool_call>call:f{a:<|"|>x, y<|"|>,b:3,c:[1,<|"|>z<|"|>],d:{e:true}}<tool_call|>'
    assert _calls(get_tool_parser("gemma").parse(text)[1]) == [("f", {"a": "x, y", "b": 3, "c": [1, "z"], "d": {"e": True}})]
    # MiniCPM5 CDATA may hold markup, even a closing tag
    text = '<function name="f"><param name="code"><![CDATA[a < b </function>]]></param></function>'
    assert _calls(get_tool_parser("minicpm5").parse(text)[1]) == [("f", {"code": "a < b </function>"})]
    # Kimi-K3: typed arguments, and the response channel tags never reach the content
    text = ('<|open|>response<|sep|>ok<|close|>response<|sep|><|open|>tools<|sep|><|open|>call tool="f" index="0"'
            '<|sep|><|open|>argument key="n" type="number"<|sep|>3<|close|>argument<|sep|><|close|>call<|sep|>'
            "<|close|>tools<|sep|><|close|>message<|sep|>")
    assert get_tool_parser("kimi-k3").parse(text)[0] == "ok"
    assert _calls(get_tool_parser("kimi-k3").parse(text)[1]) == [("f", {"n": 3})]
    # DeepSeek-V3.2-Exp is "deepseek-r1" in the catalog but its template writes the V3.1 form
    assert _calls(get_tool_parser("deepseek-r1").parse(CASES["deepseek-v3.1"]["one"])[1]) == [WEATHER]


def test_call_ids():
    # Mistral templates refuse ids that are not 9 letters/digits; a 9-character id the model wrote is kept
    _, calls = get_tool_parser("mistral").parse(CASES["mistral"]["two"])
    assert all(len(c["id"]) == 9 and c["id"].isalnum() for c in calls)
    _, calls = get_tool_parser("mistral").parse('[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abcDEF123"}]')
    assert calls[0]["id"] == "abcDEF123"
    # Kimi-K2 names its calls itself
    _, calls = get_tool_parser("kimi-k2").parse(CASES["kimi-k2"]["two"])
    assert [c["id"] for c in calls] == ["functions.get_weather:0", "functions.get_time:1"]
    _, calls = get_tool_parser("qwen").parse(CASES["qwen"]["two"])
    assert all(c["id"].startswith("call_") for c in calls)


# ------------------------------------------------------------------ which parser a model uses
def _spec(**over):
    doc = {"version": 2, "model_name": "tp-doc", "model_family": "tp-fam", "model_ability": ["chat", "tools"],
           "chat_template": "{{ messages[0].content }}",
           "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "model_id": "x/y"}]}
    doc.update(over)
    return load_spec("LLM", doc)


def test_parser_choice_registration_then_family_then_template():
    qwen_template = "{{ messages[0].content }} <tool_call>"
    # the registration's tool_parser wins over a template that writes <tool_call>
    fmt = build_chat_format(_spec(tool_parser="mistral", chat_template=qwen_template))
    assert fmt.tool_parser is get_tool_parser("mistral") and fmt.tool_call_tags is None
    # without one: the built-in family's
    family = SimpleNamespace(tool_parser=None, model_family="llama-3.1-instruct", chat_template=qwen_template)
    assert choose_tool_parser(family, qwen_template) is get_tool_parser("llama3")
    # else the chat template's markers; the <tool_call> template keeps the qwen parser (as before)
    fmt = build_chat_format(_spec(chat_template=qwen_template))
    assert fmt.tool_parser is get_tool_parser("qwen") and fmt.tool_call_tags == ("<tool_call>", "</tool_call>")
    assert build_chat_format(_spec()).tool_parser is None
    # the older form: ChatFormat(tool_call_tags=...) still means a <tool_call>{json} parser
    assert ChatFormat(tool_call_tags=("<tool_call>", "</tool_call>")).tool_parser.parse(CASES["qwen"]["one"])[1]


def test_template_detection_covers_every_catalog_template():
    catalog = json.loads((Path(__file__).parents[1] / "xinference_nb/registry/builtin/llm.json").read_text())
    for doc in catalog:
        found = detect_tool_parser(doc.get("chat_template"))
        if doc.get("tool_parser") and doc.get("chat_template") and found:
            # the detected parser reads the calls the catalog's own parser reads for this family
            assert found == doc["tool_parser"] or {found, doc["tool_parser"]} <= {
                "deepseek-r1", "deepseek-v3.1", "deepseek-v3.2", "deepseek_v3"}, doc["model_name"]
    assert detect_tool_parser("[INST] {{ x }} [TOOL_CALLS] [") == "mistral"
    assert detect_tool_parser("<tool_call>{name}<arg_key>") == "glm5"
    assert detect_tool_parser("plain {{ messages }}") is None and detect_tool_parser(None) is None
    assert {name for _, name in TEMPLATE_MARKERS} <= set(TOOL_PARSER_NAMES)


def test_unknown_tool_parser_is_refused_at_registration():
    from xinference_nb import Client

    with pytest.raises(SpecError) as err:
        _spec(tool_parser="qwen25")
    assert err.value.fields == ["tool_parser"]
    assert "'qwen25' is not a known tool parser" in str(err.value) and "'deepseek-v3.1'" in str(err.value)
    client = Client()
    doc = {"version": 2, "model_name": "tp-bad", "model_family": "tp-fam", "model_ability": ["chat"],
           "chat_template": "x", "tool_parser": "nope",
           "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1, "model_id": "x/y"}]}
    with pytest.raises(SpecError, match="tool_parser"):
        client.register_model("LLM", doc)
    assert "tp-bad" not in {r["model_name"] for r in client.list_model_registrations("LLM")}
    with pytest.raises(SpecError, match="use one of"):
        get_tool_parser("nope")


# ------------------------------------------------------------------ a launched tiny model
MISTRAL_JSON = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'


@pytest.fixture(scope="module")
def mistral_llama_dir(tiny_llama_dir, tmp_path_factory):
    pytest.importorskip("transformers")
    with quiet():
        return build_forced_llama(tiny_llama_dir, tmp_path_factory.mktemp("mistral_llama") / "mistral-llama",
                                  ["Sure.", "[TOOL_CALLS]", MISTRAL_JSON], special=("[TOOL_CALLS]",))


def test_launched_model_uses_its_registrations_tool_parser(mistral_llama_dir, caplog):
    """The tiny model answers ``Sure.[TOOL_CALLS][{...}]`` whatever it is asked, with ``[TOOL_CALLS]`` a
    special token as in Mistral's tokenizers (a request with tools keeps it in the text; without tools
    it is skipped like every special token); its chat template writes ``<tool_call>`` (so without a
    tool_parser it would get the qwen parser)."""
    from xinference_nb import Client
    from xinference_nb.manager import ModelManager

    client, manager = Client(), ModelManager()
    for name, parser in (("tp-mistral", "mistral"), ("tp-detected", None)):
        doc = {"version": 2, "model_name": name, "model_family": "tp-tiny", "context_length": 1024,
               "model_lang": ["en"], "model_ability": ["generate", "chat", "tools"], "stop": ["<|im_end|>"],
               "chat_template": (mistral_llama_dir / "chat_template.jinja").read_text(),
               "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01",
                                "model_uri": str(mistral_llama_dir)}]}
        if parser:
            doc["tool_parser"] = parser
        client.register_model("LLM", doc)
    try:
        for seqs in (1, 16):   # model.generate, and the continuous-batching scheduler
            handle = manager.get_model(manager.launch_model("tp-mistral", model_engine="transformers",
                                                            show_progress=False, max_num_seqs=seqs))
            choice = handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8})["choices"][0]
            assert choice["message"].get("tool_calls"), (seqs, choice)
            chunks = list(handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8, "stream": True}))
            assert chunks[-2]["choices"][0]["delta"].get("tool_calls") or chunks[-1]["choices"][0]["delta"].get(
                "tool_calls"), seqs
            manager.terminate_model(handle.model_uid)
        handle = manager.get_model(manager.launch_model("tp-mistral", model_engine="transformers",
                                                        show_progress=False))
        choice = handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8})["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Sure."
        assert _calls(choice["message"]["tool_calls"]) == [WEATHER]
        assert len(choice["message"]["tool_calls"][0]["id"]) == 9
        chunks = list(handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8, "stream": True}))
        calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
        assert _calls(calls) == [WEATHER] and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Sure."
        # without tools the same output is text, its special token skipped
        text = handle.chat("weather?", generate_config={"max_tokens": 8})["choices"][0]["message"]["content"]
        assert text == "Sure." + MISTRAL_JSON

        # the same model registered without tool_parser: its <tool_call> template picks qwen, which
        # finds no call in Mistral's format, so the text stays content
        other = manager.get_model(manager.launch_model("tp-detected", model_engine="transformers",
                                                       show_progress=False))
        assert manager.running_model(other.model_uid).model.chat_format.tool_parser.name == "qwen"
        choice = other.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8})["choices"][0]
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
        assert choice["message"]["content"] == "Sure.[TOOL_CALLS]" + MISTRAL_JSON
    finally:
        manager.terminate_all()


def test_llama_cpp_keeps_the_special_marker_for_a_request_with_tools(mistral_llama_dir, tmp_path_factory):
    """The same forced model as a GGUF (``[TOOL_CALLS]`` a CONTROL token): llama.cpp detokenizes it
    only for a request with tools, so the mistral parser sees its marker; without tools it is skipped.
    The call's JSON is one 58-byte token: llama-cpp-python's own detokenize (a 32-byte buffer) would
    drop it silently, the engine reads it whole (llama_cpp.token_bytes)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from tiny_models import build_tiny_gguf

    from xinference_nb import Client
    from xinference_nb.manager import ModelManager

    with quiet():
        gguf_file = build_tiny_gguf(mistral_llama_dir, tmp_path_factory.mktemp("mistral_gguf") / "mistral-f32.gguf")
    client, manager = Client(), ModelManager()
    doc = {"version": 2, "model_name": "tp-mistral-gguf", "model_family": "tp-tiny", "context_length": 1024,
           "model_lang": ["en"], "model_ability": ["generate", "chat", "tools"], "stop": ["<|im_end|>"],
           "tool_parser": "mistral", "chat_template": (mistral_llama_dir / "chat_template.jinja").read_text(),
           "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_01", "quantization": "f32",
                            "model_uri": str(gguf_file)}]}
    client.register_model("LLM", doc)
    try:
        handle = manager.get_model(manager.launch_model("tp-mistral-gguf", model_engine="llama.cpp",
                                                        show_progress=False))
        cfg = {"max_tokens": 8, "temperature": 0}
        choice = handle.chat("weather?", tools=TOOLS, generate_config=cfg)["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Sure."
        assert _calls(choice["message"]["tool_calls"]) == [WEATHER]
        chunks = list(handle.chat("weather?", tools=TOOLS, generate_config=dict(cfg, stream=True)))
        calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
        assert _calls(calls) == [WEATHER]
        text = handle.chat("weather?", generate_config=cfg)["choices"][0]["message"]["content"]
        assert text == "Sure." + MISTRAL_JSON
    finally:
        manager.terminate_all()
        client.unregister_model("LLM", "tp-mistral-gguf")
