"""evaluate.py: the three sources of test posteriors and every usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hedged.cli.evaluate import main, seeded_split
from hedged.report import FIGURES, write_report
from hedged.models.bundle import load_bundle
from hedged.taxonomy import Taxonomy
from test_facade_helpers import CAR, cached_bundle, synthetic_split, write_images

REPO = Path(__file__).resolve().parents[1]
TAX = Taxonomy.from_edges(
    [("root", "animal"), ("root", "car"), ("animal", "cat"), ("animal", "dog")],
    leaves=["cat", "dog", "car"],
    aliases={"cat": ["Katze"]},
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("posteriors")
    (cp, cy), (tp, ty) = synthetic_split(TAX, 300, seed=1), synthetic_split(TAX, 200, seed=2)
    np.save(d / "cal_p.npy", cp)
    np.save(d / "cal_y.npy", cy)
    np.save(d / "p.npy", tp)
    # Text labels, with an alias, one per line.
    names = np.array(["Katze", "dog", "car"])[ty]
    (d / "y.txt").write_text("\n".join(names) + "\n")
    np.save(d / "y.npy", ty)
    TAX.to_yaml(d / "t.yaml")
    return d


@pytest.fixture(scope="module")
def bundle():
    return str(cached_bundle(leaves=(CAR,)))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def metrics(folder) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text())


def test_probs_with_explicit_calibration_equals_the_library(capsys, files, tmp_path):
    code, out, err = run(capsys, "--probs", files / "p.npy", "--labels", files / "y.txt", "--taxonomy",
                         files / "t.yaml", "--cal-probs", files / "cal_p.npy", "--cal-labels", files / "cal_y.npy",
                         "--out", tmp_path / "r")
    assert code == 0, err
    assert "report.md" in out
    got = metrics(tmp_path / "r")
    ref = write_report(tmp_path / "ref", TAX, np.load(files / "cal_p.npy"), np.load(files / "cal_y.npy"),
                       np.load(files / "p.npy"), np.load(files / "y.npy"))
    assert got["curves"] == ref["curves"] and got["table"] == ref["table"]
    assert (got["n_calibration"], got["n_test"]) == (300, 200)
    assert got["provenance"]["command"].startswith("python evaluate.py --probs")
    assert all((tmp_path / "r" / f).is_file() for f in FIGURES.values())


def test_probs_with_a_seeded_split(capsys, files, tmp_path):
    common = ["--probs", files / "p.npy", "--labels", files / "y.npy", "--taxonomy", files / "t.yaml"]
    assert run(capsys, *common, "--cal-fraction", "0.4", "--seed", "3", "--out", tmp_path / "a")[0] == 0
    assert run(capsys, *common, "--cal-fraction", "0.4", "--seed", "3", "--out", tmp_path / "b")[0] == 0
    assert run(capsys, *common, "--cal-fraction", "0.4", "--seed", "4", "--out", tmp_path / "c")[0] == 0
    a, b, c = metrics(tmp_path / "a"), metrics(tmp_path / "b"), metrics(tmp_path / "c")
    assert (a["n_calibration"], a["n_test"]) == (80, 120)
    assert a["curves"] == b["curves"] and a["curves"] != c["curves"]
    cal, test = seeded_split(200, 0.4, 3)
    assert len(set(cal) | set(test)) == 200 and not set(cal) & set(test)


def test_bundle_test_split_is_the_default_source(capsys, bundle, tmp_path):
    code, _, err = run(capsys, "--model", bundle, "--out", tmp_path)
    assert code == 0, err
    m = metrics(tmp_path)
    b = load_bundle(bundle)
    assert (m["n_calibration"], m["n_test"]) == (len(b.calibration_labels), len(b.test_labels))
    assert m["provenance"]["source"] == "the bundle's stored test split"
    assert m["leaf"]["top1_accuracy"] == pytest.approx(np.mean(b.test_probs.argmax(1) == b.test_labels))


def test_labelled_image_folder(capsys, bundle, tmp_path):
    data = tmp_path / "data"
    write_images(data / "Car", n=3, seed=1)
    write_images(data / "Cat", n=2, corrupt=True, seed=2)
    write_images(data / "Not sure", n=2, seed=3)
    code, _, err = run(capsys, "--model", bundle, "--data", data, "--out", tmp_path / "r")
    assert code == 0, err
    m = metrics(tmp_path / "r")
    assert m["n_test"] == 5  # 3 cars + 2 cats; "Not sure" and the corrupt file skipped
    # The head answers "car" for every image: the 3 cars are right, the 2 cats wrong.
    assert m["leaf"]["top1_accuracy"] == pytest.approx(0.6)
    assert np.asarray(m["confusion"]["counts"])[:, CAR].sum() == 5
    notes = m["provenance"]["data notes"]
    assert "Not sure" in notes and "corrupt.jpg" in notes
    assert "warning" in err


def test_split_selection_needs_a_known_split(capsys, bundle, tmp_path):
    write_images(tmp_path / "data" / "Car", n=1)
    code, _, err = run(capsys, "--model", bundle, "--data", tmp_path / "data", "--split", "holdout", "--out",
                       tmp_path / "r")
    assert code == 2 and "no split 'holdout'" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--probs", "{d}/p.npy", "--taxonomy", "{d}/t.yaml"], "--probs needs --labels"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy"], "--probs needs --taxonomy"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/missing.yaml"], "taxonomy file not found"),
        (["--probs", "{d}/missing.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/t.yaml"], "posteriors file not found"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/t.yaml", "--cal-probs", "{d}/cal_p.npy"],
         "--cal-probs and --cal-labels go together"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/t.yaml", "--cal-fraction", "1.5"],
         "--cal-fraction must be in (0, 1)"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/cal_y.npy", "--taxonomy", "{d}/t.yaml"], "--labels has 300 rows"),
        (["--probs", "{d}/cal_p.npy", "--labels", "{d}/cal_y.npy", "--taxonomy", "{d}/t.yaml", "--cal-probs",
          "{d}/cal_p.npy", "--cal-labels", "{d}/y.npy"], "labels must have shape"),
        (["--probs", "{d}/p.npy", "--data", "{d}", "--labels", "{d}/y.npy"], "alternatives"),
        (["--labels", "{d}/y.npy"], "need --probs"),
        (["--model", "{d}/no-bundle"], "model bundle not found"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/t.yaml", "--delta", "0"], "--delta"),
        (["--probs", "{d}/p.npy", "--labels", "{d}/y.npy", "--taxonomy", "{d}/t.yaml", "--guarantee", "x"],
         "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(capsys, files, tmp_path, argv, message):
    argv = [a.format(d=files) for a in argv]
    code, out, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (tmp_path / "r" / "report.md").exists()


def test_labels_outside_the_taxonomy(capsys, files, tmp_path):
    (tmp_path / "y.txt").write_text("\n".join(["zebra"] * 200))
    code, _, err = run(capsys, "--probs", files / "p.npy", "--labels", tmp_path / "y.txt", "--taxonomy",
                       files / "t.yaml", "--out", tmp_path / "r")
    assert code == 2 and "unknown label 'zebra'" in err


def test_script_smoke(files, tmp_path):
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--probs", str(files / "p.npy"), "--labels", str(files / "y.txt"),
         "--taxonomy", str(files / "t.yaml"), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.md").is_file() and metrics(tmp_path)["n_test"] == 100


def test_csv_posteriors_with_a_header_row(capsys, files, tmp_path):
    p = np.load(files / "p.npy")
    np.savetxt(tmp_path / "plain.csv", p, delimiter=",")
    np.savetxt(tmp_path / "header.csv", p, delimiter=",", header="cat,dog,car", comments="")
    common = ["--labels", files / "y.npy", "--taxonomy", files / "t.yaml"]
    assert run(capsys, "--probs", tmp_path / "plain.csv", *common, "--out", tmp_path / "a")[0] == 0
    code, out, err = run(capsys, "--probs", tmp_path / "header.csv", *common, "--out", tmp_path / "b")
    assert code == 0, err
    assert metrics(tmp_path / "a")["table"] == metrics(tmp_path / "b")["table"]


def test_logits_get_a_softmax_hint(capsys, files, tmp_path):
    np.save(tmp_path / "logits.npy", np.log(np.load(files / "p.npy") + 1e-9))
    code, out, err = run(capsys, "--probs", tmp_path / "logits.npy", "--labels", files / "y.npy",
                         "--taxonomy", files / "t.yaml", "--out", tmp_path / "r")
    assert code == 2 and "apply a softmax" in err and err.count("\n") == 1


def test_unwritable_out_is_one_line_before_any_work(capsys, files, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "--probs", files / "p.npy", "--labels", files / "y.npy",
                         "--taxonomy", files / "t.yaml", "--out", blocker / "report")
    assert code == 2 and err.count("\n") == 1 and "not a writable folder" in err


def test_split_ids_match_class_folders_and_extensions(capsys, tmp_path):
    """Split ids "img0" (a CSV without extensions) are the photos Car/img0.jpg of a class folder:
    the overlap is seen, and --split picks them, saying how many it found (issue 20)."""
    from hedged.models.bundle import load_bundle, save_bundle
    from test_facade_helpers import make_biased_bundle

    src = load_bundle(make_biased_bundle(tmp_path / "b0", leaves=(CAR,)))
    bundle = save_bundle(
        tmp_path / "b", model=src.model, arch=src.arch, taxonomy=src.taxonomy, preprocess=src.preprocess,
        tta_angles=src.tta_angles, temperature=src.temperature, calibration_probs=src.calibration_probs,
        calibration_labels=src.calibration_labels, test_probs=src.test_probs, test_labels=src.test_labels,
        split={"train": ["img0"], "test": ["img1", "img2", "missing"]}, metrics=src.metrics,
        provenance=src.provenance,
    )
    write_images(tmp_path / "data" / "Car", n=3)
    code, _, err = run(capsys, "--model", bundle, "--data", tmp_path / "data", "--out", tmp_path / "r1")
    assert code == 0, err
    assert "data overlaps the bundle's train split (1 images)" in err
    code, _, err = run(capsys, "--model", bundle, "--data", tmp_path / "data", "--split", "test", "--out", tmp_path / "r2")
    assert code == 0, err
    assert "2 of the bundle's 3 test photos found" in err
    assert metrics(tmp_path / "r2")["n_test"] == 2
