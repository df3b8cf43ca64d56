"""The admin protocol spoken raw (JSON lines over the Unix socket), without chatctl in between."""

from __future__ import annotations

import json
import socket


class Admin:
    """One admin connection: ``ask(obj)`` sends a JSON line and returns the parsed reply."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_raw(self) -> bytes:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"admin socket closed before a reply (read {self._buf[:200]!r})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def read(self) -> dict:
        return json.loads(self.read_raw())

    def ask(self, obj) -> dict:
        self.send(json.dumps(obj).encode() + b"\n")
        return self.read()

    def result(self, cmd: str, **args):
        """The result of a command that must succeed."""
        reply = self.ask({"id": cmd, "cmd": cmd, "args": args})
        assert reply.get("ok") is True, reply
        return reply["result"]

    def close(self) -> None:
        self.sock.close()


def ok(reply: dict):
    """The result of a raw reply that must be a success."""
    assert reply["ok"] is True, reply
    return reply["result"]


def error_code(reply: dict) -> str:
    """The error code of a raw reply that must be a failure."""
    assert reply["ok"] is False, reply
    return reply["error"]["code"]
