"""`TritonScorer.embeddings`: a catalogue's embeddings in batches straight from Triton (what an
index build needs), equal to what the facade answers for the same listings."""

from __future__ import annotations

import numpy as np

from fbmr.client import Client
from fbmr.client.batch import TritonScorer
from fbmr.client.batch.inputs import read_input
from fbmr.core.artifacts import ModelArtifacts
from fbmr.core.contract import Kind
from tests.client.conftest import first_photo_problems


def test_embeddings_of_every_kind_match_the_facade(demo_seed, triton, cpu_repository, facade_url):
    rows = read_input(demo_seed).iloc[:40]
    problems = first_photo_problems(demo_seed)
    scorer = TritonScorer(triton.ports.grpc_url, ModelArtifacts.load(cpu_repository))
    try:
        errors, vectors = scorer.embeddings(rows)
    finally:
        scorer.close()
    embedded = [i for i, e in enumerate(errors) if e is None]
    # listings without a photo, or whose photo is broken, cannot have image embeddings
    assert [rows["id"].iloc[i] for i, e in enumerate(errors) if e] == [
        i for i, p in zip(rows["id"], rows["photo"], strict=True) if p is None or i in problems
    ]
    assert set(vectors) == set(Kind)
    assert all(len(v) == len(embedded) and v.dtype == np.float32 for v in vectors.values())
    with Client(facade_url) as client:
        for j, i in enumerate(embedded[:3]):
            photo, text = rows["photo"].iloc[i], rows["text"].iloc[i]
            for kind, (p, t) in {
                Kind.image: (photo, None),
                Kind.text: (None, text),
                Kind.combined: (photo, text),
            }.items():
                answer = client.embed(photo=p, text=t)
                assert answer.kind is kind
                assert np.allclose(answer.vector, vectors[kind][j], atol=1e-4)
