"""Our parse_model against Xinference 4.1's auto-parse route, field by field, on the same folders.

    .venv/bin/python bench/parse_vs_xinference.py [--endpoint http://127.0.0.1:9997] [--json out.json]

Folders: every LLM family folder the parse tests build (tests/test_parse.py FAMILY_CASES, from the
catalog and corpus in reference/) and the test fixtures (the tiny Llama,
its reasoning variant, the tiny Llama under a built-in family name, the tiny GGUF). Each is parsed
by ``xinference_nb.parse.parse_model(path, model_family=F)`` and by Xinference's
``POST /v1/models/llm/auto-register {"model_path", "model_family": F}`` (the Web UI's auto-parse).
Without ``--endpoint`` a ``xinference-local`` is started with XINFERENCE_MODEL_REGISTER_ROOTS set to
the temp root (Xinference refuses paths outside its allowed roots) and stopped at the end.

Printed: per folder the fields that differ, then per field how many folders agree, and whether each
side's document is registrable (our load_spec, which follows Xinference's own rules, accepts it once
a model_name is added). tests/test_xinference_cluster.py states, per difference, which side is right.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))             # reference/ (the reference data)
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import xinference_cluster as xc  # noqa: E402

FIELDS = ["context_length", "model_lang", "model_ability", "model_family", "model_specs[0].model_format",
          "model_specs[0].model_size_in_billions", "model_specs[0].quantization", "model_specs[0].model_uri",
          "chat_template", "stop_token_ids", "stop", "reasoning_start_tag", "reasoning_end_tag"]
ABSENT = "<absent>"


def get_field(doc: dict, path: str) -> Any:
    node: Any = doc
    for part in path.replace("[0]", ".0").split("."):
        if isinstance(node, list):
            node = node[int(part)] if len(node) > int(part) else ABSENT
        elif isinstance(node, dict):
            node = node.get(part, ABSENT)
        else:
            return ABSENT
    return node


def normalise(path: str, value: Any) -> Any:
    """Same meaning, same form: file:// URIs and plain paths, "0_5" / 0.5 / "7" / 7 sizes, None / absent."""
    if value is None:
        return ABSENT
    if path.endswith("model_uri") and isinstance(value, str):
        return os.path.realpath(value[len("file://"):] if value.startswith("file://") else value)
    if path.endswith("model_size_in_billions"):
        try:
            return float(str(value).replace("_", "."))
        except ValueError:
            return value
    return value


def xinference_parse(endpoint: str, path: Path, family: str) -> tuple[Optional[dict], Optional[str]]:
    status, body = xc.http_json("POST", f"{endpoint}/v1/models/llm/auto-register",
                                {"model_path": str(path), "model_family": family}, timeout=120)
    if status != 200:
        return None, f"HTTP {status}: {body.get('detail') if isinstance(body, dict) else body}"
    return body, None


def our_parse(path: Path, family: str) -> tuple[Optional[dict], Optional[str]]:
    from xinference_nb.parse import parse_model

    try:
        parsed = parse_model(path, model_type="LLM", model_family=family or None)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return None, f"{type(exc).__name__}: {exc}"
    spec = getattr(parsed, "spec", parsed)
    return spec.model_dump(mode="json"), None


def registrable(doc: Optional[dict], name: str) -> str:
    """'yes', or why our load_spec (Xinference's rules) refuses the document as a registration."""
    if doc is None:
        return "no document"
    from xinference_nb.spec import load_spec

    full = dict(doc, model_name=name, version=2)
    if not full.get("model_family"):
        full["model_family"] = name
    try:
        load_spec("LLM", full)
        return "yes"
    except Exception as exc:  # noqa: BLE001
        issues = getattr(exc, "issues", None)
        return "no: " + ("; ".join(f"{i.path}: {i.message[:70]}" for i in issues) if issues else str(exc)[:150])


def compare(endpoint: str, key: str, path: Path, family: str) -> dict[str, Any]:
    ours, our_err = our_parse(path, family)
    theirs, their_err = xinference_parse(endpoint, path, family)
    row: dict[str, Any] = {"case": key, "path": str(path), "family": family, "ours_error": our_err,
                           "xinference_error": their_err, "fields": {},
                           "ours_registrable": registrable(ours, "parsed-ours"),
                           "xinference_registrable": registrable(theirs, "parsed-xinf")}
    for field in FIELDS:
        a = get_field(ours, field) if ours is not None else ABSENT
        b = get_field(theirs, field) if theirs is not None else ABSENT
        row["fields"][field] = {"ours": a, "xinference": b,
                                "same": normalise(field, a) == normalise(field, b)}
    return row


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------
def build_cases(root: Path) -> list[tuple[str, Path, str]]:
    import tiny_models

    cases: list[tuple[str, Path, str]] = []
    with tiny_models.quiet():
        llama = tiny_models.build_tiny_llama(root / "fixtures" / "tiny-llama")
        reasoning = tiny_models.build_tiny_reasoning_llama(root / "fixtures" / "tiny-reasoning-llama")
    cases += [("fixture tiny-llama", llama, "my-tiny"),
              ("fixture tiny-llama as qwen2.5-instruct", llama, "qwen2.5-instruct"),
              ("fixture tiny-reasoning-llama", reasoning, "my-tiny-reasoning")]
    try:
        gguf = tiny_models.build_tiny_gguf(llama, root / "fixtures" / "tiny-llama-f32.gguf")
        cases.append(("fixture tiny-llama GGUF", gguf, "my-tiny"))
    except Exception as exc:  # noqa: BLE001 - gguf package missing
        print(f"(no GGUF case: {exc})")
    try:
        import parse_families as pf
        import test_parse
    except Exception as exc:  # noqa: BLE001
        print(f"(no family folders: {exc})")
        return cases
    for case, _expected in test_parse.FAMILY_CASES:
        built = pf.build_family(case, root / "families" / case.key)
        cases.append((f"family {case.key}", built.path, case.family))
    return cases


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def short(value: Any, width: int = 46) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[:width - 1] + "…"


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        lines.append(f"== {row['case']}  (model_family={row['family']!r})")
        for side in ("ours", "xinference"):
            if row[f"{side}_error"]:
                lines.append(f"   {side} failed: {short(row[f'{side}_error'], 160)}")
        for field, cell in row["fields"].items():
            if not cell["same"]:
                lines.append(f"   {field:38} ours={short(cell['ours'])}  xinference={short(cell['xinference'])}")
        lines.append(f"   registrable: ours {row['ours_registrable']}; xinference {row['xinference_registrable']}")
    lines.append("")
    lines.append(f"{'field':40}{'same':>6}{'differ':>8}")
    for field in FIELDS:
        same = sum(1 for r in rows if r["fields"][field]["same"])
        lines.append(f"{field:40}{same:6d}{len(rows) - same:8d}")
    ok_ours = sum(r["ours_registrable"] == "yes" for r in rows)
    ok_theirs = sum(r["xinference_registrable"] == "yes" for r in rows)
    lines.append(f"{'registrable documents':40}  ours {ok_ours}/{len(rows)}   xinference {ok_theirs}/{len(rows)}")
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="a running Xinference whose XINFERENCE_MODEL_REGISTER_ROOTS covers --root")
    ap.add_argument("--root", help="where to build the folders (default: a temp dir)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="parse-vs-xinference-")).resolve()
    os.environ.setdefault("XINFERENCE_NB_HOME", str(root / "nb-home"))
    cases = build_cases(root)
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        reason = xc.xinference_missing_reason()
        if reason:
            print(f"cannot compare: {reason}")
            return 1
        server = xc.XinferenceLocal(workdir=root / "xinference", roots=[root]).start()
        endpoint = server.endpoint
    try:
        rows = [compare(endpoint, key, path, family) for key, path, family in cases]
    finally:
        if server is not None:
            server.stop()
    print("\n".join(report(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
