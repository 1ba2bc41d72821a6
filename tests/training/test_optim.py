"""SplitAdam: sparse embedding rows and dense parameters stepped as one optimiser."""

import copy

import pytest
import torch
from torch import nn

from fbmr.training.optim import SplitAdam, sparse_parameters


class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(100, 4, sparse=True)
        self.dense_table = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(self.table(ids).sum(1) + self.dense_table.weight[0])


def _step(model: Bag, optimizer: SplitAdam, ids: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(ids), torch.tensor([0, 2])).backward()
    optimizer.step()


def test_only_sparse_tables_are_found() -> None:
    model = Bag()
    assert sparse_parameters(model) == [model.table.weight]


def test_a_step_moves_the_batch_rows_and_dense_parameters_and_no_other_row() -> None:
    torch.manual_seed(0)
    model = Bag()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = SplitAdam(model.parameters(), sparse_parameters(model), lr=0.1, weight_decay=0.0)
    ids = torch.tensor([[3, 5], [5, 7]])
    _step(model, optimizer, ids)
    moved = (model.table.weight != before["table.weight"]).any(1).nonzero().flatten()
    assert moved.tolist() == [3, 5, 7]
    assert not torch.equal(model.linear.weight, before["linear.weight"])
    assert not torch.equal(model.dense_table.weight[0], before["dense_table.weight"][0])


def test_state_round_trip_resumes_the_same_trajectory() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[1, 2], [2, 9]])
    model = Bag()
    twin = Bag()
    twin.load_state_dict(model.state_dict())
    optimizer = SplitAdam(model.parameters(), sparse_parameters(model), lr=0.1, weight_decay=0.0)
    _step(model, optimizer, ids)
    twin.load_state_dict(model.state_dict())
    resumed = SplitAdam(twin.parameters(), sparse_parameters(twin), lr=0.1, weight_decay=0.0)
    # a copy, as a checkpoint gives: a loaded state shares the given tensors
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _step(model, optimizer, ids)
    _step(twin, resumed, ids)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_of_another_model_is_refused() -> None:
    model = Bag()
    dense_only = SplitAdam(model.linear.parameters(), [], lr=0.1, weight_decay=0.0)
    both = SplitAdam(model.parameters(), sparse_parameters(model), lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match="optimiser state"):
        both.load_state_dict(dense_only.state_dict())
