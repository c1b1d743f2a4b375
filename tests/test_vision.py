"""Vision chat on a tiny random LLaVA (tests/tiny_models.py build_tiny_llava): the image reaches the
model (different images, different greedy answers), every accepted image form, the refusals (http
URLs, bombs, text-only models, batching options, templates without image placeholders), REST with
allowed roots, RemoteClient, the %%xinf chat --image magic and the transcripts' thumbnails."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest

pytest.importorskip("transformers")
PIL_Image = pytest.importorskip("PIL.Image")

from test_magics import shell as magics_shell  # noqa: E402,F401,F811 - a fixture: the %xinf shell

from xinference_nb import chat_images  # noqa: E402
from xinference_nb.chat import validate_messages  # noqa: E402
from xinference_nb.client import Client  # noqa: E402
from xinference_nb.errors import InferenceError, LaunchError  # noqa: E402

GREEDY = {"temperature": 0, "max_tokens": 8}
QUESTION = "What is in this picture?"


def png_bytes(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    PIL_Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def ask(image_url, text=QUESTION):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


def answer(result) -> str:
    return result["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """black.png / noise.png in a folder of their own (the REST server's allowed root)."""
    root = tmp_path_factory.mktemp("vision_images")
    (root / "black.png").write_bytes(png_bytes((0, 0, 0)))
    (root / "white.png").write_bytes(png_bytes((255, 255, 255)))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_llava_dir, tiny_llama_dir):
    """The tiny LLaVA (parsed: the vision ability) and the text-only tiny Llama, launched in-kernel."""
    from xinference_nb.parse import parse_model

    mp = pytest.MonkeyPatch()
    mp.setenv("XINFERENCE_NB_HOME", str(tmp_path_factory.mktemp("vision_home")))
    client = Client()
    launched = []
    try:
        parsed = parse_model(tiny_llava_dir, model_name="vis-llava")
        client.register_model("LLM", parsed.to_json(), overwrite=True)
        launched.append(client.launch_model("vis-llava", model_engine="transformers", model_uid="vis-llava",
                                            n_gpu=None, show_progress=False))
        text = parse_model(tiny_llama_dir, model_name="vis-text-llama")
        client.register_model("LLM", text.to_json(), overwrite=True)
        launched.append(client.launch_model("vis-text-llama", model_engine="transformers", model_uid="vis-text",
                                            n_gpu=None, show_progress=False))
        yield {"client": client, "vision": "vis-llava", "text": "vis-text", "parsed": parsed}
    finally:
        for uid in launched:
            client.terminate_model(uid)
        mp.undo()


# ------------------------------------------------------------------------------------------------
# Registration and the image reaching the model
# ------------------------------------------------------------------------------------------------

def test_parse_gives_the_vision_ability(models):
    parsed = models["parsed"]
    assert parsed.model_type == "LLM"
    assert "vision" in parsed.spec.model_ability and "chat" in parsed.spec.model_ability
    assert "vision_config" in parsed.sources["model_ability"]
    described = models["client"].describe_model(models["vision"])
    assert "vision" in described["model_ability"]


def test_different_images_give_different_answers(models, images):
    handle = models["client"].get_model(models["vision"])
    black = handle.chat(ask(data_url((images / "black.png").read_bytes())), generate_config=GREEDY)
    white = handle.chat(ask(data_url((images / "white.png").read_bytes())), generate_config=GREEDY)
    text_only = handle.chat([{"role": "user", "content": QUESTION}], generate_config=GREEDY)
    assert answer(black) != answer(white)
    # the 16 <image> tokens of the tiny LLaVA are in the prompt, once per image
    assert black["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 16
    # greedy is deterministic, and streaming sees the same image
    again = handle.chat(ask(data_url((images / "black.png").read_bytes())), generate_config=GREEDY)
    assert answer(again) == answer(black)
    chunks = list(handle.chat(ask(data_url((images / "white.png").read_bytes())),
                              generate_config=dict(GREEDY, stream=True)))
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == answer(white)
    assert chunks[-1]["usage"]["prompt_tokens"] == white["usage"]["prompt_tokens"]


def test_every_image_form_reaches_the_model(models, images):
    handle = models["client"].get_model(models["vision"])
    path = images / "black.png"
    expected = answer(handle.chat(ask(data_url(path.read_bytes())), generate_config=GREEDY))
    pil = PIL_Image.open(path)
    forms = {
        "path": ask(str(path)),
        "file URL": ask(path.as_uri()),
        "PIL": ask(pil),
        "image_url as a string": [{"role": "user", "content": [{"type": "image_url", "image_url": str(path)},
                                                               {"type": "text", "text": QUESTION}]}],
        "transformers' image part": [{"role": "user", "content": [{"type": "image", "image": pil},
                                                                  {"type": "text", "text": QUESTION}]}],
        "input_image": [{"role": "user", "content": [{"type": "input_image", "image_url": str(path)},
                                                     {"type": "text", "text": QUESTION}]}],
        "detail auto": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": str(path), "detail": "auto"}},
            {"type": "text", "text": QUESTION}]}],
    }
    for name, messages in forms.items():
        assert answer(handle.chat(messages, generate_config=GREEDY)) == expected, name
    # two images in one turn: both go in (32 image tokens)
    two = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(path)}},
                                        {"type": "image_url", "image_url": {"url": str(images / "white.png")}},
                                        {"type": "text", "text": QUESTION}]}]
    one = handle.chat(ask(str(path)), generate_config=GREEDY)
    assert handle.chat(two, generate_config=GREEDY)["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"] + 16
    # a batch with images
    results = models["client"].get_model(models["vision"]).chat_batch(
        [ask(str(path)), ask(str(images / "white.png"))], generate_config=GREEDY, progress=False)
    assert answer(results[0]) == expected and answer(results[1]) != expected


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A PNG whose header claims width × height pixels (a decompression bomb), with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("url, words", [
    ("https://example.com/cat.png", ["http(s) URL", "not fetched", "data URL"]),
    ("http://example.com/cat.png", ["http(s) URL"]),
    ("ftp://example.com/cat.png", ["cannot read"]),
    ("file://otherhost/cat.png", ["another host"]),
    ("data:image/png;base64,!!!notbase64", ["base64"]),
    ("data:text/plain;base64,aGVsbG8=", ["data:image/"]),
    (data_url(b"not an image at all"), ["not a readable image"]),
    (data_url(bomb_png()), ["pixels"]),
    ("/no/such/dir/cat.png", ["cannot read the image file"]),
])
def test_bad_images_are_refused_clearly(models, url, words):
    handle = models["client"].get_model(models["vision"])
    with pytest.raises(InferenceError) as err:
        handle.chat(ask(url), generate_config=GREEDY)
    assert "messages[0].content[0]" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_size_bounds_and_part_shapes(models, images, monkeypatch):
    handle = models["client"].get_model(models["vision"])
    monkeypatch.setattr(chat_images, "MAX_IMAGE_PIXELS", 40 * 30 - 1)
    for source in (str(images / "black.png"), PIL_Image.new("RGB", (40, 30))):
        with pytest.raises(InferenceError, match="40x30 pixels, more than"):
            handle.chat(ask(source), generate_config=GREEDY)
    monkeypatch.setattr(chat_images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InferenceError, match="limited to|larger than"):
        handle.chat(ask(str(images / "black.png")), generate_config=GREEDY)
    monkeypatch.undo()
    bad_parts = [
        ({"type": "image_url"}, "image_url is missing"),
        ({"type": "image_url", "image_url": {"uri": "x"}}, "unknown key 'uri'"),
        ({"type": "image_url", "image_url": {"url": str(images / "black.png"), "detail": "high"}}, "detail"),
        ({"type": "image_url", "image_url": {"url": 42}}, "got int"),
        ({"type": "image", "image": "a", "url": "b"}, "exactly one of"),
    ]
    for part, words in bad_parts:
        with pytest.raises(InferenceError, match=words):
            handle.chat([{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}])


def test_text_only_model_refuses_image_parts(models, images):
    handle = models["client"].get_model(models["text"])
    with pytest.raises(InferenceError) as err:
        handle.chat(ask(str(images / "black.png")), generate_config=GREEDY)
    message = str(err.value)
    assert "'vision' ability" in message and "vis-text" in message and "generate, chat, tools" in message
    # the shape check is the same function: a vision registration on an engine without images
    with pytest.raises(InferenceError, match="not supported by this engine"):
        validate_messages(ask(str(images / "black.png")), model_uid="m", abilities=("chat", "vision"),
                          media=("generate", "chat"))
    # text parts are still joined into one string for text models
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert validate_messages([{"role": "user", "content": parts}], abilities=("chat",)) == \
        [{"role": "user", "content": "ab"}]


def test_batching_options_are_refused_and_nothing_stays_loaded(models, nb_home):
    client = models["client"]
    client.register_model("LLM", models["parsed"].to_json(), overwrite=True)
    before = set(client.list_models())
    lora = {"lora_list": [{"lora_name": "a", "local_path": str(nb_home)}]}
    for bad in ({"max_num_seqs": 4}, {"batch_wait_ms": 3.0}, {"peft_model_config": lora}):
        with pytest.raises(LaunchError) as err:
            client.launch_model("vis-llava", model_engine="transformers", model_uid="vis-bad", n_gpu=None,
                                show_progress=False, **bad)
        assert f"does not take {next(iter(bad))}" in str(err.value) and "one generate each" in str(err.value)
    assert set(client.list_models()) == before


def test_a_vision_registration_without_a_processor_fails_to_launch(models, tiny_llama_dir, nb_home):
    client = models["client"]
    from xinference_nb.parse import parse_model

    doc = json.loads(parse_model(tiny_llama_dir, model_name="vis-no-processor").to_json())
    doc["model_ability"] = doc["model_ability"] + ["vision"]
    client.register_model("LLM", doc)
    before = set(client.list_models())
    with pytest.raises(LaunchError, match="not an image-text processor .*remove 'vision' from model_ability"):
        client.launch_model("vis-no-processor", model_engine="transformers", n_gpu=None, show_progress=False)
    assert set(client.list_models()) == before


def test_a_template_without_image_placeholders_is_refused(models, images, nb_home):
    client = models["client"]
    doc = json.loads(models["parsed"].to_json())
    doc.update(model_name="vis-plain-template",
               chat_template="{% for m in messages %}{{ m.role }}: {{ m.content if m.content is string else "
                             "(m.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join) }}\n"
                             "{% endfor %}assistant:")
    client.register_model("LLM", doc)
    uid = client.launch_model("vis-plain-template", model_engine="transformers", n_gpu=None, show_progress=False)
    try:
        with pytest.raises(InferenceError, match="0 image placeholder"):
            client.get_model(uid).chat(ask(str(images / "black.png")), generate_config=GREEDY)
        assert answer(client.get_model(uid).chat("hello", generate_config=GREEDY)) is not None
    finally:
        client.terminate_model(uid)


# ------------------------------------------------------------------------------------------------
# REST and RemoteClient
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(models, images):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    running = start_in_thread(create_app(models["client"], allowed_roots=[str(images)]), port=0)
    yield running
    running.stop()


def test_rest_chat_with_image_parts_and_allowed_roots(models, images, server, tmp_path):
    import httpx

    handle = models["client"].get_model(models["vision"])
    expected = answer(handle.chat(ask(str(images / "black.png")), generate_config=GREEDY))
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes((0, 0, 0)))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        def post(messages, model=models["vision"], **extra):
            return http.post("/v1/chat/completions", json={"model": model, "messages": messages, "temperature": 0,
                                                           "max_tokens": 8, **extra})

        for url in (data_url((images / "black.png").read_bytes()), str(images / "black.png"),
                    (images / "black.png").as_uri()):
            r = post(ask(url))
            assert r.status_code == 200, r.text
            assert answer(r.json()) == expected
        r = post(ask(data_url((images / "white.png").read_bytes())), stream=True)
        assert r.status_code == 200 and "data:" in r.text
        # a file outside the allowed roots is never read, whatever its form
        for url in (str(outside), outside.as_uri(), str(images / ".." / outside.parent.name / "outside.png")):
            r = post(ask(url))
            assert r.status_code == 403, r.text
            assert "allowed model roots" in r.text
        r = post(ask("https://example.com/cat.png"))
        assert r.status_code == 400 and "not fetched" in r.text
        r = post(ask(data_url((images / "black.png").read_bytes())), model=models["text"])
        assert r.status_code == 400 and "'vision' ability" in r.text


def test_remote_client_sends_pil_images_and_local_files(models, images, server, tmp_path):
    from xinference_nb.remote import RemoteClient

    handle = models["client"].get_model(models["vision"])
    expected = answer(handle.chat(ask(str(images / "white.png")), generate_config=GREEDY))
    remote = RemoteClient(server.url).get_model(models["vision"])
    pil = PIL_Image.open(images / "white.png")
    assert answer(remote.chat(ask(pil), generate_config=GREEDY)) == expected
    # a file of this machine outside the server's roots travels as a data URL
    copy = tmp_path / "white-copy.png"
    copy.write_bytes((images / "white.png").read_bytes())
    assert answer(remote.chat(ask(str(copy)), generate_config=GREEDY)) == expected
    streamed = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in remote.chat(ask(copy.as_uri()), generate_config=dict(GREEDY, stream=True)))
    assert streamed == expected
    with pytest.raises(InferenceError, match="'vision' ability"):
        RemoteClient(server.url).get_model(models["text"]).chat(ask(pil), generate_config=GREEDY)
    # what is sent: data URLs, the caller's messages unchanged
    messages = ask(pil)
    sent = chat_images.for_remote(messages)
    assert sent[0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert messages[0]["content"][0]["image_url"]["url"] is pil


def test_cli_chat_image_flag(models, images, server, capsys, tmp_path):
    from xinference_nb import cli

    handle = models["client"].get_model(models["vision"])
    expected = answer(handle.chat(ask(str(images / "white.png")), generate_config=GREEDY))
    copy = tmp_path / "white.png"   # outside the server's roots: the CLI sends the file as a data URL
    copy.write_bytes((images / "white.png").read_bytes())
    argv = ["chat", models["vision"], "-e", server.url, "-m", QUESTION, "--image", str(copy), "--no-stream",
            "--temperature", "0", "--max-tokens", "8"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == expected.strip()
    assert cli.main(argv[:-7] + ["--image", "https://example.com/x.png", "--no-stream"]) == 1
    assert "not fetched" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Notebook: %%xinf chat --image, ChatBox and the transcripts
# ------------------------------------------------------------------------------------------------

def test_magic_chat_image_flag(models, images, magics_shell):
    from xinference_nb import display as d

    handle = models["client"].get_model(models["vision"])
    expected = answer(handle.chat([chat_images.user_message(QUESTION, [str(images / "black.png")])],
                                  generate_config=GREEDY))
    ip = magics_shell
    ip.xinf._client_factory = None   # the real in-kernel Client
    ip.xinf._clients.clear()
    try:
        result = ip.run_cell(f"%%xinf chat {models['vision']} --image {images / 'black.png'} --no-stream "
                             f"--max-tokens 8 --temperature 0\n{QUESTION}")
        assert result.error_in_exec is None, result.error_in_exec
        view = result.result
        assert isinstance(view, d.ChatView) and view.content == expected
        assert "<img" in view._repr_html_()
        # the conversation keeps the image; the transcript shows it
        shown = ip.run_cell(f"%xinf chat {models['vision']}").result
        assert "<img" in shown._repr_html_() and "[image]" in shown._text()
    finally:
        ip.xinf.conversations.clear()


def test_chatbox_and_transcripts_show_thumbnails(models, images):
    pytest.importorskip("ipywidgets")
    from xinference_nb.display import ChatTranscript
    from xinference_nb.widgets import ChatBox

    box = ChatBox(models["vision"], client=models["client"], max_tokens=6, stream=False)
    view = box.send(QUESTION, images=[str(images / "white.png")])
    assert view is not None and box.messages[0]["content"][0]["type"] == "image_url"
    html = box.transcript.value
    assert html.count("<img") == 1 and "data:image/png;base64," in html
    # an uploaded image (the button) goes the same way
    import datetime

    data = (images / "black.png").read_bytes()
    box.images.value = ({"name": "b.png", "type": "image/png", "size": len(data), "content": memoryview(data),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    box.input.value = "and this?"
    assert box.send() is not None and box.images.value == ()
    assert box.transcript.value.count("<img") == 2
    # transcripts: a thumbnail (at most 128 px) per image; text shows [image]; unreadable → a placeholder
    messages = [chat_images.user_message("look", [PIL_Image.new("RGB", (600, 300), (9, 9, 9)),
                                                  "https://example.com/x.png"])]
    transcript = ChatTranscript(messages)
    html = transcript._repr_html_()
    assert html.count("<img") == 1 and "image 2: not shown" in html
    thumb = chat_images.thumbnail_url(messages[0]["content"][0])
    small = PIL_Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1])))
    assert max(small.size) == 128
    assert "[image]" in transcript._text() and "look" in transcript._text()
