"""What ``zoo info`` says about a checkpoint, read from ``config.json`` and the weight files' headers:
never tensor data, never torch (a few KB per file, milliseconds for any model size).

``describe(directory)`` checks the folder as a load would (:mod:`zoo.model.checkpoint`) and counts, per safetensors
header: tensors, parameters (elements of floating tensors, shared ones once: as stored), bytes per dtype.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import open_folder
from .compat import VersionAdvice, check_transformers_version, parse_version


@dataclass(frozen=True)
class CheckpointInfo:
    """The figures ``zoo info`` prints (``zoo info --json`` prints them as JSON)."""

    path: Path
    model_type: str
    plugin: str
    head: str
    transformers_version: str  # as recorded: a version, "not recorded" or "unreadable"
    advice: VersionAdvice
    format: str  # "safetensors" or "bin"
    tensors: int | None  # None: a legacy .bin, whose tensors only a load counts
    parameters: int | None  # elements of floating-point tensors
    dtypes: dict[str, int] = field(default_factory=dict)  # safetensors dtype -> bytes of tensor data
    files: tuple[tuple[str, int], ...] = ()  # (path in the folder, size) of every file

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "model_type": self.model_type, "plugin": self.plugin, "head": self.head,
            "transformers_version": self.transformers_version, "advice": self.advice.message,
            "format": self.format, "tensors": self.tensors, "parameters": self.parameters,
            "dtypes": self.dtypes, "files": dict(self.files),
        }


def is_parameter_dtype(dtype: str) -> bool:
    """Floating-point safetensors dtypes (F16, BF16, F32, F64, F8_*): what counts as a parameter."""
    return dtype.startswith(("F", "BF"))


def describe(directory: Path, *, registry: Any) -> CheckpointInfo:
    """The figures of the checkpoint folder ``directory`` (the CLI finds it for a cached name), from its
    headers.

    The plugin and head come from what plugins registered. A type only a fallback serves (zoo's
    transformers fallback: importing transformers imports torch, seconds) is not asked for: the fallback
    plugin is named and the head is the config's ``architectures`` (what a load would pick)."""
    from .config import parse_config, read_config_file

    raw = read_config_file(directory)
    checked = open_folder(directory, raw)
    model_type = raw["model_type"]
    registered = registry.architectures().get(model_type)
    fallbacks = [info.name for info in registry.plugins() if info.fallback and info.status == "ok"]
    if registered is None and fallbacks:
        listed = raw.get("architectures")
        plugin = f"{fallbacks[0]} (fallback)"
        head = listed[0] if isinstance(listed, list) and listed and isinstance(listed[0], str) else \
            "(the fallback's default; zoo info --load names it)"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = parse_config(raw, registry, directory)  # a registered type (or none: the error says so)
        plugin, head = cfg.plugin, cfg.architecture.head_for(None, list(cfg.architectures))
    saved = raw.get("transformers_version")
    version = parse_version(saved)
    advice = check_transformers_version(saved)
    shown = str(version) if version else ("not recorded" if saved is None else "unreadable")
    tensors = parameters = None
    dtypes: dict[str, int] = {}
    if checked.weights.headers:
        tensors = parameters = 0
        for _, info in checked.weights.tensor_infos():
            tensors += 1
            dtypes[info.dtype] = dtypes.get(info.dtype, 0) + (info.end - info.start)
            if is_parameter_dtype(info.dtype):
                parameters += info.numel
    files = tuple(
        (path.relative_to(directory).as_posix(), path.stat().st_size)
        for path in sorted(directory.rglob("*")) if path.is_file()
    )
    return CheckpointInfo(directory, model_type, plugin, head, shown, advice, checked.weights.format,
                          tensors, parameters, dict(sorted(dtypes.items())), files)


def loaded_figures(model: Any) -> dict[str, Any]:
    """The same figures counted on a loaded model (``zoo info --load``): its floating-point parameters
    and persistent buffers, each shared tensor once, as ``zoo.save`` would store them."""
    seen: set[int] = set()
    tensors = parameters = 0
    non_persistent = {
        f"{name}.{b}" if name else b
        for name, module in model.named_modules() for b in getattr(module, "_non_persistent_buffers_set", ())
    }
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name in non_persistent:
            continue
        key = id(tensor)
        if key in seen:
            continue
        seen.add(key)
        tensors += 1
        if tensor.is_floating_point():
            parameters += tensor.numel()
    return {"tensors": tensors, "parameters": parameters}
