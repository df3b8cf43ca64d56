"""Why a connection ended: the close-reason table and :class:`Close`, the reason a session,
the flusher, an operator or a shutdown gives, which the hub turns into what the room hears
(a farewell event, events.py) and the log and metrics count (by kind)."""

from __future__ import annotations

from dataclasses import dataclass

from chatd.core.events import Kicked, Quit


@dataclass(frozen=True, slots=True)
class CloseKind:
    """One row of the close-reason table.

    ``text`` is the reason as the room and the log show it; ``farewell`` is how the room hears
    of it: ``"left"`` (``NICK left ROOM (reason)``), ``"kicked"`` or None (nothing, e.g. at
    shutdown, when every client is told directly); ``event`` is a log event of its own, if any.
    """

    text: str
    farewell: str | None = "left"
    event: str | None = None


#: Every way a connection can end. Keys are stable: tests and the log rely on them.
CLOSE_KINDS: dict[str, CloseKind] = {
    "closed": CloseKind("connection closed"),
    "reset": CloseKind("connection reset"),
    "quit": CloseKind("quit"),
    "kicked": CloseKind("kicked", farewell="kicked", event="client_kicked"),
    "banned": CloseKind("banned"),
    "sendq": CloseKind("sendq exceeded", event="sendq_exceeded"),
    "flood": CloseKind("excess flood"),
    "idle": CloseKind("idle timeout"),
    "shutdown": CloseKind("server shutting down", farewell=None),
    "restarting": CloseKind("server restarting"),
    "tls_plain": CloseKind("tls on plain port"),
    "tls_error": CloseKind("tls error"),
    "internal": CloseKind("internal error"),
    "cluster": CloseKind("cluster unavailable"),
    "elsewhere": CloseKind("logged in elsewhere"),
    "disabled": CloseKind("account disabled"),
    "login": CloseKind("login required"),
    "logout": CloseKind("logged out"),
}


@dataclass(frozen=True, slots=True)
class Close:
    """Why a connection ended: a kind from :data:`CLOSE_KINDS` and, for quit and kick, the
    user's or operator's words."""

    kind: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CLOSE_KINDS:
            raise ValueError(f"unknown close kind {self.kind!r}")

    @property
    def text(self) -> str:
        """``quit: gone home``, ``kicked: spam``, ``sendq exceeded``: the reason as logged."""
        base = CLOSE_KINDS[self.kind].text
        return f"{base}: {self.detail}" if self.detail else base

    @property
    def event(self) -> str | None:
        return CLOSE_KINDS[self.kind].event

    def farewell(self, nick: str, room: str | None, before: str | None = None):
        """The event the departed client's room sees, or None (``before``: core/once.py)."""
        style = CLOSE_KINDS[self.kind].farewell
        if style is None or room is None:
            return None
        if style == "kicked":
            return Kicked(nick, self.detail, before)
        return Quit(nick, room, self.text, before)


CLOSED = Close("closed")
RESET = Close("reset")
SENDQ_EXCEEDED = Close("sendq")
EXCESS_FLOOD = Close("flood")
SHUTDOWN = Close("shutdown")
RESTARTING = Close("restarting")
