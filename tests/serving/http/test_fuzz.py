"""The facade's own OpenAPI schema, fuzzed with schemathesis against the real stack (tritonserver,
the demo index, uvicorn over HTTP): every operation, schema-conforming (positive) and violating
(negative) data, a bounded and reproducible number of examples. Whatever is sent, the answer is
never a 5xx, and every error is JSON holding exactly an `error` message.

One test per operation and mode, each with an id of its own: schemathesis's own pytest items all
share one id, and the test command's workers (pytest-xdist) run one item per id, so 16 of the 17
operations went unfuzzed there while the run passed.

Generated photos are not images (they are arbitrary bytes): those requests must be 4xx, never 5xx.
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from fbmr.core.contract import ErrorCode
from fbmr.serving.http.main import create_app
from fbmr.serving.settings import FacadeSettings
from tests.helpers import running_facade

pytestmark = pytest.mark.integration  # the real stack (schemathesis items name no fixtures)

EXAMPLES = 20  # per operation and generation mode; the whole run takes well under a minute

# the status of every fuzzed request, and the operations fuzzed, for the summary below
STATUSES: Counter[int] = Counter()
OPERATIONS: set[str] = set()


# The schema is the app's own, read without starting it (its routes do not depend on settings);
# the requests go to the session's facade over the real stack.
schema = schemathesis.openapi.from_dict(create_app(FacadeSettings()).openapi())
OPERATIONS_IN_SCHEMA = {result.ok().label: result.ok() for result in schema.get_all_operations()}


def _has_inputs(label: str) -> bool:
    """Whether the operation takes anything that can be sent wrong (/healthz takes nothing)."""
    operation = OPERATIONS_IN_SCHEMA[label]
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


CASES = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in OPERATIONS_IN_SCHEMA
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_inputs(label)
]


def errors_are_json(ctx, response, case) -> bool:
    """An error answer is JSON with exactly an `error` message, no stack trace, and a code."""
    STATUSES[response.status_code] += 1
    OPERATIONS.add(f"{case.operation.method} {case.operation.path}")
    # /readyz answers its readiness body with its 503 (documented so): not an error message
    if response.status_code >= 400 and case.operation.path != "/readyz":
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error", "code"}, response.text
        assert isinstance(body["error"], str) and "Traceback" not in body["error"]
        assert body["code"] in set(ErrorCode), response.text
    return True


@pytest.fixture(scope="module")
def fuzzed_facade(facade_settings, tmp_path_factory):
    """A facade over the session's Triton on copies of the model repository and the index:
    fuzzing the admin routes writes a pin into the repository, and the listing routes write the
    index's update log, which the other tests' copies must not inherit."""
    copies = tmp_path_factory.mktemp("fuzzed")
    repository = copies / "model_repository"
    shutil.copytree(facade_settings.model_repository, repository)
    index_dir = copies / "index"
    shutil.copytree(facade_settings.index_dir, index_dir)
    settings = facade_settings.model_copy(
        update={"model_repository": repository, "index_dir": index_dir}
    )
    with running_facade(settings) as client:
        yield client
    # after every fuzzed case of the module (this fixture's teardown, so it cannot be left out
    # while the fuzzing runs): enough requests, valid and invalid ones, and no 5xx
    sent = sum(STATUSES.values())
    print(f"\nfuzzed requests: {sent}, by status: {dict(sorted(STATUSES.items()))}")
    assert OPERATIONS and sent >= 10 * len(OPERATIONS), (OPERATIONS, STATUSES)
    assert not [status for status in STATUSES if status >= 500], STATUSES
    if len(OPERATIONS) > 1:  # the whole schema: both kinds of answer seen
        assert any(200 <= s < 300 for s in STATUSES), "nothing valid was generated"
        assert any(400 <= s < 500 for s in STATUSES), "nothing invalid was generated"


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_fuzzed_requests_get_no_server_error(label, mode, fuzzed_facade):
    base_url = str(fuzzed_facade.base_url).rstrip("/")
    sent = []

    @given(case=OPERATIONS_IN_SCHEMA[label].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case) -> None:
        sent.append(case)
        case.call_and_validate(base_url, checks=[not_a_server_error, errors_are_json], timeout=60)

    fuzz()
    assert sent, f"nothing generated for {label} ({mode.value})"
