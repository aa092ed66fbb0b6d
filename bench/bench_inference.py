#!/usr/bin/env python3
"""Inference throughput: bare backbone forward vs the whole pipeline, without and with TTA.

All rows use the same clothing JPEGs, the same model and the same batch size:

* ``forward``       the model on an already preprocessed, channels_last batch, as
                    loaded from the checkpoint and with BatchNorm folded into the
                    convolutions (``EfficientNetLite.fuse_batchnorm``, inference only);
* ``decode+prep``   JPEG decode + resize + normalise only (``Preprocess.batch``);
* ``pipeline k=1``  ``models.predict_probs`` from file paths, no TTA (BN-folded model);
* ``pipeline k=K``  ``models.predict_probs`` with ``--angles`` (K rotated views per image);
* ``+ taxonomy check`` the same from logits and features, plus the bundle's
                    out-of-taxonomy detector (its ImageNet head and scores), as
                    ``HedgedClassifier.predict`` runs it (bundles with a detector).

``views/s`` counts each rotated view as one image; the ``vs forward`` column is
views/s divided by the BN-folded bare forward's images/s (how much of the network's speed the
pipeline keeps; the goal is >= 70 %). Each row is the median of ``--repeats`` timed
passes after one warm-up pass; passes are interleaved across rows.

    python bench/bench_inference.py --data ../shared/data/clothing --out bench/results/inference.json

``--backends`` compares the runtimes instead (torch, ONNX fp32, ONNX int8 bundles, in
one run, ``--threads`` threads each): whole-pipeline images/s (``HedgedClassifier.predict_proba``
from file paths) at batch 1 and 8, without and with the bundle's TTA; process start to
first answer of ``predict.py --json examples/polo.jpg`` and that process's peak RSS
(median of ``--repeats`` fresh processes); the model file's size::

    python export.py --model models/bundles/clothing --out /tmp/clothing-fp32 --data ../shared/data/clothing
    python bench/bench_inference.py --backends torch=models/bundles/clothing \
        onnx-fp32=/tmp/clothing-fp32 onnx-int8=models/bundles/clothing-int8 \
        --threads 2 --n-images 32 --out bench/results/backends.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _machine import cpu_model  # noqa: E402  (bench/ is sys.path[0] for a script)
from hedged.models import average_view_probs, create_model, get_spec, predict_logits, predict_probs  # noqa: E402


def pick_images(data: Path, n: int) -> list[Path]:
    """The first ``n`` photos of images.csv (a fixed, label-mixed set)."""
    images = data / "images"
    csv_path = data / "images.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            names = [row["image"] for row in csv.DictReader(f)]
        paths = [images / f"{name}.jpg" for name in names]
    else:
        paths = sorted(images.glob("*.jpg"))
    paths = [p for p in paths if p.is_file()][:n]
    if len(paths) < n:
        raise SystemExit(f"error: wanted {n} images under {images}, found {len(paths)}")
    return paths


def time_round_robin(stages: dict, repeats: int) -> dict[str, float]:
    """Median wall seconds per stage; passes interleave the stages so that load from
    other processes on a shared machine drifts over all of them alike. One warm-up pass."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for rep in range(repeats + 1):
        for name, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "clothing",
                   help="clothing folder with images.csv and images/ (default: %(default)s)")
    p.add_argument("--model", default=None,
                   help="bundle directory whose model, preprocessing and TTA angles are measured (default: the bundled model)")
    p.add_argument("--arch", default=None, help="measure this architecture's ImageNet model and default preprocessing instead")
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward (default: %(default)s)")
    p.add_argument("--angles", default=None, help="TTA angles in degrees (default: the bundle's, or 0,-15,15 with --arch)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no-fuse-bn", dest="fuse_bn", action="store_false",
                   help="run the pipeline on the checkpoint model instead of the BN-folded copy")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--backends", nargs="+", metavar="NAME=BUNDLE", default=None,
                   help="compare these bundles (torch or exported ONNX) end to end instead of the stage table")
    args = p.parse_args(argv)
    if args.backends:
        return compare_backends(args, argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    paths = pick_images(args.data, args.n_images)
    if args.arch:
        model = create_model(args.arch)  # eval mode, channels_last parameters
        detector = None
        pre, default_angles, model_name = get_spec(args.arch).preprocess(), (0.0, -15.0, 15.0), args.arch
    else:
        from hedged.models.bundle import load_bundle

        b = load_bundle(args.model)  # what predict.py runs: the bundle's model, preprocessing and TTA
        model = b.model.eval().to(memory_format=torch.channels_last)
        pre, default_angles, model_name = b.preprocess, b.tta_angles, f"bundle {b.arch}"
        detector = b.detector
    angles = tuple(float(a) for a in args.angles.split(",")) if args.angles else tuple(default_angles)
    fast = copy.deepcopy(model)
    if args.fuse_bn and hasattr(fast, "fuse_batchnorm"):
        fast.fuse_batchnorm()
    bs, n = args.batch_size, len(paths)
    batches = [pre.batch(paths[i : i + bs]) for i in range(0, n, bs)]

    def forward(net):
        def run():
            with torch.inference_mode():
                for x in batches:
                    net(x)
        return run

    def decode():
        for i in range(0, n, bs):
            pre.batch(paths[i : i + bs])

    tta = f"pipeline k={len(angles)} {list(angles)}"
    stages = {
        "forward, checkpoint model": (forward(model), 1),
        "forward, BN folded": (forward(fast), 1),
        "decode+preprocess only": (decode, 0),
        "pipeline k=1 (predict_probs)": (lambda: predict_probs(fast, paths, pre, angles=(0.0,), batch_size=bs), 1),
        tta: (lambda: predict_probs(fast, paths, pre, angles=angles, batch_size=bs), len(angles)),
    }
    if detector is not None:
        def checked():
            logits, feats = predict_logits(fast, paths, pre, angles=angles, batch_size=bs, return_features=True)
            average_view_probs(logits)
            detector.check(logits, feats)

        stages[tta + " + taxonomy check"] = (checked, len(angles))
    seconds = time_round_robin({k: fn for k, (fn, _) in stages.items()}, args.repeats)
    rows = []
    for name, (_, views) in stages.items():
        rows.append({"name": name, "seconds": seconds[name], "images_per_s": n / seconds[name],
                     "views_per_image": views, "views_per_s": n * views / seconds[name]})
    # The pipeline runs the BN-folded model, so it is compared with that model's bare forward.
    bare = rows[1]["images_per_s"]
    for row in rows:
        row["vs_forward"] = row["views_per_s"] / bare if row["views_per_image"] else None

    meta = {
        "model": model_name, "input_size": pre.input_size, "interpolation": pre.interpolation, "n_images": n,
        "batch_size": bs, "angles": list(angles),
        "repeats": args.repeats, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "cpu": cpu_model(), "memory_format": "channels_last", "pipeline_bn_folded": args.fuse_bn,
        "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:])),
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model_name} @ {pre.input_size} px inference, {n} clothing JPEGs, batch {bs}, "
                        f"{meta['torch_threads']} threads ({meta['cpu']})")
    for col in ("stage", "seconds", "images/s", "views/s", "vs forward"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['seconds']:.2f}", f"{r['images_per_s']:.1f}",
                      f"{r['views_per_s']:.1f}" if r["views_per_image"] else "-",
                      f"{100 * r['vs_forward']:.0f} %" if r["vs_forward"] is not None else "-")
    Console().print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


_HWM = (
    "import atexit, runpy, sys\n"
    "def _hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM'):\n"
    "            sys.stderr.write('VmHWM_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(_hwm)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _first_answer(bundle: str, image: Path, threads: int) -> tuple[float, float]:
    """Wall seconds from process start to predict.py's answer, and that process's peak RSS (MiB).

    The peak is the child's own VmHWM (read at its exit): the rusage of a child forked
    from this torch-laden process would count the parent's pages from before exec.
    """
    import subprocess

    cmd = [sys.executable, "-c", _HWM, str(REPO / "predict.py"), "--model", bundle, "--json",
           "--threads", str(threads), str(image)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"error: predict.py failed for {bundle}: {proc.stderr.strip()[-300:]}")
    kb = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VmHWM_KB ")]
    return seconds, (kb[-1] / 1024 if kb else float("nan"))


def compare_backends(args, argv) -> int:
    """torch vs ONNX fp32 vs ONNX int8 bundles, whole pipeline (see the module docstring)."""
    from hedged import HedgedClassifier
    from hedged.models.bundle import model_file, read_manifest

    threads = args.threads or 2
    torch.set_num_threads(threads)
    paths = pick_images(args.data, args.n_images)
    polo = REPO / "examples" / "polo.jpg"
    results = []
    for spec in args.backends:
        name, _, bundle = spec.partition("=")
        if not bundle:
            raise SystemExit(f"error: --backends wants NAME=BUNDLE, got {spec!r}")
        manifest = read_manifest(bundle)
        clf = HedgedClassifier.from_bundle(bundle, threads=threads)
        angles = clf.tta_angles
        stages = {}
        for bs in (1, 8):
            # one view, and the views the bundle answers with (what a user pays): bundles with
            # other TTA sets stay comparable column by column
            for label, tta in (("one view", (0.0,)), ("as shipped", angles)):
                key = f"batch {bs}, {label}"
                stages[key] = (lambda bs=bs, tta=tta: clf.predict_proba(
                    paths, tta=tta, allow_uncalibrated=True, batch_size=bs))
        seconds = time_round_robin(stages, args.repeats)
        # fresh processes, measured one at a time: start-up includes imports and model loading
        starts = [_first_answer(bundle, polo, threads) for _ in range(max(1, args.repeats))]
        results.append({
            "backend": name, "bundle": bundle, "runtime": manifest.get("runtime", "torch"),
            "precision": manifest.get("onnx", {}).get("precision", manifest.get("weights_dtype", "float32")),
            "file_mb": (Path(bundle) / model_file(manifest)).stat().st_size / 1e6,
            "tta_angles": list(angles),
            "images_per_s": {k: len(paths) / s for k, s in seconds.items()},
            "first_answer_s": statistics.median(w for w, _ in starts),
            "first_answer_peak_rss_mib": statistics.median(m for _, m in starts),
        })
        del clf
    base = results[0]["images_per_s"]
    for r in results:
        r["speedup_vs_first"] = {k: v / base[k] for k, v in r["images_per_s"].items()}

    from rich.console import Console
    from rich.table import Table

    keys = list(results[0]["images_per_s"])
    table = Table(title=f"whole pipeline, {len(paths)} clothing JPEGs, {threads} threads ({cpu_model()})")
    for col in ["backend", "file MB", *[f"img/s {k}" for k in keys], "first answer s", "peak RSS MiB"]:
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in results:
        cells = [f"{r['images_per_s'][k]:.1f} ({r['speedup_vs_first'][k]:.1f}x)" for k in keys]
        table.add_row(r["backend"], f"{r['file_mb']:.1f}", *cells, f"{r['first_answer_s']:.2f}",
                      f"{r['first_answer_peak_rss_mib']:.0f}")
    Console().print(table)
    if args.out:
        meta = {"n_images": len(paths), "threads": threads, "repeats": args.repeats, "cpu": cpu_model(),
                "cpu_count": os.cpu_count(), "torch": torch.__version__,
                "command": " ".join([Path(sys.argv[0]).as_posix()] + (argv if argv is not None else sys.argv[1:]))}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "backends": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
