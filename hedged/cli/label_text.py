"""``hedged label-text``: the taxonomy node a listing title names, from the taxonomy's keywords."""

from __future__ import annotations

import argparse
import json
import sys

from hedged.cli._common import EXIT_OK, Parser, UsageError, run_cli

DESCRIPTION = """\
Label listing titles with the taxonomy's keywords: each title gets the deepest
node that all its matched keywords agree on ("polo shirt" -> Polo shirt; a polo
and a T-shirt -> Short-sleeve top), or no answer when no keyword matches.
Keywords live in the taxonomy YAML (docs/taxonomy-yaml.md, "keywords").
"""

EPILOG = """\
examples:
  hedged label-text "Men's slim fit polo shirt, size M"
  hedged label-text --json "Nike hoodie XL" "Levi's 501 jeans" < /dev/null
  hedged label-text - < titles.txt            one title per line

exit status: 0 every title read (matched or not); 2 usage error.
"""


def build_parser() -> Parser:
    p = Parser(prog="hedged label-text", description=DESCRIPTION, epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("titles", nargs="+", metavar="TITLE", help="titles; '-' reads one title per line from stdin")
    p.add_argument("--taxonomy", metavar="YAML", default=None,
                   help="taxonomy YAML with keywords (default: the bundled model's taxonomy)")
    p.add_argument("--model", metavar="DIR", default=None, help="take the taxonomy of this bundle")
    p.add_argument("--json", action="store_true", help="one JSON object per title")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), _run, argv)


def _taxonomy(args):
    from hedged.taxonomy import Taxonomy, TaxonomyError

    try:
        if args.taxonomy is not None:
            return Taxonomy.from_yaml(args.taxonomy)
        from hedged.models.bundle import BundleError, resolve_bundle

        try:
            return Taxonomy.from_yaml(resolve_bundle(args.model) / "taxonomy.yaml")
        except BundleError as err:
            raise UsageError(str(err)) from None
    except (TaxonomyError, OSError) as err:
        raise UsageError(f"cannot read the taxonomy: {err}") from None


def record(tax, label) -> dict:
    node = label.node
    return {
        "title": label.text,
        "node": node,
        "display_name": None if node is None else tax.display_name(node),
        "path": None if node is None else list(tax.path(node)),
        "is_leaf": None if node is None else tax.is_leaf(node),
        "matched": [{"words": w, "node": v} for w, v in label.matches],
    }


def _run(args) -> int:
    tax = _taxonomy(args)
    if not any(tax.keywords(v) for v in tax.nodes):
        raise UsageError("the taxonomy has no keywords: add 'keywords:' to its YAML (docs/taxonomy-yaml.md)")
    titles = []
    for t in args.titles:
        titles.extend(line.rstrip("\n") for line in sys.stdin if line.strip()) if t == "-" else titles.append(t)
    for title in titles:
        label = tax.label_text(title)
        if args.json:
            print(json.dumps(record(tax, label)), flush=True)
        elif label.node is None:
            print(f"{title}\n  no keyword matched")
        else:
            words = ", ".join(f"{w!r} -> {tax.display_name(v)}" for w, v in label.matches)
            print(f"{title}\n  {tax.display_name(label.node)}  ({label.node}; {words})")
    return EXIT_OK


if __name__ == "__main__":  # python -m hedged.cli.label_text
    raise SystemExit(main())
