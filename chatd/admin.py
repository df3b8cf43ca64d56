"""The admin socket: a local Unix stream socket that chatctl talks to (SPEC §6).

Two walls keep other local users out. The socket file is mode 0600 (0660 and group-owned with
``admin_group``) in a directory only its owner can write; and every connection's peer
credentials (SO_PEERCRED, and SO_PEERGROUPS for supplementary groups) are checked, so even a
socket made world-accessible by mistake answers only root, chatd's own user and members of
``admin_group``. Anyone else gets ``permission_denied`` and is disconnected.

Threads: an accept thread (acceptor.py), and one short-lived thread per admin connection (at most
``MAX_CONNECTIONS``). A connection thread parses requests (adminproto.py), runs them through
:class:`~chatd.admincmds.AdminCommands` and writes replies; only it touches its socket.
``_lock`` guards ``_connections``.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading

import structlog

from chatd import adminproto
from chatd.acceptor import Acceptor
from chatd.adminproto import MAX_REQUEST_BYTES, AdminError, error_line, ok_line
from chatd.protocol import LINE_TOO_LONG, LineFramer

log = structlog.get_logger("chatd.admin")

MAX_CONNECTIONS = 32
IDLE_SECONDS = 60.0
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not in every Python
_UCRED = struct.Struct("3i")  # pid, uid, gid


class AdminSocketError(Exception):
    """The admin socket cannot be set up; one line for the operator."""


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    return _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_groups(conn: socket.socket) -> set[int]:
    """The peer's supplementary groups, from the kernel (SO_PEERGROUPS: at most 256 fit in
    the 1024 bytes Python allows; a peer in more groups is judged by its primary group)."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 1024)
    except OSError:
        return set()
    return set(struct.unpack(f"{len(raw) // 4}I", raw))


def bind_admin_socket(path: str, gid: int | None) -> tuple[socket.socket, int]:
    """Create the socket (and its directory), replacing a stale one; returns (socket, inode)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700)
            if gid is not None:  # group members must be able to reach the socket inside
                os.chown(directory, -1, gid)
                os.chmod(directory, 0o710)
        except OSError as exc:
            raise AdminSocketError(f"cannot create {directory}: {exc.strerror}") from None
    _check_directory(directory)
    _replace_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # never visible with wider permissions, not even briefly
    try:
        sock.bind(path)
        if gid is not None:
            _give_to_group(path, gid)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise AdminSocketError(f"cannot create admin socket {path}: {exc.strerror or exc}") from None
    except AdminSocketError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock, os.stat(path).st_ino


def _check_directory(directory: str) -> None:
    """Refuse a directory someone else controls: whoever can write it can replace our socket
    with theirs (e.g. a /tmp/chatd-UID made first by another user), and chatctl would then
    hand them every command. It must belong to us or root and be writable by nobody else,
    unless the sticky bit stops others from renaming our socket (as in /tmp itself)."""
    st = os.stat(directory)
    if st.st_uid not in (0, os.geteuid()):
        raise AdminSocketError(f"admin socket directory {directory} belongs to uid {st.st_uid}, "
                               "not to chatd's user or root; refusing to use it")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise AdminSocketError(f"admin socket directory {directory} is writable by other users "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it")


def _give_to_group(path: str, gid: int) -> None:
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        os.unlink(path)
        raise AdminSocketError(
            f"cannot give the admin socket to admin_group (gid {gid}): chatd's user must be a "
            "member (under systemd: SupplementaryGroups=, see systemd/README.md)") from None
    os.chmod(path, 0o660)


def _replace_stale(path: str) -> None:
    """Remove a socket file nobody answers on; refuse if a live chatd does."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminSocketError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: left by a chatd that died
        return
    except OSError as exc:
        raise AdminSocketError(f"cannot probe existing admin socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise AdminSocketError(f"another chatd is already running (its admin socket {path} answers)")


class AdminServer:
    """Serves admin connections. ``start()``/``stop()`` belong to the service."""

    def __init__(self, sock: socket.socket, path: str, inode: int, commands, gid: int | None) -> None:
        self.path = path
        self._acceptor = Acceptor(sock, "admin-accept", self._accepted)
        self._inode = inode
        self._commands = commands
        self._gid = gid
        self._uid = os.geteuid()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()

    def fileno(self) -> int:
        return self._acceptor.sock.fileno()

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        """Stop accepting, end open connections, remove the socket file if it is still ours."""
        self._stopping.set()
        self._acceptor.stop()
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in connections:
            thread.join(2.0)
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    def _accepted(self, conn: socket.socket, _addr) -> None:
        with self._lock:
            busy = len(self._connections) >= MAX_CONNECTIONS
            if not busy:
                thread = threading.Thread(target=self._serve, args=(conn,),
                                          name="admin-conn", daemon=True)
                self._connections[conn] = thread
        if busy:
            _refuse(conn, error_line(None, "busy"))
            conn.close()
        else:
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            pid, uid, gid = peer_credentials(conn)
            peer_log = log.bind(uid=uid, pid=pid)
            if not self._allowed(conn, uid, gid):
                peer_log.warning("admin_denied")
                _refuse(conn, error_line(None, "permission_denied"))
                return
            conn.settimeout(IDLE_SECONDS)
            self._converse(conn, peer_log)
        except OSError:
            pass  # peer went away or idle timeout: nothing to answer
        except Exception:
            log.exception("admin_connection_failed")
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _allowed(self, conn: socket.socket, uid: int, gid: int) -> bool:
        if uid == 0 or uid == self._uid:
            return True
        return self._gid is not None and (gid == self._gid or self._gid in peer_groups(conn))

    def _converse(self, conn: socket.socket, peer_log) -> None:
        framer = LineFramer(MAX_REQUEST_BYTES)
        while not self._stopping.is_set():
            line = framer.next_line()
            if line is None:
                data = conn.recv(65536)
                if not data:
                    return
                framer.feed(data)
            elif line is LINE_TOO_LONG:
                peer_log.warning("admin_command", outcome="line_too_long")
                conn.sendall(error_line(None, "line_too_long"))
            elif line.strip():
                reply, after = self._answer(line, peer_log)
                conn.sendall(reply)
                if after is not None:
                    after()

    def _answer(self, line: bytes, peer_log):
        """One request line -> (reply line, action to run once the reply is sent, or None)."""
        request_id = None
        cmd = None
        try:
            request = adminproto.parse_request(line)
            request_id, cmd = request.id, request.cmd
            result, after = self._commands.run(request.cmd, request.args)
        except AdminError as exc:
            peer_log.info("admin_command", command=cmd, outcome=exc.code, message=exc.message)
            return error_line(exc.request_id if cmd is None else request_id, exc.code, exc.message), None
        except Exception:
            peer_log.exception("admin_command", command=cmd, outcome="internal_error")
            return error_line(request_id, "internal_error"), None
        # broadcast text is chat content: logged only with log_messages, like chat messages
        args = {k: v for k, v in request.args.items() if k != "text" or self._commands.log_messages}
        peer_log.info("admin_command", command=cmd, args=args, outcome="ok")
        return ok_line(request_id, result), after


def _refuse(conn: socket.socket, reply: bytes) -> None:
    """Send ``reply``, then read and drop the peer's request for a moment before closing.

    On a Unix socket, writing to a peer that has already closed fails at once (EPIPE), so a
    client that connects and sends its request would never see why it was refused. Draining
    briefly lets it send, then read the reply.
    """
    try:
        conn.settimeout(1.0)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not conn.recv(65536):
                break
    except OSError:
        pass
