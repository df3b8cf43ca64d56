"""Room history in cluster mode (SPEC §10, docs/cluster.md): the history is in Redis and every
node shows it, real nodes on a real redis-server; a join on another node mid-stream meets the
live lines exactly; and, in process, the two halves of that seam: the positioned tail read
(history.py) and a join's wait for this node's cluster reader (cluster/reader.py).
"""

from __future__ import annotations

import threading

import pytest
from support.chatctl import ctl
from support.cluster import alice_and_bob, named
from support.history import FAST, ON, _history_size, bare, read_block
from support.waiting import wait_until

# -- cluster mode: the history is in Redis, every node shows it ---------------------------


def test_cluster_history_is_one_history_on_every_node(cluster, chatd):
    redis, (a, b) = cluster(limits=FAST, history=ON)
    alice, bob = alice_and_bob(a, b)
    alice.send_line("/join dev")  # nobody on node2 is in dev: its tail is fed all the same
    alice.wait_for(lambda line: line.startswith("*** you joined dev"))
    said = [f"line {i}" for i in range(5)]
    for text in said:
        alice.send_line(text)
    alice.send_line("/me waves")
    expected = [f"<alice> {text}" for text in said] + ["* alice waves"]
    # bob joins on node2 whenever: each line once, replayed or live (the seam across nodes)
    bob.send_line("/join dev")
    bob.wait_for(lambda line: line.startswith("*** you joined dev"))
    seen = []  # (a block only if node2 had some of the lines when bob joined)
    while len(seen) < len(expected):
        line = bob.read_line()
        if line == "*** history of dev (" + line.partition("(")[2]:
            seen += [bare(bob.read_line()) for _ in range(int(line.split("(")[1].split()[0]))]
            assert bob.read_line() == "*** end of history"
        elif not line.startswith("*** "):
            seen.append(line)
    assert seen == expected
    bob.send_line("/history 3")
    assert [bare(e) for e in read_block(bob, "dev")] == expected[-3:]
    # a node that starts later reads it from Redis
    c = chatd(cluster={"redis_url": redis.url, "node_name": "node3", "node_timeout": 1.0},
              limits=FAST, history=ON)
    c.wait_event("cluster_joined")
    carol = c.connect()
    carol.join("dev")
    assert [bare(e) for e in read_block(carol, "dev")] == expected
    # purge on node1 empties it everywhere
    ctl(a, "purge", "dev")
    for client in (bob, carol):
        wait_until(lambda c=client: _history_size(c, "dev") == 0, 10, "purge on every node")
    assert not redis.client().exists("chatd:history:dev")


@pytest.mark.parametrize("idle_rooms", [1000, 0])
def test_a_join_on_another_node_mid_stream_meets_the_live_lines_exactly(
        cluster, idle_rooms):  # noqa: F811
    """alice on node1 posts 600 lines into dev as fast as she can while bob on node2 joins it
    three times: each time the replay and the live lines are one run, nothing twice, nothing
    missing. With ``history_idle_rooms = 0`` node2 keeps no tail of dev between the joins, so
    each join reads it from Redis while the lines stream in (the seam of history.py's
    positioned read); with 1000 it keeps one."""
    _, (a, b) = cluster(limits=FAST, history={**ON, "history_idle_rooms": idle_rooms})
    alice, bob = alice_and_bob(a, b)
    alice.join("dev")
    count = 600
    sender = threading.Thread(target=lambda: alice.send_raw(
        "".join(f"n {i}\n" for i in range(count)).encode()))
    sender.start()
    for _ in range(3):
        bob.send_line("/join dev")
        bob.wait_for(lambda line: line.startswith("*** you joined dev"))
        header = bob.wait_for(lambda line: line.startswith(("*** history of dev (",
                                                            "<alice> n ")))
        seen = []
        if header.startswith("*** history"):
            seen = [bare(bob.read_line()) for _ in range(int(header.split("(")[1].split()[0]))]
            assert bob.read_line() == "*** end of history"
        else:
            seen.append(header)
        numbers = [int(line.rpartition(" ")[2]) for line in seen]
        replayed = len(seen) if header.startswith("*** history") else 0
        # the replay is the 10 lines before the first live one (or all there were)
        first_live = numbers[replayed] if len(numbers) > replayed else None
        if first_live is not None:
            assert replayed == min(10, first_live), (replayed, numbers)
        while not numbers or numbers[-1] < count // 3 * (_ + 1) and numbers[-1] != count - 1:
            line = bob.read_line(timeout=10)
            if line.startswith("<alice> n "):
                numbers.append(int(line.rpartition(" ")[2]))
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), numbers
        bob.send_line("/join lobby")
    sender.join(10)


def test_a_node_starts_without_waiting_for_its_reader(cluster):
    """A node's launch reads the lobby's history before its reader runs; the join waits for
    the reader to pass where the read stood. A node wrote its hello after that point at first
    (issue 28), so every start waited the whole CATCH_UP_SECONDS for a reader not yet
    running (and every cluster test took 4 s longer): now the hello comes before it."""
    _redis, nodes = cluster(history={"history_on_join": 5})
    alice = named(nodes[1], "alice")
    alice.join("dev")
    for node in nodes:
        node.wait_event("listening")
        assert not node.find_events("history_catch_up_slow"), node.stderr_text()[-2000:]


def test_a_tail_read_from_the_cluster_keeps_only_the_lines_from_after_its_read():
    """history.py's positioned read, in process: lines delivered while the store is read are
    kept only if their stream position is after the read's (the others were in the read)."""
    from chatd.core.events import Said
    from chatd.core.history import History
    from chatd.core.tail import Entry

    class Store:  # Redis as RedisStore answers: lines, and the stream position they belong to
        positioned = True

        def __init__(self):
            self.reading, self.go = threading.Event(), threading.Event()

        def mark(self):
            return None  # nothing queued: Redis is written by the publisher, not the store

        def load_positioned(self, key, count):
            self.reading.set()
            self.go.wait(5)
            return [Entry(1.0, "dev", "say", "a", "in the read", "n1")], {b"s1": (100, 0)}

    store = Store()
    history = History(store, 1000, 10, idle_rooms=0)
    got = []
    reader = threading.Thread(target=lambda: got.append(history.acquire("dev")))
    reader.start()
    assert store.reading.wait(5)
    history.record_remote("dev", [Said("a", "in the read")], (b"s1", (100, 0)), [1.0], "n1")
    history.record_remote("dev", [Said("a", "after")], (b"s1", (100, 1)), [2.0], "n1")
    # a stream the read did not look at (its node's hello came later): by the line's time
    history.record_remote("dev", [Said("a", "in the read")], (b"s2", (5, 0)), [1.0], "n1")
    history.record_remote("dev", [Said("b", "new node")], (b"s2", (5, 1)), [1.5], "n2")
    store.go.set()
    reader.join(5)
    assert [e.text for e in got[0].last(10)] == ["in the read", "after", "new node"]
    history.release("dev")  # idle_rooms = 0: dropped; a remote line now makes no tail
    history.record_remote("dev", [Said("a", "nobody here")], (101, 0))
    assert history.counts()["history_tails"] == 0


def test_a_join_waits_for_the_reader_to_hand_on_what_its_history_read_covers():
    """cluster/reader.py's caught_up: the history read from Redis may be ahead of what this
    node's reader has handed on; the join waits until the reader passes the read's position
    (then older lines land in the tail's pending list and are sorted out), and no longer
    than its bound when the reader is stuck. Seen before the wait: a joiner got lines 84-93
    replayed, then 0, 1, 2... live."""
    from chatd.cluster.reader import Reader

    reader = Reader.__new__(Reader)  # only the progress half: no link, no thread of its own
    reader.handled = {b"s": (0, 0), b"t": (0, 0)}
    reader._progress = threading.Condition(threading.Lock())
    reader._waiting = 0
    assert reader.caught_up({b"s": (0, 0)}, 0.0)  # nothing to wait for
    assert not reader.caught_up({b"s": (5, 0)}, 0.05)  # stuck reader: the bound, then on
    waited = []
    joiner = threading.Thread(
        target=lambda: waited.append(reader.caught_up({b"s": (7, 1), b"t": (3, 0)}, 10)))
    joiner.start()
    wait_until(lambda: reader._waiting == 1, what="the join to wait")
    reader._handled({b"s": (7, 0), b"t": (3, 0)})
    assert not waited  # (7, 0) is before (7, 1)
    reader._handled({b"s": (7, 1), b"t": (2, 9)})
    assert not waited  # every stream must have passed
    reader._handled({b"s": (7, 1), b"t": (3, 0)})
    joiner.join(10)
    assert waited == [True]
