"""A userspace TCP proxy between chatd and Redis, to break the link in controlled ways.

The cluster tests (issue 10, docs/protocol.md §8) configure a chatd node with :attr:`TcpProxy.url` instead
of Redis' own address, then hurt the link while Redis itself stays up:

- :meth:`TcpProxy.pause` stops forwarding in both directions and keeps every connection open
  (a partition: nothing arrives, nothing is reset); :meth:`TcpProxy.resume` forwards what
  waited, in order. The proxy's kernel still ACKs what the node sends, so TCP keepalive does
  not see this partition: only the node's own timeouts and heartbeats can (new connections
  are accepted too, and hang the same way).
- :meth:`TcpProxy.set_latency` holds every chunk that long before forwarding it, each way
  (a slow Redis; chunks keep their order and throughput is not capped).
- :meth:`TcpProxy.cut` resets every connection (RST both ways) and, for ``refuse_for``
  seconds or until :meth:`TcpProxy.restore`, closes the listening port so that new
  connections are refused (ECONNREFUSED), as from a Redis host that went away.

One thread runs the whole proxy: a selector loop over the listening socket, every connection's
two non-blocking sockets and a wake-up socketpair. The control methods are called from the test
thread; each hands the loop a closure and waits until the loop has run it, so when
``pause()`` returns no further byte is forwarded, and when ``cut()`` returns every connection is
gone. :meth:`TcpProxy.close` stops the loop, closes every socket and fails the test if the
thread did not end, so a test that uses the proxy leaks neither threads nor descriptors.

Fixture
    ``tcp_proxy``  factory: ``tcp_proxy(target) -> TcpProxy`` where ``target`` is a port or
                   anything with ``.port`` (a :class:`support.redisfix.RedisServer`). Closed
                   at teardown. Loaded like ``redis_server``, through tests/conftest.py.
"""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time

import pytest

from support.sockets import rst_close

CHUNK = 65536
MAX_QUEUED = 1 << 20  # per direction: beyond this the proxy stops reading, so TCP pushes back
CONTROL_TIMEOUT = 5.0


class _Flow:
    """One direction of one connection: bytes read from ``src``, waiting to go to ``dst``.

    ``queue`` holds ``(due, bytes)`` in arrival order; ``eof`` is set once ``src`` has closed
    its side, and the FIN is passed on after the queue drained.
    """

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.eof = False
        self.shut = False  # the FIN went to dst

    def due(self) -> float | None:
        return self.queue[0][0] if self.queue else None


class _Conn:
    """A client connection and its upstream connection: two flows."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.up = _Flow(client, upstream)
        self.down = _Flow(upstream, client)
        self.socks = (client, upstream)

    def done(self) -> bool:
        return self.up.shut and self.down.shut


class TcpProxy:
    """Forward ``127.0.0.1:port`` to ``target_host:target_port``; see the module docstring.

    ``accepted`` counts connections ever accepted, ``forwarded`` bytes forwarded (both ways);
    :meth:`connections` is how many are open now.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 scheme: str = "redis", auth: str = "") -> None:
        self.target = (target_host, target_port)
        self.scheme = scheme
        self.auth = auth  # ":PASSWORD@" of the server behind, for url
        self.latency = 0.0
        self.paused = False
        self.accepted = 0
        self.forwarded = 0
        self._conns: list[_Conn] = []
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._controls: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._reopen_at: float | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy:{self.port}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<TcpProxy :{self.port} -> {self.target[0]}:{self.target[1]}>"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.auth}127.0.0.1:{self.port}/0"

    # -- control (test thread) ---------------------------------------------------------------

    def pause(self) -> None:
        """Stop forwarding both ways; connections stay open and new ones are still accepted."""
        self._control(lambda: setattr(self, "paused", True))

    def resume(self) -> None:
        """Forward again, starting with what waited during the pause."""
        self._control(lambda: setattr(self, "paused", False))

    def set_latency(self, seconds: float) -> None:
        """Hold each chunk ``seconds`` before forwarding it, in each direction (0 = none).
        Applies to chunks read from now on."""
        self._control(lambda: setattr(self, "latency", float(seconds)))

    def cut(self, refuse_for: float | None = 0.0) -> None:
        """RST every connection, both ways. ``refuse_for`` > 0: also refuse new connections
        for that many seconds; None: refuse until :meth:`restore`; 0: keep accepting."""
        self._control(lambda: self._cut(refuse_for))

    def restore(self) -> None:
        """Accept connections again (after ``cut(refuse_for=...)``), on the same port."""
        self._control(self._reopen)

    def connections(self) -> int:
        """Connections open through the proxy now."""
        return self._control(lambda: len(self._conns))

    def listening(self) -> bool:
        return self._control(lambda: self._listener is not None)

    def close(self) -> None:
        """Stop the loop, close every socket; fails the test if the thread does not end."""
        if self._thread.is_alive() and not self._stopping:
            self._control(lambda: setattr(self, "_stopping", True))
        self._thread.join(CONTROL_TIMEOUT)
        if self._thread.is_alive():
            pytest.fail(f"{self!r}: proxy thread still running {CONTROL_TIMEOUT}s after close")
        if self._error is not None:
            pytest.fail(f"{self!r}: the proxy loop failed: {self._error!r}")

    def _control(self, action):
        """Run ``action`` on the loop thread and return its result, waiting for it."""
        done = threading.Event()
        box: list = []

        def run():
            box.append(action())
            done.set()

        with self._lock:
            if self._stopping or not self._thread.is_alive():
                pytest.fail(f"{self!r}: the proxy is closed (or its thread died: {self._error!r})")
            self._controls.append(run)
        self._wake_w.send(b"x")
        if not done.wait(CONTROL_TIMEOUT):
            pytest.fail(f"{self!r}: the proxy loop did not answer within {CONTROL_TIMEOUT}s")
        return box[0]

    # -- the loop (proxy thread) -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._arm()
                for key, mask in self._sel.select(self._timeout()):
                    self._ready(key.fileobj, mask)
                self._reopen_if_due()
                for conn in self._conns:
                    self._pump(conn)
                self._reap()
        except BaseException as exc:  # noqa: BLE001 - reported by close(), in the test thread
            self._error = exc
        finally:
            self._shutdown()

    def _timeout(self) -> float | None:
        """Until the next held chunk falls due (or the port reopens); None: until woken. A chunk
        already due waits for its socket to be writable (EVENT_WRITE), not for a timeout."""
        now = time.monotonic()
        times = [] if self._reopen_at is None else [self._reopen_at]
        if not self.paused:
            times += [t for c in self._conns for t in (c.up.due(), c.down.due())
                      if t is not None and t > now]
        return max(0.0, min(times) - now) if times else None

    def _arm(self) -> None:
        """Register each socket for what it may do now: read if not paused and its flow has
        room, write if not paused and a chunk is due."""
        now = time.monotonic()
        for conn in self._conns:
            if conn.done():
                continue
            for sock in conn.socks:
                events = 0
                for flow in (conn.up, conn.down):
                    if self.paused:
                        continue
                    if flow.src is sock and not flow.eof and flow.queued < MAX_QUEUED:
                        events |= selectors.EVENT_READ
                    if flow.dst is sock and flow.queue and flow.queue[0][0] <= now:
                        events |= selectors.EVENT_WRITE
                self._set_events(sock, events)

    def _set_events(self, sock: socket.socket, events: int) -> None:
        registered = self._sel.get_map().get(sock)
        if registered is None and events:
            self._sel.register(sock, events)
        elif registered is not None and not events:
            self._sel.unregister(sock)
        elif registered is not None and registered.events != events:
            self._sel.modify(sock, events)

    def _ready(self, sock, mask: int) -> None:
        """Readable sockets are read here; writable ones are served by _pump after the select."""
        if sock is self._wake_r:
            self._run_controls()
        elif sock is self._listener:
            if self._listener is not None:  # a control run just before may have closed it
                self._accept()
        elif mask & selectors.EVENT_READ:
            for conn in self._conns:
                if sock in conn.socks and not conn.done():
                    self._read(conn, sock)

    def _run_controls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            actions, self._controls = list(self._controls), collections.deque()
        for action in actions:
            action()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=CONTROL_TIMEOUT)
        except OSError:
            rst_close(client)  # nothing to forward to: the client sees a reset, as through a LB
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        self._conns.append(_Conn(client, upstream))

    def _read(self, conn: _Conn, sock: socket.socket) -> None:
        flow = conn.up if sock is conn.up.src else conn.down
        if self.paused or flow.eof:
            return
        try:
            data = sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._reset(conn)
            return
        if not data:
            flow.eof = True
            return
        flow.queue.append((time.monotonic() + self.latency, data))
        flow.queued += len(data)

    def _pump(self, conn: _Conn) -> None:
        """Send what is due on each flow; pass a FIN on once a closed side's queue drained."""
        if self.paused or conn.done():
            return
        now = time.monotonic()
        for flow in (conn.up, conn.down):
            while flow.queue and flow.queue[0][0] <= now:
                due, data = flow.queue[0]
                try:
                    sent = flow.dst.send(data)
                except BlockingIOError:
                    break
                except OSError:
                    self._reset(conn)
                    return
                self.forwarded += sent
                flow.queued -= sent
                if sent < len(data):
                    flow.queue[0] = (due, data[sent:])
                    break
                flow.queue.popleft()
            if flow.eof and not flow.queue and not flow.shut:
                try:
                    flow.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                flow.shut = True

    def _reset(self, conn: _Conn) -> None:
        """One side failed (or a cut): reset both, as a middlebox that lost the flow would."""
        if conn.done():  # already reset, or closed by both sides and about to be reaped
            return
        for sock in conn.socks:
            if sock in self._sel.get_map():
                self._sel.unregister(sock)
            rst_close(sock)
        conn.up.shut = conn.down.shut = True

    def _reap(self) -> None:
        for conn in [c for c in self._conns if c.done()]:
            self._conns.remove(conn)
            for sock in conn.socks:
                if sock.fileno() >= 0:
                    if sock in self._sel.get_map():
                        self._sel.unregister(sock)
                    sock.close()

    def _cut(self, refuse_for: float | None) -> None:
        for conn in self._conns:
            self._reset(conn)
        self._reap()
        if refuse_for == 0:
            return
        self._close_listener()
        self._reopen_at = None if refuse_for is None else time.monotonic() + refuse_for

    # -- the listening socket ----------------------------------------------------------------

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port))
        except OSError as exc:
            listener.close()
            pytest.fail(f"proxy could not listen on 127.0.0.1:{port} again: {exc}")
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ)
        return listener.getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _reopen(self) -> None:
        self._reopen_at = None
        if self._listener is None:
            self._listen(self.port)

    def _reopen_if_due(self) -> None:
        if self._reopen_at is not None and time.monotonic() >= self._reopen_at:
            self._reopen()

    def _shutdown(self) -> None:
        """Loop exit: close (FIN) every connection, the listener and the selector."""
        for conn in self._conns:
            for sock in conn.socks:
                sock.close()
        self._conns.clear()
        self._close_listener()
        self._sel.close()
        self._wake_r.close()
        # the test thread's control calls are done once _stopping is set; its end closes last
        self._wake_w.close()


@pytest.fixture
def tcp_proxy():
    """Factory: ``tcp_proxy(target) -> TcpProxy``; ``target`` is a port or has ``.port`` (and
    then its ``.auth`` goes into the proxy's url). The port is read when the proxy starts:
    after ``RedisServer.restart()`` (same port) its new connections reach the new process."""
    proxies: list[TcpProxy] = []

    def start(target, host: str = "127.0.0.1") -> TcpProxy:
        port = target if isinstance(target, int) else target.port
        proxy = TcpProxy(port, host, auth=getattr(target, "auth", ""))
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()
