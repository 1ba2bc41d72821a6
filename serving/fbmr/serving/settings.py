"""Facade settings, from environment variables (FBMR_*) or `fbmr serve` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fbmr.core.image import DEFAULT_MAX_PIXELS


class FacadeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FBMR_", frozen=True)

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port.")
    model_repository: Path = Field(
        Path("model_repository"),
        description="The repository Triton serves; the facade reads the tokeniser, labels and "
        "image settings of its latest version from there.",
    )
    index_dir: Path | None = Field(None, description="Similar-listing index (fbmr index build).")
    index_poll_s: float = Field(5.0, description="How often to look for a new index; 0: never.")
    triton_timeout_s: float = Field(10.0, description="Deadline of one Triton call.")
    max_body_bytes: int = Field(10 * 1024 * 1024, description="Largest request body.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="Largest photo (width x height).")
    max_text_chars: int = Field(10_000, description="Longest listing text.")
    max_k: int = Field(100, description="Most similar listings one request may ask for.")
    api_key: SecretStr | None = Field(
        None, description="Bearer token required on every endpoint but the health checks."
    )
    retry_after_s: int = Field(2, description="Retry-After sent with 503 answers.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_means_none(cls, value: object) -> object:
        # FBMR_API_KEY= (set but empty, as deployment templates often leave it) keeps the API open
        return None if value in ("", None) else value
