"""The room log's delivery rule, checked as a model with hypothesis (no sockets, no threads).

rooms.py promises: a member receives exactly the lines posted while it was a member, never its
own, each once, in order; and a private line arrives after every room line posted before it.
Here a fake flusher queues work like the real one (FIFO) and runs it only when the test says
"step", so hypothesis explores every interleaving of posts, joins, leaves, rejoins, private
lines and flusher progress. The fake knows nothing of rooms (nor does the real one): every
barrier, catch-up and private line below runs rooms.py's own code.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.core.events import Said
from chatd.core.rooms import Room
from chatd.line.protocol import LINE


class Reader:
    """An outbox as rooms.py sees one: a name for the test, and its protocol."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.protocol = LINE
        self.id = name
        self.outbox = self

    def __repr__(self) -> str:
        return self.name


class FakeFlusher:
    """Queues work as chatd.core.flusher.Flusher does; ``deliver`` records what each outbox got."""

    sendq_bytes = 1 << 20

    def __init__(self) -> None:
        self.queue: list = []
        self.got: dict[str, list[bytes]] = {}

    def deliver(self, outbox, data: bytes, lines: int) -> None:
        assert data.count(b"\n") == lines
        self.got.setdefault(outbox, []).extend(data.splitlines(keepends=True))

    def deliver_many(self, outboxes, skip, data: bytes, lines: int) -> None:
        for outbox in outboxes:
            if outbox not in skip:
                self.deliver(outbox, data, lines)

    def call(self, fn, *args) -> None:
        self.queue.append((fn, *args))

    def submit(self, outbox, data: bytes, lines: int = 1) -> None:
        self.queue.append((self.deliver, outbox, data, lines))

    def step(self) -> None:
        if self.queue:
            item = self.queue.pop(0)
            item[0](*item[1:])

    def drain(self) -> None:
        while self.queue:
            self.step()


PEOPLE = ["a", "b", "c", "d"]
operation = st.one_of(
    st.tuples(st.just("post"), st.sampled_from(PEOPLE)),
    st.tuples(st.just("toggle"), st.sampled_from(PEOPLE)),  # join if out, leave if in
    st.tuples(st.just("private"), st.sampled_from(PEOPLE)),
    st.tuples(st.just("step"), st.integers(1, 3)),
)


@settings(max_examples=int(os.environ.get("ROOM_EXAMPLES", "400")))  # 20,000 passed once
@given(st.lists(operation, max_size=60))
def test_every_member_gets_exactly_what_was_posted_while_it_was_in(ops):
    flusher = FakeFlusher()
    room = Room("lobby", flusher)
    readers = {p: Reader(p) for p in PEOPLE}
    inside: set[str] = set()
    expected: dict[str, list[bytes]] = {p: [] for p in PEOPLE}
    for n, (op, arg) in enumerate(ops):
        if op == "step":
            for _ in range(arg):
                flusher.step()
        elif op == "toggle":
            if arg in inside:
                inside.discard(arg)
                room.leave(readers[arg])
            else:
                inside.add(arg)
                room.enter(readers[arg])
        elif op == "post" and arg in inside:
            event = Said(arg, str(n))
            line = LINE.line(event)
            room.post(readers[arg], event)
            for person in inside - {arg}:
                expected[person].append(line)
        elif op == "private" and arg in inside:
            line = f"{n} private to {arg}\n".encode()
            room.send_private(readers[arg], line, 1)
            expected[arg].append(line)
    flusher.drain()
    for person in PEOPLE:
        assert flusher.got.get(readers[person], []) == expected[person], person
    assert room.log == [], "entries every reader has passed are dropped"
    assert set(room.readers) == {readers[p] for p in inside}
    assert room.joining == {} and room.barriers == {}
