"""The daemon's wire format: JSON lines over a unix stream socket, open files passed with SCM_RIGHTS.

A request is one line, ``{"op": "ensure", "args": {...}}``; an ``import`` request is followed by the open
files it names, passed as file descriptors (so the daemon reads exactly what the client could open, and
nothing else). The daemon answers with any number of progress lines, ``{"progress": {"desc", "done",
"total"}}``, then exactly one ``{"ok": RESULT}`` or ``{"error": {"type", "message"}}``. Results are plain
data: a version is the path of its manifest, a plan its description and counts.
"""

from __future__ import annotations

import json
import socket
from typing import Any

MAX_LINE = 1 << 20  # a request or reply line; a longer one is refused
MAX_FDS_PER_MESSAGE = 250  # under the kernel's SCM_MAX_FD (253)


class ProtocolError(Exception):
    """The other side broke the wire format (or went away)."""


class ConnectionClosed(ProtocolError):
    """The other side went away (closed its end)."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] = ()) -> None:
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data], list(fds)[:MAX_FDS_PER_MESSAGE])
        for start in range(MAX_FDS_PER_MESSAGE, len(fds), MAX_FDS_PER_MESSAGE):
            socket.send_fds(sock, [b"+"], list(fds)[start:start + MAX_FDS_PER_MESSAGE])
    else:
        sock.sendall(data)


class Reader:
    """Reads lines (and the file descriptors that came with them) from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []

    def _fill(self) -> None:
        data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, MAX_FDS_PER_MESSAGE)
        self.fds += fds
        if not data:
            raise ConnectionClosed("the connection was closed")
        self.buffer += data

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} bytes")
            self._fill()
        raw, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"not a JSON line ({exc})") from None
        if not isinstance(message, dict):
            raise ProtocolError("a line that is not a JSON object")
        return message

    def take_fds(self, count: int) -> list[int]:
        """The next ``count`` file descriptors (their carrier bytes are single ``+`` characters)."""
        while len(self.fds) < count:
            self._fill()
        self.buffer = self.buffer.lstrip(b"+")
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken

    def close_fds(self) -> None:
        import os

        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
