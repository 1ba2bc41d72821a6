"""The facade's settings come from the environment variables the contract names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fbmr.core.contract import API_KEY_ENV
from fbmr.serving.settings import FacadeSettings


def test_the_api_key_is_read_from_the_variable_the_client_reads(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "secret")
    settings = FacadeSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "secret"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert FacadeSettings().api_key is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FBMR_SIMILAR_CATEGORY_WEIGHT", "-0.1"), ("FBMR_SIMILAR_CANDIDATES", "0")],
)
def test_a_negative_category_weight_or_no_candidates_is_refused_at_start(
    monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("FBMR_").lower()):
        FacadeSettings()
