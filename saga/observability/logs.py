"""Logging set-up shared by every ``saga`` process."""

from __future__ import annotations

import logging


def configure_logging() -> None:
    """INFO to stderr with time, level and logger; aiokafka kept to warnings."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(min(root.level, logging.INFO))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
