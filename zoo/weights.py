"""Reading and writing weight files, safely and without copies.

- ``model.safetensors`` and sharded ``model-0000k-of-0000n.safetensors`` + index: the header is parsed
  and checked against the file size before anything is built, then the file is memory-mapped
  (``MAP_PRIVATE``) and each tensor is a view into the mapping: no copy, no extra resident memory.
- legacy ``pytorch_model.bin`` (single or sharded): ``torch.load(weights_only=True, mmap=True)``.
  A pickle that tries to run code is refused with :class:`~zoo.errors.UnsafeCheckpointError`.

Every shard an index lists is opened and checked before the first tensor is used: a missing or
truncated shard raises; it never turns into garbage weights.
"""

from __future__ import annotations

import json
import os
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import CorruptCheckpointError, UnsafeCheckpointError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FORMATS = (SAFE_SINGLE, SAFE_INDEX, BIN_SINGLE, BIN_INDEX)
FOREIGN_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.onnx", "coreml", "onnx", "rust_model.ot")
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

# safetensors dtype -> (torch dtype name, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse and check a safetensors header against the file's size. Reads a few KB, never the data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _corrupt(path, f"the file is {size} bytes, too short to hold a header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise _corrupt(path, f"header length {n} does not fit in a file of {size} bytes")
            raw = f.read(n)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"weights file {path} is missing; re-download or re-save the checkpoint") from exc
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"the header is not valid JSON ({exc})") from exc
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
            itemsize = DTYPES[dtype][1]
        except (KeyError, TypeError, ValueError) as exc:
            raise _corrupt(path, f"tensor {name!r} has a malformed header entry {entry!r}") from exc
        info = TensorInfo(dtype, shape, base + start, base + end)
        if end < start or (end - start) != info.numel * itemsize or any(d < 0 for d in shape):
            raise _corrupt(path, f"tensor {name!r}: shape {list(shape)} of {dtype} does not match offsets {start}..{end}")
        if start < 0:
            raise _corrupt(path, f"tensor {name!r} starts at negative offset {start}")
        if base + end > size:
            raise _corrupt(
                path, f"tensor {name!r} ends at byte {base + end} but the file has {size} bytes (truncated?)"
            )
        tensors[name] = info
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):  # tensors tile the data area: no overlap, no gap
        if start != position:
            raise _corrupt(path, f"tensor {name!r} starts at {start}, expected {position}: tensors overlap or leave gaps")
        position = end
    return SafetensorsHeader(path, tensors, metadata)


def _corrupt(path: Path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is not a valid safetensors file: {problem}. The file is damaged or incomplete; "
        "download or save the checkpoint again (zoo verify finds damaged files in the cache)"
    )


def _safe_shard_name(index_path: Path, name: object) -> str:
    if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
        raise CorruptCheckpointError(f"{index_path} names shard {name!r}, which is not a plain file name")
    return name


def read_index(index_path: Path) -> dict[str, str]:
    """``weight_map`` of a sharded checkpoint's index: tensor name -> shard file name."""
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"{index_path} is not a valid shard index ({exc}); it must hold a 'weight_map' object. "
            "Re-save the checkpoint"
        ) from exc
    return {str(k): _safe_shard_name(index_path, v) for k, v in weight_map.items()}


def find_weights(directory: Path) -> Path:
    """The weights file zoo will load: safetensors first, then a legacy ``.bin``."""
    for name in WEIGHT_FORMATS:
        if (directory / name).is_file():
            return directory / name
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    foreign = [p for p in present if any(p.startswith(f) or p.endswith(f) for f in FOREIGN_WEIGHTS)]
    hint = (
        f" It holds {', '.join(foreign)}: zoo loads PyTorch weights only; convert them with transformers "
        "(from_pretrained(..., from_tf=True) then save_pretrained) or pull the safetensors copy."
        if foreign else ""
    )
    raise WeightsNotFoundError(
        f"no weights in {directory}: expected one of {', '.join(WEIGHT_FORMATS)}; found "
        f"{', '.join(present) or 'nothing'}.{hint} If the checkpoint was not saved completely, save it again."
    )


@dataclass(frozen=True)
class WeightFiles:
    """The checked weight files of one checkpoint: every tensor's file and location."""

    format: str  # "safetensors" or "bin"
    files: tuple[Path, ...]
    headers: tuple[SafetensorsHeader, ...] = ()

    def tensor_infos(self) -> Iterator[tuple[str, TensorInfo]]:
        for header in self.headers:
            yield from header.tensors.items()


def open_weights(directory: Path) -> WeightFiles:
    """Find and check all weight files of a checkpoint without reading tensor data."""
    path = find_weights(directory)
    if path.name == SAFE_SINGLE:
        return WeightFiles("safetensors", (path,), (read_safetensors_header(path),))
    if path.name == SAFE_INDEX:
        weight_map = read_index(path)
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CorruptCheckpointError(
                f"{path} lists {len(shards)} shards but {len(missing)} are missing: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}. The checkpoint is incomplete; download or save it again"
            )
        headers = tuple(read_safetensors_header(directory / s) for s in shards)
        by_name = {h.path.name: h for h in headers}
        absent = [k for k, s in weight_map.items() if k not in by_name[s].tensors]
        if absent:
            raise CorruptCheckpointError(
                f"{path} places {len(absent)} tensors in shards that do not hold them (first: {absent[0]!r} in "
                f"{weight_map[absent[0]]}). The index and the shards come from different saves; save again"
            )
        return WeightFiles("safetensors", tuple(h.path for h in headers), headers)
    if path.name == BIN_INDEX:
        shards = sorted(set(read_index(path).values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CorruptCheckpointError(
                f"{path} lists {len(shards)} shards but {', '.join(missing[:5])} are missing; "
                "the checkpoint is incomplete: download or save it again"
            )
        return WeightFiles("bin", tuple(directory / s for s in shards))
    return WeightFiles("bin", (path,))


def load_state_dict(weights: WeightFiles) -> dict[str, "torch.Tensor"]:
    """All tensors, as zero-copy views of the mapped files (safetensors) or mmap'd unpickled tensors."""
    state: dict[str, Any] = {}
    if weights.format == "safetensors":
        for header in weights.headers:
            state.update(_map_safetensors(header))
    else:
        for path in weights.files:
            state.update(_load_bin(path))
    return state


def _map_safetensors(header: SafetensorsHeader) -> dict[str, "torch.Tensor"]:
    import torch

    size = header.path.stat().st_size
    out: dict[str, torch.Tensor] = {}
    if size == 0 or not header.tensors:
        return out
    storage = torch.UntypedStorage.from_file(str(header.path), shared=False, nbytes=size)
    buffer = torch.empty(0, dtype=torch.uint8).set_(storage)
    for name, info in header.tensors.items():
        dtype_name, itemsize = DTYPES[info.dtype]
        dtype = getattr(torch, dtype_name)
        raw = buffer[info.start:info.end]
        if info.start % itemsize:  # unaligned: views need alignment, so copy this one tensor
            raw = raw.clone()
        out[name] = raw.view(dtype).reshape(info.shape) if info.numel else torch.empty(info.shape, dtype=dtype)
    return out


def _load_bin(path: Path) -> dict[str, "torch.Tensor"]:
    import pickle
    import zipfile

    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zipfile" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # pre-1.6 format: no mmap
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it is a pickle that asks to run code or build objects other than "
            f"tensors ({str(exc).splitlines()[0]}). zoo never runs code from a checkpoint. If you trust "
            "its author, convert it to safetensors in a sandbox; otherwise delete it"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "it is damaged or incomplete: download or save it again"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CorruptCheckpointError(f"{path} does not hold a state dict (name -> tensor)")
    return state


# -- writing ---------------------------------------------------------------------------------------

def parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"size {size!r} is not like 5GB, 500MB or 1048576")
    unit = (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(float(match.group(1)) * scale)


def write_safetensors(state: dict[str, "torch.Tensor"], directory: Path, max_shard_size: int) -> list[str]:
    """Write ``state`` as one file or as shards plus an index. Each file goes to a unique temporary name
    and is renamed into place; the index last. Returns the file names written."""
    from safetensors.torch import save_file

    shards: list[dict[str, Any]] = [{}]
    sizes = [0]
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if sizes[-1] and sizes[-1] + nbytes > max_shard_size:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor
        sizes[-1] += nbytes
    names = [SAFE_SINGLE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    for name, shard in zip(names, shards):
        tmp = temp_path(directory / name)
        save_file(shard, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / name)
    written = list(names)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(sizes)},
            "weight_map": {k: n for n, shard in zip(names, shards) for k in shard},
        }
        write_json_atomic(directory / SAFE_INDEX, index)
        written.append(SAFE_INDEX)
    # Drop weights from an earlier save in this directory, so that the newest format is the only one.
    for stale in directory.iterdir():
        if stale.name not in written and (stale.name in WEIGHT_FORMATS or SHARD_PATTERN.match(stale.name)):
            stale.unlink()
    return written


def temp_path(path: Path) -> Path:
    """A name beside ``path`` that no other process or thread uses (``.name.<pid>.<random>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = temp_path(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
