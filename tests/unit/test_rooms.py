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

from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatd.core.events import Said
from chatd.core.once import Except
from chatd.core.rooms import Room
from chatd.line.protocol import LINE


class Shouting:
    """A second protocol (the seam's: rooms render each line once per protocol spoken)."""

    name = "shouting"

    @property
    def speaks(self):
        return self

    @staticmethod
    def line(event) -> bytes:
        return LINE.line(event).upper()

    def renderer(self, room: str):
        return self.line


SHOUTING = Shouting()


class Reader:
    """An outbox as rooms.py sees one: a name for the test, and its protocol."""

    def __init__(self, name: str, protocol=LINE) -> None:
        self.name = name
        self.protocol = protocol
        self.speaks = protocol.speaks
        self.id = name
        self.outbox = self
        self.ignoring: frozenset = frozenset()

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
    # a line some members had in another room (core/once.py): they, and its author, get none
    st.tuples(st.just("about"), st.sampled_from(PEOPLE), st.frozensets(st.sampled_from(PEOPLE))),
)


@settings(max_examples=int(os.environ.get("ROOM_EXAMPLES", "400")))  # 20,000 passed once
@given(st.lists(operation, max_size=60), st.sets(st.sampled_from(PEOPLE)),
       st.sets(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)), max_size=3))
# the room's first protocol changes under a reader: its lines come from the render table
@example([("toggle", "a"), ("post", "a"), ("toggle", "b"), ("toggle", "a"), ("toggle", "a"),
          ("post", "b")], {"b"}, set())
# an ignorer gets its own filtered buffer, the others one shared buffer (core/ignoring.py)
@example([("toggle", "a"), ("toggle", "b"), ("toggle", "c"), ("post", "a"), ("post", "c"),
          ("private", "b"), ("post", "a"), ("step", 3), ("post", "c")], set(), {("b", "a")})
def test_every_member_gets_exactly_what_was_posted_while_it_was_in(ops, shouting, ignores):
    """``shouting``: the readers who speak the second protocol; the others speak LINE.
    ``ignores``: (who, whom): ``who`` ignores ``whom`` throughout, so it gets all but
    ``whom``'s lines."""
    flusher = FakeFlusher()
    room = Room("lobby", flusher)
    readers = {p: Reader(p, SHOUTING if p in shouting else LINE) for p in PEOPLE}
    for who, whom in ignores:
        readers[who].ignoring |= {whom}
    inside: set[str] = set()
    expected: dict[str, list[bytes]] = {p: [] for p in PEOPLE}
    for n, (op, arg, *more) in enumerate(ops):
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
            room.post(readers[arg], event)
            for person in inside - {arg}:
                if (person, arg) not in ignores:
                    expected[person].append(readers[person].protocol.line(event))
        elif op == "private" and arg in inside:
            line = f"{n} private to {arg}\n".encode()
            room.send_private(readers[arg], line, 1)
            expected[arg].append(line)
        elif op == "about" and arg in inside:
            event, left_out = Said(arg, str(n)), {arg, *more[0]}
            room.post(Except(readers[p] for p in left_out), event)
            for person in inside - left_out:
                if (person, arg) not in ignores:
                    expected[person].append(readers[person].protocol.line(event))
    flusher.drain()
    for person in PEOPLE:
        assert flusher.got.get(readers[person], []) == expected[person], person
    assert room.log == [] and room.renders == {}, "entries every reader has passed are dropped"
    assert set(room.readers) == {readers[p] for p in inside}
    assert room.joining == {} and room.barriers == {}
    assert room.ignorers == {readers[p] for p in inside if readers[p].ignoring}



ROOMS = ["x", "y"]
FEW = PEOPLE[:3]  # fewer people: more of the examples put one in both rooms
two_rooms = st.one_of(
    st.tuples(st.just("post"), st.sampled_from(FEW), st.sampled_from(ROOMS)),
    st.tuples(st.just("toggle"), st.sampled_from(FEW), st.sampled_from(ROOMS)),
    st.tuples(st.just("private"), st.sampled_from(FEW), st.just("")),  # hold the others
    st.tuples(st.just("send"), st.sampled_from(FEW), st.just("")),  # the line, release
    st.tuples(st.just("step"), st.integers(1, 3), st.just("")),
)


class TwoRooms:
    """The model's state: who is in which room, what each should get, private lines held."""

    def __init__(self) -> None:
        self.flusher = FakeFlusher()
        self.rooms = {name: Room(name, self.flusher) for name in ROOMS}
        self.readers = {p: Reader(p) for p in FEW}
        self.inside: dict[str, list[str]] = {p: [] for p in FEW}  # in the order entered
        self.expected = {p: {r: [] for r in ROOMS} for p in FEW}
        self.sending: dict[str, tuple[int, list[Room]]] = {}  # held, not sent: (when, rooms)
        self.privates: dict[str, list[tuple[int, int, bytes]]] = {p: [] for p in FEW}
        self.number: dict[bytes, int] = {}  # line -> when it was posted or sent

    def step(self, n: int, count: int, _) -> None:
        for _ in range(count):
            self.flusher.step()

    def toggle(self, n: int, person: str, where: str) -> None:
        if where in self.inside[person]:
            self.inside[person].remove(where)
            self.rooms[where].leave(self.readers[person])
        else:
            self.inside[person].append(where)
            self.rooms[where].enter(self.readers[person])

    def post(self, n: int, person: str, where: str) -> None:
        if where not in self.inside[person]:
            return
        event = Said(person, f"{where}{n}")
        line = self.number_of(LINE.line(event), n)
        self.rooms[where].post(self.readers[person], event)
        for other in FEW:
            if other != person and where in self.inside[other]:
                self.expected[other][where].append(line)

    def private(self, n: int, person: str, _) -> None:
        """rooms.send_private's first step: the rooms it reads (as hub.send_to reads
        client.rooms) and the holds; :meth:`send` does the rest, later."""
        if self.inside[person] and person not in self.sending:
            held = [self.rooms[r] for r in self.inside[person]]
            for room in held[:-1]:
                room.hold(self.readers[person])
            self.sending[person] = (n, held)

    def send(self, n: int, person: str, _) -> None:
        if person not in self.sending:
            return
        began, held = self.sending.pop(person)
        line = self.number_of(f"{n} private to {person}\n".encode(), n)
        *others, last = held
        last.send_private(self.readers[person], line, 1)
        for room in others:
            room.release(self.readers[person])
        self.privates[person].append((began, n, line))

    def number_of(self, line: bytes, n: int) -> bytes:
        self.number[line] = n
        return line


@settings(max_examples=int(os.environ.get("ROOM_EXAMPLES", "1000")))
@given(st.lists(two_rooms, max_size=60))
# a line posted in a held room before the release: only a flush after it hands that line over
@example([("toggle", "a", "x"), ("toggle", "a", "y"), ("toggle", "b", "x"),
          ("private", "a", ""), ("post", "b", "x"), ("send", "a", "")])
def test_a_member_of_two_rooms_gets_each_rooms_lines_and_private_lines_in_place(ops):
    """The membership seam: a client in several rooms (an IRC client) gets each room's lines
    as a member of that room alone would, and a private line after every line posted in any
    of its rooms before it was sent, before any posted after. rooms.send_private's steps run
    apart here, as threads may interleave them: others post (and the member moves) between
    the hold and the rest."""
    model = TwoRooms()
    for n, (op, arg, where) in enumerate(ops):
        getattr(model, op)(n, arg, where)
    for person in list(model.sending):
        model.send(len(ops), person, "")
    model.flusher.drain()
    for person in FEW:
        _check(model.flusher.got.get(model.readers[person], []), model.expected[person],
               model.privates[person], model.number)
    for room in model.rooms.values():
        assert room.log == [] and room.joining == {} and room.barriers == {}


def _check(got: list[bytes], expected: dict, privates: list, number: dict) -> None:
    """One member's lines: each room's exactly, each private line in its place."""
    for room in ROOMS:
        assert [line for line in got if line.split(b" ", 1)[1].startswith(room.encode())] \
            == expected[room], room
    assert [line for line in got if b"private" in line] == [p for *_, p in privates]
    for began, sent, private in privates:
        at = got.index(private)
        assert all(number[line] < sent for line in got[:at]), private
        assert all(number[line] > began for line in got[at + 1:]), private


class Counting(Shouting):
    """SHOUTING that counts what it renders."""

    name = "counting"

    def __init__(self) -> None:
        self.rendered = 0

    def line(self, event) -> bytes:
        self.rendered += 1
        return Shouting.line(event)


def test_a_room_of_two_protocols_renders_each_line_once_more_not_once_a_member():
    """Issue 27's bound: a room with line and IRC members costs one extra render per line
    (one per protocol spoken), however many members speak each, whoever joined first."""
    flusher, other = FakeFlusher(), Counting()
    room = Room("lobby", flusher)
    line_readers = [Reader(f"l{n}") for n in range(5)]
    other_readers = [Reader(f"o{n}", other) for n in range(7)]
    for reader in [line_readers[0], *other_readers, *line_readers[1:]]:
        room.enter(reader)
    for n in range(20):
        room.post(line_readers[n % 5], Said(f"l{n % 5}", str(n)))
        if n % 3 == 0:
            flusher.drain()
    flusher.drain()
    assert other.rendered == 20
    assert all(len(flusher.got[reader]) == 20 for reader in other_readers)
    assert all(len(flusher.got[reader]) == 16 for reader in line_readers)  # not its own 4
