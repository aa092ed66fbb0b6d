"""``export.py``: a torch bundle -> an ONNX bundle (fp32 or int8) that runs without torch."""

from __future__ import annotations

import argparse
import sys

from hedged.cli._common import EXIT_OK, Parser, UsageError, positive_int, run_cli

DESCRIPTION = """\
Export a model bundle for fast, torch-free inference (ONNX Runtime: servers,
and phones through ONNX Runtime Mobile). The exported bundle carries the
taxonomy, preprocessing, TTA angles and temperature, the network as ONNX
(fp32, or static int8 QDQ per-channel with --int8), and its OWN calibration and
test posteriors, recomputed through the exported network on the source
bundle's calibration and test photos: the accuracy guarantee follows the
exported model. It also holds decision.json, the hedging rule as plain data
(docs/export.md).
"""

EPILOG = """\
example:
  python export.py --model models/bundles/clothing --out /tmp/clothing-int8 --int8 \\
      --data ../shared/data/clothing
  python predict.py --model /tmp/clothing-int8 examples/polo.jpg

exit status: 0 exported; 2 usage error (missing bundle, data whose sha256
differs from the one the bundle was trained on, ...).
"""


def build_parser() -> Parser:
    p = Parser(prog="hedged export", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", default=None,
                   help="torch bundle to export (default: models/bundles/clothing)")
    p.add_argument("--out", metavar="DIR", required=True, help="directory of the exported bundle")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantization (QDQ, per-channel), calibrated on train-split photos")
    p.add_argument("--data", metavar="DIR", required=True,
                   help="the data set the bundle was trained on (its CSV sha256 must match the bundle's)")
    p.add_argument("--quant-images", type=positive_int, default=128, metavar="N",
                   help="train photos for int8 calibration (default 128)")
    p.add_argument("--keep-fp32", nargs="*", metavar="REGEX", default=None,
                   help="with --int8: ONNX node names (regular expressions) kept in fp32; default the stem "
                        "and block 0 (chosen on validation, docs/export.md); give no REGEX to quantize every layer")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="ONNX Runtime threads while recomputing the posteriors (default: one per core)")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _run(args) -> int:
    from pathlib import Path

    from hedged.models.bundle import DEFAULT_TORCH_BUNDLE, BundleError

    source = Path(args.model) if args.model else DEFAULT_TORCH_BUNDLE
    if not source.exists():
        raise UsageError(f"model bundle not found: {source}")
    if not Path(args.data).exists():
        raise UsageError(f"data not found: {args.data}")
    try:
        from hedged.export import DEFAULT_FP32_LAYERS, export_bundle
        from hedged.models.onnx_model import MAX_OPSET, MIN_OPSET
    except ImportError as err:
        from hedged.models.extras import hint

        raise UsageError(f"export needs torch and onnx ({err.name or err} is not installed): {hint('export')}") from None
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UsageError(f"--opset must be in {MIN_OPSET}..{MAX_OPSET}, got {args.opset}")

    def log(msg):
        print(msg, file=sys.stderr)

    keep_fp32 = DEFAULT_FP32_LAYERS
    if args.keep_fp32 is not None:
        import re

        if not args.int8:
            raise UsageError("--keep-fp32 applies to --int8 exports only")
        for pattern in args.keep_fp32:
            try:
                re.compile(pattern)
            except re.error as err:
                raise UsageError(f"--keep-fp32 {pattern!r}: not a regular expression ({err})") from None
        keep_fp32 = tuple(args.keep_fp32)

    try:
        out = export_bundle(source, args.out, data=args.data, int8=args.int8, opset=args.opset,
                            n_quant_images=args.quant_images, threads=args.threads, log=log,
                            keep_fp32=keep_fp32)
    except (BundleError, ValueError, OSError) as err:
        raise UsageError(" ".join(str(err).split())) from None
    import json

    manifest = json.loads((out / "bundle.json").read_text())
    test = manifest["metrics"].get("test", {})
    size = (out / manifest["onnx"]["file"]).stat().st_size
    print(f"exported {source} -> {out} ({manifest['onnx']['precision']}, {size / 1e6:.1f} MB)")
    if test:
        print(f"  test top-1 {test['accuracy']:.4f} (source {test.get('source_accuracy', float('nan')):.4f}), "
              f"agreement with source {test.get('top1_agreement_with_source', float('nan')):.4f}, "
              f"max |dp| {test.get('max_abs_prob_diff_vs_source', float('nan')):.2e}, "
              f"hedged pac@0.95 accuracy {test['hedged']['pac@0.95']['accuracy']:.4f}")
    return EXIT_OK
