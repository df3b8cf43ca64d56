"""One client's reader thread: receive, frame, pace, dispatch; clean up when it ends.

The session thread is the only one that ``recv``s on its socket. It never sends: replies and
room lines are queued with the flusher (flusher.py). Flood control lives here: lines are taken
from the :class:`~chatd.protocol.LineFramer` one token at a time; while the bucket is empty
the thread keeps reading (bounded by ``recvq_bytes``) so that input is delayed, not dropped,
and a client whose unread input keeps growing past the bound is disconnected (``excess flood``).

A connection ends when the peer closes or resets, when the client quits or floods, or when
another thread asks the flusher to end it (sendq, kick, idle, shutdown), which shuts down the
socket's read side so that ``recv`` returns here. Either way :meth:`Session.run` removes the
client from the hub, tells the room, and hands the socket to the flusher to close.
"""

from __future__ import annotations

import select
import time

import structlog

from chatd.commands import dispatch
from chatd.protocol import LINE_TOO_LONG, LineFramer, Message, decode, encode, parse
from chatd.ratelimit import TokenBucket
from chatd.tls import TlsError

#: The most one recv() asks for: a sender's whole burst in one call.
RECV_SIZE = 65536
#: What a recv() asks for when the previous one did not fill its buffer. CPython allocates the
#: buffer before it blocks, so an idle client's thread holds one for as long as it waits: 64 KiB
#: from malloc dirties a page per client (~4 KiB of RSS each, 40 MiB for 10,000 idle clients),
#: while this fits a pymalloc block (bytes object <= 512 bytes). A read that fills it means
#: more is waiting, so the next one asks for RECV_SIZE again.
IDLE_RECV_SIZE = 464  # sys.getsizeof(bytes(464)) == 497: pymalloc's largest size class is 512
SHUTDOWN = "server shutting down"
EXCESS_FLOOD = "excess flood"
TLS_RECORD = b"\x16\x03"  # a TLS handshake record: what a ClientHello starts with

_log = structlog.get_logger("chatd.session")


class Session:
    __slots__ = ("client", "hub", "flusher", "settings", "framer", "bucket",
                 "_eof", "_poller", "_end", "_recv_size")

    def __init__(self, client, hub, flusher, settings) -> None:
        """``settings.config`` is the current Config; a reload swaps it, and we re-read it."""
        self.client = client
        self.hub = hub
        self.flusher = flusher
        self.settings = settings
        config = settings.config
        self.framer = LineFramer(config.max_line_bytes)
        self.bucket = TokenBucket(config.rate, config.burst, time.monotonic())
        self._eof = False
        self._poller = None
        self._end: str | None = None  # set by /quit
        self._recv_size = IDLE_RECV_SIZE  # see IDLE_RECV_SIZE

    @property
    def log(self):
        """A logger bound to this client. Made when needed (events are rare per client), not
        kept: a bound logger per connection is memory that 10,000 idle clients would hold."""
        return _log.bind(client_id=self.client.id, peer=self.client.peer)

    # -- used by command handlers -------------------------------------------------------------

    def reply(self, *lines: str) -> None:
        self.hub.send_to(self.client, *lines)

    def error(self, text: str) -> None:
        self.hub.send_to(self.client, f"*** error: {text}")

    def may_speak(self) -> bool:
        """False (and the client told so) while an operator has muted it."""
        if self.client.muted:
            self.error("you are muted")
            return False
        return True

    def quit(self, reason: str) -> None:
        self._end = reason

    def log_message(self, text: str, **fields) -> None:
        if self.settings.config.log_messages:
            self.log.info("message", room=self.client.room.name, text=text, **fields)

    # -- the thread ---------------------------------------------------------------------------

    def run(self) -> None:
        client = self.client
        self.log.info("client_connected", tls=self.client.outbox.tls is not None)
        reason = "connection closed"
        try:
            reason = self._serve()
        except OSError:
            reason = "connection reset"
        except Exception:
            self.log.exception("session_failed")
            reason = "internal error"
        finally:
            self._close(client.outbox.close_reason or reason)

    def _close(self, reason: str) -> None:
        client = self.client
        if reason == SHUTDOWN:
            farewell = None
        elif reason.startswith("kicked: "):
            farewell = f"*** {client.nick} was kicked ({reason[8:]})"
            self.log.info("client_kicked", nick=client.nick, reason=reason[8:])
        else:
            farewell = f"*** {client.nick} left {client.room.name if client.room else ''} ({reason})"
        if reason == "sendq exceeded":
            self.log.warning("sendq_exceeded", limit=self.settings.config.sendq_bytes)
        self.hub.remove(client, farewell)
        self.flusher.finish(client.outbox, linger=True)
        self.log.info("client_disconnected", reason=reason, nick=client.nick,
                      duration=round(time.time() - client.connected_at, 3),
                      bytes_in=client.bytes_in, lines_in=client.lines_in)

    def _serve(self) -> str:
        # A TLS connection is through its handshake already (server.py: before it is a client).
        config = self.settings.config
        greeting = [f"*** welcome to {config.server_name}", *(f"*** {line}" for line in config.motd)]
        self.hub.register(self.client, greeting)
        while True:
            if self._end:
                return self._end
            end = self._drain_lines()
            if end:
                return end
            if self._eof:
                return "connection closed"
            self._receive(RECV_SIZE)

    def _receive(self, size: int) -> None:
        client = self.client
        size = min(size, self._recv_size)
        data = client.sock.recv(size)
        if not data:
            self._eof = True
            return
        self._recv_size = RECV_SIZE if len(data) == size else IDLE_RECV_SIZE
        first = client.bytes_in == 0
        client.bytes_in += len(data)
        client.last_active = time.monotonic()
        tls = client.outbox.tls
        if tls is not None:
            data = self._decrypt(tls, data)
            if not data:
                return
        elif first and data.startswith(TLS_RECORD):
            # A TLS client on the plain port: it cannot read our text, so just end quietly.
            self.log.info("tls_on_plain_port")
            self._end = "tls on plain port"
            return
        config = self.settings.config  # limits follow a reload from the next read on
        self.bucket.rate, self.bucket.burst = config.rate, config.burst
        self.framer.max_line_bytes = config.max_line_bytes
        self.framer.feed(data)

    def _decrypt(self, tls, raw: bytes) -> bytes | None:
        try:
            plain, tls_output = tls.decrypt(raw)
        except TlsError as exc:
            self.log.warning("tls_error", error=str(exc))
            self._end = "tls error"
            return None
        if tls_output:  # TLS wants to answer (e.g. a key update): the flusher sends it
            self.flusher.submit(self.client.outbox, b"", 0)
        if plain is None:  # close_notify
            self._eof = True
        return plain

    def _drain_lines(self) -> str | None:
        """Handle every complete line buffered, one flood token each; a reason ends us."""
        framer = self.framer
        while True:
            raw = framer.next_line()
            if raw is None:
                return None
            if raw is LINE_TOO_LONG:
                self.error(f"line too long (max {framer.max_line_bytes} bytes)")
                continue
            end = self._pace()
            if end:
                return end
            self._handle(raw)
            if self._end:
                return self._end

    def _pace(self) -> str | None:
        """Wait for a flood token, reading on meanwhile; returns a reason if we must end."""
        bucket = self.bucket
        while (delay := bucket.take(time.monotonic())) > 0:
            if self._eof:  # peer is gone: pace what it left, but let kick/shutdown end us
                if self.client.outbox.close_reason:
                    return self.client.outbox.close_reason
                time.sleep(min(delay, 0.25))
            elif self._readable(delay):
                room = self.settings.config.recvq_bytes - self.framer.pending_bytes
                if room <= 0:
                    self.log.warning("excess_flood", recvq=self.framer.pending_bytes)
                    self.error("excess flood")
                    return EXCESS_FLOOD
                self._receive(min(room, RECV_SIZE))
        return None

    def _readable(self, timeout: float) -> bool:
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.client.sock, select.POLLIN)
        return bool(self._poller.poll(timeout * 1000))

    def _handle(self, raw: bytes) -> None:
        text = decode(raw)
        parsed = parse(text)
        if parsed is None:
            return
        self.client.lines_in += 1
        if parsed.__class__ is Message:
            if not self.may_speak():
                return
            self.hub.say(self.client, encode(f"<{self.client.nick}> {parsed.text}"))
            self.log_message(parsed.text)
        else:
            dispatch(self, parsed)
