"""What carries a client's rooms and account out of the process: the cluster's member records
(leases.member_record, checks.Validator.member), the roster built from them, and the handover
state's client record (lifecycle/state.py). New code reads the formats of the chatd before the
membership seam (one room, no account), for one rolling upgrade; and a client in one room
without an account is still written in that old format, so an older node reads it too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.cluster.checks import Member, Validator
from chatd.cluster.codec import Rejected
from chatd.cluster.leases import member_record
from chatd.cluster.roster import Roster
from chatd.core import events as ev
from chatd.core.membership import MAX_ROOMS
from chatd.lifecycle.state import ClientRecord

CHECK = Validator(1024)


def test_a_line_client_without_account_is_written_in_the_old_four_field_format():
    record = member_record("alice", "dev", "127.0.0.1:4000", 12.3456, ("dev",), None)
    assert json.loads(record) == ["alice", "dev", "127.0.0.1:4000", 12.346]
    assert CHECK.member(record) == Member("alice", "dev", "127.0.0.1:4000", 12.346, ("dev",), None)


def test_an_away_client_takes_seven_fields_and_its_text_is_checked():
    record = member_record("alice", "dev", "p:1", 1.0, ("dev",), None, "at lunch")
    assert json.loads(record) == ["alice", "dev", "p:1", 1.0, ["dev"], None, "at lunch"]
    assert CHECK.member(record).away == "at lunch"
    assert CHECK.member(member_record("alice", "dev", "p:1", 1.0, ("dev",))).away is None
    for bad in ('["a", "dev", "p:1", 1, ["dev"], null, 5]',
                '["a", "dev", "p:1", 1, ["dev"], null, "' + "x" * 2000 + '"]',
                '["a", "dev", "p:1", 1, ["dev"], null, "ok", "extra"]'):
        with pytest.raises(Rejected):
            CHECK.member(bad)


def test_a_state_files_away_and_ignores_are_input():
    good = ClientRecord.read(_state_record(away="out", ignores=["bob", "Eve"]))
    assert (good.away, good.ignores) == ("out", ["bob", "Eve"])
    bad = ClientRecord.read(_state_record(away=5, ignores=["9x", "ok"]))
    assert (bad.away, bad.ignores) == (None, [])
    old = ClientRecord.read(_state_record())
    assert (old.away, old.ignores) == (None, [])


def _state_record(**extra) -> dict:
    record = {"id": 1, "fd": 5, "ip": "127.0.0.1", "peer": "127.0.0.1:1", "nick": "alice",
              "room": "lobby", "muted": False, "connected_at": 1.0, "idle": 0.0,
              "bytes_in": 0, "lines_in": 0, "bytes_out": 0, "lines_out": 0, "backlog": "",
              "session": {"held": "", "unread": ""}}
    record.update(extra)
    return record


def test_an_old_record_reads_as_one_room_or_none():
    assert CHECK.member('["bob", null, "p:1", 1]').rooms == ()
    assert CHECK.member('["bob", "lobby", "p:1", 1]').rooms == ("lobby",)


@pytest.mark.parametrize("rooms, account", [(("lobby", "dev"), None), (("lobby",), "alice"),
                                            (("dev", "lobby"), "a")])
def test_more_rooms_or_an_account_take_six_fields(rooms, account):
    record = member_record("alice", rooms[0], "p:1", 1.0, rooms, account)
    assert len(json.loads(record)) == 6
    member = CHECK.member(record)
    assert (member.room, member.rooms, member.account) == (rooms[0], rooms, account)


@pytest.mark.parametrize("value", [
    '["a", "lobby", "p:1", 1, "lobby", null]', '["a", "lobby", "p:1", 1, ["no room"], null]',
    '["a", "lobby", "p:1", 1, ["lobby"], "bad account"]', '["a", "lobby", "p:1", 1, ["x"]]',
    json.dumps(["a", "lobby", "p:1", 1, [f"r{n}" for n in range(MAX_ROOMS + 1)], None]),
])
def test_bad_rooms_or_account_are_rejected(value):
    with pytest.raises(Rejected):
        CHECK.member(value)


@given(st.lists(st.none() | st.text(max_size=8) | st.integers() | st.lists(st.text(max_size=4)),
                max_size=7))
def test_any_member_record_is_a_member_or_rejected(fields):
    try:
        CHECK.member(json.dumps(fields))
    except Rejected:
        pass


def test_the_roster_follows_a_remote_client_through_several_rooms():
    roster = Roster()
    roster.add("alice", ("lobby", "dev"), "n2")
    assert roster.members("DEV") == ["alice"] and roster.rooms() == {
        "lobby": ("lobby", 1), "dev": ("dev", 1)}
    roster.track(ev.Renamed("alice", "al"), "lobby", "n2")
    roster.track(ev.Renamed("alice", "al"), "dev", "n2")  # said in each of its rooms
    assert roster.members("dev") == roster.members("lobby") == ["al"] and len(roster) == 1
    roster.track(ev.Left("al", "lobby", None), "lobby", "n2")
    assert roster.members("lobby") == [] and roster.nick("AL") == "al"
    roster.track(ev.Joined("al", "ops"), "ops", "n2")
    assert sorted(roster.rooms()) == ["dev", "ops"]
    roster.track(ev.Left("al", "dev", "quit"), "dev", "n3")  # another node's al: not ours
    roster.track(ev.Kicked("al", "x"), "dev", "n2")
    roster.track(ev.Left("al", "ops", "quit"), "ops", "n2")
    assert len(roster) == 0 and roster.nick("al") is None


def _record(**fields) -> dict:
    record = {"id": 7, "fd": 0, "ip": "127.0.0.1", "peer": "127.0.0.1:5", "nick": "alice",
              "room": "dev", "muted": False, "connected_at": 1.0, "idle": 0.5, "bytes_in": 1,
              "lines_in": 1, "bytes_out": 2, "lines_out": 2, "backlog": None,
              "session": {"held": None, "unread": "", "discarding": False, "seen_lf": True,
                          "telnet": None, "tokens": 5.0}}
    record.update(fields)
    return record


def test_a_handover_record_of_the_chatd_before_reads_as_its_one_room():
    record = ClientRecord.read(_record())
    assert (record.rooms, record.account, record.protocol) == (["dev"], None, "line")


def test_a_handover_record_carries_rooms_and_account_both_ways():
    record = ClientRecord.read(_record(rooms=["dev", "lobby"], account="alice", protocol="irc"))
    assert (record.rooms, record.account) == (["dev", "lobby"], "alice")
    again = ClientRecord.read(record.write())
    assert (again.rooms, again.account, again.room, again.protocol) == (
        ["dev", "lobby"], "alice", "dev", "irc")


@pytest.mark.parametrize("rooms, account", [("dev", None), ([1], None), (["no room"], "a b"),
                                            (None, 5)])
def test_a_handover_record_with_bad_rooms_falls_back_to_its_room(rooms, account):
    record = ClientRecord.read(_record(rooms=rooms, account=account))
    assert (record.rooms, record.account) == (["dev"], None)


def test_the_roster_keeps_a_remote_client_in_at_most_max_rooms():
    roster = Roster()
    for n in range(MAX_ROOMS + 10):
        roster.track(ev.Joined("alice", f"r{n}"), f"r{n}", "n2")
    assert len(roster.rooms()) == MAX_ROOMS and roster.members(f"r{MAX_ROOMS}") == []
