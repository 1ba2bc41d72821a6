"""The workspace layout: five distributions, one `fbmr` namespace, torch kept out of serving and
the client, and one `fbmr` command that each component extends."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fbmr.core.cli import build_app
from tests.helpers import REPO_ROOT

COMPONENTS = ("core", "training", "export", "serving", "client")
LOCK = tomllib.loads((REPO_ROOT / "uv.lock").read_text())


def _pyproject(component: str) -> dict:
    return tomllib.loads((REPO_ROOT / component / "pyproject.toml").read_text())


def _closure(name: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every package a distribution pulls in, per uv.lock (all platforms, all markers)."""
    packages = {p["name"]: p for p in LOCK["package"]}
    seen: set[str] = set()
    todo = [(name, extras)]
    while todo:
        current, current_extras = todo.pop()
        package = packages[current]
        edges = list(package.get("dependencies", []))
        for extra in current_extras:
            edges += package.get("optional-dependencies", {}).get(extra, [])
        for edge in edges:
            key = (edge["name"], tuple(edge.get("extra", [])))
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return {n for n, _ in seen}


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_component_is_a_namespace_distribution(component):
    project = _pyproject(component)["project"]
    assert project["name"] == f"fbmr-{component}"
    assert (REPO_ROOT / component / "fbmr" / component / "__init__.py").is_file()
    # PEP 420: no fbmr/__init__.py, or the components would shadow each other.
    assert not (REPO_ROOT / component / "fbmr" / "__init__.py").exists()


def test_the_namespace_spans_every_component():
    import fbmr.client
    import fbmr.export
    import fbmr.serving
    import fbmr.training

    roots = {p.split("/")[-2] for p in fbmr.__path__}
    assert roots >= set(COMPONENTS)
    assert fbmr.training.__file__.startswith(str(REPO_ROOT / "training"))
    assert fbmr.client.__file__.startswith(str(REPO_ROOT / "client"))
    assert fbmr.serving.__file__.startswith(str(REPO_ROOT / "serving"))
    assert fbmr.export.__file__.startswith(str(REPO_ROOT / "export"))


def test_core_depends_on_numpy_and_pillow_only():
    project = _pyproject("core")["project"]
    assert sorted(d.split(">")[0] for d in project["dependencies"]) == ["numpy", "pillow"]
    assert _closure("fbmr-core") == {"numpy", "pillow"}


@pytest.mark.parametrize("component", ["core", "serving", "client"])
def test_torch_stays_out_of_torch_free_installs(component):
    closure = _closure(f"fbmr-{component}", ("cli",))
    assert "torch" not in closure and "torchvision" not in closure
    assert not any(n.startswith("nvidia-") for n in closure), "CUDA wheels came along"


@pytest.mark.parametrize("extras", [("cli",), ("cli", "ray")])
def test_the_client_installs_without_torch_with_or_without_ray(extras):
    closure = _closure("fbmr-client", extras)
    assert "torch" not in closure and "torchvision" not in closure
    assert not any(n.startswith("nvidia-") for n in closure), "CUDA wheels came along"
    # and without the other components: the client talks to them over the network only
    assert not {"fbmr-serving", "fbmr-training", "fbmr-export"} & closure
    assert ("ray" in closure) == ("ray" in extras)
    assert {"httpx", "stamina", "tritonclient", "pandas"} <= closure


def test_fbmr_client_imports_none_of_the_other_components():
    code = (
        "import sys, fbmr.client, fbmr.client.cli, fbmr.client.batch.run, fbmr.client.batch;"
        "from fbmr.client import Client;"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith("
        "('fbmr.serving', 'fbmr.training', 'fbmr.export'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_closure_walk_sees_torch_where_it_is():
    # Guards the check above: the same walk must find torch in the training install.
    assert {"torch", "torchvision", "gensim"} <= _closure("fbmr-training")
    assert {"fastapi", "faiss-cpu", "tritonclient"} <= _closure("fbmr-serving")


def test_fbmr_core_imports_without_torch():
    code = (
        "import sys, fbmr.core.image, fbmr.core.text, fbmr.core.labels, fbmr.core.listing;"
        "assert 'torch' not in sys.modules, 'fbmr.core pulled in torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_fbmr_command_lists_component_subcommands():
    result = CliRunner().invoke(build_app(), ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output
    result = CliRunner().invoke(build_app(), ["data", "--help"])
    assert "prepare" in result.output and "demo" in result.output


def test_the_console_script_runs():
    script = Path(sys.executable).parent / "fbmr"  # installed next to the interpreter
    result = subprocess.run([str(script), "data", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout
