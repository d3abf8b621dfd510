"""Advice from ``transformers_version`` and ``model_type``: what transformers says nowhere.

transformers writes ``transformers_version`` into every ``config.json`` and never reads it back.
zoo compares it with the installed transformers and says what to do.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version

# model_types served by plugins that are not installed by default: model_type -> how to get it.
KNOWN_PLUGINS: dict[str, str] = {
    "tinynet": "the example plugin zoo-tinynet: pip install -e examples/zoo-tinynet",
}


@functools.lru_cache(maxsize=1)
def installed_transformers() -> Version | None:
    """The installed transformers version, read from package metadata (no import of transformers).
    Read once per process: a running process keeps the transformers it imported."""
    try:
        return Version(metadata.version("transformers"))
    except (metadata.PackageNotFoundError, InvalidVersion):
        return None


def parse_version(text: object) -> Version | None:
    if not isinstance(text, str):
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class VersionAdvice:
    """How a checkpoint's ``transformers_version`` relates to the installed one."""

    saved: Version | None
    installed: Version | None
    status: str  # "ok", "newer", "older-major" or "unknown"
    message: str


def check_transformers_version(saved: Version | None, installed: Version | None = None) -> VersionAdvice:
    installed = installed if installed is not None else installed_transformers()
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
            "defaults may have changed between major versions; compare outputs once, then re-save with "
            "zoo.save to record the new version",
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


def unknown_model_type_advice(model_type: str, installed: list[str], saved_version: str | None) -> str:
    lines = [f"no installed zoo plugin handles model_type {model_type!r}."]
    lines.append(f"Installed architectures: {', '.join(installed) or 'none'}.")
    close = difflib.get_close_matches(model_type, installed, n=3, cutoff=0.6)
    if close:
        lines.append(f"Did you mean: {', '.join(close)}?")
    if model_type in KNOWN_PLUGINS:
        lines.append(f"It is provided by {KNOWN_PLUGINS[model_type]}.")
    knows = transformers_knows(model_type)
    if knows:
        lines.append(f"transformers {installed_transformers()} knows {model_type!r}, but no zoo plugin registers it: "
                     "write a small plugin (README, 'Writing a plugin').")
    advice = check_transformers_version(parse_version(saved_version))
    if advice.status == "newer" or (knows is False and advice.saved is not None):
        lines.append(advice.message if advice.status == "newer" else
                     f"The checkpoint was saved with transformers {advice.saved}; the installed "
                     f"{advice.installed} does not know {model_type!r} either.")
    return " ".join(lines)
