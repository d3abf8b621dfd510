"""Reading a saved directory's ``config.json`` into a :class:`ModelConfig`, without importing torch."""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from packaging.version import Version

from .compat import VersionAdvice, check_transformers_version, parse_version, unknown_model_type_advice
from ..errors import CheckpointNotFoundError, ConfigError, UnknownArchitectureError, ZooError
from .files import entry_problem
from .weights import loads_json

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class ModelConfig:
    """What ``zoo.load_config`` returns: the checkpoint's config.json, parsed and checked.

    ``config`` builds the architecture plugin's own config object (e.g. ``transformers.BertConfig``)
    on first use; everything else is read without importing torch or transformers. A config made from
    the caller's own object keeps it: ``dataclasses.replace(cfg, _config=obj)``.
    """

    path: Path | None  # the directory, or None for a config built in memory
    raw: dict[str, Any]
    model_type: str
    architectures: tuple[str, ...]
    transformers_version: Version | None
    version_advice: VersionAdvice
    plugin: str
    architecture: Any  # zoo.Architecture
    # The plugin's config object: given at construction, or built from ``raw`` by ``config`` on first
    # use and kept (set once; the other fields never change).
    _config: Any = field(default=None, repr=False, compare=False)

    @property
    def config(self) -> Any:
        """The plugin's config object, built from ``raw`` on first use."""
        if self._config is None:
            from ..plugins.spec import resolve_class

            cls = resolve_class(self.architecture.config_class, self.plugin)
            try:
                built = cls.from_dict(dict(self.raw))
            except Exception as exc:
                name = getattr(cls, "__name__", None) or str(cls)  # a plugin's config_class may be an object
                raise ConfigError(
                    f"{self.where}: {name} rejected this config ({type(exc).__name__}: {exc}); "
                    "fix the value it names in config.json"
                ) from exc
            object.__setattr__(self, "_config", built)  # a cache: frozen for callers, set once here
        return self._config

    @property
    def where(self) -> str:
        return str(self.path / CONFIG_NAME) if self.path else "config"

    @contextmanager
    def building(self, cls: type) -> Iterator[None]:
        """Wrap the plugin's ``cls(self.config)``: a value the model cannot be built from (an unknown
        activation, a size it divides by zero, ...) becomes a :class:`ConfigError` naming config.json."""
        try:
            yield
        except ZooError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, RuntimeError) as exc:
            fields = _fields_holding(self.raw, exc.args[0]) if isinstance(exc, KeyError) and exc.args else []
            named = (f": {', '.join(f'{k}={v!r}' for k, v in fields)} is not a value {cls.__name__} knows"
                     if fields else f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            raise ConfigError(
                f"{self.where}: {cls.__name__} cannot be built from this config{named}. Fix the value in "
                "config.json (compare with the architecture's documented defaults) or save the model again"
            ) from exc


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
    problem = entry_problem(path)
    if problem:
        raise ConfigError(f"{path}: {problem}. Replace it with the checkpoint's config.json or save the model again")
    if not path.is_file():
        raise ConfigError(
            f"{directory} has no config.json, so zoo cannot tell which architecture it holds. "
            "Save the model with zoo.save or save_pretrained, which write config.json next to the weights"
        )
    try:
        raw = loads_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc}); it is not a config.json") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Fix the file or save the model again"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}; a model config is a flat object with a few nested ones. "
                          "Fix the file or save the model again") from exc
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
    check_sizes(raw, where)
    saved = raw.get("transformers_version")  # as recorded: the advice explains one that is not a version
    try:
        registered = registry.architecture(model_type)
    except UnknownArchitectureError as exc:
        advice = unknown_model_type_advice(model_type, saved)
        if not advice:
            raise
        raise UnknownArchitectureError(f"{exc} {advice}") from None
    return ModelConfig(
        path=path,
        raw=raw,
        model_type=model_type,
        architectures=tuple(architectures),
        transformers_version=parse_version(saved),
        version_advice=check_transformers_version(saved),
        plugin=registered.plugin,
        architecture=registered.item,
    )


# Keys that hold sizes or counts in model configs of any architecture (hidden_size, vocab_size,
# num_attention_heads, n_layer, ...): none can be negative. Zero is fine for most (chunk_size_feed_forward,
# type_vocab_size, no_repeat_ngram_size), but a model cannot have zero attention heads or zero width.
_SIZE_KEY = re.compile(r"(?:^|_)sizes?$|^(?:num|n)_|^max_position_embeddings$")
_NONZERO_KEY = re.compile(r"(?:^|_)heads?$|^(?:hidden_size|d_model|n_embd)$")


# Keys that give a number of layers (num_hidden_layers, n_layer, encoder_layers, Swin's depths): each layer
# is built as modules, which takes milliseconds each even without memory (on the meta device), so a count
# far past any published model's (the largest have under 200) would keep a build busy for hours.
_LAYERS_KEY = re.compile(r"(?:^|_)layers?$|^depths$")
MAX_LAYERS = 1024


def max_layers() -> int:
    """The most layers zoo builds: ``ZOO_MAX_LAYERS``, else :data:`MAX_LAYERS`."""
    value = os.environ.get("ZOO_MAX_LAYERS", "").strip()
    return int(value) if value.isdigit() else MAX_LAYERS


def check_sizes(raw: dict[str, Any], where: str) -> None:
    """Refuse sizes no model can have (a negative size or count, zero heads or width) with the field's
    name, before a plugin divides by them or allocates them, and a number of layers past
    :func:`max_layers`. Looks into nested configs (text_config, ...)."""
    pending: list[tuple[str, dict[str, Any]]] = [("", raw)]
    while pending:
        prefix, mapping = pending.pop()
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and prefix.count(".") < 4:
                pending.append((name + ".", value))
                continue
            if isinstance(key, str) and _LAYERS_KEY.search(key):
                _check_layers(name, value, where)
            if not isinstance(key, str) or not _SIZE_KEY.search(key) and not _NONZERO_KEY.search(key):
                continue
            numbers = value if isinstance(value, list) else [value]
            for number in numbers:
                if not isinstance(number, int) or isinstance(number, bool):
                    continue
                # -1 is the usual "none / unlimited" sentinel of a count (ViLT's num_images: -1); never for a
                # size, a number of layers, or a count that may not be zero
                sentinel = number == -1 and not _NONZERO_KEY.search(key) and not re.search(r"_sizes?$|layers", key)
                if (number < 0 and not sentinel) or (number == 0 and _NONZERO_KEY.search(key)):
                    need = "a positive integer" if _NONZERO_KEY.search(key) else "a non-negative integer"
                    raise ConfigError(
                        f"{where}: {name} is {value!r}, but it must be {need}. Fix the value in config.json "
                        "(compare with the architecture's documented defaults) or save the model again"
                    )


def _check_layers(name: str, value: Any, where: str) -> None:
    counts = [n for n in (value if isinstance(value, list) else [value])
              if isinstance(n, int) and not isinstance(n, bool) and n > 0]
    # Swin's depths are the layers of each stage; other lists name layers by index (cross_attention_layers)
    total = sum(counts) if name.rpartition(".")[2] == "depths" else max(counts, default=0)
    limit = max_layers()
    if total > limit:
        raise ConfigError(
            f"{where}: {name} is {_short_value(value)}, more layers than zoo builds (at most {limit}; the largest "
            "published models have under 200). Fix the value in config.json (it is likely a typo), or set "
            "ZOO_MAX_LAYERS to a larger limit if the model really has that many"
        )


def _short_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _fields_holding(raw: dict[str, Any], value: object) -> list[tuple[str, Any]]:
    """The top-level fields of ``raw`` whose value is ``value`` (to name the field behind a KeyError)."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return []
    return [(k, v) for k, v in raw.items() if type(v) is type(value) and v == value][:3]
