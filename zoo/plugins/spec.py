"""What plugins register: :class:`Architecture` and :class:`Checkpoint`, plain frozen data.

Classes may be given as objects or as ``"module:attribute"`` strings. Strings are imported only when a
model is built, so listing plugins (``zoo plugins``) never imports torch or transformers.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

ClassRef = Union[str, type, Any]


def compile_renames(renames: Mapping[str, str], owner: str, what: str = "key_renames"
                    ) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Check a plugin's ``key_renames`` at registration: each key must be a valid regular expression."""
    compiled = []
    for pattern, replacement in renames.items():
        try:
            compiled.append((re.compile(pattern), replacement))
        except re.error as exc:
            raise ValueError(f"Architecture {owner!r}: {what} pattern {pattern!r} is not a regular "
                             f"expression ({exc})") from exc
    return tuple(compiled)


def resolve_class(ref: ClassRef, owner: str | None = None) -> Any:
    """Turn ``"pkg.module:Name"`` into the object; pass objects through. ``owner`` (the plugin that
    registered the reference) is named in the error when the import fails."""
    from ..errors import PluginLoadError

    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    who = f"plugin {owner!r}" if owner else "a plugin"
    if not module or not attr:
        raise PluginLoadError(f"{who} names class {ref!r}, which does not look like 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(
            f"{who} names class {ref!r}, which cannot be imported ({type(exc).__name__}: {exc}). "
            "Install what the plugin needs, or upgrade or disable it (ZOO_DISABLE_PLUGINS)"
        ) from exc
    return obj


@dataclass(frozen=True)
class Architecture:
    """One model family, e.g. BERT.

    - ``model_type``: the ``config.json`` ``model_type`` it handles (``"bert"``).
    - ``config_class``: has ``from_dict(dict)`` and instances have ``to_dict()``
      (transformers' ``PretrainedConfig`` does).
    - ``heads``: ``architectures`` class name -> model class. A model class is a ``torch.nn.Module``
      built as ``cls(config)``; it keeps the config as ``.config``; it may define ``tie_weights()``
      (called after loading) and ``base_model_prefix`` (checkpoints of the bare model load into heads).
    - ``tasks``: task name -> head name (``"fill-mask"`` -> ``"BertForMaskedLM"``) for ``task=``.
    - ``default_head``: used when ``config.json`` has no ``architectures``; defaults to the first head.
    - ``tokenizer_class``: has ``from_pretrained(dir)``; defaults to transformers' ``AutoTokenizer``.
    - ``key_renames``: older checkpoint key names, as regular expression -> replacement (``re.sub``),
      applied to every key before loading (``{r"\\.ln_(\\d)\\.": r".norm\\1."}``). See :mod:`zoo.model.conversion`.
    - ``transformers_conversions``: for heads that are transformers ``PreTrainedModel`` classes, also apply
      transformers' own checkpoint conversions (legacy ``gamma``/``beta`` names, merged experts...), as
      ``from_pretrained`` does. On by default.
    - ``optional_weights``: regular expressions of body weights a checkpoint may lack (initialised with a
      warning, e.g. BERT's pooler, which masked-LM checkpoints do not have). Any other body weight the
      checkpoint lacks is an error: it would be random where the checkpoint's own model had trained values.
    - ``transformers_loading``: heads (class names, or ``"*"`` for all) whose checkpoints ``zoo.load`` hands to
      transformers' own ``from_pretrained`` (local files only, no remote code) instead of its fast path, each
      with the reason, which ``zoo info`` shows: for classes where the fast path is not proven right.
    """

    model_type: str
    config_class: ClassRef
    heads: Mapping[str, ClassRef]
    tasks: Mapping[str, str] = field(default_factory=dict)
    default_head: str | None = None
    tokenizer_class: ClassRef | None = None
    description: str = ""
    key_renames: Mapping[str, str] = field(default_factory=dict)
    transformers_conversions: bool = True
    optional_weights: tuple[str, ...] = ()
    transformers_loading: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model_type or not isinstance(self.model_type, str):
            raise ValueError("Architecture.model_type must be a non-empty string")
        if not self.heads:
            raise ValueError(f"Architecture {self.model_type!r} registers no heads")
        for task, head in self.tasks.items():
            if head not in self.heads:
                raise ValueError(f"Architecture {self.model_type!r}: task {task!r} names unknown head {head!r}")
        if self.default_head is not None and self.default_head not in self.heads:
            raise ValueError(f"Architecture {self.model_type!r}: default_head {self.default_head!r} is not a head")
        for head in self.transformers_loading:
            if head != "*" and head not in self.heads:
                raise ValueError(f"Architecture {self.model_type!r}: transformers_loading names unknown head {head!r}")
        object.__setattr__(self, "transformers_loading", dict(self.transformers_loading))
        compile_renames(self.key_renames, self.model_type)
        object.__setattr__(self, "key_renames", dict(self.key_renames))
        object.__setattr__(self, "optional_weights", tuple(self.optional_weights))
        compile_renames(dict.fromkeys(self.optional_weights, ""), self.model_type, "optional_weights")

    def transformers_loading_reason(self, head: str) -> str | None:
        """Why ``head`` loads through transformers' ``from_pretrained`` (None: zoo's fast path)."""
        return self.transformers_loading.get(head) or self.transformers_loading.get("*")

    @property
    def base_head(self) -> str:
        return self.default_head or next(iter(self.heads))

    def head_for(self, task: str | None, architectures: list[str] | None) -> str:
        """The head to build: ``task`` (a task or head name) wins, then ``architectures[0]``, then the default."""
        from ..errors import UnknownTaskError

        if task is not None:
            if task in self.heads:
                return task
            if task in self.tasks:
                return self.tasks[task]
            raise UnknownTaskError(
                f"task {task!r} is not known for model_type {self.model_type!r}; "
                f"choose a task ({', '.join(sorted(self.tasks)) or 'none'}) "
                f"or a head ({', '.join(self.heads)})"
            )
        for name in architectures or ():
            if name in self.heads:
                return name
        if architectures:
            raise UnknownTaskError(
                f"config.json asks for architectures {architectures}, which model_type "
                f"{self.model_type!r} does not provide; pass task= with one of: {', '.join(self.heads)}"
            )
        return self.base_head


@dataclass(frozen=True)
class Checkpoint:
    """A named checkpoint: one row of a plugin's data table.

    ``name`` (``"bert-base-cased"``) resolves to the hub repository ``repo``
    (``"google-bert/bert-base-cased"``) at ``revision``. ``aliases`` are other names for the same row.
    """

    name: str
    repo: str
    revision: str = "main"
    aliases: tuple[str, ...] = ()
    model_type: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        from ..names import validate_name, validate_repo_id

        validate_name(self.name)
        for alias in self.aliases:
            validate_name(alias)
        validate_repo_id(self.repo)
        object.__setattr__(self, "aliases", tuple(self.aliases))
