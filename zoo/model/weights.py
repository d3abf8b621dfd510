"""Reading and writing weight files, safely and without copies.

- ``model.safetensors`` and sharded ``model-0000k-of-0000n.safetensors`` + index: the header is parsed
  and checked against the file size before anything is built, then the file is memory-mapped
  (``MAP_PRIVATE``) and each tensor is a view into the mapping: no copy, no extra resident memory.
- legacy ``pytorch_model.bin`` (single or sharded): read by :mod:`zoo.model.torchbin`, never running
  its pickle.

Every shard an index lists is opened and checked before the first tensor is used: a missing or
truncated shard raises; it never turns into garbage weights.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import atomic
from ..errors import CorruptCheckpointError, StoreFullError, WeightsNotFoundError
from .files import entry_problem, first_line as _first_line, open_regular as _open_regular, short as _short
from .torchbin import load_bin

if TYPE_CHECKING:
    import torch

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FORMATS = (SAFE_SINGLE, SAFE_INDEX, BIN_SINGLE, BIN_INDEX)
FOREIGN_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.onnx", "coreml", "onnx", "rust_model.ot")
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors\Z")

# safetensors dtype -> (torch dtype name, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
MAX_HEADER = 100 * 1024 * 1024
# zoo.save starts the data area, and every tensor whose size allows it, on a 64-byte boundary. A mapped
# tensor that does not can take another CPU kernel path (a dot product for a Linear with one output) and
# round differently from the same values in aligned memory; aligned files give the same outputs mapped
# (zoo, transformers) or copied.
ALIGN = 64
MAX_JSON_DEPTH = 64  # real configs nest a few levels; far deeper JSON only breaks the code that walks it


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` for files zoo did not write: nesting deeper than :data:`MAX_JSON_DEPTH` is a
    ``ValueError`` (json's own ``RecursionError`` and every recursive walker after it are avoided)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"the JSON is nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    level = [data]
    for _ in range(MAX_JSON_DEPTH):
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return data
    raise ValueError(f"the JSON is nested too deeply (more than {MAX_JSON_DEPTH} levels)")


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
        with _open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
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
        header = loads_json(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"the header is not valid JSON ({_first_line(exc)})") from exc
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, f"__metadata__ must map strings to strings, got {_short(metadata)}")
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(entry["shape"])
            start, end = entry["data_offsets"]
            if not all(_is_count(x) for x in (*shape, start, end)):
                raise ValueError("shape and data_offsets must hold non-negative integers")
            itemsize = DTYPES[dtype][1]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and entry["dtype"] not in DTYPES:
                raise _corrupt(path, f"tensor {name!r} has dtype {entry['dtype']!r}, which zoo does not read "
                               f"(it reads {', '.join(DTYPES)})") from exc
            raise _corrupt(path, f"tensor {name!r} has a malformed header entry {_short(entry)} (dtype: one of "
                           f"{', '.join(DTYPES)}; shape and data_offsets: lists of non-negative integers)") from exc
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
    if base + position != size:  # as the safetensors library: the tensors cover the data area exactly
        raise _corrupt(path, f"the tensors end at byte {base + position} but the file has {size} bytes: "
                       f"{size - base - position} bytes after the last tensor belong to no tensor")
    return SafetensorsHeader(path, tensors, metadata)


def _is_count(value: object) -> bool:
    """A JSON non-negative integer (``true`` and ``32.5`` are not, though Python reads them as numbers)."""
    return type(value) is int and value >= 0


def _corrupt(path: Path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is not a valid safetensors file: {problem}. The file is damaged or incomplete; "
        "download or save the checkpoint again (zoo verify finds damaged files in the cache)"
    )


MAX_NAME_BYTES = 255  # the longest file name Linux and macOS file systems take


def _safe_shard_name(index_path: Path, name: object) -> str:
    """A shard name an index may give: a plain file name in the index's folder (no NUL, no ``/`` or ``\\``,
    not ``.``/``..``/hidden, at most 255 bytes), so that no path outside the folder is ever opened."""
    problem = (
        "it is not a string" if not isinstance(name, str)
        else "it is empty" if not name
        else "it holds a NUL character" if "\0" in name
        else "it holds a path separator (shards sit beside the index)" if "/" in name or "\\" in name
        else "it is a hidden or relative name" if name.startswith(".")
        else f"it is {len(name.encode('utf-8', 'surrogateescape'))} bytes long; file names hold at most "
             f"{MAX_NAME_BYTES}" if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
        else ""
    )
    if problem:
        raise CorruptCheckpointError(
            f"{index_path} names shard {_short(name)}, which is not a plain file name ({problem}). The index "
            "is damaged or was not written by save_pretrained or zoo.save; download or save the checkpoint again"
        )
    return name


def read_index(index_path: Path) -> dict[str, str]:
    """``weight_map`` of a sharded checkpoint's index: tensor name -> shard file name."""
    try:
        with _open_regular(index_path) as f:
            data = loads_json(f.read())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"{index_path} is not a valid shard index ({_first_line(exc)}); it must hold a 'weight_map' object. "
            "Re-save the checkpoint"
        ) from exc
    return {str(k): _safe_shard_name(index_path, v) for k, v in weight_map.items()}


def missing_shards(index_path: Path, present: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(every shard the index names, those ``present`` says are not there): the one completeness check
    of a sharded checkpoint, used by loads (files in a folder) and by the store (files of a version)."""
    shards = sorted(set(read_index(index_path).values()))
    return shards, [s for s in shards if not present(s)]


def find_weights(directory: Path) -> Path:
    """The weights file zoo will load: safetensors first, then a legacy ``.bin``."""
    for name in WEIGHT_FORMATS:
        if (directory / name).is_file():
            return directory / name
    unusable = [problem for name in WEIGHT_FORMATS if (problem := entry_problem(directory / name))]
    if unusable:
        raise WeightsNotFoundError(
            f"no readable weights in {directory}: {'; '.join(unusable)}. zoo reads weights from regular files "
            "(or symlinks to them): replace the entry with the weights file, or download or save the checkpoint again"
        )
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
        shards, missing = missing_shards(path, lambda s: (directory / s).is_file())
        if missing:
            raise CorruptCheckpointError(
                f"{path} lists {len(shards)} shards but {len(missing)} are missing: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}{_problems(directory, missing)}. The checkpoint is incomplete; "
                "download or save it again"
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
        shards, missing = missing_shards(path, lambda s: (directory / s).is_file())
        if missing:
            raise CorruptCheckpointError(
                f"{path} lists {len(shards)} shards but {', '.join(missing[:5])} are missing"
                f"{_problems(directory, missing)}; the checkpoint is incomplete: download or save it again"
            )
        return WeightFiles("bin", tuple(directory / s for s in shards))
    return WeightFiles("bin", (path,))


def _problems(directory: Path, names: list[str]) -> str:
    problems = [p for name in names[:5] if (p := entry_problem(directory / name))]
    return f" ({'; '.join(problems)})" if problems else ""


def load_state_dict(weights: WeightFiles) -> dict[str, "torch.Tensor"]:
    """All tensors, as zero-copy views of the mapped files (safetensors) or mmap'd unpickled tensors."""
    state: dict[str, Any] = {}
    if weights.format == "safetensors":
        for header in weights.headers:
            state.update(_map_safetensors(header))
    else:
        for path in weights.files:
            state.update(load_bin(path))
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


# -- writing ---------------------------------------------------------------------------------------

def parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), re.IGNORECASE)
    if not match:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(f"size {size!r} is not like 5GB, 500MB or 1048576")
    unit = (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(float(match.group(1)) * scale)


def write_safetensors(state: dict[str, "torch.Tensor"], directory: Path, max_shard_size: int) -> list[str]:
    """Write ``state`` as one file or as shards plus an index. Each file goes to a unique temporary name
    and is renamed into place; the index last. Returns the file names written."""
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
        tmp = atomic.temp_beside(directory / name)
        try:
            _write_aligned(shard, tmp)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)  # nothing partial is left behind
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFullError(
                    f"no space left on the device of {directory} while writing {name}; nothing partial was "
                    "kept. Free space (zoo gc, zoo rm NAME@vN) or save somewhere larger"
                ) from None
            raise
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


_CODES = {torch_name: code for code, (torch_name, _) in DTYPES.items()}


def _write_aligned(tensors: dict[str, "torch.Tensor"], path: Path) -> None:
    """A safetensors file (the format the safetensors library reads and writes) laid out for alignment:
    the header is padded with spaces so that the data area starts on a multiple of ``ALIGN``, and
    tensors whose byte size is a multiple of ``ALIGN`` come first, so each of them starts aligned."""
    import torch

    order = sorted(tensors, key=lambda k: (tensors[k].numel() * tensors[k].element_size()) % ALIGN != 0)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in order:
        t = tensors[name]
        code = _CODES.get(str(t.dtype).removeprefix("torch."))
        if code is None:
            raise ValueError(f"cannot save {name!r}: dtype {t.dtype} has no safetensors code")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % ALIGN)
    with open(path, "xb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            t = tensors[name].detach().contiguous().cpu().reshape(-1)  # 1-d first: a 0-dim tensor has no byte view
            if t.numel():
                f.write(memoryview(t.view(torch.uint8).numpy()))


def write_json_atomic(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
