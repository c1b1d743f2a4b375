"""Which structured-output library to enforce JSON schemas with: mask time per token on a 150k-token
vocabulary, schema compile time, and which JSON-schema features each one compiles, refuses, or compiles
without enforcing.

    python bench/structured_libraries.py                 # every library that imports
    python bench/structured_libraries.py --quick         # fewer walks
    python bench/structured_libraries.py --libs llguidance,xgrammar --vocab 150000

The tokenizer is synthetic and built offline: a byte-level BPE (256 byte tokens plus merges made
programmatically, each merge = a token's prefix + its last byte) of --vocab tokens whose pieces look like
a real one's (words with and without a leading space, capitalised, digits, JSON punctuation glued to
words, whitespace runs, multi-byte Unicode and partial UTF-8 pieces), wrapped as a transformers
PreTrainedTokenizerFast with an eos token.

Per library (llguidance, outlines_core, xgrammar; llama_cpp's LlamaGrammar.from_json_schema, which only
converts a schema to GBNF text: parsing that grammar and masking need a GGUF model's vocabulary):
  prep      building the library's view of the vocabulary (once per model)
  compile   schema -> a matcher, first time; "again" = a fresh matcher for a schema seen before (xgrammar's
            own cache; llguidance: deep_copy of the compiled matcher; outlines_core: a Guide of the kept Index)
  mask      time to compute one token mask (a 32-bit-per-word bitmask) along random valid walks: each
            step a random allowed token (biased toward all-punctuation tokens such as `"}` or `@` so that walks end), until the
            grammar completes or 200 steps; "1st" is the first mask after a fresh compile
  apply     the bitmask applied to a 150k float32 torch logits vector: numpy unpackbits + masked_fill (what
            xinference_nb/engines/structured.py does), and xgrammar's own CPU kernel
Feature matrix: a small schema per JSON-schema feature; "ok" = compiles and 20 random walks all validate
with the jsonschema package, "refuses: ..." = the library's message, "SILENT k/n" = compiles but k of the
n completed walks violate the schema. Compact JSON (no free whitespace) for every library.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EOS = "<|endoftext|>"
MAX_STEPS = 200
EXAMPLES: list[str] = []   # the first invalid output of each (library, feature) that does not enforce
STRUCTURAL = b"".join(bytes([c]) for c in range(33, 127) if not chr(c).isalnum())   # walks favour punctuation


# ------------------------------------------------------------------ the synthetic 150k tokenizer
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what the ByteLevel pre-tokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _word(rng: random.Random) -> str:
    cons, vows = "bcdfghjklmnprstvwxyzqu", "aeiouy"
    n = min(12, max(1, int(rng.expovariate(1 / 3.0)) + 1))
    return "".join(rng.choice(cons) + rng.choice(vows) for _ in range(n))[: rng.randint(2, 2 * n + 1)]


def _pieces(rng: random.Random):
    """An endless stream of token texts that look like a real vocabulary's."""
    for d in range(1000):
        yield str(d)
        yield " " + str(d)
    for k in range(1, 33):
        yield " " * k
        yield "\n" + " " * k
        yield "\t" * min(k, 8)
        yield "\n" * min(k, 4)
    punct = ['{"', '"}', '":', '",', '":"', '","', '"]', '["', '},', '],', '":{', '":[', '"},', '{}', '[]', '","',
             '":true', '":false', '":null', '}}', ']]', '"}]', '"}}', '.', '...', '--', '==', '->', '://', '();']
    yield from punct
    while True:
        w = _word(rng)
        r = rng.random()
        if r < 0.55:
            yield rng.choice([w, " " + w, w.capitalize(), " " + w.capitalize()])
        elif r < 0.70:
            yield rng.choice(['"' + w, ' "' + w, w + '":', w + '"', w + '",', "_" + w, "." + w])
        elif r < 0.85:
            yield "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 3)))
        elif r < 0.92:
            yield "".join(chr(rng.randint(0xC0, 0x24F)) for _ in range(rng.randint(1, 4)))
        else:
            yield " " + w.upper()


def build_tokenizer(size: int, seed: int = 0) -> Any:
    """A byte-level BPE PreTrainedTokenizerFast of ``size`` tokens (eos included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = bytes_to_unicode()
    vocab: dict[str, int] = {b2u[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    stream = _pieces(random.Random(seed))
    while len(vocab) < size - 1:
        text = "".join(b2u[b] for b in next(stream).encode("utf-8"))
        for end in range(2, len(text) + 1):   # prefix closure: every prefix is a token before its extension
            t = text[:end]
            if t not in vocab and len(vocab) < size - 1:
                vocab[t] = len(vocab)
                merges.append((t[:-1], t[-1]))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS)
    assert hf.eos_token_id == size - 1 and len(hf) == size, (hf.eos_token_id, len(hf))
    return hf


def token_bytes(hf: Any) -> list[bytes]:
    u2b = {c: b for b, c in bytes_to_unicode().items()}
    out = [b""] * len(hf)
    for tok, i in hf.get_vocab().items():
        out[i] = b"" if tok == EOS else bytes(u2b[c] for c in tok)
    return out


# ------------------------------------------------------------------ schemas
def obj(props: dict, required: Optional[list] = None, **extra: Any) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False, **extra}


def wrap(schema: dict) -> dict:
    return obj({"v": schema})


BENCH_SCHEMAS: dict[str, dict] = {
    "flat object": obj({"name": {"type": "string"}, "age": {"type": "integer"}, "score": {"type": "number"},
                        "active": {"type": "boolean"}}),
    "nested + arrays": obj({"id": {"type": "integer"},
                            "address": obj({"street": {"type": "string"}, "city": {"type": "string"},
                                            "zip": {"type": "string"}}),
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                            "lines": {"type": "array", "maxItems": 3,
                                      "items": obj({"sku": {"type": "string"}, "qty": {"type": "integer"}})}}),
    "enum/const": obj({"status": {"enum": ["draft", "review", "published", "archived"]},
                       "version": {"const": "v1"}, "level": {"enum": [1, 2, 3]}, "kind": {"const": 7}}),
    "$ref recursive": {"$defs": {"node": obj({"value": {"type": "integer"},
                                              "children": {"type": "array", "maxItems": 2,
                                                           "items": {"$ref": "#/$defs/node"}}}, ["value"])},
                       "$ref": "#/$defs/node"},
    "anyOf": obj({"value": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"},
                                      obj({"x": {"type": "number"}})]},
                  "unit": {"anyOf": [{"enum": ["kg", "lb"]}, {"type": "null"}]}}),
    "pattern + formats": obj({"code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
                              "when": {"type": "string", "format": "date-time"},
                              "email": {"type": "string", "format": "email"},
                              "id": {"type": "string", "format": "uuid"}}),
}

INT = {"type": "integer"}
FEATURES: dict[str, dict] = {
    "$ref/$defs": {"$defs": {"p": obj({"x": INT})}, **obj({"a": {"$ref": "#/$defs/p"}})},
    "recursion": BENCH_SCHEMAS["$ref recursive"],
    "anyOf": wrap({"anyOf": [INT, {"type": "string", "maxLength": 3}]}),
    "oneOf (overlapping)": wrap({"oneOf": [{"enum": [1, 2, 3]}, {"enum": [3, 4]}]}),   # 3 matches both: invalid
    "allOf": {"allOf": [{"type": "object", "properties": {"a": INT}, "required": ["a"]},
                        {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}]},
    "enum": wrap({"enum": ["red", "green", 1, None]}),
    "const": wrap({"const": "fixed"}),
    "pattern": wrap({"type": "string", "pattern": "^[a-z]{2}-[0-9]{3}$"}),
    "format date-time": wrap({"type": "string", "format": "date-time"}),
    "format email": wrap({"type": "string", "format": "email"}),
    "format uuid": wrap({"type": "string", "format": "uuid"}),
    "minLength/maxLength": wrap({"type": "string", "minLength": 3, "maxLength": 5}),
    "minimum/maximum": wrap({"type": "integer", "minimum": 10, "maximum": 20}),
    "exclusiveMinimum": wrap({"type": "integer", "exclusiveMinimum": 5, "maximum": 9}),
    "multipleOf": wrap({"type": "integer", "multipleOf": 7}),
    "minItems/maxItems": wrap({"type": "array", "items": INT, "minItems": 2, "maxItems": 3}),
    "uniqueItems": wrap({"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 2, "maxItems": 3,
                         "uniqueItems": True}),
    "prefixItems": wrap({"type": "array", "prefixItems": [{"type": "string"}, INT], "items": False}),
    "additionalProperties false": {"type": "object", "properties": {"a": INT}, "additionalProperties": False},
    "additionalProperties schema": {"type": "object", "additionalProperties": INT},
    "patternProperties": {"type": "object", "patternProperties": {"^x_": INT}, "additionalProperties": False},
    "required": {"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "required": ["c"],
                 "additionalProperties": False},
    "if/then/else": {**obj({"kind": {"enum": ["n", "s"]}, "v": {"type": ["integer", "string"]}}),
                     "if": {"properties": {"kind": {"const": "n"}}}, "then": {"properties": {"v": INT}},
                     "else": {"properties": {"v": {"type": "string"}}}},
    "not": wrap({"enum": [1, 2, 3], "not": {"const": 2}}),
    "dependentRequired": {"type": "object", "properties": {"a": INT, "b": INT}, "dependentRequired": {"a": ["b"]},
                          "additionalProperties": False},
}


# ------------------------------------------------------------------ the libraries, one interface
class Refused(Exception):
    pass


class Lib:
    """compile(schema) -> handle; fresh(handle) -> matcher; fill(m, bits); consume(m, t) -> ok; done(m)."""
    name = ""
    warnings: list[str] = []

    def __init__(self, hf: Any, n_vocab: int) -> None:
        self.hf, self.n_vocab, self.eos = hf, n_vocab, hf.eos_token_id


class LLGuidance(Lib):
    name = "llguidance"

    def prepare(self) -> None:
        import llguidance
        import llguidance.hf

        self.ll = llguidance
        self.tok = llguidance.hf.from_tokenizer(self.hf, n_vocab=self.n_vocab)

    def compile(self, schema: dict) -> Any:
        g = self.ll.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"})
        m = self.ll.LLMatcher(self.tok, g, log_level=0)
        if m.is_error():
            raise Refused(m.get_error())
        self.warnings = m.get_grammar_warnings()
        return m

    def fresh(self, handle: Any) -> Any:
        return handle.deep_copy()

    def fill(self, m: Any, bits: Any) -> None:
        m.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)

    def consume(self, m: Any, t: int) -> bool:
        return m.consume_token(t)

    def done(self, m: Any) -> bool:
        return m.is_stopped()


class XGrammar(Lib):
    name = "xgrammar"

    def prepare(self) -> None:
        import xgrammar

        self.xg = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(self.hf, vocab_size=self.n_vocab, stop_token_ids=[self.eos])
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=os.cpu_count() or 2)

    def compile(self, schema: dict) -> Any:
        try:
            return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        except Exception as exc:  # noqa: BLE001 - the library's own words are the result
            raise Refused(f"{type(exc).__name__}: {exc}") from None

    def fresh(self, handle: Any) -> Any:
        return self.xg.GrammarMatcher(handle)

    def again(self, schema: dict) -> Any:
        return self.xg.GrammarMatcher(self.compile(schema))

    def fill(self, m: Any, bits: Any) -> None:
        import torch

        m.fill_next_token_bitmask(torch.from_numpy(bits).view(1, -1))

    def consume(self, m: Any, t: int) -> bool:
        return m.accept_token(t)

    def done(self, m: Any) -> bool:
        return m.is_terminated()


class OutlinesCore(Lib):
    name = "outlines_core"

    def prepare(self) -> None:
        import outlines_core

        self.oc = outlines_core
        by_bytes: dict[bytes, list[int]] = {}
        for i, b in enumerate(token_bytes(self.hf)):
            if i != self.eos:
                by_bytes.setdefault(b, []).append(i)
        self.vocab = outlines_core.Vocabulary(self.eos, by_bytes)

    def compile(self, schema: dict) -> Any:
        try:
            regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema), "")
            return self.oc.Index(regex, self.vocab)
        except Exception as exc:  # noqa: BLE001
            raise Refused(f"{type(exc).__name__}: {exc}") from None

    def fresh(self, handle: Any) -> Any:
        return self.oc.Guide(handle)

    def fill(self, m: Any, bits: Any) -> None:
        m.write_mask_into(bits.ctypes.data, bits.size, 4)

    def consume(self, m: Any, t: int) -> bool:
        if t == self.eos:
            return m.is_finished()
        try:
            m.advance(t, False)
            return True
        except Exception:  # noqa: BLE001
            return False

    def done(self, m: Any) -> bool:
        return False   # a final state may still continue (digits, ...): the walk ends on eos


LIBS: dict[str, type[Lib]] = {"llguidance": LLGuidance, "xgrammar": XGrammar, "outlines_core": OutlinesCore}


# ------------------------------------------------------------------ walks
class Walker:
    def __init__(self, lib: Lib, tb: list[bytes], seed: int) -> None:
        import numpy as np

        self.np, self.lib, self.tb = np, lib, tb
        self.bits = np.zeros(((lib.n_vocab + 31) // 32,), dtype=np.int32)
        self.structural = np.array([bool(b.strip()) and all(c in STRUCTURAL for c in b.strip()) for b in tb], dtype=bool)
        self.structural[lib.eos] = True
        self.rng = random.Random(seed)

    def allowed(self) -> Any:
        return self.np.unpackbits(self.bits.view(self.np.uint8), bitorder="little")[: self.lib.n_vocab].astype(bool)

    def pick(self, ok: Any, step: int) -> Optional[int]:
        np, rng = self.np, self.rng
        if ok[self.lib.eos] and rng.random() < 0.5:
            return self.lib.eos
        pool = np.flatnonzero(ok & self.structural) if rng.random() < (0.35 if step < 120 else 0.9) else None
        if pool is None or len(pool) == 0:
            pool = np.flatnonzero(ok)
        return int(pool[rng.randrange(len(pool))]) if len(pool) else None

    def walk(self, m: Any) -> tuple[list[float], Optional[bytes], str]:
        """Mask times (s) and the output (None unless the grammar completed), and why it stopped."""
        times, out = [], bytearray()
        for step in range(MAX_STEPS):
            t0 = time.perf_counter()
            self.lib.fill(m, self.bits)
            times.append(time.perf_counter() - t0)
            t = self.pick(self.allowed(), step)
            if t is None:
                return times, None, "empty mask"
            if not self.lib.consume(m, t):
                return times, None, f"token {t} refused"
            out += self.tb[t]
            if t == self.lib.eos or self.lib.done(m):
                return times, bytes(out), "done"
        return times, None, "200 steps"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# ------------------------------------------------------------------ measurements
def bench_lib(lib: Lib, tb: list[bytes], walks: int) -> tuple[list[list[str]], list[float]]:
    rows, all_times = [], []
    walker = Walker(lib, tb, seed=1)
    for name, schema in BENCH_SCHEMAS.items():
        try:
            t_first, handle = timed(lambda: lib.compile(schema))
        except Refused as exc:
            rows.append([lib.name, name, "refused", str(exc)[:60]] + [""] * 5)
            continue
        t_again, _ = timed(lambda: lib.again(schema) if hasattr(lib, "again") else lib.fresh(handle))
        times, done, first_mask = [], 0, float("nan")
        for w in range(walks):
            tt, out, _why = walker.walk(lib.fresh(handle))
            first_mask = tt[0] if w == 0 else first_mask
            times += tt
            done += out is not None
        all_times += times
        rows.append([lib.name, name, ms(t_first), ms(t_again), ms(first_mask), us(statistics.median(times)),
                     us(pct(times, 0.95)), str(len(times)), f"{done}/{walks}"])
    return rows, all_times


def apply_times(n_vocab: int, reps: int) -> dict[str, tuple[float, float]]:
    import numpy as np
    import torch

    logits = torch.randn(n_vocab, dtype=torch.float32)
    bits = np.random.default_rng(0).integers(-2**31, 2**31 - 1, size=(n_vocab + 31) // 32, dtype=np.int32)

    def common() -> Any:   # xinference_nb/engines/structured.py's RowConstraint.mask
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[:n_vocab].astype(bool)
        return logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))

    out = {"numpy unpackbits + masked_fill": common}
    if importlib.util.find_spec("xgrammar"):
        import xgrammar

        tbits = torch.from_numpy(bits).view(1, -1)
        work = logits.view(1, -1).clone()
        out["xgrammar.apply_token_bitmask_inplace (cpu)"] = \
            lambda: xgrammar.apply_token_bitmask_inplace(work, tbits, backend="cpu")
    res = {}
    for name, fn in out.items():
        fn()
        ts = [timed(fn)[0] for _ in range(reps)]
        res[name] = (statistics.median(ts), min(ts))
    return res


def feature_matrix(lib: Lib, tb: list[bytes], walks: int) -> dict[str, str]:
    import jsonschema

    res, walker = {}, Walker(lib, tb, seed=2)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER   # date-time needs rfc3339-validator installed
    for name, schema in FEATURES.items():
        try:
            handle = lib.compile(schema)
        except Refused as exc:
            res[name] = "refuses: " + " ".join(str(exc).split())[:70]
            continue
        warn = " (warns)" if lib.warnings else ""
        bad = done = 0
        for _ in range(walks):
            _t, out, _why = walker.walk(lib.fresh(handle))
            if out is None:
                continue
            done += 1
            try:
                jsonschema.validate(json.loads(out.decode("utf-8")), schema, format_checker=checker)
            except (ValueError, jsonschema.ValidationError) as exc:
                bad += 1
                if bad == 1:
                    EXAMPLES.append(f"{lib.name} / {name}: {out[:80]!r}: {getattr(exc, 'message', str(exc))[:90]}")
        verdict = f"SILENT {bad}/{done} invalid" if bad else f"ok {done}/{walks}"
        res[name] = verdict + ("" if done == walks or bad else f" ({walks - done} unfinished)") + warn
    return res


def llama_cpp_rows() -> tuple[list[list[str]], dict[str, str]]:
    """llama-cpp-python: schema -> GBNF text only (grammar parsing and masks need a GGUF model's vocab)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    rows, feats = [], {}
    for name, schema in BENCH_SCHEMAS.items():
        try:
            t, _ = timed(lambda: LlamaGrammar.from_json_schema(json.dumps(schema)))
            rows.append(["llama_cpp (->GBNF)", name, ms(t), ms(timed(lambda: LlamaGrammar.from_json_schema(
                json.dumps(schema)))[0]), "needs a GGUF model", "", "", "", ""])
        except Exception as exc:  # noqa: BLE001
            rows.append(["llama_cpp (->GBNF)", name, "refused", f"{type(exc).__name__}: {exc}"[:60]] + [""] * 5)
    for name, schema in FEATURES.items():
        try:
            LlamaGrammar.from_json_schema(json.dumps(schema))
            feats[name] = "converts (enforcement needs a model)"
        except Exception as exc:  # noqa: BLE001
            feats[name] = "refuses: " + " ".join(f"{type(exc).__name__}: {exc}".split())[:70]
    return rows, feats


def ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 10 else f"{s:.1f} s"


def us(s: float) -> str:
    return f"{s * 1e6:.0f} µs"


def table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (x + 2) for x in w) + "|"] + [line(r) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--libs", default="llguidance,outlines_core,xgrammar,llama_cpp")
    ap.add_argument("--walks", type=int, default=5, help="random walks per bench schema")
    ap.add_argument("--feature-walks", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="2 walks per schema, 5 per feature")
    ap.add_argument("--no-features", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.walks, args.feature_walks = 2, 5
    run(args)


def run(args: argparse.Namespace) -> None:
    wanted = [x.strip() for x in args.libs.split(",") if x.strip()]
    present = [x for x in wanted if importlib.util.find_spec(x)]
    for x in wanted:
        if x not in present:
            print(f"skipped {x}: not installed in {sys.executable}")
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    t, hf = timed(lambda: build_tokenizer(args.vocab))
    tb = token_bytes(hf)
    print(f"synthetic byte-level BPE: {len(hf)} tokens (eos {hf.eos_token_id}), built in {t:.1f} s")
    prep, rows, summary, feats = [], [], [], {}
    for name in present:
        if name == "llama_cpp":
            r, feats[name] = llama_cpp_rows()
            rows += r
            continue
        lib = LIBS[name](hf, len(hf))
        t, _ = timed(lib.prepare)
        prep.append([name, ms(t), _version(name)])
        r, times = bench_lib(lib, tb, args.walks)
        rows += r
        summary.append([name, us(statistics.median(times)), us(pct(times, 0.95)), us(max(times)), str(len(times))])
        if not args.no_features:
            feats[name] = feature_matrix(lib, tb, args.feature_walks)
    report(args, prep, rows, summary, feats)


def _version(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name.replace("_", "-"))
    except Exception:  # noqa: BLE001
        return "?"


def report(args: argparse.Namespace, prep: list, rows: list, summary: list, feats: dict) -> None:
    print("\nvocabulary preparation (once per model)")
    print(table(["library", "prep", "version"], prep))
    print(f"\ncompile and mask per schema ({args.walks} walks each, mask = one token's bitmask)")
    print(table(["library", "schema", "compile", "again", "1st mask", "mask med", "mask p95", "steps", "done"], rows))
    print("\nmask time per token, all schemas")
    print(table(["library", "median", "p95", "max", "steps"], summary))
    print(f"\napplying a bitmask to {args.vocab} float32 logits (torch, 200 runs)")
    print(table(["how", "median", "min"], [[k, us(m), us(b)] for k, (m, b) in apply_times(args.vocab, 200).items()]))
    if feats:
        names = list(feats)
        print(f"\nJSON-schema features ({args.feature_walks} random walks validated with jsonschema)")
        print(table(["feature"] + names, [[f] + [feats[n].get(f, "") for n in names] for f in FEATURES]))
        if EXAMPLES:
            print("\nfirst violation of each SILENT entry")
            print("\n".join("  " + e for e in EXAMPLES))


if __name__ == "__main__":
    main()
