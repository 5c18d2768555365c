"""``python -m saga.cli``: the ``saga`` command."""

from saga.cli import main

raise SystemExit(main())
