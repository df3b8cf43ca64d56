"""In-process harness: the real Flusher, Hub, Room, Client and Session, wired over socketpairs.

The live tests (support/daemon.py) run chatd as a subprocess; these run its parts inside the test
process so that a rewrite of how client-visible text is produced (events, renderer, close
reasons, the room log) is caught in milliseconds. They still use the real thing at the edges:
every client is a real ``socket.socketpair()``; the flusher thread really sends on one end and
the test reads the exact bytes that arrive on the other end (the *peer*, what netcat would see).

Everything that builds a Flusher, Hub, Client or Session lives here, in :class:`World`, so a
signature change in chatd is fixed in one place.

Synchronisation without sleeps: :meth:`World.settle` queues a flusher ``ping`` and waits (with
a deadline) until ``pongs`` counts it. The flusher runs its queue in order, so by then every line
queued before has been handed to the kernel, and on a socketpair that means it is already
readable on the peer: :meth:`Peer.available` reads it without blocking. Anything a peer has not
received by then was not sent. (A peer whose socket is full is the exception; tests of backlogs
read with :meth:`Peer.read_exactly`, which waits with a deadline.)

Fixtures (loaded for every test through tests/conftest.py)
    ``make_world(sendq_bytes=…, start=True, **config_fields)`` -> :class:`World`
    ``world``  ``make_world()`` with the default Config.
At teardown every connection is ended, the session threads are joined and the flusher stopped;
a flusher or session that does not end in time fails the test.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest

from chatd.config import Config
from chatd.core.client import Client
from chatd.core.events import Motd, Welcome
from chatd.core.flusher import Flusher
from chatd.core.hub import Hub
from chatd.core.session import Session
from chatd.line.protocol import LINE
from support.waiting import wait_until

#: Upper bound for any wait. Tests normally settle in milliseconds; this only bounds a failure.
DEADLINE = 3.0
#: What the harness's register() greets with (LINE.greeting, which Session._serve sends, builds
#: the same shape).
GREETING = [Welcome("chatd"), Motd("Type /help for the list of commands.")]
#: The same greeting as the lines a client reads.
GREETING_LINES = ["*** welcome to chatd", "*** Type /help for the list of commands."]
#: A send buffer small enough that a peer that does not read fills it with a few KiB.
SMALL_SNDBUF = 1024


def crlf(*lines: str) -> bytes:
    """The bytes chatd sends for ``lines``: UTF-8, each ended by CRLF (docs/protocol.md §1)."""
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


class Peer:
    """The far end of one client's socketpair: what the user's terminal would receive."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.eof = False

    def available(self) -> bytes:
        """Everything readable right now, without waiting (after :meth:`World.settle`)."""
        chunks = []
        while not self.eof:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
            chunks.append(data)
        return b"".join(chunks)

    def records(self) -> list[bytes]:
        """On a SOCK_SEQPACKET pair: one item per ``send`` chatd made, readable right now."""
        records = []
        while True:
            try:
                records.append(self.sock.recv(1 << 20, socket.MSG_DONTWAIT))
            except BlockingIOError:
                return records

    def read_exactly(self, size: int, timeout: float = DEADLINE) -> bytes:
        """``size`` bytes, waiting for them with a deadline; fails early on EOF."""
        chunks, got = [], 0
        deadline = time.monotonic() + timeout
        while got < size:
            data = self._recv_by(deadline, size - got)
            if not data:
                pytest.fail(f"EOF after {got} of {size} bytes: {b''.join(chunks)[-200:]!r}")
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def read_to_eof(self, timeout: float = DEADLINE) -> bytes:
        """Everything until the connection closes (fails if it does not close in time)."""
        chunks = []
        deadline = time.monotonic() + timeout
        while not self.eof:
            data = self._recv_by(deadline, 65536)
            if not data:
                self.eof = True
            chunks.append(data)
        return b"".join(chunks)

    def _recv_by(self, deadline: float, size: int) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("timed out waiting for bytes from chatd")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            pytest.fail(f"timed out after {DEADLINE}s waiting for bytes from chatd")
        finally:
            self.sock.settimeout(None)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


@dataclass
class Conn:
    """One client: chatd's side (``client``, and ``session`` once made) and the ``peer``."""

    world: World
    client: Client
    peer: Peer
    session: Session | None = None
    thread: threading.Thread | None = None
    ended: bool = field(default=False)

    @property
    def outbox(self):
        return self.client.outbox

    @property
    def nick(self) -> str:
        return self.client.nick

    def take(self) -> bytes:
        """Everything this client has been sent since the last take (settles the flusher)."""
        self.world.settle()
        return self.peer.available()

    def line(self, raw: bytes) -> None:
        """What the session does with one received line (framing and pacing left out)."""
        self.session._handle(raw)


class World:
    """A Flusher and a Hub, and the clients made on them; the one place that constructs them."""

    def __init__(self, sendq_bytes: int = 262144, start: bool = True, **config_fields) -> None:
        self.config = replace(Config(), sendq_bytes=sendq_bytes, **config_fields)
        self.settings = SimpleNamespace(config=self.config, accounts=None)  # what Session reads
        self.flusher = Flusher(sendq_bytes)
        self.hub = Hub(self.flusher)
        self.conns: list[Conn] = []
        self._ids = itertools.count(1)
        self._ports = itertools.count(40001)
        self._pings = 0
        self.started = False
        if start:
            self.start()

    def start(self) -> None:
        self.flusher.start()
        self.started = True

    def settle(self, timeout: float = DEADLINE) -> None:
        """Return once the flusher has run everything queued before this call."""
        self._pings += 1
        target = self._pings
        self.flusher.ping()
        wait_until(lambda: self.flusher.pongs >= target, timeout, "the flusher to catch up",
                   interval=0.001)

    # -- clients ------------------------------------------------------------------------------

    def connect(self, ip: str = "127.0.0.1", *, admit: bool = True, register: bool = True,
                session: bool = True, sndbuf: int | None = None,
                sock_type: int = socket.SOCK_STREAM) -> Conn:
        """A client as the accept thread makes one: a Client on a socketpair, counted by the
        flusher, admitted by the hub (no limits here), registered (greeting, guest nick,
        lobby), with a Session to feed lines to. Registration output is not taken."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, sock_type)
        if sndbuf is not None:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        client = Client(next(self._ids), ours, (ip, next(self._ports)), LINE)
        conn = Conn(self, client, Peer(theirs))
        self.conns.append(conn)
        self.flusher.adopt()
        if admit:
            assert self.hub.admit(client, 1 << 30, 1 << 30) is None
        if register:
            self.hub.register(client, list(GREETING))
        if session:
            conn.session = Session(client, self.hub, self.flusher, self.settings)
        return conn

    def connected(self, count: int) -> list[Conn]:
        """``count`` registered clients, their greetings and join notices already taken."""
        conns = [self.connect() for _ in range(count)]
        self.settle()
        for conn in conns:
            conn.peer.available()
        return conns

    def run_session(self, conn: Conn) -> None:
        """Run the real session loop (greeting, reading, quit, cleanup) on its own thread."""
        conn.thread = threading.Thread(target=conn.session.run, name=f"session-{conn.client.id}",
                                       daemon=True)
        conn.thread.start()

    def disconnect(self, conn: Conn, reason, notice=None) -> None:
        """End a connection from outside its session, as kick, ban, idle and shutdown do
        (``reason`` a closing.Close, ``notice`` an event or None)."""
        self.flusher.disconnect(conn.outbox, reason, notice)

    def end(self, conn: Conn, reason=None) -> None:
        """What a session does when its connection ends: leave the hub (telling the room why,
        ``reason`` a closing.Close), hand the socket over."""
        self.hub.remove(conn.client, reason)
        self.flusher.finish(conn.outbox, linger=False)
        conn.ended = True

    def close(self) -> None:
        """Teardown: end every connection, join session threads, stop the flusher."""
        for conn in self.conns:
            if conn.thread is not None:
                conn.peer.sock.close()  # the session sees EOF and cleans up itself
                conn.thread.join(DEADLINE)
                assert not conn.thread.is_alive(), "session thread did not end"
            elif not conn.ended:
                self.end(conn)
        if self.started:
            assert self.flusher.stop(1.0), "flusher thread did not stop"
        for conn in self.conns:
            conn.peer.sock.close()
            if conn.client.sock.fileno() != -1:  # the flusher was stopped before it finished
                conn.client.sock.close()


@pytest.fixture
def make_world():
    worlds = []

    def make(**kwargs) -> World:
        world = World(**kwargs)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()
