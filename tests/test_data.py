import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from models.data import SPLITS, DatasetError, load_dataset, split_by_group


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


def test_split_is_seeded_and_balanced_by_images():
    groups = np.repeat(np.arange(200), 5).astype(str)
    a = split_by_group(groups, seed=3)
    b = split_by_group(groups, seed=3)
    c = split_by_group(groups, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in SPLITS)
    assert not all(np.array_equal(a[k], c[k]) for k in SPLITS)
    assert [len(a[k]) for k in SPLITS] == [600, 100, 150, 150]


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
