#!/usr/bin/env python3
"""Try a TFLite / LiteRT export of a bundle's network with litert-torch (docs/export.md).

Not part of export.py: litert-torch pulls jax, transformers, torchao, ai-edge-litert and
litert-converter, far more than the project should depend on. Run it in a separate
virtual environment that sees the project's packages, e.g.::

    python -m venv /tmp/ltvenv && echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /tmp/ltvenv/lib/python3.11/site-packages/shared.pth
    /tmp/ltvenv/bin/pip install litert-torch
    PYTHONPATH=$PWD /tmp/ltvenv/bin/python bench/experiments/litert_export.py --out /tmp/clothing_fp32.tflite

It converts the fp32 network (logits only) and prints the largest logit difference
against torch on one photo.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "bundles" / "clothing"))
    p.add_argument("--image", default=str(REPO / "examples" / "polo.jpg"))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import litert_torch

    from hedged.models.bundle import load_bundle

    t0 = time.perf_counter()
    b = load_bundle(args.model)
    model = b.model.eval()
    x = torch.from_numpy(b.preprocess.batch_array([args.image]))
    edge = litert_torch.convert(model, (x,))
    edge.export(str(args.out))
    diff = float(np.abs(np.asarray(edge(x)) - model(x).detach().numpy()).max())
    print(f"litert-torch {getattr(litert_torch, '__version__', '?')}, torch {torch.__version__}: "
          f"{args.out} ({args.out.stat().st_size / 1e6:.1f} MB), max |logit diff| {diff:.2e}, "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
