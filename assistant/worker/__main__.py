"""`python -m assistant.worker --fd N`: the sandboxed inference worker."""

from assistant.worker.main import main

raise SystemExit(main())
