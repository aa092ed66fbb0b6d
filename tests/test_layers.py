"""Layers point one way: surfaces -> library -> models -> hedging -> taxonomy (docs/architecture.md).

Walks every module's imports with ``ast`` (top-level and inside functions, since a
lazy import is still a dependency) and fails on an import that goes up a layer, or
from one surface into another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folders of the repository and the package names they install as.
FOLDERS = {"taxonomy": "hedged.taxonomy", "hedging": "hedged.hedging", "models": "hedged.models", "hedged": "hedged"}
#: Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {"taxonomy": 0, "hedging": 1, "models": 2, "library": 3, "surface": 4}
#: Surfaces: the ways in for people and programs. None may import another...
SURFACES = ("hedged.cli", "hedged.server", "hedged.batch")
#: ...except that the command line launches the others through their entry points
#: (``hedged serve`` starts the server, ``hedged batch`` the batch runner); nothing imports the command line.
LAUNCHES = {("hedged.cli.serve", "hedged.server.runner"), ("hedged.cli.serve", "hedged.server.settings"),
            ("hedged.cli.batch", "hedged.batch")}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = FOLDERS[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> tuple[str, str | None]:
    """(layer, surface) of a hedged module name."""
    for s in SURFACES:
        if module == s or module.startswith(s + "."):
            return "surface", s
    for name in ("taxonomy", "hedging", "models"):
        pkg = f"hedged.{name}"
        if module == pkg or module.startswith(pkg + "."):
            return name, None
    if module in ("hedged.__main__",):
        return "surface", "hedged.cli"
    return "library", None


def imports_of(path: Path, module: str):
    """(line, candidate module names) of every import statement, in function bodies too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, [a.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from hedged import cli" imports hedged.cli
            yield node.lineno, [target] + [f"{target}.{a.name}" for a in node.names]


def package_files():
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def violations(files=None):
    out = []
    for path in files or package_files():
        module = module_name(path)
        src_layer, src_surface = layer_of(module)
        for line, candidates in imports_of(path, module):
            for target in candidates:
                if not target.startswith("hedged.") or target == "hedged.__version__":
                    continue
                dst_layer, dst_surface = layer_of(target)
                where = f"{path.relative_to(ROOT)}:{line} imports {target}"
                if LAYERS[dst_layer] > LAYERS[src_layer]:
                    out.append(f"{where} (up: {src_layer} -> {dst_layer})")
                    break
                if (dst_surface is not None and src_surface is not None and dst_surface != src_surface
                        and not any(module == m and (target == t or target.startswith(t + ".")) for m, t in LAUNCHES)):
                    out.append(f"{where} (sideways: {src_surface} -> {dst_surface})")
                    break
    return out


def test_no_import_goes_up_a_layer_or_across_surfaces():
    assert violations() == []


@pytest.mark.parametrize("source, target, kind", [
    ("hedged/server/service.py", "from hedged.cli.predict import json_record", "sideways"),
    ("hedged/server/app.py", "from hedged.cli._common import load_classifier", "sideways"),
    ("models/export.py", "from hedged.classifier import HedgedClassifier", "up"),
    ("hedging/darts.py", "from hedged.models import bundle", "up"),
    ("taxonomy/_core.py", "import hedged.hedging", "up"),
    ("hedged/classifier.py", "from hedged.server import app", "up"),
    ("models/bundle.py", "from ..classifier import HedgedClassifier", "up"),
])
def test_the_walk_catches_each_kind_of_bad_import(tmp_path, monkeypatch, source, target, kind):
    # the three imports issue 21 removed, and others of each kind, in a function body too
    path = ROOT / source
    fake = tmp_path / source
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text("def f():\n    " + target + "\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = violations([fake])
    assert len(found) == 1 and f"({kind}:" in found[0], found
    assert path.is_file()
