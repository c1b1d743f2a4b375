"""One progress helper over ``tqdm.auto``: a widget bar in a notebook, a text bar in a terminal.

``LaunchProgress`` is the ``progress(step, fraction)`` callback a loader receives; it also records
the latest fraction (``get_launch_model_progress``) and raises ``LaunchCancelled`` at the next step
once ``cancel()`` was called (``cancel_launch_model``).
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from .errors import LaunchError


class LaunchCancelled(LaunchError):
    """The launch was cancelled with cancel_launch_model; nothing it loaded is kept."""


def progress_enabled(show: Optional[bool] = None) -> bool:
    if show is not None:
        return bool(show)
    return os.environ.get("XINFERENCE_NB_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


class LaunchProgress:
    def __init__(self, desc: str, show: Optional[bool] = None):
        self.desc = desc
        self.fraction = 0.0
        self.step = "starting"
        self._cancel = threading.Event()
        self._bar = None
        if progress_enabled(show):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=100, desc=desc, leave=False, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}]")

    def __call__(self, step: str, fraction: float) -> None:
        if self._cancel.is_set():
            raise LaunchCancelled(f"launch of {self.desc} was cancelled (at: {step})")
        fraction = min(1.0, max(self.fraction, float(fraction)))
        self.step = step
        if self._bar is not None:
            self._bar.set_postfix_str(step, refresh=False)
            self._bar.update(int(round(fraction * 100)) - self._bar.n)
        self.fraction = fraction

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
