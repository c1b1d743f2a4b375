"""One command grammar (xinference_nb.commands) for the `xinf` CLI and the `%xinf` magics: every
sub-command and flag both front ends have parses to the same values in both (walked over the
grammar, every spelling of every flag), and the answers to the old disagreements are pinned:
`--n-gpu 0` / `none` / `cpu`, `-s 0.5`, and the generate / chat defaults (max_tokens 512, streaming)."""
from __future__ import annotations

import shlex

import pytest
from test_magics import shell as magics_shell  # noqa: F401 - a fixture: the %xinf shell, reset after each test

from xinference_nb import commands
from xinference_nb.commands import cli
from xinference_nb.client import Client
from xinference_nb.commands import BOTH, CLI, COMMANDS, MAGIC
from xinference_nb.commands.magics import UsageError, XinfMagics


class RecordingHandle:
    def __init__(self, uid, calls):
        self.uid, self.calls, self.model_type = uid, calls, "LLM"

    def chat(self, messages, tools=None, enable_thinking=None, generate_config=None, **kw):
        self.calls.append(("chat", dict(generate_config or {}), enable_thinking))
        message = {"role": "assistant", "content": "ok"}
        if (generate_config or {}).get("stream"):
            return iter([{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": self.uid,
                          "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}])
        return {"id": "c", "object": "chat.completion", "created": 0, "model": self.uid,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    def generate(self, prompt, generate_config=None, **kw):
        self.calls.append(("generate", dict(generate_config or {}), None))
        if (generate_config or {}).get("stream"):
            return iter([{"id": "g", "object": "text_completion", "created": 0, "model": self.uid,
                          "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]}])
        return {"id": "g", "object": "text_completion", "created": 0, "model": self.uid,
                "choices": [{"index": 0, "text": "ok", "finish_reason": "stop"}]}


class Recorder(Client):
    """The in-kernel Client with launch and the model handles recorded (registrations are real)."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def launch_model(self, model_name, model_type="LLM", **kwargs):
        self.calls.append(("launch", dict(kwargs, model_name=model_name, model_type=model_type)))
        return kwargs.get("model_uid") or model_name

    def get_model(self, model_uid):
        return RecordingHandle(model_uid, self.calls)

    def describe_model(self, model_uid):
        return {"model_uid": model_uid, "model_type": "LLM", "model_name": "m", "model_ability": ["chat", "generate"]}


@pytest.fixture
def shell(magics_shell):
    """test_magics' %xinf shell, its Client a Recorder."""
    recorder = Recorder()
    magics_shell.xinf._client_factory = lambda endpoint: recorder
    magics_shell.recorder = recorder
    return magics_shell


def parse_cli(argv):
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    problem = commands.check(args)
    if problem:
        raise UsageError("", problem)
    return args


def parse_magic(ip, argv):
    return ip.magics_manager.registry["XinfMagics"].parse_args(shlex.join(argv))


def shared(command):
    return [f for f in command.flags_for(CLI) if f in command.flags_for(MAGIC)]


def base_argv(command):
    """The required arguments of a command (and its uid), from the grammar's examples."""
    argv = []
    for flag in shared(command):
        if flag.positional and (flag.nargs is None or (command.needs_uid and flag.dest == "uid")):
            argv += list(flag.example)
        elif flag.required:
            argv += [flag.names[0], *flag.example]
    return argv


SHARED = [c for c in COMMANDS if c.fronts == BOTH]
SPELLINGS = [(c, f, s) for c in SHARED for f in shared(c) if not f.positional for s in f.option_strings()]


def test_the_grammar_is_what_both_front_ends_render():
    cli_parser = cli.build_parser()
    magic_parser = XinfMagics().parser
    assert set(cli_parser.commands) == set(commands.names(CLI)) == set(cli.HANDLERS)
    assert set(magic_parser.commands) == set(commands.names(MAGIC))
    assert all(hasattr(XinfMagics, "_do_" + name.replace("-", "_")) for name in commands.names(MAGIC))
    for front, parser in ((CLI, cli_parser), (MAGIC, magic_parser)):
        for name, sub in parser.commands.items():
            rendered = {s for a in sub._actions for s in a.option_strings} - {"-h", "--help"}
            rendered |= {a.dest for a in sub._actions if not a.option_strings}
            grammar = {s for f in commands.BY_NAME[name].flags_for(front)
                       for s in (f.option_strings() if not f.positional else [f.dest])}
            assert rendered == grammar, (front, name)
    # the commands both have are the shell's and the notebook's by nature only where marked
    assert {c.name for c in SHARED} == {"launch", "register", "unregister", "registrations", "list", "describe",
                                        "terminate", "parse", "generate", "chat", "serve",
                                        "export-registrations", "import-registrations", "cached", "remove-cache"}
    from xinference_nb.client.remote import RemoteClient

    for command in SHARED:
        method = command.call.split("(")[0]
        assert not method or hasattr(RemoteClient, method), command.name


@pytest.mark.parametrize("command, flag, spelling", SPELLINGS,
                         ids=[f"{c.name} {s}" for c, _, s in SPELLINGS])
def test_every_flag_parses_the_same_in_both_front_ends(shell, command, flag, spelling):
    base = [command.name] + base_argv(command)
    argv = base + ([] if flag.required else [spelling, *flag.example])
    if flag.required:  # a required flag: the base already has it under its first name; try this spelling
        argv = [command.name] + [spelling if a == flag.names[0] else a for a in base_argv(command)]
    dests = {f.dest for f in shared(command)}
    via_cli = {k: v for k, v in vars(parse_cli(argv)).items() if k in dests}
    via_magic = {k: v for k, v in vars(parse_magic(shell, argv)).items() if k in dests}
    assert via_cli == via_magic
    without = vars(parse_cli(base))
    if not flag.required and not (flag.default is True and not spelling.startswith("--no-")):
        assert via_cli[flag.dest] != without[flag.dest], f"{spelling} changed nothing"
    # and the Client arguments both build from them are the same
    builders = {"launch": commands.launch_kwargs, "generate": commands.generate_config,
                "chat": commands.generate_config, "register": commands.register_kwargs,
                "serve": commands.serve_options}
    if command.name in builders:
        build = builders[command.name]
        assert build(parse_cli(argv)) == build(parse_magic(shell, argv))
    if command.name == "chat":
        assert commands.chat_kwargs(parse_cli(argv)) == commands.chat_kwargs(parse_magic(shell, argv))


# ------------------------------------------------------------------------- the disagreements, pinned

@pytest.mark.parametrize("text, value", [("0", 0), ("2", 2), ("none", None), ("None", None), ("auto", "auto")])
def test_n_gpu_as_xinference_cli(shell, text, value):
    """Xinference's CLI: "none" → None (CPU only), "auto", else int(text): 0 is n_gpu=0."""
    argv = ["launch", "-n", "m", "--n-gpu", text]
    assert parse_cli(argv).n_gpu == parse_magic(shell, argv).n_gpu == value
    assert type(parse_magic(shell, argv).n_gpu) is type(value)


@pytest.mark.parametrize("text", ["cpu", "lots", "-1", "1.5"])
def test_n_gpu_refused_in_both(shell, capsys, text):
    with pytest.raises(SystemExit) as exc:
        cli.main(["launch", "-n", "m", f"--n-gpu={text}"])
    assert exc.value.code == 2 and "use auto, none (CPU only) or a number of GPUs" in capsys.readouterr().err
    assert shell.run_line_magic("xinf", f"launch -n m --n-gpu={text}") is None
    assert "use auto, none (CPU only) or a number of GPUs" in capsys.readouterr().err
    assert not shell.recorder.calls


@pytest.mark.parametrize("text, value", [("7", 7), ("7.0", 7), ("0.5", "0_5"), ("0_5", "0_5"), ("1.50", "1_5"),
                                         ("1_5", "1_5"), ("46.7", "46_7"), ("0.00017", "0_00017")])
def test_size_in_billions_is_xinferences_written_form(shell, text, value):
    argv = ["launch", "-n", "m", "-s", text]
    assert parse_cli(argv).model_size_in_billions == parse_magic(shell, argv).model_size_in_billions == value


@pytest.mark.parametrize("text", ["big", "0", "0_0", "nan", "inf", "1_2_3"])
def test_size_refused_in_both(shell, capsys, text):
    with pytest.raises(SystemExit):
        cli.main(["launch", "-n", "m", f"-s={text}"])
    assert "is not a size in billions" in capsys.readouterr().err
    shell.run_line_magic("xinf", f"launch -n m -s={text}")
    assert "is not a size in billions" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["generate", "chat"])
def test_generate_and_chat_defaults(shell, name):
    for extra, config in (([], {"max_tokens": 512, "stream": True}), (["--no-stream"], {"max_tokens": 512}),
                          (["--max_tokens", "3", "--stream"], {"max_tokens": 3, "stream": True}),
                          (["--temperature", "0.5", "--no-stream"], {"max_tokens": 512, "temperature": 0.5})):
        argv = [name, "u1", *extra]
        assert commands.generate_config(parse_cli(argv)) == commands.generate_config(parse_magic(shell, argv)) \
            == config


def test_the_uid_is_required_in_both(shell, capsys):
    for name in ("describe", "terminate", "generate", "chat"):
        with pytest.raises(SystemExit) as exc:
            cli.main([name])
        assert exc.value.code == 2 and "the model uid is required" in capsys.readouterr().err
        shell.run_line_magic("xinf", name)
        assert "the model uid is required" in capsys.readouterr().err
        assert parse_cli([name, "-u", "a"]).model_uid == parse_magic(shell, [name, "a"]).uid == "a"


def test_extra_cannot_override_a_flag(shell, capsys):
    with pytest.raises(SystemExit):
        cli.main(["launch", "-n", "m", "--extra", "n_gpu", "2"])
    assert "--extra n_gpu: use --n-gpu instead" in capsys.readouterr().err
    shell.run_line_magic("xinf", "launch -n m --extra model-size-in-billions 2")
    assert "use -s/--size-in-billions instead" in capsys.readouterr().err
    args = parse_cli(["launch", "-n", "m", "--extra", "request_limits", "4", "--extra", "cpu-offload", "true"])
    assert commands.launch_kwargs(args)["request_limits"] == 4 and commands.launch_kwargs(args)["cpu_offload"] is True


# ------------------------------------------------------------------- end to end: the same Client call

@pytest.fixture
def server(monkeypatch):
    pytest.importorskip("fastapi")
    monkeypatch.setenv("XINFERENCE_NB_PROGRESS", "0")
    from xinference_nb.server.app import create_app
    from xinference_nb.server.runner import start_in_thread

    recorder = Recorder()
    running = start_in_thread(create_app(recorder), port=0)
    running.recorder = recorder
    yield running
    running.stop()


def test_launch_reaches_the_client_with_the_same_values(shell, server, capsys):
    line = "launch -n m -t embedding -u e1 -s 0.5 --n-gpu 0 --gpu-idx 0 --context-length 64 -r 2"
    assert cli.main(shlex.split(line) + ["-e", server.url]) == 0, capsys.readouterr().err
    assert shell.run_line_magic("xinf", line) == "e1"
    (_, over_rest), (_, in_kernel) = server.recorder.calls[-1], shell.recorder.calls[-1]
    for key in ("model_name", "model_type", "model_uid", "model_size_in_billions", "n_gpu", "gpu_idx",
                "context_length", "replica"):
        assert over_rest[key] == in_kernel[key], key
    assert (in_kernel["model_size_in_billions"], in_kernel["n_gpu"]) == ("0_5", 0)


@pytest.mark.parametrize("name, stdin_field", [("chat", "message"), ("generate", "text")])
def test_generate_and_chat_reach_the_model_with_the_same_config(shell, server, monkeypatch, capsys, name,
                                                                 stdin_field):
    import io
    import sys

    for flags in ([], ["--no-stream"], ["--max-tokens", "7", "--temperature", "0.25"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
        assert cli.main([name, "u1", *flags, "-e", server.url]) == 0, capsys.readouterr().err
        shell.run_cell(f"%%xinf {name} u1 {' '.join(flags)}\nhello")
        (_, over_rest, _), (_, in_kernel, _) = server.recorder.calls[-1], shell.recorder.calls[-1]
        for key in ("max_tokens", "temperature"):
            assert over_rest.get(key) == in_kernel.get(key), (flags, key)
        assert bool(over_rest.get("stream")) == bool(in_kernel.get("stream")) == ("--no-stream" not in flags)
        assert in_kernel["max_tokens"] == (7 if "7" in flags else 512)
    capsys.readouterr()


def test_help_texts_render(capsys):
    for name in commands.names(CLI):
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
    XinfMagics().parser.format_help()
    for sub in XinfMagics().parser.commands.values():
        assert "%%" not in sub.format_help()
