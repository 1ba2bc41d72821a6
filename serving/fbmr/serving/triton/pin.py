"""The pin file: a file in the model repository that holds the service at one exported version
(`fbmr model pin`, `PUT /v1/admin/model-version`). It lives beside the versions, so every facade
and replica reading the repository follows the same pin without talking to each other."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fbmr.core.fileio import atomic_write_json

log = logging.getLogger(__name__)

PIN_FILE = "pinned_version.json"


def read_pin(repository: Path) -> int | None:
    """The version the repository's pin file holds the service at; None: follow the newest."""
    try:
        return int(json.loads((Path(repository) / PIN_FILE).read_text())["version"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s ignored: %s", Path(repository) / PIN_FILE, err)
        return None


def write_pin(repository: Path, version: int | None) -> None:
    """Hold the service at `version` (None: follow the newest export again)."""
    path = Path(repository) / PIN_FILE
    if version is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, {"version": version})
