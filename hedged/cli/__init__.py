"""The ``hedged`` command: one entry point, one subcommand per module.

Each subcommand is a module ``hedged.cli.<name>`` exposing ``main(argv=None) -> int``
with its own argparse parser (``prog="hedged <name>"``). The table below names the
module and a one-line help; the module is imported only when its subcommand runs,
so ``hedged --help`` and ``hedged --version`` import neither torch nor numpy.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Add a row per subcommand; keep the help short.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("hedged.cli.predict", "hedged answers for image files, directories and globs"),
    "evaluate": ("hedged.cli.evaluate", "evaluation report (report.md, metrics.json, figures)"),
    "train": ("hedged.cli.train", "fine-tune a backbone on labelled photos and write a model bundle"),
    "export": ("hedged.cli.export", "export a bundle to ONNX (fp32 or int8) for torch-free and phone inference"),
    "serve": ("hedged.cli.serve", "HTTP API and web page: drop photos, slide the accuracy target"),
    "label-text": ("hedged.cli.label_text", "the taxonomy node a listing title names (the taxonomy's keywords)"),
    "batch": ("hedged.cli.batch", "answer many photos into a resumable Parquet dataset (locally or on Ray Data)"),
    "data": ("hedged.cli.data", "check a photo data set: broken files, duplicates, leakage, label conflicts"),
}

EXAMPLES = """\
examples:
  hedged predict examples/polo.jpg                 text answer for one photo
  hedged predict --json photos/ > answers.jsonl    JSON Lines, one object per photo
  hedged batch photos/ --out answers/             Parquet rows, resumable; --engine ray
  hedged evaluate --out report/                    report on the bundle's test split
  hedged train --data ../shared/data/clothing --out bundles/mine
  hedged serve --port 8000                         API + page at http://127.0.0.1:8000/

Run `hedged <command> --help` for the options of a command.
`python -m hedged ...` does the same as `hedged ...`."""


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return (
        "usage: hedged [--version] [--help] <command> [options]\n\n"
        "Hierarchical image classification with hedged answers and an accuracy guarantee.\n\n"
        f"commands:\n{rows}\n\n{EXAMPLES}\n"
    )


def main(argv=None) -> int:
    """Dispatch ``hedged <command> ...`` to ``hedged.cli.<command>.main``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        sys.stderr.write(_usage())
        return 2
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    if name in ("-V", "--version"):
        from hedged import __version__

        print(f"hedged {__version__}")
        return 0
    if name not in SUBCOMMANDS:
        known = ", ".join(SUBCOMMANDS)
        print(f"error: unknown command {name!r} (choose from {known}; see hedged --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest)
