"""The `fbmr` command agrees with itself: every command answers --help, a concept has one option
name everywhere, and options that mirror a settings dataclass keep its types and defaults."""

from dataclasses import dataclass
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fbmr.core.cli import USER_ERROR, OptionGroup, build_app, fail, with_options


def _commands(group: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    # by attribute, not class: typer vendors its own click
    found: dict[tuple[str, ...], Any] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found |= _commands(command, (*path, name))
        else:
            found[(*path, name)] = command
    return found


COMMANDS = _commands(typer.main.get_command(build_app()))


def test_every_component_adds_its_commands():
    assert {("train",), ("export",), ("serve",), ("score",), ("data", "prepare")} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_answers_help(path):
    result = CliRunner().invoke(build_app(), [*path, "--help"])
    assert result.exit_code == 0, result.output


# a parameter's name -> the one option that may carry it
CONCEPTS = {
    "run": "--run",
    "run_dir": "--run",
    "data": "--data",
    "catalogue": "--data",
    "repo": "--repo",
    "triton_url": "--triton-url",
    "triton": "--triton-url",
    "api_key": "--api-key",
    "progress": "--progress",
}


def test_one_option_name_per_concept():
    for path, command in COMMANDS.items():
        for param in command.params:
            if param.name in CONCEPTS:
                assert param.param_type_name == "option", (path, param.name)
                assert CONCEPTS[param.name] in param.opts, (path, param.opts)


@dataclass(frozen=True)
class _Settings:
    size: int = 3
    ratio: float = 0.5
    seed: int = 7
    hidden: str = "not offered"


GROUP = OptionGroup(_Settings, {"size": "A size.", "ratio": "A ratio.", "seed": "A seed."},
                    names={"seed": "draw_seed"})  # fmt: skip


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_options(GROUP)
    def command(name: str = "x", **options: Any) -> None:
        settings = _Settings(**GROUP.values(options))
        if settings.size < 0:
            fail("negative size")
        typer.echo(f"{name} {settings}")

    return app


def test_an_option_group_keeps_the_fields_types_and_defaults():
    result = CliRunner().invoke(_app(), [])
    assert result.exit_code == 0, result.output
    assert "x _Settings(size=3, ratio=0.5, seed=7, hidden='not offered')" in result.output
    result = CliRunner().invoke(_app(), ["--size", "4", "--ratio", "0.25", "--draw-seed", "1"])
    assert "size=4, ratio=0.25, seed=1" in result.output
    assert CliRunner().invoke(_app(), ["--size", "big"]).exit_code == 2  # click's usage error
    assert CliRunner().invoke(_app(), ["--hidden", "y"]).exit_code == 2


def test_a_users_error_exits_with_the_one_code():
    result = CliRunner().invoke(_app(), ["--size", "-1"])
    assert result.exit_code == USER_ERROR == 1 and "negative size" in result.output


def test_version_names_each_installed_component():
    from typer.testing import CliRunner

    from fbmr.core.cli import build_app, count

    result = CliRunner().invoke(build_app(), ["--version"])
    assert result.exit_code == 0, result.output
    assert "fbmr-core 0.1.0" in result.output and "fbmr-serving" in result.output
    assert (count(1, "listing"), count(2, "listing"), count(0, "time")) == (
        "1 listing", "2 listings", "0 times"
    )  # fmt: skip
