"""The admin socket's server: accepting connections, the connection slots, refusals.

Nobody can lock the operator out. The accept thread only checks credentials and counts (it
never waits for a peer): a refused peer (``permission_denied``, ``busy``) is answered with one
non-blocking send, and the brief drain that lets it read the answer runs on a thread of its
own, bounded in time (``REFUSE_SECONDS`` in all, however the peer trickles) and in number
(``MAX_REFUSING``; beyond that, refusals just close). Only root, chatd's own user and members
of ``admin_group`` are served (their credentials: endpoint.py); anyone else gets
``permission_denied`` and is disconnected. Of the ``MAX_CONNECTIONS`` slots, the last
``RESERVED`` are only for root and chatd's own user; if even those are taken, such a peer
evicts the connection that has waited longest for its next request (admin_group members'
first). A watching connection counts as one waiting for its next request: the one evicted first.

Threads: an accept thread (acceptor.py), one short-lived thread per admin connection (at most
``MAX_CONNECTIONS``, plus the evicted ones on their way out) holding its conversation
(conversation.py), and one per refusal being drained. ``_lock`` guards ``_connections`` and the
slots in it, and the command counts. chatd ends every ``watch`` with ``shutdown`` in
:meth:`stop` and ``restarting`` in :meth:`pause` (an upgrade: the new process has no watchers).
"""

from __future__ import annotations

import os
import socket
import threading
import time

import structlog

from chatd.admin.conversation import ASKING, IDLE_SECONDS, Conversation
from chatd.admin.endpoint import (
    AdminSocketError,
    bind_admin_socket,
    peer_credentials,
    peer_groups,
)
from chatd.admin.protocol import error_line, ok_line
from chatd.core.bus import ASKER_UID
from chatd.net.acceptor import Acceptor

#: The service imports these from here (they live in endpoint.py and conversation.py).
__all__ = ["ASKING", "AdminServer", "AdminSocketError", "bind_admin_socket"]

log = structlog.get_logger("chatd.admin")

MAX_CONNECTIONS = 32
RESERVED = 4  # of MAX_CONNECTIONS, only for root and chatd's own user
REFUSE_SECONDS = 1.0  # a refused peer's total time to send its request and read the answer
MAX_REFUSING = 16


class AdminServer:
    """Serves admin connections. ``start()``/``stop()`` belong to the service."""

    def __init__(self, sock: socket.socket, path: str, inode: int, commands, gid: int | None) -> None:
        self.path = path
        self._acceptor = Acceptor(sock, "admin-accept", self._accepted)
        self._inode = inode
        self.commands = commands  # AdminCommands: what the conversations run requests through
        self._gid = gid
        self._uid = os.geteuid()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Slot] = {}
        self._refusing = threading.BoundedSemaphore(MAX_REFUSING)
        self.stopping = threading.Event()
        self.paused = False  # an upgrade is under way: requests are refused (``upgrading``)
        #: (command, outcome) -> requests answered: what the ``admin_command`` log event says,
        #: counted where it is logged (under ``_lock``: several connection threads answer at
        #: once); read by the metrics. ``command`` is None for a request that did not parse.
        self._outcomes: dict[tuple[str | None, str], int] = {}

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
        self.paused = True
        self._acceptor.pause()
        self.commands.watchers.end_all("restarting")

    def resume(self) -> None:
        self.paused = False
        self._acceptor.resume()

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        """Stop accepting, end open connections, remove the socket file if it is still ours."""
        self.stopping.set()
        self._acceptor.stop()
        self.commands.watchers.end_all("shutdown")
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
        self.count(command, "ok")
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

    def count(self, command: str | None, outcome: str) -> None:
        """One request answered (see ``_outcomes``); on the connection threads."""
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
            slot = self._connections[conn] = _Slot(conn, privileged)
            slot.thread = threading.Thread(target=self._serve, args=(conn, slot, peer_log),
                                           name="admin-conn", daemon=True)
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

    def _serve(self, conn: socket.socket, slot: _Slot, peer_log) -> None:
        # who asks, for an action routed to another node to be logged there (bus.ASKER_UID)
        ASKER_UID.set(structlog.get_context(peer_log).get("uid"))
        try:
            Conversation(self, conn, slot, peer_log).run()
        except OSError:
            pass  # peer went away, or evicted
        except Exception:
            log.exception("admin_connection_failed")
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()


class _Slot:
    """One admin connection's record; fields change under ``AdminServer._lock`` or, for
    ``since``/``working``, only on its own thread (plain attribute writes)."""

    __slots__ = ("conn", "evicted", "privileged", "since", "thread", "working")

    def __init__(self, conn: socket.socket, privileged: bool) -> None:
        self.conn = conn
        self.thread: threading.Thread | None = None  # its conversation's, set once claimed
        self.privileged = privileged
        self.since = time.monotonic()  # the connect, then the arrival of the latest request
        self.working = False  # running a command: never evicted mid-way
        self.evicted = False
