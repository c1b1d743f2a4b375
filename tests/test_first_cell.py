"""The first cell a user runs is quiet and true: no third-party warning for what the launch does not
use, and a kernel interrupt or the end of the process while a model generates leaves cleanly.

Each case runs in a subprocess: what a module imports, and what a process prints as it exits, can only
be seen from a fresh interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = ("kernels-community", "gemm_4bit", "pip install kernels")


def _run(code: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, XINFERENCE_NB_PROGRESS="0", PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


@pytest.mark.slow
def test_demo_prints_no_bitsandbytes_warning():
    out = subprocess.run([sys.executable, "-m", "xinference_nb.demo"], capture_output=True, text=True, timeout=600,
                         cwd=REPO, env=dict(os.environ, XINFERENCE_NB_PROGRESS="0"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "6. terminated and unregistered. Done." in out.stdout
    assert not [n for n in NOISE if n in out.stdout + out.stderr], out.stderr[-3000:]


@pytest.mark.slow
def test_embedding_and_rerank_launches_import_neither_peft_nor_bitsandbytes(minilm_dir, cross_encoder_dir):
    out = _run("""
        import sys
        import server_fakes as sf
        from public_api import launch
        _, emb = launch("embedding", sf.embedding_doc(sys.argv[1], "quiet-emb"))
        _, rr = launch("rerank", sf.rerank_doc(sys.argv[2], "quiet-rr"))
        assert len(emb.create_embedding("a cat")["data"][0]["embedding"]) == 384
        assert rr.rerank(["a cat", "a car"], "cats")["results"]
        print("LOADED", "peft" in sys.modules, "bitsandbytes" in sys.modules)
        """, str(minilm_dir), str(cross_encoder_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED False False" in out.stdout
    assert not [n for n in NOISE if n in out.stdout + out.stderr], out.stderr[-3000:]


def test_peft_imported_later_works_with_what_was_imported_without_it():
    """transformers.trainer_utils binds PeftModel at import; imported without peft, it gets the names the
    moment peft is imported (the Trainer's peft check would raise NameError otherwise)."""
    pytest.importorskip("peft")
    pytest.importorskip("sentence_transformers")
    out = _run("""
        import sys, threading
        from transformers.utils import import_utils
        real = import_utils.is_peft_available
        from xinference_nb.engines.imports import import_without_peft
        seen = []
        def other_thread():   # peft is held back from the importing thread only
            seen.append(import_utils.is_peft_available())
        def watch(*a, **k):
            if a and a[0] == "sentence_transformers.base.model_card" and not seen:
                t = threading.Thread(target=other_thread); t.start(); t.join()
            return real_import(*a, **k)
        import builtins
        real_import = builtins.__import__
        builtins.__import__ = watch
        import_without_peft("sentence_transformers")
        builtins.__import__ = real_import
        import transformers.trainer_utils as tu
        print("OTHER THREAD", seen)
        import transformers.utils
        print("RESTORED", import_utils.is_peft_available is real, transformers.utils.is_peft_available is real,
              tu.is_peft_available is real, real())
        print("BEFORE", "peft" in sys.modules, hasattr(tu, "PeftModel"))
        import peft
        print("AFTER", tu.PeftModel is peft.PeftModel, tu.PeftMixedModel is peft.PeftMixedModel, tu._is_peft_model(1))
        """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OTHER THREAD [True]" in out.stdout
    assert "RESTORED True True True True" in out.stdout
    assert "BEFORE False False" in out.stdout
    assert "AFTER True True False" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("max_num_seqs", [16, 1], ids=["batched", "one-at-a-time"])
def test_interrupted_chat_batch_stops_and_the_process_exits_cleanly(endless_llama_dir, max_num_seqs):
    """A real SIGINT (a kernel interrupt) during chat_batch stops every generation it started; chats still
    running on other threads when the interpreter exits are stopped before it tears down (they used to
    abort it: "terminate called without an active exception", exit code 134)."""
    out = _run("""
        import os, signal, sys, threading, time
        import server_fakes as sf
        from public_api import launch
        from xinference_nb.manager import get_manager

        uid, h = launch("LLM", sf.llm_doc(sys.argv[1], "endless"), model_engine="transformers",
                        max_num_seqs=int(sys.argv[2]))
        engine = get_manager().engine_model(uid)
        inflight, scheduler = engine._inflight, getattr(engine, "scheduler", None)
        steps = lambda: scheduler.steps if scheduler is not None else 0

        def interrupt():
            while inflight.idle:
                time.sleep(0.01)
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        try:
            h.chat_batch([[{"role": "user", "content": f"count to {i}"}] for i in range(8)],
                         generate_config={"max_tokens": 4000}, progress=False)
            print("FINISHED")
        except KeyboardInterrupt:
            stopped = inflight.wait_idle(10)
            first = steps()
            time.sleep(0.3)
            print("INTERRUPTED", stopped, steps() - first, first < 4000)

        import torch
        held = []   # the tensors the frames of each caught error still reference

        def forever():
            try:
                h.chat([{"role": "user", "content": "go on"}], generate_config={"max_tokens": 4000})
            except Exception as exc:  # stopped at exit: "model terminated"
                tb, n = exc.__traceback__, 0
                while tb is not None:
                    n += sum(isinstance(v, torch.Tensor) for v in tb.tb_frame.f_locals.values())
                    tb = tb.tb_next
                held.append(n)

        callers = [threading.Thread(target=forever, daemon=True) for _ in range(3)]
        for t in callers:
            t.start()
        while inflight.idle:
            time.sleep(0.01)
        time.sleep(0.3)
        print("EXITING", inflight.idle)
        # what the exit hook does, then: no generation thread is left, and no error carries tensors away
        get_manager().stop_generation()
        workers = [t.name for t in threading.enumerate() if t.name.startswith("xinf-generate")]
        for t in callers:
            t.join(10)
        print("STOPPED", workers, held)
        """, str(endless_llama_dir), str(max_num_seqs))
    assert "terminate called" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-3000:]
    assert "INTERRUPTED True 0 True" in out.stdout, out.stdout
    assert "EXITING False" in out.stdout, out.stdout   # still generating when the interpreter exits
    assert "STOPPED [] [0, 0, 0]" in out.stdout, out.stdout
