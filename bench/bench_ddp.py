#!/usr/bin/env python3
"""Full fine-tuning throughput: one process against torchrun with N processes, same global batch.

Each row trains EfficientNet-Lite1 (every block, ``--full-finetune``) for one epoch at
``--size`` px on the photos ``--limit`` keeps, with global batch ``--batch-size``, and
reads the training images/s of the epoch from the run's checkpoint (``train_img_per_s``:
photos of all processes per second of the training loop, validation not counted):

* ``1 x T``  one process with T = cores threads;
* ``N x 1``  ``torchrun --nproc_per_node=N``, one thread each (gloo).

    python bench/bench_ddp.py --data ../shared/data/clothing --out bench/results/ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model

REPO = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "clothing"))
    ap.add_argument("--arch", default="efficientnet_lite1")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--limit", type=int, default=700)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-norm", default="batch")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    load_before = os.getloadavg()
    for n in args.procs:
        threads = cores if n == 1 else max(1, cores // n)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bundle"
            train = ["-m", "hedged", "train", "--data", args.data, "--out", str(out), "--full-finetune",
                     "--arch", args.arch, "--image-size", str(args.size), "--epochs", "1", "--limit", str(args.limit),
                     "--batch-size", str(args.batch_size), "--tta", "0", "--workers", "0", "--threads", str(threads),
                     "--batch-norm", args.batch_norm, "--quiet", "--log-every", "1000"]
            launch = [sys.executable] if n == 1 else [
                sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--nnodes=1",
                "--master_addr=127.0.0.1", f"--master_port={_port()}"]
            cmd = launch + train  # torchrun -m hedged ..., as a user runs it
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            t = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO)
            wall = time.perf_counter() - t
            if run.returncode != 0:
                raise SystemExit(f"{n} process(es) failed:\n{run.stderr[-3000:]}")
            import torch

            ckpt = torch.load(Path(tmp) / "bundle.checkpoints" / "last.pt", map_location="cpu", weights_only=True)
            epoch = ckpt["history"][0]
            row = {"processes": n, "threads_each": threads, "train_img_per_s": round(epoch["train_img_per_s"], 2),
                   "train_loss": round(epoch["train_loss"], 4), "wall_seconds": round(wall, 1),
                   "global_steps": int(ckpt["scheduler"]["last_epoch"])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"command": "python bench/bench_ddp.py " + " ".join(sys.argv[1:]),
              "machine": {"cpu": cpu_model(), "cores": cores}, "arch": args.arch, "size": args.size,
              "batch_size": args.batch_size, "batch_norm": args.batch_norm,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
