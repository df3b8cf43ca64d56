"""The line protocol as core sees it (chatd/core/protocol.py): one shared object, ``LINE``."""

from __future__ import annotations

from chatd.core.events import Motd, Welcome
from chatd.line import render
from chatd.line.commands import CLUSTER_UNAVAILABLE
from chatd.line.reader import LineReader


class LineProtocol:
    """Renders events as docs/protocol.md §1-§3 says, and makes each connection's reader
    (reader.py: framing, telnet, the command table); stateless, so one object serves all."""

    __slots__ = ()
    name = "line"
    names_itself = False  # a guest nick on connect
    roomless = False  # always in a room: the lobby at least
    follows_away = False  # /who shows who is away; nobody is told when it changes
    line = staticmethod(render.line)
    lines = staticmethod(render.lines)
    history = staticmethod(render.history)
    missed = staticmethod(render.missed)
    #: Told to a client that cannot be registered: no nick is sure to be unique (cluster mode).
    cluster_unavailable = CLUSTER_UNAVAILABLE

    @property
    def speaks(self) -> LineProtocol:
        """Rooms render a line client's lines with this same object (one for all)."""
        return self

    @staticmethod
    def renderer(room: str):
        """A room line looks the same whatever its room: one function for every room."""
        return render.line

    def reader(self, session) -> LineReader:
        """``session``'s input side: one per connection, used by its session thread only."""
        return LineReader(session)

    def greeting(self, config) -> list:
        """What a client is told as it is registered: the welcome, then the MOTD."""
        return [Welcome(config.server_name), *map(Motd, config.motd)]

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<line protocol>"


LINE = LineProtocol()
