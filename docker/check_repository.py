"""Refuse to start Triton on a model repository exported for another target.

    python3 check_repository.py REPOSITORY TARGET

`fbmr export --target cpu|gpu` records its target in the artifacts beside the ensembles
(`<ensemble>/<version>/fbmr.json`). A cpu-target repository (python-backend models running
onnxruntime) in the NVIDIA image fails deep inside Triton on `import onnxruntime`; a gpu-target one
in the CPU image fails on a missing onnxruntime backend. This says which, and what to do, instead.
Standard library only: it runs in both Triton images (Python 3.10 in NVIDIA's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# fbmr.core.contract.ARTIFACTS_ENSEMBLE and fbmr.core.artifacts.ARTIFACTS_FILE (a test checks)
ARTIFACTS_ENSEMBLE = "product_classifier"
ARTIFACTS_FILE = "fbmr.json"


def repository_target(repository: Path) -> str:
    """The target of the repository's newest exported version."""
    ensemble = repository / ARTIFACTS_ENSEMBLE
    versions = sorted((int(p.name) for p in ensemble.glob("*") if p.name.isdigit()), reverse=True)
    for version in versions:
        artifacts = ensemble / str(version) / ARTIFACTS_FILE
        if artifacts.is_file():
            return json.loads(artifacts.read_text())["target"]
    raise FileNotFoundError(
        f"{repository} holds no exported model version (no {ARTIFACTS_ENSEMBLE}/<version>/"
        f"{ARTIFACTS_FILE}): mount the directory `fbmr export` wrote"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    repository, wanted = Path(argv[0]), argv[1]
    try:
        found = repository_target(repository)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"model repository check failed: {err}", file=sys.stderr)
        return 2
    if found != wanted:
        print(
            f"model repository check failed: {repository} was exported for the {found} target, "
            f"this image serves the {wanted} target; re-export with "
            f"`fbmr export --run RUN --repo REPO --target {wanted}` or use the {found} image",
            file=sys.stderr,
        )
        return 2
    print(f"model repository {repository}: {wanted} target, version {_version(repository)}")
    return 0


def _version(repository: Path) -> str:
    manifest = repository / "repository.json"
    return str(json.loads(manifest.read_text()).get("version")) if manifest.is_file() else "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
