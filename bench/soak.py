#!/usr/bin/env python3
"""The server under load and abuse, on loopback, bounded in time (issue 25).

Starts ``hedged serve`` (the default bundle unless ``--model``) in its own process on
127.0.0.1 and runs, in order:

1. **capacity**: 8 clients sending one photo per request back to back for
   ``--capacity-seconds``: answered requests per second;
2. **soak**: ``--soak-seconds`` at 70% of that rate (paced clients): latency, RSS, open
   file descriptors and threads sampled every second, and ``/metrics`` compared with the
   client's own counts;
3. **overload**: 3x capacity for ``--overload-seconds`` (503 with Retry-After expected),
   then the time until a lone client is answered again;
4. **big photos**: one request of 16 PNGs of 7000 x 7000 (160 kB each): with the default
   pixel budget a 413 before decoding; with the budget raised to allow it, the peak RSS
   growth during the request and the RSS after it;
5. **abandoned**: 10 requests of 32 photos whose clients go away after 0.3 s: how many
   ran to the end, how long a new client waited, and ``/metrics``'s cancelled counts;
6. **slow client**: headers one byte a second: seconds until the server closes.

    python bench/soak.py --out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import glob
import io
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
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    kv = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(kv["VmRSS"].split()[0]) / 1024, "threads": int(kv["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def metrics(base: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for s in fam.samples:
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def counted(m: dict, route: str, status: str) -> float:
    return sum(v for k, v in m.items() if k.startswith("hedged_http_requests_total") and f"route={route}" in k
               and k.endswith(f"status={status}"))


def start_server(model, env_extra=None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, str(REPO / "serve.py"), "--port", str(port), "--log-level", "warning",
           "--queue-size", "16"] + (["--model", model] if model else [])
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 180
    while time.monotonic() < end:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def clients(base, photos, seconds, n, pace=None):
    """n threads posting one photo per request for ``seconds``; ``pace``: requests/s in total."""
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    stats = {"ok": 0, "503": 0, "other": 0, "lat": []}

    def run(k):
        with httpx.Client(base_url=base, timeout=60) as c:
            i = k
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                p = photos[i % len(photos)]
                r = c.post("/v1/predict", files={"images": (Path(p).name, Path(p).read_bytes())})
                dt = time.monotonic() - t0
                with lock:
                    if r.status_code == 200:
                        stats["ok"] += 1
                        stats["lat"].append(dt)
                    elif r.status_code == 503:
                        stats["503"] += 1
                    else:
                        stats["other"] += 1
                i += n
                if pace:
                    time.sleep(max(0.0, n / pace - dt))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(stats.pop("lat")) or [float("nan")]
    stats.update(p50_s=statistics.median(lat), p99_s=lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                 per_s=stats["ok"] / seconds)
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "clothing" / "images" / "*.jpg"))
    ap.add_argument("--capacity-seconds", type=float, default=20)
    ap.add_argument("--soak-seconds", type=float, default=120)
    ap.add_argument("--overload-seconds", type=float, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    photos = sorted(glob.glob(args.photos))[:64] or sorted(str(p) for p in (REPO / "examples").glob("*.jpg"))
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
           "load_before": os.getloadavg()}

    proc, base = start_server(args.model)
    try:
        rss0 = proc_stats(proc.pid)
        cap = clients(base, photos, args.capacity_seconds, 8)
        out["capacity"] = cap
        print("capacity", cap, flush=True)
        samples = []
        sampler_stop = threading.Event()

        def sample():
            while not sampler_stop.is_set():
                samples.append(proc_stats(proc.pid))
                time.sleep(1)

        m0 = metrics(base)
        th = threading.Thread(target=sample)
        th.start()
        soak = clients(base, photos, args.soak_seconds, 4, pace=0.7 * cap["per_s"])
        sampler_stop.set()
        th.join()
        m1 = metrics(base)
        soak["metrics_200"] = counted(m1, "/v1/predict", "200") - counted(m0, "/v1/predict", "200")
        soak["client_200"] = soak["ok"]
        soak["rss_mib_start_end_max"] = [samples[0]["rss_mib"], samples[-1]["rss_mib"], max(s["rss_mib"] for s in samples)]
        soak["fds_start_end"] = [samples[0]["fds"], samples[-1]["fds"]]
        soak["threads_start_end"] = [samples[0]["threads"], samples[-1]["threads"]]
        out["soak"] = soak
        print("soak", soak, flush=True)
        over = clients(base, photos, args.overload_seconds, 24)
        t0 = time.monotonic()
        while httpx.post(f"{base}/v1/predict", files={"images": ("a.jpg", Path(photos[0]).read_bytes())},
                         timeout=60).status_code != 200:
            time.sleep(0.05)
        over["recovery_s"] = time.monotonic() - t0
        out["overload"] = over
        print("overload", over, flush=True)

        # abandoned requests: 10 x 32 photos, clients gone after 0.3 s
        files = [("images", (f"{k}.jpg", Path(photos[k % len(photos)]).read_bytes())) for k in range(32)]
        m0 = metrics(base)

        def abandon():
            try:
                httpx.post(f"{base}/v1/predict", files=files, timeout=0.3)
            except httpx.TimeoutException:
                pass

        ts = [threading.Thread(target=abandon) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t0 = time.monotonic()
        r = httpx.post(f"{base}/v1/predict", files={"images": ("a.jpg", Path(photos[0]).read_bytes())}, timeout=60)
        waited = time.monotonic() - t0
        time.sleep(1.0)
        m1 = metrics(base)
        cancelled = {s: m1.get(f"hedged_requests_cancelled_total|stage={s}", 0) - m0.get(f"hedged_requests_cancelled_total|stage={s}", 0)
                     for s in ("reading", "queued", "running")}
        out["abandoned"] = {"requests": 10, "photos_each": 32, "new_client_status": r.status_code,
                            "new_client_waited_s": waited, "cancelled": cancelled,
                            "counted_200": counted(m1, "/v1/predict", "200") - counted(m0, "/v1/predict", "200")}
        print("abandoned", out["abandoned"], flush=True)

        # slow client: headers one byte per second
        host, port = base.removeprefix("http://").split(":")
        s = socket.create_connection((host, int(port)))
        t0 = time.monotonic()
        closed_after = None
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(120):
                s.sendall(b"X")
                time.sleep(1)
        except OSError:
            closed_after = time.monotonic() - t0
        out["slow_client"] = {"closed_after_s": closed_after}
        print("slow client", out["slow_client"], flush=True)
        out["rss_mib_at_start"] = rss0["rss_mib"]
    finally:
        stop(proc)

    # big photos: the default budget refuses before decoding; a raised budget bounds the peak
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (120, 90, 60)).save(buf, format="PNG")
    big = buf.getvalue()
    out["big"] = {"png_bytes": len(big)}
    for name, env in (("default budget", {}), ("budget 1e9 pixels", {"HEDGED_MAX_REQUEST_PIXELS": "1000000000"})):
        proc, base = start_server(args.model, env)
        try:
            # the server's working set for a 16-photo request (ONNX Runtime's arena, batch buffers)
            # is reached by any such request; measure the big photos' own cost above it
            warm = [("images", (f"{k}.jpg", Path(photos[k % len(photos)]).read_bytes())) for k in range(16)]
            httpx.post(f"{base}/v1/predict", files=warm, timeout=300)
            cold = proc_stats(proc.pid)["rss_mib"]
            before = proc_stats(proc.pid)["rss_mib"]
            peak = [before]
            done = threading.Event()

            def watch():
                while not done.is_set():
                    peak.append(proc_stats(proc.pid)["rss_mib"])
                    time.sleep(0.05)

            w = threading.Thread(target=watch)
            w.start()
            t0 = time.monotonic()
            r = httpx.post(f"{base}/v1/predict", files=[("images", (f"{k}.png", big)) for k in range(16)], timeout=300)
            seconds = time.monotonic() - t0
            time.sleep(1)
            done.set()
            w.join()
            after = proc_stats(proc.pid)["rss_mib"]
            out["big"][name] = {"status": r.status_code, "seconds": seconds, "rss_before_mib": before,
                                "rss_after_a_16_photo_request_mib": cold,
                                "peak_growth_mib": max(peak) - before, "rss_after_minus_before_mib": after - before,
                                "detail": r.json().get("detail") if r.status_code != 200 else None}
            print("big", name, out["big"][name], flush=True)
        finally:
            stop(proc)
    out["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
