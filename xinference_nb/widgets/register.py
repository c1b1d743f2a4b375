"""RegisterForm: path (or hub id) + type + family → Parse fills every field (with where it came from)
→ edit → Validate (errors inline) → optional smoke test → Register (persist toggle)."""
from __future__ import annotations

import json
from typing import Any, Optional

import ipywidgets as W

from ..display import flatten_document
from ..display._html import esc
from ..errors import FieldIssue, SpecError, XinfError
from ..model_types import type_names
from ..parse.where import is_remote, parse_where, parse_with
from ._common import FieldEditor, default_client, status_html

HIDDEN = ("version", "is_builtin", "virtualenv", "cache_config", "featured", "updated_at")
TYPES = ["auto", *type_names()]
SAMPLE_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": "Hello! What can you do?"}]


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    specs: dict[int, dict[str, Any]] = {}
    for path, value in flat.items():
        if path.startswith("model_specs[") and "]." in path:
            idx, key = path[len("model_specs["):].split("].", 1)
            specs.setdefault(int(idx), {})[key] = value
            doc.setdefault("model_specs", None)
        else:
            doc[path] = value
    if specs:
        doc["model_specs"] = [specs[i] for i in sorted(specs)]
    return doc


def _smoke_call(handle: Any, model_type: str, doc: dict) -> str:
    """One short call per model type; returns a one-line summary."""
    if model_type == "LLM":
        if "chat" in (doc.get("model_ability") or []):
            out = handle.chat([{"role": "user", "content": "Hi"}], generate_config={"max_tokens": 4})
            return f"chat answered {out['choices'][0]['message'].get('content', '')!r}"
        out = handle.generate("Hi", generate_config={"max_tokens": 4})
        return f"generate answered {out['choices'][0].get('text', '')!r}"
    if model_type == "embedding":
        out = handle.create_embedding("hello")
        return f"embedding of {len(out['data'][0]['embedding'])} dims"
    if model_type == "rerank":
        out = handle.rerank(["a cat", "a car"], "cats")
        return f"rerank scored {len(out['results'])} documents"
    if model_type == "image":
        out = handle.text_to_image("a red apple", size="64*64", response_format="b64_json",
                                   num_inference_steps=1)
        return f"{len(out['data'])} image(s)"
    if model_type == "audio":
        abilities = doc.get("model_ability") or []
        if any("2text" in a or "transcri" in a for a in abilities):
            import io
            import wave

            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 8000)
            out = handle.transcriptions(buf.getvalue())
            return f"transcribed {out.get('text', '')!r}"
        audio = handle.speech("hello")
        return f"speech: {len(audio)} bytes"
    return "launched"


class RegisterForm(W.VBox):
    """Register a custom model from its files. Drive it from code too: set ``path.value``, call
    ``parse()`` (or click ``parse_button``), edit ``fields[...]``, then ``register()``.

    With a remote ``client`` (``Client("http://...")``) the model is registered on that server, and
    ``parse_on`` says where the files are read: "auto" (here when the path exists on this machine,
    else on the server through its auto-parse route), "here" or "server"."""

    def __init__(self, client: Any = None, path: str = "", model_type: Optional[str] = None, model_family: str = "",
                 model_name: str = "", preview_messages: Optional[list] = None, parse_on: str = "auto"):
        self._client = client
        self.parsed_on: Optional[str] = None
        self.parsed: Any = None
        self.fields: dict[str, FieldEditor] = {}
        self.hidden: dict[str, Any] = {}
        self.preview_messages = preview_messages or SAMPLE_MESSAGES
        self.registered: Optional[str] = None

        wide = {"description_width": "110px"}
        self.model_type = W.Dropdown(options=TYPES, value=model_type if model_type in TYPES else "auto",
                                     description="model type", style=wide)
        self.path = W.Text(value=str(path or ""), description="path or hub id",
                           placeholder="/path/to/model-folder, file.gguf or org/name", layout=W.Layout(width="95%"),
                           style=wide)
        self.family = W.Text(value=model_family, description="family", placeholder="optional (e.g. qwen2.5-instruct)",
                             style=wide)
        self.name = W.Text(value=model_name, description="name", placeholder="optional: default from the folder")
        self.parse_button = W.Button(description="Parse", button_style="info", icon="search")
        remote = is_remote(client)
        self.parse_on = W.Dropdown(options=[("auto (where the files are)", "auto"), ("this kernel", "here"),
                                            ("the server", "server")], value=parse_on, description="parse on",
                                   style=wide, layout=W.Layout(display=None if remote else "none"))
        self.status = W.HTML("")
        self.fields_box = W.VBox([])
        self.preview = W.Textarea(value="", description="preview", disabled=True,
                                  layout=W.Layout(width="95%", height="8em", display="none"))
        self.preview_button = W.Button(description="Preview template", icon="eye",
                                       layout=W.Layout(display="none"))
        self.persist = W.Checkbox(value=True, description="persist (keep across sessions)", indent=False,
                                  layout=W.Layout(width="auto"))
        self.overwrite = W.Checkbox(value=False, description="overwrite an existing custom one", indent=False,
                                    layout=W.Layout(width="auto"))
        self.smoke = W.Checkbox(value=False, description="smoke test before saving (launch, one call, terminate)",
                                indent=False, layout=W.Layout(width="auto"))
        self.validate_button = W.Button(description="Validate", icon="check", disabled=True)
        self.register_button = W.Button(description="Register", button_style="success", icon="save", disabled=True)
        self.parse_button.on_click(lambda _: self.parse())
        self.validate_button.on_click(lambda _: self.validate())
        self.register_button.on_click(lambda _: self.register())
        self.preview_button.on_click(lambda _: self.render_preview())
        self.add_class("xnb-register-form")
        super().__init__([
            W.HTML("<b>Register a custom model</b>" + (f" on <code>{esc(client.endpoint)}</code>" if remote else "")),
            W.HBox([self.model_type, self.parse_button]), self.path, self.parse_on, W.HBox([self.family, self.name]),
            self.status, self.fields_box, W.HBox([self.preview_button]), self.preview,
            W.HBox([self.persist, self.overwrite]), self.smoke,
            W.HBox([self.validate_button, self.register_button]),
        ])

    # ------------------------------------------------------------------ state
    @property
    def client(self) -> Any:
        self._client = default_client(self._client)
        return self._client

    @property
    def current_type(self) -> Optional[str]:
        if self.parsed is not None and self.model_type.value == "auto":
            return getattr(self.parsed, "model_type", None)
        return None if self.model_type.value == "auto" else self.model_type.value

    def _say(self, text: str, level: str = "info") -> None:
        self.status.value = status_html(text, level)

    # ------------------------------------------------------------------ parse
    def parse(self) -> Any:
        """parse_model(path, type, family, name) — here, or on the server of a remote client (see
        ``parse_on``) — and fill the fields from it."""
        path = self.path.value.strip()
        if not path:
            self._say("give a model folder, a .gguf file or a hub id first", "error")
            return None
        mtype = None if self.model_type.value == "auto" else self.model_type.value
        try:
            on = parse_where(self.client, path, self.parse_on.value)
            parsed = parse_with(self.client, path, model_type=mtype, model_family=self.family.value.strip() or None,
                                model_name=self.name.value.strip() or None, where_=on)
        except (XinfError, OSError, ValueError) as exc:
            self._say(str(exc), "error")
            return None
        self.parsed, self.parsed_on = parsed, on
        if self.model_type.value == "auto" and getattr(parsed, "model_type", None) in TYPES:
            self.model_type.value = parsed.model_type
        self._fill(self._document_of(parsed), getattr(parsed, "sources", {}) or {})
        warnings = list(getattr(parsed, "warnings", []) or [])
        n_from = sum(1 for f in self.fields.values() if f.source_hint)
        text = f"parsed a {parsed.model_type} model: {len(self.fields)} fields, {n_from} read from its files"
        if on == "server":
            text += f" (parsed on the server at {self.client.endpoint})"
        self._say(text + ("".join(f"\n⚠ {w}" for w in warnings)), "warning" if warnings else "ok")
        self.render_preview()
        return parsed

    @staticmethod
    def _document_of(parsed: Any) -> dict:
        spec = getattr(parsed, "spec", None)
        if spec is not None and hasattr(spec, "model_dump"):
            return spec.model_dump(mode="json")
        doc = parsed.to_json()
        return json.loads(doc) if isinstance(doc, str) else dict(doc)

    def _fill(self, doc: dict, sources: dict) -> None:
        self.fields, self.hidden = {}, {}
        for path, value in flatten_document(doc).items():
            if path in HIDDEN:
                self.hidden[path] = value
                continue
            self.fields[path] = FieldEditor(path, value, sources.get(path))
        self.fields_box.children = [f.box for f in self.fields.values()]
        self.validate_button.disabled = self.register_button.disabled = False
        is_llm = self.current_type == "LLM"
        self.preview.layout.display = self.preview_button.layout.display = None if is_llm else "none"

    # ------------------------------------------------------------------ document / validate
    def document(self) -> dict:
        """The document the fields describe now (ValueError naming the first unreadable field)."""
        flat = dict(self.hidden)
        bad = []
        for path, editor in self.fields.items():
            try:
                flat[path] = editor.value
                editor.set_error(None)
            except ValueError as exc:
                editor.set_error(str(exc))
                bad.append(FieldIssue(path, str(exc)))
        if bad:
            raise SpecError(bad, model_type=self.current_type)
        order = [p for p in flatten_document(self._document_of(self.parsed)) if p in flat] if self.parsed else []
        flat = {p: flat[p] for p in order + [p for p in flat if p not in order]}
        return _unflatten(flat)

    def validate(self) -> list[FieldIssue]:
        """Check the document (schema, cross-field rules, local paths); errors appear under their
        fields and are returned."""
        from ..spec import load_spec, path_issues

        for editor in self.fields.values():
            editor.set_error(None)
        if not self.fields:
            self._say("parse a model first", "error")
            return [FieldIssue("", "nothing parsed yet")]
        try:
            doc = self.document()
            spec = load_spec(self.current_type or "LLM", doc)
            # a remote client's paths are the server's files: the server checks them when registering
            issues = [] if is_remote(self.client) else path_issues(spec)
        except SpecError as exc:
            issues = exc.issues
        elsewhere = []
        for issue in issues:
            editor = self.fields.get(issue.path) or self._closest(issue.path)
            if editor is not None:
                editor.set_error(issue.message if editor.path == issue.path else str(issue))
            else:
                elsewhere.append(str(issue))
        if issues:
            self._say(f"{len(issues)} problem{'s' if len(issues) != 1 else ''} (see the fields)"
                      + "".join(f"\n{e}" for e in elsewhere), "error")
        else:
            self._say("the document is valid", "ok")
        return list(issues)

    def _closest(self, path: str) -> Optional[FieldEditor]:
        while path:
            if path in self.fields:
                return self.fields[path]
            for sep in (".", "["):
                if sep in path:
                    path = path.rsplit(sep, 1)[0]
                    break
            else:
                return None
        return None

    # ------------------------------------------------------------------ preview
    def render_preview(self, messages: Optional[list] = None) -> Optional[str]:
        """The chat template (as edited) rendered on sample messages."""
        if self.current_type != "LLM" or "chat_template" not in self.fields:
            return None
        template = self.fields["chat_template"].widget.value
        messages = messages or self.preview_messages
        if not template.strip():
            text = "(no chat template)"
        else:
            try:
                from ..chat import render_chat_template

                text = render_chat_template(template, messages)
            except Exception as exc:  # noqa: BLE001 - shown to the user, whatever the template did
                text = f"(the chat template does not render: {type(exc).__name__}: {exc})"
        self.preview.value = text
        return text

    # ------------------------------------------------------------------ register
    def register(self) -> bool:
        """Validate, optionally smoke-test, then register (persisted if the toggle says so)."""
        if self.validate():
            return False
        mtype = self.current_type or "LLM"
        doc = self.document()
        name = doc.get("model_name")
        client = self.client
        try:
            if self.smoke.value and not self.overwrite.value and any(
                    r.get("model_name") == name and not r.get("is_builtin")
                    for r in client.list_model_registrations(mtype)):
                self._say(f"model_name: {name!r} is already registered as a custom {mtype} model; tick "
                          "'overwrite' to replace it", "error")
                return False
            if self.smoke.value:
                summary = self.smoke_test(doc)
                if summary is None:
                    return False
                client.register_model(mtype, json.dumps(doc), persist=self.persist.value, overwrite=True)
                extra = f"; smoke test: {summary}"
            else:
                client.register_model(mtype, json.dumps(doc), persist=self.persist.value,
                                      overwrite=self.overwrite.value)
                extra = ""
        except SpecError as exc:
            for issue in exc.issues:
                editor = self.fields.get(issue.path) or self._closest(issue.path)
                if editor is not None:
                    editor.set_error(issue.message)
            self._say(str(exc), "error")
            return False
        except XinfError as exc:
            self._say(str(exc), "error")
            return False
        self.registered = name
        where = "persisted" if self.persist.value else "for this session"
        if is_remote(client):
            where += f", on {client.endpoint}"
        self._say(f"registered custom {mtype} model {name!r} ({where}){extra}", "ok")
        return True

    def smoke_test(self, doc: Optional[dict] = None) -> Optional[str]:
        """Register for this session, launch, make one short call, terminate. Returns a summary,
        or None (and unregisters) when anything failed."""
        from ..engines import engines_for

        mtype = self.current_type or "LLM"
        doc = doc or self.document()
        client = self.client
        name = doc["model_name"]
        client.register_model(mtype, json.dumps(doc), persist=False, overwrite=True)
        kwargs: dict[str, Any] = {}
        if mtype == "LLM" and not is_remote(client):  # a server picks among its own engines
            fmt = (doc.get("model_specs") or [{}])[0].get("model_format")
            engines = [e for e in engines_for("LLM", fmt) if e.available()] or engines_for("LLM", fmt)
            if engines:
                kwargs["model_engine"] = engines[0].name
        uid = None
        self._say(f"smoke test: launching {name!r}…")
        try:
            uid = client.launch_model(model_name=name, model_type=mtype, **kwargs)
            summary = _smoke_call(client.get_model(uid), mtype, doc)
        except Exception as exc:  # noqa: BLE001 - a failed smoke test is reported, not raised
            try:
                client.unregister_model(mtype, name)
            except XinfError:
                pass
            self._say(f"smoke test failed, nothing registered: {type(exc).__name__}: {exc}", "error")
            return None
        finally:
            if uid is not None:
                try:
                    client.terminate_model(uid)
                except XinfError:
                    pass
        return summary
