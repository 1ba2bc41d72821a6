"""The `fbmr` command. Each installed component adds its subcommands through the `fbmr.cli`
entry-point group, so a serving-only install shows only what it can run.

An entry point names either a `typer.Typer` (a group such as `fbmr data ...`) or a function (a
single command such as `fbmr serve`).
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

ENTRY_POINT_GROUP = "fbmr.cli"


def build_app() -> typer.Typer:
    """The `fbmr` application with every installed component's subcommands."""
    app = typer.Typer(
        name="fbmr",
        help="Categorise marketplace listings from photo and text, and find similar listings.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        target = entry_point.load()
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=entry_point.name)
        else:
            app.command(entry_point.name)(target)
    return app


def main() -> None:
    build_app()()
