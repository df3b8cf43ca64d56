"""The TCP listener: accept, admit (bans, limits), and start one session thread per client.

Accepting runs on an :class:`~chatd.acceptor.Acceptor` thread, which survives resets and
``EMFILE``. A refused client gets its one error line with a non-blocking send on a fresh,
empty socket, so refusing never blocks the accept thread.
"""

from __future__ import annotations

import _thread
import socket
import threading

import structlog

from chatd.acceptor import Acceptor
from chatd.admincmds import ban_notice
from chatd.client import Client
from chatd.protocol import encode
from chatd.session import Session
from chatd.tls import TlsChannel

log = structlog.get_logger("chatd.server")

#: Keepalive reclaims half-open connections (peer vanished without FIN) when idle_timeout is off.
_KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Create the listening socket (errors propagate: the caller reports them and exits)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = info[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Owns the listening socket and the accept thread. ``start()``, ``stop()``,
    ``wait_sessions()``.

    Session threads are started with ``_thread.start_new_thread``, not ``threading.Thread``:
    a Thread object with its Event and Condition costs about 2 KiB per client, which matters
    at 10,000 clients. We only need to know how many are still running, which ``_live``
    counts, so shutdown can wait for them.
    """

    def __init__(self, sock: socket.socket, hub, flusher, bans, settings, ids,
                 tls_context=None, passed: bool = False) -> None:
        """``ids`` hands out client ids (shared by all listeners); ``tls_context`` makes this
        the TLS listener (a reload may replace it: new connections use the new one);
        ``passed`` says systemd owns the socket (socket activation)."""
        self.sock = sock
        self.hub = hub
        self.bans = bans
        self.flusher = flusher
        self.settings = settings
        self.tls_context = tls_context
        self._ids = ids
        self._sessions_lock = threading.Lock()  # guards _live and _probes
        self._sessions_done = threading.Condition(self._sessions_lock)
        self._live = 0  # session threads running
        self._probes: set[tuple] = set()  # source addresses of watchdog probes in flight
        self.address = sock.getsockname()[:2]
        self._acceptor = Acceptor(sock, "accept", self._accepted, self._connect_to_self if passed else None)

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        self._acceptor.stop()

    def _loopback(self) -> tuple:
        host, port = self.address
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port

    def _connect_to_self(self) -> None:
        with socket.socket(self.sock.family, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(self._loopback())

    def probe(self, timeout: float) -> bool:
        """Connect to ourselves and see the accept thread take the connection (watchdog).

        The probe's source address is registered before connecting, so the accept thread
        recognises it, closes it without admitting it, and we see the close as EOF.
        """
        family = self.sock.family
        host, port = self._loopback()
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.bind((host, 0))
                source = probe.getsockname()[:2]
                with self._sessions_lock:
                    self._probes.add(source)
                try:
                    probe.connect((host, port))
                    return probe.recv(1) == b""
                finally:
                    with self._sessions_lock:
                        self._probes.discard(source)
        except OSError:
            return False

    def wait_sessions(self, timeout: float) -> int:
        """Wait until every session thread has ended; returns how many are still running."""
        with self._sessions_done:
            self._sessions_done.wait_for(lambda: self._live == 0, max(0.0, timeout))
            return self._live

    def _accepted(self, conn: socket.socket, addr: tuple) -> None:
        if self._probes and self._is_probe(addr):
            conn.close()
        else:
            self._admit(conn, addr)

    def _is_probe(self, addr: tuple) -> bool:
        with self._sessions_lock:
            return addr[:2] in self._probes

    def _admit(self, conn: socket.socket, addr: tuple) -> None:
        config = self.settings.config
        client = Client(next(self._ids), conn, addr)
        ban = self.bans.match(client.ip)
        if ban is not None:
            refusal, notice = "banned", ban_notice(ban)
        else:
            refusal = self.hub.admit(client, config.max_clients, config.max_clients_per_ip)
            notice = f"*** error: {refusal}"
        if refusal:
            log.info("client_refused", peer=client.peer, reason=refusal)
            try:
                if self.tls_context is None:  # a TLS client could not read it: just close
                    conn.send(encode(notice), socket.MSG_DONTWAIT)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()
            return
        _tune(conn)
        if self.tls_context is not None:
            client.outbox.tls = TlsChannel(self.tls_context)
        session = Session(client, self.hub, self.flusher, self.settings)
        with self._sessions_lock:
            self._live += 1
        self.flusher.adopt()
        try:
            _thread.start_new_thread(self._run_session, (session,))
        except RuntimeError as exc:  # out of threads: undo the admission, keep serving
            log.error("accept_failed", error=str(exc), peer=client.peer)
            self._session_ended()
            self.hub.remove(client, None)
            self.flusher.finish(client.outbox, linger=False)

    def _run_session(self, session: Session) -> None:
        try:
            session.run()
        finally:
            self._session_ended()

    def _session_ended(self) -> None:
        with self._sessions_done:
            self._live -= 1
            if self._live == 0:
                self._sessions_done.notify_all()


def _tune(conn: socket.socket) -> None:
    """Per-connection socket options: no Nagle delay on chat lines, keepalive for dead peers."""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE.items():
            if hasattr(socket, name):
                conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # the peer may already be gone; the session will find out
