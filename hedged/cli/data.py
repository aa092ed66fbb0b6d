"""``hedged data check``: a data set's broken files, duplicates, leakage and label conflicts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hedged.cli._common import EXIT_OK, Parser, UsageError, check_output_dir, run_cli

DESCRIPTION = """\
Check a labelled photo data set before training. Every file is decoded once
(reduced size): unreadable, truncated and tiny files, modes, EXIF rotations;
exact duplicates (same bytes) and near duplicates (perceptual hashes, confirmed
by local features), within a label, across labels (conflicts), across
contributors and, with --bundle, across that bundle's splits (leakage); class x
split counts and photos per contributor.
"""

EPILOG = """\
examples:
  hedged data check --data ../shared/data/clothing --out reports/data
  hedged data check --data photos/ --bundle models/bundles/clothing --json

exit status: 0 report written (problems are reported, not errors); 2 usage error
(unreadable data folder, a CSV without the image/label columns, an unwritable --out).
"""


def build_parser() -> Parser:
    p = Parser(prog="hedged data", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    c = sub.add_parser("check", help="check a data set and write a report", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--data", required=True, help="CSV file, folder with images.csv, or ImageFolder root")
    c.add_argument("--out", default=None, help="folder for report.md, report.json and contact sheets")
    c.add_argument("--bundle", default=None, help="a bundle whose split.json to check for leakage")
    c.add_argument("--json", action="store_true", help="print the report's summary as JSON")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    if args.action != "check":
        raise UsageError("usage: hedged data check --data DIR [--out DIR] [--bundle B] (see hedged data --help)")
    from hedged.data_check import check_data, write_report
    from hedged.models.data import DatasetError
    from hedged.models.extras import MissingExtraError

    path = Path(args.data)
    if not path.exists():
        raise UsageError(f"data not found: {path}")
    if args.out is not None:
        check_output_dir(args.out)
    split = None
    if args.bundle is not None:
        f = Path(args.bundle) / "split.json"
        if not f.is_file():
            raise UsageError(f"no split.json in {args.bundle}")
        split = json.loads(f.read_text())
    progress = _progress()
    t0 = time.perf_counter()
    try:
        report = check_data(path, split=split, progress=progress)
    except MissingExtraError as err:
        raise UsageError(str(err)) from None
    except DatasetError as err:
        raise UsageError(f"cannot read data {path}: {err}") from None
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if progress is not None:
        progress.done()
    if args.out is not None:
        write_report(report, args.out)
    s = report["summary"]
    if args.json:
        print(json.dumps({k: report[k] for k in ("data", "n_images", "n_contributors", "pairs", "summary", "seconds")}
                         | {"unreadable": len(report["unreadable"]), "tiny": len(report["tiny"])}))
    else:
        print(f"{report['n_images']:,} photos, {len(report['unreadable'])} unreadable, {len(report['tiny'])} tiny; "
              f"{report['pairs']['exact']} exact + {report['pairs']['near']} near duplicate pairs in {s['groups']} "
              f"groups: {s['label_conflicts']} label conflicts, {s['across_contributors']} across contributors, "
              f"{s['train_leaks']} train leaks ({report['seconds']:.0f} s)"
              + (f"; report in {Path(args.out) / 'report.md'}" if args.out else ""))
    return EXIT_OK


def _progress():
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    from rich.progress import Progress

    bar = Progress(console=console, transient=True)
    tasks = {}

    def update(stage, done, total):
        if stage not in tasks:
            if not bar.live.is_started:
                bar.start()
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done)

    update.done = lambda: bar.stop() if bar.live.is_started else None
    return update


if __name__ == "__main__":  # python -m hedged.cli.data
    sys.exit(main())
