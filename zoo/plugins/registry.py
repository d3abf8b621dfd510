"""The registry: which plugins are loaded, and the architectures and checkpoints they register.

Plugins come from the ``zoo`` entry-point group (or are passed in directly, for tests and embedding).
Each plugin is imported and called on its own: one that fails at import or inside a hook is reported by
name (a :class:`~zoo.errors.PluginWarning`, ``zoo plugins``) and everything it registered is dropped,
while the other plugins keep working. Strict mode raises instead, for plugin authors.

Looking up a ``model_type``: an architecture a plugin registered (``zoo_register_architectures``) always
wins. Only for a type no plugin registered are the fallbacks asked (``zoo_fallback_architecture``, zoo's
built-in ``transformers`` plugin is one), once per type and process: tryfirst implementations, then plain,
then trylast (the built-in one), each group in plugin name order; the first answer is kept (so is the
lack of one). Listing (``zoo plugins``, :meth:`Registry.architectures`) never asks a fallback, so it
stays free of what fallbacks import.

Settings, read when a registry is created (never at import):

- ``ZOO_DISABLE_PLUGINS=a,b``: skip these plugins by name (``bert`` and ``transformers`` are built in).
- ``ZOO_PLUGINS=a,b``: load only these.
- ``ZOO_STRICT_PLUGINS=1``: a failing plugin or a duplicate name raises.
- ``ZOO_TRACE_PLUGINS=1``: print every hook call, its plugin, what it registered and how long it took.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import pluggy

from . import hookspecs
from .._env import flag, name_list
from ..errors import (
    DuplicateRegistrationError,
    PluginLoadError,
    PluginWarning,
    UnknownArchitectureError,
)
from .spec import Architecture, Checkpoint

ENTRY_POINT_GROUP = hookspecs.PROJECT
EVENT_HOOKS = ("zoo_version_created", "zoo_alias_moved", "zoo_labels_changed", "zoo_version_removed")


@dataclass(frozen=True)
class KnownPlugin:
    """A plugin that is not installed with zoo, named in the error for a ``model_type`` no installed
    plugin handles: ``name`` is its entry-point name, ``description`` says what it is, ``install`` how
    to get it."""

    name: str
    description: str
    install: str


# Plugins zoo can point to, as data: model_type -> the plugin that provides it. One row per model_type;
# adding a plugin is a one-line edit. A registry takes another table with Registry(known_plugins=...).
KNOWN_PLUGINS: Mapping[str, KnownPlugin] = MappingProxyType({
    "tinynet": KnownPlugin("tinynet", "the example plugin zoo-tinynet", "pip install -e examples/zoo-tinynet"),
})

# Fallback plugins zoo ships: named in the error for an unknown model_type when one is disabled or failed.
KNOWN_FALLBACKS: Mapping[str, KnownPlugin] = MappingProxyType({
    "transformers": KnownPlugin("transformers", "zoo's built-in fallback for every model_type the installed "
                                "transformers knows", "it is installed with zoo (plugins/zoo_transformers)"),
})


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``zoo plugins`` shows it."""

    name: str
    distribution: str | None
    version: str | None
    status: str  # "ok", "failed" or "disabled"
    error: str | None = None
    architectures: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    fallback: str | None = None  # what its zoo_fallback_architecture covers (its docstring), None: no fallback
    served: tuple[str, ...] = ()  # model_types its fallback has answered for in this process


# The order fallbacks are asked in: tryfirst, plain, trylast (pluggy's markers), then plugin name.
def _fallback_order(impl: Any) -> tuple[int, str]:
    return (0 if impl.tryfirst else 2 if impl.trylast else 1, impl.plugin_name)


@dataclass(frozen=True)
class Registered:
    """An item and the plugin that registered it."""

    item: Any
    plugin: str
    fallback: bool = False  # answered by the plugin's zoo_fallback_architecture, not registered


class Registry:
    """Architectures and checkpoints from plugins. Build one per process (``zoo`` keeps a default).

    ``plugins``: extra ``(name, module_or_object)`` pairs to register besides entry points;
    ``entry_points=False`` loads only those. ``disabled``/``only``/``strict``/``trace`` default to the
    environment settings described in the module docstring. ``known_plugins`` (default
    :data:`KNOWN_PLUGINS`): plugins that the error for an unhandled ``model_type`` may suggest.
    """

    def __init__(
        self,
        plugins: Iterable[tuple[str, Any]] = (),
        *,
        entry_points: bool = True,
        disabled: Iterable[str] | None = None,
        only: Iterable[str] | None = None,
        strict: bool | None = None,
        trace: bool | None = None,
        known_plugins: Mapping[str, KnownPlugin] | None = None,
    ) -> None:
        self._extra = list(plugins)
        self._use_entry_points = entry_points
        self._disabled = set(disabled) if disabled is not None else (name_list("ZOO_DISABLE_PLUGINS") or set())
        self._only = set(only) if only is not None else name_list("ZOO_PLUGINS")
        self.strict = flag("ZOO_STRICT_PLUGINS") if strict is None else strict
        self.trace = flag("ZOO_TRACE_PLUGINS") if trace is None else trace
        self._known = KNOWN_PLUGINS if known_plugins is None else known_plugins
        self._known_fallbacks = KNOWN_FALLBACKS
        self._loaded = False
        self._plugins: dict[str, PluginInfo] = {}
        self._architectures: dict[str, Registered] = {}
        self._checkpoints: dict[str, Registered] = {}  # name or alias -> Registered(Checkpoint)
        self._conflicts: dict[tuple[str, str], list[str]] = {}
        self._fallbacks: list[Any] = []  # pluggy HookImpls of zoo_fallback_architecture, in asking order
        self._served: dict[str, Registered | None] = {}  # model_type -> a fallback's answer (None: none)
        self._fallback_errors: dict[str, list[str]] = {}  # model_type -> what failing fallbacks said
        self._lock = threading.RLock()  # loading and asking fallbacks happen once, whichever thread asks
        self._pm: pluggy.PluginManager | None = None

    # -- loading ---------------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[str, Callable[[], Any], str | None, str | None]]:
        found: list[tuple[str, Callable[[], Any], str | None, str | None]] = []
        if self._use_entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                found.append(
                    (ep.name, ep.load, dist.metadata["Name"] if dist else None, dist.version if dist else None)
                )
        for name, obj in self._extra:
            found.append((name, lambda obj=obj: obj, None, None))
        return found

    def _fail(self, name: str, dist: str | None, version: str | None, error: BaseException, where: str) -> None:
        message = f"{where}: {type(error).__name__}: {error}"
        prev = self._plugins.get(name)
        self._plugins[name] = PluginInfo(name, dist or (prev and prev.distribution), version or (prev and prev.version),
                                         "failed", message)
        if self.strict:
            raise PluginLoadError(f"zoo plugin {name!r} failed {message}") from error
        warnings.warn(
            f"zoo plugin {name!r} failed {message}; it was skipped. "
            f"Fix or uninstall it, or set ZOO_DISABLE_PLUGINS={name} to silence this "
            "(ZOO_STRICT_PLUGINS=1 raises instead).",
            PluginWarning,
            stacklevel=3,
        )

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:  # other threads wait for the tables to be complete
            if self._loaded:
                return
            try:
                self._load_plugins()
            finally:
                self._loaded = True  # once, even when strict mode raised

    def _load_plugins(self) -> None:
        pm = self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for name, load, dist, version in self._candidates():
            if name in self._disabled or (self._only is not None and name not in self._only):
                self._plugins[name] = PluginInfo(name, dist, version, "disabled")
                continue
            if name in self._plugins:
                self._fail(name, dist, version, ValueError(f"another plugin is already named {name!r}"), "at registration")
                continue
            try:
                plugin = load()
                pm.register(plugin, name=name)
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(name, dist, version, exc, "at import")
                continue
            try:
                pm.check_pending()
            except Exception as exc:  # a misspelt hook name
                pm.unregister(name=name)
                self._fail(name, dist, version, exc, "at registration")
                continue
            self._plugins[name] = PluginInfo(name, dist, version, "ok")
        arch = self._call(pm, "zoo_register_architectures", Architecture, lambda a: [a.model_type])
        ckpt = self._call(pm, "zoo_register_checkpoints", Checkpoint, lambda c: [c.name, *c.aliases])
        for table, staged in ((self._architectures, arch), (self._checkpoints, ckpt)):
            for plugin, items in staged.items():
                if self._plugins[plugin].status != "ok":
                    continue
                for key, item in items:
                    self._add(table, key, item, plugin)
        self._fallbacks = sorted(
            (impl for impl in pm.hook.zoo_fallback_architecture.get_hookimpls()
             if self._plugins[impl.plugin_name].status == "ok"
             and not impl.hookwrapper and not getattr(impl, "wrapper", False)),
            key=_fallback_order,
        )
        covers = {impl.plugin_name: _first_line(impl.function.__doc__) or "any model_type it knows"
                  for impl in self._fallbacks}
        for name, info in self._plugins.items():
            if info.status == "ok":
                self._plugins[name] = PluginInfo(
                    info.name, info.distribution, info.version, "ok", None,
                    tuple(k for k, _ in arch.get(name, [])), tuple(key for key, c in ckpt.get(name, []) if key == c.name),  # names, not aliases
                    covers.get(name),
                )

    def _call(self, pm: pluggy.PluginManager, hook_name: str, kind: type,
              keys: Callable[[Any], list[str]]) -> dict[str, list[tuple[str, Any]]]:
        """Call one hook plugin by plugin, staging what each registers; a failing plugin keeps nothing."""
        staged: dict[str, list[tuple[str, Any]]] = {}
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            items: list[tuple[str, Any]] = []

            def register(item: Any, _items: list = items) -> None:
                if not isinstance(item, kind):
                    raise TypeError(f"register() takes a zoo.{kind.__name__}, got {type(item).__name__}")
                for key in keys(item):
                    _items.append((key, item))

            start = time.perf_counter()
            try:
                impl.function(*[{"register": register}[arg] for arg in impl.argnames])
            except Exception as exc:
                if self.trace:
                    print(f"zoo trace: {plugin}.{hook_name}() raised {type(exc).__name__}: {exc}", file=sys.stderr)
                self._fail(plugin, None, None, exc, f"in {hook_name}()")
                continue
            if self.trace:
                ms = (time.perf_counter() - start) * 1000
                names = ", ".join(k for k, _ in items) or "nothing"
                print(f"zoo trace: {plugin}.{hook_name}() registered {names} ({ms:.1f} ms)", file=sys.stderr)
            staged[plugin] = items
        return staged

    def _add(self, table: dict[str, Registered], key: str, item: Any, plugin: str) -> None:
        kind = "model_type" if isinstance(item, Architecture) else "checkpoint name"
        if key in table or (kind, key) in self._conflicts:
            owners = self._conflicts.setdefault((kind, key), [table.pop(key).plugin] if key in table else [])
            owners.append(plugin)
            if self.strict:
                raise self._duplicate(kind, key)
            return
        table[key] = Registered(item, plugin)

    def _duplicate(self, kind: str, key: str) -> DuplicateRegistrationError:
        owners = self._conflicts[(kind, key)]
        return DuplicateRegistrationError(
            f"{kind} {key!r} is registered by more than one plugin: {' and '.join(repr(p) for p in owners)}; "
            f"uninstall one, or disable it with ZOO_DISABLE_PLUGINS={owners[-1]}"
        )

    # -- queries ---------------------------------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, with what it registered and, for fallbacks, the types served so far."""
        self._load()
        served: dict[str, list[str]] = {}
        for model_type, found in sorted(self._served.items()):
            if found is not None:
                served.setdefault(found.plugin, []).append(model_type)
        return [dataclasses.replace(info, served=tuple(served.get(info.name, ())))
                for info in self._plugins.values()]

    def conflicts(self) -> dict[tuple[str, str], list[str]]:
        self._load()
        return {k: list(v) for k, v in self._conflicts.items()}

    def architectures(self) -> dict[str, Registered]:
        """model_type -> Registered(Architecture, plugin), sorted by model_type: what plugins registered.
        Fallbacks are not asked (see :meth:`served`)."""
        self._load()
        return dict(sorted(self._architectures.items()))

    def served(self) -> dict[str, Registered]:
        """model_type -> Registered(Architecture, plugin, fallback=True): what fallbacks answered so far."""
        self._load()
        return {k: v for k, v in sorted(self._served.items()) if v is not None}

    def architecture(self, model_type: str) -> Registered:
        """The architecture registered for ``model_type``, else the first fallback's answer for it
        (``Registered.fallback`` is then True). An unknown one is an
        :class:`~zoo.errors.UnknownArchitectureError` that names the installed architectures, close
        matches, the plugin that provides it (:data:`KNOWN_PLUGINS`), failing fallbacks and a disabled
        built-in fallback (:data:`KNOWN_FALLBACKS`); what transformers knows of it is :mod:`zoo.model.compat`'s
        to add (:func:`zoo.model.config.parse_config` does)."""
        self._load()
        if model_type in self._architectures:
            return self._architectures[model_type]
        if ("model_type", model_type) in self._conflicts:
            raise self._duplicate("model_type", model_type)
        found = self._ask_fallbacks(model_type)
        if found is not None:
            return found
        installed = sorted(self._architectures)
        lines = [f"no installed zoo plugin handles model_type {model_type!r}.",
                 f"Installed architectures: {', '.join(installed) or 'none'}."]
        close = difflib.get_close_matches(model_type, installed, n=3, cutoff=0.6)
        if close:
            lines.append(f"Did you mean: {', '.join(close)}?")
        known = self._known.get(model_type)
        if known is not None:
            info = self._plugins.get(known.name)
            if info is not None and info.status == "disabled":
                lines.append(f"It is provided by plugin {known.name!r} ({known.description}), which is installed "
                             "but disabled: check ZOO_DISABLE_PLUGINS and ZOO_PLUGINS.")
            elif info is not None and info.status == "failed":
                lines.append(f"It is provided by plugin {known.name!r} ({known.description}), which failed: "
                             f"{info.error}. See zoo plugins.")
            else:
                lines.append(f"It is provided by {known.description}: {known.install}.")
        lines += [f"Fallback {said}." for said in self._fallback_errors.get(model_type, ())]
        for name, fallback in self._known_fallbacks.items():
            info = self._plugins.get(name)
            if info is not None and info.status == "disabled":
                lines.append(f"Plugin {name!r} ({fallback.description}) is installed but disabled: "
                             "check ZOO_DISABLE_PLUGINS and ZOO_PLUGINS.")
            elif info is not None and info.status == "failed":
                lines.append(f"Plugin {name!r} ({fallback.description}) failed: {info.error}. See zoo plugins.")
        raise UnknownArchitectureError(" ".join(lines))

    def _ask_fallbacks(self, model_type: str) -> Registered | None:
        """The first fallback's answer for ``model_type`` (asked once per type; see the module docstring)."""
        if model_type in self._served:
            return self._served[model_type]
        with self._lock:
            if model_type in self._served:
                return self._served[model_type]
            found = None
            for impl in self._fallbacks:
                plugin = impl.plugin_name
                start = time.perf_counter()
                try:
                    answer = impl.function(*[{"model_type": model_type}[arg] for arg in impl.argnames])
                    if answer is not None and not isinstance(answer, Architecture):
                        raise TypeError(f"returned a {type(answer).__name__}, not a zoo.Architecture or None")
                    if answer is not None and answer.model_type != model_type:
                        raise ValueError(f"answered with an Architecture for {answer.model_type!r}")
                except Exception as exc:
                    self._fallback_failed(plugin, model_type, exc)
                    continue
                if self.trace:
                    ms = (time.perf_counter() - start) * 1000
                    said = "answered" if answer is not None else "returned None"
                    print(f"zoo trace: {plugin}.zoo_fallback_architecture({model_type!r}) {said} ({ms:.1f} ms)",
                          file=sys.stderr)
                if answer is not None:
                    found = Registered(answer, plugin, fallback=True)
                    break
            self._served[model_type] = found
            return found

    def _fallback_failed(self, plugin: str, model_type: str, exc: Exception) -> None:
        message = f"{plugin!r} failed for model_type {model_type!r}: {type(exc).__name__}: {exc}"
        if self.trace:
            print(f"zoo trace: {plugin}.zoo_fallback_architecture({model_type!r}) raised "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
        if self.strict:
            raise PluginLoadError(f"zoo plugin {message}") from exc
        self._fallback_errors.setdefault(model_type, []).append(message)
        warnings.warn(f"zoo plugin {message}; the next fallback was asked. Fix or uninstall it, or set "
                      f"ZOO_DISABLE_PLUGINS={plugin} (ZOO_STRICT_PLUGINS=1 raises instead).",
                      PluginWarning, stacklevel=4)

    def event_hooks(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """``[(plugin, function)]`` implementing the event hook ``hook`` (``zoo_version_created``, ...), of
        the plugins that loaded, in pluggy's calling order. The store's event dispatcher calls each on its
        own (:class:`zoo.store.events.Dispatcher`)."""
        if hook not in EVENT_HOOKS:
            raise ValueError(f"{hook!r} is not an event hook ({', '.join(EVENT_HOOKS)})")
        self._load()
        assert self._pm is not None
        impls = getattr(self._pm.hook, hook).get_hookimpls()
        return [(impl.plugin_name, impl.function) for impl in reversed(impls)
                if self._plugins.get(impl.plugin_name, PluginInfo("", None, None, "ok")).status == "ok"]

    def checkpoints(self) -> dict[str, Registered]:
        """name -> Registered(Checkpoint, plugin), aliases included."""
        self._load()
        return dict(sorted(self._checkpoints.items()))

    def checkpoint(self, name: str) -> Registered | None:
        self._load()
        if ("checkpoint name", name) in self._conflicts:
            raise self._duplicate("checkpoint name", name)
        return self._checkpoints.get(name)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0].strip().rstrip(".")


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry of installed plugins, created on first use (``zoo.default_registry``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default
