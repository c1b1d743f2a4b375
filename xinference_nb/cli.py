"""``xinf``: the ``xinference`` CLI's commands and flags, over a server (ours or Xinference's).

    xinf serve [--host 127.0.0.1] [--port 9997] [-ak KEY]       # foreground server
    xinf register -t LLM -f model.json [-p]
    xinf registrations -t LLM
    xinf launch -n my-llm -en transformers [-mp /path] [-u uid]
    xinf list
    xinf chat --model-uid UID            # reads messages from stdin, one per line
    xinf generate --model-uid UID
    xinf terminate --model-uid UID
    xinf unregister -t LLM -n my-llm
    xinf parse /path/to/model [--model-family F]                # prints the parsed document (JSON)

Every command but ``serve`` and ``parse`` talks to ``-e/--endpoint`` (default ``$XINFERENCE_NB_ENDPOINT``
or http://127.0.0.1:9997). A thin shell over ``RemoteClient``: errors print one line and exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from .errors import XinfError

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
    from .remote import RemoteClient

    return RemoteClient(args.endpoint, api_key=args.api_key)


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------

def cmd_launch(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {}
    if args.context_length is not None:
        kwargs["context_length"] = args.context_length
    if args.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if args.enable_thinking is not None:
        kwargs["enable_thinking"] = args.enable_thinking
    if args.quantization_config:
        kwargs["quantization_config"] = {k: _value(v) for k, v in args.quantization_config}
    if args.lora_modules:
        kwargs["peft_model_config"] = {"lora_list": [{"lora_name": n, "local_path": p} for n, p in args.lora_modules]}
    if args.env:
        kwargs["envs"] = {k: v for k, v in args.env}
    if args.enable_virtual_env is not None:
        kwargs["enable_virtual_env"] = args.enable_virtual_env
    if args.virtual_env_package:
        kwargs["virtual_env_packages"] = args.virtual_env_package
    if args.worker_ip:
        kwargs["worker_ip"] = args.worker_ip
    if args.n_worker != 1:
        kwargs["n_worker"] = args.n_worker
    for extra in args.extra or []:  # --key value pairs Xinference passes through
        k, v = extra
        kwargs[k.lstrip("-").replace("-", "_")] = _value(v)
    n_gpu: Any = args.n_gpu
    if isinstance(n_gpu, str) and n_gpu.lower() == "none":
        n_gpu = None
    elif isinstance(n_gpu, str) and n_gpu.isdigit():
        n_gpu = int(n_gpu)
    gpu_idx = [int(x) for x in args.gpu_idx.split(",")] if args.gpu_idx else None
    size: Any = args.size_in_billions
    if size is not None:
        try:
            size = int(size)
        except ValueError:
            size = size.replace(".", "_")
    uid = _client(args).launch_model(
        model_name=args.model_name, model_type=args.model_type, model_engine=args.model_engine,
        model_uid=args.model_uid, model_size_in_billions=size, model_format=args.model_format,
        quantization=args.quantization, replica=args.replica, n_gpu=n_gpu, gpu_idx=gpu_idx,
        model_path=args.model_path, **kwargs)
    print(f"Model uid: {uid}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8") as fh:
        model = fh.read()
    _client(args).register_model(args.model_type, model, persist=args.persist, worker_ip=args.worker_ip)
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


def cmd_terminate(args: argparse.Namespace) -> int:
    _client(args).terminate_model(args.model_uid)
    print(f"Terminated model {args.model_uid}")
    return 0


def _prompts(prompt_label: str):
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


def _config(args: argparse.Namespace) -> dict[str, Any]:
    cfg: dict[str, Any] = {"max_tokens": args.max_tokens, "stream": args.stream}
    if args.temperature is not None:
        cfg["temperature"] = args.temperature
    return cfg


def cmd_generate(args: argparse.Namespace) -> int:
    model = _client(args).get_model(args.model_uid)
    for prompt in _prompts("Prompt: "):
        cfg = _config(args)
        if cfg["stream"]:
            for chunk in model.generate(prompt, generate_config=cfg):
                choice = (chunk.get("choices") or [{}])[0]
                print(choice.get("text") or "", end="", flush=True)
            print()
        else:
            print(model.generate(prompt, generate_config=cfg)["choices"][0]["text"])
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    model = _client(args).get_model(args.model_uid)
    messages: list[dict[str, str]] = []
    if args.system_prompt:
        messages.append({"role": "system", "content": args.system_prompt})
    for text in _prompts("User: "):
        messages.append({"role": "user", "content": text})
        cfg = _config(args)
        if cfg["stream"]:
            reply = ""
            for chunk in model.chat(messages, generate_config=cfg):
                delta = ((chunk.get("choices") or [{}])[0].get("delta") or {})
                piece = delta.get("content") or ""
                reply += piece
                print(piece, end="", flush=True)
            print()
        else:
            reply = model.chat(messages, generate_config=cfg)["choices"][0]["message"].get("content") or ""
            print(reply)
        messages.append({"role": "assistant", "content": reply})
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    if args.on_server:
        doc = _client(args).parse_model(args.model_path, args.model_family)
    else:
        from .parse import parse_model
        from .spec import to_document

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
    from .server.runner import serve_forever

    serve_forever(host=args.host, port=args.port, api_key=args.api_key, log_level=args.log_level,
                  allowed_roots=args.allowed_root or None, allow_any_path=args.allow_any_path,
                  allow_flexible=args.allow_flexible, allow_trust_remote_code=args.allow_trust_remote_code)
    return 0


# ------------------------------------------------------------------------------------------------
# Parser
# ------------------------------------------------------------------------------------------------

def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _bool_flag(p: argparse.ArgumentParser, name: str, help_: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=None,
                   help=help_)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xinf", description="Xinference-compatible CLI for xinference_nb.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-e", "--endpoint", default=_endpoint_default(),
                       help="server URL (default: $XINFERENCE_NB_ENDPOINT or %(default)s)")
        p.add_argument("-ak", "--api-key", default=os.environ.get("XINFERENCE_NB_API_KEY"), help="API key")

    p = sub.add_parser("launch", help="launch a model on the server")
    common(p)
    p.add_argument("-n", "--model-name", required=True)
    p.add_argument("-t", "--model-type", default="LLM")
    p.add_argument("-en", "--model-engine")
    p.add_argument("-u", "--model-uid")
    p.add_argument("-s", "--size-in-billions")
    p.add_argument("-f", "--model-format")
    p.add_argument("-q", "--quantization")
    p.add_argument("--context-length", type=int)
    p.add_argument("-r", "--replica", type=int, default=1)
    p.add_argument("--n-worker", type=int, default=1)
    p.add_argument("--n-gpu", default="auto", help='"auto", a number, or "none" for CPU only')
    p.add_argument("-lm", "--lora-modules", nargs=2, action="append", metavar=("NAME", "PATH"))
    p.add_argument("-qc", "--quantization-config", nargs=2, action="append", metavar=("KEY", "VALUE"))
    p.add_argument("--worker-ip")
    p.add_argument("--gpu-idx", help="comma-separated GPU indexes")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("-mp", "--model-path")
    _bool_flag(p, "enable-thinking", "enable/disable thinking for hybrid reasoning models")
    p.add_argument("--enable-virtual-env", dest="enable_virtual_env", action="store_true", default=None)
    p.add_argument("--disable-virtual-env", dest="enable_virtual_env", action="store_false")
    p.add_argument("-vp", "--virtual-env-package", action="append")
    p.add_argument("-ev", "--env", nargs=2, action="append", metavar=("KEY", "VALUE"))
    p.add_argument("--extra", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="any other launch keyword (JSON values accepted)")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("register", help="register a custom model from a JSON file")
    common(p)
    p.add_argument("-t", "--model-type", default="LLM")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("-w", "--worker-ip")
    p.add_argument("-p", "--persist", action="store_true")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("unregister", help="remove a custom registration")
    common(p)
    p.add_argument("-t", "--model-type", default="LLM")
    p.add_argument("-n", "--model-name", required=True)
    p.add_argument("-w", "--worker-ip")
    p.set_defaults(func=cmd_unregister)

    p = sub.add_parser("registrations", help="list built-in and custom registrations of a type")
    common(p)
    p.add_argument("-t", "--model-type", default="LLM")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_registrations)

    p = sub.add_parser("list", help="list running models")
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("terminate", help="terminate a running model")
    common(p)
    p.add_argument("-u", "--model-uid", required=True)
    p.set_defaults(func=cmd_terminate)

    for name, func, label in (("generate", cmd_generate, "complete prompts read from stdin"),
                              ("chat", cmd_chat, "chat with a model, one message per stdin line")):
        p = sub.add_parser(name, help=label)
        common(p)
        p.add_argument("-u", "--model-uid", required=True)
        p.add_argument("--max_tokens", "--max-tokens", dest="max_tokens", type=int, default=512)
        p.add_argument("--temperature", type=float)
        p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True)
        if name == "chat":
            p.add_argument("--system-prompt")
        p.set_defaults(func=func)

    p = sub.add_parser("parse", help="read a model's files into a (partial) registration document")
    common(p)
    p.add_argument("model_path")
    p.add_argument("-t", "--model-type", help="detected when omitted")
    p.add_argument("--model-family")
    p.add_argument("-n", "--model-name")
    p.add_argument("-o", "--output", help="write the JSON to this file")
    p.add_argument("--on-server", action="store_true", help="parse on the server (auto-register route)")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("serve", help="run the REST server in the foreground")
    p.add_argument("-H", "--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument("-p", "--port", type=int, default=9997)
    p.add_argument("-ak", "--api-key", default=os.environ.get("XINFERENCE_NB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every route")
    p.add_argument("--allowed-root", action="append", help="folder model paths may be under (repeatable)")
    p.add_argument("--allow-any-path", action="store_true", help="accept model paths anywhere")
    p.add_argument("--allow-flexible", action="store_true", help="accept flexible registrations over REST")
    p.add_argument("--allow-trust-remote-code", action="store_true", help="accept trust_remote_code over REST")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
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
