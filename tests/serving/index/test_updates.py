"""Live updates of the similar-listing index, on both engines (FAISS, Milvus): the durable log,
its replay at load, what every worker's copy sees, and folding the log into the next built
version."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from fbmr.core.contract import Kind
from fbmr.serving.index import catalogue, updates
from fbmr.serving.index.faiss_index import DEAD_MIN, DEAD_SHARE, FaissIndex
from fbmr.serving.index.filters import ListingFilter
from fbmr.serving.index.index_type import IndexType
from fbmr.serving.index.live_index import LiveIndex
from fbmr.serving.index.log_generations import UPDATES_LOG, Position
from fbmr.serving.index.store import IndexStore, open_version, save_version
from fbmr.serving.index.updates import Update, UpdateLog, changes, fold

DIM = 16
KINDS = (Kind.text, Kind.combined)
MODEL_VERSION = 3


def _listing(i: int | str, category: str = "chairs") -> dict:
    return {
        "id": str(i),
        "name": f"item {i}",
        "category": category,
        "price": 10.0,
        "location": None,
    }


def _index_dir(tmp_path, milvus_uri, n: int = 300, kind: IndexType = IndexType.exact):
    rng = np.random.default_rng(0)
    vectors = {k: rng.normal(size=(n, DIM)).astype(np.float32) for k in KINDS}
    index_dir = tmp_path / "index"
    listings = [_listing(i) for i in range(n)]
    meta = {"model_version": MODEL_VERSION}
    save_version(index_dir, vectors, listings, meta, kind, milvus_uri)
    return index_dir, vectors


def _put(listing_id: str, vector: np.ndarray, category: str = "lamps", version=MODEL_VERSION):
    return Update(
        "put",
        listing_id,
        model_version=version,
        listing=_listing(listing_id, category),
        source={"name": f"item {listing_id}", "description": "", "photo": "ab12"},
        vectors={k: vector for k in KINDS},
    )


def _ids(index: LiveIndex, vector: np.ndarray, k: int = 5, where=None) -> list[str]:
    return [hit.listing["id"] for hit in index.search(Kind.text, vector, k, where)]


@pytest.mark.parametrize("kind", [IndexType.exact, IndexType.hnsw, IndexType.ivf])
def test_a_put_listing_is_found_and_a_deleted_one_never_returned(tmp_path, kind, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri, kind=kind)
    store = IndexStore(index_dir)
    store.reload()
    index = store.current
    new = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    log = UpdateLog(index_dir)
    log.append(_put("new-1", new))
    assert store.catch_up() == 1
    assert _ids(index, new)[0] == "new-1" and len(index) == 301
    assert _ids(index, new, 3, ListingFilter(category="lamps")) == ["new-1"]

    near = _ids(index, vectors[Kind.text][7], 10)
    assert near[0] == "7"
    for listing_id in near[:4]:
        log.append(Update("delete", listing_id))
    store.catch_up()
    after = _ids(index, vectors[Kind.text][7], 10)
    assert len(after) == 10 and not set(after) & set(near[:4])
    assert "7" not in index and len(index) == 297


def test_a_put_of_a_known_id_replaces_its_vector_and_fields(tmp_path, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri)
    index = open_version(index_dir / "v0001")
    elsewhere = -vectors[Kind.text][5]
    UpdateLog(index_dir).append(_put("5", elsewhere, category="bikes"))
    index.catch_up()
    assert "5" not in _ids(index, vectors[Kind.text][5], 20)
    hits = index.search(Kind.text, elsewhere, 1)
    assert hits[0].listing["id"] == "5" and hits[0].listing["category"] == "bikes"
    assert len(index) == 300


# what an expression could misread: quotes and brackets that close a literal, escapes, LIKE's
# wildcards, non-ASCII, a control character
CRAFTED_DELETES = ("x'] or id not in ['", 'x"] or id not in ["', 'x\\" or id != \\"')
ODD_IDS = ("a'b", 'a"b', "a]b", "a\\b", "a%b", "a_b", "é😀", "a\nb", "x' or '1'='1")


def test_a_crafted_id_deletes_nothing_and_odd_ids_touch_only_themselves(tmp_path, milvus_uri):
    """The engines never read an id as anything but a value, whatever reaches them (the API
    refuses such ids before they do: tests/serving/http/test_listings.py)."""
    index_dir, _ = _index_dir(tmp_path, milvus_uri, n=50)
    index = open_version(index_dir / "v0001")
    log = UpdateLog(index_dir)
    for crafted in CRAFTED_DELETES:
        assert crafted not in index
        log.append(Update("delete", crafted))
    index.catch_up()
    assert len(index) == 50 and all(str(i) in index for i in range(50))

    rng = np.random.default_rng(3)
    odd = {listing_id: rng.normal(size=DIM).astype(np.float32) for listing_id in ODD_IDS}
    for listing_id, vector in odd.items():
        log.append(_put(listing_id, vector))
    index.catch_up()
    assert len(index) == 50 + len(odd)
    for listing_id, vector in odd.items():
        assert _ids(index, vector, 1) == [listing_id]
        others = frozenset(odd) - {listing_id}
        assert _ids(index, vector, 1, ListingFilter(exclude_ids=others)) == [listing_id]
        assert listing_id not in _ids(index, vector, 5, ListingFilter(exclude_ids={listing_id}))
    for count, listing_id in enumerate(odd, 1):
        log.append(Update("delete", listing_id))
        index.catch_up()
        assert listing_id not in index and len(index) == 50 + len(odd) - count
    assert all(str(i) in index for i in range(50))


@pytest.mark.parametrize("kind", [IndexType.exact, IndexType.ivf, IndexType.hnsw])
def test_re_putting_or_deleting_listings_does_not_grow_the_faiss_index(tmp_path, kind):
    """A replaced listing's old vectors leave FAISS (overwritten in place where the index can;
    in an HNSW graph, masked until the dead ones pass a share of the live, then rebuilt)."""
    index_dir, vectors = _index_dir(tmp_path, None, kind=kind)
    index = open_version(index_dir / "v0001")
    assert isinstance(index, FaissIndex)
    slack = 0 if kind is not IndexType.hnsw else max(DEAD_MIN, int(DEAD_SHARE * 300))
    log, rng = UpdateLog(index_dir), np.random.default_rng(11)
    for _ in range(3 * (DEAD_MIN + slack)):
        last = rng.normal(size=DIM).astype(np.float32)
        log.append(_put("5", last))
        index.catch_up()
        assert all(300 <= i.ntotal <= 300 + slack for i in index.indexes.values())
    assert len(index) == 300
    found = _ids(index, last, 10)
    assert found[0] == "5" and found.count("5") == 1
    assert _ids(index, vectors[Kind.text][7], 1) == ["7"]  # the rest as it was
    assert index.get("5")["category"] == "lamps"

    for i in range(100, 200):
        log.append(Update("delete", str(i)))
    index.catch_up()
    assert len(index) == 200
    assert all(
        i.ntotal <= 200 + max(DEAD_MIN, int(DEAD_SHARE * 200)) for i in index.indexes.values()
    )
    if kind is IndexType.ivf:  # removed by id at once
        assert all(i.ntotal == 200 for i in index.indexes.values())
    assert _ids(index, last, 1) == ["5"] and _ids(index, vectors[Kind.text][7], 1) == ["7"]
    assert not set(_ids(index, vectors[Kind.text][150], 20)) & {str(i) for i in range(100, 200)}


ISSUE_42_ID = "x'] or id not in ['"  # pymilvus's `ids=` once read it as "every other id"


def test_the_crafted_delete_of_issue_42_called_on_the_engine_directly_deletes_nothing(
    tmp_path, milvus_uri
):
    """The engine's own calls, not only the log's replay: the id neither found, nor read, nor
    deleted as anything but itself, nor able to empty a search that leaves it out."""
    index_dir, vectors = _index_dir(tmp_path, milvus_uri, n=50)
    index = open_version(index_dir / "v0001")
    assert ISSUE_42_ID not in index and index.get(ISSUE_42_ID) is None
    index._delete(ISSUE_42_ID)
    assert len(index) == 50 and all(str(i) in index for i in range(50))
    assert (
        len(
            _ids(
                index,
                vectors[Kind.text][0],
                50,
                ListingFilter(exclude_ids=frozenset({ISSUE_42_ID})),
            )
        )
        == 50
    )
    # and a listing of that very id is one listing like any other
    vector = np.random.default_rng(5).normal(size=DIM).astype(np.float32)
    index._put(_put(ISSUE_42_ID, vector))
    assert _ids(index, vector, 1) == [ISSUE_42_ID] and len(index) == 51
    index._delete(ISSUE_42_ID)
    assert ISSUE_42_ID not in index and len(index) == 50
    reopened = open_version(index_dir / "v0001")  # what a restart sees (the server's rows)
    assert len(reopened) == 50 and all(str(i) in reopened for i in range(50))


def test_a_location_filter_with_any_characters_is_a_plain_substring(tmp_path, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri, n=20)
    index = open_version(index_dir / "v0001")
    vector = vectors[Kind.text][0]
    for i, location in enumerate(("Café 😀 corner", "50% off_site", "O'Brien \\ Sons")):
        update = _put(f"odd-{i}", vector)
        assert update.listing is not None
        update.listing["location"] = location
        UpdateLog(index_dir).append(update)
    index.catch_up()
    for needle, found in (
        ("😀", "odd-0"),
        ("CAFÉ", "odd-0"),
        ("% off_", "odd-1"),
        ("'brien \\", "odd-2"),
    ):
        assert _ids(index, vector, 5, ListingFilter(location=needle)) == [found]
    assert _ids(index, vector, 5, ListingFilter(location="%")) == ["odd-1"]
    assert _ids(index, vector, 5, ListingFilter(location="_")) == ["odd-1"]


# categories an expression could misread (the API takes only the model's categories; the
# engines must hold whatever reaches them as a plain value all the same)
ODD_CATEGORIES = ("a'b", 'a"b', "a\\b", "a%b", "a_b", "é😀", 'x" or category != "')


def test_a_category_filter_with_any_characters_matches_only_itself(tmp_path, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri, n=20)
    index = open_version(index_dir / "v0001")
    vector = vectors[Kind.text][0]
    for i, category in enumerate(ODD_CATEGORIES):
        UpdateLog(index_dir).append(_put(f"odd-{i}", vector, category=category))
    index.catch_up()
    for i, category in enumerate(ODD_CATEGORIES):
        assert _ids(index, vector, 5, ListingFilter(category=category)) == [f"odd-{i}"]
    # wildcards, case and a quote that would end the literal match nothing else
    for missing in ("a%", "a_", "A'B", "x", "É😀", 'x" or category != "y'):
        assert _ids(index, vector, 5, ListingFilter(category=missing)) == [], missing
    assert len(_ids(index, vector, 30, ListingFilter(category="chairs"))) == 20


def test_every_worker_and_a_restart_see_the_same_catalogue(tmp_path, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri)
    workers = [open_version(index_dir / "v0001") for _ in range(2)]
    rng = np.random.default_rng(1)
    added = {f"n{i}": rng.normal(size=DIM).astype(np.float32) for i in range(20)}
    log = UpdateLog(index_dir)
    for listing_id, vector in added.items():
        log.append(_put(listing_id, vector))
    for i in range(0, 300, 7):
        log.append(Update("delete", str(i)))
    for worker in workers:
        worker.catch_up()
    restarted = open_version(index_dir / "v0001")  # replays the whole log at load
    for index in (*workers, restarted):
        assert len(index) == 300 + 20 - 43
        for listing_id, vector in added.items():
            assert _ids(index, vector, 1) == [listing_id]
        assert "14" not in index and "15" in index
    query = vectors[Kind.text][14]
    assert _ids(workers[0], query, 10) == _ids(restarted, query, 10)


def test_an_update_embedded_by_another_model_version_is_never_mixed_in(tmp_path, milvus_uri):
    index_dir, _ = _index_dir(tmp_path, milvus_uri)
    index = open_version(index_dir / "v0001")
    vector = np.ones(DIM, np.float32)
    UpdateLog(index_dir).append(_put("stale", vector, version=MODEL_VERSION + 1))
    index.catch_up()
    assert "stale" not in index and "stale" not in _ids(index, vector, 10)


def test_a_record_being_written_is_read_only_once_complete(tmp_path, milvus_uri):
    index_dir, _ = _index_dir(tmp_path, milvus_uri)
    index = open_version(index_dir / "v0001")
    line = _put("torn", np.ones(DIM, np.float32)).to_json()
    with open(index_dir / UPDATES_LOG, "a") as file:
        file.write(line[:40])
        file.flush()
        assert index.catch_up() == 0
        file.write(line[40:] + "\n")
    assert index.catch_up() == 1 and "torn" in index


def test_the_log_folds_into_the_next_built_version_which_replays_only_the_rest(
    tmp_path, milvus_uri
):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri)
    log = UpdateLog(index_dir)
    log.append(_put("new-1", np.ones(DIM, np.float32)))
    log.append(Update("delete", "0"))
    log.append(_put("1", np.ones(DIM, np.float32), category="bikes"))
    catalogue = [
        {"product_id": str(i), "product_name": f"item {i}", "label": "chairs"} for i in range(3)
    ]
    rows, folded = fold(catalogue, index_dir)
    by_id = {row["product_id"]: row for row in rows}
    assert set(by_id) == {"1", "2", "new-1"} and folded == log.end()
    assert by_id["1"]["label"] == "bikes"
    assert by_id["new-1"]["photo"] == str(index_dir / "photos" / "ab12")

    # a put after the fold is replayed by the version built from it; those before are not
    late = np.random.default_rng(5).normal(size=DIM).astype(np.float32)
    log.append(_put("late", late))
    rebuilt = {k: v[:2] for k, v in vectors.items()}
    save_version(
        index_dir, rebuilt, [_listing(0), _listing(1)],
        {"model_version": MODEL_VERSION, **folded.meta()}, milvus_uri=milvus_uri,
    )  # fmt: skip
    second = open_version(index_dir / "v0002")
    assert len(second) == 3 and "late" in second and "new-1" not in second and "0" in second


def test_searches_run_beside_a_stream_of_updates(tmp_path, milvus_uri):
    index_dir, vectors = _index_dir(tmp_path, milvus_uri, n=500, kind=IndexType.hnsw)
    index = open_version(index_dir / "v0001")
    log = UpdateLog(index_dir)
    rng = np.random.default_rng(2)
    failures: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                hits = index.search(Kind.text, vectors[Kind.text][3], 5)
                assert len(hits) == 5
        except BaseException as err:  # reported below
            failures.append(err)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(200):
        log.append(_put(f"s{i}", rng.normal(size=DIM).astype(np.float32)))
        if i % 10 == 0:
            log.append(Update("delete", str(i)))
        index.catch_up()
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(index) == 700 - 20


def test_a_writer_that_died_mid_record_costs_that_record_only(tmp_path):
    index_dir, _ = _index_dir(tmp_path, None)
    log = UpdateLog(index_dir)
    log.append(_put("before", np.ones(DIM, np.float32)))
    with open(index_dir / UPDATES_LOG, "ab") as file:  # a put cut short by a crash
        file.write(_put("torn", np.ones(DIM, np.float32)).to_json().encode()[:50])
    log.append(Update("delete", "3"))
    log.append(_put("after", -np.ones(DIM, np.float32)))
    index = open_version(index_dir / "v0001")
    assert "before" in index and "after" in index and "torn" not in index and "3" not in index
    rows, _ = fold([], index_dir)
    assert [row["product_id"] for row in rows] == ["before", "after"]


def test_changes_keep_the_last_update_of_each_listing_from_a_position(tmp_path):
    index_dir, _ = _index_dir(tmp_path, None)
    log = UpdateLog(index_dir)
    start = log.append(_put("a", np.ones(DIM, np.float32)))
    log.append(_put("b", np.ones(DIM, np.float32)))
    log.append(Update("delete", "b"))
    end = log.append(_put("c", np.ones(DIM, np.float32), category="bikes"))
    late, position = changes(index_dir, start)
    assert position == end and list(late) == ["b", "c"]
    assert late["b"] is None and late["c"]["label"] == "bikes"


def test_a_build_folds_in_the_updates_acknowledged_while_it_embedded(
    tmp_path, demo_prepared, monkeypatch
):
    """A put acknowledged while `fbmr index build` embeds the catalogue was embedded by the
    model in use, which the new version may not share: the build embeds it again itself."""
    index_dir = tmp_path / "index"
    embedded: list[list[str]] = []

    def embed(listings, triton_url, artifacts, kinds, progress=True):
        embedded.append([item["product_id"] for item in listings])
        if len(embedded) == 1:  # meanwhile, a listing is posted and one is sold
            index_dir.mkdir(parents=True, exist_ok=True)
            UpdateLog(index_dir).append(_put("late", np.ones(DIM, np.float32)))
            UpdateLog(index_dir).append(Update("delete", listings[0]["product_id"]))
        rng = np.random.default_rng(len(embedded))
        return listings, {
            k: rng.normal(size=(len(listings), DIM)).astype(np.float32) for k in kinds
        }

    monkeypatch.setattr(catalogue, "embed_catalogue", embed)
    monkeypatch.setattr(
        catalogue.ModelArtifacts, "load", lambda repository: SimpleNamespace(version=MODEL_VERSION)
    )
    path = catalogue.build_catalogue_index(
        demo_prepared, index_dir, "", tmp_path, kinds=KINDS, progress=False
    )
    assert embedded[1] == ["late"]  # embedded again, by the new version's models
    index = open_version(path)
    assert "late" in index and embedded[0][0] not in index
    assert len(index) == len(embedded[0])  # one in, one out
    assert Position.of(index.meta) == UpdateLog(index_dir).end()


def test_the_milvus_token_goes_only_to_the_milvus_it_is_for(tmp_path, monkeypatch):
    """A version's meta.json names its Milvus; one that names another than the facade's cannot
    make the facade send its token there."""
    from fbmr.serving.index import milvus_index

    index_dir, _ = _index_dir(tmp_path, "milvus.db", n=10)
    sent: list[str | None] = []
    connect = milvus_index.connect

    def recording(index_dir, uri, token=None):
        sent.append(token)
        return connect(index_dir, uri)

    monkeypatch.setattr(milvus_index, "connect", recording)
    for uri in ("milvus.db", "http://milvus:19530", None):
        open_version(index_dir / "v0001", "s3cret", uri).close()
    assert sent == ["s3cret", None, None]


def test_photos_of_deleted_or_replaced_listings_are_pruned_and_live_ones_kept(tmp_path):
    import os
    import time

    index_dir = tmp_path / "index"
    index_dir.mkdir()
    log = UpdateLog(index_dir)
    vector = np.ones(DIM, dtype=np.float32)

    def put(listing_id: str, photo: bytes) -> str:
        update = _put(listing_id, vector)
        assert update.source is not None
        update.source["photo"] = log.save_photo(photo)
        log.append(update)
        return update.source["photo"]

    sold, kept, old, new = (put("a", b"A"), put("b", b"B"), put("c", b"C1"), put("c", b"C2"))
    log.append(Update("delete", "a"))
    aged = time.time() - 2 * updates.PHOTO_GRACE_S
    for name in (sold, kept, old, new):
        os.utime(index_dir / "photos" / name, (aged, aged))
    just_saved = log.save_photo(b"D")  # a put on its way: saved, not logged yet
    assert updates.prune_photos(index_dir) == 2
    assert sorted(p.name for p in (index_dir / "photos").iterdir()) == sorted(
        [kept, new, just_saved]
    )
    # a photo reused by a new put is fresh again, though its file is old
    log.append(Update("delete", "b"))
    os.utime(index_dir / "photos" / kept, (aged, aged))
    assert log.save_photo(b"B") == kept
    assert updates.prune_photos(index_dir) == 0
