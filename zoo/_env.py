"""Reading zoo's environment settings, at call time (never at import)."""

from __future__ import annotations

import os

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
