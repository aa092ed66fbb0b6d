"""Shared pieces of the command-line mains: one-line errors, argument parsing, bundle loading."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Nothing heavy at import: `--help` and argument errors must not pay for numpy,
# scipy or torch. The library is imported where a value is checked or loaded.

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2
# 128 + SIGINT, what shells report for a command stopped with Ctrl-C.
EXIT_INTERRUPTED = 130
#: The reader of our output went away (``| head``): 128 + SIGPIPE, what a shell reports
#: for a Unix tool killed by the signal; not a failure of any input.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """A bad argument or setup problem: printed as one ``error: ...`` line, exit 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one ``error: ...`` line (no usage dump) and exit 2."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def join_option_values(argv, options) -> list[str]:
    """``--tta -15,0,15`` -> ``--tta=-15,0,15`` for the given options.

    argparse takes a value starting with ``-`` for an option unless it looks
    like one negative number; angle lists such as ``-15,0,15`` do not.
    """
    out, it = [], iter(argv)
    for arg in it:
        if arg in options:
            value = next(it, None)
            out.append(arg if value is None else f"{arg}={value}")
        else:
            out.append(arg)
    return out


def run_cli(parser: argparse.ArgumentParser, run, argv=None, joined=("--tta",)) -> int:
    """Parse ``argv`` and call ``run(args)``.

    A :class:`UsageError` becomes one ``error:`` line and exit 2; Ctrl-C one
    ``interrupted`` line and exit 130 (what was written stays written).
    """
    argv = join_option_values(sys.argv[1:] if argv is None else [str(a) for a in argv], joined)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`predict.py --json ... | head`): stop quietly, as Unix tools do;
        # stdout goes to devnull so the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def parse_accuracy(text: str) -> float:
    """``--accuracy``: a number in (0, 1], the rule of ``hedging.check_accuracy``.

    Checked here without importing the library, so that a typo costs no start-up.
    """
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--accuracy must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise UsageError(f"--accuracy must be in (0, 1], got {text!r}")
    return value


def parse_tta(text: str | None):
    """``None`` (the bundle's angles), or a tuple of angles; ``off`` means no rotation.

    Checked without importing the library (finite numbers, no empty item), as
    ``classifier.check_angles`` does, so that a typo costs no start-up.
    """
    import math

    if text is None:
        return None
    if text.strip().lower() in ("off", "none"):
        return (0.0,)
    try:
        # every item must be an angle: "0,,15" is a typo, not "0,15"
        angles = tuple(float(a) for a in text.split(","))
    except ValueError:
        angles = ()
    if not angles or not all(math.isfinite(a) for a in angles):
        raise UsageError(f"--tta must be 'off' or comma-separated degrees like 0,90,180,270, got {text!r}")
    return angles


def check_output_dir(path, what: str = "--out") -> Path:
    """Create ``path`` (a folder) and prove it is writable, before any long work starts.

    Raises :class:`UsageError` with one line naming the folder and the reason.
    """
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise UsageError(f"{what} {path} is not a writable folder: {reason}") from None
    return path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def pixel_count(text: str) -> int:
    """``--max-pixels``: a positive integer; ``50e6`` and ``50_000_000`` are accepted too."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of pixels like 100000000, got {text!r}") from None
    if not value >= 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a positive whole number of pixels, got {text!r}")
    return int(value)


def load_classifier(model, **kwargs):
    """``HedgedClassifier.from_bundle`` with setup problems turned into :class:`UsageError`.

    ``threads``: ONNX Runtime's threads for an exported bundle; for a torch bundle,
    ``torch.set_num_threads`` (process-wide, which is fine for a command line).
    """
    from hedged.classifier import HedgedClassifier

    threads = kwargs.pop("threads", None)
    try:
        clf = HedgedClassifier.from_bundle(model, threads=threads, **kwargs)
        if threads is not None and not hasattr(clf.model, "session"):
            import torch

            torch.set_num_threads(threads)
        return clf
    except (ValueError, OSError, KeyError) as err:
        from hedged.models.bundle import BundleError

        if isinstance(err, BundleError) and str(err).startswith(("model bundle not found", "the default model")):
            raise UsageError(str(err)) from None
        where = model if model is not None else "the default bundle"
        raise UsageError(f"cannot load model bundle {where}: {err}") from None
