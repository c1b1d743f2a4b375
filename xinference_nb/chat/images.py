"""Image parts of chat messages: the forms accepted, where a local path sits, and decoding with bounds.

The one place that knows what an image part looks like, for every layer that meets one:

* ``part_source`` checks one part's shape when ``chat.validate_messages`` meets it (no file I/O):
  ``{"type": "image_url", "image_url": {"url": ...}}`` (OpenAI / Xinference; a bare string for
  ``image_url`` too), ``{"type": "input_image", "image_url": ...}`` (OpenAI's Responses form) and
  ``{"type": "image", "image" | "url" | "path": ...}`` (transformers' form). The image is a
  ``data:image/...;base64,`` URL, a local path or ``file://`` URL, or a PIL image (in-kernel only).
  http(s) URLs are refused: nothing here fetches from the network.
* ``take_images`` turns validated messages into what a chat template sees (``{"type": "image"}``
  placeholders, as transformers' processors render them) plus the decoded images, in order.
* ``local_paths`` lists the paths a request names (the REST server checks them against its roots).
* ``for_remote`` makes messages JSON for a server: PIL images and files of this machine become data URLs.
* ``thumbnail_url`` is for transcripts (display, widgets): a small PNG data URL, never an error.

Images are bounded before they are decoded (``MAX_IMAGE_BYTES``, ``MAX_IMAGE_PIXELS``,
``MAX_ASPECT_RATIO``; ``MAX_IMAGES`` and ``MAX_REQUEST_PIXELS`` a request): a decompression bomb is
refused from its header, a file is read only if it is a regular file (never a FIFO, device or
directory, which could block or never end) and never past the byte limit, and only the raster
formats of ``IMAGE_FORMATS`` are opened (PIL's EPS reader would run Ghostscript on the data). PIL is
imported only when an image is decoded.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from typing import Any, Iterable, Iterator, Optional

from ..errors import InferenceError, kind_of

IMAGE_PART_TYPES = ("image_url", "input_image", "image")
MAX_IMAGE_BYTES = 32 * 1024 * 1024          # an encoded image file (a data URL's decoded bytes)
MAX_IMAGE_PIXELS = 40_000_000               # width × height, checked from the header before decoding
MAX_ASPECT_RATIO = 200                      # long side / short side: processors scale the short side up
MAX_IMAGES = 64                             # images in one request
MAX_REQUEST_PIXELS = 4 * MAX_IMAGE_PIXELS   # decoded pixels of one request, all images together
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")   # PIL formats opened (JPEG: MPO too)
IMAGE_DETAILS = ("auto",)                   # OpenAI's image_url.detail values this package applies
# the keys each part type takes (anything else is refused, not dropped)
_PART_KEYS = {"image_url": ("type", "image_url"), "input_image": ("type", "image_url", "detail"),
              "image": ("type", "image", "url", "path")}
_FORMS = ("a data:image/...;base64 URL, a local file path, a file:// URL, or a PIL image in the notebook")


def is_pil(value: Any) -> bool:
    """A PIL image (duck-typed, so nothing imports PIL to ask)."""
    return hasattr(value, "mode") and hasattr(value, "size") and callable(getattr(value, "convert", None))


def _check_detail(detail: Any, where: str) -> None:
    if detail is not None and detail not in IMAGE_DETAILS:
        raise InferenceError(f"{where}={detail!r:.40} is not supported: images go to the model at its "
                             "processor's resolution; leave detail out or send 'auto'")


def _raw_source(part: dict[str, Any], where: str) -> Any:
    """The image value of one part, its shape checked (not yet the value)."""
    kind = part.get("type")
    allowed = _PART_KEYS.get(kind, ())
    extra = sorted(str(k) for k in part if k not in allowed)
    if extra:
        raise InferenceError(f"{where} has unknown key{'s' if len(extra) > 1 else ''} "
                             f"{', '.join(repr(k) for k in extra)}; a {kind!r} part takes {', '.join(allowed)}")
    _check_detail(part.get("detail"), f"{where}.detail")   # the Responses form keeps detail beside image_url
    if kind == "image":
        keys = [k for k in ("image", "url", "path") if part.get(k) is not None]
        if len(keys) != 1:
            raise InferenceError(f"{where}: an 'image' part needs exactly one of 'image', 'url' or 'path' "
                                 f"({_FORMS}), got {', '.join(repr(k) for k in keys) or 'none'}")
        return part[keys[0]]
    value = part.get("image_url")
    if isinstance(value, dict):
        extra = sorted(k for k in value if k not in ("url", "detail"))
        if extra:
            raise InferenceError(f"{where}.image_url has unknown key{'s' if len(extra) > 1 else ''} "
                                 f"{', '.join(repr(k) for k in extra)}; the valid keys are url, detail")
        _check_detail(value.get("detail"), f"{where}.image_url.detail")
        if "url" not in value:
            raise InferenceError(f"{where}.image_url.url is missing ({_FORMS})")
        return value["url"]
    if value is None:
        raise InferenceError(f"{where}.image_url is missing: send {{'type': '{kind}', 'image_url': {{'url': "
                             f"'data:image/png;base64,...'}}}} ({_FORMS})")
    return value


def part_source(part: dict[str, Any], where: str) -> Any:
    """The image of one image part: a string (data URL, path, file:// URL) or a PIL image. Refuses
    (``InferenceError`` naming ``where``) any other shape, an http(s) URL and other URL schemes."""
    value = _raw_source(part, where)
    if is_pil(value):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise InferenceError(f"{where}: the image must be {_FORMS}; got {kind_of(value)} {value!r:.60}")
    text = value.strip()
    low = text[:16].lower()
    if low.startswith(("http://", "https://")):
        raise InferenceError(f"{where}: {text[:80]!r} is an http(s) URL, and images are not fetched from the "
                             "network here; download it and send a local path, a file:// URL or a data URL")
    if low.startswith("data:"):
        head = text.split(",", 1)[0].lower()
        if not (head.startswith("data:image/") and head.endswith(";base64") and "," in text):
            raise InferenceError(f"{where}: a data URL must be 'data:image/<format>;base64,<data>', got "
                                 f"{text[:40]!r}...")
        return text
    if "://" in text[:12] and not low.startswith("file://"):
        raise InferenceError(f"{where}: {text[:60]!r} is a URL this package cannot read; send {_FORMS}")
    if low.startswith("file://"):
        from urllib.parse import urlparse

        url = urlparse(text)
        if url.netloc not in ("", "localhost"):
            raise InferenceError(f"{where}: {text[:60]!r} names another host; a file:// URL must be a local file "
                                 "(file:///path/to/image.png)")
        if url.query or url.fragment or text.endswith(("?", "#")):
            raise InferenceError(f"{where}: {text[:60]!r} has a query or fragment, which a file:// URL does not "
                                 "take; percent-encode '?' and '#' in a file name (%3F, %23)")
    from ..engines.options import check_path_value

    problem = check_path_value(local_path(text), "path")   # NUL bytes, names too long for any file system
    if problem:
        raise InferenceError(f"{where}: the image path {problem}")
    return text


def local_path(source: Any) -> Optional[str]:
    """The absolute local path an image source names (plain path or ``file://``); None for data URLs
    and PIL images."""
    if not isinstance(source, str) or source.lower().startswith("data:"):
        return None
    if source.lower().startswith("file://"):
        from urllib.parse import unquote, urlparse

        return os.path.abspath(os.path.expanduser(unquote(urlparse(source).path)))
    return os.path.abspath(os.path.expanduser(source))


def _image_parts(messages: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, part) of every image part of raw messages; parts of other shapes are passed over
    (validate_messages refuses them later)."""
    if not isinstance(messages, (list, tuple)):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES:
                yield f"messages[{i}].content[{j}]", part


def local_paths(messages: Any) -> list[tuple[str, str]]:
    """(where, absolute path) of every local image a request names: what a server checks against its
    allowed roots before the model reads them. Parts that are not well formed are left to validation."""
    out = []
    for where, part in _image_parts(messages):
        try:
            path = local_path(part_source(part, where))
        except InferenceError:
            continue
        if path is not None:
            out.append((where, path))
    return out


# ----------------------------------------------------------------------------------------------
# Decoding, bounded
# ----------------------------------------------------------------------------------------------

def _base64_bytes(data: str, where: str) -> bytes:
    """A data URL's payload: standard or URL-safe base64; line breaks and missing padding are fine."""
    data = "".join(data.split())   # base64 tools wrap lines at 76 characters
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InferenceError(f"{where}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    if "-" in data or "_" in data:
        data = data.translate(str.maketrans("-_", "+/"))
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InferenceError(f"{where}: the data URL's base64 data is not valid ({exc})") from None


def _file_bytes(path: str, where: str) -> bytes:
    """A local file's bytes, at most ``MAX_IMAGE_BYTES``: only a regular file, checked before it is
    opened (opening a FIFO waits for a writer) and again on the open descriptor (the name may have
    changed in between), which is opened non-blocking."""
    import stat

    def refuse(why: str) -> InferenceError:
        return InferenceError(f"{where}: cannot read the image file {path}: {why}")

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
            raise refuse(f"it is {kind}, not a regular file")
        if st.st_size > MAX_IMAGE_BYTES:
            raise refuse(f"it is {st.st_size // 2**20} MiB; images are limited to {MAX_IMAGE_BYTES // 2**20} MiB")

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        check(os.stat(path))
        fd = os.open(path, flags)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        check(os.fstat(fd))
        try:
            data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise refuse(exc.strerror or str(exc)) from None
    if len(data) > MAX_IMAGE_BYTES:   # a file that grew, or one whose size the system does not know (/proc)
        raise refuse(f"it is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    return data


def _bytes_of(source: str, where: str) -> bytes:
    if source.lower().startswith("data:"):
        return _base64_bytes(source.split(",", 1)[1], where)
    path = local_path(source)
    assert path is not None
    return _file_bytes(path, where)


def _check_pixels(width: int, height: int, where: str) -> None:
    if width < 1 or height < 1:
        raise InferenceError(f"{where}: the image is {width}x{height} pixels: it has no pixels to look at")
    if width * height > MAX_IMAGE_PIXELS:
        raise InferenceError(f"{where}: the image is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                             "allowed (a decompression bomb, or a photo to scale down first)")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InferenceError(f"{where}: the image is {width}x{height} pixels, its long side more than "
                             f"{MAX_ASPECT_RATIO} times its short side (a processor scales the short side up to its resolution, so the "
                             "long side would grow without bound); crop it into pieces first")


def _rgb(image: Any, where: str) -> Any:
    """``image`` as RGB; a lazily loaded PIL image is read here, so its errors are caught too."""
    try:
        if image.mode != "RGB":
            return image.convert("RGB")
        image.load()
        return image
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file, an odd mode, a closed image
        raise InferenceError(f"{where}: the image (mode {image.mode}) cannot be read as RGB "
                             f"({type(exc).__name__}: {exc})") from None


def _open(data: bytes) -> Any:
    """PIL's lazy image of ``data``, trying only the formats of ``IMAGE_FORMATS``."""
    from PIL import Image

    Image.init()
    return Image.open(io.BytesIO(data), formats=[f for f in IMAGE_FORMATS if f in Image.OPEN])


def load_image(source: Any, where: str = "image") -> Any:
    """An RGB PIL image from a source ``part_source`` accepted; every failure an ``InferenceError``."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with the vision extras
        raise InferenceError("images need the pillow package: pip install pillow") from None
    if is_pil(source):
        _check_pixels(*source.size, where)
        return _rgb(source, where)
    data = _bytes_of(source, where)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(data)
            _check_pixels(*image.size, where)
            image.load()
    except InferenceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(f"{where}: refused as a decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InferenceError(f"{where}: not a readable image: the data is none of the formats "
                             f"{', '.join(IMAGE_FORMATS)}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
        raise InferenceError(f"{where}: not a readable image ({type(exc).__name__}: {exc})") from None
    return _rgb(image, where)


def take_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """(messages for the chat template, decoded images in order) from validated messages: each image
    part becomes ``{"type": "image"}``, the placeholder transformers' processor templates render.
    A request takes at most ``MAX_IMAGES`` images and ``MAX_REQUEST_PIXELS`` decoded pixels (memory)."""
    count = sum(1 for m in messages if isinstance(m.get("content"), list)
                for p in m["content"] if p.get("type") == "image")
    if count > MAX_IMAGES:
        raise InferenceError(f"messages: {count} images in one request; at most {MAX_IMAGES} are taken")
    out: list[dict[str, Any]] = []
    images: list[Any] = []
    pixels = 0
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            if part.get("type") == "image":
                image = load_image(part["image"], f"messages[{i}].content[{j}]")
                pixels += image.size[0] * image.size[1]
                if pixels > MAX_REQUEST_PIXELS:
                    raise InferenceError(f"messages[{i}].content[{j}]: the images of this request have more than "
                                         f"{MAX_REQUEST_PIXELS:,} pixels together; send fewer or smaller images")
                images.append(image)
                parts.append({"type": "image"})
            else:
                parts.append(part)
        out.append(dict(message, content=parts))
    return out, images


# ----------------------------------------------------------------------------------------------
# Encoding: for a server, and for transcripts
# ----------------------------------------------------------------------------------------------

def _png_data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _file_data_url(path: str, where: str) -> str:
    data = _bytes_of(path, where)
    from PIL import Image

    try:
        with _open(data) as probe:   # the header only: what the file is
            mime = Image.MIME.get(probe.format or "", "image/png")
    except Image.UnidentifiedImageError:
        raise InferenceError(f"{where}: {path} is not a readable image: it is none of the formats "
                             f"{', '.join(IMAGE_FORMATS)}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
        raise InferenceError(f"{where}: {path} is not a readable image ({type(exc).__name__}: {exc})") from None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def for_remote(messages: Any) -> Any:
    """Messages as JSON for a server: PIL images and local files of this machine become data URLs
    (a path this machine does not have is sent as it is, for the server to read). Anything that is
    not an image part passes unchanged; the server validates it."""
    if isinstance(messages, str) or not isinstance(messages, (list, tuple)):
        return messages
    out = []
    changed = False
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            if not (isinstance(part, dict) and part.get("type") in IMAGE_PART_TYPES):
                parts.append(part)
                continue
            source = part_source(part, where)
            url = None
            if is_pil(source):
                url = _png_data_url(load_image(source, where))
            else:
                path = local_path(source)
                if path is not None and os.path.isfile(path):
                    url = _file_data_url(path, where)
            if url is None:
                parts.append(part)
                continue
            changed = True
            new = {"type": "image_url", "image_url": {"url": url}}
            detail = part.get("image_url", {}).get("detail") if isinstance(part.get("image_url"), dict) else None
            detail = part.get("detail", detail)   # the Responses form (input_image) keeps it beside image_url
            if detail is not None:
                new["image_url"]["detail"] = detail
            parts.append(new)
        out.append(dict(message, content=parts))
    return out if changed else messages


THUMBNAIL_PX = 128
_THUMBNAILS: dict[tuple, str] = {}   # (sha1 of the source, file stamp, size) → data URL; transcripts re-render often


def _thumbnail_of_image(image: Any, size: int) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    return _png_data_url(thumb)


def thumbnail_url(part: Any, size: int = THUMBNAIL_PX) -> Optional[str]:
    """A small PNG data URL of an image part (or source), for transcripts; None when it cannot be shown
    here (an http URL, a missing file, no pillow)."""
    try:
        source = part_source(part, "image") if isinstance(part, dict) else part
        if is_pil(source):
            return _thumbnail_of_image(load_image(source), size)
        path = local_path(source)
        stamp = (os.stat(path).st_mtime_ns, os.stat(path).st_size) if path is not None else None
        key = (hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest(), stamp, size)
        if key not in _THUMBNAILS:
            if len(_THUMBNAILS) >= 64:
                _THUMBNAILS.pop(next(iter(_THUMBNAILS)))
            _THUMBNAILS[key] = _thumbnail_of_image(load_image(source), size)
        return _THUMBNAILS[key]
    except Exception:  # noqa: BLE001 - a transcript shows a placeholder instead
        return None


def image_part(image: Any) -> dict[str, Any]:
    """An OpenAI image part for a path, ``file://`` URL, data URL or PIL image (what ``--image`` and
    the ChatBox attach)."""
    if isinstance(image, (str, os.PathLike)) and not is_pil(image):
        image = os.fspath(image)
    return {"type": "image_url", "image_url": {"url": image}}


def user_message(text: str, images: Iterable[Any] = ()) -> dict[str, Any]:
    """A user message: the text alone, or text and image parts (images first, as most vision models
    were trained)."""
    images = list(images or ())
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [image_part(i) for i in images] + [{"type": "text", "text": text}]}
