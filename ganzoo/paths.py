"""Per-user folders: downloaded datasets and cached artefacts (reference classifiers, real-data features).

GANZOO_DATA and GANZOO_CACHE override the defaults (XDG locations under the home folder).
"""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Where dataset plugins look for (and download) datasets when --data-root is not given."""
    if os.environ.get("GANZOO_DATA"):
        return Path(os.environ["GANZOO_DATA"]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "ganzoo" / "data"


def cache_dir() -> Path:
    """Where ganzoo keeps things it can rebuild: trained reference classifiers, cached features."""
    if os.environ.get("GANZOO_CACHE"):
        return Path(os.environ["GANZOO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "ganzoo"
