"""Building models without random init and filling them with mapped weights.

``empty_model(cls, config)`` builds with parameters on the ``meta`` device (buffers stay real: they are
small and often computed in ``__init__``), so nothing is allocated or randomly initialised.
``fill(model, state)`` then assigns the mapped tensors as the parameters themselves (``assign=True``):
the model's weights *are* the file's pages, no copy made.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

_state = threading.local()  # .meta: this thread is inside meta_parameters()
# One build on the meta device at a time, in the whole process; nested blocks in one thread are counted.
_build_lock = threading.RLock()
_depth = 0
_installed: dict[tuple[Any, str], tuple[Any, Any]] = {}  # (owner, attribute) -> (original, our wrapper)

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "orthogonal_", "sparse_",
)


def _meta_here() -> bool:
    return getattr(_state, "meta", False)


def _install() -> None:
    """Route ``register_parameter`` to the meta device, and skip ``torch.nn.init`` on meta tensors, for the
    thread inside :func:`meta_parameters`. Called with ``_build_lock`` held, by the outermost block."""
    import sys

    import torch

    if "transformers" in sys.modules:
        # transformers keeps torch's init functions as it finds them when this module is first imported:
        # import it now, so that it never keeps ours.
        try:
            import transformers.initialization  # noqa: F401
        except ImportError:
            pass
    original = torch.nn.Module.register_parameter

    def register_parameter(self: torch.nn.Module, name: str, param: Any) -> None:
        original(self, name, param)
        if param is not None and _meta_here() and not param.is_meta:
            meta = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
            # transformers' init functions skip tensors carrying this flag (what its own loader sets)
            meta._is_hf_initialized = True
            self._parameters[name] = meta

    register_parameter.__wrapped__ = original  # type: ignore[attr-defined]
    _installed[(torch.nn.Module, "register_parameter")] = (original, register_parameter)
    # Initialising a meta tensor does nothing but costs a dispatch each: skip it.
    for fname in _INIT_FUNCTIONS:
        init = getattr(torch.nn.init, fname, None)
        if init is not None:
            _installed[(torch.nn.init, fname)] = (init, _skip_meta(init))
    for (owner, attr), (_, wrapper) in _installed.items():
        setattr(owner, attr, wrapper)


def _uninstall() -> None:
    """Put the originals back. Called with ``_build_lock`` held, by the outermost block. Where someone else
    replaced our wrapper meanwhile (their own patch, taken over ours), theirs stays: our wrapper under it
    does nothing outside :func:`meta_parameters`."""
    for (owner, attr), (original, wrapper) in _installed.items():
        if getattr(owner, attr, None) is wrapper:
            setattr(owner, attr, original)
    _installed.clear()


def _skip_meta(init: Any) -> Any:
    def wrapper(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        if _meta_here() and getattr(tensor, "is_meta", False):
            return tensor
        return init(tensor, *args, **kwargs)

    wrapper.__wrapped__ = init  # type: ignore[attr-defined]
    wrapper.__name__ = init.__name__
    wrapper.__doc__ = init.__doc__
    return wrapper


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Inside this block, parameters this thread creates are on the ``meta`` device (buffers stay real)
    and ``torch.nn.init`` skips them.

    The patch of ``torch.nn.Module.register_parameter`` and ``torch.nn.init.*`` exists only while a block
    is open: the outermost block installs it and removes it on leaving, so nothing is left patched once
    zoo returns. Blocks in several threads take turns (a re-entrant lock; nested blocks in one thread are
    counted): building on the meta device takes milliseconds, and transformers' own guard of the init
    functions (``guard_torch_init_functions``, run by every ``PreTrainedModel``) saves and restores
    them without a lock, so two models built at once can leave its functions in ``torch.nn.init`` for
    good. Threads that are not building may run our wrappers meanwhile; they do nothing for them: the
    switch is this thread's ``_state.meta``.

    Why not ``with torch.device("meta")``: it would put buffers on the meta device too, and buffers are
    computed in ``__init__`` (BERT's ``position_ids``) and often absent from checkpoints, so they must
    stay real.
    """
    global _depth
    with _build_lock:
        if _depth == 0:
            _install()
        _depth += 1
        previous = _meta_here()
        _state.meta = True
        try:
            yield
        finally:
            _state.meta = previous
            _depth -= 1
            if _depth == 0:
                _uninstall()


LARGE_VALUE = 1 << 24  # a config number past this may ask for more memory than a machine has


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _large_values(raw: Any, prefix: str = "") -> list[str]:
    if isinstance(raw, dict):
        return [found for k, v in raw.items() for found in _large_values(v, f"{prefix}{k}.")]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and abs(raw) > LARGE_VALUE:
        return [f"{prefix.rstrip('.')}={raw!r}"]
    return []


def check_memory(cls: type, cfg: Any, *, materialised: bool) -> None:
    """Refuse, before allocating anything, a model that needs more memory than this machine has
    (``max_position_embeddings: 1e11``). Measured by building it on the ``meta`` device, which costs
    nothing; done only when the config holds a number large enough to matter. ``materialised``: all
    parameters are allocated (``zoo.build``); otherwise only buffers (``zoo.load`` maps the weights)."""
    large = _large_values(cfg.raw)
    if not large:
        return
    import torch

    from .errors import ConfigError

    with torch.device("meta"):
        model = cls(cfg.config)
    tensors = [*model.buffers(), *(model.parameters() if materialised else ())]
    need = sum(t.numel() * t.element_size() for t in tensors)
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"{cfg.where}: building {cls.__name__} from this config needs {need / 1e9:,.1f} GB of memory, and "
            f"{available / 1e9:,.1f} GB are available; the config holds {', '.join(large[:3])}. Fix the value "
            "in config.json (it is likely a typo), or use a machine with more memory"
        )


def empty_model(cls: type, config: Any) -> "torch.nn.Module":
    with meta_parameters():
        return cls(config)


@dataclass(frozen=True)
class LoadReport:
    """What a load did besides assigning tensors by name (``zoo.load(..., output_loading_info=True)``).

    - ``conversions``: renames and conversions applied to checkpoint keys (:mod:`zoo.conversion`);
    - ``initialised``: weights of a head (or an optional body part) the checkpoint does not have, newly
      initialised: expected when loading a base checkpoint into a new head;
    - ``unused``: checkpoint weights of parts this model does not have (another head, a pooler): dropped;
    - ``unexpected``: checkpoint weights that match no parameter of a module the model has: suspicious.
    """

    conversions: tuple[Any, ...] = ()
    initialised: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        return self.initialised


def _adapt_prefix(model: "torch.nn.Module", state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """Checkpoints of the bare model load into heads and the reverse (``base_model_prefix``)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    if not prefix:
        return state
    dotted = prefix + "."
    model_has = any(k.startswith(dotted) for k in expected)
    ckpt_has = any(k.startswith(dotted) for k in state)
    if model_has and not ckpt_has:
        return {(dotted + k if dotted + k in expected else k): v for k, v in state.items()}
    if not model_has and ckpt_has:
        return {(k[len(dotted):] if k.startswith(dotted) else k): v for k, v in state.items()}
    return state


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
         optional: tuple[str, ...] = (), where: str = "the checkpoint") -> LoadReport:
    """Assign ``state`` into a model built by :func:`empty_model`; tie weights; initialise the weights of a
    head the checkpoint does not have. A body weight the checkpoint lacks is an error
    (:class:`~zoo.errors.MissingWeightsError`), unless it matches ``optional``."""
    expected = set(model.state_dict().keys())
    state = _adapt_prefix(model, state, expected)
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
    unexpected = tuple(k for k in leftovers if k.rpartition(".")[0] in modules)
    unused = tuple(k for k in leftovers if k.rpartition(".")[0] not in modules)
    _assign(model, {k: v for k, v in state.items() if k in expected})
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()
    missing = [name for name, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    allowed = _patterns(model, "_keys_to_ignore_on_load_missing", optional)
    heads_present = {_head_of(model, k) for k in state if k in expected}
    required = [
        k for k in missing
        if (_head_of(model, k) is None or _head_of(model, k) in heads_present) and not any(p.search(k) for p in allowed)
    ]
    if required:
        raise _missing_error(required, unexpected, where, type(model).__name__)
    if missing:
        _initialise_missing(model, missing)
        if callable(getattr(model, "tie_weights", None)):
            model.tie_weights()
    ignore_missing = _patterns(model, "_keys_to_ignore_on_load_missing")
    reported = tuple(k for k in missing if not any(p.search(k) for p in ignore_missing))
    return LoadReport(initialised=reported, unused=unused, unexpected=unexpected)


def _missing_error(required: list[str], unexpected: tuple[str, ...], where: str, cls: str) -> Exception:
    from .errors import MissingWeightsError

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


def _assign(model: "torch.nn.Module", state: dict[str, "torch.Tensor"]) -> None:
    """Make each tensor of ``state`` the model's parameter or buffer itself (no copy). Faster than
    ``load_state_dict(assign=True)``, which runs per-module hooks and checks we do not need."""
    import torch

    from .errors import WeightsMismatchError

    modules = dict(model.named_modules(remove_duplicate=False))
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
        if table is module._parameters:
            param = torch.nn.Parameter(tensor, requires_grad=old.requires_grad if old is not None else True)
            for alias in aliases.get(id(old), [key]) if old is not None else [key]:
                owner, _, alias_attr = alias.rpartition(".")
                if alias == key or alias not in state:  # keep the tie: every name gets this one tensor
                    modules[owner]._parameters[alias_attr] = param
        else:
            table[attr] = tensor
    if wrong_kind:
        from .errors import CorruptCheckpointError

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
