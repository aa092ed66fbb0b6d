#!/usr/bin/env python3
"""Try a TFLite / LiteRT export of a bundle's network with litert-torch (docs/export.md).

Not part of export.py: litert-torch pulls jax, transformers, torchao, ai-edge-litert and
litert-converter, far more than the project should depend on. Run it in a separate
virtual environment that sees the project's packages, e.g.::

    python -m venv /tmp/ltvenv && echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /tmp/ltvenv/lib/python3.11/site-packages/shared.pth
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /tmp/ltcons.txt   # keep the project's torch
    /tmp/ltvenv/bin/pip install -c /tmp/ltcons.txt litert-torch
    PYTHONPATH=$PWD /tmp/ltvenv/bin/python bench/experiments/litert_export.py --out /tmp/clothing_fp32.tflite
    PYTHONPATH=$PWD /tmp/ltvenv/bin/python bench/experiments/litert_export.py --int8 --out /tmp/clothing_int8.tflite

It converts the network (logits only), fp32 or, with ``--int8``, static post-training int8
through litert-torch's PT2E route (torch.export -> prepare_pt2e with litert-torch's
PT2EQuantizer, per-channel symmetric weights -> calibration on ``--n-calib`` train-split
photos -> convert_pt2e -> litert_torch.convert with a QuantConfig). It then runs the
.tflite with the ai-edge-litert Interpreter on ``--n-eval`` validation photos (one view, no
rotation) and records the top-1 agreement with torch's logits, the largest logit
difference, the file size, the conversion time and the tensor dtypes in
``--results`` (bench/results/litert.json, one entry per ``--key``, default the mode).

``--keep-fp32 conv.stem blocks.0 fc`` leaves the stem, the first block and the classifier in
float: 99.0 % agreement on the 409 validation photos against 97.8 % with everything in int8,
whose int8 output clips the logits to the calibration photos' range (see the notes there).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data/clothing")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _photos(model_dir: Path, split: str, n: int, data: Path) -> list[str]:
    ids = json.loads((model_dir / "split.json").read_text())[split][:n]
    return [str(data / "images" / f"{i}.jpg") for i in ids]


def _torch_logits(model, batch: np.ndarray, chunk: int = 16) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(batch[i:i + chunk])).numpy()
                               for i in range(0, len(batch), chunk)])


def _tflite_logits(path: Path, batch: np.ndarray, threads: int) -> tuple[np.ndarray, dict, float]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()

    def desc(d):
        scale, zero = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "shape": [int(s) for s in d["shape"]],
                "scale": float(scale), "zero_point": int(zero)}

    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops: dict[str, int] = {}
    for op in it._get_ops_details():  # op name and output dtype: which ops really run in int8
        if op["op_name"] == "DELEGATE" or not len(op["outputs"]):
            continue
        key = f"{op['op_name']}:{np.dtype(tensors[op['outputs'][0]]['dtype']).name}"
        ops[key] = ops.get(key, 0) + 1
    info = {"input": desc(inp), "output": desc(out), "ops": dict(sorted(ops.items()))}
    in_scale, in_zero = inp.get("quantization", (0.0, 0))
    out_scale, out_zero = out.get("quantization", (0.0, 0))
    rows = []
    t0 = time.perf_counter()
    for x in batch:
        x = x[None]
        if np.issubdtype(inp["dtype"], np.integer):
            x = np.clip(np.round(x / in_scale) + in_zero, np.iinfo(inp["dtype"]).min,
                        np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        y = it.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            y = (y.astype(np.float32) - out_zero) * out_scale
        rows.append(y.reshape(-1))
    ms = (time.perf_counter() - t0) / len(batch) * 1e3
    return np.stack(rows), info, ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "models" / "bundles" / "clothing"))
    p.add_argument("--image", default=str(REPO / "examples" / "polo.jpg"),
                   help="example input for tracing")
    p.add_argument("--data", type=Path, default=DATA, help="folder with images/<id>.jpg")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--int8", action="store_true", help="static int8 PT2E quantization")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    p.add_argument("--keep-fp32", nargs="*", default=[], metavar="MODULE",
                   help="modules left in float, in PT2EQuantizer's spelling of torch.export's module "
                        "stack: 'conv.stem' for _conv_stem, 'blocks.0' for _blocks[0] (the layers the "
                        "int8 ONNX export keeps in fp32)")
    p.add_argument("--n-calib", type=int, default=64, help="train-split photos for calibration")
    p.add_argument("--n-eval", type=int, default=100, help="validation photos for the comparison")
    p.add_argument("--threads", type=int, default=1, help="torch and interpreter threads")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "litert.json")
    p.add_argument("--key", help="entry name in --results (default: fp32 or int8)")
    p.add_argument("--reuse", action="store_true",
                   help="evaluate an existing --out without converting again (keeps the recorded conversion)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import litert_torch

    from hedged.models.bundle import load_bundle

    model_dir = Path(args.model)
    b = load_bundle(model_dir)
    model = b.model.eval()
    x = torch.from_numpy(b.preprocess.batch_array([args.image]))
    mode = "int8" if args.int8 else "fp32"
    reference = None
    entry: dict = {"mode": mode, "command": "PYTHONPATH=$PWD /tmp/ltvenv/bin/python " + " ".join(
        ["bench/experiments/litert_export.py", *(argv if argv is not None else sys.argv[1:])])}

    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    t0 = time.perf_counter()
    if args.reuse:
        old = results.get(args.key or mode, {})
        entry.update({k: old[k] for k in ("command", "calibration_s", "quantization", "convert_s") if k in old})
    elif args.int8:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=not args.per_tensor))
        if args.keep_fp32:  # set_module_name(name, None) is "not supported yet": drop the annotations
            from litert_torch.quantize.pt2e_quantizer import _get_module_name_filter

            keep = [_get_module_name_filter(name) for name in args.keep_fp32]
            annotate = quantizer.annotate

            def annotate_except_kept(gm):
                gm = annotate(gm)
                for node in gm.graph.nodes:
                    if any(f(node) for f in keep):
                        node.meta.pop("quantization_annotation", None)
                return gm

            quantizer.annotate = annotate_except_kept
        graph = torch.export.export(model, (x,)).module()
        graph = prepare_pt2e(graph, quantizer)
        calib = b.preprocess.batch_array(_photos(model_dir, "train", args.n_calib, args.data))
        t_cal = time.perf_counter()
        with torch.no_grad():
            for img in calib:
                graph(torch.from_numpy(img[None]))
        entry["calibration_s"] = round(time.perf_counter() - t_cal, 1)
        graph = move_exported_model_to_eval(convert_pt2e(graph, fold_quantize=False))
        reference = graph  # torch's simulation of the quantized network (quantize/dequantize pairs)
        edge = litert_torch.convert(graph, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
        entry["quantization"] = {"route": "pt2e static", "weights": "per-tensor" if args.per_tensor else
                                 "per-channel symmetric int8", "activations": "per-tensor affine int8 (histogram)",
                                 "kept_fp32": args.keep_fp32,
                                 "calibration_photos": len(calib), "calibration_split": "train"}
    else:
        edge = litert_torch.convert(model, (x,))
    if not args.reuse:
        edge.export(str(args.out))
        entry["convert_s"] = round(time.perf_counter() - t0, 1)
    entry["file"] = str(args.out)
    entry["size_mb"] = round(args.out.stat().st_size / 1e6, 2)
    print(f"converted {mode} in {entry.get('convert_s')} s: {args.out} ({entry['size_mb']} MB)", flush=True)

    paths = _photos(model_dir, "validation", args.n_eval, args.data)
    batch = b.preprocess.batch_array(paths)
    ref = _torch_logits(model, batch)
    got, info, ms = _tflite_logits(args.out, batch, args.threads)
    diff = np.abs(got - ref)
    if reference is not None:
        with torch.no_grad():
            sim = np.concatenate([reference(torch.from_numpy(img[None])).numpy() for img in batch])
        entry["pt2e_reference"] = {
            "what": "torch's quantize/dequantize simulation after convert_pt2e, on the same photos",
            "top1_agreement_with_torch": round(float((sim.argmax(1) == ref.argmax(1)).mean()), 4),
            "top1_agreement_with_tflite": round(float((sim.argmax(1) == got.argmax(1)).mean()), 4),
            "max_abs_logit_diff_vs_tflite": float(np.abs(sim - got).max())}
    entry.update({
        "tensors": info,
        "eval": {"split": "validation", "photos": len(paths), "views": 1, "rotation": False,
                 "top1_agreement_with_torch": round(float((got.argmax(1) == ref.argmax(1)).mean()), 4),
                 "max_abs_logit_diff": float(diff.max()),
                 "mean_abs_logit_diff": float(diff.mean()),
                 "torch_logit_range": [float(ref.min()), float(ref.max())],
                 "interpreter_ms_per_photo": round(ms, 1), "interpreter_threads": args.threads},
        "versions": {"litert-torch": _version("litert-torch"), "ai-edge-litert": _version("ai-edge-litert"),
                     "torch": torch.__version__, "torchao": _version("torchao"),
                     "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    })
    results = json.loads(args.results.read_text()) if args.results.exists() else {}  # again: other runs
    results[args.key or mode] = entry
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
