"""Torch side of the engine: backbones, image loading/preprocessing, inference helpers."""

from .efficientnet_lite import EfficientNetLite
from .preprocess import DEFAULT_MAX_PIXELS, ImageLoadError, Preprocess, load_image
from .registry import ARCHS, ModelSpec, ModelWeightsError, create_model, get_spec, load_state_dict
