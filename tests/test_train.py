"""train.py end to end on a tiny synthetic data set (64 px, 1 epoch: seconds)."""

import json

import numpy as np
import pytest

from _colours import make_colour_dataset
from hedged.cli.train import main
from hedged.models.bundle import load_bundle
from hedged.models.inference import predict_probs


pytestmark = pytest.mark.filterwarnings("ignore:.*calibration samples cannot certify")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_colour_dataset(tmp_path_factory.mktemp("data"), not_sure=True)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    argv = [
        "--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"), "--out", str(out),
        "--image-size", "64", "--epochs", "1", "--aug-views", "2", "--tta", "0,90",
        "--workers", "0", "--threads", "1", "--quiet", "--batch-size", "16",
    ]
    assert main(argv) == 0
    return out


def test_bundle_loads_with_recipe(trained):
    b = load_bundle(trained)
    assert b.taxonomy.leaves == ("warm.red", "warm.yellow", "blue")
    assert b.tta_angles == (0.0, 90.0)
    assert b.preprocess.input_size == 64
    assert b.temperature > 0
    assert b.calibration_probs.shape[1] == 3
    np.testing.assert_allclose(b.calibration_probs.sum(1), 1.0, atol=1e-5)
    assert len(b.calibration_labels) == len(b.split["calibration"])
    assert len(b.test_labels) == len(b.split["test"])


def test_provenance_counts_dropped_labels_and_split(trained):
    b = load_bundle(trained)
    prov = b.provenance
    assert prov["dropped_labels"] == {"Not sure": 10}
    assert prov["n_used"] == 60
    assert sum(prov["split_counts"].values()) == 60
    assert len(prov["sha256"]) == 64
    ids = [i for s in b.split.values() for i in s]
    assert len(ids) == len(set(ids)) == 60
    # groups (s0..s9, the prefix of each id) never straddle two splits
    owner = {}
    for name, members in b.split.items():
        for i in members:
            assert owner.setdefault(i.split("_")[0], name) == name
    assert "versions" in prov and "torch" in prov["versions"]
    manifest = json.loads((trained / "bundle.json").read_text())
    assert manifest["metrics"]["test"]["tta"]["angles"] == [0.0, 90.0]


def test_stored_posteriors_are_what_prediction_computes(trained, dataset):
    """The bundle's test posteriors equal predict_probs on the saved (fp16) model: same path, same numbers."""
    b = load_bundle(trained)
    ids = b.split["test"][:4]
    paths = [dataset / "images" / f"{i}.jpg" for i in ids]
    p = predict_probs(b.model, paths, b.preprocess, b.tta_angles, b.temperature)
    np.testing.assert_allclose(p, b.test_probs[:4], atol=1e-4)


def test_bad_arguments_exit_2(dataset, tmp_path, capsys):
    # the same contract as every subcommand: main returns the status, one error line
    assert main(["--out", str(tmp_path / "x"), "--split", "0.5,0.5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    rc = main(["--data", str(tmp_path / "nowhere"), "--taxonomy", str(dataset / "tax.yaml"), "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2
    assert "data path not found" in capsys.readouterr().err


def test_sample_weights_by_hand():
    from hedged.models.training import sample_weights

    y = np.array([0, 0, 0, 0, 1])
    # class_power 0.5: class 0 (4 samples) 1/2 each, class 1 (1 sample) 1; mean 0.6
    np.testing.assert_allclose(sample_weights(y, 2, 0.5), np.array([0.5, 0.5, 0.5, 0.5, 1.0]) / 0.6)
    # class_power 1: both classes weigh the same in total
    w = sample_weights(y, 2, 1.0)
    assert w[:4].sum() == pytest.approx(w[4])
    # a group of 4 photos against a group of 1, group_power 1: each group weighs the same in total
    groups = np.array(["big"] * 4 + ["small"])
    np.testing.assert_allclose(sample_weights(y, 2, 0.0, groups, 1.0), np.array([0.25, 0.25, 0.25, 0.25, 1.0]) / 0.4)
    # group_power 0 ignores the groups
    np.testing.assert_allclose(sample_weights(y, 2, 0.0, groups, 0.0), np.ones(5))
    assert sample_weights(y, 2, 0.5, groups, 0.5).mean() == pytest.approx(1.0)


def test_split_options_reach_the_config():
    from hedged.cli.train import build_parser

    args = build_parser().parse_args(["--out", "x"])
    assert args.stratify is True and args.contributor_power == 0.5 and args.device == "cpu"
    args = build_parser().parse_args(["--out", "x", "--no-stratify", "--contributor-power", "0", "--device", "cpu"])
    assert args.stratify is False and args.contributor_power == 0.0 and args.device == "cpu"


def test_bad_device_is_a_usage_error(capsys):
    import torch

    from hedged.cli.train import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--out", "x", "--device", "nope"])
    assert e.value.code == 2 and "not a torch device: 'nope'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["--out", "x", "--device", "cuda"])
        assert e.value.code == 2 and "no CUDA device" in capsys.readouterr().err


def test_training_config_recorded(trained):
    cfg = load_bundle(trained).provenance["config"]
    assert cfg["stratify"] is True and cfg["contributor_power"] == 0.5 and cfg["device"] == "cpu"


def test_unwritable_or_occupied_out_is_refused_before_training(dataset, tmp_path, capsys):
    common = ["--data", str(dataset), "--taxonomy", str(dataset / "tax.yaml"), "--quiet"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([*common, "--out", str(blocker / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a writable folder" in err
    occupied = tmp_path / "bundle"
    occupied.mkdir()
    (occupied / "manifest.json").write_text("{}")
    assert main([*common, "--out", str(occupied)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and (occupied / "manifest.json").read_text() == "{}"


def test_tiny_image_size_is_rejected(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--image-size", "7"]) == 2
    assert "at least 32 px" in capsys.readouterr().err


def test_degenerate_split_warnings_by_hand():
    from hedged.models.training import MIN_VALIDATION, degenerate_run_warnings, temperature_warning

    leaves = ["a", "b", "c"]
    assert degenerate_run_warnings(leaves, [0, 1, 2, 2], MIN_VALIDATION) == []
    (msg,) = degenerate_run_warnings(leaves, [0, 0], MIN_VALIDATION)
    assert msg.startswith("2 of 3 leaves have no training photos (b, c)")
    (msg,) = degenerate_run_warnings(leaves, [0, 1, 2], 6)
    assert "only 6 photos" in msg
    assert temperature_warning(0.05) is not None and temperature_warning(20.0) is not None
    assert temperature_warning(1.3) is None
