"""The CLI's lines about the object store (``zoo daemon --object-store``): what ``zoo ls``, ``zoo versions``,
``zoo du`` and ``zoo verify`` add when the store is the cache of a bucket. Nothing here runs for a store
without one."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

from .errors import ObjectStoreError
from .store.progress import human


def _central(store: Any) -> Any:
    """The store's bucket: the writer's, or (a client of the daemon reads the same store) as the store records it."""
    if hasattr(store, "central"):
        return store.central
    from .store.central import Central

    store.central = Central.configured(store.layout, store.disk)
    return store.central


def _local(store: Any, version: Any) -> str:
    here = sum(1 for f in version.files if store.object_path(f.sha256).exists())
    return "local" if here == len(version.files) else "bucket only" if here == 0 else "partly local"


def where(store: Any, versions: Iterable[Any]) -> None:
    """After a listing: which of ``versions`` are in the bucket only (fetched, and checked, on first use)."""
    if _central(store) is None:
        return
    versions = list(versions)
    only = [f"{v.repo.removeprefix('local/')}@{v.name}" for v in versions if _local(store, v) == "bucket only"]
    partly = [f"{v.repo.removeprefix('local/')}@{v.name}" for v in versions if _local(store, v) == "partly local"]
    print(f"object store {store.central.url}: {len(versions) - len(only) - len(partly)} of these versions on this "
          f"disk too; in the bucket only: {', '.join(only[:20]) or 'none'}{' ...' if len(only) > 20 else ''}"
          + (f"; partly here: {', '.join(partly[:20])}" if partly else ""))


def newest(store: Any, rows: Iterable[Any]) -> None:
    """``zoo ls``'s line: where the newest version of each listed name is."""
    if _central(store) is None:
        return
    where(store, [v for row in rows if (v := store.find(row.repo, row.version)) is not None])


def du(store: Any) -> None:
    if _central(store) is None:
        return
    try:
        u = store.central.usage()
    except ObjectStoreError as exc:
        print(f"bucket   {'?':>10}  {exc}")
        return
    print(f"bucket   {human(u.bytes):>10}  in {store.central.url}: {u.objects:,} objects, {u.versions:,} versions")
    print(f"local    {human(u.local_bytes):>10}  of them on this disk too ({u.local_objects:,} objects); "
          f"{human(u.bucket_only_bytes)} in the bucket only")


def verify(store: Any, repo: str | None, deep: bool) -> int:
    """The bucket's half of ``zoo verify``: every file a version record lists is in the bucket at its size;
    with ``deep`` (``--bucket``) every object is read back and hashed too. Prints each problem, returns how many."""
    central = _central(store)
    if central is None:
        if deep:
            print("this store has no object store (zoo daemon --object-store records one): nothing to check there")
        return 0
    try:
        problems = [p for p in central.missing_objects() if repo is None or p[0] == repo]
        for name, number, entry, problem in problems:
            print(f"MISSING {name} v{number} {entry.path}: {problem} in {central.url}; zoo pull (a hub repository) "
                  "or an import of the same files puts it back")
        damaged = 0
        if deep:
            for item in central.bucket.list("objects/sha256/"):
                digest = hashlib.sha256()
                for chunk in central.bucket.stream(item.key):
                    digest.update(chunk)
                if digest.hexdigest() != item.key.rsplit("/", 1)[-1]:
                    damaged += 1
                    print(f"DAMAGED {central.url}/{item.key}: its bytes hash to {digest.hexdigest()[:12]}…; it is "
                          "never served (a daemon fetches the file again from its upstream); delete it, and zoo "
                          "pull or import it again")
    except ObjectStoreError as exc:
        print(f"UNREACHABLE {exc}")
        return 1
    print(f"object store {central.url}: {'all objects present' if not problems else f'{len(problems)} missing'}"
          + (f", {'all intact' if not damaged else f'{damaged} damaged'} (read back and hashed)" if deep else ""))
    return len(problems) + damaged
