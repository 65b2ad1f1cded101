"""``python -m ser_engine`` is the ``ser`` command line."""

from .cli import main

raise SystemExit(main())
