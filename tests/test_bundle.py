import json
import shutil

import numpy as np
import pytest
import torch

from hedged.models.bundle import (
    CALIBRATION,
    MANIFEST,
    TAXONOMY,
    WEIGHTS,
    BundleError,
    load_bundle,
    make_tiny_bundle,
    save_bundle,
    sha256_file,
)
from hedged.models.inference import predict_probs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny", tta_angles=(0.0, 90.0))


@pytest.fixture
def copy(tiny, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny, dst)
    return dst


def _rewrite_manifest(path, **changes):
    m = json.loads((path / MANIFEST).read_text())
    m.update(changes)
    (path / MANIFEST).write_text(json.dumps(m))
    return m


def _rehash(path, recalibrated: bool = True):
    """Update the manifest's hashes after an edit; ``recalibrated``: also claim the
    calibration belongs to the edited weights (else load refuses before anything else)."""
    m = json.loads((path / MANIFEST).read_text())
    m["files"] = {name: sha256_file(path / name) for name in m["files"]}
    if recalibrated:
        m["calibrated_model"] = m["files"][WEIGHTS]
    (path / MANIFEST).write_text(json.dumps(m))


def test_refuses_weights_the_calibration_does_not_belong_to(copy):
    state = torch.load(copy / WEIGHTS, weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + 1.0
    torch.save(state, copy / WEIGHTS)
    _rehash(copy, recalibrated=False)
    with pytest.raises(BundleError, match="calibration belongs to model sha256"):
        load_bundle(copy)


def test_round_trip(tiny, tmp_path):
    b = load_bundle(tiny)
    assert b.taxonomy.leaves == ("animal.cat", "animal.dog", "car")
    assert b.tta_angles == (0.0, 90.0)
    assert b.temperature == 1.0
    assert b.calibration_probs.shape == (300, 3) and b.calibration_labels.dtype == np.int64
    assert b.test_probs.shape == (300, 3)
    assert b.split["test"][0] == "test0"
    assert b.provenance == {"data": "synthetic"}
    # saving the loaded bundle again reproduces the same weights (fp16 round trip is exact)
    again = save_bundle(
        tmp_path / "again",
        model=b.model,
        arch=b.arch,
        taxonomy=b.taxonomy,
        preprocess=b.preprocess,
        tta_angles=b.tta_angles,
        temperature=b.temperature,
        calibration_probs=b.calibration_probs,
        calibration_labels=b.calibration_labels,
    )
    b2 = load_bundle(again)
    for (k, v), v2 in zip(b.model.state_dict().items(), b2.model.state_dict().values()):
        assert torch.equal(v, v2), k
    assert b2.preprocess == b.preprocess and b2.test_probs is None


def test_predicts_rows_summing_to_one(tiny):
    b = load_bundle(tiny)
    imgs = [np.full((70, 90, 3), c, np.uint8) for c in (0, 128, 255)]
    p = predict_probs(b.model, imgs, b.preprocess, b.tta_angles, b.temperature)
    assert p.shape == (3, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)


def test_refuses_tampered_file(copy):
    with open(copy / CALIBRATION, "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="calibration.npz.*modified"):
        load_bundle(copy)


def test_refuses_missing_file(copy):
    (copy / WEIGHTS).unlink()
    with pytest.raises(BundleError, match="missing file 'weights.pt'"):
        load_bundle(copy)


def test_refuses_missing_dir_and_manifest(copy, tmp_path):
    with pytest.raises(BundleError, match="model bundle not found: .*nope$"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is not a directory"):
        load_bundle(tmp_path / "file")
    (copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "text, match",
    [("{not json", "malformed"), ("[1, 2]", "JSON object"), ('{"format": "hedged-bundle/1"}', "lacks required")],
)
def test_refuses_bad_manifest(copy, text, match):
    (copy / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=match):
        load_bundle(copy)


def test_refuses_wrong_format_marker(copy):
    _rewrite_manifest(copy, format="other/9")
    with pytest.raises(BundleError, match="unsupported bundle format"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"tta_angles": []}, "angles"),
        ({"temperature": 0}, "temperature"),
        ({"num_classes": 4}, "num_classes=4"),
        ({"arch": "vgg"}, "unknown architecture"),
        ({"preprocess": {"input_size": -1}}, "preprocess"),
    ],
)
def test_refuses_inconsistent_manifest(copy, changes, match):
    _rewrite_manifest(copy, **changes)
    with pytest.raises(BundleError, match=match):
        load_bundle(copy)


def test_refuses_head_size_mismatch(copy):
    state = torch.load(copy / WEIGHTS, weights_only=True)
    state["_fc.weight"] = state["_fc.weight"][:2]
    state["_fc.bias"] = state["_fc.bias"][:2]
    torch.save(state, copy / WEIGHTS)
    _rehash(copy)
    with pytest.raises(BundleError, match="2 outputs but the taxonomy has 3 leaves"):
        load_bundle(copy)


def test_refuses_calibration_columns_mismatch(copy):
    np.savez(copy / CALIBRATION, probs=np.full((4, 2), 0.5), labels=np.zeros(4, int))
    _rehash(copy)
    with pytest.raises(BundleError, match=r"calibration probs must be \(n, 3\)"):
        load_bundle(copy)


def test_refuses_taxonomy_leaf_change(copy):
    text = (copy / TAXONOMY).read_text().replace("car:", "bus:")
    (copy / TAXONOMY).write_text(text)
    _rehash(copy)
    with pytest.raises(BundleError, match="leaves differ"):
        load_bundle(copy)


def test_refuses_non_tensor_weights(copy):
    torch.save({"a": 1}, copy / WEIGHTS)
    _rehash(copy)
    with pytest.raises(BundleError, match="state dict of tensors"):
        load_bundle(copy)


def test_save_refuses_head_mismatch(tiny, tmp_path):
    b = load_bundle(tiny)
    from hedged.taxonomy import Taxonomy

    two = Taxonomy.from_edges([("r", "a"), ("r", "b")])
    with pytest.raises(BundleError, match="3 outputs but the taxonomy has 2 leaves"):
        save_bundle(
            tmp_path / "x",
            model=b.model,
            arch=b.arch,
            taxonomy=two,
            preprocess=b.preprocess,
            tta_angles=[0],
            temperature=1.0,
            calibration_probs=np.full((2, 2), 0.5),
            calibration_labels=np.zeros(2, int),
        )


def test_calibration_groups_are_added_anonymised_and_keep_the_bundle_valid(copy):
    from hedged.models.bundle import add_calibration_groups, hash_groups

    before = load_bundle(copy)
    assert before.calibration_groups is None
    senders = np.arange(300) // 7
    groups = hash_groups(senders)
    # Same sender, same id: 16 hex digits of a salted hash.
    assert len(set(groups)) == len(set(senders)) and groups[0] == groups[6] != groups[7]
    assert all(len(g) == 16 and int(g, 16) >= 0 for g in groups[:7])
    assert not np.array_equal(hash_groups(senders), groups)  # the random salt is thrown away
    assert np.array_equal(hash_groups(senders, salt="s"), hash_groups(senders, salt="s"))
    add_calibration_groups(copy, groups)
    after = load_bundle(copy)  # hashes re-verified
    np.testing.assert_array_equal(after.calibration_groups, groups)
    np.testing.assert_array_equal(after.calibration_probs, before.calibration_probs)
    np.testing.assert_array_equal(after.calibration_labels, before.calibration_labels)
    with pytest.raises(BundleError, match="must be"):
        add_calibration_groups(copy, groups[:-1])


def test_add_calibration_groups_refuses_a_tampered_bundle(copy):
    from hedged.models.bundle import add_calibration_groups

    (copy / TAXONOMY).write_text((copy / TAXONOMY).read_text() + "\n# edited\n")
    with pytest.raises(BundleError, match="modified"):
        add_calibration_groups(copy, np.array(["a"] * 300))


def test_shipped_bundle_stores_contributors_of_its_calibration_photos():
    b = load_bundle()
    assert b.calibration_groups is not None and b.calibration_groups.shape == b.calibration_labels.shape
    assert len(set(b.calibration_groups)) == 117  # split.json's calibration photos come from 117 senders
