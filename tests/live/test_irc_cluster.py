"""The IRC listener across two cluster nodes (SPEC §14, §8): IRC and line clients on
different nodes share rooms, nicks and private messages; real chatd processes on a real
redis-server."""

from __future__ import annotations

import signal

from support.cluster import NODE_TIMEOUT, named
from support.metrics import free_port
from test_irc import irc_joined


def irc_nodes(chatd, redis_server, redis=None):
    """Two nodes on one Redis (``redis``, or a new one), each with an IRC listener of its own."""
    redis = redis or redis_server()
    nodes = [chatd(cluster={"redis_url": redis.url, "node_name": f"node{i + 1}",
                            "node_timeout": NODE_TIMEOUT}, irc={"irc_port": free_port()})
             for i in range(2)]
    for node in nodes:
        node.wait_event("cluster_joined")
    return nodes


def test_irc_and_line_clients_on_two_nodes_share_a_room(chatd, redis_server):
    a, b = irc_nodes(chatd, redis_server)
    bob = named(b, "bob")
    bob.send_line("/join dev")
    bob.wait_for("*** you joined dev (1 member)")
    alice = a.irc("alice")
    alice.send_line("JOIN #dev")
    alice.expect(":alice!alice@chatd JOIN #dev")
    alice.expect(":chatd 353 alice = #dev :alice bob")  # bob: a member on the other node
    bob.wait_for("*** alice joined dev")
    bob.send_line("across nodes")
    alice.wait_for(":bob!bob@chatd PRIVMSG #dev :across nodes")
    alice.send_line("PRIVMSG #dev :and back")
    bob.wait_for("<alice> and back")
    alice.send_line("PRIVMSG #dev :\x01ACTION waves\x01")
    bob.wait_for("* alice waves")
    bob.send_line("/nick robert")
    alice.wait_for(":bob!bob@chatd NICK :robert")
    alice.send_line("PRIVMSG robert :private across")
    bob.wait_for("*alice* private across")
    bob.send_line("/msg alice and a reply")
    alice.wait_for(":robert!robert@chatd PRIVMSG alice :and a reply")
    carol = b.irc("carol")  # IRC on both nodes
    carol.send_line("JOIN #dev")
    alice.wait_for(":carol!carol@chatd JOIN #dev")
    carol.send_line("PRIVMSG #dev :irc to irc")
    alice.wait_for(":carol!carol@chatd PRIVMSG #dev :irc to irc")
    bob.wait_for("<carol> irc to irc")
    bob.send_line("/quit later")
    alice.wait_for(":robert!robert@chatd QUIT :quit: later")
    carol.wait_for(":robert!robert@chatd QUIT :quit: later")


def test_nicks_are_one_namespace_and_a_roomless_irc_client_is_reachable(chatd, redis_server):
    a, b = irc_nodes(chatd, redis_server)
    named(b, "bob")
    taken = a.irc_raw()
    taken.send_line("NICK bob")
    taken.send_line("USER x 0 * :x")
    taken.wait_for(":chatd 433 * bob :nick bob is already in use")
    alice = a.irc("alice")  # in no room: reached through its member record
    bob = b.connect()
    bob.send_line("/msg alice hello roomless")
    bob.wait_for("*** -> alice: hello roomless")
    alice.wait_for(":" + bob.nick + "!" + bob.nick + "@chatd PRIVMSG alice :hello roomless")
    dave = b.irc("dave")
    dave.send_line("WHOIS alice")
    dave.wait_for(":chatd 311 dave alice alice chatd * :alice the tester")
    dave.wait_for(":chatd 312 dave alice node1 :chatd")


def test_a_rename_and_a_quit_from_another_node_reach_a_member_of_several_rooms_once(
        chatd, redis_server):
    """bob (node2) is in #c, #a and #b; alice (node1) shares #a and #b with it. Each of bob's
    rooms carries its rename and its quit across, and alice reads each once (core/once.py:
    the rule needs only the event and node1's members)."""
    a, b = irc_nodes(chatd, redis_server)
    alice = a.irc("alice")
    for channel in ("#a", "#b"):
        alice.send_line(f"JOIN {channel}")
        alice.numeric("366")
    bob, dave = b.irc("bob"), b.irc("dave")
    for channel in ("#c", "#a", "#b"):
        bob.send_line(f"JOIN {channel}")
        bob.numeric("366")
    alice.wait_for(":bob!bob@chatd JOIN #b")
    dave.send_line("JOIN #b")
    dave.numeric("366")
    alice.wait_for(":dave!dave@chatd JOIN #b")
    bob.send_line("NICK robert")
    bob.send_line("PRIVMSG #b :renamed")  # after the rename in every room, on one stream
    alice.wait_for(":robert!robert@chatd PRIVMSG #b :renamed")
    assert alice.received.count(":bob!bob@chatd NICK :robert") == 1
    bob.send_line("QUIT :bye")
    dave.wait_for(":robert!robert@chatd QUIT :quit: bye")
    dave.send_line("PRIVMSG #b :gone")  # node2 published every room's QUIT before this
    alice.wait_for(":dave!dave@chatd PRIVMSG #b :gone")
    assert [line for line in alice.received if " QUIT " in line] == [
        ":robert!robert@chatd QUIT :quit: bye"]


def test_away_notify_across_nodes(chatd, redis_server):
    """alice (node1, away-notify) is told when bob (node2) goes away and comes back, and when
    carol (node2), away already, joins her channel."""
    a, b = irc_nodes(chatd, redis_server)
    alice = a.irc("alice", caps=("away-notify",))
    alice.send_line("JOIN #a")
    alice.numeric("366")
    bob = b.irc("bob")
    bob.send_line("JOIN #a")
    bob.numeric("366")
    alice.wait_for(":bob!bob@chatd JOIN #a")
    bob.send_line("AWAY :at lunch")
    alice.wait_for(":bob!bob@chatd AWAY :at lunch")
    bob.send_line("AWAY")
    alice.wait_for(":bob!bob@chatd AWAY")
    carol = named(b, "carol")
    carol.send_line("/away on the phone")
    carol.wait_for("*** you are away: on the phone")
    carol.send_line("/join a")
    alice.wait_for(":carol!carol@chatd JOIN #a")
    alice.expect(":carol!carol@chatd AWAY :on the phone")


def test_message_tags_cross_nodes_with_one_msgid(chatd, redis_server):
    """A PRIVMSG's client-only tags and msgid, a TAGMSG to a channel and one to a nick reach
    a message-tags client on the other node; its sender's echo has the same msgid, and a
    client there that did not ask is sent neither tags nor the TAGMSG."""
    from test_irc_tags import msgid, next_privmsg, tags_of

    a, b = irc_nodes(chatd, redis_server)
    alice = a.irc("alice", caps=("message-tags", "echo-message"))
    bob = b.irc("bob", caps=("message-tags",))
    carol = b.irc("carol")
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    for client in (bob, carol):  # one by one: each in the room once alice sees it join
        client.send_line("JOIN #dev")
        client.numeric("366")
        alice.wait_for(f":{client.nick}!{client.nick}@chatd JOIN #dev")
    alice.send_line("@+draft/reply=x1;own=no PRIVMSG #dev :tagged across")
    echo, relayed = next_privmsg(alice), next_privmsg(bob)
    assert relayed.endswith(" :alice!alice@chatd PRIVMSG #dev :tagged across"), relayed
    assert tags_of(relayed)["+draft/reply"] == "x1" and "own" not in tags_of(relayed)
    assert msgid(echo) == msgid(relayed)
    alice.send_line("@+typing=active TAGMSG #dev")
    echo, relayed = next_privmsg(alice), next_privmsg(bob)
    assert relayed.endswith(" :alice!alice@chatd TAGMSG #dev") and msgid(echo) == msgid(relayed)
    alice.send_line("@+typing=paused TAGMSG bob")
    next_privmsg(alice)
    line = next_privmsg(bob)
    assert line.endswith(" :alice!alice@chatd TAGMSG bob") and tags_of(line)["+typing"] == "paused"
    alice.send_line("PRIVMSG #dev :plain after")
    assert next_privmsg(carol) == ":alice!alice@chatd PRIVMSG #dev :tagged across"
    assert next_privmsg(carol) == ":alice!alice@chatd PRIVMSG #dev :plain after"


def test_account_tag_names_another_nodes_logged_in_speaker(chatd, redis_server):
    """A line carries its speaker's account across nodes: alice (account-tag, node 1) reads
    bob's lines (logged in, node 2) with ``account=bob``: his join, messages in the room and
    in private, topic, rename, invitation and part; and a guest's with none."""
    from test_accounts import PASSWORD, register

    a, b = irc_nodes(chatd, redis_server)
    alice = a.irc("alice", caps=("account-tag",))
    alice.send_line("JOIN #dev")
    alice.numeric("366")
    bob = named(b, "bob")
    register(bob, "bob")
    bob.send_line("/join dev")
    assert alice.wait_for(lambda line: line.endswith(":bob!bob@chatd JOIN #dev")) == \
        "@account=bob :bob!bob@chatd JOIN #dev"
    bob.send_line("/topic by an account")
    assert alice.wait_for(lambda line: " TOPIC " in line) == \
        "@account=bob :bob!bob@chatd TOPIC #dev :by an account"
    bob.send_line("logged in over there")
    line = alice.wait_for(lambda text: text.endswith(" PRIVMSG #dev :logged in over there"))
    assert line == "@account=bob :bob!bob@chatd PRIVMSG #dev :logged in over there"
    bob.send_line("/msg alice psst")
    assert alice.wait_for(lambda text: "psst" in text) == \
        "@account=bob :bob!bob@chatd PRIVMSG alice :psst"
    carol = named(b, "carol")
    carol.send_line("/join dev")
    assert alice.wait_for(lambda text: " JOIN " in text) == ":carol!carol@chatd JOIN #dev"
    carol.send_line("a guest")
    assert alice.wait_for(lambda text: "a guest" in text) == ":carol!carol@chatd PRIVMSG #dev :a guest"
    bob.send_line("/join lobby")
    assert alice.wait_for(lambda text: " PART " in text).startswith(
        "@account=bob :bob!bob@chatd PART #dev")
    erin = named(b, "erin")  # an account; then a guest in the room logs in to it
    register(erin, "erin")
    erin.send_line("/quit")
    carol.send_line(f"/login erin {PASSWORD}")
    assert alice.wait_for(lambda text: " NICK " in text) == \
        "@account=erin :carol!carol@chatd NICK :erin"


def test_whois_shows_another_nodes_irc_client_as_its_user_gave_it(chatd, redis_server):
    """An IRC client's user name and real name travel in its member record: WHOIS, WHO and
    WHO #room of it from another node show what its USER said, and a line client's show its
    nick."""
    a, b = irc_nodes(chatd, redis_server)
    alice = a.irc("alice")  # USER alice 0 * :alice the tester
    dave = named(a, "dave")
    bob = b.irc("bob")
    bob.send_line("WHOIS alice")
    assert bob.numeric("311") == ":chatd 311 bob alice alice chatd * :alice the tester"
    bob.send_line("WHO alice")
    assert bob.numeric("352").endswith(" * alice chatd chatd alice H :0 alice the tester")
    bob.send_line("WHOIS dave")
    assert bob.numeric("311") == ":chatd 311 bob dave dave chatd * :dave"
    bob.send_line("JOIN #dev")
    bob.numeric("366")
    alice.send_line("JOIN #dev")
    bob.wait_for(":alice!alice@chatd JOIN #dev")
    dave.send_line("/join dev")
    bob.wait_for(":dave!dave@chatd JOIN #dev")
    bob.send_line("WHO #dev")
    rows = sorted(bob.numeric("352") for _ in range(3))
    assert [row.split(" ", 3)[3] for row in rows] == [
        "#dev alice chatd chatd alice H :0 alice the tester",
        "#dev bob chatd chatd bob H@ :0 bob the tester",
        "#dev dave chatd chatd dave H :0 dave"], rows


def test_minus_n_takes_a_line_from_a_node_where_the_room_has_no_member(chatd, redis_server):
    """A room's ``-n`` holds on every node: carol, on a node where the room has no member,
    is refused while it is ``+n`` and reaches its members on the other node once it is
    not; history keeps her line."""
    a, b = irc_nodes(chatd, redis_server)
    alice = irc_joined(a, "alice", "#open")
    bob = named(a, "bob")
    bob.send_line("/join open")
    alice.wait_for(":bob!bob@chatd JOIN #open")
    carol = b.irc("carol")
    carol.send_line("PRIVMSG #open :knock knock")
    carol.expect(":chatd 404 carol #open :Cannot send to channel")
    alice.send_line("MODE #open -n")
    bob.wait_for("*** alice set mode -n on open")
    alice.send_line("PRIVMSG carol :go")  # after the room's new state, down one stream
    carol.wait_for(":alice!alice@chatd PRIVMSG carol :go")
    carol.send_line("PRIVMSG #open :hello from node2")
    alice.wait_for(":carol!carol@chatd PRIVMSG #open :hello from node2")
    bob.wait_for("<carol> hello from node2")
    bob.send_line("/history 5")
    bob.wait_for(lambda line: line.endswith("<carol> hello from node2"))
    assert not any("knock" in line for line in alice.received + bob.received)


def test_who_mask_answers_with_another_nodes_clients_that_share_a_room(chatd, redis_server):
    """WHO MASK also lists another node's clients, those that share a room with the asker
    (their user modes are not known here: each is taken as ``+i``), with their USER's names;
    one that shares none is not listed."""
    a, b = irc_nodes(chatd, redis_server)
    alice = irc_joined(a, "alice")
    irc_joined(b, "bob")
    alice.wait_for(":bob!bob@chatd JOIN #dev")
    b.irc("bobby")  # on node 2 too, in no room
    named(a, "bobcat")  # a line client of this node: listed as before
    alice.send_line("WHO bob*")
    rows = [alice.numeric("352"), alice.numeric("352")]
    assert [row.split(" ", 3)[3] for row in rows] == [
        "* bob chatd chatd bob H :0 bob the tester", "* bobcat chatd chatd bobcat H :0 bobcat"]
    assert alice.read_line() == ":chatd 315 alice bob* :End of WHO list"


def test_whowas_answers_with_another_nodes_departures(chatd, redis_server):
    """A client that left another node is in WHOWAS as its USER gave its names (a line
    client's are its nick), newest first beside this node's own departures; an element
    written to Redis by someone without the secret is left out, and logged."""
    redis = redis_server()
    a, b = irc_nodes(chatd, redis_server, redis)
    carol = irc_joined(b, "carol")
    bob = irc_joined(a, "bob")
    carol.wait_for(":bob!bob@chatd JOIN #dev")
    dave = named(a, "dave")
    dave.send_line("/join dev")
    carol.wait_for(":dave!dave@chatd JOIN #dev")
    bob.send_line("QUIT :bye")
    carol.wait_for(":bob!bob@chatd QUIT :quit: bye")
    dave.send_line("/quit")
    carol.wait_for(lambda line: line.startswith(":dave!dave@chatd QUIT"))
    carol.send_line("WHOWAS bob")
    assert carol.numeric("314") == ":chatd 314 carol bob bob chatd * :bob the tester"
    carol.wait_for(":chatd 369 carol bob :End of WHOWAS")
    carol.send_line("WHOWAS dave")
    assert carol.numeric("314") == ":chatd 314 carol dave dave chatd * :dave"
    carol.wait_for(":chatd 369 carol dave :End of WHOWAS")

    redis.client().lpush("chatd:whowas", "bob " + "0" * 32 + "forged")
    later = b.irc("bob", realname="bob again")  # on carol's node this time
    later.send_line("QUIT")
    later.expect_closed()
    carol.send_line("WHOWAS bob")
    assert [carol.numeric("314"), carol.numeric("314")] == [
        ":chatd 314 carol bob bob chatd * :bob again",
        ":chatd 314 carol bob bob chatd * :bob the tester"]
    carol.wait_for(":chatd 369 carol bob :End of WHOWAS")
    b.wait_event("cluster_entry_rejected", what="whowas")
    carol.send_line("WHOWAS bob 1")
    assert carol.numeric("314") == ":chatd 314 carol bob bob chatd * :bob again"
    assert carol.read_line(5.0).startswith(":chatd 312 carol bob chatd :")
    carol.expect(":chatd 369 carol bob :End of WHOWAS")


def test_whowas_names_the_clients_of_a_node_that_was_lost(chatd, redis_server):
    """A node killed with its clients: the node that reaps it files them as departures, so
    WHOWAS answers for them on the nodes left, with their USER's names."""
    a, b = irc_nodes(chatd, redis_server)
    carol = irc_joined(a, "carol")
    irc_joined(b, "bob")
    carol.wait_for(":bob!bob@chatd JOIN #dev")
    b.terminate(sig=signal.SIGKILL)
    carol.wait_for(lambda line: line.startswith(":bob!bob@chatd QUIT"),
                   timeout=10 * NODE_TIMEOUT + 5)
    carol.send_line("WHOWAS bob")
    assert carol.numeric("314") == ":chatd 314 carol bob bob chatd * :bob the tester"
    carol.wait_for(":chatd 369 carol bob :End of WHOWAS")
