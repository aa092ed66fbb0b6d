"""Random taxonomies and calibrated synthetic posteriors for the hedging tests."""

from __future__ import annotations

import networkx as nx
import numpy as np

from hedged.taxonomy import Taxonomy


def random_taxonomy(rng: np.random.Generator, n_leaves: int, extra_edges: int = 0) -> Taxonomy:
    """A random tree over ``n_leaves`` leaves (every inner node has >= 2
    children), plus up to ``extra_edges`` extra parent edges making it a DAG."""
    g = nx.DiGraph()
    leaves = [f"l{i}" for i in range(n_leaves)]
    counter = iter(range(10**6))

    def split(node: str, members: list[str]) -> None:
        if len(members) == 1:
            g.add_edge(node, members[0])
            return
        k = int(rng.integers(2, min(3, len(members)) + 1))
        cuts = np.sort(rng.choice(np.arange(1, len(members)), size=k - 1, replace=False))
        for part in np.split(np.asarray(members), cuts):
            part = part.tolist()
            if len(part) == 1:
                g.add_edge(node, part[0])
            else:
                child = f"n{next(counter)}"
                g.add_edge(node, child)
                split(child, part)

    members = list(leaves)
    rng.shuffle(members)
    split("root", members)
    inner = [v for v in g if v.startswith("n")]
    for _ in range(extra_edges):
        if len(inner) < 1:
            break
        u = inner[int(rng.integers(len(inner)))]
        v = list(g)[int(rng.integers(g.number_of_nodes()))]
        if v in ("root", u) or g.has_edge(u, v) or nx.has_path(g, v, u):
            continue
        g.add_edge(u, v)
    return Taxonomy.from_edges(list(g.edges), leaves=leaves, root="root")


def calibrated_sample(rng: np.random.Generator, n: int, n_leaves: int, concentration: float = 0.3):
    """Dirichlet posteriors and labels drawn from them (calibrated by construction)."""
    probs = rng.dirichlet(np.full(n_leaves, concentration), size=n)
    u = rng.random((n, 1))
    labels = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), n_leaves - 1)
    return probs, labels
