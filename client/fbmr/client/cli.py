"""`fbmr score`: score a whole catalogue, resumably, through the facade, straight to Triton, or on
a Ray cluster. Heavy imports (pandas, tritonclient, ray) happen inside the command, so `fbmr
--help` stays fast."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from fbmr.core.cli import ApiKeyOption, ProgressOption, RepoOption, fail
from fbmr.core.contract import DEFAULT_FACADE_URL, DEFAULT_MODEL_REPOSITORY

EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL: try again later; the same command continues the run


class KindChoice(StrEnum):
    auto = "auto"
    image = "image"
    text = "text"
    combined = "combined"


def score(
    source: str = typer.Argument(
        ...,
        metavar="INPUT",
        help="A seed layout (folder or fsspec URL) or a table (CSV, Parquet, JSONL) with `id` "
        "and `text` and/or `photo` (relative to the table, absolute, or an fsspec URL).",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Results: Parquet, or CSV or JSONL by the extension."
    ),
    url: str = typer.Option(
        None,
        help="Score through the facade at this URL (by default the one on this machine, port "
        f"{DEFAULT_FACADE_URL.rsplit(':', 1)[1]}).",
    ),
    triton: str = typer.Option(
        None,
        "--triton-url",
        help="Score straight against Triton at HOST:PORT (gRPC); with --ray, a comma-separated "
        "fleet.",
    ),
    repo: RepoOption = DEFAULT_MODEL_REPOSITORY,  # with --triton-url: its tokeniser, labels
    kind: KindChoice = typer.Option(
        KindChoice.auto, help="auto: combined with photo and text, else the one a row has."
    ),
    concurrency: int = typer.Option(
        None,
        help="Requests in flight (facade, default 8), batches in flight (Triton, default 2), "
        "or Ray actors (default 2).",
    ),
    batch_size: int = typer.Option(32, help="Rows per batch (Triton: at most its max batch)."),
    similar: int = typer.Option(
        0, help="Also the ids and scores of the K most similar listings (facade only)."
    ),
    embeddings: bool = typer.Option(False, "--embeddings", help="Also each row's embedding."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Every class with its probability (default: the top 3)."
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Score again the rows that failed."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start again: discard a finished output or a stopped run."
    ),
    ray: str = typer.Option(
        None,
        metavar="ADDRESS",
        help="Run on Ray (fbmr-client's ray extra): `local` starts one here, `auto` or "
        "ray://HOST:PORT joins a cluster. Needs --triton-url.",
    ),
    workers: int = typer.Option(
        None, help="With --triton-url: processes preprocessing photos (default: cores, at most 4)."
    ),
    chunk_rows: int = typer.Option(1024, help="Rows per chunk written (the unit of resuming)."),
    retry_timeout: float = typer.Option(
        120.0, help="Seconds to keep retrying an unavailable server before stopping the run."
    ),
    api_key: ApiKeyOption = None,
    summary_json: Path = typer.Option(None, help="Also write the summary here, as JSON."),
    progress: ProgressOption = True,
) -> None:
    """Score every listing of a catalogue: category, top classes, optionally embeddings and
    similar listings. Interrupted, the same command continues where it stopped."""
    from dataclasses import replace

    from fbmr.client.batch.inputs import InputError
    from fbmr.client.batch.rows import ScoreOptions
    from fbmr.client.batch.run import FacadeTarget, ScoreError, TritonTarget, default_workers
    from fbmr.client.batch.run import score as run_score
    from fbmr.client.batch.scorer import TRITON_RETRY
    from fbmr.client.errors import FbmrError, Unavailable
    from fbmr.client.retry import DEFAULT_POLICY

    if url and triton:
        raise typer.BadParameter("give --url or --triton-url, not both")
    if ray and not triton:
        raise typer.BadParameter("--ray scores straight against Triton: give --triton-url too")
    try:
        options = ScoreOptions(
            kind=kind.value,
            top=None if probabilities else 3,
            embeddings=embeddings,
            similar=similar,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    target: FacadeTarget | TritonTarget
    if triton:
        if similar:
            raise typer.BadParameter("--similar needs the facade's index: use --url")
        target = TritonTarget(
            urls=tuple(u.strip() for u in triton.split(",") if u.strip()),
            repository=repo,
            workers=default_workers() if workers is None else workers,
            retry=replace(TRITON_RETRY, timeout_s=retry_timeout),
            ray_address=ray,
        )
    else:
        target = FacadeTarget(
            url=url or DEFAULT_FACADE_URL,
            api_key=api_key,
            retry=replace(DEFAULT_POLICY, attempts=None, timeout_s=retry_timeout),
        )
    try:
        summary = run_score(
            source,
            out,
            target,
            options,
            batch_size=batch_size,
            concurrency=concurrency,
            chunk_rows=chunk_rows,
            retry_errors=retry_errors,
            overwrite=overwrite,
            progress=progress,
        )
    except (InputError, ScoreError, FileNotFoundError, ValueError) as err:
        fail(f"not scored: {err}")
    except Unavailable as err:
        typer.echo(
            f"stopped: {err.message}\nthe chunks scored so far are kept; run the same command "
            "again to continue",
            err=True,
        )
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except FbmrError as err:
        fail(f"stopped: {err}")
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; run the same command again to continue", err=True)
        raise typer.Exit(130) from None
    typer.echo(summary.text())
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
