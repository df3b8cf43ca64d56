"""Hostile IRC input against a live chatd's IRC listener (hypothesis): commands chatd knows,
with random parameters, tags and bytes, before and after registration. Whatever comes in,
no session fails (``session_failed`` is chatd's log of an exception in a session), every
line sent back is one IRC line, and a well-behaved IRC client and a line client keep
chatting in the room the fuzzer also uses."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from test_irc import irc_server, joined

LONG = os.environ.get("CHATD_FUZZ") == "long"
COMMANDS = ["JOIN", "PART", "PRIVMSG", "NOTICE", "NICK", "TOPIC", "NAMES", "WHO", "WHOIS",
            "WHOWAS", "LIST", "MODE", "KICK", "INVITE", "AWAY", "PING", "CAP", "USER", "PASS",
            "AUTHENTICATE", "LUSERS", "TIME", "MOTD", "USERHOST", "ISON", "TAGMSG", "OPER"]
WORD = st.sampled_from(["#dev", "#ops", "#", "#9", "dev", "0", "-1", "²", "*", "b*", "+o",
                        "+l", "-k", "+bkl", "alice", "fuzz", "LS", "REQ", "END", "302",
                        "PLAIN", "+", "*!*@*", ":", "", "\x01ACTION x\x01"])
PARAM = st.one_of(WORD, st.text(max_size=40).map(lambda t: t.replace("\r", "").replace("\n", "")))
#: Numbers str.isdigit takes and int() does not, empty and missing parameters, limits.
KNOWN = ["WHOWAS alice ²", "WHOWAS alice --1", "CAP LS ²", "CAP LS 99999999999999", "JOIN #dev",
         "MODE #dev +l ²", "MODE #dev +l", "MODE #dev +kl", "MODE #dev +b", "MODE #dev b",
         "MODE fuzz +iwx", "KICK #dev", "KICK #dev alice", "JOIN 0", "JOIN ,,,", "PART ,",
         "PRIVMSG", "PRIVMSG #dev", "PRIVMSG #dev :", "NOTICE ,:", "AUTHENTICATE",
         "AUTHENTICATE PLAIN", "AUTHENTICATE ====", "WHO", "WHO ?*?", "TOPIC #dev :" + "x" * 600,
         "INVITE alice #nowhere", "USER", "PASS", "NICK", "NICK :", "LIST #,#dev"]
LINE = st.builds(
    lambda tags, command, params, trailing: (tags + command + "".join(" " + p for p in params
                                             if p and " " not in p and not p.startswith(":"))
                                             + (" :" + trailing if trailing is not None else "")),
    st.sampled_from(["", "@a=b ", "@+x=\\s\\:; ", "@" + "t" * 5000 + " "]),
    st.one_of(st.sampled_from(COMMANDS), st.text(max_size=8)),
    st.lists(PARAM, max_size=6), st.one_of(st.none(), PARAM))


def test_hostile_irc_lines_break_nothing(chatd):
    server = irc_server(chatd, limits={"rate": 1000.0, "burst": 1000})
    bob = joined(server, "bob")
    alice = server.irc("alice")
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    fuzzers = [server.irc("fuzz"), server.irc_raw()]  # registered, and not
    rounds = []
    for fuzzer in fuzzers:  # lines that once broke a session, or might
        fuzzer.send_raw("".join(line + "\r\n" for line in KNOWN).encode())
        fuzzer.sync(timeout=10)

    @settings(max_examples=400 if LONG else 60, deadline=None)
    @given(st.lists(LINE, min_size=1, max_size=12), st.booleans())
    def feed(lines, registered):
        fuzzer = fuzzers[0 if registered else 1]
        data = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogatepass")
        fuzzer.send_raw(data)
        fuzzer.sync(timeout=10)  # it still answers, in order
        for line in fuzzer.skipped:
            assert "\r" not in line and "\n" not in line and len(line.encode()) <= 4608, line
        rounds.append(len(lines))

    try:
        feed()
    finally:
        assert not server.find_events("session_failed")
    bob.send_line("still fine")
    alice.wait_for(":bob!bob@chatd PRIVMSG #dev :still fine")
    alice.send_line("PRIVMSG #dev :and back")
    bob.wait_for("<alice> and back")
    print(f"IRC fuzz: {len(rounds)} inputs, {sum(rounds)} lines")
