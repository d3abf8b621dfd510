"""zoo's store: content-addressed, versioned, locked, readable as a Hugging Face hub cache.

The layout is drawn in :mod:`zoo.cache.store`; hub access lives in :mod:`zoo.cache.hub` alone.
"""

from .hub import OfflineError, RemoteError, RemoteNotFoundError
from .locks import LockTimeoutError
from .store import FileEntry, IntegrityError, NotCachedError, Store, Version, default_home

__all__ = [
    "FileEntry", "IntegrityError", "LockTimeoutError", "NotCachedError", "OfflineError", "RemoteError",
    "RemoteNotFoundError", "Store", "Version", "default_home",
]
