"""The line protocol as core sees it (chatd/core/protocol.py): one shared object, ``LINE``."""

from __future__ import annotations

from chatd.line import render


class LineProtocol:
    """Renders events as docs/protocol.md §1-§3 says; stateless, so one object serves all."""

    __slots__ = ()
    name = "line"
    line = staticmethod(render.line)
    lines = staticmethod(render.lines)
    history = staticmethod(render.history)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<line protocol>"


LINE = LineProtocol()
