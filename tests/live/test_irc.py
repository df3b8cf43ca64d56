"""The IRC listener (SPEC §14, docs/protocol.md §14) on one node: real chatd processes, IRC
clients and line clients over real TCP, on the same rooms. Real IRC programs (ii, sic,
weechat, irssi) are in test_irc_clients.py."""

from __future__ import annotations

import base64
import re

from support.metrics import free_port
from test_accounts import PASSWORD, register


def irc_server(chatd, **sections):
    """A chatd with an IRC listener on a free port."""
    return chatd(irc={"irc_port": free_port()}, **sections)


def joined(server, nick: str, room: str = "dev"):
    """A line client named ``nick`` in ``room``."""
    client = server.connect()
    client.set_nick(nick)
    client.join(room)
    return client


def test_registration_welcome_and_isupport(chatd):
    server = irc_server(chatd, server={"server_name": "chat example"})
    alice = server.irc("alice")
    lines = alice.received
    assert lines[0] == ":chat-example 001 alice :Welcome to chat example, alice!alice@chatd"
    isupport = next(line for line in lines if line.split()[1] == "005")
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=24", "CHANNELLEN=25",
                  "PREFIX=(ov)@+", "CHANMODES=b,k,,imnst"):
        assert f" {token} " in isupport, token
    assert any(line.endswith(":- Type /help for the list of commands.") for line in lines)
    assert lines[-1] == ":chat-example 376 alice :End of /MOTD command."


def test_irssi_probe_and_weechat_negotiation(chatd):
    """irssi's ``CAP LS 302`` then a bogus ``JOIN :``: it waits for 451 before NICK/USER;
    weechat sends NICK and USER inside the negotiation, registered only at CAP END."""
    server = irc_server(chatd)
    irssi = server.irc_raw()
    irssi.send_line("CAP LS 302")
    irssi.send_line("JOIN :")
    irssi.wait_for(lambda line: " CAP * LS " in line and "server-time" in line)
    irssi.wait_for(":chatd 451 * :You have not registered")
    irssi.send_line("CAP REQ :multi-prefix server-time")
    irssi.send_line("NICK irssi")
    irssi.send_line("USER irssi 0 * :irssi")
    irssi.wait_for(":chatd CAP * ACK :multi-prefix server-time")
    irssi.expect_silence()  # no 001 while CAP is open
    irssi.send_line("CAP END")
    irssi.wait_for(":chatd 001 irssi :Welcome to chatd, irssi!irssi@chatd")


def test_nick_rules_and_a_nick_in_use(chatd):
    server = irc_server(chatd)
    server.irc("alice")
    line = server.connect()
    line.set_nick("bob")
    other = server.irc_raw()
    other.send_line("NICK 9lives")
    other.wait_for(":chatd 432 * 9lives :Erroneous nickname")
    other.send_line("NICK bob")
    other.send_line("USER x 0 * :x")
    other.wait_for(":chatd 433 * bob :nick bob is already in use")
    other.send_line("NICK ALICE")  # nicks fold
    other.wait_for(":chatd 433 * ALICE :nick ALICE is already in use")
    other.send_line("NICK carol")
    other.wait_for(":chatd 001 carol :Welcome to chatd, carol!carol@chatd")


def test_line_and_irc_clients_chat_in_one_room(chatd):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    alice = server.irc("alice")
    alice.expect_silence()  # in no room until it JOINs: bob's traffic is not hers
    alice.send_line("JOIN #dev")
    alice.expect(":alice!alice@chatd JOIN #dev")
    alice.expect(":chatd 353 alice = #dev :alice @bob")
    alice.expect(":chatd 366 alice #dev :End of /NAMES list.")
    bob.expect("*** alice joined dev")
    bob.send_line("hello irc")
    alice.expect(":bob!bob@chatd PRIVMSG #dev :hello irc")
    bob.send_line("/me waves")
    alice.expect(":bob!bob@chatd PRIVMSG #dev :\x01ACTION waves\x01")
    alice.send_line("PRIVMSG #dev :hello line")
    bob.expect("<alice> hello line")
    alice.send_line("PRIVMSG #dev :\x01ACTION nods\x01")
    bob.expect("* alice nods")
    bob.send_line("/topic plans")
    alice.expect(":bob!bob@chatd TOPIC #dev :plans")
    bob.expect("*** bob set the topic: plans")
    alice.send_line("NICK alicia")
    alice.expect(":alice!alice@chatd NICK :alicia")
    bob.expect("*** alice is now known as alicia")
    bob.send_line("/nick robert")
    bob.expect("*** you are now robert")
    alice.expect(":bob!bob@chatd NICK :robert")
    alice.send_line("PRIVMSG robert :psst")
    bob.expect("*alicia* psst")
    bob.send_line("/msg alicia back")
    bob.expect("*** -> alicia: back")
    alice.expect(":robert!robert@chatd PRIVMSG alicia :back")
    alice.send_line("PART #dev :later")
    alice.expect(":alicia!alicia@chatd PART #dev :later")
    bob.expect("*** alicia left dev (later)")
    alice.send_line("JOIN #dev")
    bob.expect("*** alicia joined dev")
    alice.send_line("QUIT :bye now")
    assert alice.expect_closed()[-1].startswith("ERROR :Closing Link: ")
    bob.expect("*** alicia left dev (quit: bye now)")
    bob.expect_silence()


def test_an_irc_client_in_several_rooms_and_what_irc_peers_see(chatd):
    server = irc_server(chatd)
    alice = server.irc("alice", caps=("multi-prefix",))
    carol = server.irc("carol")
    alice.send_line("JOIN #dev,#ops")
    alice.expect(":alice!alice@chatd JOIN #dev")
    alice.numeric("366")
    alice.expect(":alice!alice@chatd JOIN #ops")
    alice.numeric("366")
    carol.send_line("JOIN #ops")
    carol.expect(":carol!carol@chatd JOIN #ops")
    carol.expect(":chatd 353 carol = #ops :@alice carol")
    carol.numeric("366")
    alice.expect(":carol!carol@chatd JOIN #ops")
    bob = joined(server, "bob")
    alice.expect(":bob!bob@chatd JOIN #dev")
    alice.send_line("PRIVMSG #ops :ops only")
    carol.expect(":alice!alice@chatd PRIVMSG #ops :ops only")
    alice.send_line("PRIVMSG #dev :dev only")
    bob.expect("<alice> dev only")
    carol.expect_silence()
    bob.expect_silence()
    alice.send_line("MODE #ops +v carol")
    carol.expect(":alice!alice@chatd MODE #ops +v carol")
    alice.expect(":alice!alice@chatd MODE #ops +v carol")
    alice.send_line("NAMES #ops")
    alice.expect(":chatd 353 alice = #ops :@alice +carol")
    alice.numeric("366")
    alice.send_line("KICK #ops carol :out")
    carol.expect(":alice!alice@chatd KICK #ops carol :out")
    alice.expect(":alice!alice@chatd KICK #ops carol :out")
    carol.send_line("PRIVMSG #ops :still here?")
    carol.expect(":chatd 404 carol #ops :Cannot send to channel")
    carol.expect_silence()  # kicked out of its only room: in no room, not in the lobby
    bob.send_line("/quit gone")
    alice.expect(":bob!bob@chatd QUIT :quit: gone")


def test_history_on_join_carries_server_time(chatd):
    server = irc_server(chatd, history={"history_on_join": 5})
    bob = joined(server, "bob")
    bob.send_line("first words")
    bob.sync()
    alice = server.irc("alice", caps=("server-time",))
    alice.send_line("JOIN #dev")
    alice.expect(":alice!alice@chatd JOIN #dev")
    line = alice.wait_for(lambda line: "first words" in line)
    assert re.fullmatch(r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                        r":bob!bob@chatd PRIVMSG #dev :first words", line), line


def test_echo_message(chatd):
    server = irc_server(chatd)
    alice = server.irc("alice", caps=("echo-message",))
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    alice.send_line("PRIVMSG #dev :hear me")
    alice.expect(":alice!alice@chatd PRIVMSG #dev :hear me")


def test_sasl_plain_and_pass_log_in_to_accounts(chatd):
    server = irc_server(chatd)
    register(server.connect(), "alice")
    sasl = server.irc_raw()
    sasl.send_line("CAP LS 302")
    sasl.send_line("NICK whoever")
    sasl.send_line("USER a 0 * :a")
    sasl.send_line("CAP REQ :sasl")
    sasl.wait_for(":chatd CAP whoever ACK sasl")
    sasl.send_line("AUTHENTICATE PLAIN")
    sasl.expect("AUTHENTICATE +")
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    sasl.send_line(f"AUTHENTICATE {token}")
    sasl.wait_for(lambda line: line.split()[1:2] == ["903"])
    sasl.send_line("CAP END")
    sasl.wait_for(":chatd 001 alice :Welcome to chatd, alice!alice@chatd")
    sasl.send_line("QUIT")
    sasl.expect_closed()
    wrong = server.irc_raw()
    wrong.send_line("PASS alice:not-it")
    wrong.send_line("NICK alice")
    wrong.send_line("USER a 0 * :a")
    lines = wrong.expect_closed()
    assert any(line.split()[1:2] == ["464"] for line in lines), lines
    assert PASSWORD not in "".join(lines)
    right = server.irc("alice", password=PASSWORD)
    assert right.received[0].startswith(":chatd 900 * "), right.received[0]
    guest = server.irc_raw()
    guest.send_line("NICK alice")
    guest.send_line("USER a 0 * :a")
    guest.wait_for(":chatd 433 * alice :nick alice is registered; log in with SASL or PASS")


def test_an_unregistered_connection_is_closed_after_login_timeout(chatd):
    server = irc_server(chatd, accounts={"login_timeout": 1})
    idle = server.irc_raw()
    idle.send_line("NICK slow")
    lines = idle.expect_closed(timeout=10)
    assert lines[-1].endswith(":*** error: login required"), lines
