"""Which layers does int8 hurt? One-layer-at-a-time sensitivity, on validation photos.

For each Conv/Gemm node of the bundle's fp32 ONNX export, quantize *only that
node* (static QDQ, per-channel int8 weights, uint8 activations, MinMax with
reduce_range: the export's configuration) and measure how far the posteriors
move from fp32 on ``--n`` validation photos (one view): mean KL(fp32 || int8)
and top-1 flips. The most sensitive layers are the candidates to keep in fp32
(``nodes_to_exclude``); int8_configs.py then checks a mixed model on the whole
validation split. Never the test split.

    python bench/experiments/int8_sensitivity.py --data ../shared/data/clothing \
        --out bench/results/int8_sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/bundles/clothing"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=96, help="validation photos scored (one view)")
    ap.add_argument("--n-quant", type=int, default=64, help="train photos for the activation ranges")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hedged.models.bundle import load_bundle
    from hedged.models.export import _CalibrationReader, _split_paths, export_onnx_file
    from hedged.models.onnx_model import get_session

    bundle = load_bundle(args.bundle)
    splits, _ = _split_paths(bundle, args.data)
    val = splits["validation"][0]
    pick = np.linspace(0, len(val) - 1, min(args.n, len(val))).round().astype(int)
    x = bundle.preprocess.batch_array(list(val[pick]))
    temp = bundle.temperature

    def probs(path):
        sess = get_session(path, args.threads)
        z = np.concatenate([sess.run(["logits"], {"image": x[s:s + 16]})[0] for s in range(0, len(x), 16)]) / temp
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="int8-sens-") as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx_file(bundle.model, tmp / "fp32.onnx", bundle.preprocess.input_size)
        prep = tmp / "pre.onnx"
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        ref = probs(prep)
        names = [n.name for n in onnx.load(str(prep)).graph.node if n.op_type in ("Conv", "Gemm")]
        train = splits["train"][0]
        sel = np.linspace(0, len(train) - 1, min(args.n_quant, len(train))).round().astype(int)
        reader = _CalibrationReader(train[sel], bundle.preprocess, bundle.tta_angles)
        t_all = time.perf_counter()
        for i, name in enumerate(names):
            reader.rewind()
            q = tmp / "q.onnx"
            quantize_static(str(prep), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
                            nodes_to_quantize=[name])
            p = probs(q)
            kl = float(np.mean(np.sum(ref * (np.log(ref + 1e-12) - np.log(p + 1e-12)), 1)))
            flips = int((p.argmax(1) != ref.argmax(1)).sum())
            results.append({"node": name, "kl": kl, "flips": flips})
            print(f"[{i + 1}/{len(names)}] {name}: KL {kl:.5f}, flips {flips}/{len(x)} "
                  f"({time.perf_counter() - t_all:.0f} s)", flush=True)
    results.sort(key=lambda r: -r["kl"])
    print("most sensitive:", *(f"{r['node']} {r['kl']:.5f}" for r in results[:12]), sep="\n  ")
    if args.out:
        Path(args.out).write_text(json.dumps({"split": "validation", "n": int(len(x)), "layers": results},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
