"""``chatctl watch`` on the daemon side (docs/protocol.md §11): log events, streamed live to admin connections.

Events come from where chatd already logs them: :class:`Watchers` is a tap on the structlog
chain (log.py ``add_tap``), attached only while someone watches, so with no watcher the
logging path pays one truthiness test of an empty tuple. The tap runs on whatever thread
logged (a session, the flusher, an admin connection, the main thread), possibly while it
holds the hub lock, so it never blocks and never logs: it encodes the event once and appends
the line to each watcher's bounded queue.

Each watcher is written by the admin connection thread that subscribed (:meth:`Watcher.serve`):
it pops its queue and sends with non-blocking sockets, never holding a lock while it sends.
A watcher whose queue passes ``QUEUE_BYTES`` (it reads too slowly) is marked dropped by the
tap, which empties its queue and wakes its writer; the writer then sends a final
``watch_dropped`` event if the socket takes it within ``DROP_GRACE`` seconds, closes, and logs
one ``watch_dropped`` warning (from its own thread: the tap must not log). Like a chat client
over its sendq: the slow reader is cut off, the chat never waits.

Locks (both innermost: nothing is taken while holding them, no I/O under them):

    Watchers._lock   the watcher tuple (replaced whole, so the tap reads it without a lock)
                     and the log tap's attachment; its Condition wakes :meth:`Watchers.end_all`
    Watcher._lock    one watcher's queue, its byte count and its state

The end of a watch: the peer hangs up (or sends anything: a watch connection takes no more
requests), the queue overflows, or chatd ends every watcher with a final event: ``shutdown``
when it stops, ``restarting`` when an upgrade pauses the admin socket (server.py).
"""

from __future__ import annotations

import collections
import errno
import json
import os
import select
import socket
import threading
import time

from chatd import log as chatd_log
from chatd.admin.protocol import AdminError
from chatd.text import fold, is_valid_name

#: Events a watcher sees: what an operator watches for. Others stay in the log only.
WATCHED = frozenset({
    "client_connected", "client_disconnected", "client_refused", "nick_changed", "room_joined",
    "client_kicked", "sendq_exceeded", "excess_flood", "message", "admin_command",
    "config_reloaded", "restart_required", "shutting_down", "upgrade_started", "upgrade_failed",
    "cluster_link_lost", "cluster_link_restored", "node_lost", "cluster_entry_rejected",
    "watch_dropped",
    # accounts (SPEC §12): what operators and users did to them, and logins (accounts.py
    # logs names and addresses only, never a password)
    "account_registered", "account_disabled", "account_enabled", "account_deleted",
    "password_changed", "login_ok", "login_failed", "login_refused",
})
#: Queued output per watcher (not yet taken by its writer). The writer may hold as much
#: again, taken and being sent; the socket buffer holds the rest.
QUEUE_BYTES = 256 * 1024
#: How long a dropped or ending watcher's writer tries to deliver its last lines.
DROP_GRACE = 2.0
#: How long stop() and pause() wait for the writers to deliver ``shutdown``/``restarting``.
END_WAIT = 1.0
_SKIPPED = ("exc_info", "stack_info", "level")


def event_line(fields: dict, final: bool = False) -> bytes:
    """One event -> its wire line ``{"event": {...}}`` (values JSON cannot hold become text);
    the last line of a watch also says ``"final": true``."""
    envelope = {"event": fields, "final": True} if final else {"event": fields}
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def final_line(name: str, **fields) -> bytes:
    """The last line of a watch (``shutdown``, ``restarting``, ``watch_dropped``): chatd
    closes the connection after it, and chatctl knows the end was meant."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    return event_line({"timestamp": stamp, "event": name, **fields}, final=True)


def rooms_of(fields: dict) -> tuple[str, ...]:
    """The rooms an event concerns, folded: ``room``, and ``left`` for a /join."""
    return tuple(fold(r) for r in (fields.get("room"), fields.get("left")) if isinstance(r, str))


class Watcher:
    """One subscription. The tap calls :meth:`offer`, chatd :meth:`end`; the subscribing admin
    connection thread runs :meth:`serve`. ``_lock`` guards ``_queue``, ``_bytes``, ``state``."""

    OPEN, ENDING, DROPPED, CLOSED = "open", "ending", "dropped", "closed"

    def __init__(self, room: str | None) -> None:
        self.room = fold(room) if room else None
        self._lock = threading.Lock()
        self._queue: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self.state = self.OPEN
        # The tap wakes the writer through a pipe, so the writer can poll() its socket and
        # the wake-up at once; a write to a full pipe just fails (one byte is enough).
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wants(self, rooms: tuple[str, ...]) -> bool:
        return self.room is None or self.room in rooms

    def offer(self, line: bytes) -> None:
        """On the logging thread: queue ``line``, or drop this watcher if it is over its limit."""
        with self._lock:
            if self.state is not self.OPEN:
                return
            if self._bytes + len(line) > QUEUE_BYTES:
                self.state = self.DROPPED
                self._queue.clear()
                self._bytes = 0
                self._wake()
                return
            self._queue.append(line)
            self._bytes += len(line)
            if len(self._queue) == 1:  # else the writer has been woken for the first one
                self._wake()

    def end(self, line: bytes) -> None:
        """Queue a last line (over the limit if need be) and have the writer finish."""
        with self._lock:
            if self.state is not self.OPEN:
                return
            self._queue.append(line)
            self.state = self.ENDING
            self._wake()

    def _wake(self) -> None:
        """``_lock`` held, so that :meth:`close` cannot free the descriptor (for the number to
        be reused by some socket) between our check and this write. A non-blocking write:
        a full pipe means the writer is woken already."""
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def _take(self) -> tuple[bytes, str]:
        with self._lock:
            data = b"".join(self._queue)
            self._queue.clear()
            self._bytes = 0
            return data, self.state

    def close(self) -> None:
        """The writer has left: no more offers, and the wake-up pipe is freed."""
        with self._lock:
            self.state = self.CLOSED
            self._queue.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- the writer (the admin connection thread) ----------------------------------------------

    def serve(self, conn: socket.socket) -> tuple[str, bytes]:
        """Send events until the watch ends; returns why: ``closed`` (the peer went),
        ``ended`` (the final event was sent) or ``dropped`` (too slow: the caller logs it,
        then calls :meth:`farewell` with the unsent rest, also returned)."""
        conn.setblocking(False)
        poller = select.poll()
        poller.register(conn, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        pending = b""
        while True:
            if self.state is self.DROPPED:
                return "dropped", pending
            if not pending:
                pending, state = self._take()
                if state is self.DROPPED:
                    return "dropped", b""
                if not pending and state is self.ENDING:
                    return "ended", b""
            poller.modify(conn, select.POLLIN | (select.POLLOUT if pending else 0))
            for fd, events in poller.poll():
                if fd == self._wake_r:
                    _drain(self._wake_r)
                elif events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    if not _still_there(conn):
                        return "closed", b""
                elif events & select.POLLOUT:
                    try:
                        pending = pending[conn.send(pending):]
                    except BlockingIOError:
                        pass

    @staticmethod
    def farewell(conn: socket.socket, pending: bytes) -> None:
        """A dropped watch: finish the line being sent, then say why we stop, if the peer
        takes it within ``DROP_GRACE`` seconds (on the watcher's own thread: nobody waits)."""
        cut = pending.find(b"\n") + 1 if pending else 0
        data = pending[:cut] + final_line("watch_dropped", reason="too slow")
        deadline = time.monotonic() + DROP_GRACE
        while data and time.monotonic() < deadline:
            if not select.select([], [conn], [], max(0.0, deadline - time.monotonic()))[1]:
                break
            try:
                data = data[conn.send(data):]
            except BlockingIOError:
                continue
            except OSError:
                break


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _still_there(conn: socket.socket) -> bool:
    """Readable on a watch connection: EOF or an error means the peer is gone; anything it
    sends is ignored (a watch takes no further requests)."""
    try:
        return bool(conn.recv(4096))
    except BlockingIOError:
        return True
    except OSError as exc:
        return exc.errno == errno.EINTR


class Watchers:
    """The subscriptions of one admin server. ``subscribe``/``unsubscribe`` run on admin
    connection threads, ``end_all`` on the thread that stops or pauses the admin server, and
    the tap (:meth:`publish`) on any thread that logs. See the module docstring for the locks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = threading.Condition(self._lock)
        self._watchers: tuple[Watcher, ...] = ()

    def __len__(self) -> int:
        return len(self._watchers)

    def subscribe(self, room: str | None) -> Watcher:
        watcher = Watcher(room)
        with self._lock:
            first = not self._watchers
            self._watchers = (*self._watchers, watcher)
            if first:
                chatd_log.add_tap(self.tap)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers = tuple(w for w in self._watchers if w is not watcher)
            if not self._watchers:
                chatd_log.remove_tap(self.tap)
            self._gone.notify_all()
        watcher.close()

    def end_all(self, name: str, timeout: float = END_WAIT) -> None:
        """Give every watcher the final event ``name`` and wait (bounded) until their writers
        have sent it and left."""
        line = final_line(name)
        for watcher in self._watchers:
            watcher.end(line)
        with self._lock:
            self._gone.wait_for(lambda: not self._watchers, timeout)

    def tap(self, event_dict: dict) -> None:
        """The log tap (log.py): copy a watched event to every watcher that wants it."""
        name = event_dict.get("event")
        if name not in WATCHED:
            return
        watchers = self._watchers
        # timestamp and event first, as in the JSON log (log.py's _event_first)
        fields = {"timestamp": event_dict.get("timestamp"), "event": name}
        fields.update((k, v) for k, v in event_dict.items() if k not in _SKIPPED)
        rooms = rooms_of(fields)
        line = None
        for watcher in watchers:
            if watcher.wants(rooms):
                line = line or event_line(fields)
                watcher.offer(line)


# -- the ``watch`` admin command -------------------------------------------------------------------

def do_watch(ctx, room: str | None = None) -> tuple[dict, Subscription]:
    """Subscribed before the reply goes out, so no event between the two is missed: the
    events queued meanwhile follow the reply, streamed by the connection's own thread."""
    name = room.removeprefix("#") if room else room
    if name is not None and not is_valid_name(name):
        raise AdminError("bad_args", f"watch: invalid room {room[:64]!r}")
    subscription = Subscription(ctx.watchers, name)
    return {"watching": True, "room": name}, subscription


class Subscription:
    """A watch's follow-up: once the reply is sent, :meth:`run` turns the connection into the
    watcher's writer until the watch ends; :meth:`abandon` unsubscribes instead, for a reply
    that could not be sent."""

    def __init__(self, watchers: Watchers, room: str | None) -> None:
        self._watchers = watchers
        self.room = room
        self._watcher = watchers.subscribe(room)

    def run(self, conn: socket.socket, peer_log) -> None:
        try:
            how, unsent = self._watcher.serve(conn)
        finally:
            self._watchers.unsubscribe(self._watcher)
        if how == "dropped":
            peer_log.warning("watch_dropped", reason="too slow", room=self.room)
            self._watcher.farewell(conn, unsent)
        conn.shutdown(socket.SHUT_RDWR)  # the watch is over: so is the connection

    def abandon(self) -> None:
        self._watchers.unsubscribe(self._watcher)
