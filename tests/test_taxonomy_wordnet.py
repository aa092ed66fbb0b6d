"""WordNet loader: a hand-made file set, and the real ImageNet-1k / 21k counts (skip without data)."""

import networkx as nx
import numpy as np
import pytest

from hedged.taxonomy import VIRTUAL_ROOT, Taxonomy, TaxonomyError


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "is_a.txt").write_text(
        "# parent child\n"
        "n0 n1\nn0 n2\nn1 n3\nn2 n3\nn1 n4\n"
        "n9 n8\n"  # unrelated branch: not an ancestor of any class, dropped
        "\n",
        encoding="utf-8",
    )
    (tmp_path / "synsets.txt").write_text("n4 cat, house cat\nn3 dog\nn1\nn7 orphan\n", encoding="utf-8")
    return tmp_path / "is_a.txt", tmp_path / "synsets.txt"


def test_tiny_wordnet_by_hand(tiny):
    t = Taxonomy.from_wordnet(*tiny, names={"n0": "entity"})
    # n1 is a class with children -> n1.self; n7 is not in the edges -> under the virtual root
    assert t.leaves == ("n4", "n3", "n1.self", "n7")
    assert t.root == VIRTUAL_ROOT and t.children(VIRTUAL_ROOT) == {"n0", "n7"}
    assert set(t.nodes) == {VIRTUAL_ROOT, "n0", "n1", "n2", "n3", "n4", "n1.self", "n7"}
    assert t.display_name("n4") == "cat" and t.display_name("n3") == "dog"
    assert t.display_name("n0") == "entity" and t.display_name("n2") == "n2"
    assert t.display_name("n1.self") == "n1 (itself)"
    assert t.parents("n3") == {"n1", "n2"}
    assert t.leaves_under("n1") == ("n4", "n3", "n1.self")
    assert t.resolve_labels(["n1", "n7"]).tolist() == [2, 3]
    t.check_classes(["n4", "n3", "n1", "n7"])


def test_wordnet_bad_files(tmp_path, tiny):
    bad = tmp_path / "bad.txt"
    bad.write_text("n0 n1 n2\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="bad.txt:1: expected 'parent child'"):
        Taxonomy.from_wordnet(bad, tiny[1])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="empty taxonomy"):
        Taxonomy.from_wordnet(tiny[0], empty)
    dup = tmp_path / "dup.txt"
    dup.write_text("n3\nn4\nn3\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="duplicate name 'n3'"):
        Taxonomy.from_wordnet(tiny[0], dup)
    cyc = tmp_path / "cyc.txt"
    cyc.write_text("n0 n1\nn1 n0\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="cycle"):
        Taxonomy.from_wordnet(cyc, tiny[1])


@pytest.mark.data
def test_imagenet_1k(wordnet_dir):
    t = Taxonomy.from_wordnet(wordnet_dir / "wordnet_is_a.txt", wordnet_dir / "imagenet1k_synsets.txt")
    g = t.graph
    assert t.n_leaves == 1000
    # 1,835 WordNet nodes (the classes and all their ancestors) under 4 WordNet
    # roots, joined by the virtual root: 1,836 nodes; 74 nodes have several parents.
    assert t.root == VIRTUAL_ROOT and g.out_degree(VIRTUAL_ROOT) == 4
    assert t.n_nodes == 1836
    assert sum(1 for v in t.nodes if g.in_degree(v) > 1) == 74
    assert not any(d["synthetic"] for _, d in g.nodes(data=True))  # no 1k class has a subclass
    assert t.display_name("n01440764") == "tench"
    assert t.leaves[0] == "n01440764"
    assert t.leaves_under("n00001930") == t.leaves  # physical entity holds every class
    assert np.all(t.membership.sum(axis=0) >= 1)
    assert nx.is_directed_acyclic_graph(g)


@pytest.mark.data
def test_imagenet_21k(wordnet_dir):
    t = Taxonomy.from_wordnet(wordnet_dir / "wordnet_is_a.txt", wordnet_dir / "imagenet21k_synsets.txt")
    g = t.graph
    synthetic = sum(1 for _, d in g.nodes(data=True) if d["synthetic"])
    assert t.n_leaves == 21843
    # 23,535 WordNet nodes (6 classes are missing from the is-a file and hang
    # under the root), 4,588 classes with subclasses get a ".self" leaf, plus
    # the virtual root over 25 WordNet roots and the 6 orphans.
    assert synthetic == 4588
    assert t.n_nodes == 23535 + synthetic + 1 == 28124
    assert g.out_degree(VIRTUAL_ROOT) == 31
    assert sum(1 for v in t.nodes if g.in_degree(v) > 1) == 497
    assert t.membership.shape == (21843, 28124)
    np.testing.assert_allclose(t.node_probs(np.full((2, t.n_leaves), 1 / t.n_leaves))[:, 0], 1.0)
    r = t.rewards()
    assert r[0] == 0 and np.allclose(r[t.node_index(t.leaves)], np.log2(21843))
