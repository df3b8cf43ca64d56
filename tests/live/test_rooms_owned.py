"""Rooms that belong to someone, on one node (SPEC §13, docs/protocol.md §13.4): the
private-room recipe, a stranger refused at every door, moderated rooms, topics, kicks,
operators, and a registered room's state across a restart and an upgrade. Real chatd
processes, real TCP clients, chatctl as a real process."""

from __future__ import annotations

import json

from support.chatctl import ctl
from support.client import ChatClient
from test_accounts import PASSWORD, register
from test_social import nicked


def logged_in(server, nick: str) -> ChatClient:
    """A new connection logged in to the account ``nick`` (made already)."""
    client = server.connect()
    client.send_line(f"/login {nick} {PASSWORD}")
    client.wait_for(f"*** logged in as {nick}")
    client.nick = nick
    client.sync()
    return client


def refused(client: ChatClient, line: str, answer: str) -> None:
    """``line`` is answered with the error ``answer`` (other lines may come first)."""
    client.send_line(line)
    got = client.wait_for(lambda got: got.startswith("*** error: "))
    assert got == f"*** error: {answer}", got


def test_the_private_room_recipe_and_a_stranger_refused_at_every_door(chatd):
    """Four commands make a private room: /join, /register-room, /mode +i, /invite."""
    server = chatd()
    alice, bob, eve = nicked(server, "alice", "bob", "eve")
    register(alice, "alice")
    register(eve, "eve")
    alice.join("secret")
    alice.send_line("/register-room")
    alice.expect("*** secret is registered to alice")
    alice.send_line("/mode +i")
    alice.expect("*** alice set mode +i on secret")
    alice.send_line("/invite bob")
    alice.expect("*** invited bob to secret")
    bob.wait_for("*** alice invited you to secret (/join secret)")
    assert bob.join("secret") == 2
    refused(eve, "/join secret", "secret is invite-only")
    alice.send_line("/mode +k sesame")
    alice.wait_for("*** alice set mode +k on secret")
    alice.send_line("/invite eve")
    alice.expect("*** invited eve to secret")
    refused(eve, "/join secret", "wrong key for secret")
    refused(eve, "/join secret guess", "wrong key for secret")
    alice.send_line("/ban eve")
    alice.wait_for("*** alice banned eve from secret")
    refused(eve, "/join secret sesame", "you are banned from secret")
    eve.close()  # back with another nick, logged in: the ban is the account's
    again = logged_in(server, "eve")
    refused(again, "/join secret sesame", "you are banned from secret")
    alice.send_line("/unban eve")
    alice.wait_for("*** alice lifted the ban on eve in secret")
    assert again.join("secret sesame") == 3


def test_a_moderated_room_hears_only_operators_and_voices(chatd):
    server = chatd()
    alice, bob, carol = nicked(server, "alice", "bob", "carol")
    alice.join("stage")
    bob.join("stage")
    carol.join("stage")
    alice.send_line("/mode +m")
    alice.wait_for("*** alice set mode +m on stage")
    refused(bob, "from the floor", "stage is moderated: only its operators and voiced "
                                   "members speak")
    refused(bob, "/me heckles", "stage is moderated: only its operators and voiced members "
                                "speak")
    alice.send_line("/voice bob")
    carol.wait_for("*** alice gave voice to bob")
    bob.send_line("now I may")
    carol.wait_for("<bob> now I may")
    carol.send_line("/who")
    carol.wait_for("*** in stage: @alice, +bob, carol")
    alice.send_line("/mode")
    alice.wait_for("*** modes of stage: +mn")  # (n: every room has it from the start)
    refused(carol, "/mode -m", "you are not an operator of stage")


def test_topics_are_shown_to_joiners_and_kept_to_operators_by_plus_t(chatd):
    server = chatd()
    alice, bob, carol = nicked(server, "alice", "bob", "carol")
    alice.join("dev")
    bob.join("dev")
    bob.send_line("/topic")
    bob.expect("*** dev has no topic")
    bob.send_line("/topic release on friday")  # a member may, the room is not +t
    alice.wait_for("*** bob set the topic: release on friday")
    bob.expect("*** bob set the topic: release on friday")
    carol.send_line("/join dev")
    carol.wait_for("*** you joined dev (3 members)")
    carol.expect("*** topic of dev: release on friday")
    alice.send_line("/mode +t")
    alice.wait_for("*** alice set mode +t on dev")
    refused(bob, "/topic mine now", "you are not an operator of dev")
    carol.send_line("/list")
    carol.wait_for("*** dev (3 members): release on friday")


def test_an_operator_kicks_a_member_back_to_the_lobby(chatd):
    server = chatd()
    alice, bob, carol = nicked(server, "alice", "bob", "carol")
    for client in (alice, bob, carol):
        client.join("dev")
    refused(bob, "/kick carol", "you are not an operator of dev")
    alice.send_line("/kick bob spamming")
    bob.wait_for("*** you were kicked from dev by alice: spamming")
    bob.expect("*** you joined lobby (1 member)")
    carol.wait_for("*** bob was kicked from dev by alice: spamming")
    alice.send_line("/op carol")
    carol.wait_for("*** alice gave operator status to carol")
    carol.send_line("/kick alice")
    alice.wait_for("*** you were kicked from dev by carol: no reason given")
    alice.send_line("/join dev")  # the maker's operator status ended when it left
    alice.wait_for(lambda line: line.startswith("*** you joined dev"))
    refused(alice, "/mode +i", "you are not an operator of dev")


def test_a_registered_room_keeps_its_state_across_a_restart_and_an_upgrade(chatd, tmp_path):
    state = str(tmp_path / "state")
    server = chatd(args=["--state-dir", state])
    alice, bob = nicked(server, "alice", "bob")
    register(alice, "alice")
    register(bob, "bob")
    alice.join("dev")
    alice.send_line("/register-room")
    alice.expect("*** dev is registered to alice")
    alice.send_line("/topic our room")
    alice.expect("*** alice set the topic: our room")
    bob.join("dev")
    alice.send_line("/op bob")
    alice.wait_for("*** alice gave operator status to bob")
    alice.send_line("/mode +t")
    alice.wait_for("*** alice set mode +t on dev")
    assert "upgraded" in ctl(server, "upgrade", timeout=60)
    bob.send_line("/who")
    bob.wait_for("*** in dev: @alice, @bob")
    server.terminate()
    server = chatd(args=["--state-dir", state])
    watcher = server.connect()
    watcher.send_line("/rooms")
    watcher.wait_for("*** dev (0 members)")  # a registered room exists while empty
    bob = server.connect()  # logged in, it is back in dev, told the topic
    bob.send_line(f"/login bob {PASSWORD}")
    bob.wait_for("*** you joined dev (1 member)")
    bob.expect("*** topic of dev: our room")
    bob.send_line("/mode")
    bob.expect("*** modes of dev: +nt")
    bob.send_line("/topic still ours")  # an operator by account, after the restart
    bob.expect("*** bob set the topic: still ours")
    alice = logged_in(server, "alice")
    alice.send_line("/topic")
    alice.wait_for("*** topic of dev: still ours")


def test_an_upgrade_keeps_an_unregistered_rooms_state(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    alice.join("dev")
    bob.join("dev")
    alice.send_line("/topic kept")
    alice.wait_for("*** alice set the topic: kept")
    alice.send_line("/mode +m")
    alice.wait_for("*** alice set mode +m on dev")
    assert "upgraded" in ctl(server, "upgrade", timeout=60)
    bob.send_line("/topic")
    bob.wait_for("*** topic of dev: kept")
    refused(bob, "still quiet?", "dev is moderated: only its operators and voiced members speak")
    alice.send_line("/mode -m")  # still its operator: it made the room
    bob.wait_for("*** alice set mode -m on dev")


def test_registering_a_room_needs_an_account_and_an_operator(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    register(bob, "bob")
    alice.join("dev")
    refused(alice, "/register-room", "log in to register a room: /login NICK PASSWORD")
    bob.join("dev")
    refused(bob, "/register-room", "you are not an operator of dev")
    bob.send_line("/part")
    bob.wait_for(lambda line: line.startswith("*** you joined lobby"))
    refused(bob, "/register-room", "lobby cannot be registered")


def test_chatctl_overrides_any_room(chatd):
    server = chatd()
    alice, bob = nicked(server, "alice", "bob")
    alice.join("dev")
    bob.join("dev")
    alice.send_line("/mode +k sesame")
    alice.wait_for("*** alice set mode +k on dev")
    shown = json.loads(ctl(server, "--json", "room", "show", "dev"))
    assert (shown["modes"], shown["members"], shown["registered"]) == ("kn", ["alice", "bob"],
                                                                       False), shown
    assert "sesame" not in json.dumps(shown)  # a key is never shown
    ctl(server, "room", "op", "dev", "bob")
    bob.wait_for("*** [admin] gave operator status to bob")
    ctl(server, "room", "topic", "dev", "set by the operator")
    alice.wait_for("*** [admin] set the topic: set by the operator")
    ctl(server, "room", "mode", "--", "dev", "-k")
    bob.wait_for("*** [admin] set mode -k on dev")
    out = ctl(server, "room", "show", "dev")
    assert "set by the operator" in out and "+k" not in out, out
    ctl(server, "room", "deop", "dev", "bob")
    bob.wait_for("*** [admin] took operator status from bob")
    ctl(server, "room", "delete", "--yes", "dev")
    shown = json.loads(ctl(server, "--json", "room", "show", "dev"))
    assert (shown["topic"], shown["modes"], shown["ops"]) == ("", "n", []), shown
    refused(alice, "/mode +i", "you are not an operator of dev")  # its maker's status too
    assert "no such room nowhere" in ctl(server, "room", "show", "nowhere", status=1)
    assert "sesame" not in "\n".join(server.lines)  # nor logged


def test_deleting_a_founders_account_unregisters_its_rooms(chatd):
    """A new account of the same name must not inherit the room."""
    server = chatd()
    (alice,) = nicked(server, "alice")
    register(alice, "alice")
    alice.join("dev")
    alice.send_line("/register-room")
    alice.expect("*** dev is registered to alice")
    alice.send_line("/topic hers")
    alice.expect("*** alice set the topic: hers")
    deleted = json.loads(ctl(server, "--json", "account", "delete", "--yes", "alice"))
    assert deleted["rooms_unregistered"] == ["dev"], deleted
    alice.expect_closed()
    assert "no such room dev" in ctl(server, "room", "show", "dev", status=1)  # empty: gone
    again = server.connect()
    register(again, "alice")  # the name, made anew
    again.join("dev")
    again.send_line("/topic")
    again.expect("*** dev has no topic")
