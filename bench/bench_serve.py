#!/usr/bin/env python3
"""Serving throughput and latency: the HTTP server on loopback against the library itself.

In one run, on the same photos and the same bundle:

* ``library``    ``HedgedClassifier.predict`` on one photo per call, in this process,
                 for ``--duration`` seconds (what the server does per request, without HTTP);
* ``http xN``    ``serve.py`` in its own process on 127.0.0.1, N clients each sending
                 one photo per ``POST /v1/predict`` (multipart) back to back for
                 ``--duration`` seconds, over keep-alive connections.

Reported per row: requests, images/s, p50 / p99 latency, errors (any non-200
answer or per-image error), and images/s as a share of the library's. Goals: 0
errors; at 8 clients >= 80% of the library's images/s; p99 at 1 client < 2x p50.

    python bench/bench_serve.py --out bench/results/serve.json
    python bench/bench_serve.py --model DIR --photos '../shared/data/clothing/images/*.jpg' --limit 64
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from _machine import cpu_model  # noqa: E402  (bench/ is sys.path[0] for a script)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def library_rate(model, photos: list[Path], duration: float) -> dict:
    """Photos per second through the facade, one photo per call, after one warm-up call."""
    from hedged import HedgedClassifier

    clf = HedgedClassifier.from_bundle(model)
    clf.predict(photos[0])
    latencies = []
    end = time.perf_counter() + duration
    i = 0
    while time.perf_counter() < end:
        start = time.perf_counter()
        clf.predict(photos[i % len(photos)])
        latencies.append(time.perf_counter() - start)
        i += 1
    total = sum(latencies)
    return {
        "row": "library",
        "clients": 0,
        "requests": len(latencies),
        "images_per_s": len(latencies) / total,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "errors": 0,
    }


def http_rate(base: str, photos: list[Path], clients: int, duration: float) -> dict:
    blobs = [(p.name, p.read_bytes()) for p in photos]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    end_at = [0.0]

    def client(k: int) -> None:
        mine, bad = [], 0
        with httpx.Client(base_url=base, timeout=120) as c:
            start_gate.wait()
            i = k
            while time.perf_counter() < end_at[0]:
                name, data = blobs[i % len(blobs)]
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/predict", files=[("images", (name, data, "image/jpeg"))])
                    ok = r.status_code == 200 and "error" not in r.json()["results"][0]
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t0)
                bad += not ok
                i += clients
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    end_at[0] = began + duration
    start_gate.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {
        "row": f"http x{clients}",
        "clients": clients,
        "requests": len(latencies),
        "images_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 99),
        "errors": errors[0],
    }


def start_server(model, port: int, queue_size: int) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "serve.py"), "--port", str(port), "--log-level", "warning",
           "--queue-size", str(queue_size)]
    if model is not None:
        cmd += ["--model", str(model)]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("error: the server was not ready within 300 s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="bundle directory (default: the one predict.py uses)")
    p.add_argument("--photos", default=str(REPO / "examples" / "*.jpg"), help="glob of photos (default examples/*.jpg)")
    p.add_argument("--limit", type=int, default=64, help="at most this many photos")
    p.add_argument("--clients", default="1,8", help="comma-separated client counts (default 1,8)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per row (default 30)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)

    photos = [Path(x) for x in sorted(glob.glob(args.photos))][: args.limit]
    if not photos:
        raise SystemExit(f"error: no photos match {args.photos}")
    clients = [int(c) for c in args.clients.split(",")]

    rows = [library_rate(args.model, photos, args.duration)]
    port = free_port()
    server = start_server(args.model, port, queue_size=max(clients) + 1)
    try:
        base = f"http://127.0.0.1:{port}"
        httpx.post(f"{base}/v1/predict", files=[("images", (photos[0].name, photos[0].read_bytes(), "image/jpeg"))],
                   timeout=120)  # warm-up
        for n in clients:
            rows.append(http_rate(base, photos, n, args.duration))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()

    lib = rows[0]["images_per_s"]
    print(f"{len(photos)} photos ({args.photos}), {args.duration:g} s per row, {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"{'row':<10} {'requests':>8} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'vs library':>10}")
    for r in rows:
        r["vs_library"] = r["images_per_s"] / lib
        print(f"{r['row']:<10} {r['requests']:>8} {r['images_per_s']:>7.2f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['errors']:>6} {100 * r['vs_library']:>9.0f}%")
    one = next((r for r in rows if r["clients"] == 1), None)
    eight = next((r for r in rows if r["clients"] == 8), None)
    goals = {
        "zero_errors": all(r["errors"] == 0 for r in rows),
        "eight_clients_at_least_80pct_of_library": None if eight is None else eight["vs_library"] >= 0.8,
        "p99_under_2x_p50_at_one_client": None if one is None else one["p99_ms"] < 2 * one["p50_ms"],
    }
    print("goals:", ", ".join(f"{k}={v}" for k, v in goals.items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "command": "python bench/bench_serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "photos": [str(p) for p in photos],
            "duration_s": args.duration,
            "rows": rows,
            "goals": goals,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
