"""Export a torch bundle as an ONNX bundle (fp32, or int8 static QDQ per-channel).

The guarantee follows the model: int8 (and, to float rounding, fp32) posteriors
differ from the torch ones, so the exported bundle's calibration and test
posteriors are recomputed through the exported file on the source bundle's own
calibration and test photos (its ``split.json`` ids, found in ``data`` whose CSV
sha256 must equal the one the bundle was trained on). The manifest records the
sha256 of the model file the calibration belongs to, and ``load_bundle`` refuses
a bundle whose model file is another.

The bundle also gets ``decision.json`` (:func:`decision_table`): the hedging
rule as plain data, so an app without Python can turn the model's output into
the hedged node in a few lines.

This module is the library level of exporting: it calls the facade
(:class:`~hedged.classifier.HedgedClassifier`) to recompute calibrated answers;
converting and quantizing the network is :mod:`hedged.models.export`'s job.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from hedged.classifier import GROUP_GUARANTEES, GUARANTEES, HedgedClassifier
from hedged.models.bundle import (
    CALIBRATION,
    DECISION,
    FORMAT,
    MANIFEST,
    ONNX_MODEL,
    OOD,
    OOD_ARRAYS,
    SPLIT,
    TAXONOMY,
    TEST,
    BundleError,
    _check_probs,
    _jsonable,
    _write_calibration,
    load_bundle,
)
from hedged.models.data import sha256_file
from hedged.models.export import (
    DECISION_FORMAT,
    DECISION_TARGETS,
    DEFAULT_FP32_LAYERS,
    DEFAULT_OPSET,
    FEATURES_NAME,
    INPUT_NAME,
    LOGITS_NAME,
    _CalibrationReader,
    _split_paths,
    export_onnx_file,
    quantize_int8,
)

__all__ = ["export_bundle", "decision_table"]


def decision_table(clf, targets=DECISION_TARGETS, guarantees=None) -> dict:
    """The hedging rule as plain JSON data (see docs/export.md for the decision in a few lines).

    Parameters
    ----------
    clf : HedgedClassifier
        Calibrated (``fit`` or ``from_bundle``).
    targets : sequence of float
        Accuracy targets to tabulate lambda for.
    guarantees : sequence of str, optional
        Default: every guarantee the calibration supports ("pac-group" needs
        calibration groups).

    Returns
    -------
    dict
        ``leaves`` (model output order), ``nodes`` (name, display name, leaf
        indices, reward in bits, the node reported in its place), and
        ``lambda[guarantee][target]`` (``null`` = infinity: answer the root).
    """
    if guarantees is None:
        has_groups = getattr(clf, "calibration_groups_", None) is not None
        guarantees = tuple(g for g in GUARANTEES if g != "auto" and (g not in GROUP_GUARANTEES or has_groups))
    tax = clf.taxonomy
    leaf_pos = {leaf: j for j, leaf in enumerate(tax.leaves)}
    rule0 = clf.rule(guarantees[0])
    rewards = np.asarray(rule0.rewards_, dtype=np.float64)
    from hedged.hedging._base import most_specific

    specific = most_specific(tax)
    nodes = []
    for i, name in enumerate(tax.nodes):
        nodes.append({
            "name": name,
            "display_name": tax.display_name(name),
            "leaves": sorted(leaf_pos[v] for v in tax.leaves_under(name)),
            "reward": float(rewards[i]),
            "report_as": int(specific[i]),
        })
    lambdas = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # targets the calibration cannot certify give inf: recorded as null
        for g in guarantees:
            rule = clf.rule(g)
            lambdas[g] = {f"{t:g}": (None if not math.isfinite(lam := float(rule.lambda_for(t))) else lam)
                          for t in targets}
    return {
        "format": DECISION_FORMAT,
        "leaves": list(tax.leaves),
        "root": int(tax.node_index(tax.root)),
        "nodes": nodes,
        "delta": float(clf.delta),
        "n_calibration": int(len(clf.calibration_labels_)),
        "lambda": lambdas,
        "tie_rtol": 1e-10,
        "rule": (
            "p = mean over the TTA views of softmax(logits / temperature); p_v = sum of p over "
            "nodes[v].leaves; answer v* = argmax_v (reward_v + lambda) * p_v, scores within a relative "
            "tie_rtol of the best going to the higher p_v, then the lower index; lambda null = the root; "
            "report nodes[v*].report_as"
        ),
    }


def _metrics(probs, labels, ref_probs, clf, targets=(0.95,)):
    from hedged.models.calibration import expected_calibration_error

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    top1 = p.argmax(1)
    out = {
        "accuracy": float((top1 == y).mean()),
        "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()),
        "ece": float(expected_calibration_error(p, y)),
    }
    if ref_probs is not None:
        r = np.asarray(ref_probs, dtype=np.float64)
        out["source_accuracy"] = float((r.argmax(1) == y).mean())
        out["top1_agreement_with_source"] = float((r.argmax(1) == top1).mean())
        out["max_abs_prob_diff_vs_source"] = float(np.abs(r - p).max())
    hedged = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g in ("pac", "pac-seller", "pac-group", "expected"):
            if g in ("pac-seller", "pac-group") and getattr(clf, "calibration_groups_", None) is None:
                continue
            for t in targets:
                preds = clf.predict_from_probs(p, accuracy=t, guarantee=g)
                names = [clf.taxonomy.leaves[j] for j in y]
                correct = [name in pr.node.leaves for name, pr in zip(names, preds)]
                hedged[f"{g}@{t:g}"] = {
                    "accuracy": float(np.mean(correct)),
                    "mean_info_gain": float(np.mean([pr.info_gain for pr in preds])),
                }
    out["hedged"] = hedged
    return out


def export_bundle(
    source,
    out,
    *,
    data,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    n_quant_images: int = 128,
    keep_fp32=DEFAULT_FP32_LAYERS,
    threads: int | None = None,
    batch_size: int = 8,
    log=print,
) -> Path:
    """Export the torch bundle ``source`` to an ONNX bundle in ``out``.

    Parameters
    ----------
    source : str or Path
        A torch bundle (``weights.pt``) with ``split.json`` and provenance sha256.
    out : str or Path
        Target directory (created; its bundle files are replaced).
    data : str or Path
        The data set the bundle was trained on (its CSV sha256 must match).
    int8 : bool
        Static int8 QDQ per-channel quantization, calibrated on ``n_quant_images``
        train-split photos (spread evenly over the split).
    keep_fp32 : sequence of str
        Regular expressions on ONNX node names: those layers stay fp32 in an int8
        export (default :data:`DEFAULT_FP32_LAYERS`, the stem and block 0 of an
        EfficientNet-Lite); empty quantizes every Conv/Gemm.
    opset : int
        ONNX opset of the export.
    threads : int or None
        ONNX Runtime threads for recomputing the posteriors.

    Returns
    -------
    Path
        ``out``.
    """
    from hedged.models.onnx_model import OnnxModel

    source = Path(source)
    bundle = load_bundle(source)
    if bundle.runtime != "torch":
        raise BundleError(f"{source} is already an exported ({bundle.runtime}) bundle; export from the torch bundle")
    splits, data_sha = _split_paths(bundle, data)
    kept: list[str] = []
    if int8 and "train" not in splits:
        raise BundleError("int8 export needs the bundle's train ids (split.json) for quantization calibration")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (ONNX_MODEL, MANIFEST, CALIBRATION, TEST, DECISION, SPLIT, TAXONOMY, OOD, OOD_ARRAYS):
        (out / stale).unlink(missing_ok=True)
    size = bundle.preprocess.input_size

    with tempfile.TemporaryDirectory(prefix="hedged-export-") as tmp:
        fp32 = export_onnx_file(bundle.model, Path(tmp) / "fp32.onnx", size, opset)
        if int8:
            train_paths = splits["train"][0]
            pick = np.linspace(0, len(train_paths) - 1, min(n_quant_images, len(train_paths))).round().astype(int)
            log(f"quantizing to int8 with {len(pick)} train images")
            reader = _CalibrationReader(train_paths[pick], bundle.preprocess, bundle.tta_angles, batch_size)
            kept = quantize_int8(fp32, out / ONNX_MODEL, reader, keep_fp32)
        else:
            shutil.copyfile(fp32, out / ONNX_MODEL)

    onnx_spec = {
        "file": ONNX_MODEL,
        "opset": opset,
        "input": INPUT_NAME,
        "input_shape": ["batch", 3, size, size],
        "layout": "NCHW float32, normalised as preprocess says",
        "outputs": [LOGITS_NAME, FEATURES_NAME],
        "logits": LOGITS_NAME,
        "precision": "int8-qdq-per-channel" if int8 else "float32",
    }
    model = OnnxModel.from_bundle(out, {"onnx": onnx_spec, "preprocess": bundle.preprocess.to_dict()},
                                  n_leaves=bundle.taxonomy.n_leaves, threads=threads)
    probs = {}
    cal_scores = None
    for name in ("calibration", "test"):
        if name not in splits:
            continue
        paths, labels = splits[name]
        log(f"posteriors of the {name} split through {ONNX_MODEL} ({len(paths)} images x {len(bundle.tta_angles)} views)")
        if name == "calibration" and bundle.detector is not None:
            # the detector's score of each calibration photo, through the exported model too:
            # the calibration counts the photos it turns away as misses
            from hedged.models.tta import average_view_probs

            logits, feats = model.predict_logits(paths, bundle.preprocess, bundle.tta_angles, batch_size,
                                                 return_features=True)
            probs[name] = average_view_probs(logits, bundle.temperature)
            cal_scores = bundle.detector.score(bundle.detector.signals_of(logits, feats))
        else:
            probs[name] = model.predict_probs(paths, bundle.preprocess, bundle.tta_angles, bundle.temperature,
                                              batch_size)
    # Round to the float32 the bundle stores before anything is fitted on them, so that
    # decision.json and the metrics are those of the calibration a loaded bundle has.
    probs = {k: v.astype(np.float32).astype(np.float64) for k, v in probs.items()}
    cal_p, cal_y = _check_probs(probs["calibration"], splits["calibration"][1], bundle.taxonomy.n_leaves, "calibration")

    # Contributor ids of the calibration photos (pac-group) belong to the photos, not the model.
    groups = bundle.calibration_groups
    clf = HedgedClassifier(bundle.taxonomy, detector=bundle.detector).fit(cal_p, cal_y, groups, cal_scores)
    metrics = {}
    if "test" in probs:
        metrics["test"] = _metrics(probs["test"], splits["test"][1], bundle.test_probs, clf)

    bundle.taxonomy.to_yaml(out / TAXONOMY)
    _write_calibration(out, cal_p, cal_y, groups, cal_scores)
    files = [ONNX_MODEL, TAXONOMY, CALIBRATION]
    if "test" in probs:
        t_p, t_y = _check_probs(probs["test"], splits["test"][1], bundle.taxonomy.n_leaves, "test")
        np.savez_compressed(out / TEST, probs=t_p.astype(np.float32), labels=t_y)
        files.append(TEST)
    shutil.copyfile(source / SPLIT, out / SPLIT)
    files.append(SPLIT)
    (out / DECISION).write_text(json.dumps(decision_table(clf), indent=1) + "\n")
    files.append(DECISION)
    src_manifest = json.loads((source / MANIFEST).read_text())
    # The out-of-taxonomy detector reads the same named outputs, which the export keeps.
    # It was fitted on the source model's outputs (see docs/export.md).
    for name in (OOD, OOD_ARRAYS):
        if name in src_manifest["files"]:
            shutil.copyfile(source / name, out / name)
            files.append(name)

    import onnxruntime
    import torch

    from hedged.models.inference import OUTPUTS

    model_sha = sha256_file(out / ONNX_MODEL)
    manifest = {
        "format": FORMAT,
        "runtime": "onnx",
        "arch": bundle.arch,
        "num_classes": bundle.taxonomy.n_leaves,
        "leaves": list(bundle.taxonomy.leaves),
        "preprocess": bundle.preprocess.to_dict(),
        "tta_angles": list(bundle.tta_angles),
        "temperature": bundle.temperature,
        "onnx": onnx_spec,
        "outputs": dict(OUTPUTS),
        "files": {name: sha256_file(out / name) for name in files},
        "calibrated_model": model_sha,
        "metrics": _jsonable(metrics),
        "provenance": _jsonable({
            **bundle.provenance,
            "exported_from": {
                "bundle": str(source),
                # Found again from the export wherever the two are copied or installed together.
                "relative_path": os.path.relpath(source.resolve(), out.resolve()),
                "weights_sha256": src_manifest["files"].get("weights.pt"),
                "manifest_sha256": sha256_file(source / MANIFEST),
                "test_metrics": bundle.metrics.get("test"),
            },
            "calibration_data_sha256": data_sha,
            "quantization": (
                {"method": "static QDQ, per-channel int8 weights, uint8 activations, MinMax",
                 "calibration_images": int(min(n_quant_images, len(splits["train"][0]))), "split": "train",
                 "fp32_patterns": list(keep_fp32 or ()), "fp32_nodes": kept}
                if int8 else None
            ),
        }),
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                     **{k: v for k, v in bundle.manifest.get("versions", {}).items() if k not in ("torch",)}},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
