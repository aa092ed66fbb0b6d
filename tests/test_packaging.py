"""The wheel: one top-level package, the bundled model inside, the console script declared."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hedged

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src")
    # a copy of the tracked files, so that the build leaves nothing in the checkout
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("hedged-*.whl")
    return zipfile.ZipFile(path)


def test_hedged_is_the_only_top_level_package(wheel):
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = f"hedged-{hedged.__version__}.dist-info"
    # no generic `models`, `taxonomy` or `hedging` beside it: they would shadow a user's own
    assert top == {"hedged", dist_info}


def test_subpackages_and_bundle_files_are_inside(wheel):
    names = set(wheel.namelist())
    for module in ("taxonomy/__init__.py", "hedging/darts.py", "models/bundle.py", "cli/__init__.py", "__main__.py"):
        assert f"hedged/{module}" in names
    tracked = subprocess.run(["git", "ls-files", "models/bundles"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "the repository tracks a bundled model"
    for name in tracked:
        assert f"hedged/{name}" in names


def test_console_script_and_version(wheel):
    dist_info = f"hedged-{hedged.__version__}.dist-info"
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "hedged = hedged.cli:main" in entry_points
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert f"Version: {hedged.__version__}" in metadata
