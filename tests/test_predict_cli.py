"""predict.py: text and JSON Lines output, batches with bad files, every usage error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hedged.cli.predict import main
from test_facade_helpers import cached_bundle, write_images

REPO = Path(__file__).resolve().parents[1]

# key -> type of every successful JSON line (the documented schema)
SCHEMA = {
    "image": str,
    "kind": str,  # answer, not_sure or outside
    "headline": str,  # the answer in words, the same on every surface
    "in_taxonomy": (bool, type(None)),  # None: the bundle has no out-of-taxonomy detector
    "taxonomy_score": (float, type(None)),
    "node": str,
    "display_name": str,
    "path": list,
    "depth": int,
    "probability": float,
    "info_gain": float,
    "leaves": list,
    "labels": list,
    "leaf_guess": str,
    "leaf_guess_display_name": str,
    "warnings": list,
    "leaf_probability": float,
    "accuracy_target": float,
    "guarantee": str,
    "guarantee_holds": bool,
    "leaf_at_target": (float, type(None)),
}


@pytest.fixture(scope="module")
def bundle():
    return str(cached_bundle(leaves=(0, 1)))  # answers "animal" at 0.8-0.99


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    write_images(d, n=2, corrupt=True)
    write_images(d / "nested", n=1, seed=1)
    (d / "notes.txt").write_text("not an image, skipped in directories")
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_single_image_readable_output(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--accuracy", "0.9")
    assert code == 0, err
    assert "Animal" in out and "animal" in out  # display name and dotted name
    assert "things > Animal" in out  # path from the root
    assert "leaf guess" in out and "Cat" in out
    assert "90.0%" in out and "pac" in out
    assert "info gain 0.37" in out


def test_json_schema_and_values(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", folder / "img1.png", "--model", bundle, "--json",
                         "--accuracy", "0.9", "--guarantee", "expected", "--batch-size", "1")
    assert code == 0, err
    rows = json_lines(out)
    assert len(rows) == 2
    for row in rows:
        assert set(row) == set(SCHEMA)
        for key, typ in SCHEMA.items():
            assert isinstance(row[key], typ), (key, row[key])
        assert row["node"] == "animal" and row["display_name"] == "Animal"
        assert row["path"] == ["things", "animal"] and row["depth"] == 1
        assert row["leaves"] == ["animal.cat", "animal.dog"] and row["labels"] == ["Cat", "Dog"]
        assert row["leaf_guess"] == "animal.cat"
        assert row["probability"] > 0.999 and 0.49 < row["leaf_probability"] < 0.5
        assert row["leaf_at_target"] is None or row["leaf_at_target"] < 0.9  # the answer is no leaf
        assert (row["accuracy_target"], row["guarantee"], row["guarantee_holds"]) == (0.9, "expected", True)
    assert rows[0]["image"].endswith("img0.jpg") and rows[1]["image"].endswith("img1.png")


def test_directory_with_a_corrupt_file(capsys, bundle, folder):
    code, out, err = run(capsys, folder, "--model", bundle, "--json")
    assert code == 1
    rows = json_lines(out)
    images = sorted(Path(r["image"]).name for r in rows)
    assert images == ["corrupt.jpg", "img0.jpg", "img0.jpg", "img1.png"]  # recursive, .txt skipped
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and set(bad[0]) == {"image", "error"} and bad[0]["image"].endswith("corrupt.jpg")
    assert all(r["node"] == "animal" for r in rows if "error" not in r)
    assert "1 of 4" in err and "Traceback" not in err


def test_missing_file_and_empty_glob_are_error_objects(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", folder / "missing.jpg", folder / "*.gif",
                         "--model", bundle, "--json")
    assert code == 1
    rows = json_lines(out)
    assert [("error" in r) for r in rows] == [False, True, True]
    assert "not found" in rows[1]["error"] and "match" in rows[2]["error"]


def test_glob_expands(capsys, bundle, folder):
    code, out, _ = run(capsys, str(folder / "**" / "img*.jpg"), "--model", bundle, "--json")
    assert code == 0
    images = sorted(r["image"] for r in json_lines(out))
    assert images == [str(folder / "img0.jpg"), str(folder / "nested" / "img0.jpg")]


def test_text_mode_reports_errors_on_stderr(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "corrupt.jpg", folder / "img0.jpg", "--model", bundle)
    assert code == 1
    # stdout holds the answers only; the bad file is one error line on stderr
    assert "Animal" in out and "corrupt.jpg" not in out and "error" not in out
    assert f"error: {folder / 'corrupt.jpg'}: " in err


@pytest.mark.parametrize("accuracy", ["0", "1.5", "nan", "abc", "-0.2", "inf"])
def test_bad_accuracy(capsys, bundle, folder, accuracy):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, f"--accuracy={accuracy}")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--accuracy" in lines[0]


def test_accuracy_one_is_allowed(capsys, bundle, folder):
    code, out, _ = run(capsys, folder / "img0.jpg", "--model", bundle, "--accuracy", "1", "--json")
    assert code == 0 and json_lines(out)[0]["node"] == "things"  # only the root is certain


def test_missing_model_dir(capsys, folder, tmp_path):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", tmp_path / "nope")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: model bundle not found: {tmp_path / 'nope'}"]


def test_not_a_bundle(capsys, folder, tmp_path):
    code, _, err = run(capsys, folder / "img0.jpg", "--model", tmp_path)
    assert code == 2 and err.startswith("error: cannot load model bundle") and len(err.strip().splitlines()) == 1


def test_uncalibrated_tta_is_refused_then_allowed(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", "0,90,180,270")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--allow-uncalibrated" in err and "0,90,180,270" in err
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", "0,90", "--no-guarantee", "--json")
    assert code == 0
    assert json_lines(out)[0]["guarantee_holds"] is False
    assert "guarantee does not hold" in err
    code, out, _ = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", "0,90", "--allow-uncalibrated")
    assert code == 0 and "NOT hold" in out


def test_tta_off_matches_a_bundle_without_tta(capsys, bundle, folder):
    code, out, _ = run(capsys, folder / "img0.jpg", "--model", bundle, "--tta", "off", "--json")
    assert code == 0 and json_lines(out)[0]["guarantee_holds"] is True


@pytest.mark.parametrize("argv", [["--tta", "ninety"], ["--batch-size", "0"], ["--guarantee", "always"]])
def test_other_usage_errors(capsys, bundle, folder, argv):
    code, out, err = run(capsys, folder / "img0.jpg", "--model", bundle, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")


def test_help_documents_exit_status(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "exit status" in out and "--json" in out and "--allow-uncalibrated" in out


def test_script_smoke(bundle, folder):
    proc = subprocess.run(
        [sys.executable, "predict.py", str(folder / "img0.jpg"), str(folder / "corrupt.jpg"), "--model", bundle,
         "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    rows = json_lines(proc.stdout)
    assert rows[0]["node"] == "animal" and "error" in rows[1]
    assert "Traceback" not in proc.stderr


def test_uncertifiable_target_is_one_warning_line(capsys, bundle, folder):
    code, out, err = run(capsys, folder / "img0.jpg", folder / "img1.png", "--model", bundle, "--accuracy", "0.999",
                         "--json")
    assert code == 0
    assert [r["node"] for r in json_lines(out)] == ["things", "things"]  # 300 samples cannot certify 0.999
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "0.999" in lines[0]


def test_closed_output_pipe_stops_quietly(bundle, folder):
    """`predict.py --json ... | head` must not end in a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "predict.py", str(folder / "img0.jpg"), str(folder / "img1.png"), "--model", bundle, "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before the first answer is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    # 128 + SIGPIPE, as a shell reports for `yes | head -1`: no input failed (1 would say one did)
    assert err == "" and proc.returncode == 141


# ---------------------------------------------------------------- issue 20 defects


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs mkfifo")
def test_a_fifo_among_the_inputs_is_reported_and_the_others_answered(capsys, bundle, folder, tmp_path):
    import os

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    code, out, err = run(capsys, folder / "img0.jpg", fifo, "--model", bundle, "--json")
    recs = json_lines(out)
    assert code == 1
    assert recs[0]["node"] and recs[1] == {"image": str(fifo), "error": f"not a regular file: '{fifo}'"}


@pytest.mark.slow
def test_huge_images_are_answered_without_losing_the_batch(capsys, bundle, folder, tmp_path):
    from PIL import Image

    big_png = tmp_path / "big64mp.png"
    Image.new("RGB", (8000, 8000), (120, 80, 60)).save(big_png)  # 64 MP, a few hundred kB
    phone = tmp_path / "phone64mp.jpg"
    Image.new("RGB", (9248, 6936), (90, 90, 200)).save(phone, quality=80)  # a 64 MP phone JPEG
    # the PNG is over the default 50 MP: refused with one line naming the limit, the others answered
    code, out, err = run(capsys, big_png, phone, folder / "img0.jpg", "--model", bundle, "--json")
    recs = json_lines(out)
    assert code == 1
    assert "more than the limit of 50,000,000" in recs[0]["error"] and "DecompressionBomb" not in recs[0]["error"]
    # the JPEG is decoded at 1/8 scale: within the limit, answered by default
    assert recs[1]["node"] and recs[2]["node"]
    # a raised limit answers the PNG too, and the rest of the batch
    code, out, err = run(capsys, big_png, folder / "img0.jpg", "--model", bundle, "--json", "--max-pixels", "100000000")
    assert code == 0, err
    assert [bool(r.get("node")) for r in json_lines(out)] == [True, True]


def test_probabilities_never_exceed_one(capsys, bundle, folder):
    code, out, _ = run(capsys, folder / "img0.jpg", "--model", bundle, "--json", "--accuracy", "1")
    [rec] = json_lines(out)
    assert rec["depth"] == 0 and rec["probability"] == 1.0
