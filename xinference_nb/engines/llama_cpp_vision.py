"""Vision GGUFs through llama-cpp-python: the text model and its projector (mmproj) file.

The engine of a ggufv2 registration with the ``vision`` ability (``ENGINES`` picks it through the
llama.cpp row's ``vision_loader``). Everything but the prompt's images is ``LlamaCppLLM``'s: launch
options, n_ctx, LoRA, stops, sampling, structured outputs, streaming and cancellation.

The projector (Xinference's names and semantics):

* the launch option ``multimodal_projector``: a file name beside the model file, or an absolute path;
* else the first of the spec's ``multimodal_projectors`` (file names beside the model file);
* else the one vision projector (``*mmproj*.gguf``) beside the model file; several: pick one.

It must be a GGUF projector with a vision encoder (general.architecture ``clip``). It is loaded by the
chat handler llama-cpp-python has for the model (``llama_cpp.llama_chat_format``): the launch option
``chat_handler`` (a class name), else ``VISION_HANDLERS`` by the registration's family, else by the
projector's type (``clip.projector_type``); none known is a LaunchError listing the handlers. The
handler's mtmd context (llama.cpp's libmtmd) encodes the images; its own prompt format is not used:
as on every engine the prompt is the registration's chat template, rendered by the handle, where an
image part (``{"type": "image"}``) becomes the template's image placeholder (found at load by
rendering one image part) and each placeholder is replaced by mtmd's media marker. When the projector
fails to load, llama.cpp's own error (its mtmd / clip log) is in the LaunchError and the model is freed.

A request with images evaluates its text and image embeddings chunk by chunk (``mtmd_tokenize``,
``mtmd_helper_eval_chunk_single``) and then samples as a text request does; its prompt_tokens count
the image tokens. It evaluates its whole prompt (the live context is first saved for a later text
request, as the prefix cache does), and the positions of image embeddings are marked so that no
text prompt ever reuses them. Images come decoded and bounded from ``chat/images.py`` and reach mtmd
as RGB pixels (never re-encoded). Where the handler puts the projector: llama-cpp-python's
``MTMDChatHandler`` family (MTMD, Gemma4) follows the launch's device; its Llava15 family always asks
for the GPU (a CPU build runs it on the CPU).
"""
from __future__ import annotations

import ctypes
import inspect
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..chat import Completion, SamplingParams, TokenStream, check_prompt_fits
from ..errors import FieldIssue, InferenceError, LaunchError, LaunchOptionError, ParseError, short_value
from ..metadata.gguf import GGUFInfo, is_projector, projector_type, read_gguf, sees_images, vision_projectors
from . import LoadRequest
from .llama_cpp import LlamaCppLLM, _LlamaTokenStream, load_gguf, model_file

# handler class of llama_cpp.llama_chat_format → (families: Xinference's and llama-cpp-python's names,
# projector types: clip.projector_type of the mmproj). The family is looked up first, then the type.
VISION_HANDLERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Llava15ChatHandler": (("llava-v1.5", "llava-1.5", "bakllava"), ("mlp", "mlp_norm", "ldp", "ldpv2")),
    "Llava16ChatHandler": (("llava-v1.6", "llava-1.6", "llava-next"), ()),
    "MoondreamChatHandler": (("moondream2", "moondream"), ()),
    "NanoLlavaChatHandler": (("nanollava",), ()),
    "Llama3VisionAlphaChatHandler": (("llama-3-vision-alpha",), ()),
    "MiniCPMv26ChatHandler": (("MiniCPM-V-2.6",), ("resampler",)),
    "Qwen25VLChatHandler": (("qwen2-vl-instruct", "qwen2.5-vl-instruct"), ("qwen2vl_merger", "qwen2.5vl_merger")),
    "Gemma4ChatHandler": (("gemma-4",), ("gemma4v",)),
    "MTMDChatHandler": (("gemma-3-it", "qwen3.5", "qwen3.6", "qwen3.8", "MiniCPM-V-4.6", "MiniCPM-V-4.6-Thinking",
                         "Qwen3-VL-Instruct", "Qwen3-VL-Thinking"),
                        ("gemma3", "qwen3vl_merger", "idefics3", "pixtral", "internvl", "llama4", "lfm2", "kimivl")),
}

_PROBE_TEXT = "Describe this picture."   # the text beside the image part that finds the template's placeholder


def load(request: LoadRequest) -> "LlamaCppVision":
    file = model_file(request)
    projector = choose_projector(request, file)
    handler_cls, why = choose_handler(request, read_gguf(projector))   # a projector: choose_projector checked

    def make(llm: Any, request: LoadRequest, file: Path, info: GGUFInfo, loras: Optional[dict] = None):
        request.progress(f"loading the projector {projector.name} ({handler_cls.__name__}: {why})", 0.9)
        return LlamaCppVision(llm, request, file, info, loras=loras, projector=projector, handler_cls=handler_cls)

    model = load_gguf(request, make)
    if model._estimate is not None:
        model._estimate += projector.stat().st_size
    return model


# ------------------------------------------------------------------------------------------------
# Which projector, which handler
# ------------------------------------------------------------------------------------------------

def choose_projector(request: LoadRequest, file: Path) -> Path:
    """The projector file of this launch (see the module doc), checked to be a vision projector."""
    given = request.options.get("multimodal_projector")
    listed = list(getattr(request.model_spec, "multimodal_projectors", None) or ())
    beside = vision_projectors(file.parent)
    if given is not None:
        path, where = _given_projector(given, file), f"multimodal_projector ({given})"
    elif listed:
        path, where = file.parent / listed[0], f"the spec's multimodal_projectors[0] ({listed[0]})"
    elif len(beside) == 1:
        path, where = beside[0], f"the projector beside {file.name} ({beside[0].name})"
    else:
        found = (f"{file.parent} holds {len(beside)}: {', '.join(p.name for p in beside)}; pick one with "
                 "multimodal_projector=<name>" if beside else f"{file.parent} holds no *mmproj*.gguf projector")
        raise LaunchError(f"{request.model_name!r} has the vision ability and needs its projector (the mmproj GGUF "
                          f"that encodes images): {found}, or list it in the ggufv2 spec's multimodal_projectors "
                          "(multimodal_projector=<path> names a file elsewhere); remove 'vision' from model_ability "
                          "to chat in text only")
    _check_projector(path, where, beside)
    return path


def _given_projector(value: str, file: Path) -> Path:
    """The launch option's path: absolute as given, else a name inside the model file's folder."""
    from ..spec.llm import name_inside_folder
    from .options import check_path_value

    problem = check_path_value(value, "multimodal_projector")
    path = Path(value).expanduser()
    if problem is None and not path.is_absolute() and not name_inside_folder(value):
        problem = (f"{short_value(value)} leaves the model's folder: a relative name is a file beside "
                   f"{file.name}; give an absolute path for a projector elsewhere")
    if problem:
        raise LaunchOptionError([FieldIssue("multimodal_projector", problem)])
    return path if path.is_absolute() else file.parent / path


def _check_projector(path: Path, where: str, beside: list[Path]) -> None:
    others = f" (beside the model: {', '.join(p.name for p in beside)})" if beside else ""
    if not path.is_file():
        raise LaunchError(f"{where}: {path} {'is a folder' if path.is_dir() else 'does not exist'}; a projector is "
                          f"one .gguf file{others}")
    try:
        info = read_gguf(path)
    except ParseError as exc:
        raise LaunchError(f"{where}: {path} is not a GGUF projector: {exc}") from None
    if not is_projector(info):
        raise LaunchError(f"{where}: {path} is a GGUF {info.architecture or 'file'} model, not a projector (an mmproj "
                          f"file's general.architecture is 'clip'){others}")
    if not sees_images(info):
        raise LaunchError(f"{where}: {path} is a projector without a vision encoder (clip.has_vision_encoder is "
                          "false: an audio projector?); a vision model needs one that encodes images")


def vision_handler_names() -> list[str]:
    """The handler classes of the installed llama-cpp-python that load a projector."""
    from llama_cpp import llama_chat_format as formats

    return sorted(n for n, v in vars(formats).items() if _is_vision_handler(n, v))


def _is_vision_handler(name: str, value: Any) -> bool:
    return name.endswith("ChatHandler") and isinstance(value, type) and hasattr(value, "_init_mtmd_context")


def choose_handler(request: LoadRequest, projector: GGUFInfo) -> tuple[type, str]:
    """(handler class, why): the launch option chat_handler, else VISION_HANDLERS by family, then by
    the projector's type."""
    import llama_cpp
    from llama_cpp import llama_chat_format as formats

    given = request.options.get("chat_handler")
    if given is not None:
        cls = getattr(formats, given, None)
        if not _is_vision_handler(given, cls):
            raise LaunchOptionError([FieldIssue("chat_handler", f"{short_value(given)} is not a vision chat handler "
                                                f"of llama-cpp-python {llama_cpp.__version__}; it has: "
                                                f"{', '.join(vision_handler_names())}")])
        return cls, "launch option chat_handler"
    name, why = _handler_of(request.spec, projector_type(projector))
    if name is None:
        family = getattr(request.spec, "model_family", None) or request.model_name
        raise LaunchError(f"{request.model_name!r}: no chat handler of llama-cpp-python is known for the family "
                          f"{family!r} nor for its projector's type {projector_type(projector)!r}; pass "
                          f"chat_handler= one of {', '.join(vision_handler_names())} (MTMDChatHandler is llama.cpp's "
                          "generic one)")
    cls = getattr(formats, name, None)
    if cls is None:
        raise LaunchError(f"{request.model_name!r} takes {name} ({why}), which llama-cpp-python "
                          f"{llama_cpp.__version__} does not have: upgrade it (pip install -U llama-cpp-python), or "
                          f"pass chat_handler= one of {', '.join(vision_handler_names())}")
    return cls, why


def _handler_of(spec: Any, kind: Optional[str]) -> tuple[Optional[str], str]:
    for family in (getattr(spec, "model_family", None), getattr(spec, "model_name", None)):
        wanted = (family or "").lower()
        for name, (families, _) in VISION_HANDLERS.items():
            if wanted and wanted in (f.lower() for f in families):
                return name, f"the {family!r} family's"
    for name, (_, kinds) in VISION_HANDLERS.items():
        if kind in kinds:
            return name, f"for projector type {kind!r}"
    return None, ""


# ------------------------------------------------------------------------------------------------
# llama.cpp's mtmd log: kept while a projector loads, for the error; otherwise dropped
# ------------------------------------------------------------------------------------------------

class _MtmdLog:
    _WARN, _ERROR, _CONT = 3, 4, 5   # ggml_log_level

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: list[list[tuple[int, str]]] = []
        self._callback: Any = None

    def _install(self) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        with self._lock:
            if self._callback is not None:
                return

            @llama_cpp.llama_log_callback
            def callback(level: int, text: bytes, _: Any) -> None:
                with self._lock:
                    for sink in self._sinks:
                        sink.append((int(level), text.decode("utf-8", errors="replace")))

            self._callback = callback   # kept alive: llama.cpp holds the pointer
            mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))
            if hasattr(mtmd, "mtmd_helper_log_set"):
                mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))

    @contextmanager
    def capture(self) -> Iterator[list[tuple[int, str]]]:
        self._install()
        sink: list[tuple[int, str]] = []
        with self._lock:
            self._sinks.append(sink)
        try:
            yield sink
        finally:
            with self._lock:
                self._sinks.remove(sink)

    @classmethod
    def problems(cls, lines: list[tuple[int, str]]) -> str:
        """The warning and error lines (with their continuations), one line of text."""
        kept, keep = [], False
        for level, text in lines:
            keep = level in (cls._WARN, cls._ERROR) or (level == cls._CONT and keep)
            if keep and text.strip():
                kept.append(" ".join(text.split()))
        return " ".join(kept)


_MTMD_LOG = _MtmdLog()


def open_projector(handler_cls: type, projector: Path, llm: Any, request: LoadRequest) -> Any:
    """The handler with its mtmd context on ``llm`` (freed with the model); LaunchError with
    llama.cpp's own error when it cannot load the projector."""
    kwargs: dict[str, Any] = {"clip_model_path": str(projector), "verbose": False}
    if "use_gpu" in inspect.signature(handler_cls.__init__).parameters:
        kwargs["use_gpu"] = request.device.uses_cuda
    handler = None
    with _MTMD_LOG.capture() as lines:
        try:
            handler = handler_cls(**kwargs)
            handler._init_mtmd_context(llm)
        except (ValueError, RuntimeError, OSError) as exc:
            _free_unregistered(handler)
            why = _MtmdLog.problems(lines) or str(exc)
            raise LaunchError(f"llama.cpp could not load the projector {projector} with {handler_cls.__name__}: "
                              f"{why}") from None
    return handler


def _free_unregistered(handler: Any) -> None:
    """An mtmd context the handler made but did not hand to the model's cleanup (it raised after)."""
    ctx = getattr(handler, "mtmd_ctx", None)
    if ctx is not None:
        import llama_cpp.mtmd_cpp as mtmd

        mtmd.mtmd_free(ctx)
        handler.mtmd_ctx = None


def image_placeholder(fmt: Any, model_name: str) -> Optional[str]:
    """What the chat template writes for one image part (``{"type": "image"}``), found by rendering a
    message with and without one; None without a template. LaunchError when it renders none."""
    if not getattr(fmt, "template", None):
        return None
    text = {"type": "text", "text": _PROBE_TEXT}
    try:
        seen = fmt.render([{"role": "user", "content": [{"type": "image"}, text]}])
        plain = fmt.render([{"role": "user", "content": [text]}])
    except Exception as exc:  # noqa: BLE001 - a template error of any kind
        raise LaunchError(f"{model_name!r}: its chat template cannot render an image part ({{'type': 'image'}}): "
                          f"{type(exc).__name__}: {exc}; use a template that does, such as the model's own") from None
    start = 0
    while start < min(len(seen), len(plain)) and seen[start] == plain[start]:
        start += 1
    end = 0
    while end < len(plain) - start and seen[len(seen) - 1 - end] == plain[len(plain) - 1 - end]:
        end += 1
    placeholder = seen[start:len(seen) - end].strip()
    if not placeholder or plain[start:len(plain) - end]:
        raise LaunchError(f"{model_name!r}: its chat template writes nothing for an image part ({{'type': 'image'}}), "
                          "so no image could reach the model; use a template that renders image parts as the "
                          "model's image placeholder, such as the model's own")
    return placeholder


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------

class LlamaCppVision(LlamaCppLLM):
    """A LlamaCppLLM whose chat turns may carry images (``complete`` / ``stream`` take ``images=``)."""

    abilities = ("generate", "chat", "vision")

    def __init__(self, llm: Any, request: LoadRequest, file: Path, info: Optional[GGUFInfo] = None,
                 loras: Optional[dict[str, Any]] = None, *, projector: Path, handler_cls: type):
        import llama_cpp.mtmd_cpp as mtmd

        super().__init__(llm, request, file, info, loras=loras)
        self.projector = projector
        self.image_placeholder = image_placeholder(self.chat_format, request.model_name)
        self.handler = open_projector(handler_cls, projector, llm, request)
        self._marker = mtmd.mtmd_default_marker().decode("utf-8")
        bos = llm.token_bos()
        self._bos_text = self._piece(bos, special=True) if bos is not None and bos >= 0 else ""

    def complete(self, prompt: str, params: SamplingParams, *, chat: bool = False,
                 images: Optional[list[Any]] = None) -> Completion:
        prompt, images = self._media_prompt(prompt, images)
        return self._complete(prompt, params, chat, images)

    def stream(self, prompt: str, params: SamplingParams, *, chat: bool = False,
               images: Optional[list[Any]] = None) -> TokenStream:
        prompt, images = self._media_prompt(prompt, images)
        self._check_request(params)
        return _LlamaTokenStream(self, prompt, params, chat, images=images)

    def _media_prompt(self, prompt: str, images: Optional[list[Any]]) -> tuple[str, Optional[list[Any]]]:
        """The prompt with mtmd's media marker for each image placeholder (InferenceError before any
        token when they do not match the images)."""
        if not images:
            return prompt, None
        if self.image_placeholder is None:
            raise InferenceError("this model has no chat template, so its prompt has no image placeholder: register "
                                 "it with a chat_template that renders image parts")
        if self._marker in prompt:
            raise InferenceError(f"the prompt holds {self._marker!r}, llama.cpp's media marker, as text; remove it "
                                 "from the messages (send images as image parts)")
        found = prompt.count(self.image_placeholder)
        if found != len(images):
            raise InferenceError(f"the prompt has {found} image placeholder(s) ({self.image_placeholder!r}) for "
                                 f"{len(images)} image(s): either a message's text holds {self.image_placeholder!r} "
                                 "(send images as image parts instead), or the chat template does not render every "
                                 "image part ({'type': 'image'})")
        return prompt.replace(self.image_placeholder, self._marker), list(images)

    def _prefill(self, llm: Any, prompt: str, params: SamplingParams, chat: bool, state: TokenStream,
                 images: Optional[list[Any]] = None) -> tuple[list[int], int]:
        if not images:
            return super()._prefill(llm, prompt, params, chat, state)
        import llama_cpp.mtmd_cpp as mtmd

        bitmaps: list[Any] = []
        chunks = mtmd.mtmd_input_chunks_init()
        if not chunks:
            raise InferenceError("llama.cpp could not allocate the prompt's chunks")
        try:
            bitmaps += [_bitmap(image, i) for i, image in enumerate(images)]
            self._tokenize(chunks, prompt, bitmaps)
            state.prompt_tokens = int(mtmd.mtmd_helper_get_n_tokens(chunks))
            max_new = check_prompt_fits(state.prompt_tokens, params, self.context_length)
            self._keep_context(llm)   # a later text request may continue it
            self._eval_chunks(llm, chunks)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        return llm.input_ids[:llm.n_tokens].tolist(), max_new

    def _tokenize(self, chunks: Any, prompt: str, bitmaps: list[Any]) -> None:
        import llama_cpp.mtmd_cpp as mtmd

        data = prompt.encode("utf-8")
        text = mtmd.mtmd_input_text()
        text.text, text.text_len, text.parse_special = data, len(data), True
        # the template may have written the BOS token already (as the text path drops a second one)
        text.add_special = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        failed = mtmd.mtmd_tokenize(self.handler.mtmd_ctx, chunks, ctypes.byref(text), array, len(bitmaps))
        if failed:
            why = {1: "the prompt's media markers and the images differ in number",
                   2: "the projector could not preprocess an image"}.get(int(failed), f"error {failed}")
            raise InferenceError(f"llama.cpp could not read this prompt's images: {why}")

    def _eval_chunks(self, llm: Any, chunks: Any) -> None:
        """Evaluate the prompt from position 0: text chunks as tokens, image chunks through the
        projector (their positions marked -1 in input_ids: no text prompt matches them)."""
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        llm.reset()
        llm._ctx.kv_cache_clear()
        kind = None
        for i in range(int(mtmd.mtmd_input_chunks_size(chunks))):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                llm.eval([ids[j] for j in range(n.value)])
                continue
            start, end = llm.n_tokens, llama_cpp.llama_pos(0)
            failed = mtmd.mtmd_helper_eval_chunk_single(self.handler.mtmd_ctx, llm._ctx.ctx, chunk, start, 0,
                                                        llm.n_batch, False, ctypes.byref(end))
            if failed:
                llm.reset()
                llm._ctx.kv_cache_clear()
                raise InferenceError(f"llama.cpp could not evaluate an image of this prompt (error {failed})")
            llm.input_ids[start:end.value] = -1
            llm.n_tokens = end.value
        if kind != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            llm.reset()
            raise InferenceError("the prompt ends with an image: a chat template's generation prompt follows it")

    def close(self) -> None:
        super().close()   # the model's cleanup frees the handler's mtmd context
        self.__dict__.pop("handler", None)


def _bitmap(image: Any, index: int) -> Any:
    """An mtmd bitmap of a decoded image's RGB pixels (mtmd copies them)."""
    import llama_cpp.mtmd_cpp as mtmd

    rgb = image if getattr(image, "mode", None) == "RGB" else image.convert("RGB")
    width, height = rgb.size
    data = rgb.tobytes()
    bitmap = mtmd.mtmd_bitmap_init(width, height, (ctypes.c_uint8 * len(data)).from_buffer_copy(data))
    if not bitmap:
        raise InferenceError(f"llama.cpp could not take image {index} ({width}x{height})")
    return bitmap
