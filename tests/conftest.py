"""Shared fixtures, each built once per session: the real marketplace sample (when present), the
demo data, a tiny trained run, its export, a real tritonserver on it, the demo index, the facade.
The tiny run and its exports are also kept between sessions, keyed by the code that builds them
(tests/fixture_cache.py).

Tests that use the chain from the tiny run up (its export, the session's tritonserver, the index,
the facade: minutes to build on 2 cores) are marked `integration` here; tests that start a server
of their own, train a stage or prepare the real sample say so with the marker themselves.
`pytest -m "not integration"` is the fast tier.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fixture_cache import FixtureCache
from tests.helpers import (
    INT8_CALIBRATION_PHOTOS,
    REAL_DATA,
    REPO_ROOT,
    SESSION_BUILD_S,
    TINY_TRAINING,
)

# The slow links of the chain: training the tiny run, and the tritonserver on its export; every
# fixture built on them (the exports, the index, the facade) needs them too.
INTEGRATION_FIXTURES = frozenset({"tiny_run", "triton"})


# The files that take longest (a minute or more each on 2 cores), longest first. The test
# command runs each file on one of two workers, handed out in collection order as workers come
# free: a long file collected last would leave one worker running it alone at the end. So these
# go first; a file not listed keeps its place after them. The demo's test (it trains a run of
# its own) comes second, so that where the tiny run is not cached yet, one worker runs it while
# the other builds the tiny run every other file here needs.
LONGEST_FIRST = (
    "tests/client/batch/test_run.py",
    "tests/test_demo.py",
    "tests/training/test_pipeline.py",
    "tests/export/test_quantize.py",
    "tests/bench/test_compare.py",
    "tests/serving/triton/test_rollout.py",
    "tests/serving/http/test_app.py",
    "tests/serving/test_decode_memory.py",
    "tests/export/test_onnx_models.py",
    "tests/serving/triton/test_versions.py",
)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` every test whose fixtures (all of them, transitively) build the chain;
    then put the LONGEST_FIRST files first (a stable sort: the order within a file is kept);
    refuse tests that share an id."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))
    # The workers run one test per id: a second test with the same id would silently not run.
    ids = Counter(item.nodeid for item in items)
    if shared := sorted(nodeid for nodeid, count in ids.items() if count > 1):
        raise pytest.UsageError(f"tests that share an id (give each its own): {shared}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Give the first test over each of SESSION_BUILD_S (in the final order, after any
    deselection: the one that builds the fixture) its build time on top of its timeout. Under
    the test command's workers, which file a worker starts with is decided as the run goes, so
    there the first such test of each file gets it."""
    per_file = "PYTEST_XDIST_WORKER" in os.environ
    unbuilt = dict(SESSION_BUILD_S)
    file: Path | None = None
    for item in session.items:
        if per_file and item.path != file:
            file = item.path
            unbuilt = dict(SESSION_BUILD_S)
        fixtures = set(getattr(item, "fixturenames", ()))
        extra = sum(unbuilt.pop(name) for name in sorted(fixtures & set(unbuilt)))
        if extra:
            marker = item.get_closest_marker("timeout")
            timeout = session.config.getini("timeout")
            base = marker.args[0] if marker and marker.args else float(timeout)
            item.add_marker(pytest.mark.timeout(base + extra), append=False)


RUN_STARTED = pytest.StashKey[float]()
RUN_VERDICT = pytest.StashKey[str]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[RUN_STARTED] = time.monotonic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that passed the budget (tests/helpers.py: RUN_BUDGET_S), loudly."""
    from tests.helpers import over_budget, run_budget_s

    started = session.config.stash.get(RUN_STARTED, None)
    if started is None or session.config.option.collectonly:
        return
    verdict = over_budget(time.monotonic() - started, run_budget_s())
    if verdict is not None:
        session.config.stash[RUN_VERDICT] = verdict
        if exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    verdict = config.stash.get(RUN_VERDICT, None)
    if verdict is not None:
        terminalreporter.section("run budget", sep="=", red=True, bold=True)
        terminalreporter.write_line(f"FAILED: {verdict}", red=True, bold=True)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real marketplace sample; tests that need it are skipped where it is absent."""
    if not (REAL_DATA / "Products.csv").is_file():
        pytest.skip(f"real marketplace sample not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def demo_summary(tmp_path_factory):
    """Demo listings in the seed layout with the generator's defaults, generated once per test
    session: what `generate_demo` reported (the folder, its listing and photo counts)."""
    from fbmr.training.data.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo") / "seed", progress=False)


@pytest.fixture(scope="session")
def demo_seed(demo_summary) -> Path:
    """The session's demo listings in the seed layout (a folder tests only read)."""
    out: Path = demo_summary.out
    return out


@pytest.fixture(scope="session")
def demo_prepared(demo_seed, tmp_path_factory) -> Path:
    """The demo data prepared at 64 px, once per test session."""
    from fbmr.training.data.prepare import PrepareSettings, prepare_dataset

    out = tmp_path_factory.mktemp("demo-prepared") / "prepared"
    prepare_dataset(str(demo_seed), out, PrepareSettings(image_size=64), progress=False)
    return out


@pytest.fixture(scope="session")
def fixture_cache(demo_prepared) -> FixtureCache:
    """Where the tiny run and its exports are kept between test runs (tests/fixture_cache.py)."""
    settings = {"training": TINY_TRAINING, "int8_photos": INT8_CALIBRATION_PHOTOS}
    return FixtureCache.open(REPO_ROOT, demo_prepared, settings)


@pytest.fixture(scope="session")
def tiny_run(fixture_cache, tmp_path_factory) -> Path:
    """A run directory with all four stages trained with TINY_TRAINING on the demo data (a copy
    of the cached one where this code trained it before)."""
    from fbmr.training.config import TrainConfig
    from fbmr.training.pipeline import train

    def build(run: Path) -> None:
        train(TrainConfig(data=str(fixture_cache.data), **TINY_TRAINING), run)

    return fixture_cache.provide("tiny_run", tmp_path_factory.mktemp("tiny-run") / "run", build)


@pytest.fixture(scope="session")
def cpu_repository(tiny_run, demo_prepared, fixture_cache, tmp_path_factory) -> Path:
    """tiny_run exported to a cpu-target Triton model repository, once per test session (or
    cached with it)."""
    from fbmr.export.export import export_run
    from fbmr.training.data.prepared import PreparedDataset

    def build(repository: Path) -> None:
        export_run(tiny_run, repository, data=PreparedDataset(demo_prepared), progress=False)

    repository = tmp_path_factory.mktemp("triton") / "model_repository"
    return fixture_cache.provide("cpu_repository", repository, build)


@pytest.fixture(scope="session")
def run_models(tiny_run, demo_prepared):
    """tiny_run's models loaded for export (`load_run`), once per session; tests that change a
    model change a copy."""
    from fbmr.export.onnx_models import load_run
    from fbmr.training.data.prepared import PreparedDataset

    return load_run(tiny_run, PreparedDataset(demo_prepared))


@pytest.fixture(scope="session")
def untrained_models(demo_prepared):
    """What export reads from a TINY_TRAINING run on the demo data, without training it: the
    models' names and tensors, classes, image settings and tokeniser (tests/helpers.py)."""
    from tests.helpers import untrained_run_models

    return untrained_run_models(demo_prepared, TINY_TRAINING)


@pytest.fixture(scope="session")
def artifact_repository(untrained_models, tmp_path_factory) -> Path:
    """A cpu-target model repository at version 1 as `fbmr export` publishes it (model and
    ensemble configs, the tokeniser, labels and image settings in `fbmr.json`), with stand-in
    ONNX files: for the fast tier's tests that read an export's files and never run its models
    (no training, no ONNX export, no tritonserver)."""
    from fbmr.core.artifacts import Provenance
    from fbmr.export.onnx_files import toolchain
    from fbmr.export.repository import publish_version, stage_version
    from fbmr.export.settings import ServingSettings, Target

    root = tmp_path_factory.mktemp("artifacts")
    stand_in = root / "stand-in.onnx"
    stand_in.write_bytes(b"not a model: these tests never run one")
    files = {m.name: stand_in for m in untrained_models.models}
    provenance = Provenance("untrained", untrained_models.image_trunk, "float32", {}, toolchain())
    repository = root / "model_repository"
    names = stage_version(
        untrained_models, files, root / "staging", 1, Target.cpu, ServingSettings(), provenance
    )
    publish_version(root / "staging", repository, names, 1)
    return repository


@pytest.fixture(scope="session")
def int8_repository(tiny_run, demo_prepared, fixture_cache, tmp_path_factory) -> Path:
    """tiny_run exported with INT8 encoders (gate opened), once per test session (or cached)."""
    from fbmr.export.export import export_run
    from fbmr.export.settings import Int8Settings, Precision
    from fbmr.training.data.prepared import PreparedDataset

    def build(repository: Path) -> None:
        gate = Int8Settings(INT8_CALIBRATION_PHOTOS, min_agreement=0.0, max_accuracy_drop=1.0)
        report = export_run(
            tiny_run,
            repository,
            data=PreparedDataset(demo_prepared),
            progress=False,
            precision=Precision.int8,
            int8=gate,
        )
        assert report.precision is Precision.int8
        assert set(report.gate) == {"image", "text", "combined"}

    repository = tmp_path_factory.mktemp("int8") / "model_repository"
    return fixture_cache.provide("int8_repository", repository, build)


@pytest.fixture(scope="session")
def triton(cpu_repository):
    """A real tritonserver on cpu_repository, on free 127.0.0.1 ports; stopped at the end.

    Its repository API is restricted to the admin key, as in production; the key is in this
    process's environment for the session, so facades (in process or started as commands)
    send it as a deployment's would."""
    from fbmr.core.contract import TRITON_ADMIN_KEY_ENV
    from fbmr.serving.triton.ports import TritonPorts
    from fbmr.serving.triton.server import LocalTriton
    from tests.helpers import TRITON_ADMIN_KEY, free_ports

    ports = TritonPorts("127.0.0.1", *free_ports(3))
    before = os.environ.get(TRITON_ADMIN_KEY_ENV)
    os.environ[TRITON_ADMIN_KEY_ENV] = TRITON_ADMIN_KEY
    try:
        with LocalTriton(cpu_repository, ports, admin_key=TRITON_ADMIN_KEY) as server:
            yield server
    finally:
        if before is None:
            os.environ.pop(TRITON_ADMIN_KEY_ENV, None)
        else:
            os.environ[TRITON_ADMIN_KEY_ENV] = before


@pytest.fixture(scope="session")
def demo_index(triton, cpu_repository, demo_prepared, tmp_path_factory):
    """The demo catalogue's train and val listings, embedded through Triton and indexed."""
    from fbmr.serving.index.catalogue import build_catalogue_index

    index_dir = tmp_path_factory.mktemp("index") / "index"
    build_catalogue_index(
        demo_prepared, index_dir, triton.ports.grpc_url, cpu_repository,
        splits=("train", "val"), progress=False,
    )  # fmt: skip
    return index_dir


@pytest.fixture(scope="session")
def facade_settings(triton, cpu_repository, demo_index):
    from fbmr.serving.settings import FacadeSettings
    from tests.helpers import TEST_LIMITS

    return FacadeSettings(
        triton_url=triton.ports.grpc_url,
        model_repository=cpu_repository,
        index_dir=demo_index,
        index_poll_s=0,
        **TEST_LIMITS,
    )


@pytest.fixture(scope="session")
def facade(facade_settings):
    """An httpx client on the facade over the session's Triton and demo index."""
    from tests.helpers import running_facade

    with running_facade(facade_settings) as client:
        yield client
