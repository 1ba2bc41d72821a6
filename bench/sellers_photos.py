"""The folder of photos exactly as sellers uploaded them beside the source a prepared dataset was
made from (the real sample's `raw_images/`), printed for bench/compare.sh's Locust steps; nothing
when the source has none (the demo data), so the prepared photos are sent instead.

    python bench/sellers_photos.py runs/real/prepared
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import urlparse

RAW = "raw_images"


def sellers_photos(prepared: Path) -> Path | None:
    """`raw_images/` of the local folder the dataset was prepared from, if there is one."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    source = urlparse(str(manifest.get("source", "")))
    if source.scheme not in ("", "file"):
        return None
    folder = Path(source.path) / RAW
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="a prepared dataset (fbmr data prepare)")
    folder = sellers_photos(parser.parse_args().prepared)
    print(folder or "")


if __name__ == "__main__":
    main()
