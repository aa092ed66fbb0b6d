"""The Taxonomy: a networkx DiGraph with a fixed leaf (column) and node order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral

import networkx as nx
import numpy as np
import scipy.sparse as sp

VIRTUAL_ROOT = "__root__"
SELF_SUFFIX = ".self"


class TaxonomyError(ValueError):
    """A taxonomy (or a lookup into one) is invalid; the message names the problem."""


def _is_name(x) -> bool:
    # np.str_ subclasses str, so names straight out of a numpy array pass.
    return isinstance(x, str)


def _mark_synthetic(graph: nx.DiGraph, parent: str, leaf: str, display_names: Mapping[str, str]) -> None:
    graph.nodes[leaf].update(
        display_name=str(display_names.get(leaf, graph.nodes[parent]["display_name"] + " (itself)")),
        aliases=(parent,),
        synthetic=True,
    )


class Taxonomy:
    """A class hierarchy over a classifier's leaf classes.

    The hierarchy is a ``networkx.DiGraph`` with edges parent -> child and one
    root. Nodes may have several parents (a DAG); the leaves under a node are a
    set, never counted twice. ``leaves`` is the fixed column order of the
    classifier's posteriors; ``nodes`` is the column order of node-posterior
    matrices (root first, then a topological order).

    Build one with :meth:`from_edges`, :meth:`from_yaml`, :meth:`from_dict` or
    :meth:`from_wordnet`; the constructor expects an already validated graph.

    Attributes
    ----------
    graph : networkx.DiGraph
        Edges parent -> child. Node attributes: ``display_name`` (str),
        ``aliases`` (tuple of str, empty except on leaves), ``synthetic`` (bool,
        True for the ``<name>.self`` leaves made by :meth:`from_edges`).
    root : str
    leaves : tuple of str
    nodes : tuple of str
    n_leaves, n_nodes : int
    membership : scipy.sparse.csr_matrix, shape (n_leaves, n_nodes)
        1.0 where leaf ``l`` is under node ``v`` (``v`` itself included).
    depths : numpy.ndarray of int, shape (n_nodes,)
        Shortest distance from the root.

    Examples
    --------
    >>> t = Taxonomy.from_edges([("animal", "cat"), ("animal", "dog")])
    >>> t.leaves
    ('cat', 'dog')
    >>> t.node_probs([[0.25, 0.75]]).tolist()
    [[1.0, 0.25, 0.75]]
    """

    def __init__(self, graph: nx.DiGraph, root: str, leaves: Iterable[str]):
        self.graph = graph
        self.root = root
        self.leaves = tuple(leaves)
        self.n_leaves = len(self.leaves)
        self._leaf_pos = {name: i for i, name in enumerate(self.leaves)}
        self.nodes = self._node_order()
        self.n_nodes = len(self.nodes)
        self._node_pos = {name: i for i, name in enumerate(self.nodes)}
        self.membership = self._membership()
        self._membership_csc = self.membership.tocsc()
        self._leaf_counts = np.diff(self._membership_csc.indptr)
        dist = nx.single_source_shortest_path_length(graph, root)
        self.depths = np.fromiter((dist[v] for v in self.nodes), dtype=np.int64, count=self.n_nodes)
        self._label_pos = self._label_index()

    # ------------------------------------------------------------------ build
    def _node_order(self) -> tuple[str, ...]:
        # Ordering by the first leaf column under a node makes the node order a
        # function of the content (graph + leaf order), not of edge insertion
        # order, so a YAML round trip reproduces it exactly.
        first = {}
        for i, leaf in enumerate(self.leaves):
            first[leaf] = i
        for v in reversed(list(nx.topological_sort(self.graph))):
            if v not in first:
                first[v] = min(first[c] for c in self.graph.successors(v))
        order = nx.lexicographical_topological_sort(self.graph, key=lambda v: (first[v], v))
        return tuple(order)

    def _membership(self) -> sp.csr_matrix:
        # Walk every leaf up to all its ancestors at once: one sparse product per
        # level, binarised so that paths through a diamond count once. Never
        # materialises a dense n_leaves x n_nodes matrix.
        n, L = self.n_nodes, self.n_leaves
        pos = self._node_pos
        rows = [pos[c] for p, c in self.graph.edges]
        cols = [pos[p] for p, c in self.graph.edges]
        up = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        leaf_cols = np.array([pos[leaf] for leaf in self.leaves], dtype=np.int64)
        frontier = sp.csr_matrix((np.ones(L), (np.arange(L), leaf_cols)), shape=(L, n))
        member = frontier
        while frontier.nnz:
            frontier = frontier @ up
            frontier.data[:] = 1.0
            member = member + frontier
        member = member.tocsr()
        member.data[:] = 1.0
        member.sort_indices()
        return member.astype(np.float64)

    def _label_index(self) -> dict[str, int]:
        labels = dict(self._leaf_pos)
        for i, leaf in enumerate(self.leaves):
            for alias in self.graph.nodes[leaf]["aliases"]:
                labels[alias] = i
        return labels

    @classmethod
    def from_edges(
        cls,
        edges: Iterable[tuple[str, str]],
        leaves: Iterable[str] | None = None,
        display_names: Mapping[str, str] | None = None,
        aliases: Mapping[str, Iterable[str]] | None = None,
        root: str | None = None,
        nodes: Iterable[str] = (),
    ) -> Taxonomy:
        """Build a taxonomy from parent -> child edges.

        Parameters
        ----------
        edges : iterable of (parent, child)
            Node names are strings.
        leaves : iterable of str, optional
            The classifier's classes in column order. Default: the sinks (nodes
            without children) in first-seen order. Every sink must be listed.
            A listed leaf that has children becomes an internal node and a
            synthetic leaf ``f"{name}.self"`` (child of ``name``, alias
            ``name``, display name ``"<display> (itself)"``) takes its column.
            A listed sink named ``"<parent>.self"`` under ``parent`` is such a
            synthetic leaf already (as written by :meth:`to_yaml`).
        display_names : mapping, optional
            Node name -> display name; default the name itself.
        aliases : mapping, optional
            Leaf name -> dataset labels that mean this leaf (see
            :meth:`resolve_labels`).
        root : str, optional
            The root's name. With one source node it must equal it (or be
            omitted); with several sources a virtual root (this name, default
            ``"__root__"``) is added above them.
        nodes : iterable of str, optional
            Extra nodes without edges (isolated classes); each becomes a root.

        Returns
        -------
        Taxonomy

        Raises
        ------
        TaxonomyError
            Empty taxonomy, non-string or duplicate names, cycle, unlisted sink,
            unknown leaf / display-name / alias node, duplicate alias.
        """
        graph = nx.DiGraph()
        for e in edges:
            try:
                parent, child = e
            except (TypeError, ValueError):
                raise TaxonomyError(f"edge {e!r} is not a (parent, child) pair") from None
            for name in (parent, child):
                if not _is_name(name) or not name:
                    raise TaxonomyError(f"node name {name!r} in edge {e!r} is not a non-empty string")
            if parent == child:
                raise TaxonomyError(f"cycle: node {parent!r} is its own parent")
            graph.add_edge(str(parent), str(child))
        for name in nodes:
            if not _is_name(name) or not name:
                raise TaxonomyError(f"node name {name!r} is not a non-empty string")
            graph.add_node(str(name))
        if graph.number_of_nodes() == 0:
            raise TaxonomyError("empty taxonomy: no edges and no nodes")
        if not nx.is_directed_acyclic_graph(graph):
            cycle = [u for u, _ in nx.find_cycle(graph)]
            raise TaxonomyError("cycle: " + " -> ".join(cycle + cycle[:1]))

        if leaves is None:
            leaf_list = [v for v in graph if graph.out_degree(v) == 0]
        else:
            if isinstance(leaves, str):
                raise TaxonomyError("leaves must be a list of names, not a single string")
            leaf_list = [str(x) for x in leaves]
            seen = set()
            for leaf in leaf_list:
                if leaf in seen:
                    raise TaxonomyError(f"duplicate leaf {leaf!r} in leaves")
                if leaf not in graph:
                    raise TaxonomyError(f"unknown leaf {leaf!r}: not a node of the taxonomy")
                seen.add(leaf)
            for v in graph:
                if graph.out_degree(v) == 0 and v not in seen:
                    raise TaxonomyError(f"node {v!r} has no children and is not in leaves")

        display_names = dict(display_names or {})
        listed = set(leaf_list)
        for name in display_names:
            if name not in graph and not (name.endswith(SELF_SUFFIX) and name[: -len(SELF_SUFFIX)] in listed):
                raise TaxonomyError(f"display name given for unknown node {name!r}")
        for v in graph:
            graph.nodes[v]["display_name"] = str(display_names.get(v, v))
            graph.nodes[v]["aliases"] = ()
            graph.nodes[v]["synthetic"] = False

        # A sink named "<parent>.self" is the synthetic leaf of a class that has
        # children (written out explicitly by to_yaml / graph.edges): mark it as
        # such, so rebuilding from the edges gives an equal taxonomy.
        for leaf in leaf_list:
            parent = leaf[: -len(SELF_SUFFIX)]
            if leaf.endswith(SELF_SUFFIX) and graph.out_degree(leaf) == 0 and graph.has_edge(parent, leaf):
                _mark_synthetic(graph, parent, leaf, display_names)

        # A labelled class that also has children (thousands in ImageNet-21k):
        # its own column goes to a synthetic child leaf so that every column is a
        # sink and "the class itself" stays distinguishable from its subtree.
        final_leaves = []
        for leaf in leaf_list:
            if graph.out_degree(leaf) == 0:
                final_leaves.append(leaf)
                continue
            own = leaf + SELF_SUFFIX
            if own in graph:
                raise TaxonomyError(f"duplicate name {own!r}: needed for the class {leaf!r} that has children")
            graph.add_edge(leaf, own)
            _mark_synthetic(graph, leaf, own, display_names)
            final_leaves.append(own)

        leaf_set = set(final_leaves)
        by_original = {leaf: final for leaf, final in zip(leaf_list, final_leaves)}
        for name, labels in dict(aliases or {}).items():
            target = by_original.get(name, name)
            if target not in leaf_set:
                raise TaxonomyError(f"aliases given for {name!r}, which is not a leaf")
            if isinstance(labels, str):
                raise TaxonomyError(f"aliases of {name!r} must be a list of strings, not a string")
            labels = tuple(str(a) for a in labels)
            current = graph.nodes[target]["aliases"]
            graph.nodes[target]["aliases"] = current + tuple(a for a in labels if a not in current)

        owner = {leaf: leaf for leaf in final_leaves}
        for leaf in final_leaves:
            for alias in graph.nodes[leaf]["aliases"]:
                if alias in owner and owner[alias] != leaf:
                    raise TaxonomyError(
                        f"duplicate name {alias!r}: alias of leaf {leaf!r} is already "
                        f"{'a leaf' if alias in leaf_set else 'an alias of ' + repr(owner[alias])}"
                    )
                owner[alias] = leaf

        sources = [v for v in graph if graph.in_degree(v) == 0]
        if len(sources) == 1 and (root is None or root == sources[0]):
            the_root = sources[0]
        else:
            the_root = VIRTUAL_ROOT if root is None else str(root)
            if the_root in graph:
                raise TaxonomyError(
                    f"root {the_root!r} is not the only node without parents "
                    f"(others: {', '.join(repr(s) for s in sources if s != the_root)[:200]})"
                )
            graph.add_edges_from((the_root, s) for s in sources)
            graph.nodes[the_root].update(display_name=the_root, aliases=(), synthetic=False)
        return cls(graph, the_root, final_leaves)

    # ------------------------------------------------------------------ lookups
    def _lookup(self, names, table: Mapping[str, int], size: int, what: str):
        if _is_name(names):
            try:
                return table[names]
            except KeyError:
                raise TaxonomyError(f"unknown {what} {str(names)!r}") from None
        if isinstance(names, Integral) and not isinstance(names, bool):
            if not 0 <= names < size:
                raise TaxonomyError(f"{what} index {names} out of range [0, {size})")
            return int(names)
        arr = np.asarray(names)
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < 0 or arr.max() >= size):
                raise TaxonomyError(f"{what} index out of range [0, {size})")
            return arr.astype(np.int64)
        if arr.dtype.kind not in "UO" and arr.size:
            raise TaxonomyError(f"{what} names must be strings or integer indices, got dtype {arr.dtype}")
        # Map each distinct name once: fast for many samples with few classes.
        uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
        try:
            idx = np.fromiter((table[u] for u in uniq), dtype=np.int64, count=len(uniq))
        except KeyError as err:
            raise TaxonomyError(f"unknown {what} {str(err.args[0])!r}") from None
        return idx[inverse].reshape(arr.shape)

    def node_index(self, names) -> int | np.ndarray:
        """Column index in :attr:`nodes` of a name, or an array of them.

        Integer indices pass through (range-checked), so the output of
        ``predict_index`` is accepted too.
        """
        return self._lookup(names, self._node_pos, self.n_nodes, "node")

    def leaf_index(self, names) -> int | np.ndarray:
        """Column index in :attr:`leaves` of a leaf name, or an array of them."""
        return self._lookup(names, self._leaf_pos, self.n_leaves, "leaf")

    def resolve_labels(self, labels, missing: str = "raise") -> np.ndarray:
        """Leaf indices of dataset labels (leaf names, leaf aliases or indices).

        Parameters
        ----------
        labels : array-like of str or int
        missing : {"raise", "drop"}
            ``"drop"`` maps unknown labels to -1 instead of raising.

        Returns
        -------
        numpy.ndarray of int, same shape as ``labels``
        """
        if missing not in ("raise", "drop"):
            raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
        arr = np.asarray(labels)
        if arr.dtype.kind in "iu":
            out = arr.astype(np.int64)
            bad = (out < 0) | (out >= self.n_leaves)
            if bad.any():
                if missing == "raise":
                    raise TaxonomyError(f"label index {out[bad].flat[0]} out of range [0, {self.n_leaves})")
                out[bad] = -1
            return out
        if arr.size == 0:
            return np.zeros(arr.shape, dtype=np.int64)
        if arr.dtype.kind not in "UO":
            raise TaxonomyError(f"labels must be strings or integer indices, got dtype {arr.dtype}")
        uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
        idx = np.fromiter((self._label_pos.get(u, -1) for u in uniq), dtype=np.int64, count=len(uniq))
        if missing == "raise" and (idx < 0).any():
            raise TaxonomyError(f"unknown label {str(uniq[idx < 0][0])!r}: not a leaf name or alias")
        return idx[inverse].reshape(arr.shape)

    def check_classes(self, classes) -> None:
        """Raise TaxonomyError unless ``classes`` are the leaves in column order.

        Each class may be the leaf's name or one of its aliases.
        """
        classes = [str(c) for c in classes]
        if len(classes) != self.n_leaves:
            raise TaxonomyError(f"classifier has {len(classes)} classes but the taxonomy has {self.n_leaves} leaves")
        for i, (c, leaf) in enumerate(zip(classes, self.leaves)):
            if c != leaf and c not in self.graph.nodes[leaf]["aliases"]:
                raise TaxonomyError(f"class {i} is {c!r} but leaf {i} is {leaf!r} (order or name mismatch)")

    def _name(self, node) -> str:
        if _is_name(node):
            if node not in self._node_pos:
                raise TaxonomyError(f"unknown node {str(node)!r}")
            return str(node)
        return self.nodes[self.node_index(node)]

    def leaves_under(self, node) -> tuple[str, ...]:
        """Leaf names under ``node`` (itself included when a leaf), in column order."""
        j = self.node_index(self._name(node))
        csc = self._membership_csc
        rows = np.sort(csc.indices[csc.indptr[j] : csc.indptr[j + 1]])
        return tuple(self.leaves[i] for i in rows)

    def path(self, node) -> list[str]:
        """Node names from the root to ``node`` along a shortest path."""
        return nx.shortest_path(self.graph, self.root, self._name(node))

    def depth(self, node) -> int:
        """Shortest distance from the root (the root has depth 0)."""
        return int(self.depths[self.node_index(self._name(node))])

    def display_name(self, node) -> str:
        return self.graph.nodes[self._name(node)]["display_name"]

    def aliases(self, node) -> tuple[str, ...]:
        return self.graph.nodes[self._name(node)]["aliases"]

    def parents(self, node) -> set[str]:
        return set(self.graph.predecessors(self._name(node)))

    def children(self, node) -> set[str]:
        return set(self.graph.successors(self._name(node)))

    def ancestors(self, node) -> set[str]:
        """Every node above ``node`` (not itself)."""
        return nx.ancestors(self.graph, self._name(node))

    def descendants(self, node) -> set[str]:
        """Every node below ``node`` (not itself)."""
        return nx.descendants(self.graph, self._name(node))

    def is_leaf(self, node) -> bool:
        return self._name(node) in self._leaf_pos

    def keywords(self, node) -> tuple[str, ...]:
        """The node's title keywords from the YAML (``-`` marks a negative); empty if none."""
        return tuple(self.graph.nodes[self._name(node)].get("keywords", ()))

    def label_text(self, text):
        """The deepest node all keywords of a listing title agree on (see :mod:`hedged.taxonomy._text`).

        Returns a :class:`~hedged.taxonomy._text.TextLabel`: ``node`` (None when no
        keyword matched) and the matched words with their nodes.
        """
        from hedged.taxonomy._text import TitleLabeller

        if getattr(self, "_labeller", None) is None:
            self._labeller = TitleLabeller(self)
        return self._labeller(text)

    # ------------------------------------------------------------------ vectorised
    def _check_probs(self, probs) -> np.ndarray:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim not in (1, 2) or probs.shape[-1] != self.n_leaves:
            raise ValueError(f"probs must have shape (N, {self.n_leaves}) or ({self.n_leaves},), got {probs.shape}")
        return probs

    def node_probs(self, probs) -> np.ndarray:
        """Posterior of every node: the sum of its leaves' posteriors.

        Parameters
        ----------
        probs : array-like, shape (N, n_leaves) or (n_leaves,)

        Returns
        -------
        numpy.ndarray, shape (N, n_nodes) or (n_nodes,), columns in :attr:`nodes` order
        """
        probs = self._check_probs(probs)
        # Row-major output: decision rules then scan each sample's row.
        return np.ascontiguousarray(probs @ self.membership)

    def rewards(self, prior=None) -> np.ndarray:
        """Information gain of predicting each node, in bits (DARTS rewards).

        Uniform prior: ``log2(n_leaves) - log2(|leaves(v)|)``, so the root
        gets 0 and every leaf ``log2(n_leaves)``. With ``prior`` (n_leaves,
        non-negative, summing to 1): ``H(prior) - H(prior on leaves(v),
        renormalised)``; this can be negative for a node whose leaves are more
        uncertain than the whole prior. A node whose leaves all have prior 0 gets
        ``H(prior)`` (predicting it is as informative as a certain leaf).
        """
        if prior is None:
            return np.log2(self.n_leaves) - np.log2(self._leaf_counts)
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (self.n_leaves,):
            raise ValueError(f"prior must have shape ({self.n_leaves},), got {prior.shape}")
        if not np.isfinite(prior).all() or (prior < 0).any():
            raise ValueError("prior must be finite and non-negative")
        if abs(prior.sum() - 1.0) > 1e-6:
            raise ValueError(f"prior must sum to 1, sums to {prior.sum():.6g}")
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(prior > 0, prior * np.log2(np.where(prior > 0, prior, 1.0)), 0.0)
            total = -plogp.sum()
            mass = self._membership_csc.T @ prior
            sum_plogp = self._membership_csc.T @ plogp
            # H(p|v) = -sum_l (p_l/m) log2(p_l/m) = -(1/m) sum_l p_l log2 p_l + log2 m
            h_v = np.where(mass > 0, -sum_plogp / np.where(mass > 0, mass, 1.0) + np.log2(np.where(mass > 0, mass, 1.0)), 0.0)
        return total - np.maximum(h_v, 0.0)

    def is_correct(self, pred_nodes, true_leaves) -> np.ndarray:
        """Whether each predicted node contains the true leaf.

        Parameters
        ----------
        pred_nodes : array-like of str or int
            Node names or indices into :attr:`nodes`.
        true_leaves : array-like of str or int
            Leaf names, aliases or indices into :attr:`leaves`.

        Returns
        -------
        numpy.ndarray of bool
        """
        p = np.atleast_1d(self.node_index(pred_nodes))
        t = np.atleast_1d(self.resolve_labels(true_leaves))
        if p.shape != t.shape:
            raise ValueError(f"pred_nodes and true_leaves differ in shape: {p.shape} vs {t.shape}")
        if p.size == 0:
            return np.zeros(p.shape, dtype=bool)
        flat = np.asarray(self.membership[t.ravel(), p.ravel()]).ravel() > 0
        return flat.reshape(p.shape)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: Mapping) -> Taxonomy:
        """Build from the mapping form of the YAML format (docs/taxonomy-yaml.md)."""
        from hedged.taxonomy._yaml import taxonomy_from_dict

        return taxonomy_from_dict(cls, data)

    def to_dict(self, naming: str | None = None) -> dict:
        """The mapping form of the YAML format; ``naming`` default: dotted when the names allow it."""
        from hedged.taxonomy._yaml import taxonomy_to_dict

        return taxonomy_to_dict(self, naming)

    @classmethod
    def from_yaml(cls, path) -> Taxonomy:
        """Read a taxonomy YAML file (docs/taxonomy-yaml.md)."""
        from hedged.taxonomy._yaml import read_yaml

        return cls.from_dict(read_yaml(path))

    def to_yaml(self, path=None, naming: str | None = None) -> str:
        """Write the YAML form to ``path`` (when given) and return it as text."""
        from hedged.taxonomy._yaml import dump_yaml

        text = dump_yaml(self.to_dict(naming))
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_wordnet(cls, is_a_path, synsets_path, names: Mapping[str, str] | None = None) -> Taxonomy:
        """Build from WordNet is-a edges and a synset list (see :func:`taxonomy.wordnet.load_wordnet`)."""
        from hedged.taxonomy._wordnet import load_wordnet

        return load_wordnet(cls, is_a_path, synsets_path, names)

    def subtree(self, node) -> Taxonomy:
        """The taxonomy below ``node`` (``node`` becomes the root; leaf order kept)."""
        node = self._name(node)
        keep = self.descendants(node) | {node}
        g = self.graph.subgraph(keep).copy()
        return type(self)(g, node, self.leaves_under(node))

    # ------------------------------------------------------------------ dunder
    def __len__(self) -> int:
        return self.n_nodes

    def __contains__(self, name) -> bool:
        return _is_name(name) and name in self._node_pos

    def __iter__(self):
        return iter(self.nodes)

    def __repr__(self) -> str:
        n_multi = sum(1 for v in self.nodes if self.graph.in_degree(v) > 1)
        return (
            f"Taxonomy(root={self.root!r}, n_nodes={self.n_nodes}, n_leaves={self.n_leaves}, "
            f"max_depth={int(self.depths.max())}, multi_parent={n_multi})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Taxonomy):
            return NotImplemented
        if self.nodes != other.nodes or self.leaves != other.leaves or self.root != other.root:
            return False
        if set(self.graph.edges) != set(other.graph.edges):
            return False
        return all(
            self.graph.nodes[v]["display_name"] == other.graph.nodes[v]["display_name"]
            and tuple(self.graph.nodes[v]["aliases"]) == tuple(other.graph.nodes[v]["aliases"])
            and bool(self.graph.nodes[v]["synthetic"]) == bool(other.graph.nodes[v]["synthetic"])
            for v in self.nodes
        )

    __hash__ = None

    def describe(self, max_depth: int | None = None, max_children: int | None = None) -> str:
        """An indented text tree for humans: display name, name, leaf count.

        A node with several parents is shown under each; ``*`` marks those.
        """
        lines = []

        def walk(v, indent):
            d = self.graph.nodes[v]
            mark = "*" if self.graph.in_degree(v) > 1 else ""
            count = int(self._leaf_counts[self._node_pos[v]])
            label = d["display_name"] if d["display_name"] == v else f"{d['display_name']} [{v}]"
            size = "" if v in self._leaf_pos else f" ({count} {'leaf' if count == 1 else 'leaves'})"
            lines.append(f"{'  ' * indent}{label}{mark}{size}")
            if max_depth is not None and indent >= max_depth:
                return
            kids = sorted(self.graph.successors(v), key=self._node_pos.__getitem__)
            shown = kids if max_children is None else kids[:max_children]
            for c in shown:
                walk(c, indent + 1)
            if len(shown) < len(kids):
                lines.append(f"{'  ' * (indent + 1)}... {len(kids) - len(shown)} more")

        walk(self.root, 0)
        return "\n".join(lines)
