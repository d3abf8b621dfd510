"""Advice from ``transformers_version`` and ``model_type``: what transformers says nowhere.

transformers writes ``transformers_version`` into every ``config.json`` and never reads it back.
zoo compares it with the installed transformers and says what to do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version

@functools.lru_cache(maxsize=1)
def installed_transformers() -> Version | None:
    """The installed transformers version, read from package metadata (no import of transformers).
    Read once per process: a running process keeps the transformers it imported."""
    import sys

    loaded = sys.modules.get("transformers")  # already imported (every load): no metadata scan needed
    try:
        return Version(loaded.__version__ if loaded is not None else metadata.version("transformers"))
    except (metadata.PackageNotFoundError, InvalidVersion, AttributeError):
        return None


# The longest transformers_version zoo reads. Real ones are short ("4.57.1", "5.0.0.dev0"); a longer
# text is not a version, and parsing it could cost time and memory (a 5000-digit number).
MAX_VERSION_LENGTH = 64


def parse_version(text: object) -> Version | None:
    """``text`` as a version, or None when it is missing, not a string, too long or not a version."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_LENGTH:
        return None
    try:
        return Version(text)
    except (InvalidVersion, ValueError):  # ValueError: a number past Python's int digit limit
        return None


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut to a readable length."""
    return repr(text) if len(text) <= MAX_VERSION_LENGTH else f"{text[:20]!r}... ({len(text)} characters)"


@dataclass(frozen=True)
class VersionAdvice:
    """How a checkpoint's ``transformers_version`` relates to the installed one."""

    saved: Version | None
    installed: Version | None
    status: str  # "ok", "newer" (warned on load), "older-major" or "unknown" (recorded only)
    message: str


def check_transformers_version(saved: object, installed: Version | None = None) -> VersionAdvice:
    """Compare a checkpoint's ``transformers_version`` (parsed, or the value from ``config.json`` as
    recorded, whatever its JSON type) with the installed transformers. Pass the recorded value where
    there is one: a value that is not a version number is then named in the message.

    Only ``"newer"`` is worth a warning on load: the checkpoint may use options the installed
    transformers does not know. ``"older-major"`` (most of the hub was saved by transformers 4.x) and
    ``"unknown"`` are recorded in the advice, which ``zoo info`` shows, and are not warned about.
    """
    installed = installed if installed is not None else installed_transformers()
    if saved is not None and not isinstance(saved, Version):
        text = saved
        saved = parse_version(text)
        if saved is None:
            shown = _shown(text) if isinstance(text, str) else f"a JSON {type(text).__name__}"
            return VersionAdvice(
                None, installed, "unknown",
                f"config.json records transformers_version {shown}, which is not a version number; "
                "zoo ignores it. Save the model again to record the version that wrote it",
            )
    if saved is None:
        return VersionAdvice(saved, installed, "unknown", "config.json records no transformers_version")
    if installed is None:
        return VersionAdvice(saved, installed, "unknown",
                             f"saved with transformers {saved}; transformers is not installed")
    if saved.release > installed.release:
        return VersionAdvice(
            saved, installed, "newer",
            f"saved with transformers {saved}, newer than the installed {installed}: it may use options this "
            f"version does not know. Upgrade with: pip install -U 'transformers>={saved.base_version}'",
        )
    if saved.major < installed.major:
        return VersionAdvice(
            saved, installed, "older-major",
            f"saved with transformers {saved}, an older major version than the installed {installed}: "
            "transformers reads such checkpoints, but some defaults changed between major versions; if the "
            "outputs matter, compare them once with the old version, then re-save with zoo.save to record "
            "the new version",
        )
    return VersionAdvice(saved, installed, "ok", f"saved with transformers {saved}; installed {installed}")


def transformers_knows(model_type: str) -> bool | None:
    """Whether the installed transformers has a config for ``model_type`` (None: not installed)."""
    if installed_transformers() is None:
        return None
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        return None
    return model_type in CONFIG_MAPPING_NAMES


def unknown_model_type_advice(model_type: str, saved: object) -> str:
    """What transformers has to say about a ``model_type`` that no installed zoo plugin handles (the
    registry's error says which plugins there are): whether the installed transformers knows it, and
    whether the checkpoint (``saved``: its ``transformers_version`` as recorded) comes from a newer
    transformers. Empty when there is nothing to add."""
    lines = []
    knows = transformers_knows(model_type)
    if knows:
        lines.append(f"transformers {installed_transformers()} knows {model_type!r}, but no zoo plugin registers it: "
                     "write a small plugin (README, 'Writing a plugin').")
    advice = check_transformers_version(saved)
    if advice.status == "newer" or (knows is False and advice.saved is not None):
        lines.append(advice.message if advice.status == "newer" else
                     f"The checkpoint was saved with transformers {advice.saved}; the installed "
                     f"{advice.installed} does not know {model_type!r} either.")
    return " ".join(lines)
