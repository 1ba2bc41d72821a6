"""The import rules between the serving layers (docs/architecture.md, "Layers and their rules"),
read from the source with `ast`, so a rule broken in a branch that is never run still fails here:

- a route never imports another route: what routes share lives in the service layer or deps;
- the service layer never imports the web framework or the HTTP layer: it raises its own errors;
- the Triton and index layers import neither the HTTP nor the service layer, nor each other;
- the modules at the top of `fbmr.serving` that every layer reads import no layer;
- the client library never imports batch scoring (`fbmr.client.batch`), which builds on it;
- serving and the client never import training, export or torch.

Every import counts, also one inside a function or under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SERVING = "fbmr.serving"
HTTP, SERVICE = f"{SERVING}.http", f"{SERVING}.service"
TRITON, INDEX = f"{SERVING}.triton", f"{SERVING}.index"
ROUTES = f"{HTTP}.routes"
LAYERS = (HTTP, SERVICE, TRITON, INDEX)
WEB_FRAMEWORK = ("fastapi", "starlette")
# the modules at the top of fbmr.serving that any layer may read; cli and the package's
# __init__ stand above the layers instead
SHARED = (f"{SERVING}.settings", f"{SERVING}.request_context", f"{SERVING}.metrics")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` (the text of `module`) imports: for `from a import b`, both `a` and
    `a.b` (b may be a module); relative imports resolved against `module`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                drop = node.level - 1 if is_package else node.level
                package = package[: len(package) - drop]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules(component: str) -> Iterator[tuple[str, set[str]]]:
    """Each module of a component's package, with what it imports."""
    root = REPO_ROOT / component
    for path in sorted((root / "fbmr" / component).rglob("*.py")):
        name = module_name(path, root)
        yield name, imported(path.read_text(), name, path.name == "__init__.py")


SERVING_MODULES = dict(modules("serving"))
CLIENT_MODULES = dict(modules("client"))


def within(name: str, package: str | tuple[str, ...]) -> bool:
    packages = (package,) if isinstance(package, str) else package
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def broken(importer: str | tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """'module imports name' for every import of a module under `importer` that is under one of
    `forbidden`."""
    return sorted(
        f"{module} imports {name}"
        for module, names in SERVING_MODULES.items()
        if within(module, importer)
        for name in names
        if within(name, forbidden)
    )


def test_the_layers_are_found_and_their_imports_read():
    # guards the rules below against passing on nothing
    for layer in LAYERS:
        assert sum(within(m, layer) for m in SERVING_MODULES) >= 4, f"{layer}: too few modules"
    assert f"{ROUTES}.predict" in SERVING_MODULES
    assert f"{SERVICE}.answers" in SERVING_MODULES[f"{ROUTES}.predict"]
    assert "fastapi" in SERVING_MODULES[f"{HTTP}.main"]


def test_the_reader_sees_relative_and_nested_imports():
    source = "from .predict import x\ndef f():\n    from fbmr.serving.http import routes\n"
    names = imported(source, f"{ROUTES}.similar")
    assert f"{ROUTES}.predict" in names and f"{HTTP}.routes" in names
    assert f"{ROUTES}.predict" in imported("from . import predict", ROUTES, is_package=True)


def test_routes_never_import_routes():
    found = [
        f"{module} imports {name}"
        for module, names in SERVING_MODULES.items()
        if within(module, ROUTES)
        for name in names
        if within(name, ROUTES) and name != ROUTES
    ]
    assert not found, "what routes share belongs in the service layer or deps: " + str(found)


def test_the_service_layer_knows_no_http():
    found = broken(SERVICE, (*WEB_FRAMEWORK, HTTP))
    assert not found, "the service raises its own errors; the HTTP layer maps them: " + str(found)


@pytest.mark.parametrize(("layer", "other"), [(TRITON, INDEX), (INDEX, TRITON)])
def test_the_triton_and_index_layers_stand_below_http_and_service(layer, other):
    found = broken(layer, (*WEB_FRAMEWORK, HTTP, SERVICE, other))
    assert not found, str(found)


def test_the_shared_modules_import_no_layer():
    found = broken(SHARED, (*WEB_FRAMEWORK, *LAYERS))
    assert not found, str(found)


CLIENT_BATCH = "fbmr.client.batch"
# the commands stand above both: they may import anything of the client
CLIENT_COMMANDS = ("fbmr.client.cli", "fbmr.client.listings_cli")


def test_the_client_library_stands_below_batch_scoring():
    batch = [m for m in CLIENT_MODULES if within(m, CLIENT_BATCH)]
    assert len(batch) >= 8 and "fbmr.client.client" in CLIENT_MODULES  # found, and read
    assert "fbmr.client.client" in CLIENT_MODULES[f"{CLIENT_BATCH}.facade"]
    found = sorted(
        f"{module} imports {name}"
        for module, names in CLIENT_MODULES.items()
        if not within(module, (CLIENT_BATCH, *CLIENT_COMMANDS)) and module != "fbmr.client"
        for name in names
        if within(name, CLIENT_BATCH)
    )
    assert not found, "the library knows nothing of batch scoring: " + str(found)


@pytest.mark.parametrize("component", ["serving", "client"])
def test_serving_and_the_client_never_import_training_export_or_torch(component):
    found = sorted(
        f"{module} imports {name}"
        for module, names in (SERVING_MODULES if component == "serving" else CLIENT_MODULES).items()
        for name in names
        if within(name, ("fbmr.training", "fbmr.export", "torch", "torchvision"))
    )
    assert not found, str(found)
