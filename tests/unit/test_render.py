"""The line renderer (render.py) as a table: every event's exact text, and the close reasons."""

from __future__ import annotations

import dataclasses

import pytest

from chatd.core import closing
from chatd.core import events as ev
from chatd.line import render

TABLE = [
    (ev.Said("bob", "hi there"), "<bob> hi there"),
    (ev.Acted("bob", "waves"), "* bob waves"),
    (ev.Noticed("bob", "brb"), "-bob- brb"),
    (ev.Joined("bob", "lobby"), "*** bob joined lobby"),
    (ev.Left("bob", "games"), "*** bob left games"),
    (ev.Left("bob", "games", "quit: bye"), "*** bob left games (quit: bye)"),
    (ev.Quit("bob", "games", "quit: bye"), "*** bob left games (quit: bye)"),
    (ev.Kicked("bob", "spam"), "*** bob was kicked (spam)"),
    (ev.Renamed("guest-1", "bob"), "*** guest-1 is now known as bob"),
    (ev.Announcement("maintenance at noon"), "*** [admin] maintenance at noon"),
    (ev.Welcome("chatd"), "*** welcome to chatd"),
    (ev.YouAre("guest-3"), "*** you are guest-3"),
    (ev.Motd("Type /help"), "*** Type /help"),
    (ev.NickChanged("bob"), "*** you are now bob"),
    (ev.NickUnchanged("bob"), "*** you are already bob"),
    (ev.NickRevoked("bob", "guest-7"), "*** your nick bob was taken while this server was cut off "
                                       "from the cluster; you are now guest-7"),
    (ev.RoomEntered("games", 1), "*** you joined games (1 member)"),
    (ev.RoomEntered("games", 2), "*** you joined games (2 members)"),
    (ev.RoomListed("lobby", 0), "*** lobby (0 members)"),
    (ev.RoomListed("lobby", 1), "*** lobby (1 member)"),
    (ev.Members("lobby", ("alice", "bob")), "*** in lobby: alice, bob"),
    (ev.PrivateMessage("alice", "psst"), "*alice* psst"),
    (ev.PrivateMessage("alice", "psst", "c0ffee1", "+draft/reply=x"), "*alice* psst"),
    (ev.Tagged("alice", "c0ffee2", "+typing=active"), ""),  # IRC's TAGMSG: nothing to read
    (ev.PrivateTagged("alice", "c0ffee3", "+typing=active"), ""),
    (ev.PrivateSent("bob", "psst"), "*** -> bob: psst"),
    (ev.IsAway("bob", "at lunch"), "*** bob is away: at lunch"),
    (ev.AwaySet("at lunch"), "*** you are away: at lunch"),
    (ev.Back(), "*** you are back"),
    (ev.AwayNoticed("bob", "at lunch"), "*** bob is away: at lunch"),
    (ev.AwayNoticed("bob", None), "*** bob is back"),
    (ev.WhoIs("bob", "bob", ("dev", "lobby"), 65, "at lunch"),
     "*** bob: account bob; in dev, lobby; idle 1m 5s; away: at lunch"),
    (ev.WhoIs("guest-3", None, ("lobby",), 3700, None), "*** guest-3: guest; in lobby; idle 1h 1m"),
    (ev.WhoIs("eve", None, ("dev",), None, None, "node2"), "*** eve: guest; in dev; on node2"),
    (ev.Ignoring("eve", True), "*** ignoring eve"),
    (ev.Ignoring("eve", False), "*** no longer ignoring eve"),
    (ev.Ignores(("eve", "mallory")), "*** ignoring: eve, mallory"),
    (ev.Ignores(()), "*** ignoring nobody"),
    (ev.TopicSet("bob", "dev", "release day"), "*** bob set the topic: release day"),
    (ev.TopicIs("dev", "release day"), "*** topic of dev: release day"),
    (ev.NoTopic("dev"), "*** dev has no topic"),
    (ev.RoomKicked("eve", "dev", "bob", "spam"), "*** eve was kicked from dev by bob: spam"),
    (ev.KickedFrom("dev", "bob", "spam"), "*** you were kicked from dev by bob: spam"),
    (ev.Granted("bob", "dev", "operator status", "carol"), "*** bob gave operator status to carol"),
    (ev.Revoked("bob", "dev", "voice", "carol"), "*** bob took voice from carol"),
    (ev.BanSet("bob", "dev", "eve"), "*** bob banned eve from dev"),
    (ev.BanLifted("bob", "dev", "eve"), "*** bob lifted the ban on eve in dev"),
    (ev.ModeSet("bob", "dev", "+i"), "*** bob set mode +i on dev"),
    (ev.Modes("dev", "ikt"), "*** modes of dev: +ikt"),
    (ev.Modes("dev", ""), "*** dev has no modes"),
    (ev.InvitedTo("bob", "dev"), "*** bob invited you to dev (/join dev)"),
    (ev.Inviting("carol", "dev"), "*** invited carol to dev"),
    (ev.RoomRegistered("dev", "bob"), "*** dev is registered to bob"),
    (ev.RoomListedTopic("dev", 2, "release day"), "*** dev (2 members): release day"),
    (ev.RoomListedTopic("dev", 1, ""), "*** dev (1 member)"),
    (ev.HelpLine("/who", "list the members of this room"), "*** /who - list the members of this room"),
    (ev.Error("no such nick x"), "*** error: no such nick x"),
    (ev.YouWereKicked("spam"), "*** you were kicked: spam"),
    (ev.Banned(), "*** error: banned"),
    (ev.Banned("spam wave"), "*** error: banned (spam wave)"),
    (ev.Banned("spam", "2026-12-03 12:00:00 UTC"), "*** error: banned (spam; until 2026-12-03 12:00:00 UTC)"),
    (ev.Banned("", "2026-12-03 12:00:00 UTC"), "*** error: banned (until 2026-12-03 12:00:00 UTC)"),
    (ev.YouAreMuted(True), "*** you are muted"),
    (ev.YouAreMuted(False), "*** you are no longer muted"),
    (ev.ServerShutdown(), "*** server shutting down"),
    (ev.ServerRestarting(), "*** server restarting, please reconnect"),
    (ev.Bye(), "*** bye"),
    (ev.LoginRequired(), "*** this server needs an account: /login NICK PASSWORD"),
    (ev.Registered("alice"), "*** registered alice"),
    (ev.LoggedIn("alice"), "*** logged in as alice"),
    (ev.LoggedOut("guest-4"), "*** logged out; you are now guest-4"),
    (ev.NickReclaimed("alice", "guest-9"), "*** you are now guest-9 (alice logged in)"),
    (ev.PasswordChanged(), "*** password changed"),
    (ev.LoggedInElsewhere(), "*** logged in elsewhere"),
    (ev.AccountDisabled(), "*** your account was disabled"),
]


@pytest.mark.parametrize("event, text", TABLE)
def test_every_event_renders_exactly(event, text):
    assert render.text(event) == text
    assert render.line(event) == (text.encode() + b"\r\n" if text else b"")


def test_the_table_covers_every_event_class():
    rendered = {type(event) for event, _ in TABLE}
    defined = {obj for obj in vars(ev).values()
               if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == ev.__name__}
    assert defined == rendered


def test_lines_is_one_buffer_in_order():
    assert render.lines([ev.Welcome("x"), ev.YouAre("é")]) == "*** welcome to x\r\n*** you are é\r\n".encode()
    assert render.lines([]) == b""


@pytest.mark.parametrize(
    "reason, text, farewell, event",
    [
        (closing.Close("closed"), "connection closed", "*** bob left lobby (connection closed)", None),
        (closing.Close("quit"), "quit", "*** bob left lobby (quit)", None),
        (closing.Close("quit", "see you"), "quit: see you", "*** bob left lobby (quit: see you)", None),
        (closing.Close("kicked", "spam"), "kicked: spam", "*** bob was kicked (spam)", "client_kicked"),
        (closing.SENDQ_EXCEEDED, "sendq exceeded", "*** bob left lobby (sendq exceeded)", "sendq_exceeded"),
        (closing.EXCESS_FLOOD, "excess flood", "*** bob left lobby (excess flood)", None),
        (closing.SHUTDOWN, "server shutting down", None, None),
    ],
)
def test_close_reasons(reason, text, farewell, event):
    assert reason.text == text
    assert reason.event == event
    said = reason.farewell("bob", "lobby")
    assert (render.text(said) if said is not None else None) == farewell
    assert reason.farewell("bob", None) is None  # never in a room: nobody to tell


def test_an_unknown_close_kind_is_a_bug_caught_at_once():
    with pytest.raises(ValueError):
        closing.Close("kickd")
