"""The user-facing documents: the README's settings table is the one FacadeSettings generates,
the docs' module tables the ones the code generates, the two commands stay at the top, and every
relative link in the docs points at a file."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.helpers import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = [
    README,
    *sorted((REPO_ROOT / "docs").glob("*.md")),
    REPO_ROOT / "docker" / "README.md",
    REPO_ROOT / "deploy" / "k8s" / "README.md",
]


def test_the_settings_table_lists_every_facade_setting() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    text = README.read_text()
    in_readme = text[text.index(start) + len(start) : text.index(end)].strip()
    assert in_readme == generated, "run: python scripts/settings_table.py --write"
    from fbmr.serving.settings import FacadeSettings

    for name in FacadeSettings.model_fields:
        assert f"`FBMR_{name.upper()}`" in in_readme


def _script(name: str) -> Any:
    """A module of scripts/, loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_tables_are_the_ones_the_code_generates() -> None:
    module_table = _script("module_table")
    documents = module_table.documents()
    assert REPO_ROOT / "docs" / "architecture.md" in documents
    for doc in documents:
        text = doc.read_text()
        assert module_table.replaced(text) == text, "run: python scripts/module_table.py --write"
    # and the table names every serving module, one found under each layer
    table = module_table.table("fbmr.serving")
    for name in ("http.routes.similar", "service.answers", "triton.rollout", "index.store"):
        assert f"`fbmr.serving.{name}`" in table


def test_the_two_commands_come_first() -> None:
    first_block = README.read_text().split("```")[1]
    assert "bash scripts/demo.sh" in first_block
    assert "bash scripts/test.sh" in first_block


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_point_at_files(doc) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def _fbmr_commands(text: str) -> list[list[str]]:
    """Each `fbmr ...` command written in a document's code (inline spans, which may wrap, and
    fenced blocks), as its words up to the end of the span or line."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", re.sub(r"```.*?```", "", text, flags=re.S))
    spans = [line for block in fenced for line in block.splitlines()] + inline
    commands = []
    for span in spans:
        for found in re.finditer(r"(?:^|[\s;(|&])fbmr ([^;|&#]*)", span.replace("\n", " ")):
            commands.append(found.group(1).split())
    return commands


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_fbmr_option_the_docs_write_exists(doc) -> None:
    """A renamed or removed option fails here, not in a reader's shell (`fbmr score --triton`)."""
    import typer

    from fbmr.core.cli import build_app

    root = typer.main.get_command(build_app())
    missing = []
    for words in _fbmr_commands(doc.read_text()):
        command, path = root, ["fbmr"]
        while words and words[0] in getattr(command, "commands", {}):
            command = command.commands[words[0]]  # type: ignore[attr-defined]
            path.append(words.pop(0))
        known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for word in words:
            option = word.strip("[]").split("=")[0]
            if re.fullmatch(r"--[a-z0-9-]+", option) and option not in known:
                missing.append(f"{' '.join(path)} {option}")
    assert missing == [], f"{doc.name} writes options that do not exist: {missing}"


def test_the_layer_map_is_the_one_the_code_draws() -> None:
    layer_map = _script("layer_map")
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    assert "<!-- layer-map:start -->" in text and "img/serving-layers.png" in text
    assert layer_map.replaced(text) == text, "run: python scripts/layer_map.py --write"
    assert (REPO_ROOT / "docs" / "img" / "serving-layers.png").is_file()
    # the map reads imports as the layer rules do: the service layer imports Triton and the
    # index, and neither of those imports the service or the HTTP layer
    edges = layer_map.edges()
    assert edges[("service", "triton")] and edges[("service", "index")]
    assert not {("triton", "service"), ("index", "service"), ("index", "http")} & set(edges)
