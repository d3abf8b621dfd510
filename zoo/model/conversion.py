"""How a checkpoint's tensor names become the model's: key renames and tensor conversions.

Checkpoints outlive the code that wrote them. ``google-bert/bert-base-cased`` stores its LayerNorms as
``LayerNorm.gamma`` / ``LayerNorm.beta``; a Mixtral checkpoint stores one tensor per expert where the
model now holds them merged. Every checkpoint key goes through two sources of rules, in this order:

1. the architecture plugin's own ``key_renames`` (data: regular expression -> replacement), for the
   older names of a plugin's own classes;
2. when the model class is a transformers ``PreTrainedModel`` (and the plugin leaves
   ``transformers_conversions`` on): transformers' own checkpoint conversion mapping for the built model,
   which holds the legacy renames every model gets (``LayerNorm.gamma`` -> ``LayerNorm.weight``, in the
   scope transformers applies them) and the per-model conversions (merged experts, split ``qkv``...).
   This module is the only importer of transformers' loading internals.

Renames cost nothing. Conversion operations run on the memory-mapped tensors: a split is a view of the
file, a merge makes the one copy it must. What was applied is returned as :class:`Applied` records, so
that ``zoo info`` and ``zoo.load(..., output_loading_info=True)`` can say so.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..plugins.spec import compile_renames

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Applied:
    """One rule that changed checkpoint keys: what it did, where it comes from, to how many keys."""

    kind: str  # "rename" or "conversion"
    source: str  # "plugin 'bert'", "transformers legacy", "transformers 'mixtral'"
    rule: str  # "LayerNorm.gamma -> LayerNorm.weight"
    keys: int

    def __str__(self) -> str:
        return f"{self.keys} {self.kind}s by {self.source}: {self.rule}"


def convert(model: "torch.nn.Module", state: dict[str, "torch.Tensor"], architecture: Any,
            plugin: str | None = None) -> tuple[dict[str, "torch.Tensor"], tuple[Applied, ...]]:
    """``state`` with the plugin's renames, then transformers' renames and conversions, applied to the keys
    that name no weight of ``model`` (as ``from_pretrained`` does: a key the model has is taken as it is).
    A checkpoint in today's names costs nothing here: transformers' mapping is not even built."""
    expected = {*model.state_dict().keys(), *(name for name, _ in model.named_buffers())}  # non-persistent too
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ()]
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."

    def known(key: str) -> bool:
        return (key in expected or prefix + key in expected or (key.startswith(prefix) and key[len(prefix):] in expected)
                or any(p.search(key) for p in ignored))

    todo = {k: v for k, v in state.items() if not known(k)}
    if not todo:
        return state, ()
    applied: list[Applied] = []
    renames = compile_renames(getattr(architecture, "key_renames", None) or {}, architecture.model_type)
    if renames:
        todo, counts = _plugin_renames(todo, renames)
        applied += [Applied("rename", f"plugin {plugin or architecture.model_type!r}", rule, n)
                    for rule, n in counts.items()]
    if getattr(architecture, "transformers_conversions", True) and _is_transformers_model(model):
        todo, more = _renames_cache.apply(model, todo, expected) or _transformers_conversions(model, todo, expected)
        applied += more
    return {**{k: v for k, v in state.items() if known(k)}, **todo}, tuple(applied)


def _plugin_renames(state: dict[str, Any], renames: tuple[tuple[re.Pattern[str], str], ...]
                    ) -> tuple[dict[str, Any], Counter[str]]:
    counts: Counter[str] = Counter()
    out = {}
    for key, tensor in state.items():
        for pattern, replacement in renames:
            new = pattern.sub(replacement, key)
            if new != key:
                counts[f"{pattern.pattern} -> {replacement}"] += 1
                key = new
        out[key] = tensor
    return out, counts


def _is_transformers_model(model: Any) -> bool:
    import sys

    if "transformers" not in sys.modules:  # a plain-torch plugin: never import transformers for it
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _rule(transform: Any) -> str:
    sources = ", ".join(getattr(transform, "_original_source_patterns", transform.source_patterns))
    targets = ", ".join(getattr(transform, "_original_target_patterns", transform.target_patterns))
    return f"{sources} -> {targets}".replace("\\", "")


class _RenamesCache:
    """What transformers' renames did to a set of keys, kept as data on disk, so that the next process does
    not build transformers' whole conversion table (about 1,100 compiled patterns, ~50 ms) again to rename
    the same old keys. Keyed by the transformers version, the model class, its keys and the keys renamed;
    only pure renames are kept (a conversion that computes tensors runs every time). Lives in
    ``$ZOO_HOME/conversions``; a store this process cannot write simply gets no cache."""

    @staticmethod
    def _path(model: Any, keys: list[str], expected: set[str]) -> Any:
        import hashlib
        from importlib import metadata

        from .._env import zoo_home

        h = hashlib.sha256()
        for part in (metadata.version("transformers"), f"{type(model).__module__}.{type(model).__qualname__}",
                     "\0".join(sorted(expected)), "\0".join(keys)):
            h.update(part.encode() + b"\1")
        return zoo_home() / "conversions" / f"{h.hexdigest()[:32]}.json"

    def apply(self, model: Any, state: dict[str, Any], expected: set[str]) -> tuple[dict[str, Any], list[Applied]] | None:
        import json

        path = self._path(model, sorted(state), expected)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            renames = data["renames"]
            if set(renames) != set(state):
                return None
            applied = [Applied(*item) for item in data["applied"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {renames[k]: v for k, v in state.items()}, applied

    def store(self, model: Any, state: dict[str, Any], renames: dict[str, str], applied: list[Applied],
              expected: set[str]) -> None:
        import json

        from .. import atomic

        path = self._path(model, sorted(state), expected)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path, json.dumps({"renames": renames, "applied": [
                [a.kind, a.source, a.rule, a.keys] for a in applied]}))
        except OSError:
            pass  # a store we may not write: no cache, the same result


_renames_cache = _RenamesCache()


def _transformers_conversions(model: Any, state: dict[str, Any], expected: set[str]
                              ) -> tuple[dict[str, Any], list[Applied]]:
    """Apply transformers' conversion mapping for ``model`` the way ``from_pretrained`` does: every renaming
    that matches, in order, then at most one converter per key; converters gather their tensors (e.g. all
    experts of a layer, in natural order) and run their operations once per target."""
    from copy import deepcopy

    from transformers.conversion_mapping import get_checkpoint_conversion_mapping, get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, apply_converters, dot_natural_key

    model_transforms = get_model_conversion_mapping(model, add_legacy=False)
    legacy = get_checkpoint_conversion_mapping("legacy") or []
    source = f"transformers {model.config.model_type!r}"
    labelled = [(t, source) for t in model_transforms] + [(t, "transformers legacy") for t in legacy]
    renamings = [(t, label) for t, label in labelled if isinstance(t, WeightRenaming)]
    converters = [t for t, _ in labelled if isinstance(t, WeightConverter)]
    if not renamings and not converters:
        return state, []
    by_pattern = {p: c for c in converters for p in c.source_patterns}
    renamed: Counter[tuple[str, str]] = Counter()
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    pending: dict[str, Any] = {}  # first target key -> a fresh converter holding its source tensors
    for key in sorted(state, key=dot_natural_key):
        new = key
        for renaming, label in renamings:
            candidate, _ = renaming.rename_source_key(new)
            if candidate != new:
                renamed[(label, _rule(renaming))] += 1
                new = candidate
        new, pattern = apply_converters(new, converters)
        if pattern is None:
            out[new] = state[key]
            names[key] = new
            continue
        pending.setdefault(new, deepcopy(by_pattern[pattern])).add_tensor(new, key, pattern, state[key])
    applied = [Applied("rename", label, rule, n) for (label, rule), n in renamed.items()]
    converted: Counter[str] = Counter()
    for first, converter in pending.items():
        produced = converter.convert(first, model=model, config=model.config)
        for name, tensor in produced.items():
            out[name] = tensor[0] if isinstance(tensor, list) else tensor
        converted[_rule(converter)] += len(produced)
    applied += [Applied("conversion", source, rule, n) for rule, n in converted.items()]
    if not pending:
        _renames_cache.store(model, state, names, applied, expected)
    return out, applied


def summary(applied: tuple[Applied, ...]) -> list[str]:
    """Lines for ``zoo info``: one per source (``28 legacy key renames applied``), then each rule."""
    groups: dict[tuple[str, str], list[Applied]] = {}
    for item in applied:
        groups.setdefault((item.kind, item.source), []).append(item)
    lines = []
    for (kind, source), items in groups.items():
        total = sum(i.keys for i in items)
        if kind == "conversion":
            lines.append(f"{total} tensors converted by {source}")
        elif source == "transformers legacy":
            lines.append(f"{total} legacy key renames applied")
        else:
            lines.append(f"{total} key renames applied by {source}")
        lines += [f"  {i.rule} ({i.keys})" for i in items]
    return lines
