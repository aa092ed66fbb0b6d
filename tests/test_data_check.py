"""hedged data check: broken files, exact and near duplicates, conflicts, leakage (issue 23)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the duplicate check's verification needs opencv (the [data] extra)")

from hedged.cli.data import main as data_main  # noqa: E402
from hedged.data_check import check_data, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def planted_copy(src: Path, rng) -> bytes:
    """The issue's near duplicate: resized 50-150%, up to 5% cropped per side, brightness, JPEG 40-95."""
    from PIL import Image, ImageEnhance, ImageOps

    im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = im.size
    s = rng.uniform(0.5, 1.5)
    im = im.resize((max(8, int(w * s)), max(8, int(h * s))))
    w, h = im.size
    c = rng.uniform(0, 0.05, 4)
    im = im.crop((int(c[0] * w), int(c[1] * h), w - int(c[2] * w), h - int(c[3] * h)))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(40, 96)))
    return buf.getvalue()


def write_csv(folder: Path, rows):
    with open(folder / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "sender_id", "label"])
        w.writerows(rows)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Garment photos and synthetic images, five planted copies, one copy with another label,
    one exact copy across contributors, a truncated and a tiny file."""
    root = tmp_path_factory.mktemp("data")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    originals = sorted((REPO / "examples").glob("*.jpg"))
    fixtures = REPO / "tests" / "fixtures" / "not_clothing" / "eval"
    originals += sorted(fixtures.glob("text-*.jpg")) + sorted(fixtures.glob("shapes-*.jpg"))
    rows = []
    for k, src in enumerate(originals):
        shutil.copyfile(src, images / f"o{k}.jpg")
        rows.append([f"o{k}", f"s{k % 7}", "Garment" if k < 5 else "Other"])
    for k in range(5):  # planted near copies of the garments, same label, other contributors
        (images / f"p{k}.jpg").write_bytes(planted_copy(originals[k], rng))
        rows.append([f"p{k}", f"t{k}", "Garment"])
    (images / "conflict.jpg").write_bytes(planted_copy(originals[6], rng))
    rows.append(["conflict", "t9", "Garment"])  # a copy of an 'Other' photo labelled otherwise
    shutil.copyfile(originals[7], images / "exact.jpg")
    rows.append(["exact", "t8", "Other"])
    (images / "broken.jpg").write_bytes((REPO / "examples" / "polo.jpg").read_bytes()[:400])
    rows.append(["broken", "s1", "Garment"])
    from PIL import Image

    Image.new("RGB", (12, 20), (200, 10, 10)).save(images / "tiny.png")
    rows.append(["tiny.png", "s2", "Other"])
    write_csv(root, rows)
    return root, len(originals)


def test_finds_every_planted_copy_and_nothing_else(dataset):
    root, n = dataset
    split = {"train": [f"o{k}" for k in range(5)], "test": [f"p{k}" for k in range(3)],
             "validation": ["p3", "p4"], "calibration": []}
    report = check_data(root, split=split)
    groups = {frozenset(g["images"]) for g in report["duplicate_groups"]}
    expected = {frozenset({f"o{k}", f"p{k}"}) for k in range(5)} | {frozenset({"o6", "conflict"}),
                                                                    frozenset({"o7", "exact"})}
    assert groups == expected
    s = report["summary"]
    assert s["label_conflicts"] == 1 and s["within_one_label"] == 6 and s["across_contributors"] == 7
    assert s["train_leaks"] == 5  # each garment copy sits in another split than its original
    assert report["pairs"]["exact"] == 1
    assert [e["image"] for e in report["unreadable"]] == ["broken"]
    assert report["tiny"] == ["tiny.png"]
    assert report["class_by_split"]["train"] == {"Garment": 5}


def test_report_files(dataset, tmp_path):
    root, _ = dataset
    sheets = write_report(check_data(root), tmp_path)
    assert set(sheets) == {"duplicates", "conflicts"}
    md = (tmp_path / "report.md").read_text()
    assert "**1 with conflicting labels**" in md and "![conflicts](conflicts.png)" in md
    assert json.loads((tmp_path / "report.json").read_text())["n_images"] > 20


def test_cli_summary_and_one_line_errors(dataset, tmp_path, capsys):
    root, _ = dataset
    assert data_main(["check", "--data", str(root), "--out", str(tmp_path / "r"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["summary"]["label_conflicts"] == 1 and summary["unreadable"] == 1
    assert (tmp_path / "r" / "report.md").is_file()
    for argv, message in [
        (["check", "--data", str(tmp_path / "nope")], "data not found"),
        (["check"], "the following arguments are required: --data"),
        (["frobnicate"], "invalid choice"),
    ]:
        code = data_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and message in err[-1], err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images.csv").write_text("file,what\na,b\n")
    code = data_main(["check", "--data", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot read data") and "\n" not in err


@pytest.mark.data
@pytest.mark.slow
def test_planted_copies_among_shared_photos(shared_data, tmp_path):
    """60 near copies planted among 500 shared photos: >= 95% found, no reported pair among the
    unmodified photos that is not a copy (the issue's goal; the eye check is docs/data.md's sheet)."""
    src = shared_data / "clothing"
    rows = [r for r in csv.DictReader(open(src / "images.csv"))]
    rng = np.random.default_rng(3)
    pick = rng.choice(len(rows), 500, replace=False)
    images = tmp_path / "images"
    images.mkdir()
    out = []
    for k, i in enumerate(pick):
        shutil.copyfile(src / "images" / f"{rows[i]['image']}.jpg", images / f"o{k}.jpg")
        out.append([f"o{k}", rows[i]["sender_id"], rows[i]["label"]])
    for k in range(60):
        (images / f"p{k}.jpg").write_bytes(planted_copy(images / f"o{k}.jpg", rng))
        out.append([f"p{k}", f"planted{k}", out[k][2]])
    write_csv(tmp_path, out)
    report = check_data(tmp_path)
    found = sum(any({f"o{k}", f"p{k}"} <= set(g["images"]) for g in report["duplicate_groups"]) for k in range(60))
    assert found >= 57
    others = [g for g in report["duplicate_groups"] if not any(i.startswith("p") for i in g["images"])]
    assert len(others) <= 1  # a real re-shoot among 500 photos is possible, more would be false pairs
