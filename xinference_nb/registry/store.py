"""Persistence of custom registrations: one JSON document per model under
``$XINFERENCE_NB_HOME/model/<type>/<name>.json`` (default home ``~/.xinference_nb``).

Writes go to a temp file in the same folder and are renamed into place, under a file lock, so a
kernel and a CLI registering at the same time lose nothing and a reader never sees half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from ..errors import RegistryError

LOCK_TIMEOUT_S = 30


def nb_home() -> Path:
    """The data folder: $XINFERENCE_NB_HOME, else ~/.xinference_nb."""
    return Path(os.environ.get("XINFERENCE_NB_HOME") or Path.home() / ".xinference_nb").expanduser()


class SpecStore:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = self.home / "model"

    def folder(self, model_type: str) -> Path:
        return self.root / model_type.lower()

    def file_of(self, model_type: str, name: str) -> Path:
        return self.folder(model_type) / f"{name}.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / ".lock"), timeout=LOCK_TIMEOUT_S)
        try:
            with lock:
                yield
        except TimeoutError as exc:  # filelock.Timeout subclasses TimeoutError
            raise RegistryError(f"the registry at {self.root} stayed locked for {LOCK_TIMEOUT_S} s; another "
                                f"process holds {self.root / '.lock'}") from exc

    def read_all(self, model_type: str) -> dict[str, tuple[Path, dict]]:
        """name → (file, document) for every readable file; unreadable ones are skipped with a warning."""
        folder = self.folder(model_type)
        out: dict[str, tuple[Path, dict]] = {}
        if not folder.is_dir():
            return out
        for file in sorted(folder.glob("*.json")):
            doc = self._read(file)
            if doc is not None:
                out[file.stem] = (file, doc)
        return out

    def read(self, model_type: str, name: str) -> dict | None:
        file = self.file_of(model_type, name)
        return self._read(file) if file.is_file() else None

    def exists(self, model_type: str, name: str) -> bool:
        return self.file_of(model_type, name).is_file()

    @staticmethod
    def _read(file: Path) -> dict | None:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping unreadable registration {file}: {exc}; fix or delete the file", stacklevel=3)
            return None
        if not isinstance(doc, dict):
            warnings.warn(f"skipping registration {file}: it is not a JSON object; fix or delete the file",
                          stacklevel=3)
            return None
        return doc

    def write(self, model_type: str, name: str, doc: dict) -> Path:
        """Atomically write one document (call inside ``locked()``)."""
        folder = self.folder(model_type)
        folder.mkdir(parents=True, exist_ok=True)
        target = self.file_of(model_type, name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return target

    def delete(self, model_type: str, name: str) -> bool:
        try:
            self.file_of(model_type, name).unlink()
            return True
        except FileNotFoundError:
            return False
