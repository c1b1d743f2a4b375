"""A real browser: JupyterLab on 127.0.0.1, headless Chromium (Debian's, driven by Playwright), the
RegisterForm widget in a notebook: type a path, click Parse, see the fields filled from the model's
files, click Register, find the registration on disk, see it as JSON (get_model_registration); the
ChatBox streams a reply and its Stop button cuts one short. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("XNB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("XNB_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requirements():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/install-browser.sh (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser itself is Debian's)")
    pytest.importorskip("jupyterlab", reason="pip install jupyterlab")
    pytest.importorskip("jupyterlab_widgets", reason="pip install jupyterlab_widgets (ipywidgets' lab extension)")


@pytest.fixture
def lab(tmp_path, nb_home):
    """A JupyterLab server on a free 127.0.0.1 port, rooted in a temp folder, isolated settings."""
    _requirements()
    root = tmp_path / "lab"
    root.mkdir()
    port = _free_port()
    env = dict(os.environ, XINFERENCE_NB_HOME=str(nb_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "jlsettings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "jlworkspaces"), JUPYTER_RUNTIME_DIR=str(tmp_path / "jrt"))
    news = tmp_path / "jlsettings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                       "checkForUpdates": False}))
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", "--IdentityProvider.token=", "--allow-root", "--LabApp.extension_manager=readonly",
         "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--ServerApp.disable_check_xsrf=True",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "lab.log", ARTIFACTS / "browser-jupyterlab.log")


DISPLAYS = """\
import io, wave
from PIL import Image
from xinference_nb.display import show
chat = {"object": "chat.completion", "model": "tiny", "usage": {"prompt_tokens": 9, "completion_tokens": 6,
        "total_tokens": 15}, "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
        "content": "**Paris** is the capital of France.", "reasoning_content": "Easy: geography."}}]}
show(chat, messages=[{"role": "user", "content": "Capital of France?"}])
show({"data": [{"embedding": [1, 0, 0]}, {"embedding": [1, 1, 0]}, {"embedding": [0, 0, 1]}]},
     inputs=["cat", "kitten", "car"])
show({"results": [{"index": 1, "relevance_score": 0.93, "document": {"text": "Kittens nap in the sun."}},
                  {"index": 0, "relevance_score": 0.12, "document": {"text": "Stocks fell."}}]}, query="cats?")
buf = io.BytesIO(); Image.new("RGB", (64, 64), (220, 40, 40)).save(buf, "PNG")
import base64
show({"created": 0, "data": [{"b64_json": base64.b64encode(buf.getvalue()).decode()}]}, params={"prompt": "red"})
wav = io.BytesIO()
with wave.open(wav, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(bytes(16000))
show(wav.getvalue(), text="hello")
"""


CHATBOX = """\
from xinference_nb import Client
from xinference_nb.parse import parse_model
from xinference_nb.widgets import ChatBox
client = Client()
client.register_model("LLM", parse_model({path!r}, model_family="browser-tiny", model_name="browser-llm").to_json())
uid = client.launch_model(model_name="browser-llm", model_engine="transformers", n_gpu=None)
ChatBox(uid, max_tokens=12)
"""

REGISTRATION = """\
from xinference_nb import Client
Client().get_model_registration("embedding", "browser-minilm")
"""


def _write_notebook(root: Path, llama_dir: Path) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(
        "from xinference_nb.widgets import RegisterForm\nform = RegisterForm()\nform"), new_code_cell(DISPLAYS),
        new_code_cell(CHATBOX.format(path=str(llama_dir))), new_code_cell(REGISTRATION)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "register.ipynb")
    return "register.ipynb"


def test_register_form_in_jupyterlab(lab, minilm_dir, endless_llama_dir, nb_home):
    from playwright.sync_api import expect, sync_playwright

    url, root = lab
    name = _write_notebook(root, endless_llama_dir)   # a tiny Llama that never ends before max_tokens
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "browser-failure.png").unlink(missing_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(f"{url}/lab/tree/{name}", wait_until="domcontentloaded", timeout=60_000)
            cell = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            cell.wait_for(timeout=60_000)
            # wait until the kernel is connected and idle, then run the cell (again if it was not taken)
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)
            form = page.locator(".xnb-register-form")
            for attempt in range(3):
                cell.click()
                page.keyboard.press("Shift+Enter")
                try:
                    form.wait_for(timeout=40_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise

            def text_input(label: str):
                return form.locator(".widget-text", has=page.locator(f"label:text-is('{label}')")).locator("input")

            text_input("path or hub id").fill(str(minilm_dir))
            text_input("name").fill("browser-minilm")
            form.locator("button", has_text="Parse").click()

            def field(path: str):
                return form.locator(".widget-hbox", has=page.locator(f"code:text-is('{path}')")).locator(
                    "input, textarea").first

            expect(field("dimensions")).to_have_value("384", timeout=30_000)
            expect(field("max_tokens")).to_have_value("256")
            expect(field("model_name")).to_have_value("browser-minilm")
            expect(field("model_specs[0].model_uri")).to_have_value(f"file://{minilm_dir}")
            expect(form.get_by_text("from 1_Pooling/config.json", exact=False).first).to_be_visible()
            model_type = form.locator(".widget-dropdown", has=page.locator("label:text-is('model type')"))
            expect(model_type.locator("select")).to_have_value("embedding")
            page.screenshot(path=str(ARTIFACTS / "browser-register-form-parsed.png"), full_page=True)

            form.locator("button", has_text="Register").click()
            expect(form.get_by_text("registered custom embedding model 'browser-minilm' (persisted)",
                                    exact=False)).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "browser-register-form-registered.png"), full_page=True)

            # edit it: the picker of custom registrations opens it, Save overwrites it in place
            picker = form.locator(".widget-dropdown", has=page.locator("label:text-is('edit')")).locator("select")
            picker.select_option(label="browser-minilm (embedding)")
            expect(form.get_by_text("Edit custom embedding model", exact=False)).to_be_visible(timeout=30_000)
            expect(form.get_by_text("from the registration 'browser-minilm'", exact=False).first).to_be_visible()
            field("max_tokens").fill("200")
            field("max_tokens").press("Tab")
            form.locator("button", has_text="Save").click()
            expect(form.get_by_text("saved custom embedding model 'browser-minilm' in place",
                                    exact=False)).to_be_visible(timeout=30_000)

            # the rich displays, rendered by JupyterLab itself
            page.locator(".jp-Notebook .jp-Cell .cm-content").nth(1).click()
            page.keyboard.press("Shift+Enter")
            outputs = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea").first
            expect(outputs.locator("audio").first).to_be_attached(timeout=60_000)
            expect(outputs.locator("img[src^='data:image/png']").first).to_be_visible()
            expect(outputs.get_by_text("Paris", exact=False).first).to_be_visible()
            expect(outputs.locator("details summary", has_text="reasoning").first).to_be_visible()
            expect(outputs.get_by_text("cosine similarity").first).to_be_visible()
            expect(outputs.get_by_text("rerank: cats?").first).to_be_visible()
            outputs.scroll_into_view_if_needed()
            outputs.screenshot(path=str(ARTIFACTS / "browser-displays.png"))

            # a streaming chat box on a real (tiny, random) model launched in the kernel
            page.locator(".jp-Notebook .jp-Cell .cm-content").nth(2).click()
            page.keyboard.press("Shift+Enter")
            box = page.locator(".xnb-chatbox").first
            box.wait_for(timeout=120_000)
            box.locator("textarea").first.fill("Hello there!")
            box.locator("button", has_text="Send").click()
            expect(box.locator(".msg.assistant").first).to_be_visible(timeout=60_000)
            expect(box.locator(".msg.user").first).to_contain_text("Hello there!")
            expect(box.locator("textarea").first).to_have_value("")                   # taken at once
            expect(box.get_by_text("tokens/s", exact=False).first).to_be_visible(timeout=60_000)  # complete
            expect(box.get_by_text("▌")).to_have_count(0)                              # no streaming cursor
            box.scroll_into_view_if_needed()
            box.screenshot(path=str(ARTIFACTS / "browser-chatbox.png"))

            # Stop: a long reply streams (the turn runs on its own thread, so the kernel takes the click)
            max_tokens = box.locator(".widget-inline-hbox", has=page.locator("label:text-is('max tokens')"))
            max_tokens.locator("input").fill("1500")
            max_tokens.locator("input").press("Enter")
            box.locator("textarea").first.fill("Tell me a long story")
            box.locator("button", has_text="Send").click()
            stop = box.locator("button", has_text="Stop")
            expect(box.get_by_text("▌").first).to_be_visible(timeout=60_000)   # streaming
            stop.click()
            expect(box.get_by_text("[stopped]")).to_have_count(1, timeout=60_000)
            expect(stop).to_be_hidden()
            expect(box.locator("button", has_text="Send")).to_be_enabled()
            expect(box.locator(".msg.assistant")).to_have_count(2)
            expect(box.get_by_text("stopped: the reply so far is kept", exact=False)).to_be_visible()
            box.screenshot(path=str(ARTIFACTS / "browser-chatbox-stopped.png"))
            max_tokens.locator("input").fill("4")
            max_tokens.locator("input").press("Enter")
            box.locator("textarea").first.fill("And then?")
            box.locator("button", has_text="Send").click()
            expect(box.locator(".msg.assistant")).to_have_count(3, timeout=60_000)
            expect(box.get_by_text("stopped: the reply so far", exact=False)).to_have_count(0, timeout=60_000)
            expect(box.get_by_text("tokens/s", exact=False).first).to_be_visible(timeout=60_000)
            expect(box.get_by_text("▌")).to_have_count(0)
            expect(box.get_by_text("[stopped]")).to_have_count(1)

            # a registration shows as JSON (JupyterLab's JSON viewer)
            page.locator(".jp-Notebook .jp-Cell .cm-content").nth(3).click()
            page.keyboard.press("Shift+Enter")
            json_view = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-RenderedJSON")
            expect(json_view).to_be_visible(timeout=60_000)
            expect(json_view).to_contain_text("browser-minilm")
            expect(json_view).to_contain_text("dimensions")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    files = list((nb_home / "model" / "embedding").rglob("*.json"))
    docs = [json.loads(f.read_text()) for f in files]
    assert [d["model_name"] for d in docs] == ["browser-minilm"]
    assert docs[0]["dimensions"] == 384 and docs[0]["model_specs"][0]["model_uri"] == f"file://{minilm_dir}"
    assert docs[0]["max_tokens"] == 200   # edited in the form, saved in place
