"""HedgedClassifier: posteriors from any classifier, and images through a tiny bundle."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hedged
from hedged import HedgedClassifier, Node, Prediction, UncalibratedError
from hedged.hedging import Darts
from hedged.taxonomy import Taxonomy
from test_facade_helpers import cached_bundle, synthetic_split, write_images

TAX = Taxonomy.from_edges(
    [("root", "animal"), ("root", "car"), ("animal", "cat"), ("animal", "dog")],
    leaves=["cat", "dog", "car"],
    display_names={"animal": "Animal", "cat": "Cat"},
    aliases={"cat": ["Katze"], "dog": ["Hund", "Dog"]},
)


@pytest.fixture(scope="module")
def fitted():
    p, y = synthetic_split(TAX, 400, seed=1)
    return HedgedClassifier(TAX).fit(p, y)


@pytest.fixture(scope="module")
def animal_bundle():
    # cat and dog get ~0.4998 each for every image: DARTS answers "animal".
    return cached_bundle(leaves=(0, 1))


@pytest.fixture(scope="module")
def clf(animal_bundle):
    return HedgedClassifier.from_bundle(animal_bundle)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), n=3, corrupt=True)


# ---------------------------------------------------------------- exports / nodes
def test_package_exports_the_building_blocks():
    for name in ("HedgedClassifier", "Prediction", "Node", "Taxonomy", "TaxonomyError", "Darts", "Climbing",
                 "LeafGT", "FlatClassifier"):
        assert hasattr(hedged, name), name


def test_node_carries_path_depth_leaves_and_dataset_labels():
    n = Node.of(TAX, "animal")
    assert n == Node("animal", "Animal", ("root", "animal"), 1, ("cat", "dog"), ("Katze", "Hund", "Dog"))
    assert not n.is_leaf and Node.of(TAX, "car").is_leaf
    assert Node.of(TAX, "car").labels == ("car",)  # no alias: the leaf name is the label
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.depth = 3


# ---------------------------------------------------------------- posteriors
def test_predict_from_probs_hand_computed():
    # Calibration: the model knows "animal" but is a coin flip between cat and
    # dog, and is sure and right about cars. Answering the leaf is then 75%
    # accurate, so a 0.9 target needs lambda > 0.415, where "animal" beats
    # "cat" for a (0.5, 0.5, 0) posterior: (0.585 + l) > 0.5 (1.585 + l).
    cal = np.array([[0.5, 0.5, 0.0]] * 100 + [[0.0, 0.0, 1.0]] * 100)
    labels = ["cat", "dog"] * 50 + ["car"] * 100
    fitted = HedgedClassifier(TAX, guarantee="expected").fit(cal, labels)
    probs = np.array([[0.4999, 0.4999, 0.0002], [0.0, 0.0, 1.0]])
    assert [p.node.name for p in fitted.predict_from_probs(probs, accuracy=0.7)] == ["cat", "car"]
    a, b = fitted.predict_from_probs(probs, accuracy=0.9)
    assert isinstance(a, Prediction) and a.ok and b.ok
    assert a.node.name == "animal" and b.node.name == "car"
    assert a.probability == pytest.approx(0.9998)
    assert a.info_gain == pytest.approx((math.log2(3) - 1) / math.log2(3))
    assert b.info_gain == pytest.approx(1.0)
    assert a.leaf.name == "cat" and a.leaf_probability == pytest.approx(0.4999)
    assert (a.accuracy, a.guarantee, a.guaranteed, a.source) == (0.9, "expected", True, None)


def test_predict_from_probs_agrees_with_darts(fitted):
    p, y = synthetic_split(TAX, 200, seed=2)
    for guarantee in ("pac", "expected"):
        rule = Darts(TAX, guarantee=guarantee).fit(fitted.calibration_probs_, fitted.calibration_labels_)
        for acc in (0.6, 0.9, 0.99):
            got = [r.node.name for r in fitted.predict_from_probs(p, acc, guarantee)]
            assert got == list(rule.predict(p, accuracy=acc))


def test_calibration_happens_once_per_guarantee(monkeypatch):
    calls = []
    original = Darts.fit

    def counting_fit(self, probs, labels, groups=None):
        calls.append(self.guarantee)
        return original(self, probs, labels, groups)

    monkeypatch.setattr(Darts, "fit", counting_fit)
    p, y = synthetic_split(TAX, 300, seed=3)
    clf = HedgedClassifier(TAX).fit(p, y)
    assert calls == []  # lazy
    for acc in (0.7, 0.9, 0.95, 1.0):
        clf.predict_from_probs(p[:5], acc)
    clf.predict_from_probs(p[:5], 0.9, guarantee="expected")
    clf.predict_from_probs(p[:5], 0.8, guarantee="expected")
    assert calls == ["pac", "expected"]
    assert clf.rule("pac") is clf.rule()


def test_labels_may_be_names_or_aliases():
    p, y = synthetic_split(TAX, 300, seed=4)
    names = np.array(["Katze", "Hund", "car"])[y]
    a = HedgedClassifier(TAX).fit(p, y).predict_from_probs(p, 0.9)
    b = HedgedClassifier(TAX).fit(p, names).predict_from_probs(p, 0.9)
    assert [r.node.name for r in a] == [r.node.name for r in b]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf"), "abc", "0.9", None, True])
def test_bad_accuracy_is_a_value_error(fitted, bad):
    with pytest.raises(ValueError, match="accuracy"):
        fitted.predict_from_probs(np.array([[0.2, 0.3, 0.5]]), accuracy=bad)


def test_unfitted_and_bad_setup_are_refused():
    with pytest.raises(UncalibratedError, match="not calibrated"):
        HedgedClassifier(TAX).predict_from_probs(np.array([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="guarantee"):
        HedgedClassifier(TAX, guarantee="always")
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        HedgedClassifier(TAX).fit(np.ones((4, 2)) / 2, [0, 1, 0, 1])
    with pytest.raises(UncalibratedError, match="no image model"):
        p, y = synthetic_split(TAX, 50, seed=5)
        HedgedClassifier(TAX).fit(p, y).predict(np.zeros((8, 8, 3), np.uint8))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, (7, 3), elements=st.floats(0.0, 1.0)),
    st.floats(0.05, 1.0),
)
def test_prediction_fields_are_consistent(fitted, raw, accuracy):
    probs = (raw + 1e-9) / (raw + 1e-9).sum(axis=1, keepdims=True)
    for row, pred in zip(probs, fitted.predict_from_probs(probs, accuracy)):
        under = [TAX.leaf_index(leaf) for leaf in pred.node.leaves]
        assert pred.probability == pytest.approx(row[under].sum())
        assert pred.leaf.name == TAX.leaves[int(row.argmax())]
        assert pred.leaf_probability == pytest.approx(row.max())
        assert 0.0 <= pred.info_gain <= 1.0
        assert pred.node.path[0] == TAX.root and pred.node.path[-1] == pred.node.name


# ---------------------------------------------------------------- images (tiny bundle)
def test_from_bundle_uses_the_bundle(clf):
    assert clf.taxonomy.leaves == ("animal.cat", "animal.dog", "car")
    assert clf.tta_angles == (0.0,)
    assert clf.calibration_probs_.shape == (300, 3)
    assert "calibrated=True" in repr(clf)


def test_predict_accepts_every_input_kind(clf, images):
    import torch
    from PIL import Image

    path = images[0]
    arr = np.array(Image.open(path).convert("RGB"))
    kinds = [str(path), path, Image.open(path), arr, torch.from_numpy(arr).permute(2, 0, 1).contiguous()]
    for x in kinds:
        (pred,) = clf.predict(x, accuracy=0.9)
        assert pred.node.name == "animal" and pred.node.display_name == "Animal"
        assert pred.leaf.name in ("animal.cat", "animal.dog")
    assert clf.predict(str(path))[0].source == str(path)
    assert clf.predict(arr)[0].source is None
    batch = clf.predict(kinds, accuracy=0.9)
    assert [p.node.name for p in batch] == ["animal"] * len(kinds)
    assert len(clf.predict(np.stack([arr, arr]))) == 2  # (N, H, W, C) is a batch


def test_predict_proba_and_node_posteriors(clf, images):
    probs = clf.predict_proba(images[:3])
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, :2] > 0.49).all()
    nodes = clf.node_proba(probs)
    assert nodes.shape == (3, clf.taxonomy.n_nodes)
    np.testing.assert_allclose(nodes[:, clf.taxonomy.node_index("animal")], probs[:, 0] + probs[:, 1])
    # The image path and the posterior path give the same answer.
    assert [p.node for p in clf.predict(images[:3], 0.9)] == [p.node for p in clf.predict_from_probs(probs, 0.9)]


def test_bad_file_raises_by_default_and_is_collected_on_request(clf, images):
    with pytest.raises(ValueError, match="corrupt.jpg"):
        clf.predict(images)
    preds = clf.predict(images, errors="collect")
    assert [p.ok for p in preds] == [True, True, True, False]
    bad = preds[-1]
    assert bad.source == str(images[-1]) and bad.node is None and bad.error
    assert bad.to_dict() == {"image": str(images[-1]), "error": bad.error}
    with pytest.raises(ValueError, match="errors"):
        clf.predict(images, errors="ignore")


def test_tta_other_than_calibrated_is_refused_unless_allowed(clf, images):
    with pytest.raises(UncalibratedError, match="calibrated"):
        clf.predict(images[0], tta=(0, 90))
    (pred,) = clf.predict(images[0], tta=(0, 90), allow_uncalibrated=True)
    assert not pred.guaranteed and pred.to_dict()["guarantee_holds"] is False
    (same,) = clf.predict(images[0], tta=[360])  # 360 degrees is the calibrated 0
    assert same.guaranteed


def test_progress_callback_reaches_the_total(clf, images):
    seen = []
    clf.predict(images[:3], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3)


def test_default_bundle_classifies_the_example_photos():
    """The README's main job: the shipped model on the shipped test-split examples."""
    repo = Path(__file__).resolve().parents[1]
    clf = HedgedClassifier.from_bundle()
    assert clf.taxonomy.n_leaves == clf.calibration_probs_.shape[1]
    polo, hat, jacket = clf.predict([repo / "examples" / f"{n}.jpg" for n in ("polo", "hat", "jacket")], accuracy=0.95)
    assert polo.node.name == "body.upper.short_sleeve.polo" and polo.probability > 0.9
    assert hat.node.name == "head.hat"
    # the jacket is a coat at 83%: hedged to Outerwear at 95%, yet covering the truth
    assert len(jacket.node.leaves) > 1 and "body.upper.outerwear.outwear" in jacket.node.leaves
    [specific] = clf.predict(repo / "examples" / "jacket.jpg", accuracy=0.8)
    assert specific.node.depth >= jacket.node.depth


def test_posterior_users_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, hedged\n"
        "t = hedged.Taxonomy.from_edges([('r', 'a'), ('r', 'b')])\n"
        "c = hedged.HedgedClassifier(t).fit(np.eye(2)[[0, 1] * 20], [0, 1] * 20)\n"
        "c.predict_from_probs([[0.9, 0.1]], 0.9)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_bundle_model_is_fused_for_inference_without_changing_outputs(clf):
    import torch

    assert clf.model is not clf.bundle_.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.bundle_.model.modules())
    # The test head ignores its input and a fresh network's deep features are ~0,
    # so compare the stem (conv + folded BatchNorm + activation).
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        fused, plain = clf.model.stem(x), clf.bundle_.model.stem(x)
    assert plain.abs().max() > 0.1
    torch.testing.assert_close(fused, plain, atol=1e-4, rtol=1e-4)


def test_same_rotations_in_another_spelling_are_the_calibrated_tta():
    p, y = synthetic_split(TAX, 50, seed=6)
    clf = HedgedClassifier(TAX, tta_angles=(0, -15, 15)).fit(p, y)
    assert clf.resolve_tta(None) == ((0.0, -15.0, 15.0), True)
    assert clf.resolve_tta([15, 345, 0, 0]) == ((0.0, -15.0, 15.0), True)  # the model gets the calibrated spelling
    assert clf.resolve_tta([0, 90], allow_uncalibrated=True) == ((0.0, 90.0), False)
    with pytest.raises(UncalibratedError, match="0,-15,15"):
        clf.resolve_tta([0])
    with pytest.raises(ValueError, match="finite"):
        clf.resolve_tta([0, float("nan")])


def test_single_child_nodes_are_named_by_their_child():
    tax = Taxonomy.from_edges(
        [("root", "feet"), ("feet", "shoes"), ("root", "body"), ("body", "shirt"), ("body", "pants")],
        leaves=["shoes", "shirt", "pants"],
    )
    p, y = synthetic_split(tax, 300, seed=7, sharpness=4.0)
    clf = HedgedClassifier(tax).fit(p, y)
    probs = np.array([[0.98, 0.01, 0.01], [0.01, 0.5, 0.49]])
    rule_answers = clf.rule().predict(probs, accuracy=0.8)
    preds = clf.predict_from_probs(probs, accuracy=0.8)
    # Rules and facade agree: same leaves, the precise name.
    assert rule_answers[0] == "shoes" and preds[0].node.name == "shoes"
    node_p = clf.node_proba(probs)
    for i, (pred, answer) in enumerate(zip(preds, rule_answers)):
        assert pred.node.leaves == tax.leaves_under(answer)
        assert pred.probability == pytest.approx(node_p[i, tax.node_index(answer)])


def test_leaf_at_target_and_answer_path_agree_with_predict(fitted):
    p, _ = synthetic_split(TAX, 60, seed=3)
    targets = [0.3, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0]
    with_path = fitted.predict_from_probs(p, accuracy=0.9, path_over_targets=True)
    plain = fitted.predict_from_probs(p, accuracy=0.9)
    columns = fitted.rule().predict(p, accuracy=targets)
    for i, (pred, bare) in enumerate(zip(with_path, plain)):
        assert bare.answer_path is None and bare.leaf_at_target == pred.leaf_at_target
        path = pred.answer_path
        assert path[-1][0] == 1.0 and path[-1][1].name == TAX.root
        assert all(a < b for (a, _), (b, _) in zip(path, path[1:]))
        for j, t in enumerate(targets):
            answer = next(node for mt, node in path if t <= mt)
            assert answer.name == columns[i, j]
        assert pred.node.name == next(node for mt, node in path if 0.9 <= mt).name
        # leaf_at_target: the answer is a leaf exactly up to it.
        if pred.leaf_at_target is None:
            assert not path[0][1].is_leaf
        else:
            assert path[0][1].is_leaf and path[0][0] == pred.leaf_at_target
            assert path[0][1] == pred.leaf
        assert pred.node.is_leaf == (pred.leaf_at_target is not None and 0.9 <= pred.leaf_at_target)
    record = with_path[0].to_dict()
    assert "leaf_at_target" in record and "leaf_at_target" in plain[0].to_dict()
    assert "answer_path" not in plain[0].to_dict()
    assert record["answer_path"][-1] == {"max_target": 1.0, "node": TAX.root, "display_name": TAX.root}


def test_pac_group_guarantee_uses_the_calibration_groups():
    p, y = synthetic_split(TAX, 400, seed=1)
    groups = np.arange(400) // 4
    clf = HedgedClassifier(TAX).fit(p, y, groups)
    rule = clf.rule("pac-group")
    assert rule.calibration_.unit == "group" and rule.n_groups_ == 100
    assert clf.rule("pac").calibration_.unit == "photo"
    expected = Darts(TAX).fit(p, y, groups).predict(p[:20], accuracy=0.8)
    got = [pred.node.name for pred in clf.predict_from_probs(p[:20], accuracy=0.8, guarantee="pac-group")]
    assert got == expected.tolist()
    assert clf.predict_from_probs(p[:1], accuracy=0.8, guarantee="pac-group")[0].guarantee == "pac-group"
    with pytest.raises(UncalibratedError, match="pac-group"):
        HedgedClassifier(TAX).fit(p, y).rule("pac-group")
    with pytest.raises(ValueError, match="groups must have shape"):
        HedgedClassifier(TAX).fit(p, y, groups[:-1])
