#!/usr/bin/env python3
"""Batch prediction: --engine local against --engine ray, resume overhead, memory per actor.

Every row answers the same ``--n`` photos (the first of the data folder, sorted) into a fresh
output folder with the default int8 bundle and ``hedged.batch.predict_batch``, each in a fresh
process (so that one row's warm caches or Ray cluster do not help the next):

* ``local 1x2``  this process, ONNX Runtime with 2 threads (the default on 2 cores);
* ``local 1x1``  the same with 1 thread (for reference);
* ``local 2x1``  two worker processes (``--workers 2``), 1 thread each;
* ``ray 1x2``    one Ray Data actor with 2 threads;
* ``ray 2x1``    two actors with 1 thread each.

``end to end`` is photos / wall time of the call (hashing, model load, Ray start, writing
included); ``steady`` is the rate between the first and the last rows arriving (what a long
run converges to). ``resume`` reruns the finished ``local 1x2`` output as a user would, as a
fresh ``hedged batch`` process (every photo hashed, nothing answered), wall time.
Peak memory: the process's peak RSS (local; with workers, each worker's ``VmHWM`` as for
actors), or each Ray actor's peak RSS (``VmHWM`` of the
``ray::MapWorker`` processes, sampled every 0.2 s).

    python bench/bench_batch.py --data ../shared/data/clothing --n 2000 --out bench/results/batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model

CONFIGS = {"local 1x2": ("local", 1, 2), "local 1x1": ("local", 1, 1), "local 2x1": ("local", 2, 1),
           "ray 1x2": ("ray", 1, 2), "ray 2x1": ("ray", 2, 1)}


def _actor_peaks(stop: threading.Event, peaks: dict) -> None:
    """Peak RSS (MiB) of each ray::MapWorker process, sampled until ``stop``."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"MapWorker" not in cmd and b"spawn_main" not in cmd:
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[pid] = max(peaks.get(pid, 0.0), int(line.split()[1]) / 1024)
            except OSError:
                continue
        stop.wait(0.2)


def run_one(args) -> dict:
    """One configuration, in this (fresh) process; prints one JSON object."""
    from hedged.batch import predict_batch

    engine, actors, threads = CONFIGS[args.config]
    paths = json.loads(Path(args.list).read_text())
    stamps = []

    def progress(done, total):
        stamps.append((time.perf_counter(), done))

    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_actor_peaks, args=(stop, peaks), daemon=True)
    if engine == "ray" or actors > 1:
        sampler.start()
    summary = predict_batch(paths, args.run_out, engine=engine, actors=actors if engine == "ray" else None,
                            workers=actors if engine == "local" else 1, threads=threads,
                            batch_size=args.batch_size, progress=progress)
    stop.set()
    if sampler.is_alive():
        sampler.join()
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    return {
        "config": args.config, "engine": engine, "actors": actors, "threads": threads,
        "photos": summary.total, "answered": summary.answered, "failed": summary.failed,
        "seconds": round(summary.seconds, 2),
        "end_to_end_photos_per_s": round(summary.photos_per_second, 2),
        "steady_photos_per_s": round((n1 - n0) / (t1 - t0), 2) if t1 > t0 else None,
        "peak_rss_mib_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_mib_per_actor": sorted(round(v, 1) for v in peaks.values()) or None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/clothing"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    ap.add_argument("--run-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.config:
        print(json.dumps(run_one(args)))
        return

    images = sorted(p.resolve() for p in (args.data / "images").glob("*.jpg"))[: args.n]
    if len(images) < args.n:
        raise SystemExit(f"only {len(images)} photos in {args.data / 'images'}")
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    listing = work / "paths.json"
    listing.write_text(json.dumps([str(p) for p in images]))
    load_before = os.getloadavg()
    rows = []
    try:
        for name in args.configs:
            out = work / name.replace(" ", "_")
            run = subprocess.run(
                [sys.executable, __file__, "--config", name, "--list", str(listing), "--run-out", str(out),
                 "--batch-size", str(args.batch_size)],
                capture_output=True, text=True, check=False,
            )
            if run.returncode != 0:
                raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
            row = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
        resume = None
        done = work / "local_1x2"
        if done.exists():
            # a manifest of the same photos, as a user would rerun it
            manifest = work / "paths.csv"
            manifest.write_text("path\n" + "\n".join(str(p) for p in images) + "\n")
            # the first run named the photos one by one (absolute paths); the manifest's are the same keys
            t = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "hedged", "batch", str(manifest), "--out", str(done),
                                  "--batch-size", str(args.batch_size)],
                                 capture_output=True, text=True, check=False)
            resume = {"seconds": round(time.perf_counter() - t, 2), "stderr": run.stderr.strip().splitlines()[-1],
                      "returncode": run.returncode}
            print(json.dumps({"resume": resume}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    result = {
        "command": "python bench/bench_batch.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
        "resume": resume,
    }
    local = next((r for r in rows if r["config"] == "local 1x2"), None)
    if local:
        for r in rows:
            r["end_to_end_vs_local_1x2"] = round(r["end_to_end_photos_per_s"] / local["end_to_end_photos_per_s"], 3)
            if r["steady_photos_per_s"] and local["steady_photos_per_s"]:
                r["steady_vs_local_1x2"] = round(r["steady_photos_per_s"] / local["steady_photos_per_s"], 3)
    print(f"\n{'config':<11} {'end to end':>11} {'steady':>8} {'vs local':>9} {'peak RSS MiB':>22}")
    for r in rows:
        mem = r["peak_rss_mib_per_actor"] or r["peak_rss_mib_process"]
        print(f"{r['config']:<11} {r['end_to_end_photos_per_s']:>11} {r['steady_photos_per_s'] or '-':>8} "
              f"{r.get('end_to_end_vs_local_1x2', '-'):>9} {mem!s:>22}")
    if resume:
        print(f"resume over the finished output: {resume['seconds']} s ({resume['stderr']})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
