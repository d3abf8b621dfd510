"""The hooks a zoo plugin may implement.

A plugin is a module (or object) with functions decorated by ``@zoo.hookimpl`` and named after the
specs below, exposed through the ``zoo`` entry-point group::

    [project.entry-points.zoo]
    tinynet = "zoo_tinynet"

zoo's own BERT support (``plugins/zoo_bert``) and its transformers fallback (``plugins/zoo_transformers``)
are registered exactly this way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from ..store.events import AliasMoved, LabelsChanged, VersionCreated, VersionRemoved
    from .spec import Architecture

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_register_architectures(register: Callable[..., None]) -> None:
    """Register the model architectures this plugin provides.

    Called by: :class:`zoo.plugins.registry.Registry`, once per process, the first time an architecture is
    looked up (``zoo.load``, ``zoo.build``, ``zoo info``, ``zoo plugins``).

    What to pass: call ``register(zoo.Architecture(...))`` once per ``model_type``. Give classes as
    ``"module:Name"`` strings so that listing plugins stays cheap. Registering a ``model_type`` that
    another plugin also registers is reported as a :class:`zoo.DuplicateRegistrationError` naming both.
    If the hook raises, nothing it registered is kept and the plugin is reported as failed.
    """


@hookspec
def zoo_register_checkpoints(register: Callable[..., None]) -> None:
    """Register named checkpoints as a data table.

    Called by: :class:`zoo.plugins.registry.Registry`, once per process, the first time a name is resolved
    (``zoo.load("bert-base-cased")``, ``zoo pull``) or listed.

    What to pass: call ``register(zoo.Checkpoint(name, repo, revision="main", aliases=(...)))`` once per
    row, e.g. ``zoo.Checkpoint("bert-base-cased", "google-bert/bert-base-cased")``. Names and aliases
    share one namespace across plugins; a clash is reported naming both plugins.
    """


@hookspec(firstresult=True)
def zoo_fallback_architecture(model_type: str) -> "Architecture | None":
    """Answer for a ``model_type`` that no plugin registered, or return None.

    Called by: :meth:`zoo.plugins.registry.Registry.architecture`, the first time in a process that a
    ``model_type`` registered by no plugin is looked up (``zoo.load``, ``zoo.load_config``, ``zoo info``
    on such a checkpoint); the answer (or the lack of one) is kept for that ``model_type``. Never called
    by ``import zoo``, ``zoo plugins`` or ``zoo ls``, so an implementation may import heavy libraries
    inside the function. A ``model_type`` that some plugin registers never reaches a fallback:
    registered architectures always win.

    What to pass: return a ``zoo.Architecture`` whose ``model_type`` is the one asked, or None for a
    type the plugin does not know. The first answer wins. Fallbacks are asked in this order:
    implementations marked ``@zoo.hookimpl(tryfirst=True)``, then unmarked ones, then those marked
    ``trylast=True`` (zoo's built-in ``transformers`` plugin is ``trylast``: any other fallback that
    answers wins over it); within each group, by plugin name. A fallback that raises or returns
    something else is reported as a :class:`zoo.PluginWarning` naming it (raised in strict mode) and
    the next one is asked. ``zoo plugins`` shows the first line of this function's docstring as what
    the fallback covers, and the types it has served in this process.
    """


# -- events: what happened in a store (zoo.store.events); the four share the rules below ----------------

_EVENT_RULES = """
    Called by: the store's writer: on a shared store the daemon (install the plugin where the daemon runs),
    else the process that made the change. After the change is durable (the manifest, alias or labels are on
    disk) and in the name's history (zoo history), on a thread zoo runs for each plugin, in the order the
    events happened: the hook can neither undo nor delay the change. A hook that raises is logged naming the
    plugin and the hook; one still running after ``zoo.store.events.HOOK_TIMEOUT`` (10 s) is logged as hung and
    left running (that plugin's later events wait behind it); other plugins and the next events are called
    regardless. A process that made a change waits up to 5 s at exit for its hooks, then names those running.

    What to pass: nothing (the return value is ignored). ``event`` is a frozen record: ``name`` (as zoo shows
    it: ``my-bert``), ``repo`` (as stored: ``local/my-bert``), ``version`` (``"v3"``), ``id`` (the version's
    commit or content id), ``who`` (``uid``, ``user``, ``host``; through the daemon the client that asked,
    never the daemon's user), ``when`` (ISO 8601, UTC), the fields named above, and ``as_json()`` (the body
    ``zoo daemon --webhook`` posts). Do slow work (a network call) in the hook itself: zoo already runs it apart.
"""


@hookspec
def zoo_version_created(event: "VersionCreated") -> None:
    """A version was created (zoo import, zoo.save, zoo pull, a drop folder): ``event.source`` (``import:DIR``,
    ``zoo.save``, ``hub:ENDPOINT``, ``drop:FOLDER``), ``event.base`` (``{"name", "version", "id"}`` of the
    model it was made from, or None) and ``event.description``."""


@hookspec
def zoo_alias_moved(event: "AliasMoved") -> None:
    """An alias was set, moved or removed (zoo tag, zoo untag, ``zoo.tag``): ``event.alias`` now points at
    ``event.version`` (None: removed); it pointed at ``event.previous`` (None: it is new)."""


@hookspec
def zoo_labels_changed(event: "LabelsChanged") -> None:
    """Labels of ``event.version`` were set (``event.labels``: the keys whose values changed) or removed
    (``event.removed``: the keys) by zoo label or ``zoo.label``."""


@hookspec
def zoo_version_removed(event: "VersionRemoved") -> None:
    """A version was removed: ``event.reason`` is ``"removed"`` (zoo rm) or ``"evicted"`` (the daemon's
    ``--max-size`` quota made room)."""


for _spec in (zoo_version_created, zoo_alias_moved, zoo_labels_changed, zoo_version_removed):
    _spec.__doc__ = (_spec.__doc__ or "") + "\n" + _EVENT_RULES
