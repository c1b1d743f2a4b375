"""Structured outputs and OpenAI's n / tool_choice at the handle, over REST and through the clients
users already have (openai's ``chat.completions.parse``, RemoteClient), on the tiny random-weight
llama: whatever the weights, a constrained reply validates."""
from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from public_api import launch_by_path, shared_manager
from xinference_nb.errors import InferenceError

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")


class Review(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    stars: int = Field(ge=1, le=5)
    summary: str = Field(max_length=12)


LABEL_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["spam", "ham"]},
                                                 "score": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["label", "score"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["a", "b"], "additionalProperties": False}}},
]
SAMPLED = {"temperature": 1.0, "max_tokens": 80}


@pytest.fixture(scope="module")
def manager():
    yield from shared_manager("so-")


@pytest.fixture(scope="module")
def llm(manager, tiny_llama_dir):
    from xinference_nb.client.handles import handle_of

    return handle_of(manager, launch_by_path(manager, tiny_llama_dir, model_uid="so-batched"))


def _message(result, i=0):
    return result["choices"][i]["message"]


def test_pydantic_response_format_gives_a_validated_instance_for_every_seed(llm):
    for seed in range(12):
        res = llm.chat("Review this film", generate_config={**SAMPLED, "seed": seed, "response_format": Review})
        message, choice = _message(res), res["choices"][0]
        assert choice["finish_reason"] == "stop", message
        assert isinstance(message["parsed"], Review), message
        assert Review.model_validate_json(message["content"]) == message["parsed"]


def test_json_schema_response_format_and_guided_fields(llm):
    rf = {"type": "json_schema", "json_schema": {"name": "label", "schema": LABEL_SCHEMA, "strict": True}}
    for cfg in ({"response_format": rf}, {"guided_json": LABEL_SCHEMA}, {"guided_json": json.dumps(LABEL_SCHEMA)}):
        message = _message(llm.chat("Is this spam?", generate_config={**SAMPLED, "seed": 3, **cfg}))
        jsonschema.validate(message["parsed"], LABEL_SCHEMA)
        assert json.loads(message["content"]) == message["parsed"]
    for cfg in ({"response_format": {"type": "json_object"}}, {"guided_json_object": True}):
        message = _message(llm.chat("Any JSON", generate_config={**SAMPLED, "seed": 1, "max_tokens": 200, **cfg}))
        assert message["parse_error"] if message["parsed"] is None else isinstance(message["parsed"], dict)
        assert message["content"].startswith("{")
    choice = _message(llm.chat("Pick", generate_config={**SAMPLED, "guided_choice": ["red", "green", "blue"]}))
    assert choice["content"] in ("red", "green", "blue") and choice["parsed"] == choice["content"]
    code = _message(llm.chat("A code", generate_config={**SAMPLED, "guided_regex": r"[A-Z]{2}-[0-9]{3}"}))
    assert __import__("re").fullmatch(r"[A-Z]{2}-[0-9]{3}", code["content"]), code
    for grammar in ('start: "yes" | "no" ("!")?', 'root ::= "yes" | "no" "!"?'):   # Lark, GBNF
        said = _message(llm.chat("Say", generate_config={**SAMPLED, "guided_grammar": grammar}))["content"]
        assert said in ("yes", "no", "no!"), said
    completion = llm.generate("Code:", {**SAMPLED, "guided_regex": r"[a-c]{4}"})["choices"][0]
    assert __import__("re").fullmatch(r"[a-c]{4}", completion["text"]) and completion["finish_reason"] == "stop"


def test_max_tokens_inside_the_structure_is_length_with_the_reason(llm):
    res = llm.chat("Review", generate_config={**SAMPLED, "max_tokens": 3, "response_format": Review})
    assert res["choices"][0]["finish_reason"] == "length"
    assert _message(res)["parsed"] is None and "max_tokens" in _message(res)["parse_error"]


@pytest.mark.parametrize("cfg, words", [
    ({"guided_json": {"type": "string", "pattern": "(?=a)b"}}, "guided_json cannot be enforced"),
    ({"guided_regex": "a(b"}, "guided_regex cannot be enforced"),
    ({"guided_grammar": "start: undefined_rule"}, "guided_grammar cannot be enforced"),
    ({"guided_json": {"type": "string", "format": "no-such-format"}}, "no-such-format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "needs 'schema'"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "both constrain the reply"),
    # an unsupported keyword is named (never silently unenforced); no $ref is fetched, file or URL
    ({"guided_json": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}}, r"Unimplemented keys: \["),
    ({"guided_json": {"$ref": "file:///etc/passwd"}}, "does not fetch"),
    ({"guided_json": {"$ref": "http://127.0.0.1:9/schema.json"}}, "does not fetch"),
    ({"guided_regex": "a" * 200_001}, "at most 200,000"),
])
def test_a_constraint_that_cannot_be_enforced_is_refused_before_any_token(llm, manager, cfg, words):
    before = getattr(manager.engine_model(llm.model_uid).scheduler, "steps", 0)
    with pytest.raises(InferenceError, match=words):
        llm.chat("x", generate_config={**SAMPLED, **cfg})
    assert getattr(manager.engine_model(llm.model_uid).scheduler, "steps", 0) == before
    assert _message(llm.chat("x", generate_config={"max_tokens": 2}))["content"] is not None   # still serves


def test_n_choices_are_rows_of_one_request(llm):
    res = llm.chat("Tell me", generate_config={"n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5})
    assert [c["index"] for c in res["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in res["choices"]]
    assert len(set(texts)) > 1                                   # seed, seed + 1, seed + 2
    single = [_message(llm.chat("Tell me", generate_config={"max_tokens": 6, "temperature": 1.0, "seed": 5 + i}))
              ["content"] for i in range(3)]
    assert texts == single
    assert res["usage"]["completion_tokens"] == sum(
        llm.chat("Tell me", generate_config={"max_tokens": 6, "temperature": 1.0, "seed": 5 + i})["usage"]
        ["completion_tokens"] for i in range(3))
    chunks = list(llm.chat("Tell me", generate_config={"n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5,
                                                        "stream": True}))
    streamed = ["".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                        if c["choices"] and c["choices"][0]["index"] == i) for i in range(3)]
    assert streamed == texts
    assert chunks[-1]["usage"]["completion_tokens"] == res["usage"]["completion_tokens"]
    gen = llm.generate("Once", {"n": 2, "max_tokens": 4, "temperature": 1.0, "seed": 9})
    assert [c["index"] for c in gen["choices"]] == [0, 1]


def test_n_with_a_schema_gives_every_choice_parsed(llm):
    res = llm.chat("Review", generate_config={**SAMPLED, "n": 4, "seed": 11, "response_format": Review})
    assert all(isinstance(c["message"]["parsed"], Review) for c in res["choices"])


def test_tool_choice_required_and_named_make_a_valid_call(llm):
    for seed in range(6):
        res = llm.chat("Weather in Paris?", tools=TOOLS,
                       generate_config={**SAMPLED, "seed": seed, "tool_choice": "required"})
        choice = res["choices"][0]
        assert choice["finish_reason"] == "tool_calls", choice
        for call in choice["message"]["tool_calls"]:
            schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call["function"]["name"])
            jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    named = {"type": "function", "function": {"name": "add"}}
    for seed in range(4):
        res = llm.chat("Add", tools=TOOLS, generate_config={**SAMPLED, "seed": seed, "tool_choice": named,
                                                          "parallel_tool_calls": False})
        calls = res["choices"][0]["message"]["tool_calls"]
        assert len(calls) == 1 and calls[0]["function"]["name"] == "add"
        jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), TOOLS[1]["function"]["parameters"])


def test_tool_choice_none_sends_no_tools_and_bad_choices_are_refused(llm):
    with_tools = llm.chat("Hi", tools=TOOLS, generate_config={"max_tokens": 1})["usage"]["prompt_tokens"]
    without = llm.chat("Hi", tools=TOOLS, generate_config={"max_tokens": 1, "tool_choice": "none"})
    assert without["usage"]["prompt_tokens"] < with_tools
    with pytest.raises(InferenceError, match="not among the request's tools"):
        llm.chat("Hi", tools=TOOLS, generate_config={"tool_choice": {"type": "function", "function": {"name": "x"}}})
    with pytest.raises(InferenceError, match="needs tools"):
        llm.chat("Hi", generate_config={"tool_choice": "required"})
    with pytest.raises(InferenceError, match="both constrain"):
        llm.chat("Hi", tools=TOOLS, generate_config={"tool_choice": "required", "guided_regex": "a"})
    with pytest.raises(InferenceError, match="applies to chat"):
        llm.generate("Hi", {"tool_choice": "required"})


def test_streaming_with_a_constraint_equals_the_whole_reply(llm):
    cfg = {**SAMPLED, "seed": 4, "response_format": Review}
    whole = _message(llm.chat("Review", generate_config=cfg))["content"]
    chunks = list(llm.chat("Review", generate_config={**cfg, "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == whole
    Review.model_validate_json(whole)


def test_reasoning_stays_free_and_the_constraint_starts_after_the_end_tag(manager, nb_home, tiny_reasoning_llama_dir):
    from xinference_nb.client import Client
    from xinference_nb.client.handles import handle_of

    Client().register_model("LLM", {
        "version": 2, "model_name": "so-thinker", "model_family": "so-thinker-family", "context_length": 1024,
        "model_lang": ["en"], "model_ability": ["generate", "chat", "reasoning"],
        "chat_template": (tiny_reasoning_llama_dir / "chat_template.jinja").read_text(),
        "reasoning_start_tag": "<think>", "reasoning_end_tag": "</think>", "stop": ["<|im_end|>"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01", "quantization": "none",
                         "model_uri": str(tiny_reasoning_llama_dir)}]})
    uid = manager.launch_model("so-thinker", model_engine="transformers", show_progress=False, model_uid="so-thinker")
    handle = handle_of(manager, uid)
    model = manager.engine_model(uid)
    fmt = model.chat_format
    assert fmt.has_reasoning and fmt.reasoning_opened_by(fmt.render([{"role": "user", "content": "x"}]))
    end = model.tokenizer.convert_tokens_to_ids(fmt.reasoning_end_tag)
    # the model thinks two tokens, then closes its thinking (bias), then the reply must follow the schema
    res = handle.chat("Is it spam?", generate_config={"max_tokens": 80, "temperature": 1.0, "seed": 2,
                                                      "guided_json": LABEL_SCHEMA, "logit_bias": {str(end): 100}})
    message = _message(res)
    jsonschema.validate(json.loads(message["content"]), LABEL_SCHEMA)
    assert message["reasoning_content"] is not None
    free = _message(handle.chat("Is it spam?", generate_config={"max_tokens": 6, "temperature": 1.0, "seed": 2,
                                                                "guided_json": LABEL_SCHEMA}))
    assert free["parse_error"] and free["reasoning_content"]          # still thinking at max_tokens: free text
    manager.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# Over REST: openai's own parse(), RemoteClient, and the 400s
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(manager, llm):
    from xinference_nb.client import Client
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    running = start_in_thread(create_app(Client()), port=0)
    yield running
    running.stop()


def test_openai_client_parse_against_the_server(server, llm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    done = client.chat.completions.parse(model=llm.model_uid, messages=[{"role": "user", "content": "Review"}],
                                         response_format=Review, temperature=1.0, seed=7, max_tokens=80)
    assert isinstance(done.choices[0].message.parsed, Review)
    res = client.chat.completions.create(model=llm.model_uid, messages=[{"role": "user", "content": "Hi"}], n=2,
                                         max_tokens=3, temperature=1.0, seed=1, logprobs=True, top_logprobs=2)
    assert len(res.choices) == 2 and all(len(c.logprobs.content) == 3 for c in res.choices)
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for c in res.choices for e in c.logprobs.content)
    completion = client.completions.create(model=llm.model_uid, prompt="Once", max_tokens=3, logprobs=2)
    assert len(completion.choices[0].logprobs.tokens) == 3
    assert all(len(t) <= 2 for t in completion.choices[0].logprobs.top_logprobs)
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(?=a)"}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=llm.model_uid, messages=[{"role": "user", "content": "x"}],
                                       response_format=bad)
    assert "cannot be enforced" in err.value.response.json()["detail"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=llm.model_uid, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"guided_regex": "a(b"})
    assert "guided_regex" in err.value.response.json()["detail"]
    vllm_style = client.chat.completions.create(model=llm.model_uid, messages=[{"role": "user", "content": "x"}],
                                                extra_body={"guided_choice": ["yes", "no"]}, max_tokens=5)
    assert vllm_style.choices[0].message.content in ("yes", "no")


def test_remote_client_parses_into_the_pydantic_class(server, llm):
    from xinference_nb.client import Client

    handle = Client(server.url).get_model(llm.model_uid)
    res = handle.chat("Review", generate_config={**SAMPLED, "seed": 3, "response_format": Review})
    assert isinstance(_message(res)["parsed"], Review)
    res = handle.chat("Pick", tools=TOOLS, generate_config={**SAMPLED, "tool_choice": "required"})
    assert res["choices"][0]["finish_reason"] == "tool_calls"


def test_vllm_guided_options_are_applied_or_refused(llm, manager):
    compact = _message(llm.chat("x", generate_config={**SAMPLED, "seed": 1, "guided_json": LABEL_SCHEMA}))
    assert compact["content"] == json.dumps(compact["parsed"], separators=(",", ":"))   # no blanks by default
    space = manager.engine_model(llm.model_uid).tokenizer.convert_tokens_to_ids("Ġ")
    spaced = _message(llm.chat("x", generate_config={**SAMPLED, "seed": 1, "guided_json": LABEL_SCHEMA,
                                                   "guided_whitespace_pattern": "[ ]{0,2}",
                                                   "logit_bias": {str(space): 30}}))
    jsonschema.validate(json.loads(spaced["content"]), LABEL_SCHEMA)
    assert " " in spaced["content"].replace('"spam"', "").replace('"ham"', "")
    assert _message(llm.chat("x", generate_config={"max_tokens": 3, "guided_choice": ["a"],
                                                  "guided_decoding_backend": "guidance"}))["content"] == "a"
    with pytest.raises(InferenceError, match="guided_decoding_backend='xgrammar'"):
        llm.chat("x", generate_config={"guided_choice": ["a"], "guided_decoding_backend": "xgrammar"})
    with pytest.raises(InferenceError, match="applies to a JSON constraint"):
        llm.chat("x", generate_config={"guided_regex": "a", "guided_whitespace_pattern": " "})


def test_a_pydantic_tagged_union_is_enforced(llm):
    """pydantic writes a discriminated union as oneOf + discriminator; its branches cannot overlap, so it
    is enforced as anyOf (llguidance refuses a plain oneOf, whose branches might)."""
    from typing import Union

    class Cat(BaseModel):
        kind: Literal["cat"]
        lives: int = Field(ge=0, le=9)

    class Dog(BaseModel):
        kind: Literal["dog"]
        good: bool

    class Pet(BaseModel):
        pet: Union[Cat, Dog] = Field(discriminator="kind")

    kinds = set()
    for seed in range(8):
        message = _message(llm.chat("A pet", generate_config={**SAMPLED, "seed": seed, "response_format": Pet}))
        assert isinstance(message["parsed"], Pet), message
        kinds.add(message["parsed"].pet.kind)
    with pytest.raises(InferenceError, match="oneOf|coerce_one_of"):   # an untagged oneOf is refused, not loosened
        llm.chat("x", generate_config={"guided_json": {"oneOf": [{"type": "integer"}, {"type": "number"}]}})


def test_n_streamed_tool_calls_over_rest_stay_with_their_choice(server, llm):
    """Over REST a stream's tool calls travel in its final chunk (Xinference's shape); with n choices
    each choice's calls go in that choice's own final chunk."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    stream = client.chat.completions.create(model=llm.model_uid, messages=[{"role": "user", "content": "Add"}],
                                            tools=TOOLS, tool_choice="required", n=3, temperature=1.0, seed=2,
                                            max_tokens=80, stream=True)
    calls: dict[int, list] = {}
    finish: dict[int, str] = {}
    for chunk in stream:
        for c in chunk.choices:
            if c.delta.tool_calls:
                calls.setdefault(c.index, []).extend(c.delta.tool_calls)
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert finish == {0: "tool_calls", 1: "tool_calls", 2: "tool_calls"}
    for i in range(3):
        for call in calls[i]:
            schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.function.name)
            jsonschema.validate(json.loads(call.function.arguments), schema)
