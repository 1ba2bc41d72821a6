"""The `fbmr` command, and what its subcommands share so that they agree with each other.

Each installed component adds its subcommands through the `fbmr.cli` entry-point group, so a
serving-only install shows only what it can run. An entry point names either a `typer.Typer` (a
group such as `fbmr data ...`) or a function (a single command such as `fbmr serve`).

The options that name one concept in several commands (the run directory, the prepared dataset,
the model repository, Triton's and the facade's address, the bearer token, progress bars) are
declared once here, as are the exit code of a user's error and the options that mirror the fields
of a settings dataclass (`OptionGroup`): a field's type and default stay the dataclass's.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from fbmr.core.contract import API_KEY_ENV

ENTRY_POINT_GROUP = "fbmr.cli"
# A refusal or failure the user can act on (bad input, a missing file, a gate not passed), in
# every command; 2 stays click's own usage error (an unknown option, a bad value or a bad
# combination of options).
USER_ERROR = 1

RunOption = Annotated[
    Path, typer.Option("--run", help="Run directory: checkpoints, metrics and plots (fbmr train).")
]
DataOption = Annotated[
    Path, typer.Option("--data", help="Prepared dataset (from `fbmr data prepare`).")
]
RepoOption = Annotated[Path, typer.Option("--repo", help="Triton model repository.")]
TritonUrlOption = Annotated[str, typer.Option("--triton-url", help="Triton gRPC HOST:PORT.")]
FacadeUrlOption = Annotated[str, typer.Option("--url", help="The facade's base URL.")]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar=API_KEY_ENV, help="The facade's bearer token.")
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress.")]

Command = TypeVar("Command", bound=Callable[..., Any])


def count(number: int, noun: str) -> str:
    """`number` `noun`s, in the singular for one ("1 listing", "3 listings")."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`): reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def fail(message: str) -> NoReturn:
    """Stop the command with `message` on standard error and the user-error exit code."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(USER_ERROR)


@dataclass(frozen=True)
class OptionGroup:
    """Command-line options for some fields of a settings dataclass (one that builds with no
    arguments): each option's type and default are the field's, its help is given here.

    `helps` maps each field offered to its help; `names` renames a field's option where the
    field's own name would be unclear on the command line (Int8Settings.seed: --calibration-seed).
    """

    settings: type
    helps: Mapping[str, str]
    panel: str | None = None  # the heading it is listed under in --help
    names: Mapping[str, str] = field(default_factory=dict)

    def parameters(self) -> list[inspect.Parameter]:
        types = typing.get_type_hints(self.settings)
        defaults = self.settings()
        return [
            inspect.Parameter(
                self.names.get(name, name),
                inspect.Parameter.KEYWORD_ONLY,
                annotation=types[name],
                default=typer.Option(
                    getattr(defaults, name), help=help_text, rich_help_panel=self.panel
                ),
            )
            for name, help_text in self.helps.items()
        ]

    def values(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The fields' values among a command's options, by field name."""
        return {name: options[self.names.get(name, name)] for name in self.helps}


def with_options(*groups: OptionGroup) -> Callable[[Command], Command]:
    """Give a command taking `**options` the groups' options; their values arrive in `options`."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = [p for group in groups for p in group.parameters()]
        # typer reads a command's options from its signature
        command.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return command

    return decorate


def build_app() -> typer.Typer:
    """The `fbmr` application with every installed component's subcommands."""
    app = typer.Typer(
        name="fbmr",
        help="Categorise marketplace listings from photo and text, and find similar listings.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )

    def print_versions(asked: bool) -> None:
        if asked:
            typer.echo(installed_versions())
            raise typer.Exit()

    @app.callback()
    def versions(
        version: bool = typer.Option(
            False,
            "--version",
            is_eager=True,
            callback=print_versions,
            help="Print the installed components' versions and exit.",
        ),
    ) -> None:
        """Categorise marketplace listings from photo and text, and find similar listings."""

    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        target = entry_point.load()
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=entry_point.name)
        else:
            app.command(entry_point.name)(target)
    return app


def installed_versions() -> str:
    """`fbmr-core 0.1.0, fbmr-serving 0.1.0, ...`: each installed component's version."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("fbmr-core", "fbmr-training", "fbmr-export", "fbmr-serving", "fbmr-client"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def main() -> None:
    # The client says what failed once its retries are spent; stamina's WARNING record of each
    # retry (a bare `stamina.retry_scheduled` line on the terminal) is not for people.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    build_app()()
