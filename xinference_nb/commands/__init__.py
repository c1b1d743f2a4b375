"""The one command grammar of the ``xinf`` CLI (commands/cli.py) and the ``%xinf`` magics (commands/magics.py).

Each sub-command and each flag is written here once: its names and short forms (those of the
``xinference`` CLI: -n, -t, -en, -u, -s, -f, -q, -e, -ak ...), type, default, help, how its value is
normalised and which Client call it feeds. Both front ends build their argparse parsers with
:func:`build` and turn the parsed values into Client arguments with the same functions
(:func:`launch_kwargs`, :func:`generate_config`, :func:`model_uid`), so a flag cannot mean one thing
in a shell and another in a notebook. What differs by nature is marked with ``fronts``: the CLI
prints (``--json``, ``-o``), the magics return display objects, keep notebook variables (``--name``)
and conversations (``--reset``), and have the widget and endpoint commands.

The answers where the two used to disagree (pinned by tests/test_commands.py), as Xinference's CLI
gives them:

* ``--n-gpu``: ``auto``, ``none`` (CPU only, sent as ``n_gpu=None``) or a number of GPUs sent as that
  int, so ``0`` is ``n_gpu=0`` (which the in-kernel manager runs on the CPU); ``cpu`` is refused.
* ``-s/--size-in-billions``: Xinference's written form, ``7`` → 7, ``0.5`` and ``0_5`` → ``"0_5"``.
* ``generate`` / ``chat``: ``--max-tokens`` 512 and streaming on (``--no-stream`` turns it off).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

CLI, MAGIC = "cli", "magic"
BOTH = frozenset((CLI, MAGIC))
ONLY_CLI, ONLY_MAGIC = frozenset((CLI,)), frozenset((MAGIC,))

DEFAULT_MAX_TOKENS = 512  # the xinference CLI's default for generate and chat
KERNEL = ("kernel", "local")  # -e kernel: the notebook's own kernel (%xinf); not a server URL


# ------------------------------------------------------------------------------------------------
# Value types: text → the value the Client call takes (argparse reports a refusal with the flag)
# ------------------------------------------------------------------------------------------------

def size_in_billions(text: str) -> Union[int, str]:
    """``7`` → 7, ``0.5`` / ``0_5`` → ``"0_5"`` (Xinference's written form), ``1.50`` → ``"1_5"``."""
    whole, _, part = text.partition("_")
    try:
        if part and not (whole.isdigit() and part.isdigit()):  # "0_5" is 0.5 (Xinference reads "_" as ".")
            raise ValueError(text)
        billions = float(f"{whole}.{part}" if part else text)
        from ..metadata.sizes import size_form

        return size_form(billions)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in billions (e.g. 7, 0.5 or 0_5)") from None


def n_gpu(text: str) -> Union[int, str, None]:
    """``auto``, ``none`` (CPU only → None) or a number of GPUs (an int, ``0`` included)."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    if word.isdigit():
        return int(word)
    raise argparse.ArgumentTypeError(f"{text!r}: use auto, none (CPU only) or a number of GPUs")


def gpu_idx(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ids = []
    if not ids or any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r}: use GPU indexes such as 0 or 0,1")
    return ids


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def var_name(text: str) -> str:
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python variable name")
    return text


def json_value(text: str) -> Any:
    """A flag value as JSON when it is JSON (``1`` → 1, ``true`` → True), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------
# The grammar
# ------------------------------------------------------------------------------------------------

def _text(help_: Union[str, Mapping[str, str]], front: str) -> str:
    """A help text, or the one of this front end where they differ by nature."""
    return help_.get(front, "") if isinstance(help_, Mapping) else help_


@dataclass(frozen=True)
class Flag:
    """One argument: ``names`` as on the command line (a positional has one name without dashes).
    ``maps_to`` says what it becomes in the Client call; ``example`` is a value the equivalence
    test passes (the tokens after the flag)."""

    names: tuple[str, ...]
    dest: str
    help: Union[str, Mapping[str, str]] = ""
    type: Optional[Callable[[str], Any]] = None
    default: Any = None
    action: Any = None
    nargs: Any = None
    metavar: Any = None
    choices: Any = None
    required: bool = False
    maps_to: str = ""
    fronts: frozenset = BOTH
    example: tuple[str, ...] = ("x",)

    @property
    def positional(self) -> bool:
        return not self.names[0].startswith("-")

    def add_to(self, parser: argparse.ArgumentParser, front: str) -> None:
        kw: dict[str, Any] = {"help": _text(self.help, front)}
        for key in ("type", "action", "nargs", "metavar", "choices"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.positional:
            parser.add_argument(self.dest, **kw)
        elif self.required:
            parser.add_argument(*self.names, dest=self.dest, required=True, **kw)
        else:
            parser.add_argument(*self.names, dest=self.dest, default=self.default, **kw)

    def option_strings(self) -> list[str]:
        """Every spelling: the names, plus ``--no-X`` of a BooleanOptionalAction."""
        if self.action is argparse.BooleanOptionalAction:
            return list(self.names) + ["--no-" + n[2:] for n in self.names if n.startswith("--")]
        return list(self.names)


@dataclass(frozen=True)
class Command:
    """A sub-command; ``call`` is the Client method it drives ("" for none), ``remote``: it takes
    -e/--endpoint and -ak/--api-key."""

    name: str
    help: Union[str, Mapping[str, str]]
    flags: tuple[Flag, ...] = ()
    call: str = ""
    fronts: frozenset = BOTH
    remote: bool = True
    needs_uid: bool = False

    def flags_for(self, front: str) -> list[Flag]:
        flags = ([ENDPOINT, API_KEY] if self.remote else []) + list(self.flags)
        return [f for f in flags if front in f.fronts]


def _f(*names: str, dest: Optional[str] = None, **kw: Any) -> Flag:
    if dest is None:
        long = next((n for n in names if n.startswith("--")), names[0])
        dest = long.lstrip("-").replace("-", "_")
    if kw.get("action") in ("store_true", "store_false", argparse.BooleanOptionalAction):
        kw.setdefault("example", ())
    if kw.get("action") == "store_true":
        kw.setdefault("default", False)
    return Flag(tuple(names), dest, **kw)


ENDPOINT = _f("-e", "--endpoint", help={
    CLI: "server URL (default: $XINFERENCE_NB_ENDPOINT or http://127.0.0.1:9997)",
    MAGIC: "a server URL, or 'kernel' (default: this kernel, or the endpoint set with %%xinf endpoint)"},
    example=("http://127.0.0.1:1",))
API_KEY = _f("-ak", "--api-key", help={CLI: "the server's API key (default: $XINFERENCE_NB_API_KEY)",
                                       MAGIC: "the server's API key"}, example=("key",))

MODEL_TYPE = _f("-t", "--model-type", default="LLM", help="LLM, embedding, rerank, image, audio or flexible",
                maps_to="model_type", example=("embedding",))
MODEL_NAME = _f("-n", "--model-name", required=True, maps_to="model_name", example=("m",))
UID = _f("uid", nargs="?", help="the model uid (or -u)", maps_to="model_uid", example=("u1",))
MODEL_UID = _f("-u", "--model-uid", help="the model uid", maps_to="model_uid", example=("u2",))
WORKER_IP = _f("-w", "--worker-ip", maps_to="worker_ip", example=("10.0.0.1",))

LAUNCH = Command("launch", {CLI: "launch a registered or built-in model on the server",
                            MAGIC: "launch a registered or built-in model (in this kernel, or on the server of -e)"}, (
    MODEL_NAME, MODEL_TYPE,
    _f("-en", "--model-engine", maps_to="model_engine", example=("transformers",)),
    _f("-u", "--model-uid", maps_to="model_uid", example=("u1",)),
    _f("-s", "--size-in-billions", dest="model_size_in_billions", type=size_in_billions,
       metavar="BILLIONS", help="7, 0.5 or 0_5 (sent as Xinference's form: 7, \"0_5\")",
       maps_to="model_size_in_billions",
       example=("0.5",)),
    _f("-f", "--model-format", maps_to="model_format", example=("pytorch",)),
    _f("-q", "--quantization", maps_to="quantization", example=("4-bit",)),
    _f("-mp", "--model-path", maps_to="model_path", example=("/models/m",)),
    _f("--context-length", type=positive_int, maps_to="context_length", example=("4096",)),
    _f("-r", "--replica", type=positive_int, default=1, maps_to="replica", example=("2",)),
    _f("--n-worker", type=positive_int, default=1, maps_to="n_worker", example=("2",)),
    _f("--n-gpu", type=n_gpu, default="auto", help='"auto", a number of GPUs, or "none" for CPU only',
       maps_to="n_gpu", example=("0",)),
    _f("--gpu-idx", type=gpu_idx, help="comma-separated GPU indexes", maps_to="gpu_idx", example=("0,1",)),
    _f("-lm", "--lora-modules", nargs=2, action="append", metavar=("NAME", "PATH"),
       maps_to="peft_model_config.lora_list", example=("l1", "/lora")),
    _f("-qc", "--quantization-config", nargs=2, action="append", metavar=("KEY", "VALUE"),
       help="a quantization_config entry (JSON values accepted)", maps_to="quantization_config",
       example=("load_in_4bit", "true")),
    WORKER_IP,
    _f("--trust-remote-code", action="store_true", default=None, maps_to="trust_remote_code"),
    _f("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
       help="enable/disable thinking for hybrid reasoning models", maps_to="enable_thinking"),
    _f("--enable-virtual-env", dest="enable_virtual_env", action="store_true", default=None,
       maps_to="enable_virtual_env"),
    _f("--disable-virtual-env", dest="enable_virtual_env", action="store_false", default=None,
       maps_to="enable_virtual_env"),
    _f("-vp", "--virtual-env-package", action="append", maps_to="virtual_env_packages", example=("numpy",)),
    _f("-ev", "--env", nargs=2, action="append", metavar=("KEY", "VALUE"), maps_to="envs", example=("A", "1")),
    _f("--extra", nargs=2, action="append", metavar=("KEY", "VALUE"),
       help="any other launch keyword (JSON values accepted)", maps_to="**kwargs", example=("request_limits", "4")),
    _f("--name", type=var_name, help="store the model handle in this notebook variable", fronts=ONLY_MAGIC,
       example=("llm",)),
), call="launch_model")

REGISTER = Command("register", "register a custom model from a JSON document", (
    MODEL_TYPE,
    _f("-f", "--file", required=True, help="the JSON document", maps_to="model", example=("m.json",)),
    WORKER_IP,
    _f("-p", "--persist", action="store_true", help="keep it across sessions", maps_to="persist"),
    _f("--overwrite", action="store_true", help="replace a custom registration of the same name",
       maps_to="overwrite"),
), call="register_model")

UNREGISTER = Command("unregister", "remove a custom registration", (MODEL_TYPE, MODEL_NAME), call="unregister_model")

REGISTRATIONS = Command("registrations", "list the built-in and custom registrations of a model type", (
    MODEL_TYPE,
    _f("--custom", action="store_true", help="custom registrations only"),
    _f("--detailed", action="store_true", help="the whole documents", fronts=ONLY_MAGIC, maps_to="detailed"),
    _f("--json", action="store_true", help="print JSON instead of a table", fronts=ONLY_CLI),
), call="list_model_registrations")

EXPORT_REGISTRATIONS = Command("export-registrations", "write every custom registration (of the -t types) to one "
                               "JSON file, which import-registrations reads on any client or server", (
    _f("file", help="the JSON file to write", maps_to="path", example=("regs.json",)),
    _f("-t", "--model-type", dest="model_types", action="append", metavar="TYPE",
       help="only this model type (repeatable; default: every type)", maps_to="model_types", example=("embedding",)),
), call="export_registrations")

IMPORT_REGISTRATIONS = Command("import-registrations", "register every model of an export-registrations file, all "
                               "or nothing", (
    _f("file", help="the export's JSON file", maps_to="source", example=("regs.json",)),
    _f("--overwrite", action="store_true", help="replace custom registrations of the same names", maps_to="overwrite"),
    _f("--persist", action=argparse.BooleanOptionalAction, default=True,
       help="keep them across sessions (default: on; --no-persist: this session only)", maps_to="persist"),
), call="import_registrations")

CACHED = Command("cached", "list the models on disk: the Hugging Face cache and the model_uri files of custom "
                 "registrations", (
    _f("-n", "--model-name", "--model_name", dest="model_name", maps_to="model_name", example=("m",),
       help="only this model (a registration's name or a repository id)"),
    WORKER_IP,
    _f("--json", action="store_true", help="print JSON instead of a table", fronts=ONLY_CLI),
), call="list_cached_models")

REMOVE_CACHE = Command("remove-cache", {
    CLI: "delete a cached model's files (shows them and asks first, unless --check)",
    MAGIC: "delete a cached model's files (without --check: shows what would be deleted)"}, (
    _f("-n", "--model-version", "--model_version", dest="model_version", required=True, maps_to="model_version",
       help="the model_version that `cached` shows: Org/Name@<commit or ref>, Org/Name (every revision) or a path",
       example=("Org/Name",)),
    WORKER_IP,
    _f("--check", action="store_true", help="confirm the deletion"),
    _f("--delete-user-files", action="store_true", maps_to="delete_user_files",
       help="allow deleting a registration's own model_uri file or folder (outside the Hugging Face cache)"),
), call="remove_cached_model")

LIST = Command("list", "list running models", (
    _f("--json", action="store_true", help="print JSON instead of a table", fronts=ONLY_CLI),
), call="list_models")

DESCRIBE = Command("describe", "describe a running model", (UID, MODEL_UID), call="describe_model", needs_uid=True)
TERMINATE = Command("terminate", "terminate a running model", (UID, MODEL_UID), call="terminate_model",
                    needs_uid=True)

PARSE = Command("parse", {
    CLI: "read a model's files into a (partial) registration document (JSON)",
    MAGIC: "parse a model folder or file into a document, showing where each field came from"}, (
    _f("model_path", help="a model folder or file", example=("/models/m",)),
    _f("-t", "--model-type", help="detected when omitted", example=("LLM",)),
    _f("--model-family", "--family", dest="model_family", example=("qwen2",)),
    _f("-n", "--model-name", example=("m",)),
    _f("--name", type=var_name, help="store the ParsedModel in this notebook variable", fronts=ONLY_MAGIC,
       example=("parsed",)),
    _f("--parse-on", choices=("auto", "here", "server"), default="auto", fronts=ONLY_MAGIC,
       help="with a server (-e or %%xinf endpoint): auto reads the files here when the path exists here, else on "
            "the server (its auto-parse route, LLMs only)", example=("here",)),
    _f("-o", "--output", help="write the JSON to this file", fronts=ONLY_CLI, example=("o.json",)),
    _f("--on-server", action="store_true", help="parse on the server (auto-register route)", fronts=ONLY_CLI),
), call="parse_model")

_TALK = (
    UID, MODEL_UID,
    _f("-m", "--prompt", "--message", dest="prompt",
       help={CLI: "this one prompt (default: one per stdin line)",
             MAGIC: "the prompt (default: the cell body)"}, example=("hello",)),
    _f("--max-tokens", "--max_tokens", dest="max_tokens", type=positive_int, default=DEFAULT_MAX_TOKENS,
       help="most tokens generated per answer (default: %(default)s, as the xinference CLI)",
       maps_to="generate_config.max_tokens", example=("8",)),
    _f("--temperature", type=float, maps_to="generate_config.temperature", example=("0.5",)),
    _f("--stream", action=argparse.BooleanOptionalAction, default=True, help="stream the answer (default: on)",
       maps_to="generate_config.stream"),
)
GENERATE = Command("generate", {CLI: "complete prompts (-m, or one per stdin line)",
                                MAGIC: "complete a prompt (the cell body, or -m/--prompt)"},
                   _TALK, call="get_model().generate", needs_uid=True)
CHAT = Command("chat", {
    CLI: "chat with a model, one message per stdin line (or -m)",
    MAGIC: "chat with a model; the cell body is your message, the conversation goes on across cells until --reset"},
    _TALK + (
        _f("--system-prompt", "--system", dest="system_prompt", help="system message (when the conversation starts)",
           example=("Be brief.",)),
        _f("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
           help="enable/disable thinking for hybrid reasoning models", maps_to="enable_thinking"),
        _f("--image", dest="images", action="append", metavar="PATH",
           help="attach an image file to the message (repeatable; a vision model)",
           maps_to="messages[-1].content image_url parts", example=("cat.png",)),
        _f("--reset", action="store_true", help="forget the conversation", fronts=ONLY_MAGIC),
    ), call="get_model().chat", needs_uid=True)

SERVE = Command("serve", {CLI: "run the REST server in the foreground",
                          MAGIC: "start the REST server for this kernel's models (in the background)"}, (
    _f("-H", "--host", default="127.0.0.1", help="interface to bind (default %(default)s)", example=("0.0.0.0",)),
    _f("-p", "--port", type=int, default=9997, example=("0",)),
    _f("-ak", "--api-key", help={CLI: "require 'Authorization: Bearer KEY' on every route (default: "
                                      "$XINFERENCE_NB_API_KEY)",
                                 MAGIC: "require 'Authorization: Bearer KEY' on every route"}, example=("k",)),
    _f("--allowed-root", action="append", help="folder model paths may be under (repeatable)", example=("/m",)),
    _f("--allow-any-path", action="store_true", help="accept model paths anywhere"),
    _f("--allow-flexible", action="store_true", help="accept flexible registrations over REST"),
    _f("--allow-trust-remote-code", action="store_true", help="accept trust_remote_code over REST"),
    _f("--allow-virtualenv", action="store_true",
       help="accept over REST what installs packages or sets a model process's environment"),
    _f("--allow-cache-delete", action="store_true",
       help="accept removing cached models over REST (DELETE /v1/cache/models deletes files)"),
    _f("--allowed-host", action="append",
       help="Host name answered without an API key besides loopback ones (repeatable; '*': any)",
       example=("box.lan",)),
    _f("--log-level", choices=("critical", "error", "warning", "info", "debug", "trace"),
       help={CLI: "uvicorn's log level (default: info)", MAGIC: "uvicorn's log level (default: warning)"},
       example=("debug",)),
), remote=False)

_MAGIC_ONLY = dict(fronts=ONLY_MAGIC)
STOP_SERVER = Command("stop-server", "stop the REST server", remote=False, **_MAGIC_ONLY)
REGISTER_FORM = Command("register-form", "show the registration form (a widget); with -e it registers on that "
                        "server", (
                            _f("path", nargs="?"),
                            _f("-t", "--model-type"),
                            _f("--parse-on", choices=("auto", "here", "server"), default="auto",
                               help="where the files are read (auto: here when the path exists here, else on the "
                                    "server)"),
                            _f("--edit", metavar="NAME", help="open this custom registration to edit it (-t: its "
                               "type, when several have that name); Save overwrites it in place",
                               example=("my-llm",)),
                        ), **_MAGIC_ONLY)
LAUNCH_FORM = Command("launch-form", "show the launch form (a widget); with -e it launches on that server",
                      (MODEL_TYPE,), **_MAGIC_ONLY)
CHATBOX = Command("chatbox", "show a chat box for a launched model (a widget)", (_f("uid"),), **_MAGIC_ONLY)
COMPARE = Command("compare", "compare launched models on one prompt (a widget); UID@URL or UID@kernel names a "
                  "model elsewhere than -e, so in-kernel and remote models can be compared",
                  (_f("uids", nargs="*"),), **_MAGIC_ONLY)
ENDPOINT_CMD = Command("endpoint", "set the default server for the commands and widgets (no URL: show it)", (
    _f("url", nargs="?", help="a server URL, or 'kernel' (same as --reset)"),
    _f("-ak", "--api-key", help="the server's API key"),
    _f("--reset", action="store_true", help="back to this kernel"),
), remote=False, **_MAGIC_ONLY)
HELP = Command("help", "show this help", remote=False, **_MAGIC_ONLY)

COMMANDS: tuple[Command, ...] = (LAUNCH, REGISTER, UNREGISTER, REGISTRATIONS, EXPORT_REGISTRATIONS,
                                 IMPORT_REGISTRATIONS, LIST, DESCRIBE, TERMINATE, PARSE, GENERATE, CHAT, CACHED,
                                 REMOVE_CACHE, SERVE, STOP_SERVER, REGISTER_FORM, LAUNCH_FORM, CHATBOX, COMPARE,
                                 ENDPOINT_CMD, HELP)
BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


def names(front: str) -> tuple[str, ...]:
    return tuple(c.name for c in COMMANDS if front in c.fronts)


def build(front: str, prog: str, description: str, parser_class: type = argparse.ArgumentParser,
          required: bool = False) -> argparse.ArgumentParser:
    """The parser of one front end; ``parser.commands`` maps each sub-command name to its parser.
    Abbreviated long flags are refused (--model-nam is a typo, not --model-name)."""
    root = parser_class(prog=prog, description=description, allow_abbrev=False)
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=parser_class)
    sub.required = required
    root.commands = {}  # type: ignore[attr-defined]
    for command in COMMANDS:
        if front not in command.fronts:
            continue
        text = _text(command.help, front)
        p = sub.add_parser(command.name, help=text, description=text.replace("%%", "%"), prog=f"{prog} {command.name}",
                           allow_abbrev=False)
        for flag in command.flags_for(front):
            flag.add_to(p, front)
        root.commands[command.name] = p  # type: ignore[attr-defined]
    return root


# ------------------------------------------------------------------------------------------------
# Parsed values → Client arguments (both front ends call these)
# ------------------------------------------------------------------------------------------------

def check(args: argparse.Namespace) -> Optional[str]:
    """What argparse cannot say: a missing uid, an ``--extra`` key a flag already sets. None if fine."""
    command = BY_NAME.get(getattr(args, "command", None) or "")
    if command is not None and command.needs_uid and not model_uid(args):
        return f"{command.name}: the model uid is required (UID or -u/--model-uid)"
    for key, _ in getattr(args, "extra", None) or []:
        name = _extra_key(key)
        flag = next((f for f in LAUNCH.flags if name in (f.dest, f.maps_to) and not f.positional), None)
        if flag is not None:
            return f"--extra {key}: use {'/'.join(flag.names)} instead"
    return None


def model_uid(args: argparse.Namespace) -> Optional[str]:
    return getattr(args, "model_uid", None) or getattr(args, "uid", None)


def _extra_key(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def launch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``launch``'s flags as Client.launch_model keywords: the ten named ones always, the others only
    when given (so the defaults stay the Client's)."""
    kwargs: dict[str, Any] = {k: getattr(args, k) for k in (
        "model_name", "model_type", "model_engine", "model_format", "model_size_in_billions", "quantization",
        "model_uid", "model_path", "n_gpu", "gpu_idx")}
    for key in ("context_length", "trust_remote_code", "enable_thinking", "enable_virtual_env", "worker_ip"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    for key in ("replica", "n_worker"):
        if getattr(args, key) != 1:
            kwargs[key] = getattr(args, key)
    if args.virtual_env_package:
        kwargs["virtual_env_packages"] = list(args.virtual_env_package)
    if args.env:
        kwargs["envs"] = {k: v for k, v in args.env}
    if args.quantization_config:
        kwargs["quantization_config"] = {k: json_value(v) for k, v in args.quantization_config}
    if args.lora_modules:
        kwargs["peft_model_config"] = {"lora_list": [{"lora_name": n, "local_path": p} for n, p in args.lora_modules]}
    for key, value in args.extra or []:
        kwargs[_extra_key(key)] = json_value(value)
    return kwargs


def generate_config(args: argparse.Namespace) -> dict[str, Any]:
    """``generate`` / ``chat`` flags as the generate_config: max_tokens (512 unless given), temperature
    when given, ``stream: True`` unless --no-stream (not streaming is the config's default)."""
    config: dict[str, Any] = {}
    if args.max_tokens is not None:
        config["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        config["temperature"] = args.temperature
    if args.stream:
        config["stream"] = True
    return config


def user_message(args: argparse.Namespace, text: str) -> dict[str, Any]:
    """The user message of ``chat``: the text, with the ``--image`` files as image parts."""
    from ..chat.images import user_message as message

    return message(text, getattr(args, "images", None) or ())


def chat_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords of ``handle.chat`` besides the messages and the config."""
    return {} if args.enable_thinking is None else {"enable_thinking": args.enable_thinking}


def register_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"persist": args.persist}
    if args.worker_ip:
        kwargs["worker_ip"] = args.worker_ip
    if args.overwrite:
        kwargs["overwrite"] = True
    return kwargs


def cache_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``cached`` / ``remove-cache``'s keywords besides the name or version, those given only."""
    kwargs: dict[str, Any] = {}
    if args.worker_ip is not None:
        kwargs["worker_ip"] = args.worker_ip
    if getattr(args, "delete_user_files", False):
        kwargs["delete_user_files"] = True
    return kwargs


def export_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"path": args.file, "model_types": args.model_types}


def import_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": args.file, "overwrite": args.overwrite, "persist": args.persist}


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """``serve``'s options besides host / port / api key / log level, those given only."""
    options: dict[str, Any] = {}
    if args.allowed_root:
        options["allowed_roots"] = list(args.allowed_root)
    if args.allowed_host:
        options["allowed_hosts"] = list(args.allowed_host)
    for key in ("allow_any_path", "allow_flexible", "allow_trust_remote_code", "allow_virtualenv",
                "allow_cache_delete"):
        if getattr(args, key):
            options[key] = True
    return options


__all__ = ["CLI", "MAGIC", "COMMANDS", "BY_NAME", "Command", "Flag", "build", "check", "names", "launch_kwargs",
           "generate_config", "chat_kwargs", "user_message", "register_kwargs", "serve_options", "cache_kwargs",
           "export_kwargs", "import_kwargs", "model_uid", "size_in_billions",
           "n_gpu", "gpu_idx", "json_value"]
