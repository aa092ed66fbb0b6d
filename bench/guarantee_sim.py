"""Violation rates of the accuracy guarantee when photos come in clusters (issue 24).

Draws many calibration sets of contributors with the shipped calibration split's sizes
(hedging.simulation.SHIPPED_CALIBRATION_SIZES) from populations whose correctness is
correlated within a contributor, calibrates DARTS on each with every guarantee, and
counts how often the population accuracy of the chosen lambda falls below the target
(must be <= delta), with the mean normalised information gain of the answers.

    python bench/guarantee_sim.py --reps 1000 --out bench/results/guarantee_sim.json

Rows: the photo-level bound (``pac``, photos as independent draws), the contributor
bound with each contributor capped at 10 photos (``pac-group``, the default when the
calibration data has groups), the average-seller bound (``pac-seller``, cap 1), and
the contributor bound under the rank-id attack (ids that sort the best contributors
first) with the fixed seeded order and with the old sorted-id order.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hedged.hedging import Darts  # noqa: E402
from hedged.hedging import groups as groups_mod  # noqa: E402
from hedged.hedging.metrics import information_gain  # noqa: E402
from hedged.hedging.simulation import (  # noqa: E402
    DESIGNED_CALIBRATION_SIZES,
    SHIPPED_CALIBRATION_SIZES,
    TREE4,
    Population,
    accuracy_at,
    capped_weights,
    clustered_sample,
    icc,
    weighted_accuracy_curve,
)

TARGETS = (0.8, 0.9, 0.95)
POPULATIONS = {
    # name: Population(hard_mean, concentration); smaller concentration = more spread = larger ICC
    "icc~0.05": Population(0.08, 1.0, 0.1),
    "icc~0.1": Population(0.08, 0.4, 0.1),
    "icc~0.15": Population(0.1, 0.1, 0.1),
    "icc~0.2": Population(0.15, 0.04, 0.1),
}


def methods():
    # name -> (fit kwargs, cap used for the truth, attack, visit groups in sorted-id order?)
    seller = {"groups": True, "group_cap": 1}
    return {
        "pac (photos independent)": ({}, None, None, False),
        "pac-seller (default)": (seller, 1, None, False),
        "pac-group (cap 10)": ({"groups": True, "group_cap": 10}, 10, None, False),
        "pac-seller, ids sort best first": (seller, 1, "best", False),
        "pac-seller, ids sort best first, visited in id order (before)": (seller, 1, "best", True),
        "pac-seller, ids sort smallest first, visited in id order (before)": (seller, 1, "small", True),
    }


def run(population: Population, reps: int, seed: int, sizes=DESIGNED_CALIBRATION_SIZES, delta: float = 0.05,
        population_copies: int = 200, which=None):
    rng = np.random.default_rng(seed)
    pop_sizes = np.tile(np.asarray(sizes), population_copies)
    pp, py, pg = clustered_sample(rng, pop_sizes, population)
    truth = {cap: weighted_accuracy_curve(Darts(TREE4), pp, py, capped_weights(pg, cap)) for cap in (None, 10, 1)}
    ms = {k: v for k, v in methods().items() if which is None or k in which}
    fails = {m: np.zeros(len(TARGETS)) for m in ms}
    gain = {m: np.zeros(len(TARGETS)) for m in ms}
    iccs = []
    orig_order = groups_mod.visiting_order
    for _ in range(reps):
        p, y, g = clustered_sample(rng, sizes, population)
        for name, (kw, cap, attack, old) in ms.items():
            kw = dict(kw)
            groups = None
            if kw.pop("groups", False):
                groups = g
                if attack:
                    # ids whose sorted order puts the contributors with the most right
                    # answers at lambda = 0 first, or the smallest contributors first
                    if attack == "best":
                        key = -np.bincount(g, weights=(p.argmax(1) == y)) / np.bincount(g)
                    else:
                        key = np.bincount(g).astype(float)
                    rank = np.argsort(np.argsort(key, kind="stable"), kind="stable")
                    groups = rank[g]
            if old:
                groups_mod.visiting_order = lambda n, seed=0: np.arange(n)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rule = Darts(TREE4, delta=delta, **kw).fit(p, y, groups)
            finally:
                groups_mod.visiting_order = orig_order
            for k, t in enumerate(TARGETS):
                lam = rule.calibration_.select_many(np.array([t]))[0][0]
                fails[name][k] += accuracy_at(truth[cap], lam) < t
                if math.isfinite(lam):
                    pred = rule.decide_index(p, lam)
                    gain[name][k] += float(information_gain(TREE4, pred, y, normalize=True).mean())
        iccs.append(icc(p.argmax(1) == y, g))
    rows = []
    for name in ms:
        for k, t in enumerate(TARGETS):
            rate = fails[name][k] / reps
            rows.append({"method": name, "target": t, "violation_rate": rate,
                         "mc_se": math.sqrt(max(rate * (1 - rate), 1e-12) / reps),
                         "info_gain_on_calibration": gain[name][k] / reps})
    return {"icc_top1_correctness": float(np.nanmean(iccs)), "rows": rows}


DESIGNS = {"shipped before (65 contributors)": SHIPPED_CALIBRATION_SIZES,
           "designed split (117 contributors)": DESIGNED_CALIBRATION_SIZES}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = {"reps": args.reps, "delta": args.delta, "designs": {}}
    for d, (design, sizes) in enumerate(DESIGNS.items()):
        out["designs"][design] = {"sizes": list(sizes), "populations": {}}
        for i, (name, pop) in enumerate(POPULATIONS.items()):
            res = run(pop, args.reps, args.seed + 10 * d + i, sizes=sizes, delta=args.delta)
            out["designs"][design]["populations"][name] = res
            print(f"## {design}, {name}: measured ICC of top-1 correctness {res['icc_top1_correctness']:.3f}")
            print("| method | " + " | ".join(f"violations @{t}" for t in TARGETS) + " |")
            print("|---|" + "---:|" * len(TARGETS))
            for m in methods():
                r = [x for x in res["rows"] if x["method"] == m]
                print(f"| {m} | " + " | ".join(f"{x['violation_rate']:.3f} (gain {x['info_gain_on_calibration']:.2f})"
                                              for x in r) + " |")
            sys.stdout.flush()
    out["seconds"] = time.perf_counter() - t0
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
