"""Filling a model built without random init (:mod:`zoo.model.build`) with mapped weights.

``fill(model, state)`` assigns the mapped tensors as the parameters themselves (``assign=True``):
the model's weights *are* the file's pages, no copy made.

As transformers' ``from_pretrained`` does, the model is built in one floating dtype (``empty_model(...,
dtype=)``: what ``zoo.load`` was asked for, else the config's ``dtype``, else the checkpoint's): buffers
computed at init (rotary frequencies, causal masks) come out as transformers makes them, and a tensor is
converted (copied) only where the file holds another dtype than the model's, or where the model keeps a
module in float32 (``_keep_in_fp32_modules``). ``load_generation_config`` reads ``generation_config.json``
as ``from_pretrained`` does; ``load_with_transformers`` is ``from_pretrained`` itself, for the classes an
architecture hands to it (``Architecture.transformers_loading``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .build import build_lock

if TYPE_CHECKING:
    import torch

def _fp32_patterns(model: "torch.nn.Module", dtype: Any) -> "re.Pattern[str] | None":
    """The parameters a transformers model keeps in float32 when built in ``dtype`` (its
    ``_keep_in_fp32_modules`` for float16, ``_keep_in_fp32_modules_strict`` for float16 and bfloat16), as one
    pattern searched in parameter names, the way transformers matches them."""
    import torch

    names: list[str] = []
    if dtype == torch.float16:
        names += list(getattr(model, "_keep_in_fp32_modules", None) or ())
    if dtype in (torch.float16, torch.bfloat16):
        names += list(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    if not names:
        return None
    return re.compile("|".join(f"(?:{name.replace('*', '.*')})" for name in names))


@dataclass(frozen=True)
class LoadReport:
    """What a load did besides assigning tensors by name (``zoo.load(..., output_loading_info=True)``).

    - ``conversions``: renames and conversions applied to checkpoint keys (:mod:`zoo.model.conversion`);
    - ``initialised``: weights of a head (or an optional body part) the checkpoint does not have, newly
      initialised: expected when loading a base checkpoint into a new head;
    - ``unused``: checkpoint weights of parts this model does not have (another head, a pooler): dropped;
    - ``unexpected``: checkpoint weights that match no parameter of a module the model has: suspicious;
    - ``loader``: ``"zoo"`` (built on the meta device, weights mapped) or ``"transformers"`` (the class was
      handed to transformers' ``from_pretrained``), with ``note`` saying why;
    - ``generation_config``: the file the model's ``generation_config`` was read from, if any.
    """

    conversions: tuple[Any, ...] = ()
    initialised: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    loader: str = "zoo"
    note: str = ""
    generation_config: str = ""

    @property
    def missing(self) -> tuple[str, ...]:
        return self.initialised


def _adapt_prefix(model: "torch.nn.Module", state: dict[str, Any], expected: set[str]
                  ) -> tuple[dict[str, Any], set[str]]:
    """Checkpoints of the bare model load into heads and the reverse (``base_model_prefix``). Also returns
    the keys of a head checkpoint's own head (outside the prefix: BART's ``final_logits_bias``) when it
    is loaded into the bare model: parts this model does not have."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    if not prefix:
        return state, set()
    dotted = prefix + "."
    model_has = any(k.startswith(dotted) for k in expected)
    ckpt_has = any(k.startswith(dotted) for k in state)
    if model_has:  # key by key: a checkpoint may mix both (transformers renamed some keys into the prefix)
        return {(dotted + k if k not in expected and dotted + k in expected else k): v for k, v in state.items()}, set()
    if ckpt_has:
        return ({(k[len(dotted):] if k.startswith(dotted) else k): v for k, v in state.items()},
                {k for k in state if not k.startswith(dotted)})
    return state, set()


def _matches(patterns: list[re.Pattern[str]], key: str, prefix: str) -> bool:
    """Whether ``key`` matches one of a transformers class's key patterns, which name the body under its
    ``base_model_prefix`` (``model.encoder...``) also when the class is the bare model."""
    return any(p.search(key) or (prefix and p.search(f"{prefix}.{key}")) for p in patterns)


def _patterns(model: "torch.nn.Module", attr: str, extra: tuple[str, ...] = ()) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in (*(getattr(model, attr, None) or ()), *extra)]


def _head_of(model: "torch.nn.Module", name: str) -> str | None:
    """The head module ``name`` belongs to (``cls``, ``classifier``), or None for the model's body. A model
    with a ``base_model_prefix`` submodule is body + heads; any other model is all body."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    if not prefix or prefix not in model._modules or name.startswith(prefix + "."):
        return None
    return name.split(".", 1)[0]


def fill(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], *,
         optional: tuple[str, ...] = (), where: str = "the checkpoint", dtype: Any = None) -> LoadReport:
    """Assign ``state`` into a model built by :func:`zoo.model.build.empty_model`; tie weights; initialise the weights of a
    head the checkpoint does not have. A body weight the checkpoint lacks is an error
    (:class:`~zoo.errors.MissingWeightsError`), unless it matches ``optional``. A floating tensor whose dtype
    is not the model's is converted to it (``dtype``: what the model was built in, for its float32 modules)."""
    expected = set(model.state_dict().keys())
    state, foreign = _adapt_prefix(model, state, expected)
    non_persistent = {
        f"{mod_name}.{b}" if mod_name else b
        for mod_name, module in model.named_modules()
        for b in getattr(module, "_non_persistent_buffers_set", ())
    }
    ignore_unexpected = _patterns(model, "_keys_to_ignore_on_load_unexpected")
    leftovers = [
        k for k in state
        if k not in expected and k not in non_persistent and not any(p.search(k) for p in ignore_unexpected)
    ]
    modules = dict(model.named_modules(remove_duplicate=False))
    unexpected = tuple(k for k in leftovers if k.rpartition(".")[0] in modules and k not in foreign)
    unused = tuple(k for k in leftovers if k.rpartition(".")[0] not in modules or k in foreign)
    _assign(model, {k: v for k, v in state.items() if k in expected}, _fp32_patterns(model, dtype), modules)
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()
    missing = [name for name, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    # Allowed to be missing: what the plugin says, and what the class says it never saves or may lack
    # (weights it computes at init, e.g. Marian's sinusoidal positions: initialised by _init_weights).
    allowed = _patterns(model, "_keys_to_ignore_on_load_missing", optional) + _patterns(model, "_keys_to_ignore_on_save")
    prefix = getattr(model, "base_model_prefix", "") or ""
    heads_present = {_head_of(model, k) for k in state if k in expected}
    required = [
        k for k in missing
        if (_head_of(model, k) is None or _head_of(model, k) in heads_present) and not _matches(allowed, k, prefix)
    ]
    if required:
        raise _missing_error(required, unexpected, where, type(model).__name__)
    if missing:
        _initialise_missing(model, missing)
        if callable(getattr(model, "tie_weights", None)):
            model.tie_weights()
    _initialise_buffers(model, {k for k in state if k in expected})
    ignore_missing = _patterns(model, "_keys_to_ignore_on_load_missing")
    reported = tuple(k for k in missing if not any(p.search(k) for p in ignore_missing))
    return LoadReport(initialised=reported, unused=unused, unexpected=unexpected)


def _missing_error(required: list[str], unexpected: tuple[str, ...], where: str, cls: str) -> Exception:
    from ..errors import MissingWeightsError

    owners = {k.rpartition(".")[0] for k in required}
    renamed = [k for k in unexpected if k.rpartition(".")[0] in owners]
    if renamed:
        cause = (f"the checkpoint names them differently ({', '.join(renamed[:3])}{' ...' if len(renamed) > 3 else ''} "
                 "match no parameter): an older naming that no rename covers. Add the old names to the "
                 "architecture plugin's key_renames, or re-save the checkpoint with the code that reads it")
    else:
        cause = ("the checkpoint is incomplete, or its config.json describes a different model than its weights "
                 "(more layers, another variant). Download or save it again")
    shown = ", ".join(required[:5]) + (" ..." if len(required) > 5 else "")
    return MissingWeightsError(
        f"{where}: {len(required)} weights of {cls} that the checkpoint's own model has are missing from it "
        f"({shown}); loading would leave them random. Likely cause: {cause}"
    )


def _assign(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], fp32: "re.Pattern[str] | None" = None,
            modules: dict[str, Any] | None = None) -> None:
    """Make each tensor of ``state`` the model's parameter or buffer itself (no copy where its dtype is the
    model's; else converted, and to float32 where ``fp32`` matches the name). Faster than
    ``load_state_dict(assign=True)``, which runs per-module hooks and checks we do not need."""
    import torch

    from ..errors import WeightsMismatchError

    modules = modules if modules is not None else dict(model.named_modules(remove_duplicate=False))
    aliases: dict[int, list[str]] = {}  # a parameter shared by several modules: one entry, many names
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    mismatched: list[str] = []
    wrong_kind: list[str] = []
    for key, tensor in state.items():
        module_name, _, attr = key.rpartition(".")
        module = modules[module_name]
        table = module._parameters if attr in module._parameters else module._buffers
        old = table[attr]
        if old is not None and old.shape != tensor.shape:
            mismatched.append(f"{key}: checkpoint {list(tensor.shape)}, model {list(old.shape)}")
            continue
        if old is not None and old.is_floating_point() and not tensor.is_floating_point():
            wrong_kind.append(f"{key}: {str(tensor.dtype).removeprefix('torch.')} where the model has "
                              f"{str(old.dtype).removeprefix('torch.')}")
            continue
        if old is not None and old.is_floating_point() and tensor.is_floating_point():
            want = torch.float32 if fp32 is not None and fp32.search(key) else old.dtype
            if tensor.dtype != want:
                tensor = tensor.to(want)
        if table is module._parameters:
            param = torch.nn.Parameter(tensor, requires_grad=old.requires_grad if old is not None else True)
            for alias in aliases.get(id(old), [key]) if old is not None else [key]:
                owner, _, alias_attr = alias.rpartition(".")
                if alias == key or alias not in state:  # keep the tie: every name gets this one tensor
                    modules[owner]._parameters[alias_attr] = param
        else:
            table[attr] = tensor
    if wrong_kind:
        from ..errors import CorruptCheckpointError

        raise CorruptCheckpointError(
            f"{len(wrong_kind)} weights are stored as integers or booleans where the model needs floating point "
            f"({'; '.join(wrong_kind[:3])}{' ...' if len(wrong_kind) > 3 else ''}): the checkpoint is damaged or "
            "was written by a tool that quantised it; zoo will not load them as numbers. Save the model again"
        )
    if mismatched:
        raise WeightsMismatchError(
            f"{len(mismatched)} weights have a different shape in the checkpoint than the config describes "
            f"({'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}): config.json and the weights "
            "come from different models; save them together again"
        )


def _initialise_missing(model: "torch.nn.Module", missing: list[str]) -> None:
    """Give parameters the checkpoint lacks a real, freshly initialised tensor.

    The owning module is initialised by the model's own ``_init_weights`` (transformers) or the module's
    ``reset_parameters``; parameters that were loaded are swapped out meanwhile so they are not touched.
    """
    import torch

    owners: dict[str, list[str]] = {}
    for name in missing:
        module_name, _, pname = name.rpartition(".")
        owners.setdefault(module_name, []).append(pname)
    init_weights = getattr(model, "_init_weights", None)
    for module_name, pnames in owners.items():
        module = model.get_submodule(module_name)
        loaded = {n: p for n, p in module._parameters.items() if p is not None and n not in pnames}
        for n, p in list(module._parameters.items()):
            if p is None:
                continue
            module._parameters[n] = torch.nn.Parameter(
                torch.empty(p.shape, dtype=p.dtype, device="cpu"), requires_grad=p.requires_grad
            )
        if callable(init_weights):
            init_weights(module)
        elif callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        else:
            with torch.no_grad():
                for n in pnames:
                    module._parameters[n].zero_()
        for n, p in loaded.items():
            module._parameters[n] = p


def _initialise_buffers(model: "torch.nn.Module", loaded: set[str]) -> None:
    """Give the buffers the checkpoint does not hold (non-persistent ones: rotary frequencies, position ids,
    causal masks) the values a transformers model's own ``_init_weights`` gives them, as ``from_pretrained``
    does after loading (the meta build skipped that initialisation). Everything loaded or initialised is
    flagged first, so that ``_init_weights`` touches nothing else (transformers' init functions honour the
    flag, as they do in its own loading)."""
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    pretrained = getattr(modeling_utils, "PreTrainedModel", None)
    if pretrained is None or not isinstance(model, pretrained):
        return  # a plain torch model: its buffers are what its __init__ made
    import torch

    todo: list[tuple[Any, Any]] = []  # (module, the PreTrainedModel whose _init_weights covers it)
    seen: set[int] = set()

    def walk(module: Any, prefix: str, owner: Any) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        owner = module if isinstance(module, pretrained) else owner
        for param in module._parameters.values():
            if param is not None:
                param._is_hf_initialized = True
        fresh = False
        for name, buffer in module._buffers.items():
            if buffer is not None:
                if prefix + name in loaded:
                    buffer._is_hf_initialized = True
                else:
                    fresh = True
        if fresh:
            todo.append((module, owner))
        for name, child in module._modules.items():
            if child is not None:
                walk(child, f"{prefix}{name}.", owner)

    walk(model, "", model)
    if not todo:
        return
    from transformers.initialization import guard_torch_init_functions

    with build_lock, torch.no_grad(), guard_torch_init_functions():  # the guard swaps torch.nn.init: take turns
        for module, owner in todo:
            parked = _park_parameters(module)
            try:  # the module's parameters are loaded: an _init_weights that writes into a slice of one (a
                # padding row, which the flag does not protect) writes into a stand-in on the meta device
                owner._init_weights(module)
            except (RuntimeError, NotImplementedError):  # it needs real parameters to set its buffers
                _unpark(parked)
                parked = []
                owner._init_weights(module)
            finally:
                _unpark(parked)


def _park_parameters(module: Any) -> list[tuple[Any, str, Any]]:
    """Replace every parameter under ``module`` by a flagged stand-in on the meta device; returns what
    :func:`_unpark` puts back (the same objects: ties stay)."""
    import torch

    parked = []
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                parked.append((sub, name, param))
                stand_in = torch.nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=False)
                stand_in._is_hf_initialized = True
                sub._parameters[name] = stand_in
    return parked


def _unpark(parked: list[tuple[Any, str, Any]]) -> None:
    for sub, name, param in parked:
        sub._parameters[name] = param


def load_generation_config(model: "torch.nn.Module", directory: Any) -> str:
    """Give a model that generates the ``generation_config`` that ``from_pretrained`` gives it: read from
    ``generation_config.json`` beside the weights, else made from ``config.json``. Returns the file read
    (``""`` for a model that does not generate)."""
    can_generate = getattr(model, "can_generate", None)
    if directory is None or getattr(model, "generation_config", None) is None or not callable(can_generate) \
            or not can_generate():
        return ""
    from transformers import GenerationConfig

    from ..errors import ConfigError

    try:
        if (directory / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(str(directory), local_files_only=True)
            return "generation_config.json"
        model.generation_config = GenerationConfig.from_pretrained(
            str(directory), config_file_name="config.json", _from_model_config=True, local_files_only=True)
        return "config.json"
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{directory}: transformers cannot read the generation config there "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "fix or remove generation_config.json") from exc


def load_with_transformers(cls: type, directory: Any, dtype: Any, note: str) -> tuple["torch.nn.Module", LoadReport]:
    """``cls.from_pretrained(directory)`` from local files only, never running remote code: for classes
    whose loading zoo's fast path is not proven to reproduce. The report carries ``note`` (why)."""
    from ..errors import CheckpointError

    try:
        model, info = cls.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False,
                                          dtype=dtype if dtype is not None else "auto", output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        raise CheckpointError(
            f"{directory}: transformers' {cls.__name__}.from_pretrained, which zoo hands this class to "
            f"({note}), failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    has_generation = (directory / "generation_config.json").is_file() and getattr(model, "generation_config", None)
    return model, LoadReport(
        initialised=tuple(sorted(info.get("missing_keys", ()))),
        unexpected=tuple(sorted(info.get("unexpected_keys", ()))),
        loader="transformers",
        note=note,
        generation_config="generation_config.json" if has_generation else "",
    )
