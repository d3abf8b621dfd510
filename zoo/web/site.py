"""The web page's routes, who may see what, and the login session; no HTTP framework here.

The hub server (:mod:`zoo.hubserver.server`, the one importer of aiohttp) hands a request to
:meth:`Site.answer` on a worker thread when :meth:`Site.claims` says the path is a page, and sends back the
:class:`Reply`. Routes (the first path segment ``-`` cannot begin a hub repository id, and huggingface.co
reserves ``models`` as a name no user or organisation may take):

    /                                    every name (search box and filters in the query string)
    /models/NAME  /models/ORG/NAME       a name: local/NAME, or the hub repository ORG/NAME
    /models/.../-/versions/vN            a version: its files and their digests
    /models/.../-/history                its history
    /-/login (GET: the form; POST)       /-/logout (POST)        /-/style.css  /-/live.js

A ``/models/...`` path whose second or third segment is ``resolve`` or ``raw`` (and neither is a page's ``-``)
stays the Hub's file route (``/models/REPO/resolve/REV/FILE``, as huggingface.co accepts it). Every page answers JSON
with the same data for ``?format=json`` or ``Accept: application/json``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidNameError, ZooError
from ..hubserver.access import Access
from ..hubserver.protocol import HubError
from ..names import LOCAL_NAMESPACE, display_name, is_local, validate_repo_id, version_number
from ..store.search import query
from . import data, render
from .cache import Cached

COOKIE = "zoo_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10000
MAX_FORM = 4096  # bytes of a login form


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class PageError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def claims(raw_path: str) -> bool:
    """Whether ``raw_path`` is one of the page's routes (else the Hub protocol answers it)."""
    path = raw_path.split("?", 1)[0]
    if path in ("", "/"):
        return True
    parts = path.strip("/").split("/")
    if parts[0] == "-":
        return True
    if parts[0] != "models":
        return False
    rest = parts[1:]
    return "-" in rest[1:3] or not (len(rest) >= 3 and {rest[1], rest[2]} & {"resolve", "raw"})


class Sessions:
    """Login sessions: a random id (the cookie) -> the token it was opened with, kept in this process only.
    The token is checked again on every request, so one revoked from the tokens file stops working."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, float]] = {}

    def open(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._open) >= MAX_SESSIONS:
                self._open = {k: v for k, v in self._open.items() if v[1] > now}
                while len(self._open) >= MAX_SESSIONS:
                    self._open.pop(next(iter(self._open)))
            self._open[sid] = (token, now + SESSION_SECONDS)
        return sid

    def token(self, sid: str | None) -> str | None:
        if not sid:
            return None
        with self._lock:
            found = self._open.get(sid)
            if found is None or found[1] < time.monotonic():
                self._open.pop(sid, None)
                return None
            return found[0]

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._open.pop(sid or "", None)


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Site:
    def __init__(self, home: Any, access: Access, status: Callable[[], dict[str, Any]]) -> None:
        self.reader = Cached(home)
        self.access, self.status = access, status
        self.sessions = Sessions()

    claims = staticmethod(claims)

    # -- a request -----------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        """The reply to one request (called on a worker thread: it reads the store). ``headers``' keys are
        lower case."""
        path, _, qs = raw_path.partition("?")
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True).items()}
        as_json = params.get("format") == "json" or ("application/json" in headers.get("accept", "")
                                                     and "text/html" not in headers.get("accept", ""))
        auth = headers.get("authorization") or None
        sid = _cookie(headers, COOKIE)
        if auth is None and (token := self.sessions.token(sid)) is not None:
            auth = f"Bearer {token}"
        view = View(self, auth, as_json, params, f"http://{headers.get('host') or '127.0.0.1'}")
        try:
            if method == "POST":
                if path.rstrip("/") == "/-/login":
                    return self._login(headers, body)
                if path.rstrip("/") == "/-/logout":
                    self._same_origin(headers)
                    self.sessions.close(sid)
                    return Reply(303, b"", {"Location": "/", "Set-Cookie": f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; "
                                                                         "SameSite=Strict", "Cache-Control": "no-store"})
                raise PageError(405, "Read-only", "the page is read-only: only the login form is sent with POST")
            if method not in ("GET", "HEAD"):
                raise PageError(405, "Read-only", "the page is read-only (GET and HEAD)")
            return self._route(path, view)
        except PageError as exc:
            return view.error(exc.status, exc.title, exc.message)
        except ZooError as exc:
            return view.error(400, "Bad request", str(exc).splitlines()[0][:500])

    def _route(self, path: str, view: "View") -> Reply:
        if path in ("", "/"):
            return view.home()
        try:
            parts = [urllib.parse.unquote(p, errors="strict") for p in path.strip("/").split("/")]
        except UnicodeDecodeError:
            raise PageError(400, "Bad request", "the path is not UTF-8") from None
        if parts[0] == "-":
            if parts[1:] == ["login"]:
                return view.login_form()
            if len(parts) == 2 and (content := render.static(parts[1])) is not None:
                kind = "text/css" if parts[1].endswith(".css") else "text/javascript"
                return Reply(200, content, {"Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "max-age=300"})
            raise PageError(404, "Not found", "no such page")
        rest = parts[1:]  # parts[0] == "models"
        if not rest:
            return Reply(302, b"", {"Location": "/"})
        sub = rest.index("-") if "-" in rest else len(rest)
        repo = _repo(rest[:sub])
        tail = rest[sub + 1:] if sub < len(rest) else None
        if tail is None:
            return view.model(repo)
        if tail == ["history"]:
            return view.history(repo)
        if len(tail) == 2 and tail[0] == "versions" and version_number(tail[1]) is not None:
            return view.version(repo, tail[1])
        raise PageError(404, "Not found", "no such page (a version's page is .../-/versions/vN)")

    # -- login ---------------------------------------------------------------------------------------

    @staticmethod
    def _same_origin(headers: dict[str, str]) -> None:
        """A form posted from another site is refused (CSRF): a browser says where a POST comes from in
        ``Sec-Fetch-Site`` and ``Origin``; a client that sends neither (curl) is not a browser on a page."""
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise PageError(403, "Refused", "a form sent from another site is refused")
        origin = headers.get("origin")
        if origin is not None and origin != "null" and urllib.parse.urlsplit(origin).netloc != headers.get("host"):
            raise PageError(403, "Refused", "a form sent from another site is refused")
        if origin == "null":
            raise PageError(403, "Refused", "a form sent from an opaque origin is refused")

    def _login(self, headers: dict[str, str], body: bytes) -> Reply:
        self._same_origin(headers)
        if len(body) > MAX_FORM:
            raise PageError(413, "Too large", "the login form is at most 4 KB")
        form = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
        token = (form.get("token") or [""])[-1].strip()
        tokens = self.access.tokens
        if tokens is None:
            raise PageError(400, "No tokens", "this zoo server has no tokens file (--tokens): there is nothing to "
                                              "log in to; it shows public content and local/ names to everyone")
        if not token or tokens.holder(f"Bearer {token}") is None:
            raise PageError(401, "Login failed", "that is not a token this zoo server accepts")
        sid = self.sessions.open(token)
        return Reply(303, b"", {"Location": "/", "Cache-Control": "no-store", "Set-Cookie":
                                f"{COOKIE}={sid}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict"})


def _repo(parts: list[str]) -> str:
    """``["my-bert"]`` -> ``local/my-bert``; ``["org", "name"]`` -> ``org/name``."""
    if len(parts) == 1:
        parts = [LOCAL_NAMESPACE, parts[0]]
    if len(parts) != 2:
        raise PageError(404, "Not found", "a model's page is /models/NAME or /models/ORG/NAME")
    try:
        return validate_repo_id("/".join(parts))
    except InvalidNameError as exc:
        raise PageError(404, "Not found", str(exc)) from None


class View:
    """One request's viewer (its token, the format it wants) and the pages it gets."""

    def __init__(self, site: Site, auth: str | None, as_json: bool, params: dict[str, str], endpoint: str) -> None:
        self.site, self.auth, self.as_json, self.params, self.endpoint = site, auth, as_json, params, endpoint
        tokens = site.access.tokens
        holder = tokens.holder(auth) if tokens is not None and auth else None
        self.who = holder.name if holder is not None else None
        self.logins = tokens is not None

    def may(self, repo: str, access: str | None) -> bool:
        try:
            self.site.access.check(repo, access, self.auth)
        except HubError:
            return False
        return True

    def reply(self, template: str, payload: dict[str, Any], status: int = 200, title: str = "") -> Reply:
        if self.as_json:
            body = json.dumps(payload, default=str, separators=(",", ":")).encode()
            return Reply(status, body, {"Content-Type": "application/json", "Cache-Control": "no-store", "Vary": "Accept"})
        html = render.page(template, d=payload, title=title, who=self.who, logins=self.logins,
                           card=render.markup(payload.get("card_html") or ""))
        return Reply(status, html.encode(), {
            "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "Vary": "Accept, Cookie",
            "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' "
                                       "https:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})

    def error(self, status: int, title: str, message: str) -> Reply:
        return self.reply("error.html", {"error": message, "status": status}, status, title)

    def home(self) -> Reply:
        p = self.params
        label = p.get("label") or None
        q = query(model_type=p.get("model_type") or None, labels=[label] if label else None,
                  alias=p.get("alias") or None, user=p.get("user") or None)
        payload = data.home(self.site.reader, q, p.get("q", "").strip(), self.may, self.site.status())
        payload["filters"] = {k: p.get(k, "") for k in ("q", "model_type", "label", "alias", "user")}
        return self.reply("home.html", payload, title="Models")

    def _versions(self, repo: str) -> tuple[str, list]:
        """The repository a page's path names and its versions; raises the page's 404 or 401. ``/models/NAME``
        is ``local/NAME``, or the hub repository ``NAME`` (an id of one part) when the store has no such local name."""
        versions = self.site.reader.versions(repo)
        if not versions and is_local(repo) and (hub := self.site.reader.versions(display_name(repo))):
            repo, versions = display_name(repo), hub
        if not versions and not is_local(repo):
            raise PageError(404, "Not found", f"{repo} is not in this store")
        if not self.may(repo, data.access_of(repo, versions[-1] if versions else None)):
            raise PageError(401, "Log in to see it", f"{display_name(repo)}: restricted on this zoo server; log "
                                                     "in with a token to see it" if self.logins else
                            f"{display_name(repo)}: this zoo server shows restricted content to nobody")
        if not versions:
            raise PageError(404, "Not found", f"{display_name(repo)} is not in this store")
        return repo, versions

    def model(self, repo: str) -> Reply:
        repo, versions = self._versions(repo)
        payload = data.model(self.site.reader, repo, versions, self.endpoint, self.may)
        return self.reply("model.html", payload, title=payload["name"])

    def version(self, repo: str, spec: str) -> Reply:
        repo, versions = self._versions(repo)
        found = [v for v in versions if v.name == spec]
        if not found:
            raise PageError(404, "Not found", f"{display_name(repo)}@{spec}: no such version")
        payload = data.version(self.site.reader, repo, found[0])
        return self.reply("version.html", payload, title=f"{payload['name']}@{spec}")

    def history(self, repo: str) -> Reply:
        repo, _ = self._versions(repo)
        payload = data.history(self.site.reader, repo)
        return self.reply("history.html", payload, title=f"{payload['name']}: history")

    def login_form(self) -> Reply:
        return self.reply("login.html", {"logged_in_as": self.who, "tokens": self.logins}, title="Log in")
