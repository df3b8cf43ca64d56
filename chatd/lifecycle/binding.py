"""The service's listening sockets, bound anew or passed by systemd, and its TLS context: an
OS error becomes the one line (StartupError) the operator reads, naming the address."""

from __future__ import annotations

import socket
import ssl

from chatd.admin import protocol as adminproto
from chatd.admin.server import AdminSocketError, bind_admin_socket
from chatd.lifecycle.startup import StartupError
from chatd.lifecycle.systemd import as_sockets
from chatd.net.listener import bind
from chatd.net.tls import server_context


def admin_socket(config, gid: int | None) -> tuple[socket.socket, str, int]:
    """(socket, path, inode) of the admin socket, made anew."""
    path = config.admin_socket or adminproto.daemon_socket_path()
    try:
        sock, inode = bind_admin_socket(path, gid)
    except AdminSocketError as exc:
        raise StartupError(str(exc)) from None
    return sock, path, inode


def listening_socket(activation: list[int], config) -> tuple[socket.socket, bool]:
    """(socket, passed): the one systemd passed us (socket activation), or a new one."""
    passed = as_sockets(activation)
    if passed:
        sock = passed[0]
        if sock.type != socket.SOCK_STREAM:
            raise StartupError("the socket passed by systemd (fd 3) is not a stream socket")
        for extra in passed[1:]:
            extra.close()
        return sock, True
    return _bind(config.host, config.port, ""), False


def tls_socket(config) -> socket.socket:
    return _bind(config.host, config.tls_port, " (TLS)")


def irc_socket(host: str, port: int, what: str) -> socket.socket:
    return _bind(host, port, f" (IRC{what})")


def metrics_socket(config) -> socket.socket:
    return _bind(config.metrics_host, config.metrics_port, " (metrics)", backlog=64)


def _bind(host: str, port: int, what: str, backlog: int = 1024) -> socket.socket:
    try:
        return bind(host, port, backlog=backlog)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {host}:{port}{what}: {reason}") from None


def tls_context(config):
    try:
        return server_context(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise StartupError(f"cannot load TLS certificate {config.tls_cert} / key "
                           f"{config.tls_key}: {reason}") from None
