"""The daemon's HTTP face: the Hugging Face Hub protocol for other machines (``zoo daemon --http``).

- :mod:`.protocol`: the protocol as data (routes, JSON, headers, error codes, ranges);
- :mod:`.catalog`: the store's versions, aliases and the upstream's listings as hub repositories and revisions;
- :mod:`.registry`: aliases as tags, versions as commits, each file's last commit (data only);
- :mod:`.tier`: whether the upstream is a zoo daemon (whose ``local/`` names are then served too);
- :mod:`.answers`: the metadata routes (info, tree, paths-info, refs, commits);
- :mod:`.pullthrough`: one download per missing file, readable while it arrives;
- :mod:`.access`: who may read what (a tokens file);
- :mod:`.server`: the HTTP server (aiohttp), the files (``resolve``, ``raw``), sendfile and the limits on clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..store.writer import Store


def make_server(store: Store, settings: Any, *, run_job: Callable[..., Any], tokens: Path | None = None,
                revalidate: float = 60.0) -> Any:
    from .._deps import require

    require("aiohttp", "pip install 'zoo-registry[daemon]'", needed_by="zoo daemon --http")
    from .access import Access
    from .catalog import Catalog
    from .pullthrough import PullThrough
    from .server import HubServer

    catalog = Catalog(store, revalidate=revalidate)
    return HubServer(catalog, PullThrough(store, catalog, run_job), Access(tokens), settings)
