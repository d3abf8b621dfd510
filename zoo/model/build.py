"""Building a model without allocating or initialising its parameters, in the dtype a load asks for.

``empty_model(cls, config, dtype)`` builds with parameters on the ``meta`` device (buffers stay real:
they are small and often computed in ``__init__``), so nothing is allocated or randomly initialised;
``check_memory`` refuses first what could not fit. As transformers' ``from_pretrained`` does, the model is
built in one floating dtype (``build_dtype``: what ``zoo.load`` was asked for, else the config's ``dtype``,
else the checkpoint's), so buffers computed at init come out as transformers makes them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

_state = threading.local()  # .meta: this thread is inside meta_parameters()
# One build on the meta device at a time, in the whole process; nested blocks in one thread are counted.
build_lock = threading.RLock()
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
    thread inside :func:`meta_parameters`. Called with ``build_lock`` held, by the outermost block."""
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
    """Put the originals back. Called with ``build_lock`` held, by the outermost block. Where someone else
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
    with build_lock:
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
