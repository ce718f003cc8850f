"""`python -m assistant` is the same as the `edge-assistant` console script."""

from assistant.cli import main

raise SystemExit(main())
