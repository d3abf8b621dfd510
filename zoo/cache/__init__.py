"""zoo's store: content-addressed, versioned, locked, readable as a Hugging Face hub cache.

The layout is drawn in :mod:`zoo.cache.store`; hub access lives in :mod:`zoo.cache.hub` alone.
"""

from ..errors import IntegrityError, LockTimeoutError, OfflineError, RemoteError, RemoteNotFoundError
from .store import FileEntry, Store, Version, default_home

__all__ = [
    "FileEntry", "IntegrityError", "LockTimeoutError", "OfflineError", "RemoteError",
    "RemoteNotFoundError", "Store", "Version", "default_home",
]
