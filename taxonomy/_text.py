"""Labels from listing titles: the deepest taxonomy node all of a title's keywords agree on.

Rule-based labelling of titles ("Men's slim fit polo shirt, size M") is how catalogues
are bootstrapped. Each node of a taxonomy may list ``keywords`` (YAML): words and
phrases, plurals and common misspellings; a keyword starting with ``-`` is a
*negative*: when it occurs in the title, the node's keywords do not count
("shirt" with ``-night shirt``).

Matching, on the title's lower-case word tokens (accents and symbols dropped,
``t-shirt`` = ``t shirt``):

* every keyword also matches in the plural (``+s``, ``+es``, ``y`` -> ``ies``) and, for a
  phrase, written as one word (``t shirt`` -> ``tshirt``);
* the longest phrase wins and consumes its words ("polo shirt" is the polo's, so its
  "shirt" is not the shirt's);
* the answer is the deepest node that is an ancestor (or itself) of every matched node:
  one leaf matched gives the leaf, a polo and a T-shirt give "Short-sleeve top", a skirt
  and a shirt the clothing root, nothing matched no answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens, accents removed, every other character a separator.

    >>> tokens("Men's Slim-Fit T-Shirt 👕 (size M)")
    ['men', 's', 'slim', 'fit', 't', 'shirt', 'size', 'm']
    """
    # every non-letter (hyphens of all kinds, emoji, punctuation) separates; then accents go
    text = "".join(c if c.isalnum() else " " for c in str(text))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return _TOKEN.findall(text)


def _plurals(word: str) -> set[str]:
    out = {word, word + "s", word + "es"}
    if word.endswith("y") and len(word) > 2:
        out.add(word[:-1] + "ies")
    if word.endswith(("s", "x", "z", "ch", "sh")):
        out.add(word + "es")
    return out


def phrase_forms(phrase: str) -> set[tuple[str, ...]]:
    """Token sequences a keyword matches: its plurals and, for a phrase, its one-word spelling.

    >>> sorted(phrase_forms("t-shirt"))[:3]
    [('t', 'shirt'), ('t', 'shirtes'), ('t', 'shirts')]
    """
    toks = tokens(phrase)
    if not toks:
        return set()
    forms = {tuple(toks[:-1]) + (last,) for last in _plurals(toks[-1])}
    if len(toks) > 1:
        forms |= {(w,) for w in _plurals("".join(toks))}
    return forms


@dataclass(frozen=True)
class TextLabel:
    """What a title says: ``node`` (None when nothing matched) and the words that matched, per node."""

    text: str
    node: str | None
    matches: tuple[tuple[str, str], ...]  # (matched words, node)

    @property
    def matched_words(self) -> tuple[str, ...]:
        return tuple(w for w, _ in self.matches)


class TitleLabeller:
    """Compiled keyword tables of a taxonomy (:meth:`hedged.taxonomy.Taxonomy.label_text` builds one)."""

    def __init__(self, taxonomy):
        self.taxonomy = taxonomy
        self.positive: dict[tuple[str, ...], set[str]] = {}
        self.negative: dict[str, list[tuple[str, ...]]] = {}
        g = taxonomy.graph
        for v in taxonomy.nodes:
            for kw in g.nodes[v].get("keywords", ()):
                if kw.startswith("-"):
                    self.negative.setdefault(v, []).extend(phrase_forms(kw[1:]))
                else:
                    for form in phrase_forms(kw):
                        self.positive.setdefault(form, set()).add(v)
        self.longest = max((len(f) for f in self.positive), default=0)

    def __call__(self, text: str) -> TextLabel:
        toks = tokens(text)
        found: list[tuple[str, str]] = []
        i = 0
        while i < len(toks):
            for n in range(min(self.longest, len(toks) - i), 0, -1):
                nodes = self.positive.get(tuple(toks[i : i + n]))
                if nodes:
                    found.extend((" ".join(toks[i : i + n]), v) for v in sorted(nodes))
                    i += n
                    break
            else:
                i += 1
        present = {tuple(toks[i : i + n]) for n in range(1, len(toks) + 1) for i in range(len(toks) - n + 1)}
        found = [(w, v) for w, v in found if not any(neg in present for neg in self.negative.get(v, ()))]
        return TextLabel(str(text), self._agree(v for _, v in found), tuple(found))

    def _agree(self, nodes) -> str | None:
        """The deepest node that is an ancestor-or-self of every node (None for none)."""
        nodes = set(nodes)
        if not nodes:
            return None
        tax = self.taxonomy
        common = None
        for v in nodes:
            up = tax.ancestors(v) | {v}
            common = up if common is None else common & up
        return max(common, key=lambda v: (tax.depth(v), -tax.node_index(v)))
