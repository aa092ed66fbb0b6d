"""Benchmark: start-up time of the command line, whole processes as a user runs them.

Three commands, each run ``--repeats`` times (default 5) in a fresh process; the
median wall time is reported:

* ``predict.py examples/polo.jpg``: the first answer for one photo with the
  bundled model (imports, bundle loading, calibration, one forward pass);
* ``predict.py --help``;
* an argument error (``predict.py examples/polo.jpg --accuracy 2``).

Then ``python -X importtime`` of the first command lists the modules that cost
the most (cumulative import time), to show where the start-up goes.

Goals (issue 10), on an idle machine: first answer <= 2.5 s; --help and
argument errors <= 0.5 s. Numbers taken on a busy machine are not comparable.

    python bench/bench_startup.py --out bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model  # noqa: E402  (bench/ is sys.path[0] for a script)

COMMANDS = {
    "first_answer": ["predict.py", "examples/polo.jpg"],
    "help": ["predict.py", "--help"],
    "argument_error": ["predict.py", "examples/polo.jpg", "--accuracy", "2"],
}
EXPECTED_STATUS = {"first_answer": 0, "help": 0, "argument_error": 2}
GOALS_S = {"first_answer": 2.5, "help": 0.5, "argument_error": 0.5}


def _env() -> dict:
    # the checkout's hedged package, whatever is installed
    return {**os.environ, "PYTHONPATH": str(REPO)}


def time_command(argv: list[str], expected: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` fresh runs of ``python argv...`` from the repository root."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, *argv], cwd=REPO, env=_env(), capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != expected:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expected}: {done.stderr.strip()}")
    return times


def import_offenders(argv: list[str], top: int) -> list[dict]:
    """The ``top`` modules with the largest cumulative import time (``python -X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=REPO, env=_env(),
                          capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        # "import time:  self [us] | cumulative | imported package", indented by nesting
        if not line.startswith("import time:"):
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        if not self_us.strip().isdigit():
            continue  # the header line
        rows.append({"module": name.strip(), "self_s": int(self_us) / 1e6, "cumulative_s": int(cumulative_us) / 1e6})
    rows.sort(key=lambda r: r["cumulative_s"], reverse=True)
    return rows[:top]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    p.add_argument("--top", type=int, default=15, help="import offenders to list (default 15)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "startup.json"))
    args = p.parse_args(argv)

    results = {}
    for name, cmd in COMMANDS.items():
        times = time_command(cmd, EXPECTED_STATUS[name], args.repeats)
        results[name] = {
            "command": "python " + " ".join(cmd),
            "median_s": statistics.median(times),
            "runs_s": times,
            "goal_s": GOALS_S[name],
        }
        print(f"{name:15s} median {results[name]['median_s']:.2f} s  (goal {GOALS_S[name]} s; "
              f"runs {', '.join(f'{t:.2f}' for t in times)})")
    offenders = import_offenders(COMMANDS["first_answer"], args.top)
    print("largest cumulative import times (python -X importtime predict.py examples/polo.jpg):")
    for r in offenders:
        print(f"  {r['cumulative_s']:6.2f} s  {r['module']}")
    loadavg = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {
        "benchmark": "startup",
        "command": "python bench/bench_startup.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats,
        "results": results,
        "import_offenders": offenders,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        # a busy machine makes every number here larger: keep the load beside them
        "loadavg_1_5_15": list(loadavg) if loadavg else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
