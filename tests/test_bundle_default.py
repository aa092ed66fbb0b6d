"""The committed clothing bundle: loads, agrees with the shipped taxonomy, examples are test photos."""

from pathlib import Path

import numpy as np
import pytest

from hedged.models.bundle import DEFAULT_BUNDLE, DEFAULT_TORCH_BUNDLE, load_bundle
from hedged.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"polo": "d2613a5e-e956-43ef-b09f-1860b4d41801", "dress": "b59e4d4a-a283-4868-8a81-2f24d8b9c8d8",
            "shoes": "fb9e862c-8c64-4f23-b1e9-e734ec797436", "hat": "bb784ba1-b4d8-4a0b-a72a-a20d2c8bbef6",
            "jacket": "43ac2647-95bc-4174-b9c1-0518a5024ed2"}


@pytest.fixture(scope="module", params=["default", "torch"])
def bundle(request):
    # The shipped bundles are part of the repository: their absence is a failure, not a skip.
    path = DEFAULT_BUNDLE if request.param == "default" else DEFAULT_TORCH_BUNDLE
    assert (path / "bundle.json").is_file(), f"shipped bundle missing at {path}"
    return load_bundle(path)


def test_the_default_is_an_export_of_the_torch_bundle():
    """The default bundle runs without torch, and came from the committed torch weights."""
    from hedged.models.data import sha256_file

    default, source = load_bundle(), load_bundle(DEFAULT_TORCH_BUNDLE)
    assert default.path == DEFAULT_BUNDLE.resolve() or default.path == DEFAULT_BUNDLE
    assert default.runtime == "onnx" and source.runtime == "torch"
    origin = default.manifest["provenance"]["exported_from"]
    assert origin["weights_sha256"] == sha256_file(DEFAULT_TORCH_BUNDLE / "weights.pt")
    assert (DEFAULT_BUNDLE / origin["relative_path"]).resolve() == DEFAULT_TORCH_BUNDLE.resolve()
    assert np.array_equal(default.test_labels, source.test_labels)
    assert default.split == source.split


def test_default_bundle_matches_shipped_taxonomy(bundle):
    assert bundle.taxonomy == Taxonomy.from_yaml(REPO / "taxonomies" / "clothing.yaml")
    assert bundle.taxonomy.n_leaves == 17
    assert bundle.calibration_probs.shape == (len(bundle.split["calibration"]), 17)
    assert bundle.test_probs.shape == (len(bundle.split["test"]), 17)


def test_splits_disjoint_and_examples_never_trained_on(bundle):
    sets = {k: set(v) for k, v in bundle.split.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)
    for name, image_id in EXAMPLES.items():
        assert (REPO / "examples" / f"{name}.jpg").stat().st_size <= 60_000
        # held out from training (the polo is now a calibration photo, the jacket a validation one)
        assert image_id not in sets["train"] and any(image_id in sets[k] for k in ("validation", "calibration", "test")), name


def test_recorded_test_accuracy_matches_test_posteriors(bundle):
    acc = float(np.mean(bundle.test_probs.argmax(1) == bundle.test_labels))
    test = bundle.metrics["test"]
    recorded = test["accuracy"] if bundle.runtime == "onnx" else test["tta"]["after_ts"]["accuracy"]
    assert acc == pytest.approx(recorded, abs=1e-6)
