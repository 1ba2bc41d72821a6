"""INT8 against float32 on every split that was not trained on: the export's gate figures (top-1
agreement, accuracy of each pipeline) on the validation split, where the gate decides, and on the
test split, which the gate never saw.

    uv run python bench/int8_accuracy.py runs/real/run runs/real/model_repository \
        runs/real/model_repository_int8 --out runs/bench/int8_accuracy

The two repositories are exports of the same run (`fbmr export`, then `fbmr export --precision
int8`); their latest versions are compared. Writes int8_accuracy.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from fbmr.core.artifacts import latest_version_dir
from fbmr.core.contract import IMAGE_ENCODER
from fbmr.export.int8_gate import int8_figures
from fbmr.export.onnx_models import load_run


def latest_files(repository: Path) -> dict[str, Path]:
    """Each composing model's model.onnx in the repository's latest version."""
    version = latest_version_dir(repository).name
    return {p.parent.parent.name: p for p in repository.glob(f"*/{version}/model.onnx")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the trained run both repositories exported")
    parser.add_argument("float32", type=Path, help="its float32 export")
    parser.add_argument("int8", type=Path, help="its INT8 export")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/int8_accuracy"))
    args = parser.parse_args()

    run = load_run(args.run)
    reference, candidate = latest_files(args.float32), latest_files(args.int8)
    if reference[IMAGE_ENCODER].read_bytes() == candidate[IMAGE_ENCODER].read_bytes():
        print(f"note: {args.int8}'s image encoder is float32 (kept so by the gate)")
    results = {
        split: {
            kind: {**asdict(f), "drop": f.drop}
            for kind, f in int8_figures(reference, candidate, run, run.data, split).items()
        }
        for split in args.splits
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| split | pipeline | listings | top-1 agreement | accuracy float32 | accuracy INT8 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for split, kinds in results.items():
        for kind, f in kinds.items():
            print(
                f"| {split} | {kind} | {f['listings']} | {f['agreement']:.2%} | "
                f"{f['accuracy_float32']:.2%} | {f['accuracy_int8']:.2%} |"
            )


if __name__ == "__main__":
    main()
