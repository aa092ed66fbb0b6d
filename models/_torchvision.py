"""torchvision backbones (ResNet-50, MobileNetV3) with the uniform feature interface.

A module of its own so that only building one of them imports torchvision (and
with it torch._dynamo); EfficientNet-Lite bundles never do.
"""

from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

# The instances are re-classed to these subclasses (no new state), so that their
# state_dict keys stay exactly torchvision's and a user's torchvision .pth loads as is.


class ResNetBackbone(torchvision.models.ResNet):
    """torchvision ResNet with ``forward_features`` / ``get_classifier`` / ``reset_classifier``."""

    @property
    def num_features(self) -> int:
        return self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


class MobileNetV3Backbone(torchvision.models.MobileNetV3):
    """torchvision MobileNetV3; features are the 1280-d pre-logits (after the hidden layer)."""

    @property
    def num_features(self) -> int:
        return self.classifier[-1].in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:-1](x)

    def get_classifier(self) -> nn.Linear:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[-1] = nn.Linear(self.num_features, num_classes)


TORCHVISION: dict[str, tuple[Callable[..., nn.Module], type]] = {
    "resnet50": (torchvision.models.resnet50, ResNetBackbone),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large, MobileNetV3Backbone),
}
