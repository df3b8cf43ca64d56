"""chatd/irc/registration.py: an IRC connection before registration, as the clients of issue
27 drive it (irssi's probe, weechat's CAP negotiation, ii and sic's plain NICK and USER). Pure:
messages in, replies out."""

from __future__ import annotations

from chatd.irc.message import Message, encode, parse
from chatd.irc.registration import Registration

OFFERED = {"server-time": None, "multi-prefix": None, "sasl": "PLAIN", "message-tags": None}


def drive(reg: Registration, *lines: bytes) -> list[bytes]:
    """Feed lines as a client sends them; the replies as the bytes sent back."""
    return [encode(reply) for line in lines for reply in reg.handle(parse(line))]


def test_ii_and_sic_register_with_nick_and_user_alone():
    reg = Registration("chatd.test", OFFERED)
    assert drive(reg, b"NICK alice") == [] and not reg.ready
    assert drive(reg, b"USER alice 0 * :Alice") == []
    assert reg.ready and (reg.nick, reg.user, reg.realname) == ("alice", "alice", "Alice")


def test_weechat_negotiates_while_sending_nick_and_user_and_registers_at_cap_end():
    reg = Registration("chatd.test", OFFERED)
    replies = drive(reg, b"CAP LS 302", b"NICK bob", b"USER bob 0 * :Bob")
    assert replies == [b":chatd.test CAP * LS :server-time multi-prefix sasl=PLAIN message-tags\r\n"]
    assert not reg.ready  # the negotiation is open
    assert drive(reg, b"CAP REQ :server-time multi-prefix") == \
        [b":chatd.test CAP bob ACK :server-time multi-prefix\r\n"]
    assert drive(reg, b"CAP END") == [] and reg.ready
    assert reg.enabled == {"server-time", "multi-prefix"}


def test_irssis_probe_gets_451_and_then_registers():
    reg = Registration("chatd.test", OFFERED)
    assert len(drive(reg, b"CAP LS 302")) == 1
    assert drive(reg, b"JOIN :") == [b":chatd.test 451 * :You have not registered\r\n"]
    drive(reg, b"CAP REQ :multi-prefix", b"CAP END", b"NICK carol", b"USER carol 0 * :C")
    assert reg.ready and reg.enabled == {"multi-prefix"}


def test_a_request_for_what_is_not_offered_is_refused_whole_and_a_cap_can_be_dropped():
    reg = Registration("chatd.test", OFFERED)
    assert drive(reg, b"CAP REQ :server-time echo-message") == \
        [b":chatd.test CAP * NAK :server-time echo-message\r\n"]
    assert reg.enabled == set()
    drive(reg, b"CAP REQ server-time", b"CAP REQ :-server-time multi-prefix")
    assert reg.enabled == {"multi-prefix"}
    assert drive(reg, b"CAP LIST") == [b":chatd.test CAP * LIST multi-prefix\r\n"]
    assert drive(reg, b"CAP FOO") == [b":chatd.test 410 * FOO :Invalid CAP command\r\n"]


def test_a_long_cap_list_is_continued_and_an_old_client_gets_no_values():
    many = {f"vendor.example/cap-number-{i}": None for i in range(40)} | {"sasl": "PLAIN"}
    lines = Registration("s", many).handle(parse(b"CAP LS 302"))
    assert len(lines) > 1 and all(m.params[2] == "*" for m in lines[:-1])
    assert lines[-1].params[2] != "*" and all(len(encode(m)) <= 512 for m in lines)
    assert "sasl=PLAIN" in lines[-1].params[-1]
    [old] = Registration("s", OFFERED).handle(parse(b"CAP LS"))
    assert old.params[-1] == "server-time multi-prefix sasl message-tags"


def test_nicks_follow_the_line_protocols_rule():
    reg = Registration("s", OFFERED)
    assert drive(reg, b"NICK 1abc") == [b":s 432 * 1abc :Erroneous nickname\r\n"]
    assert drive(reg, b"NICK a" + b"b" * 24) == [b":s 432 * " + b"a" + b"b" * 24
                                                 + b" :Erroneous nickname\r\n"]
    assert drive(reg, b"NICK :") == [b":s 431 * :No nickname given\r\n"]
    assert drive(reg, b"NICK d_ave-2") == [] and reg.nick == "d_ave-2"
    assert drive(reg, b"USER x") == [b":s 461 d_ave-2 USER :Not enough parameters\r\n"]
    assert not reg.ready


def test_pass_ping_and_quit_before_registration():
    reg = Registration("s", OFFERED)
    assert drive(reg, b"PASS :alice:secret words") == [] and reg.password == "alice:secret words"
    assert drive(reg, b"PING :123") == [b":s PONG s 123\r\n"]
    assert drive(reg, b"QUIT :bye now") == [] and reg.quit == "bye now"
    assert Message("PONG", ("s", "123"), "s") in reg.handle(parse(b"PING 123"))


def test_a_cap_version_that_is_not_a_number_is_ignored():
    from chatd.irc.message import Message
    from chatd.irc.registration import Registration

    registration = Registration("chatd", {"sasl": "PLAIN"})
    for version in ("²", "99999999999999999999", "-3"):
        registration.handle(Message("CAP", ("LS", version)))
    assert registration.cap_version == 0
