"""Persistence of custom registrations: one JSON document per model under
``$XINFERENCE_NB_HOME/model/<type>/<name>.json`` (default home ``~/.xinference_nb``).

Writes go to a temp file in the same folder and are renamed into place, under a file lock, so a
kernel and a CLI registering at the same time lose nothing and a reader never sees half a file.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from ..errors import RegistryError

LOCK_TIMEOUT_S = 30
# a ``.<name>.*.tmp`` file older than this was left by a writer that died before its rename
STALE_TMP_S = 60


def atomic_write_text(path: Path, text: str, fsync: bool = False) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``
    (the folder must exist). On any failure the previous file, if any, is untouched, no temporary
    file is left, and the error (an OSError for the file system's) is raised. ``fsync``: flushed to
    disk before the rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def nb_home() -> Path:
    """The data folder: $XINFERENCE_NB_HOME, else ~/.xinference_nb."""
    return Path(os.environ.get("XINFERENCE_NB_HOME") or Path.home() / ".xinference_nb").expanduser()


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder (a file where a folder belongs)."""
    for parent in [path, *path.parents]:
        try:
            if parent.exists():
                return None if parent.is_dir() else parent
        except OSError:
            return None
    return None


def store_error(action: str, path: Path, exc: OSError) -> RegistryError:
    """A RegistryError for a failed store operation: what failed, on which path, why, and the fix."""
    code = exc.errno
    home = "set XINFERENCE_NB_HOME to a writable folder"
    session = "or register with persist=False (this session only)"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        why = "the disk is full (or over quota)"
        fix = f"free some space on that disk, {home} on another disk, {session}"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is read-only" if code == errno.EROFS else "permission denied"
        fix = f"make {path.parent} writable for this user, {home}, {session}"
    elif code == errno.EISDIR or (code in (errno.EEXIST, errno.ENOTEMPTY) and path.is_dir()):
        why, fix = "a folder is in the way", f"remove or rename the folder {path}, {session}"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        where = f"the file {blocker}" if blocker is not None else "a file on that path"
        why, fix = f"{where} is where a folder belongs", f"remove or rename it, {home}, {session}"
    else:
        why, fix = exc.strerror or type(exc).__name__, f"check the folder {path.parent}, {home}, {session}"
    return RegistryError(f"the registry could not {action} {path}: {why} ({type(exc).__name__}: "
                         f"{exc.strerror or exc}); {fix}")


class SpecStore:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = self.home / "model"

    def folder(self, model_type: str) -> Path:
        return self.root / model_type.lower()

    def file_of(self, model_type: str, name: str) -> Path:
        return self.folder(model_type) / f"{name}.json"

    @contextmanager
    def locked(self, optional: bool = False) -> Iterator[RegistryError | None]:
        """Hold the store's file lock; yields None. With ``optional``, a store that cannot be locked
        (read-only home, a file in the way) yields the RegistryError instead of raising it, for work
        that only needs the store if it turns out to touch the disk (raise it then)."""
        lock_file = self.root / ".lock"
        lock = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(lock_file), timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except Timeout as exc:
            raise RegistryError(f"the registry at {self.root} stayed locked for {LOCK_TIMEOUT_S} s; another "
                                f"process holds {lock_file}") from exc
        except OSError as exc:
            error = store_error("create the lock file", lock_file, exc)
            if not optional:
                raise error from exc
            lock = None
        try:
            yield None if lock is not None else error
        finally:
            if lock is not None:
                lock.release()

    def clean_stale_tmp(self, max_age_s: float = STALE_TMP_S) -> list[Path]:
        """Remove ``.<name>.*.tmp`` files older than ``max_age_s`` (left by a writer killed before its
        rename); fresh ones may belong to a writer at work and are kept. Never raises."""
        removed: list[Path] = []
        now = time.time()
        try:
            folders = [f for f in self.root.iterdir() if f.is_dir()] if self.root.is_dir() else []
        except OSError:
            return removed
        for folder in folders:
            try:
                candidates = [f for f in folder.iterdir() if f.name.startswith(".") and f.name.endswith(".tmp")]
            except OSError:
                continue
            for file in candidates:
                try:
                    st = file.lstat()
                    if stat.S_ISREG(st.st_mode) and now - st.st_mtime > max_age_s:
                        file.unlink()
                        removed.append(file)
                except OSError:
                    continue
        return removed

    def read_all(self, model_type: str) -> dict[str, tuple[Path, dict]]:
        """name → (file, document) for every readable file; unreadable ones are skipped with a warning."""
        folder = self.folder(model_type)
        out: dict[str, tuple[Path, dict]] = {}
        try:
            if not folder.is_dir():
                return out
            files = sorted(folder.glob("*.json"))
        except OSError as exc:
            warnings.warn(f"cannot list the registrations in {folder}: {exc}", stacklevel=3)
            return out
        for file in files:
            doc = self._read(file)
            if doc is not None:
                out[file.stem] = (file, doc)
        return out

    def read(self, model_type: str, name: str) -> dict | None:
        file = self.file_of(model_type, name)
        return self._read(file) if self._is_file(file) else None

    def exists(self, model_type: str, name: str) -> bool:
        return self._is_file(self.file_of(model_type, name))

    @staticmethod
    def _is_file(file: Path) -> bool:
        try:
            return file.is_file()
        except OSError:   # e.g. a name too long for the file system
            return False

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
        """Atomically write one document (call inside ``locked()``). On any failure the previous file,
        if any, is untouched, no temp file is left, and the error is a RegistryError naming the path."""
        folder = self.folder(model_type)
        target = self.file_of(model_type, name)
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error("create the folder", folder, exc) from exc
        try:
            atomic_write_text(target, text, fsync=True)
        except OSError as exc:
            raise store_error("write", target, exc) from exc
        return target

    def delete(self, model_type: str, name: str) -> bool:
        """Remove one document; False when there was none. A failure is a RegistryError naming the path."""
        file = self.file_of(model_type, name)
        try:
            file.unlink()
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise store_error("delete", file, exc) from exc
