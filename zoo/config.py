"""Reading a saved directory's ``config.json`` into a :class:`ModelConfig`, without importing torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from .compat import VersionAdvice, check_transformers_version, parse_version
from .errors import CheckpointNotFoundError, ConfigError

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class ModelConfig:
    """What ``zoo.load_config`` returns: the checkpoint's config.json, parsed and checked.

    ``config`` builds the architecture plugin's own config object (e.g. ``transformers.BertConfig``)
    on first use; everything else is read without importing torch or transformers.
    """

    path: Path | None  # the directory, or None for a config built in memory
    raw: dict[str, Any]
    model_type: str
    architectures: tuple[str, ...]
    transformers_version: Version | None
    version_advice: VersionAdvice
    plugin: str
    architecture: Any  # zoo.Architecture
    _config: list = field(default_factory=list, repr=False, compare=False)

    @property
    def config(self) -> Any:
        """The plugin's config object, built from ``raw`` on first use."""
        if not self._config:
            from .spec import resolve_class

            cls = resolve_class(self.architecture.config_class, self.plugin)
            try:
                self._config.append(cls.from_dict(dict(self.raw)))
            except Exception as exc:
                raise ConfigError(
                    f"{self.where}: {cls.__name__} rejected this config ({type(exc).__name__}: {exc}); "
                    "fix the value it names in config.json"
                ) from exc
        return self._config[0]

    @property
    def where(self) -> str:
        return str(self.path / CONFIG_NAME) if self.path else "config"


def read_config_file(directory: Path) -> dict[str, Any]:
    """``config.json`` of a saved directory as a dict, with errors that say what to do."""
    if not directory.exists():
        raise CheckpointNotFoundError(
            f"no such directory: {str(directory)!r}. Pass the folder that save_pretrained or zoo.save wrote "
            "(it holds config.json and the weights), or a name from the cache (zoo ls)"
        )
    if not directory.is_dir():
        raise CheckpointNotFoundError(
            f"{str(directory)!r} is a file; pass the directory that holds config.json and the weights"
        )
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{directory} has no config.json, so zoo cannot tell which architecture it holds. "
            "Save the model with zoo.save or save_pretrained, which write config.json next to the weights"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc}); it is not a config.json") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Fix the file or save the model again"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a JSON {type(raw).__name__}, expected an object {{...}}")
    return raw


def parse_config(raw: dict[str, Any], registry: Any, path: Path | None = None) -> ModelConfig:
    """Pick the plugin for ``raw['model_type']`` and check ``transformers_version``."""
    where = str(path / CONFIG_NAME) if path else "config"
    model_type = raw.get("model_type")
    if not model_type or not isinstance(model_type, str):
        hint = f" (its architectures say {raw['architectures']})" if raw.get("architectures") else ""
        raise ConfigError(
            f"{where} has no 'model_type'{hint}, so zoo cannot pick an architecture. Add the field, e.g. "
            f"\"model_type\": \"bert\"; installed architectures: {', '.join(registry.architectures()) or 'none'}"
        )
    architectures = raw.get("architectures") or ()
    if not isinstance(architectures, (list, tuple)) or not all(isinstance(a, str) for a in architectures):
        raise ConfigError(f"{where}: 'architectures' must be a list of class names, got {architectures!r}")
    saved = raw.get("transformers_version")
    registered = registry.architecture(model_type, transformers_version=saved if isinstance(saved, str) else None)
    version = parse_version(saved)
    return ModelConfig(
        path=path,
        raw=raw,
        model_type=model_type,
        architectures=tuple(architectures),
        transformers_version=version,
        version_advice=check_transformers_version(version),
        plugin=registered.plugin,
        architecture=registered.item,
    )
