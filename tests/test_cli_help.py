"""Help on every command (issue 11, trial "Low"): a sentence per command and per option, --json everywhere,
default host and port, an example filter and a pointer to the filter docs, no odd ``<bool>`` metavar."""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer.testing import CliRunner

from tuplehub.client.cli import app


def _commands(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    sub = getattr(command, "commands", None)
    if sub is None:
        yield path, command
        return
    for name, child in sub.items():
        yield from _commands(child, (*path, name))


def test_every_command_and_option_has_help_and_takes_json() -> None:
    root = typer.main.get_command(app)
    commands = list(_commands(root))
    assert len(commands) > 40
    assert {("serve",), ("worker",), ("demo",)} <= {path for path, _ in commands}
    for path, command in commands:
        assert (command.help or "").strip(), f"tuplehub {' '.join(path)} has no help"
        options = [param for param in command.params if param.param_type_name == "option"]
        for option in options:
            assert (option.help or "").strip(), f"tuplehub {' '.join(path)} {option.opts} has no help"
        # every command, serve, worker and demo included (README: "Every command takes --json")
        assert any("--json" in option.opts for option in options), f"tuplehub {' '.join(path)} lacks --json"


def test_help_reads_plainly() -> None:
    runner = CliRunner()
    for args in (["--help"], ["export", "--help"], ["datasets", "list", "--help"], ["serve", "--help"]):
        output = runner.invoke(app, args, env={"COLUMNS": "100"}).output
        assert "<bool>" not in output
        assert max(len(line) for line in output.splitlines()) <= 100
    export = runner.invoke(app, ["export", "--help"]).output
    assert '"field": "reward"' in export
    assert "docs/tuples-and-filters.md" in export
    serve = runner.invoke(app, ["serve", "--help"]).output
    assert "127.0.0.1" in serve
    assert "8470" in serve
