"""``python -m hedged``: the same as the ``hedged`` console script."""

from hedged.cli import main

raise SystemExit(main())
