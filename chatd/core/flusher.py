"""The output side of every connection: bounded outboxes and the one thread that writes them.

Readers are one thread per client (session.py); writing is done by a single *flusher* thread.
Any thread queues work here (a room with new lines, a private line, a disconnect); queuing takes
a short lock, appends to a list, and never blocks or touches a client socket. The flusher then:

- coalesces: everything a recipient has pending leaves in one non-blocking ``send``;
- never waits on a slow client: what the kernel does not take stays in that client's backlog,
  and the socket is watched with epoll until it is writable again;
- enforces ``sendq_bytes``: a backlog that would pass it gets the client disconnected with
  reason ``sendq exceeded`` (from here, a safe place, not from inside whoever posted the line).
  What is queued for one client (``submit``: replies, private lines,
  history, ``/who``, ``/rooms``) counts from the moment it is queued, not only once this
  thread has taken it: a client that asks for 130 KB replies faster than the flusher (or the
  kernel) takes them is over its limit at the request that passes it, and that request's data
  is dropped, never held. Room lines are not copied per client (rooms.py) and count once a
  flush hands them to the backlog;
- is the only thread that sends on, shuts down or closes a client socket. The session only
  ``recv``s, and hands its socket over (``finish``) when it is done. Keeping close here means a
  file descriptor is never closed while another thread might still write to it.

The flusher knows writing, not rooms: a room queues its own work with :meth:`Flusher.call`
(rooms.py), and that work writes through :meth:`Flusher.deliver` and :meth:`Flusher.deliver_many`.

Thread ownership: :class:`Outbox` objects (outbox.py) and ``_writers``/``_lingering`` belong to
the flusher thread alone, except ``Outbox.queued_in`` and ``Outbox.over``, which ``_lock``
guards (the submitters' side of the count). ``_lock`` guards ``_queue``, ``_sleeping`` and
those two; it is the innermost lock (hub lock, then a room lock, then this one).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import structlog

from chatd.core.closing import RESET, SENDQ_EXCEEDED, Close
from chatd.core.freeze import Freezable
from chatd.core.outbox import CLOSED, CLOSING, DEAD, LINGERING, OPEN, Outbox

log = structlog.get_logger("chatd.flusher")

#: How long a closing client may take to drain its last lines (quit, kick, shutdown).
LINGER_SECONDS = 2.0
#: The least time from one take of the work queue to the next. A take after a quiet spell
#: runs at once; under steady traffic what comes within the hold leaves in one send per
#: recipient, not one send per line (issue 28: a send is most of what a delivery costs).
#: 0.5 ms: the paced fan-out's p99 on the IRC port 1.56 ms (median), against 1.96 at 0.75 ms,
#: 2.22 at 1 ms and ngircd's 2.05, for half again the CPU of 1 ms; no hold at all costs more
#: sends than the tail gains (bench/README.md, issue 27).
HOLD_SECONDS = 0.0005
#: The hold of a cluster node. There a line from another node has already waited for its
#: publisher's linger (1 ms) and a Redis round trip, and the node's CPU is shared with the
#: relaying: a 2 ms hold cut the two nodes' CPU at 2,500 lines/s by 13 % with a cross-node
#: p99 no worse (docs/cluster.md, issue 28). A single node keeps HOLD_SECONDS: there the
#: hold is most of a line's latency (2 ms doubled its paced p50).
CLUSTER_HOLD_SECONDS = 0.002


class Flusher(Freezable):
    """Runs the writer thread. Callers use ``call``, ``submit``, ``disconnect`` and ``finish``
    from any thread; ``deliver``/``deliver_many`` from work running on the flusher thread;
    ``start``/``stop`` belong to the service."""

    def __init__(self, sendq_bytes: int, hold: float = HOLD_SECONDS) -> None:
        #: Replaced by a reload; read by the flusher thread (an int assignment is atomic).
        self.sendq_bytes = sendq_bytes
        self.hold = hold  # the least time between two takes of the queue (HOLD_SECONDS)
        self._lock = threading.Lock()
        self._queue: list = []
        self._sleeping = False
        self._wake_fd = -1  # eventfd and epoll are made in start(): --daemon closes fds before
        self._epoll = None
        self._writers: dict[int, Outbox] = {}  # fd -> outbox with a backlog
        self._lingering: set[Outbox] = set()
        self._open = 0  # outboxes not yet closed (flusher thread)
        self._stopping = False
        self._stop_deadline = 0.0
        #: An upgrade froze output (freeze()): nothing is taken from the queue or written until
        #: thaw(). Guarded by _lock, like the queue it holds back.
        self._frozen = False
        self.pongs = 0  # pings processed; written by the flusher thread, read by the watchdog
        #: When the flusher thread last took its queue (monotonic; that thread's alone).
        self.taken_at = -hold
        #: Output of connections already closed (lines, bytes): counted when the socket is
        #: closed, not when the client leaves the hub, so what drains while lingering counts.
        #: Written by the flusher thread, read by Hub.stats (an int read is atomic).
        self.closed_lines_out = 0
        self.closed_bytes_out = 0
        self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)

    # -- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._thread.start()

    def call(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the flusher thread, in queue order. Rooms queue their flushes,
        attaches and detaches this way while holding their lock, which keeps the queue in the
        order things happened in the room (rooms.py)."""
        self._submit((fn, *args))

    def submit(self, outbox: Outbox, data: bytes, lines: int = 1) -> None:
        """Queue ``data`` (whole encoded lines) for one client. On a TLS connection an empty
        ``data`` sends whatever TLS itself has queued (e.g. a key update reply)."""
        self._submit_counted(outbox, len(data), (self._deliver_queued, outbox, data, lines))

    def disconnect(self, outbox: Outbox, reason: Close, notice=None) -> None:
        """End a connection from outside its session (kick, idle, shutdown): send ``notice``
        (an event, rendered here on the caller's thread), then wake the session, which cleans
        up and calls :meth:`finish`."""
        data = outbox.protocol.line(notice) if notice is not None else None
        self._submit((self._disconnect, outbox, reason, data))

    def finish(self, outbox: Outbox, linger: bool) -> None:
        """The session is done reading. Close the socket, after draining it if ``linger``."""
        self._submit((self._finish, outbox, linger))

    def ping(self) -> None:
        """Queue a no-op whose completion bumps ``pongs``: the watchdog's proof of dispatch."""
        self._submit((self._pong,))

    def adopt(self) -> None:
        """Count a new connection, so stop() knows how many are still open."""
        self._submit((self._adopt,))

    def stop(self, timeout: float) -> bool:
        """Close what is left once drained (bounded by ``timeout``), then end the thread."""
        self._submit((self._begin_stop, time.monotonic() + timeout))
        self._thread.join(timeout + 1.0)
        return not self._thread.is_alive()

    def _submit_counted(self, outbox: Outbox, size: int, item: tuple) -> None:
        """Queue ``item`` (``size`` bytes for ``outbox``) unless that passes ``sendq_bytes``
        counting what is queued and backlogged already; then queue one overflow the first
        time, and nothing after. O(1): two counters and a comparison."""
        with self._lock:
            if not outbox.over and outbox.backlog_bytes + outbox.queued_in - outbox.queued_out \
                    + size <= self.sendq_bytes:
                outbox.queued_in += size
            elif not outbox.over:
                outbox.over = True
                item = (self._fail, outbox, SENDQ_EXCEEDED)
            else:
                return
            self._queue.append(item)
            wake = self._sleeping
            self._sleeping = False
        if wake:
            os.eventfd_write(self._wake_fd, 1)

    def _submit(self, item: tuple) -> None:
        with self._lock:
            self._queue.append(item)
            wake = self._sleeping
            self._sleeping = False
        if wake:
            os.eventfd_write(self._wake_fd, 1)

    # -- the flusher thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a bug here would silence every client: make it loud
            log.exception("flusher_crashed")
            raise
        finally:
            self._epoll.close()
            os.close(self._wake_fd)

    def _loop(self) -> None:
        while not self._stopped():
            _hold(self.taken_at + self.hold)
            with self._lock:
                # Always swap: the list taken is this thread's alone once the lock is let go.
                # (Keeping an empty one as the queue let a call queued before the loop below
                # run there and again at the next take.)
                items, self._queue = ([], self._queue) if self._frozen else (self._queue, [])
                if items:
                    self.taken_at = time.monotonic()
                idle = not items
                self._sleeping = idle
            for k, item in enumerate(items):
                item[0](*item[1:])
                if self._frozen:  # the rest waits for thaw(), in order
                    with self._lock:
                        self._queue[:0] = items[k + 1:]
                    break
            frozen = self._frozen
            if frozen:  # asleep until thaw(), which writes the eventfd only if it sees this
                with self._lock:
                    frozen = self._sleeping = self._frozen
            timeout = -1 if frozen else self._poll_timeout() if idle else 0
            for fd, _ in self._epoll.poll(timeout):
                if fd == self._wake_fd:
                    os.eventfd_read(self._wake_fd)
                elif not frozen:
                    outbox = self._writers.get(fd)
                    if outbox is not None:
                        self._write_backlog(outbox)
            if self._lingering and not frozen:
                self._expire_lingering()
        with self._lock:
            self._sleeping = False

    def _stopped(self) -> bool:
        """Stopping ends once every socket is closed, or at the deadline whatever is left."""
        return self._stopping and (self._open <= 0 or time.monotonic() >= self._stop_deadline)

    def _poll_timeout(self) -> float:
        deadlines = [o.linger_until for o in self._lingering]
        if self._stopping:
            deadlines.append(self._stop_deadline)
        if not deadlines:
            return -1
        return max(0.0, min(deadlines) - time.monotonic())

    def _deliver_queued(self, outbox: Outbox, data, lines: int) -> None:
        """:meth:`deliver` of what a submit counted, counted out first: once sent, the client
        may read it and ask for its ``sendq`` before this thread would get back to count it
        (``chatctl list`` showed a reply already read as queued). What the count misses for
        that moment, deliver's own test of the backlog against ``sendq_bytes`` holds."""
        outbox.queued_out += len(data)
        self.deliver(outbox, data, lines)

    def deliver(self, outbox: Outbox, data, lines: int) -> None:
        """Send ``data`` (``lines`` whole lines) to one client, or add it to its backlog, or
        end the client if that passes ``sendq_bytes``. Flusher thread only; never blocks."""
        if outbox.state > LINGERING:
            return
        if outbox.tls is not None:
            try:
                data = outbox.tls.encrypt(data)
            except Exception:  # a TLS error on one connection ends that connection only
                self._fail(outbox, RESET)
                return
            if not data:
                return
        outbox.lines_out += lines
        if outbox.backlog:
            if outbox.backlog_bytes + len(data) > self.sendq_bytes:
                self._fail(outbox, SENDQ_EXCEEDED)
                return
            outbox.backlog.append(data)
            outbox.backlog_bytes += len(data)
            return
        self._send(outbox, data)

    def deliver_many(self, outboxes, skip, data: bytes, lines: int) -> None:
        """:meth:`deliver` of one buffer to many readers but those in ``skip`` (a room flush
        to 10,000 members; ``skip`` holds the authors of lines in ``data``).

        The common case, a plain connection with nothing queued, goes straight to the send;
        anything else takes the general path. Same outcome, less Python per recipient, which
        is most of what a broadcast costs besides the syscall.
        """
        for outbox in outboxes:
            if outbox in skip:  # its own lines are in data: rooms.py sends it the rest
                continue
            if outbox.backlog or outbox.tls is not None or outbox.state:  # not OPEN (0)
                self.deliver(outbox, data, lines)
            else:
                outbox.lines_out += lines
                self._send(outbox, data)

    def _send(self, outbox: Outbox, data: bytes) -> None:
        """One non-blocking send to a client with nothing queued; what the kernel does not
        take waits in the backlog, within sendq_bytes."""
        try:
            sent = outbox.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(outbox, RESET)
            return
        outbox.bytes_out += sent
        if sent == len(data):
            return
        rest = memoryview(data)[sent:]
        if len(rest) > self.sendq_bytes:
            self._fail(outbox, SENDQ_EXCEEDED)
            return
        outbox.backlog.append(rest)
        outbox.backlog_bytes = len(rest)
        self._writers[outbox.fd] = outbox
        self._epoll.register(outbox.fd, select.EPOLLOUT)

    def _write_backlog(self, outbox: Outbox) -> None:
        backlog = outbox.backlog
        data = backlog[0] if len(backlog) == 1 else b"".join(backlog)
        try:
            sent = outbox.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._fail(outbox, RESET)
            return
        outbox.bytes_out += sent
        if sent < len(data):
            outbox.backlog = [memoryview(data)[sent:]]
            outbox.backlog_bytes = len(data) - sent
            return
        self._drop_backlog(outbox)
        if outbox.state == LINGERING:
            self._close(outbox)

    def _drop_backlog(self, outbox: Outbox) -> None:
        if outbox.fd in self._writers:
            del self._writers[outbox.fd]
            self._epoll.unregister(outbox.fd)
        outbox.backlog = []
        outbox.backlog_bytes = 0

    # -- how a connection ends (outbox.py draws the states) ----------------------------------

    def _fail(self, outbox: Outbox, reason: Close) -> None:
        """No more output (overflow, reset, a TLS error); wake the session so it cleans up, or
        close at once if it is done already."""
        if outbox.state >= DEAD:  # a submit over the limit may find it ended already
            return
        if outbox.close_reason is None:
            outbox.close_reason = reason
        if outbox.state == LINGERING:
            self._close(outbox)
            return
        outbox.state = DEAD
        self._drop_backlog(outbox)
        try:
            outbox.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected: the session's recv has returned or will

    def _disconnect(self, outbox: Outbox, reason: Close, notice: bytes | None) -> None:
        if outbox.state != OPEN:
            return  # already ending
        outbox.close_reason = reason
        outbox.state = CLOSING
        if notice:
            self.deliver(outbox, notice, 1)
        if outbox.state == CLOSING:  # keep the write side open: the notice drains
            try:
                outbox.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def _finish(self, outbox: Outbox, linger: bool) -> None:
        if outbox.backlog and linger and outbox.state <= LINGERING:
            outbox.state = LINGERING
            outbox.linger_until = time.monotonic() + LINGER_SECONDS
            self._lingering.add(outbox)
        else:
            self._close(outbox)

    def _expire_lingering(self) -> None:
        now = time.monotonic()
        for outbox in [o for o in self._lingering if o.linger_until <= now]:
            self._close(outbox)

    def _close(self, outbox: Outbox) -> None:
        if outbox.state == CLOSED:
            return
        self._drop_backlog(outbox)
        self._lingering.discard(outbox)
        outbox.state = CLOSED
        self.closed_lines_out += outbox.lines_out  # before the close a peer could see
        self.closed_bytes_out += outbox.bytes_out
        outbox.sock.close()
        outbox.sock = None
        self._open -= 1

    def _pong(self) -> None:
        self.pongs += 1

    def _adopt(self) -> None:
        self._open += 1

    def _begin_stop(self, deadline: float) -> None:
        self._stopping = True
        self._stop_deadline = deadline
        for outbox in self._lingering:
            outbox.linger_until = min(outbox.linger_until, deadline)


def _hold(until: float) -> None:
    """Wait until the hold after the last take is over (a sleep, not epoll: epoll's timeout
    is whole milliseconds). What is queued meanwhile joins the next take."""
    hold = until - time.monotonic()
    if hold > 0:
        time.sleep(hold)
