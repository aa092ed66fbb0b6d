"""The committed clothing bundle: loads, agrees with the shipped taxonomy, examples are test photos."""

from pathlib import Path

import numpy as np
import pytest

from models.bundle import DEFAULT_BUNDLE, load_bundle
from taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = {"polo": "7dd9bded-33f2-4928-b8f1-7efe0fd3bce3", "dress": "b59e4d4a-a283-4868-8a81-2f24d8b9c8d8",
            "shoes": "d748ed88-9bf7-402e-98a9-7a4c65582e48", "hat": "a8f612a6-a966-451b-9dd3-364a4b200dc1",
            "jacket": "b2ee19d6-93f1-4688-9545-d265887f226f"}


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
