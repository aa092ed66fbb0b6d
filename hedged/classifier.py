"""``HedgedClassifier``: the one entry point for hedged predictions.

Images go through the bundle's CNN (``models``, imported lazily so that users
with their own classifier never import torch); posteriors from any classifier go
straight to the DARTS rule (``hedging.Darts``), calibrated once per guarantee.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from pathlib import Path

import numpy as np

from hedged.results import Node, Prediction
from hedged.hedging import Darts, check_accuracy
from hedged.hedging._base import DEFAULT_GROUP_CAP
from hedged.taxonomy import Taxonomy

#: "auto": "pac-seller" when the calibration photos carry contributors, else "pac";
#: "pac": PAC over photos drawn independently; "pac-seller": PAC over contributors,
#: the accuracy of the average contributor (each weighs the same); "pac-group": PAC
#: over contributors, the photo accuracy with each contributor weighing at most
#: ``group_cap`` photos (hedging.groups); "expected": calibration accuracy only.
GUARANTEES = ("auto", "pac", "pac-seller", "pac-group", "expected")
#: Guarantees that need the contributor of each calibration photo.
GROUP_GUARANTEES = ("pac-seller", "pac-group")
ERRORS = ("raise", "collect")
# Images decoded at once: bounds memory on huge directories while keeping
# several CNN batches in flight per chunk.
_CHUNK = 64
# Below this many pixels on the shorter side an image carries too little to
# classify: it is still answered (the guarantee is over the calibration
# distribution), with a warning in the record.
TINY_SIDE = 32


class UncalibratedError(ValueError):
    """The classifier has no calibration data, or is asked to predict with a
    test-time augmentation its calibration was not made for."""


class ExplainUnavailableError(ValueError):
    """The classifier's model cannot be differentiated (an ONNX bundle), so it cannot be explained."""


def check_guarantee(guarantee) -> str:
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {', '.join(GUARANTEES)}, got {guarantee!r}")
    return guarantee


def check_angles(angles) -> tuple[float, ...]:
    """Rotation TTA angles as a non-empty tuple of finite floats (degrees), order kept."""
    if angles is None:
        return (0.0,)
    if isinstance(angles, (Real, np.number)):
        angles = (angles,)
    out = []
    for a in angles:
        if isinstance(a, bool) or not isinstance(a, (Real, np.number)) or not math.isfinite(float(a)):
            raise ValueError(f"TTA angles must be finite numbers of degrees, got {a!r}")
        out.append(float(a))
    if not out:
        raise ValueError("TTA angles must not be empty (use (0,) for no augmentation)")
    return tuple(out)


def normalize_angles(angles) -> tuple[float, ...]:
    """The set of rotations as a sorted tuple of degrees in [0, 360).

    The views are averaged, so order and repeats do not change the posterior,
    and -15 is 345: the normal form makes "same TTA as calibrated" a tuple
    comparison.
    """
    return tuple(sorted({a % 360.0 for a in check_angles(angles)}))


def format_angles(angles) -> str:
    return ",".join(f"{a:g}" for a in angles)


def _is_single_input(inputs) -> bool:
    """Whether ``inputs`` is one image rather than a collection of them.

    Raises TypeError for what is neither (``None``, a number).
    """
    if isinstance(inputs, (str, bytes, bytearray, memoryview, os.PathLike)):
        return True
    if hasattr(inputs, "read"):
        # A file object (open(..., "rb"), io.BytesIO) is one encoded image; it is
        # also iterable, line by line, which must not be taken for a batch.
        return True
    if type(inputs).__module__.startswith("PIL."):
        return True
    if isinstance(inputs, np.ndarray):
        return inputs.ndim <= 3  # (H, W) or (H, W, C); (N, H, W, C) is a batch
    if type(inputs).__module__.startswith("torch"):
        return inputs.ndim <= 3  # (C, H, W); (N, C, H, W) is a batch
    if not isinstance(inputs, Iterable):
        raise TypeError(
            "inputs must be an image (path, bytes, file object, PIL image, array, tensor) "
            f"or an iterable of images, got {type(inputs).__name__}"
        )
    return False


def _source(item) -> str | None:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    name = getattr(item, "name", None)  # an open file names its path
    return name if hasattr(item, "read") and isinstance(name, str) else None


def _looks_like_probs(X, n_leaves: int) -> bool:
    """A 2-D float array (or nested list of rows) with one column per leaf."""
    if isinstance(X, (list, tuple)) and X and isinstance(X[0], (list, tuple)):
        X = np.asarray(X, dtype=object)
        try:
            X = X.astype(np.float64)
        except (ValueError, TypeError):
            return False
    return isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == n_leaves and X.dtype.kind == "f"


class HedgedClassifier:
    """Hierarchical classifier that answers the most specific node that meets an
    accuracy target (DARTS, Deng et al. 2012), with a calibrated guarantee.

    Parameters
    ----------
    taxonomy : Taxonomy
        Leaf order = the classifier's posterior columns.
    guarantee : {"auto", "pac", "pac-seller", "pac-group", "expected"}
        Default guarantee. Every PAC guarantee holds with probability
        ``1 - delta`` over the draw of the calibration set; they differ in what
        is assumed and what is promised (docs/hedging.md):
        ``"pac-seller"``: contributors are the independent draws and their
        photos may be arbitrarily alike; the promise is the accuracy of the
        average contributor (each counts the same). ``"pac-group"``: as
        ``"pac-seller"``, but the promise is the photo accuracy with each
        contributor counting for at most ``group_cap`` photos. ``"pac"``: photos
        are independent draws (true only when each contributor sends one photo;
        overstated for clustered photos). ``"expected"``: the target is met on
        the calibration set, no confidence margin. ``"auto"`` (default):
        ``"pac-seller"`` when the calibration data carries contributors (the
        bundled model does), else ``"pac"``.
    delta : float
        Failure probability of the PAC guarantee.
    group_cap : int
        Photos one contributor may weigh in ``"pac-group"``.
    rejections : {"exclude", "miss"}
        How the calibration treats its photos the out-of-taxonomy detector turns away
        (when the detector runs and the bundle stores their scores): ``"exclude"``
        (default) calibrates on the photos judged in the taxonomy, so the promise is
        about *photos judged clothing*; ``"miss"`` counts them as wrong answers, so the
        promise covers every clothing photo a user sends (stricter: with the bundled
        model's 117 calibration contributors it certifies at most about 0.94).
    model, preprocess, tta_angles, temperature
        The CNN side (set by :meth:`from_bundle`); not needed for
        :meth:`predict_from_probs`.
    batch_size : int
        Images per CNN forward pass (times the number of TTA views).
    detector : hedging.ood.InTaxonomyDetector, optional
        Says whether an image is in the taxonomy at all (set by :meth:`from_bundle`
        when the bundle has one). Images judged outside get ``node=None``.
    check_taxonomy : bool
        Default for :meth:`predict`'s ``check_taxonomy``: run the detector.
    max_pixels : int, optional
        Refuse images with more pixels (width x height) before decoding them;
        default: the bundle's recipe (50 million). Raise it for huge scans;
        large JPEGs are decoded at reduced size (draft mode) whatever the limit.

    Examples
    --------
    Any classifier's posteriors:

    >>> clf = HedgedClassifier(taxonomy).fit(cal_probs, cal_labels)   # doctest: +SKIP
    >>> clf.predict_from_probs(test_probs, accuracy=0.9)[0].node.name  # doctest: +SKIP

    The bundled image model:

    >>> clf = HedgedClassifier.from_bundle()                          # doctest: +SKIP
    >>> clf.predict("polo.jpg", accuracy=0.95)[0].node.display_name   # doctest: +SKIP
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        guarantee: str = "auto",
        delta: float = 0.05,
        group_cap: int = DEFAULT_GROUP_CAP,
        rejections: str = "exclude",
        model=None,
        preprocess=None,
        tta_angles: Sequence[float] = (0.0,),
        temperature: float = 1.0,
        batch_size: int = 8,
        detector=None,
        check_taxonomy: bool = True,
        max_pixels: int | None = None,
    ):
        if not isinstance(taxonomy, Taxonomy):
            raise TypeError(f"taxonomy must be a taxonomy.Taxonomy, got {type(taxonomy).__name__}")
        self.taxonomy = taxonomy
        self.guarantee = check_guarantee(guarantee)
        self.delta = delta
        self.group_cap = group_cap
        if rejections not in ("exclude", "miss"):
            raise ValueError(f"rejections must be 'exclude' or 'miss', got {rejections!r}")
        self.rejections = rejections
        self.model = model
        self.preprocess = preprocess
        angles = check_angles(tta_angles)
        # keep the very object when it is already in normal form: sklearn.base.clone
        # checks that the constructor stores its parameters unchanged
        self.tta_angles = tta_angles if isinstance(tta_angles, tuple) and tta_angles == angles else angles
        self.temperature = temperature
        self.batch_size = batch_size
        self.detector = detector
        self.check_taxonomy = bool(check_taxonomy)
        self.max_pixels = max_pixels
        self._rules: dict[str, Darts] = {}
        self._nodes: dict[str, Node] = {}
        self._gain = None

    # ------------------------------------------------------------------ build
    @classmethod
    def from_bundle(cls, path=None, *, threads: int | None = None, **kwargs) -> HedgedClassifier:
        """Load a model bundle: the one way every surface (command line, server, batch) loads a model.

        ``path`` is a bundle directory or the name of a bundled one
        (``"clothing-int8"``, ``"clothing"``); ``None`` means ``$HEDGED_MODEL``
        when set, else the bundled default model. The bundle's CNN,
        preprocessing, TTA angles, temperature and calibration posteriors are
        used as they are; ``kwargs`` go to the constructor (``guarantee``,
        ``delta``, ``batch_size``). An exported bundle (``export.py``) runs on
        ONNX Runtime with ``threads`` intra-op threads (``None``: one per core)
        and never imports torch.

        Raises
        ------
        hedged.models.bundle.BundleError
            (a ``ValueError``) with one line naming what is missing or wrong.
        """
        from hedged.models.bundle import load_bundle

        bundle = load_bundle(path, threads=threads)
        model = bundle.model
        if hasattr(model, "fuse_batchnorm"):
            # Folding BatchNorm into the convolutions saves about a fifth of CPU
            # inference time; a copy, so that bundle_.model still matches its checkpoint.
            model = copy.deepcopy(model).fuse_batchnorm()
        clf = cls(
            bundle.taxonomy,
            model=model,
            preprocess=bundle.preprocess,
            tta_angles=bundle.tta_angles,
            temperature=bundle.temperature,
            **{"detector": bundle.detector, **kwargs},
        )
        clf.bundle_ = bundle
        return clf.fit(bundle.calibration_probs, bundle.calibration_labels, getattr(bundle, "calibration_groups", None),
                       taxonomy_scores=getattr(bundle, "calibration_taxonomy_scores", None))

    def fit(self, probs, labels, groups=None, taxonomy_scores=None) -> HedgedClassifier:
        """Store calibration posteriors and labels; the rule for each guarantee
        is fitted from them on first use.

        Parameters
        ----------
        probs : array-like, shape (n, n_leaves)
            Leaf posteriors of held-out labelled data (made with the same TTA
            and temperature as the predictions will be).
        labels : array-like, shape (n,)
            Leaf indices, leaf names or dataset labels (aliases).
        groups : array-like, shape (n,), optional
            Contributor of each calibration sample (e.g. hashed sender ids);
            needed by ``"pac-seller"`` and ``"pac-group"``, and makes
            ``"auto"`` mean ``"pac-seller"``.
        taxonomy_scores : array-like, shape (n,), optional
            The out-of-taxonomy detector's score of each calibration photo. With
            it, a calibration photo the detector would turn away counts as a
            miss when the detector runs at prediction time, so the promised
            accuracy is that of what users see (a clothing photo answered
            "not clothing" is a wrong answer).
        """
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != self.taxonomy.n_leaves:
            raise ValueError(
                f"calibration probs must have shape (n, {self.taxonomy.n_leaves}), got {probs.shape}"
            )
        if probs.shape[0] == 0:
            # Said now, not as a warning at every predict.
            raise ValueError("no calibration samples: fit needs at least one row of probs and labels")
        labels = self.taxonomy.resolve_labels(np.asarray(labels))
        if labels.shape != (probs.shape[0],):
            raise ValueError(f"calibration labels must have shape ({probs.shape[0]},), got {labels.shape}")
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (probs.shape[0],):
                raise ValueError(f"calibration groups must have shape ({probs.shape[0]},), got {groups.shape}")
        if taxonomy_scores is not None:
            taxonomy_scores = np.asarray(taxonomy_scores, dtype=np.float64)
            if taxonomy_scores.shape != (probs.shape[0],):
                raise ValueError(f"calibration taxonomy scores must have shape ({probs.shape[0]},), "
                                 f"got {taxonomy_scores.shape}")
        self.calibration_probs_ = probs
        self.calibration_labels_ = labels
        self.calibration_groups_ = groups
        self.calibration_taxonomy_scores_ = taxonomy_scores
        self._rules = {}
        return self

    def resolve_guarantee(self, guarantee: str | None = None) -> str:
        """The guarantee a call uses: ``None`` is the classifier's, ``"auto"`` becomes
        ``"pac-seller"`` when the calibration data carries contributors, else ``"pac"``."""
        guarantee = check_guarantee(self.guarantee if guarantee is None else guarantee)
        if guarantee == "auto":
            return "pac-seller" if getattr(self, "calibration_groups_", None) is not None else "pac"
        return guarantee

    def promise(self, accuracy: float, guarantee: str | None = None, checked: bool | None = None) -> str:
        """What a target promises under a guarantee, in one sentence: the words every surface shows."""
        g = self.resolve_guarantee(guarantee)
        checked = (self.check_taxonomy and self.detector is not None) if checked is None else checked
        root = self.taxonomy.display_name(self.taxonomy.root).lower()
        photos = f"photos judged {root}" if checked and self.rejections == "exclude" else f"{root} photos"
        share = f"{100 * accuracy:g}%"
        conf = f"with {100 * (1 - self.delta):g}% confidence over the calibration photos"
        return {
            "pac-seller": f"for the average contributor, at least {share} of their {photos} get a right answer "
                          f"({conf}; contributors like the calibration ones)",
            "pac-group": f"at least {share} of {photos} get a right answer, each contributor counting for at most "
                         f"{self.group_cap} photos ({conf})",
            "pac": f"at least {share} of {photos} get a right answer ({conf}; photos as independent draws, "
                   "overstated when photos come in clusters)",
            "expected": f"at least {share} of the calibration {photos} got a right answer (no confidence margin)",
        }[g] + "; not a promise about any single photo"

    def _calibration_rejected(self) -> np.ndarray | None:
        """Which calibration photos the detector turns away (None: unknown or no detector)."""
        scores = getattr(self, "calibration_taxonomy_scores_", None)
        if scores is None or self.detector is None:
            return None
        return scores < self.detector.threshold_for()

    def rule(self, guarantee: str | None = None, count_rejections: bool = False) -> Darts:
        """The DARTS rule fitted on the calibration data for ``guarantee`` (cached).

        ``count_rejections``: calibrate for answers that go through the
        out-of-taxonomy detector, counting the calibration photos it turns away
        as misses (when the calibration photos' detector scores are known).
        """
        guarantee = self.resolve_guarantee(guarantee)
        rejected = self._calibration_rejected() if count_rejections else None
        key = (guarantee, rejected is not None)
        if key not in self._rules:
            if not hasattr(self, "calibration_probs_"):
                raise UncalibratedError(
                    "HedgedClassifier is not calibrated: call fit(probs, labels) or use from_bundle()"
                )
            groups = None
            if guarantee in GROUP_GUARANTEES:
                groups = getattr(self, "calibration_groups_", None)
                if groups is None:
                    raise UncalibratedError(
                        f"guarantee {guarantee!r} needs the contributor of each calibration photo: "
                        "fit(probs, labels, groups) or a bundle that stores calibration groups"
                    )
            rule = Darts(self.taxonomy, guarantee="expected" if guarantee == "expected" else "pac", delta=self.delta,
                         group_cap=1 if guarantee == "pac-seller" else self.group_cap)
            probs, labels = self.calibration_probs_, self.calibration_labels_
            if rejected is not None and self.rejections == "exclude":
                # the promise is about photos judged in the taxonomy: calibrate on those
                keep = ~rejected
                probs, labels = probs[keep], labels[keep]
                groups = None if groups is None else groups[keep]
                rejected = None
            args = (probs, labels, groups)
            self._rules[key] = rule.fit(*args) if rejected is None else rule.fit(*args, rejected=rejected)
        return self._rules[key]

    def node(self, name) -> Node:
        """The :class:`Node` for a node name (cached)."""
        name = str(name)
        if name not in self._nodes:
            self._nodes[name] = Node.of(self.taxonomy, name)
        return self._nodes[name]

    # ------------------------------------------------------------------ posteriors
    def node_proba(self, probs) -> np.ndarray:
        """Node posteriors (N x n_nodes, columns ``taxonomy.nodes``) from leaf posteriors."""
        return self.taxonomy.node_probs(probs)

    def predict_from_probs(
        self,
        probs,
        accuracy: float = 0.95,
        guarantee: str | None = None,
        sources=None,
        *,
        guaranteed: bool = True,
        path_over_targets: bool = False,
        in_taxonomy=None,
        taxonomy_scores=None,
        titles=None,
    ) -> list[Prediction]:
        """Hedged predictions from leaf posteriors (any classifier).

        Parameters
        ----------
        probs : array-like, shape (N, n_leaves) or (n_leaves,)
        accuracy : float in (0, 1]
            Target accuracy; any value, the calibration is shared.
        guarantee : {"auto", "pac", "pac-seller", "pac-group", "expected"}, optional
            Default: the classifier's.
        sources : sequence of str, optional
            Names to put in ``Prediction.source``.
        path_over_targets : bool
            Also fill ``Prediction.answer_path``: the answer at every target
            in (0, 1] (costs nothing extra: every answer is read off the same
            per-sample envelope).
        in_taxonomy : array-like of bool, shape (N,), optional
            The out-of-taxonomy detector's verdicts; rows judged outside get
            ``node=None``. ``None``: not checked (``Prediction.in_taxonomy`` is None).
        taxonomy_scores : array-like of float, shape (N,), optional
            The detector's scores, reported as ``Prediction.taxonomy_score``.

        titles : sequence of str or None, optional
            A listing title per row (``None`` for none). A title whose keywords name a
            node (:meth:`Taxonomy.label_text`) restricts that row's posterior to the
            node's leaves before hedging. The calibration knows no titles, so such an
            answer says the guarantee does not cover it (``guaranteed=False`` and a
            warning); a title the photo contradicts (under 1% of the posterior on its
            node) is not used, and the answer says so.

        Returns
        -------
        list of Prediction
            The DARTS answer (a node with a single child is named by that
            child, as every rule does), with ``leaf_at_target`` always set.
        """
        accuracy = check_accuracy(accuracy)
        guarantee = self.resolve_guarantee(guarantee)
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim == 1:
            probs = probs[None, :]
        title_notes: dict[int, tuple] = {}
        if titles is not None:
            probs, title_notes = self._apply_titles(probs, titles)
        # answers that went through the detector are calibrated with its rejections as misses
        rule = self.rule(guarantee, count_rejections=in_taxonomy is not None)
        if accuracy >= 1.0:
            # The rules answer the root silently (a curve over targets ends at 1);
            # a user who asks for 1 is told, as for 0.9999, which no calibration certifies.
            warnings.warn("accuracy 1 is met only by the root: predicting the root for every sample", stacklevel=2)
        if probs.shape[0] == 0:
            return []
        # One envelope per sample answers the target, the path over targets and
        # the leaf-at-target; the parameter look-up only issues the rule's warning.
        rule.lambda_for(accuracy)
        indptr, max_target, step_node = rule.answer_paths(probs)
        rows = np.arange(probs.shape[0])
        # First step whose max target reaches the accuracy (the last is 1.0, the root).
        reached = np.add.reduceat((max_target < accuracy).astype(np.int64), indptr[:-1])
        idx = step_node[indptr[:-1] + reached]
        node_p = self.taxonomy.node_probs(probs)[rows, idx]
        leaf_idx = probs.argmax(axis=1)
        leaf_p = probs[rows, leaf_idx]
        gain = self._normalised_gain()[idx]
        leaf_nodes = np.zeros(self.taxonomy.n_nodes, dtype=bool)
        leaf_nodes[self.taxonomy.node_index(list(self.taxonomy.leaves))] = True
        first = indptr[:-1]
        leaf_at = np.where(leaf_nodes[step_node[first]], max_target[first], np.nan)
        if sources is None:
            sources = [None] * probs.shape[0]
        inside = [None] * probs.shape[0] if in_taxonomy is None else [bool(v) for v in np.asarray(in_taxonomy)]
        scores = [None] * probs.shape[0] if taxonomy_scores is None else [float(v) for v in np.asarray(taxonomy_scores)]
        nodes, leaves = self.taxonomy.nodes, self.taxonomy.leaves
        all_node_p = self.taxonomy.node_probs(probs) if path_over_targets else None
        root_name = self.taxonomy.display_name(self.taxonomy.root)
        out = []
        for r, (src, i, p, g, j, lp, la, ins, sc) in enumerate(
            zip(sources, idx, node_p, gain, leaf_idx, leaf_p, leaf_at, inside, scores)
        ):
            path = path_p = None
            if path_over_targets:
                ks = range(indptr[r], indptr[r + 1])
                path = tuple((float(max_target[k]), self.node(nodes[step_node[k]])) for k in ks)
                path_p = tuple(min(1.0, max(0.0, float(all_node_p[r, step_node[k]]))) for k in ks)
            out.append(
                Prediction(
                    source=src,
                    node=None if ins is False else self.node(nodes[i]),
                    # sums of float posteriors can pass 1 by an ulp (1.0000000000000002 at the root)
                    probability=min(1.0, max(0.0, float(p))),
                    info_gain=float(g),
                    leaf=self.node(leaves[j]),
                    leaf_probability=min(1.0, max(0.0, float(lp))),
                    accuracy=accuracy,
                    guarantee=guarantee,
                    guaranteed=guaranteed,
                    leaf_at_target=None if math.isnan(la) else float(la),
                    # a photo judged outside has no answer over targets: it is outside at all of them
                    answer_path=None if ins is False else path,
                    answer_path_probabilities=None if ins is False else path_p,
                    root_display_name=root_name,
                    in_taxonomy=ins,
                    taxonomy_score=sc,
                )
            )
        for r, (label, note, used) in title_notes.items():
            out[r] = dataclasses.replace(
                out[r], title=label, warnings=out[r].warnings + (note,),
                guaranteed=out[r].guaranteed and not used,
            )
        return out

    def _apply_titles(self, probs: np.ndarray, titles) -> tuple[np.ndarray, dict]:
        """Posteriors restricted to each title's node; per row (label, note, used)."""
        titles = list(titles)
        if len(titles) != probs.shape[0]:
            raise ValueError(f"titles must have one entry per image ({probs.shape[0]}), got {len(titles)}")
        tax = self.taxonomy
        probs = probs.copy()
        notes = {}
        for r, title in enumerate(titles):
            if title is None or not str(title).strip():
                continue
            label = tax.label_text(title)
            if label.node is None:
                notes[r] = (label, f"the title names no {tax.display_name(tax.root).lower()} class: not used", False)
                continue
            if label.node == tax.root:
                notes[r] = (label, "the title's words disagree with each other: not used", False)
                continue
            mask = np.zeros(tax.n_leaves, dtype=bool)
            mask[np.atleast_1d(tax.leaf_index(list(tax.leaves_under(label.node))))] = True
            mass = float(probs[r, mask].sum())
            name = tax.display_name(label.node)
            if mass < 0.01:
                notes[r] = (label, f"the title says {name}, which the photo contradicts "
                                   f"({100 * mass:.1f}% of its posterior): not used", False)
                continue
            probs[r] = np.where(mask, probs[r], 0.0) / mass
            notes[r] = (label, f"the title says {name}: the answer is restricted to it, and the accuracy guarantee "
                               "(calibrated on photos without titles) does not cover it", True)
        return probs, notes

    def _normalised_gain(self) -> np.ndarray:
        if self._gain is None:
            bits = self.taxonomy.rewards()
            top = math.log2(self.taxonomy.n_leaves)
            # One leaf: every answer is the leaf, as specific as it gets.
            self._gain = bits / top if top > 0 else np.ones_like(bits)
        return self._gain

    # ------------------------------------------------------------------ images
    def resolve_tta(self, tta, allow_uncalibrated: bool = False) -> tuple[tuple[float, ...], bool]:
        """The angles to run and whether the guarantee holds for them.

        ``tta=None`` or the same set of rotations as calibrated (any order,
        ``-15`` = ``345``) gives the calibrated angles; another set raises
        :class:`UncalibratedError` unless ``allow_uncalibrated``.
        """
        # The calibrated angles themselves go to the model, so that the views
        # are computed exactly as for the calibration posteriors.
        if tta is None or normalize_angles(tta) == normalize_angles(self.tta_angles):
            return self.tta_angles, True
        angles = check_angles(tta)
        if not allow_uncalibrated:
            raise UncalibratedError(
                f"TTA angles {format_angles(angles)} differ from the calibrated ones {format_angles(self.tta_angles)}: "
                "the accuracy guarantee would not hold (pass allow_uncalibrated=True to predict anyway)"
            )
        return angles, False

    def _infer(self, inputs, angles, errors: str, batch_size, progress, check_taxonomy: bool = False):
        """Leaf posteriors of the loadable inputs plus the per-input errors.

        With ``check_taxonomy`` (and a detector) also the detector's verdicts and
        scores, read off the same forward pass (its logits and features).
        """
        if errors not in ERRORS:
            raise ValueError(f"errors must be one of {', '.join(ERRORS)}, got {errors!r}")
        if self.model is None or self.preprocess is None:
            raise UncalibratedError("this HedgedClassifier has no image model: use from_bundle() or predict_from_probs()")
        from hedged.models.preprocess import ImageLoadError
        from hedged.models.tta import average_view_probs

        if hasattr(self.model, "session"):  # an exported bundle's OnnxModel: no torch
            predict_logits = self.model.predict_logits
        else:
            from hedged.models.inference import predict_logits

            predict_logits = functools.partial(predict_logits, self.model, progress=False)

        items = [inputs] if _is_single_input(inputs) else list(inputs)
        batch_size = self.batch_size if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        sources = [_source(x) for x in items]
        failures: dict[int, str] = {}
        notes: dict[int, list[str]] = {}
        ok_rows: list[int] = []
        chunks, verdicts, scores = [], [], []
        check = check_taxonomy and self.detector is not None
        recipe = self.preprocess
        if self.max_pixels is not None:
            recipe = dataclasses.replace(recipe, max_pixels=self.max_pixels)
        for start in range(0, len(items), _CHUNK):
            images, rows = [], []
            for i in range(start, min(start + _CHUNK, len(items))):
                try:
                    # The recipe's loader decodes JPEGs at reduced size when it can; the image is
                    # then brought to the model's input at once, so that a batch never holds
                    # photos at full resolution (resizing the model-sized image again later is
                    # the identity: the answers are those of the full image).
                    image = recipe.load(items[i])
                    if min(image.size) < TINY_SIDE:
                        w, h = image.size
                        notes[i] = [
                            f"tiny image ({w}x{h} pixels, under {TINY_SIDE} on a side): "
                            "the answer says little about it"
                        ]
                    idempotent = recipe.resize != "center_crop" or recipe.crop_pct >= 1.0
                    images.append(recipe.resize_image(image) if idempotent else image)
                    rows.append(i)
                    del image
                except (ImageLoadError, OSError) as err:
                    if errors == "raise":
                        # Messages about files name the file; say which in-memory input it was.
                        where = "" if sources[i] is not None else f"input {i}: "
                        raise ImageLoadError(where + str(err)) from None
                    failures[i] = str(err)
            if images:
                out = predict_logits(
                    images,
                    self.preprocess,
                    angles=angles,
                    batch_size=batch_size,
                    return_features=check and self.detector.needs_features,
                )
                logits, feats = out if isinstance(out, tuple) else (out, None)
                chunks.append(average_view_probs(logits, self.temperature))
                if check:
                    inside, score = self.detector.check(logits, feats)
                    verdicts.append(inside)
                    scores.append(score)
                ok_rows.extend(rows)
            if progress is not None:
                progress(min(start + _CHUNK, len(items)), len(items))
        probs = np.concatenate(chunks) if chunks else np.zeros((0, self.taxonomy.n_leaves))
        ood = None
        if check:
            ood = (np.concatenate(verdicts), np.concatenate(scores)) if verdicts else (np.zeros(0, bool), np.zeros(0))
        return sources, np.asarray(ok_rows, dtype=np.int64), probs, failures, ood, notes

    def predict_proba(
        self,
        inputs,
        *,
        errors: str = "raise",
        tta=None,
        allow_uncalibrated: bool = False,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Leaf posteriors (N x n_leaves, columns ``taxonomy.leaves``) of images.

        ``inputs``: a path, PIL image, array or tensor, or an iterable of them.
        ``errors="raise"`` raises ``models.ImageLoadError`` naming the first
        input that cannot be read; ``"collect"`` gives that input a row of NaN.
        The other arguments are those of :meth:`predict`.
        """
        angles, _ = self.resolve_tta(tta, allow_uncalibrated)
        sources, ok_rows, probs, _, _, _ = self._infer(inputs, angles, errors, batch_size, progress)
        if ok_rows.size == len(sources):
            return probs
        out = np.full((len(sources), self.taxonomy.n_leaves), np.nan)
        out[ok_rows] = probs
        return out

    def predict(
        self,
        inputs,
        accuracy: float = 0.95,
        guarantee: str | None = None,
        *,
        errors: str = "raise",
        tta=None,
        allow_uncalibrated: bool = False,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        path_over_targets: bool = False,
        check_taxonomy: bool | None = None,
        titles=None,
    ) -> list[Prediction]:
        """Hedged predictions for images.

        Parameters
        ----------
        inputs : path, PIL.Image, numpy.ndarray, torch.Tensor, or an iterable of them
        accuracy : float in (0, 1]
            Target accuracy (probability that the answered node contains the
            true class).
        guarantee : {"auto", "pac", "pac-seller", "pac-group", "expected"}, optional
        errors : {"raise", "collect"}
            ``"collect"``: an input that cannot be read gives a ``Prediction``
            with ``error`` set, the others are classified.
        tta : sequence of int, optional
            Rotation angles; default the bundle's. Others raise
            :class:`UncalibratedError` unless ``allow_uncalibrated`` (then
            ``Prediction.guaranteed`` is False).
        batch_size : int, optional
        progress : callable(done, total), optional
        path_over_targets : bool
            Fill ``Prediction.answer_path`` (the answer at every target).
        check_taxonomy : bool, optional
            Whether to judge if each image is in the taxonomy at all (default:
            the classifier's ``check_taxonomy``; needs a detector, which the
            bundled model has). An image judged outside gets ``node=None`` and
            ``in_taxonomy=False``; the accuracy guarantee is stated for images
            judged inside. ``False``: every image gets a node, ``in_taxonomy=None``.
        titles : sequence of str or None, optional
            A listing title per input: see :meth:`predict_from_probs`.

        Returns
        -------
        list of Prediction, one per input, in input order
        """
        accuracy = check_accuracy(accuracy)
        guarantee = self.resolve_guarantee(guarantee)
        angles, calibrated = self.resolve_tta(tta, allow_uncalibrated)
        self.rule(guarantee)  # calibration problems surface before the CNN runs
        check = self.check_taxonomy if check_taxonomy is None else bool(check_taxonomy)
        sources, ok_rows, probs, failures, ood, notes = self._infer(inputs, angles, errors, batch_size, progress, check)
        if titles is not None:
            titles = list(titles)
            if len(titles) != len(sources):
                raise ValueError(f"titles must have one entry per input ({len(sources)}), got {len(titles)}")
        done = self.predict_from_probs(
            probs,
            accuracy,
            guarantee,
            sources=[sources[i] for i in ok_rows],
            guaranteed=calibrated,
            in_taxonomy=None if ood is None else ood[0],
            taxonomy_scores=None if ood is None else ood[1],
            path_over_targets=path_over_targets,
            titles=None if titles is None else [titles[i] for i in ok_rows],
        )
        out: list[Prediction | None] = [None] * len(sources)
        for i, pred in zip(ok_rows, done):
            out[i] = dataclasses.replace(pred, warnings=tuple(notes[i]) + pred.warnings) if i in notes else pred
        for i, msg in failures.items():
            out[i] = Prediction.failed(sources[i], msg, accuracy, guarantee)
        return out

    # ------------------------------------------------------------------ scikit-learn conventions
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters (scikit-learn convention; ``sklearn.base.clone`` uses it).

        ``deep`` is accepted for compatibility; no parameter is itself an estimator.
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> HedgedClassifier:
        """Set constructor parameters; the calibrated rules are refitted on next use."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for HedgedClassifier; valid: {', '.join(valid)}")
            if name == "guarantee":
                value = check_guarantee(value)
            elif name == "tta_angles":
                value = check_angles(value)
            elif name == "taxonomy" and not isinstance(value, Taxonomy):
                raise TypeError(f"taxonomy must be a taxonomy.Taxonomy, got {type(value).__name__}")
            setattr(self, name, value)
        # delta, guarantee and taxonomy change the fitted rules and the node tables
        self._rules, self._nodes, self._gain, self._specific = {}, {}, None, None
        return self

    def score(self, X, y, accuracy: float = 0.95, guarantee: str | None = None) -> float:
        """Hierarchical accuracy of the hedged answers: the share whose node contains the true leaf.

        Parameters
        ----------
        X : array-like of shape (n, n_leaves), or images
            A 2-D float array with one column per leaf is taken as posteriors
            (:meth:`predict_from_probs`); anything else as images (:meth:`predict`).
        y : array-like of shape (n,)
            True leaves: indices, leaf names or dataset labels.
        accuracy : float in (0, 1]
            The target the answers are made for.

        Returns
        -------
        float
            :func:`hedged.hedging.metrics.hierarchical_accuracy` of the answers,
            to be compared with ``accuracy``.
        """
        from hedged.hedging.metrics import hierarchical_accuracy

        if _looks_like_probs(X, self.taxonomy.n_leaves):
            preds = self.predict_from_probs(X, accuracy, guarantee)
        else:
            preds = self.predict(X, accuracy, guarantee)
        return hierarchical_accuracy(self.taxonomy, [p.node.name for p in preds], y)

    # ------------------------------------------------------------------ explanations
    def explain(
        self,
        image,
        node=None,
        accuracy: float = 0.95,
        method: str = "gradcam",
        *,
        guarantee: str | None = None,
        tta=None,
        allow_uncalibrated: bool = False,
        n_steps: int = 64,
        max_side: int = 512,
    ):
        """Heat maps of what carries a node, and of what competes under it.

        Parameters
        ----------
        image : path, PIL.Image, numpy.ndarray or torch.Tensor
            One image.
        node : str, optional
            The node to explain; default the hedged answer at ``accuracy``. A
            node with a single child is explained as that child (same leaves).
        accuracy : float in (0, 1]
            Target of the answer (as for :meth:`predict`).
        method : {"gradcam", "integrated_gradients"}
            Grad-CAM on the last convolutional stage (about a second), or
            integrated gradients with ``n_steps`` path points (tens of seconds).
        guarantee, tta, allow_uncalibrated
            As for :meth:`predict`; the maps are averaged over the same TTA views.
        n_steps : int
            Integrated-gradients path points.
        max_side : int
            Longer side of the returned image and maps (the photo's aspect ratio).

        Returns
        -------
        Explanation
            ``nodes[0]`` is the node, then its two most probable children; for
            a leaf, the two most probable other leaves; for a "not sure" answer
            (the root) the three most probable children of the root, and for a
            photo judged outside the taxonomy none. ``maps`` are ``(K, H, W)``
            on ``image``; each node's score is its probability (sum of its
            leaves' temperature-scaled posteriors).
        """
        from hedged.explanation import Explanation, check_method

        accuracy = check_accuracy(accuracy)
        method = check_method(method)
        guarantee = self.resolve_guarantee(guarantee)
        if not _is_single_input(image):
            raise ValueError("explain takes one image (a path, PIL image, array or tensor), not a collection")
        if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 16:
            raise ValueError(f"max_side must be an int >= 16, got {max_side!r}")
        tax = self.taxonomy
        if node is not None and str(node) not in tax:
            raise ValueError(f"unknown node {node!r}: not a node of the taxonomy")
        model, note = self._torch_model()
        angles, calibrated = self.resolve_tta(tta, allow_uncalibrated)
        self.rule(guarantee)

        from hedged.models import ImageLoadError
        from hedged.models import explain as attribution

        try:
            photo = self.preprocess.load(image)
        except ImageLoadError as err:
            raise ImageLoadError(("" if _source(image) is not None else "image: ") + str(err)) from None
        source = _source(image)
        probs = self.predict_proba(photo, tta=angles, allow_uncalibrated=True)
        # The answer every other surface gives for this photo: with the detector's verdict
        # when it runs (its signals need the network's features: one more forward pass).
        ood = None
        if self.check_taxonomy and self.detector is not None:
            _, _, _, _, ood, _ = self._infer([photo], angles, "raise", None, None, True)
        pred = self.predict_from_probs(probs, accuracy, guarantee, sources=[source], guaranteed=calibrated,
                                       in_taxonomy=None if ood is None else ood[0],
                                       taxonomy_scores=None if ood is None else ood[1])[0]
        node_p = tax.node_probs(probs)[0]
        w, h = photo.size
        scale = min(1.0, max_side / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        from PIL import Image

        shown = photo if size == photo.size else photo.resize(size, Image.Resampling.BICUBIC)
        if node is None and pred.kind == "outside":
            # "not clothing" on every surface: nothing in the taxonomy to explain
            return Explanation(source=source, image=np.asarray(shown), method=method, nodes=(), roles=(),
                               probabilities=np.zeros(0), maps=np.zeros((0, size[1], size[0])), prediction=pred,
                               angles=tuple(angles), note=note)

        from hedged.hedging._base import most_specific

        target = tax.nodes[most_specific(tax)[tax.node_index(pred.node.name if node is None else str(node))]]
        if tax.is_leaf(target):
            others = [v for v in tax.leaves if v != target]
            roles = ("node",) + ("alternative",) * min(2, len(others))
        else:
            others = list(tax.children(target))
            roles = ("node",) + ("child",) * min(2, len(others))
        # Most probable first; ties by taxonomy order so the picture is reproducible.
        others.sort(key=lambda v: (-node_p[tax.node_index(v)], tax.node_index(v)))
        targets = [target] + others[:2]
        if target == tax.root and not tax.is_leaf(target):
            # The root holds every leaf (probability 1): its map says nothing. A "not sure"
            # answer is explained by the top children it could not choose between.
            targets = others[:3]
            roles = ("child",) * len(targets)
        membership = attribution.membership_matrix(
            [np.atleast_1d(tax.leaf_index(list(tax.leaves_under(v)))) for v in targets], tax.n_leaves
        )
        x = self.preprocess.batch([photo])
        if method == "gradcam":
            maps = attribution.gradcam(model, x, membership, self.temperature, angles)
        else:
            maps = attribution.integrated_gradients(model, x, membership, self.temperature, angles, n_steps=n_steps)
        return Explanation(
            source=source,
            image=np.asarray(shown),
            method=method,
            nodes=tuple(self.node(v) for v in targets),
            roles=roles,
            probabilities=np.array([node_p[tax.node_index(v)] for v in targets]),
            maps=attribution.to_photo_frame(maps, self.preprocess, photo.size, size),
            prediction=pred,
            angles=tuple(angles),
            note=note,
        )

    def _torch_model(self):
        """The differentiable model for explanations, and a note when it is not the answering one.

        An ONNX bundle cannot be differentiated; its manifest names the torch
        bundle it was exported from (``provenance.exported_from``). When that
        bundle is found (beside it, as exported, or at the recorded path) and its
        weights are the ones exported, its model draws the maps.
        """
        if self.model is None or self.preprocess is None:
            raise UncalibratedError("this HedgedClassifier has no image model: use from_bundle()")
        from hedged.models.extras import require, require_torch

        require_torch("explanations", "explain")
        require("captum", "explanations", "explain")
        if callable(getattr(self.model, "parameters", None)) and callable(getattr(self.model, "register_forward_hook", None)):
            return self.model, None
        cached = getattr(self, "_explain_source", None)
        if cached is not None:
            return cached
        source = _export_source(getattr(self, "bundle_", None))
        if source is None:
            raise ExplainUnavailableError(
                "explanations need a torch model bundle (an ONNX model cannot be differentiated) and "
                "this bundle's torch source was not found: pass a torch bundle with --model DIR"
            )
        from hedged.models.bundle import load_bundle

        src = load_bundle(source)
        precision = (getattr(self.bundle_, "manifest", {}) or {}).get("onnx", {}).get("precision", "")
        note = f"maps drawn by the torch model this ONNX bundle was exported from ({Path(source).name})"
        if "int8" in precision:
            note += "; the answer and probabilities are the int8 model's"
        self._explain_source = (src.model, note)
        return self._explain_source

    def __repr__(self) -> str:
        calibrated = hasattr(self, "calibration_probs_")
        return (
            f"HedgedClassifier({self.taxonomy!r}, guarantee={self.guarantee!r}, "
            f"tta_angles=[{format_angles(self.tta_angles)}], calibrated={calibrated})"
        )


def _export_source(bundle):
    """The torch bundle an ONNX bundle was exported from, if present with the exported weights; else None.

    Looked for at ``exported_from.relative_path`` (from the ONNX bundle, so that
    both survive being installed or copied together), then at the recorded
    ``exported_from.bundle`` path. The weights file must have the recorded
    sha256: a retrained source would explain another model.
    """
    from pathlib import Path

    from hedged.models.data import sha256_file

    manifest = getattr(bundle, "manifest", None) or {}
    origin = (manifest.get("provenance") or {}).get("exported_from") or {}
    want = origin.get("weights_sha256")
    if not want or getattr(bundle, "path", None) is None:
        return None
    candidates = []
    if origin.get("relative_path"):
        candidates.append(Path(bundle.path) / origin["relative_path"])
    if origin.get("bundle"):
        candidates.append(Path(origin["bundle"]))
    for cand in candidates:
        weights = cand / "weights.pt"
        try:
            if weights.is_file() and sha256_file(weights) == want:
                return cand.resolve()
        except OSError:
            continue
    return None
