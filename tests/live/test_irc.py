"""The IRC listener (SPEC §14, docs/protocol.md §14) on one node: real chatd processes, IRC
clients and line clients over real TCP, on the same rooms. Real IRC programs are in
test_irc_clients.py (ii, sic) and test_irc_weechat_irssi.py; two nodes in test_irc_cluster.py."""

from __future__ import annotations

import base64
import json
import re
import tomllib

from support.chatctl import ctl
from support.daemon import toml_dumps
from support.metrics import free_port, start, value, wait_metric
from test_accounts import PASSWORD, register
from test_upgrade import upgrade


def irc_server(chatd, irc=None, **sections):
    """A chatd with an IRC listener on a free port (and ``irc``'s other keys)."""
    return chatd(irc={"irc_port": free_port(), **(irc or {})}, **sections)


def irc_joined(server, nick: str, channel: str = "#dev", caps=()):
    """An IRC client named ``nick`` in ``channel``, past its NAMES."""
    client = server.irc(nick, caps=caps)
    client.send_line(f"JOIN {channel}")
    client.numeric("366")
    return client


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


def test_a_rename_and_a_quit_reach_a_member_of_several_shared_rooms_once(chatd):
    """bob is in #c, #a and #b; alice shares #a and #b with it, carol (line) #b. A rename and a
    quit are posted in each of bob's rooms (core/once.py): alice reads each once, not once per
    shared room, and carol, who shares no earlier room, reads them in #b."""
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#a")
    alice.send_line("JOIN #b")
    alice.numeric("366")
    bob = irc_joined(server, "bob", "#c")
    for channel in ("#a", "#b"):
        bob.send_line(f"JOIN {channel}")
        bob.numeric("366")
    carol = joined(server, "carol", "b")
    bob.send_line("NICK robert")
    bob.wait_for(":bob!bob@chatd NICK :robert")  # every room has been posted it by now
    assert alice.sync().count(":bob!bob@chatd NICK :robert") == 1
    carol.wait_for("*** bob is now known as robert")
    bob.send_line("QUIT :bye")
    alice.wait_for(":robert!robert@chatd QUIT :quit: bye")
    assert not [line for line in alice.sync() if " QUIT " in line]
    carol.wait_for("*** robert left b (quit: bye)")


def test_away_notify_tells_who_went_away_came_back_or_joined_away(chatd):
    """IRCv3 away-notify: alice asked for it and shares #a and #b with bob; she is told once
    each time bob goes away or comes back, and when carol (line), away already, joins; bob,
    who did not ask, is told nothing of alice's."""
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#a", caps=("away-notify",))
    alice.send_line("JOIN #b")
    alice.numeric("366")
    bob = irc_joined(server, "bob", "#a")
    bob.send_line("JOIN #b")
    bob.numeric("366")
    bob.send_line("AWAY :at lunch")
    bob.numeric("306")
    assert alice.sync().count(":bob!bob@chatd AWAY :at lunch") == 1
    bob.send_line("AWAY")
    bob.numeric("305")
    assert alice.sync().count(":bob!bob@chatd AWAY") == 1
    alice.send_line("AWAY :brb")
    alice.numeric("306")
    assert not [line for line in bob.sync() if " AWAY" in line]
    carol = server.connect()
    carol.set_nick("carol")
    carol.send_line("/away on the phone")
    carol.wait_for("*** you are away: on the phone")
    carol.join("a")
    alice.wait_for(":carol!carol@chatd JOIN #a")
    alice.expect(":carol!carol@chatd AWAY :on the phone")
    carol.send_line("/back")
    alice.wait_for(":carol!carol@chatd AWAY")


def test_history_on_join_carries_server_time(chatd):
    server = irc_server(chatd, history={"history_on_join": 5})
    bob = joined(server, "bob")
    bob.send_line("first words")
    bob.sync()
    alice = server.irc("alice", caps=("server-time",))
    alice.send_line("JOIN #dev")
    alice.wait_for(lambda line: line.endswith(":alice!alice@chatd JOIN #dev"))
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


def test_account_tag_names_a_logged_in_speaker(chatd):
    """IRCv3 account-tag: alice asked for it; bob's lines (logged in with PASS) carry
    ``@account=bob``, in the room and in private, with ``server-time`` in the same tags;
    carol's (a guest, line protocol) carry none."""
    server = irc_server(chatd)
    register(server.connect(), "bob")
    alice = irc_joined(server, "alice", caps=("account-tag", "server-time"))
    bob = server.irc("bob", password=f"bob:{PASSWORD}")
    bob.send_line("JOIN #dev")
    bob.numeric("366")
    bob.send_line("PRIVMSG #dev :logged in")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG #dev :logged in"))
    assert re.fullmatch(r"@time=\S+;account=bob :bob!bob@chatd PRIVMSG #dev :logged in", line)
    bob.send_line("PRIVMSG alice :psst")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG alice :psst"))
    assert ";account=bob :bob!bob@chatd PRIVMSG alice :psst" in line
    carol = joined(server, "carol")
    carol.send_line("a guest")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG #dev :a guest"))
    assert "account=" not in line


def test_an_unregistered_connection_is_closed_after_login_timeout(chatd):
    server = irc_server(chatd, accounts={"login_timeout": 1})
    idle = server.irc_raw()
    idle.send_line("NICK slow")
    lines = idle.expect_closed(timeout=10)
    assert lines[-1].endswith(":*** error: login required"), lines


def test_ownership_from_irc_topic_invite_ban_and_refusals(chatd):
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#club")
    alice.send_line("TOPIC #club :members only")
    alice.expect(":alice!alice@chatd TOPIC #club :members only")
    alice.send_line("MODE #club +i")
    alice.expect(":alice!alice@chatd MODE #club +i")
    alice.send_line("MODE #club +t")
    alice.expect(":alice!alice@chatd MODE #club +t")
    alice.send_line("MODE #club")
    alice.expect(":chatd 324 alice #club +int")
    alice.numeric("329")
    bob = server.irc("bob")
    bob.send_line("JOIN #club")
    bob.expect(":chatd 473 bob #club :club is invite-only")
    bob.send_line("TOPIC #club :mine")
    bob.expect(":chatd 442 bob #club :You're not on that channel")
    alice.send_line("INVITE bob #club")
    alice.expect(":chatd 341 alice bob :#club")
    bob.expect(":alice!alice@chatd INVITE bob #club")
    bob.send_line("JOIN #club")
    bob.expect(":bob!bob@chatd JOIN #club")
    bob.expect(":chatd 332 bob #club :members only")
    bob.send_line("TOPIC #club :mine")
    bob.wait_for(":chatd 482 bob #club :you are not an operator of club")
    carol = server.connect()
    carol.set_nick("carol")
    alice.send_line("MODE #club +b carol")
    alice.wait_for(":alice!alice@chatd MODE #club +b carol!*@*")
    alice.send_line("MODE #club b")
    alice.expect(":chatd 367 alice #club :carol!*@*")  # (RFC 2812: no setter, no time)
    alice.expect(":chatd 368 alice #club :End of channel ban list")
    carol.send_line("/join club")
    carol.expect("*** error: you are banned from club")


def test_chatctl_list_and_metrics_show_the_protocol(chatd):
    server, port = start(chatd, irc={"irc_port": free_port()})
    server.connect().set_nick("bob")
    server.irc("alice")
    rows = {row["nick"]: row for row in json.loads(ctl(server, "--json", "list"))}
    assert (rows["alice"]["protocol"], rows["bob"]["protocol"]) == ("irc", "line")
    table = ctl(server, "list").splitlines()
    assert table[0].split()[-1] == "PROTOCOL"
    assert [line.split()[-1] for line in table[1:]] == ["line", "irc"]  # by id: bob first
    samples = wait_metric(port, "chatd_clients", lambda v: v == 2)
    assert value(samples, "chatd_clients_by_protocol", protocol="irc") == 1
    assert value(samples, "chatd_clients_by_protocol", protocol="line") == 1
    alice = server.irc("alicia")
    alice.send_line("NICK bob")  # (an IRC nick change of a nick held by a line client)
    alice.wait_for(":chatd 433 alicia bob :nick bob is already in use")
    ctl(server, "broadcast", "maintenance at noon")  # in no room: told directly
    alice.wait_for(":chatd NOTICE alicia :[admin] maintenance at noon")


def test_an_upgrade_keeps_irc_clients_their_rooms_and_capabilities(chatd):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    alice = server.irc("alice", caps=("echo-message",))
    alice.send_line("JOIN #dev,#ops")
    alice.numeric("366")
    alice.numeric("366")
    bob.expect("*** alice joined dev")
    idle = server.irc("carol")  # registered, in no room
    waiting = server.irc_raw()  # not registered yet: it finishes after the upgrade
    waiting.send_line("NICK dave")
    upgrade(server)
    bob.send_line("after the upgrade")
    alice.expect(":bob!bob@chatd PRIVMSG #dev :after the upgrade")
    alice.send_line("PRIVMSG #dev :still here")
    alice.expect(":alice!alice@chatd PRIVMSG #dev :still here")  # echo-message kept
    bob.expect("<alice> still here")
    alice.send_line("PRIVMSG #ops :ops too")
    alice.expect(":alice!alice@chatd PRIVMSG #ops :ops too")
    idle.send_line("JOIN #dev")
    idle.expect(":carol!carol@chatd JOIN #dev")
    waiting.send_line("USER dave 0 * :dave")
    waiting.wait_for(":chatd 001 dave :Welcome to chatd, dave!dave@chatd")
    bob.expect("*** carol joined dev")
    bob.expect_silence()


def test_an_upgrade_that_turns_the_irc_listener_on(chatd):
    """irc_port added to the config file of a chatd without one: the running chatd binds it
    before it hands over (reexec.py), and the new image serves IRC beside the clients kept."""
    server = chatd()
    bob = joined(server, "bob")
    port = free_port()
    sections = tomllib.loads(server.config_path.read_text())
    server.config_path.write_text(toml_dumps({**sections, "irc": {"irc_port": port}}))
    upgrade(server)
    server.irc_port = port
    alice = server.irc("alice")
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    bob.expect("*** alice joined dev")
    bob.send_line("hello irc")
    alice.expect(":bob!bob@chatd PRIVMSG #dev :hello irc")


def test_what_an_account_missed_is_replayed_on_its_join_with_server_time(chatd):
    server = irc_server(chatd)
    line = server.connect()
    register(line, "alice")
    line.join("dev")
    bob = joined(server, "bob")
    line.send_line("/quit")
    bob.wait_for("*** alice left dev (quit)")
    bob.send_line("while you were away")
    bob.sync()
    alice = server.irc("alice", caps=("server-time",), password=PASSWORD)
    alice.send_line("JOIN #dev")
    alice.wait_for(lambda line: line.endswith(":alice!alice@chatd JOIN #dev"))
    alice.expect(":chatd NOTICE alice :*** 1 line you missed in #dev")
    missed = alice.read_line()
    assert re.fullmatch(r"@time=\S+Z :bob!bob@chatd PRIVMSG #dev :while you were away",
                        missed), missed
    alice.send_line("PART #dev")
    alice.send_line("JOIN #dev")  # once: a second JOIN replays nothing it missed
    alice.wait_for(lambda line: line.endswith(" PART #dev"))
    alice.wait_for(lambda line: line.endswith(":alice!alice@chatd JOIN #dev"))
    assert not any("you missed" in line for line in alice.sync())


def test_user_modes(chatd):
    server = irc_server(chatd)
    alice = server.irc("alice")
    alice.send_line("MODE alice +i")  # what irssi sends after registering
    alice.expect(":alice!alice@chatd MODE alice :+i")
    alice.send_line("MODE alice")
    alice.expect(":chatd 221 alice :+i")
    alice.send_line("MODE alice +x")
    alice.expect(":chatd 501 alice :Unknown MODE flag")
    alice.send_line("MODE bob +i")
    alice.expect(":chatd 502 alice :Can't change mode for other users")


def test_who_whois_whowas_and_channel_numerics(chatd):
    server = irc_server(chatd)
    alice = server.irc("alice", caps=("multi-prefix",))
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    bob = server.irc_raw()
    bob.send_line("NICK bob")
    bob.send_line("USER bobby 0 * :Bob the Builder")
    bob.numeric("376")
    bob.send_line("JOIN #dev")
    bob.numeric("366")
    alice.send_line("MODE #dev +v alice")
    alice.wait_for(":alice!alice@chatd MODE #dev +v alice")
    alice.send_line("WHO #dev")
    alice.expect(":chatd 352 alice #dev alice chatd chatd alice H@+ :0 alice the tester")
    alice.expect(":chatd 352 alice #dev bobby chatd chatd bob H :0 Bob the Builder")
    alice.expect(":chatd 315 alice #dev :End of WHO list")
    alice.send_line("WHO b*")
    alice.expect(":chatd 352 alice * bobby chatd chatd bob H :0 Bob the Builder")
    alice.expect(":chatd 315 alice b* :End of WHO list")
    alice.send_line("WHOIS bob")
    alice.expect(":chatd 311 alice bob bobby chatd * :Bob the Builder")
    alice.expect(":chatd 312 alice bob chatd :chatd")
    alice.expect(":chatd 319 alice bob :#dev")
    alice.wait_for(":chatd 318 alice bob :End of /WHOIS list")
    bob.send_line("QUIT :bye")
    bob.expect_closed()
    alice.expect(":bob!bob@chatd QUIT :quit: bye")
    alice.send_line("WHOWAS bob")
    alice.expect(":chatd 314 alice bob bobby chatd * :Bob the Builder")
    alice.wait_for(":chatd 369 alice bob :End of WHOWAS")
    alice.send_line("WHOWAS nobody")
    alice.expect(":chatd 406 alice nobody :There was no such nickname")
    alice.expect(":chatd 369 alice nobody :End of WHOWAS")
    alice.send_line("TOPIC #nowhere")
    alice.expect(":chatd 403 alice #nowhere :No such channel")
    alice.send_line("MODE #dev +o ghost")
    alice.expect(":chatd 401 alice ghost :No such nick/channel")
    carol = server.irc("carol")
    alice.send_line("MODE #dev +o carol")
    alice.expect(":chatd 441 alice carol #dev :They aren't on that channel")
    carol.send_line("TOPIC #dev")
    carol.expect(":chatd 442 carol #dev :You're not on that channel")
    alice.send_line("TOPIC #dev :hello")
    alice.wait_for(":alice!alice@chatd TOPIC #dev :hello")
    alice.send_line("TOPIC #dev")
    alice.expect(":chatd 332 alice #dev :hello")
    alice.expect(":chatd 333 alice #dev alice :0")


def test_live_lines_carry_server_time_and_a_channel_notice_stays_a_notice(chatd):
    server = irc_server(chatd)
    bob = joined(server, "bob")
    timed = server.irc("alice", caps=("server-time",))
    plain = server.irc("carol")
    for client in (timed, plain):
        client.send_line("JOIN #dev")
        client.numeric("366")
    bob.send_line("hello")
    line = timed.wait_for(lambda line: line.endswith("PRIVMSG #dev :hello"))
    assert re.fullmatch(r"@time=\S+Z :bob!bob@chatd PRIVMSG #dev :hello", line), line
    plain.wait_for(":bob!bob@chatd PRIVMSG #dev :hello")  # untagged
    plain.send_line("NOTICE #dev :brb")
    timed.wait_for(lambda line: line.endswith(":carol!carol@chatd NOTICE #dev :brb"))
    bob.wait_for("-carol- brb")
    timed.send_line("CAP REQ :-server-time")  # dropped while in a room
    timed.wait_for(":chatd CAP alice ACK -server-time")
    bob.send_line("untimed now")
    timed.wait_for(":bob!bob@chatd PRIVMSG #dev :untimed now")


def test_secret_and_no_external_modes(chatd):
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#hidden")
    alice.send_line("MODE #hidden +sn")  # +n: every room has it from the start
    alice.expect(":alice!alice@chatd MODE #hidden +s")
    alice.send_line("MODE #hidden +tl-i 5")  # -i refused (not set), the rest made together
    alice.expect(":alice!alice@chatd MODE #hidden +tl 5")
    alice.expect(":chatd NOTICE alice :*** error: mode i is not set on hidden")
    alice.send_line("MODE #hidden")
    alice.expect(":chatd 324 alice #hidden +lnst 5")
    alice.numeric("329")
    alice.send_line("NAMES #hidden")
    alice.expect(":chatd 353 alice @ #hidden :@alice")
    alice.numeric("366")
    alice.send_line("LIST")
    alice.expect(":chatd 322 alice #hidden 1 :")
    bob = server.irc("bob")
    bob.send_line("LIST")
    bob.expect(":chatd 323 bob :End of /LIST")  # not a member: a secret room is not listed
    bob.send_line("PRIVMSG #hidden :from outside")
    bob.expect(":chatd 404 bob #hidden :Cannot send to channel")


def test_minus_n_lets_a_non_member_send_to_the_room(chatd):
    """Every room starts ``+n``; after ``MODE -n`` an IRC client that is not a member may
    send it a line (PRIVMSG, an action, NOTICE, TAGMSG): its members see it, on both
    protocols, and ``echo-message`` echoes it. A ban or ``+m`` still keeps it out."""
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#open", caps=["message-tags"])
    carol = joined(server, "carol", "open")
    alice.expect(":carol!carol@chatd JOIN #open")
    bob = server.irc("bob", caps=["echo-message", "message-tags"])
    bob.send_line("PRIVMSG #open :knock knock")
    bob.expect(":chatd 404 bob #open :Cannot send to channel")
    alice.send_line("MODE #open -n")
    alice.expect(":alice!alice@chatd MODE #open -n")
    carol.wait_for("*** alice set mode -n on open")
    bob.send_line("PRIVMSG #OPEN :from outside")
    relayed = r"@msgid=\w+ :bob!bob@chatd PRIVMSG #open :from outside"
    assert re.fullmatch(relayed, bob.read_line())  # the echo: bob is not a member
    assert re.fullmatch(relayed, alice.read_line())
    carol.expect("<bob> from outside")
    bob.send_line("PRIVMSG #open :\x01ACTION waves in\x01")
    carol.expect("* bob waves in")
    bob.send_line("NOTICE #open :a notice")
    alice.wait_for(lambda line: line.endswith(":bob!bob@chatd NOTICE #open :a notice"))
    bob.send_line("@+typing=active TAGMSG #open")
    alice.wait_for(lambda line: "+typing=active" in line
                   and line.endswith(" :bob!bob@chatd TAGMSG #open"))
    alice.send_line("MODE #open +b bob")
    alice.wait_for(":alice!alice@chatd MODE #open +b bob!*@*")
    bob.send_line("PRIVMSG #open :banned now")
    bob.wait_for(":chatd 404 bob #open :Cannot send to channel")
    alice.send_line("MODE #open -b bob")
    alice.wait_for(":alice!alice@chatd MODE #open -b bob!*@*")
    alice.send_line("MODE #open +m")
    alice.wait_for(":alice!alice@chatd MODE #open +m")
    bob.send_line("PRIVMSG #open :moderated now")
    bob.wait_for(":chatd 404 bob #open :Cannot send to channel")
    bob.send_line("PRIVMSG #nowhere :hello?")
    bob.expect(":chatd 404 bob #nowhere :Cannot send to channel")
    alice.send_line("PRIVMSG #open :last")  # nothing of bob's refused lines came before it
    carol.wait_for("<alice> last")
    assert not any("now" in line for line in alice.received + carol.received
                   if "bob!" in line or "<bob>" in line)


def test_an_irc_client_s_lines_are_logged_with_log_messages(chatd):
    """``log_messages``: an IRC client's channel line is logged with its channel (it may be
    in no room: the line protocol's current room does not apply)."""
    server = irc_server(chatd, logging={"log_messages": True})
    alice = irc_joined(server, "alice", "#dev")
    alice.send_line("PRIVMSG #dev :logged")
    server.wait_event("message", nick="alice", room="dev", text="logged")
    alice.send_line("PART #dev")
    alice.wait_for(":alice!alice@chatd PART #dev")
    joined(server, "bob", "dev")
    alice.send_line("PRIVMSG bob :private, roomless")
    server.wait_event("message", nick="alice", to="bob", text="private, roomless")


def test_a_member_limit_holds_for_line_and_irc_joiners(chatd):
    server = irc_server(chatd)
    alice = irc_joined(server, "alice", "#small")
    alice.send_line("MODE #small +l 2")
    alice.expect(":alice!alice@chatd MODE #small +l 2")
    alice.send_line("MODE #small")
    alice.expect(":chatd 324 alice #small +ln 2")
    alice.numeric("329")
    joined(server, "bob", "small")
    alice.expect(":bob!bob@chatd JOIN #small")
    carol = server.irc("carol")
    carol.send_line("JOIN #small")
    carol.expect(":chatd 471 carol #small :small is full (2 members)")
    dave = server.connect()
    dave.send_line("/join small")
    dave.expect("*** error: small is full (2 members)")
    alice.send_line("MODE #small +l 0")
    alice.expect(":chatd 696 alice #small l 0 :Invalid limit mode parameter")
    alice.send_line("MODE #small -l")
    alice.expect(":alice!alice@chatd MODE #small -l")
    carol.send_line("JOIN #small")
    carol.expect(":carol!carol@chatd JOIN #small")


def test_irc_operators_oper_kill_and_wallops(chatd):
    server = irc_server(chatd, irc={"irc_operators": ["opal"]})
    register(server.connect(), "opal")
    register(server.connect(), "mallory")
    opal = server.irc("opal", password=PASSWORD)
    mallory = server.irc("mallory", password=PASSWORD)
    mallory.send_line(f"OPER mallory {PASSWORD}")  # an account, but not an operator's
    mallory.expect(":chatd 491 mallory :No O-lines for your host")
    opal.send_line("OPER opal wrong")
    opal.expect(":chatd 464 opal :Password incorrect")
    opal.send_line("KILL mallory :no")
    opal.expect(":chatd 481 opal :Permission Denied- You're not an IRC operator")
    opal.send_line(f"OPER opal {PASSWORD}")
    opal.expect(":chatd 381 opal :You are now an IRC operator")
    opal.expect(":opal!opal@chatd MODE opal :+o")
    assert PASSWORD not in server.stderr_text()
    carol = server.irc("carol")
    carol.send_line("MODE carol +w")
    carol.expect(":carol!carol@chatd MODE carol :+w")
    carol.send_line("WHOIS opal")
    carol.wait_for(":chatd 313 carol opal :is an IRC operator")
    opal.send_line("WALLOPS :maintenance soon")
    carol.wait_for(":opal!opal@chatd WALLOPS :maintenance soon")
    line = server.connect()
    line.set_nick("bob")
    opal.send_line("KILL bob :spamming")
    assert "*** you were kicked: spamming" in line.expect_closed()
    mallory.send_line("WALLOPS :me too")
    mallory.expect(":chatd 481 mallory :Permission Denied- You're not an IRC operator")
