"""The admin socket: a local Unix stream socket that chatctl talks to (docs/protocol.md §6).

Two walls keep other local users out. The socket file is mode 0600 (0660 and group-owned with
``admin_group``) in a directory only its owner can write; and every connection's peer
credentials (SO_PEERCRED, and SO_PEERGROUPS for supplementary groups) are checked, so even a
socket made world-accessible by mistake answers only root, chatd's own user and members of
``admin_group``. Anyone else gets ``permission_denied`` and is disconnected.

Nobody can lock the operator out. The accept thread only checks credentials and counts (it
never waits for a peer): a refused peer (``permission_denied``, ``busy``) is answered with one
non-blocking send, and the brief drain that lets it read the answer runs on a thread of its
own, bounded in time (``REFUSE_SECONDS`` in all, however the peer trickles) and in number
(``MAX_REFUSING``; beyond that, refusals just close). Of the ``MAX_CONNECTIONS`` slots, the last
``RESERVED`` are only for root and chatd's own user; if even those are taken, such a peer
evicts the connection that has waited longest for its next request (admin_group members'
first). A connection must send a complete request within ``IDLE_SECONDS`` of the previous one
(trickling bytes does not count), and finish a request within ``REQUEST_SECONDS`` of starting it.

Threads: an accept thread (acceptor.py), one short-lived thread per admin connection (at most
``MAX_CONNECTIONS``, plus the evicted ones on their way out) and per refusal being drained. A
connection thread parses requests (adminproto.py), runs them through
:class:`~chatd.admin.commands.AdminCommands` and writes replies; only it reads or writes its socket
(an eviction or stop() only shuts it down). ``_lock`` guards ``_connections`` and the slots in it.

A ``watch`` request (docs/protocol.md §11) turns its connection into a subscription: once the
reply is sent, the connection thread becomes that watcher's writer (watch.py) until the peer
hangs up, reads too slowly, or chatd ends every watch, with ``shutdown`` in :meth:`stop` and
``restarting`` in :meth:`pause` (an upgrade: the new process has no watchers; chatctl ends).
A watching connection counts as one waiting for its next request: the one evicted first.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import threading
import time
from contextvars import ContextVar

import structlog

from chatd.admin import protocol as adminproto
from chatd.admin.protocol import MAX_REQUEST_BYTES, AdminError, error_line, ok_line
from chatd.admin.watch import Watchers
from chatd.core.bus import ASKER_UID
from chatd.line.framing import LINE_TOO_LONG, LineFramer
from chatd.net.acceptor import Acceptor
from chatd.text import is_valid_name

log = structlog.get_logger("chatd.admin")

MAX_CONNECTIONS = 32
RESERVED = 4  # of MAX_CONNECTIONS, only for root and chatd's own user
IDLE_SECONDS = 60.0  # from one complete request (or the connect) to the next
REQUEST_SECONDS = 10.0  # from the first byte of a request to its LF
REFUSE_SECONDS = 1.0  # a refused peer's total time to send its request and read the answer
MAX_REFUSING = 16
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not in every Python
_UCRED = struct.Struct("3i")  # pid, uid, gid
#: On a connection thread running a command: (its connection, the request's id). An upgrade
#: execs with it and the new image answers (service.request_upgrade, reexec.py).
ASKING: ContextVar[tuple[socket.socket, object] | None] = ContextVar("admin_asking",
                                                                    default=None)


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
            "member and allowed to chgrp (under systemd: SupplementaryGroups= and "
            "SystemCallFilter=@chown, see systemd/README.md)") from None
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
        self._connections: dict[socket.socket, _Slot] = {}
        self._refusing = threading.BoundedSemaphore(MAX_REFUSING)
        self._stopping = threading.Event()
        self._paused = False  # an upgrade is under way: requests are refused (``upgrading``)
        #: (command, outcome) -> requests answered: what the ``admin_command`` log event says,
        #: counted where it is logged (under ``_lock``: several connection threads answer at
        #: once); read by the metrics. ``command`` is None for a request that did not parse.
        self._outcomes: dict[tuple[str | None, str], int] = {}
        self.watchers = Watchers()

    @property
    def sock(self) -> socket.socket:
        return self._acceptor.sock

    @property
    def inode(self) -> int:
        return self._inode

    def fileno(self) -> int:
        return self._acceptor.sock.fileno()

    def pause(self) -> None:
        """An upgrade: stop accepting (the socket stays, for the next process) and refuse
        requests on open connections until :meth:`resume`, so no command changes what is
        being handed over."""
        self._paused = True
        self._acceptor.pause()
        self.watchers.end_all("restarting")

    def resume(self) -> None:
        self._paused = False
        self._acceptor.resume()

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        """Stop accepting, end open connections, remove the socket file if it is still ours."""
        self._stopping.set()
        self._acceptor.stop()
        self.watchers.end_all("shutdown")
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, slot in connections:
            slot.thread.join(2.0)
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass

    def adopt(self, conn: socket.socket, command: str, request_id, result) -> None:
        """After an upgrade in place (reexec.py): answer the request the image before this
        one took on ``conn``, then serve the connection like any other."""
        try:
            pid, uid, _ = peer_credentials(conn)
            conn.settimeout(IDLE_SECONDS)
            conn.sendall(ok_line(request_id, result))
        except OSError:  # chatctl gave up meanwhile
            conn.close()
            return
        log.info("admin_command", command=command, outcome="ok", uid=uid, pid=pid)
        self._count(command, "ok")
        self._accepted(conn, None)

    def _accepted(self, conn: socket.socket, _addr) -> None:
        """On the accept thread: credentials and a slot, or a refusal; never waits for the peer."""
        try:
            pid, uid, gid = peer_credentials(conn)
        except OSError:  # gone already
            conn.close()
            return
        peer_log = log.bind(uid=uid, pid=pid)
        privileged = uid == 0 or uid == self._uid
        if not privileged and not self._member(conn, gid):
            peer_log.warning("admin_denied")
            self._refuse(conn, error_line(None, "permission_denied"))
            return
        slot = self._claim(conn, privileged, peer_log)
        if slot is None:
            peer_log.warning("admin_busy")
            self._refuse(conn, error_line(None, "busy"))
            return
        try:
            slot.thread.start()
        except RuntimeError:  # out of threads
            with self._lock:
                self._connections.pop(conn, None)
            raise  # the acceptor logs it and closes conn

    def outcomes(self) -> dict[tuple[str | None, str], int]:
        """A copy of the admin command counts (see ``_outcomes``)."""
        with self._lock:
            return dict(self._outcomes)

    def _count(self, command: str | None, outcome: str) -> None:
        with self._lock:
            key = (command, outcome)
            self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def _member(self, conn: socket.socket, gid: int) -> bool:
        return self._gid is not None and (gid == self._gid or self._gid in peer_groups(conn))

    def _claim(self, conn: socket.socket, privileged: bool, peer_log) -> _Slot | None:
        """A slot for a new connection, or None: it is busy for this peer."""
        with self._lock:
            live = [s for s in self._connections.values() if not s.evicted]
            limit = MAX_CONNECTIONS if privileged else MAX_CONNECTIONS - RESERVED
            if len(live) >= limit and not (privileged and self._evict(live, peer_log)):
                return None
            thread = threading.Thread(target=self._serve, args=(conn, peer_log),
                                      name="admin-conn", daemon=True)
            slot = self._connections[conn] = _Slot(conn, thread, privileged)
            return slot

    @staticmethod
    def _evict(live: list, peer_log) -> bool:
        """``_lock`` held. End the connection waiting longest for its next request, admin_group
        members' before root's; one running a command is left alone. Shutting the socket down
        wakes its thread, which leaves as if the peer had hung up."""
        waiting = [s for s in live if not s.working]
        if not waiting:
            return False
        victim = min(waiting, key=lambda s: (s.privileged, s.since))
        victim.evicted = True
        try:
            victim.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        peer_log.warning("admin_evicted", idle=round(time.monotonic() - victim.since, 1))
        return True

    def _refuse(self, conn: socket.socket, reply: bytes) -> None:
        """Answer and close, without ever blocking the accept thread.

        On a Unix socket, writing to a peer that has already closed fails at once (EPIPE), so a
        client that connects and then sends its request would never see why it was refused.
        Draining a moment lets it send, then read the reply; that happens off this thread.
        """
        try:
            conn.send(reply, socket.MSG_DONTWAIT)  # a new socket's buffer holds one short line
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if not self._refusing.acquire(blocking=False):
            conn.close()  # a refusal storm: no drain for the rest
            return
        try:
            threading.Thread(target=self._drain, args=(conn,), name="admin-refuse",
                             daemon=True).start()
        except RuntimeError:
            self._refusing.release()
            conn.close()

    def _drain(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + REFUSE_SECONDS
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                conn.settimeout(remaining)
                if not conn.recv(65536):
                    break
        except OSError:
            pass
        finally:
            conn.close()
            self._refusing.release()

    def _serve(self, conn: socket.socket, peer_log) -> None:
        # who asks, for an action routed to another node to be logged there (bus.ASKER_UID)
        ASKER_UID.set(structlog.get_context(peer_log).get("uid"))
        try:
            self._converse(conn, self._connections[conn], peer_log)
        except OSError:
            pass  # peer went away, or evicted
        except Exception:
            log.exception("admin_connection_failed")
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _converse(self, conn: socket.socket, slot: _Slot, peer_log) -> None:
        framer = LineFramer(MAX_REQUEST_BYTES)
        started = None  # when the request now arriving began
        while not self._stopping.is_set():
            line = framer.next_line()
            if line is None:
                started = started or (time.monotonic() if framer.pending_bytes else None)
                if not self._wait_for_input(conn, slot, started, peer_log):
                    return
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    peer_log.info("admin_timeout", partial=started is not None)
                    return
                if not data:
                    return
                framer.feed(data)
                continue
            # since = when this request arrived: the peer cannot have sent its next one before
            # our reply, so requests on different connections are ordered as they were asked
            started, slot.working, slot.since = None, True, time.monotonic()
            after = self._reply(conn, line, peer_log)
            slot.working = False
            if after is not None:
                after()

    def _reply(self, conn: socket.socket, line, peer_log):
        """Answer one line; returns the action to run once the reply is sent, or None."""
        conn.settimeout(IDLE_SECONDS)  # a long reply (list) to a slow reader: not a request's time
        if line is LINE_TOO_LONG:
            peer_log.warning("admin_command", outcome="line_too_long")
            self._count(None, "line_too_long")
            conn.sendall(error_line(None, "line_too_long"))
        elif line.strip():
            reply, after = self._answer(line, peer_log, conn)
            try:
                conn.sendall(reply)
            except BaseException:
                getattr(after, "abandon", lambda: None)()  # a watch nobody will ever read
                raise
            return after
        return None

    @staticmethod
    def _wait_for_input(conn: socket.socket, slot: _Slot, started, peer_log) -> bool:
        """Set the socket's timeout to what is left of the connection's time; False: none."""
        deadline = slot.since + IDLE_SECONDS
        if started is not None:
            deadline = min(deadline, started + REQUEST_SECONDS)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            peer_log.info("admin_timeout", partial=started is not None)
            return False
        conn.settimeout(remaining)
        return True

    def _subscribe(self, conn: socket.socket, peer_log, room: str | None = None):
        """``watch``: subscribed before the reply goes out, so no event between the two is
        missed; the events queued meanwhile follow the reply (this thread writes both).
        Returns (result, the writer loop); the loop's ``abandon`` unsubscribes instead, for
        a reply that could not be sent."""
        name = room[1:] if room and room.startswith("#") else room
        if name is not None and not is_valid_name(name):
            raise AdminError("bad_args", f"watch: invalid room {room[:64]!r}")
        watcher = self.watchers.subscribe(name)

        def serve() -> None:
            try:
                how, unsent = watcher.serve(conn)
            finally:
                self.watchers.unsubscribe(watcher)
            if how == "dropped":
                peer_log.warning("watch_dropped", reason="too slow", room=name)
                watcher.farewell(conn, unsent)
            conn.shutdown(socket.SHUT_RDWR)  # the watch is over: so is the connection

        serve.abandon = lambda: self.watchers.unsubscribe(watcher)
        return {"watching": True, "room": name}, serve

    def _answer(self, line: bytes, peer_log, conn: socket.socket):
        """One request line -> (reply line, action to run once the reply is sent, or None)."""
        request_id = None
        cmd = None
        try:
            request = adminproto.parse_request(line)
            request_id, cmd = request.id, request.cmd
            if self._paused:
                raise AdminError("upgrading")
            if cmd == "watch":
                result, after = self._subscribe(conn, peer_log, **request.args)
            else:
                ASKING.set((conn, request_id))
                result, after = self._commands.run(request.cmd, request.args)
        except AdminError as exc:
            peer_log.info("admin_command", command=cmd, outcome=exc.code, message=exc.message)
            self._count(cmd, exc.code)
            return error_line(exc.request_id if cmd is None else request_id, exc.code, exc.message), None
        except Exception:
            peer_log.exception("admin_command", command=cmd, outcome="internal_error")
            self._count(cmd, "internal_error")
            return error_line(request_id, "internal_error"), None
        # broadcast text is chat content: logged only with log_messages, like chat messages
        args = {k: v for k, v in request.args.items() if k != "text" or self._commands.log_messages}
        try:
            reply = ok_line(request_id, result)
        except ValueError:  # a non-finite number in the result: strict JSON has no spelling for it
            peer_log.exception("admin_command", command=cmd, outcome="internal_error")
            self._count(cmd, "internal_error")
            return error_line(request_id, "internal_error"), None
        peer_log.info("admin_command", command=cmd, args=args, outcome="ok")
        self._count(cmd, "ok")
        return reply, after


class _Slot:
    """One admin connection's record; fields change under ``AdminServer._lock`` or, for
    ``since``/``working``, only on its own thread (plain attribute writes)."""

    __slots__ = ("conn", "thread", "privileged", "since", "working", "evicted")

    def __init__(self, conn: socket.socket, thread: threading.Thread, privileged: bool) -> None:
        self.conn = conn
        self.thread = thread
        self.privileged = privileged
        self.since = time.monotonic()  # the connect, then the arrival of the latest request
        self.working = False  # running a command: never evicted mid-way
        self.evicted = False
