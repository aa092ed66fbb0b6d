#!/usr/bin/env python3
"""HTTP API and web page for hedged predictions: see `python serve.py --help` and docs/serving.md."""

from hedged.cli.serve import main

raise SystemExit(main())
