"""``evaluate.py``: evaluation report (report.md, metrics.json, PNG figures) of hedged prediction."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from hedged.classifier import GUARANTEES
from hedged.cli._common import (
    EXIT_OK,
    Parser,
    UsageError,
    check_output_dir,
    load_classifier,
    parse_tta,
    positive_int,
    run_cli,
)

DESCRIPTION = """\
Write an evaluation report of hedged prediction: report.md with figures
(accuracy vs specificity, achieved vs target accuracy, depth of the answers,
reliability diagram, leaf confusion), metrics.json and the PNGs.

Three sources of test posteriors:
  evaluate.py --out R                      the model bundle's stored test split
  evaluate.py --data D --out R             labelled images (CSV or class folders), run through the CNN
  evaluate.py --probs P --labels Y --taxonomy T --out R
                                           posteriors of any classifier
With a bundle the calibration is the bundle's; with --probs it is either
--cal-probs/--cal-labels or a seeded random split of P (--cal-fraction, --seed).
"""

EPILOG = """\
files: posteriors are .npy (N x L float, columns = taxonomy leaves) or .csv
(a header row of column names is skipped);
labels are .npy (leaf indices or names) or text, one label per line (leaf
name, dataset alias or index).

examples:
  hedged evaluate --out report/
  hedged evaluate --data ../shared/data/clothing --split test --out report/
  hedged evaluate --probs p.csv --labels y.txt --taxonomy taxonomies/clothing.yaml --out report/

exit status: 0 report written; 2 usage error (missing or inconsistent inputs,
--out not writable: checked before any work starts); 130 interrupted.
"""


def build_parser() -> Parser:
    p = Parser(prog="hedged evaluate", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created; files overwritten)")
    p.add_argument("--model", metavar="DIR", default=None, help="model bundle (default: the bundled model)")
    src = p.add_argument_group("labelled images (runs the CNN)")
    src.add_argument("--data", metavar="PATH",
                     help="CSV with image,label columns (or a folder holding images.csv), or a folder with one "
                          "sub-folder per label; labels that are not leaves (e.g. 'Not sure') are skipped")
    src.add_argument("--split", metavar="NAME",
                     help="keep only the images of this split of the bundle (e.g. test), by image id")
    src.add_argument("--tta", metavar="ANGLES", help="must match the bundle's calibrated TTA (default: the bundle's)")
    src.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per forward pass (default 8)")
    post = p.add_argument_group("posteriors of any classifier")
    post.add_argument("--probs", metavar="P", help="test posteriors (.npy or .csv)")
    post.add_argument("--labels", metavar="Y", help="test labels (.npy or one per line)")
    post.add_argument("--taxonomy", metavar="T", help="taxonomy YAML (default with --model: the bundle's)")
    post.add_argument("--cal-probs", metavar="P", help="calibration posteriors")
    post.add_argument("--cal-labels", metavar="Y", help="calibration labels")
    post.add_argument("--cal-fraction", type=float, default=0.5, metavar="F",
                      help="without --cal-probs: share of --probs used for calibration (default 0.5)")
    post.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    rule = p.add_argument_group("rules")
    rule.add_argument("--guarantee", choices=[g for g in GUARANTEES], default="auto",
                      help="auto (default): pac-seller when the calibration photos' contributors are known, else "
                           "pac; pac-seller: the average contributor's accuracy, contributors as the draws; "
                           "pac-group: photo accuracy with each contributor counting for at most 10 photos; "
                           "pac: photos as independent draws; expected: calibration accuracy meets the target")
    rule.add_argument("--delta", type=float, default=0.05, help="PAC failure probability (default 0.05)")
    rule.add_argument("--alpha", type=float, default=0.05, help="Clopper-Pearson level of the plotted intervals")
    p.add_argument("--title", default=None, help="report title")
    return p


def load_probs(path) -> np.ndarray:
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"posteriors file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False) if path.suffix == ".npy" else _load_csv(path)
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot read posteriors {path}: {err}") from None
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise UsageError(f"posteriors {path} must be a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.float64)


def _load_csv(path: Path) -> np.ndarray:
    """A numeric CSV, with or without one header row (column names are not checked)."""
    import numpy as np

    with open(path, encoding="utf-8") as f:
        first = f.readline()
    cells = [c.strip().strip('"') for c in first.split(",")]
    try:
        [float(c) for c in cells]
        header = 0
    except ValueError:
        header = 1  # e.g. pandas' to_csv or a spreadsheet export: names in the first row
    return np.loadtxt(path, delimiter=",", ndmin=2, skiprows=header)


def load_labels(path) -> np.ndarray:
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            arr = np.asarray([int(x) for x in lines]) if all(x.lstrip("-").isdigit() for x in lines) else np.asarray(lines)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read labels {path}: {err}") from None
    if arr.ndim != 1:
        raise UsageError(f"labels {path} must be 1-D, got shape {arr.shape}")
    return arr


def seeded_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, test) of a random split with ``round(fraction * n)`` calibration rows."""
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--cal-fraction must be in (0, 1), got {fraction}")
    n_cal = int(round(fraction * n))
    if not 0 < n_cal < n:
        raise UsageError(f"--cal-fraction {fraction} of {n} rows leaves an empty calibration or test split")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_cal]), np.sort(perm[n_cal:])


def _from_probs(args):
    from hedged.taxonomy import Taxonomy, TaxonomyError

    if args.labels is None:
        raise UsageError("--probs needs --labels")
    if (args.cal_probs is None) != (args.cal_labels is None):
        raise UsageError("--cal-probs and --cal-labels go together")
    provenance = {"source": "posteriors", "probs": args.probs, "labels": args.labels}
    if args.taxonomy is not None:
        if not Path(args.taxonomy).is_file():
            raise UsageError(f"taxonomy file not found: {args.taxonomy}")
        try:
            taxonomy = Taxonomy.from_yaml(args.taxonomy)
        except (TaxonomyError, OSError) as err:
            raise UsageError(f"cannot read taxonomy {args.taxonomy}: {err}") from None
        provenance["taxonomy"] = args.taxonomy
    elif args.model is not None:
        taxonomy = load_classifier(args.model).taxonomy
        provenance["taxonomy"] = f"{args.model} (bundle)"
    else:
        raise UsageError("--probs needs --taxonomy (or --model to take the bundle's taxonomy)")
    probs, labels = load_probs(args.probs), load_labels(args.labels)
    if args.cal_probs is not None:
        cal = (load_probs(args.cal_probs), load_labels(args.cal_labels))
        test = (probs, labels)
        provenance.update(calibration=f"{args.cal_probs}, {args.cal_labels}")
    else:
        if labels.shape[0] != probs.shape[0]:
            raise UsageError(f"--labels has {labels.shape[0]} rows but --probs has {probs.shape[0]}")
        cal_idx, test_idx = seeded_split(probs.shape[0], args.cal_fraction, args.seed)
        cal, test = (probs[cal_idx], labels[cal_idx]), (probs[test_idx], labels[test_idx])
        provenance.update(calibration=f"random {args.cal_fraction:g} of the rows (seed {args.seed})")
    return taxonomy, cal, test, provenance


# The bundle's provenance also holds the full training config, class counts and
# library versions; the report quotes what identifies the data and the split.
_TRAINING_KEYS = ("source", "sha256", "group_column", "n_used", "dropped_labels", "split_counts", "split_seed", "seed")


def _bundle_provenance(clf, model) -> dict:
    b = clf.bundle_
    training = b.provenance or {}
    return {
        "model": str(model) if model is not None else "bundled default model",
        "arch": b.arch,
        "tta_angles": list(b.tta_angles),
        "temperature": round(float(b.temperature), 4),
        "calibration": f"bundle calibration split ({b.calibration_probs.shape[0]} images)",
        **{f"training {k}": training[k] for k in _TRAINING_KEYS if training.get(k) is not None},
    }


def _from_bundle(args):
    clf = load_classifier(args.model)
    b = clf.bundle_
    if b.test_probs is None:
        raise UsageError("the model bundle stores no test split; pass --data or --probs")
    provenance = {"source": "the bundle's stored test split", **_bundle_provenance(clf, args.model)}
    cal = (b.calibration_probs, b.calibration_labels, getattr(b, "calibration_groups", None))
    return clf.taxonomy, cal, (b.test_probs, b.test_labels), provenance


def _photo_key(photo_id) -> str:
    """A photo's id without folders and image extension (matching split ids across data layouts)."""
    name = Path(str(photo_id)).name
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext.lower() in ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic",
                                           "heif", "avif") else name


def _from_data(args):
    import numpy as np

    from hedged.classifier import UncalibratedError
    from hedged.models.data import load_dataset

    clf = load_classifier(args.model, batch_size=args.batch_size)
    b = clf.bundle_
    path = Path(args.data)
    if not path.exists():
        raise UsageError(f"data not found: {path}")
    try:
        tta = parse_tta(args.tta)
        clf.resolve_tta(tta, allow_uncalibrated=False)
        data = load_dataset(path)
    except UncalibratedError as err:
        raise UsageError(str(err)) from None
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot read data {path}: {err}") from None
    notes = []
    # ids are compared by file name without folder or image extension: a CSV id "ab12",
    # "ab12.jpg" and a class folder's "Shirt/ab12.jpg" are one photo
    keys = np.array([_photo_key(i) for i in data.ids])
    if args.split is not None:
        if not b.split or args.split not in b.split:
            known = ", ".join(sorted(b.split)) if b.split else "none stored"
            raise UsageError(f"the bundle has no split {args.split!r} (splits: {known})")
        wanted = {_photo_key(i) for i in b.split[args.split]}
        data = data.subset(np.flatnonzero(np.isin(keys, list(wanted))))
        if len(data) == 0:
            raise UsageError(f"none of the bundle's {len(wanted)} {args.split} photos is in {path} "
                             "(compared by file name without extension)")
        notes.append(f"{len(data)} of the bundle's {len(wanted)} {args.split} photos found in {path}")
        print(f"note: {notes[-1]}", file=sys.stderr)
    elif b.split:
        seen = {k: int(np.isin(keys, [_photo_key(i) for i in v]).sum()) for k, v in b.split.items() if k != "test"}
        overlap = {k: v for k, v in seen.items() if v}
        if overlap:
            msg = "data overlaps the bundle's " + ", ".join(f"{k} split ({v} images)" for k, v in overlap.items())
            notes.append(msg + "; accuracy will be optimistic (use --split test)")
            print(f"warning: {notes[-1]}", file=sys.stderr)
    labels = clf.taxonomy.resolve_labels(data.labels, missing="drop")
    keep = labels >= 0
    if not keep.all():
        skipped = sorted(set(data.labels[~keep].tolist()))
        notes.append(f"skipped {int((~keep).sum())} images whose label is not a leaf: {', '.join(skipped)}")
    paths, labels = data.paths[keep], labels[keep]
    if len(paths) == 0:
        raise UsageError(f"no labelled images of the taxonomy's classes in {path}")
    probs = clf.predict_proba(list(paths), errors="collect", tta=tta, progress=_progress(len(paths)))
    ok = ~np.isnan(probs).any(axis=1)
    if not ok.all():
        notes.append(f"skipped {int((~ok).sum())} unreadable images, e.g. {paths[~ok][0]}")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    probs = probs[ok]
    provenance = {
        "source": f"labelled images {path}" + (f" ({args.split} split)" if args.split else "") + f", {int(ok.sum())}",
        "data sha256": data.sha256,
        **_bundle_provenance(clf, args.model),
    }
    if notes:
        provenance["data notes"] = "; ".join(notes)
    cal = (b.calibration_probs, b.calibration_labels, getattr(b, "calibration_groups", None))
    return clf.taxonomy, cal, (probs, labels[ok]), provenance


def _progress(total: int):
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    from rich.progress import Progress

    bar = Progress(console=console, transient=True)
    task = bar.add_task("classifying", total=total)

    def update(done, n):
        if done and not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done)
        if done >= n:
            bar.stop()

    return update


def main(argv=None) -> int:
    return run_cli(build_parser(), lambda args: _run(args, argv), argv)


def _run(args, argv) -> int:
    from hedged.report import write_report

    if args.data is not None and args.probs is not None:
        raise UsageError("--data and --probs are alternatives; give one")
    if not 0.0 < args.delta < 1.0:
        raise UsageError(f"--delta must be in (0, 1), got {args.delta}")
    if not 0.0 < args.alpha < 1.0:
        raise UsageError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.probs is None and (args.cal_probs or args.cal_labels or args.labels or args.taxonomy):
        raise UsageError("--labels, --taxonomy, --cal-probs and --cal-labels need --probs")
    # before any work: an unwritable --out must not cost a CNN pass over the images
    check_output_dir(args.out)
    if args.probs is not None:
        taxonomy, cal, test, provenance = _from_probs(args)
    elif args.data is not None:
        taxonomy, cal, test, provenance = _from_data(args)
    else:
        taxonomy, cal, test, provenance = _from_bundle(args)
    cmd = sys.argv[1:] if argv is None else list(argv)
    provenance["command"] = "python evaluate.py " + shlex.join(cmd)
    title = args.title or f"Hedged prediction report ({provenance['source']})"
    cal_groups = cal[2] if len(cal) > 2 else None
    guarantee = args.guarantee
    if guarantee == "auto":
        guarantee = "pac-seller" if cal_groups is not None else "pac"
    elif guarantee in ("pac-seller", "pac-group") and cal_groups is None:
        raise UsageError(f"--guarantee {guarantee} needs the calibration photos' contributors "
                         "(a bundle that stores them); this calibration data has none")
    try:
        metrics = write_report(
            args.out, taxonomy, cal[0], cal[1], test[0], test[1],
            title=title, provenance=provenance, guarantee=guarantee, delta=args.delta, alpha=args.alpha,
            cal_groups=cal_groups,
        )
    except ValueError as err:  # shapes, labels not in the taxonomy, bad posteriors
        raise UsageError(str(err)) from None
    darts = {r["target"]: r for r in metrics["table"]["darts"]}
    summary = ", ".join(f"{t:.2f}->{darts[t]['accuracy']:.3f}" for t in sorted(darts))
    print(f"wrote {Path(args.out) / 'report.md'} (n_test={metrics['n_test']}; DARTS target->achieved: {summary})")
    return EXIT_OK


if __name__ == "__main__":  # python -m hedged.cli.evaluate
    raise SystemExit(main())
