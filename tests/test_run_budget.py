"""The whole run's budget (tests/conftest.py, tests/helpers.py): a run past it fails loudly,
whatever its tests did; and the first test over a slow session fixture gets its build time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.helpers import RUN_BUDGET_ENV, RUN_BUDGET_S, over_budget, run_budget_s

pytest_plugins = ["pytester"]


def test_a_run_within_its_budget_passes_and_one_past_it_fails_with_why():
    assert RUN_BUDGET_S == 18 * 60
    assert over_budget(0, RUN_BUDGET_S) is None
    assert over_budget(RUN_BUDGET_S, RUN_BUDGET_S) is None  # at the limit: still within
    verdict = over_budget(RUN_BUDGET_S + 1, RUN_BUDGET_S)
    assert verdict is not None and "18.0 min" in verdict and "over its budget" in verdict
    assert over_budget(19.5 * 60, RUN_BUDGET_S) is not None
    assert "19.5 min" in over_budget(19.5 * 60, RUN_BUDGET_S)  # type: ignore[operator]
    assert over_budget(10**6, 0) is None  # 0: the check off


def test_the_budget_comes_from_the_environment_when_set():
    assert run_budget_s({}) == RUN_BUDGET_S
    assert run_budget_s({RUN_BUDGET_ENV: " "}) == RUN_BUDGET_S
    assert run_budget_s({RUN_BUDGET_ENV: "90"}) == 90
    assert run_budget_s({RUN_BUDGET_ENV: "0"}) == 0
    with pytest.raises(ValueError, match=RUN_BUDGET_ENV):
        run_budget_s({RUN_BUDGET_ENV: "-5"})
    with pytest.raises(ValueError):
        run_budget_s({RUN_BUDGET_ENV: "soon"})


def _inner_run(pytester: pytest.Pytester, test_file: str, *args: str) -> pytest.RunResult:
    """A small run in `pytester`'s folder under this suite's conftest (its hooks) and timeout."""
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\ntimeout = 300\n")
    pytester.makepyfile(test_inner=textwrap.dedent(test_file))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


SLOW = """
    import time

    def test_slow():
        time.sleep(1.2)
"""


def test_a_run_past_its_budget_fails_loudly_though_its_tests_pass(pytester, monkeypatch):
    monkeypatch.setenv(RUN_BUDGET_ENV, "0.5")
    result = _inner_run(pytester, SLOW)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*run budget*", "FAILED: the test run took * over its budget*"])


def test_a_run_within_its_budget_passes(pytester, monkeypatch):
    monkeypatch.setenv(RUN_BUDGET_ENV, "600")
    result = _inner_run(pytester, SLOW)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "run budget" not in result.stdout.str()


def test_the_first_test_over_a_slow_session_fixture_gets_its_build_time(pytester, monkeypatch):
    from tests.helpers import SESSION_BUILD_S

    monkeypatch.setenv(RUN_BUDGET_ENV, "0")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # one process, as run alone
    result = _inner_run(
        pytester,
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def tiny_run():
            return "built"

        def timeout(request):
            marker = request.node.get_closest_marker("timeout")
            return marker.args[0] if marker else None

        def test_first(tiny_run, request):
            assert timeout(request) == 300 + {SESSION_BUILD_S["tiny_run"]}
            assert request.node.get_closest_marker("integration")

        @pytest.mark.timeout(1000)
        def test_second(tiny_run, request):
            assert timeout(request) == 1000  # built already: its own timeout, nothing on top

        def test_without(request):
            assert timeout(request) is None and not request.node.get_closest_marker("integration")
        """,
    )
    result.assert_outcomes(passed=3)
    # the fast tier leaves out both tests over the chain, marked before `-m` deselects
    fast = pytester.runpytest("-p", "no:cacheprovider", "-m", "not integration")
    fast.assert_outcomes(passed=1, deselected=2)


def test_under_the_workers_the_first_test_of_each_file_gets_the_build_time(pytester, monkeypatch):
    """Which worker runs which file is decided as the run goes, so either file may be the one
    that builds the fixture on its worker."""
    from tests.helpers import SESSION_BUILD_S

    monkeypatch.setenv(RUN_BUDGET_ENV, "0")
    body = f"""
        import pytest

        def timeout(request):
            marker = request.node.get_closest_marker("timeout")
            return marker.args[0] if marker else None

        def test_first(tiny_run, request):
            assert timeout(request) == 300 + {SESSION_BUILD_S["tiny_run"]}

        def test_second(tiny_run, request):
            assert timeout(request) is None
        """
    pytester.makepyfile(test_one=textwrap.dedent(body), test_two=textwrap.dedent(body))
    pytester.makeconftest(
        (Path(__file__).parent / "conftest.py").read_text()
        + '\n\n@pytest.fixture(scope="session")\ndef tiny_run():\n    return "built"\n'
    )
    pytester.makeini("[pytest]\ntimeout = 300\n")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=4)
    monkeypatch.delenv("PYTEST_XDIST_WORKER")  # one process: only the run's first test
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3, failed=1)
