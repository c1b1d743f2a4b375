"""Vision GGUFs on llama.cpp: the tiny GGUF (tests/tiny_models.py build_tiny_gguf) with a tiny real
projector (build_tiny_mmproj: a random LLaVA-1.5 style mmproj that llama.cpp's clip loader accepts).

The spec field (Xinference's ``multimodal_projectors``, checked against Xinference's own class), parse
finding the projector, the launch option ``multimodal_projector`` (Xinference's name) and
``chat_handler``, the family / projector-type table of handlers and its refusals, llama.cpp's own error
when a projector does not fit the model, image chats (the image reaches the model, its tokens are
counted) next to text chats, and the REST server's root checks on projector paths."""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
PIL_Image = pytest.importorskip("PIL.Image")

import tiny_models  # noqa: E402

from xinference_nb.client import Client  # noqa: E402
from xinference_nb.engines import LoadRequest, find_engine  # noqa: E402
from xinference_nb.errors import InferenceError, LaunchError, LaunchOptionError, ParseError, SpecError  # noqa: E402
from xinference_nb.parse import parse_model  # noqa: E402
from xinference_nb.spec import load_spec, to_document  # noqa: E402

GREEDY = {"temperature": 0, "max_tokens": 6}
MODEL = "tiny-llama-f32.gguf"
PROJECTOR = "mmproj-tiny-f32.gguf"


def png_url(color, size=(40, 30)) -> str:
    buf = io.BytesIO()
    PIL_Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def ask(url, text="What is it?"):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def vision_dir(tiny_gguf_file, tmp_path_factory):
    """A folder with the tiny GGUF, its projector, a second projector built for a 32-wide text model
    (llama.cpp refuses it for this one) and nothing else."""
    root = tmp_path_factory.mktemp("gguf_vision") / "tiny-vision"
    root.mkdir()
    shutil.copy(tiny_gguf_file, root / MODEL)
    tiny_models.build_tiny_mmproj(root / PROJECTOR)
    tiny_models.build_tiny_mmproj(root.parent / "mmproj-narrow-f32.gguf", text_embd=32)
    return root


def vision_doc(folder, name="tiny-vis", **entry):
    """The parsed document of the tiny GGUF, with the vision template (image parts → ``<image>``)."""
    doc = to_document(parse_model(str(folder / MODEL), model_name=name).spec)
    doc["chat_template"] = tiny_models.VISION_TEMPLATE
    doc["model_specs"][0].update(entry)
    return doc


def launch(doc, **options):
    client = Client()
    client.register_model("LLM", json.dumps(doc), persist=False, overwrite=True)
    uid = client.launch_model(model_name=doc["model_name"], model_engine="llama.cpp", n_gpu=None,
                              show_progress=False, **options)
    return client, uid


@pytest.fixture(scope="module")
def vision(vision_dir):
    client, uid = launch(vision_doc(vision_dir))
    yield client.get_model(uid)
    client.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# The document
# ------------------------------------------------------------------------------------------------
def _gguf_doc(**entry):
    return {"version": 2, "model_name": "v", "model_family": "my-vlm", "model_ability": ["chat", "vision"],
            "chat_template": "{{ messages }}", "model_specs": [{
                "model_format": "ggufv2", "model_size_in_billions": 1, "quantization": "F32",
                "model_uri": "/m/model.gguf", **entry}]}


def test_multimodal_projectors_round_trip_and_rules():
    doc = _gguf_doc(multimodal_projectors=["mmproj-F16.gguf", "sub/mmproj-F32.gguf"])
    doc["model_specs"][0]["model_id"] = None   # the keys our documents write, so it round-trips unchanged
    doc["model_specs"][0].update(model_hub="huggingface", model_revision=None, activated_size_in_billions=None)
    out = json.loads(load_spec("LLM", json.dumps(doc)).model_dump_json())
    assert out["model_specs"][0] == doc["model_specs"][0]
    assert out["model_specs"][0]["multimodal_projectors"] == ["mmproj-F16.gguf", "sub/mmproj-F32.gguf"]
    assert "multimodal_projectors" not in load_spec("LLM", _gguf_doc()).model_dump(mode="json")["model_specs"][0]
    # Xinference writes null on its ggufv2 documents: kept as written
    assert load_spec("LLM", _gguf_doc(multimodal_projectors=None)).model_dump(mode="json")["model_specs"][0][
        "multimodal_projectors"] is None
    for bad in (["../mmproj.gguf"], ["/abs/mmproj.gguf"], [""], "mmproj.gguf", [3]):
        with pytest.raises(SpecError) as err:
            load_spec("LLM", _gguf_doc(multimodal_projectors=bad))
        assert err.value.fields[0].startswith("model_specs[0].multimodal_projectors"), bad
    torch_doc = _gguf_doc(multimodal_projectors=["mmproj.gguf"])
    torch_doc["model_specs"][0].update(model_format="pytorch", quantization="none", model_uri="/m")
    text_only = _gguf_doc(multimodal_projectors=["mmproj.gguf"])
    text_only["model_ability"] = ["chat"]
    for bad, why in ((torch_doc, "ggufv2"), (text_only, "vision")):
        with pytest.raises(SpecError) as err:
            load_spec("LLM", bad)
        assert err.value.fields == ["model_specs[0].multimodal_projectors"] and why in str(err.value)
    assert load_spec("LLM", _gguf_doc(multimodal_projectors=["mmproj.gguf"])).rules() == []


def test_multimodal_projectors_is_xinferences_field():
    """Xinference 4.1's own LlamaCppLLMSpecV2 reads our ggufv2 entry, field and value alike."""
    import xinference_cluster as xc

    reason = xc.xinference_missing_reason()
    if reason:
        pytest.skip(reason)
    entry = load_spec("LLM", _gguf_doc(multimodal_projectors=["mmproj-F16.gguf"], model_file_name_template="m.gguf")
                      ).model_dump(mode="json")["model_specs"][0]
    code = ("import json, sys\nfrom xinference.model.llm.llm_family import LlamaCppLLMSpecV2\n"
            "print(json.dumps(LlamaCppLLMSpecV2.parse_obj(json.loads(sys.argv[1])).dict()))")
    out = subprocess.run([str(xc.xinference_python()), "-c", code, json.dumps(entry)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert theirs["multimodal_projectors"] == ["mmproj-F16.gguf"]
    assert {k: theirs[k] for k in entry} == entry


# ------------------------------------------------------------------------------------------------
# Parse
# ------------------------------------------------------------------------------------------------
def test_parse_finds_the_projector_beside_the_gguf(vision_dir, tiny_gguf_file, tmp_path):
    parsed = parse_model(str(vision_dir / MODEL))
    entry = to_document(parsed.spec)["model_specs"][0]
    assert "vision" in parsed.spec.model_ability and entry["multimodal_projectors"] == [PROJECTOR]
    assert PROJECTOR in parsed.sources["model_ability"]
    assert "mmproj" in parsed.sources["model_specs[0].multimodal_projectors"]
    assert parsed.spec.rules() == []
    # the folder: its one model, not the projector
    by_folder = parse_model(str(vision_dir))
    assert by_folder.spec.model_specs[0].model_uri.endswith(MODEL)
    assert by_folder.spec.model_specs[0].multimodal_projectors == [PROJECTOR]
    with pytest.raises(ParseError, match="multimodal projector"):
        parse_model(str(vision_dir / PROJECTOR))
    # without a projector, or with a model GGUF merely named like one: no vision
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tiny_gguf_file, alone / MODEL)
    shutil.copy(tiny_gguf_file, alone / "mmproj-fake.gguf")
    plain = parse_model(str(alone / MODEL))
    assert "vision" not in plain.spec.model_ability and plain.spec.model_specs[0].multimodal_projectors is None


# ------------------------------------------------------------------------------------------------
# Chat
# ------------------------------------------------------------------------------------------------
def _first_logprobs(result):
    return [e["logprob"] for e in result["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]


def test_image_chat_answers_and_counts_the_image_tokens(vision, vision_dir):
    cfg = {**GREEDY, "logprobs": True, "top_logprobs": 5}
    red = vision.chat(ask(png_url((200, 10, 10))), generate_config=cfg)
    text = vision.chat([{"role": "user", "content": "What is it?"}], generate_config=cfg)
    assert red["choices"][0]["message"]["content"] and red["usage"]["completion_tokens"] == GREEDY["max_tokens"]
    # the prompt is the text one plus the image's tokens (its "<image>" placeholder became them)
    assert red["usage"]["prompt_tokens"] == text["usage"]["prompt_tokens"] + tiny_models.MMPROJ_IMAGE_TOKENS
    # the image reaches the model: another image, other probabilities for the first token
    blue = vision.chat(ask(png_url((10, 10, 200))), generate_config=cfg)
    assert _first_logprobs(red) != _first_logprobs(blue)
    again = vision.chat(ask(png_url((200, 10, 10))), generate_config=cfg)
    assert _first_logprobs(again) == _first_logprobs(red)
    # a text chat after image chats: the same answer as before them (no image key/values reused)
    after = vision.chat([{"role": "user", "content": "What is it?"}], generate_config=cfg)
    assert after["choices"][0]["message"] == text["choices"][0]["message"]
    assert _first_logprobs(after) == _first_logprobs(text)


def test_image_chat_streams_takes_files_and_two_images(vision, tmp_path):
    url = png_url((0, 200, 0))
    whole = vision.chat(ask(url), generate_config=GREEDY)["choices"][0]["message"]["content"]
    chunks = list(vision.chat(ask(url), generate_config={**GREEDY, "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == whole
    file = tmp_path / "green.png"
    file.write_bytes(base64.b64decode(url.split(",", 1)[1]))
    for source in (str(file), f"file://{file}"):
        assert vision.chat(ask(source), generate_config=GREEDY)["choices"][0]["message"]["content"] == whole
    two = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "image_url", "image_url": {"url": png_url((9, 9, 9))}},
                                        {"type": "text", "text": "What is it?"}]}]
    one = vision.chat(ask(url), generate_config=GREEDY)["usage"]["prompt_tokens"]
    assert vision.chat(two, generate_config=GREEDY)["usage"]["prompt_tokens"] == one + tiny_models.MMPROJ_IMAGE_TOKENS


def test_image_chat_refusals(vision):
    with pytest.raises(InferenceError, match="image placeholder"):
        vision.chat(ask(png_url((1, 2, 3)), text="look: <image>"), generate_config=GREEDY)
    with pytest.raises(InferenceError, match="media marker"):
        vision.chat(ask(png_url((1, 2, 3)), text="<__media__>"), generate_config=GREEDY)
    with pytest.raises(InferenceError, match="http"):
        vision.chat(ask("http://example.com/cat.png"), generate_config=GREEDY)
    assert vision.chat([{"role": "user", "content": "Hi"}], generate_config=GREEDY)["choices"]   # still serves


# ------------------------------------------------------------------------------------------------
# Launch: projector, handler, options
# ------------------------------------------------------------------------------------------------
def _request(doc, **options):
    spec = load_spec("LLM", doc)
    return LoadRequest(model_uid="u", model_type="LLM", model_name=spec.model_name, spec=spec,
                       model_spec=spec.model_specs[0], options=options)


def test_handler_by_family_then_projector_type_then_option(vision_dir, tmp_path):
    from xinference_nb.engines.llama_cpp_vision import VISION_HANDLERS, choose_handler
    from xinference_nb.metadata.gguf import read_gguf

    mlp = read_gguf(vision_dir / PROJECTOR)
    for family, wanted in (("gemma-3-it", "MTMDChatHandler"), ("qwen2.5-vl-instruct", "Qwen25VLChatHandler"),
                           ("MiniCPM-V-2.6", "MiniCPMv26ChatHandler"), ("my-vlm", "Llava15ChatHandler")):
        cls, why = choose_handler(_request({**_gguf_doc(), "model_family": family}), mlp)
        assert cls.__name__ == wanted, (family, why)
    cls, why = choose_handler(_request(_gguf_doc(), chat_handler="Qwen25VLChatHandler"), mlp)
    assert cls.__name__ == "Qwen25VLChatHandler" and "chat_handler" in why
    import llama_cpp.llama_chat_format as formats

    assert all(hasattr(formats, name) for name in VISION_HANDLERS)   # every row exists in this llama-cpp-python
    odd = tmp_path / "mmproj-odd.gguf"
    _projector_of_type(vision_dir / PROJECTOR, odd, "nonesuch")
    with pytest.raises(LaunchError) as err:
        choose_handler(_request(_gguf_doc()), read_gguf(odd))
    assert "'my-vlm'" in str(err.value) and "'nonesuch'" in str(err.value) and "MTMDChatHandler" in str(err.value)
    for bad in ("Nope", "Jinja2ChatFormatter", "__class__"):
        with pytest.raises(LaunchOptionError) as err:
            choose_handler(_request(_gguf_doc(), chat_handler=bad), mlp)
        assert err.value.fields == ["chat_handler"] and "Llava15ChatHandler" in str(err.value)


def _projector_of_type(src, dest, kind):
    """A copy of a projector whose clip.projector_type says ``kind``."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dest), arch="clip")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        if field.name == "clip.projector_type":
            value = kind
        writer.add_key_value(field.name, value, field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data.reshape(list(reversed(tensor.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_launch_options_choose_the_projector_and_handler(vision_dir):
    """multimodal_projector (a name beside the model, or an absolute path) and chat_handler are applied."""
    other = vision_dir.parent / "elsewhere" / "mmproj-other.gguf"
    other.parent.mkdir(exist_ok=True)
    shutil.copy(vision_dir / PROJECTOR, other)
    manager_uids = []
    try:
        client, uid = launch(vision_doc(vision_dir, "tiny-vis-opts"), multimodal_projector=str(other),
                             chat_handler="MTMDChatHandler")
        manager_uids.append(uid)
        engine = client.get_model(uid)._manager.engine_model(uid)
        assert engine.projector == other and type(engine.handler).__name__ == "MTMDChatHandler"
        assert client.get_model(uid).chat(ask(png_url((5, 5, 5))), generate_config=GREEDY)["choices"]
        client.terminate_model(uid)
        client, uid = launch(vision_doc(vision_dir, "tiny-vis-name"), multimodal_projector=PROJECTOR)
        engine = client.get_model(uid)._manager.engine_model(uid)
        assert engine.projector == vision_dir / PROJECTOR and type(engine.handler).__name__ == "Llava15ChatHandler"
        client.terminate_model(uid)
    finally:
        for uid in manager_uids:
            if uid in Client().list_models():
                Client().terminate_model(uid)


def test_bad_projectors_are_refused_and_leave_nothing_loaded(vision_dir, tiny_gguf_file):
    doc = vision_doc(vision_dir, "tiny-vis-bad")
    client = Client()
    client.register_model("LLM", json.dumps(doc), persist=False, overwrite=True)
    before = set(client.list_models())

    def refused(error, fields=None, **options):
        with pytest.raises(error) as err:
            client.launch_model(model_name="tiny-vis-bad", model_engine="llama.cpp", n_gpu=None, show_progress=False,
                                **options)
        assert set(client.list_models()) == before
        if fields is not None:
            assert err.value.fields == fields
        return str(err.value)

    # llama.cpp's own error, wrapped: a projector made for a 32-wide text model
    message = refused(LaunchError, multimodal_projector=str(vision_dir.parent / "mmproj-narrow-f32.gguf"))
    assert "llama.cpp could not load the projector" in message and "Llava15ChatHandler" in message
    assert "mismatch between text model (n_embd = 64) and mmproj (n_embd = 32)" in message
    message = refused(LaunchError, multimodal_projector="mmproj-missing.gguf")
    assert "mmproj-missing.gguf" in message and "does not exist" in message and PROJECTOR in message
    assert "not a projector" in refused(LaunchError, multimodal_projector=str(tiny_gguf_file))
    assert "is a folder" in refused(LaunchError, multimodal_projector=str(vision_dir.parent))
    assert "leaves the model's folder" in refused(LaunchOptionError, ["multimodal_projector"],
                                                  multimodal_projector="../mmproj-narrow-f32.gguf")
    refused(LaunchOptionError, ["multimodal_projector"], multimodal_projector=5)
    refused(LaunchOptionError, ["multimodal_projector"], multimodal_projector="")
    refused(LaunchOptionError, ["chat_handler"], chat_handler=["Llava15ChatHandler"])
    assert "chat_template" in refused(LaunchOptionError, ["chat_format"], chat_format="chatml")
    # the same registration launches once the projector is right
    uid = client.launch_model(model_name="tiny-vis-bad", model_engine="llama.cpp", n_gpu=None, show_progress=False)
    try:
        assert client.get_model(uid).chat(ask(png_url((1, 1, 1))), generate_config=GREEDY)["choices"]
    finally:
        client.terminate_model(uid)


def test_projector_choice_without_a_listed_one(vision_dir, tmp_path):
    from xinference_nb.engines.llama_cpp_vision import choose_projector

    doc = vision_doc(vision_dir, multimodal_projectors=None)
    assert choose_projector(_request(doc), vision_dir / MODEL) == vision_dir / PROJECTOR   # the one beside it
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(vision_dir / MODEL, two / MODEL)
    for name in ("mmproj-a.gguf", "mmproj-b.gguf"):
        shutil.copy(vision_dir / PROJECTOR, two / name)
    with pytest.raises(LaunchError, match="holds 2: mmproj-a.gguf, mmproj-b.gguf"):
        choose_projector(_request(doc), two / MODEL)
    assert choose_projector(_request(doc, multimodal_projector="mmproj-b.gguf"), two / MODEL) == two / "mmproj-b.gguf"
    (two / "mmproj-a.gguf").unlink()
    (two / "mmproj-b.gguf").unlink()
    with pytest.raises(LaunchError, match="no \\*mmproj\\*.gguf projector"):
        choose_projector(_request(doc), two / MODEL)


def test_vision_options_on_a_text_gguf_are_refused(tiny_gguf_file):
    doc = to_document(parse_model(str(tiny_gguf_file), model_name="tiny-text-gguf").spec)
    assert "vision" not in doc["model_ability"]
    engine = find_engine("LLM", "llama.cpp")
    assert engine.loader_for(load_spec("LLM", doc)) == "llama_cpp:load"
    assert engine.loader_for(load_spec("LLM", _gguf_doc())) == "llama_cpp_vision:load"
    client = Client()
    client.register_model("LLM", json.dumps(doc), persist=False, overwrite=True)
    for option in ("multimodal_projector", "chat_handler"):
        with pytest.raises(LaunchOptionError) as err:
            client.launch_model(model_name="tiny-text-gguf", model_engine="llama.cpp", n_gpu=None,
                                **{option: "x"})
        assert err.value.fields == [option] and "'vision' ability" in str(err.value)
    uid = client.launch_model(model_name="tiny-text-gguf", model_engine="llama.cpp", n_gpu=None)
    try:
        with pytest.raises(InferenceError, match="vision"):
            client.get_model(uid).chat(ask(png_url((1, 1, 1))), generate_config=GREEDY)
    finally:
        client.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# REST
# ------------------------------------------------------------------------------------------------
def test_rest_checks_projector_paths_against_the_roots(vision_dir, tmp_path):
    from fastapi.testclient import TestClient

    from xinference_nb.server.app import create_app

    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(vision_dir / PROJECTOR, outside / PROJECTOR)
    (vision_dir / "mmproj-link.gguf").symlink_to(outside / PROJECTOR)
    client = Client()
    doc = vision_doc(vision_dir, "tiny-vis-rest")
    client.register_model("LLM", json.dumps(doc), persist=False, overwrite=True)
    base = {"model_name": "tiny-vis-rest", "model_type": "LLM", "model_engine": "llama.cpp", "n_gpu": None,
            "model_path": str(vision_dir / MODEL)}
    try:
        with TestClient(create_app(client, allowed_roots=[str(vision_dir)]), base_url="http://127.0.0.1") as rest:
            for projector, field in ((str(outside / PROJECTOR), "multimodal_projector"),
                                     ("mmproj-link.gguf", "multimodal_projector")):
                r = rest.post("/v1/models", json={**base, "multimodal_projector": projector})
                assert r.status_code == 403 and field in r.json()["detail"], r.text
            linked = {**doc, "model_name": "tiny-vis-linked"}
            linked["model_specs"] = [{**doc["model_specs"][0], "multimodal_projectors": ["mmproj-link.gguf"]}]
            r = rest.post("/v1/model_registrations/LLM", json={"model": json.dumps(linked), "persist": False})
            assert r.status_code == 403 and "multimodal_projectors[0]" in r.json()["detail"], r.text
            assert not [u for u in client.list_models() if u.startswith("tiny-vis-rest")]
            r = rest.post("/v1/models", json={**base, "multimodal_projector": PROJECTOR, "model_uid": "vis-rest"})
            assert r.status_code == 200, r.text
            r = rest.post("/v1/chat/completions", json={"model": "vis-rest", "messages": ask(png_url((3, 3, 3))),
                                                        "max_tokens": 4, "temperature": 0})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["prompt_tokens"] > tiny_models.MMPROJ_IMAGE_TOKENS
    finally:
        (vision_dir / "mmproj-link.gguf").unlink()
        if "vis-rest" in client.list_models():
            client.terminate_model("vis-rest")


def test_an_image_past_the_context_is_refused_and_the_model_still_serves(vision_dir):
    client, uid = launch(vision_doc(vision_dir, "tiny-vis-short"), n_ctx=24)
    try:
        h = client.get_model(uid)
        with pytest.raises(InferenceError, match="context length is 24"):
            h.chat(ask(png_url((1, 1, 1))), generate_config=GREEDY)
        # (llama.cpp pads its context to 256, llama-cpp-python's buffers hold 24 tokens: a long text prompt too)
        with pytest.raises(InferenceError, match="context length is 24"):
            h.chat([{"role": "user", "content": "What is it? " * 8}], generate_config=GREEDY)
        assert h.chat([{"role": "user", "content": "What is it?"}], generate_config={**GREEDY, "max_tokens": 2})
    finally:
        client.terminate_model(uid)
