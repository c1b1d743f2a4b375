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

from xinference_nb.chat import images as chat_images  # noqa: E402
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
    from xinference_nb.client.remote import RemoteClient

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
    from xinference_nb.commands import cli

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


# ------------------------------------------------------------------------------------------------
# Red team: what an attacker over REST or a careless notebook user sends
# ------------------------------------------------------------------------------------------------

def chat_in_thread(handle, messages, seconds=20):
    """handle.chat(messages) in a thread: (result or exception); fails if it is still running after
    ``seconds`` (a read that blocks, such as opening a FIFO)."""
    import threading

    box = {}

    def run():
        try:
            box["value"] = handle.chat(messages, generate_config={"temperature": 0, "max_tokens": 1})
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call blocked"
    return box["value"]


def test_special_files_and_odd_paths_are_refused_without_blocking(models, images, tmp_path):
    import os

    handle = models["client"].get_model(models["vision"])
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)                        # opening it for reading would wait for a writer forever
    (tmp_path / "folder.png").mkdir()
    cases = {
        str(fifo): "not a regular file",
        fifo.as_uri(): "not a regular file",
        "/dev/zero": "not a regular file",   # endless
        "/dev/urandom": "not a regular file",
        str(tmp_path / "folder.png"): "a directory",
        str(images / "black.png") + "\x00.txt": "NUL byte",
        images.as_uri() + "/black.png%00.txt": "NUL byte",
        "/tmp/" + "a" * 5000: "characters long",
        images.as_uri() + "/black.png?size=1": "query or fragment",
        images.as_uri() + "/black.png#x": "query or fragment",
    }
    for url, words in cases.items():
        err = chat_in_thread(handle, ask(url))
        assert isinstance(err, InferenceError), (url[:60], err)
        assert words in str(err) and "messages[0].content[0]" in str(err), (url[:60], str(err))
    # a symlink to the FIFO is followed and refused the same way; ~ is the user's home
    (tmp_path / "link.png").symlink_to(fifo)
    assert "not a regular file" in str(chat_in_thread(handle, ask(str(tmp_path / "link.png"))))
    assert os.path.expanduser("~") in str(chat_in_thread(handle, ask("~/no-such-image-xnb.png")))
    # percent-encoding and localhost in a file:// URL name the same file
    spaced = tmp_path / "a b.png"
    spaced.write_bytes((images / "black.png").read_bytes())
    expected = answer(chat_in_thread(handle, ask(str(images / "black.png"))))
    for url in (spaced.as_uri(), "file://localhost" + str(spaced).replace(" ", "%20")):
        assert "%20" in url and answer(chat_in_thread(handle, ask(url))) == expected


def test_a_file_is_read_no_further_than_the_limit(images, monkeypatch):
    import os

    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc")
    assert os.stat("/proc/self/maps").st_size == 0   # the size is not known before reading
    monkeypatch.setattr(chat_images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(InferenceError, match="larger than"):
        chat_images.load_image("/proc/self/maps", "p")
    monkeypatch.setattr(chat_images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InferenceError, match="limited to"):   # from its size, before it is opened
        chat_images.load_image(str(images / "black.png"), "p")


def eps_bytes() -> bytes:
    """A PostScript file PIL's EPS plugin recognises (it would run Ghostscript to decode it)."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n%%EOF\n"


def test_data_url_encodings(models, images):
    handle = models["client"].get_model(models["vision"])
    buf = io.BytesIO()
    PIL_Image.effect_noise((40, 30), 60).convert("RGB").save(buf, format="PNG")   # its base64 has + and /
    data = buf.getvalue()
    expected = answer(handle.chat(ask(data_url(data)), generate_config=GREEDY))
    b64 = base64.b64encode(data).decode("ascii")
    accepted = {
        "wrapped at 76": "data:image/png;base64," + "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76)),
        "url-safe": "data:image/png;base64," + base64.urlsafe_b64encode(data).decode("ascii"),
        "no padding": "data:image/png;base64," + b64.rstrip("="),
        "the wrong image type": "data:image/jpeg;base64," + b64,   # the bytes say what the image is
        "upper case": "DATA:IMAGE/PNG;BASE64," + b64,
    }
    assert "-" in accepted["url-safe"] or "_" in accepted["url-safe"]
    for name, url in accepted.items():
        assert answer(handle.chat(ask(url), generate_config=GREEDY)) == expected, name
    # EPS is never opened (PIL would hand it to Ghostscript): only raster formats are read
    assert PIL_Image.open(io.BytesIO(eps_bytes())).format == "EPS"
    refused = {
        "data:image/png," + b64: "data:image/<format>;base64",
        "data:image/svg+xml;base64," + base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode(): "none "
        "of the formats",
        "data:image/eps;base64," + base64.b64encode(eps_bytes()).decode(): "none of the formats",
        "data:image/png;base64,": "none of the formats",
        "data:image/png;base64,a": "not valid",
    }
    for url, words in refused.items():
        with pytest.raises(InferenceError, match=words.replace("(", r"\(").replace(")", r"\)")):
            handle.chat(ask(url), generate_config=GREEDY)


def encoded(image, fmt, **kw) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return "data:image/x;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def test_image_modes_and_formats(models):
    handle = models["client"].get_model(models["vision"])
    frames = [PIL_Image.new("P", (16, 16), i % 256) for i in range(500)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    sources = {mode: PIL_Image.new(mode, (16, 12)) for mode in ("I;16", "I", "F", "CMYK", "P", "LA", "RGBA", "1",
                                                                 "L", "YCbCr", "LAB", "PA")}
    sources.update({
        "PNG 16-bit": encoded(PIL_Image.new("I;16", (16, 12)), "PNG"),
        "TIFF CMYK": encoded(PIL_Image.new("CMYK", (16, 12)), "TIFF"),
        "TIFF float": encoded(PIL_Image.new("F", (16, 12)), "TIFF"),
        "ICO": encoded(PIL_Image.new("RGBA", (32, 32)), "ICO"),
        "BMP": encoded(PIL_Image.new("RGB", (16, 12)), "BMP"),
        "WEBP": encoded(PIL_Image.new("RGB", (16, 12)), "WEBP"),
        "JPEG CMYK": encoded(PIL_Image.new("CMYK", (16, 12)), "JPEG"),
        "GIF of 500 frames": "data:image/gif;base64," + base64.b64encode(gif.getvalue()).decode(),
        "1x1": PIL_Image.new("RGB", (1, 1)),
        "200:1": PIL_Image.new("RGB", (200, 1)),
    })
    for name, source in sources.items():
        result = chat_in_thread(handle, ask(source))
        assert isinstance(result, dict), (name, result)
    noise = PIL_Image.effect_noise((64, 64), 50).convert("RGB")
    truncated = io.BytesIO()
    noise.save(truncated, format="PNG")
    with_file = io.BytesIO(truncated.getvalue()[:300])
    refused = {
        "0x0": (PIL_Image.new("RGB", (0, 0)), "no pixels"),   # the processor divided by zero
        "0x5": (PIL_Image.new("RGB", (0, 5)), "no pixels"),
        "La": (PIL_Image.new("La", (4, 4)), "cannot be read as RGB"),   # PIL cannot convert it
        "1x201": (PIL_Image.new("L", (1, 201)), "short side"),
        # 1x1,000,000 is few pixels, but the processor would scale it to 32x32,000,000
        "1x1000000": (encoded(PIL_Image.new("L", (1, 1_000_000)), "PNG"), "short side"),
        "truncated PNG": (data_url(truncated.getvalue()[:300]), "truncated"),
        "a truncated file opened by the caller": (PIL_Image.open(with_file), "truncated"),
    }
    for name, (source, words) in refused.items():
        err = chat_in_thread(handle, ask(source))
        assert isinstance(err, InferenceError) and words in str(err), (name, err)
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False   # never turned on to read a bad file


def test_image_parts_in_odd_places(models, images, monkeypatch):
    handle = models["client"].get_model(models["vision"])
    path = str(images / "black.png")
    image = {"type": "image_url", "image_url": {"url": path}}
    text = {"type": "text", "text": QUESTION}
    plain = handle.chat(QUESTION, generate_config=GREEDY)["usage"]["prompt_tokens"]
    # a system message's image reaches the model when the template renders it (the tiny LLaVA's does)
    system = handle.chat([{"role": "system", "content": [image, {"type": "text", "text": "be brief"}]},
                          {"role": "user", "content": QUESTION}], generate_config=GREEDY)
    assert system["usage"]["prompt_tokens"] > plain + 16 - 1
    # extra keys are refused, never dropped
    bad = {
        "extra key": (dict(image, cache_control={"type": "ephemeral"}), "unknown key 'cache_control'"),
        "detail beside image_url": (dict(image, detail="low"), "unknown key 'detail'"),
        "input_image detail": ({"type": "input_image", "image_url": path, "detail": "high"}, "detail='high'"),
        "input_image file_id": ({"type": "input_image", "file_id": "file-1"}, "unknown key 'file_id'"),
        "image part extra": ({"type": "image", "image": path, "alt": "x"}, "unknown key 'alt'"),
    }
    for name, (part, words) in bad.items():
        with pytest.raises(InferenceError, match=words):
            handle.chat([{"role": "user", "content": [part, text]}], generate_config=GREEDY)
    assert handle.chat([{"role": "user", "content": [{"type": "input_image", "image_url": path, "detail": "auto"},
                                                     text]}], generate_config=GREEDY)["choices"]
    # how many images: a count and a pixel budget, before the model sees them
    with pytest.raises(InferenceError, match=f"65 images in one request; at most {chat_images.MAX_IMAGES}"):
        handle.chat([{"role": "user", "content": [image] * 65 + [text]}], generate_config=GREEDY)
    monkeypatch.setattr(chat_images, "MAX_REQUEST_PIXELS", 40 * 30 * 2)
    assert handle.chat([{"role": "user", "content": [image] * 2 + [text]}], generate_config=GREEDY)["choices"]
    with pytest.raises(InferenceError, match=r"messages\[0\].content\[2\]: the images of this request have more"):
        handle.chat([{"role": "user", "content": [image] * 3 + [text]}], generate_config=GREEDY)
    # the model's image token typed in the text, beside an image: the error names the text
    with pytest.raises(InferenceError, match="a message's text holds '<image>'"):
        handle.chat([{"role": "user", "content": [image, {"type": "text", "text": "<image> what?"}]}],
                    generate_config=GREEDY)


def test_a_llama_cpp_model_registered_with_vision_needs_its_projector(models, images, tiny_gguf_file):
    """(Vision GGUFs with a projector: tests/test_gguf_vision.py.)"""
    pytest.importorskip("llama_cpp")
    from xinference_nb.parse import parse_model

    client = models["client"]
    doc = json.loads(parse_model(tiny_gguf_file, model_name="vis-gguf").to_json())
    doc["model_ability"] = doc["model_ability"] + ["vision"]
    client.register_model("LLM", doc, overwrite=True)
    before = set(client.list_models())
    with pytest.raises(LaunchError, match="needs its projector.*multimodal_projector"):
        client.launch_model("vis-gguf", model_engine="llama.cpp", n_gpu=None, show_progress=False)
    assert set(client.list_models()) == before


def test_rest_refuses_hostile_images_with_clear_statuses(models, images, server, tmp_path):
    import os

    import httpx

    fifo = images / "fifo.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    (images / "dir.png").mkdir(exist_ok=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes((1, 2, 3)))
    for name, target in (("out-link.png", secret), ("fifo-link.png", fifo)):
        if not (images / name).is_symlink():
            (images / name).symlink_to(target)
    b64 = base64.b64encode((images / "black.png").read_bytes()).decode()
    cases = [
        (str(fifo), 400, "not a regular file"),
        (str(images / "fifo-link.png"), 400, "not a regular file"),
        (str(images / "dir.png"), 400, "a directory"),
        (str(images), 400, "a directory"),
        ("/dev/zero", 403, "allowed model roots"),
        ("/proc/self/environ", 403, "allowed model roots"),
        (str(images / "out-link.png"), 403, "allowed model roots"),   # a symlink inside the roots to outside
        ("FILE://" + str(secret), 403, "allowed model roots"),
        ("file://localhost" + str(secret), 403, "allowed model roots"),
        ("~/secret.png", 403, "allowed model roots"),
        ("secret.png", 403, "allowed model roots"),                  # relative: to the server's folder
        (str(images / "black.png") + "\x00", 400, "NUL byte"),
        (images.as_uri() + "/black.png%00", 400, "NUL byte"),
        (str(images / ("a" * 5000)), 400, "characters long"),
        (images.as_uri() + "/black.png?x=1", 400, "query or fragment"),
        ("file://evil.example.com/x.png", 400, "another host"),
        ("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", 400, "data:image/"),
        ("data:image/svg+xml;base64,PHN2Zy8+", 400, "none of the formats"),
        ("data:image/eps;base64," + base64.b64encode(eps_bytes()).decode(), 400, "none of the formats"),
        (data_url(bomb_png()), 400, "pixels"),
        ("data:image/png;base64," + b64 + "!", 400, "not valid"),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        def post(content, **extra):
            return http.post("/v1/chat/completions", json={"model": models["vision"], "temperature": 0, "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": content}], **extra})

        for url, status, words in cases:
            for stream in (False, True):
                r = post([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}],
                         stream=stream)
                assert r.status_code == status and words in r.json()["detail"], (url[:60], stream, r.text[:300])
        bad_parts = [
            ({"type": "image_url", "image_url": {"url": str(images / "black.png")}, "x": 1}, "unknown key 'x'"),
            ({"type": "image_url", "image_url": ["a"]}, "got list"),
            ({"type": "image_url", "image_url": {"url": {"nested": 1}}}, "got dict"),
            ({"type": "image", "path": 7}, "got int"),
        ]
        for part, words in bad_parts:
            r = post([part, {"type": "text", "text": "hi"}])
            assert r.status_code == 400 and words in r.json()["detail"], r.text[:300]
        r = post([{"type": "image_url", "image_url": {"url": str(images / "black.png")}}] * 65)
        assert r.status_code == 400 and "65 images" in r.text
        # a data URL over the body limit: 413, and the connection answers the next request
        big = "data:image/png;base64," + "A" * (9 * 2 ** 20)
        r = post([{"type": "image_url", "image_url": {"url": big}}])
        assert r.status_code == 413, r.text[:200]
        r = post([{"type": "image_url", "image_url": data_url((images / "black.png").read_bytes())},
                  {"type": "text", "text": "hi"}])
        assert r.status_code == 200, r.text[:300]


def test_remote_client_refuses_bad_images_before_sending(models, images, server, tmp_path):
    from xinference_nb.client.remote import RemoteClient

    remote = RemoteClient(server.url).get_model(models["vision"])
    eps = tmp_path / "figure.png"
    eps.write_bytes(eps_bytes())
    for source, words in ((PIL_Image.new("La", (4, 4)), "cannot be read as RGB"),
                          (PIL_Image.new("RGB", (0, 0)), "no pixels"),
                          (str(eps), "none of the formats")):
        with pytest.raises(InferenceError, match=words):
            remote.chat(ask(source), generate_config=GREEDY)
    # the Responses form's detail travels with the image
    sent = chat_images.for_remote([{"role": "user", "content": [
        {"type": "input_image", "image_url": str(images / "black.png"), "detail": "auto"}]}])
    assert sent[0]["content"][0]["image_url"]["detail"] == "auto"


def test_transcripts_never_carry_html_from_a_message(images):
    from xinference_nb.display import ChatTranscript

    script = "<script>alert(1)</script>"
    messages = [{"role": "user", "name": script, "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,'><script>alert(2)</script>"}},
        {"type": "image_url", "image_url": {"url": "data:text/html;base64,PHNjcmlwdD5hbGVydCgzKTwvc2NyaXB0Pg=="}},
        {"type": "image_url", "image_url": {"url": str(images / "black.png")}},
        {"type": "image_url", "image_url": {"url": "/tmp/x' onerror='alert(4).png"}},
        {"type": "text", "text": f"{script}<img src=x onerror=alert(5)> a\x007\x00b"},   # NUL: markdown's marker
    ]}, {"role": "assistant", "content": "[a](javascript:alert(6))"}]
    html = ChatTranscript(messages, title=script)._repr_html_()
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(5)", "")
    assert "<a " not in html and "PHNjcmlwdD" not in html
    tiles = html.count("<img")
    assert tiles == 1 and html.count("not shown]") == 3   # only the readable image, as a PNG we drew
    import re

    assert re.findall(r"<img src='([^']{0,22})", html) == ["data:image/png;base64,"]
