"""``hedged batch``: answer many photos into a resumable Parquet dataset, locally or on Ray Data."""

from __future__ import annotations

import argparse
import sys

from hedged.cli._common import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Parser,
    UsageError,
    parse_accuracy,
    pixel_count,
    positive_int,
    run_cli,
)

GUARANTEE_CHOICES = ("auto", "pac", "pac-seller", "pac-group", "expected")

DESCRIPTION = """\
Answer every photo of INPUT and write one Parquet row per photo into the folder
--out: the fields of `hedged predict --json`, plus sha256 (of the photo's bytes)
and error (set for a photo that could not be read; the run goes on).

INPUT is a folder (searched recursively), a glob (quote it), a manifest (.csv or
.parquet with a path column, see --path-column; relative paths are taken from the
manifest's folder) or a photo; paths may be fsspec URIs (s3://, gs://, ... with
that protocol's package installed).

Rows are written in shards (part-*.parquet) as they come, each renamed into place
whole. Rerunning the same command after a crash or Ctrl-C answers only the photos
whose (path, sha256) is not yet in --out: every photo ends up exactly once.
"""

EPILOG = """\
examples:
  hedged batch photos/ --out answers/
  hedged batch 'photos/**/*.jpg' --out answers/ --accuracy 0.9
  hedged batch manifest.parquet --out answers/ --engine ray --actors 2
  RAY_ADDRESS=ray://head:10001 hedged batch s3://bucket/listing-manifest.csv --out answers/ --engine ray

  python -c "import pyarrow.parquet as pq; print(pq.read_table('answers/').to_pandas())"

--engine local (default) runs the model in this process with --threads ONNX
Runtime threads (default: every core), or in --workers processes (one thread each
by default; on N cores --workers N is the fastest layout). --engine ray needs `pip install
'hedged[ray]'`: a pool of --actors Ray Data actors, each loading the bundle once
with --threads threads (default 1, and one actor per CPU of the cluster); a local
Ray is started unless --address or RAY_ADDRESS names a cluster (the bundle folder
must then exist on every node, or be a bundled name).

exit status: 0 every photo answered (or already done); 1 at least one error row
written in this run; 2 usage error (an INPUT that does not exist, bad --accuracy,
missing model, an --out made with other settings, Ray missing, ...); 130 interrupted (Ctrl-C): the rows answered
so far are written, and the same command goes on from there.
"""


def build_parser() -> Parser:
    p = Parser(prog="hedged batch", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders, globs, manifests (.csv/.parquet) or photos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a Parquet dataset)")
    p.add_argument("--accuracy", default="0.95", metavar="A", help="target accuracy in (0, 1] (default 0.95)")
    p.add_argument("--guarantee", choices=GUARANTEE_CHOICES, default="auto",
                   help="as for hedged predict (default auto: pac-seller for the bundled model)")
    p.add_argument("--model", metavar="DIR", default=None, help="model bundle (default: the bundled model)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this process; ray: a pool of Ray Data actors")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="local engine: processes that each load the model (default 1, this process); on N cores "
                        "--workers N --threads 1 is the fastest layout")
    p.add_argument("--actors", type=positive_int, default=None, metavar="N",
                   help="Ray actors (default: the cluster's CPUs divided by --threads)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="ONNX Runtime threads per model (default: local every core, or 1 with --workers; "
                        "ray 1 per actor)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="photos per forward pass and per Ray batch (default 16)")
    p.add_argument("--shard-size", type=positive_int, default=1000, metavar="N",
                   help="rows per shard (default 1000); a shard is also written every --flush-seconds")
    p.add_argument("--flush-seconds", type=float, default=30.0, metavar="S",
                   help="write the waiting rows at least this often (default 30), so a crash loses little")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--path-column", default="path", metavar="NAME", help="a manifest's path column (default path)")
    p.add_argument("--max-pixels", type=pixel_count, default=None, metavar="N",
                   help="refuse images with more pixels than this (default 50000000)")
    p.add_argument("--no-taxonomy-check", "--no-ood", dest="check_taxonomy", action="store_false",
                   help="do not judge whether photos belong to the taxonomy at all: every photo gets a node")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _progress():
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def _run(args) -> int:
    accuracy = parse_accuracy(args.accuracy)
    import os

    for item in args.inputs:  # a typo on the command line is a usage error, not an error row
        if "://" not in item and not set("*?[") & set(item) and not os.path.exists(item):
            raise UsageError(f"{item}: no such file or folder")
    if not args.flush_seconds > 0:
        raise UsageError(f"--flush-seconds must be positive, got {args.flush_seconds}")
    from hedged.batch import BatchError, predict_batch, require_extras
    from hedged.cli._common import load_classifier

    try:  # before the model is loaded
        require_extras(args.engine)
    except BatchError as err:
        raise UsageError(str(err)) from None
    extra = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    if args.workers > 1 and args.engine != "local":
        raise UsageError("--workers is for --engine local; on Ray, --actors sets the processes")
    clf = load_classifier(args.model, guarantee=args.guarantee, batch_size=args.batch_size,
                          threads=args.threads if args.engine == "local" and args.workers == 1 else 1, **extra)
    bar = _progress()
    task = None
    if bar is not None:
        task = bar.add_task("answer", total=None)
        bar.start()

    def progress(done, total):
        if bar is not None:
            bar.update(task, completed=done, total=total)

    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = predict_batch(
                args.inputs, args.out, accuracy, args.guarantee, bundle=args.model, engine=args.engine,
                actors=args.actors, workers=args.workers, threads=args.threads, batch_size=args.batch_size, shard_size=args.shard_size,
                flush_seconds=args.flush_seconds, address=args.address, check_taxonomy=args.check_taxonomy,
                max_pixels=args.max_pixels, path_column=args.path_column, progress=progress, classifier=clf,
            )
    except BatchError as err:
        raise UsageError(str(err)) from None
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        print("interrupted: the rows answered so far are written; run the same command to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.stop()
    # the calibration's warnings (a target no lambda certifies), once; not Ray's deprecation notes
    ours = [w for w in caught if issubclass(w.category, UserWarning) and not issubclass(w.category, DeprecationWarning)
            and "/ray/" not in w.filename.replace("\\", "/")]
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in ours):
        print(f"warning: {message}", file=sys.stderr)
    print(summary, file=sys.stderr)
    return EXIT_FAILED_INPUTS if summary.failed else EXIT_OK


if __name__ == "__main__":  # python -m hedged.cli.batch
    raise SystemExit(main())
