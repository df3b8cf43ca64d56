"""docs/protocol.md §1 end to end, nicks and rooms: ``/nick``, ``/join``, ``/rooms`` and ``/who``,
each with its replies, the notices the others get, and its errors (greeting, messages, the
other commands and disconnect notices: test_chat.py).
"""

from __future__ import annotations

import pytest

# -- /nick ------------------------------------------------------------------------------------


def test_nick_change_reply_and_notice(server):
    a, b = server.connect_many(2)
    a.send_line("/nick alice")
    a.expect("*** you are now alice")
    b.expect("*** guest-1 is now known as alice")
    a.send_line("now named")
    b.expect("<alice> now named")


def test_nick_change_is_not_announced_in_other_rooms(trio):
    alice, bob, carol = trio
    carol.join("elsewhere")
    alice.expect("*** carol left lobby")
    bob.expect("*** carol left lobby")
    alice.set_nick("alice2")
    bob.expect("*** alice is now known as alice2")
    carol.expect_silence()


@pytest.mark.parametrize("name", ["1abc", "-abc", "x" * 25, "a.b", "héllo", "a/b", "#chan", "a:b"])
def test_nick_invalid(server, name):
    a = server.connect()
    a.send_line(f"/nick {name}")
    line = a.read_line()
    assert line.startswith(f"*** error: invalid nick {name} ("), line
    a.expect_silence()  # still connected, nothing else


def test_nick_longest_valid(server):
    a = server.connect()
    a.set_nick("N" * 24)
    a.send_line("/who")
    a.expect("*** in lobby: " + "N" * 24)


def test_nick_in_use_case_insensitively(pair):
    alice, bob = pair
    bob.send_line("/nick ALICE")
    bob.expect("*** error: nick ALICE is already in use")
    alice.expect_silence()
    bob.send_line("/nick alice_")
    bob.expect("*** you are now alice_")
    alice.expect("*** bob is now known as alice_")


def test_nick_of_a_guest_is_taken(server):
    a, b = server.connect_many(2)
    b.send_line("/nick GUEST-1")
    b.expect("*** error: nick GUEST-1 is already in use")


def test_nick_freed_by_a_rename_can_be_taken(pair):
    alice, bob = pair
    alice.set_nick("alice2")
    bob.expect("*** alice is now known as alice2")
    bob.set_nick("alice")
    alice.expect("*** bob is now known as alice")


def test_nick_freed_by_disconnect_can_be_taken(pair):
    alice, bob = pair
    alice.close()
    bob.expect("*** alice left lobby (connection closed)")
    bob.set_nick("alice")


def test_nick_missing_argument(server):
    a = server.connect()
    a.send_line("/nick")
    a.expect("*** error: usage: /nick NAME")
    a.send_line("/nick   ")
    a.expect("*** error: usage: /nick NAME")


def test_command_word_is_case_insensitive(server):
    a = server.connect()
    a.send_line("/NICK carol")
    a.expect("*** you are now carol")
    a.send_line("/Who")
    a.expect("*** in lobby: carol")
    a.send_line("/HeLp")
    assert a.read_line().startswith("*** /")


# -- /join ------------------------------------------------------------------------------------


def test_join_reply_and_notices(trio):
    alice, bob, carol = trio
    carol.send_line("/join games")
    carol.expect("*** you joined games (1 member)")
    alice.expect("*** carol left lobby")
    bob.expect("*** carol left lobby")
    alice.send_line("/join games")
    alice.expect("*** you joined games (2 members)")
    bob.expect("*** alice left lobby")
    carol.expect("*** alice joined games")
    bob.expect_silence()
    carol.expect_silence()


def test_join_hash_prefix_is_ignored(pair):
    alice, bob = pair
    alice.send_line("/join #games")
    alice.expect("*** you joined games (1 member)")
    bob.expect("*** alice left lobby")
    bob.send_line("/join games")
    bob.expect("*** you joined games (2 members)")
    alice.expect("*** bob joined games")


def test_rooms_are_case_insensitive_and_keep_first_spelling(pair):
    alice, bob = pair
    alice.send_line("/join Games")
    alice.expect("*** you joined Games (1 member)")
    bob.expect("*** alice left lobby")
    bob.send_line("/join GAMES")
    bob.expect("*** you joined Games (2 members)")
    alice.expect("*** bob joined Games")
    bob.send_line("/who")
    line = bob.read_line()
    assert line.startswith("*** in Games: "), line


@pytest.mark.parametrize("name", ["1abc", "-x", "x" * 25, "a.b", "#9", "ü"])
def test_join_invalid_room(server, name):
    a = server.connect()
    a.send_line(f"/join {name}")
    line = a.read_line()
    assert line.startswith("*** error: invalid room "), line
    assert name.lstrip("#") in line
    a.send_line("/who")
    assert a.read_line().startswith("*** in lobby: ")


def test_join_missing_argument(server):
    a = server.connect()
    a.send_line("/join")
    a.expect("*** error: usage: /join ROOM")


def test_join_current_room(server):
    a = server.connect()
    a.send_line("/join lobby")
    a.expect("*** error: you are already in lobby")
    a.send_line("/join #LOBBY")
    a.expect("*** error: you are already in lobby")


def test_join_back_to_lobby(pair):
    alice, bob = pair
    alice.join("x")
    bob.expect("*** alice left lobby")
    alice.send_line("/join lobby")
    alice.expect("*** you joined lobby (2 members)")
    bob.expect("*** alice joined lobby")


# -- /rooms, /who -----------------------------------------------------------------------------


def rooms_of(client) -> set[str]:
    client.send_line("/rooms")
    lines = client.sync()
    assert all(line.startswith("*** ") for line in lines), lines
    assert len(set(lines)) == len(lines), f"a room listed twice: {lines}"
    return set(lines)


def test_rooms_lists_rooms_with_member_counts(trio):
    alice, bob, carol = trio
    bob.join("games")
    alice.expect("*** bob left lobby")
    carol.expect("*** bob left lobby")
    carol.join("Music")
    alice.expect("*** carol left lobby")
    carol.join("games")  # Music is empty now and goes away
    bob.expect("*** carol joined games")
    assert rooms_of(alice) == {"*** lobby (1 member)", "*** games (2 members)"}


def test_rooms_lists_an_empty_lobby(server):
    a = server.connect()
    a.join("side")
    assert rooms_of(a) == {"*** lobby (0 members)", "*** side (1 member)"}


def test_who_lists_the_current_room(trio):
    alice, bob, carol = trio
    carol.join("other")
    alice.expect("*** carol left lobby")
    alice.send_line("/who")
    line = alice.read_line()
    assert line.startswith("*** in lobby: "), line
    assert sorted(line.removeprefix("*** in lobby: ").split(", ")) == ["alice", "bob"]
    carol.send_line("/who")
    carol.expect("*** in other: @carol")  # who made it is its operator (SPEC §13)
