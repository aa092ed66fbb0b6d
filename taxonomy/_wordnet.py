"""WordNet-style taxonomies: is-a edge files plus a synset (class) list."""

from __future__ import annotations

from collections.abc import Mapping

from hedged.taxonomy._core import Taxonomy, TaxonomyError


def read_is_a(path) -> list[tuple[str, str]]:
    """Edges from a file of ``parent child`` lines (blank lines and ``#`` comments skipped)."""
    edges = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise TaxonomyError(f"{path}:{lineno}: expected 'parent child', got {line.strip()!r}")
            edges.append((fields[0], fields[1]))
    return edges


def read_synsets(path) -> tuple[list[str], dict[str, str]]:
    """Class ids in file order and display names from ``wnid [words, ...]`` lines.

    The display name is the first comma-separated entry of the words, when present.
    """
    ids, names = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, words = line.strip().partition(" ")
            if not wnid or wnid.startswith("#"):
                continue
            ids.append(wnid)
            first = words.split(",")[0].strip()
            if first:
                names[wnid] = first
    if not ids:
        raise TaxonomyError(f"empty taxonomy: no synsets in {path}")
    return ids, names


def load_wordnet(cls, is_a_path, synsets_path, names: Mapping[str, str] | None = None) -> Taxonomy:
    """Taxonomy over the synsets of ``synsets_path`` and all their is-a ancestors.

    Leaves are the synsets in file order; a synset with descendants among the
    nodes gets a synthetic ``<wnid>.self`` leaf. Synsets missing from the edge
    file hang directly under the root. Several WordNet roots are joined by the
    virtual root ``"__root__"``. ``names`` (wnid -> display name) overrides the
    names read from the synsets file.
    """
    edges = read_is_a(is_a_path)
    leaves, display = read_synsets(synsets_path)
    if len(set(leaves)) != len(leaves):
        dup = next(x for i, x in enumerate(leaves) if x in leaves[:i])
        raise TaxonomyError(f"duplicate name {dup!r} in {synsets_path}")
    display.update(names or {})

    parents: dict[str, list[str]] = {}
    for p, c in edges:
        parents.setdefault(c, []).append(p)
    # Ancestor closure of the classes in one BFS over child -> parent links.
    keep = set(leaves)
    frontier = list(leaves)
    while frontier:
        nxt = []
        for v in frontier:
            for p in parents.get(v, ()):
                if p not in keep:
                    keep.add(p)
                    nxt.append(p)
        frontier = nxt
    sub = [(p, c) for p, c in edges if c in keep]
    in_edges = {v for e in sub for v in e}
    isolated = [v for v in leaves if v not in in_edges]
    display = {k: v for k, v in display.items() if k in keep}
    return cls.from_edges(sub, leaves=leaves, display_names=display, nodes=isolated)


__all__ = ["read_is_a", "read_synsets", "load_wordnet"]
