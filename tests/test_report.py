"""hedged.report: files, figures and numbers consistent with hedging.metrics."""

from __future__ import annotations

import json
import warnings
import re

import numpy as np
import pytest
from PIL import Image

from hedged.report import FIGURES, TABLE_TARGETS, write_report
from hedged.hedging import Climbing, Darts, FlatClassifier, LeafGT
from hedged.hedging import metrics as hm
from hedged.models.calibration import expected_calibration_error
from hedged.taxonomy import Taxonomy, TaxonomyError
from test_facade_helpers import synthetic_split

TAX = Taxonomy.from_edges(
    [("root", "animal"), ("root", "vehicle"), ("animal", "cat"), ("animal", "dog"), ("animal", "bird"),
     ("vehicle", "car"), ("vehicle", "bike")],
    display_names={"animal": "Animal", "vehicle": "Vehicle"},
    aliases={"cat": ["Cat"]},
)
TARGETS = (0.5, 0.7, 0.8, 0.9, 0.95)


def no_nan(text):
    raise ValueError(f"JSON holds {text}")


@pytest.fixture(scope="module")
def data():
    cal = synthetic_split(TAX, 500, seed=10, sharpness=2.5)
    test = synthetic_split(TAX, 400, seed=11, sharpness=2.5)
    return cal, test


@pytest.fixture(scope="module")
def report(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("report")
    (cp, cy), (tp, ty) = data
    written = write_report(out, TAX, cp, cy, tp, ty, title="Synthetic", provenance={"data": "synthetic"},
                           targets=TARGETS)
    return out, written


def test_files_are_written(report):
    out, written = report
    names = {p.name for p in out.iterdir()}
    assert names == {"report.md", "metrics.json", *FIGURES.values()}
    assert written["figures"] == FIGURES


def test_figures_are_small_valid_pngs(report):
    out, _ = report
    for name in FIGURES.values():
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            w, h = im.size
            assert 200 < w <= 1300 and 200 < h <= 1300  # ~100 dpi, a few inches
        assert (out / name).stat().st_size < 400_000


def test_report_md_links_every_figure_relatively(report):
    out, _ = report
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(FIGURES.values())
    assert all((out / link).is_file() and "/" not in link for link in links)
    assert md.startswith("# Synthetic")
    for label in ("DARTS", "Climbing", "LEAF-GT", "Flat"):
        assert f"| {label}" in md
    assert "**data**: synthetic" in md


def test_metrics_json_is_strict_json_with_the_documented_keys(report):
    out, written = report
    loaded = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)
    assert loaded == written
    for key in ("guarantee", "delta", "alpha", "n_calibration", "n_test", "n_leaves", "n_nodes", "max_depth",
                "leaf", "curves", "depth_shares", "table", "confusion", "notes", "figures", "title", "provenance"):
        assert key in loaded, key
    assert (loaded["n_calibration"], loaded["n_test"], loaded["n_leaves"]) == (500, 400, 5)
    assert set(loaded["curves"]) == set(loaded["table"]) == {"darts", "climbing", "leaf_gt", "flat"}
    assert [r["target"] for r in loaded["table"]["darts"]] == list(TABLE_TARGETS)


@pytest.mark.parametrize("key,cls", [("darts", Darts), ("climbing", Climbing), ("leaf_gt", LeafGT),
                                     ("flat", FlatClassifier)])
def test_curves_and_table_match_hedging_metrics(report, data, key, cls):
    _, m = report
    (cp, cy), (tp, ty) = data
    rule = cls(TAX, guarantee="pac", delta=0.05).fit(cp, cy)
    expected = hm.accuracy_specificity_curve(rule, tp, ty, TARGETS)
    for k, v in expected.items():
        np.testing.assert_allclose(m["curves"][key][k], v, err_msg=k)
    rows = m["table"][key]
    at_95 = next(r for r in rows if r["target"] == 0.95)
    pred = rule.predict_index(tp, accuracy=0.95)
    assert at_95["accuracy"] == pytest.approx(hm.hierarchical_accuracy(TAX, pred, ty))
    assert at_95["leaf_share"] == pytest.approx(hm.leaf_share(TAX, pred))
    assert at_95["info_gain"] == pytest.approx(hm.answer_gain(TAX, pred).mean())  # as shown per image
    lo, hi = hm.clopper_pearson(int(round(at_95["accuracy"] * 400)), 400, 0.05)
    assert (at_95["ci_low"], at_95["ci_high"]) == pytest.approx((lo, hi))
    assert at_95["hierarchical_f1"] == pytest.approx(hm.hierarchical_precision_recall_f1(TAX, pred, ty)[2])
    assert at_95["met"] == (at_95["accuracy"] >= 0.95)


def test_depth_shares_leaf_metrics_and_confusion(report, data):
    _, m = report
    (cp, cy), (tp, ty) = data
    darts = Darts(TAX).fit(cp, cy)
    shares = np.asarray(m["depth_shares"]["shares"])
    assert shares.shape == (len(TARGETS), 3)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares[-1], hm.depth_shares(TAX, darts.predict_index(tp, accuracy=TARGETS[-1])))
    assert m["leaf"]["top1_accuracy"] == pytest.approx(np.mean(tp.argmax(1) == ty))
    assert m["leaf"]["ece"] == pytest.approx(expected_calibration_error(tp, ty, n_bins=15))
    assert sum(m["leaf"]["reliability"]["count"]) == 400
    counts = np.asarray(m["confusion"]["counts"])
    assert counts.sum() == 400 and counts.trace() == np.sum(tp.argmax(1) == ty)
    assert counts[ty[0]].sum() == np.sum(ty == ty[0])


def test_small_calibration_sets_are_noted_not_hidden(tmp_path):
    (cp, cy), (tp, ty) = synthetic_split(TAX, 40, seed=3), synthetic_split(TAX, 40, seed=4)
    with pytest.warns(UserWarning) as caught:
        m = write_report(tmp_path, TAX, cp, cy, tp, ty, targets=(0.5, 0.99))
    # One note and one console warning for every target and rule, not one per target.
    assert len(m["notes"]) == 1 and len(caught) == 1
    assert "40 images" in m["notes"][0] and "DARTS (from 0.95)" in m["notes"][0]
    assert "Notes from the rules" in (tmp_path / "report.md").read_text()


def test_per_class_table_and_classes_without_test_images(tmp_path, data):
    (cp, cy), (tp, ty) = data
    keep = ty != TAX.leaf_index("cat")
    m = write_report(tmp_path, TAX, cp, cy, tp[keep], ty[keep], targets=(0.5, 0.9), table_targets=(0.8, 0.95))
    classes = {c["leaf"]: c for c in m["per_class"]["classes"]}
    assert classes["cat"]["n"] == 0 and classes["cat"]["accuracy"] == [None, None]
    rule = Darts(TAX).fit(cp, cy)
    pred = rule.predict_index(tp[keep], accuracy=[0.8, 0.95])
    dog = ty[keep] == TAX.leaf_index("dog")
    assert classes["dog"]["n"] == int(dog.sum())
    assert classes["dog"]["accuracy"][1] == pytest.approx(TAX.is_correct(pred[dog, 1], ty[keep][dog]).mean())
    assert classes["dog"]["leaf_share"][0] == pytest.approx(hm.leaf_share(TAX, pred[dog, 0]))
    text = (tmp_path / "report.md").read_text()
    assert "## Per class (DARTS)" in text and "no test image" in text and "hier. F1**:" in text


def test_pac_group_needs_and_uses_groups(tmp_path, data):
    (cp, cy), (tp, ty) = data
    with pytest.raises(ValueError, match="cal_groups"):
        write_report(tmp_path / "a", TAX, cp, cy, tp, ty, guarantee="pac-group", targets=(0.5,))
    groups = np.arange(len(cy)) // 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = write_report(tmp_path / "b", TAX, cp, cy, tp, ty, guarantee="pac-group", cal_groups=groups, targets=(0.5,))
        rule = Darts(TAX).fit(cp, cy, groups)
    assert m["guarantee"] == "pac-group"
    at = next(r for r in m["table"]["darts"] if r["target"] == 0.9)
    assert at["accuracy"] == pytest.approx(TAX.is_correct(rule.predict_index(tp, 0.9), ty).mean())


def test_labels_may_be_aliases_and_bad_inputs_raise(tmp_path, data):
    (cp, cy), (tp, ty) = data
    names = np.asarray(TAX.leaves, dtype=object)
    names[TAX.leaf_index("cat")] = "Cat"
    m = write_report(tmp_path / "a", TAX, cp, names[cy].astype(str), tp, ty, targets=(0.9,))
    assert m["n_calibration"] == 500
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        write_report(tmp_path / "b", TAX, cp[:, :4], cy, tp, ty)
    with pytest.raises(ValueError, match="labels must have shape"):
        write_report(tmp_path / "c", TAX, cp, cy[:-1], tp, ty)
    with pytest.raises(TaxonomyError, match="unknown label"):
        write_report(tmp_path / "d", TAX, cp, cy, tp, np.array(["Dog?"] * len(ty)))
    with pytest.raises(ValueError, match="empty"):
        write_report(tmp_path / "e", TAX, cp, cy, tp[:0], ty[:0])


def test_many_leaves_skip_the_confusion_figure(tmp_path):
    wide = Taxonomy.from_edges([("root", f"l{i}") for i in range(201)])
    (cp, cy), (tp, ty) = synthetic_split(wide, 60, seed=1), synthetic_split(wide, 60, seed=2)
    m = write_report(tmp_path, wide, cp, cy, tp, ty, targets=(0.5, 0.9))
    assert m["confusion"] is None and "confusion" not in m["figures"]
    assert not (tmp_path / FIGURES["confusion"]).exists()
