"""Progress bars on long work: tqdm on a terminal, nothing when quiet or not on a terminal."""

from __future__ import annotations

import sys
from typing import Any

from .._env import flag


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def human(n: float) -> str:
    """Bytes in decimal units, as ``zoo ls`` and ``--max-size`` write them: ``1.5 GB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable: the loop returns at TB")


def enabled(quiet: bool | None) -> bool:
    if quiet is None:
        quiet = flag("ZOO_QUIET")
    return not quiet and sys.stderr.isatty()


def bar(total: int, desc: str, quiet: bool | None = None) -> Any:
    """A byte progress bar, or a silent stand-in."""
    if not enabled(quiet):
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
