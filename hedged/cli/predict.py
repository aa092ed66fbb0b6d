"""``predict.py``: hedged predictions for image files, directories and globs."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

from hedged.cli._common import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    Parser,
    UsageError,
    load_classifier,
    parse_accuracy,
    parse_tta,
    positive_int,
    run_cli,
)

DESCRIPTION = """\
Classify images with a hedged answer: the most specific node of the taxonomy
(e.g. "Upper-body garment" rather than "Polo shirt") that meets the accuracy
target, calibrated so that the target holds (--guarantee pac: with probability
0.95 over the calibration set; expected: on average).
"""

EPILOG = """\
inputs: image files, directories (searched recursively for image extensions)
and glob patterns (quote them: 'photos/**/*.jpg').

output: one block per image, or with --json one JSON object per line
(JSON Lines) with keys image, in_taxonomy, taxonomy_score, node, name, path,
depth, probability, info_gain, leaves, labels, leaf_guess, leaf_guess_name,
leaf_probability, accuracy_target, guarantee, guarantee_holds, leaf_at_target
(the largest target at which the answer would be the leaf guess; null if none). An image that cannot be read
gives {"image": ..., "error": ...}; the others are still classified.

not clothing: the model also judges whether each photo belongs to the taxonomy
at all (calibrated so that about 2% of clothing photos are called outside). A
photo judged outside has "in_taxonomy": false and "node": null (text mode:
"not clothing"); the accuracy guarantee is stated for photos judged inside.
--no-taxonomy-check turns the check off ("in_taxonomy": null).

exit status: 0 all images classified; 1 at least one input could not be read
(or matched nothing); 2 usage error (bad --accuracy, missing model, TTA the
model was not calibrated for, ...).
"""


def build_parser() -> Parser:
    p = Parser(
        prog="hedged predict",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, directories or glob patterns")
    p.add_argument("--accuracy", default="0.95", metavar="A",
                   help="target accuracy in (0, 1] (default 0.95)")
    p.add_argument("--guarantee", choices=("pac", "pac-group", "expected"), default="pac",
                   help="pac: holds with probability 1-delta over the calibration set, photos as independent "
                        "draws (default); pac-group: the same with contributors as the draws and their photos "
                        "arbitrarily alike (needs a bundle with calibration groups; far more conservative, "
                        "see docs/hedging.md); expected: calibration accuracy meets the target")
    p.add_argument("--model", metavar="DIR", default=None, help="model bundle directory (default: the bundled model)")
    p.add_argument("--tta", metavar="ANGLES", default=None,
                   help="rotation test-time augmentation: comma-separated degrees (0,90,180,270) or 'off'; "
                        "default: the angles the model was calibrated with")
    p.add_argument("--allow-uncalibrated", "--no-guarantee", dest="allow_uncalibrated", action="store_true",
                   help="accept a --tta the model was not calibrated for (the accuracy guarantee then does not hold)")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                   help="images per forward pass, times the TTA views (default 8, the CPU sweet spot)")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per image) instead of text")
    p.add_argument("--no-taxonomy-check", "--no-ood", dest="check_taxonomy", action="store_false",
                   help="do not judge whether photos belong to the taxonomy at all: every photo gets a node")
    return p


def _progress_bar(total: int, batch_size: int):
    """A rich progress bar on stderr for long runs; ``None`` for short or non-interactive ones."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if total <= 2 * batch_size or not console.is_terminal:
        return None
    return Progress(
        TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )


def _fmt_p(x: float) -> str:
    return f"{100 * x:.1f}%"


def _print_text(console, pred, clf) -> None:
    from rich.markup import escape

    if pred.error is not None:
        console.print(f"[bold]{escape(str(pred.source))}[/bold]\n  [red]error:[/red] {escape(pred.error)}")
        return
    node, leaf, tax = pred.node, pred.leaf, clf.taxonomy
    where = "" if pred.source is None else escape(pred.source)
    console.print(f"[bold]{where}[/bold]")
    if node is None:  # judged outside the taxonomy
        console.print(f"  answer      [bold red]{escape(outside_name(tax))}[/bold red]  [dim](score {pred.taxonomy_score:.2f})[/dim]")
        console.print(f"  leaf guess  [dim]{escape(leaf.display_name)} {_fmt_p(pred.leaf_probability)} if it were[/dim]")
        return
    kind = "leaf" if node.is_leaf else f"{len(node.leaves)} leaves"  # a single-leaf node is shown as its leaf
    console.print(f"  answer      [bold green]{escape(node.display_name)}[/bold green]  [dim]({escape(node.name)}, {kind})[/dim]")
    console.print(f"  path        {escape(' > '.join(tax.display_name(v) for v in node.path))}")
    console.print(f"  probability {_fmt_p(pred.probability)}   info gain {pred.info_gain:.2f}")
    same = ", the answer itself" if leaf.name == node.name else ""
    console.print(
        f"  leaf guess  {escape(leaf.display_name)} {_fmt_p(pred.leaf_probability)}  [dim]({escape(leaf.name)}{same})[/dim]"
    )


def outside_name(taxonomy) -> str:
    """How an answer outside the taxonomy reads: "not clothing" for the clothing taxonomy."""
    return f"not {taxonomy.display_name(taxonomy.root).lower()}"


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    from hedged.classifier import UncalibratedError, format_angles
    from hedged.inputs import expand_inputs
    from hedged.results import Prediction

    accuracy = parse_accuracy(args.accuracy)
    tta = parse_tta(args.tta)
    clf = load_classifier(args.model, guarantee=args.guarantee, batch_size=args.batch_size)
    try:
        clf.resolve_tta(tta, args.allow_uncalibrated)
    except UncalibratedError:
        calibrated = format_angles(clf.tta_angles)
        raise UsageError(
            f"--tta {args.tta} differs from the TTA the model was calibrated with ({calibrated}): "
            "the accuracy guarantee would not hold; pass --allow-uncalibrated to predict anyway"
        ) from None

    entries = expand_inputs(args.inputs)
    todo = [path for path, err in entries if err is None]
    bar = _progress_bar(len(todo), args.batch_size)
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task("classify", total=len(todo))

    def progress(done, total):
        if bar is not None:
            bar.update(task, completed=done)

    try:
        # The rules warn when the calibration set cannot certify the target (the
        # answer is then the root): one "warning:" line, not a source excerpt.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            preds = clf.predict(
                todo, accuracy, errors="collect", tta=tta, allow_uncalibrated=args.allow_uncalibrated,
                batch_size=args.batch_size, progress=progress, check_taxonomy=args.check_taxonomy,
            )
    finally:
        if bar is not None:
            bar.stop()
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    by_path = iter(preds)
    results = [
        next(by_path) if err is None else Prediction.failed(path, err, accuracy, args.guarantee)
        for path, err in entries
    ]

    guaranteed = all(p.guaranteed for p in results if p.error is None)
    if args.json:
        out = sys.stdout
        for p in results:
            out.write(json.dumps(_finite(p.to_dict()), ensure_ascii=False) + "\n")
        out.flush()
    else:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        guarantee = "pac" if args.guarantee == "pac" else "expected"
        header = f"accuracy target {_fmt_p(accuracy)} ({guarantee} guarantee)"
        if not guaranteed:
            header += "  [bold yellow]guarantee does NOT hold: uncalibrated TTA[/bold yellow]"
        console.print(header)
        for p in results:
            _print_text(console, p, clf)
    if not guaranteed:
        print(
            f"warning: TTA {format_angles(parse_tta(args.tta))} differs from the calibrated TTA "
            f"{format_angles(clf.tta_angles)}; the accuracy guarantee does not hold",
            file=sys.stderr,
        )
    failed = [p for p in results if p.error is not None]
    if failed:
        print(f"error: {len(failed)} of {len(results)} inputs could not be classified", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    return EXIT_OK


def _finite(d: dict) -> dict:
    # JSON has no NaN; error objects carry none, but be strict for consumers.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


if __name__ == "__main__":  # python -m hedged.cli.predict
    raise SystemExit(main())
