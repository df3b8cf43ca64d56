"""The slash commands and chat lines of docs/protocol.md §1, through a real Session in-process.

Each client is a real :class:`chatd.core.session.Session` on a socketpair; a test hands it one
received line at a time (``conn.line(b"/who")``: what the reader loop does after framing and
flood control) and asserts the exact bytes every peer then has. ``/quit`` and the other ways a
connection ends are the reader loop's job: test_reader_loop.py.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs
from support.inproc import crlf

from chatd.text import NAME_RULE

HELP = crlf(
    "*** /nick NAME - change your nick",
    "*** /join ROOM - leave this room and enter ROOM",
    "*** /part - leave this room for the lobby",
    "*** /rooms - list the rooms",
    "*** /list - list the rooms with their topics",
    "*** /topic [TEXT] - show or set this room's topic",
    "*** /who - list the members of this room",
    "*** /msg NICK TEXT - send a private message",
    "*** /me TEXT - describe an action",
    "*** /away [TEXT] - say you are away (a /msg is answered)",
    "*** /back - say you are back",
    "*** /whois NICK - who NICK is, where, idle, away",
    "*** /ignore NICK - stop getting NICK's lines and messages",
    "*** /unignore NICK - get NICK's lines again",
    "*** /ignores - list whom you ignore",
    "*** /op NICK - make NICK an operator of this room",
    "*** /deop NICK - take operator status from NICK",
    "*** /voice NICK - let NICK speak in this moderated room",
    "*** /devoice NICK - take voice from NICK",
    "*** /kick NICK [REASON] - send NICK out of this room",
    "*** /ban NICK - keep NICK (or its account) out of this room",
    "*** /unban NICK - lift a ban",
    "*** /mode [+i|-i|+k KEY|-k|+m|-m|+t|-t] - show or change this room's modes",
    "*** /invite NICK - let NICK into this invite-only room",
    "*** /history [N] - show the last N lines of this room (20)",
    "*** /quit [REASON] - leave the server",
    "*** /help - show this list",
    "*** //TEXT - send a message that starts with /",
)


def nothing_for(*conns) -> bool:
    return all(conn.take() == b"" for conn in conns)


# -- chat lines -------------------------------------------------------------------------------


def test_message_goes_to_the_others_in_the_room(world):
    a, b, c = world.connected(3)
    a.line(b"hello there")
    assert b.take() == c.take() == b"<guest-1> hello there\r\n"
    assert nothing_for(a)


def test_message_text_is_sanitised(world):
    a, b = world.connected(2)
    a.line(b"\x1b[31mred\x07 \xff\ttab")
    assert b.take() == "<guest-1> [31mred \ufffd\ttab\r\n".encode()


def test_double_slash_sends_a_literal_slash(world):
    a, b = world.connected(2)
    a.line(b"//nick is a command")
    assert b.take() == b"<guest-1> /nick is a command\r\n"
    assert nothing_for(a)


def test_blank_lines_are_ignored(world):
    a, b = world.connected(2)
    for raw in (b"", b"   ", b"\t", b"\x01\x02"):
        a.line(raw)
    assert nothing_for(a, b)
    assert world.hub.stats()["lines_in"] == 0


def test_lines_in_counts_handled_lines(world):
    a, b = world.connected(2)
    a.line(b"one")
    a.line(b"/who")
    a.line(b"  ")
    assert world.hub.stats()["lines_in"] == 2


# -- /nick ------------------------------------------------------------------------------------


def test_nick_changes_and_tells_the_room(world):
    a, b = world.connected(2)
    with capture_logs() as logs:
        a.line(b"/NICK alice")  # the command word is case-insensitive
    assert a.take() == b"*** you are now alice\r\n"
    assert b.take() == b"*** guest-1 is now known as alice\r\n"
    b.line(b"hi")
    assert a.take() == b"<guest-2> hi\r\n"
    a.line(b"hi back")
    assert b.take() == b"<alice> hi back\r\n"
    changes = [(e["event"], e["old"], e["new"]) for e in logs]
    assert changes == [("nick_changed", "guest-1", "alice")]


@pytest.mark.parametrize("name", ["9lives", "-dash", "has space", "x" * 25, "ünï", "a.b"])
def test_nick_invalid(world, name):
    a, b = world.connected(2)
    a.line(f"/nick {name}".encode())
    assert a.take() == f"*** error: invalid nick {name} ({NAME_RULE})\r\n".encode()
    assert nothing_for(b)
    assert a.nick == "guest-1"


def test_nick_longest_and_odd_but_valid(world):
    (a,) = world.connected(1)
    for name in ("x" * 24, "_", "A-9_z"):
        a.line(f"/nick {name}".encode())
        assert a.take() == f"*** you are now {name}\r\n".encode()


def test_nick_in_use(world):
    a, b = world.connected(2)
    a.line(b"/nick alice")
    a.take(), b.take()
    b.line(b"/nick ALICE")
    assert b.take() == b"*** error: nick ALICE is already in use\r\n"
    assert nothing_for(a)


def test_nick_without_argument_is_a_usage_error(world):
    (a,) = world.connected(1)
    a.line(b"/nick")
    a.line(b"/nick    ")
    assert a.take() == crlf("*** error: usage: /nick NAME", "*** error: usage: /nick NAME")


# -- /join ------------------------------------------------------------------------------------


def test_join_with_and_without_hash(world):
    a, b, c = world.connected(3)
    with capture_logs() as logs:
        a.line(b"/join #dev")
    assert a.take() == b"*** you joined dev (1 member)\r\n"
    assert b.take() == c.take() == b"*** guest-1 left lobby\r\n"
    b.line(b"/join dev")
    assert b.take() == b"*** you joined dev (2 members)\r\n"
    assert a.take() == b"*** guest-2 joined dev\r\n"
    assert c.take() == b"*** guest-2 left lobby\r\n"
    a.line(b"in dev")
    assert b.take() == b"<guest-1> in dev\r\n"
    assert nothing_for(c)
    assert [(e["event"], e["room"]) for e in logs] == [("room_joined", "dev")]


def test_join_invalid_room(world):
    (a,) = world.connected(1)
    a.line(b"/join bad!room")
    a.line(b"/join ##dev")
    assert a.take() == crlf(f"*** error: invalid room bad!room ({NAME_RULE})",
                            f"*** error: invalid room #dev ({NAME_RULE})")


def test_join_current_room(world):
    a, b = world.connected(2)
    a.line(b"/join #Lobby")
    assert a.take() == b"*** error: you are already in lobby\r\n"
    assert nothing_for(b)


def test_join_without_argument(world):
    (a,) = world.connected(1)
    a.line(b"/join")
    assert a.take() == b"*** error: usage: /join ROOM\r\n"


# -- /rooms, /who -----------------------------------------------------------------------------


def test_rooms_lists_every_room_with_its_size(world):
    a, b, c = world.connected(3)
    b.line(b"/join zoo")
    c.line(b"/join Attic")
    a.take()
    a.line(b"/rooms")
    a.line(b"/rooms ignored arguments")
    listing = crlf("*** Attic (1 member)", "*** lobby (1 member)", "*** zoo (1 member)")
    assert a.take() == listing + listing


def test_who_lists_the_current_room(world):
    a, b, c = world.connected(3)
    b.line(b"/nick Bob")
    c.line(b"/nick al")
    a.take()
    a.line(b"/who")
    assert a.take() == b"*** in lobby: al, Bob, guest-1\r\n"
    c.line(b"/join side")
    c.take()
    c.line(b"/who")
    assert c.take() == b"*** in side: @al\r\n"


# -- /msg -------------------------------------------------------------------------------------


def test_msg_reaches_only_the_target(world):
    a, b, c = world.connected(3)
    b.line(b"/nick bob")
    c.line(b"/join elsewhere")
    a.take(), b.take(), c.take()
    a.line(b"/msg BOB   psst, over here ")
    assert a.take() == b"*** -> bob: psst, over here\r\n"  # the target's own spelling
    assert b.take() == b"*guest-1* psst, over here\r\n"
    assert nothing_for(c)


def test_msg_crosses_rooms(world):
    a, b = world.connected(2)
    b.line(b"/join far")
    a.take(), b.take()
    a.line(b"/msg guest-2 hello")
    assert b.take() == b"*guest-1* hello\r\n"


def test_msg_to_oneself(world):
    (a,) = world.connected(1)
    a.line(b"/msg guest-1 note")
    assert a.take() == crlf("*guest-1* note", "*** -> guest-1: note")


def test_msg_no_such_nick(world):
    (a,) = world.connected(1)
    a.line(b"/msg nobody hi")
    assert a.take() == b"*** error: no such nick nobody\r\n"


@pytest.mark.parametrize("raw", [b"/msg", b"/msg guest-2", b"/msg guest-2    "])
def test_msg_usage(world, raw):
    a, b = world.connected(2)
    a.line(raw)
    assert a.take() == b"*** error: usage: /msg NICK TEXT\r\n"
    assert nothing_for(b)


# -- /me --------------------------------------------------------------------------------------


def test_me_is_an_action_to_the_room(world):
    a, b = world.connected(2)
    a.line(b"/me waves")
    assert b.take() == b"* guest-1 waves\r\n"
    assert nothing_for(a)


def test_me_without_text(world):
    (a,) = world.connected(1)
    a.line(b"/me")
    assert a.take() == b"*** error: usage: /me TEXT\r\n"


# -- /help, unknown ---------------------------------------------------------------------------


def test_help_lists_every_command(world):
    (a,) = world.connected(1)
    a.line(b"/help")
    assert a.take() == HELP
    a.line(b"/HELP me")
    assert a.take() == HELP


@pytest.mark.parametrize("raw, word", [(b"/frob x y", "frob"), (b"/FROB", "frob"), (b"/", "")])
def test_unknown_command(world, raw, word):
    a, b = world.connected(2)
    a.line(raw)
    assert a.take() == f"*** error: unknown command /{word} (try /help)\r\n".encode()
    assert nothing_for(b)


# -- muted ------------------------------------------------------------------------------------


def test_muted_client_cannot_speak(world):
    a, b = world.connected(2)
    a.client.muted = True  # what the admin `mute` command sets
    a.line(b"hello")
    a.line(b"//slash")
    a.line(b"/me waves")
    a.line(b"/msg guest-2 psst")
    assert a.take() == crlf(*["*** error: you are muted"] * 4)
    assert nothing_for(b)


def test_muted_client_may_still_use_other_commands(world):
    a, b = world.connected(2)
    a.client.muted = True
    a.line(b"/nick quiet")
    a.line(b"/who")
    a.line(b"/msg nobody x")  # an unknown target is reported before the mute
    assert a.take() == crlf("*** you are now quiet", "*** in lobby: guest-2, quiet",
                            "*** error: no such nick nobody")
    assert b.take() == b"*** guest-1 is now known as quiet\r\n"
    a.client.muted = False
    a.line(b"back")
    assert b.take() == b"<quiet> back\r\n"


# -- message logging (docs/protocol.md §5) ----------------------------------------------------------------


def test_message_texts_are_not_logged_by_default(world):
    a, b = world.connected(2)
    with capture_logs() as logs:
        a.line(b"secret")
        a.line(b"/me secret")
        a.line(b"/msg guest-2 secret")
    assert [e for e in logs if "secret" in repr(e)] == []


def test_message_texts_are_logged_when_asked(make_world):
    world = make_world(log_messages=True)
    a, b = world.connected(2)
    with capture_logs() as logs:
        a.line(b"hello")
        a.line(b"/me waves")
        a.line(b"/msg guest-2 psst")
    fields = [{k: v for k, v in e.items() if k not in ("log_level", "client_id", "peer")}
              for e in logs]
    assert fields == [
        {"event": "message", "nick": "guest-1", "room": "lobby", "text": "hello"},
        {"event": "message", "nick": "guest-1", "room": "lobby", "text": "waves", "action": True},
        {"event": "message", "nick": "guest-1", "room": "lobby", "text": "psst", "to": "guest-2"},
    ]
    assert all(e["client_id"] == a.client.id for e in logs)
