"""RegisterForm: path (or hub id) + type + family → Parse fills every field (with where it came from)
→ edit → Validate (errors inline) → optional smoke test → Register (persist toggle). Edit mode
(``RegisterForm.edit(type, name)`` or the "edit" picker) opens a custom registration, every field
filled from its document, and saves it in place."""
from __future__ import annotations

import json
from typing import Any, Optional

import ipywidgets as W

from ..display import flatten_document
from ..display._html import esc
from ..errors import FieldIssue, RegistryError, SpecError, XinfError
from ..model_types import type_names
from ..parse.where import is_remote, parse_where, parse_with
from ._common import FieldEditor, default_client, status_html, where

HIDDEN = ("version", "is_builtin", "virtualenv", "cache_config", "featured", "updated_at")
TYPES = ["auto", *type_names()]
SAMPLE_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": "Hello! What can you do?"}]

# where the fields of what a RegisterForm registered after a parse came from, for this kernel's life:
# (where the client runs, model type, model name) -> {field path: (value registered, source)}; an
# edit shows a field that still has that value as coming from there, the others "from the registration"
_PARSED_SOURCES: dict[tuple[str, str, str], dict[str, tuple[Any, str]]] = {}


FROM_REGISTRATION = "the registration "   # + the name: the source of a field filled from a stored document


def _registration_source(name: str) -> str:
    return f"{FROM_REGISTRATION}{name!r}"


def _model_path_of(doc: dict) -> str:
    """The local path a document's files are at (its first model_uri, without file://), or ""."""
    uri = doc.get("model_uri") or next((s.get("model_uri") for s in doc.get("model_specs") or []
                                        if isinstance(s, dict) and s.get("model_uri")), None)
    if not isinstance(uri, str):
        return ""
    return uri[len("file://"):] if uri.startswith("file://") else uri


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
    else on the server through its auto-parse route), "here" or "server".

    Edit mode: ``RegisterForm.edit(model_type, model_name)`` (or ``load_registration``, or the "edit"
    picker of the custom registrations) fills every field from the stored document; each field says
    where it came from (its model files, when this kernel's form registered it after a parse and the
    value is unchanged, else "the registration"). Save overwrites the same name (with the persist
    toggle; a failed save changes nothing and says why); a new model_name saves a copy under that
    name, the old registration stays, and the form then edits the copy. Built-in models cannot be
    edited, nor can the model type change."""

    def __init__(self, client: Any = None, path: str = "", model_type: Optional[str] = None, model_family: str = "",
                 model_name: str = "", preview_messages: Optional[list] = None, parse_on: str = "auto"):
        self._client = client
        self.parsed_on: Optional[str] = None
        self.parsed: Any = None
        self.editing: Optional[tuple[str, str]] = None   # (model type, name) of the registration being edited
        self._origin: Optional[dict] = None              # the document the fields were filled from
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
        self.existing = W.Dropdown(options=[("—", None)], value=None, description="edit", style=wide,
                                   layout=W.Layout(width="auto"))
        self.heading = W.HTML("<b>Register a custom model</b>" + (f" on <code>{esc(client.endpoint)}</code>"
                                                                  if remote else ""))
        self.refresh_existing()
        self.existing.observe(self._on_pick, names="value")
        self.parse_button.on_click(lambda _: self.parse())
        self.validate_button.on_click(lambda _: self.validate())
        self.register_button.on_click(lambda _: self.register())
        self.preview_button.on_click(lambda _: self.render_preview())
        self.add_class("xnb-register-form")
        super().__init__([
            self.heading, self.existing,
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

    # ------------------------------------------------------------------ edit mode
    @classmethod
    def edit(cls, model_type: Optional[str], model_name: str, client: Any = None, **kwargs: Any) -> "RegisterForm":
        """A form editing the custom registration ``model_name`` of ``model_type`` (None or "auto": the
        one type with a custom model of that name). RegistryError for a built-in model (those cannot be
        edited), ModelNotFound for a name that is not registered."""
        form = cls(client=client, **kwargs)
        form._open(model_type, model_name)
        return form

    def load_registration(self, model_type: Optional[str], model_name: str) -> bool:
        """Fill the form from a custom registration to edit it (what the "edit" picker does); False,
        with the reason in the status line and the form unchanged, when it cannot be edited."""
        try:
            self._open(model_type, model_name)
        except XinfError as exc:
            self._say(str(exc), "error")
            self._pick_quietly(self.editing)
            return False
        return True

    def _open(self, model_type: Optional[str], model_name: str) -> None:
        mtype, doc = self._stored(model_type, model_name)
        self.editing, self.parsed, self.parsed_on = (mtype, model_name), None, None
        self.model_type.value = mtype
        self.path.value = _model_path_of(doc)
        self.family.value = doc.get("model_family") or ""
        self.name.value = model_name
        self.persist.value = self._persisted(mtype, model_name)
        self.overwrite.value = False
        self._fill(doc, self._sources_of(mtype, model_name, doc))
        self._show_editing()
        label = _registration_source(model_name)
        n_files = sum(1 for f in self.fields.values() if f.source and f.source != label)
        how = f"{n_files} as parsed from its files, the others " if n_files else ""
        self._say(f"editing custom {mtype} model {model_name!r} ({'persisted' if self.persist.value else 'for this session'}): "
                  f"{len(self.fields)} fields, {how}from the registration. Save overwrites it in place; a new "
                  "model_name saves a copy under that name (this one stays)")
        self.render_preview()
        self._pick_quietly(self.editing)

    def _registrations(self, types: Optional[list[str]] = None) -> list[tuple[str, str, bool]]:
        """(model type, name, is_builtin) of every registration the client lists (a type it refuses: none)."""
        out = []
        for mtype in types or type_names():
            try:
                rows = self.client.list_model_registrations(mtype)
            except (XinfError, OSError):
                continue
            out += [(mtype, r.get("model_name"), bool(r.get("is_builtin"))) for r in rows]
        return out

    def _stored(self, model_type: Optional[str], model_name: str) -> tuple[str, dict]:
        """(type, document) of the custom registration to edit; the errors say why it cannot be."""
        from ..errors import ModelNotFound, short_value
        from ..spec import normalize_model_type

        if not isinstance(model_name, str) or not model_name.strip():
            raise SpecError([FieldIssue("model_name", "the name of a custom registration to edit, got "
                                        f"{short_value(model_name)}")])
        if model_type in (None, "auto"):
            found = [(t, builtin) for t, n, builtin in self._registrations() if n == model_name]
            custom = [t for t, builtin in found if not builtin]
            if len(custom) > 1:
                raise RegistryError(f"{model_name!r} is a custom model of several types ({', '.join(custom)}); "
                                    "say which one to edit (model_type=..., -t)")
            if not found:
                raise ModelNotFound(f"no model named {model_name!r} is registered (of any type); the custom ones "
                                    "can be edited (see the 'edit' list)")
            model_type = custom[0] if custom else found[0][0]
        mtype = normalize_model_type(model_type)
        builtin = any(b for _, n, b in self._registrations([mtype]) if n == model_name)
        doc = {} if builtin else self.client.get_model_registration(mtype, model_name)
        if builtin or doc.get("is_builtin"):
            raise RegistryError(f"model_name: {model_name!r} is a built-in {mtype} model and cannot be edited; only "
                                "custom registrations can (register your own copy under another name)")
        return mtype, dict(doc)

    def _persisted(self, mtype: str, name: str) -> bool:
        """Whether the registration is kept across sessions (a server's: assumed, as Xinference keeps them)."""
        if is_remote(self.client):
            return True
        from ..registry import get_registry

        return get_registry().store.exists(mtype, name)

    def _sources_of(self, mtype: str, name: str, doc: dict) -> dict[str, str]:
        recorded = _PARSED_SOURCES.get((where(self.client), mtype, name), {})
        out = {}
        for path, value in flatten_document(doc).items():
            rec = recorded.get(path)
            out[path] = rec[1] if rec is not None and rec[0] == value else _registration_source(name)
        return out

    def _remember_sources(self, mtype: str, name: str, doc: dict) -> None:
        """After a save: which fields still hold the value read from the model's files, and from where."""
        from ..spec import load_spec, to_document

        stored = flatten_document(to_document(load_spec(mtype, doc)))
        _PARSED_SOURCES[(where(self.client), mtype, name)] = {
            path: (stored[path], editor.source) for path, editor in self.fields.items()
            if path in stored and editor.source and not editor.source.startswith(FROM_REGISTRATION)
            and editor.value == editor.original}

    def _show_editing(self) -> None:
        mtype, name = self.editing  # type: ignore[misc]
        remote = f" on <code>{esc(self.client.endpoint)}</code>" if is_remote(self.client) else ""
        self.heading.value = f"<b>Edit custom {esc(mtype)} model <code>{esc(name)}</code></b>{remote}"
        self.register_button.description = "Save"

    def refresh_existing(self) -> None:
        """List the custom registrations in the "edit" picker (hidden when there are none)."""
        options = [("—", None)] + [(f"{name} ({mtype})", (mtype, name)) for mtype, name, builtin in self._registrations()
                                   if not builtin and isinstance(name, str)]
        self._picking = True
        try:
            self.existing.options = options
            self.existing.value = self.editing if any(v == self.editing for _, v in options) else None
        finally:
            self._picking = False
        self.existing.layout.display = None if len(options) > 1 else "none"

    def _pick_quietly(self, value: Optional[tuple[str, str]]) -> None:
        self._picking = True
        try:
            self.existing.value = value if any(v == value for _, v in self.existing.options) else None
        finally:
            self._picking = False

    _picking = False

    def _on_pick(self, change: dict) -> None:
        if not self._picking and change["new"] is not None and change["new"] != self.editing:
            self.load_registration(*change["new"])

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
        self.fields, self.hidden, self._origin = {}, {}, doc
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
        order = [p for p in flatten_document(self._origin) if p in flat] if self._origin is not None else []
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
        """Validate, optionally smoke-test, then register (persisted if the toggle says so). Editing:
        save in place (the same model_name), or a copy under a new model_name."""
        mtype = self.current_type or "LLM"
        if self.editing is not None and mtype != self.editing[0]:
            self._say(f"model type: this form edits the {self.editing[0]} model {self.editing[1]!r}, whose type "
                      f"cannot change to {mtype}; set it back, or register the {mtype} model from a new form", "error")
            return False
        if self.validate():
            return False
        doc = self.document()
        name = doc.get("model_name")
        in_place = self.editing is not None and name == self.editing[1]
        try:
            extra = self._save(mtype, doc, overwrite=in_place or self.overwrite.value)
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
        if extra is not None:
            self._saved(mtype, doc, in_place, extra)
        return extra is not None

    def _save(self, mtype: str, doc: dict, overwrite: bool) -> Optional[str]:
        """Register ``doc`` (after the smoke test, when ticked); the smoke test's summary ("" without
        one), or None when it failed (said in the status line; the registry is as it was)."""
        client, name = self.client, doc.get("model_name")
        if not self.smoke.value:
            client.register_model(mtype, json.dumps(doc), persist=self.persist.value, overwrite=overwrite)
            return ""
        if not overwrite and self._previous(mtype, name) is not None:
            self._say(f"model_name: {name!r} is already registered as a custom {mtype} model; tick "
                      "'overwrite' to replace it", "error")
            return None
        summary = self.smoke_test(doc)
        if summary is None:
            return None
        client.register_model(mtype, json.dumps(doc), persist=self.persist.value, overwrite=True)
        return f"; smoke test: {summary}"

    def _saved(self, mtype: str, doc: dict, in_place: bool, extra: str) -> None:
        name = doc["model_name"]
        self.registered = name
        self._remember_sources(mtype, name, doc)
        place = "persisted" if self.persist.value else "for this session"
        if is_remote(self.client):
            place += f", on {self.client.endpoint}"
        if in_place:
            text = f"saved custom {mtype} model {name!r} in place ({place}){extra}"
        elif self.editing is not None:
            text = (f"saved a copy as custom {mtype} model {name!r} ({place}){extra}; {self.editing[1]!r} is "
                    "unchanged (unregister it if you meant to rename it); this form now edits the copy")
            self.editing = (mtype, name)
            self._show_editing()
        else:
            text = f"registered custom {mtype} model {name!r} ({place}){extra}"
        self.refresh_existing()
        self._say(text, "ok")

    def _previous(self, mtype: str, name: Any) -> Optional[tuple[dict, bool]]:
        """The custom registration named ``name`` now, and whether it is persisted (None: there is none)."""
        if not any(n == name and not b for _, n, b in self._registrations([mtype])):
            return None
        return dict(self.client.get_model_registration(mtype, name)), self._persisted(mtype, name)

    def smoke_test(self, doc: Optional[dict] = None) -> Optional[str]:
        """Register for this session, launch, make one short call, terminate. Returns a summary,
        or None when anything failed, and then the registry is as it was (a registration of that
        name that was replaced for the test is put back)."""
        from ..engines import engines_for

        mtype = self.current_type or "LLM"
        doc = doc or self.document()
        client = self.client
        name = doc["model_name"]
        before = self._previous(mtype, name)
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
                if before is None:
                    client.unregister_model(mtype, name)
                else:
                    client.register_model(mtype, json.dumps(before[0]), persist=before[1], overwrite=True)
            except XinfError:
                pass
            kept = "the registration is as it was" if before is not None else "nothing registered"
            self._say(f"smoke test failed, {kept}: {type(exc).__name__}: {exc}", "error")
            return None
        finally:
            if uid is not None:
                try:
                    client.terminate_model(uid)
                except XinfError:
                    pass
        return summary
