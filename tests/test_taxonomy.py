"""Taxonomy core: hand-computed trees and DAGs, validation, hypothesis properties."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from hedged.taxonomy import VIRTUAL_ROOT, Taxonomy, TaxonomyError

# r -> a -> {x, y}, r -> b -> {z}: a plain tree with 3 leaves
TREE = [("r", "a"), ("r", "b"), ("a", "x"), ("a", "y"), ("b", "z")]
# diamond: x sits under both a and b
DIAMOND = [("r", "a"), ("r", "b"), ("a", "x"), ("b", "x"), ("a", "y"), ("b", "z")]


@pytest.fixture
def tree():
    return Taxonomy.from_edges(TREE)


@pytest.fixture
def diamond():
    return Taxonomy.from_edges(DIAMOND)


# ---------------------------------------------------------------- structure
def test_tree_orders_and_attributes(tree):
    assert tree.root == "r"
    assert tree.leaves == ("x", "y", "z")
    assert tree.nodes == ("r", "a", "x", "y", "b", "z")
    assert (tree.n_leaves, tree.n_nodes, len(tree)) == (3, 6, 6)
    assert tree.depths.tolist() == [0, 1, 2, 2, 1, 2]
    assert tree.graph.nodes["x"] == {"display_name": "x", "aliases": (), "synthetic": False}
    assert "a" in tree and "q" not in tree and 3 not in tree


def test_membership_by_hand(diamond):
    m = diamond.membership
    assert sp.isspmatrix_csr(m) and m.dtype == np.float64 and m.shape == (3, 6)
    assert diamond.nodes == ("r", "a", "b", "x", "y", "z")
    expected = np.array(
        #  r  a  b  x  y  z
        [[1, 1, 1, 1, 0, 0],  # x under a and b
         [1, 1, 0, 0, 1, 0],  # y
         [1, 0, 1, 0, 0, 1]]  # z
    )
    np.testing.assert_array_equal(m.toarray(), expected)


def test_diamond_leaves_not_double_counted(diamond):
    assert diamond.leaves_under("r") == ("x", "y", "z")
    assert diamond.leaves_under("a") == ("x", "y")
    assert diamond.leaves_under("b") == ("x", "z")
    np.testing.assert_allclose(diamond.node_probs([0.5, 0.25, 0.25])[0], 1.0)
    # a longer diamond: two routes of different length to the same leaf
    t = Taxonomy.from_edges([("r", "a"), ("a", "b"), ("b", "x"), ("a", "x"), ("r", "y")])
    assert t.membership.max() == 1.0
    assert t.leaves_under("a") == ("x",)
    assert t.depth("x") == 2 and t.path("x") == ["r", "a", "x"]


def test_node_probs_by_hand(diamond):
    probs = np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    got = diamond.node_probs(probs)
    #                 r    a    b    x    y    z
    expected = [[1.0, 0.8, 0.7, 0.5, 0.3, 0.2], [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]]
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(diamond.node_probs(probs[0]), expected[0])


def test_node_probs_rejects_wrong_width(tree):
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        tree.node_probs(np.ones((2, 4)) / 4)


def test_rewards_uniform_by_hand(diamond):
    l3 = np.log2(3)
    np.testing.assert_allclose(diamond.rewards(), [0, l3 - 1, l3 - 1, l3, l3, l3])


def test_rewards_with_prior_by_hand(diamond):
    prior = np.array([0.5, 0.25, 0.25])  # x, y, z
    h = 1.5
    # a: x .5, y .25 -> renormalised 2/3, 1/3
    h_a = -(2 / 3 * np.log2(2 / 3) + 1 / 3 * np.log2(1 / 3))
    np.testing.assert_allclose(diamond.rewards(prior), [0, h - h_a, h - h_a, h, h, h])
    # uniform prior gives the uniform rewards
    np.testing.assert_allclose(diamond.rewards(np.ones(3) / 3), diamond.rewards())
    # a node whose leaves all have prior 0 counts as fully informative
    np.testing.assert_allclose(diamond.rewards([0.5, 0.5, 0.0])[diamond.node_index("z")], 1.0)


@pytest.mark.parametrize(
    "prior, match",
    [([0.5, 0.5], "shape"), ([0.5, 0.6, -0.1], "non-negative"), ([0.2, 0.2, 0.2], "sum to 1")],
)
def test_rewards_bad_prior(diamond, prior, match):
    with pytest.raises(ValueError, match=match):
        diamond.rewards(prior)


def test_is_correct_names_and_indices(diamond):
    pred = np.array(["a", "b", "r", "x", "y"])
    true = ["y", "y", "z", "x", "x"]
    expected = [True, False, True, True, False]
    np.testing.assert_array_equal(diamond.is_correct(pred, true), expected)
    np.testing.assert_array_equal(
        diamond.is_correct(diamond.node_index(pred), diamond.leaf_index(true)), expected
    )
    assert diamond.is_correct([], []).shape == (0,)
    with pytest.raises(ValueError, match="differ in shape"):
        diamond.is_correct(["a"], ["x", "y"])


def test_lookups_accept_numpy_strings(diamond):
    names = np.array(["z", "r", "x"])
    assert diamond.node_index(names).tolist() == [5, 0, 3]
    assert diamond.node_index(names[0]) == 5 and isinstance(names[0], np.str_)
    assert diamond.leaf_index(names[[0, 2]]).tolist() == [2, 0]
    assert diamond.node_index(np.array([["a", "b"]], dtype=object)).tolist() == [[1, 2]]
    assert diamond.leaves_under(names[1]) == ("x", "y", "z")
    assert diamond.path(names[0]) == ["r", "b", "z"]
    assert diamond.depth(np.str_("a")) == 1
    assert diamond.node_index(4) == 4
    assert diamond.leaves_under(1) == ("x", "y")


@pytest.mark.parametrize("call", ["node_index", "leaf_index", "leaves_under", "path", "depth", "display_name"])
def test_unknown_names_raise(diamond, call):
    with pytest.raises(TaxonomyError, match="unknown .*'nope'"):
        getattr(diamond, call)("nope")


def test_leaf_index_rejects_internal_node_and_bad_index(diamond):
    with pytest.raises(TaxonomyError, match="unknown leaf 'a'"):
        diamond.leaf_index(["x", "a"])
    with pytest.raises(TaxonomyError, match="out of range"):
        diamond.node_index(np.array([0, 6]))


def test_resolve_labels_aliases_and_missing():
    t = Taxonomy.from_edges(TREE, aliases={"x": ["X", "ex"], "z": ["Z"]})
    assert t.resolve_labels(["x", "ex", "Z", "y", "X"]).tolist() == [0, 0, 2, 1, 0]
    assert t.resolve_labels(np.array(["Z", "Other"]), missing="drop").tolist() == [2, -1]
    assert t.resolve_labels([2, 0]).tolist() == [2, 0]
    assert t.resolve_labels([3], missing="drop").tolist() == [-1]
    with pytest.raises(TaxonomyError, match="unknown label 'Other'"):
        t.resolve_labels(["x", "Other"])
    with pytest.raises(TaxonomyError, match="unknown label 'a'"):
        t.resolve_labels(["a"])  # internal nodes are not labels
    with pytest.raises(ValueError, match="missing"):
        t.resolve_labels(["x"], missing="ignore")
    assert t.is_correct(["a", "b"], ["X", "Z"]).tolist() == [True, True]


def test_check_classes():
    t = Taxonomy.from_edges(TREE, aliases={"x": ["X"]})
    t.check_classes(["x", "y", "z"])
    t.check_classes(np.array(["X", "y", "z"]))
    with pytest.raises(TaxonomyError, match="2 classes but the taxonomy has 3 leaves"):
        t.check_classes(["x", "y"])
    with pytest.raises(TaxonomyError, match="class 0 is 'y' but leaf 0 is 'x'"):
        t.check_classes(["y", "x", "z"])


def test_explicit_leaf_order_and_lookup_relations(tree):
    t = Taxonomy.from_edges(TREE, leaves=["z", "x", "y"])
    assert t.leaves == ("z", "x", "y")
    assert t.nodes[0] == "r"
    np.testing.assert_allclose(t.node_probs([1.0, 0.0, 0.0])[t.node_index("b")], 1.0)
    assert tree.parents("x") == {"a"} and tree.children("r") == {"a", "b"}
    assert tree.ancestors("x") == {"a", "r"} and tree.descendants("a") == {"x", "y"}
    assert tree.is_leaf("x") and not tree.is_leaf("a")


def test_labelled_class_with_children_gets_self_leaf():
    t = Taxonomy.from_edges(
        [("r", "dog"), ("dog", "puppy"), ("r", "cat")],
        leaves=["cat", "dog", "puppy"],
        display_names={"dog": "Dog"},
        aliases={"dog": ["Hund"]},
    )
    assert t.leaves == ("cat", "dog.self", "puppy")
    assert t.graph.has_edge("dog", "dog.self")
    assert t.graph.nodes["dog.self"] == {"display_name": "Dog (itself)", "aliases": ("dog", "Hund"), "synthetic": True}
    assert t.resolve_labels(["dog", "Hund", "puppy"]).tolist() == [1, 1, 2]
    assert t.leaves_under("dog") == ("dog.self", "puppy")
    t.check_classes(["cat", "dog", "puppy"])
    # rebuilding from the graph's own edges gives the same taxonomy
    again = Taxonomy.from_edges(
        t.graph.edges,
        leaves=t.leaves,
        display_names={"dog": "Dog"},
        aliases={"dog.self": ["Hund"]},
    )
    assert again == t


def test_several_roots_get_virtual_root():
    t = Taxonomy.from_edges([("a", "x"), ("b", "y")])
    assert t.root == VIRTUAL_ROOT and t.children(VIRTUAL_ROOT) == {"a", "b"}
    assert t.depth("x") == 2
    named = Taxonomy.from_edges([("a", "x"), ("b", "y")], root="all")
    assert named.root == "all"
    assert Taxonomy.from_edges([("a", "x")], root="a").root == "a"
    isolated = Taxonomy.from_edges([("a", "x")], nodes=["solo"])
    assert isolated.leaves == ("x", "solo") and isolated.parents("solo") == {VIRTUAL_ROOT}


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(edges=[]), "empty taxonomy"),
        (dict(edges=[("a", "b"), ("b", "c"), ("c", "a"), ("r", "a")]), "cycle: "),
        (dict(edges=[("a", "a")]), "cycle: node 'a' is its own parent"),
        (dict(edges=[("a", "b", "c")]), "not a \\(parent, child\\) pair"),
        (dict(edges=[("a", 3)]), "not a non-empty string"),
        (dict(edges=TREE, leaves=["x", "y", "x", "z"]), "duplicate leaf 'x'"),
        (dict(edges=TREE, leaves=["x", "y", "q"]), "unknown leaf 'q'"),
        (dict(edges=TREE, leaves=["x", "y"]), "node 'z' has no children and is not in leaves"),
        (dict(edges=TREE, leaves="xyz"), "not a single string"),
        (dict(edges=TREE, display_names={"q": "Q"}), "display name given for unknown node 'q'"),
        (dict(edges=TREE, aliases={"a": ["A"]}), "aliases given for 'a', which is not a leaf"),
        (dict(edges=TREE, aliases={"x": "X"}), "must be a list"),
        (dict(edges=TREE, aliases={"x": ["y"]}), "duplicate name 'y'"),
        (dict(edges=TREE, aliases={"x": ["X"], "y": ["X"]}), "duplicate name 'X'"),
        (dict(edges=[("r", "a"), ("a", "b"), ("r", "a.self")], leaves=["a", "b", "a.self"]), "duplicate name 'a.self'"),
        (dict(edges=[("a", "x"), ("b", "y")], root="a"), "root 'a' is not the only node without parents"),
    ],
)
def test_from_edges_validation(kwargs, match):
    with pytest.raises(TaxonomyError, match=match):
        Taxonomy.from_edges(**kwargs)


def test_taxonomy_error_is_value_error():
    assert issubclass(TaxonomyError, ValueError)


# ---------------------------------------------------------------- dunders, text
def test_equality_repr_describe_subtree(diamond):
    same = Taxonomy.from_edges(list(reversed(DIAMOND)), leaves=diamond.leaves)
    assert same == diamond  # node order does not depend on edge order
    assert Taxonomy.from_edges(DIAMOND, leaves=["y", "x", "z"]) != diamond
    assert Taxonomy.from_edges(DIAMOND, display_names={"a": "A"}) != diamond
    assert Taxonomy.from_edges(DIAMOND, aliases={"x": ["X"]}) != diamond
    assert Taxonomy.from_edges(DIAMOND[:-1] + [("a", "z")]) != diamond
    assert diamond != "r"
    assert repr(diamond) == "Taxonomy(root='r', n_nodes=6, n_leaves=3, max_depth=2, multi_parent=1)"
    text = diamond.describe()
    assert text.splitlines()[0] == "r (3 leaves)"
    assert text.count("x*") == 2  # shown under both parents, marked
    assert len(diamond.describe(max_depth=1).splitlines()) == 3
    sub = diamond.subtree("a")
    assert sub.root == "a" and sub.leaves == ("x", "y") and sub.n_nodes == 3


# ---------------------------------------------------------------- properties
@st.composite
def random_dags(draw, max_nodes=25):
    """Random DAGs: node i's parents are drawn among nodes < i (node 0 is the root)."""
    n = draw(st.integers(2, max_nodes))
    edges = []
    for i in range(1, n):
        first = draw(st.integers(0, i - 1))
        extra = draw(st.lists(st.integers(0, i - 1), max_size=2))
        edges += [(f"n{p}", f"n{i}") for p in {first, *extra}]
    return edges


def _probs(draw, n_rows, n_cols):
    raw = np.array(draw(st.lists(st.floats(0, 1), min_size=n_rows * n_cols, max_size=n_rows * n_cols)))
    raw = raw.reshape(n_rows, n_cols) + 1e-9
    return raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_properties_on_random_dags(data):
    edges = data.draw(random_dags())
    t = Taxonomy.from_edges(edges)
    g = t.graph
    # membership agrees with networkx descendants (the leaves under v, as a set)
    for j, v in enumerate(t.nodes):
        under = ({v} | nx.descendants(g, v)) & set(t.leaves)
        assert set(t.leaves_under(v)) == under
        assert t.membership[:, j].sum() == len(under)
    assert t.nodes[0] == t.root
    pos = {v: i for i, v in enumerate(t.nodes)}
    assert all(pos[p] < pos[c] for p, c in g.edges)  # topological
    assert t.depths[0] == 0 and all(t.depth(c) <= t.depth(p) + 1 for p, c in g.edges)

    probs = _probs(data.draw, 4, t.n_leaves)
    node_p = t.node_probs(probs)
    np.testing.assert_allclose(node_p[:, 0], 1.0)
    for p, c in g.edges:
        assert np.all(node_p[:, pos[p]] >= node_p[:, pos[c]] - 1e-12)

    r = t.rewards()
    assert r[0] == 0 and np.all(r >= 0)
    np.testing.assert_allclose(r[t.node_index(list(t.leaves))], np.log2(t.n_leaves))
    for p, c in g.edges:
        assert r[pos[p]] <= r[pos[c]] + 1e-12

    prior = _probs(data.draw, 1, t.n_leaves)[0]
    rp = t.rewards(prior)
    assert abs(rp[0]) < 1e-9
    np.testing.assert_allclose(rp[t.node_index(list(t.leaves))], -np.sum(prior * np.log2(prior)), atol=1e-9)

    # is_correct agrees with the leaf sets
    nodes = data.draw(st.lists(st.sampled_from(t.nodes), min_size=1, max_size=10))
    truth = data.draw(st.lists(st.sampled_from(t.leaves), min_size=len(nodes), max_size=len(nodes)))
    expected = [leaf in t.leaves_under(v) for v, leaf in zip(nodes, truth)]
    assert t.is_correct(np.array(nodes), np.array(truth)).tolist() == expected
