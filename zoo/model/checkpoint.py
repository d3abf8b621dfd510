"""Whether a checkpoint folder is complete and valid: the one check used by loads, imports, drop folders
and pulls. It reads ``config.json``, index files and the headers of weight files (a few KB each), never
tensor data, and never imports torch.

A folder passes :func:`check_folder` when

- it exists and is a directory;
- ``config.json`` is a regular file holding a JSON object with a ``model_type``, and no size or count in
  it is impossible or past what zoo builds (:func:`zoo.model.config.check_sizes`);
- it holds weights zoo reads (:func:`zoo.model.weights.find_weights`: ``model.safetensors``, a safetensors
  index, ``pytorch_model.bin`` or its index), and they are whole:

  * every safetensors file in the folder (shards, adapters, files in subfolders) has a header that
    parses and whose tensors tile the file exactly (offsets within the file size, no gap, no overlap);
  * an index names only safe shard file names (no NUL, no ``/`` or ``..``, no absolute path, at most
    255 bytes), every shard it names is present, and every tensor it places is in the shard it names;
  * a legacy ``.bin`` (or each shard of its index) is a torch zip archive whose storage records match
    what its pickle says (read without unpickling), as loads accept them.

Anything else raises one of zoo's own errors (a :class:`~zoo.errors.CheckpointError`) that names the file
and says how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CONFIG_NAME, check_sizes, read_config_file
from ..errors import ConfigError
from .torchbin import check_bin
from .weights import WeightFiles, open_weights, read_safetensors_header

__all__ = ["CheckedFolder", "check_folder", "open_folder"]


@dataclass(frozen=True)
class CheckedFolder:
    """What :func:`open_folder` found: the folder, its config as a dict, and its checked weight files."""

    path: Path
    config: dict[str, Any]
    weights: WeightFiles


def check_folder(path: str | os.PathLike[str]) -> None:
    """Raise a :class:`~zoo.errors.CheckpointError` naming the file and the fix unless the folder at
    ``path`` is a complete, valid checkpoint (see the module's docstring); return None when it is.

    ``CheckpointNotFoundError``: no such folder (or a file); ``ConfigError``: config.json missing, not
    JSON, not a model config, or asking for sizes zoo refuses; ``WeightsNotFoundError``: no weights;
    ``CorruptCheckpointError`` / ``UnsafeCheckpointError``: a weights file or index that is damaged,
    incomplete or unsafe."""
    open_folder(path)


def open_folder(path: str | os.PathLike[str], config: dict[str, Any] | None = None) -> CheckedFolder:
    """:func:`check_folder`, returning what it read. ``config``: config.json already read by the caller
    (a load has read it to pick the plugin); it is checked, not read again."""
    directory = Path(path).expanduser()
    raw = read_config_file(directory) if config is None else config  # no folder / no config.json: said here
    where = str(directory / CONFIG_NAME)
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError(
            f"{where} has no 'model_type', so zoo cannot tell which architecture it holds. Add the field "
            "(e.g. \"model_type\": \"bert\") or save the model again with zoo.save or save_pretrained"
        )
    check_sizes(raw, where)
    files = open_weights(directory)  # the weights a load uses: index, shards, headers, placement
    if files.format == "bin":
        for file in files.files:
            check_bin(file)
    checked = {h.path.name for h in files.headers}
    for extra in _other_safetensors(directory):
        if extra.relative_to(directory).as_posix() not in checked:
            read_safetensors_header(extra)
    return CheckedFolder(directory, raw, files)


def _other_safetensors(directory: Path) -> list[Path]:
    """Every ``*.safetensors`` file under ``directory`` (hidden entries skipped): adapters, sub-models."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".safetensors") and not name.startswith("."):
                found.append(Path(root) / name)
    return found

