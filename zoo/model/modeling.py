"""Building models without random init and filling them with mapped weights.

``empty_model(cls, config)`` builds with parameters on the ``meta`` device (buffers stay real: they are
small and often computed in ``__init__``), so nothing is allocated or randomly initialised.
``fill(model, state)`` then assigns the mapped tensors as the parameters themselves (``assign=True``):
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

import contextlib
import re
import sys
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
    # transformers initialises a model's weights at the end of its __init__, module by module: on meta
    # parameters that is time spent for nothing (its own from_pretrained skips it on the meta device too).
    # The buffers it would set are set after loading, by fill(), as from_pretrained sets them.
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    pretrained = getattr(modeling_utils, "PreTrainedModel", None)
    if pretrained is not None and callable(getattr(pretrained, "initialize_weights", None)):
        _installed[(pretrained, "initialize_weights")] = (pretrained.initialize_weights,
                                                          _skip_on_meta_build(pretrained.initialize_weights))
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


def _skip_on_meta_build(initialize: Any) -> Any:
    def initialize_weights(self: Any) -> Any:
        if _meta_here():
            return None
        return initialize(self)

    initialize_weights.__wrapped__ = initialize  # type: ignore[attr-defined]
    initialize_weights.__doc__ = initialize.__doc__
    return initialize_weights


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

    from ..errors import ConfigError

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


def empty_model(cls: type, config: Any, dtype: Any = None) -> "torch.nn.Module":
    """``cls(config)`` with its parameters on the meta device, built in ``dtype`` (a floating torch dtype:
    the default dtype while it is built, and the config's ``dtype``, as ``from_pretrained`` sets them)."""
    if dtype is not None:
        set_config_dtype(config, dtype)
    with meta_parameters(), _default_dtype(dtype):
        return cls(config)


def set_config_dtype(config: Any, dtype: Any) -> None:
    """Record the dtype the model is built in on a transformers config and its sub-configs (text, vision)."""
    if not hasattr(config, "sub_configs"):  # not a transformers config: its dtype is the plugin's business
        return
    config.dtype = dtype
    for key in config.sub_configs:
        sub = getattr(config, key, None)
        if sub is not None and hasattr(sub, "dtype"):
            sub.dtype = dtype


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    """torch's default dtype set to ``dtype`` for the build (process-wide, as transformers sets it: held
    only inside :func:`meta_parameters`, whose lock makes builds take turns)."""
    import torch

    if dtype is None or dtype == torch.get_default_dtype() or not getattr(dtype, "is_floating_point", False):
        yield
        return
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
    except (TypeError, ValueError):  # a float8 type: not a default dtype torch accepts
        yield
        return
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_dtype(requested: Any, config: Any, state: dict[str, Any]) -> Any:
    """The dtype to build in, as ``from_pretrained`` picks it: ``requested`` (``zoo.load(dtype=)``), else the
    config's ``dtype`` (transformers configs record it), else the first floating tensor of the checkpoint."""
    import torch

    if requested is not None:
        return requested
    configured = getattr(config, "dtype", None)
    if isinstance(configured, str):
        configured = getattr(torch, configured.removeprefix("torch."), None)
    if isinstance(configured, torch.dtype) and configured.is_floating_point:
        return configured
    return next((t.dtype for t in state.values() if t.is_floating_point()), None)


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
    """Assign ``state`` into a model built by :func:`empty_model`; tie weights; initialise the weights of a
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

    with _build_lock, torch.no_grad(), guard_torch_init_functions():  # the guard swaps torch.nn.init: take turns
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
