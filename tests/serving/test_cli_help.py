"""Every `fbmr` option says what it is for, and names its environment variable and default one
way: as typer writes them, `[env var: FBMR_...]` and `[default: ...]`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.testing import CliRunner

from fbmr.core.cli import build_app


def _options(command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, object]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, (*path, name))
    for param in command.params:
        if param.param_type_name == "option" and not param.hidden:
            yield " ".join(path) + " " + "/".join(param.opts), param


def test_every_option_has_help_naming_variables_as_typer_does():
    options = dict(_options(typer.main.get_command(build_app())))
    assert len(options) > 100 and "serve --port" in options
    assert [name for name, option in options.items() if not option.help] == []
    other_ways = re.compile(r"\(env |\$FBMR_|env FBMR_")
    assert [name for name, option in options.items() if other_ways.search(option.help)] == []
    # rich reads "[word]" as markup and drops it: a bracket meant to be shown is escaped
    markup = re.compile(r"(?<!\\)\[")
    assert [name for name, option in options.items() if markup.search(option.help)] == []


def test_serve_shows_each_setting_s_variable_and_default():
    shown = _help("serve")
    assert "[env var: FBMR_TRITON_URL] [default: 127.0.0.1:8001]" in shown, shown
    assert "[env var: FBMR_MAX_IN_FLIGHT] [default: 64]" in shown, shown
    assert "Port to listen on." in shown
    # brackets in a help text are shown, not read as rich markup (which drops them)
    assert "Triton's log file [default: beside the repository]." in _help("triton", "start")


def _help(*command: str) -> str:
    """`fbmr COMMAND --help` as printed, on one line an option."""
    fbmr = str(Path(sys.executable).with_name("fbmr"))
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    done = subprocess.run(
        [fbmr, *command, "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    return done.stdout


def _commands(command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_at_80_columns_cuts_no_option_or_word():
    """Every command's --help at 80 columns: no line wider, no option name cut short (rich
    shortens a column with an ellipsis when a panel's names and types leave no room)."""
    app = build_app()
    commands = list(_commands(typer.main.get_command(app)))
    assert ("train",) in commands and ("data", "demo") in commands and len(commands) > 20
    for command in commands:
        shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}).output
        assert "Usage" in shown, (command, shown)
        assert max(len(line) for line in shown.splitlines()) <= 80, (command, shown)
        assert "…" not in shown, (command, shown)
