"""Shared pieces of the command-line mains: one-line errors, argument parsing, bundle loading."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hedged.classifier import check_accuracy, check_angles

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument or setup problem: printed as one ``error: ...`` line, exit 2."""


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one ``error: ...`` line (no usage dump) and exit 2."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def run_cli(parser: argparse.ArgumentParser, run, argv=None) -> int:
    """Parse ``argv`` and call ``run(args)``; a :class:`UsageError` becomes one line and exit 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader went away (`predict.py --json ... | head`): stop quietly, as Unix tools do;
        # stdout goes to devnull so the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED_INPUTS


def parse_accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--accuracy must be a number in (0, 1], got {text!r}") from None
    try:
        return check_accuracy(value)
    except ValueError:
        raise UsageError(f"--accuracy must be in (0, 1], got {text!r}") from None


def parse_tta(text: str | None):
    """``None`` (the bundle's angles), or a tuple of angles; ``off`` means no rotation."""
    if text is None:
        return None
    if text.strip().lower() in ("off", "none"):
        return (0.0,)
    try:
        return check_angles([float(a) for a in text.split(",") if a.strip()])
    except ValueError:
        raise UsageError(f"--tta must be 'off' or comma-separated degrees like 0,90,180,270, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def load_classifier(model, **kwargs):
    """``HedgedClassifier.from_bundle`` with setup problems turned into :class:`UsageError`."""
    from hedged.classifier import HedgedClassifier

    if model is not None and not Path(model).exists():
        raise UsageError(f"model bundle not found: {model}")
    if model is None:
        from hedged.models.bundle import DEFAULT_BUNDLE

        if not Path(DEFAULT_BUNDLE).exists():
            raise UsageError(f"the default model bundle is missing ({DEFAULT_BUNDLE}); pass --model DIR")
    try:
        return HedgedClassifier.from_bundle(model, **kwargs)
    except (ValueError, OSError, KeyError) as err:
        where = model if model is not None else "the default bundle"
        raise UsageError(f"cannot load model bundle {where}: {err}") from None
