import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hedged.models.data import SPLITS, DatasetError, load_dataset, split_by_group


def _img(path, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=4, max_size=60),
    st.integers(0, 2**16),
)
def test_groups_never_straddle_splits(sizes, seed):
    groups = np.repeat(np.arange(len(sizes)), sizes)
    groups = np.random.default_rng(seed).permutation(groups)
    split = split_by_group(groups.astype(str), seed=seed)
    assert set(split) == set(SPLITS)
    all_idx = np.concatenate(list(split.values()))
    assert sorted(all_idx) == list(range(len(groups)))  # a partition of the samples
    owners = {}
    for name, idx in split.items():
        assert len(idx) > 0, name
        for g in set(groups[idx]):
            assert owners.setdefault(g, name) == name, f"group {g} in {owners[g]} and {name}"


# the image shares before the split was designed for the contributor-level guarantee
OLD = (0.6, 0.1, 0.15, 0.15)


def test_split_is_seeded_and_balanced_by_images():
    groups = np.repeat(np.arange(200), 5).astype(str)
    a = split_by_group(groups, OLD, seed=3)
    b = split_by_group(groups, OLD, seed=3)
    c = split_by_group(groups, OLD, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in SPLITS)
    assert not all(np.array_equal(a[k], c[k]) for k in SPLITS)
    assert [len(a[k]) for k in SPLITS] == [600, 100, 150, 150]


def test_heldout_max_size_keeps_prolific_groups_in_train_and_samples_the_others():
    # 5 prolific contributors (60 photos) and 200 small ones (1-5 photos)
    rng = np.random.default_rng(0)
    sizes = np.r_[np.full(5, 60), rng.integers(1, 6, 200)]
    groups = np.repeat(np.arange(sizes.size), sizes).astype(str)
    labels = np.repeat(rng.integers(0, 3, sizes.size), sizes)
    a = split_by_group(groups, seed=0, labels=labels, heldout_max_size=50)
    b = split_by_group(groups, seed=1, labels=labels, heldout_max_size=50)
    big = set(np.flatnonzero(np.isin(groups, [str(i) for i in range(5)])))
    for split in (a, b):
        assert big <= set(split["train"])
        held = np.concatenate([split[k] for k in ("validation", "calibration", "test")])
        assert not big & set(held)
        # every class in every held-out split
        assert all(set(labels[split[k]]) == {0, 1, 2} for k in ("validation", "calibration", "test"))
        # calibration holds many contributors: its share of the small ones is about its image share
        small_groups = set(groups[held]) | set(groups[split["train"]]) - {str(i) for i in range(5)}
        assert len(set(groups[split["calibration"]])) > 0.2 * len(small_groups)
    # the held-out contributors are a seeded random sample: another seed, other contributors
    assert set(groups[a["calibration"]]) != set(groups[b["calibration"]])
    with pytest.raises(DatasetError, match="heldout_max_size"):
        split_by_group(groups, heldout_max_size=0)
    with pytest.raises(DatasetError, match="at most 1 samples"):
        split_by_group(np.repeat(np.arange(10), 2).astype(str), heldout_max_size=1)


def test_largest_groups_go_to_train():
    groups = np.array(["big"] * 50 + [f"g{i}" for i in range(50)])
    split = split_by_group(groups, seed=0)
    assert set(range(50)) <= set(split["train"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.1, 0.15, 0.2), (1.0, 0.0, 0.0, 0.0)])
def test_bad_fractions(fractions):
    with pytest.raises(DatasetError, match="fractions"):
        split_by_group(np.arange(10).astype(str), fractions)


def test_too_few_groups():
    with pytest.raises(DatasetError, match="at least 4 groups"):
        split_by_group(np.array(["a", "a", "b"]))


def test_csv_resolves_images_dir_and_jpg_suffix(tmp_path):
    _img(tmp_path / "images" / "x1.jpg")
    _img(tmp_path / "sub" / "x2.png")
    with open(tmp_path / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "sender_id", "label"])
        w.writerow(["x1", "7", "Cat"])
        w.writerow(["sub/x2.png", "8", "Dog"])
    d = load_dataset(tmp_path)
    assert d.group_column == "sender_id"
    assert list(d.groups) == ["7", "8"] and list(d.labels) == ["Cat", "Dog"]
    assert d.paths[0].endswith("images/x1.jpg") and d.paths[1].endswith("sub/x2.png")
    assert len(d.sha256) == 64


def test_csv_errors(tmp_path):
    _img(tmp_path / "a.jpg")
    (tmp_path / "d.csv").write_text("image,label\na.jpg,Cat\nmissing.jpg,Dog\n")
    with pytest.raises(DatasetError, match="1 image.*not found.*missing.jpg"):
        load_dataset(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("img,label\na.jpg,Cat\n")
    with pytest.raises(DatasetError, match="no image column 'image'"):
        load_dataset(tmp_path / "d.csv")
    (tmp_path / "d.csv").write_text("image,label\na.jpg,Cat\n")
    with pytest.raises(DatasetError, match="no group column 'who'"):
        load_dataset(tmp_path / "d.csv", group_column="who")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")


def test_image_folder(tmp_path):
    _img(tmp_path / "Cat" / "1.jpg")
    _img(tmp_path / "Cat" / "2.png")
    _img(tmp_path / "Dog" / "deep" / "3.jpg")
    (tmp_path / "Dog" / "notes.txt").write_text("x")
    d = load_dataset(tmp_path)
    assert list(d.labels) == ["Cat", "Cat", "Dog"]
    assert len(set(d.groups)) == 3  # one group per image
    assert list(d.ids) == ["Cat/1.jpg", "Cat/2.png", "Dog/deep/3.jpg"]


def test_stratified_split_keeps_every_class_in_proportion():
    # 40 groups of 5 photos, half all class 0 and half all class 1, listed so that
    # image shares alone would fill train with class 0 first
    groups = np.repeat(np.arange(40), 5).astype(str)
    labels = np.repeat((np.arange(40) >= 20).astype(int), 5)
    split = split_by_group(groups, OLD, seed=0, labels=labels)
    per_class = {k: np.bincount(labels[v], minlength=2).tolist() for k, v in split.items()}
    # targets 0.6/0.1/0.15/0.15 of each class's 100 photos, reachable exactly with whole groups
    assert per_class == {"train": [60, 60], "validation": [10, 10], "calibration": [15, 15], "test": [15, 15]}


def test_stratified_split_spreads_a_rare_class():
    # one common class in big groups, a rare class in 4 one-photo groups
    groups = np.array([f"big{i // 20}" for i in range(200)] + ["r0", "r1", "r2", "r3"])
    labels = np.array([0] * 200 + [1] * 4)
    split = split_by_group(groups, OLD, seed=1, labels=labels)
    rare = {k: int((labels[v] == 1).sum()) for k, v in split.items()}
    # split by image shares alone, all four land in one split (test, with this seed)
    assert sum(rare.values()) == 4 and max(rare.values()) <= 2 and rare["train"] >= 1, rare


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 4)), min_size=4, max_size=50), st.integers(0, 2**16))
def test_stratified_split_is_a_group_partition(spec, seed):
    sizes = [n for n, _ in spec]
    groups = np.repeat(np.arange(len(spec)), sizes).astype(str)
    labels = np.repeat([c for _, c in spec], sizes)
    split = split_by_group(groups, seed=seed, labels=labels)
    assert sorted(np.concatenate(list(split.values()))) == list(range(len(groups)))
    owner = {}
    for name, idx in split.items():
        assert len(idx) > 0, name
        for g in set(groups[idx]):
            assert owner.setdefault(g, name) == name


def test_stratify_labels_must_match_samples():
    with pytest.raises(DatasetError, match="one entry per sample"):
        split_by_group(np.arange(10).astype(str), labels=np.zeros(9, dtype=int))
    with pytest.raises(DatasetError, match=">= 0"):
        split_by_group(np.arange(10).astype(str), labels=-np.ones(10, dtype=int))
