"""Both LLM engines on the tiny real models: launch, chat, generate, stream, stop strings, seeds,
quantization, reasoning and the template each launch uses."""
from __future__ import annotations

import re
import threading

import pytest

from xinference_nb import Client
from xinference_nb.errors import InferenceError, LaunchError
from xinference_nb.client.handles import handle_of
from xinference_nb.manager import ModelManager

pytest.importorskip("transformers")

GREEDY = {"temperature": 0, "max_tokens": 24}
MESSAGES = [{"role": "user", "content": "Hello, how are you?"}]


@pytest.fixture
def manager():
    m = ModelManager()
    yield m
    m.terminate_all()


def _register(client, name, specs, **extra):
    doc = {"version": 2, "model_name": name, "model_family": f"{name}-family", "context_length": 1024,
           "model_lang": ["en"], "model_ability": ["generate", "chat"], "model_specs": specs}
    doc.update(extra)
    client.register_model("LLM", doc)


def _template(path):
    return (path / "chat_template.jinja").read_text()


def _launch(manager, engine, tiny_llama_dir, tiny_gguf_file, **kw):
    """The built-in qwen2.5-instruct family from the tiny model's own files (no registration)."""
    path = tiny_llama_dir if engine == "transformers" else tiny_gguf_file
    return manager.launch_model("qwen2.5-instruct", model_engine=engine, model_path=str(path),
                                show_progress=False, **kw)


def _ascii_stop(text):
    """A short run of letters from the middle of ``text`` (a stop string the model does emit)."""
    for m in re.finditer(r"[A-Za-z]{3,}", text):
        if m.start() >= 2:
            return m.group(0)[:3], m.start()
    return None, None


ENGINES = ["transformers", "llama.cpp"]


@pytest.fixture(params=ENGINES)
def engine(request):
    if request.param == "llama.cpp":
        pytest.importorskip("llama_cpp")
    return request.param


def test_chat_generate_and_shapes(manager, engine, tiny_llama_dir, tiny_gguf_file):
    uid = _launch(manager, engine, tiny_llama_dir, tiny_gguf_file)
    handle = handle_of(manager, uid)
    assert handle.model_uid == uid and handle.model_type == "LLM"
    res = handle.chat(MESSAGES, generate_config=GREEDY)
    assert res["object"] == "chat.completion" and res["id"].startswith("chatcmpl-") and res["model"] == uid
    assert isinstance(res["created"], int)
    choice = res["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = res["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # greedy is deterministic, and the same in the streaming path
    assert handle.chat(MESSAGES, generate_config=GREEDY)["choices"][0]["message"]["content"] == \
        choice["message"]["content"]
    chunks = list(handle.chat(MESSAGES, generate_config=dict(GREEDY, stream=True)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == choice["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["usage"] == usage
    # generate
    res = handle.generate("The cat sat on the", {"max_tokens": 6, "temperature": 0})
    assert res["object"] == "text_completion" and res["id"].startswith("cmpl-")
    assert res["choices"][0]["logprobs"] is None
    if res["choices"][0]["finish_reason"] == "length":
        assert res["usage"]["completion_tokens"] == 6
    chunks = list(handle.generate("The cat sat on the", {"max_tokens": 6, "temperature": 0, "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == res["choices"][0]["text"]
    assert chunks[-1]["usage"] == res["usage"]
    with pytest.raises(InferenceError, match="valid keys"):
        handle.generate("x", {"max_new_tokens": 3})


def test_engines_agree(manager, tiny_llama_dir, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    a = handle_of(manager, _launch(manager, "transformers", tiny_llama_dir, tiny_gguf_file))
    b = handle_of(manager, _launch(manager, "llama.cpp", tiny_llama_dir, tiny_gguf_file))
    ra, rb = a.chat(MESSAGES, generate_config=GREEDY), b.chat(MESSAGES, generate_config=GREEDY)
    assert ra["usage"]["prompt_tokens"] == rb["usage"]["prompt_tokens"]
    # same weights, same template, greedy: the first tokens agree (f32 rounding may diverge later)
    assert ra["choices"][0]["message"]["content"][:5] == rb["choices"][0]["message"]["content"][:5]


def test_stop_strings_cut_the_text(manager, engine, tiny_llama_dir, tiny_gguf_file):
    handle = handle_of(manager, _launch(manager, engine, tiny_llama_dir, tiny_gguf_file))
    full = handle.chat(MESSAGES, generate_config=dict(GREEDY, max_tokens=40))["choices"][0]["message"]["content"]
    stop, _ = _ascii_stop(full)
    if stop is None:
        pytest.skip(f"the random model emitted no letters to stop on: {full!r}")
    expected = full[:full.index(stop)]
    res = handle.chat(MESSAGES, generate_config=dict(GREEDY, max_tokens=40, stop=[stop]))
    assert res["choices"][0]["message"]["content"] == expected
    assert res["choices"][0]["finish_reason"] == "stop"
    chunks = list(handle.chat(MESSAGES, generate_config=dict(GREEDY, max_tokens=40, stop=stop, stream=True)))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == expected
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = handle.generate("Once upon", {"max_tokens": 30, "temperature": 0})["choices"][0]["text"]
    stop, _ = _ascii_stop(text)
    if stop:
        cut = handle.generate("Once upon", {"max_tokens": 30, "temperature": 0, "stop": stop})
        assert cut["choices"][0]["text"] == text[:text.index(stop)]


def test_sampling_seed_and_length(manager, engine, tiny_llama_dir, tiny_gguf_file):
    handle = handle_of(manager, _launch(manager, engine, tiny_llama_dir, tiny_gguf_file))
    cfg = {"temperature": 1.5, "top_p": 0.9, "top_k": 50, "seed": 123, "max_tokens": 12}
    a = handle.generate("Numbers:", cfg)["choices"][0]["text"]
    b = handle.generate("Numbers:", cfg)["choices"][0]["text"]
    assert a == b
    res = handle.generate("Numbers:", {"max_tokens": 3, "temperature": 0})
    if res["choices"][0]["finish_reason"] == "length":
        assert res["usage"]["completion_tokens"] == 3


def test_stream_is_incremental(manager, tiny_llama_dir, tiny_gguf_file):
    handle = handle_of(manager, _launch(manager, "transformers", tiny_llama_dir, tiny_gguf_file))
    stream = handle.generate("Once upon a time", {"max_tokens": 200, "temperature": 0, "stream": True})
    first = next(stream)
    assert first["choices"][0]["text"]
    # the first chunk came while generation was still running in its thread
    generating = [t for t in threading.enumerate() if t.name.startswith("xinf-generate-") and t.is_alive()]
    rest = list(stream)
    if rest[-1]["usage"]["completion_tokens"] > 20:
        assert generating
    assert len(rest) > 1
    # closing early stops the generation thread
    stream = handle.chat(MESSAGES, generate_config={"max_tokens": 500, "temperature": 0, "stream": True})
    next(stream), next(stream)
    stream.close()
    for t in threading.enumerate():
        if t.name.startswith("xinf-generate-"):
            t.join(timeout=10)
            assert not t.is_alive()


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["4-bit", "8-bit"])
def test_bitsandbytes_quantization(manager, tiny_llama_dir, tiny_gguf_file, quantization):
    pytest.importorskip("bitsandbytes")
    full = _launch(manager, "transformers", tiny_llama_dir, tiny_gguf_file)
    uid = _launch(manager, "transformers", tiny_llama_dir, tiny_gguf_file, quantization=quantization)
    desc = manager.describe_model(uid)
    assert desc["quantization"] == quantization and desc["model_format"] == "pytorch"
    assert desc["memory_bytes"] < manager.describe_model(full)["memory_bytes"]
    handle = handle_of(manager, uid)
    res = handle.chat(MESSAGES, generate_config={"max_tokens": 8, "temperature": 0})
    assert res["usage"]["completion_tokens"] > 0
    chunks = list(handle.chat(MESSAGES, generate_config={"max_tokens": 8, "temperature": 0, "stream": True}))
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_registered_model_both_formats(nb_home, tiny_llama_dir, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    client = Client()
    _register(client, "my-llm", [
        {"model_format": "pytorch", "model_size_in_billions": "0_01", "quantization": "none",
         "model_uri": str(tiny_llama_dir)},
        {"model_format": "ggufv2", "model_size_in_billions": "0_01", "quantization": "f32",
         "model_uri": f"file://{tiny_gguf_file.parent}", "model_file_name_template": "tiny-llama-{quantization}.gguf"},
    ], chat_template=_template(tiny_llama_dir), stop=["<|im_end|>"])
    try:
        uid = client.launch_model(model_name="my-llm", model_engine="transformers", show_progress=False)
        assert client.describe_model(uid)["model_format"] == "pytorch"
        gguf_uid = client.launch_model(model_name="my-llm", model_engine="llama.cpp", model_uid="my-gguf",
                                       show_progress=False)
        desc = client.describe_model(gguf_uid)
        assert gguf_uid == "my-gguf" and desc["model_format"] == "ggufv2" and desc["quantization"] == "f32"
        assert desc["model_path"] == str(tiny_gguf_file)       # picked by model_file_name_template
        for u in (uid, gguf_uid):
            assert client.get_model(u).chat(MESSAGES, generate_config={"max_tokens": 4})["usage"]["completion_tokens"]
        # no engine named: the first installed engine for the first format
        auto = client.launch_model(model_name="my-llm", show_progress=False)
        assert client.describe_model(auto)["model_engine"] == "transformers"
        assert set(client.list_models()) == {uid, gguf_uid, auto}
    finally:
        for u in list(client.list_models()):
            client.terminate_model(u)
    assert client.list_models() == {}


def test_template_precedence_end_to_end(manager, nb_home, tiny_llama_dir, tmp_path):
    client = Client()
    marker = "{% for m in messages %}REGISTERED {{ m.content }}\n{% endfor %}"
    _register(client, "registered-tpl", [{"model_format": "pytorch", "model_size_in_billions": "0_01",
                                          "quantization": "none", "model_uri": str(tiny_llama_dir)}],
              chat_template=marker)
    uid = manager.launch_model("registered-tpl", model_engine="transformers", show_progress=False)
    fmt = manager.engine_model(uid).chat_format
    assert fmt.template == marker and fmt.template_source == "registration"
    # a built-in family launched from files that carry their own template: the model's own wins
    own = manager.engine_model(_launch(manager, "transformers", tiny_llama_dir, None)).chat_format
    assert own.template_source == "model" and own.template == _template(tiny_llama_dir)
    # files without a template: the built-in family's
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_dir, bare)
    (bare / "chat_template.jinja").unlink()
    fmt = manager.engine_model(manager.launch_model("qwen2.5-instruct", model_engine="transformers", model_path=str(bare),
                                             show_progress=False)).chat_format
    assert fmt.template_source == "built-in family"
    res = handle_of(manager, manager.list_models().popitem()[0]).chat(MESSAGES, generate_config={"max_tokens": 2})
    assert res["usage"]["prompt_tokens"] > 0


def test_builtin_family_fills_in_at_launch(manager, nb_home, tiny_llama_dir, tmp_path):
    """A stored document whose model_family is a built-in model (written by hand, or before registering
    refused that) with neither chat template nor tool parser, over files without a template: the launch
    takes both from that family's built-in document, which the manager looks up and passes down
    (LoadRequest.family_spec: chat never reads the catalog)."""
    import json
    import shutil

    from xinference_nb.registry import builtin_family
    from xinference_nb.chat.tool_parsers import get_tool_parser

    bare = tmp_path / "bare"
    shutil.copytree(tiny_llama_dir, bare)
    (bare / "chat_template.jinja").unlink()
    doc = {"version": 2, "model_name": "stored-family", "model_family": "llama-3.1-instruct", "context_length": 1024,
           "model_lang": ["en"], "model_ability": ["generate", "tools"],
           "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01", "quantization": "none",
                            "model_uri": str(bare)}]}
    (nb_home / "model" / "llm").mkdir(parents=True)
    (nb_home / "model" / "llm" / "stored-family.json").write_text(json.dumps(doc))
    uid = manager.launch_model("stored-family", model_engine="transformers", show_progress=False)
    fmt = manager.engine_model(uid).chat_format
    assert fmt.template_source == "built-in family"
    assert fmt.template == builtin_family("llama-3.1-instruct").chat_template
    assert fmt.tool_parser is get_tool_parser("llama3")


def test_gguf_template_from_metadata(manager, tiny_llama_dir, tiny_gguf_file):
    pytest.importorskip("llama_cpp")
    fmt = manager.engine_model(_launch(manager, "llama.cpp", tiny_llama_dir, tiny_gguf_file)).chat_format
    assert fmt.template_source == "model" and fmt.template == _template(tiny_llama_dir)


def test_reasoning_end_to_end(manager, nb_home, engine, tiny_reasoning_llama_dir, tiny_reasoning_gguf_file):
    client = Client()
    path = tiny_reasoning_llama_dir if engine == "transformers" else tiny_reasoning_gguf_file
    fmt = "pytorch" if engine == "transformers" else "ggufv2"
    _register(client, "tiny-thinker", [{"model_format": fmt, "model_size_in_billions": "0_01",
                                        "quantization": "none", "model_uri": str(path)}],
              model_ability=["chat", "reasoning"], chat_template=_template(tiny_reasoning_llama_dir),
              reasoning_start_tag="<think>", reasoning_end_tag="</think>", stop=["<|im_end|>"])
    handle = handle_of(manager, manager.launch_model("tiny-thinker", model_engine=engine, show_progress=False))
    res = handle.chat(MESSAGES, generate_config={"max_tokens": 12, "temperature": 0})
    message = res["choices"][0]["message"]
    assert "reasoning_content" in message
    # the template opened <think>: whatever the model wrote before a </think> is reasoning
    raw = handle.generate(manager.engine_model(handle.model_uid).chat_format.render(MESSAGES),
                          {"max_tokens": 12, "temperature": 0})["choices"][0]["text"]
    if "</think>" in raw:
        assert message["reasoning_content"] == raw.split("</think>")[0].strip()
    else:
        assert message["reasoning_content"] == raw.strip() and message["content"] == ""
    chunks = list(handle.chat(MESSAGES, generate_config={"max_tokens": 12, "temperature": 0, "stream": True}))
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert reasoning.strip() == (message["reasoning_content"] or "") and content.strip() == message["content"].strip()


def test_quantization_config_on_a_prequantized_format_is_refused_not_dropped():
    """gptq / awq / fp8 checkpoints carry their own quantization_config: one given at launch would be
    dropped, so it is a LaunchError naming the option; without it the format loads as it is."""
    from xinference_nb.engines.transformers_llm import _bnb_config

    for fmt in ("gptq", "awq", "fp8"):
        with pytest.raises(LaunchError, match="quantization_config applies to pytorch weights only"):
            _bnb_config("none", {"quantization_config": {"load_in_4bit": True}}, fmt)
        assert _bnb_config("Int4", {}, fmt) is None
