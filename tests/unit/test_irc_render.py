"""IRC's renderer (chatd/irc/render.py, protocol.py): room lines once per room for every IRC
member, and what one client is told, addressed to its nick."""

from __future__ import annotations

from types import SimpleNamespace

from chatd.core import events as ev
from chatd.core.tail import Entry
from chatd.irc.protocol import IrcProtocol, irc_server_name, room_renderers
from chatd.irc.render import room_renderer

ROOM = [
    (ev.Said("bob", "hi"), ":bob!bob@chatd PRIVMSG #dev :hi"),
    (ev.Acted("bob", "waves"), ":bob!bob@chatd PRIVMSG #dev :\x01ACTION waves\x01"),
    (ev.Joined("bob", "dev"), ":bob!bob@chatd JOIN #dev"),
    (ev.Left("bob", "dev"), ":bob!bob@chatd PART #dev"),
    (ev.Left("bob", "dev", "later"), ":bob!bob@chatd PART #dev :later"),
    (ev.Quit("bob", "dev", "quit: bye"), ":bob!bob@chatd QUIT :quit: bye"),
    (ev.Kicked("bob", "spam"), ":bob!bob@chatd QUIT :kicked: spam"),
    (ev.Renamed("bob", "rob"), ":bob!bob@chatd NICK :rob"),
    (ev.Announcement("noon"), ":srv NOTICE #dev :[admin] noon"),
    (ev.TopicSet("bob", "dev", "plans"), ":bob!bob@chatd TOPIC #dev :plans"),
    (ev.TopicSet("[admin]", "dev", "plans"), ":srv TOPIC #dev :plans"),
    (ev.RoomKicked("al", "dev", "bob", "out"), ":bob!bob@chatd KICK #dev al :out"),
    (ev.Granted("bob", "dev", "operator status", "al"), ":bob!bob@chatd MODE #dev +o al"),
    (ev.Revoked("bob", "dev", "voice", "al"), ":bob!bob@chatd MODE #dev -v al"),
    (ev.BanSet("bob", "dev", "al"), ":bob!bob@chatd MODE #dev +b al!*@*"),
    (ev.ModeSet("bob", "dev", "+i"), ":bob!bob@chatd MODE #dev +i"),
]


def test_room_lines_name_their_channel():
    render = room_renderer("dev", "srv")
    for event, text in ROOM:
        assert render(event) == text.encode() + b"\r\n", event


def test_a_line_past_512_bytes_is_cut_on_a_character():
    data = room_renderer("dev", "srv")(ev.Said("bob", "é" * 600))
    assert len(data) <= 512 and data.endswith(b"\r\n")
    data[:-2].decode("utf-8")  # whole characters only


def protocol(nick: str = "alice", caps=()) -> IrcProtocol:
    settings = SimpleNamespace(config=SimpleNamespace(server_name="my server"))
    irc = IrcProtocol(room_renderers(settings))
    irc.nick, irc.caps = nick, frozenset(caps)
    return irc


def test_what_one_client_is_told_names_it():
    irc = protocol()
    assert irc.line(ev.PrivateMessage("bob", "psst")) == b":bob!bob@chatd PRIVMSG alice :psst\r\n"
    assert irc.line(ev.RoomEntered("dev", 3)) == b":alice!alice@chatd JOIN #dev\r\n"
    assert irc.line(ev.TopicIs("dev", "plans", "bob")) == \
        b":my-server 332 alice #dev :plans\r\n:my-server 333 alice #dev bob :0\r\n"
    assert irc.line(ev.KickedFrom("dev", "bob", "out")) == b":bob!bob@chatd KICK #dev alice :out\r\n"
    assert irc.line(ev.Error("nope")) == b":my-server NOTICE alice :*** error: nope\r\n"
    assert irc.line(ev.YouAre("alice")) == b""  # (001 says it)
    assert irc.line(ev.ServerShutdown()) == b"ERROR :Closing Link: server shutting down\r\n"
    # a reply IRC has no form for reads as the line protocol's text, as a notice
    assert irc.line(ev.Ignores(("bob",))) == b":my-server NOTICE alice :*** ignoring: bob\r\n"


def test_a_nick_change_is_told_from_the_old_nick():
    irc = protocol("alice")
    assert irc.line(ev.NickChanged("alicia")) == b":alice!alice@chatd NICK :alicia\r\n"
    assert irc.nick == "alicia"
    assert irc.line(ev.NickReclaimed("alicia", "guest-3")) == \
        b":alicia!alicia@chatd NICK :guest-3\r\n"


def test_history_is_timed_for_server_time_clients_only():
    entry = Entry(1.5, "dev", "say", "bob", "hi")
    assert protocol().history("dev", [entry]) == b":bob!bob@chatd PRIVMSG #dev :hi\r\n"
    assert protocol(caps=("server-time",)).history("dev", [entry]) == \
        b"@time=1970-01-01T00:00:01.500Z :bob!bob@chatd PRIVMSG #dev :hi\r\n"


def test_account_tag_names_the_speakers_account_in_rooms_and_private_lines():
    """The room renderer for account-tag clients tags a logged-in speaker's lines (and those
    alone); with server-time too, both tags in one; what one client is told likewise. A line
    names its speaker's account itself (it may come from another node): chat lines, joins,
    parts, topics, renames and invitations."""
    irc = protocol(caps=("account-tag",))
    said = ev.Said("bob", "hi", "c0ffee", "", "bobacct")
    tagged = irc.rooms_for(irc.caps).renderer("dev")
    assert tagged(said) == b"@account=bobacct :bob!bob@chatd PRIVMSG #dev :hi\r\n"
    assert tagged(ev.Said("carol", "hi")) == b":carol!carol@chatd PRIVMSG #dev :hi\r\n"
    assert tagged(ev.Announcement("hello")).startswith(b":my-server NOTICE #dev")
    both = irc.rooms_for({"account-tag", "server-time"}).renderer("dev")(said)
    assert both.startswith(b"@time=") and b";account=bobacct :bob!bob@chatd PRIVMSG" in both
    assert irc.rooms_for(()) is irc.speaks and irc.speaks.renderer("dev")(said)[:1] == b":"
    assert tagged(ev.Said("bob", "looked up by nick? no")).startswith(b":bob!")
    assert tagged(ev.Joined("bob", "dev", "bobacct")) == \
        b"@account=bobacct :bob!bob@chatd JOIN #dev\r\n"
    assert tagged(ev.Joined("bob", "dev")) == b":bob!bob@chatd JOIN #dev\r\n"
    assert tagged(ev.Left("bob", "dev", "bye", "bobacct")).startswith(b"@account=bobacct :bob!")
    assert tagged(ev.Renamed("bob", "bobby", None, "bobacct")) == \
        b"@account=bobacct :bob!bob@chatd NICK :bobby\r\n"
    assert tagged(ev.TopicSet("bob", "dev", "t", "bobacct")).startswith(b"@account=bobacct :bob!")
    assert irc.line(ev.PrivateMessage("bob", "psst", "", "", "bobacct")) == \
        b"@account=bobacct :bob!bob@chatd PRIVMSG alice :psst\r\n"
    assert irc.line(ev.InvitedTo("bob", "dev", "bobacct")) == \
        b"@account=bobacct :bob!bob@chatd INVITE alice #dev\r\n"


def test_server_names_are_one_word():
    assert irc_server_name("chat example org") == "chat-example-org"
    assert irc_server_name("  ") == "chatd"


def test_mode_changes_take_their_arguments_in_order():
    from chatd.irc.channels import mode_changes

    assert mode_changes("+o-v", ["al", "bo"]) == [("+o", "al"), ("-v", "bo")]
    assert mode_changes("+ik", ["key"]) == [("+i", None), ("+k", "key")]
    assert mode_changes("-k+t", ["ignored"]) == [("-k", None), ("+t", None)]
    assert mode_changes("+b", []) == [("+b", None)]  # a list query
    assert len(mode_changes("+" + "i" * 50, [])) == 8  # at most 8 changes a MODE


def test_a_bad_handover_state_is_taken_as_none():
    """An upgrade's state is input: an IRC reader restores what is well formed and ignores
    the rest, without raising."""
    from chatd.irc.reader import IrcReader

    irc = protocol("")
    client = SimpleNamespace(nick="alice", user_modes=frozenset(), username="", realname="")
    settings = SimpleNamespace(accounts=None, config=SimpleNamespace(server_name="s"))
    hub = SimpleNamespace(respeak=lambda client, speaks: None)
    session = SimpleNamespace(client=client, hub=hub, settings=settings)
    kept = []
    for bad in ([1], {"caps": 5, "modes": [["o"], "o", "x"], "user": 7, "realname": None},
                {"caps": [["server-time"], "server-time"], "nick": "9no"}):
        reader = IrcReader(session, irc)
        reader.restore({"unread": b"", "discarding": False, "irc": bad})
        assert reader.registered  # (a nick: registered)
        kept.append((reader.registration.enabled, client.user_modes, reader.registration.nick))
    assert kept == [(set(), frozenset(), None), (set(), {"o"}, None),
                    ({"server-time"}, frozenset(), None)]


def test_message_tags_show_msgid_client_tags_and_tagmsg_to_those_who_asked():
    """``message-tags`` clients read a line's msgid and client-only tags, and a TAGMSG; the
    others read the plain line and no TAGMSG at all, in a room and in private."""
    said = ev.Said("bob", "hi", "c0ffee1", "+draft/reply=x")
    tagged = ev.Tagged("bob", "c0ffee2", "+typing=active")
    plain, asked = protocol(), protocol(caps=("message-tags",))
    plain_room, asked_room = plain.speaks.renderer("dev"), \
        plain.rooms_for(asked.caps).renderer("dev")
    assert plain_room(said) == b":bob!bob@chatd PRIVMSG #dev :hi\r\n"
    assert plain_room(tagged) == b""
    assert asked_room(said) == b"@msgid=c0ffee1;+draft/reply=x :bob!bob@chatd PRIVMSG #dev :hi\r\n"
    assert asked_room(tagged) == b"@msgid=c0ffee2;+typing=active :bob!bob@chatd TAGMSG #dev\r\n"
    private = ev.PrivateTagged("bob", "c0ffee3", "+typing=done")
    assert plain.line(private) == b""
    assert asked.line(private) == b"@msgid=c0ffee3;+typing=done :bob!bob@chatd TAGMSG alice\r\n"
    assert asked.line(ev.PrivateMessage("bob", "psst", "c0ffee4")) == \
        b"@msgid=c0ffee4 :bob!bob@chatd PRIVMSG alice :psst\r\n"
    assert len({id(plain.rooms_for(caps)) for caps in
                [(), ("server-time",), ("account-tag",), ("message-tags",),
                 ("server-time", "account-tag", "message-tags")]}) == 5
