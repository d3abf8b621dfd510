"""The daemon's web page (``zoo daemon --http``): the store for people, in a browser, read-only.

- :mod:`.site`: the routes, who may see what (the Hub routes' rules, :mod:`zoo.hubserver.access`), the login
  session; framework-free (the hub server's aiohttp app hands it the requests it claims);
- :mod:`.data`: what each page shows, as data (each page's JSON twin);
- :mod:`.render`: the HTML, from Jinja2 templates (``templates/``) and one stylesheet (``static/``);
- :mod:`.cache`: what the pages read, kept while the store is unchanged;
- :mod:`.status`: the daemon's jobs and quota, read cheaply for the home page;
- :mod:`.markdown`: model cards, with raw HTML escaped and script links neutralised (markdown-it-py).
"""

from __future__ import annotations

from typing import Any, Callable

from .status import daemon_status

__all__ = ["daemon_status", "make_site"]


def make_site(home: Any, access: Any, status: Callable[[], dict[str, Any]]) -> Any:
    """The page for the store at ``home``, with the hub server's ``access`` rules and the daemon's ``status``
    (jobs in flight, quota). None when Jinja2 or markdown-it-py is missing (the page is then off, and the
    log says how to install them); the Hub protocol is served either way."""
    try:
        import jinja2  # noqa: F401
        import markdown_it  # noqa: F401
    except ImportError:
        import logging

        logging.getLogger("zoo.daemon").warning("the web page is off: pip install 'zoo-registry[daemon]' (it needs "
                                                "jinja2 and markdown-it-py); the Hub protocol is served")
        return None
    from .site import Site

    return Site(home, access, status)
