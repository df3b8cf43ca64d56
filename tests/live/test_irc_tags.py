"""IRCv3 ``message-tags`` on the IRC listener (SPEC §14, docs/protocol.md §14): every line's
msgid, client-only tags relayed to those who asked and to nobody else, and TAGMSG; real chatd
processes, IRC and line clients over real TCP (one node here, two in test_irc_cluster.py)."""

from __future__ import annotations

import re

from support.irc import IrcClient
from test_irc import irc_joined, irc_server, joined


def tags_of(line: str) -> dict[str, str]:
    """The tags a received line starts with, as sent (values still escaped)."""
    if not line.startswith("@"):
        return {}
    head = line[1:line.index(" ")]
    return dict(item.partition("=")[::2] for item in head.split(";"))


def msgid(line: str) -> str:
    found = tags_of(line).get("msgid", "")
    assert re.fullmatch(r"[0-9a-f]{11,}", found), line
    return found


def next_privmsg(client: IrcClient) -> str:
    return client.wait_for(lambda line: " PRIVMSG " in line or " TAGMSG " in line)


def members(server) -> tuple:
    """#dev's members: alice (message-tags), bob (message-tags, echo-message), carol (no
    capability), dave (server-time), and erin (the line protocol), in that order."""
    return (irc_joined(server, "alice", caps=("message-tags",)),
            irc_joined(server, "bob", caps=("message-tags", "echo-message")),
            irc_joined(server, "carol"), irc_joined(server, "dave", caps=("server-time",)),
            joined(server, "erin"))


def test_client_tags_and_msgid_reach_only_those_who_asked(chatd):
    """alice and bob asked for message-tags (bob for echo-message too), carol for nothing,
    dave for server-time, and erin speaks the line protocol: a PRIVMSG's ``+`` tags and its
    msgid reach alice and bob (the same msgid, bob's echo included); a tag without ``+`` is
    the server's and is dropped; the others read the plain line."""
    alice, bob, carol, dave, erin = members(irc_server(chatd))
    alice.send_line(r"@+draft/reply=abc;fizz=buzz;+esc=a\sb\:c PRIVMSG #dev :hi")
    line = next_privmsg(bob)
    assert line.endswith(" :alice!alice@chatd PRIVMSG #dev :hi"), line
    tags = tags_of(line)
    assert tags["+draft/reply"] == "abc" and tags["+esc"] == r"a\sb\:c", line
    assert "fizz" not in tags
    first = msgid(line)
    assert next_privmsg(carol) == ":alice!alice@chatd PRIVMSG #dev :hi"
    assert set(tags_of(next_privmsg(dave))) == {"time"}
    erin.wait_for("<alice> hi")

    bob.send_line("@+typing=done PRIVMSG #dev :hi yourself")
    echo, relayed = next_privmsg(bob), next_privmsg(alice)
    assert echo == relayed and tags_of(echo)["+typing"] == "done", (echo, relayed)
    assert msgid(echo) != first
    erin.wait_for("<bob> hi yourself")


def test_a_line_clients_message_has_a_msgid_too(chatd):
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", caps=("message-tags",))
    erin = joined(server, "erin")
    erin.send_line("from the line side")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG #dev :from the line side"))
    msgid(line)
    erin.send_line("/msg alice psst")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG alice :psst"))
    msgid(line)


def test_tagmsg_reaches_message_tags_members_only(chatd):
    """A TAGMSG (a typing notice) reaches the channel's members that asked for message-tags,
    echoed to its sender with the same msgid; carol, dave (server-time only) and the line
    client erin are sent nothing: the next line they read is the PRIVMSG after it."""
    alice, bob, carol, dave, erin = members(irc_server(chatd))
    bob.send_line(r"@+typing=active;cat=dog TAGMSG #dev")
    echo, relayed = next_privmsg(bob), next_privmsg(alice)
    assert relayed.endswith(" :bob!bob@chatd TAGMSG #dev"), relayed
    assert tags_of(relayed)["+typing"] == "active" and "cat" not in tags_of(relayed)
    assert msgid(echo) == msgid(relayed)
    bob.send_line("PRIVMSG #dev :after")
    assert next_privmsg(carol) == ":bob!bob@chatd PRIVMSG #dev :after"
    assert next_privmsg(dave).endswith(" :bob!bob@chatd PRIVMSG #dev :after")
    assert erin.wait_for(lambda line: "bob" in line) == "<bob> after"
    assert next_privmsg(alice).endswith(" PRIVMSG #dev :after")


def test_private_tags_and_tagmsg_and_a_late_capability(chatd):
    """In private: bob (no capability) is sent neither tags nor the TAGMSG, until he asks
    for message-tags; alice's echo carries the reply tag; a TAGMSG to nobody is a 401 and
    to a channel one is not in a 404."""
    server = irc_server(chatd)
    alice = server.irc("alice", caps=("message-tags", "echo-message"))
    bob = server.irc("bob")
    bob.send_line("PRIVMSG alice :hey")
    line = next_privmsg(alice)
    assert line.endswith(" :bob!bob@chatd PRIVMSG alice :hey")
    replied = msgid(line)
    alice.send_line(f"@+draft/reply={replied} PRIVMSG bob :hey yourself")
    echo = next_privmsg(alice)
    assert echo.endswith(" :alice!alice@chatd PRIVMSG bob :hey yourself")
    assert tags_of(echo)["+draft/reply"] == replied
    alice.send_line("@+typing=active TAGMSG bob")
    assert tags_of(next_privmsg(alice))["+typing"] == "active"  # the echo
    alice.send_line("PRIVMSG bob :sync")
    assert next_privmsg(bob) == ":alice!alice@chatd PRIVMSG bob :hey yourself"
    assert next_privmsg(bob) == ":alice!alice@chatd PRIVMSG bob :sync"  # no TAGMSG between
    bob.send_line("CAP REQ :message-tags")
    bob.wait_for(lambda text: " ACK " in text)
    alice.send_line(f"@+draft/reply={replied} PRIVMSG bob :hey again")
    line = next_privmsg(bob)
    assert tags_of(line)["+draft/reply"] == replied and line.endswith(" PRIVMSG bob :hey again")
    alice.send_line("@+typing=active TAGMSG bob")
    assert next_privmsg(bob).endswith(" :alice!alice@chatd TAGMSG bob")
    alice.send_line("TAGMSG nobody")
    alice.numeric("401")
    alice.send_line("TAGMSG #nowhere")
    alice.numeric("404")


def test_tags_are_bounded_and_need_the_capability(chatd):
    """4096 bytes of tags (``@`` to the space) pass intact; one more is a 417 and nothing is
    relayed; a client that did not ask for message-tags has its tags dropped."""
    server = irc_server(chatd, limits={"rate": 1000, "burst": 1000})
    alice = irc_joined(server, "alice", caps=("message-tags", "echo-message"))
    bob = irc_joined(server, "bob", caps=("message-tags",))
    carol = irc_joined(server, "carol")
    longest = "@foo=bar;+baz=%s TAGMSG #dev" % ("a" * 4081)
    assert longest.index("TAGMSG") == 4096
    alice.send_line(longest)
    assert tags_of(next_privmsg(bob))["+baz"] == "a" * 4081
    alice.send_line("@foo=bar;+baz=%s TAGMSG #dev" % ("a" * 4082))
    alice.numeric("417")
    carol.send_line("@+sneaky=1 PRIVMSG #dev :untagged")
    line = next_privmsg(bob)
    assert line.endswith(" :carol!carol@chatd PRIVMSG #dev :untagged")
    assert "+sneaky" not in tags_of(line) and "+baz" not in tags_of(line)
