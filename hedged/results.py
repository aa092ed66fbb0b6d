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
        The predicted node (``None`` when ``error`` is set).
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
        ``"pac"`` or ``"expected"``: how the target is guaranteed.
    guaranteed : bool
        False when the input was classified with a test-time augmentation the
        calibration was not made for: then the accuracy guarantee does not hold.
    error : str or None
        Why this input could not be classified (only with ``errors="collect"``).
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
        return f"{self.node} p={self.probability:.3f} (leaf guess {self.leaf} p={self.leaf_probability:.3f})"

    def to_dict(self) -> dict:
        """The JSON form (one line of ``predict.py --json``); see docs/usage.md."""
        if self.error is not None:
            return {"image": self.source, "error": self.error}
        return {
            "image": self.source,
            "node": self.node.name,
            "name": self.node.display_name,
            "path": list(self.node.path),
            "depth": self.node.depth,
            "probability": self.probability,
            "info_gain": self.info_gain,
            "leaves": list(self.node.leaves),
            "labels": list(self.node.labels),
            "leaf_guess": self.leaf.name,
            "leaf_guess_name": self.leaf.display_name,
            "leaf_probability": self.leaf_probability,
            "accuracy_target": self.accuracy,
            "guarantee": self.guarantee,
            "guarantee_holds": self.guaranteed,
        }
