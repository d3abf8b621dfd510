"""Legacy ``pytorch_model.bin`` files, read without running their pickle.

``torch.load(weights_only=True, mmap=True)`` reads them; before it does, :func:`check_bin` reads the zip
archive's records and the pickle's opcodes (never unpickling) so that a mapped load never reads past a
record, and a pickle that asks to run code is refused with :class:`~zoo.errors.UnsafeCheckpointError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptCheckpointError, UnsafeCheckpointError
from .files import first_line as _first_line, open_regular as _open_regular, short as _short

if TYPE_CHECKING:
    import torch


def load_bin(path: Path) -> dict[str, "torch.Tensor"]:
    import pickle
    import zipfile

    import torch

    mmap = check_bin(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or ("mmap" not in str(exc) and "zipfile" not in str(exc)):
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
    others = [(k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        key, value = others[0]
        raise CorruptCheckpointError(
            f"{path} is not a state dict of tensors: {len(others)} entries hold other values (first: {key!r} "
            f"is a {type(value).__name__}, {_short(value, 60)}). A weights file maps names to tensors only; "
            "save the model's state_dict() (zoo.save or save_pretrained), not other objects"
        )
    return state


TAR_MAGIC_OFFSET = 257  # POSIX tar: "ustar" at byte 257 of the first header


def check_bin(path: Path) -> bool:
    """Check a ``.bin`` before torch reads it; True when it may be memory-mapped.

    A zip-format file (torch >= 1.6) is checked record by record: every storage its pickle names must
    be a stored (uncompressed) record of exactly the bytes the pickle says, or a mapped load would read
    whatever follows the record. Other formats are read without mapping; the legacy tar format, which
    torch reads only by running its pickle, is refused with the way to convert it.
    """
    import zipfile

    try:
        with _open_regular(path) as f:
            head = f.read(TAR_MAGIC_OFFSET + 5)
            if head[TAR_MAGIC_OFFSET:] == b"ustar":
                raise UnsafeCheckpointError(
                    f"{path} is a PyTorch checkpoint in the legacy tar format of early torch releases, which "
                    "torch can read only by unpickling it with weights_only=False, and zoo never does that. "
                    "Convert it once, in an environment where you trust the file: load it with "
                    "torch.load(path, weights_only=False) and save the state dict with "
                    "safetensors.torch.save_file (or model.save_pretrained / zoo.save)"
                )
            if not zipfile.is_zipfile(f):
                if head.startswith(b"PK"):
                    raise _bad_bin(path, "it begins as a zip archive but its central directory (written last) "
                                         "cannot be read: the file is truncated")
                if not head.startswith(b"\x80"):
                    raise _bad_bin(path, "it is neither a zip archive (torch >= 1.6) nor a pickle (older torch)")
                return False  # the legacy pickle format (torch < 1.6): torch reads it without a mapping
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                compressed = _check_zip_records(path, archive)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"weights file {path} is missing; re-download or re-save the checkpoint") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise CorruptCheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
            "it is damaged or incomplete: download or save it again"
        ) from exc
    return not compressed


def _check_zip_records(path: Path, archive: Any) -> bool:
    """Compare each storage record of a torch zip checkpoint with the size its pickle gives it.
    Returns True when some record is compressed (torch reads those, but not through a mapping)."""
    import zipfile

    infos = archive.infolist()
    if not infos:
        raise _bad_bin(path, "the zip archive is empty")
    prefix = infos[0].filename.split("/", 1)[0]  # torch's reader takes the archive name from the first entry
    records = {i.filename: i for i in infos}
    pickled = records.get(f"{prefix}/data.pkl")
    if pickled is None:
        raise _bad_bin(path, f"it has no {prefix}/data.pkl record")
    storages = _pickled_storages(path, archive.read(pickled))
    for key, nbytes, kind in storages:
        name = f"{prefix}/data/{key}"
        info = records.get(name)
        if info is None:
            raise _bad_bin(path, f"its pickle uses storage {key!r} ({nbytes} bytes of {kind}) but the record {name} is missing")
        if info.file_size != nbytes:
            raise _bad_bin(path, f"record {name} holds {info.file_size} bytes but its tensors need {nbytes} "
                                 f"({kind}); the record is {'truncated' if info.file_size < nbytes else 'oversized'}")
    return any(i.compress_type != zipfile.ZIP_STORED for i in infos if i.filename.startswith(f"{prefix}/data/"))


def _bad_bin(path: Path, problem: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is not a valid PyTorch checkpoint: {problem}. The file is damaged or incomplete; "
        "download or save the checkpoint again"
    )


_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}


def _pickled_storages(path: Path, data: bytes) -> list[tuple[str, int, str]]:
    """(key, bytes, storage type) of every storage a torch ``data.pkl`` refers to, read by walking the
    pickle's opcodes on a model of its stack: nothing is unpickled, no class is imported."""
    import pickletools

    stack: list[Any] = []
    marks: list[int] = []  # stack heights at each MARK
    memo: dict[int, Any] = {}
    found: list[tuple[str, int, str]] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in _PUT:
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in _GET:
                stack.append(memo[arg])
            elif name == "MARK":
                marks.append(len(stack))
            elif name == "TUPLE":
                at = marks.pop()
                items = tuple(stack[at:])
                del stack[at:]
                stack.append(items)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                if len(items) != n:
                    raise IndexError("stack underflow")
                stack.append(items)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "GLOBAL":
                stack.append(("global", arg))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(("global", f"{module} {attr}"))
            elif name == "BINPERSID":
                pid = stack.pop()
                if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
                    _, kind, key, _location, numel = pid
                    itemsize = _storage_itemsize(kind)
                    if itemsize and isinstance(key, str) and type(numel) is int:
                        found.append((key, numel * itemsize, kind[1].split(" ")[-1]))
                stack.append(None)
            else:  # any other opcode: pop what it takes, push placeholders (literals keep their value)
                before = op.stack_before
                if pickletools.markobject in before:
                    del stack[marks.pop():]
                    below = before.index(pickletools.markobject)
                else:
                    below = len(before)
                if below:
                    if len(stack) < below:
                        raise IndexError("stack underflow")
                    del stack[-below:]
                literal = not before and len(op.stack_after) == 1 and isinstance(arg, (int, str))
                stack.extend([arg] if literal else [None] * len(op.stack_after))
    except (ValueError, IndexError, KeyError) as exc:
        raise _bad_bin(path, f"its data.pkl is not a valid pickle ({_first_line(exc)})") from exc
    return found


# bytes per element of the storage classes torch pickles (torch/__init__.py): a table, so that checking
# a file neither imports a class named by it nor touches the deprecated TypedStorage properties
STORAGE_ITEMSIZE = {
    "UntypedStorage": 1, "ByteStorage": 1, "CharStorage": 1, "BoolStorage": 1, "ShortStorage": 2,
    "HalfStorage": 2, "BFloat16Storage": 2, "IntStorage": 4, "FloatStorage": 4, "Storage": 4, "LongStorage": 8,
    "DoubleStorage": 8, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "QUInt8Storage": 1,
    "QInt8Storage": 1, "QInt32Storage": 4, "QUInt4x2Storage": 1, "QUInt2x4Storage": 1,
}


def _storage_itemsize(kind: object) -> int | None:
    """Bytes per element of a pickled storage class such as ``torch FloatStorage``; None if unknown
    (torch's weights-only unpickler refuses those anyway)."""
    if not (isinstance(kind, tuple) and len(kind) == 2 and kind[0] == "global" and isinstance(kind[1], str)):
        return None
    module, _, attr = kind[1].partition(" ")
    return STORAGE_ITEMSIZE.get(attr) if module in ("torch", "torch.storage") else None
