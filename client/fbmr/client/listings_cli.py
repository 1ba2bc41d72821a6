"""`fbmr listings put|delete`: listings posted and sold, in bulk, through the facade's live
similar-listing index. A listing refused (a photo that cannot be read, a category the model does
not know) is recorded in the report with its error code and the others go on; the command then
exits 1, so a script can tell that not every row went through (0: every row did)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fbmr.core.cli import ApiKeyOption, FacadeUrlOption, count, fail
from fbmr.core.contract import DEFAULT_FACADE_URL

if TYPE_CHECKING:  # the client is imported when a command runs, so --help stays quick
    from fbmr.client.errors import FbmrError

# a report's code for a row that got no answer (the facade's own codes are fbmr.core's ErrorCode)
UNREACHABLE = "unreachable"

app = typer.Typer(help="Listings posted and sold while serving (the live similar-listing index).")


def row_code(err: FbmrError) -> str:
    """A refused row's code in the report: the facade's, or `unreachable` when no answer came
    (nothing listened, or the connection failed once retries were spent), or the HTTP status
    of an answer that named no code (a proxy's, say) as `status_NNN`."""
    from fbmr.client.errors import ServerUnreachable

    if err.code is not None:
        return err.code.value
    if isinstance(err, ServerUnreachable):
        return UNREACHABLE
    return f"status_{err.status}"


def shown(listing_id: str) -> str:
    """An id as the terminal may show it: one that breaks the id rule (a line break, a control
    character) is quoted with its escapes rather than written raw."""
    return listing_id if listing_id.isprintable() else json.dumps(listing_id)


@app.command()
def put(
    source: str = typer.Argument(
        ...,
        metavar="INPUT",
        help="A table (CSV, Parquet, JSONL) with `id`, `name`, and `description`, `photo`; "
        "optional `category` (default: the predicted one), `price`, `location`.",
    ),
    report: Path = typer.Option(
        None, "--report", help="Write one JSON line per listing: stored, or its error and code."
    ),
    url: FacadeUrlOption = DEFAULT_FACADE_URL,
    api_key: ApiKeyOption = None,
    concurrency: int = typer.Option(8, help="Listings under way at once."),
) -> None:
    """Add the table's listings to the live index (or replace those of the same ids)."""
    from fbmr.client import Client, FbmrError
    from fbmr.client.batch.inputs import InputError
    from fbmr.client.batch.listings import read_listings

    try:
        listings = read_listings(source)
    except (InputError, OSError) as err:
        fail(f"listings not read: {err}")
    with Client(url, api_key=api_key) as client:
        results = client.put_listings(listings, concurrency)
    rows: list[dict[str, object]] = []
    for listing, result in zip(listings, results, strict=True):
        if isinstance(result, FbmrError):
            rows.append({"id": listing.id, "error": result.message, "code": row_code(result)})
        else:
            rows.append({"id": listing.id, "stored": True, "category": result.category})
    if report is not None:
        report.write_text("".join(json.dumps(row) + "\n" for row in rows))
    refused = [row for row in rows if "error" in row]
    typer.echo(f"{count(len(rows) - len(refused), 'listing')} stored, {len(refused)} refused")
    for row in refused[:5]:
        typer.echo(f"  {shown(str(row['id']))}: {row['code']}: {row['error']}", err=True)
    if refused:
        fail(f"{len(refused)} of {count(len(rows), 'listing')} refused")


@app.command()
def delete(
    ids: list[str] = typer.Argument(..., help="The ids of the listings to remove (sold)."),
    url: FacadeUrlOption = DEFAULT_FACADE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove listings from the live index; an id the index does not hold, or one that is not
    a listing id, is reported, and the command then exits 1."""
    from fbmr.client import Client, FbmrError

    missing = 0
    with Client(url, api_key=api_key) as client:
        for listing_id in ids:
            try:
                client.delete_listing(listing_id)
            except FbmrError as err:
                missing += 1
                typer.echo(f"  {shown(listing_id)}: {err.message}", err=True)
    typer.echo(f"{count(len(ids) - missing, 'listing')} deleted, {missing} not deleted")
    if missing:
        fail(f"{missing} of {count(len(ids), 'listing')} not deleted")
