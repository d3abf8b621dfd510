"""zoo: a plugin-based model-zoo registry with a caching daemon.

``import zoo`` is cheap: torch, transformers, huggingface_hub and watchdog are imported only by the
functions that use them.
"""

from ._version import __version__
from .api import architectures, build, default_registry, load, load_config, load_tokenizer, save
from .model.config import ModelConfig
from .errors import (
    AmbiguousNameError,
    ArchitectureError,
    CacheError,
    CacheWarning,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    LockTimeoutError,
    MissingDependencyError,
    QuotaError,
    StoreAccessError,
    StoreFullError,
    MissingWeightsError,
    NameResolutionError,
    ObjectStoreError,
    OfflineError,
    RemoteError,
    RemoteNotFoundError,
    UnknownNameError,
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    DuplicateRegistrationError,
    IncompatibleVersionError,
    PluginError,
    PluginLoadError,
    PluginWarning,
    ProtectedError,
    UnknownArchitectureError,
    UnknownTaskError,
    UnsafeCheckpointError,
    VersionWarning,
    WeightsMismatchError,
    WeightsNotFoundError,
    WeightsWarning,
    ZooError,
    ZooWarning,
)
from .plugins.hookspecs import hookimpl
from .plugins.registry import Registry
from .plugins.spec import Architecture, Checkpoint
from .registry import history, label, lineage, search, tag, untag

__all__ = [
    "AmbiguousNameError", "CacheError", "CacheWarning", "QuotaError", "StoreAccessError", "StoreFullError", "IntegrityError", "InvalidArgumentError", "InvalidNameError", "LockTimeoutError", "MissingDependencyError", "MissingWeightsError",
    "NameResolutionError", "ObjectStoreError", "OfflineError", "RemoteError", "RemoteNotFoundError", "UnknownNameError",
    "Architecture", "ArchitectureError", "Checkpoint", "CheckpointError", "CheckpointNotFoundError",
    "ConfigError", "CorruptCheckpointError", "DuplicateRegistrationError", "IncompatibleVersionError",
    "ModelConfig", "PluginError", "PluginLoadError", "PluginWarning", "ProtectedError", "Registry", "UnknownArchitectureError",
    "UnknownTaskError", "UnsafeCheckpointError", "VersionWarning", "WeightsMismatchError",
    "WeightsNotFoundError", "WeightsWarning", "ZooError", "ZooWarning", "__version__", "architectures",
    "build", "default_registry", "history", "hookimpl", "label", "lineage", "load", "load_config", "load_tokenizer", "save",
    "search", "tag", "untag",
]
