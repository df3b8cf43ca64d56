"""Being social across nodes (SPEC §13): an ignore list holds back another node's lines,
actions and private messages; ``/away`` answers a ``/msg`` from another node; ``/whois``
describes a client of another node. Real chatd nodes on one real ``redis-server``, real
TCP clients."""

from __future__ import annotations

import re

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
    alice.send_line("/back")
    alice.expect("*** you are back")
    bob.send_line("/msg alice again")
    bob.expect("*** -> alice: again")
    alice.expect("*bob* again")
    bob.expect_silence()


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


def test_rooms_cannot_be_registered_in_cluster_mode_yet(cluster):
    _redis, (a, _b) = cluster()
    alice = named(a, "alice")
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("*** registered alice")
    alice.join("dev")
    alice.send_line("/register-room")
    alice.expect("*** error: registered rooms are not available in cluster mode yet")
    alice.send_line("/topic ours")  # an unregistered room's state: this node's own
    alice.expect("*** alice set the topic: ours")
