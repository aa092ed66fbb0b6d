"""Torch side of the engine: backbones, image loading/preprocessing, inference helpers.

The names below are imported on first use (PEP 562): ``import hedged.models`` or
a torch-free submodule (``hedged.models.config``) does not import torch.
"""

import importlib

_EXPORTS = {
    "EfficientNetLite": "efficientnet_lite",
    "DEFAULT_MAX_PIXELS": "preprocess",
    "ImageLoadError": "preprocess",
    "Preprocess": "preprocess",
    "load_image": "preprocess",
    "ARCHS": "registry",
    "ModelSpec": "registry",
    "ModelWeightsError": "registry",
    "create_model": "registry",
    "get_spec": "registry",
    "imagenet_classes": "registry",
    "load_state_dict": "registry",
    "DEFAULT_BUNDLE": "bundle",
    "Bundle": "bundle",
    "BundleError": "bundle",
    "load_bundle": "bundle",
    "make_tiny_bundle": "bundle",
    "save_bundle": "bundle",
    "save_detector": "bundle",
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "OUTPUTS": "inference",
    "LogitsAndFeatures": "inference",
    "predict_logits": "inference",
    "predict_probs": "inference",
    "average_view_probs": "tta",
    "rotate_views": "tta",
    "DatasetError": "data",
    "ImageDataset": "data",
    "load_dataset": "data",
    "split_by_group": "data",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    else:
        try:  # a submodule not imported yet: hedged.models.bundle after `import hedged.models`
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
