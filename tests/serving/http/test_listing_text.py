"""Training and serving read a listing's text through one function (`fbmr.core.listing.model_text`):
a raw row of the seed's Products.csv, sent to the facade as its fields or as one text written as
the marketplace wrote it, reaches the model as exactly the token ids training built for it."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import (
    ENSEMBLES,
    INPUT_DATATYPES,
    PROBABILITIES,
    TOKEN_IDS,
    ErrorCode,
    Kind,
)
from fbmr.core.listing import listing_text, model_text
from fbmr.training.data.prepared import PreparedDataset
from fbmr.training.data.seed import SeedSource
from tests.helpers import assert_error


@pytest.fixture(scope="module")
def raw_rows(demo_seed, demo_prepared):
    """Val-split listings: their raw Products.csv fields beside the token ids training built."""
    raw = SeedSource.open(str(demo_seed)).read_csv("Products.csv", ("id", "product_name"))
    raw = raw.set_index("id")
    data = PreparedDataset(demo_prepared)
    products = data.products("val").head(6)
    rows = []
    for _, product in products.iterrows():
        name, description = raw.loc[product["product_id"], ["product_name", "product_description"]]
        rows.append((name, description, data.text(product)))
    return rows


def text_answer(
    triton_url: str, token_ids: np.ndarray, version: int
) -> tuple[np.ndarray, np.ndarray]:
    """The text ensemble's embedding and probabilities (in the label map's class order) of token
    ids built here, straight from Triton."""
    ensemble = ENSEMBLES[Kind.text]
    tensor = grpcclient.InferInput(TOKEN_IDS, [1, len(token_ids)], INPUT_DATATYPES[TOKEN_IDS])
    tensor.set_data_from_numpy(token_ids[None])
    with grpcclient.InferenceServerClient(triton_url) as client:
        result = client.infer(ensemble.name, [tensor], model_version=str(version))
    return result.as_numpy(ensemble.embedding)[0], result.as_numpy(PROBABILITIES)[0]


def test_model_text_reads_fields_and_free_text_alike():
    name, description = "Sun loungers | in Skegness, Lincolnshire | Gumtree", "Great  condition"
    assert model_text(name, description) == "Sun loungers | Great condition"
    assert model_text(text=f"{name} {description}") == "Sun loungers | Great condition"
    # a free text without the marketplace's suffix: no name marked in it
    assert model_text(text="Sun loungers Great condition") == "Sun loungers Great condition"
    assert model_text(name="Mirror | Gumtree") == "Mirror |"
    with pytest.raises(ValueError, match="not both"):
        model_text(name, description, "a free text too")


def test_the_demo_catalogue_reads_the_same_through_model_text(demo_prepared):
    data = PreparedDataset(demo_prepared)
    for _, product in data.products("train").iterrows():
        cleaned = listing_text(product["product_name"], product["product_description"])
        assert model_text(text=cleaned) == cleaned  # a clean text is left as it is


def test_a_raw_seed_row_reaches_the_model_as_training_built_it(
    facade, facade_settings, cpu_repository, raw_rows
):
    artifacts = ModelArtifacts.load(cpu_repository)
    for name, description, trained_text in raw_rows:
        trained_ids = artifacts.text_input(trained_text)
        # the row as the marketplace wrote it is not what training read: the test can tell
        assert "Gumtree" in name
        assert not np.array_equal(artifacts.text_input(f"{name} {description}"), trained_ids)
        expected, probabilities = text_answer(
            facade_settings.triton_url, trained_ids, artifacts.version
        )
        as_fields = facade.post("/v1/embed", data={"name": name, "description": description})
        as_text = facade.post("/v1/embed", data={"text": f"{name} {description}"})
        predicted = facade.post("/v1/predict/text", json={"name": name, "description": description})
        for response in (as_fields, as_text, predicted):
            assert response.status_code == 200, response.text
        for response in (as_fields, as_text):
            assert response.json()["kind"] == "text"
            # Triton may batch concurrent requests together: equal up to float noise
            np.testing.assert_allclose(response.json()["embedding"], expected, atol=1e-5)
        # the prediction too is the model's answer to the ids training built
        body = predicted.json()
        assert body["pred"] == body["classes"][0] and body["model_version"] == artifacts.version
        assert sorted(body["classes"]) == sorted(artifacts.labels.classes)
        got = dict(zip(body["classes"], body["probabilities"], strict=True))
        want = dict(zip(artifacts.labels.classes, probabilities.tolist(), strict=True))
        assert got == pytest.approx(want, abs=1e-5)
        assert body["known_words"] == pytest.approx(artifacts.tokenizer.known_share(trained_text))


def test_fields_and_a_free_text_together_are_refused(facade):
    both = {"name": "Oak table", "description": "solid", "text": "Oak table solid"}
    invalid = ErrorCode.invalid_input
    assert_error(facade.post("/v1/predict/text", json=both), 422, "not both", code=invalid)
    assert_error(facade.post("/v1/embed", data=both), 422, "not both", code=invalid)
    empty = facade.post("/v1/predict/text", json={"name": " | Gumtree"})
    assert_error(empty, 422, "empty", code=ErrorCode.text_empty)
