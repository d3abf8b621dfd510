"""Reading zoo's environment settings, at call time (never at import)."""

from __future__ import annotations

import os
from pathlib import Path

TRUE = {"1", "true", "yes", "on"}


def flag(*names: str) -> bool:
    """Whether any of the variables ``names`` is set to 1/true/yes/on."""
    return any(os.environ.get(name, "").strip().lower() in TRUE for name in names)


def name_list(name: str) -> set[str] | None:
    """A comma-separated list (``a, b``) as a set; None when the variable is unset."""
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def zoo_home() -> Path:
    """``$ZOO_HOME``, or ``$XDG_CACHE_HOME/zoo`` (default ``~/.cache/zoo``): where the store and zoo's
    other records live."""
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo"
