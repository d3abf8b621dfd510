"""Every error and warning zoo raises.

One base class per kind, each also inheriting the builtin a generic handler would catch::

    ZooError
    ├── InvalidArgumentError (ValueError)                 e.g. dtype= names no torch dtype
    ├── MissingDependencyError (ModuleNotFoundError)      a package this call needs is not installed
    │                                                     (torch): the message gives the install command
    ├── CheckpointError
    │   ├── CheckpointNotFoundError (FileNotFoundError)   path or name that does not exist
    │   ├── ConfigError (ValueError)                      config.json missing, malformed or incomplete
    │   ├── WeightsNotFoundError (FileNotFoundError)      no weights file zoo can read
    │   ├── CorruptCheckpointError (ValueError)           truncated file, bad header, missing shard
    │   ├── UnsafeCheckpointError (ValueError)            a pickle that tries to run code, or a format
    │   │                                                 only a full unpickle reads (legacy tar .bin)
    │   ├── WeightsMismatchError (ValueError)             missing / unexpected keys in strict mode
    │   │   └── MissingWeightsError                       body weights the checkpoint lacks (always)
    │   └── IncompatibleVersionError (RuntimeError)       saved by a newer transformers, strict mode
    ├── ArchitectureError
    │   ├── UnknownArchitectureError (KeyError)           no plugin registers this model_type / head
    │   └── UnknownTaskError (KeyError)                   task= names no head of the architecture
    ├── PluginError
    │   ├── PluginLoadError (ImportError)                 a plugin failed at import or inside a hook (strict)
    │   └── DuplicateRegistrationError (ValueError)       two plugins claim one name
    ├── NameResolutionError
    │   ├── InvalidNameError (ValueError)                 path traversal, absolute path, bad characters
    │   ├── AmbiguousNameError (ValueError)               a bare name that means two things: use a prefix
    │   └── UnknownNameError (KeyError)                   no directory, table name or cached name
    └── CacheError                                        the store (zoo.store)
        ├── IntegrityError (ValueError)                   stored or downloaded data does not match its digest
        ├── LockTimeoutError (TimeoutError)               a lock held past ZOO_LOCK_TIMEOUT
        ├── StoreAccessError (PermissionError)            the store is not writable (or readable) by you
        ├── ProtectedError (PermissionError)              an aliased version removed, or an alias or version
        │                                                 changed through the daemon by whom may not
        ├── StoreFullError (OSError)                      no space left where zoo writes
        ├── QuotaError (OSError)                          the daemon's quota cannot make room
        ├── ObjectStoreError (OSError)                    the object store (s3://) failed or is unreachable
        └── RemoteError                                   the hub answered an error or was unreachable
            ├── RemoteNotFoundError (FileNotFoundError)   no such repository, revision or file
            └── OfflineError (ConnectionError)            not cached and offline mode is on

    ZooWarning (UserWarning)
    ├── VersionWarning          checkpoint saved by a newer transformers than the installed one
    ├── WeightsWarning          missing / unexpected keys
    ├── PluginWarning           a plugin failed and was skipped
    └── CacheWarning            an unreadable manifest, skipped by a scan of the store

Messages echo the input, say what was expected, and give the fix.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error zoo raises."""


class InvalidArgumentError(ZooError, ValueError):
    """An argument zoo cannot use (e.g. an unknown dtype)."""


class MissingDependencyError(ZooError, ModuleNotFoundError):
    """A module zoo needs for this call is not installed; the message gives the install command
    (raised by :func:`zoo._deps.require`)."""


class CheckpointError(ZooError):
    """Something is wrong with a saved directory."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    pass


class ConfigError(CheckpointError, ValueError):
    pass


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    pass


class CorruptCheckpointError(CheckpointError, ValueError):
    pass


class UnsafeCheckpointError(CheckpointError, ValueError):
    pass


class WeightsMismatchError(CheckpointError, ValueError):
    pass


class MissingWeightsError(WeightsMismatchError):
    """Weights of the checkpoint's own model are absent: loading would leave them random."""


class IncompatibleVersionError(CheckpointError, RuntimeError):
    pass


class ArchitectureError(ZooError):
    pass


class UnknownArchitectureError(ArchitectureError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownTaskError(ArchitectureError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginError(ZooError):
    pass


class PluginLoadError(PluginError, ImportError):
    pass


class DuplicateRegistrationError(PluginError, ValueError):
    pass


class NameResolutionError(ZooError):
    pass


class InvalidNameError(NameResolutionError, ValueError):
    pass


class AmbiguousNameError(NameResolutionError, ValueError):
    pass


class UnknownNameError(NameResolutionError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CacheError(ZooError):
    """Base class of the store's errors (zoo.store)."""


class IntegrityError(CacheError, ValueError):
    pass


class LockTimeoutError(CacheError, TimeoutError):
    pass


class StoreAccessError(CacheError, PermissionError):
    """The store (or the folder zoo writes into) does not let this user do what was asked."""


class ProtectedError(CacheError, PermissionError):
    """A change the store refuses: an aliased version removed, or (through the daemon) an alias or version
    changed by someone other than who made it, root or an admin. The message names who may."""


class QuotaError(CacheError, OSError):
    """The store cannot make room for a request: the quota (``zoo daemon --max-size``) would be exceeded
    and what could go is pinned, leased or the newest version of its name, or the disk is full.
    Raised before any download. ``needed``: the bytes that could not be found."""

    def __init__(self, message: str, *, needed: int = 0, pinned: list[str] | None = None,
                 leased: list[str] | None = None) -> None:
        super().__init__(message)
        self.needed = needed
        self.pinned = pinned or []
        self.leased = leased or []

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreFullError(CacheError, OSError):
    """No space left on the device zoo writes to. Nothing partial was kept."""


class RemoteError(CacheError):
    """The hub answered with an error, or could not be reached."""


class RemoteNotFoundError(RemoteError, FileNotFoundError):
    """The hub has no such repository, revision or file. ``code`` is the hub's error code when it sent one
    (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``)."""

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class OfflineError(RemoteError, ConnectionError):
    pass


class ObjectStoreError(CacheError, OSError):
    """The object store (``zoo daemon --object-store s3://...``) refused, failed or could not be reached, or
    holds something other than what zoo wrote. ``code``: the S3 error code when the server sent one."""

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ZooWarning(UserWarning):
    """Base class of every warning zoo emits."""


class VersionWarning(ZooWarning):
    """A checkpoint saved by a newer transformers than the installed one (strict mode raises
    :class:`IncompatibleVersionError` instead). Older or unreadable versions are only recorded in
    ``ModelConfig.version_advice``."""


class WeightsWarning(ZooWarning):
    pass


class PluginWarning(ZooWarning):
    pass


class CacheWarning(ZooWarning):
    pass
