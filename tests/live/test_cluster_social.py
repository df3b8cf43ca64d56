"""Being social across nodes (SPEC §13): an ignore list holds back another node's lines,
actions and private messages; ``/away`` answers a ``/msg`` from another node; ``/whois``
describes a client of another node. Real chatd nodes on one real ``redis-server``, real
TCP clients."""

from __future__ import annotations

import re
import signal

from support.cluster import alice_and_bob, named
from support.waiting import wait_until
from test_cluster_accounts import PASSWORD, log_in


def test_ignore_holds_back_another_nodes_lines_actions_and_messages(cluster):
    _redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    carol = named(b, "carol")
    alice.wait_for(lambda line: line.endswith(" is now known as carol"))
    alice.send_line("/ignore bob")
    alice.expect("*** ignoring bob")
    bob.send_line("from bob")
    bob.send_line("/me waves from node2")
    bob.send_line("/msg alice psst")
    bob.wait_for("*** -> alice: psst")
    carol.send_line("from carol")  # after bob's, on the same node: it comes after them
    alice.expect("<carol> from carol")
    alice.expect_silence()
    alice.send_line("/unignore bob")
    alice.expect("*** no longer ignoring bob")
    bob.send_line("heard again")
    alice.expect("<bob> heard again")


def test_away_answers_a_msg_from_another_node(cluster):
    _redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line("/away in a meeting")
    alice.expect("*** you are away: in a meeting")
    bob.send_line("/msg alice ping")
    bob.expect("*** -> alice: ping")
    bob.expect("*** alice is away: in a meeting")
    alice.expect("*bob* ping")
    bob.send_line("/who")  # the away line crossed before bob's /msg was answered
    bob.wait_for("*** in lobby: alice (away), bob")
    alice.send_line("/back")
    alice.expect("*** you are back")
    bob.send_line("/msg alice again")
    bob.expect("*** -> alice: again")
    alice.expect("*bob* again")
    bob.expect_silence()
    bob.send_line("/who")
    bob.wait_for("*** in lobby: alice, bob")


def test_whois_describes_a_client_of_another_node(cluster):
    _redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("*** registered alice")
    alice.join("dev")
    alice.send_line("/away back soon")
    alice.expect("*** you are away: back soon")
    alice.sync()
    whois = []

    def away_shown() -> bool:  # node1's publisher writes the member record: a few ms
        bob.send_line("/whois alice")
        whois.append(bob.wait_for(lambda ln: ln.startswith(("*** alice: ", "*** error: "))))
        return "away" in whois[-1]

    wait_until(away_shown, 10.0, "alice's away in her member record")
    assert whois[-1] == "*** alice: account alice; in dev; on node1; away: back soon", whois
    bob.send_line("/whois bob")
    assert re.fullmatch(r"\*\*\* bob: guest; in lobby; idle \d+s",
                        bob.wait_for(lambda ln: ln.startswith("*** bob: ")))
    bob.send_line("/whois nobody")
    bob.expect("*** error: no such nick nobody")
    log_in(b, "alice")  # the account moves: node1's connection is closed
    alice.wait_for("*** logged in elsewhere")



def test_a_rooms_owners_topic_and_modes_are_the_clusters(cluster):
    """Set on node1, in force on node2: the topic a joiner there is told, +i refusing a
    stranger there, an operator there (an account named on node1) who may set the topic,
    and /who's marks."""
    _redis, (a, b) = cluster()
    alice = named(a, "alice")
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("*** registered alice")
    bob = named(b, "bob")
    bob.send_line(f"/register {PASSWORD}")
    bob.expect("*** registered bob")
    carol = named(b, "carol")
    alice.join("dev")
    alice.send_line("/register-room")
    alice.expect("*** dev is registered to alice")
    alice.send_line("/topic cluster wide")
    alice.expect("*** alice set the topic: cluster wide")
    alice.send_line("/op bob")  # bob is on node2: his nick, which is his account
    alice.expect("*** alice gave operator status to bob")
    alice.send_line("/mode +i")
    alice.expect("*** alice set mode +i on dev")
    alice.send_line("/invite bob")
    alice.expect("*** invited bob to dev")
    bob.wait_for("*** alice invited you to dev (/join dev)")
    bob.send_line("/join dev")
    bob.wait_for("*** you joined dev (2 members)")
    bob.expect("*** topic of dev: cluster wide")
    carol.send_line("/join dev")
    carol.wait_for("*** error: dev is invite-only")
    bob.send_line("/who")
    bob.wait_for("*** in dev: @alice, @bob")
    bob.send_line("/topic set on node2")
    alice.wait_for("*** bob set the topic: set on node2")
    alice.send_line("/topic")
    alice.wait_for("*** topic of dev: set on node2")
    dave = named(a, "dave")  # on node1, kicked by an operator on node2
    alice.send_line("/invite dave")
    dave.wait_for("*** alice invited you to dev (/join dev)")
    dave.join("dev")
    bob.wait_for("*** dave joined dev")
    bob.send_line("/kick dave off topic")
    dave.wait_for("*** you were kicked from dev by bob: off topic")
    dave.expect("*** you joined lobby (2 members)")
    alice.wait_for("*** dave was kicked from dev by bob: off topic")
    bob.wait_for("*** dave was kicked from dev by bob: off topic")


def test_a_registered_room_outlives_the_kill_9_of_its_founders_node(cluster):
    redis, (a, b) = cluster()
    alice = named(a, "alice")
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("*** registered alice")
    alice.join("dev")
    alice.send_line("/register-room")
    alice.expect("*** dev is registered to alice")
    alice.send_line("/topic kept in redis")
    alice.expect("*** alice set the topic: kept in redis")
    alice.send_line("/mode +t")
    alice.expect("*** alice set mode +t on dev")
    watcher = named(b, "watcher")

    def known_on_node2() -> bool:
        watcher.send_line("/list")
        return "*** dev (1 member): kept in redis" in watcher.wait_for(
            lambda line: line.startswith("*** dev ("))

    wait_until(known_on_node2, 10.0, "dev's topic known on node2")
    watcher.send_line("/join dev")
    watcher.wait_for(lambda line: line.startswith("*** you joined dev"))
    watcher.expect("*** topic of dev: kept in redis")
    a.terminate(sig=signal.SIGKILL)
    watcher.wait_for("*** alice left dev (node lost)", timeout=10)
    late = named(b, "late")
    late.send_line("/join dev")
    late.wait_for("*** you joined dev (2 members)")
    late.expect("*** topic of dev: kept in redis")
    watcher.send_line("/topic mine")
    watcher.wait_for("*** error: you are not an operator of dev")
    back = log_in(b, "alice")  # back in dev (where she was), told the topic on the way
    assert "*** topic of dev: kept in redis" in back.received, back.received
    back.send_line("/topic still alices")  # the founder, on the node left
    watcher.wait_for("*** alice set the topic: still alices")
    assert redis.client().hget("chatd:rooms", "dev") is not None
    assert "kept in redis" not in str(redis.client().hget("chatd:rooms", "dev"))  # encrypted
