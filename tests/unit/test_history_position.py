"""history.Position and the tail's part in it (SPEC §12 "what you missed"): a line is known by
the node it was said on and the time that node gave it, so a position taken on one node
selects the same lines on another. Pure: tails in memory, no sockets."""

from __future__ import annotations

import pytest

from chatd.core.events import Joined, Said
from chatd.core.position import Position
from chatd.core.tail import Entry, Tail
from chatd.store.history import NullStore


def entry(ts: float, origin: str, text: str = "x") -> Entry:
    return Entry(ts, "dev", "say", "bob", text, origin)


def test_a_line_is_after_a_position_by_its_own_nodes_time():
    position = Position({"node1": 10.0, "node2": 5.0})
    assert position.after(entry(6.0, "node2"))
    assert not position.after(entry(9.0, "node1"))  # node2's 6 is after, node1's 9 is not
    assert not position.after(entry(5.0, "node2"))
    # a node it had no line from: compared with the newest time of all
    assert position.after(entry(10.5, "node3")) and not position.after(entry(9.9, "node3"))
    assert position.time == 10.0


def test_records_round_trip_and_a_bare_time_is_a_single_nodes_position():
    position = Position({"node1": 10.0, "": 3.5})
    assert Position.from_record(position.record()) == position
    assert Position.from_record(12.5) == Position({"": 12.5})
    assert Position.from_record({}) == Position({}) and Position({}).time == 0.0


@pytest.mark.parametrize("bad", [
    "12", None, [], {"node1": "10"}, {"node1": float("nan")}, {"node1": -1},
    {"bad\nname": 1.0}, {"n" * 65: 1.0}, {f"n{i}": 1.0 for i in range(1025)}, {"n": True},
])
def test_a_stored_position_that_is_not_one_is_refused(bad):
    with pytest.raises(ValueError):
        Position.from_record(bad)


def test_a_tail_knows_each_nodes_newest_line_and_selects_what_came_after():
    tail = Tail(10, NullStore(), [], me="node1")
    for n in range(3):
        tail.record("dev", Said("alice", f"mine {n}"))
    tail.record_remote("dev", [Said("bob", "b0"), Joined("bob", "dev"), Said("bob", "b1")],
                       stamps=[100.0, None, 101.0], origin="node2")
    position = tail.position()
    assert position.origins["node2"] == 101.0 and set(position.origins) == {"node1", "node2"}
    # on another node the same lines carry the same times: nothing after the position
    other = Tail(10, NullStore(), list(tail.entries), me="node2")
    assert other.since(position) == ([], True)
    tail.record_remote("dev", [Said("bob", "b2")], stamps=[100.5], origin="node2")
    tail.record("dev", Said("alice", "mine 3"))
    chosen, complete = tail.since(position)
    assert [e.text for e in chosen] == ["mine 3"] and complete  # b2: 100.5 < 101 was sent


def test_own_lines_never_share_a_time_even_behind_another_nodes_clock():
    tail = Tail(10, NullStore(), [], me="node1")
    tail.record_remote("dev", [Said("bob", "ahead")], stamps=[4e9], origin="node2")
    stamps = [tail.record("dev", Said("alice", str(n))) for n in range(50)]
    assert stamps == sorted(set(stamps)) and stamps[-1] < 4e9  # its own clock, not node2's


def test_a_full_tail_that_starts_after_the_position_is_incomplete_and_before_bounds_by_index():
    tail = Tail(3, NullStore(), [], me="")
    start = tail.position()
    for n in range(5):
        tail.record("dev", Said("bob", str(n)))
    chosen, complete = tail.since(start)
    assert [e.text for e in chosen] == ["2", "3", "4"] and not complete
    assert tail.count == 5 and tail.index_of_last(2) == 3
    chosen, _ = tail.since(start, before=4)  # the lines of index 2 and 3 only
    assert [e.text for e in chosen] == ["2", "3"]
