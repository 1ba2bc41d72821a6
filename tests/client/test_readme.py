"""The README's API snippets (curl and Python), taken from README.md as it stands and run against
the demo facade: only the address, the API key and the photo files are this test's own, so a
snippet that stops working with the code fails here."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from fbmr.core.contract import API_KEY_ENV
from fbmr.training.data.demo_vocabulary import DEMO_CATEGORIES
from tests.helpers import REPO_ROOT, running_facade

pytestmark = pytest.mark.integration  # the demo facade over a real tritonserver

README = REPO_ROOT / "README.md"
# the address the snippets are written for
README_URL = "http://127.0.0.1:8080"
KEY = "readme-test-key"


def snippets(section: str, language: str) -> list[str]:
    """The fenced `language` blocks of the README's `## section` (up to the next `## `)."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(rf"^```{language}\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def keyed_url(facade_settings):
    """The demo facade (the session's Triton and demo index) behind an API key, as deployed."""
    settings = facade_settings.model_copy(update={"api_key": SecretStr(KEY)})
    with running_facade(settings) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture
def photos(listing, tmp_path) -> Path:
    """A folder holding the photo files the snippets name, each a demo listing's photo."""
    photo, _, _ = listing
    for name in ("chair.jpg", "front.jpg", "back.jpg"):
        (tmp_path / name).write_bytes(photo)
    return tmp_path


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_readme_names_its_snippets():
    assert [s for s in snippets("Calling the API", "bash") if "curl " in s]
    assert len(snippets("Calling the API", "python")) == 1
    assert len(snippets("Scoring a catalogue", "python")) == 1


def test_the_curl_snippet_answers_as_its_comment_says(keyed_url, photos):
    (block,) = [s for s in snippets("Calling the API", "bash") if "curl " in s]
    commands = [line for line in block.splitlines() if line.startswith("curl ")]
    assert commands and README_URL in commands[0]
    for command in commands:
        words = shlex.split(command.replace(README_URL, keyed_url))
        # the key as a deployment would add it; -s and --fail-with-body so a refusal fails here
        sent = [words[0], "-s", "--fail-with-body", "-H", f"Authorization: Bearer {KEY}"]
        body = json.loads(_run([*sent, *words[1:]], cwd=photos))
        # the comment's shape: all 13 categories, most probable first, with probabilities
        assert sorted(body["classes"]) == sorted(DEMO_CATEGORIES) and len(body["classes"]) == 13
        assert body["pred"] == body["classes"][0]
        assert body["probabilities"] == sorted(body["probabilities"], reverse=True)


def test_the_python_snippets_run_as_written(keyed_url, photos, demo_prepared):
    calling = snippets("Calling the API", "python")[0]
    scoring = snippets("Scoring a catalogue", "python")[0]
    # the key from the environment, as the README says a client reads it (api_key=None: the
    # default, $FBMR_API_KEY)
    env = {API_KEY_ENV: KEY}

    def run(block: str) -> list[str]:
        assert README_URL in block
        command = [sys.executable, "-c", block.replace(README_URL, keyed_url)]
        return _run(command, cwd=photos, env=env).splitlines()

    # the category, then the names of the five similar listings
    predicted, similar = run(calling)
    assert predicted in DEMO_CATEGORIES
    names = ast.literal_eval(similar)
    # listings of the catalogue the session's index holds (the demo's train and val splits)
    products = pd.read_parquet(demo_prepared / "products.parquet")
    catalogue = set(products[products["split"].isin(["train", "val"])]["product_name"])
    assert isinstance(names, list) and len(names) == 5 and set(names) <= catalogue, names
    # the category and the top three (category, probability)
    (printed,) = run(scoring)
    pred = next(c for c in DEMO_CATEGORIES if printed.startswith(f"{c} ["))
    top = ast.literal_eval(printed.removeprefix(f"{pred} "))
    assert len(top) == 3 and top[0][0] == pred and {c for c, _ in top} <= set(DEMO_CATEGORIES)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
