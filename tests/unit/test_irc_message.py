"""chatd/irc/message.py: an IRC message's wire form, parsed and written (issue 27). Pure."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chatd.core.tagging import is_client_tags
from chatd.irc.message import (
    MAX_LINE_BYTES,
    MAX_TAG_BYTES,
    BadMessage,
    Message,
    TooLong,
    client_tags,
    encode,
    parse,
)


@pytest.mark.parametrize("line, expected", [
    (b"NICK alice", Message("NICK", ("alice",))),
    (b"nick alice", Message("NICK", ("alice",))),  # commands fold to upper case
    (b"USER alice 0 * :Alice Liddell", Message("USER", ("alice", "0", "*", "Alice Liddell"))),
    (b"PRIVMSG #dev :hi :) there", Message("PRIVMSG", ("#dev", "hi :) there"))),
    (b"PRIVMSG #dev :", Message("PRIVMSG", ("#dev", ""))),
    (b"PRIVMSG  #dev   a:b  :x", Message("PRIVMSG", ("#dev", "a:b", "x"))),
    (b"CAP LS 302", Message("CAP", ("LS", "302"))),
    (b"JOIN :", Message("JOIN", ("",))),  # irssi's probe
    (b":alice!a@h PRIVMSG bob :yo", Message("PRIVMSG", ("bob", "yo"), "alice!a@h")),
    (b"001 alice :Welcome", Message("001", ("alice", "Welcome"))),
    (b"@time=2026-12-07T10:00:00.000Z;+x=a\\sb\\:c\\\\d\\ne;flag PING :t",
     Message("PING", ("t",), None, {"time": "2026-12-07T10:00:00.000Z", "+x": "a b;c\\d\ne",
                                     "flag": ""})),
    (b"PRIVMSG #dev :caf\xc3\xa9 \xff", Message("PRIVMSG", ("#dev", "caf\u00e9 \ufffd"))),
    (b"A " + b" ".join(b"%d" % i for i in range(20)),
     Message("A", (*(str(i) for i in range(14)), "14 15 16 17 18 19"))),
])
def test_lines_parse_as_the_modern_irc_documents_say(line, expected):
    assert parse(line) == expected


@pytest.mark.parametrize("line", [b"", b"   ", b":alice", b": NICK a", b"@a=b", b"@a=b ",
                                  b"NICK1 x", b"12 x", b"1234 x", b"N\xc3\xa9CK x", b"NI\tCK x"])
def test_what_is_no_message_is_refused(line):
    with pytest.raises(BadMessage):
        parse(line)


def test_the_limits_are_512_bytes_and_4096_of_tags():
    body = b"PRIVMSG #dev :" + b"x" * (MAX_LINE_BYTES - 2 - 14)
    assert parse(body).params[1] == "x" * (MAX_LINE_BYTES - 16)
    with pytest.raises(TooLong):
        parse(body + b"x")
    tags = b"@a=" + b"y" * (MAX_TAG_BYTES - 4)  # with the space after it: 4096
    assert parse(tags + b" " + body).tags["a"] == "y" * (MAX_TAG_BYTES - 4)
    with pytest.raises(TooLong):
        parse(tags + b"y " + body)


def test_messages_are_written_with_a_trailing_when_they_need_one():
    assert encode(Message("PRIVMSG", ("#dev", "hi there"), "alice!alice@h")) == \
        b":alice!alice@h PRIVMSG #dev :hi there\r\n"
    assert encode(Message("JOIN", ("#dev",), "a!a@h")) == b":a!a@h JOIN #dev\r\n"
    assert encode(Message("PRIVMSG", ("#dev", ""))) == b"PRIVMSG #dev :\r\n"
    assert encode(Message("PRIVMSG", ("#dev", ":-)"))) == b"PRIVMSG #dev ::-)\r\n"
    assert encode(Message("PING", ("x",), None, {"time": "t", "flag": ""})) == \
        b"@time=t;flag PING x\r\n"
    assert encode(Message("TAGMSG", ("#d",), None, {"+a": "b c;d\\"})) == \
        b"@+a=b\\sc\\:d\\\\ TAGMSG #d\r\n"
    with pytest.raises(ValueError):
        encode(Message("PRIVMSG", ("a b", "x")))


def test_a_long_message_is_cut_at_512_bytes_on_a_character():
    line = encode(Message("PRIVMSG", ("#dev", "\u00e9" * 400), "alice!alice@host"))
    assert len(line) <= MAX_LINE_BYTES and line.endswith(b"\r\n")
    assert parse(line[:-2]).params[1] == "\u00e9" * len(parse(line[:-2]).params[1])


_word = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=" \r\n\0:"),
                min_size=1, max_size=20)
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
                max_size=100)
_tags = st.dictionaries(st.from_regex(r"\+?[a-z][a-z0-9-]{0,10}", fullmatch=True),
                        st.text(st.characters(blacklist_categories=("Cs",),
                                              blacklist_characters="\0"), max_size=30),
                        max_size=4)


@given(st.sampled_from(["PRIVMSG", "NOTICE", "JOIN", "001", "PING"]),
       st.lists(_word, max_size=5), _text, st.none() | _word, _tags)
def test_what_is_written_parses_back_the_same(command, middle, last, source, tags):
    message = Message(command, (*middle, last), source, tags)
    line = encode(message)
    assume(len(line) - line.find(b" ") < MAX_LINE_BYTES - 2 if tags else len(line) < MAX_LINE_BYTES)
    assert parse(line[:-2]) == message


@given(st.binary(max_size=600))
def test_any_bytes_parse_or_are_refused(line):
    try:
        message = parse(line.replace(b"\n", b"").replace(b"\r", b""))
    except BadMessage:
        return
    assert message.command.isupper() or message.command.isdigit()
    assert len(message.params) <= 15


def test_client_tags_keep_the_clients_own_escaped_and_drop_the_rest():
    """Only ``+`` tags are relayed, re-escaped; a server tag, a key a tag name cannot be and
    a value with a control character are dropped."""
    tags = parse(rb"@+a=x\sy\:z;time=now;+vendor.example/b;+bad*key=1;+c=\n;+d= PRIVMSG #x :hi").tags
    assert client_tags(tags) == r"+a=x\sy\:z;+vendor.example/b;+d"
    assert client_tags({}) == ""


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=6))
def test_what_client_tags_builds_passes_the_rule_another_node_checks(tags):
    built = client_tags({"+" + key: value for key, value in tags.items()})
    assert is_client_tags(built) or len(built.encode()) > 4094
