"""Evaluation report of hedged prediction: metrics, figures and a Markdown page.

``evaluate`` computes every number (from :mod:`hedging.metrics`), the
``plot_*`` functions draw them (matplotlib, Agg canvas, no pyplot state), and
``write_report`` puts ``report.md``, ``metrics.json`` and the PNGs in a folder.
Works on posteriors only, so it serves the bundled CNN and any other classifier.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hedged.hedging import Climbing, Darts, FlatClassifier, LeafGT
from hedged.hedging import metrics as hm
from hedged.taxonomy import Taxonomy

RULES = {"darts": Darts, "climbing": Climbing, "leaf_gt": LeafGT, "flat": FlatClassifier}
RULE_LABELS = {"darts": "DARTS", "climbing": "Climbing", "leaf_gt": "LEAF-GT", "flat": "Flat (leaf argmax)"}
TABLE_TARGETS = (0.80, 0.90, 0.95, 0.99)
# The curves start where hedging begins to matter for typical CNNs and stop
# short of 1.0, where every calibrated rule answers the root.
GRID_TARGETS = tuple(np.round(np.linspace(0.50, 0.99, 50), 2))
FIGURES = {
    "accuracy_specificity": "accuracy_specificity.png",
    "target_accuracy": "target_accuracy.png",
    "depth_shares": "depth_shares.png",
    "reliability": "reliability.png",
    "confusion": "confusion.png",
}
DPI = 100
# Beyond this many leaves a confusion matrix is unreadable and large.
MAX_CONFUSION_LEAVES = 200
ECE_BINS = 15


def _check_split(taxonomy: Taxonomy, probs, labels, what: str):
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != taxonomy.n_leaves:
        raise ValueError(f"{what} probs must have shape (n, {taxonomy.n_leaves}), got {probs.shape}")
    y = np.asarray(taxonomy.resolve_labels(np.asarray(labels)), dtype=np.int64)
    if y.shape != (probs.shape[0],):
        raise ValueError(f"{what} labels must have shape ({probs.shape[0]},) to match the probs, got {y.shape}")
    if probs.shape[0] == 0:
        raise ValueError(f"{what} split is empty")
    return probs, y


def _jsonable(x):
    """Plain JSON types, NaN/inf as null (JSON has no NaN)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Top-1 confidence vs accuracy in equal-width bins (the reliability diagram's data)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, conf, minlength=n_bins) / count
        acc = np.bincount(bins, correct, minlength=n_bins) / count
    return {"edges": np.linspace(0, 1, n_bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def _rule_metrics(taxonomy, rule, test_probs, test_y, targets, table_targets, alpha):
    """Curve over ``targets``, table rows for ``table_targets``, depth shares and the
    answers at the table targets of one fitted rule (one envelope pass for all targets)."""
    every = np.r_[targets, table_targets]
    pred = rule.predict_index(test_probs, accuracy=every)
    grid, at_table = pred[:, : len(targets)], pred[:, len(targets) :]
    curve = hm.accuracy_specificity_curve(rule, test_probs, test_y, targets, alpha=alpha, predictions=grid)
    rows = hm.accuracy_specificity_curve(rule, test_probs, test_y, table_targets, alpha=alpha, predictions=at_table)
    table = []
    for i, t in enumerate(table_targets):
        _, _, hf1 = hm.hierarchical_precision_recall_f1(taxonomy, at_table[:, i], test_y)
        table.append(
            {
                "target": float(t),
                "accuracy": rows["accuracy"][i],
                "ci_low": rows["ci_low"][i],
                "ci_high": rows["ci_high"][i],
                "info_gain": rows["info_gain"][i],
                "info_gain_correct": rows["info_gain_correct"][i],
                "leaf_share": rows["leaf_share"][i],
                "root_share": rows["root_share"][i],
                "hierarchical_f1": hf1,
                "met": bool(rows["accuracy"][i] >= t),
            }
        )
    depth = np.stack([hm.depth_shares(taxonomy, grid[:, i]) for i in range(len(targets))])
    return curve, table, depth, at_table


def per_class(taxonomy: Taxonomy, pred: np.ndarray, y: np.ndarray, targets) -> list[dict]:
    """Accuracy and leaf share of one rule's answers per true class, at each target.

    ``pred`` holds one column per target. A class without test samples gets
    ``n = 0`` and null figures.
    """
    correct = taxonomy.is_correct(pred, np.broadcast_to(y[:, None], pred.shape)) if pred.size else np.zeros(pred.shape, bool)
    is_leaf = np.zeros(taxonomy.n_nodes, dtype=bool)
    is_leaf[np.asarray(taxonomy.node_index(list(taxonomy.leaves)))] = True
    leafy = is_leaf[pred]
    out = []
    for j, leaf in enumerate(taxonomy.leaves):
        rows = y == j
        n = int(rows.sum())
        out.append(
            {
                "leaf": leaf,
                "name": taxonomy.display_name(leaf),
                "n": n,
                "targets": [float(t) for t in targets],
                "accuracy": [float(correct[rows, i].mean()) if n else None for i in range(len(targets))],
                "leaf_share": [float(leafy[rows, i].mean()) if n else None for i in range(len(targets))],
            }
        )
    return out


def evaluate(
    taxonomy: Taxonomy,
    cal_probs,
    cal_labels,
    test_probs,
    test_labels,
    *,
    guarantee: str = "pac",
    delta: float = 0.05,
    alpha: float = 0.05,
    targets=GRID_TARGETS,
    table_targets=TABLE_TARGETS,
    cal_groups=None,
    group_cap: int = 10,
) -> dict:
    """Fit every rule on the calibration split and measure it on the test split.

    Parameters
    ----------
    taxonomy : Taxonomy
    cal_probs, test_probs : array-like, shape (n, n_leaves)
    cal_labels, test_labels : array-like, shape (n,)
        Leaf indices, names or aliases.
    guarantee : {"pac", "pac-seller", "pac-group", "expected"}
        ``"pac-seller"`` / ``"pac-group"``: the PAC bound over contributors (needs
        ``cal_groups``): the average contributor's accuracy, or the photo accuracy
        with each contributor weighing at most ``group_cap`` photos.
    delta : float
        Passed to every rule.
    alpha : float
        Level of the Clopper-Pearson intervals on achieved accuracy.
    targets : sequence of float
        The grid of accuracy targets for the curves.
    table_targets : sequence of float
        Targets of the summary table.
    cal_groups : array-like (n_cal,), optional
        Contributor of each calibration sample, for ``"pac-seller"`` and ``"pac-group"``.
    group_cap : int
        Photos one contributor may weigh in ``"pac-group"``.

    Returns
    -------
    dict (JSON-ready apart from numpy arrays; see :func:`write_report`)
    """
    cal_probs, cal_y = _check_split(taxonomy, cal_probs, cal_labels, "calibration")
    test_probs, test_y = _check_split(taxonomy, test_probs, test_labels, "test")
    targets = np.asarray(targets, dtype=np.float64)
    table_targets = np.asarray(table_targets, dtype=np.float64)

    by_group = guarantee in ("pac-seller", "pac-group")
    if by_group and cal_groups is None:
        raise ValueError(f"guarantee {guarantee!r} needs cal_groups (the contributor of each calibration sample)")
    groups = cal_groups if by_group else None
    rule_guarantee = "expected" if guarantee == "expected" else "pac"
    cap = 1 if guarantee == "pac-seller" else group_cap
    curves, table, depth, classes = {}, {}, None, None
    every = np.r_[targets, table_targets]
    fallback = {}
    with warnings.catch_warnings():
        # The rules warn per call when a target falls back to the root; the
        # report gathers that into one note and one console warning below.
        warnings.simplefilter("ignore")
        for key, cls in RULES.items():
            rule = cls(taxonomy, guarantee=rule_guarantee, delta=delta, group_cap=cap).fit(cal_probs, cal_y, groups)
            curves[key], table[key], d, at_table = _rule_metrics(
                taxonomy, rule, test_probs, test_y, targets, table_targets, alpha
            )
            if key != "flat":
                failed = rule.calibration_.select_many(every)[1] | (rule.calibration_.n == 0)
                if failed.any():
                    fallback[RULE_LABELS[key]] = float(every[failed].min())
            if key == "darts":
                depth = d
                classes = per_class(taxonomy, at_table, test_y, table_targets)
    notes = []
    if fallback:
        unit = "contributors" if groups is not None else "images"
        n_units = len(np.unique(np.asarray(groups))) if groups is not None else int(cal_y.size)
        lowest = min(fallback.values())
        notes.append(
            f"The calibration set ({n_units} {unit}) is too small to "
            + ("certify" if guarantee != "expected" else "reach")
            + f" every target: from {lowest:g} up, "
            + ", ".join(f"{k} (from {v:g})" for k, v in fallback.items())
            + " answer the root for every image."
        )
        warnings.warn(notes[-1], stacklevel=2)

    top1 = test_probs.argmax(axis=1)
    confusion = None
    reliability = reliability_bins(test_probs, test_y)
    if taxonomy.n_leaves <= MAX_CONFUSION_LEAVES:
        confusion = np.zeros((taxonomy.n_leaves, taxonomy.n_leaves), dtype=np.int64)
        np.add.at(confusion, (test_y, top1), 1)
    return {
        "guarantee": guarantee,
        "delta": float(delta),
        "alpha": float(alpha),
        "n_calibration": int(cal_y.size),
        "n_test": int(test_y.size),
        "n_leaves": taxonomy.n_leaves,
        "n_nodes": taxonomy.n_nodes,
        "max_depth": int(taxonomy.depths.max()),
        "leaf": {
            "top1_accuracy": float(np.mean(top1 == test_y)),
            # ECE from the diagram's own bins (same as models.calibration.expected_calibration_error)
            "ece": float(np.nansum(reliability["count"] * np.abs(reliability["confidence"] - reliability["accuracy"]))
                         / test_y.size),
            "ece_bins": ECE_BINS,
            "reliability": reliability,
        },
        "curves": curves,
        "depth_shares": {"rule": "darts", "targets": targets, "shares": depth},
        "table": table,
        "confusion": None if confusion is None else {"leaves": list(taxonomy.leaves), "counts": confusion},
        "per_class": {"rule": "darts", "classes": classes},
        "notes": notes,
    }


# ---------------------------------------------------------------------- figures
def _figure(width=6.0, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # No "Software" entry: the PNG bytes then do not change with the matplotlib version.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


_STYLE = {"darts": ("C0", "o"), "climbing": ("C1", "s"), "leaf_gt": ("C2", "^"), "flat": ("C3", "D")}


def plot_accuracy_specificity(metrics: dict, path) -> Path:
    """Achieved accuracy against specificity (mean normalised information gain), one curve per rule."""
    fig = _figure()
    ax = fig.add_subplot()
    for key, c in metrics["curves"].items():
        color, marker = _STYLE[key]
        ax.plot(c["info_gain"], c["accuracy"], marker=marker, ms=3, lw=1.5, color=color, label=RULE_LABELS[key])
        if key == "flat":
            continue
        # The summary table's targets, marked and labelled on each hedging rule's curve.
        for r in metrics["table"][key]:
            ax.plot(r["info_gain"], r["accuracy"], marker=marker, ms=7, mfc="none", mec=color, mew=1.2)
            ax.annotate(f"{r['target']:g}", (r["info_gain"], r["accuracy"]), textcoords="offset points",
                        xytext=(5, -9), fontsize=7, color=color)
    ax.set_xlabel("specificity: mean normalised information gain of the answers")
    ax.set_ylabel("achieved hierarchical accuracy")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Accuracy vs specificity (test split)")
    return _save(fig, Path(path))


def plot_target_accuracy(metrics: dict, path) -> Path:
    """Achieved against target accuracy with Clopper-Pearson intervals and the diagonal."""
    fig = _figure()
    ax = fig.add_subplot()
    targets = None
    for key, c in metrics["curves"].items():
        color, _ = _STYLE[key]
        targets = c["target"]
        ax.plot(c["target"], c["accuracy"], color=color, lw=1.5, label=RULE_LABELS[key])
        ax.fill_between(c["target"], c["ci_low"], c["ci_high"], color=color, alpha=0.15, lw=0)
    lo = float(min(targets.min(), min(np.nanmin(c["ci_low"]) for c in metrics["curves"].values())))
    ax.plot([lo, 1], [lo, 1], "k--", lw=1, label="target = achieved")
    ax.set_xlabel("target accuracy")
    ax.set_ylabel("achieved accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Achieved vs target ({metrics['guarantee']}, {100 * (1 - metrics['alpha']):.0f}% CP intervals)")
    return _save(fig, Path(path))


def plot_depth_shares(metrics: dict, path) -> Path:
    """Share of DARTS answers at each depth, stacked, per target."""
    d = metrics["depth_shares"]
    targets, shares = np.asarray(d["targets"]), np.asarray(d["shares"])
    fig = _figure()
    ax = fig.add_subplot()
    from matplotlib import colormaps

    colors = colormaps["viridis_r"](np.linspace(0.1, 0.9, shares.shape[1]))
    ax.stackplot(targets, shares.T, labels=[f"depth {k}" + (" (root)" if k == 0 else "") for k in range(shares.shape[1])],
                 colors=colors, edgecolor="white", lw=0.3)
    if targets.max() > targets.min():
        ax.set_xlim(targets.min(), targets.max())
    ax.set_ylim(0, 1)
    ax.set_xlabel("target accuracy")
    ax.set_ylabel("share of DARTS answers")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("Depth of the DARTS answer")
    return _save(fig, Path(path))


def plot_reliability(metrics: dict, path) -> Path:
    """Reliability diagram of the leaf posteriors' top-1 confidence, with the ECE."""
    r = metrics["leaf"]["reliability"]
    edges, count = np.asarray(r["edges"], dtype=float), np.asarray(r["count"])
    acc = np.asarray(r["accuracy"], dtype=float)
    conf = np.asarray(r["confidence"], dtype=float)
    width = np.diff(edges)
    fig = _figure(4.8, 4.2)
    ax = fig.add_subplot()
    has = count > 0
    ax.bar(edges[:-1][has], acc[has], width=width[has], align="edge", color="C0", edgecolor="white", label="accuracy")
    # The gap is hatched, not filled, so that it reads the same above and below the bar top.
    low = np.minimum(acc, conf)[has]
    ax.bar(edges[:-1][has], np.abs(conf - acc)[has], bottom=low, width=width[has], align="edge",
           fill=False, hatch="///", edgecolor="C3", lw=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for x0, w, a, n in zip(edges[:-1][has], width[has], acc[has], count[has]):
        ax.text(x0 + w / 2, min(a, 0.93) + 0.015, str(int(n)), ha="center", va="bottom", fontsize=6, color="0.25")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-1 confidence (numbers: images per bin)")
    ax.set_ylabel("top-1 accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Leaf posteriors: ECE = {metrics['leaf']['ece']:.3f}")
    return _save(fig, Path(path))


def _hatched_row(i: int, n: int):
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, i - 0.5), n, 1, fill=False, hatch="////", edgecolor="0.6", lw=0)


def plot_confusion(metrics: dict, taxonomy: Taxonomy, path) -> Path:
    """Leaf confusion matrix (rows: true leaf, normalised; columns: top-1 leaf)."""
    counts = np.asarray(metrics["confusion"]["counts"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = counts.shape[0]
    side = min(3.5 + 0.22 * n, 12)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true leaf's images")
    empty = rows[:, 0] == 0
    for i in np.flatnonzero(empty):
        # No test image of this class: a hatched row, not a blank one that reads as "never right".
        ax.add_patch(_hatched_row(i, n))
    if n <= 30:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.6 else "black")
    if n <= 60:
        names = [taxonomy.display_name(leaf) + (" (no test image)" if e else "") for leaf, e in zip(taxonomy.leaves, empty)]
        ax.set_xticks(range(n), [taxonomy.display_name(leaf) for leaf in taxonomy.leaves], rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("top-1 leaf")
    ax.set_ylabel("true leaf")
    ax.set_title("Leaf confusion (test split; numbers: images)")
    return _save(fig, Path(path))


# ---------------------------------------------------------------------- report
def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.1f}%"


def _markdown(metrics: dict, figures: dict, title: str, provenance: Mapping | None) -> str:
    m = metrics
    lines = [
        f"# {title}",
        "",
        f"Hedged predictions calibrated on **{m['n_calibration']}** images and measured on **{m['n_test']}** "
        f"held-out images; taxonomy with {m['n_leaves']} leaves, {m['n_nodes']} nodes, depth {m['max_depth']}. "
        f"Guarantee: **{m['guarantee']}**"
        + {
            "pac": f" (holds with probability {1 - m['delta']:.2f} over the calibration set, images counted as "
                   "independent draws)",
            "pac-seller": f" (holds with probability {1 - m['delta']:.2f} over the calibration set, contributors "
                          "counted as the independent draws and their images as arbitrarily alike; the promise is "
                          "the accuracy of the average contributor)",
            "pac-group": f" (holds with probability {1 - m['delta']:.2f} over the calibration set, contributors "
                         "counted as the independent draws and their images as arbitrarily alike; the promise is "
                         "the image accuracy with each contributor counting for at most a fixed number of images)",
        }.get(m["guarantee"], " (calibration accuracy meets the target)")
        + ".",
        "",
        f"Leaf classifier alone: top-1 accuracy {_pct(m['leaf']['top1_accuracy'])}, "
        f"expected calibration error {m['leaf']['ece']:.3f} ({m['leaf']['ece_bins']} bins).",
        "",
        "## Accuracy targets",
        "",
        f"Achieved hierarchical accuracy (share of answers whose node contains the true class) on the test "
        f"split with its {100 * (1 - m['alpha']):.0f}% Clopper-Pearson interval; **info gain**: the mean over "
        "images of the answer's normalised information gain, the number each image shows (1 = a leaf, 0 = the "
        "root, right or wrong; `metrics.json` also has `info_gain_correct`, wrong answers counted as 0); "
        "**leaf share**: answers that are a single class; **hier. F1**: micro-averaged hierarchical F1 "
        "(HiClass): the answer and the true class each stand for themselves plus their ancestors without the "
        "root, precision = shared / answered nodes, recall = shared / true nodes. Every figure counts the "
        "answer users get (a node with one child is named by that child).",
        "",
        "| rule | target | achieved | CI | info gain | leaf share | hier. F1 |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for key, rows in m["table"].items():
        # The flat classifier ignores the target: one row says it all.
        for r in rows[:1] if key == "flat" else rows:
            flag = "" if r["met"] or key == "flat" else " (below)"
            target = "any" if key == "flat" else _pct(r["target"])
            lines.append(
                f"| {RULE_LABELS[key]} | {target} | {_pct(r['accuracy'])}{flag} | "
                f"{_pct(r['ci_low'])} - {_pct(r['ci_high'])} | {r['info_gain']:.3f} | {_pct(r['leaf_share'])} | "
                f"{r['hierarchical_f1']:.3f} |"
            )
    captions = {
        "accuracy_specificity": ("Accuracy vs specificity",
                                 "Each point is one accuracy target (the table's targets circled and labelled); "
                                 "up and to the right is better: more information at the same accuracy."),
        "target_accuracy": ("Achieved vs target accuracy",
                            "Shaded: Clopper-Pearson intervals. A calibrated rule stays on or above the "
                            "diagonal; the flat classifier ignores the target."),
        "depth_shares": ("Depth of DARTS answers", "How often DARTS answers at each depth as the target rises."),
        "reliability": ("Reliability of the leaf posteriors",
                        "Top-1 confidence of the leaf posteriors (as the rules see them) against top-1 "
                        "accuracy, in equal-width bins; the number above a bar is its count of images."),
        "confusion": ("Leaf confusion", "Rows: true leaf (colour: share of the row); columns: the top-1 leaf; "
                                        "numbers: images. A hatched row is a class without test images."),
    }
    if m.get("notes"):
        lines += ["", "Notes from the rules:", ""] + [f"- {n}" for n in m["notes"]]
    classes = (m.get("per_class") or {}).get("classes")
    if classes:
        targets = classes[0]["targets"]
        lines += [
            "",
            "## Per class (DARTS)",
            "",
            "Achieved accuracy / leaf share among the test images of each true class, at each target: "
            "which classes pay for the guarantee.",
            "",
            "| class | test images | " + " | ".join(f"{_pct(t)}" for t in targets) + " |",
            "|---|---:|" + "---:|" * len(targets),
        ]
        for c in classes:
            cells = (
                ["no test image"] * len(targets)
                if c["n"] == 0
                else [f"{_pct(a)} / {_pct(ls)}" for a, ls in zip(c["accuracy"], c["leaf_share"])]
            )
            lines.append(f"| {c['name']} | {c['n']} | " + " | ".join(cells) + " |")
    for key, fname in figures.items():
        head, text = captions[key]
        lines += ["", f"## {head}", "", text, "", f"![{head}]({fname})"]
    if provenance:
        lines += ["", "## Provenance", ""]
        for k, v in provenance.items():
            lines.append(f"- **{k}**: {v if not isinstance(v, (dict, list)) else json.dumps(_jsonable(v))}")
    lines += ["", "Numbers: `metrics.json` in this folder.", ""]
    return "\n".join(lines)


def write_report(
    out_dir,
    taxonomy: Taxonomy,
    cal_probs,
    cal_labels,
    test_probs,
    test_labels,
    *,
    title: str = "Hedged prediction report",
    provenance: Mapping | None = None,
    **evaluate_kwargs,
) -> dict:
    """Evaluate and write ``report.md``, ``metrics.json`` and the PNG figures to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Created when missing; existing report files are overwritten.
    taxonomy, cal_probs, cal_labels, test_probs, test_labels
        As in :func:`evaluate`.
    title : str
    provenance : mapping, optional
        Where the numbers come from (model, data, command); written to both files.
    **evaluate_kwargs
        ``guarantee``, ``delta``, ``alpha``, ``targets``, ``table_targets``, ``cal_groups``.

    Returns
    -------
    dict
        The metrics as written to ``metrics.json`` (plain JSON types).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(taxonomy, cal_probs, cal_labels, test_probs, test_labels, **evaluate_kwargs)
    figures = {}
    plot_accuracy_specificity(metrics, out / FIGURES["accuracy_specificity"])
    figures["accuracy_specificity"] = FIGURES["accuracy_specificity"]
    plot_target_accuracy(metrics, out / FIGURES["target_accuracy"])
    figures["target_accuracy"] = FIGURES["target_accuracy"]
    plot_depth_shares(metrics, out / FIGURES["depth_shares"])
    figures["depth_shares"] = FIGURES["depth_shares"]
    plot_reliability(metrics, out / FIGURES["reliability"])
    figures["reliability"] = FIGURES["reliability"]
    if metrics["confusion"] is not None:
        plot_confusion(metrics, taxonomy, out / FIGURES["confusion"])
        figures["confusion"] = FIGURES["confusion"]
    metrics["figures"] = figures
    metrics["title"] = title
    metrics["provenance"] = dict(provenance or {})
    data = _jsonable(metrics)
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    (out / "report.md").write_text(_markdown(metrics, figures, title, provenance), encoding="utf-8")
    return data
