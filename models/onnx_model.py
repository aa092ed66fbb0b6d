"""Running an exported bundle's ``model.onnx`` with ONNX Runtime, without torch.

:class:`OnnxModel` is what ``load_bundle`` puts in ``Bundle.model`` for an
exported bundle (``"runtime": "onnx"``). It follows ONNX Runtime's own advice:
one ``InferenceSession`` per process and model file (sessions are cached here),
threads and graph optimisation set explicitly, and the input and output names
read from the bundle manifest rather than guessed. Preprocessing and rotation
TTA use the numpy twins in :mod:`hedged.models.preprocess` and
:mod:`hedged.models.tta`, which feed the network the same values as the torch
path; nothing in this module imports torch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hedged.models.tta import average_view_probs, check_angles, rotate_views_array

#: Views per ONNX Runtime call. On CPU, small calls run faster per view than large ones
#: (the activations stay in cache): the clothing int8 network ran 176 views/s in calls of
#: 2 against 142 in calls of 8 (fp32: 111 against 102); ``batch_size`` still sets how
#: many images are prepared at once.
RUN_VIEWS = 2

#: Opsets the exporter writes and this loader accepts (ONNX Runtime >= 1.17 runs up to 20+).
MIN_OPSET, MAX_OPSET = 13, 23

# Most recently used sessions, at most _MAX_SESSIONS: a process that loads many
# model files in turn (a quantization sweep, re-exports) must not keep them all.
_SESSIONS: OrderedDict[tuple, object] = OrderedDict()
_MAX_SESSIONS = 4
_LOCK = threading.Lock()


class OnnxModelError(ValueError):
    """An ONNX file that cannot run, or does not match its bundle manifest."""


def _bundle_error(message: str) -> Exception:
    from hedged.models.bundle import BundleError

    return BundleError(message)


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise _bundle_error(
            "this bundle runs on ONNX Runtime, which is not installed: pip install onnxruntime "
            "(a core dependency of hedged: pip install hedged)"
        ) from None
    return onnxruntime


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Top-level (field number, wire type, value) of a protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def onnx_opset(path) -> int:
    """The default-domain opset an ONNX file imports, read from its protobuf header.

    A few lines of protobuf instead of ``import onnx``: the runtime path does not
    need the ``onnx`` package (it is the ``export`` extra).
    """
    buf = Path(path).read_bytes()
    try:
        for number, wire, value in _fields(buf):
            if number == 8 and wire == 2:  # ModelProto.opset_import: OperatorSetIdProto
                domain, version = "", None
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        domain = v.decode()
                    elif n == 2 and w == 0:
                        version = v
                if domain in ("", "ai.onnx") and version is not None:
                    return int(version)
    except (ValueError, UnicodeDecodeError, IndexError) as err:
        raise OnnxModelError(f"{Path(path).name} is not a valid ONNX file: {err}") from None
    raise OnnxModelError(f"{Path(path).name} declares no default-domain opset (not an ONNX model?)")


def session_options(threads: int | None = None):
    """ONNX Runtime session options: all graph optimisations, ``threads`` intra-op threads."""
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1  # one chain of convolutions: nothing to run side by side
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: its warnings are about optional graph rewrites
    return opts


def get_session(path, threads: int | None = None):
    """The process's ``InferenceSession`` for ``path`` and ``threads`` (created once, then shared)."""
    ort = _import_ort()
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, threads)
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            _SESSIONS.move_to_end(key)
        else:
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
                )
            except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
                detail = " ".join(str(err).split())[:300]
                raise OnnxModelError(f"ONNX Runtime {ort.__version__} cannot load {path.name}: {detail}") from None
            _SESSIONS[key] = session
            while len(_SESSIONS) > _MAX_SESSIONS:
                _SESSIONS.popitem(last=False)
    return session


class OnnxModel:
    """An exported network: ``(B, 3, S, S)`` float32 images -> named outputs.

    Parameters
    ----------
    path : str or Path
        The ONNX file.
    input_name : str
        Graph input (normalised NCHW images, dynamic batch axis).
    output_names : sequence of str
        Every output the bundle manifest names; ``logits_name`` must be one of them.
    logits_name : str
        The ``(B, n_leaves)`` logits output.
    input_size : int
        ``S``: the export fixes it (TF "SAME" padding depends on it).
    n_leaves : int
    threads : int or None
        ONNX Runtime intra-op threads (``None``: one per core).
    """

    def __init__(self, path, *, input_name: str, output_names, logits_name: str, input_size: int, n_leaves: int,
                 threads: int | None = None):
        self.path = Path(path)
        self.input_name = input_name
        self.output_names = list(output_names)
        self.logits_name = logits_name
        self.input_size = int(input_size)
        self.n_leaves = int(n_leaves)
        self.threads = threads
        self.session = get_session(self.path, threads)
        self._check_signature()

    @classmethod
    def from_bundle(cls, path, manifest: dict, *, n_leaves: int, threads: int | None = None) -> OnnxModel:
        """Build from a bundle directory and its parsed manifest; mismatches raise ``BundleError``."""
        spec = manifest.get("onnx")
        if not isinstance(spec, dict):
            raise _bundle_error("bundle.json: an onnx bundle needs an 'onnx' object")
        missing = [k for k in ("file", "opset", "input", "outputs", "logits") if k not in spec]
        if missing:
            raise _bundle_error(f"bundle.json: 'onnx' lacks key(s): {', '.join(missing)}")
        file = Path(path) / spec["file"]
        opset = spec["opset"]
        if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise _bundle_error(f"bundle.json: onnx opset {opset!r} is not supported (expected {MIN_OPSET}..{MAX_OPSET})")
        try:
            actual = onnx_opset(file)
            if actual != opset:
                raise OnnxModelError(f"{spec['file']} uses opset {actual} but bundle.json says {opset}")
            return cls(
                file,
                input_name=spec["input"],
                output_names=spec["outputs"],
                logits_name=spec["logits"],
                input_size=manifest["preprocess"]["input_size"],
                n_leaves=n_leaves,
                threads=threads,
            )
        except (OnnxModelError, OSError) as err:
            raise _bundle_error(str(err)) from None

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        name = self.path.name
        if list(inputs) != [self.input_name]:
            raise OnnxModelError(f"{name} has input(s) {list(inputs)}, the manifest says [{self.input_name!r}]")
        shape = inputs[self.input_name].shape
        s = self.input_size
        if len(shape) != 4 or list(shape[1:]) != [3, s, s]:
            raise OnnxModelError(f"{name} takes input shape {shape}, the manifest's preprocessing gives [batch, 3, {s}, {s}]")
        missing = [o for o in self.output_names if o not in outputs]
        if missing or self.logits_name not in self.output_names:
            raise OnnxModelError(f"{name} has outputs {list(outputs)}, the manifest names {self.output_names}")
        last = outputs[self.logits_name].shape[-1]
        if last != self.n_leaves:
            raise OnnxModelError(f"{name} gives {last} logits, the taxonomy has {self.n_leaves} leaves")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every manifest output for a float32 ``(B, 3, S, S)`` batch."""
        values = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.output_names, values))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, n_leaves)`` float32."""
        return self.session.run([self.logits_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    @property
    def n_features(self) -> int | None:
        """Width of the ``features`` output (the out-of-taxonomy detector reads it), if any."""
        if "features" not in self.output_names:
            return None
        return int({o.name: o for o in self.session.get_outputs()}["features"].shape[-1])

    def predict_logits(self, images: Iterable, preprocess, angles=(0.0,), batch_size: int = 8,
                       return_features: bool = False):
        """Per-view logits ``(N, k, L)`` (and features ``(N, k, D)``), as
        :func:`hedged.models.inference.predict_logits`; images are prepared ``batch_size``
        at a time and run at most :data:`RUN_VIEWS` views per ONNX Runtime call.
        """
        angles = check_angles(angles)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if return_features and "features" not in self.output_names:
            raise OnnxModelError(f"{self.path.name} has no 'features' output (outputs: {self.output_names})")
        names = [self.logits_name, "features"] if return_features else [self.logits_name]
        images = list(images)
        k = len(angles)
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        starts = list(range(0, len(images), batch_size))
        step = min(batch_size, RUN_VIEWS)

        def prepare(start):
            return rotate_views_array(preprocess.batch_array(images[start : start + batch_size]), angles)

        # The next batch is resized and rotated on a second thread while ONNX Runtime (which
        # releases the GIL) runs this one: the two stages overlap instead of alternating.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedged-prep") as pool:
            pending = pool.submit(prepare, starts[0]) if starts else None
            for n, start in enumerate(starts):
                views = pending.result()
                pending = pool.submit(prepare, starts[n + 1]) if n + 1 < len(starts) else None
                n_part = len(views) // k
                outs = [self.session.run(names, {self.input_name: views[i : i + step]})
                        for i in range(0, len(views), step)]
                for j in range(len(names)):
                    z = np.concatenate([o[j] for o in outs])
                    chunks[j].append(z.reshape(k, n_part, -1).transpose(1, 0, 2))
        if not images:
            widths = [self.n_leaves] + ([self.n_features] if return_features else [])
            result = [np.zeros((0, k, w), dtype=np.float32) for w in widths]
        else:
            result = [np.concatenate(c).astype(np.float32, copy=False) for c in chunks]
        return tuple(result) if return_features else result[0]

    def predict_probs(self, images: Iterable, preprocess, angles=(0.0,), temperature: float = 1.0,
                      batch_size: int = 8) -> np.ndarray:
        """Posteriors ``(N, L)``: mean over views of ``softmax(logits / temperature)``."""
        return average_view_probs(self.predict_logits(images, preprocess, angles, batch_size), temperature)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, input={self.input_name!r}, outputs={self.output_names})"
