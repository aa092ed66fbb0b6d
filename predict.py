#!/usr/bin/env python3
"""Hedged predictions for images: see `python predict.py --help` and docs/usage.md."""

from hedged.cli.predict import main

raise SystemExit(main())
