"""``predict.py``: hedged predictions for image files, directories and globs."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

from hedged.classifier import GUARANTEES
from hedged.cli._common import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Parser,
    UsageError,
    load_classifier,
    parse_accuracy,
    parse_tta,
    pixel_count,
    positive_int,
    run_cli,
)

DESCRIPTION = """\
Classify images with a hedged answer: the most specific node of the taxonomy
(e.g. "Upper-body garment" rather than "Polo shirt") that meets the accuracy
target, calibrated so that the target holds (--guarantee pac: with probability
0.95 over the calibration set; expected: on average).

The guarantee is about the share of right answers over many photos, not about
any one photo: at 95%, at least 95 of 100 answers name a node that contains
the true class, and a single answer's own probability may be lower.
"""

EPILOG = """\
examples:
  hedged predict examples/polo.jpg
  hedged predict photos/ 'more/**/*.png' --json > answers.jsonl
  hedged predict photo.jpg --accuracy 0.8 --tta -15,0,15 --allow-uncalibrated
  hedged predict scan.tif --max-pixels 200000000

inputs: image files, directories (searched recursively for image extensions,
HEIC and AVIF included) and glob patterns (quote them: 'photos/**/*.jpg').
A file named twice (or also found through a directory) is answered once,
with a note on stderr.

output: one block per image, or with --json one JSON object per line
(JSON Lines, written as each batch finishes) with keys image, in_taxonomy,
taxonomy_score, node,
display_name, path, depth, probability, info_gain, leaves, labels, leaf_guess,
leaf_guess_display_name, leaf_probability, accuracy_target, guarantee,
guarantee_holds, leaf_at_target (the largest target at which the answer would
be the leaf guess; null if none), warnings (see docs/usage.md). An image that
cannot be read gives {"image": ..., "error": ...} (text mode: an error line on
stderr); the others are still classified.

not clothing: the model also judges whether each photo belongs to the taxonomy
at all (calibrated so that about 2% of clothing photos are called outside). A
photo judged outside has "in_taxonomy": false and "node": null (text mode:
"not clothing"); the accuracy guarantee is stated for photos judged inside.
--no-taxonomy-check turns the check off ("in_taxonomy": null).

--explain DIR: per image one PNG in DIR (2 x 2 panels, the photo's aspect
ratio): the photo, the heat map of the answered node, and the heat maps of its
two most probable children (what the model could not decide between); for a
leaf answer, the two most probable other leaves (what it ruled out). JSON
records gain "explanation": the PNG's path. Grad-CAM takes about a second per
image on a CPU; --explain-method ig (integrated gradients) tens of seconds.
Photos judged outside the taxonomy get "explanation": null. ONNX models
cannot be differentiated: an ONNX bundle is explained by the torch bundle it
was exported from when that is found beside it with the exported weights
(a note says so), else --explain needs a torch bundle (--model DIR).

exit status: 0 all images classified; 1 at least one input could not be read
(or matched nothing); 2 usage error (bad --accuracy, missing model, TTA the
model was not calibrated for, ...); 130 interrupted (Ctrl-C), after the
answers already written; 141 the reader of the output went away (| head), as
for any Unix tool ended by SIGPIPE, with no error message.
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
                   help="target accuracy in (0, 1] (default 0.95); 1 can only be met by the root")
    p.add_argument("--guarantee", choices=GUARANTEES, default="auto",
                   help="auto (default): pac-seller when the model stores its calibration photos' contributors "
                        "(the bundled one does), else pac; pac-seller: with probability 1-delta over the "
                        "calibration set, the average contributor's accuracy meets the target (contributors as "
                        "the independent draws, their photos arbitrarily alike); pac-group: the same for the "
                        "photo accuracy with each contributor counting for at most 10 photos; pac: photos as "
                        "independent draws (overstated when photos come in clusters); expected: calibration "
                        "accuracy meets the target (docs/hedging.md)")
    p.add_argument("--model", metavar="DIR", default=None, help="model bundle directory (default: the bundled model)")
    p.add_argument("--tta", metavar="ANGLES", default=None,
                   help="rotation test-time augmentation: comma-separated degrees (0,90,180,270 or -15,0,15) "
                        "or 'off'; default: the angles the model was calibrated with")
    p.add_argument("--allow-uncalibrated", "--no-guarantee", dest="allow_uncalibrated", action="store_true",
                   help="accept a --tta the model was not calibrated for (the accuracy guarantee then does not hold)")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                   help="images per forward pass, times the TTA views (default 8, the CPU sweet spot)")
    p.add_argument("--title", action="append", default=None, metavar="TEXT",
                   help="the photo's listing title (once per photo, in order): the title's keywords restrict the "
                        "answer to the node they name, and the answer then says the guarantee does not cover it")
    p.add_argument("--max-pixels", type=pixel_count, default=None, metavar="N",
                   help="refuse images with more pixels than this (default 50000000); "
                        "large JPEGs are decoded at reduced size either way")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for the network (default: one per core)")
    p.add_argument("--json", action="store_true", help="print JSON Lines (one object per image) instead of text")
    p.add_argument("--no-taxonomy-check", "--no-ood", dest="check_taxonomy", action="store_false",
                   help="do not judge whether photos belong to the taxonomy at all: every photo gets a node")
    p.add_argument("--explain", metavar="DIR", default=None,
                   help="write one PNG per image into DIR: heat maps of the answer and of its two most probable children")
    p.add_argument("--explain-method", choices=("gradcam", "ig"), default="gradcam",
                   help="attribution method for --explain: gradcam (default, fast) or ig (integrated gradients, slow)")
    return p


def _progress_bar(total: int, batch_size: int):
    """A rich progress bar on stderr for long runs; ``None`` for short or non-interactive ones."""
    from rich.console import Console

    console = Console(stderr=True)
    if total <= 2 * batch_size or not console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )


def format_share(x: float) -> str:
    """A probability or target as a percentage that never rounds to a misleading 0% or 100%.

    One decimal as a rule; more when that would print 0.0% or 100.0% for a
    value that is neither: 0.9999 is "99.99%", 1e-9 is "0.0000001%".
    """
    if x != x:
        return "n/a"
    if x <= 0.0 or x >= 1.0:
        return f"{100 * x:.0f}%"
    for decimals in range(1, 12):
        text = f"{100 * x:.{decimals}f}"
        if float(text) not in (0.0, 100.0):
            return (text.rstrip("0").rstrip(".") if decimals > 1 else text) + "%"
    return f"{100 * x:.3g}%"


def _leaf_line(pred) -> str:
    from rich.markup import escape

    leaf = pred.leaf
    line = f"{escape(leaf.display_name)} {format_share(pred.leaf_probability)}  [dim]({escape(leaf.name)})[/dim]"
    target = getattr(pred, "leaf_at_target", None)
    if target is not None and target == target:  # not None, not NaN
        line += f"; {escape(leaf.display_name)} at targets up to {target:.2f}"
    return line


def _print_text(console, pred, clf, explanation=None) -> None:
    from rich.markup import escape

    node, leaf, tax = pred.node, pred.leaf, clf.taxonomy
    where = "" if pred.source is None else escape(pred.source)
    console.print(f"[bold]{where}[/bold]")
    if node is None:  # judged outside the taxonomy: the record's headline, "not clothing"
        console.print(f"  answer      [bold red]{escape(pred.headline)}[/bold red]  [dim](score {pred.taxonomy_score:.2f})[/dim]")
        console.print(f"  leaf guess  [dim]{escape(leaf.display_name)} {format_share(pred.leaf_probability)} if it were[/dim]")
        _print_notes(console, pred, explanation)
        return
    if node.name == tax.root and not node.is_leaf:
        # The root says nothing by itself: say that the model is not sure, and what it would guess.
        console.print(f"  answer      [bold yellow]{escape(pred.headline)}[/bold yellow]"
                      f"  [dim]({escape(node.name)}, all {len(node.leaves)} leaves)[/dim]")
        console.print(f"  best leaf   {_leaf_line(pred)}")
    else:
        kind = "leaf" if node.is_leaf else f"one of {len(node.leaves)} leaves"  # a single-leaf node is its leaf
        console.print(
            f"  answer      [bold green]{escape(node.display_name)}[/bold green]  [dim]({escape(node.name)}, {kind})[/dim]"
        )
        console.print(f"  path        {escape(' > '.join(tax.display_name(v) for v in node.path))}")
        if leaf.name == node.name:
            console.print(f"  leaf guess  the answer itself, {format_share(pred.leaf_probability)}")
        else:
            console.print(f"  leaf guess  {_leaf_line(pred)}")
    if pred.kind != "not_sure":  # the root's probability is 1 by definition: it says nothing
        console.print(f"  probability {format_share(pred.probability)}   info gain {pred.info_gain:.2f}")
    _print_notes(console, pred, explanation)


def _print_notes(console, pred, explanation) -> None:
    """Warnings and the explanation's path: under every kind of answer, outside the taxonomy too."""
    from rich.markup import escape

    for note in getattr(pred, "warnings", ()):
        console.print(f"  [yellow]warning:[/yellow] {escape(note)}")
    if explanation is not None:
        console.print(f"  explanation {escape(explanation)}")


def outside_name(taxonomy) -> str:
    """How an answer outside the taxonomy reads: "not clothing" for the clothing taxonomy."""
    return f"not {taxonomy.display_name(taxonomy.root).lower()}"


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    # arguments first: a typo is answered before the library is imported
    accuracy = parse_accuracy(args.accuracy)
    tta = parse_tta(args.tta)
    from hedged.classifier import UncalibratedError, format_angles
    from hedged.inputs import expand_inputs

    explain_dir = _explain_dir(args.explain)
    extra = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    clf = load_classifier(args.model, guarantee=args.guarantee, batch_size=args.batch_size, threads=args.threads, **extra)
    if explain_dir is not None:
        _check_explainable(clf)
    try:
        clf.resolve_tta(tta, args.allow_uncalibrated)
    except UncalibratedError:
        calibrated = format_angles(clf.tta_angles)
        raise UsageError(
            f"--tta {args.tta} differs from the TTA the model was calibrated with ({calibrated}): "
            "the accuracy guarantee would not hold; pass --allow-uncalibrated to predict anyway"
        ) from None

    repeats: dict[str, int] = {}
    entries = expand_inputs(args.inputs, repeats=repeats)
    for path, times in repeats.items():
        print(f"note: {path} is among the inputs {times} times; answered once", file=sys.stderr)
    if args.title is not None:
        if len(args.title) != len(entries):
            raise UsageError(f"--title: give one per photo ({len(entries)} photo(s), {len(args.title)} title(s))")
        args.titles_by_path = {path: title for (path, _), title in zip(entries, args.title)}
    else:
        args.titles_by_path = None
    explainer = None if explain_dir is None else _Explainer(clf, explain_dir, args, accuracy, tta)
    writer = _Writer(args.json, clf, accuracy, args.guarantee, explainer)
    todo = [path for path, err in entries if err is None]
    bar = _progress_bar(len(todo), args.batch_size)
    task = bar.add_task("classify", total=len(todo)) if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        _stream(clf, entries, accuracy, args, tta, writer, lambda done: bar and bar.update(task, completed=done))
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        print(f"interrupted: {writer.written} of {len(entries)} answers written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.stop()

    if not writer.guaranteed and tta is not None:
        print(
            f"warning: TTA {format_angles(tta)} differs from the calibrated TTA "
            f"{format_angles(clf.tta_angles)}; the accuracy guarantee does not hold",
            file=sys.stderr,
        )
    if writer.failed:
        print(f"error: {writer.failed} of {len(entries)} inputs could not be classified", file=sys.stderr)
        return EXIT_FAILED_INPUTS
    return EXIT_OK


def _explain_dir(text: str | None):
    """The --explain directory, created if needed; a usage error if it cannot be."""
    if text is None:
        return None
    from pathlib import Path

    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--explain {text}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--explain {text}: cannot create the directory ({err.strerror or err})") from None
    return path


def _check_explainable(clf) -> None:
    from hedged.classifier import ExplainUnavailableError

    try:
        _, note = clf._torch_model()
        import hedged.models.explain as attribution

        attribution._captum_attr()
    except (ExplainUnavailableError, ImportError) as err:
        raise UsageError(f"--explain: {err}") from None
    if note:
        print(f"note: {note}", file=sys.stderr)


class _Explainer:
    """Writes one explanation PNG per answered photo (``<stem>.png``, made unique) and returns its path."""

    def __init__(self, clf, directory, args, accuracy, tta):
        self.clf, self.directory, self.args, self.accuracy, self.tta = clf, directory, args, accuracy, tta
        self.used: set[str] = set()

    def __call__(self, pred) -> str | None:
        from pathlib import Path

        from hedged.models import ImageLoadError

        if pred.node is None or pred.source is None:  # judged outside the taxonomy: nothing to explain
            return None
        stem = Path(pred.source).stem
        name, n = f"{stem}.png", 1
        while name in self.used:  # a/x.jpg and b/x.jpg
            n += 1
            name = f"{stem}-{n}.png"
        self.used.add(name)
        path = self.directory / name
        args = self.args
        try:
            expl = self.clf.explain(
                pred.source, node=pred.node.name, accuracy=self.accuracy, method=args.explain_method,
                guarantee=args.guarantee, tta=self.tta, allow_uncalibrated=args.allow_uncalibrated,
            )
            expl.save(path)
        except (ImageLoadError, OSError) as err:
            print(f"warning: cannot explain {pred.source}: {err}", file=sys.stderr)
            return None
        return str(path)


def _stream(clf, entries, accuracy, args, tta, writer, progress) -> None:
    """Classify batch by batch and write each batch's answers as soon as it is done, in input order."""
    from hedged.results import Prediction

    said: set[str] = set()
    done = 0
    i = 0
    while i < len(entries):
        # the next batch: up to batch_size readable entries, plus the failed ones between them
        batch, paths = [], []
        while i < len(entries) and len(paths) < args.batch_size:
            batch.append(entries[i])
            if entries[i][1] is None:
                paths.append(entries[i][0])
            i += 1
        preds = iter(())
        if paths:
            # The rules warn when the calibration set cannot certify the target (the
            # answer is then the root): one "warning:" line, once, not a source excerpt.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                titles = None if args.titles_by_path is None else [args.titles_by_path[p] for p in paths]
                preds = iter(clf.predict(
                    paths, accuracy, errors="collect", tta=tta, allow_uncalibrated=args.allow_uncalibrated,
                    batch_size=args.batch_size, check_taxonomy=args.check_taxonomy, titles=titles,
                ))
            for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
                if message not in said:
                    said.add(message)
                    print(f"warning: {message}", file=sys.stderr)
        for path, err in batch:
            writer.write(next(preds) if err is None else Prediction.failed(path, err, accuracy, args.guarantee))
        writer.flush()
        done += len(paths)
        progress(done)


class _Writer:
    """Writes answers as text blocks or JSON Lines; per-file errors in text mode go to stderr."""

    def __init__(self, as_json: bool, clf, accuracy: float, guarantee: str, explainer=None):
        self.as_json, self.clf, self.explainer = as_json, clf, explainer
        self.written = self.failed = 0
        self.guaranteed = True
        self.console = None
        if not as_json:
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)
            self.console.print(
                f"accuracy target {format_share(accuracy)} ({clf.resolve_guarantee(guarantee)} guarantee): "
                f"{clf.promise(accuracy, guarantee)}"
            )

    def write(self, pred) -> None:
        self.written += 1
        if pred.error is not None:
            self.failed += 1
            if not self.as_json:
                print(f"error: {pred.source}: {pred.error}", file=sys.stderr)
                return
        elif not pred.guaranteed and self.guaranteed and getattr(pred, "title", None) is None:
            self.guaranteed = False
            if self.console is not None:
                self.console.print("[bold yellow]the guarantee does NOT hold: uncalibrated TTA[/bold yellow]")
        png = self.explainer(pred) if self.explainer is not None and pred.error is None else None
        if self.as_json:
            record = json_record(pred)
            if self.explainer is not None and pred.error is None:
                record["explanation"] = png
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            _print_text(self.console, pred, self.clf, png)

    def flush(self) -> None:
        # JSON Lines consumers (jq, a pipe) see each batch as soon as it is done
        sys.stdout.flush()
        if self.as_json is False:
            sys.stderr.flush()


def json_record(pred) -> dict:
    """The JSON object ``--json`` prints for one prediction: :meth:`~hedged.results.Prediction.to_record`."""
    return pred.to_record()


if __name__ == "__main__":  # python -m hedged.cli.predict
    raise SystemExit(main())
