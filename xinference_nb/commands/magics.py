"""``%xinf`` / ``%%xinf``: the xinference CLI inside the notebook.

    %load_ext xinference_nb
    %xinf launch -n my-llm -en transformers --name llm     # the handle lands in variable `llm`
    %%xinf chat {uid}
    What is the capital of France?

    %xinf endpoint http://gpu-box:9997      # later commands and widgets drive that server
    %xinf list -e kernel                     # ...except with -e kernel (or another -e URL)
    %xinf endpoint --reset                   # back to this kernel

Every command takes ``-e/--endpoint URL`` (``kernel`` for this kernel) and ``-ak/--api-key``.
Without either, commands run in this kernel until ``%xinf endpoint URL`` sets a default; the
XINFERENCE_NB_ENDPOINT variable (the ``xinf`` CLI's default) is deliberately not read here, so a
notebook never leaves the kernel unless it says so.

The sub-commands and flags are the ``xinf`` CLI's, from the one grammar in xinference_nb.commands
(``build_parser`` renders it); the actions (``XinfMagics._do_*``) call Client / parse_model with the
arguments that grammar builds and return display objects (xinference_nb.display), never print results.
Bad flags print the usage and one clear error line; a user mistake (XinfError) prints its message,
never a traceback. ``{var}`` in a line is expanded from the notebook's variables by IPython.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from IPython.core.magic import Magics, line_cell_magic, magics_class

from .. import commands
from .. import display
from ..errors import XinfError

SUBCOMMANDS = commands.names(commands.MAGIC)
KERNEL = commands.KERNEL  # -e kernel: this kernel's models, whatever the default endpoint


class UsageError(Exception):
    """Bad arguments: ``usage`` is the sub-command's usage line, ``message`` what was wrong."""

    def __init__(self, usage: str, message: str):
        self.usage, self.message = usage, message
        super().__init__(message)


class _HelpShown(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --model-nam is a typo, not --model-name
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # never SystemExit inside a kernel
        raise UsageError(self.format_usage(), message)

    def exit(self, status: int = 0, message: Optional[str] = None):
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown()


def build_parser() -> _Parser:
    """The argument parser of ``%xinf``, built from the one grammar (xinference_nb.commands) that the
    ``xinf`` CLI uses too; flags and short forms are those of the ``xinference`` CLI."""
    return commands.build(commands.MAGIC, "%xinf", "Xinference commands in the notebook (a cell body is the "
                          "message for chat/generate).", parser_class=_Parser)


def _clean_error(exc: BaseException) -> None:
    print(f"error: {exc}", file=sys.stderr)


@magics_class
class XinfMagics(Magics):
    """``%xinf`` (line) and ``%%xinf`` (cell). ``client_factory`` makes the Client (tests inject one)."""

    def __init__(self, shell=None, client_factory: Optional[Callable[[Optional[str]], Any]] = None):
        super().__init__(shell)
        self.parser = build_parser()
        self._client_factory = client_factory
        self._clients: dict[Optional[str], Any] = {}
        self._api_keys: dict[str, Optional[str]] = {}
        self.default_endpoint: Optional[str] = None
        self.conversations: dict[str, list[dict]] = {}
        self.last: Any = None

    # ---------------------------------------------------------------- plumbing
    def resolve(self, endpoint: Optional[str] = None) -> Optional[str]:
        """-e value → the endpoint to use: None (this kernel) or a URL. No -e: the default endpoint."""
        if endpoint is None:
            return self.default_endpoint
        if endpoint.strip().lower() in KERNEL:
            return None
        endpoint = endpoint.strip().rstrip("/")
        return endpoint if "://" in endpoint else "http://" + endpoint

    def client(self, endpoint: Optional[str] = None, api_key: Optional[str] = None) -> Any:
        endpoint = self.resolve(endpoint)
        if endpoint is not None and api_key and self._api_keys.get(endpoint) != api_key:
            self._api_keys[endpoint] = api_key
            stale = self._clients.pop(endpoint, None)
            if stale is not None and hasattr(stale, "close"):
                stale.close()
        if endpoint not in self._clients:
            if self._client_factory is not None:
                self._clients[endpoint] = self._client_factory(endpoint)
            else:
                from ..client import Client

                self._clients[endpoint] = (Client(endpoint, api_key=self._api_keys.get(endpoint)) if endpoint
                                           else Client())
        return self._clients[endpoint]

    def _client_of(self, args: argparse.Namespace) -> Any:
        return self.client(getattr(args, "endpoint", None), getattr(args, "api_key", None))

    def parse_args(self, line: str) -> argparse.Namespace:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(self.parser.format_usage(), f"cannot split the arguments: {exc}") from None
        if not argv:
            raise UsageError(self.parser.format_usage(), "a command is required: " + ", ".join(SUBCOMMANDS))
        if argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
            raise UsageError(self.parser.format_usage(),
                             f"unknown command {argv[0]!r}; use one of: {', '.join(SUBCOMMANDS)}")
        if argv[0].startswith("-"):  # %xinf --help
            return self.parser.parse_args(argv)
        parser = self.parser.commands[argv[0]]
        args = parser.parse_args(argv[1:])
        args.command = argv[0]
        problem = commands.check(args)
        if problem:
            raise UsageError(parser.format_usage(), problem)
        return args

    @line_cell_magic
    def xinf(self, line: str = "", cell: Optional[str] = None) -> Any:
        """Xinference commands: %xinf help lists them; %xinf COMMAND --help shows the flags."""
        try:
            args = self.parse_args(line)
            result = self.run(args, cell)
        except UsageError as exc:
            print(exc.usage.rstrip(), file=sys.stderr)
            print(f"%xinf: error: {exc.message}", file=sys.stderr)
            return None
        except _HelpShown:
            return None
        except (XinfError, ValueError, LookupError, OSError, NotImplementedError) as exc:
            _clean_error(exc)
            return None
        if result is not None:
            self.last = result
        return result

    def run(self, args: argparse.Namespace, cell: Optional[str] = None) -> Any:
        action = getattr(self, "_do_" + (args.command or "help").replace("-", "_"))
        return action(args, cell)

    def _conversation_key(self, args: argparse.Namespace, uid: str) -> str:
        """Conversations are per model: the uid, plus ``@URL`` for a model on a server."""
        endpoint = self.resolve(getattr(args, "endpoint", None))
        return uid if endpoint is None else f"{uid}@{endpoint}"

    def _uid(self, args: argparse.Namespace) -> str:
        return commands.model_uid(args)  # commands.check refused a command without one

    # ---------------------------------------------------------------- actions
    def _do_help(self, args, cell):
        self.parser.print_help()
        return None

    def _do_launch(self, args, cell):
        client = self._client_of(args)
        uid = client.launch_model(**commands.launch_kwargs(args))
        if args.name:
            self.shell.user_ns[args.name] = client.get_model(uid)
        return display.LaunchedModel(uid, {"model_name": args.model_name, "model_type": args.model_type,
                                     "model_engine": args.model_engine,
                                     "endpoint": getattr(client, "endpoint", None)}, var=args.name)

    def _do_register(self, args, cell):
        path = Path(args.file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise XinfError(f"--file {args.file}: cannot read it ({exc.strerror or exc}); pass the path of the "
                            "model's JSON document") from None
        self._client_of(args).register_model(args.model_type, text, **commands.register_kwargs(args))
        import json

        try:
            name = json.loads(text).get("model_name", "?")
        except (ValueError, AttributeError):
            name = "?"
        where = "persisted" if args.persist else "for this session"
        return display.Message(f"registered custom {args.model_type} model {name!r} ({where})", "ok")

    def _do_unregister(self, args, cell):
        self._client_of(args).unregister_model(args.model_type, args.model_name)
        return display.Message(f"unregistered {args.model_type} model {args.model_name!r}", "ok")

    def _do_registrations(self, args, cell):
        rows = self._client_of(args).list_model_registrations(args.model_type, detailed=args.detailed)
        if args.custom:
            rows = [r for r in rows if not r.get("is_builtin")]
        return display.RegistrationsTable(rows, model_type=args.model_type)

    def _do_export_registrations(self, args, cell):
        doc = self._client_of(args).export_registrations(**commands.export_kwargs(args))
        n = len(doc["models"])
        return display.Message(f"exported {n} custom registration{'s' if n != 1 else ''} to {args.file}", "ok")

    def _do_import_registrations(self, args, cell):
        names = self._client_of(args).import_registrations(**commands.import_kwargs(args))
        where = "persisted" if args.persist else "for this session"
        listed = f": {', '.join(names)}" if names else ""
        return display.Message(f"imported {len(names)} registration{'s' if len(names) != 1 else ''}{listed} ({where})",
                               "ok")

    def _do_cached(self, args, cell):
        rows = self._client_of(args).list_cached_models(args.model_name, **commands.cache_kwargs(args))
        return display.CachedModelsTable(rows)

    def _do_remove_cache(self, args, cell):
        """Without --check it only shows what would be deleted (a notebook cannot ask y/N)."""
        from ..display._html import human_bytes

        client, kwargs = self._client_of(args), commands.cache_kwargs(args)
        if not args.check:
            plan = client.remove_cached_model(args.model_version, dry_run=True, **kwargs)
            return display.Message(f"would delete {len(plan['paths'])} path(s), {human_bytes(plan.get('size_bytes'))}"
                                   f" of {args.model_version}; run again with --check to delete them", "info",
                                   detail="\n".join(plan["paths"]))
        result = client.remove_cached_model(args.model_version, **kwargs)
        kept = f"; registrations that pointed at it (kept): {', '.join(result['registrations'])}" \
            if result.get("registrations") else ""
        return display.Message(f"deleted the cache of {args.model_version} ({len(result['paths'])} path(s), "
                               f"{human_bytes(result.get('size_bytes'))}){kept}", "ok")

    def _do_list(self, args, cell):
        return display.ModelsTable(self._client_of(args).list_models())

    def _do_describe(self, args, cell):
        return self._client_of(args).describe_model(self._uid(args))

    def _do_terminate(self, args, cell):
        uid = self._uid(args)
        self._client_of(args).terminate_model(uid)
        self.conversations.pop(self._conversation_key(args, uid), None)
        return display.Message(f"terminated {uid!r}", "ok")

    def _do_parse(self, args, cell):
        from ..parse import parse_model
        from ..parse.where import parse_with

        endpoint = self.resolve(args.endpoint)
        if endpoint is None:
            parsed = parse_model(args.model_path, model_type=args.model_type, model_family=args.model_family,
                                 model_name=args.model_name)
        else:  # a server: parse where the files are (here when the path exists here)
            parsed = parse_with(self._client_of(args), args.model_path, model_type=args.model_type,
                                model_family=args.model_family, model_name=args.model_name, where_=args.parse_on)
        if args.name:
            self.shell.user_ns[args.name] = parsed
        return display.ParsedView(parsed)

    def _prompt(self, args, cell) -> Optional[str]:
        text = args.prompt if args.prompt is not None else cell
        if text is None:
            return None
        text = text.strip("\n")
        return text if text.strip() else None

    def _do_generate(self, args, cell):
        uid = self._uid(args)
        prompt = self._prompt(args, cell)
        if prompt is None:
            raise UsageError(self.parser.commands["generate"].format_usage(),
                             "generate: give the prompt as the cell body (%%xinf generate UID) or with --prompt")
        config = commands.generate_config(args)
        result = self._client_of(args).get_model(uid).generate(prompt, generate_config=config)
        if config.get("stream"):
            self.last = display.stream_chat(result, messages=[{"role": "user", "content": prompt}], title=uid)
            return None
        return display.ChatView(result, messages=[{"role": "user", "content": prompt}])

    def _do_chat(self, args, cell):
        uid = self._uid(args)
        key = self._conversation_key(args, uid)
        if args.reset:
            self.conversations.pop(key, None)
            return display.Message(f"conversation with {uid!r} reset", "ok")
        history = self.conversations.setdefault(key, [])
        if args.system_prompt and not history:
            history.append({"role": "system", "content": args.system_prompt})
        prompt = self._prompt(args, cell)
        if prompt is None:  # no message: show the conversation so far
            return display.ChatTranscript(history, title=f"conversation with {uid}")
        user = commands.user_message(args, prompt)
        config = commands.generate_config(args)
        handle = self._client_of(args).get_model(uid)
        result = handle.chat(history + [user], generate_config=config, **commands.chat_kwargs(args))
        if config.get("stream"):
            view = display.stream_chat(result, messages=[user], title=uid)
        else:
            view = display.ChatView(result, messages=[user])
        answer = view.answer
        history += [user, {"role": "assistant", "content": answer.get("content") or ""}]
        if config.get("stream"):
            self.last = view
            return None
        return view

    def _do_serve(self, args, cell):
        from ..server.runner import serve

        options = commands.serve_options(args)
        options.update({k: v for k, v in (("api_key", args.api_key), ("log_level", args.log_level)) if v})
        server = serve(host=args.host, port=args.port, **options)
        url = getattr(server, "url", None) or (server if isinstance(server, str) else f"http://{args.host}:{args.port}")
        return display.Message(f"REST server for this kernel's models at {url} (stop it with %xinf stop-server)", "ok")

    def _do_stop_server(self, args, cell):
        from ..server.runner import stop_server

        stop_server()
        return display.Message("REST server stopped", "ok")

    # ---------------------------------------------------------------- endpoint
    def _do_endpoint(self, args, cell):
        if args.reset or (args.url or "").strip().lower() in KERNEL and args.url:
            self.default_endpoint = None
            return display.Message("commands and widgets run in this kernel", "ok")
        if not args.url:
            where = self.default_endpoint or "this kernel"
            return display.Message(f"commands and widgets run on {where} (set with %xinf endpoint URL, "
                             "back to the kernel with %xinf endpoint --reset)", "info")
        endpoint = self.resolve(args.url)
        client = self.client(endpoint, args.api_key)
        running = client.list_models()  # reachable (and the key accepted) before it becomes the default
        self.default_endpoint = endpoint
        return display.Message(f"commands and widgets now run on {endpoint} ({len(running)} running model"
                         f"{'s' if len(running) != 1 else ''}; -e kernel for this kernel, "
                         "%xinf endpoint --reset to come back)", "ok")

    # ---------------------------------------------------------------- widgets
    def _do_register_form(self, args, cell):
        from ..widgets import RegisterForm

        if args.edit is not None:
            if args.path:
                raise UsageError(self.parser.commands["register-form"].format_usage(),
                                 "register-form: --edit NAME opens a registration; give no PATH with it (the "
                                 "form's Parse button re-reads the model's files)")
            return RegisterForm.edit(args.model_type, args.edit, client=self._client_of(args),
                                     parse_on=args.parse_on)
        return RegisterForm(client=self._client_of(args), path=args.path or "", model_type=args.model_type,
                            parse_on=args.parse_on)

    def _do_launch_form(self, args, cell):
        from ..widgets import LaunchForm

        return LaunchForm(client=self._client_of(args), model_type=args.model_type)

    def _do_chatbox(self, args, cell):
        from ..widgets import ChatBox

        return ChatBox(args.uid, client=self._client_of(args))

    def _split_model(self, text: str) -> tuple[Optional[str], str]:
        """``uid@URL`` / ``uid@kernel`` → (endpoint or "kernel", uid); a bare uid → (None, uid)."""
        if "@" in text:
            uid, place = text.rsplit("@", 1)
            if uid and (place.lower() in KERNEL or "://" in place or ":" in place):
                return place, uid
        return None, text

    def _do_compare(self, args, cell):
        from ..widgets import CompareView

        client = self._client_of(args)
        models: list[Any] = []
        for text in args.uids:
            place, uid = self._split_model(text)
            models.append(uid if place is None else (self.client(place), uid))
        # no models named: offer the running ones of -e (or the default) and, when that is a server,
        # this kernel's too, so in-kernel and remote models can be picked side by side
        extra = [self.client("kernel")] if not models and self.resolve(args.endpoint) is not None else None
        return CompareView(uids=models or None, client=client, clients=extra)


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(XinfMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:  # pragma: no cover - nothing to undo beyond IPython's
    pass
