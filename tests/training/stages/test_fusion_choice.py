"""What validation keeps of the stack (`fbmr.training.stages.fusion_choice.hold_to_inputs`): the
fitted weights with their bias per class, or an input alone with no bias, saved as kept."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fbmr.training.checkpoints import load_checkpoint, save_checkpoint
from fbmr.training.config import TrainConfig
from fbmr.training.layout import BEST
from fbmr.training.models import FusionHead, FusionModel
from fbmr.training.models._head import ClassifierHead
from fbmr.training.stage_settings import fit_settings
from fbmr.training.stages.fusion_choice import INPUTS_ALONE, hold_to_inputs

CLASSES = 4
LEAN = torch.tensor([3.0, 0.0, 0.0, 0.0])  # the fitted stack's bias: towards class 0


def _stack(tmp_path):
    torch.manual_seed(0)
    head = FusionHead(8, 6, CLASSES, 4, 0.0, ClassifierHead(8, CLASSES), ClassifierHead(6, CLASSES))
    model = FusionModel(nn.Identity(), head).eval()  # the text embeddings are given as they are
    with torch.no_grad():
        head.weights.copy_(torch.tensor([1.0, 0.0, 0.0]))  # the text's answer and the bias
        head.bias.copy_(LEAN)
    save_checkpoint(tmp_path / BEST, {"model": model.state_dict()})
    return model


def _val(label):
    return TensorDataset(torch.randn(64, 8), torch.randn(64, 6), torch.full((64,), label))


@pytest.mark.parametrize(
    ("label", "kept", "bias"),
    # the bias right, then wrong: an input alone (either, on random heads) answers without it
    [(0, {"trained"}, LEAN), (2, {"text", "image"}, torch.zeros(CLASSES))],
)
def test_validation_keeps_the_stack_with_its_bias_or_an_input_without_one(
    tmp_path, label, kept, bias
):
    model = _stack(tmp_path)
    settings = fit_settings(TrainConfig(), "fusion")
    found, scores = hold_to_inputs(
        model, model.head, _val(label), settings, torch.device("cpu"), tmp_path, INPUTS_ALONE, True
    )
    assert found in kept
    assert scores["trained"]["loss"] != scores["text"]["loss"]  # judged apart: the bias counted
    assert torch.equal(model.head.bias, bias)
    assert torch.equal(load_checkpoint(tmp_path / BEST)["model"]["head.bias"], bias)
