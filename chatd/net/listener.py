"""The TCP listener: accept, admit (bans, limits), and start one session thread per client.

Accepting runs on an :class:`~chatd.net.acceptor.Acceptor` thread, which survives resets and
``EMFILE``. A refused client gets its one error line with a non-blocking send on a fresh,
empty socket, so refusing never blocks the accept thread.

On the TLS listener a connection is not a client until its handshake is done, so it cannot
take a ``max_clients`` slot by saying nothing (issue 9: 1,100 silent connections kept plain
clients out). At accept it needs a *handshake slot* instead: at most ``max_handshakes`` at
once, ``max_handshakes_per_ip`` from one address; a connection over either cap is reset at
once and counted in a throttled ``tls_handshake_refused`` line. Its thread runs the handshake
within ``handshake_timeout``, gives the slot back, and only then is the connection admitted
like a plain one (bans, ``max_clients``, ``max_clients_per_ip``): a refusal is sent over TLS.
The same thread then becomes the session thread, so threads stay bounded by
``max_handshakes + max_clients``.
"""

from __future__ import annotations

import _thread
import socket
import struct
import threading

import structlog

from chatd.core.client import Client
from chatd.core.closing import SHUTDOWN
from chatd.core.events import Error, ServerShutdown
from chatd.core.session import Session
from chatd.core.settings import Settings
from chatd.line.protocol import LINE
from chatd.net.acceptor import Acceptor
from chatd.net.handshakes import HandshakeSlots, Throttled
from chatd.net.refusal import Lingerer
from chatd.net.tls import TlsChannel, TlsError

log = structlog.get_logger("chatd.server")

#: Keepalive reclaims half-open connections (peer vanished without FIN) when idle_timeout is off.
_KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}
#: SO_LINGER on, zero seconds: close() sends an RST and frees the socket at once.
_RESET = struct.pack("ii", 1, 0)


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

    def __init__(self, sock: socket.socket, hub, flusher, bans, settings: Settings, ids,
                 tls_context=None, passed: bool = False, protocol=lambda: LINE) -> None:
        """``ids`` hands out client ids (shared by all listeners); ``tls_context`` makes this
        the TLS listener (a reload may replace it: new connections use the new one);
        ``passed`` says systemd owns the socket (socket activation); ``protocol()`` gives a
        new connection's protocol object (core/protocol.py): the line protocol's, or IRC's."""
        self.sock = sock
        self.protocol = protocol
        self.passed = passed
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
        self._handshakes = HandshakeSlots()
        self._refused = Throttled("tls_handshake_refused", "warning")
        self._lingerer = Lingerer()  # refused sockets: drained a moment, then closed
        self._failed = Throttled("tls_handshake_failed", "info")
        self.address = sock.getsockname()[:2]
        self._acceptor = Acceptor(sock, "accept", self._accepted, self._connect_to_self if passed else None)

    def start(self) -> None:
        self._acceptor.start()

    def stop(self) -> None:
        """Stop accepting and end the handshakes under way (their connections are not
        clients yet, so the service's shutdown would not reach them)."""
        self._acceptor.stop()
        self._end_handshakes()
        self._refused.flush()
        self._failed.flush()

    def _end_handshakes(self) -> None:
        for client in self._handshakes.close():
            self.flusher.disconnect(client.outbox, SHUTDOWN)  # wakes the handshake's recv

    def pause(self) -> None:
        """Stop accepting, the socket left listening: an upgrade (upgrade.py) is under way.
        Handshakes under way end: a TLS session cannot be handed over."""
        self._acceptor.pause()
        self._end_handshakes()

    def resume(self) -> None:
        """Accept again (the upgrade failed)."""
        self._handshakes.reopen()
        self._acceptor.resume()

    @property
    def live_sessions(self) -> int:
        with self._sessions_lock:
            return self._live

    def resume_client(self, client, state: dict) -> None:
        """Serve a client taken over from the process before an upgrade (upgrade.py)."""
        session = Session(client, self.hub, self.flusher, self.settings)
        session.take_over(state)
        self._start(client, session)

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
        """Bans and limits on the accept thread: cheap checks only, nothing that blocks."""
        config = self.settings.config
        client = Client(next(self._ids), conn, addr, self.protocol())
        ban = self.bans.match(client.ip)
        if ban is not None:
            refusal, notice = "banned", ban.notice()
        elif self.tls_context is not None:
            refusal = self._handshakes.take(client, config.max_handshakes, config.max_handshakes_per_ip)
            if refusal:
                self._reset(client, refusal)
                return
        else:
            refusal = self.hub.admit(client, config.max_clients, config.max_clients_per_ip)
            notice = Error(refusal)
        if refusal:
            self._refuse(client, refusal, notice)
            return
        _tune(conn, config.sndbuf_bytes)
        if self.tls_context is not None:
            client.outbox.tls = TlsChannel(self.tls_context)
            self._refused.flush(due_only=True)  # the tail of a flood that has stopped
            self._failed.flush(due_only=True)
        else:  # under systemd a restart keeps it (fdstore.py); a TLS session cannot be kept
            self.settings.fd_store.keep_client(client)
        self._start(client)

    def readmit(self, client_id: int, conn: socket.socket) -> None:
        """A connection systemd's fd store kept that its state does not know (admitted after
        the last write before a crash): a new client again, under its old id, which is its
        name in the store (fdstore.py)."""
        try:
            addr = conn.getpeername()
        except OSError:  # gone meanwhile
            self.settings.fd_store.forget_id(client_id)
            conn.close()
            return
        client = Client(client_id, conn, addr, self.protocol())
        if client.outbox.protocol.names_itself:  # (IRC) a client that thinks it registered
            self.settings.fd_store.forget_id(client_id)  # would be told 451: it reconnects
            conn.close()
            return
        refusal = self.hub.admit(client, self.settings.config.max_clients,
                                 self.settings.config.max_clients_per_ip)
        if refusal:
            self.settings.fd_store.forget_client(client)
            self._refuse(client, refusal, Error(refusal))
            return
        self._start(client)

    def _refuse(self, client, refusal: str, notice) -> None:
        log.info("client_refused", peer=client.peer, reason=refusal)
        conn = client.sock
        try:
            if self.tls_context is None:  # a TLS client could not read it: just close
                conn.send(client.outbox.protocol.line(notice), socket.MSG_DONTWAIT)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        self._lingerer.hand(conn)  # closed once it has read what the client sent (refusal.py)

    def _reset(self, client, reason: str) -> None:
        """Drop a connection over a handshake cap: an RST, at once. It cannot read a word
        from us before TLS, and an RST leaves no TIME_WAIT or FIN_WAIT state behind, which
        matters at thousands of these a second; a real client sees ECONNRESET and retries."""
        self._refused.note(peer=client.peer, reason=reason)
        try:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        except OSError:
            pass
        client.sock.close()

    def _start(self, client, resumed=None) -> None:
        """The client's thread; ``resumed``: its Session, taken over from an upgrade."""
        with self._sessions_lock:
            self._live += 1
        self.flusher.adopt()
        try:
            _thread.start_new_thread(self._run_client, (client, resumed))
        except RuntimeError as exc:  # out of threads: undo the admission, keep serving
            log.error("accept_failed", error=str(exc), peer=client.peer)
            self.settings.fd_store.forget_client(client)
            self._session_ended()
            self._handshakes.give_back(client)
            self.hub.remove(client, None)
            self.flusher.finish(client.outbox, linger=False)

    def _run_client(self, client, resumed) -> None:
        """The connection's thread: the TLS handshake and admission if any, then the session."""
        try:
            if resumed is not None:
                resumed.run(resumed=True)
            elif client.outbox.tls is None or self._secure(client):
                Session(client, self.hub, self.flusher, self.settings).run()
        finally:
            if client.outbox.tls is None:
                self.settings.fd_store.forget_client(client)  # over: not for a restart
            self._session_ended()

    # -- a TLS connection's thread, before it is a client ---------------------------------

    def _secure(self, client) -> bool:
        """Handshake, then admit like a plain client; False if the connection has ended."""
        error = self._handshake(client)
        listening = self._handshakes.give_back(client)
        if error is not None:
            if client.outbox.close_reason is None:  # not ended by stop()
                self._failed.note(peer=client.peer, error=error)
            self.flusher.finish(client.outbox, linger=False)
            return False
        refusal, notice = self._admission(client) if listening else (SHUTDOWN, ServerShutdown())
        if refusal is None:
            return True
        if refusal is not SHUTDOWN:
            log.info("client_refused", peer=client.peer, reason=refusal, tls=True)
        self.flusher.submit(client.outbox, client.outbox.protocol.line(notice))  # over TLS
        self.flusher.finish(client.outbox, linger=True)
        return False

    def _handshake(self, client) -> str | None:
        """Run the handshake within ``handshake_timeout``; returns why it failed, or None."""
        try:
            client.outbox.tls.handshake(client.sock, self.settings.config.handshake_timeout)
        except TlsError as exc:
            return str(exc)
        except OSError as exc:
            return exc.strerror or "connection reset"
        except Exception:  # a bug: this connection ends, its slot is given back
            log.exception("tls_handshake_crashed", peer=client.peer)
            return "internal error"
        return None

    def _admission(self, client):
        """The plain port's checks, now that the connection is a client: (None, None) when
        admitted, else (the refusal text or closing.SHUTDOWN, the event to tell the client)."""
        config = self.settings.config
        ban = self.bans.match(client.ip)
        if ban is not None:  # banned while it was handshaking
            return "banned", ban.notice()
        refusal = self.hub.admit(client, config.max_clients, config.max_clients_per_ip)
        if refusal is None and self._handshakes.closed:
            # stop() began after give_back: the shutdown may have listed the clients
            # before this one was among them, so it would never be told. End it here.
            self.hub.remove(client, None)
            return SHUTDOWN, ServerShutdown()
        return refusal, Error(refusal) if refusal else None

    def _session_ended(self) -> None:
        with self._sessions_done:
            self._live -= 1
            if self._live == 0:
                self._sessions_done.notify_all()
        gate = self.settings.gate
        if gate is not None:
            gate.changed()  # an upgrade waiting for every session to park counts again


def _tune(conn: socket.socket, sndbuf: int) -> None:
    """Per-connection socket options: no Nagle delay on chat lines, keepalive for dead peers,
    and a fixed send buffer (``sndbuf``, 0 = autotuning): what the kernel holds for a client
    that does not read is then bounded by chatd's config, not by tcp_wmem (4 MB a socket),
    and ``sendq_bytes`` is what it says (docs/protocol.md §3)."""
    try:
        if sndbuf:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE.items():
            if hasattr(socket, name):
                conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # the peer may already be gone; the session will find out
