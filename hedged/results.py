"""Result objects of the facade: a taxonomy ``Node`` and a hedged ``Prediction``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hedged.taxonomy import Taxonomy


@dataclass(frozen=True)
class Node:
    """One node of the taxonomy, with everything needed to show or act on it.

    Attributes
    ----------
    name : str
        The node's full (dotted) name, as in ``Taxonomy.nodes``.
    display_name : str
        Name for people ("Polo shirt").
    path : tuple of str
        Node names from the root down to this node (both included).
    depth : int
        Distance from the root (root = 0).
    leaves : tuple of str
        Leaf names under this node, in the taxonomy's column order.
    labels : tuple of str
        The dataset labels of those leaves: each leaf's aliases, or its name
        when it has none.
    """

    name: str
    display_name: str
    path: tuple[str, ...]
    depth: int
    leaves: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def is_leaf(self) -> bool:
        return self.leaves == (self.name,)

    @classmethod
    def of(cls, taxonomy: Taxonomy, name: str) -> Node:
        """The ``Node`` for ``name`` in ``taxonomy``."""
        leaves = taxonomy.leaves_under(name)
        labels = []
        for leaf in leaves:
            labels.extend(taxonomy.aliases(leaf) or (leaf,))
        return cls(
            name=str(name),
            display_name=taxonomy.display_name(name),
            path=tuple(taxonomy.path(name)),
            depth=taxonomy.depth(name),
            leaves=leaves,
            labels=tuple(labels),
        )

    def __str__(self) -> str:
        return self.display_name if self.display_name == self.name else f"{self.display_name} ({self.name})"


@dataclass(frozen=True)
class Prediction:
    """The hedged answer for one input.

    Attributes
    ----------
    source : str or None
        The input's file path, or ``None`` for in-memory images / posterior rows.
    node : Node or None
        The predicted node (``None`` when ``error`` is set or the image was
        judged outside the taxonomy).
    probability : float
        Posterior probability of ``node`` (sum of its leaves' posteriors).
    info_gain : float
        Normalised information gain of ``node``: 0 at the root, 1 at a leaf
        (uniform prior).
    leaf : Node or None
        The leaf a flat classifier would have answered (top-1 leaf).
    leaf_probability : float
        Posterior probability of ``leaf``.
    accuracy : float
        The accuracy target the node was chosen for.
    guarantee : str
        ``"pac"``, ``"pac-group"`` or ``"expected"``: how the target is guaranteed.
    guaranteed : bool
        False when the input was classified with a test-time augmentation the
        calibration was not made for: then the accuracy guarantee does not hold.
    error : str or None
        Why this input could not be classified (only with ``errors="collect"``).
    leaf_at_target : float or None
        The largest accuracy target at which the answer would be a leaf (then
        always ``leaf``, the most probable one); ``None`` if no target in
        (0, 1] gives a leaf. ``accuracy <= leaf_at_target`` iff ``node`` is a leaf.
    answer_path : tuple of (float, Node), or None
        Only when asked for (``path_over_targets=True``): the answer at every
        target. Steps ``(max_target, node)`` with ``max_target`` increasing;
        the answer for a target ``a`` is the node of the first step with
        ``a <= max_target``. The first step is the most specific answer, the
        last is always ``(1.0, root)``; ``node`` above is the step for ``accuracy``.
    in_taxonomy : bool or None
        Whether the out-of-taxonomy detector judged the image to belong to the
        taxonomy (False: "not clothing", ``node`` is None; ``leaf`` still says what
        the classifier would have answered). ``None``: not checked (check turned
        off, posteriors from another classifier, or a bundle without a detector).
    taxonomy_score : float or None
        The detector's score (higher = more like the taxonomy's photos).
    warnings : tuple of str
        Reasons to trust this answer less (a tiny image); empty for most.
    answer_path_probabilities : tuple of float, or None
        With ``answer_path``: each step's node posterior.
    """

    source: str | None
    node: Node | None
    probability: float
    info_gain: float
    leaf: Node | None
    leaf_probability: float
    accuracy: float
    guarantee: str
    guaranteed: bool = True
    error: str | None = None
    leaf_at_target: float | None = None
    answer_path: tuple[tuple[float, Node], ...] | None = None
    in_taxonomy: bool | None = None
    taxonomy_score: float | None = None
    warnings: tuple[str, ...] = ()
    answer_path_probabilities: tuple[float, ...] | None = None
    root_display_name: str | None = None
    title: object = None  # the TextLabel of a listing title given with the photo, if any

    @property
    def kind(self) -> str:
        """What sort of answer this is, the same on every surface.

        ``"answer"`` a node below the root; ``"not_sure"`` the root (the model is
        not sure beyond it: say so, never "Clothing 100%"); ``"outside"`` judged
        outside the taxonomy ("not clothing"); ``"error"`` the input could not be read.
        """
        if self.error is not None:
            return "error"
        if self.node is None:
            return "outside"
        if self.node.depth == 0 and not self.node.is_leaf:
            return "not_sure"
        return "answer"

    @property
    def headline(self) -> str | None:
        """The answer in a few words, as every surface shows it: "Polo shirt",
        "not sure beyond Clothing", "not clothing" (``None`` for an error)."""
        kind = self.kind
        root = self.root_display_name or (self.node.display_name if self.node is not None and self.node.depth == 0
                                          else "the taxonomy")
        if kind == "outside":
            return f"not {root.lower()}"
        if kind == "not_sure":
            return f"not sure beyond {self.node.display_name}"
        if kind == "answer":
            return self.node.display_name
        return None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, source, error: str, accuracy: float, guarantee: str) -> Prediction:
        nan = float("nan")
        return cls(
            source=None if source is None else str(source),
            node=None,
            probability=nan,
            info_gain=nan,
            leaf=None,
            leaf_probability=nan,
            accuracy=accuracy,
            guarantee=guarantee,
            guaranteed=False,
            error=str(error),
        )

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.source}: error: {self.error}"
        if self.node is None:
            return f"outside the taxonomy (score {self.taxonomy_score:.2f}; leaf guess {self.leaf})"
        return f"{self.node} p={self.probability:.3f} (leaf guess {self.leaf} p={self.leaf_probability:.3f})"

    def to_dict(self) -> dict:
        """The JSON form (one line of ``predict.py --json``); see docs/usage.md.

        ``leaf_at_target`` is always there (null if never a leaf);
        ``answer_path`` only when the prediction carries it, as a list of
        ``{"max_target", "node", "display_name"}`` objects.
        """
        if self.error is not None:
            return {"image": self.source, "error": self.error}
        node = self.node
        out = {
            "image": self.source,
            "kind": self.kind,
            "headline": self.headline,
            "in_taxonomy": self.in_taxonomy,
            "taxonomy_score": self.taxonomy_score,
            "node": None if node is None else node.name,
            "display_name": None if node is None else node.display_name,
            "path": None if node is None else list(node.path),
            "depth": None if node is None else node.depth,
            "probability": None if node is None else self.probability,
            "info_gain": None if node is None else self.info_gain,
            "leaves": None if node is None else list(node.leaves),
            "labels": None if node is None else list(node.labels),
            "leaf_guess": self.leaf.name,
            "leaf_guess_display_name": self.leaf.display_name,
            "leaf_probability": self.leaf_probability,
            "accuracy_target": self.accuracy,
            "guarantee": self.guarantee,
            "guarantee_holds": self.guaranteed,
            "leaf_at_target": self.leaf_at_target,
            "warnings": list(self.warnings),
        }
        if self.answer_path is not None:
            out["answer_path"] = [
                {"max_target": t, "node": node.name, "display_name": node.display_name} for t, node in self.answer_path
            ]
        return out

    def to_record(self) -> dict:
        """The answer record every surface shows: ``predict --json``, ``/v1/predict``, batch rows, the page.

        :meth:`to_dict` made strict for JSON (no NaN) and, when the prediction
        carries an answer path with its probabilities, each step with its node's
        ``probability`` and ``path``. The fields are :data:`RECORD_FIELDS` (an
        error record: ``image`` and ``error``); the schema is in docs/usage.md.
        """
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.to_dict().items()}
        if self.title is not None:
            out["title"] = {"text": self.title.text, "node": self.title.node,
                            "matched": [{"words": w, "node": v} for w, v in self.title.matches]}
        if self.answer_path is not None and self.answer_path_probabilities is not None:
            for step, (_, node), p in zip(out["answer_path"], self.answer_path, self.answer_path_probabilities):
                step["probability"] = float(p)
                step["path"] = list(node.path)
        return out


#: The fields of an answer record (:meth:`Prediction.to_record`), in order, with their meaning.
RECORD_FIELDS = {
    "image": "the input's path (or the uploaded name); null for in-memory images",
    "kind": "answer (a node below the root), not_sure (only the root is certain), or outside (not in the taxonomy)",
    "headline": "the answer in words, as every surface shows it: 'Polo shirt', 'not sure beyond Clothing', "
                "'not clothing'",
    "in_taxonomy": "the not-clothing detector's verdict: false = outside the taxonomy (node is null); null = not checked",
    "taxonomy_score": "the detector's score (higher = more like the taxonomy's photos); null when not checked",
    "node": "the answered node's name; null when outside the taxonomy",
    "display_name": "the node's human name",
    "path": "display names from the root down to the node",
    "depth": "edges from the root (0 = the root: 'not sure beyond the root')",
    "probability": "posterior of the node (sum of its leaves' posteriors), in [0, 1]",
    "info_gain": "normalised information gain of the node: 0 at the root, 1 at a leaf",
    "leaves": "the leaves under the node",
    "labels": "the data set labels of those leaves",
    "leaf_guess": "the most probable leaf (what a flat classifier answers)",
    "leaf_guess_display_name": "its human name",
    "leaf_probability": "its posterior",
    "accuracy_target": "the accuracy target the node was chosen for",
    "guarantee": "how the target is guaranteed: pac, pac-seller, pac-group or expected",
    "guarantee_holds": "false when the photo was classified with test-time rotations the calibration was not made for",
    "leaf_at_target": "the largest target at which the answer would be a leaf (null: none)",
    "warnings": "reasons to trust this answer less (a tiny image)",
}
#: Extra field of a record asked for with ``path_over_targets`` (each step: max_target, node,
#: display_name, and with the probabilities probability and path).
PATH_FIELD = "answer_path"
#: Extra field of a record for a photo given with a listing title: {"text", "node", "matched"}.
TITLE_FIELD = "title"
#: The fields of a record for an input that could not be read.
ERROR_FIELDS = ("image", "error")
