"""The hooks a zoo plugin may implement.

A plugin is a module (or object) with functions decorated by ``@zoo.hookimpl`` and named after the
specs below, exposed through the ``zoo`` entry-point group::

    [project.entry-points.zoo]
    tinynet = "zoo_tinynet"

zoo's own BERT support (``plugins/zoo_bert``) is registered exactly this way.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_register_architectures(register: Callable[..., None]) -> None:
    """Register the model architectures this plugin provides.

    Called by: :class:`zoo.registry.Registry`, once per process, the first time an architecture is
    looked up (``zoo.load``, ``zoo.build``, ``zoo info``, ``zoo plugins``).

    What to pass: call ``register(zoo.Architecture(...))`` once per ``model_type``. Give classes as
    ``"module:Name"`` strings so that listing plugins stays cheap. Registering a ``model_type`` that
    another plugin also registers is reported as a :class:`zoo.DuplicateRegistrationError` naming both.
    If the hook raises, nothing it registered is kept and the plugin is reported as failed.
    """


@hookspec
def zoo_register_checkpoints(register: Callable[..., None]) -> None:
    """Register named checkpoints as a data table.

    Called by: :class:`zoo.registry.Registry`, once per process, the first time a name is resolved
    (``zoo.load("bert-base-cased")``, ``zoo pull``) or listed.

    What to pass: call ``register(zoo.Checkpoint(name, repo, revision="main", aliases=(...)))`` once per
    row, e.g. ``zoo.Checkpoint("bert-base-cased", "google-bert/bert-base-cased")``. Names and aliases
    share one namespace across plugins; a clash is reported naming both plugins.
    """
