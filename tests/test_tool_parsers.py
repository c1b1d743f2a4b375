"""tool_parsers.py: one parser per tool-call format (the names of Xinference's catalog, plus mistral,
hermes, kimi-k2), how a launched model's parser is chosen, the streaming path, and one launch of a
tiny model forced to answer in Mistral's format.

The outputs below are written from each family's documented format (see the tool_parsers module
docstring for the source of each)."""
from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from test_chat import scripted  # noqa: F401 - the fixture is used by name
    from tiny_models import build_forced_llama, quiet
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests.test_chat import scripted  # noqa: F401
    from tests.tiny_models import build_forced_llama, quiet

from xinference_nb.chat import ChatFormat, build_chat_format, choose_tool_parser
from xinference_nb.errors import SpecError
from xinference_nb.client.handles import handle_of
from xinference_nb.registry import builtin_family
from xinference_nb.spec import load_spec
from xinference_nb.chat.tool_parsers import (
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
    with caplog.at_level(logging.WARNING, logger="xinference_nb.chat.tool_parsers"):
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
    # without one: the built-in family's (the launcher looks it up and passes it down)
    family = SimpleNamespace(tool_parser=None, model_family="llama-3.1-instruct", chat_template=qwen_template)
    assert choose_tool_parser(family, qwen_template, builtin_family(family.model_family)) is get_tool_parser("llama3")
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
            handle = handle_of(manager, manager.launch_model("tp-mistral", model_engine="transformers",
                                                            show_progress=False, max_num_seqs=seqs))
            choice = handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8})["choices"][0]
            assert choice["message"].get("tool_calls"), (seqs, choice)
            chunks = list(handle.chat("weather?", tools=TOOLS, generate_config={"max_tokens": 8, "stream": True}))
            assert chunks[-2]["choices"][0]["delta"].get("tool_calls") or chunks[-1]["choices"][0]["delta"].get(
                "tool_calls"), seqs
            manager.terminate_model(handle.model_uid)
        handle = handle_of(manager, manager.launch_model("tp-mistral", model_engine="transformers",
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
        other = handle_of(manager, manager.launch_model("tp-detected", model_engine="transformers",
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
        handle = handle_of(manager, manager.launch_model("tp-mistral-gguf", model_engine="llama.cpp",
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


# ------------------------------------------------------------------ hostile output
# Model output is untrusted (a prompt, over REST a user's, can make a model write anything): every hole
# found by red-teaming the parsers is kept below.

def _format_markers() -> list[str]:
    out: set[str] = set()
    for name in TOOL_PARSER_NAMES:
        parser = get_tool_parser(name)
        out.update(m for b in parser.blocks for m in (b.open, b.close) if m)
        out.update(parser.drop)
    return sorted(out)


# what a hostile output is made of: every format's markers, the markup inside its blocks, JSON
# fragments (NaN, huge numbers, string arguments, depth), Python literals JSON cannot hold, whitespace
PIECES = _format_markers() + [
    "<function=f>", "<function=  >", "<parameter=a>", "</parameter>", "</function>", "<arg_key>a</arg_key>",
    "<arg_value>1</arg_value>", '<invoke name="f">', '<invoke name=" ">', "</invoke>", '<parameter name="a">',
    '<param name="a">', "</param>", "<![CDATA[", "]]>", '<|"|>', "call:f{", "call: f{a:1e999}", "functions.f:0",
    "functions.:0", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>", CALL, CALL_END, SEP,
    "[ARGS]", "[CALL_ID]", "f[ARGS]{}", '<|open|>call tool="f"<|sep|>', '<|open|>argument key="a" type="number"<|sep|>',
    "<|close|>argument<|sep|>", "<|close|>call<|sep|>", '<｜DSML｜invoke name="f">',
    '<｜DSML｜parameter name="a" string="false">', "</｜DSML｜parameter>", "</｜DSML｜invoke>", "```", "```json",
    "```tool_code\nf(a=b'x')\n```", "```tool_code\nf(a={1, 2})\n```", "print(f(a=1))",
    '{"name": "f", "arguments": {"a": 1}}', '{"name": "f", "parameters": {"a": NaN}}', '{"a": Infinity}', "-Infinity",
    "1e999", "1" * 5000, '{"name": ""}', '{"name": " ", "arguments": {}}', '{"name": "f", "arguments": "x"}',
    '{"name": "f", "arguments": "{\\"a\\": 1, \\"a\\": 2}"}', '{"a": 1, "a": 2}', "[" * 1200, "{" * 50, '{"a":' * 1100,
    "{", "}", "[", "]", '"', "\\", ":", ",", ";", "null", "\ud800", "é", "😀", "f\n", "f \n", "  get_weather\n{", "\n",
    " ", "\t",
] + [text for case in CASES.values() for text in case.values()]


def _hostile(name: str):
    """Texts for parser ``name``: a third of the pieces its own markers and examples."""
    parser = get_tool_parser(name)
    own = sorted({m for b in parser.blocks for m in (b.open, b.close) if m} | set(parser.drop)
                 | set(CASES[name].values()))
    piece = st.one_of(st.sampled_from(own), st.sampled_from(PIECES), st.text(max_size=8))
    return st.lists(piece, max_size=10).map("".join)


def _strict_json(text: str):
    """``text`` as standard JSON (json.loads takes NaN and Infinity; OpenAI clients do not)."""
    def refuse(constant):
        raise AssertionError(f"{constant} in tool-call arguments")
    return json.loads(text, parse_constant=refuse)


def _assert_valid_calls(calls):
    ids = [c["id"] for c in calls]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), ids
    for call in calls:
        fn = call["function"]
        assert call["type"] == "function"
        assert isinstance(fn["name"], str) and fn["name"] and fn["name"] == fn["name"].strip(), fn
        assert isinstance(fn["arguments"], str) and isinstance(_strict_json(fn["arguments"]), dict), fn


def _pairs(calls):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(TOOL_PARSER_NAMES), tools=st.sampled_from([None, TOOLS]), data=st.data())
def test_any_output_parses_to_valid_calls_and_streams_the_same(name, tools, data):
    """No text makes a parser raise; every call has a name, a unique id and a JSON object as
    arguments; streamed in any pieces (one character each included) the content and calls are the
    non-streamed ones (the content trimmed when there are calls, as documented)."""
    parser = get_tool_parser(name)
    text = data.draw(_hostile(name), label="text")
    logging.disable(logging.WARNING)   # hostile blocks warn; thousands of examples need not print them
    try:
        content, calls = parser.parse(text, tools)
        assert content is None or isinstance(content, str)
        _assert_valid_calls(calls)
        if data.draw(st.booleans(), label="one character per piece"):
            pieces = list(text)
        else:
            cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6), label="cuts"))
            pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        streamed, streamed_calls = _streamed(parser, text, tools, pieces)
    finally:
        logging.disable(logging.NOTSET)
    _assert_valid_calls(streamed_calls)
    assert _pairs(streamed_calls) == _pairs(calls)
    if calls:
        assert streamed.strip() == (content or "")
    else:
        assert streamed == content


MALFORMED_ARGUMENTS = [
    # arguments that are not a JSON object: a string that is not one, a list
    ("qwen", '<tool_call>{"name": "f", "arguments": "x"}</tool_call>'),
    ("qwen", '<tool_call>{"name": "f", "arguments": "[1]"}</tool_call>'),
    ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": [1]}]'),
    # json.loads reads these (and dumps them back as tokens no JSON client reads); a number past the
    # float range is read as inf; an int of more than 4300 digits is refused by Python
    *[("llama3", '{"name": "f", "parameters": {"a": %s}}' % v)
      for v in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 5000)],
    ("qwen", '<tool_call>{"name": "f", "arguments": "{\\"a\\": NaN}"}</tool_call>'),
    ("kimi-k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>"
                '{"a": Infinity}<|tool_call_end|><|tool_calls_section_end|>'),
    # Python literals of a tool_code block that JSON cannot hold: the TypeError used to escape parse
    *[("gemma", "```tool_code\nf(a=%s)\n```" % v) for v in ("b'x'", "{1, 2}", "1e999", "1j", "{(1, 2): 3}")],
    # depth bombs: json's RecursionError (not a ValueError) used to skip every call of the reply
    ("llama3", '{"name": "f", "parameters": ' + '{"a":' * 50_000),
    ("glm4", "f\n" + '{"a":' * 50_000),
    ("mistral", "[TOOL_CALLS]f[ARGS]" + "[" * 50_000),
    ("gemma", "<|tool_call>call:f{a:" + "[" * 50_000 + "<tool_call|>"),
    ("minimax_m3", '<minimax:tool_call><invoke name="f">' + "<a>" * 5000 + "x" + "</a>" * 5000
     + "</invoke></minimax:tool_call>"),
    # names: empty or blank
    ("qwen", "<tool_call><function=  ></function></tool_call>"),
    ("qwen", '<tool_call>{"name": " ", "arguments": {}}</tool_call>'),
    ("deepseek-v4", '<｜DSML｜tool_calls><｜DSML｜invoke name=" "></｜DSML｜invoke></｜DSML｜tool_calls>'),
    ("kimi-k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.:0<|tool_call_argument_begin|>{}"
                "<|tool_call_end|><|tool_calls_section_end|>"),
]


@pytest.mark.parametrize("name,text", MALFORMED_ARGUMENTS, ids=lambda v: v[:40] if isinstance(v, str) else v)
def test_calls_that_cannot_be_valid_stay_content(name, text, caplog):
    with caplog.at_level(logging.WARNING, logger="xinference_nb.chat.tool_parsers"):
        content, calls = get_tool_parser(name).parse(text, TOOLS)
    assert (content, calls) == (text, [])
    assert caplog.records and all(len(r.getMessage()) < 1500 for r in caplog.records)   # no 100k-char log lines
    # the same in a stream, and a valid call after a broken one is still found
    assert _streamed(get_tool_parser(name), text) == (text, [])


def test_a_broken_block_does_not_hide_the_calls_after_it():
    bomb = '<tool_call>{"name": "f", "arguments": {"a": ' + "[" * 100_000 + "}}</tool_call>"
    content, calls = get_tool_parser("qwen").parse(bomb + _qwen(*WEATHER), TOOLS)
    assert content == bomb and _calls(calls) == [WEATHER]
    nan = '<tool_call>{"name": "f", "arguments": {"a": NaN}}</tool_call>'
    content, calls = get_tool_parser("qwen").parse(nan + _qwen(*WEATHER), TOOLS)
    assert content == nan and _calls(calls) == [WEATHER]


def test_argument_values_json_clients_can_read():
    # a JSON string of arguments is read and written again: one form, duplicate keys as JSON.parse reads them
    for args in ('"{\\"a\\": 1, \\"a\\": 2}"', '{"a": 1, "a": 2}'):
        _, calls = get_tool_parser("qwen").parse('<tool_call>{"name": "f", "arguments": %s}</tool_call>' % args)
        assert calls[0]["function"]["arguments"] == '{"a": 2}'
    _, calls = get_tool_parser("qwen").parse('<tool_call>{"name": "f", "arguments": ""}</tool_call>')
    assert calls[0]["function"]["arguments"] == "{}"
    # values written as text: NaN, Infinity and numbers past the float range stay strings
    text = "<tool_call><function=f><parameter=a>NaN</parameter><parameter=b>1e999</parameter>" \
           "<parameter=c>-Infinity</parameter><parameter=d>12</parameter></function></tool_call>"
    assert _calls(get_tool_parser("qwen").parse(text)[1]) == [("f", {"a": "NaN", "b": "1e999", "c": "-Infinity", "d": 12})]
    text = '<|tool_call>call:f{a:1e999,b:NaN,c:2}<tool_call|>'
    assert _calls(get_tool_parser("gemma").parse(text)[1]) == [("f", {"a": "1e999", "b": "NaN", "c": 2})]
    text = ('<｜DSML｜tool_calls><｜DSML｜invoke name=" f "><｜DSML｜parameter name="n" string="false">NaN'
            "</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>")
    assert _calls(get_tool_parser("deepseek-v4").parse(text)[1]) == [("f", {"n": "NaN"})]   # name stripped
    # huge ints Python can write are kept exactly
    big = "9" * 400
    _, calls = get_tool_parser("llama3").parse('{"name": "f", "parameters": {"a": %s}}' % big)
    assert calls[0]["function"]["arguments"] == '{"a": %s}' % big


def test_call_ids_are_unique_even_when_the_model_repeats_one():
    section = ("<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}"
               "<|tool_call_end|><|tool_calls_section_end|>")
    _, calls = get_tool_parser("kimi-k2").parse(section + section)
    assert calls[0]["id"] == "functions.f:0" and calls[1]["id"] != "functions.f:0" and len(calls) == 2
    text = '[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abcDEF123"}, {"name": "g", "arguments": {}, "id": "abcDEF123"}]'
    _, calls = get_tool_parser("mistral").parse(text)
    assert calls[0]["id"] == "abcDEF123" and calls[1]["id"] != "abcDEF123"
    assert len(calls[1]["id"]) == 9 and calls[1]["id"].isalnum()   # still an id Mistral templates take


def test_glm4_stream_of_a_call_with_blanks_matches_the_whole_reply():
    """GLM-4 calls only at the start of the reply: a stream used to give up waiting at a blank after
    the name (``NAME \n{..}`` streamed was content, whole it was a call), and held a blank start forever."""
    parser = get_tool_parser("glm4")
    for text in ('get_weather \n{"city": "Paris"}', ' \n get_weather\t\n  {"city": "Paris"}'):
        assert _calls(parser.parse(text)[1]) == [WEATHER]
        for pieces in [list(text)] + [[text[:i], text[i:]] for i in range(len(text) + 1)]:
            content, calls = _streamed(parser, text, pieces=pieces)
            assert content.strip() == "" and _calls(calls) == [WEATHER], pieces
    # a blank start is content as it comes, not held until the end of the reply
    stream = ToolCallStream(parser, TOOLS)
    assert stream.feed("\n\n") == "\n\n" and stream.feed("get_weather") == ""
    assert stream.feed(" is sunny") == "get_weather is sunny"


def test_channel_tags_come_out_of_each_piece_of_content():
    """Kimi-K3's channel tags are removed from each piece of content: text on both sides of a call
    that joins into a tag stays as written, as the stream sends it (it sends the first piece before
    it sees the call; the whole reply used to drop the joined tag)."""
    parser = get_tool_parser("kimi-k3")
    text = "<|close|>resp" + _kimi3([WEATHER]).replace("<|close|>message<|sep|>", "") + "onse<|sep|>"
    content, calls = parser.parse(text, TOOLS)
    assert _calls(calls) == [WEATHER] and content == "<|close|>response<|sep|>"
    streamed, streamed_calls = _streamed(parser, text)
    assert streamed == content and _pairs(streamed_calls) == _pairs(calls)


def test_no_tools_means_no_parsing_for_every_format(scripted):
    """A request without tools reads no calls: the reply is the model's text as it is, whole and
    streamed (the special-token markers of a format are skipped when decoding such a request, see
    test_launched_model_uses_its_registrations_tool_parser)."""
    _, install = scripted
    for name, case in CASES.items():
        for kind in ("one", "before"):
            handle = install(case[kind], tool_parser=get_tool_parser(name))
            choice = handle.chat("weather?")["choices"][0]
            assert choice["message"]["content"] == case[kind] and "tool_calls" not in choice["message"]
            assert choice["finish_reason"] == "stop"
            chunks = list(handle.chat("weather?", generate_config={"stream": True}))
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == case[kind]
            assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)


# units an adversarial output repeats: openings without a close, nesting, quotes and backslashes,
# every format's inner tags (an opening whose close never comes made regexes and finds look for it
# again from each later opening)
HOSTILE_UNITS = ["{", "[", '"', "\\", " ", '<|"|>', "<parameter=", "<parameter=a>", "<function=", '{"name"',
                 '{"name":0,"x":[', '{"a":', "[TOOL_CALLS]", '<invoke name="', '<invoke name="f">',
                 '<parameter name="a">', '<param name="a">', "<![CDATA[]]>", "<arg_key>a</arg_key><arg_value>",
                 "<|open|>call ", '<|open|>argument key="a"<|sep|>', "<|tool_call_begin|>", CALL, SEP,
                 '<｜DSML｜invoke name="f">', '<｜DSML｜parameter name="a">', "<|assistant|>f\n{", "f\n{}", "```",
                 "a\n"]
# a valid start of a block's body, for the formats that check one before reading on
HEADS = {"glm5": "f", "gemma": "call:f{", "minicpm5": '"f">', "qwen": "<function=f>", "hermes": "<function=f>",
         "mistral": "f[ARGS]"}


def _hostile_texts(parser, size: int) -> list[str]:
    texts = [unit * (size // len(unit)) for unit in HOSTILE_UNITS]
    for block in parser.blocks:
        close = block.close or ""
        pair = block.open + "x" + close
        texts += [block.open * (size // len(block.open)), pair * (size // len(pair))]
        texts += [block.open + head + unit * (size // len(unit)) + close
                  for head in {"", HEADS.get(parser.name, "")} for unit in HOSTILE_UNITS]
    return texts


def _seconds(fn, text, repeat: int = 1) -> float:
    """The best of ``repeat`` runs, without the garbage collector (its full passes cost what the rest
    of the test session holds, not what the parser does)."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            fn(text)
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


def _stream_all(parser):
    def run(text):
        stream = ToolCallStream(parser, TOOLS)
        for ch in text:
            stream.feed(ch)
        stream.flush()
        stream.finish()
    return run


@pytest.mark.parametrize("name", sorted(CASES))
def test_parsers_take_linear_time_on_adversarial_output(name):
    """4x the input may take ~4x the time; quadratic would be 16x, so 10x (plus 50 ms of timer noise on
    a shared machine) fails. A complexity check, not a speed target: measured here, not
    as absolute times: the quadratic paths found took 1-40 s on 200k characters (findall of
    ``open(.*?)close`` regexes, finds of absent markers from every block, a copy of the rest of the
    text per block, json errors counting lines from the start of the text, str += per streamed token)."""
    parser = get_tool_parser(name)
    logging.disable(logging.WARNING)
    try:
        checks = [(parser.parse, small, big) for small, big in zip(_hostile_texts(parser, 20_000),
                                                                    _hostile_texts(parser, 80_000))]
        # streamed one character at a time: the held text grows; a GLM-4 reply starts blank or with a name
        opening = parser.blocks[0].open
        checks.append((_stream_all(parser), opening + "x" * 20_000, opening + "x" * 80_000))
        if name == "glm4":   # it used to wait, re-reading the start of the reply at every piece
            checks += [(_stream_all(parser), head + fill * 20_000, head + fill * 80_000)
                       for head, fill in (("", " "), ("f", " "), ("f\n", " "), ("", "a"))]
        for fn, small, big in checks:
            t1, t4 = _seconds(fn, small), _seconds(fn, big)
            if t4 > 10 * t1 + 0.05:   # measure again before calling it quadratic: the machine is shared
                t1, t4 = _seconds(fn, small, 3), _seconds(fn, big, 3)
            assert t4 <= 10 * t1 + 0.05, (name, small[:60], t1, t4)
    finally:
        logging.disable(logging.NOTSET)
