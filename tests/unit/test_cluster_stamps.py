"""The times a writer gives its chat lines travel with them (cluster/reader.py ``["ts"]``,
core/position.py): each line gets its own, whatever the reader drops on the way. Pure: the
reader's line handling with a hub that records what it is handed."""

from __future__ import annotations

from types import SimpleNamespace

from chatd.cluster.checks import Validator
from chatd.cluster.reader import Reader
from chatd.cluster.roster import Roster


class Hub:
    def __init__(self) -> None:
        self.got: list = []

    def receive_lines(self, room, events, at, stamps, origin) -> None:
        self.got += [(room, e.text if hasattr(e, "text") else type(e).__name__, s, origin)
                     for e, s in zip(events, stamps)]


def reader() -> tuple[Reader, Hub, list]:
    rejected: list = []
    link = SimpleNamespace(validator=Validator(1024), started_at=0.0,
                           rejected=lambda *args, **kw: rejected.append(args))
    routing = SimpleNamespace(obey=None, answered=None, asked=None)
    r = Reader(link, Roster(), routing, stopping=None)
    r.hub = Hub()
    return r, r.hub, rejected


def test_each_chat_line_gets_its_time_and_a_dropped_one_keeps_the_rest_in_step():
    r, hub, rejected = reader()
    lines = [["ts", [10.0, 11.0, 12.0, 13.0]],
             ["r", "dev", "Said", "bob", "one"],
             ["r", "dev", "Joined", "carol", "dev"],
             ["r", "dev", "Said", "not a nick", "bad"],  # dropped: no such nick can exist
             ["r", "ops", "Acted", "bob", "waves"],
             ["r", "dev", "Said", "bob", "four"]]
    r._lines("node2", "node2", lines, (1, 0))
    assert hub.got == [("dev", "one", 10.0, "node2"), ("dev", "Joined", None, "node2"),
                       ("ops", "waves", 12.0, "node2"), ("dev", "four", 13.0, "node2")]
    assert len(rejected) == 1


def test_an_entry_without_times_and_a_bad_time_list():
    r, hub, rejected = reader()
    r._lines("old", "old", [["r", "dev", "Said", "bob", "hi"]], (1, 0))
    assert hub.got == [("dev", "hi", None, "old")]  # a writer of the version before
    r._lines("n", "n", [["ts", ["x"]], ["r", "dev", "Said", "bob", "hi"]], (2, 0))
    assert hub.got[-1] == ("dev", "hi", None, "n") and len(rejected) == 1
