"""The load generator: one epoll loop, in one thread pinned to its own core, driving every
client connection of a workload.

It is built not to be the bottleneck. While a workload is measured, a receiving connection does
no per-line Python work at all: ``recvmsg_into`` writes straight into a pre-faulted arena (no
allocation, no page faults while measuring), and the connection notes ``(kernel receive time,
offset, length)`` for the chunk; the kernel's timestamp (``SO_TIMESTAMPNS``) means a late read
by this loop does not count as server latency. Progress is counted in bytes. Checking every
line (lost, duplicated, garbled, latency) happens after the measurement, in analysis.py.

A connection is in one mode at a time:

- ``SETUP``: lines are handed to the protocol adapter (registration) until it says ready;
- ``IDLE``: data is dropped, but join notices are counted on the observer (connection 0), a
  broadcast marker is looked for, and IRC PINGs are answered;
- ``RECORD``: chunks are kept for analysis;
- ``WATCH``: as RECORD, and the loop also parses lines to learn how far each sender's messages
  got (``acked``), which is what bounds the senders' in-flight window;
- ``MUTE``: never read (the slow client), removed from epoll.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time

from bench.protocols import PAYLOAD_BYTES, Refused

SO_TIMESTAMPNS = 35  # Linux; Python has no constant for it
_TIMESPEC = struct.Struct("qq")
CONNECTING, SETUP, IDLE, RECORD, WATCH, MUTE = range(6)
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_TAIL = 200  # bytes kept from the last chunk: marker boundaries and drop diagnostics


class Conn:
    __slots__ = ("idx", "node", "sock", "fd", "mode", "nick", "mask", "rest", "chunks", "outbuf",
                 "tail", "bcast_ts", "closed", "hidden")

    def __init__(self, idx: int, sock: socket.socket, node: int = 0) -> None:
        self.idx = idx
        self.node = node  # which of the server's endpoints it is connected to
        self.sock = sock
        self.fd = sock.fileno()
        self.mode = CONNECTING
        self.nick = b""
        self.mask = b""
        self.rest = b""
        self.chunks: list = []
        self.outbuf = bytearray()
        self.tail = b""
        self.bcast_ts = 0
        self.closed: str | None = None
        #: senders (their index in the payload) whose lines the server must not deliver to
        #: this client, because it ignores them (bench/ignore.py); analysis.py expects none
        self.hidden: frozenset[int] = frozenset()


class Engine:
    """Owns the epoll object and the connections. Workloads call ``open_conn``, ``poll``,
    ``send``, ``set_mode`` and read the counters; ``close`` at the end.

    ``port`` is one port, or a list of them (the nodes of a multi-node server): connection
    ``i`` goes to endpoint ``i % K``, so the clients spread round-robin over the nodes."""

    def __init__(self, proto, port: int | list[int], recv_size: int = 262144) -> None:
        self.proto = proto
        ports = port if isinstance(port, (list, tuple)) else [port]
        self.addrs = [("127.0.0.1", p) for p in ports]
        self.addr = self.addrs[0]
        self.recv_size = recv_size
        self.ep = select.epoll()
        self.conns: list[Conn] = []
        self.by_fd: dict[int, Conn] = {}
        self.timestamps = True
        self.ready = 0  # connections past SETUP
        self.heard = 0  # connections that have received anything (so the server accepted them)
        self.rx_bytes = 0  # bytes received by RECORD/WATCH connections
        self.arena: memoryview | None = None  # where RECORD/WATCH chunks go, see arm()
        self.arena_used = 0
        self.arena_full = False  # then chunks are kept as bytes
        self.last_rx = 0  # realtime ns of the last chunk received, any mode
        self.joins = 0  # join notices seen by connection 0 while IDLE
        self.bmarker: bytes | None = None  # broadcast marker looked for while IDLE
        self.bcast_hits = 0
        self.acked: list[int] = []  # per sender: highest sequence number WATCH saw
        self.dropped: list[tuple[int, str, bytes]] = []  # (idx, reason, last bytes)
        self._ping = proto.pings  # IRC: answer the server's PINGs while idle
        #: ``proto.source(idx)``, if the adapter has it: the loopback address (127.x.y.z)
        #: connection ``idx`` connects from (bench/accounts.py: one per client, since chatd
        #: counts login attempts per address)
        self.source = getattr(proto, "source", None)

    # -- connections --------------------------------------------------------------------------

    def open_conn(self, rcvbuf: int | None = None, mss: int | None = None) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.timestamps:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                self.timestamps = False
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        if self.source is not None:
            try:
                sock.bind((self.source(len(self.conns)), 0))
            except OSError:
                sock.close()
                raise
        node = len(self.conns) % len(self.addrs)
        err = sock.connect_ex(self.addrs[node])
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        conn = Conn(len(self.conns), sock, node)
        self.conns.append(conn)
        self.by_fd[conn.fd] = conn
        self.ep.register(conn.fd, _OUT)
        return conn

    def set_mode(self, conn: Conn, mode: int) -> None:
        if conn.closed:
            return
        if mode == MUTE and conn.mode != MUTE:
            self.ep.unregister(conn.fd)
        conn.mode = mode
        conn.rest = b""

    def send(self, conn: Conn, data: bytes) -> None:
        if conn.closed:
            return
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._drop(conn, f"send: {exc.strerror}")
            return
        if sent < len(data):
            conn.outbuf += data[sent:]
            if conn.mode != MUTE:
                self.ep.modify(conn.fd, _IN | _OUT)

    def arm(self, size: int) -> None:
        """Pre-fault ``size`` bytes for RECORD/WATCH chunks (beyond it, chunks are bytes)."""
        self.arena = memoryview(bytearray(size))  # bytearray(n) writes every page
        self.arena_used = 0
        self.arena_full = False
        self.rx_bytes = 0

    def chunk_bytes(self, chunk) -> bytes:
        """The data of a recorded chunk, ``(ts, offset, length)`` or ``(ts, bytes)``."""
        if len(chunk) == 2:
            return chunk[1]
        return self.arena[chunk[1]:chunk[1] + chunk[2]].tobytes()

    def disarm(self) -> None:
        self.arena = None

    def close(self) -> None:
        for conn in self.conns:
            if not conn.closed:
                conn.sock.close()
                conn.closed = "closed"
        self.ep.close()

    # -- the loop -----------------------------------------------------------------------------

    def poll(self, timeout: float) -> int:
        events = self.ep.poll(timeout)
        if self.arena is not None:
            events = self._record_all(events)
        by_fd = self.by_fd
        for fd, ev in events:
            conn = by_fd.get(fd)
            if conn is None or conn.closed:
                continue
            if conn.mode == CONNECTING:
                self._connected(conn)
                continue
            if ev & _OUT:
                self._flush(conn)
            if ev & ~_OUT and not conn.closed:
                self._read(conn)
        return len(events)

    def _record_all(self, events: list) -> list:
        """The measured hot path, for every plain-readable RECORD connection: receive into
        the arena and note (kernel time, offset, length). Returns the events left for the
        general path (other modes, writable, errors, end of stream, arena full)."""
        by_fd = self.by_fd
        arena = self.arena
        used = self.arena_used
        size = self.recv_size
        limit = len(arena) - size
        unpack = _TIMESPEC.unpack
        newest = self.last_rx
        rest = []
        for event in events:
            conn = by_fd.get(event[0])
            if event[1] != _IN or conn is None or conn.mode != RECORD or used > limit:
                rest.append(event)
                continue
            try:
                n, anc, _, _ = conn.sock.recvmsg_into([arena[used:used + size]], 64)
            except BlockingIOError:
                continue
            except OSError:
                rest.append(event)  # the general path reads again and reports the error
                continue
            if not n:
                self._drop(conn, "eof")
                continue
            if anc:
                sec, nsec = unpack(anc[0][2])
                ts = sec * 1_000_000_000 + nsec
            else:
                ts = time.time_ns()
            conn.chunks.append((ts, used, n))
            used += n
            if ts > newest:
                newest = ts
        self.rx_bytes += used - self.arena_used
        self.arena_used = used
        self.last_rx = newest
        return rest

    def _connected(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop(conn, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.ep.modify(conn.fd, _IN)
        if self.proto.silent:  # a server that says nothing: connected = ready
            conn.mode = IDLE
            self.ready += 1
            self.heard += 1
            return
        conn.mode = SETUP
        hello = self.proto.hello(conn)
        if hello:
            self.send(conn, hello)

    def _flush(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(conn, f"send: {exc.strerror}")
            return
        del conn.outbuf[:sent]
        if not conn.outbuf:
            self.ep.modify(conn.fd, _IN)

    def _read(self, conn: Conn) -> None:
        mode = conn.mode
        if mode >= RECORD and self.arena is not None and not self.arena_full:
            self._record(conn)
            return
        try:
            data, anc, _, _ = conn.sock.recvmsg(self.recv_size, 64)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(conn, f"recv: {exc.strerror}")
            return
        if not data:
            self._drop(conn, "eof")
            return
        ts = _rx_time(anc)
        self.last_rx = ts
        if mode == IDLE:
            self._idle(conn, data, ts)
        elif mode == SETUP:
            self._setup(conn, data)
        elif mode >= RECORD:  # the arena is full (or was not armed)
            conn.chunks.append((ts, data))
            self.rx_bytes += len(data)
            if mode == WATCH:
                self._watch(conn, data)
        if len(data) >= _TAIL:
            conn.tail = data[-_TAIL:]
        else:
            conn.tail = conn.tail[len(data) - _TAIL:] + data

    def _record(self, conn: Conn) -> None:
        """The measured hot path: receive into the arena, note where and when."""
        off = self.arena_used
        size = self.recv_size
        if off + size > len(self.arena):
            self.arena_full = True
            self._read(conn)
            return
        try:
            n, anc, _, _ = conn.sock.recvmsg_into([self.arena[off:off + size]], 64)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(conn, f"recv: {exc.strerror}")
            return
        if not n:
            self._drop(conn, "eof")
            return
        ts = _rx_time(anc)
        self.last_rx = ts
        conn.chunks.append((ts, off, n))
        self.arena_used = off + n
        self.rx_bytes += n
        if conn.mode == WATCH:
            self._watch(conn, self.arena[off:off + n].tobytes())

    def _idle(self, conn: Conn, data: bytes, ts: int) -> None:
        marker = self.proto.join_marker
        if conn.idx == 0 and marker:
            edge = conn.tail[1 - len(marker):] + data[:len(marker) - 1]
            self.joins += data.count(marker) + edge.count(marker)
        bmarker = self.bmarker
        if bmarker is not None and not conn.bcast_ts:
            edge = conn.tail[1 - len(bmarker):] + data[:len(bmarker) - 1]
            if bmarker in data or bmarker in edge:
                conn.bcast_ts = ts
                self.bcast_hits += 1
        if self._ping and b"PING " in data:
            for line in data.split(b"\n"):
                if line.startswith(b"PING "):
                    self.send(conn, b"PONG " + line[5:].rstrip(b"\r") + b"\r\n")

    def _setup(self, conn: Conn, data: bytes) -> None:
        if not conn.tail:
            self.heard += 1
        lines = (conn.rest + data).split(b"\n")
        conn.rest = lines.pop()
        proto = self.proto
        for line in lines:
            try:
                reply, ready = proto.setup_line(conn, line)
            except Refused as exc:
                self._drop(conn, f"refused: {exc}")
                return
            if reply:
                self.send(conn, reply)
            if ready:
                conn.mode = IDLE
                conn.rest = b""
                self.ready += 1
                return

    def _watch(self, conn: Conn, data: bytes) -> None:
        lines = (conn.rest + data).split(b"\n")
        conn.rest = lines.pop()
        end = -len(self.proto.eol) or None
        acked = self.acked
        for line in lines:
            body = line[:end][-PAYLOAD_BYTES:]
            if body[:2] == b"@@":
                try:
                    sender, seq = int(body[2:5]), int(body[6:13])
                except ValueError:
                    continue
                if sender < len(acked) and seq > acked[sender]:
                    acked[sender] = seq

    def _drop(self, conn: Conn, reason: str) -> None:
        if conn.closed:
            return
        if conn.mode != MUTE:
            try:
                self.ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass
        conn.closed = reason
        conn.sock.close()
        self.dropped.append((conn.idx, reason, conn.tail))

    def alive(self) -> int:
        return sum(1 for conn in self.conns if not conn.closed)


def _rx_time(ancdata) -> int:
    """The kernel's receive timestamp (SO_TIMESTAMPNS) in ns, or now if none came with it."""
    if ancdata:
        sec, nsec = _TIMESPEC.unpack(ancdata[0][2])
        return sec * 1_000_000_000 + nsec
    return time.time_ns()
