"""Facade settings: one pydantic-settings class, read from FBMR_* environment variables or built
by `fbmr serve` from its flags (whose defaults and help come from here)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fbmr.core.contract import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL_REPOSITORY,
    DEFAULT_TRITON_URL,
)
from fbmr.core.contract import ENV_PREFIX as ENV_PREFIX  # named here for `fbmr serve`
from fbmr.core.ranking import DEFAULT_CANDIDATES, DEFAULT_CATEGORY_WEIGHT


class FacadeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    triton_url: str = Field(DEFAULT_TRITON_URL, description="Triton gRPC host:port.")
    model_repository: Path = Field(
        DEFAULT_MODEL_REPOSITORY,
        description="The repository Triton serves; the facade reads the versions, their "
        "tokeniser, labels and image settings, and the pin, from there.",
    )
    index_dir: Path | None = Field(None, description="Similar-listing index (fbmr index build).")
    index_poll_s: float = Field(5.0, description="How often to look for a new index; 0: never.")
    updates_poll_s: float = Field(
        0.2,
        description="How often each worker applies the listings other workers put or deleted "
        "(PUT, DELETE /v1/listings/{id}); 0: never.",
    )
    model_poll_s: float = Field(
        2.0,
        description="How often the rollout looks for a newer export or a pin, and reloads the "
        "version in use after a Triton restart; 0: at start only.",
    )
    swap_wait_s: float = Field(
        20.0,
        description="How long a request that meets a model version switch waits for it (it then "
        "runs on the new version) before it gets a 503.",
    )
    triton_timeout_s: float = Field(10.0, description="Deadline of one Triton call.")
    max_in_flight: int = Field(
        64,
        description="Most requests one facade process keeps under way to Triton; past it a "
        "request gets a 503 at once (load shedding). Per worker; 0: no bound.",
    )
    max_body_bytes: int = Field(10 * 1024 * 1024, description="Largest request body.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="Largest photo (width x height).")
    max_decode_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="Most pixels one facade process decodes at once (3-4 bytes each while "
        "decoding); a photo that does not fit waits its turn.",
    )
    max_text_chars: int = Field(10_000, description="Longest listing text.")
    max_k: int = Field(100, description="Most similar listings one request may ask for.")
    similar_category_weight: float = Field(
        DEFAULT_CATEGORY_WEIGHT,
        ge=0,
        description="Weight of the prior on a similar listing's category: listings are ranked "
        "by cosine similarity plus this times the log of the probability the query's answer "
        "gives their category; 0: plain nearest neighbours.",
    )
    similar_candidates: int = Field(
        DEFAULT_CANDIDATES,
        ge=1,
        description="How many nearest listings, as a multiple of k, the prior on their "
        "category re-ranks when its weight is above 0.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Bearer token of the read scope: predictions, embeddings, similar "
        "listings, metrics, the API's docs and schema (every endpoint but the health checks).",
    )
    public_docs: bool = Field(
        False,
        description="Serve /docs and /openapi.json without a key even when one is set.",
    )
    write_key: SecretStr | None = Field(
        None,
        description="Bearer token of the write scope: PUT and DELETE /v1/listings/{id} (and "
        "every read); unset: the api_key writes too.",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="Bearer token of the admin scope: model version pins and index reloads "
        "(and everything else); unset: the write scope's key administers too.",
    )
    triton_admin_key: SecretStr | None = Field(
        None,
        description="The header value Triton's restricted protocols expect (model repository "
        "and config, shared memory, trace, logging); the rollout sends it. Set the same on "
        "Triton (`fbmr triton start`, the Triton image's entrypoint).",
    )
    milvus_token: SecretStr | None = Field(
        None,
        description="Token of the Milvus cluster an index version built with "
        "`fbmr index build --milvus-uri` lives in, where it needs one; sent only to milvus_uri.",
    )
    milvus_uri: str | None = Field(
        None,
        description="The Milvus cluster milvus_token is for, as `fbmr index build --milvus-uri` "
        "was given it; an index version naming another Milvus is opened without the token.",
    )
    retry_after_s: int = Field(2, description="Retry-After sent with 503 answers.")
    triton_status_file: Path | None = Field(
        None,
        description="Where the supervisor of a local Triton reports it (restarts, giving up) "
        "for /readyz; set by `fbmr serve --with-triton`.",
    )

    @field_validator(
        "api_key", "write_key", "admin_key", "triton_admin_key", "milvus_token", mode="before"
    )
    @classmethod
    def _empty_key_means_none(cls, value: object) -> object:
        # FBMR_API_KEY= (set but empty, as deployment templates often leave it) keeps the API open
        return None if value in ("", None) else value

    def to_env(self) -> dict[str, str]:
        """These settings as the FBMR_* variables that read back into equal settings: how they
        reach uvicorn's worker processes, which each build their own app."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env
