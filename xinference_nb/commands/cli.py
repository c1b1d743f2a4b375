"""``xinf``: the ``xinference`` CLI's commands and flags, over a server (ours or Xinference's).

    xinf serve [--host 127.0.0.1] [--port 9997] [-ak KEY]       # foreground server
    xinf register -t LLM -f model.json [-p]
    xinf registrations -t LLM
    xinf launch -n my-llm -en transformers [-mp /path] [-u uid]
    xinf list
    xinf describe UID
    xinf chat UID                         # reads messages from stdin, one per line (or -m TEXT)
    xinf generate UID
    xinf terminate UID
    xinf unregister -t LLM -n my-llm
    xinf parse /path/to/model [--model-family F]                # prints the parsed document (JSON)
    xinf export-registrations regs.json [-t LLM]              # every custom registration, one file
    xinf import-registrations regs.json [--overwrite]
    xinf cached                           # models on disk: the Hugging Face cache, registrations' files
    xinf remove-cache -n Org/Name@main    # shows the files, asks, deletes (--check: no question)

The sub-commands and flags are those of the ``%xinf`` magics, from the one grammar in
xinference_nb.commands; this module only prints. Every command but ``serve`` and ``parse`` talks to
``-e/--endpoint`` (default ``$XINFERENCE_NB_ENDPOINT`` or http://127.0.0.1:9997). A thin shell over
``RemoteClient``: errors print one line and exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from .. import commands
from ..chat import chunk_delta
from ..errors import XinfError

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"


def _endpoint_default() -> str:
    return os.environ.get("XINFERENCE_NB_ENDPOINT") or DEFAULT_ENDPOINT


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table (no dependency on tabulate)."""
    cells = [[("" if v is None else (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)))
              for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(out)


def _client(args: argparse.Namespace):
    from ..client.remote import RemoteClient

    endpoint = args.endpoint or _endpoint_default()
    if endpoint.strip().lower() in commands.KERNEL:
        raise XinfError(f"-e {endpoint}: 'kernel' names a notebook's kernel (%xinf); xinf needs a server URL")
    return RemoteClient(endpoint, api_key=args.api_key or os.environ.get("XINFERENCE_NB_API_KEY"))


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------

def cmd_launch(args: argparse.Namespace) -> int:
    uid = _client(args).launch_model(**commands.launch_kwargs(args))
    print(f"Model uid: {uid}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8") as fh:
        model = fh.read()
    _client(args).register_model(args.model_type, model, **commands.register_kwargs(args))
    name = ""
    try:
        name = json.loads(model).get("model_name", "")
    except (ValueError, AttributeError):
        pass
    print(f"Registered {args.model_type} model {name!r}" + (" (persisted)" if args.persist else ""))
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    _client(args).unregister_model(args.model_type, args.model_name)
    print(f"Unregistered {args.model_type} model {args.model_name!r}")
    return 0


def cmd_registrations(args: argparse.Namespace) -> int:
    rows_in = _client(args).list_model_registrations(args.model_type, detailed=True)
    if args.custom:
        rows_in = [r for r in rows_in if not r.get("is_builtin")]
    if args.json:
        print(json.dumps(rows_in, indent=2))
        return 0
    t = args.model_type
    if t.lower() == "llm":
        headers = ["Type", "Name", "Language", "Ability", "Is-built-in"]
        rows = [[t, r.get("model_name"), r.get("model_lang"), r.get("model_ability"), r.get("is_builtin")]
                for r in rows_in]
    elif t.lower() in ("embedding",):
        headers = ["Type", "Name", "Language", "Dimensions", "Is-built-in"]
        rows = [[t, r.get("model_name"), r.get("language"), r.get("dimensions"), r.get("is_builtin")] for r in rows_in]
    elif t.lower() in ("rerank",):
        headers = ["Type", "Name", "Language", "Is-built-in"]
        rows = [[t, r.get("model_name"), r.get("language"), r.get("is_builtin")] for r in rows_in]
    else:
        headers = ["Type", "Name", "Family", "Is-built-in"]
        rows = [[t, r.get("model_name"), r.get("model_family") or r.get("launcher"), r.get("is_builtin")]
                for r in rows_in]
    print(table(headers, rows))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    models = _client(args).list_models()
    if args.json:
        print(json.dumps(models, indent=2, default=str))
        return 0
    headers = ["UID", "Type", "Name", "Engine", "Format", "Size (in billions)", "Quantization"]
    rows = [[uid, d.get("model_type"), d.get("model_name"), d.get("model_engine"), d.get("model_format"),
             d.get("model_size_in_billions"), d.get("quantization")] for uid, d in models.items()]
    print(table(headers, rows))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    print(json.dumps(_client(args).describe_model(commands.model_uid(args)), indent=2, default=str))
    return 0


def cmd_terminate(args: argparse.Namespace) -> int:
    uid = commands.model_uid(args)
    _client(args).terminate_model(uid)
    print(f"Terminated model {uid}")
    return 0


def _prompts(prompt_label: str, prompt: Optional[str] = None):
    """The prompts: ``-m TEXT`` alone, else one per stdin line until end of input or exit/quit."""
    if prompt is not None:
        if prompt.strip():
            yield prompt
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            try:
                line = input(prompt_label)
            except EOFError:
                print()
                return
        else:
            line = sys.stdin.readline()
            if not line:
                return
        line = line.rstrip("\n")
        if line.strip().lower() in ("exit", "quit", "/exit"):
            return
        if line.strip():
            yield line


def cmd_generate(args: argparse.Namespace) -> int:
    model = _client(args).get_model(commands.model_uid(args))
    for prompt in _prompts("Prompt: ", args.prompt):
        cfg = commands.generate_config(args)
        if cfg.get("stream"):
            for chunk in model.generate(prompt, generate_config=cfg):
                choice = (chunk.get("choices") or [{}])[0]
                print(choice.get("text") or "", end="", flush=True)
            print()
        else:
            print(model.generate(prompt, generate_config=cfg)["choices"][0]["text"])
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    model = _client(args).get_model(commands.model_uid(args))
    messages: list[dict[str, Any]] = []
    if args.system_prompt:
        messages.append({"role": "system", "content": args.system_prompt})
    for n, text in enumerate(_prompts("User: ", args.prompt)):
        # --image files go with the first message
        messages.append(commands.user_message(args, text) if n == 0 else {"role": "user", "content": text})
        cfg = commands.generate_config(args)
        if cfg.get("stream"):
            reply = ""
            for chunk in model.chat(messages, generate_config=cfg, **commands.chat_kwargs(args)):
                piece = chunk_delta(chunk).get("content") or ""
                reply += piece
                print(piece, end="", flush=True)
            print()
        else:
            answer = model.chat(messages, generate_config=cfg, **commands.chat_kwargs(args))
            reply = answer["choices"][0]["message"].get("content") or ""
            print(reply)
        messages.append({"role": "assistant", "content": reply})
    return 0


def cmd_export_registrations(args: argparse.Namespace) -> int:
    doc = _client(args).export_registrations(**commands.export_kwargs(args))
    n = len(doc["models"])
    print(f"Exported {n} custom registration{'s' if n != 1 else ''} to {args.file}")
    return 0


def cmd_import_registrations(args: argparse.Namespace) -> int:
    names = _client(args).import_registrations(**commands.import_kwargs(args))
    print(f"Imported {len(names)} registration{'s' if len(names) != 1 else ''}"
          + (f": {', '.join(names)}" if names else "") + (" (persisted)" if args.persist else " (this session)"))
    return 0


def cmd_cached(args: argparse.Namespace) -> int:
    from ..display import CachedModelsTable

    rows = _client(args).list_cached_models(args.model_name, **commands.cache_kwargs(args))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print("There are no cache files.")
    else:
        view = CachedModelsTable(rows)
        print(table(view.HEADERS, view.rows()))
    return 0


def cmd_remove_cache(args: argparse.Namespace) -> int:
    from ..display._html import human_bytes

    client, kwargs = _client(args), commands.cache_kwargs(args)
    if not args.check:
        plan = client.remove_cached_model(args.model_version, dry_run=True, **kwargs)
        print(f"Model {args.model_version} cache files to be deleted ({human_bytes(plan.get('size_bytes'))}):")
        for path in plan["paths"]:
            print(path)
        refused = plan.get("running") or (plan.get("needs_delete_user_files") and not args.delete_user_files)
        if not refused:  # a refused removal is not asked about: the call below says why
            try:
                answer = input("Do you want to proceed with the deletion? [y/N]: ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("Aborted: nothing was deleted.")
                return 1
    result = client.remove_cached_model(args.model_version, **kwargs)
    print(f"Cache of {args.model_version} deleted ({len(result['paths'])} path{'s' if len(result['paths']) != 1 else ''}"
          f", {human_bytes(result.get('size_bytes'))}).")
    if result.get("registrations"):
        print(f"Registrations that pointed at it (kept): {', '.join(result['registrations'])}")
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    if args.on_server:
        doc = _client(args).parse_model(args.model_path, args.model_family)
    else:
        from ..parse import parse_model
        from ..spec import to_document

        result = parse_model(args.model_path, model_type=args.model_type, model_family=args.model_family,
                             model_name=args.model_name)
        spec = getattr(result, "spec", result)
        doc = to_document(spec) if hasattr(spec, "model_dump") else spec
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        print(f"Wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.runner import RootTooBroad, serve_forever

    try:
        serve_forever(host=args.host, port=args.port, api_key=args.api_key or os.environ.get("XINFERENCE_NB_API_KEY"),
                      log_level=args.log_level or "info", **commands.serve_options(args))
    except RootTooBroad as exc:  # a refused setting is a usage error, like argparse's (exit code 2)
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------------------------------------------------------
# Parser: the grammar of xinference_nb.commands, shared with %xinf
# ------------------------------------------------------------------------------------------------

HANDLERS = {"launch": cmd_launch, "register": cmd_register, "unregister": cmd_unregister,
            "registrations": cmd_registrations, "list": cmd_list, "describe": cmd_describe,
            "terminate": cmd_terminate, "generate": cmd_generate, "chat": cmd_chat, "parse": cmd_parse,
            "serve": cmd_serve, "export-registrations": cmd_export_registrations,
            "import-registrations": cmd_import_registrations, "cached": cmd_cached, "remove-cache": cmd_remove_cache}


def build_parser() -> argparse.ArgumentParser:
    return commands.build(commands.CLI, "xinf", "Xinference-compatible CLI for xinference_nb.", required=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = commands.check(args)
    if problem:
        parser.commands[args.command].error(problem)
    try:
        return HANDLERS[args.command](args) or 0
    except XinfError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
