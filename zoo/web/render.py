"""Pages from templates: Jinja2 (the one module that imports it), autoescaping on for every template.

The templates live in ``templates/``, the stylesheet and the little script in ``static/``; nothing is built.
Filters the templates use: ``size`` (bytes in human units), ``ago`` (an ISO time or a Unix time as "3 h ago"),
``exact`` (the same time in full, for the ``title`` attribute), ``number`` (thousands separated).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from ..store.progress import human

HERE = Path(__file__).resolve().parent
def human_size(n: Any) -> str:
    """Bytes as ``zoo ls`` shows them (``1.5 KB``: :func:`zoo.store.progress.human`); anything else -> '-'."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    return human(n)


def _when(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def ago(value: Any, now: datetime | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 d ago', then the date; '-' for no time."""
    when = _when(value)
    if when is None:
        return "-"
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    if seconds < 0:
        return "in the future"
    for limit, div, unit in ((60, 0, ""), (3600, 60, "min"), (86400, 3600, "h"), (86400 * 45, 86400, "d")):
        if seconds < limit:
            return "just now" if not div else f"{int(seconds // div)} {unit} ago"
    return when.strftime("%Y-%m-%d")


def exact(value: Any) -> str:
    when = _when(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def iso(value: Any) -> str:
    when = _when(value)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z") if when else ""


def number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"


_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                          trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(size=human_size, ago=ago, exact=exact, iso=iso, number=number)


def page(template: str, **context: Any) -> str:
    """The HTML of ``templates/{template}`` with ``context`` (every value escaped unless marked ``safe``)."""
    return _ENV.get_template(template).render(**context)


def markup(html: str) -> Any:
    """HTML this server made safe itself (a rendered model card), to put in a page unescaped."""
    return jinja2.utils.markupsafe.Markup(html)


def static(name: str) -> bytes | None:
    """A file of ``static/`` (the stylesheet, the script); None for any other name."""
    if name not in ("style.css", "live.js"):
        return None
    return (HERE / "static" / name).read_bytes()
