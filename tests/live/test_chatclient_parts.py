"""``chat``, the terminal client (docs/protocol.md §15, SPEC §15): its pure parts as tables.

The renderer (time stamp, printable text, colour by the shape of a line, colour only on a
terminal without NO_COLOR), the reconnect backoff, and what the server's lines mean (the
identity to restore, lines that end or refuse a session, the line splitter). The real
``python -m chat`` against a real chatd is tested in test_chatclient.py.
"""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from chat.backoff import Backoff
from chat.protocol import Identity, LineSplitter, final_words, is_quit, refusal
from chat.render import NOTICE, RESET, nick_colour, render, use_colour

# -- the renderer ------------------------------------------------------------------------------

AT = datetime(2026, 12, 6, 9, 5, 59)


@pytest.mark.parametrize("line, plain", [
    ("<bob> hi there", "09:05 <bob> hi there"),
    ("*** you are now alice", "09:05 *** you are now alice"),
    ("tab\tkept, \x1b[31mescape\x07 and \u202ebidi\u2066 gone\x9b",
     "09:05 tab\tkept, [31mescape and bidi gone"),
])
def test_render_without_colour_is_time_and_printable_text(line, plain):
    assert render(line, AT, colour=False) == plain


def test_render_colours_by_the_shape_of_the_line():
    bob = nick_colour("bob")
    table = {
        "<bob> hi": f"<{bob}bob{RESET}> hi",
        "* bob waves": f"* {bob}bob{RESET} waves",
        "*bob* psst": f"\x1b[1m*{bob}bob{RESET}\x1b[1m*{RESET} psst",
        "*** bob joined lobby": f"{NOTICE}*** bob joined lobby{RESET}",
        "*** error: no such nick x": f"\x1b[31m*** error: no such nick x{RESET}",
        "plain text": "plain text",
    }
    for line, coloured in table.items():
        assert render(line, AT, colour=True) == f"\x1b[2m09:05{RESET} {coloured}", line
    assert nick_colour("Bob") == bob, "one colour per nick, whatever its case"
    assert "\x1b[31m" not in {nick_colour(f"n{i}") for i in range(100)}, "red is for errors"


@pytest.mark.parametrize("tty, environ, colour", [
    (True, {}, True),
    (True, {"NO_COLOR": "1"}, False),
    (True, {"NO_COLOR": "anything"}, False),
    (True, {"NO_COLOR": ""}, True),  # no-color.org: set and not empty
    (False, {}, False),
])
def test_colour_only_on_a_terminal_without_no_color(tty, environ, colour):
    assert use_colour(tty, environ) is colour


# -- the backoff -------------------------------------------------------------------------------


def test_backoff_doubles_to_a_cap_with_jitter_and_restarts_after_a_lasting_connection():
    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]):
        assert base * 0.8 - 0.05 <= delay <= min(30, base * 1.2 + 0.05), delays
    assert len({Backoff(rng=random.Random(s)).next_delay() for s in range(20)}) > 1, \
        "jitter: clients dropped together do not all come back together"
    backoff.connected(lasted=2.0)
    assert backoff.next_delay() >= 24, "a connection that did not last keeps the delay"
    backoff.connected(lasted=60.0)
    assert backoff.next_delay() <= 0.6, "one that lasted starts again from 0.5 s"


# -- what the server's lines mean --------------------------------------------------------------


def test_identity_follows_the_servers_replies_and_restores_nick_and_room():
    me = Identity(wanted_nick="alice", wanted_room="#dev")
    assert me.feed("*** welcome to chatd") is None
    assert me.feed("*** you are guest-3") == "greeted"
    assert me.restore() == ["/nick alice", "/join #dev"]
    assert me.feed("*** Type /help for the list of commands.") is None
    assert me.feed("*** you are now alice") is None
    assert me.feed("*** alice joined lobby") is None  # not a reply
    assert me.feed("*** you joined dev (2 members)") == "restored"
    assert (me.nick, me.room) == ("alice", "dev")
    # later in the session the user renames and moves: those are what a reconnect restores
    me.feed("<bob> *** you are now mallory")  # a user's line never counts
    me.feed("*** you are now alice2")
    me.feed("*** you joined ops (1 member)")
    me.reset()
    assert me.feed("*** you are guest-1") == "greeted"
    assert me.restore() == ["/nick alice2", "/join ops"]
    assert me.feed("*** error: nick alice2 is already in use") is None  # the nick's reply
    assert me.feed("*** you joined ops (1 member)") == "restored"
    assert (me.nick, me.room, me.wanted_nick) == ("guest-1", "ops", "alice2")


def test_identity_restores_nothing_a_user_did_not_choose():
    me = Identity()
    me.feed("*** you are guest-7")
    assert me.restore() == [], "a guest nick is not taken back: the server hands out another"
    me = Identity(wanted_room="Lobby")
    me.feed("*** you are guest-1")
    assert me.restore() == [], "the greeting puts us in the lobby already"


def test_identity_logs_in_again_on_every_connection_and_in_a_closed_servers_greeting():
    me = Identity(wanted_room="dev", login=("alice", "s3cret-pw"))
    assert me.feed("*** you are guest-4") == "greeted"
    assert me.restore() == ["/login alice s3cret-pw", "/join dev"]
    assert me.feed("*** guest-9 joined lobby") is None  # not a reply
    assert me.feed("*** logged in as alice") is None
    assert me.feed("*** you joined dev (1 member)") == "restored"
    assert (me.nick, me.room) == ("alice", "dev")
    me.reset()  # a closed server: no nick in the greeting
    assert me.feed("*** welcome to team") is None
    assert me.feed("*** this server needs an account: /login NICK PASSWORD") == "greeted"
    assert me.restore() == ["/login alice s3cret-pw", "/join dev"]
    assert me.feed("*** error: login failed") is None  # the login's reply: shown, not fatal
    assert me.feed("*** error: login required: /login NICK PASSWORD") == "restored"


def test_server_lines_that_end_a_session_or_refuse_one():
    assert final_words("*** you were kicked: spam") == "you were kicked"
    assert final_words("*** error: banned (abuse; until 2026-12-07 00:00:00 UTC)") == "banned"
    assert final_words("*** bob was kicked (spam)") is None
    assert final_words("*** server shutting down") is None  # a restart: come back
    assert refusal("*** error: server full") == "server full"
    assert refusal("*** welcome to chatd") is None
    assert [is_quit(t) for t in ["/quit", "/QUIT bye", "/quit\tnow", "//quit", "/quitter"]] == \
        [True, True, True, False, False]


def test_line_splitter_takes_crlf_and_lf_and_keeps_the_bytes():
    lines = LineSplitter()
    assert lines.feed(b"*** a\r\n<b> \xc3") == [b"*** a"]
    assert lines.feed(b"\xa9\r") == []
    assert lines.feed(b"\nc\n") == [b"<b> \xc3\xa9", b"c"]
    assert lines.feed(b"partial\r") == [] and lines.rest() == b"partial"
    capped = LineSplitter(max_line=4)
    assert capped.feed(b"0123456789") == [b"0123", b"4567"], "a server that never ends a line"
    assert capped.feed(b"\n") == [b"89"]
