#!/usr/bin/env python3
"""Evaluation report of hedged prediction: see `python evaluate.py --help` and docs/usage.md."""

from hedged.cli.evaluate import main

raise SystemExit(main())
