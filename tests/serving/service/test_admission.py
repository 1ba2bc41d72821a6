"""Load shedding: past `max_in_flight` requests under way, the facade answers 503 with
Retry-After at once and loses none of the requests it accepted."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from fbmr.serving.http.main import create_app
from fbmr.serving.service.admission import Admission, Overloaded
from tests.helpers import assert_error, running_facade

TEXT = {"text": "oak dining table with four chairs"}


def test_slots_are_bounded_and_given_back():
    admission = Admission(2)
    with admission.slot(), admission.slot():
        assert admission.in_flight == 2
        with pytest.raises(Overloaded), admission.slot():
            pass
    assert admission.in_flight == 0
    with pytest.raises(ValueError), admission.slot():
        raise ValueError("a request that failed still gives its slot back")
    assert admission.in_flight == 0


def test_no_bound_when_the_limit_is_zero():
    admission = Admission(0)
    with admission.slot(), admission.slot(), admission.slot():
        assert admission.in_flight == 3


def test_a_full_facade_refuses_at_once_then_answers_again(facade_settings):
    settings = facade_settings.model_copy(update={"max_in_flight": 2})
    with TestClient(create_app(settings)) as client:
        state = client.app.state.facade
        assert client.post("/v1/predict/text", json=TEXT).status_code == 200
        state.admission.in_flight = 2  # two requests under way elsewhere
        refused = client.post("/v1/predict/text", json=TEXT)
        assert_error(refused, 503, "too many requests")
        assert refused.headers["Retry-After"] == str(settings.retry_after_s)
        assert client.get("/healthz").status_code == 200  # health checks are not shed
        state.admission.in_flight = 0
        assert client.post("/v1/predict/text", json=TEXT).status_code == 200


def test_a_burst_gets_answers_or_clean_refusals_only(facade_settings):
    settings = facade_settings.model_copy(update={"max_in_flight": 1})
    start = threading.Barrier(12)
    with running_facade(settings) as client:

        def ask(_: int):
            start.wait()
            return client.post("/v1/predict/text", json=TEXT)

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(ask, range(12)))
        after = client.post("/v1/predict/text", json=TEXT)
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 503, "too many requests")
    statuses = [response.status_code for response in responses]
    # one slot, twelve at once: some answered, and some shed (without admission control, none)
    assert 200 in statuses and 503 in statuses, statuses
    assert after.status_code == 200  # every slot was given back
