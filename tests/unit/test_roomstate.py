"""core/roomstate.py: who is an operator, who may speak and join, and the stored form read
back as input."""

from __future__ import annotations

import pytest

from chatd.core.roomstate import RoomState


def test_nobody_is_an_operator_of_a_room_without_a_maker():
    """(A client of another node has no id here: it must not match a room with no maker.)"""
    state = RoomState()
    assert not state.is_op(None, "bob", None)
    assert not state.is_op(7, "bob", None)
    assert RoomState(creator=7).is_op(7, "alice", None)
    assert not RoomState(creator=7).is_op(None, "alice", None)


def test_operators_by_founder_account_or_nick():
    state = RoomState(founder="alice", ops=frozenset({"bob", "carolacct"}))
    assert state.is_op(1, "whatever", "Alice")  # the founder's account, however spelled
    assert state.is_op(2, "BOB", None)  # a nick
    assert state.is_op(3, "guest-9", "CarolAcct")  # an account under another nick
    assert not state.is_op(4, "eve", "eve")


def test_refusals_in_order_and_the_founder_always_in():
    state = RoomState(founder="alice", modes="ik", key="sesame", bans=frozenset({"eve"}),
                      invites=frozenset({"bob"}))
    assert state.refusal("dev", "eve", None, "sesame") == "you are banned from dev"
    assert state.refusal("dev", "carol", None, "sesame") == "dev is invite-only"
    assert state.refusal("dev", "bob", None, "nope") == "wrong key for dev"
    assert state.refusal("dev", "bob", None, "sesame") is None
    assert state.refusal("dev", "x", "ALICE", "") is None


def test_moderated_rooms_hear_operators_and_voices():
    state = RoomState(modes="m", ops=frozenset({"op"}), voiced=frozenset({"v"}))
    assert state.may_speak(1, "op", None) and state.may_speak(2, "guest", "v")
    assert not state.may_speak(3, "other", None)
    assert RoomState().may_speak(3, "other", None)


def test_a_room_takes_lines_from_outside_only_without_plus_n():
    """IRC's ``-n``: every room starts ``+n``; without it a non-member may send it a line,
    unless the room bans it, or is moderated and it is neither an operator nor voiced."""
    assert RoomState().modes == "n"
    assert not RoomState().takes_line_from(1, "eve", None)
    assert RoomState(modes="").takes_line_from(1, "eve", None)
    assert not RoomState(modes="", bans=frozenset({"eve"})).takes_line_from(1, "Eve", None)
    assert not RoomState(modes="", bans=frozenset({"acct"})).takes_line_from(1, "x", "ACCT")
    moderated = RoomState(modes="m", voiced=frozenset({"v"}))
    assert moderated.takes_line_from(1, "v", None)
    assert not moderated.takes_line_from(1, "eve", None)


def test_a_record_from_before_minus_n_was_honoured_is_plus_n():
    """A stored room from before keeps out lines from outside, as it did then: its record
    has no ``outside``, and ``n`` was shown as set but changed nothing."""
    assert RoomState.from_record({"modes": "t"}).modes == "nt"
    assert RoomState.from_record({"modes": "nt"}).modes == "nt"
    opened = RoomState(modes="t")
    assert opened.record()["outside"] is True
    assert RoomState.from_record(opened.record()) == opened


def test_the_stored_form_round_trips():
    state = RoomState(founder="alice", topic="hi", topic_by="bob", modes="ikt", key="k1",
                      ops=frozenset({"bob"}), voiced=frozenset({"v"}), bans=frozenset({"e"}),
                      invites=frozenset({"i"}))
    assert RoomState.from_record(state.record()) == state
    limited = RoomState(modes="lns", limit=5)
    assert RoomState.from_record(limited.record()) == limited
    assert limited.refusal("r", "x", None, "", members=5) == "r is full (5 members)"
    assert limited.refusal("r", "x", None, "", members=4) is None


@pytest.mark.parametrize("record", [
    None, [], "x", {"founder": 5}, {"founder": "9bad"}, {"modes": "z"}, {"modes": "k"},
    {"key": "x"}, {"topic": "x" * 600}, {"topic": "bell\x07"}, {"ops": "bob"},
    {"ops": ["ok", "no way"]}, {"bans": [1]}, {"ops": ["a"] * 300}, {"modes": 3},
    {"modes": "l"}, {"limit": 5}, {"modes": "l", "limit": -1}, {"modes": "l", "limit": "5"},
    {"modes": "l", "limit": 10**9}, {"modes": "n", "outside": True},
    {"modes": "t", "outside": False}, {"modes": "", "outside": 1},
])
def test_a_bad_stored_record_is_none(record):
    assert RoomState.from_record(record) is None
