"""The committed clothing bundle: loads, agrees with the shipped taxonomy, examples are test photos."""

from pathlib import Path

import numpy as np
import pytest

from hedged.models.bundle import DEFAULT_BUNDLE, load_bundle
from hedged.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"polo": "d2613a5e-e956-43ef-b09f-1860b4d41801", "dress": "b59e4d4a-a283-4868-8a81-2f24d8b9c8d8",
            "shoes": "fb9e862c-8c64-4f23-b1e9-e734ec797436", "hat": "bb784ba1-b4d8-4a0b-a72a-a20d2c8bbef6",
            "jacket": "43ac2647-95bc-4174-b9c1-0518a5024ed2"}


@pytest.fixture(scope="module")
def bundle():
    # The default bundle is part of the repository: its absence is a failure, not a skip.
    assert (DEFAULT_BUNDLE / "bundle.json").is_file(), f"default bundle missing at {DEFAULT_BUNDLE}"
    return load_bundle()


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
        assert image_id in sets["test"], name


def test_recorded_test_accuracy_matches_test_posteriors(bundle):
    acc = float(np.mean(bundle.test_probs.argmax(1) == bundle.test_labels))
    assert acc == pytest.approx(bundle.metrics["test"]["tta"]["after_ts"]["accuracy"], abs=1e-6)
