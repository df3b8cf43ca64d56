"""The membership and identity seams (core/membership.py), through the real Hub in-process: a
client in several rooms at once, as an IRC client will be, beside line clients in one.

The line protocol has no command that enters a second room, so these tests call the hub as a
second protocol's session would (``enter``, ``part``, ``say(..., room)``) and read the exact
bytes each peer receives (support/inproc.py).
"""

from __future__ import annotations

from support.inproc import crlf

from chatd.core.closing import CLOSED
from chatd.core.events import Said
from chatd.core.membership import MAX_ROOMS


def test_enter_keeps_the_other_rooms_and_each_room_reaches_its_members(world):
    a, b, c = world.connected(3)
    world.hub.join(c.client, "dev")
    a.take(), b.take(), c.take()
    assert world.hub.enter(a.client, "dev") is None
    assert a.take() == crlf("*** you joined dev (2 members)")
    assert c.take() == crlf("*** guest-1 joined dev")
    assert b.take() == b""  # nobody left the lobby
    assert [room.name for room in a.client.rooms] == ["lobby", "dev"]
    assert a.client.room.name == "lobby"  # its current room is the first it was in
    world.hub.say(b.client, Said(b.nick, "in the lobby"))
    world.hub.say(c.client, Said(c.nick, "in dev"))
    world.hub.say(a.client, Said(a.nick, "to dev"), a.client.rooms[1])
    assert a.take() == crlf("<guest-2> in the lobby", "<guest-3> in dev")
    assert c.take() == crlf("<guest-1> to dev")
    assert b.take() == crlf()  # a's line went to dev only
    assert world.hub.rooms() == [("dev", 2), ("lobby", 2)]


def test_enter_a_room_one_is_in_or_too_many_is_refused(world):
    (a,) = world.connected(1)
    assert world.hub.enter(a.client, "LOBBY") == "you are already in lobby"
    for n in range(MAX_ROOMS - 1):
        assert world.hub.enter(a.client, f"r{n}") is None
    assert world.hub.enter(a.client, "one-more") == f"you are in too many rooms (at most {MAX_ROOMS})"
    assert len(a.client.rooms) == MAX_ROOMS


def test_part_leaves_one_room_and_tells_it_why(world):
    a, b = world.connected(2)
    world.hub.enter(a.client, "dev")
    world.hub.enter(b.client, "dev")
    a.take(), b.take()
    assert world.hub.part(a.client, "Dev", "lunch") is None
    assert b.take() == crlf("*** guest-1 left dev (lunch)")
    assert a.take() == b""  # its protocol answers it, not the hub
    assert [room.name for room in a.client.rooms] == ["lobby"]
    assert world.hub.part(a.client, "dev") == "you are not in dev"
    world.hub.say(b.client, Said(b.nick, "still here"), b.client.rooms[1])
    assert a.take() == b""


def test_parting_the_current_room_makes_another_current_and_the_last_deletes_it(world):
    (a,) = world.connected(1)
    world.hub.enter(a.client, "dev")
    world.hub.part(a.client, "lobby")
    assert a.client.room.name == "dev" and [r.name for r in a.client.rooms] == ["dev"]
    world.hub.enter(a.client, "ops")
    world.hub.part(a.client, "dev")
    assert world.hub.rooms() == [("lobby", 0), ("ops", 1)]


def _in_two_rooms(world):
    """a in the lobby and dev, b in the lobby, c in dev; what they were told so far taken."""
    a, b, c = world.connected(3)
    world.hub.enter(a.client, "dev")
    world.hub.join(c.client, "dev")
    a.take(), b.take(), c.take()
    return a, b, c


def test_a_private_line_follows_the_lines_of_every_room_it_is_in(world):
    a, b, c = _in_two_rooms(world)
    world.hub.say(b.client, Said(b.nick, "lobby 1"))
    world.hub.say(c.client, Said(c.nick, "dev 1"))
    world.hub.send_to(a.client, Said("server", "private"))
    world.hub.say(c.client, Said(c.nick, "dev 2"))
    world.hub.say(b.client, Said(b.nick, "lobby 2"))
    got = a.take().decode().splitlines()
    assert got.index("<server> private") == 2, got
    assert sorted(got[:2]) == ["<guest-2> lobby 1", "<guest-3> dev 1"]
    assert sorted(got[3:]) == ["<guest-2> lobby 2", "<guest-3> dev 2"]


def test_remove_says_farewell_in_every_room(world):
    a, b, c = _in_two_rooms(world)
    world.hub.remove(a.client, CLOSED)
    assert b.take() == crlf("*** guest-1 left lobby (connection closed)")
    assert c.take() == crlf("*** guest-1 left dev (connection closed)")
    assert a.client.rooms == () and a.client.room is None
    assert world.hub.rooms() == [("dev", 1), ("lobby", 1)]


def test_a_rename_is_told_in_every_room(world):
    a, b, c = _in_two_rooms(world)
    assert world.hub.rename(a.client, "alice") is None
    assert b.take() == c.take() == crlf("*** guest-1 is now known as alice")


def test_snapshot_rows_carry_rooms_and_account(world):
    a, b = world.connected(2)
    world.hub.enter(a.client, "dev")
    a.client.account = "alice"  # what the accounts issue's login will set
    rows = world.hub.snapshot()
    assert [(r.nick, r.room, r.rooms, r.account) for r in rows] == [
        ("guest-1", "lobby", ("lobby", "dev"), "alice"), ("guest-2", "lobby", ("lobby",), None)]
    assert [r.nick for r in world.hub.snapshot("dev")] == ["guest-1"]


def test_restore_puts_a_client_back_in_all_its_rooms_silently(world):
    a, b = world.connected(2)
    world.hub.join(b.client, "dev")
    a.take(), b.take()
    c = world.connect(admit=False, register=False)
    world.hub.restore(c.client, "carol", ["dev", "lobby", "new"], "carol-account")
    assert [r.name for r in c.client.rooms] == ["dev", "lobby", "new"]
    assert c.client.room.name == "dev" and c.client.account == "carol-account"
    assert a.take() == b.take() == c.take() == b""
    world.hub.say(a.client, Said(a.nick, "hi"))
    world.hub.say(b.client, Said(b.nick, "hey"))
    assert sorted(c.take().decode().splitlines()) == ["<guest-1> hi", "<guest-2> hey"]
