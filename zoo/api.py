"""zoo's public functions: ``load``, ``load_config``, ``build``, ``save``, ``load_tokenizer``,
``architectures``. Heavy libraries are imported inside the functions that use them."""

from __future__ import annotations

import dataclasses
import errno
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ._deps import TORCH_INSTALL, require
from ._env import flag
from .model import checkpoint, conversion  # every load uses them; neither imports torch
from .model.config import CONFIG_NAME, ModelConfig, parse_config, read_config_file
from .errors import (
    ConfigError,
    ZooError,
    IncompatibleVersionError,
    InvalidArgumentError,
    VersionWarning,
    WeightsMismatchError,
    WeightsWarning,
)
from .plugins.registry import Registered, Registry, default_registry
from .plugins.spec import resolve_class

if TYPE_CHECKING:
    import torch

    from .store.writer import Store, Version

def _strict(strict: bool | None) -> bool:
    return flag("ZOO_STRICT") if strict is None else strict


def default_store() -> "Store":
    """The store at ``$ZOO_HOME`` (read now, not at import): written through its daemon when one serves
    it, else directly."""
    from .daemon.client import open_store

    return open_store()


def locate(ref: str | os.PathLike[str], *, registry: Registry | None = None, store: "Store | None" = None) -> Path:
    """The saved directory that ``ref`` names: a path, or a cached name (pulled once, or repaired, when
    it is not cached intact). See :mod:`zoo.resolve` for the forms a name may take."""
    from . import resolve
    from .errors import RemoteNotFoundError
    from .names import display_name

    path = resolve.as_path(ref)
    if path is not None:
        return path  # a path: the store is not involved
    store = store or default_store()
    target = resolve.parse(ref, registry=registry or default_registry(), store=store)
    if target.kind == "dir":
        return target.path
    try:
        version = store.ensure(target.repo, target.revision or (target.default_revision if target.kind == "hub" else None))
    except RemoteNotFoundError as exc:
        if "/" not in target.repo:
            raise
        raise RemoteNotFoundError(f"{exc} (there is no directory ./{target.repo} either; "
                                  f"write ./{target.repo} or dir:{target.repo} for a path)") from None
    store.note_use(version)
    snapshot = store.snapshot(version)
    _LOCATED[snapshot] = {"name": display_name(version.repo), "repo": version.repo, "version": version.name,
                          "id": version.id}
    return snapshot


# The version each snapshot this process located is (a handful of entries): what zoo.load records as a model's
# source without reading the manifests again.
_LOCATED: dict[Path, dict[str, str]] = {}


def load_config(ref: str | os.PathLike[str], *, registry: Registry | None = None,
                store: "Store | None" = None) -> ModelConfig:
    """Read and check ``config.json`` of a saved directory or cached name; picks the architecture plugin."""
    registry = registry or default_registry()
    directory = locate(ref, registry=registry, store=store)
    return parse_config(read_config_file(directory), registry, directory)


def _check_version(cfg: ModelConfig, strict: bool) -> None:
    """Warn (strict: raise) only for a checkpoint saved by a newer transformers than the installed one.
    An older major (most of the hub: 4.x) or an unknown version is only recorded in
    ``cfg.version_advice``, which ``zoo info`` shows: a warning on every normal load would be ignored."""
    advice = cfg.version_advice
    if advice.status == "newer":
        if strict:
            raise IncompatibleVersionError(f"{cfg.where}: {advice.message}")
        warnings.warn(f"{cfg.where}: {advice.message}", VersionWarning, stacklevel=3)


def _as_model_config(config: Any, registry: Registry) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        raw = dict(config)
    elif callable(getattr(config, "to_dict", None)):
        raw = config.to_dict()
        raw.setdefault("model_type", getattr(config, "model_type", None))
        return dataclasses.replace(parse_config(raw, registry), _config=config)  # keep the caller's object
    else:
        raise ConfigError(f"zoo.build takes a config object, a dict or a ModelConfig, got {type(config).__name__}")
    return parse_config(raw, registry)


def build(config: Any, *, task: str | None = None, registry: Registry | None = None) -> "torch.nn.Module":
    """A randomly initialised model for ``config`` (a dict, the plugin's config object or a ModelConfig),
    like ``BertModel(BertConfig())``. The head comes from ``task`` or the config's ``architectures``."""
    require("torch", TORCH_INSTALL, needed_by="zoo.build")
    cfg = _as_model_config(config, registry or default_registry())
    from .model import build as building

    cls = resolve_class(cfg.architecture.heads[cfg.architecture.head_for(task, list(cfg.architectures))], cfg.plugin)
    with cfg.building(cls):
        building.check_memory(cls, cfg, materialised=True)
        return cls(cfg.config)


def load(
    ref: str | os.PathLike[str],
    *,
    task: str | None = None,
    dtype: Any = None,
    device: Any = None,
    strict: bool | None = None,
    output_loading_info: bool = False,
    registry: Registry | None = None,
    store: "Store | None" = None,
) -> Any:
    """Load a saved directory as a ready model in eval mode.

    The plugin comes from ``config.json`` ``model_type``, the head from ``architectures`` (``task=``
    overrides it: a task such as ``"fill-mask"`` or a head such as ``"BertForMaskedLM"``). Weights are
    memory-mapped, not copied; older key names and layouts are converted as transformers does
    (:mod:`zoo.model.conversion`). The model is built in ``dtype`` as ``from_pretrained`` builds it (default: the
    config's ``dtype``, else the checkpoint's): a weight stored in another dtype is converted, the others
    stay mapped; ``generation_config.json`` beside the weights becomes the model's ``generation_config``.
    A class the architecture hands to transformers (``Architecture.transformers_loading``, or a quantised
    checkpoint) is loaded by its ``from_pretrained`` from local files, without remote code, and the report
    says so. ``strict=True`` (or ``ZOO_STRICT=1``) turns version and unexpected-key warnings into errors.
    ``output_loading_info=True`` returns ``(model, LoadReport)``.
    """
    require("torch", TORCH_INSTALL, needed_by="zoo.load")
    from .model import build as building
    from .model import modeling, weights

    strict = _strict(strict)
    dtype = _dtype(dtype)
    cfg = load_config(ref, registry=registry, store=store)
    _check_version(cfg, strict)
    head = cfg.architecture.head_for(task, list(cfg.architectures))
    files = checkpoint.open_folder(cfg.path, cfg.raw).weights  # the folder checked before anything is built
    cls = resolve_class(cfg.architecture.heads[head], cfg.plugin)
    reason = _transformers_loading(cfg, head)
    if reason:  # the fast path is not proven right for this class: transformers loads it
        model, report = modeling.load_with_transformers(cls, cfg.path, dtype, reason)
    else:
        state = weights.load_state_dict(files)  # mapped (safetensors) or read safely (.bin): errors come now
        with cfg.building(cls):
            building.check_memory(cls, cfg, materialised=False)
            build_dtype = building.build_dtype(dtype, cfg.config, state)
            model = building.empty_model(cls, cfg.config, build_dtype)
        state, applied = conversion.convert(model, state, cfg.architecture, cfg.plugin)
        report = modeling.fill(model, state, optional=cfg.architecture.optional_weights, where=str(cfg.path),
                               dtype=build_dtype)
        generation = modeling.load_generation_config(model, cfg.path)
        report = dataclasses.replace(report, conversions=applied, generation_config=generation)
    _report_keys(report, cfg, head, strict)
    if device is not None:  # the dtype is settled: the model was built in it
        model = model.to(device=device)
    model = model.eval()
    _remember_source(model, ref, cfg.path, store)
    return (model, report) if output_loading_info else model


def _remember_source(model: Any, ref: Any, path: Path, store: "Store | None") -> None:
    """Which stored version ``model`` was loaded from, so that ``zoo.save`` records it as the base."""
    from .resolve import as_path
    from .store.lineage import source_of

    if path in _LOCATED:
        model._zoo_source = dict(_LOCATED[path])
        return
    if as_path(ref) is not None and store is None:
        return  # a folder the user named: not a version of the store
    try:
        model._zoo_source = source_of(store or default_store(), path)
    except (OSError, ZooError, AttributeError):
        pass  # lineage is a record, never a reason for a load to fail


def _transformers_loading(cfg: ModelConfig, head: str) -> str:
    """Why ``head`` is handed to transformers' ``from_pretrained`` rather than zoo's fast path ("": it is not):
    the architecture says so for the class, or the checkpoint is quantised (``quantization_config``: only
    transformers' quantizers know how to load it) and the class is a transformers one."""
    reason = cfg.architecture.transformers_loading_reason(head)
    if reason:
        return reason
    ref = cfg.architecture.heads[head]
    if "quantization_config" in cfg.raw and isinstance(ref, str) and ref.startswith("transformers:"):
        return "quantised checkpoint (quantization_config): loaded by transformers' quantizer"
    return ""


def _dtype(dtype: Any) -> Any:
    if dtype is None or not isinstance(dtype, str):
        return dtype
    import torch

    value = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise InvalidArgumentError(f"dtype {dtype!r} is not a torch dtype; use e.g. 'float16' or torch.bfloat16")
    return value


def _report_keys(report: Any, cfg: ModelConfig, head: str, strict: bool) -> None:
    """Warn about what needs the user's attention: weights initialised anew, and checkpoint weights that fit
    no parameter of a module the model has. Weights of parts the model does not have (another head) are
    dropped quietly, as asking for that head means; they are in the report."""
    parts = []
    if report.initialised:
        parts.append(f"{len(report.initialised)} weights missing from the checkpoint, newly initialised "
                     f"({', '.join(report.initialised[:5])}{' ...' if len(report.initialised) > 5 else ''})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} weights in the checkpoint not used by {head} "
                     f"({', '.join(report.unexpected[:5])}{' ...' if len(report.unexpected) > 5 else ''})")
    if not parts:
        return
    message = (f"{cfg.path}: loading {head}: " + "; ".join(parts) +
               ". Expected when loading a base checkpoint into a new head (train it before use); "
               "otherwise check the task= and the checkpoint")
    if strict:
        raise WeightsMismatchError(message)
    warnings.warn(message, WeightsWarning, stacklevel=3)


def save(model: "torch.nn.Module", path: str | os.PathLike[str], *, max_shard_size: int | str = "5GB",
         store: "Store | None" = None, description: str | None = None,
         labels: Mapping[str, str] | None = None) -> "Path | Version":
    """Write ``config.json`` (with ``transformers_version``) and ``model.safetensors`` (shards and an
    index past ``max_shard_size``), and ``generation_config.json`` for a model that generates (as save_pretrained
    does). Every file is written under a temporary name and renamed into
    place, config last. Tied weights are stored once.

    ``path`` is a directory (a ``Path``, or text with a ``/`` or starting with ``.`` or ``~``; returns
    the directory), or a bare name such as ``"my-bert"``: then the files become a new immutable version
    of that name in the cache (``zoo.load("my-bert")``, ``zoo versions my-bert``; returns the Version).
    Such a version records who saved it, ``description`` and ``labels`` (``{"task": "ner"}``), and its base: the
    stored version ``model`` was loaded from with ``zoo.load``, found without being told (``zoo lineage``).
    A model card written to ``README.md`` beside it is not part of ``zoo.save``; ``zoo import`` keeps one.
    """
    require("torch", TORCH_INSTALL, needed_by="zoo.save")
    from .resolve import as_path

    directory = as_path(path)
    if directory is None and "/" in path:  # out/dir: a relative directory (names have no '/')
        directory = Path(path)
    if directory is None:
        from .store.writer import save_name

        name = save_name(path)
        store = store or default_store()
        with store.staging("save") as tmp:
            _save_dir(model, tmp, max_shard_size)
            return store.import_dir(tmp, name, source="zoo.save", owned=True, description=description,
                                    labels=dict(labels) if labels else None,
                                    base=getattr(model, "_zoo_source", None))
    return _save_dir(model, directory, max_shard_size)


def _save_dir(model: "torch.nn.Module", directory: Path, max_shard_size: int | str) -> Path:
    from .model import weights

    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        raise ConfigError(
            f"zoo.save needs a model that keeps its config as .config with a to_dict() method; "
            f"{type(model).__name__} has none. Build it with zoo.build or an architecture plugin"
        )
    directory.mkdir(parents=True, exist_ok=True)
    raw = dict(config.to_dict())
    model_type = raw.get("model_type") or getattr(config, "model_type", None)
    if not model_type:
        raise ConfigError(f"{type(config).__name__} has no model_type; set it as a class attribute")
    raw["model_type"] = model_type
    raw["architectures"] = [type(model).__name__]
    try:
        raw["transformers_version"] = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        raw.pop("transformers_version", None)
    raw["zoo_version"] = _zoo_version()
    generation = _generation_config(model)
    try:
        weights.write_safetensors(_unique_tensors(model), directory, weights.parse_size(max_shard_size))
        if generation is not None:  # as save_pretrained writes it, for a model that generates
            weights.write_json_atomic(directory / "generation_config.json", generation)
        weights.write_json_atomic(directory / CONFIG_NAME, raw)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from .errors import StoreFullError

        raise StoreFullError(f"no space left on the device of {directory} ({exc.strerror}); nothing partial was "
                             "kept. Free space (zoo gc, zoo rm NAME@vN) or save somewhere larger") from None
    return directory


def _generation_config(model: Any) -> dict[str, Any] | None:
    """What save_pretrained writes to ``generation_config.json`` (the values that differ from the defaults),
    for a model that generates; None for any other."""
    import json

    config = getattr(model, "generation_config", None)
    can_generate = getattr(model, "can_generate", None)
    if config is None or not callable(can_generate) or not can_generate() or not hasattr(config, "to_json_string"):
        return None
    return json.loads(config.to_json_string(use_diff=True))


def _zoo_version() -> str:
    from ._version import __version__

    return __version__


def _unique_tensors(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """The state dict with each shared tensor kept once (under its first name), contiguous."""
    seen: set[tuple[int, int, Any]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_meta:
            raise ConfigError(f"cannot save {name!r}: it has no data (meta device); load or initialise it first")
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def load_tokenizer(ref: str | os.PathLike[str], *, registry: Registry | None = None,
                   store: "Store | None" = None) -> Any:
    """The tokenizer saved beside the model (transformers' ``AutoTokenizer`` unless the plugin says
    otherwise), from local files only (a cached name is pulled first); remote code is never run."""
    cfg = load_config(ref, registry=registry, store=store)
    cls = resolve_class(cfg.architecture.tokenizer_class or "transformers:AutoTokenizer", cfg.plugin)
    try:
        return cls.from_pretrained(str(cfg.path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no usable tokenizer in {cfg.path} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "save one beside the model with tokenizer.save_pretrained(path)"
        ) from exc


def architectures(*, registry: Registry | None = None) -> dict[str, Registered]:
    """Installed architectures: model_type -> Registered(Architecture, plugin)."""
    return (registry or default_registry()).architectures()
