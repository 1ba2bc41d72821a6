"""Versioned metadata: what a checkpoint or an exported version records about its model is a typed
spec whose written form carries the schema version of its layout.

A reader takes only the version it was written for and refuses any other, naming the version it
found and what to re-run, rather than guessing defaults for fields an older writer did not know:
when a layout changes, its version goes up and old files fail loudly instead of accumulating
compatibility shims.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = "schema_version"


class SchemaVersionError(ValueError):
    """Metadata written in a layout (schema version) that this code does not read."""


def stamped(version: int, fields: Mapping[str, object]) -> dict[str, object]:
    """`fields` as written: the schema `version` first."""
    return {SCHEMA_VERSION: version, **fields}


def checked(data: object, version: int, what: str, remedy: str) -> Mapping[str, Any]:
    """`data` when it is metadata written in schema `version`; raises SchemaVersionError, naming
    `what` was read and the `remedy` (what to re-run), for any other version or none."""
    if not isinstance(data, Mapping):
        raise SchemaVersionError(f"{what} is not metadata (a mapping): {remedy}")
    found = data.get(SCHEMA_VERSION)
    if found != version:
        written = (
            "no schema version (written before metadata were versioned)"
            if found is None
            else f"schema version {found!r}"
        )
        raise SchemaVersionError(
            f"{what} has {written}; this fbmr reads schema version {version}: {remedy}"
        )
    return data
