"""Convert a torch model to ONNX (fp32, or int8 static QDQ per-channel), and find a bundle's photos.

The network side of exporting a bundle: :func:`export_onnx_file` traces the
model, :func:`quantize_int8` quantizes it with calibration images read by
:class:`_CalibrationReader`, and :func:`_split_paths` finds the bundle's own
split photos in the data it was trained on. Orchestrating an export (recomputing
the calibration posteriors through the exported file, the decision table, the
manifest) needs the facade and lives above it, in :mod:`hedged.export`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np

from hedged.models.bundle import (
    BundleError,
)

DEFAULT_OPSET = 17
INPUT_NAME, LOGITS_NAME, FEATURES_NAME = "image", "logits", "features"
#: Accuracy targets tabulated in decision.json (an app picks one; others need the library).
DECISION_TARGETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99)
DECISION_FORMAT = "hedged-decision/1"


def export_onnx_file(model, path, input_size: int, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (torch, eval) as an fp32 ONNX file with a dynamic batch axis and
    both named outputs of a bundle model (``logits``, ``features``; models.inference.OUTPUTS).

    The input side is fixed at ``input_size``: TF "SAME" padding is computed
    from it, and the TorchScript tracer bakes the paddings in as constants.
    """
    import torch

    from hedged.models.inference import LogitsAndFeatures

    model = model.eval()
    if hasattr(model, "fuse_batchnorm"):
        model = copy.deepcopy(model).fuse_batchnorm()
    model = LogitsAndFeatures(model).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The tracer warns that the padding arithmetic becomes constants: that is the point.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,  # the torch.export-based exporter needs onnxscript, not a dependency here
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME, FEATURES_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    return Path(path)


class _CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over preprocessed train images.

    Image ``i`` is rotated by ``angles[i % k]`` so the activation ranges cover the
    TTA views (rotations add zero-filled corners) as well as upright photos.
    """

    def __init__(self, paths, preprocess, angles, batch_size: int = 8):
        from hedged.models.tta import rotate_array

        self._batches = []
        for start in range(0, len(paths), batch_size):
            part = list(paths[start : start + batch_size])
            x = preprocess.batch_array(part)
            x = np.concatenate([rotate_array(x[j : j + 1], angles[(start + j) % len(angles)]) for j in range(len(x))])
            self._batches.append(x)
        self._it = iter(self._batches)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self):
        self._it = iter(self._batches)


#: Layers int8 quantization leaves in fp32 (regular expressions on the ONNX node names).
#: Chosen on the validation split (bench/experiments/int8_sensitivity.py, int8_configs.py):
#: quantizing only the stem, or only block 0's depthwise conv, moved the posteriors 20-30x
#: more than any other single layer (both read or write the stem's output); keeping the
#: stem and block 0 in fp32 raised top-1 agreement with fp32 from 0.910 to 0.985 at the
#: same file size (0.8 % of the multiply-adds are in those layers).
#: An ensemble's members (``/members.N/...``) keep theirs in fp32 too.
DEFAULT_FP32_LAYERS = (r"^/(members\.\d+/)?_conv_stem/", r"^/(members\.\d+/)?_blocks\.0/")


def fp32_nodes(model_path, patterns) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes of ``model_path`` that match any of ``patterns``."""
    import re

    import onnx

    compiled = [re.compile(p) for p in patterns]
    graph = onnx.load(str(model_path)).graph
    return [n.name for n in graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and any(c.search(n.name) for c in compiled)]


def quantize_int8(fp32_path, out_path, reader, keep_fp32=DEFAULT_FP32_LAYERS) -> list[str]:
    """Static int8 QDQ quantization, per-channel weights (ONNX Runtime's advice for CNNs).

    Activations are uint8 with MinMax ranges from ``reader``; weights int8
    per output channel. ``quant_pre_process`` first runs shape inference and
    graph optimisation so that the quantizer sees fused convolutions. Nodes
    whose names match a pattern of ``keep_fp32`` stay in fp32.

    Returns the names of the nodes kept in fp32.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    kept = fp32_nodes(pre, keep_fp32 or ())
    quantize_static(
        str(pre),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=kept,
    )
    pre.unlink(missing_ok=True)
    return kept


def _split_paths(bundle, data_path):
    """Paths and leaf labels of the bundle's calibration, test, train and validation ids in ``data_path``."""
    from hedged.models.data import DatasetError, load_dataset

    if bundle.split is None or "calibration" not in bundle.split:
        raise BundleError(f"bundle {bundle.path} has no split.json with calibration ids: export needs them")
    try:
        data = load_dataset(data_path)
    except DatasetError as err:
        raise BundleError(str(err)) from None
    expected = bundle.provenance.get("sha256")
    if expected and data.sha256 != expected:
        raise BundleError(
            f"data at {data_path} has sha256 {data.sha256[:12]}... but the bundle was made from "
            f"{expected[:12]}...: not the same photos, refusing to calibrate on them"
        )
    where = {str(i): k for k, i in enumerate(data.ids)}
    out = {}
    for name in ("calibration", "test", "train", "validation"):
        ids = bundle.split.get(name)
        if ids is None:
            continue
        missing = [i for i in ids if str(i) not in where]
        if missing:
            raise BundleError(f"{len(missing)} {name} id(s) of the bundle are not in {data_path} (first: {missing[0]!r})")
        idx = np.array([where[str(i)] for i in ids], dtype=np.int64)
        labels = bundle.taxonomy.resolve_labels(data.labels[idx])
        out[name] = (data.paths[idx], labels)
    for name, ref in (("calibration", bundle.calibration_labels), ("test", bundle.test_labels)):
        if name in out and ref is not None and not np.array_equal(out[name][1], ref):
            raise BundleError(f"the {name} labels in {data_path} differ from the bundle's: not the same data")
    return out, data.sha256
