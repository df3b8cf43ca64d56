"""core/roomchanges.py: an operator's change as (new state, room line) or an error text."""

from __future__ import annotations

import pytest

from chatd.core import events as ev
from chatd.core import roomchanges as rc
from chatd.core.roomstate import MAX_NAMES, RoomState


def test_grant_and_revoke():
    state, line = rc.grant("dev", RoomState(), "alice", "ops", "bob", "Bob", True)
    assert state.ops == {"bob"} and line == ev.Granted("alice", "dev", "operator status", "Bob")
    assert rc.grant("dev", state, "alice", "ops", "bob", "Bob", True) == \
        "Bob has operator status in dev already"
    state, line = rc.grant("dev", state, "alice", "ops", "bob", "Bob", False)
    assert state.ops == set() and line == ev.Revoked("alice", "dev", "operator status", "Bob")
    assert rc.grant("dev", state, "alice", "voiced", "eve", "eve", False) == \
        "eve has no voice in dev"


def test_a_list_is_bounded():
    full = RoomState(bans=frozenset(f"n{i}" for i in range(MAX_NAMES)))
    assert rc.ban("dev", full, "a", "x", "x", True) == f"dev has too many bans (at most {MAX_NAMES})"
    assert isinstance(rc.ban("dev", full, "a", "n1", "n1", False), tuple)  # lifting still works


def test_modes_and_the_key_never_in_the_line():
    state, line = rc.mode("dev", RoomState(modes=""), "alice", "+k", "sesame")
    assert (state.modes, state.key, line) == ("k", "sesame", ev.ModeSet("alice", "dev", "+k"))
    state, _ = rc.mode("dev", state, "alice", "+i")
    assert state.modes == "ik"
    state, line = rc.mode("dev", state, "alice", "-k")
    assert (state.modes, state.key, line.change) == ("i", "", "-k")
    assert rc.mode("dev", RoomState(), "alice", "+n") == "mode +n is set on dev already"
    assert rc.mode("dev", RoomState(), "alice", "-n")[0].modes == ""
    assert rc.mode("dev", state, "alice", "+i") == "mode +i is set on dev already"
    assert rc.mode("dev", state, "alice", "-m") == "mode m is not set on dev"


@pytest.mark.parametrize("change, key", [("+x", ""), ("i", ""), ("++", ""), ("+k", ""),
                                         ("+k", "two words"), ("+k", "x" * 65), ("", "")])
def test_bad_mode_changes(change, key):
    assert isinstance(rc.mode("dev", RoomState(), "alice", change, key), str)


def test_several_modes_are_one_change_and_one_line():
    """IRC's ``MODE #dev +tl-i 5``: what can be made is, in order, with one room line naming
    it all (roomchanges.modes); what cannot is refused, one text each."""
    state, line, refused = rc.modes("dev", RoomState(), "alice", [("+t", ""), ("+l", "5"),
                                                                  ("-i", "")])
    assert state.modes == "lnt" and state.limit == 5  # (n: every room starts with it)
    assert line == ev.ModeSet("alice", "dev", "+tl 5")
    assert refused == ["mode i is not set on dev"]
    assert rc.modes("dev", state, "alice", [("-i", "")])[1] is None
    # a limit set twice in one line is one limit, as the room line says (one number at most:
    # the form another node accepts, checks._mode_change)
    twice = rc.modes("dev", RoomState(), "alice", [("+l", "5"), ("+i", ""), ("+l", "7")])
    assert twice[0].limit == 7 and twice[1] == ev.ModeSet("alice", "dev", "+il 7")
    assert rc.joined_modes(["-i", "-n", "-t"]) == "-int"
    assert rc.joined_modes(["-i", "+l 12", "+k"]) == "-i+lk 12"
