"""predict: streaming JSON Lines, Ctrl-C, and the defects a new user hit (TTA spelling, targets,
duplicates, tiny images, pixel limits, answers that explain themselves)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hedged.cli.predict import _leaf_line, format_share, main
from test_facade_helpers import cached_bundle, write_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    return str(cached_bundle(leaves=(0, 1)))  # answers "animal" at 0.8-0.99


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    write_images(d, n=2)
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_negative_tta_angles_after_a_space(capsys, bundle, folder):
    # `--tta -15,0,15` used to be an argparse error (only --tta=-15,0,15 worked)
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", "-15,0,15",
                         "--allow-uncalibrated", "--json")
    assert code == 0, err
    assert json.loads(out)["guarantee_holds"] is False


@pytest.mark.parametrize("tta", ["0,,15", "0,15,", ","])
def test_empty_tta_items_are_rejected(capsys, bundle, folder, tta):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", tta)
    assert code == 2 and out == "" and "--tta" in err


def test_accuracy_one_warns_and_says_not_sure(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--accuracy", "1")
    assert code == 0
    assert "warning: accuracy 1 is met only by the root" in err
    assert "accuracy target 100%" in out
    assert "not sure beyond" in out and "best leaf" in out


def test_target_header_never_rounds_to_100(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--accuracy", "0.9999")
    assert "accuracy target 99.99%" in out and "100.0%" not in out


@pytest.mark.parametrize("x, text", [(0.9, "90.0%"), (0.9999, "99.99%"), (1e-9, "0.0000001%"),
                                     (0.99996, "99.996%"), (1.0, "100%"), (0.0004, "0.04%")])
def test_format_share_by_hand(x, text):
    assert format_share(x) == text


def test_guarantee_is_explained_once_in_plain_words(capsys, bundle, folder):
    code, out, err = run(capsys, folder, "--model", bundle)
    assert code == 0
    assert out.count("not a promise about any single photo") == 1


def test_leaf_at_target_is_shown_when_the_prediction_has_it():
    leaf = SimpleNamespace(display_name="Polo shirt", name="body.upper.polo")
    pred = SimpleNamespace(leaf=leaf, leaf_probability=0.45, leaf_at_target=0.87)
    assert "Polo shirt at targets up to 0.87" in _leaf_line(pred)
    assert "targets up to" not in _leaf_line(SimpleNamespace(leaf=leaf, leaf_probability=0.45))


def test_the_same_file_twice_is_answered_once_with_a_note(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", folder / "img0.jpg", folder, "--model", bundle, "--json")
    assert code == 0
    images = [json.loads(line)["image"] for line in out.splitlines()]
    assert images == [str(folder / "img0.jpg"), str(folder / "img1.png")]
    assert f"note: {folder / 'img0.jpg'} is among the inputs 3 times; answered once" in err


def test_tiny_image_gets_a_warning_in_its_record(capsys, bundle, tmp_path):
    Image.new("RGB", (1, 1), (10, 200, 10)).save(tmp_path / "dot.png")
    code, out, err = run(capsys, tmp_path / "dot.png", "--model", bundle, "--json")
    assert code == 0
    (warning,) = json.loads(out)["warnings"]
    assert "1x1" in warning


def test_max_pixels_option(capsys, bundle, tmp_path):
    Image.new("RGB", (200, 100)).save(tmp_path / "wide.png")
    code, out, err = run(capsys, tmp_path / "wide.png", "--model", bundle, "--json", "--max-pixels", "10000")
    assert code == 1 and "--max-pixels" in json.loads(out)["error"]
    code, out, err = run(capsys, tmp_path / "wide.png", "--model", bundle, "--json", "--max-pixels", "20000")
    assert code == 0, err
    assert run(capsys, tmp_path / "wide.png", "--model", bundle, "--max-pixels", "0")[0] == 2


def test_heic_files_in_directories_are_not_skipped(capsys, bundle, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (200, 30, 30))).save(tmp_path / "phone.heic")
    Image.new("RGB", (64, 48), (30, 200, 30)).save(tmp_path / "phone.avif")
    code, out, err = run(capsys, tmp_path, "--model", bundle, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(Path(r["image"]).name for r in rows) == ["phone.avif", "phone.heic"]
    assert all(r["node"] == "animal" for r in rows)


def _many_images(folder: Path, n: int) -> Path:
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "a.jpg")
    for i in range(n):  # links: thousands of inputs for the price of one file
        os.symlink(folder / "a.jpg", folder / f"b{i:05d}.jpg")
    return folder


def test_lines_stream_out_and_ctrl_c_keeps_them(bundle, tmp_path):
    folder = _many_images(tmp_path / "many", 3000)
    proc = subprocess.Popen(
        [sys.executable, "predict.py", str(folder), "--model", bundle, "--json", "--batch-size", "2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        first = proc.stdout.readline()  # arrives while the run goes on: streamed, not at the end
        assert json.loads(first)["node"] == "animal"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = [first, *rest.splitlines()]
    assert 1 <= len(lines) < 3001
    assert all(json.loads(line)["node"] == "animal" for line in lines)  # no half-written line
    assert err.strip().splitlines()[-1].startswith("interrupted:") and "Traceback" not in err
