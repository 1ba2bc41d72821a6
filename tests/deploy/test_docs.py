"""The user-facing documents: the README's settings table is the one FacadeSettings generates,
the docs' module tables the ones the code generates, the two commands stay at the top, and every
relative link in the docs points at a file."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

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


def test_the_module_tables_are_the_ones_the_code_generates() -> None:
    script = REPO_ROOT / "scripts" / "module_table.py"
    spec = importlib.util.spec_from_file_location("module_table", script)
    assert spec and spec.loader
    module_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module_table)
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
