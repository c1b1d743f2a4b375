"""LaunchForm: pick a registration, an engine and a spec (format / size / quantization), optional LoRA
adapters, see the memory estimate against free memory, launch with a progress bar."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import ipywidgets as W

from ..display import LaunchedModel
from ..display._html import esc, human_bytes
from ..errors import FieldIssue, LaunchOptionError, XinfError
from ..metadata.quant import BNB_QUANTIZATIONS
from ..metadata.weights import weight_files_bytes
from ..model_types import find_model_type, type_names
from ._common import default_client, is_remote, status_html

TYPES = type_names()
LORA_TYPES = ("LLM", "image")   # the types whose engines load LoRA adapters (peft_model_config)


def parse_lora_lines(text: str) -> list[dict[str, str]]:
    """The LoRA field's lines ("NAME PATH", one adapter per line; blank lines skipped) as
    peft_model_config's lora_list; LaunchOptionError naming a line without both parts."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2:
            raise LaunchOptionError([FieldIssue("peft_model_config", f"LoRA line {i} ({line.strip()!r}) must be "
                                                                      "NAME PATH, e.g. 'my-lora /models/my-lora'")])
        out.append({"lora_name": parts[0], "local_path": parts[1]})
    return out


def files_size(path: Optional[str]) -> Optional[int]:
    """Bytes of the weight files at a local path (a file, or a folder searched recursively), None
    when there are none; the same count as the manager's estimate (metadata.weight_files_bytes)."""
    if not path:
        return None
    p = Path(path[7:] if path.startswith("file://") else path)
    if not p.exists():
        return None
    return weight_files_bytes(p) or None


def _set_options(dropdown: W.Dropdown, options: list) -> None:
    """Replace a dropdown's choices, keeping its value when still offered, else the first."""
    previous = dropdown.value
    dropdown.options = options
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if previous in values:
        dropdown.value = previous
    elif values:
        dropdown.value = values[0]


class LaunchForm(W.VBox):
    """Launch a registered model. From code: set the dropdowns' values, then ``launch()``; the uid
    lands in ``.uid`` and the handle in ``.model``. With a remote ``client`` the registrations, the
    engines and the launch are the server's (no memory estimate here: the files are there)."""

    def __init__(self, client: Any = None, model_type: str = "LLM", model_name: Optional[str] = None,
                 show_builtin: bool = False):
        self._client = client
        self.uid: Optional[str] = None
        self.model: Any = None
        self._spec_docs: list[dict] = []
        self._engines_cache: dict[tuple, Any] = {}
        self.model_type = W.Dropdown(options=TYPES, value=model_type, description="model type")
        self.show_builtin = W.Checkbox(value=show_builtin, description="show built-in", indent=False)
        self.model_name = W.Dropdown(options=[], description="model")
        self.engine = W.Dropdown(options=[], description="engine")
        self.model_format = W.Dropdown(options=[], description="format")
        self.size = W.Dropdown(options=[], description="size (B)")
        self.quantization = W.Dropdown(options=[], description="quantization")
        self.model_path = W.Text(value="", description="model path", placeholder="optional: override the files")
        self.model_uid = W.Text(value="", description="uid", placeholder="optional")
        self.lora = W.Textarea(value="", description="LoRA", placeholder="optional: one adapter per line, NAME PATH",
                               rows=2)
        self.n_gpu = W.Dropdown(options=[("auto", "auto"), ("CPU only", None)], value="auto", description="GPUs")
        self.memory = W.HTML("")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="", bar_style="info",
                                        layout=W.Layout(width="60%", visibility="hidden"))
        self.launch_button = W.Button(description="Launch", button_style="success", icon="rocket")
        self.status = W.HTML("")
        self.model_type.observe(lambda _: self.refresh(), "value")
        self.show_builtin.observe(lambda _: self.refresh(), "value")
        self.model_name.observe(lambda _: self._on_model(), "value")
        for w in (self.model_format, self.size, self.quantization):
            w.observe(lambda _: self._on_spec(), "value")
        self.lora.observe(lambda _: self.update_memory(), "value")
        self.launch_button.on_click(lambda _: self.launch())
        self.add_class("xnb-launch-form")
        title = "<b>Launch a model</b>" + (f" on <code>{esc(client.endpoint)}</code>" if is_remote(client) else "")
        super().__init__([W.HTML(title), W.HBox([self.model_type, self.show_builtin]),
                          self.model_name, self.engine, W.HBox([self.model_format, self.size]), self.quantization,
                          self.model_path, self.lora, W.HBox([self.model_uid, self.n_gpu]), self.memory,
                          W.HBox([self.launch_button, self.progress]), self.status])
        self.refresh(select=model_name)

    @property
    def client(self) -> Any:
        self._client = default_client(self._client)
        return self._client

    def _say(self, text: str, level: str = "info") -> None:
        self.status.value = status_html(text, level)

    # ------------------------------------------------------------------ choices
    def _show_type_fields(self) -> None:
        """Show the spec choices (format / size / quantization) only for types whose documents have them."""
        row = find_model_type(self.model_type.value)
        shown = set(row.launch_fields) if row is not None else set()
        for name in ("model_format", "size", "quantization"):
            getattr(self, name).layout.display = None if name in shown else "none"
        self.lora.layout.display = None if self.model_type.value in LORA_TYPES else "none"

    def refresh(self, select: Optional[str] = None) -> None:
        """Reload the registrations of the chosen type (custom ones first)."""
        self._engines_cache.clear()
        self._show_type_fields()
        try:
            rows = self.client.list_model_registrations(self.model_type.value)
        except XinfError as exc:
            self._say(str(exc), "error")
            rows = []
        custom = [r["model_name"] for r in rows if not r.get("is_builtin")]
        builtin = [r["model_name"] for r in rows if r.get("is_builtin")] if self.show_builtin.value else []
        names = custom + [n for n in builtin if n not in custom]
        if select and select not in names:
            names = [select] + names
        current = select or (self.model_name.value if self.model_name.value in names else None)
        self.model_name.options = names
        self.model_name.value = current or (names[0] if names else None)
        self._on_model()

    def _on_model(self) -> None:
        name = self.model_name.value
        self._spec_docs = []
        doc: dict = {}
        if name:
            try:
                doc = self.client.get_model_registration(self.model_type.value, name)
            except XinfError as exc:
                self._say(str(exc), "error")
        self._doc = doc
        self._spec_docs = list(doc.get("model_specs") or [])
        formats = sorted({s.get("model_format") for s in self._spec_docs if s.get("model_format")})
        _set_options(self.model_format, formats or ["(default)"])
        self._on_spec()

    def _matching(self) -> list[dict]:
        fmt = self.model_format.value
        return [s for s in self._spec_docs if fmt in (None, "(default)") or s.get("model_format") == fmt]

    def _on_spec(self) -> None:
        from ..engines import engines_for

        specs = self._matching()
        sizes = []
        for s in specs:
            v = s.get("model_size_in_billions")
            if v is not None and v not in sizes:
                sizes.append(v)
        _set_options(self.size, [(str(v), v) for v in sizes] or [("(default)", None)])
        quants = []
        for s in specs:
            if self.size.value is None or s.get("model_size_in_billions") == self.size.value:
                q = s.get("quantization")
                if q and q not in quants:
                    quants.append(q)
        if self.model_type.value == "LLM" and self.model_format.value in ("pytorch", "(default)"):
            quants += [q for q in BNB_QUANTIZATIONS if q != "none" and q not in quants]
        _set_options(self.quantization, quants or ["none"])
        fmt = None if self.model_format.value == "(default)" else self.model_format.value
        if is_remote(self.client):
            names = self._remote_engines(fmt)
        else:
            family = self._doc.get("model_family") if hasattr(self, "_doc") else None
            engines = engines_for(self.model_type.value, fmt, family)
            names = []
            for e in engines:
                label = e.name if e.available() else f"{e.name} (not installed: pip install {e.package})"
                names.append((label, e.name))
        _set_options(self.engine, names or [("(default)", None)])
        self.update_memory()

    def _remote_engines(self, fmt: Optional[str]) -> list[tuple[str, str]]:
        """The server's engines for the chosen model and format (query_engine_by_model_name), those it
        cannot run labelled with why."""
        name = self.model_name.value
        if not name:
            return []
        key = (self.model_type.value, name)
        if key not in self._engines_cache:
            try:
                self._engines_cache[key] = self.client.query_engine_by_model_name(name, self.model_type.value)
            except XinfError:
                self._engines_cache[key] = {}
        out = []
        for engine, choices in (self._engines_cache[key] or {}).items():
            if not isinstance(choices, list):  # Xinference lists an engine it cannot run with the reason
                out.append((f"{engine} (unavailable on the server: {str(choices)[:80]})", engine))
                continue
            rows = [c for c in choices if isinstance(c, dict)]
            if fmt and rows and not any(c.get("model_format") in (None, fmt) for c in rows):
                continue
            if rows and all(c.get("available") is False for c in rows):
                out.append((f"{engine} (not installed on the server)", engine))
            else:
                out.append((engine, engine))
        return out

    # ------------------------------------------------------------------ memory
    def _local_path(self) -> Optional[str]:
        path = self.model_path.value.strip() or None
        if path is None:
            for spec in self._matching():
                if spec.get("model_uri") and (self.size.value is None
                                              or spec.get("model_size_in_billions") == self.size.value):
                    path = spec["model_uri"]
                    break
        if path is None and hasattr(self, "_doc"):
            path = self._doc.get("model_uri")
        if path and path.startswith("file://"):
            path = path[7:]
        return path

    def estimate(self) -> Any:
        """The manager's memory estimate (weights, KV cache, overhead) for the current choices, or
        None when the files are not local (or the client is remote: they are the server's)."""
        if is_remote(self.client):
            return None
        path = self._local_path()
        if not path:
            return None
        fmt = None if self.model_format.value == "(default)" else self.model_format.value
        quant = self.quantization.value if self.quantization.value not in (None, "none") else None
        try:
            from ..memory import estimate_model

            return estimate_model(Path(path), self.model_type.value, fmt, quant,
                                  (getattr(self, "_doc", None) or {}).get("context_length"),
                                  adapters=[a["local_path"] for a in self._lora_list()])
        except Exception:  # noqa: BLE001 - an estimate must never break the form
            size = files_size(path)
            if size is None:
                return None
            from types import SimpleNamespace

            return SimpleNamespace(total_bytes=int(size * 1.2), describe=lambda: f"{human_bytes(size * 1.2)} (files)")

    def estimate_bytes(self) -> Optional[int]:
        est = self.estimate()
        return None if est is None else int(est.total_bytes)

    def update_memory(self) -> None:
        if is_remote(self.client):
            self.memory.value = (f"<span style='font-size:12px'>memory: the server at {esc(self.client.endpoint)} "
                                 "loads the files; it checks its own memory at launch</span>")
            return
        est = self.estimate()
        from ..memory import free_ram_bytes

        free = free_ram_bytes()
        if est is None:
            self.memory.value = f"<span style='font-size:12px'>memory: unknown (no local files) · free {human_bytes(free)}</span>"
            return
        ok = est.total_bytes < free
        color = "#2e7d32" if ok else "#c0392b"
        self.memory.value = (f"<span style='font-size:12px;color:{color}'>estimated memory {est.describe()} · free "
                             f"{human_bytes(free)}{'' if ok else ' — probably too big for this machine'}</span>")

    # ------------------------------------------------------------------ launch
    def _lora_list(self) -> list[dict[str, str]]:
        """The LoRA field as peft_model_config's lora_list ([] for types without adapters)."""
        if self.model_type.value not in LORA_TYPES:
            return []
        return parse_lora_lines(self.lora.value)

    def launch_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model_name": self.model_name.value, "model_type": self.model_type.value,
                                  "n_gpu": self.n_gpu.value}
        if self.engine.value:
            kwargs["model_engine"] = self.engine.value
        if self.model_format.value not in (None, "(default)"):
            kwargs["model_format"] = self.model_format.value
        if self.size.value is not None:
            kwargs["model_size_in_billions"] = self.size.value
        if self.quantization.value and self.quantization.value != "none" or (
                self.quantization.value == "none" and any(s.get("quantization") == "none" for s in self._matching())):
            kwargs["quantization"] = self.quantization.value
        if self.model_path.value.strip():
            kwargs["model_path"] = self.model_path.value.strip()
        if self.model_uid.value.strip():
            kwargs["model_uid"] = self.model_uid.value.strip()
        loras = self._lora_list()
        if loras:
            kwargs["peft_model_config"] = {"lora_list": loras}
        return kwargs

    def launch(self) -> Optional[str]:
        if not self.model_name.value:
            self._say("no model to launch: register one first (RegisterForm or %xinf register)", "error")
            return None
        try:
            kwargs = self.launch_kwargs()
        except XinfError as exc:
            self._say(str(exc), "error")
            return None
        self.progress.layout.visibility = "visible"
        self.progress.value, self.progress.bar_style = 0.05, "info"
        self.launch_button.disabled = True
        self._say(f"launching {kwargs['model_name']!r}…")
        t0 = time.perf_counter()
        try:
            uid = self.client.launch_model(**kwargs)
        except XinfError as exc:
            self.progress.bar_style = "danger"
            self._say(str(exc), "error")
            return None
        finally:
            self.launch_button.disabled = False
        self.progress.value, self.progress.bar_style = 1.0, "success"
        self.uid = uid
        self.model = self.client.get_model(uid)
        mem = None
        try:
            mem = (self.client.list_models().get(uid) or {}).get("memory_bytes")
        except XinfError:
            pass
        where = f" on {self.client.endpoint}" if is_remote(self.client) else ""
        self._say(f"launched {kwargs['model_name']!r}{where} as uid {uid!r} in {time.perf_counter() - t0:.1f} s"
                  + (f", {human_bytes(mem)}" if mem else ""), "ok")
        return LaunchedModel(uid, {k: kwargs.get(k) for k in ("model_name", "model_type", "model_engine")})
