"""Class hierarchies for hedged prediction (torch-free).

``Taxonomy`` wraps a networkx DiGraph (edges parent -> child) with a fixed leaf
order (the classifier's posterior columns) and node order (node-posterior
columns). See docs/architecture.md and docs/taxonomy-yaml.md.
"""

from hedged.taxonomy._core import SELF_SUFFIX, VIRTUAL_ROOT, Taxonomy, TaxonomyError

__all__ = ["Taxonomy", "TaxonomyError", "VIRTUAL_ROOT", "SELF_SUFFIX"]
