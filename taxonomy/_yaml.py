"""The human-editable taxonomy format (docs/taxonomy-yaml.md): dict <-> Taxonomy."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from hedged.taxonomy._core import SELF_SUFFIX, Taxonomy, TaxonomyError

FORMAT = "hedged-taxonomy/1"
TOP_KEYS = ("format", "name", "display_name", "naming", "children", "extra_parents", "leaves", "keywords")
NODE_KEYS = ("display_name", "aliases", "children", "keywords")


# libyaml's C parser when present: the 21k WordNet taxonomy round-trips several times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _StrictLoader(_SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; let PyYAML report it
                break
            if duplicate:
                raise TaxonomyError(f"duplicate name {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise TaxonomyError(f"malformed taxonomy YAML in {path}: {' '.join(str(err).split())}") from None
    except FileNotFoundError:
        raise TaxonomyError(f"taxonomy file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {err}") from None
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"taxonomy YAML in {path} must be a mapping with 'format: {FORMAT}'")
    return data


class _Dumper(_SafeDumper):
    """Block mappings, but short flow lists (``aliases: [Polo]``) as a person would write them."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def dump_yaml(data: dict) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )


def _check_keys(entry: Mapping, allowed, where: str) -> None:
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise TaxonomyError(f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(allowed)})")


def _str_list(value, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise TaxonomyError(f"{what} must be a list of non-empty strings, got {value!r}")
    return value


def taxonomy_from_dict(cls, data: Mapping) -> Taxonomy:
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"a taxonomy mapping is required, got {type(data).__name__}")
    if "format" not in data:
        raise TaxonomyError(f"missing format marker: add 'format: {FORMAT}'")
    if data["format"] != FORMAT:
        raise TaxonomyError(f"unsupported format {data['format']!r} (expected {FORMAT!r})")
    _check_keys(data, TOP_KEYS, "the top level")
    root = data.get("name")
    if not isinstance(root, str) or not root:
        raise TaxonomyError("'name' (the root's name) must be a non-empty string")
    naming = data.get("naming", "dotted")
    if naming not in ("dotted", "flat"):
        raise TaxonomyError(f"naming must be 'dotted' or 'flat', got {naming!r}")
    children = data.get("children")
    if not children:
        raise TaxonomyError(f"empty taxonomy: root {root!r} has no children")

    root_display = data.get("display_name", root)
    if not isinstance(root_display, str):
        raise TaxonomyError(f"display_name of {root!r} must be a string, got {root_display!r}")
    edges: list[tuple[str, str]] = []
    display: dict[str, str] = {root: root_display}
    aliases: dict[str, list[str]] = {}
    keywords: dict[str, list[str]] = {}
    where: dict[str, str] = {root: "name"}

    # Iterative pre-order walk: deep trees must not hit the recursion limit.
    stack = [(root, children)]
    while stack:
        parent, kids = stack.pop()
        if not isinstance(kids, Mapping):
            raise TaxonomyError(f"children of {parent!r} must be a mapping of name: entry, got {kids!r}")
        for key, entry in kids.items():
            if not isinstance(key, str) or not key:
                raise TaxonomyError(
                    f"child key {key!r} under {parent!r} is not a string (quote it in the YAML)"
                )
            if naming == "dotted":
                if "." in key:
                    raise TaxonomyError(f"key {key!r} under {parent!r} contains '.', which dotted naming reserves")
                name = key if parent == root else f"{parent}.{key}"
            else:
                name = key
            if name in where:
                raise TaxonomyError(f"duplicate name {name!r} (under {where[name]!r} and {parent!r})")
            where[name] = parent
            if entry is None:
                entry = {}
            if not isinstance(entry, Mapping):
                raise TaxonomyError(f"entry of {name!r} must be a mapping or empty, got {entry!r}")
            _check_keys(entry, NODE_KEYS, f"node {name!r}")
            edges.append((parent, name))
            synthetic = name == parent + SELF_SUFFIX
            if "display_name" in entry:
                if not isinstance(entry["display_name"], str):
                    raise TaxonomyError(f"display_name of {name!r} must be a string, got {entry['display_name']!r}")
                display[name] = entry["display_name"]
            elif not synthetic:
                display[name] = key
            if "keywords" in entry:
                keywords[name] = _str_list(entry["keywords"], f"keywords of {name!r}")
            sub = entry.get("children")
            if sub:
                if "aliases" in entry:
                    raise TaxonomyError(f"aliases on {name!r}, which has children (aliases belong to leaves)")
                stack.append((name, sub))
            elif "aliases" in entry:
                aliases[name] = _str_list(entry["aliases"], f"aliases of {name!r}")
    tree_leaves = _preorder_leaves(root, edges)

    extra = data.get("extra_parents") or {}
    if not isinstance(extra, Mapping):
        raise TaxonomyError("extra_parents must be a mapping of node: [parent, ...]")
    for name, parents in extra.items():
        if name not in where:
            raise TaxonomyError(f"unknown node {name!r} in extra_parents")
        for p in _str_list(parents, f"extra_parents of {name!r}"):
            if p not in where:
                raise TaxonomyError(f"unknown parent {p!r} of {name!r} in extra_parents")
            if p == where[name]:
                raise TaxonomyError(f"extra parent {p!r} of {name!r} is already its parent in the tree")
            edges.append((p, name))

    leaves = data.get("leaves")
    if leaves is None:
        leaves = tree_leaves
    else:
        leaves = _str_list(leaves, "leaves")
        has_children = {p for p, _ in edges}
        for leaf in leaves:
            if leaf in has_children:
                raise TaxonomyError(
                    f"leaf {leaf!r} in leaves has children; write its own class as a child 'self'"
                )
    if len(set(edges)) != len(edges):
        dup = next(e for i, e in enumerate(edges) if e in edges[:i])
        raise TaxonomyError(f"parent {dup[0]!r} of {dup[1]!r} is listed twice")
    top = data.get("keywords") or {}
    if not isinstance(top, Mapping):
        raise TaxonomyError("keywords at the top level must be a mapping of node: [keyword, ...]")
    for name, words in top.items():
        if name not in where:
            raise TaxonomyError(f"unknown node {name!r} in keywords")
        keywords.setdefault(name, []).extend(w for w in _str_list(words, f"keywords of {name!r}")
                                             if w not in keywords.get(name, []))
    for name, words in keywords.items():
        for w in words:
            if not w.strip().lstrip("-").strip():
                raise TaxonomyError(f"empty keyword in the keywords of {name!r}")
    t = cls.from_edges(edges, leaves=leaves, display_names=display, aliases=aliases, root=root)
    for name, words in keywords.items():
        t.graph.nodes[name]["keywords"] = tuple(words)
    return t


def _preorder_leaves(root: str, tree_edges: list[tuple[str, str]]) -> list[str]:
    kids: dict[str, list[str]] = {}
    for p, c in tree_edges:
        kids.setdefault(p, []).append(c)
    out, stack = [], [root]
    while stack:
        v = stack.pop()
        if v in kids:
            stack.extend(reversed(kids[v]))
        elif v != root:
            out.append(v)
    return out


def _dotted_parent(t: Taxonomy, v: str) -> str | None:
    """The parent that dotted naming implies for ``v``, or None when ``v`` has no dotted name."""
    prefix, dot, key = v.rpartition(".")
    if not key or prefix == t.root:
        # "root.x" would be read back as "x": children of the root use bare keys
        return None
    parent = prefix if dot else t.root
    return parent if t.graph.has_edge(parent, v) else None


def taxonomy_to_dict(t: Taxonomy, naming: str | None = None) -> dict:
    if naming not in (None, "dotted", "flat"):
        raise ValueError(f"naming must be 'dotted', 'flat' or None, got {naming!r}")
    pos = {v: i for i, v in enumerate(t.nodes)}
    g = t.graph
    tree_parent = {}
    dotted_ok = naming != "flat"
    if dotted_ok:
        for v in t.nodes[1:]:
            p = _dotted_parent(t, v)
            if p is None:
                if naming == "dotted":
                    raise TaxonomyError(f"node {v!r} cannot be written with dotted naming (its name is not <parent>.<key>)")
                dotted_ok = False
                break
            tree_parent[v] = p
    if not dotted_ok:
        tree_parent = {v: min(g.predecessors(v), key=pos.__getitem__) for v in t.nodes[1:]}
    naming = "dotted" if dotted_ok else "flat"

    def key_of(v):
        return v.rpartition(".")[2] if naming == "dotted" else v

    kids: dict[str, list[str]] = {}
    for v in t.nodes[1:]:
        kids.setdefault(tree_parent[v], []).append(v)  # t.nodes order: content-defined, stable

    def entry(v):
        d = g.nodes[v]
        out = {}
        synthetic = d["synthetic"]
        default_display = g.nodes[tree_parent[v]]["display_name"] + " (itself)" if synthetic else key_of(v)
        if d["display_name"] != default_display:
            out["display_name"] = d["display_name"]
        extra_aliases = list(d["aliases"][1:] if synthetic else d["aliases"])
        if extra_aliases:
            out["aliases"] = extra_aliases
        if d.get("keywords"):
            out["keywords"] = list(d["keywords"])
        if v in kids:
            out["children"] = {key_of(c): entry(c) for c in kids[v]}
        return out

    data: dict = {"format": FORMAT, "name": t.root}
    if g.nodes[t.root]["display_name"] != t.root:
        data["display_name"] = g.nodes[t.root]["display_name"]
    data["naming"] = naming
    data["children"] = {key_of(c): entry(c) for c in kids.get(t.root, [])}
    extra = {}
    for v in t.nodes[1:]:
        others = sorted((p for p in g.predecessors(v) if p != tree_parent[v]), key=pos.__getitem__)
        if others:
            extra[v] = others
    if extra:
        data["extra_parents"] = extra
    default_leaves = _preorder_leaves(t.root, [(tree_parent[v], v) for v in t.nodes[1:]])
    if tuple(default_leaves) != t.leaves:
        data["leaves"] = list(t.leaves)
    return data
