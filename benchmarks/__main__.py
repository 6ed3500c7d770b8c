"""``python -m benchmarks``: see ``benchmarks._cli``."""

from benchmarks._cli import main

raise SystemExit(main())
