"""Who may read what over HTTP. Nothing is ever writable over HTTP; this decides only reads.

- Public hub content is served to anyone who can reach the address.
- Content the hub marks private or gated (fetched with the daemon's own ``HF_TOKEN``), and content whose
  access zoo did not record, is served only to clients that send a token from the tokens file
  (``Authorization: Bearer TOKEN``, what huggingface_hub sends for ``HF_TOKEN``).
- ``local/NAME`` (the team's imports and saves): to anyone without a tokens file; with one, to its holders.

The tokens file has one token per line, optionally followed by a name for the log (``TOKEN  alice``) and a
scope: ``read=PATTERN[,PATTERN...]``, the restricted repositories that token may read, each a repository id
(``local/search-ner``, ``org/model``) or a prefix ending in ``*`` (``local/search-*``, ``org/*``); a token
without ``read=`` reads all restricted content, as every token did before scopes. Public content is anyone's
whatever the scope. A token outside its scope is answered as a token this server does not accept (401).
``#`` starts a comment. It must not be readable by others (mode 0600 or 0640), as an SSH key. ``kill -HUP``
the daemon to read it again after adding or revoking a token.

    # token                            name    scope (optional)
    Zq3c...43 characters of secret...  alice
    Yb8x...43 characters of secret...  search  read=local/search-*,org/search-base
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError
from .protocol import HubError

log = logging.getLogger("zoo.daemon")
_PATTERN = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]*)?)?\*?\Z")


@dataclass(frozen=True)
class Holder:
    """A token's name and what it may read: None for all restricted content, else repository ids and
    prefixes (a pattern ending in ``*``)."""

    name: str
    scope: tuple[str, ...] | None = None

    def may_read(self, repo: str) -> bool:
        if self.scope is None:
            return True
        return any(repo.startswith(p[:-1]) if p.endswith("*") else repo == p for p in self.scope)


def _scope(text: str, where: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in text.split(","))
    for p in patterns:
        if not p or not _PATTERN.match(p) or ".." in p or "--" in p:
            raise InvalidArgumentError(f"{where}: {p!r} is not a scope pattern: read= takes repository ids or "
                                       "prefixes ending in '*', separated by commas (e.g. read=local/search-*,"
                                       "org/model)")
    return patterns


@dataclass(frozen=True)
class Tokens:
    digests: dict[bytes, Holder]  # sha256 of a token -> who holds it and what it may read

    @classmethod
    def load(cls, path: Path) -> "Tokens":
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"cannot read the tokens file {path}: {exc}") from None
        if st.st_mode & stat.S_IROTH or st.st_mode & stat.S_IWOTH:
            raise InvalidArgumentError(f"the tokens file {path} is readable or writable by every user (mode "
                                       f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
        digests = {}
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words[0]) < 16:
                raise InvalidArgumentError(f"{path}, line {number}: a token of {len(words[0])} characters is too "
                                           "short to be secret; use at least 16 (python -c 'import secrets; "
                                           "print(secrets.token_urlsafe())')")
            scopes = [w for w in words[1:] if "=" in w]
            names = [w for w in words[1:] if "=" not in w]
            scope = None
            for word in scopes:
                key, _, value = word.partition("=")
                if key != "read":
                    raise InvalidArgumentError(f"{path}, line {number}: unknown setting {key!r}; a token's line is "
                                               "TOKEN [NAME] [read=PATTERN,...]")
                if scope is not None:
                    raise InvalidArgumentError(f"{path}, line {number}: read= given twice; list every pattern in "
                                               "one, separated by commas")
                scope = _scope(value, f"{path}, line {number}")
            name = names[0] if names else f"token {number}"
            digests[hashlib.sha256(words[0].encode()).digest()] = Holder(name, scope)
        if not digests:
            raise InvalidArgumentError(f"the tokens file {path} holds no token")
        return cls(digests)

    def holder(self, authorization: str | None) -> Holder | None:
        """Who holds the token in ``Authorization: Bearer TOKEN``, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hashlib.sha256(authorization[len("Bearer "):].strip().encode()).digest()
        for known, name in self.digests.items():  # constant time per comparison
            if hmac.compare_digest(known, digest):
                return name
        return None


class Access:
    def __init__(self, tokens_file: str | os.PathLike[str] | None) -> None:
        self.path = Path(tokens_file) if tokens_file else None
        self.tokens = Tokens.load(self.path) if self.path else None

    def reload(self) -> None:
        """Read the tokens file again (``kill -HUP`` the daemon); a file that is now invalid keeps the old
        tokens, and the log says why."""
        if self.path is None:
            return
        try:
            self.tokens = Tokens.load(self.path)
            log.info("tokens file %s read again: %d tokens", self.path, len(self.tokens.digests))
        except InvalidArgumentError as exc:
            log.warning("%s; the tokens read before stay in force", exc)

    def check(self, repo: str, access: str | None, authorization: str | None) -> None:
        """Nothing when the client may read ``repo``; else the hub's answer for a gated or private one."""
        if access == "public":
            return
        holder = self.tokens.holder(authorization) if self.tokens else None
        if holder is not None and holder.may_read(repo):
            return
        if access == "local" and self.tokens is None:
            return
        if holder is not None:
            why = f"the token sent ({holder.name}) may not read {repo}: it is outside its read= scope"
        elif self.tokens is None:
            why = ("this zoo server has no tokens file, so it serves restricted content to nobody "
                   "(its administrator can start it with --tokens FILE)")
        elif authorization:
            why = "the token sent is not one this zoo server accepts"
        else:
            why = "send a token this zoo server accepts (set HF_TOKEN)"
        if access == "private":
            raise HubError(401, "RepoNotFound", f"Repository {repo} not found, or it is private: {why}")
        raise HubError(401, "GatedRepo", f"Access to {repo} is restricted on this zoo server: {why}")
