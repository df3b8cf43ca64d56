"""The protocol seam (core/protocol.py, issue 24): the line protocol provides all that core
asks of a protocol, output and input, and a session's handover state keeps its format.

(That core imports no protocol is test_imports.py's check.)
"""

from __future__ import annotations

from chatd.core.protocol import Protocol, Reader
from chatd.line.protocol import LINE
from chatd.line.reader import LineReader
from chatd.line.telnet import IAC, WILL


def asked(seam: type) -> set[str]:
    """The attributes and methods a typing.Protocol declares."""
    return set(seam.__annotations__) | {name for name, value in vars(seam).items()
                                        if callable(value) and not name.startswith("_")}


def test_line_provides_what_core_asks(world):
    assert {"line", "lines", "history", "reader", "greeting", "name"} <= asked(Protocol)
    assert all(hasattr(LINE, name) for name in asked(Protocol)), asked(Protocol)
    reader = world.connect().session.reader
    assert isinstance(reader, LineReader)
    assert all(hasattr(reader, name) for name in asked(Reader)), asked(Reader)


def test_the_session_calls_its_readers_handle_bound_once(world):
    session = world.connect().session
    assert session._handle.__self__ is session.reader
    assert session._handle.__func__ is LineReader.handle


def test_handover_state_keeps_its_format_and_round_trips(world):
    """Upgrades between versions read these keys, in this order (lifecycle/state.py)."""
    session = world.connect().session
    session.reader.feed(bytes([IAC, WILL, 1]) + b"x" * 5000 + b"\nhalf")
    assert session.reader.next_line() is session.reader.too_long
    session._held = b"paced"
    state = session.handover_state()
    assert list(state) == ["held", "unread", "discarding", "seen_lf", "telnet", "tokens"]
    assert state["held"] == b"paced" and state["unread"] == b"half"
    assert state["discarding"] is False and state["seen_lf"] is True
    assert state["telnet"] is not None and isinstance(state["tokens"], (int, float))

    resumed = world.connect().session
    resumed.take_over(state)
    assert resumed.handover_state() == {**state, "tokens": resumed.bucket.tokens}
    old = dict(state, telnet=None)
    del old["seen_lf"]  # a chatd from before seen_lf: taken as seen
    fresh = world.connect().session
    fresh.take_over(old)
    assert fresh.reader.framer.seen_lf and fresh.reader.telnet is None
