"""The model's named outputs: logits and the penultimate features they come from."""

import json

import numpy as np
import torch
from PIL import Image

from hedged.models import OUTPUTS, LogitsAndFeatures, load_bundle, make_tiny_bundle, predict_logits
from hedged.models.bundle import DEFAULT_BUNDLE, MANIFEST


def _images(n=3, size=40):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)) for _ in range(n)]


def test_features_come_with_the_same_logits(tmp_path):
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b"))
    images = _images()
    plain = predict_logits(bundle.model, images, bundle.preprocess, angles=(0, 90), batch_size=2)
    logits, feats = predict_logits(
        bundle.model, images, bundle.preprocess, angles=(0, 90), batch_size=2, return_features=True
    )
    assert logits.shape == plain.shape == (3, 2, 3)
    assert feats.shape == (3, 2, bundle.model.num_features)
    np.testing.assert_allclose(logits, plain, rtol=1e-5, atol=1e-5)
    fc = bundle.model.get_classifier()
    again = feats @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    np.testing.assert_allclose(again, logits, rtol=1e-4, atol=1e-4)


def test_no_images_give_empty_outputs(tmp_path):
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b"))
    logits, feats = predict_logits(bundle.model, [], bundle.preprocess, angles=(0, 90), return_features=True)
    assert logits.shape == (0, 2, 3) and feats.shape == (0, 2, bundle.model.num_features)


def test_two_output_module_matches_the_model(tmp_path):
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b"))
    x = torch.randn(2, 3, 64, 64)
    logits, feats = LogitsAndFeatures(bundle.model)(x)
    torch.testing.assert_close(logits, bundle.model(x))
    assert feats.shape == (2, bundle.model.num_features)


def test_manifests_name_the_outputs(tmp_path):
    path = make_tiny_bundle(tmp_path / "b")
    for manifest in (path / MANIFEST, DEFAULT_BUNDLE / MANIFEST):
        assert list(json.loads(manifest.read_text())["outputs"]) == list(OUTPUTS) == ["logits", "features"]
