"""One line-protocol connection's input: telnet out, framing, the partial-line rule, and what
one complete line does (chat text to the room, a ``/command`` through the table).

The session (core/session.py) owns the loop (recv, TLS, flood pacing, the upgrade gate, recvq)
and knows no protocol: it feeds what it received to this :class:`LineReader`, takes lines one
flood token at a time, and hands each to :meth:`LineReader.handle`, which it binds once. So
``handle`` is the hot path of every chat line (docs/DEVELOPING.md, one chat line): it reads its
own slots, allocates nothing but the parse and the event, and calls no more than it must.
Runs on the client's session thread only, like the session: nothing here is shared.
"""

from __future__ import annotations

from chatd.core.events import Said
from chatd.core.tagging import new_msgid
from chatd.line import accounts
from chatd.line.commands import dispatch
from chatd.line.framing import LINE_TOO_LONG, LineFramer
from chatd.line.parse import Message, parse
from chatd.line.telnet import TelnetFilter
from chatd.text import decode


class LineReader:
    """What core/protocol.py's ``Reader`` asks, for the line protocol (docs/protocol.md §1)."""

    __slots__ = ("session", "client", "hub", "settings", "framer", "telnet", "next_line")

    #: What :meth:`next_line` returns in place of a line over ``max_line_bytes``.
    too_long = LINE_TOO_LONG

    def __init__(self, session) -> None:
        self.session = session
        self.client = session.client  # the per-line path reads these without the session
        self.hub = session.hub
        self.settings = session.settings
        self.framer = LineFramer(session.settings.config.max_line_bytes)
        self.telnet: TelnetFilter | None = None  # made when the first 0xFF byte arrives
        #: The next complete line (bytes), ``too_long``, or None: the framer's own method.
        self.next_line = self.framer.next_line

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes received (and decrypted): telnet commands out, the rest framed."""
        if self.telnet is not None or b"\xff" in data:
            data = self._telnet(data)
        self.framer.max_line_bytes = self.settings.config.max_line_bytes  # follows a reload
        self.framer.feed(data)

    def _telnet(self, data: bytes) -> bytes:
        """Telnet commands out of ``data`` (telnet.py); their answers go out via the flusher."""
        if self.telnet is None:
            self.telnet = TelnetFilter()
        data, answer = self.telnet.feed(data)
        if answer:
            self.session.flusher.submit(self.client.outbox, answer, 0)
        return data

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet taken as lines: what ``recvq_bytes`` bounds."""
        return self.framer.pending_bytes

    def line_too_long(self) -> str:
        """The error a client is told for a line over the limit (``too_long``)."""
        return f"line too long (max {self.framer.max_line_bytes} bytes)"

    # -- partial lines (docs/protocol.md §1) ---------------------------------------------------

    def partial_timeout(self) -> float | None:
        """``partial_line_timeout`` if a partial line waits from a client that has never ended
        a line with LF (SPEC §1: the teaching client sends each message with one send() and
        no newline); else None: wait for LF as long as it takes, as nc and telnet users need."""
        framer = self.framer
        if framer.seen_lf or not framer.pending_bytes:
            return None
        return self.settings.config.partial_line_timeout or None

    def take_partial(self) -> bytes | None:
        """After that timeout: the partial line, as a whole line (None if there is none)."""
        return self.framer.take_partial()

    def last_partial(self) -> bytes | None:
        """At EOF: such a client's last partial line is a line too; None if there is none."""
        if self.framer.seen_lf or not self.settings.config.partial_line_timeout:
            return None
        return self.framer.take_partial()

    # -- one line -------------------------------------------------------------------------------

    def handle(self, raw: bytes) -> None:
        """One complete line: chat text goes to the room, a ``/command`` to commands.py."""
        parsed = parse(decode(raw))
        if parsed is None:
            return
        client = self.client
        client.lines_in += 1
        if parsed.__class__ is Message:
            session = self.session
            if not client.nick or client.lines_in == 1:  # not yet logged in, or a first line
                if _before_chat(session, parsed.text):
                    return
            if not session.may_say():
                return
            self.hub.say(client, Said(client.nick, parsed.text, new_msgid(), "", client.account))
            session.log_message(parsed.text)
        else:
            dispatch(self.session, parsed)

    # -- an upgrade (upgrade.py) ------------------------------------------------------------------

    def state(self) -> dict:
        """What has been read and not yet taken as a line, and the telnet filter's state: the
        ``unread``, ``discarding``, ``seen_lf`` and ``telnet`` keys of the session's handover
        state, whose format upgrades between versions read (lifecycle/state.py)."""
        unread, discarding = self.framer.state()
        return {"unread": unread, "discarding": discarding, "seen_lf": self.framer.seen_lf,
                "telnet": self.telnet.state() if self.telnet is not None else None}

    def restore(self, state: dict) -> None:
        """Go on from :meth:`state` of the process before the upgrade."""
        # a state from a chatd before seen_lf: taken as seen (a line is never cut in two)
        self.framer.restore(state["unread"], state["discarding"], state.get("seen_lf", True))
        if state["telnet"] is not None:
            self.telnet = TelnetFilter()
            self.telnet.restore(*state["telnet"])


def _before_chat(session, text: str) -> bool:
    """Whether a line that is not a command is something else after all: a first line
    ``PASS NICK:PASSWORD`` (a login, never chat, never logged), or text from a closed server's
    connection that has not logged in (refused). The per-line path pays one test for this."""
    if session.client.lines_in == 1 and text[:5].upper() == "PASS ":
        accounts.pass_line(session, text)
        return True
    if not session.client.nick:
        session.error(accounts.LOGIN_FIRST)
        return True
    return False
