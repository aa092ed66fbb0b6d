"""Benchmark: DARTS calibration and decisions on the ImageNet WordNet DAGs.

Compares ``hedging.Darts`` (exact envelope calibration, one envelope per
sample for any number of targets, sparse node posteriors in chunks) with the
straightforward implementation of the public reference code (dense L x V
ancestor matrix, dense N x V node posteriors, 25 bisection steps on lambda in
[0, lambda_bar] per target, one argmax pass per target's decisions), on
synthetic calibrated posteriors (labels drawn from the posteriors).

Workloads, in the same run for both: "fit + answers": calibrate on the N
samples and answer every sample at every target; "decide": one target's
decisions for all N samples. A last section measures what the
contributor-level guarantee (``pac-group``) costs against the photo-level one
in information gain, on the clothing bundle and on synthetic clustered data.

Memory is measured with tracemalloc (numpy and scipy allocate their arrays
through it): the peak of allocations made during a phase, beyond what existed
when it started (the posterior matrix itself is not counted).

    python bench/bench_hedging.py --out bench/results/hedging.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hedged.hedging import Darts  # noqa: E402
from hedged.hedging import metrics as hm  # noqa: E402
from hedged.taxonomy import Taxonomy  # noqa: E402

console = Console(width=150)


def synthetic_posteriors(rng, n: int, n_leaves: int, chunk: int = 2000):
    """Float32 softmax posteriors with a random boosted class; labels drawn from them."""
    probs = np.empty((n, n_leaves), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        z = rng.standard_normal((m, n_leaves), dtype=np.float32)
        # The boost grows with log(n_leaves) so both taxonomies get similar top-1 accuracy.
        boost = rng.uniform(3.0, 14.0, m) + math.log(n_leaves / 1000)
        z[np.arange(m), rng.integers(0, n_leaves, m)] += boost.astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs[s : s + m] = z
        cum = np.cumsum(z, axis=1, dtype=np.float64)
        labels[s : s + m] = np.minimum((cum < rng.random((m, 1)) * cum[:, -1:]).sum(axis=1), n_leaves - 1)
    return probs, labels


class Measure:
    """Wall time and tracemalloc peak (bytes above the start) of a block."""

    def __enter__(self):
        self.base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        return False


# ---------------------------------------------------------------- baseline
class ReferenceDarts:
    """BASELINE, not the library: the straightforward DARTS of the reference code.

    Dense ancestor matrix (L x V), dense node posteriors (N x V, float64), and
    per target: return 0 if f_0 meets it, else 25 bisection steps on
    [0, lambda_bar], each a full argmax over N x V and an accuracy count.
    """

    def __init__(self, taxonomy):
        self.anc = taxonomy.membership.toarray()  # L x V float64
        self.rewards = taxonomy.rewards()
        self.r_root = self.rewards[taxonomy.node_index(taxonomy.root)]

    def fit(self, probs, labels):
        self.node_p = np.asarray(probs, dtype=np.float64) @ self.anc
        self.correct = self.anc[labels] > 0  # N x V: is node v right for sample i
        return self

    def accuracy(self, lam):
        pred = np.argmax(self.node_p * (self.rewards + lam), axis=1)
        return self.correct[np.arange(len(pred)), pred].mean()

    def lambda_for(self, target, steps=25):
        if self.accuracy(0.0) >= target:
            return 0.0
        eps = 1.0 - target
        lo, hi = 0.0, ((1 - eps) * self.rewards.max() - self.r_root) / eps
        for _ in range(steps):
            mid = (lo + hi) / 2
            if self.accuracy(mid) >= target:
                hi = mid
            else:
                lo = mid
        return hi

    def decide(self, probs, lam):
        node_p = np.asarray(probs, dtype=np.float64) @ self.anc
        return np.argmax(node_p * (self.rewards + lam), axis=1)


def same_answer(tax, ours, baseline):
    """Whether answers agree once the baseline's single-child nodes are named by their
    child, as hedging does (same leaves, same probability, same reward)."""
    from hedged.hedging._base import most_specific

    return ours == most_specific(tax)[baseline]


# ---------------------------------------------------------------- runs
def run_ours(tax, probs, labels, targets, guarantee):
    out = {}
    with Measure() as m:
        rule = Darts(tax, guarantee=guarantee).fit(probs, labels)
    out["fit_s"], out["fit_peak_bytes"] = m.seconds, m.peak
    with Measure() as m:
        lams = [rule.lambda_for(t) for t in targets]
    out["targets_s"], out["lambdas"] = m.seconds, lams
    out["calibrate_total_s"] = out["fit_s"] + out["targets_s"]
    out["segments"] = int(len(rule.calibration_.starts))
    with Measure() as m:
        answers = rule.predict_index(probs, accuracy=targets)
    out["answers_s"], out["answers_peak_bytes"] = m.seconds, m.peak
    out["fit_and_answers_s"] = out["fit_s"] + out["answers_s"]
    lam = lams[len(lams) // 2]
    with Measure() as m:
        pred = rule.decide_index(probs, lam)
    out["decide_s"], out["decide_peak_bytes"] = m.seconds, m.peak
    out["decisions_per_s"] = len(probs) / m.seconds
    out["decide_lambda"] = lam
    out["calibration_accuracy"] = [float(rule.calibration_.accuracy[np.searchsorted(rule.calibration_.starts, x, "right") - 1]) if math.isfinite(x) else 1.0 for x in lams]
    out["_pred"] = pred
    out["_answers"] = answers
    out["_rule"] = rule
    return out


def run_baseline(tax, probs, labels, targets, progress):
    out = {}
    with Measure() as m:
        ref = ReferenceDarts(tax).fit(probs, labels)
        task = progress.add_task("baseline: bisection per target", total=len(targets))
        lams = []
        for t in targets:
            lams.append(ref.lambda_for(t))
            progress.advance(task)
    out["calibrate_total_s"], out["calibrate_peak_bytes"], out["lambdas"] = m.seconds, m.peak, lams
    out["calibration_accuracy"] = [float(ref.accuracy(x)) for x in lams]
    del ref.node_p, ref.correct
    task = progress.add_task("baseline: decisions per target", total=len(targets))
    answers = np.empty((len(probs), len(targets)), dtype=np.int64)
    with Measure() as m:
        for j, x in enumerate(lams):
            answers[:, j] = ref.decide(probs, x)
            progress.advance(task)
    out["answers_s"], out["answers_peak_bytes"] = m.seconds, m.peak
    out["fit_and_answers_s"] = out["calibrate_total_s"] + out["answers_s"]
    lam = lams[len(lams) // 2]
    with Measure() as m:
        pred = ref.decide(probs, lam)
    out["decide_s"], out["decide_peak_bytes"] = m.seconds, m.peak
    out["decisions_per_s"] = len(probs) / m.seconds
    out["_pred"], out["decide_lambda"], out["_answers"] = pred, lam, answers
    return out


def _clustered(rng, n_groups, size, hard=0.3, wrong=0.9):
    """4-leaf posteriors with a contributor random effect (as tests/test_hedging_groups.py)."""
    probs = 0.9 * rng.dirichlet(np.full(4, 0.4), size=n_groups * size) + 0.025
    g = np.repeat(np.arange(n_groups), size)
    is_hard = rng.random(n_groups) < hard
    y = np.minimum((probs.cumsum(1) < rng.random((len(probs), 1))).sum(1), 3)
    y = np.where(is_hard[g] & (rng.random(len(probs)) < wrong), rng.integers(0, 4, n_groups)[g], y)
    return probs, y, g


def group_cost(bundle: Path, targets, seed: int) -> dict:
    """Information gain and accuracy of DARTS under the photo- and the contributor-level bound."""
    import warnings

    cases = {}
    if (bundle / "calibration.npz").is_file():
        tax = Taxonomy.from_yaml(bundle / "taxonomy.yaml")
        with np.load(bundle / "calibration.npz") as z:
            cal = (z["probs"], z["labels"], z["groups"] if "groups" in z.files else None)
        with np.load(bundle / "test.npz") as z:
            test = (z["probs"], z["labels"])
        if cal[2] is not None:
            cases[f"{bundle.name} bundle (calibration {len(cal[1])} photos / {len(set(cal[2]))} contributors, "
                  f"largest {int(np.unique(cal[2], return_counts=True)[1].max())}; test {len(test[1])})"] = (tax, cal, test)
    rng = np.random.default_rng(seed)
    tax4 = Taxonomy.from_edges([("root", "X"), ("root", "Y"), ("X", "a"), ("X", "b"), ("Y", "c"), ("Y", "d")])
    p, y, g = _clustered(rng, 40, 25)
    tp, ty, _ = _clustered(rng, 800, 25)
    cases["synthetic clustered (calibration 40 contributors x 25 photos; test 20,000 photos)"] = (tax4, (p, y, g), (tp, ty))
    out = {}
    for name, (tax, (cp, cy, cg), (tp, ty)) in cases.items():
        rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rules = {"pac": Darts(tax).fit(cp, cy), "pac-group": Darts(tax).fit(cp, cy, groups=cg)}
            pred = {k: r.predict_index(tp, accuracy=list(targets)) for k, r in rules.items()}
        for j, t in enumerate(targets):
            row = {"target": float(t)}
            for k in rules:
                row[f"{k}_info_gain"] = float(hm.answer_gain(tax, pred[k][:, j]).mean())
                row[f"{k}_accuracy"] = float(tax.is_correct(pred[k][:, j], ty).mean())
            rows.append(row)
        out[name] = rows
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet", type=Path, default=REPO.parent / "shared" / "data" / "wordnet")
    ap.add_argument("--n", type=int, default=50_000, help="ImageNet-1k samples")
    ap.add_argument("--n21k", type=int, default=10_000, help="ImageNet-21k samples (0: skip)")
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--guarantee", default="expected", choices=["expected", "pac"],
                    help="our rule's criterion; 'expected' is what the baseline computes")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "bundles" / "clothing",
                    help="bundle whose calibration groups measure the pac-group cost")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    targets = np.round(np.linspace(0.70, 0.985, args.targets), 4)
    tracemalloc.start()
    results = {"platform": platform.platform(), "python": sys.version.split()[0], "numpy": np.__version__,
               "memory_measure": "tracemalloc peak above the phase start (posterior matrix excluded)",
               "targets": targets.tolist(), "guarantee": args.guarantee, "runs": {}}

    with Progress(console=console, transient=True) as progress:
        for name, synsets, n, baseline in [
            ("imagenet1k", "imagenet1k_synsets.txt", args.n, not args.skip_baseline),
            ("imagenet21k", "imagenet21k_synsets.txt", args.n21k, False),
        ]:
            if n <= 0:
                continue
            task = progress.add_task(f"{name}: taxonomy + posteriors", total=None)
            tax = Taxonomy.from_wordnet(args.wordnet / "wordnet_is_a.txt", args.wordnet / synsets)
            probs, labels = synthetic_posteriors(rng, n, tax.n_leaves)
            progress.remove_task(task)
            run = {"n_samples": n, "n_leaves": tax.n_leaves, "n_nodes": tax.n_nodes,
                   "posterior_bytes": probs.nbytes, "posterior_dtype": str(probs.dtype),
                   "flat_accuracy": float(np.mean(probs.argmax(1) == labels))}
            task = progress.add_task(f"{name}: ours", total=None)
            ours = run_ours(tax, probs, labels, targets, args.guarantee)
            progress.remove_task(task)
            if baseline:
                base = run_baseline(tax, probs, labels, targets, progress)
                run["decisions_agree"] = float(np.mean(same_answer(tax, ours["_pred"], base["_pred"]))) if ours["decide_lambda"] == base["decide_lambda"] else None
                # Answers at every target, each at its own rule's lambda (they differ by the bisection's tolerance).
                run["answers_agree"] = float(np.mean(same_answer(tax, ours["_answers"], base["_answers"])))
                base.pop("_answers")
                # Same decisions at the baseline's lambda (independent of calibration).
                run["decide_agree_at_baseline_lambda"] = float(np.mean(same_answer(tax, ours["_rule"].decide_index(probs, base["decide_lambda"]), base["_pred"])))
                base.pop("_pred")
                run["baseline"] = base
                run["speedup_calibrate"] = base["calibrate_total_s"] / ours["calibrate_total_s"]
                run["speedup_decide"] = base["decide_s"] / ours["decide_s"]
                run["speedup_fit_and_answers"] = base["fit_and_answers_s"] / ours["fit_and_answers_s"]
            else:
                dense_gb = (tax.n_leaves * tax.n_nodes + n * tax.n_nodes * 2) * 8 / 1e9
                run["baseline_skipped"] = f"dense ancestor + node-posterior matrices would need ~{dense_gb:.1f} GB"
            ours.pop("_pred")
            ours.pop("_rule")
            ours.pop("_answers")
            run["ours"] = ours
            results["runs"][name] = run
            del probs, labels

    results["group_cost"] = group_cost(args.bundle, (0.5, 0.6, 0.7, 0.8, 0.9, 0.95), args.seed)

    table = Table(title=f"DARTS calibration ({len(targets)} targets, guarantee={args.guarantee}) and decisions")
    for col in ("taxonomy", "impl", "N x L", "calibrate s", f"fit + answers at {len(targets)} targets s",
                "peak MB (x post.)", "decisions/s", "decide peak MB"):
        table.add_column(col, justify="right")
    for name, run in results["runs"].items():
        post = run["posterior_bytes"]
        shape = f"{run['n_samples']} x {run['n_leaves']} ({run['n_nodes']} nodes)"
        o = run["ours"]
        peak = max(o["fit_peak_bytes"], o["decide_peak_bytes"], o["answers_peak_bytes"])
        table.add_row(name, "hedging.Darts", shape, f"{o['calibrate_total_s']:.2f}", f"{o['fit_and_answers_s']:.2f}",
                      f"{peak / 1e6:.0f} ({peak / post:.2f}x)", f"{o['decisions_per_s']:,.0f}", f"{o['decide_peak_bytes'] / 1e6:.0f}")
        if "baseline" in run:
            b = run["baseline"]
            bpeak = max(b["calibrate_peak_bytes"], b["answers_peak_bytes"])
            table.add_row(name, "baseline (dense, bisection)", shape, f"{b['calibrate_total_s']:.2f}",
                          f"{b['fit_and_answers_s']:.2f}", f"{bpeak / 1e6:.0f} ({bpeak / post:.2f}x)",
                          f"{b['decisions_per_s']:,.0f}", f"{b['decide_peak_bytes'] / 1e6:.0f}")
    console.print(table)
    for name, run in results["runs"].items():
        line = f"{name}: posterior matrix {run['posterior_bytes'] / 1e6:.0f} MB ({run['posterior_dtype']}), flat accuracy {run['flat_accuracy']:.3f}"
        if "baseline" in run:
            lam_o, lam_b = np.array(run["ours"]["lambdas"]), np.array(run["baseline"]["lambdas"])
            line += (f"; speed-up fit + answers {run['speedup_fit_and_answers']:.1f}x, calibrate "
                     f"{run['speedup_calibrate']:.1f}x, decide {run['speedup_decide']:.1f}x; "
                     f"answers agree {run['answers_agree']:.4f}; "
                     f"decisions agree at the same lambda: {run['decide_agree_at_baseline_lambda']:.4f}; "
                     f"max |lambda ours - bisection| {np.max(np.abs(lam_o - lam_b)):.2e}")
        else:
            line += f"; baseline skipped: {run['baseline_skipped']}"
        console.print(line)
    for name, rows in results["group_cost"].items():
        gt = Table(title=f"Cost of the contributor-level bound: {name}")
        for col in ("target", "pac: info gain", "pac: accuracy", "pac-group: info gain", "pac-group: accuracy"):
            gt.add_column(col, justify="right")
        for r in rows:
            gt.add_row(f"{r['target']:g}", f"{r['pac_info_gain']:.3f}", f"{r['pac_accuracy']:.3f}",
                       f"{r['pac-group_info_gain']:.3f}", f"{r['pac-group_accuracy']:.3f}")
        console.print(gt)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=float))
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
