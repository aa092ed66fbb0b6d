"""The YAML taxonomy format: hand example, lossless round trips, every validation error."""

import textwrap

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hedged.taxonomy import Taxonomy, TaxonomyError

CLOTHING = """
format: hedged-taxonomy/1
name: clothing
display_name: Clothing
children:
  body:
    display_name: Worn on the body
    children:
      upper:
        children:
          short_sleeve:
            display_name: Short-sleeve top
            children:
              tshirt: {display_name: T-shirt, aliases: [T-Shirt]}
              polo:   {display_name: Polo shirt, aliases: [Polo]}
  smart:
    children:
      jacket:
      self: {aliases: [Smart]}
  feet:
    children:
      shoes: {aliases: [Shoes]}
extra_parents:
  body.upper.short_sleeve.polo: [smart]
"""


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def clothing(tmp_path):
    return Taxonomy.from_yaml(write(tmp_path, CLOTHING))


def test_hand_example_parsed(clothing):
    t = clothing
    assert t.root == "clothing" and t.display_name("clothing") == "Clothing"
    assert t.leaves == (
        "body.upper.short_sleeve.tshirt",
        "body.upper.short_sleeve.polo",
        "smart.jacket",
        "smart.self",
        "feet.shoes",
    )
    assert t.parents("body.upper.short_sleeve.polo") == {"body.upper.short_sleeve", "smart"}
    assert t.display_name("body.upper") == "upper"  # default: the key
    assert t.display_name("body.upper.short_sleeve.polo") == "Polo shirt"
    assert t.graph.nodes["smart.self"] == {"display_name": "smart (itself)", "aliases": ("smart", "Smart"), "synthetic": True}
    assert t.resolve_labels(["Polo", "T-Shirt", "Shoes", "smart", "Smart", "smart.jacket"]).tolist() == [1, 0, 4, 3, 3, 2]
    assert t.leaves_under("smart") == ("body.upper.short_sleeve.polo", "smart.jacket", "smart.self")
    t.check_classes(["T-Shirt", "Polo", "smart.jacket", "Smart", "Shoes"])
    np.testing.assert_allclose(t.node_probs(np.full(5, 0.2))[t.node_index("smart")], 0.6)


def test_hand_example_round_trip(clothing, tmp_path):
    text = clothing.to_yaml(tmp_path / "out.yaml")
    assert (tmp_path / "out.yaml").read_text(encoding="utf-8") == text
    again = Taxonomy.from_yaml(tmp_path / "out.yaml")
    assert again == clothing and again.nodes == clothing.nodes
    data = yaml.safe_load(text)
    assert data["format"] == "hedged-taxonomy/1" and data["naming"] == "dotted"
    assert "leaves" not in data  # default order suffices
    assert data["children"]["smart"]["children"]["self"] == {"aliases": ["Smart"]}
    assert data["children"]["smart"]["children"]["jacket"] == {}
    assert data["extra_parents"] == {"body.upper.short_sleeve.polo": ["smart"]}
    assert "aliases: [T-Shirt]" in text  # short lists stay on one line, as people write them


def test_round_trip_flat_naming_and_leaf_order(clothing):
    flat = clothing.to_dict(naming="flat")
    assert flat["naming"] == "flat"
    assert "body.upper" in flat["children"]["body"]["children"]
    assert Taxonomy.from_dict(flat) == clothing
    display = {v: d["display_name"] for v, d in clothing.graph.nodes(data=True) if not d["synthetic"]}
    # children are written in leaf-column order, so a reversed order needs no 'leaves' key ...
    reversed_order = Taxonomy.from_edges(clothing.graph.edges, leaves=clothing.leaves[::-1], display_names=display)
    data = reversed_order.to_dict()
    assert "leaves" not in data and list(data["children"]) == ["feet", "smart", "body"]
    assert Taxonomy.from_dict(data) == reversed_order
    # ... but the DAG's shared leaf between two subtrees does
    order = [clothing.leaves[i] for i in (0, 2, 1, 3, 4)]  # tshirt, jacket, polo, self, shoes
    interleaved = Taxonomy.from_edges(clothing.graph.edges, leaves=order, display_names=display)
    data = interleaved.to_dict()
    assert data["leaves"] == order
    assert Taxonomy.from_dict(data) == interleaved


def test_non_dotted_names_fall_back_to_flat():
    t = Taxonomy.from_edges([("a", "x"), ("b", "x"), ("b", "y")], display_names={"x": "Ex"})
    data = t.to_dict()
    assert data["naming"] == "flat" and data["name"] == "__root__"
    assert Taxonomy.from_dict(data) == t
    with pytest.raises(TaxonomyError, match="cannot be written with dotted naming"):
        Taxonomy.from_edges([("r", "a"), ("a", "b")]).to_dict(naming="dotted")


def test_wordnet_style_self_leaf_round_trip():
    t = Taxonomy.from_edges([("n1", "n2"), ("n2", "n3"), ("n1", "n4")], leaves=["n2", "n3", "n4"])
    data = t.to_dict()
    assert data["naming"] == "flat"
    assert data["children"]["n2"]["children"] == {"n3": {}, "n2.self": {}}
    assert Taxonomy.from_dict(data) == t


# ---------------------------------------------------------------- random round trips
@st.composite
def random_taxonomies(draw):
    n = draw(st.integers(2, 20))
    edges, names = [], ["root"]
    for i in range(1, n):
        parent = draw(st.integers(0, i - 1))
        key = draw(st.sampled_from(["k", "x", "self", "yes", "on", "1", "a b"])) + str(i)
        names.append(key if parent == 0 else f"{names[parent]}.{key}")
        edges.append((names[parent], names[i]))
        extra = draw(st.lists(st.integers(0, i - 1), max_size=1))
        edges += [(names[p], names[i]) for p in extra if p != parent]
    t = Taxonomy.from_edges(edges)
    sinks = list(t.leaves)
    order = draw(st.permutations(sinks))
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
    display = draw(st.dictionaries(st.sampled_from(names), text, max_size=4))
    alias_pool = [f"label {i}" for i in range(6)]
    alias_leaves = draw(st.lists(st.sampled_from(sinks), max_size=len(alias_pool), unique=True))
    aliases = {leaf: [alias_pool[i]] for i, leaf in enumerate(alias_leaves)}
    return Taxonomy.from_edges(edges, leaves=order, display_names=display, aliases=aliases)


@settings(max_examples=50, deadline=None)
@given(t=random_taxonomies(), naming=st.sampled_from([None, "flat"]))
def test_random_round_trip(tmp_path_factory, t, naming):
    path = tmp_path_factory.mktemp("rt") / "t.yaml"
    t.to_yaml(path, naming=naming)
    again = Taxonomy.from_yaml(path)
    assert again == t
    assert again.nodes == t.nodes and again.leaves == t.leaves
    assert set(again.graph.edges) == set(t.graph.edges)


# ---------------------------------------------------------------- validation
BAD = {
    "missing format marker": ("name: r\nchildren: {a: }\n", "missing format marker"),
    "wrong format": ("format: hedged-taxonomy/9\nname: r\nchildren: {a: }\n", "unsupported format"),
    "unknown top key": ("format: hedged-taxonomy/1\nname: r\nchildern: {a: }\n", "unknown key 'childern' in the top level"),
    "unknown node key": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {alias: [A]}}\n", "unknown key 'alias' in node 'a'"),
    "no name": ("format: hedged-taxonomy/1\nchildren: {a: }\n", "'name'"),
    "bad naming": ("format: hedged-taxonomy/1\nname: r\nnaming: nested\nchildren: {a: }\n", "naming must be"),
    "empty": ("format: hedged-taxonomy/1\nname: r\n", "empty taxonomy"),
    "empty children": ("format: hedged-taxonomy/1\nname: r\nchildren: {}\n", "empty taxonomy"),
    "not a mapping": ("- a\n- b\n", "must be a mapping"),
    "malformed": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: [\n", "malformed taxonomy YAML"),
    "duplicate key": ("format: hedged-taxonomy/1\nname: r\nchildren:\n  a:\n  a:\n", "duplicate name 'a' at line 5"),
    "duplicate flat name": (
        "format: hedged-taxonomy/1\nname: r\nnaming: flat\nchildren:\n  a: {children: {x: }}\n  b: {children: {x: }}\n",
        "duplicate name 'x'",
    ),
    "root name reused": ("format: hedged-taxonomy/1\nname: r\nnaming: flat\nchildren: {a: {children: {r: }}}\n", "duplicate name 'r'"),
    "dot in dotted key": ("format: hedged-taxonomy/1\nname: r\nchildren: {a.b: }\n", "contains '.'"),
    "non-string key": ("format: hedged-taxonomy/1\nname: r\nchildren: {yes: }\n", "not a string"),
    "entry not mapping": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: 3}\n", "entry of 'a' must be a mapping"),
    "children not mapping": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {children: [x]}}\n", "children of 'a' must be a mapping"),
    "display not string": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {display_name: [x]}}\n", "display_name of 'a'"),
    "aliases on internal": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: {aliases: [A], children: {x: }}}\n",
        "aliases on 'a', which has children",
    ),
    "aliases not list": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {aliases: A}}\n", "aliases of 'a' must be a list"),
    "duplicate alias": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {aliases: [X]}, b: {aliases: [X]}}\n", "duplicate name 'X'"),
    "alias equals leaf": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: {aliases: [b]}, b: }\n", "duplicate name 'b'"),
    "unknown extra parent": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: , b: }\nextra_parents: {a: [c]}\n",
        "unknown parent 'c' of 'a' in extra_parents",
    ),
    "unknown extra node": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: , b: }\nextra_parents: {c: [a]}\n",
        "unknown node 'c' in extra_parents",
    ),
    "extra parent repeats tree parent": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: {children: {x: }}}\nextra_parents: {a.x: [a]}\n",
        "already its parent",
    ),
    "extra parent twice": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: {children: {x: }}, b: }\nextra_parents: {a.x: [b, b]}\n",
        "listed twice",
    ),
    "cycle": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: {children: {x: {children: {y: }}}}}\nextra_parents: {a: [a.x.y]}\n",
        "cycle: ",
    ),
    "leaves wrong": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: , b: }\nleaves: [a]\n", "node 'b' has no children and is not in leaves"),
    "leaves unknown": ("format: hedged-taxonomy/1\nname: r\nchildren: {a: , b: }\nleaves: [a, b, c]\n", "unknown leaf 'c'"),
    "leaf with children": (
        "format: hedged-taxonomy/1\nname: r\nchildren: {a: {children: {x: }}}\nleaves: [a, a.x]\n",
        "leaf 'a' in leaves has children",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_yaml_validation(tmp_path, case):
    text, match = BAD[case]
    with pytest.raises(TaxonomyError, match=match):
        Taxonomy.from_yaml(write(tmp_path, text))


def test_from_dict_rejects_non_mapping():
    with pytest.raises(TaxonomyError, match="mapping is required"):
        Taxonomy.from_dict(["format"])


def test_errors_are_one_line(tmp_path):
    for text, _ in BAD.values():
        with pytest.raises(TaxonomyError) as info:
            Taxonomy.from_yaml(write(tmp_path, text))
        assert "\n" not in str(info.value)
