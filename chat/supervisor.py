"""The connection's life: connect, serve, and after a drop reconnect with backoff, taking
back nick and room. Runs in the ``chat-link`` thread.

A connection counts as made once the server has greeted it (``*** you are NICK``): a server
that accepts and then refuses (``*** error: server full``, a ban) has not let us in, and
that refusal is the reason shown. At the greeting the restoring commands (:mod:`chat.protocol`)
go out first, then whatever the user typed while we were away: the server handles one
connection's lines in order, so the user's lines are said as the nick, in the room, they
were typed for. A kick or a ban ends it all: coming back would undo what an operator did.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from chat.backoff import Backoff
from chat.link import CONNECT_TIMEOUT, ConnectFailed, Link, open_socket
from chat.protocol import Identity, final_words, refusal

#: Lines typed while disconnected that are kept to send after the reconnect.
MAX_PENDING = 1000
#: After /quit, how long a server may take to close: this much, plus the time chatd's
#: default flood control (5 lines/s, docs/protocol.md §3) needs for the lines we sent on this
#: connection, which it handles before the /quit (``seq 40 | chat`` takes it 6 s).
QUIT_WAIT = 5.0
DEFAULT_RATE = 5.0


class Display(Protocol):
    """Where the link thread puts what arrives (terminal or pipe); called from that thread."""

    def line(self, raw: bytes) -> None:
        """A line from the server, as received (without its line end)."""

    def notice(self, text: str) -> None:
        """One line from the client itself (``*** reconnecting in 2.0 s…``)."""


@dataclass(frozen=True)
class Outcome:
    """How the session ended: ``quit`` (the user's choice), ``failed`` (the first connection
    could not be made; ``reason`` says why), ``ended`` (kicked or banned: ``reason``) or
    ``error`` (a bug in chat: ``reason``)."""

    kind: str
    reason: str = ""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: object = None  # an ssl.SSLContext, or None for plain TCP


class Supervisor:
    """Caller (the input loop): :meth:`start`, :meth:`wait_connected`, :meth:`send`,
    :meth:`quit`, :meth:`wait`; ``outcome`` once ``done`` is set."""

    def __init__(self, target: Target, display: Display, identity: Identity,
                 backoff: Backoff | None = None) -> None:
        self.target, self.display, self.identity = target, display, identity
        self.backoff = backoff or Backoff()
        self.done = threading.Event()
        self.connected = threading.Event()  # the first connection was greeted
        self.outcome: Outcome | None = None
        self._lock = threading.Lock()
        self._link: Link | None = None
        self._ready = False  # restoring commands sent: the user's lines may follow
        self._pending: list[str] = []
        self._sent = 0  # lines sent on this connection (see QUIT_WAIT)
        self._told_pending = False
        self._quitting = False
        self._stop = threading.Event()  # wakes a backoff wait when the user quits
        self._final: str | None = None
        self._refused: str | None = None
        self._reconnect = False
        self._since = 0.0

    # -- the input loop's side -------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, name="chat-link", daemon=True).start()

    def wait_connected(self) -> bool:
        """Until the first connection is made (True) or has failed (False)."""
        while not (self.connected.wait(0.1) or self.done.is_set()):
            pass
        return self.connected.is_set()

    def send(self, text: str) -> None:
        """Say ``text`` (a message or a command) now, or after the reconnect."""
        with self._lock:
            if self._ready:
                self._link.send(text)
                self._sent += 1
                return
            if len(self._pending) >= MAX_PENDING:
                self._pending.pop(0)
            self._pending.append(text)
            tell, self._told_pending = not self._told_pending, True
        if tell and self.connected.is_set():  # once per outage (at start it is a moment)
            self.display.notice("*** not connected: what you type is sent once reconnected")

    def quit(self, text: str = "/quit") -> None:
        """Leave: send ``text`` (a ``/quit``) and let the server close, or, while not
        connected, stop trying."""
        with self._lock:
            self._quitting = True
            if self._ready:
                self._link.send(text)
                return
            link = self._link
        self._stop.set()
        if link is not None:
            link.close("quit")

    def quit_wait(self) -> float:
        """How long to wait for the server to close after :meth:`quit` (QUIT_WAIT)."""
        with self._lock:
            return QUIT_WAIT + self._sent / DEFAULT_RATE

    def wait(self, timeout: float) -> bool:
        """Until the session is over; at the deadline the connection is closed from our side
        (a server that does not close after ``/quit``) and True means it ended by itself."""
        if self.done.wait(timeout):
            return True
        with self._lock:
            link = self._link
        self._stop.set()
        if link is not None:
            link.close("quit")
        self.done.wait(5)
        return False

    # -- the link thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.outcome = self._sessions()
        except Exception as exc:  # noqa: BLE001 - a bug: one line from the CLI, no traceback
            self.outcome = Outcome("error", f"{type(exc).__name__}: {exc}")
        finally:
            self.done.set()

    def _sessions(self) -> Outcome:
        why = self._session()
        if not self.identity.greeted and not self._reconnect:
            return Outcome("quit") if self._quitting else Outcome("failed", why)
        while True:
            if self._quitting:
                return Outcome("quit")
            if self._final:
                self.display.notice(f"*** not reconnecting: {self._final}")
                return Outcome("ended", self._final)
            delay = self.backoff.next_delay()
            self.display.notice(f"*** {why}; reconnecting in {delay:.1f} s…")
            if self._stop.wait(delay):
                return Outcome("quit")
            self._reconnect = True
            why = self._session()
            if not self.identity.greeted and not self._final:
                why = f"cannot reconnect: {why}"

    def _session(self) -> str:
        """One connection, from connect to close; returns why it ended (or was not made)."""
        self.identity.reset()
        self._refused = None
        try:
            link = Link(open_socket(self.target.host, self.target.port, self.target.tls))
        except ConnectFailed as exc:
            return str(exc)
        with self._lock:
            if self._quitting:
                link.close("quit")
            self._link = link
        self._since = time.monotonic()
        why = link.run(self._on_line, self._on_tick)
        with self._lock:
            self._link, self._ready = None, False
        if self.identity.greeted:
            self.backoff.connected(time.monotonic() - self._since)
            return f"connection lost ({why})"
        return self._refused or why

    def _on_tick(self) -> None:
        if not self.identity.greeted and time.monotonic() - self._since > CONNECT_TIMEOUT:
            self._link.close("no greeting from the server")

    def _on_line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        self._final = self._final or final_words(text)
        if not self.identity.greeted and refusal(text) is not None:
            self._refused = refusal(text)  # the reason, shown once, not as a line
            return
        self.display.line(raw)
        state = self.identity.feed(text)
        if state == "greeted":
            restore = self.identity.restore()
            self._go(restore)
            if not restore:
                state = "restored"
        if state == "restored" and self._reconnect:
            self.display.notice(f"*** reconnected as {self.identity.nick} in {self.identity.room}")

    def _go(self, commands: list[str]) -> None:
        """Greeted: the restoring commands, then the lines that waited, then live."""
        with self._lock:
            for text in [*commands, *self._pending]:
                self._link.send(text)
            self._sent = len(commands) + len(self._pending)
            self._pending, self._ready, self._told_pending = [], True, False
        self.connected.set()
