"""hedged batch: Parquet rows equal to predict --json, resumable after a real kill, local and on Ray Data."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from hedged.batch import (
    BatchError,
    list_inputs,
    predict_batch,
    read_output,
    schema,
    shard_files,
)

REPO = Path(__file__).resolve().parents[1]
HEDGED = [sys.executable, "-m", "hedged"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """About 40 photos (clothing and not), in a nested folder, with two bad files and a non-image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "more").mkdir()
    for f in sorted((REPO / "examples").glob("*.jpg")):
        shutil.copy(f, root / f.name)
    for f in ("jeans.jpg", "sandal.jpg", "tshirt.jpg"):
        shutil.copy(REPO / "tests" / "fixtures" / f, root / "more" / f)
    for f in sorted((REPO / "tests" / "fixtures" / "not_clothing" / "eval").glob("*.jpg"))[:29]:
        shutil.copy(f, root / "more" / f.name)
    (root / "broken.jpg").write_bytes(b"this is not a photo")
    (root / "truncated.jpg").write_bytes((REPO / "examples" / "polo.jpg").read_bytes()[:3000])
    (root / "notes.txt").write_text("not an image, and not looked at")
    return root


def _predict_json(paths) -> dict[str, dict]:
    """`hedged predict --json` for the same photos, keyed by path."""
    run = subprocess.run(check=False, args=[*HEDGED, "predict", "--json", *map(str, paths)], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert run.returncode == 1, run.stderr  # the two bad files
    return {r["image"]: r for r in map(json.loads, run.stdout.splitlines())}


def _rows(out) -> dict[str, dict]:
    rows = read_output(out).to_pylist()
    keys = [r["image"] for r in rows]
    assert len(keys) == len(set(keys)), "a photo has more than one row"
    return {r["image"]: r for r in rows}


def _same(a, b, where=""):
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-6), (where, a, b)
    elif isinstance(a, list) and a and isinstance(a[0], dict):
        assert len(a) == len(b), where
        for x, y in zip(a, b):
            for k in x:
                _same(x[k], y[k], f"{where}.{k}")
    else:
        assert a == b, (where, a, b)


def _assert_rows_equal_predict(rows: dict, expected: dict):
    assert set(rows) == set(expected)
    for image, want in expected.items():
        got = rows[image]
        if "error" in want:
            assert got["error"] == want["error"] and got["kind"] is None and got["node"] is None
            assert got["sha256"] is not None  # the bytes were read; they do not decode
            continue
        assert got["error"] is None and len(got["sha256"]) == 64
        for key, value in want.items():
            _same(got[key], value, f"{image}:{key}")


@pytest.fixture(scope="module")
def expected(photos):
    paths = list_inputs(photos)
    assert len(paths) == 39 and not any(p.endswith(".txt") for p in paths)
    return _predict_json(paths)


def test_the_schema_is_the_answer_record_plus_the_batch_fields():
    from hedged.batch import BATCH_FIELDS
    from hedged.results import RECORD_FIELDS

    assert schema().names == [*RECORD_FIELDS, *BATCH_FIELDS]


def test_local_rows_equal_predict_json(photos, expected, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(check=False, args=[*HEDGED, "batch", str(photos), "--out", str(out), "--shard-size", "16"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 1, run.stderr  # two error rows
    assert "37 answered, 2 failed, 0 skipped as done (of 39)" in run.stderr
    rows = _rows(out)
    _assert_rows_equal_predict(rows, expected)
    assert [f.name.startswith("part-") for f in shard_files(out)] == [True] * 3  # 16 + 16 + 7
    assert all(pq.read_schema(f) .equals(schema()) for f in shard_files(out))
    assert "broken.jpg" in rows[str(photos / "broken.jpg")]["image"]
    assert "not an image" in rows[str(photos / "broken.jpg")]["error"]

    # a rerun over the finished output answers nothing and writes nothing
    again = subprocess.run(check=False, args=[*HEDGED, "batch", str(photos), "--out", str(out)], capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "0 answered, 0 failed, 39 skipped as done (of 39)" in again.stderr
    assert len(shard_files(out)) == 3


def test_kill_then_resume_answers_every_photo_exactly_once(photos, expected, tmp_path):
    out = tmp_path / "out"
    cmd = [*HEDGED, "batch", str(photos), "--out", str(out), "--shard-size", "2", "--batch-size", "2",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(shard_files(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to write what is waiting
    proc.wait(timeout=30)
    before = {f.name: f.read_bytes() for f in shard_files(out)}
    assert 3 <= len(before), "the run was not killed part-way"
    written = sum(pq.read_metadata(out / name).num_rows for name in before)
    assert written < 39, "the run finished before it could be killed"

    resumed = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert resumed.returncode in (0, 1), resumed.stderr
    assert "skipped as done (of 39)" in resumed.stderr and f"{written} skipped" in resumed.stderr
    for name, data in before.items():  # the rows written before the kill are unchanged
        assert (out / name).read_bytes() == data
    assert not list(out.glob(".*.tmp"))
    _assert_rows_equal_predict(_rows(out), expected)


def test_ctrl_c_writes_what_was_answered_and_exits_130(photos, tmp_path):
    out = tmp_path / "out"
    cmd = [*HEDGED, "batch", str(photos), "--out", str(out), "--shard-size", "1000", "--batch-size", "2",
           "--threads", "1", "--flush-seconds", "1000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the settings file is written before the first photo is answered; give it a few batches
    deadline = time.monotonic() + 120
    while not (out / "_batch.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    rows = read_output(out).num_rows
    assert 0 < rows < 39  # what was waiting was written as one shard, whole


def test_other_settings_are_refused(photos, tmp_path):
    out = tmp_path / "out"
    predict_batch([photos / "polo.jpg"], out)
    run = subprocess.run(check=False, args=[*HEDGED, "batch", str(photos / "polo.jpg"), "--out", str(out), "--accuracy", "0.9"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {out} holds answers made with other settings: accuracy_target 0.95 (now 0.9); use another --out"
    ]


def test_a_changed_photo_is_answered_again_and_duplicates_are_not(tmp_path):
    photo = tmp_path / "p.jpg"
    shutil.copy(REPO / "examples" / "polo.jpg", photo)
    out = tmp_path / "out"
    first = predict_batch([photo, photo, str(tmp_path / "." / "p.jpg")], out)
    assert (first.answered, first.total) == (1, 1)
    shutil.copy(REPO / "examples" / "dress.jpg", photo)  # same path, new bytes
    second = predict_batch([photo], out)
    assert (second.answered, second.skipped) == (1, 0)
    rows = read_output(out).to_pylist()
    assert len(rows) == 2 and len({r["sha256"] for r in rows}) == 2


def test_manifests_csv_and_parquet(tmp_path):
    (tmp_path / "img").mkdir()
    shutil.copy(REPO / "examples" / "polo.jpg", tmp_path / "img" / "polo.jpg")
    (tmp_path / "list.csv").write_text("path,sku\nimg/polo.jpg,1\nimg/missing.jpg,2\n")
    pq.write_table(pa.table({"file": ["img/polo.jpg"]}), tmp_path / "list.parquet")
    assert list_inputs(tmp_path / "list.csv") == [str(tmp_path / "img" / "polo.jpg"), str(tmp_path / "img" / "missing.jpg")]
    assert list_inputs(tmp_path / "list.parquet", path_column="file") == [str(tmp_path / "img" / "polo.jpg")]
    summary = predict_batch(tmp_path / "list.csv", tmp_path / "out")
    assert (summary.answered, summary.failed) == (1, 1)
    missing = [r for r in read_output(tmp_path / "out").to_pylist() if r["error"]]
    assert missing == [dict.fromkeys(schema().names) | {
        "image": str(tmp_path / "img" / "missing.jpg"), "error": "file not found", "accuracy_target": 0.95,
        "guarantee": "pac-seller", "guarantee_holds": False}]
    run = subprocess.run(check=False, args=[*HEDGED, "batch", str(tmp_path / "list.parquet"), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"error: manifest {tmp_path / 'list.parquet'} has no 'path' column (columns: file); "
                                  "name it with --path-column")


def test_fsspec_uris_give_the_same_answer(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    data = (REPO / "examples" / "hat.jpg").read_bytes()
    mem.pipe("/batch-test/photos/hat.jpg", data)
    mem.pipe("/batch-test/photos/readme.md", b"# not a photo")
    try:
        assert list_inputs("memory://batch-test/photos") == ["memory:///batch-test/photos/hat.jpg"]
        predict_batch("memory://batch-test/photos", tmp_path / "uri")
        predict_batch([REPO / "examples" / "hat.jpg"], tmp_path / "local")
        (uri_row,) = read_output(tmp_path / "uri").to_pylist()
        (local_row,) = read_output(tmp_path / "local").to_pylist()
        assert uri_row["image"] == "memory:///batch-test/photos/hat.jpg"
        assert {k: v for k, v in uri_row.items() if k != "image"} == {k: v for k, v in local_row.items() if k != "image"}
    finally:
        mem.rm("/batch-test", recursive=True)


def test_bad_arguments_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(empty), "--out", str(tmp_path / "o")], f"error: {empty}: no image files in this folder"),
        ([str(REPO / "examples"), "--out", str(REPO / "README.md")], f"error: {REPO / 'README.md'} exists and is not a folder"),
        ([str(REPO / "examples"), "--out", str(tmp_path / "o"), "--accuracy", "2"], "error: --accuracy must be in (0, 1], got '2'"),
        ([str(tmp_path / "phtos"), "--out", str(tmp_path / "o")], f"error: {tmp_path / 'phtos'}: no such file or folder"),
    ]
    for argv, line in cases:
        run = subprocess.run(check=False, args=[*HEDGED, "batch", *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert (run.returncode, run.stderr.strip()) == (2, line)
    with pytest.raises(BatchError, match="engine must be one of local, ray"):
        predict_batch(REPO / "examples", tmp_path / "o", engine="spark")


def test_missing_ray_is_one_line(monkeypatch, capsys, tmp_path):
    from hedged.cli import batch as cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main([str(REPO / "examples"), "--out", str(tmp_path / "o"), "--engine", "ray"]) == 2
    assert capsys.readouterr().err == ("error: ray[data] is not installed and --engine ray needs it: pip install "
                                       "'hedged[ray]' (from a source checkout: pip install -e '.[ray]')\n")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- a real local Ray
@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs) for every Ray test of the run."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.parametrize("actors,threads", [(2, 1), (1, 2)])
def test_ray_rows_equal_predict_json(local_ray, photos, expected, tmp_path, actors, threads):
    out = tmp_path / "out"
    summary = predict_batch(photos, out, engine="ray", actors=actors, threads=threads, batch_size=4, shard_size=10)
    assert (summary.answered, summary.failed, summary.skipped, summary.total) == (37, 2, 0, 39)
    _assert_rows_equal_predict(_rows(out), expected)
    # resuming on the other engine: the key is the same, nothing is answered twice
    again = predict_batch(photos, out, engine="local")
    assert (again.answered, again.failed, again.skipped) == (0, 0, 39)


def test_ray_resumes_a_partial_output(local_ray, photos, expected, tmp_path):
    out = tmp_path / "out"
    some = list_inputs(photos)[:15]
    predict_batch(some, out, engine="local", shard_size=5)
    before = {f.name: f.read_bytes() for f in shard_files(out)}
    summary = predict_batch(photos, out, engine="ray", actors=2, batch_size=4)
    assert (summary.skipped, summary.answered + summary.failed) == (15, 24)
    assert all((out / n).read_bytes() == b for n, b in before.items())
    _assert_rows_equal_predict(_rows(out), expected)


def test_a_loaded_classifier_answers_the_batch(tmp_path):
    from hedged import HedgedClassifier

    clf = HedgedClassifier.from_bundle()
    photos = [REPO / "examples" / "polo.jpg", REPO / "examples" / "hat.jpg"]
    summary = predict_batch(photos, tmp_path / "out", accuracy=0.9, classifier=clf)
    assert (summary.answered, summary.failed) == (2, 0)
    rows = {r["image"]: r for r in read_output(tmp_path / "out").to_pylist()}
    for pred in clf.predict(photos, 0.9):
        row = rows[pred.source]
        assert row["node"] == pred.node.name and row["accuracy_target"] == 0.9
        assert row["probability"] == pytest.approx(pred.probability, abs=1e-12)


def test_ray_run_killed_then_resumed(local_ray, photos, expected, tmp_path):
    """A `hedged batch --engine ray` process on the shared local Ray, killed part-way, then rerun."""
    out = tmp_path / "out"
    cmd = [*HEDGED, "batch", str(photos), "--out", str(out), "--engine", "ray", "--address", "auto",
           "--actors", "1", "--batch-size", "2", "--shard-size", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(shard_files(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {f.name: f.read_bytes() for f in shard_files(out)}
    written = sum(pq.read_metadata(out / name).num_rows for name in before)
    assert before and written < 39, "the run was not killed part-way"

    resumed = subprocess.run(check=False, args=cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert resumed.returncode in (0, 1), resumed.stderr  # 1 when a bad file's error row is written in the rerun
    assert f"{written} skipped as done (of 39)" in resumed.stderr
    assert all((out / n).read_bytes() == b for n, b in before.items())
    _assert_rows_equal_predict(_rows(out), expected)


def test_ray_reads_relative_paths_from_the_drivers_folder(local_ray, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(photos)
    names = ["polo.jpg", "broken.jpg", "more/jeans.jpg"]
    predict_batch(names, tmp_path / "ray", engine="ray", actors=1, batch_size=2)
    predict_batch(names, tmp_path / "local")
    ray_rows, local_rows = _rows(tmp_path / "ray"), _rows(tmp_path / "local")
    assert set(ray_rows) == set(names)
    for name in names:
        assert ray_rows[name]["error"] == local_rows[name]["error"]
        assert ray_rows[name]["node"] == local_rows[name]["node"]
    assert ray_rows["broken.jpg"]["error"] and ray_rows["polo.jpg"]["error"] is None


def test_local_worker_processes_give_the_same_rows(photos, expected, tmp_path):
    summary = predict_batch(photos, tmp_path / "out", workers=2, batch_size=4, shard_size=10)
    assert (summary.answered, summary.failed, summary.total) == (37, 2, 39)
    _assert_rows_equal_predict(_rows(tmp_path / "out"), expected)


def test_killed_worker_pool_leaves_no_process_behind(photos, tmp_path):
    out = tmp_path / "out"
    cmd = [*HEDGED, "batch", str(photos), "--out", str(out), "--workers", "2", "--batch-size", "2",
           "--shard-size", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(shard_files(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()] \
        if Path(f"/proc/{proc.pid}/task/{proc.pid}/children").exists() else []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(shard_files(out)) >= 2, "the run was not killed part-way"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]
              for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [c for c in children if Path(f"/proc/{c}").exists()
             and Path(f"/proc/{c}/stat").read_text().split()[2] != "Z"]
    assert children and not alive
    resumed = predict_batch(photos, out, workers=2)
    assert resumed.skipped >= 4 and resumed.skipped + resumed.answered + resumed.failed == 39
    assert len(_rows(out)) == 39


def test_ray_actors_load_the_bundle_the_classifier_came_from(local_ray, tmp_path):
    from hedged import HedgedClassifier

    clf = HedgedClassifier.from_bundle("clothing")  # the torch bundle, not the int8 default
    photos = [REPO / "examples" / "polo.jpg", REPO / "examples" / "dress.jpg"]
    predict_batch(photos, tmp_path / "ray", classifier=clf, engine="ray", actors=1)
    predict_batch(photos, tmp_path / "local", classifier=clf)
    ray_rows, local_rows = _rows(tmp_path / "ray"), _rows(tmp_path / "local")
    for image, row in local_rows.items():
        assert ray_rows[image]["leaf_probability"] == pytest.approx(row["leaf_probability"], abs=1e-6)


def test_missing_pyarrow_is_one_line(monkeypatch, capsys, tmp_path):
    from hedged.cli import batch as cli

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert cli.main([str(REPO / "examples"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        "error: pyarrow is not installed and batch prediction (Parquet) needs it: pip install 'hedged[batch]' "
        "(from a source checkout: pip install -e '.[batch]')\n")
