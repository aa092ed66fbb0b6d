"""Torch side of the engine: backbones, image loading/preprocessing, inference helpers."""

from .efficientnet_lite import EfficientNetLite
from .preprocess import DEFAULT_MAX_PIXELS, ImageLoadError, Preprocess, load_image
from .registry import ARCHS, ModelSpec, ModelWeightsError, create_model, get_spec, imagenet_classes, load_state_dict
from .bundle import DEFAULT_BUNDLE, Bundle, BundleError, load_bundle, make_tiny_bundle, save_bundle, save_detector
from .calibration import expected_calibration_error, fit_temperature
from .inference import OUTPUTS, LogitsAndFeatures, predict_logits, predict_probs
from .tta import average_view_probs, rotate_views
from .data import DatasetError, ImageDataset, load_dataset, split_by_group

__all__ = [
    "EfficientNetLite",
    "DEFAULT_MAX_PIXELS", "ImageLoadError", "Preprocess", "load_image",
    "ARCHS", "ModelSpec", "ModelWeightsError", "create_model", "get_spec", "imagenet_classes", "load_state_dict",
    "DEFAULT_BUNDLE", "Bundle", "BundleError", "load_bundle", "make_tiny_bundle", "save_bundle", "save_detector",
    "expected_calibration_error", "fit_temperature",
    "OUTPUTS", "LogitsAndFeatures", "predict_logits", "predict_probs",
    "average_view_probs", "rotate_views",
    "DatasetError", "ImageDataset", "load_dataset", "split_by_group",
]
