"""zoo's store: content-addressed, versioned, locked, readable as a Hugging Face hub cache.

- :mod:`~zoo.store.layout`: where everything lives (the tree is drawn there);
- :mod:`~zoo.atomic`: one way to name temporaries and move files into place;
- :mod:`~zoo.store.manifests`: the record of each immutable version;
- :mod:`~zoo.store.writer`: reading the store, and writing it as the one writer in direct mode;
- :mod:`~zoo.store.protocol`: the writer interface a daemon client implements too;
- :mod:`~zoo.store.maintenance`: removal and garbage-collection plans;
- :mod:`~zoo.store.hub`: the one module that talks to a hub; :mod:`~zoo.store.locks`: best-effort locks.
"""

from ..errors import IntegrityError, LockTimeoutError, OfflineError, RemoteError, RemoteNotFoundError
from .layout import default_home
from .manifests import FileEntry, Version
from .protocol import CacheWriter
from .writer import Store

__all__ = [
    "CacheWriter", "FileEntry", "IntegrityError", "LockTimeoutError", "OfflineError", "RemoteError",
    "RemoteNotFoundError", "Store", "Version", "default_home",
]
