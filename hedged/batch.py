"""Batch prediction into a resumable Parquet dataset, in one process or on Ray Data.

:func:`predict_batch` answers every photo of a folder, a glob or a manifest (CSV or
Parquet with a path column; paths may be fsspec URIs such as ``s3://bucket/a.jpg``)
and writes one row per photo: the answer record of ``hedged predict --json``
(:meth:`hedged.results.Prediction.to_record`) plus ``sha256`` (of the file's bytes)
and ``error`` (set for a photo that could not be read; nothing aborts the run).

Rows are written in shards as they come (``part-<run>-<n>.parquet``, each written to a
hidden temporary file and renamed into place, so a shard is either whole or absent).
Rerunning the same call after a crash or Ctrl-C answers only the photos whose
``(path, sha256)`` is not yet in the folder: every photo ends up exactly once, and the
rows already written are never rewritten. A photo whose bytes changed since it was
answered is answered again (a new key), and its old row stays.

``engine="local"`` runs the classifier in this process (no Ray needed);
``engine="ray"`` runs it in a pool of Ray Data actors (``map_batches`` with an actor
class that loads the bundle once), on a local Ray or on a cluster (``address`` or
``$RAY_ADDRESS``), and this process writes the shards. Both give the same rows.

The output folder keeps the settings that shape the answers (bundle, accuracy target,
guarantee, taxonomy check) in ``_batch.json``; a rerun with other settings is refused
rather than mixing two kinds of answers in one dataset.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob as _glob
import hashlib
import io
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hedged.inputs import IMAGE_EXTENSIONS, _images_in, is_image_file

#: Extra columns of a batch row beside the answer record's fields.
BATCH_FIELDS = {
    "sha256": "SHA-256 of the photo's bytes (null when they could not be read); with image, the resume key",
    "error": "why the photo could not be answered (null for an answer)",
}
SETTINGS_FILE = "_batch.json"
_PART_PREFIX = "part-"
_MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
ENGINES = ("local", "ray")


class BatchError(ValueError):
    """A problem with the batch's input, output folder or settings (one line)."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from hedged.models.extras import hint

        raise BatchError(f"pyarrow is not installed and batch prediction (Parquet) needs it: {hint('batch')}") from None
    return pa, pq


def schema():
    """The Parquet schema of a batch row (every shard has exactly this schema)."""
    pa, _ = _pyarrow()
    text, f64, strings = pa.string(), pa.float64(), pa.list_(pa.string())
    return pa.schema([
        ("image", text), ("kind", text), ("headline", text), ("in_taxonomy", pa.bool_()),
        ("taxonomy_score", f64), ("node", text), ("display_name", text), ("path", strings),
        ("depth", pa.int32()), ("probability", f64), ("info_gain", f64), ("leaves", strings),
        ("labels", strings), ("leaf_guess", text), ("leaf_guess_display_name", text),
        ("leaf_probability", f64), ("accuracy_target", f64), ("guarantee", text),
        ("guarantee_holds", pa.bool_()), ("leaf_at_target", f64), ("warnings", strings),
        ("sha256", text), ("error", text),
    ])


# ---------------------------------------------------------------------------- inputs
def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs(uri: str):
    try:
        import fsspec
    except ImportError:
        from hedged.models.extras import hint

        raise BatchError(f"{uri}: fsspec is not installed and paths with a protocol need it: {hint('batch')}") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:  # an unknown protocol, or its package missing
        raise BatchError(f"{uri}: {err}") from None


def _manifest_paths(manifest: str, column: str) -> list[str]:
    """The path column of a CSV or Parquet manifest; relative local paths are taken from the manifest's folder."""
    pa, pq = _pyarrow()
    try:
        if manifest.lower().endswith(".csv"):
            import csv

            opener = _fs(manifest)[0].open if _is_uri(manifest) else open
            with opener(manifest, "rt", newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or column not in reader.fieldnames:
                    have = ", ".join(reader.fieldnames or []) or "none"
                    raise BatchError(f"manifest {manifest} has no {column!r} column (columns: {have}); "
                                     "name it with --path-column")
                paths = [row[column] for row in reader]
        else:
            filesystem, where = _fs(manifest) if _is_uri(manifest) else (None, manifest)
            names = pq.read_schema(where, filesystem=filesystem).names
            if column not in names:
                raise BatchError(f"manifest {manifest} has no {column!r} column (columns: {', '.join(names)}); "
                                 "name it with --path-column")
            paths = pq.read_table(where, columns=[column], filesystem=filesystem).column(column).to_pylist()
    except (OSError, UnicodeDecodeError, pa.ArrowInvalid) as err:
        raise BatchError(f"cannot read manifest {manifest}: {err}") from None
    base = os.path.dirname(manifest)
    out = []
    for p in paths:
        p = "" if p is None else str(p).strip()
        if p and not _is_uri(p) and not os.path.isabs(p) and not _is_uri(manifest):
            p = os.path.join(base, p)
        out.append(p)
    return out


def list_inputs(inputs, *, path_column: str = "path") -> list[str]:
    """The photos named by ``inputs``, in order, each once.

    ``inputs``: a folder (searched recursively for image files), a glob, a manifest
    (``.csv`` / ``.parquet`` with a ``path_column``), a single photo, any of these as
    an fsspec URI, or a list of such strings. A missing file stays in the list (it
    becomes an error row); a folder without photos or a glob without matches raises
    :class:`BatchError`.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: list[str] = []
    for item in map(os.fspath, items):
        if item.lower().endswith(_MANIFEST_SUFFIXES):
            out.extend(_manifest_paths(item, path_column))
        elif _is_uri(item):
            fs, where = _fs(item)
            if set("*?[") & set(where):
                found = sorted(fs.glob(where))
            elif fs.isdir(where):
                found = sorted(fs.find(where))
            else:
                found = [where]
            found = [fs.unstrip_protocol(f) for f in found if len(found) == 1 or is_image_file(f)]
            if not found:
                raise BatchError(f"{item}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            out.extend(found)
        elif os.path.isdir(item):
            found = _images_in(Path(item))
            if not found:
                raise BatchError(f"{item}: no image files in this folder")
            out.extend(found)
        elif set("*?[") & set(item) and not os.path.exists(item):
            found = sorted(f for f in _glob.glob(item, recursive=True) if os.path.isfile(f) and is_image_file(f))
            if not found:
                raise BatchError(f"{item}: no image files match this pattern")
            out.extend(found)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def read_bytes(path: str) -> bytes:
    """The bytes of a local path or an fsspec URI; ``OSError`` with a short reason when they cannot be read."""
    if _is_uri(path):
        fs, where = _fs(path)
        with fs.open(where, "rb") as fh:
            return fh.read()
    path = path.removeprefix("file://")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError("file not found")
    if not p.is_file():
        raise IsADirectoryError("not a regular file")
    return p.read_bytes()


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


def content_hash(path: str) -> tuple[str | None, str | None]:
    """``(sha256 hex, None)``, or ``(None, error)`` when the bytes cannot be read."""
    try:
        return hashlib.sha256(read_bytes(path)).hexdigest(), None
    except Exception as err:  # noqa: BLE001 - any reader's failure is this photo's error row
        return None, _reason(err)


# ---------------------------------------------------------------------------- output
@dataclasses.dataclass
class BatchSummary:
    """What a :func:`predict_batch` call did."""

    out: str
    total: int  #: photos named by the input
    answered: int  #: rows written with an answer in this call
    failed: int  #: error rows written in this call
    skipped: int  #: photos already in the output folder (not answered again)
    seconds: float  #: wall time of the call
    shards: int  #: shards written in this call
    engine: str

    @property
    def photos_per_second(self) -> float:
        done = self.answered + self.failed
        return done / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        return (f"{self.answered} answered, {self.failed} failed, {self.skipped} skipped as done "
                f"(of {self.total}) in {self.seconds:.1f} s ({self.photos_per_second:.1f} photos/s, "
                f"engine {self.engine}); {self.shards} shard(s) written to {self.out}")


def shard_files(out) -> list[Path]:
    return sorted(Path(out).glob(f"{_PART_PREFIX}*.parquet"))


def read_output(out):
    """Every row of an output folder as one ``pyarrow.Table`` (the shards concatenated)."""
    pa, pq = _pyarrow()
    files = shard_files(out)
    if not files:
        return schema().empty_table()
    return pa.concat_tables([pq.read_table(f, schema=schema()) for f in files])


def done_keys(out) -> set[tuple[str, str | None]]:
    """The ``(image, sha256)`` keys already in the output folder."""
    _, pq = _pyarrow()
    keys: set[tuple[str, str | None]] = set()
    for f in shard_files(out):
        try:
            t = pq.read_table(f, columns=["image", "sha256"])
        except Exception as err:  # noqa: BLE001 - a shard is renamed into place whole; anything else is foreign
            raise BatchError(f"{f} is not a readable shard of this output ({err}); move it away") from None
        keys.update(zip(t.column("image").to_pylist(), t.column("sha256").to_pylist()))
    return keys


class ShardWriter:
    """Collects rows and writes them as atomic Parquet shards.

    A shard is written when ``shard_size`` rows are waiting or ``flush_seconds``
    have passed since the last one, so that a crash loses little work; each goes to
    a hidden temporary file first and is renamed into place (whole or absent).
    """

    def __init__(self, out: Path, shard_size: int, flush_seconds: float):
        self.pa, self.pq = _pyarrow()
        self.out, self.shard_size, self.flush_seconds = Path(out), shard_size, flush_seconds
        self.schema = schema()
        self.run = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.pending: list = []
        self.rows = 0
        self.shards = 0
        self.last = time.monotonic()

    def add(self, table) -> None:
        if table.num_rows:
            self.pending.append(table.select(self.schema.names).cast(self.schema))
            self.rows += table.num_rows
        if self.rows >= self.shard_size or (self.rows and time.monotonic() - self.last >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = self.pa.concat_tables(self.pending)
        name = f"{_PART_PREFIX}{self.run}-{self.shards:05d}.parquet"
        tmp = self.out / f".{name}.tmp"
        self.pq.write_table(table, tmp)
        os.replace(tmp, self.out / name)
        self.pending, self.rows, self.shards, self.last = [], 0, self.shards + 1, time.monotonic()


def error_row(image: str, sha256: str | None, error: str, accuracy: float, guarantee: str) -> dict:
    """The row of a photo that could not be answered: its answer fields stay null."""
    return {"image": image, "sha256": sha256, "error": error, "accuracy_target": accuracy,
            "guarantee": guarantee, "guarantee_holds": False}


def records_table(records: Sequence[dict]):
    """Batch rows (answer records with ``sha256`` and ``error``) as a table of :func:`schema`."""
    pa, _ = _pyarrow()
    sch = schema()
    cols = {name: [r.get(name) for r in records] for name in sch.names}
    return pa.table(cols, schema=sch)


def _settings(bundle, accuracy: float, guarantee: str, check_taxonomy: bool | None, clf) -> dict:
    info = getattr(clf, "bundle_", None)
    where = getattr(info, "path", None) if info is not None else None
    return {
        "bundle": str(bundle) if bundle is not None else "default",
        "bundle_path": None if where is None else str(Path(where).resolve()),
        "accuracy_target": accuracy,
        "guarantee": guarantee,
        "check_taxonomy": check_taxonomy,
        "schema": schema().names,
    }


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise BatchError(f"{path} cannot be read ({err}); is {out} a batch output folder?") from None
        keys = ("bundle_path", "accuracy_target", "guarantee", "check_taxonomy")
        diff = [k for k in keys if old.get(k) != settings.get(k)]
        if diff and shard_files(out):
            what = ", ".join(f"{k} {old.get(k)!r} (now {settings.get(k)!r})" for k in diff)
            raise BatchError(f"{out} holds answers made with other settings: {what}; use another --out")
    tmp = out / f".{SETTINGS_FILE}.tmp"
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- the work
class Answerer:
    """Loads a bundle once and answers batches of ``{"image": path, "sha256": hash}`` rows.

    The callable class Ray Data's ``map_batches`` runs in each actor; the local engine
    calls it in this process. Rows come back as a ``pyarrow.Table`` of :func:`schema`.
    """

    def __init__(self, bundle=None, *, accuracy: float = 0.95, guarantee: str | None = None,
                 check_taxonomy: bool | None = None, threads: int | None = None, batch_size: int = 16,
                 max_pixels: int | None = None, classifier=None, cwd: str | None = None):
        if cwd is not None and os.path.isdir(cwd):
            # a Ray actor: relative paths mean the driver's folder, as they do for the local engine
            os.chdir(cwd)
        if classifier is None:
            from hedged.classifier import HedgedClassifier

            extra = {} if max_pixels is None else {"max_pixels": max_pixels}
            classifier = HedgedClassifier.from_bundle(bundle, threads=threads, guarantee=guarantee or "auto",
                                                      batch_size=batch_size, **extra)
        self.clf = classifier
        self.accuracy, self.guarantee = accuracy, self.clf.resolve_guarantee(guarantee)
        self.check_taxonomy, self.batch_size = check_taxonomy, batch_size

    def __call__(self, batch):
        paths = [str(p) for p in _column(batch, "image")]
        hashes = [None if h is None else str(h) for h in _column(batch, "sha256")]
        inputs, rows, records = [], [], [None] * len(paths)
        for i, path in enumerate(paths):
            if _is_uri(path):
                try:
                    inputs.append(io.BytesIO(read_bytes(path)))
                except Exception as err:  # noqa: BLE001 - this photo's error row
                    records[i] = {"image": path, "error": _reason(err)}
                    continue
            else:
                inputs.append(path)
            rows.append(i)
        if inputs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no lambda certifies ...": said once by the driver
                preds = self.clf.predict(inputs, self.accuracy, self.guarantee, errors="collect",
                                         batch_size=self.batch_size, check_taxonomy=self.check_taxonomy)
            for i, pred in zip(rows, preds):
                record = pred.to_record()
                record["image"] = paths[i]
                records[i] = record
        for i, record in enumerate(records):
            if record.get("error") is not None:
                records[i] = error_row(paths[i], hashes[i], record["error"], self.accuracy, self.guarantee)
            else:
                record.update(sha256=hashes[i], error=None)
        return records_table(records)


def _column(batch, name):
    if hasattr(batch, "column"):  # pyarrow.Table
        return batch.column(name).to_pylist()
    col = batch[name]
    return col.tolist() if hasattr(col, "tolist") else list(col)


def _hash_all(paths: Sequence[str], workers: int) -> list[tuple[str | None, str | None]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(content_hash, paths))


def predict_batch(
    inputs,
    out,
    accuracy: float = 0.95,
    guarantee: str | None = None,
    *,
    bundle=None,
    engine: str = "local",
    actors: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    batch_size: int = 16,
    shard_size: int = 1000,
    flush_seconds: float = 30.0,
    address: str | None = None,
    check_taxonomy: bool | None = None,
    max_pixels: int | None = None,
    path_column: str = "path",
    hash_workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    classifier=None,
) -> BatchSummary:
    """Answer every photo of ``inputs`` into the Parquet dataset ``out`` (resumable).

    Parameters
    ----------
    inputs : str, path, or a list of them
        Folders, globs, manifests (CSV or Parquet with ``path_column``), photos; fsspec
        URIs allowed (see :func:`list_inputs`).
    out : folder
        Created if needed; shards ``part-*.parquet`` and ``_batch.json`` go there.
    accuracy, guarantee : as for :meth:`hedged.HedgedClassifier.predict`.
    bundle : model bundle folder or name (default: the bundled default model).
    engine : ``"local"`` or ``"ray"``.
    actors : Ray actors (default: one per CPU of the Ray cluster divided by ``threads``).
    workers : local engine: processes that each load the bundle (default 1: this process).
        On a CPU, ``workers`` = cores with ``threads=1`` outruns one process with every core.
    threads : ONNX Runtime threads per model (default: local, every core, or 1 with
        ``workers`` > 1; ray, 1).
    batch_size : photos per forward pass (and per Ray batch).
    shard_size, flush_seconds : a shard is written every ``shard_size`` rows or
        ``flush_seconds`` seconds, whichever comes first.
    address : Ray cluster address (default ``$RAY_ADDRESS``, else a local Ray).
    check_taxonomy : as for :meth:`~hedged.HedgedClassifier.predict`.
    progress : callable(done, total), optional; called as rows are written.
    classifier : an already loaded :class:`~hedged.HedgedClassifier` for the local engine.

    Returns
    -------
    BatchSummary
    """
    from hedged.classifier import check_accuracy

    start = time.perf_counter()
    if engine not in ENGINES:
        raise BatchError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    accuracy = check_accuracy(accuracy)
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if int(value) < 1:
            raise BatchError(f"{name} must be at least 1, got {value}")
    if actors is not None and actors < 1:
        raise BatchError(f"actors must be at least 1, got {actors}")
    if int(workers) < 1:
        raise BatchError(f"workers must be at least 1, got {workers}")
    if workers > 1 and engine != "local":
        raise BatchError("workers are the local engine's processes; with engine='ray' use actors")
    require_extras(engine)  # a missing extra is said before any work
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BatchError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{_PART_PREFIX}*.tmp"):  # a shard a killed run did not finish renaming
        stale.unlink(missing_ok=True)

    paths = list_inputs(inputs, path_column=path_column)
    # The driver validates the bundle and the target once (a one-line error before any work)
    # and says the calibration's warnings once; the local engine then uses this classifier.
    if classifier is None:
        from hedged.classifier import HedgedClassifier

        extra = {} if max_pixels is None else {"max_pixels": max_pixels}
        local_threads = threads if engine == "local" and workers == 1 else 1
        classifier = HedgedClassifier.from_bundle(bundle, threads=local_threads, guarantee=guarantee or "auto",
                                                  batch_size=batch_size, **extra)
    guarantee = classifier.resolve_guarantee(guarantee)
    classifier.rule(guarantee)
    # the check as it will run: asked for (default: the classifier's) and a detector to run it
    check_taxonomy = bool(classifier.check_taxonomy if check_taxonomy is None else check_taxonomy)
    check_taxonomy = check_taxonomy and getattr(classifier, "detector", None) is not None
    _check_settings(out, _settings(bundle, accuracy, guarantee, check_taxonomy, classifier))

    done = done_keys(out)
    hashed = _hash_all(paths, hash_workers)
    todo, unreadable, skipped = [], [], 0
    for path, (digest, err) in zip(paths, hashed):
        if (path, digest) in done:
            skipped += 1
        elif err is not None:
            unreadable.append(error_row(path, None, err, accuracy, guarantee))
        else:
            todo.append({"image": path, "sha256": digest})

    writer = ShardWriter(out, shard_size, flush_seconds)
    counts = {"answered": 0, "failed": 0}
    total_new = len(todo) + len(unreadable)

    def take(table) -> None:
        answered = table.column("error").null_count  # rows without an error
        counts["answered"] += answered
        counts["failed"] += table.num_rows - answered
        writer.add(table)
        if progress is not None:
            progress(counts["answered"] + counts["failed"], total_new)

    try:
        if unreadable:
            take(records_table(unreadable))
        if todo:
            if engine == "local" and workers > 1:
                where = getattr(getattr(classifier, "bundle_", None), "path", None)
                if where is None:
                    raise BatchError("workers > 1 load the bundle in each process: give a classifier from "
                                     "HedgedClassifier.from_bundle() or a bundle")
                for table in _pool_tables(todo, workers=workers, bundle=str(where), accuracy=accuracy,
                                          guarantee=guarantee, check_taxonomy=check_taxonomy,
                                          threads=1 if threads is None else threads, batch_size=batch_size,
                                          max_pixels=max_pixels):
                    take(table)
            elif engine == "local":
                answer = Answerer(accuracy=accuracy, guarantee=guarantee, check_taxonomy=check_taxonomy,
                                  batch_size=batch_size, classifier=classifier)
                for i in range(0, len(todo), batch_size):
                    chunk = todo[i:i + batch_size]
                    take(answer({"image": [r["image"] for r in chunk], "sha256": [r["sha256"] for r in chunk]}))
            else:
                if bundle is None:  # the actors load the bundle the given classifier came from
                    bundle = getattr(getattr(classifier, "bundle_", None), "path", None)
                    bundle = None if bundle is None else str(bundle)
                for table in _ray_tables(todo, bundle=bundle, accuracy=accuracy, guarantee=guarantee,
                                         check_taxonomy=check_taxonomy, actors=actors, threads=threads,
                                         batch_size=batch_size, address=address, max_pixels=max_pixels):
                    take(table)
    finally:
        writer.flush()  # Ctrl-C or an error: what was answered is kept, whole
    return BatchSummary(out=str(out), total=len(paths), answered=counts["answered"], failed=counts["failed"],
                        skipped=skipped, seconds=time.perf_counter() - start, shards=writer.shards, engine=engine)


# ---------------------------------------------------------------------------- local processes
_WORKER: Answerer | None = None


def _start_worker(kwargs: dict) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    parent = os.getppid()

    def watch() -> None:  # a parent killed outright (SIGKILL) cannot stop its pool: leave with it
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    import threading

    threading.Thread(target=watch, daemon=True).start()
    global _WORKER
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _WORKER = Answerer(**kwargs)


def _answer_in_worker(chunk: dict):
    return _WORKER(chunk)


def _pool_tables(todo: list[dict], *, workers: int, **kwargs) -> Iterable:
    """Answer ``todo`` in ``workers`` processes (spawned, each loading the bundle once); yields tables as they finish."""
    import multiprocessing

    size = kwargs["batch_size"]
    chunks = ({"image": [r["image"] for r in todo[i:i + size]], "sha256": [r["sha256"] for r in todo[i:i + size]]}
              for i in range(0, len(todo), size))
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker, initargs=(kwargs,))
    try:
        pending = set()
        for chunk in chunks:  # at most two chunks per worker in flight: memory stays bounded
            pending.add(pool.submit(_answer_in_worker, chunk))
            if len(pending) >= 2 * workers:
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in concurrent.futures.as_completed(pending):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def require_extras(engine: str = "local") -> None:
    """Raise :class:`BatchError` (one line naming the extra) unless ``engine`` can run here."""
    _pyarrow()
    if engine == "ray":
        _ray()


# ---------------------------------------------------------------------------- Ray
def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        from hedged.models.extras import hint

        raise BatchError(f"ray[data] is not installed and --engine ray needs it: {hint('ray')}") from None
    return ray


def _ray_tables(todo: list[dict], *, bundle, accuracy, guarantee, check_taxonomy, actors, threads, batch_size,
                address, max_pixels) -> Iterable:
    """Answer ``todo`` on a pool of Ray Data actors; yields the answered rows as they come."""
    ray = _ray()
    import logging

    if not ray.is_initialized():
        # Ray's C++ core logs an error-level line about actor constructor arguments for every
        # Ray Data actor pool (ray-project/ray#53727); it is not an error of this run.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise BatchError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    threads = 1 if threads is None else int(threads)
    if actors is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, cpus // threads)
    # A bundle named by a relative folder means this machine's folder: give the actors its absolute path.
    if bundle is not None and os.path.isdir(str(bundle)):
        bundle = os.path.abspath(str(bundle))
    blocks = max(1, min(len(todo), -(-len(todo) // batch_size)))
    ds = ray.data.from_items(todo, override_num_blocks=blocks)
    ds = ds.map_batches(
        Answerer,
        fn_constructor_kwargs={"bundle": bundle, "accuracy": accuracy, "guarantee": guarantee,
                               "check_taxonomy": check_taxonomy, "threads": threads, "batch_size": batch_size,
                               "max_pixels": max_pixels, "cwd": os.getcwd()},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")
