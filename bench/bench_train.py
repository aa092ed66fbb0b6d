#!/usr/bin/env python3
"""Wall time and peak memory of training the clothing model with the shipped defaults.

Runs ``train.py`` in a child process (no feature cache: end to end, as a user
would) and reports wall time and the child's peak resident memory
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``), with the machine's core
count and CPU model.

    python bench/bench_train.py --data ../shared/data/clothing --out bench/results/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "clothing"))
    p.add_argument("--taxonomy", default=str(REPO / "taxonomies" / "clothing.yaml"))
    p.add_argument("--bundle-out", default=None, help="where the bundle goes (default: a temporary directory)")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more train.py options after --")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle_out or str(Path(tmp) / "bundle")
        extra = [a for a in args.extra if a != "--"]
        cmd = [sys.executable, str(REPO / "train.py"), "--data", args.data, "--taxonomy", args.taxonomy,
               "--out", bundle, "--quiet", *extra]
        print("command:", shlex.join(cmd))
        print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO)
        wall = time.perf_counter() - t0
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        metrics = {}
        manifest = Path(bundle) / "bundle.json"
        if proc.returncode == 0 and manifest.is_file():
            m = json.loads(manifest.read_text())
            metrics = {"test": m["metrics"]["test"], "seconds": m["metrics"]["seconds"],
                       "bundle_bytes": sum(f.stat().st_size for f in Path(bundle).iterdir())}
    result = {
        "command": shlex.join(cmd),
        "returncode": proc.returncode,
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(rss_kib / 1024, 1),
        **metrics,
    }
    print(f"wall time: {wall / 60:.1f} min   peak RSS: {rss_kib / 1024:.0f} MiB   exit {proc.returncode}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
