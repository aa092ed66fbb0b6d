"""Which static int8 quantization keeps the bundle's answers? Chosen on the validation split.

The first int8 export (MinMax ranges, uint8 activations, int8 per-channel weights)
agreed with torch on only ~91% of test photos. This machine's CPU has AVX2 but
no VNNI, where ONNX Runtime's u8s8 kernels (VPMADDUBSW) can saturate int16
partial sums; its docs advise ``reduce_range`` (7-bit weights) or another type
pair when the accuracy drop is large. This script quantizes the fp32 export of
a bundle once per configuration and compares top-1 agreement with the fp32
posteriors and top-1 accuracy on the bundle's *validation* ids (never test).

    python bench/experiments/int8_configs.py --bundle models/bundles/clothing \
        --data ../shared/data/clothing --out bench/results/int8_configs.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "u8s8-minmax": dict(activation="QUInt8", calibrate="MinMax"),
    "u8s8-minmax-reduce_range": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True),
    "s8s8-minmax": dict(activation="QInt8", calibrate="MinMax"),
    "u8s8-percentile-reduce_range": dict(activation="QUInt8", calibrate="Percentile", reduce_range=True),
    "s8s8-percentile": dict(activation="QInt8", calibrate="Percentile"),
    "u8s8-entropy-reduce_range": dict(activation="QUInt8", calibrate="Entropy", reduce_range=True),
    # Mixed precision: the layers int8 hurts most stay fp32 (patterns match ONNX node names).
    "u8s8-minmax-rr-fp32-ends": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                     exclude=[r"_conv_stem/", r"_conv_head/", r"_fc/"]),
    "u8s8-minmax-rr-fp32-depthwise": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                          exclude=[r"_depthwise_conv/"]),
    "u8s8-minmax-rr-fp32-ends-depthwise": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                               exclude=[r"_conv_stem/", r"_conv_head/", r"_fc/", r"_depthwise_conv/"]),
    "u8s8-minmax-rr-fp32-ends-last": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                          exclude=[r"_conv_stem/", r"_conv_head/", r"_fc/", "LAST_BLOCKS"]),
    "u8s8-percentile-rr-fp32-ends-depthwise": dict(activation="QUInt8", calibrate="Percentile", reduce_range=True,
                                                   exclude=[r"_conv_stem/", r"_conv_head/", r"_fc/",
                                                            r"_depthwise_conv/"]),
    # Only the convolutions and the classifier int8: residual Adds, pooling and the outputs stay fp32.
    "u8s8-minmax-rr-convs-only": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                      op_types=["Conv", "Gemm"]),
    "u8s8-minmax-rr-convs-only-fp32-ends-depthwise": dict(
        activation="QUInt8", calibrate="MinMax", reduce_range=True, op_types=["Conv", "Gemm"],
        exclude=[r"_conv_stem/", r"_conv_head/", r"_fc/", r"_depthwise_conv/"]),
    "u8s8-minmax-rr-fp32-head-depthwise": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                               exclude=[r"_conv_head/", r"_fc/", r"_depthwise_conv/"]),
    # uint8 weights too: ONNX Runtime's u8u8 kernels do not use VPMADDUBSW, so no int16 saturation.
    "u8u8-minmax": dict(activation="QUInt8", weight="QUInt8", calibrate="MinMax"),
    "u8u8-minmax-fp32-depthwise": dict(activation="QUInt8", weight="QUInt8", calibrate="MinMax",
                                       exclude=[r"_depthwise_conv/"]),
    # int8_sensitivity.py: quantizing the stem alone, or block 0's depthwise conv alone, moves the
    # posteriors 20-30x more than any other single layer; both touch the stem's output tensor.
    "u8s8-minmax-rr-fp32-stem-block0": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                            exclude=[r"_conv_stem/", r"_blocks\.0/"]),
    "u8s8-minmax-rr-fp32-stem-block01": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                             exclude=[r"_conv_stem/", r"_blocks\.[01]/"]),
    "u8s8-minmax-fp32-stem-block0": dict(activation="QUInt8", calibrate="MinMax",
                                         exclude=[r"_conv_stem/", r"_blocks\.0/"]),
    "u8s8-minmax-rr-fp32-stem-block01-head": dict(activation="QUInt8", calibrate="MinMax", reduce_range=True,
                                                  exclude=[r"_conv_stem/", r"_blocks\.[01]/", r"_conv_head/",
                                                           r"_fc/"]),
}


def excluded_nodes(model_path, patterns) -> list[str]:
    """The export's :func:`fp32_nodes`, with "LAST_BLOCKS" standing for the last two MBConv blocks."""
    from hedged.models.export import fp32_nodes

    if "LAST_BLOCKS" in patterns:
        names = fp32_nodes(model_path, [r"_blocks\."])
        blocks = sorted({int(m.group(1)) for n in names if (m := re.search(r"_blocks\.(\d+)/", n))})
        patterns = [p for p in patterns if p != "LAST_BLOCKS"] + [rf"_blocks\.{b}/" for b in blocks[-2:]]
    return fp32_nodes(model_path, patterns)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/bundles/clothing"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--n-quant", type=int, default=128, help="train images for the activation ranges")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hedged.models.bundle import load_bundle
    from hedged.models.export import _CalibrationReader, _split_paths, export_onnx_file
    from hedged.models.onnx_model import get_session
    from hedged.models.tta import rotate_array

    bundle = load_bundle(args.bundle)
    splits, _ = _split_paths(bundle, args.data)
    val_paths, val_y = splits["validation"]
    pre, angles, temp = bundle.preprocess, bundle.tta_angles, bundle.temperature
    t0 = time.perf_counter()
    x = pre.batch_array(list(val_paths))
    views = [rotate_array(x, a) for a in angles]
    print(f"preprocessed {len(val_paths)} validation photos x {len(angles)} views in {time.perf_counter() - t0:.0f} s",
          flush=True)

    def probs(path):
        sess = get_session(path, args.threads)
        out = []
        for v in views:
            logits = np.concatenate([sess.run(["logits"], {"image": v[s:s + 16]})[0] for s in range(0, len(v), 16)])
            z = logits / temp
            z = np.exp(z - z.max(1, keepdims=True))
            out.append(z / z.sum(1, keepdims=True))
        return np.mean(out, 0)

    results = {}
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx_file(bundle.model, tmp / "fp32.onnx", pre.input_size)
        prep = tmp / "pre.onnx"
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        ref = probs(fp32)
        results["fp32"] = {"accuracy": float((ref.argmax(1) == val_y).mean())}
        print(f"fp32: accuracy {results['fp32']['accuracy']:.3f}", flush=True)
        train = splits["train"][0]
        pick = np.linspace(0, len(train) - 1, min(args.n_quant, len(train))).round().astype(int)
        reader = _CalibrationReader(train[pick], pre, angles)
        for name in args.configs:
            cfg = CONFIGS[name]
            reader.rewind()
            q = tmp / f"{name}.onnx"
            t0 = time.perf_counter()
            quantize_static(
                str(prep), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=getattr(QuantType, cfg["activation"]), weight_type=getattr(QuantType, cfg.get("weight", "QInt8")),
                calibrate_method=getattr(CalibrationMethod, cfg["calibrate"]),
                reduce_range=cfg.get("reduce_range", False),
                nodes_to_exclude=excluded_nodes(prep, cfg.get("exclude", [])),
                op_types_to_quantize=cfg.get("op_types"),
            )
            tq = time.perf_counter() - t0
            t0 = time.perf_counter()
            p = probs(q)
            ti = time.perf_counter() - t0
            r = {
                "accuracy": float((p.argmax(1) == val_y).mean()),
                "agreement_with_fp32": float((p.argmax(1) == ref.argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(p - ref).max()),
                "quantize_s": round(tq, 1),
                "inference_s": round(ti, 1),
                "size_mb": round(q.stat().st_size / 1e6, 2),
                "fp32_nodes": len(excluded_nodes(prep, cfg.get("exclude", []))),
            }
            results[name] = r
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"split": "validation", "n": int(len(val_y)), "results": results},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
