"""Result objects of the facade: a taxonomy ``Node`` and a hedged ``Prediction``."""

from __future__ import annotations

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
