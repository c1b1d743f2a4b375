"""The server's parts on their own: the OpenAI → generate_config translation and the SSE producer
(no app, no model), the one error-class table shared by the server and RemoteClient, the routes the
app factory assembles (the same (method, path) set as the single create_app had), and the factory's
shape (no function in server/ over 80 lines)."""
from __future__ import annotations

import ast
import asyncio
import importlib
import json
import pathlib
import subprocess
import sys
import threading

import pytest

pytest.importorskip("fastapi")

from fastapi.responses import StreamingResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import xinference_nb  # noqa: E402
from xinference_nb import errors  # noqa: E402
from xinference_nb.client import remote  # noqa: E402
from xinference_nb.errors import (FieldIssue, InferenceError, LaunchError, LaunchOptionError, SpecError,  # noqa: E402
                                  XinfError, error_class, wire_error)
from xinference_nb.server.app import create_app  # noqa: E402
from xinference_nb.server.bodies import ChatBody, CompletionBody, request_fields  # noqa: E402
from xinference_nb.server.http_errors import error_parts  # noqa: E402
from xinference_nb.server.openai import generate_config, is_default, single_prompt  # noqa: E402
from xinference_nb.server.sse import sse_response, stream_events  # noqa: E402

SERVER_DIR = pathlib.Path(xinference_nb.__file__).parent / "server"

# (method, path) of every route of create_app as it was one function (recorded from that app before
# it became routers): the factory must serve exactly these.
ROUTES_BEFORE = {
    ("DELETE", "/v1/model_registrations/{model_type}/{model_name}"), ("DELETE", "/v1/models/{model_uid}"),
    ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/openapi.json"), ("GET", "/redoc"),
    ("GET", "/status"), ("GET", "/v1/cluster/auth"), ("GET", "/v1/cluster/version"),
    ("GET", "/v1/engines/{model_name}"), ("GET", "/v1/engines/{model_type}/{model_name}"),
    ("GET", "/v1/model_registrations/{model_type}"), ("GET", "/v1/model_registrations/{model_type}/{model_name}"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model_uid}"), ("GET", "/v1/models/{model_uid}/progress"),
    ("HEAD", "/docs"), ("HEAD", "/docs/oauth2-redirect"), ("HEAD", "/openapi.json"), ("HEAD", "/redoc"),
    ("POST", "/v1/audio/speech"), ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("POST", "/v1/flexible/infers"),
    ("POST", "/v1/images/generations"), ("POST", "/v1/model_registrations/{model_type}"), ("POST", "/v1/models"),
    ("POST", "/v1/models/llm/auto-register"), ("POST", "/v1/models/{model_uid}/cancel"), ("POST", "/v1/rerank"),
}


class _NoModels:
    """A client with nothing launched (enough for the routing, docs and error tests)."""

    def __init__(self, name="none", raises=None):
        self.name, self.raises = name, raises

    def list_models(self):
        return {self.name: {"model_type": "LLM"}}

    def get_model_registration(self, model_type, model_name):
        raise self.raises


# route modules added after the split (item 6 of issue 12: the handle methods that had no route)
# routes added after the split, for the handle methods that had none (issue 12 item 6)
ROUTES_ADDED = {("POST", "/v1/convert_ids_to_tokens"), ("POST", "/v1/images/variations"),
                ("POST", "/v1/images/inpainting"), ("POST", "/v1/audio/translations"),
                # the model cache: Xinference's three routes, and ours to fetch without launching
                ("GET", "/v1/cache/models"), ("GET", "/v1/cache/models/files"), ("DELETE", "/v1/cache/models"),
                ("POST", "/v1/cache/models/download")}


def _routes(app) -> dict[tuple[str, str], str]:
    """(method, path) -> the module of its endpoint, for every route of ``app``."""
    routes = app.routes
    try:  # FastAPI >= 0.16x includes routers lazily: app.routes holds the included routers
        from fastapi.routing import iter_route_contexts

        routes = list(iter_route_contexts(routes))
    except ImportError:
        pass
    return {(m, r.path): getattr(r.endpoint, "__module__", "") for r in routes
            for m in (getattr(r, "methods", None) or ())}


# ------------------------------------------------------------------------------------------------
# the app factory
# ------------------------------------------------------------------------------------------------

def test_factory_serves_the_same_routes_as_before():
    routes = _routes(create_app(_NoModels()))
    assert ROUTES_BEFORE <= set(routes)
    added = {key for key in routes if key not in ROUTES_BEFORE}
    assert added == ROUTES_ADDED, added
    docs = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
    openapi = {(m.upper(), p) for p, ops in create_app(_NoModels()).openapi()["paths"].items() for m in ops}
    assert openapi == {(m, p) for m, p in routes if p not in docs}


def test_routes_read_their_app_state_through_dependencies():
    # two apps in one process, each with its own client and settings: nothing is module-global
    one, two = create_app(_NoModels("one")), create_app(_NoModels("two"), api_key="k2")
    with TestClient(one, base_url="http://127.0.0.1") as c1, TestClient(two, base_url="http://127.0.0.1") as c2:
        assert [m["id"] for m in c1.get("/v1/models").json()["data"]] == ["one"]
        assert c1.get("/v1/cluster/auth").json() == {"auth": False}
        assert c2.get("/v1/cluster/auth").json() == {"auth": True}
        assert c2.get("/v1/models").status_code == 401
        r = c2.get("/v1/models", headers={"Authorization": "Bearer k2"})
        assert [m["id"] for m in r.json()["data"]] == ["two"]


def _functions(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.end_lineno - node.lineno + 1, f"{path.relative_to(SERVER_DIR)}:{node.lineno} {node.name}"


def test_no_function_in_the_server_is_over_80_lines():
    sizes = sorted((n for p in SERVER_DIR.rglob("*.py") for n in _functions(p)), reverse=True)
    assert sizes and sizes[0][0] <= 80, sizes[:3]


# ------------------------------------------------------------------------------------------------
# OpenAI request -> generate_config (no app)
# ------------------------------------------------------------------------------------------------

def test_openai_defaults_are_applied_and_unset_sampling_left_out():
    from xinference_nb.chat import GenerateConfig

    applied = {"n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0.0, "tool_choice": "auto",
               "response_format": {"type": "text"}}
    fields = {"model": "m", "messages": [], "user": "u", **applied, "stream": False, "max_tokens": None,
              "temperature": None, "top_p": None, "stop": None, "top_k": None, "seed": None, "n": 1,
              "logit_bias": None, "top_logprobs": None, "min_p": None, "parallel_tool_calls": None}
    cfg, _ = generate_config(fields, ("model", "messages"))
    assert cfg == {**applied, "stream": False}
    config = GenerateConfig.check(cfg)
    params, _ = config.to_sampling_params()
    assert params.constraint is None and not params.logprobs and params.presence_penalty is None


def test_openai_translation_of_a_chat_body():
    body = ChatBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                                    "max_completion_tokens": 7, "temperature": 0.5, "stream_options":
                                    {"include_usage": True}, "chat_template_kwargs": {"enable_thinking": False},
                                    "repetition_penalty": 1.1})
    cfg, thinking = generate_config(request_fields(body), ("model", "messages", "tools"))
    assert cfg == {"stream": True, "max_tokens": 7, "temperature": 0.5, "stream_options": {"include_usage": True},
                   "repetition_penalty": 1.1}
    assert thinking is False
    # the string form of chat_template_kwargs, and enable_thinking at the top level
    assert generate_config({"chat_template_kwargs": '{"enable_thinking": true}'})[1] is True
    assert generate_config({"enable_thinking": False}) == ({}, False)


@pytest.mark.parametrize("fields, named", [
    ({"n": 17}, "'n'"), ({"n": True}, "'n'"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"tool_choice": "maybe"}, "tool_choice"), ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"logit_bias": {"x": 1}}, "logit_bias"), ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"chat_template_kwargs": {"foo": 1}}, "chat_template_kwargs"), ({"chat_template_kwargs": "{"}, "kwargs"),
    ({"enable_thinking": "yes"}, "enable_thinking"), ({"best_of": 2}, "best_of"),
])
def test_openai_values_we_cannot_honour_are_refused_by_name(fields, named):
    from xinference_nb.chat import GenerateConfig

    with pytest.raises(InferenceError, match=named) as err:
        GenerateConfig.check(generate_config(fields)[0])
    assert error_parts(err.value, "test")[:1] == (400,)


def test_is_default_compares_types_strictly_and_prompt_is_one_string():
    assert is_default(0, (0.0,)) and is_default(None, (None, 0)) and is_default({}, (None, {}))
    assert not is_default(True, (1,)) and not is_default(0, (False,)) and not is_default("1", (1,))
    body = CompletionBody.model_validate({"model": "m", "prompt": ["only one"]})
    assert single_prompt(body.prompt) == "only one" and single_prompt("a") == "a"
    with pytest.raises(InferenceError, match="one prompt per request"):
        single_prompt(["a", "b"])


# ------------------------------------------------------------------------------------------------
# the SSE producer (no app: an event loop and an iterator)
# ------------------------------------------------------------------------------------------------

class _Counters:
    streams_open = 0
    streams_cancelled = 0


def _collect(it, *, stop_after=None):
    """Run stream_events over ``it``; returns (events, counters, releases)."""
    counters, releases = _Counters(), []

    async def main():
        events = []
        agen = stream_events(it, release=lambda: releases.append(1), counters=counters, name="unit")
        assert counters.streams_open == 1
        async for event in agen:
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                await agen.aclose()  # the reader goes away
                break
        for _ in range(2000):  # let the producer thread finish and post its release
            if releases:
                break
            await asyncio.sleep(0.005)
        return events

    return asyncio.run(main()), counters, releases


def _data(event: str):
    assert event.startswith("data: ") and event.endswith("\n\n"), event
    return event[len("data: "):-2]


def test_sse_chunks_then_done():
    events, counters, releases = _collect(iter([{"i": 0}, {"i": 1}, {"text": "é"}]))
    assert [_data(e) for e in events] == ['{"i": 0}', '{"i": 1}', '{"text": "é"}', "[DONE]"]
    assert (counters.streams_open, counters.streams_cancelled, releases) == (0, 0, [1])


@pytest.mark.parametrize("exc, code, kind", [(InferenceError("bad option"), 400, "InferenceError"),
                                             (RuntimeError("a bug"), 500, "XinfError")])
def test_sse_error_is_the_last_event(exc, code, kind):
    def gen():
        yield {"i": 0}
        raise exc

    events, counters, releases = _collect(gen())
    assert json.loads(_data(events[0])) == {"i": 0}
    last = json.loads(_data(events[-1]))
    assert len(events) == 2 and last["error"]["code"] == code and last["error"]["type"] == kind
    assert str(exc) in last["error"]["message"]
    assert (counters.streams_open, counters.streams_cancelled, releases) == (0, 0, [1])


def test_sse_reader_gone_stops_generation_and_releases_once():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield {"tick": 1}
        finally:
            closed.set()

    events, counters, releases = _collect(endless(), stop_after=2)
    assert len(events) == 2
    assert closed.wait(10), "the model's iterator was not closed"
    assert (counters.streams_open, counters.streams_cancelled, releases) == (0, 1, [1])


def test_sse_chunk_that_is_not_json_ends_the_stream_with_an_error():
    loop_dict: dict = {}
    loop_dict["self"] = loop_dict  # circular: json.dumps raises
    events, counters, releases = _collect(iter([{"ok": 1}, loop_dict, {"never": 1}]))
    assert json.loads(_data(events[-1]))["error"]["type"] == "InferenceError" and len(events) == 2
    assert releases == [1] and counters.streams_open == 0


def test_sse_response_type_and_headers():
    async def main():
        resp = sse_response(iter([]), release=lambda: None, counters=_Counters(), name="unit")
        body = [chunk async for chunk in resp.body_iterator]
        return resp, body

    resp, body = asyncio.run(main())
    assert isinstance(resp, StreamingResponse) and resp.media_type == "text/event-stream"
    assert resp.headers["cache-control"] == "no-cache" and resp.headers["x-accel-buffering"] == "no"
    assert body == ["data: [DONE]\n\n"]


# ------------------------------------------------------------------------------------------------
# one error-class table for the server and RemoteClient
# ------------------------------------------------------------------------------------------------

def _all_xinf_errors() -> list[type]:
    for module in ("xinference_nb.client.remote", "xinference_nb.progress", "xinference_nb.server.security",
                   "xinference_nb.isolation.virtualenv"):
        importlib.import_module(module)
    seen, todo = [], [XinfError]
    while todo:
        cls = todo.pop()
        if cls not in seen and cls.__module__.startswith("xinference_nb"):
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def _instance(cls: type) -> BaseException:
    for args, kwargs in ((("boom: the message",), {}), (("boom: the message",), {"package": "pkg"}),
                         (("boom: the message", 400), {})):
        try:
            return cls(*args, **kwargs)
        except TypeError:
            continue
    raise AssertionError(f"cannot make a {cls}")


def test_every_error_class_round_trips_through_the_one_table():
    table = [cls for cls, _status in errors.WIRE_ERRORS]
    classes = _all_xinf_errors()
    assert set(table) <= set(classes) and LaunchOptionError in classes
    for cls in classes:
        exc = _instance(cls)
        name, status = wire_error(exc)
        assert wire_error(cls) == (name, status) and status == 400
        # the server answers with the table's name and status
        assert error_parts(exc, "test") == (status, str(exc), name)
        decoded = error_class(name)
        if cls in table:
            assert decoded is cls and name == cls.__name__
        elif decoded is None:
            assert name == errors.WIRE_FALLBACK and not any(issubclass(cls, t) for t in table)
        else:  # a subclass travels as its nearest class in the table, which catches it in and out of the kernel
            assert issubclass(cls, decoded)
        # RemoteClient raises the class the name stands for (RemoteError for the fallback)
        back = remote._make_error(name, str(exc), status)
        assert type(back) is (decoded or remote.RemoteError) and str(back) == str(exc)
    # the order is most specific first: both a SpecError and a LaunchError travels as SpecError
    assert wire_error(LaunchOptionError("x")) == ("SpecError", 400)
    assert error_class("XinfError") is None and error_class("PermissionError") is None


def test_remote_client_reads_the_same_table():
    assert remote.error_class is errors.error_class
    assert not hasattr(remote, "_KINDS")
    code = ("import sys, xinference_nb.errors; "
            "print(sorted(m for m in ('fastapi', 'httpx', 'starlette', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("exc", [SpecError([FieldIssue("model_specs[0].model_uri", "missing")]),
                                 LaunchOptionError([FieldIssue("bogus", "no engine takes it")]),
                                 LaunchError("cannot load"), errors.ModelNotFound("nope"),
                                 errors.EngineUnavailable("no backend.", package="pkg"),
                                 XinfError("plain"), ValueError("a library's complaint")])
def test_an_error_over_http_is_raised_again_as_its_class(exc):
    app = create_app(_NoModels(raises=exc))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        resp = c.get("/v1/model_registrations/LLM/x")
    assert resp.status_code == 400 and resp.json()["detail"]
    with pytest.raises(XinfError) as err:
        remote.raise_for_response(resp)
    if isinstance(exc, XinfError):
        expected = error_class(wire_error(exc)[0]) or remote.RemoteError
        assert type(err.value) is expected and str(err.value) == str(exc)
    else:
        assert type(err.value) is InferenceError and "ValueError" in str(err.value)
    if isinstance(exc, SpecError):
        assert err.value.fields == exc.fields
