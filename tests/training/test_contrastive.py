"""The image embedding's contrastive loss against a hand computation and its defining
properties."""

from __future__ import annotations

import math

import pytest
import torch

from fbmr.training.contrastive import supervised_contrastive, with_contrastive


def test_matches_the_loss_computed_by_hand():
    # three unit embeddings at 0, 90 and 180 degrees; photos 0 and 2 share a category
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    target = torch.tensor([0, 1, 0])
    t = 0.5
    # photo 0: similarities to photos 1 and 2 are 0 and -1; its positive is photo 2
    # photo 2: the same by symmetry; photo 1 has no positive and adds nothing
    log_p = -1 / t - math.log(math.exp(0 / t) + math.exp(-1 / t))
    assert float(supervised_contrastive(embedding, target, t)) == pytest.approx(-log_p)


def test_pulling_a_category_together_lowers_it_and_scale_does_not_matter():
    target = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    together = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    assert supervised_contrastive(together, target) < supervised_contrastive(apart, target)
    assert float(supervised_contrastive(3 * together, target)) == pytest.approx(
        float(supervised_contrastive(together, target))
    )


def test_a_batch_without_positives_adds_nothing_but_keeps_the_graph():
    embedding = torch.randn(4, 8, requires_grad=True)
    loss = supervised_contrastive(embedding, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert embedding.grad is not None and float(embedding.grad.abs().sum()) == 0.0


def test_the_objective_adds_the_weighted_term_to_the_classification_loss():
    torch.manual_seed(0)
    embedding, logits = torch.randn(6, 8), torch.randn(6, 3)
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = torch.nn.CrossEntropyLoss()
    expected = loss_fn(logits, target) + 0.5 * supervised_contrastive(embedding, target)
    got = with_contrastive(0.5)(embedding, logits, target, loss_fn)
    assert float(got) == pytest.approx(float(expected))
