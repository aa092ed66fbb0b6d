"""The pieces of the out-of-taxonomy detector that come from the backbone and WordNet.

The decision itself is torch-free (:mod:`hedging.ood`); here are the inputs it
needs when a detector is fitted for a bundle:

* :func:`imagenet_head`: the ImageNet classifier that ships with the backbone's
  pretrained weights (no download), applied later to the bundle model's features;
* :func:`imagenet_classes_under`: the ImageNet classes under given WordNet synsets
  (clothing, footwear, headdress by default), read from a WordNet is-a file.

The bundle stores both (``ood.npz``), so prediction needs neither WordNet nor the
backbone package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hedged.taxonomy._wordnet import read_is_a, read_synsets

__all__ = ["CLOTHING_SYNSETS", "imagenet_classes_under", "imagenet_head"]

#: WordNet synsets whose ImageNet descendants count as "in the clothing taxonomy":
#: clothing (article of clothing), garment, footwear (both senses), headdress.
CLOTHING_SYNSETS = ("n03051540", "n03419014", "n03380867", "n03381126", "n03502509")


def imagenet_classes_under(is_a_path, synsets_path, roots=CLOTHING_SYNSETS) -> np.ndarray:
    """Indices (logit order of ``synsets_path``) of the classes under any of ``roots``.

    Parameters
    ----------
    is_a_path : path
        WordNet ``parent child`` edges (``wordnet_is_a.txt``).
    synsets_path : path
        The classifier's classes, one ``wnid words`` line each in logit order
        (``imagenet1k_synsets.txt``).
    roots : sequence of str
        WordNet ids; a class equal to a root counts too.

    Returns
    -------
    np.ndarray of int, sorted
    """
    children: dict[str, list[str]] = {}
    for parent, child in read_is_a(is_a_path):
        children.setdefault(parent, []).append(child)
    below, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node not in below:
            below.add(node)
            stack.extend(children.get(node, ()))
    ids, _ = read_synsets(synsets_path)
    return np.array([i for i, wnid in enumerate(ids) if wnid in below], dtype=np.int64)


def imagenet_head(arch: str) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``(1000, D)`` and bias ``(1000,)`` of ``arch``'s bundled ImageNet classifier."""
    from hedged.models.registry import _bundled_weights_path, _classifier_key, get_spec, load_state_dict

    if not get_spec(arch).bundled_weights:
        raise ValueError(f"{arch} has no bundled ImageNet weights to take the head from")
    state = load_state_dict(_bundled_weights_path(arch))
    key = _classifier_key(arch)
    return state[key].float().numpy(), state[key.replace("weight", "bias")].float().numpy()


def default_wordnet_paths(root="../shared/data/wordnet") -> tuple[Path, Path]:
    root = Path(root)
    return root / "wordnet_is_a.txt", root / "imagenet1k_synsets.txt"
