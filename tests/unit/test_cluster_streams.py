"""A node reads the shared stream and every other node's own (cluster/reader.py): the entries
of one read are handed on in the order Redis added them, a stream that filled the read's count
holds the others' later entries back, and a hello (``["streams", ID]``) makes the reader
follow a node's stream from ID. Pure: no Redis, no thread."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from chatd.cluster.codec import Rejected
from chatd.cluster.reader import MAX_STREAMS, READ_ENTRIES, SHARED_KEY, Reader, in_order

A, B = b"chatd:events:a", b"chatd:events:b"


def entries(*ids: str) -> list:
    return [(i.encode(), {b"n": i.encode()}) for i in ids]


def order(read, following=None) -> list:
    following = following or {stream: b"0-0" for stream, _ in read}
    return [(stream, entry_id.decode()) for stream, entry_id, _ in in_order(read, following)]


def test_entries_of_several_streams_come_in_the_order_redis_added_them():
    read = [(A, entries("5-0", "9-0")), (SHARED_KEY, entries("7-0", "9-0")),
            (B, entries("6-1", "10-0"))]
    assert order(read) == [(A, "5-0"), (B, "6-1"), (SHARED_KEY, "7-0"),
                           (SHARED_KEY, "9-0"), (A, "9-0"), (B, "10-0")]  # a tie: shared first


def test_a_stream_that_filled_the_read_holds_back_the_others_later_entries():
    full = [f"{i}-0" for i in range(1, READ_ENTRIES + 1)]
    read = [(A, entries(*full)), (B, entries("3-5", f"{READ_ENTRIES + 1}-0"))]
    got = order(read)
    assert len(got) == READ_ENTRIES + 1 and (B, "3-5") in got
    assert (B, f"{READ_ENTRIES + 1}-0") not in got  # read again next time, after A's rest


def test_a_stream_not_followed_is_not_handed_on():
    assert order([(A, entries("1-0")), (B, entries("2-0"))], {A: b"0-0"}) == [(A, "1-0")]


def reader() -> Reader:
    link = SimpleNamespace(node="me", started_at=0.0, validator=None,
                           rejected=lambda *args, **kw: None)
    routing = SimpleNamespace(obey=None, answered=None, asked=None)
    return Reader(link, None, routing, stopping=None)


def test_a_hello_in_the_shared_stream_makes_the_reader_follow_that_node_from_its_id():
    r = reader()
    r._streams("a", ["streams", "17-3"])
    assert r._heard == {A: b"17-3"}
    r._streams("me", ["streams", "1-0"])  # our own: never read back
    r.last_ids = {SHARED_KEY: b"0-0", B: b"9-0"}
    r._streams("b", ["streams", "1-0"])  # one followed goes on from where the reader is
    assert r._heard == {A: b"17-3"}
    for bad in (["streams"], ["streams", 5], ["streams", "x-1"], ["streams", "1-0", "2"]):
        with pytest.raises(Rejected):
            r._streams("c", bad)
    r._stream = A
    with pytest.raises(Rejected):  # only the shared stream carries hellos
        r._streams("c", ["streams", "1-0"])


def test_a_reader_follows_at_most_max_streams():
    r = reader()
    r.last_ids = {SHARED_KEY: b"0-0", **{f"s{i}".encode(): b"0-0" for i in range(MAX_STREAMS - 1)}}
    with pytest.raises(Rejected, match="streams"):
        r._streams("a", ["streams", "1-0"])
