"""zoo's store: content-addressed, versioned, locked, readable as a Hugging Face hub cache.

- :mod:`~zoo.cache.layout`: where everything lives (the tree is drawn there);
- :mod:`~zoo.atomic`: one way to name temporaries and move files into place;
- :mod:`~zoo.cache.manifests`: the record of each immutable version;
- :mod:`~zoo.cache.store`: reading the store, and writing it as the one writer in direct mode;
- :mod:`~zoo.cache.protocol`: the writer interface a daemon client implements too;
- :mod:`~zoo.cache.maintenance`: removal and garbage-collection plans;
- :mod:`~zoo.cache.hub`: the one module that talks to a hub; :mod:`~zoo.cache.locks`: best-effort locks.
"""

from ..errors import IntegrityError, LockTimeoutError, OfflineError, RemoteError, RemoteNotFoundError
from .layout import default_home
from .manifests import FileEntry, Version
from .protocol import CacheWriter
from .store import Store

__all__ = [
    "CacheWriter", "FileEntry", "IntegrityError", "LockTimeoutError", "OfflineError", "RemoteError",
    "RemoteNotFoundError", "Store", "Version", "default_home",
]
