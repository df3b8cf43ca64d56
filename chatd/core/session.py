"""One client's reader thread: receive, decrypt, pace, hand lines over; clean up when it ends.

The session thread is the only one that ``recv``s on its socket. It never sends: replies and
room lines are queued with the flusher (flusher.py). It knows no protocol: the client's
protocol object (protocol.py, on the outbox) makes the session's *reader*, which frames what
was received, says what a line over the limit or a partial line is, and handles each complete
line (for the line protocol: chatd/line/reader.py, with telnet negotiation taken out and the
command table). Flood control lives here: lines are taken from the reader one token at a time;
while the bucket is empty the thread keeps reading (bounded by ``recvq_bytes``) so that input
is delayed, not dropped, and a client whose unread input keeps growing past the bound is
disconnected (``excess flood``).

Replies and notices are events (events.py), rendered by the protocol. A connection ends,
for one of the reasons in ``closing.CLOSE_KINDS``, when the peer closes or resets, when the
client quits or floods, or when another thread asks the flusher to end it (sendq, kick, idle,
shutdown), which shuts down the socket's read side so that ``recv`` returns here. Either way :meth:`Session.run` removes the
client from the hub, tells the room, and hands the socket to the flusher to close.
"""

from __future__ import annotations

import select
import time

import structlog

from chatd.core.bus import ClusterUnavailable
from chatd.core.closing import CLOSED, EXCESS_FLOOD, RESET, Close
from chatd.core.events import Error
from chatd.core.outbox import ChannelError
from chatd.core.ratelimit import TokenBucket
from chatd.core.settings import Settings

#: The most one recv() asks for: a sender's whole burst in one call.
RECV_SIZE = 65536
#: What a recv() asks for when the previous one did not fill its buffer. CPython allocates the
#: buffer before it blocks, so an idle client's thread holds one for as long as it waits: 64 KiB
#: from malloc dirties a page per client (~4 KiB of RSS each, 40 MiB for 10,000 idle clients),
#: while this fits a pymalloc block (bytes object <= 512 bytes). A read that fills it means
#: more is waiting, so the next one asks for RECV_SIZE again.
IDLE_RECV_SIZE = 464  # sys.getsizeof(bytes(464)) == 497: pymalloc's largest size class is 512
TLS_RECORD = b"\x16\x03"  # a TLS handshake record: what a ClientHello starts with

_log = structlog.get_logger("chatd.session")


class Session:
    __slots__ = ("client", "hub", "flusher", "settings", "reader", "bucket", "_handle",
                 "_eof", "_poller", "_end", "_recv_size", "_held", "_gate")

    def __init__(self, client, hub, flusher, settings: Settings) -> None:
        """``settings.config`` is the current Config; a reload swaps it, and we re-read it."""
        self.client = client
        self.hub = hub
        self.flusher = flusher
        self.settings = settings
        config = settings.config
        self.bucket = TokenBucket(config.rate, config.burst, time.monotonic())
        #: The input side of the client's protocol (protocol.py ``Reader``): framing, and what
        #: a line does; ``_handle`` is its ``handle``, bound once for the per-line path.
        self.reader = client.outbox.protocol.reader(self)
        self._handle = self.reader.handle
        self._eof = False
        self._poller = None
        self._end: Close | None = None  # set by /quit and by what ends the session from here
        self._recv_size = IDLE_RECV_SIZE  # see IDLE_RECV_SIZE
        self._held = None  # the line taken from the reader that waits for a flood token
        self._gate = getattr(settings, "gate", None)  # gate.py: where an upgrade parks us

    @property
    def log(self):
        """A logger bound to this client. Made when needed (events are rare per client), not
        kept: a bound logger per connection is memory that 10,000 idle clients would hold."""
        return _log.bind(client_id=self.client.id, peer=self.client.peer)

    # -- used by command handlers -------------------------------------------------------------

    def reply(self, *events) -> None:
        self.hub.send_to(self.client, *events)

    def error(self, text: str) -> None:
        self.hub.send_to(self.client, Error(text))

    def may_speak(self) -> bool:
        """False (and the client told so) while an operator has muted it."""
        if self.client.muted:
            self.error("you are muted")
            return False
        return True

    def may_say(self) -> bool:
        """:meth:`may_speak`, and in a moderated room (+m) only its operators and voiced
        members speak (roomstate.py); a room that is not moderated costs one test."""
        if not self.may_speak():
            return False
        client = self.client
        room = client.room
        state = room.state
        if "m" in state.modes and not state.may_speak(client.id, client.nick, client.account):
            self.error(f"{room.name} is moderated: only its operators and voiced members speak")
            return False
        return True

    def quit(self, reason: Close) -> None:
        self._end = reason

    def log_message(self, text: str, **fields) -> None:
        """A chat line in the log (``log_messages``), in the client's room unless ``fields``
        name one (an IRC client's channel; an IRC client may be in none)."""
        if self.settings.config.log_messages:
            room = self.client.room
            if "room" not in fields and room is not None:
                fields["room"] = room.name
            self.log.info("message", nick=self.client.nick, text=text, **fields)

    # -- the thread ---------------------------------------------------------------------------

    def run(self, resumed: bool = False) -> None:
        """Serve until the connection ends; ``resumed``: taken over from the process before
        an upgrade, registered already (upgrade.py)."""
        client = self.client
        reason = CLOSED
        try:
            reason = self._serve(resumed)
        except OSError:
            reason = RESET
        except Exception:
            self.log.exception("session_failed")
            reason = Close("internal")
        finally:
            self._close(client.outbox.close_reason or reason)

    def _close(self, reason: Close) -> None:
        client = self.client
        room = client.room.name if client.room is not None else None  # gone after remove()
        if reason.event == "client_kicked":
            self.log.info("client_kicked", nick=client.nick, room=room, reason=reason.detail)
        elif reason.event == "sendq_exceeded":
            self.log.warning("sendq_exceeded", nick=client.nick, room=room,
                             limit=self.settings.config.sendq_bytes)
        self.hub.remove(client, reason)
        self.flusher.finish(client.outbox, linger=True)
        accounts = getattr(self.settings, "accounts", None)
        if client.account is not None and client.positions is not None and accounts is not None \
                and reason.kind != "elsewhere":  # (the login that closed it took them over)
            accounts.remember(client.account, client.positions)  # what it misses starts here
        self.log.info("client_disconnected", reason=reason.text, nick=client.nick, room=room,
                      duration=round(time.time() - client.connected_at, 3),
                      bytes_in=client.bytes_in, lines_in=client.lines_in)

    def _serve(self, resumed: bool) -> Close:
        # A TLS connection is through its handshake already (server.py: before it is a client).
        config = self.settings.config
        tls = self.client.outbox.tls is not None
        protocol = self.client.outbox.protocol
        try:
            if not resumed and protocol.names_itself:  # (its reader registers it: IRC)
                self.log.info("client_connected", tls=tls, pending=True,
                              protocol=protocol.name)
            elif not resumed and self._must_log_in():
                self.hub.greet_pending(self.client, self.client.outbox.protocol.greeting(config))
                self.log.info("client_connected", tls=tls, pending=True)
            elif not resumed:
                nick = self.hub.register(self.client,
                                         self.client.outbox.protocol.greeting(config))
                # logged once in the lobby, so that it can say with which nick (watch.py)
                self.log.info("client_connected", tls=tls, nick=nick, room=self.client.room.name)
        except ClusterUnavailable:  # no nick can be handed out that is sure to be unique
            self.log.info("client_connected", tls=tls)
            # not in a room: goes straight to the flusher
            self.error(self.client.outbox.protocol.cluster_unavailable)
            return Close("cluster")
        while True:
            if self._end:
                return self._end
            end = self._drain_lines()
            if end:
                return end
            if self._eof:
                if self._last_partial():
                    continue
                return CLOSED
            self._receive(RECV_SIZE)

    def _must_log_in(self) -> bool:
        """A closed server (docs/protocol.md §12): the client gets no nick and no room until
        it logs in (identity.py), and housekeeping ends it after ``login_timeout``."""
        accounts = getattr(self.settings, "accounts", None)
        return accounts is not None and accounts.closed

    def _receive(self, size: int) -> None:
        client = self.client
        size = min(size, self._recv_size)
        if not self._await_input():
            return  # a partial line was taken whole instead (_held)
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
            self._end = Close("tls_plain")
            return
        config = self.settings.config  # limits follow a reload from the next read on
        self.bucket.rate, self.bucket.burst = config.rate, config.burst
        self.reader.feed(data)  # (the reader's own limits too)

    def _decrypt(self, tls, raw: bytes) -> bytes | None:
        try:
            plain, tls_output = tls.decrypt(raw)
        except ChannelError as exc:
            self.log.warning("tls_error", error=str(exc))
            self._end = Close("tls_error")
            return None
        if tls_output:  # TLS wants to answer (e.g. a key update): the flusher sends it
            self.flusher.submit(self.client.outbox, b"", 0)
        if plain is None:  # close_notify
            self._eof = True
        return plain

    def _drain_lines(self) -> Close | None:
        """Handle every complete line buffered, one flood token each; a reason ends us.

        The gate is checked before each line, not only where we read: a session with lines
        and tokens in hand (a paste within its burst, or one starved of the CPU so that its
        tokens pile up) could otherwise go on for seconds without reaching a read, and an
        upgrade waited for it in vain (issue 22: 248 clients at rate 200, "the sessions did
        not stop within 10 s"). Between two lines everything read is in the reader (or
        ``_held``), which is what the handover takes.

        The hot path of every chat line: what the loop calls is bound to locals once."""
        reader = self.reader
        next_line, too_long, handle = reader.next_line, reader.too_long, self._handle
        gate = self._gate
        while True:
            if gate is not None and gate.closed:  # a hint; park() decides under its lock
                gate.park(self)
            raw = self._held if self._held is not None else next_line()
            if raw is None:
                return None
            if raw is too_long:
                self.error(reader.line_too_long())
                continue
            self._held = raw  # an upgrade while we pace must not lose it
            end = self._pace()
            if end:
                return end
            self._held = None
            handle(raw)
            if self._end:
                return self._end

    def _pace(self) -> Close | None:
        """Wait for a flood token, reading on meanwhile; returns a reason if we must end."""
        bucket = self.bucket
        while (delay := bucket.take(time.monotonic())) > 0:
            if self._eof:  # peer is gone: pace what it left, but let kick/shutdown end us
                if self.client.outbox.close_reason:
                    return self.client.outbox.close_reason
                if self._gate is not None and self._gate.closed:
                    self._gate.park(self)
                    continue
                time.sleep(min(delay, 0.25))
            elif self._readable(delay):
                room = self.settings.config.recvq_bytes - self.reader.pending_bytes
                if room <= 0:
                    self.log.warning("excess_flood", nick=self.client.nick,
                                     recvq=self.reader.pending_bytes)
                    self.error("excess flood")
                    return EXCESS_FLOOD
                self._receive(min(room, RECV_SIZE))
        return None

    def _readable(self, timeout: float | None) -> bool:
        """Whether the socket has input (or EOF) within ``timeout`` seconds (None: wait as
        long as it takes). While we wait an upgrade may take our state (gate.py); if the gate
        closed meanwhile we stay parked on the way out (forever, if the upgrade succeeds)."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.client.sock, select.POLLIN)
        if self._gate is None:
            return bool(self._poller.poll(None if timeout is None else timeout * 1000))
        with self._gate.polling(self):  # an upgrade may take our state while we wait here
            ready = self._poller.poll(None if timeout is None else timeout * 1000)
        return bool(ready)  # (if the gate closed meanwhile, we come back after a failed upgrade)

    def _await_input(self) -> bool:
        """Wait in poll(), not in recv(), so that an upgrade can stop us between two reads
        (gate.py); without a gate (tests that build a session alone) recv() simply blocks.
        False: no input came for the reader's ``partial_timeout`` after a partial line (the
        line protocol's rule: from a client that has never sent LF), and that line is now
        ``_held``, to be handled as a whole."""
        # (a held line waits for its flood token: it is not replaced)
        timeout = self.reader.partial_timeout() if self._held is None else None
        if self._gate is None and timeout is None:
            return True
        while not self._readable(timeout):
            if timeout is not None:
                self._held = self.reader.take_partial()
                if self._held is not None:
                    return False
                timeout = None
        return True

    def _last_partial(self) -> bool:
        """At EOF: a partial line the reader takes as a line is ``_held``; False if none."""
        self._held = self.reader.last_partial()
        return self._held is not None

    # -- an upgrade (upgrade.py) --------------------------------------------------------------

    def handover_state(self) -> dict:
        """What a parked session has read and not yet handled, and where it stands: ``held``,
        the reader's keys (the line protocol's: ``unread``, ``discarding``, ``seen_lf``,
        ``telnet``), ``tokens``. Upgrades between versions read this format."""
        return {"held": self._held, **self.reader.state(), "tokens": self.bucket.tokens}

    def take_over(self, state: dict) -> None:
        """Go on from :meth:`handover_state` of the process before the upgrade."""
        self._held = state["held"]
        self.reader.restore(state)
        self.bucket.restore(state["tokens"], time.monotonic())
