"""xinference_nb against Xinference 4.1, side by side, in one run, on this machine.

    .venv/bin/python bench/vs_xinference.py [--calls 50] [--docs 512] [--chat-tokens 32] [--json out.json]

The same custom models on each system: the packaged all-MiniLM-L6-v2 registered from the seed's
embedding template, and the tiny random Llama of the test fixtures (tests/tiny_models.py) as a custom
LLM. Systems, measured one after the other (no two loads compete for the 2 cores):

* ``in-kernel``  xinference_nb's ``Client()`` in this process;
* ``nb-rest``    xinference_nb's REST server (``xinf serve``, its own process) driven by our Client(url);
* ``xinference`` ``xinference-local`` from .venv-xinference, driven by the same Client(url), so the
  HTTP client is the same and the difference is the server.

Measured: launch time (embedding, LLM; one system at a time, the others idle), the first embedding
call, per-call latency of one short embedding (median of ``--calls``), ``--docs`` short documents in
one call (best of ``--docs-runs``), chat tokens/s. Calls go round-robin across the systems, so load
from elsewhere on the machine hits all of them alike. Ratios
are ours / Xinference's (lower is better) against the targets: launch ≤ 1/10, in-kernel short-call
latency ≤ 1/10, our REST short-call latency ≤ 1/4.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))             # reference/ (the reference data)
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import xinference_cluster as xc  # noqa: E402  (tests/ helper: start/stop xinference-local)
from seeds import seed  # noqa: E402

SHORT = "hello world"
CHAT = [{"role": "user", "content": "Tell me a short story about a robot who learns to write poems."}]
TARGETS = {  # metric → (system, max ratio ours / Xinference)
    "embed_launch_s": [("in-kernel", 0.1)],
    "short_call_ms": [("in-kernel", 0.1), ("nb-rest", 0.25)],
}


# --------------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------------
def minilm_doc(path: Path) -> dict:
    doc = seed("embedding")
    doc.update(model_name="bench-minilm", dimensions=384, max_tokens=256, language=["en"])
    doc["model_specs"][0]["model_uri"] = f"file://{path}"
    return doc


def tiny_llm_doc(path: Path) -> dict:
    doc = seed("llm")
    doc.update(model_name="bench-tiny-llm", model_family="my-tiny", model_lang=["en"],
               model_ability=["generate", "chat"], context_length=2048,
               chat_template=(path / "chat_template.jinja").read_text(), stop_token_ids=[2], stop=["<|im_end|>"])
    doc["model_specs"][0].update(model_size_in_billions="0_01", model_uri=f"file://{path}")
    return doc


def models(workdir: Path) -> tuple[Path, Path]:
    import tiny_models

    llama = workdir / "tiny-llama"
    with tiny_models.quiet():
        tiny_models.build_tiny_llama(llama)
    return tiny_models.minilm_path(), llama


# --------------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------------
def remote_client(endpoint: str):
    from xinference_nb.client import Client

    try:
        return Client(endpoint)
    except NotImplementedError:  # before Client(url) returned the RemoteClient
        from xinference_nb.client.remote import RemoteClient

        return RemoteClient(endpoint)


class NbServer:
    """``xinf serve`` in its own process group, with its own XINFERENCE_NB_HOME."""

    def __init__(self, workdir: Path):
        self.port = xc.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, XINFERENCE_NB_HOME=str(workdir / "nb-server-home"))
        self.log = open(workdir / "nb-server.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "xinference_nb.commands.cli", "serve", "--port", str(self.port),
                                      "--allow-any-path", "--log-level", "warning"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xinf serve exited: {(workdir / 'nb-server.log').read_text()[-3000:]}")
            try:
                if xc.http_json("GET", f"{self.endpoint}/v1/models", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("xinf serve did not answer within 60 s")

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


class DirectST:
    """Control row: sentence-transformers called directly in this process (no SDK, no server), so
    the table shows what the machine gives right now; the other rows' overhead is above this floor."""

    def __init__(self, path: Path):
        self.path = path

    def register_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    unregister_model = register_model

    def launch_model(self, model_name: str, model_type: str = "embedding", **kwargs: Any) -> str:
        if model_type != "embedding":
            raise NotImplementedError("the control row has embeddings only")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(self.path), device="cpu")
        return model_name

    def get_model(self, uid: str) -> "DirectST":
        return self

    def terminate_model(self, uid: str) -> None:
        self.model = None

    def create_embedding(self, input: Any) -> dict:  # noqa: A002
        texts = [input] if isinstance(input, str) else list(input)
        vectors = self.model.encode(texts)
        return {"object": "list", "data": [{"index": i, "object": "embedding", "embedding": v.tolist()}
                                           for i, v in enumerate(vectors)]}


class System:
    """One system under test: its client, launch arguments, and the results measured on it."""

    def __init__(self, name: str, client: Any, launch_kwargs: dict[str, dict], llm: bool = True):
        self.name, self.client, self.launch_kwargs, self.llm = name, client, launch_kwargs, llm
        self.res: dict[str, Any] = {"system": name}
        self.uids: dict[str, str] = {}
        self.handles: dict[str, Any] = {}

    def step(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a bench row reports what failed and goes on
            self.res.setdefault("errors", {})[what] = f"{type(exc).__name__}: {str(exc)[:300]}"
            return None

    def launch(self, model_type: str, doc: dict, key: str) -> None:
        def go() -> None:
            sec, uid = timed(lambda: self.client.launch_model(doc["model_name"], model_type=model_type,
                                                              **self.launch_kwargs[model_type]))
            self.res[key] = sec
            self.uids[model_type] = uid
            self.handles[model_type] = self.client.get_model(uid)

        self.step(f"launch {model_type}", go)


def run_all(systems: list[System], embed_doc: dict, llm_doc: dict, args: argparse.Namespace) -> None:
    """Launches one system at a time (nothing else loading); calls interleaved round-robin across
    systems, so background load on the machine hits every system alike."""
    docs = [f"document number {i} about robots, poems and the weather" for i in range(args.docs)]
    for s in systems:
        for mtype, doc in (("embedding", embed_doc), ("LLM", llm_doc)):
            s.step(f"register {mtype}", lambda: s.client.register_model(mtype, json.dumps(doc), persist=False))
        s.launch("embedding", embed_doc, "embed_launch_s")
        if "embedding" in s.handles:
            h = s.handles["embedding"]
            s.step("first call", lambda: s.res.__setitem__("first_call_ms", timed(lambda: h.create_embedding(SHORT))[0]
                                                            * 1000))
        print(f"{s.name}: embedding launched", flush=True)
    emb = [s for s in systems if "embedding" in s.handles]
    for s in emb:
        for _ in range(3):
            s.step("warm", lambda: s.handles["embedding"].create_embedding(SHORT))
    lat: dict[str, list[float]] = {s.name: [] for s in emb}
    for _ in range(args.calls):
        for s in emb:
            sec = s.step("short call", lambda: timed(lambda: s.handles["embedding"].create_embedding(SHORT))[0])
            if sec is not None:
                lat[s.name].append(sec * 1000)
    for s in emb:
        if lat[s.name]:
            s.res["short_call_ms"] = statistics.median(lat[s.name])
            s.res["short_call_mean_ms"] = statistics.fmean(lat[s.name])
    big: dict[str, list[float]] = {s.name: [] for s in emb}
    for _ in range(args.docs_runs):
        for s in emb:
            sec = s.step("docs call", lambda: timed(lambda: s.handles["embedding"].create_embedding(docs))[0])
            if sec is not None:
                big[s.name].append(sec)
    for s in emb:
        if big[s.name]:
            s.res["docs_call_s"] = min(big[s.name])
        s.step("terminate embedding", lambda: s.client.terminate_model(s.uids["embedding"]))
    print("embedding measured", flush=True)

    for s in systems:
        if not s.llm:
            continue
        s.launch("LLM", llm_doc, "llm_launch_s")
        if "LLM" in s.handles:
            s.step("warm chat", lambda: s.handles["LLM"].chat(CHAT, generate_config={"max_tokens": 4}))
    llm = [s for s in systems if "LLM" in s.handles]
    tok = {s.name: [0, 0.0] for s in llm}
    for _ in range(args.chat_runs):
        for s in llm:
            out = s.step("chat", lambda: timed(lambda: s.handles["LLM"].chat(
                CHAT, generate_config={"max_tokens": args.chat_tokens, "temperature": 0})))
            if out is not None:
                tok[s.name][0] += out[1]["usage"]["completion_tokens"]
                tok[s.name][1] += out[0]
    for s in llm:
        tokens, seconds = tok[s.name]
        s.res["chat_tokens"] = tokens
        s.res["chat_tok_s"] = tokens / seconds if seconds else None
        s.step("terminate LLM", lambda: s.client.terminate_model(s.uids["LLM"]))
    for s in systems:
        for mtype, doc in (("embedding", embed_doc), ("LLM", llm_doc)):
            s.step(f"unregister {mtype}", lambda: s.client.unregister_model(mtype, doc["model_name"]))
    print("LLM measured", flush=True)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
METRICS = [("embed_launch_s", "embedding launch", "s"), ("first_call_ms", "first embedding call", "ms"),
           ("short_call_ms", "short embedding call (median)", "ms"), ("docs_call_s", "512 docs in one call", "s"),
           ("llm_launch_s", "LLM launch", "s"), ("chat_tok_s", "chat tokens/s (higher is better)", "tok/s")]


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    by = {r["system"]: r for r in rows}
    base = by.get("xinference", {})
    names = [r["system"] for r in rows]
    lines = [f"{'metric':42}" + "".join(f"{n:>14}" for n in names)
             + "".join(f"{n + '/xinf':>18}" for n in names if n not in ("xinference", "st-direct"))]
    for key, label, unit in METRICS:
        label = label.replace("512", str(args.docs))
        line = f"{label + ' [' + unit + ']':42}"
        for n in names:
            v = by[n].get(key)
            line += f"{v:14.3f}" if isinstance(v, (int, float)) else f"{'n/a':>14}"
        for n in names:
            if n in ("xinference", "st-direct"):
                continue
            v, b = by[n].get(key), base.get(key)
            line += f"{v / b:18.3f}" if isinstance(v, (int, float)) and isinstance(b, (int, float)) and b else \
                f"{'n/a':>18}"
        lines.append(line)
    lines.append("")
    lines.append("targets (ours / Xinference, lower is better):")
    for key, checks in TARGETS.items():
        for system, limit in checks:
            v, b = by.get(system, {}).get(key), base.get(key)
            if isinstance(v, (int, float)) and isinstance(b, (int, float)) and b:
                ratio = v / b
                lines.append(f"  {key:16} {system:10} {ratio:8.4f} (1/{1 / ratio:.0f})  target ≤ {limit:g}  "
                             f"{'PASS' if ratio <= limit else 'MISS'}")
            else:
                lines.append(f"  {key:16} {system:10} n/a")
    floor = by.get("st-direct", {}).get("short_call_ms")
    if isinstance(floor, (int, float)):
        parts = [f"{n} +{by[n]['short_call_ms'] - floor:.1f} ms" for n in names
                 if n != "st-direct" and isinstance(by[n].get("short_call_ms"), (int, float))]
        lines.append(f"short call above the direct sentence-transformers floor ({floor:.1f} ms): " + ", ".join(parts))
    for r in rows:
        for step, err in (r.get("errors") or {}).items():
            lines.append(f"  ! {r['system']} {step}: {err}")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--chat-tokens", type=int, default=32)
    ap.add_argument("--chat-runs", type=int, default=3)
    ap.add_argument("--docs-runs", type=int, default=2)
    ap.add_argument("--systems", default="in-kernel,nb-rest,xinference,st-direct",
                    help="st-direct is a control row: sentence-transformers called directly")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    systems_wanted = [s.strip() for s in args.systems.split(",") if s.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-xinference-"))
    os.environ["XINFERENCE_NB_HOME"] = str(workdir / "nb-home")
    minilm, llama = models(workdir)
    embed_doc, llm_doc = minilm_doc(minilm), tiny_llm_doc(llama)
    ours_kw: dict[str, dict] = {"embedding": {}, "LLM": {}}
    xinf_kw = {"embedding": {"model_engine": "sentence_transformers", "n_gpu": None},
               "LLM": {"model_engine": "transformers", "n_gpu": None}}
    print(f"bench vs Xinference 4.1 — {os.cpu_count()} CPUs; work dir {workdir}", flush=True)
    systems: list[System] = []
    stops: list[Callable[[], None]] = []
    try:
        if "in-kernel" in systems_wanted:
            from xinference_nb.client import Client

            systems.append(System("in-kernel", Client(), ours_kw))
        if "nb-rest" in systems_wanted:
            server = NbServer(workdir)
            stops.append(server.stop)
            systems.append(System("nb-rest", remote_client(server.endpoint), ours_kw))
        if "xinference" in systems_wanted:
            reason = xc.xinference_missing_reason()
            if reason:
                print(f"skipping Xinference: {reason}")
            else:
                xl = xc.XinferenceLocal(workdir=workdir / "xinference", roots=[workdir])
                stops.append(xl.stop)
                xl.start()
                print(f"xinference-local up in {xl.startup_seconds:.1f}s", flush=True)
                systems.append(System("xinference", remote_client(xl.endpoint), xinf_kw))
        if "st-direct" in systems_wanted:  # last, so the others pay their own imports at launch
            systems.append(System("st-direct", DirectST(minilm), {"embedding": {}}, llm=False))
        run_all(systems, embed_doc, llm_doc, args)
    finally:
        for stop in reversed(stops):
            stop()
    rows = [s.res for s in systems]
    print()
    print("\n".join(report(rows, args)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
