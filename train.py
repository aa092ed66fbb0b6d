#!/usr/bin/env python3
"""Fine-tune a model and write a bundle: see `python train.py --help` and docs/model.md."""

from hedged.cli.train import main

raise SystemExit(main())
