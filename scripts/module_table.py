"""The docs' module tables, generated from the code so they cannot drift: one row per module of
a package, with the first sentence of its docstring (each module's docstring says what it does).

    python scripts/module_table.py            print the table of every package the docs list
    python scripts/module_table.py --write    replace the tables in the docs (between markers)

A table goes between `<!-- module-table:PACKAGE:start -->` and `<!-- module-table:PACKAGE:end -->`
in any file of docs/. The modules are read with `ast`, not imported: no component need be
installed. tests/deploy/test_docs.py fails when a table in the docs differs from this one.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKERS = re.compile(
    r"<!-- module-table:(?P<package>[\w.]+):start -->.*?<!-- module-table:(?P=package):end -->",
    re.DOTALL,
)
# a sentence ends at a full stop before white space and a capital, a backquote or a parenthesis
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(])")


def package_dir(package: str) -> Path:
    """fbmr.X lives in the component folder X (one `fbmr` namespace, one folder a component)."""
    parts = package.split(".")
    return ROOT / parts[1] / Path(*parts)


def summary(path: Path) -> str:
    """The first sentence of the module's docstring, on one line."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    return _SENTENCE_END.split(paragraph)[0].replace("|", "\\|")


def table(package: str) -> str:
    folder = package_dir(package)
    rows = ["| module | what |", "| --- | --- |"]
    paths = sorted(folder.rglob("*.py"), key=lambda p: p.relative_to(folder).parts)
    for path in paths:
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        rows.append(f"| `{'.'.join((package, *parts))}` | {summary(path)} |")
    return "\n".join(rows)


def replaced(text: str) -> str:
    """`text` with every module table between markers replaced by the current one."""

    def current(match: re.Match[str]) -> str:
        package = match["package"]
        start = f"<!-- module-table:{package}:start -->"
        end = f"<!-- module-table:{package}:end -->"
        return f"{start}\n{table(package)}\n{end}"

    return MARKERS.sub(current, text)


def documents() -> list[Path]:
    """The docs holding at least one module table."""
    return [path for path in sorted(DOCS.glob("*.md")) if MARKERS.search(path.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the docs in place")
    write = parser.parse_args().write
    for path in documents():
        text = path.read_text()
        if write:
            path.write_text(replaced(text))
        else:
            for match in MARKERS.finditer(text):
                print(f"{path.relative_to(ROOT)}: {match['package']}\n{table(match['package'])}\n")


if __name__ == "__main__":
    main()
