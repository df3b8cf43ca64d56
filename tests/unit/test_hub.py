"""Hub + Room + Flusher in-process, with real Client objects on socketpairs.

Each test drives the hub's public methods the way sessions and admin commands do and asserts
two things only: the return values, and the exact bytes each client's peer has received, in
order (``conn.take()`` settles the flusher first, so "nothing else" is exact, see inproc.py).
Here: admission, registration, rename, join, remove and the queries; say, send_to and
broadcast are in test_hub_delivery.py.
"""

from __future__ import annotations

from support.inproc import GREETING_LINES, SMALL_SNDBUF, crlf

from chatd.core.closing import Close
from chatd.core.events import Motd, Said, Welcome

# -- admission --------------------------------------------------------------------------------


def test_admit_refuses_past_max_clients(world):
    a, b = (world.connect(admit=False, register=False) for _ in range(2))
    c = world.connect(ip="10.0.0.9", admit=False, register=False)
    assert world.hub.admit(a.client, 2, 32) is None
    assert world.hub.admit(b.client, 2, 32) is None
    assert world.hub.admit(c.client, 2, 32) == "server full"
    assert world.hub.stats()["clients"] == 2
    world.hub.remove(a.client, None)
    assert world.hub.admit(c.client, 2, 32) is None  # a freed its slot


def test_admit_refuses_past_max_per_ip(world):
    a1, a2 = (world.connect(ip="192.0.2.1", admit=False, register=False) for _ in range(2))
    b = world.connect(ip="192.0.2.2", admit=False, register=False)
    assert world.hub.admit(a1.client, 100, 1) is None
    assert world.hub.admit(a2.client, 100, 1) == "too many connections from your address"
    assert world.hub.admit(b.client, 100, 1) is None  # another address is not affected
    world.hub.remove(a1.client, None)
    assert world.hub.admit(a2.client, 100, 1) is None
    assert [c.id for c in world.hub.clients()] == [b.client.id, a2.client.id]


def test_refused_clients_get_nothing_from_the_hub(world):
    a = world.connect(admit=False, register=False)
    assert world.hub.admit(a.client, 0, 32) == "server full"
    assert a.take() == b""  # the refusal line is the accept thread's, not the hub's


# -- registration -----------------------------------------------------------------------------


def test_register_greets_names_and_places_in_lobby(world):
    a = world.connect(register=False)
    nick = world.hub.register(a.client, [Welcome("testnet"), Motd("motd 1"), Motd("motd 2")])
    assert nick == "guest-1" == a.nick
    assert a.take() == crlf("*** welcome to testnet", "*** you are guest-1",
                            "*** motd 1", "*** motd 2")
    assert world.hub.who(a.client) == ("lobby", ["guest-1"])


def test_register_announces_to_the_lobby_but_not_to_the_joiner(world):
    a, b = world.connected(2)
    c = world.connect()
    assert c.take() == crlf(GREETING_LINES[0], f"*** you are {c.nick}", *GREETING_LINES[1:])
    assert a.take() == b.take() == crlf(f"*** {c.nick} joined lobby")


def test_guest_nicks_count_up_and_skip_taken_ones(world):
    a = world.connect()
    assert world.hub.rename(a.client, "GUEST-2") is None  # case-insensitively guest-2
    b = world.connect()
    assert (a.nick, b.nick) == ("GUEST-2", "guest-3")


# -- rename -----------------------------------------------------------------------------------


def test_rename_replies_and_tells_the_room(world):
    a, b, c = world.connected(3)
    assert world.hub.rename(a.client, "alice") is None
    assert a.take() == crlf("*** you are now alice")
    assert b.take() == c.take() == crlf("*** guest-1 is now known as alice")
    assert world.hub.find("ALICE") is a.client
    assert world.hub.find("guest-1") is None


def test_rename_to_a_nick_in_use_is_refused_case_insensitively(world):
    a, b = world.connected(2)
    assert world.hub.rename(a.client, "bob") is None
    a.take(), b.take()
    assert world.hub.rename(b.client, "BoB") == "nick BoB is already in use"
    assert a.take() == b.take() == b""
    assert b.nick == "guest-2"


def test_rename_to_another_case_of_ones_own_nick(world):
    a, b = world.connected(2)
    world.hub.rename(a.client, "bob")
    a.take(), b.take()
    assert world.hub.rename(a.client, "Bob") is None
    assert a.take() == crlf("*** you are now Bob")
    assert b.take() == crlf("*** bob is now known as Bob")


def test_rename_frees_the_old_nick(world):
    a, b = world.connected(2)
    world.hub.rename(a.client, "alice")
    assert world.hub.rename(b.client, "guest-1") is None
    assert world.hub.find("guest-1") is b.client


def test_rename_only_tells_the_current_room(world):
    a, b, c = world.connected(3)
    world.hub.join(c.client, "elsewhere")
    a.take(), b.take(), c.take()
    world.hub.rename(a.client, "alice")
    assert b.take() == crlf("*** guest-1 is now known as alice")
    assert c.take() == b""


# -- join -------------------------------------------------------------------------------------


def test_join_tells_old_room_new_room_and_joiner(world):
    a, b, c = world.connected(3)
    assert world.hub.join(a.client, "dev") is None
    assert a.take() == crlf("*** you joined dev (1 member)")
    assert b.take() == c.take() == crlf("*** guest-1 left lobby")
    assert world.hub.join(b.client, "DEV") is None  # rooms are case-insensitive too
    assert b.take() == crlf("*** you joined dev (2 members)")  # the creator's spelling
    assert a.take() == crlf("*** guest-2 joined dev")
    assert c.take() == crlf("*** guest-2 left lobby")
    assert world.hub.who(a.client) == ("dev", ["@guest-1", "guest-2"])


def test_join_the_room_one_is_in_is_an_error(world):
    a, b = world.connected(2)
    assert world.hub.join(a.client, "LOBBY") == "you are already in lobby"
    assert a.take() == b.take() == b""


def test_empty_room_is_deleted_but_lobby_is_kept(world):
    a, b = world.connected(2)
    world.hub.join(a.client, "dev")
    world.hub.join(b.client, "ops")
    assert world.hub.rooms() == [("dev", 1), ("lobby", 0), ("ops", 1)]
    world.hub.join(a.client, "ops")
    assert world.hub.rooms() == [("lobby", 0), ("ops", 2)]
    a.take(), b.take()
    world.hub.join(a.client, "Dev")  # created afresh, in the new spelling
    assert a.take() == crlf("*** you joined Dev (1 member)")
    assert world.hub.rooms() == [("Dev", 1), ("lobby", 0), ("ops", 1)]


def test_a_leaver_gets_the_lines_posted_before_it_left_and_none_after(world):
    a, b = world.connected(2)
    world.hub.say(b.client, Said("guest-2", "before"))
    world.hub.join(a.client, "dev")
    world.hub.say(b.client, Said("guest-2", "after"))
    assert a.take() == crlf("<guest-2> before", "*** you joined dev (1 member)")
    assert b.take() == crlf("*** guest-1 left lobby")


def test_a_joiner_gets_the_lines_posted_after_it_joined_and_none_before(world):
    a, b, c = world.connected(3)
    world.hub.join(c.client, "dev")
    a.take(), b.take(), c.take()
    world.hub.say(c.client, Said("guest-3", "before"))
    world.hub.join(a.client, "dev")
    world.hub.say(c.client, Said("guest-3", "after"))
    world.hub.say(b.client, Said("guest-2", "lobby only"))
    assert a.take() == crlf("*** you joined dev (2 members)", "<guest-3> after")
    assert c.take() == crlf("*** guest-1 joined dev")
    assert b.take() == crlf("*** guest-1 left lobby")


def test_leaving_and_coming_back_gets_exactly_the_lines_of_each_stay(world):
    """Membership changes race the flusher here (nothing settles in between): whatever the
    interleaving, a member gets exactly the lines posted while it was a member."""
    a, b = world.connected(2)
    expected = []
    for i in range(200):
        world.hub.say(b.client, Said("guest-2", str(i)))
        if i % 3 != 1:  # a is in the lobby on steps 0 and 2, away on step 1
            expected.append(f"<guest-2> {i}")
        if i % 3 == 0:
            world.hub.join(a.client, f"away{i % 2}")
            expected.append(f"*** you joined away{i % 2} (1 member)")
        elif i % 3 == 1:
            world.hub.join(a.client, "lobby")
            expected.append("*** you joined lobby (2 members)")
    assert a.take() == crlf(*expected)


# -- remove -----------------------------------------------------------------------------------


def test_remove_says_farewell_to_the_room_and_frees_the_nick(world):
    a, b, c = world.connected(3)
    world.hub.rename(a.client, "alice")
    a.take(), b.take(), c.take()
    world.end(a, Close("quit", "bye"))
    assert b.take() == c.take() == crlf("*** alice left lobby (quit: bye)")
    assert a.peer.read_to_eof() == b""  # the leaver does not see its own farewell
    assert world.hub.find("alice") is None and world.hub.lookup(a.client.id) is None
    assert world.hub.rename(b.client, "Alice") is None
    assert world.hub.who(c.client) == ("lobby", ["Alice", "guest-3"])


def test_remove_without_farewell_is_silent(world):
    a, b = world.connected(2)
    world.end(a)
    assert b.take() == b""


def test_remove_twice_is_harmless(world):
    a, b = world.connected(2)
    world.end(a, Close("quit", "x"))
    world.hub.remove(a.client, Close("quit", "again"))
    assert b.take() == crlf("*** guest-1 left lobby (quit: x)")
    assert world.hub.stats()["clients"] == 1


def test_remove_deletes_the_room_it_empties(world):
    (a,) = world.connected(1)
    world.hub.join(a.client, "dev")
    world.end(a)
    assert world.hub.rooms() == [("lobby", 0)]


# -- who / rooms / lookup / stats -------------------------------------------------------------


def test_who_and_rooms_sort_case_insensitively(world):
    a, b, c, d = world.connected(4)
    for conn, nick in ((a, "carol"), (b, "Bob"), (c, "alice"), (d, "Dave")):
        world.hub.rename(conn.client, nick)
    assert world.hub.who(a.client) == ("lobby", ["alice", "Bob", "carol", "Dave"])
    world.hub.join(a.client, "zeta")
    world.hub.join(b.client, "Alpha")
    world.hub.join(c.client, "beta")
    assert world.hub.rooms() == [("Alpha", 1), ("beta", 1), ("lobby", 1), ("zeta", 1)]
    assert world.hub.who(a.client) == ("zeta", ["@carol"])


def test_lookup_by_id_digits_and_nick(world):
    a, b = world.connected(2)
    world.hub.rename(b.client, "bob")
    hub = world.hub
    assert hub.lookup(a.client.id) is a.client
    assert hub.lookup(str(b.client.id)) is b.client
    assert hub.lookup("BOB") is b.client
    assert hub.lookup("bob") is hub.find("Bob") is b.client
    assert hub.lookup(999) is None and hub.lookup("999") is None
    assert hub.lookup("nobody") is None and hub.find("nobody") is None
    assert hub.lookup("\u00b2") is None  # not an ASCII digit: looked up as a nick


def test_stats_count_traffic_including_departed_clients(world):
    a = world.connect()
    b = world.connect()
    received = [a.take(), b.take()]
    stats = world.hub.stats()
    assert stats["clients"] == 2 and stats["rooms"] == 1
    assert stats["lines_out"] == 3 + 1 + 3  # two greetings, "guest-2 joined" to a
    assert stats["bytes_out"] == sum(map(len, received))
    world.hub.join(a.client, "dev")
    world.hub.say(b.client, Said("guest-2", "x"))
    world.settle()  # sent before a leaves: the next test counts what is sent after
    world.end(a, Close("quit"))
    b.take()
    stats = world.hub.stats()
    assert (stats["clients"], stats["rooms"]) == (1, 1)
    # a: its join reply; b: "guest-1 left lobby" (the x reached nobody else)
    assert stats["lines_out"] == 7 + 2
    assert stats["lines_in"] == stats["bytes_in"] == 0  # counted by sessions, not the hub


def test_stats_count_what_is_sent_after_a_client_left(make_world):
    world = make_world(sendq_bytes=200_000)
    a = world.connect(sndbuf=SMALL_SNDBUF)  # its peer reads only once a has left
    for i in range(50):
        world.hub.send_to(a.client, Motd(f"{i:03d} {'x' * 1000}"))
    world.settle()
    world.hub.remove(a.client, None)  # what the session does when the user quits...
    world.flusher.finish(a.outbox, linger=True)  # ...then its backlog drains
    a.ended = True
    received = a.peer.read_to_eof()
    assert len(received) > 50_000
    assert world.hub.stats()["bytes_out"] == len(received)


def test_counters_for_the_metrics_agree_with_stats(world):
    """Hub.counters() (a metrics scrape) sums outside the lock what stats() sums inside it,
    plus messages, disconnects by reason and the sendq backlog."""
    a = world.connect()
    b = world.connect()
    a.take(), b.take()
    world.hub.say(a.client, Said(a.client.nick, "one"))
    world.hub.say(a.client, Said(a.client.nick, "two"))
    world.settle()
    b.take()
    world.end(a, Close("kicked", "spam"))
    world.settle()
    b.take()
    counters, stats = world.hub.counters(), world.hub.stats()
    assert {key: counters[key] for key in stats} == stats
    assert (counters["room_messages"], counters["private_messages"]) == (2, 0)  # a's, kept
    assert counters["disconnects"] == {"kicked": 1}
    assert counters["sendq_bytes"] == counters["sendq_max_bytes"] == 0
