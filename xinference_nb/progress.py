"""One progress helper over ``tqdm.auto``: a widget bar in a notebook, a text bar in a terminal.

``LaunchProgress`` is the ``progress(step, fraction)`` callback a loader receives; it also records
the latest fraction (``get_launch_model_progress``) and raises ``LaunchCancelled`` at the next step
once ``cancel()`` was called (``cancel_launch_model``). ``DownloadProgress`` is one bytes bar for a
whole download (hub files fetched before a launch), reporting to a launch's progress too.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

from .errors import LaunchError


class LaunchCancelled(LaunchError):
    """The launch was cancelled with cancel_launch_model; nothing it loaded is kept."""


def progress_enabled(show: Optional[bool] = None) -> bool:
    if show is not None:
        return bool(show)
    return os.environ.get("XINFERENCE_NB_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def check_show(show: Any) -> None:
    """``show_progress`` is True, False or None (the environment decides); a LaunchError otherwise."""
    if show is not None and not isinstance(show, bool):
        raise LaunchError(f"show_progress must be True, False or None, got {type(show).__name__}")


class LaunchProgress:
    def __init__(self, desc: str, show: Optional[bool] = None):
        self.desc = desc
        self.fraction = 0.0
        self.step = "starting"
        self._cancel = threading.Event()
        self._bar = None
        self.show = progress_enabled(show)   # whether bars are drawn (a download during the launch draws its own)
        if self.show:
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


class DownloadProgress:
    """One bar for a whole download: bytes, speed and time left (``tqdm.auto``), however many files it
    fetches. Each ``update(n)`` also reports ``"downloading <desc>: <percent>"`` to ``step`` (a launch's
    ``LaunchProgress``), whose cancel raises there and so stops the download."""

    def __init__(self, desc: str, total: Optional[int], show: Optional[bool] = None,
                 step: Optional[Callable[[str, float], None]] = None):
        self.desc = desc
        self.total = total or None
        self.done = 0
        self._step = step
        self._bar = None
        if progress_enabled(show):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                             leave=False, dynamic_ncols=True)
        self.update(0)

    def update(self, n: int) -> None:
        self.done += int(n)
        if self._bar is not None and n:
            self._bar.update(int(n))
        if self._step is not None:
            done = f"{min(100, 100 * self.done // self.total)}%" if self.total else f"{self.done} bytes"
            self._step(f"downloading {self.desc}: {done}", 0.0)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def map_in_order(fn: Callable[[Any], Any], items: list[Any], *, workers: int, progress: bool = True,
                 desc: str = "") -> list[Any]:
    """``[fn(x) for x in items]`` run ``workers`` at a time (so that an LLM's continuous batching,
    in-kernel or behind a server, gets them together), results in the order of ``items``, with a
    tqdm bar counting finished items. The first error (or a KeyboardInterrupt) is raised once the
    running calls have ended: they stop at their next token (``threads.cancel_scope``), and the items
    not started yet are not run."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from .threads import cancel_scope

    if not items:
        return []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, leave=False, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))),
                                thread_name_prefix="xinf-batch") as pool:
            stop = threading.Event()   # an interrupt (or the first error) stops the running calls too

            def run(x: Any) -> Any:
                with cancel_scope(stop):
                    return fn(x)

            futures = [pool.submit(run, x) for x in items]
            try:
                for fut in as_completed(futures):
                    fut.result()
                    if bar is not None:
                        bar.update(1)
                results = [fut.result() for fut in futures]
            except BaseException:
                stop.set()
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        if bar is not None:
            bar.close()
    return results
