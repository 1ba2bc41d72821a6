"""The facade's settings come from the environment variables the contract names."""

from __future__ import annotations

from fbmr.core.contract import API_KEY_ENV
from fbmr.serving.settings import FacadeSettings


def test_the_api_key_is_read_from_the_variable_the_client_reads(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "secret")
    settings = FacadeSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "secret"
    monkeypatch.setenv(API_KEY_ENV, "")
    assert FacadeSettings().api_key is None
