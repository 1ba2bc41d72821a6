"""`fbmr score` against the real facade and tritonserver: every row exactly once, bad rows recorded
with their reason, the same results through the facade and straight to Triton, and runs that
survive Triton restarting, `kill -9` and resume to the same rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import stamina.instrumentation
from typer.testing import CliRunner

from fbmr.client.batch.rows import ScoreOptions
from fbmr.client.batch.run import FacadeTarget, TritonTarget, read_output, score, work_dir
from fbmr.client.retry import RetryPolicy
from fbmr.core.cli import build_app
from tests.client.conftest import assert_same_rows, first_photo_problems
from tests.helpers import encode, wait_for


def _reasons(frame: pd.DataFrame) -> dict[str, str]:
    """The failed rows' codes, by id; each row's `code` is its `error`'s prefix, and only a
    failed row has one."""
    errors = frame[frame["error"].notna()]
    codes = dict(zip(errors["id"], errors["code"], strict=True))
    assert codes == {
        i: e.split(":", 1)[0] for i, e in zip(errors["id"], errors["error"], strict=True)
    }
    assert frame.loc[frame["error"].isna(), "code"].isna().all()
    return codes


def test_direct_mode_scores_each_row_once_and_records_bad_photos(direct_scores, demo_seed):
    from fbmr.client.batch.inputs import read_input

    rows = read_input(demo_seed)
    assert list(direct_scores["id"]) == list(rows["id"])  # input order, each row once
    problems = first_photo_problems(demo_seed)
    assert _reasons(direct_scores) == problems
    ok = direct_scores[direct_scores["error"].isna()]
    assert list(ok["id"]) == [i for i in rows["id"] if i not in problems]  # every other row
    assert (ok["pred"] == ok["classes"].str[0]).all() and (ok["classes"].str.len() == 3).all()
    without_photo = set(rows.loc[rows["photo"].isna(), "id"])
    assert without_photo and set(ok.loc[ok["kind"] == "text", "id"]) == without_photo
    assert set(ok["kind"]) == {"combined", "text"}


def test_the_facade_gives_the_same_rows(direct_scores, demo_seed, facade_url, tmp_path):
    out = tmp_path / "facade.parquet"
    summary = score(demo_seed, out, FacadeTarget(facade_url), concurrency=8, progress=False)
    through_facade = pd.read_parquet(out)
    assert summary.rows == summary.scored == len(direct_scores)
    assert sum(summary.errors.values()) == direct_scores["error"].notna().sum()
    # same predictions; photo errors come from the facade's 422 rather than the local decoder
    assert_same_rows(
        through_facade.assign(error=through_facade["error"].str.split(":").str[0]),
        direct_scores.assign(error=direct_scores["error"].str.split(":").str[0]),
    )


@pytest.fixture
def bad_rows(tmp_path, listing) -> Path:
    """A table of good rows and one of each kind of bad row."""
    photo, text, _ = listing
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.jpg").write_bytes(photo)
    (photos / "corrupt.jpg").write_bytes(photo[:150])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.jpg").write_bytes(b"this is text, not a photo")
    from PIL import Image

    (photos / "huge.png").write_bytes(encode(Image.new("RGB", (2100, 2000)), "PNG"))
    table = pd.DataFrame(
        [
            ("good-photo", None, "photos/good.jpg"),
            ("good-both", text, "photos/good.jpg"),
            ("good-text", text, None),
            ("missing", text, "photos/nowhere.jpg"),
            ("corrupt", None, "photos/corrupt.jpg"),
            ("empty", text, "photos/empty.jpg"),
            ("not-an-image", None, "photos/text.jpg"),
            ("too-many-pixels", None, "photos/huge.png"),
            ("empty-text", "   ", None),
            ("nothing", None, None),
        ],
        columns=["id", "text", "photo"],
    )
    table.to_parquet(tmp_path / "rows.parquet")
    return tmp_path / "rows.parquet"


EXPECTED_REASONS = {
    "missing": "photo_missing",
    "corrupt": "photo_unreadable",
    "empty": "photo_empty",
    "not-an-image": "photo_unreadable",
    "too-many-pixels": "photo_too_large",
    "empty-text": "text_empty",
    "nothing": "no_input",
}


@pytest.mark.parametrize("mode", ["facade", "triton"])
def test_bad_rows_are_recorded_with_their_reason(
    mode, bad_rows, facade_url, facade_settings, triton, cpu_repository, tmp_path
):
    # the facade's pixel limit (facade_settings) applies in direct mode too
    target = (
        FacadeTarget(facade_url)
        if mode == "facade"
        else TritonTarget(
            (triton.ports.grpc_url,), cpu_repository, workers=0,
            max_pixels=facade_settings.max_pixels,
        )
    )  # fmt: skip
    out = tmp_path / "scores.jsonl"
    summary = score(bad_rows, out, target, progress=False, batch_size=4)
    frame = read_output(out)
    assert list(frame["id"]) == list(pd.read_parquet(bad_rows)["id"])
    assert _reasons(frame) == EXPECTED_REASONS
    assert summary.errors == {
        r: list(EXPECTED_REASONS.values()).count(r) for r in set(EXPECTED_REASONS.values())
    }
    good = frame.set_index("id").loc[["good-photo", "good-both", "good-text"]]
    assert list(good["kind"]) == ["image", "combined", "text"]
    assert good["pred"].notna().all()


def test_reasons_come_from_the_answers_code_not_its_wording(
    bad_rows, facade_url, tmp_path, monkeypatch
):
    """The facade (in this process) rewords every error message; batch scoring still records
    the same reasons, because it reads the answer's `code`."""
    from fbmr.serving.http import errors

    original = errors.ApiError.__init__

    def reworded(self, status, message, headers=None, code=None):
        original(
            self, status, f"(reworded) something about {len(message)} characters", headers, code
        )

    monkeypatch.setattr(errors.ApiError, "__init__", reworded)
    out = tmp_path / "scores.jsonl"
    score(bad_rows, out, FacadeTarget(facade_url), progress=False, batch_size=4)
    frame = read_output(out)
    assert _reasons(frame) == EXPECTED_REASONS
    refused_by_the_facade = frame.set_index("id").loc[
        ["corrupt", "not-an-image", "too-many-pixels"]
    ]
    assert refused_by_the_facade["error"].str.contains("reworded").all()


def test_embeddings_similar_and_every_probability(demo_seed, facade_url, tmp_path):
    out = tmp_path / "rich.csv"
    options = ScoreOptions(top=None, embeddings=True, similar=4)
    score(demo_seed, out, FacadeTarget(facade_url), options, progress=False)
    frame = read_output(out)
    ok = frame[frame["error"].isna()]
    assert (ok["classes"].str.len() == 13).all()
    assert ok["probabilities"].map(sum).between(0.999, 1.001).all()
    # one width per kind of embedding (the text model's is its ensemble members' concatenated)
    widths = ok.groupby("kind")["embedding"].agg(lambda e: set(e.str.len()))
    assert (widths.map(len) == 1).all() and len(widths) > 1
    assert (ok["similar_ids"].str.len() == 4).all()
    # in the facade's order: by rank score, each at most its cosine similarity
    assert all(r == sorted(r, reverse=True) for r in ok["similar_rank_scores"])
    for ranks, scores in zip(ok["similar_rank_scores"], ok["similar_scores"], strict=True):
        assert len(ranks) == 4 and all(r <= s + 1e-5 for r, s in zip(ranks, scores, strict=True))


def test_retry_errors_rescores_only_the_failed_rows(bad_rows, facade_url, tmp_path, listing):
    out = tmp_path / "scores.parquet"
    score(bad_rows, out, FacadeTarget(facade_url), progress=False)
    first = pd.read_parquet(out)
    # the missing photo turns up; the run without --retry-errors changes nothing
    (bad_rows.parent / "photos" / "nowhere.jpg").write_bytes(listing[0])
    again = score(bad_rows, out, FacadeTarget(facade_url), progress=False)
    assert again.scored == 0 and pd.read_parquet(out).equals(first)
    retried = score(bad_rows, out, FacadeTarget(facade_url), retry_errors=True, progress=False)
    assert retried.scored == len(EXPECTED_REASONS)  # only the failed rows were sent again
    second = pd.read_parquet(out)
    assert list(second["id"]) == list(first["id"])
    fixed = second.set_index("id").loc["missing"]
    assert pd.isna(fixed["error"]) and fixed["kind"] == "combined"
    unchanged = second["id"] != "missing"
    assert_same_rows(second[unchanged], first[unchanged])
    assert not work_dir(out).exists()


def test_a_run_with_other_options_is_not_mixed_in(bad_rows, facade_url, tmp_path):
    out = tmp_path / "scores.parquet"
    work = work_dir(out)
    work.mkdir()
    (work / "state.json").write_text('{"format": "fbmr.score/1", "fingerprint": "other"}')
    result = CliRunner().invoke(
        build_app(), ["score", str(bad_rows), "--out", str(out), "--url", facade_url]
    )
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = CliRunner().invoke(
        build_app(),
        ["score", str(bad_rows), "--out", str(out), "--url", facade_url, "--overwrite",
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "errors: 7" in result.output and "rows/s" in result.output


def _many_rows(demo_seed: Path, folder: Path, copies: int) -> Path:
    """The demo catalogue `copies` times over (new ids), as a table: enough rows that a run can
    be stopped in the middle."""
    from fbmr.client.batch.inputs import read_input

    rows = read_input(demo_seed)
    table = pd.concat(
        [rows.assign(id=rows["id"] + f"-{n}") for n in range(copies)], ignore_index=True
    )
    # a listing's photos as a list in every row (Parquet holds one type per column)
    table["photo"] = [[p] if isinstance(p, str) else p for p in table["photo"]]
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "rows.parquet")
    return folder / "rows.parquet"


@pytest.mark.timeout(700)  # two scoring commands of up to 300 s each
def test_sigkill_then_resume_gives_the_rows_of_an_uninterrupted_run(
    demo_seed, triton, cpu_repository, tmp_path
):
    rows = _many_rows(demo_seed, tmp_path / "input", copies=4)
    fbmr = str(Path(sys.executable).parent / "fbmr")
    command = [
        fbmr, "score", str(rows), "--triton-url", triton.ports.grpc_url,
        "--repo", str(cpu_repository), "--chunk-rows", "32", "--batch-size", "8",
        "--concurrency", "1", "--workers", "0", "--no-progress",
    ]  # fmt: skip
    whole = tmp_path / "whole.parquet"
    subprocess.run([*command, "--out", str(whole)], check=True, timeout=300)

    out = tmp_path / "killed.parquet"
    process = subprocess.Popen([*command, "--out", str(out)])
    try:
        wait_for(lambda: len(list(work_dir(out).glob("chunk-*.parquet"))) >= 3, 120, "three chunks")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists(), "the run finished before it could be killed"
    chunks = len(list(work_dir(out).glob("chunk-*.parquet")))
    assert chunks < -(-len(pd.read_parquet(rows)) // 32)
    resumed = subprocess.run(
        [*command, "--out", str(out)], check=True, timeout=300, capture_output=True, text=True
    )
    assert "from an earlier run" in resumed.stdout
    assert f"({chunks * 32} from an earlier run)" in resumed.stdout
    assert_same_rows(pd.read_parquet(out), pd.read_parquet(whole))
    assert list(pd.read_parquet(out)["id"]) == list(pd.read_parquet(rows)["id"])
    assert not work_dir(out).exists()


def test_triton_stopped_mid_run_and_restarted(demo_seed, direct_scores, cpu_repository, tmp_path):
    from fbmr.serving.triton.ports import TritonPorts
    from fbmr.serving.triton.server import LocalTriton
    from tests.helpers import free_ports

    rows = _many_rows(demo_seed, tmp_path / "input", copies=3)
    ports = TritonPorts("127.0.0.1", *free_ports(3))
    out = tmp_path / "scores.parquet"
    result: dict = {}

    def run() -> None:
        try:
            # retries outlast a restart even on a busy machine (the wait is bounded below)
            retry = RetryPolicy(attempts=None, timeout_s=400, wait_initial_s=0.2, wait_max_s=2)
            target = TritonTarget((ports.grpc_url,), cpu_repository, workers=0, retry=retry)
            result["summary"] = score(
                rows, out, target, batch_size=8, chunk_rows=32, concurrency=2, progress=False
            )
        except BaseException as err:  # reported by the test below
            result["error"] = err

    first = LocalTriton(cpu_repository, ports, log_path=tmp_path / "triton-1.log").start()
    second = None
    worker = threading.Thread(target=run, daemon=True)
    # the run's tries that failed, as its retry library reports them
    retries: list[float] = []
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([*hooks, lambda _: retries.append(time.monotonic())])
    try:
        worker.start()
        wait_for(lambda: len(list(work_dir(out).glob("chunk-*.parquet"))) >= 2, 120, "chunks")
        first.stop()
        stopped = time.monotonic()
        done_while_down = len(list(work_dir(out).glob("chunk-*.parquet")))
        # Triton stays away until the run has found it gone and tried again more than once
        wait_for(lambda: sum(t > stopped for t in retries) >= 3, 60, "retries while down")
        assert worker.is_alive(), "the run ended while Triton was down"
        second = LocalTriton(cpu_repository, ports, log_path=tmp_path / "triton-2.log").start()
        worker.join(450)
        assert not worker.is_alive(), "the run did not finish after Triton came back"
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)
        first.stop()
        if second is not None:
            second.stop()
    assert "error" not in result, result.get("error")
    frame = pd.read_parquet(out)
    total = len(pd.read_parquet(rows))
    assert done_while_down * 32 < total
    assert result["summary"].rows == total and list(frame["id"]) == list(
        pd.read_parquet(rows)["id"]
    )
    # every copy of a listing scored as the uninterrupted run scored it
    base = frame.assign(id=frame["id"].str.rsplit("-", n=1).str[0]).drop_duplicates("id")
    assert_same_rows(base, direct_scores)
