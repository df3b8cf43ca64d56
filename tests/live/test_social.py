"""Being social on one node (SPEC §13, docs/protocol.md §13): ``/ignore`` and its list,
``/away`` and ``/back``, ``/whois``, ``/part``. Real chatd processes, real TCP clients; the
cluster's cases are in test_cluster_social.py."""

from __future__ import annotations

import re

from support.chatctl import ctl
from support.client import ChatClient
from test_accounts import PASSWORD, register
from test_accounts_missed import MISSED, missed_block, said, say


def nicked(server, *nicks: str) -> list[ChatClient]:
    """Clients in the lobby that took ``nicks``, each having read the others' arrivals."""
    clients = []
    for nick in nicks:
        client = server.connect()
        client.send_line(f"/nick {nick}")
        client.wait_for(f"*** you are now {nick}")
        client.nick = nick
        clients.append(client)
    for client in clients[:-1]:  # past every arrival and rename
        client.wait_for(lambda line: line.endswith(f" is now known as {nicks[-1]}"))
    for client in clients:
        client.sync()
    return clients


def test_ignore_holds_back_room_lines_actions_and_private_messages(chatd):
    server = chatd()
    alice, bob, carol = nicked(server, "alice", "bob", "carol")
    alice.send_line("/ignore BOB")  # nicks fold: bob is ignored however he is spelled
    alice.expect("*** ignoring BOB")
    bob.send_line("hello all")
    bob.send_line("/me waves")
    bob.send_line("/msg alice psst")
    bob.expect("*** -> alice: psst")  # the sender is not told: ignore is silent
    carol.send_line("carol here")
    alice.expect("<carol> carol here")
    carol.expect("<bob> hello all")
    carol.expect("* bob waves")
    bob.send_line("/nick bobby")  # a rename still shows (the room must make sense)...
    alice.expect("*** bob is now known as bobby")
    bob.send_line("as bobby")  # ...and the ignore was of the nick bob, not of the person
    alice.expect("<bobby> as bobby")
    bob.send_line("/nick bob")
    alice.expect("*** bobby is now known as bob")
    alice.send_line("/ignores")
    alice.expect("*** ignoring: BOB")
    alice.send_line("/unignore bob")
    alice.expect("*** no longer ignoring bob")
    bob.send_line("heard again")
    alice.expect("<bob> heard again")
    alice.send_line("/ignores")
    alice.expect("*** ignoring nobody")
    alice.expect_silence()


def test_ignore_refusals(chatd):
    server = chatd(limits={"rate": 1000, "burst": 1000})  # 70 lines: not paced for 13 s
    alice, _bob = nicked(server, "alice", "bob")
    for line, answer in [
        ("/ignore alice", "*** error: you cannot ignore yourself"),
        ("/ignore 9lives", "*** error: invalid nick 9lives"),
        ("/unignore bob", "*** error: you are not ignoring bob"),
        ("/ignore", "*** error: usage: /ignore NICK"),
    ]:
        alice.send_line(line)
        assert alice.read_line().startswith(answer), line
    alice.send_line("/ignore nobody-here")  # absent nicks may be ignored: they may come
    alice.expect("*** ignoring nobody-here")
    alice.send_line("/ignore Nobody-Here")
    alice.expect("*** error: you are ignoring Nobody-Here already")
    for n in range(63):
        alice.send_line(f"/ignore n{n}")
    for n in range(63):
        alice.expect(f"*** ignoring n{n}")
    alice.send_line("/ignore one-more")
    alice.expect("*** error: you ignore too many nicks (at most 64)")


def test_an_accounts_ignore_list_is_kept_and_covers_what_it_missed(chatd):
    """Logged in, the list is the account's: back after a disconnect, it still ignores bob,
    in the live room and in the what-you-missed block."""
    server = chatd()
    alice, bob, carol = nicked(server, "alice", "bob", "carol")
    register(alice, "alice")
    alice.send_line("/ignore bob")
    alice.expect("*** ignoring bob")
    alice.close()
    carol.wait_for("*** alice left lobby (connection closed)")
    say(bob, "lobby", "bob one")
    say(carol, "lobby", "carol one")
    say(bob, "lobby", "bob two")
    back = ChatClient().connect(server.port, greet=False)
    server.clients.append(back)
    back.send_line(f"PASS alice:{PASSWORD}")
    back.wait_for("*** logged in as alice")
    header, lines = missed_block(back)
    assert MISSED.fullmatch(header).groups() == ("1", "lobby")
    assert said(lines) == ["<carol> carol one"]
    back.send_line("/ignores")
    back.wait_for("*** ignoring: bob")
    back.send_line("/history")
    back.wait_for("*** history of lobby (1 line)")
    assert said([back.read_line()]) == ["<carol> carol one"]
    back.expect("*** end of history")
    bob.send_line("bob live")
    carol.send_line("carol live")
    back.expect("<carol> carol live")


def test_a_guests_ignores_join_its_accounts_at_login(chatd):
    server = chatd()
    alice, bob, _carol = nicked(server, "alice", "bob", "carol")
    register(alice, "alice")
    alice.send_line("/ignore carol")
    alice.expect("*** ignoring carol")
    alice.send_line("/logout")
    alice.wait_for(lambda line: line.startswith("*** logged out; you are now guest-"))
    alice.send_line("/ignore bob")  # as a guest
    alice.expect("*** ignoring bob")
    alice.send_line(f"/login alice {PASSWORD}")
    alice.wait_for("*** logged in as alice")
    alice.send_line("/ignores")
    alice.wait_for("*** ignoring: carol, bob")
    bob.send_line("/who")  # (bob's own round trip)
    bob.wait_for(lambda line: line.startswith("*** in lobby: "))


def test_away_is_told_to_senders_shown_by_who_and_cleared_by_back(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    alice.send_line("/away at lunch, back at 2")
    alice.expect("*** you are away: at lunch, back at 2")
    bob.send_line("/msg alice are you there?")
    bob.expect("*** -> alice: are you there?")
    bob.expect("*** alice is away: at lunch, back at 2")
    alice.expect("*bob* are you there?")  # the message is delivered all the same
    bob.send_line("/who")
    bob.expect("*** in lobby: alice (away), bob")
    alice.send_line("/back")
    alice.expect("*** you are back")
    alice.send_line("/back")
    alice.expect("*** error: you are not away")
    bob.send_line("/msg alice now?")
    bob.expect("*** -> alice: now?")
    bob.expect_silence()
    alice.expect("*bob* now?")
    alice.send_line("/away")
    alice.expect("*** you are away: away")


def test_whois_says_account_rooms_idle_and_away(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    register(alice, "alice")
    alice.join("dev")
    alice.send_line("/away gone fishing")
    alice.expect("*** you are away: gone fishing")
    bob.send_line("/whois ALICE")
    line = bob.wait_for(lambda ln: ln.startswith("*** alice: "))
    assert re.fullmatch(r"\*\*\* alice: account alice; in dev; idle \d+s; away: gone fishing",
                        line), line
    bob.send_line("/whois bob")
    line = bob.wait_for(lambda ln: ln.startswith("*** bob: "))
    assert re.fullmatch(r"\*\*\* bob: guest; in lobby; idle \d+s", line), line
    bob.send_line("/whois nobody")
    bob.expect("*** error: no such nick nobody")


def test_part_leaves_for_the_lobby(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    alice.join("dev")
    bob.join("dev")
    alice.wait_for("*** bob joined dev")
    alice.send_line("/part")
    alice.expect("*** you joined lobby (1 member)")
    bob.expect("*** alice left dev")
    alice.send_line("/part")
    alice.expect("*** error: you are in lobby; /quit leaves the server")


def test_an_upgrade_keeps_away_and_ignores(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    alice.send_line("/ignore bob")
    alice.expect("*** ignoring bob")
    alice.send_line("/away out")
    alice.expect("*** you are away: out")
    assert "upgraded" in ctl(server, "upgrade", timeout=60)
    bob.send_line("unheard")
    bob.send_line("/msg alice still there?")
    bob.expect("*** -> alice: still there?")
    bob.expect("*** alice is away: out")
    bob.send_line("/who")
    bob.expect("*** in lobby: alice (away), bob")
    alice.send_line("/ignores")
    alice.expect("*** ignoring: bob")
