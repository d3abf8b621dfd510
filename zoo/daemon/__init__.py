"""The cache daemon: one writer for a shared store, many users over a unix socket.

- :mod:`~zoo.daemon.wire`: the socket's format (JSON lines, open files passed with SCM_RIGHTS);
- :mod:`~zoo.daemon.server`: ``zoo daemon`` (who asks, single-flight jobs, status, signals);
- :mod:`~zoo.daemon.client`: :class:`DaemonStore`, a store that forwards its writes to the daemon;
- :mod:`~zoo.daemon.watch`: drop folders that turn ``save_pretrained`` output into versions;
- :mod:`~zoo.daemon.evict`: quota, LRU eviction, pins and leases.

Nothing here imports torch; only ``watch`` imports watchdog.
"""
