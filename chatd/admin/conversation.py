"""One connected chatctl: its requests read, answered in turn, and whatever follows a reply.

Runs on the connection's own thread, the only one that reads or writes its socket (an eviction
or the server's stop only shuts it down). A connection must send a complete request within
``IDLE_SECONDS`` of the previous one (trickling bytes does not count), and finish a request
within ``REQUEST_SECONDS`` of starting it. A command's follow-up (commands.py) runs here once
its reply is sent: a ``watch`` makes this thread the watcher's writer until the watch ends.
"""

from __future__ import annotations

import socket
import time
from contextvars import ContextVar

from chatd.admin import protocol as adminproto
from chatd.admin.commands import TABLE
from chatd.admin.protocol import MAX_REQUEST_BYTES, AdminError, error_line, ok_line
from chatd.line.framing import LINE_TOO_LONG, LineFramer

IDLE_SECONDS = 60.0  # from one complete request (or the connect) to the next
REQUEST_SECONDS = 10.0  # from the first byte of a request to its LF
#: On a connection thread running a command that ``asks`` (commands.Spec): (its connection,
#: the request's id). An upgrade execs with it and the new image answers
#: (service.request_upgrade, reexec.py).
ASKING: ContextVar[tuple[socket.socket, object] | None] = ContextVar("admin_asking",
                                                                    default=None)


class Conversation:
    """The request loop of one admin connection. ``server`` is what it answers for: its
    ``commands`` (AdminCommands), ``paused`` (an upgrade: refuse with ``upgrading``),
    ``stopping`` (an Event) and ``count(command, outcome)`` (the admin_command counts)."""

    def __init__(self, server, conn: socket.socket, slot, peer_log) -> None:
        self._server = server
        self._conn = conn
        self._slot = slot  # server.py's _Slot: since, working (written only here)
        self._log = peer_log

    def run(self) -> None:
        framer = LineFramer(MAX_REQUEST_BYTES)
        started = None  # when the request now arriving began
        slot = self._slot
        while not self._server.stopping.is_set():
            line = framer.next_line()
            if line is None:
                started = started or (time.monotonic() if framer.pending_bytes else None)
                if not self._wait_for_input(started):
                    return
                try:
                    data = self._conn.recv(65536)
                except TimeoutError:
                    self._log.info("admin_timeout", partial=started is not None)
                    return
                if not data:
                    return
                framer.feed(data)
                continue
            # since = when this request arrived: the peer cannot have sent its next one before
            # our reply, so requests on different connections are ordered as they were asked
            started, slot.working, slot.since = None, True, time.monotonic()
            follow_up = self._reply(line)
            slot.working = False
            if follow_up is not None:
                follow_up.run(self._conn, self._log)

    def _wait_for_input(self, started: float | None) -> bool:
        """Set the socket's timeout to what is left of the connection's time; False: none."""
        deadline = self._slot.since + IDLE_SECONDS
        if started is not None:
            deadline = min(deadline, started + REQUEST_SECONDS)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._log.info("admin_timeout", partial=started is not None)
            return False
        self._conn.settimeout(remaining)
        return True

    def _reply(self, line):
        """Answer one line; returns the follow-up to run once the reply is sent, or None."""
        conn = self._conn
        conn.settimeout(IDLE_SECONDS)  # a long reply (list) to a slow reader: not a request's time
        if line is LINE_TOO_LONG:
            self._log.warning("admin_command", outcome="line_too_long")
            self._server.count(None, "line_too_long")
            conn.sendall(error_line(None, "line_too_long"))
        elif line.strip():
            reply, follow_up = self._answer(line)
            try:
                conn.sendall(reply)
            except BaseException:
                if follow_up is not None:
                    follow_up.abandon()  # e.g. a watch nobody will ever read
                raise
            return follow_up
        return None

    def _answer(self, line: bytes):
        """One request line -> (reply line, follow-up to run once the reply is sent, or None)."""
        server, peer_log = self._server, self._log
        request_id = None
        cmd = None
        try:
            request = adminproto.parse_request(line)
            request_id, cmd = request.id, request.cmd
            if server.paused:
                raise AdminError("upgrading")
            if TABLE[cmd].asks:
                ASKING.set((self._conn, request_id))
            result, follow_up = server.commands.run(cmd, request.args)
        except AdminError as exc:
            peer_log.info("admin_command", command=cmd, outcome=exc.code, message=exc.message)
            server.count(cmd, exc.code)
            return error_line(exc.request_id if cmd is None else request_id, exc.code, exc.message), None
        except Exception:  # noqa: BLE001 - a bug in one command: internal_error, the connection goes on
            peer_log.exception("admin_command", command=cmd, outcome="internal_error")
            server.count(cmd, "internal_error")
            return error_line(request_id, "internal_error"), None
        try:
            reply = ok_line(request_id, result)
        except ValueError:  # a non-finite number in the result: strict JSON has no spelling for it
            if follow_up is not None:
                follow_up.abandon()
            peer_log.exception("admin_command", command=cmd, outcome="internal_error")
            server.count(cmd, "internal_error")
            return error_line(request_id, "internal_error"), None
        peer_log.info("admin_command", command=cmd, args=server.commands.loggable(cmd, request.args),
                      outcome="ok")
        server.count(cmd, "ok")
        return reply, follow_up
