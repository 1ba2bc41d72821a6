"""The README's table of facade settings, generated from `FacadeSettings` so it cannot drift.

    python scripts/settings_table.py            print the table
    python scripts/settings_table.py --write    replace it in README.md (between its markers)

tests/deploy/test_docs.py fails when README.md's table differs from this one.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from fbmr.serving.settings import FacadeSettings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
# Variables the facade image reads for its command line (docker/facade.Dockerfile), not settings.
IMAGE_VARIABLES = {
    "FBMR_HOST": ("0.0.0.0 in the image", "Address `fbmr serve` binds (`--host`)."),
    "FBMR_PORT": ("8080 in the image", "Port it listens on (`--port`)."),
    "FBMR_WORKERS": ("2 in the image", "uvicorn worker processes (`--workers`)."),
}


def _default(value: object) -> str:
    return "unset" if value is None else f"`{value}`"


def table() -> str:
    prefix = FacadeSettings.model_config["env_prefix"]
    rows = ["| variable | default | what |", "| --- | --- | --- |"]
    for name, field in FacadeSettings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {_default(field.default)} | {description} |")
    for name, (default, description) in IMAGE_VARIABLES.items():
        rows.append(f"| `{name}` | {default} | {description} |")
    return "\n".join(rows)


def replaced(text: str) -> str:
    """`text` with the table between the markers replaced by the current one."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{README.name} has no {START} ... {END} markers")
    return pattern.sub(lambda _: f"{START}\n{table()}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    if parser.parse_args().write:
        README.write_text(replaced(README.read_text()))
    else:
        print(table())


if __name__ == "__main__":
    main()
