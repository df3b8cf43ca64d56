"""Cluster mode (docs/cluster.md, docs/protocol.md §8): real chatd nodes on one real Redis.

Each test starts its own ``redis-server`` (tests/support/redisfix.py: free port, no persistence, stopped
by pid) and two or three chatd processes configured with its URL; clients talk to whichever node
over real TCP. Lines that cross nodes arrive a moment after local ones, so every expectation
here waits for its line (with a deadline) instead of assuming an order between nodes.
chatctl across the cluster (list, kick, mute, broadcast, ban): test_cluster_chatctl.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from support.client import ChatClient
from support.cluster import NODE_TIMEOUT, alice_and_bob, greeted, named, wait_all
from support.daemon import cluster_secret
from support.redisfix import free_port
from support.traffic import run_in_threads


def who_until(client: ChatClient, members: int, timeout: float = 20.0) -> None:
    """``/who`` until the lobby has ``members`` (a join on another node reaches this one a
    moment later: one answer may come before it)."""
    deadline = time.monotonic() + timeout
    while True:
        client.send_line("/who")
        who = client.wait_for(lambda line: line.startswith("*** in lobby: "), timeout)
        if who.count(",") == members - 1:
            return
        assert time.monotonic() < deadline, f"{client!r}: {who}"
        client.wait_for(lambda line: line.endswith(" joined lobby")
                        or " is now known as " in line, max(0.1, deadline - time.monotonic()))


# -- one chat across nodes ------------------------------------------------------------------


def test_room_lines_cross_nodes_both_ways(cluster):
    _, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line("hello from node1")
    bob.wait_for("<alice> hello from node1")
    bob.send_line("/me waves from node2")
    alice.wait_for("* bob waves from node2")
    assert not [line for line in alice.received if line.startswith("<alice>")], "no echo"


def test_who_rooms_and_join_count_every_node(cluster):
    _, (a, b) = cluster()
    alice = named(a, "alice")
    bob = named(b, "bob")
    carol = named(b, "carol")
    alice.wait_for(lambda line: line.endswith("is now known as carol"))
    alice.send_line("/who")
    alice.wait_for("*** in lobby: alice, bob, carol")
    bob.send_line("/join dev")
    bob.wait_for("*** you joined dev (1 member)")
    alice.wait_for("*** bob left lobby")
    alice.send_line("/join dev")
    alice.wait_for("*** you joined dev (2 members)")
    bob.wait_for("*** alice joined dev")
    carol.send_line("/rooms")
    carol.wait_for("*** dev (2 members)")
    carol.expect("*** lobby (1 member)")


def test_room_lines_reach_only_that_rooms_members_on_other_nodes(cluster):
    _, (a, b) = cluster()
    alice = named(a, "alice")
    bob = named(b, "bob")
    carol = named(b, "carol")
    for client in (alice, bob):
        client.send_line("/join dev")
        client.wait_for(lambda line: line.startswith("*** you joined dev"))
    alice.wait_for("*** bob joined dev")
    wait_all(carol, "*** alice left lobby", "*** bob left lobby")  # one local, one remote
    alice.send_line("dev only")
    bob.wait_for("<alice> dev only")
    carol.send_line("lobby only")
    carol.expect_silence()
    bob.send_line("/who")
    # the room's maker is its operator on its own node (SPEC §13): whether bob made dev on his
    # node depends on whether alice's join reached it first, so the marks are not this test's
    bob.wait_for(lambda line: line.replace("@", "") == "*** in dev: alice, bob")
    assert "<alice> dev only" not in carol.received


def test_bad_stream_entries_are_skipped_and_the_chat_goes_on(cluster):
    """Whatever else writes to the stream, a node's reader logs what it cannot use and goes
    on: the next good line is delivered, once."""
    redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    client = redis.client()
    for fields in ({"o": "x", "c": "not json"}, {"o": "x", "c": '[["r"], ["nope", 1], 7]'},
                   {"o": "x", "c": '[["r", "lobby", "Said", 5, {"a": 1}]]'},
                   {"o": "x", "c": '[["cmd", "node1", "kick"]]'}, {"o": "x", "junk": "1"}):
        client.xadd("chatd:events", fields)
    alice.send_line("still here")
    bob.wait_for("<alice> still here")
    a.wait_event("cluster_entry_rejected")
    bob.expect_silence()
    assert bob.received.count("<alice> still here") == 1


def test_msg_reaches_a_nick_on_another_node(cluster):
    _, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line("/msg BOB psst")
    alice.wait_for("*** -> bob: psst")
    bob.wait_for("*alice* psst")
    bob.send_line("/msg alice back")
    alice.wait_for("*bob* back")
    bob.send_line("/msg nobody x")
    bob.wait_for("*** error: no such nick nobody")


# -- nicks are unique cluster-wide ----------------------------------------------------------


def test_a_nick_taken_on_one_node_is_taken_on_all(cluster):
    _, (a, b) = cluster()
    alice = named(a, "alice")
    other = greeted(b)
    other.send_line("/nick ALICE")
    other.wait_for("*** error: nick ALICE is already in use")
    alice.close()
    a.wait_event("client_disconnected", nick="alice")  # logged after the claim is released
    other.send_line("/nick alice")
    other.wait_for("*** you are now alice")


def test_guest_nicks_are_unique_across_nodes(cluster):
    _, nodes = cluster()
    clients = run_in_threads(lambda i: nodes[i % 2].connect(), list(range(30)), timeout=30)
    nicks = [c.nick for c in clients]
    assert len(set(n.casefold() for n in nicks)) == len(nicks), nicks


def test_racing_for_the_same_nicks_from_two_nodes_exactly_one_wins_each(cluster):
    _, (a, b) = cluster(limits={"max_clients_per_ip": 100})
    left = [greeted(a) for _ in range(50)]
    right = [greeted(b) for _ in range(50)]
    wanted = [f"n{i}" for i in range(50)]

    def take(pair):
        client, nick = pair
        client.send_line(f"/nick {nick}")
        return client.wait_for(lambda line: line.startswith(("*** you are now", "*** error: nick")),
                               timeout=20)

    replies = run_in_threads(take, list(zip(left + right, wanted + wanted)), timeout=60)
    for i, nick in enumerate(wanted):
        won = [r for r in (replies[i], replies[50 + i]) if r == f"*** you are now {nick}"]
        assert len(won) == 1, (nick, replies[i], replies[50 + i])


# -- delivery: exactly once, in order per sender ----------------------------------------------


def test_every_line_arrives_exactly_once_in_order_across_nodes(cluster):
    _, (a, b) = cluster(limits={"rate": 1000, "burst": 1000})
    clients = [named(node, f"{name}{i}") for node, name in ((a, "a"), (b, "b")) for i in range(10)]
    for client in clients:  # everyone has seen everyone join: the room is complete everywhere
        who_until(client, 20)
    senders = clients[::4]  # a0 a4 a8 b2 b6
    count = 50

    def send(client):
        for k in range(count):
            client.send_line(f"{client.nick} {k}")

    run_in_threads(send, senders, timeout=30)
    for client in clients:
        expected = {s.nick: [f"<{s.nick}> {s.nick} {k}" for k in range(count)]
                    for s in senders if s is not client}
        total = sum(map(len, expected.values()))
        got: list[str] = []
        while len(got) < total:
            line = client.read_line(timeout=20)
            if line.startswith("<"):
                got.append(line)
        for nick, lines in expected.items():
            assert [g for g in got if g.startswith(f"<{nick}> ")] == lines, (client.nick, nick)
        client.expect_silence()


# -- start, stop, loss -----------------------------------------------------------------------


def test_redis_unreachable_at_start_is_one_line_and_exit_1(tmp_path):
    url = f"redis://:sesame@127.0.0.1:{free_port()}/0"
    config = tmp_path / "c.toml"
    config.write_text(f'[cluster]\nredis_url = "{url}"\n'
                      f'cluster_secret_file = "{cluster_secret(tmp_path)}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "-c", str(config), "--port", "0",
         "--admin-socket", str(tmp_path / "a.sock"), "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    shown = url.replace("sesame", "***")  # never the password
    assert lines[-1].startswith(f"chatd: error: cannot reach Redis at {shown}"), lines
    assert "sesame" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "a.sock").exists(), "the admin socket is removed again"


def test_a_node_that_stops_announces_its_clients_leaving(cluster):
    _, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    assert b.terminate() == 0
    alice.wait_for("*** bob left lobby (server shutting down)")
    alice.send_line("/who")
    alice.wait_for("*** in lobby: alice")


def test_a_killed_node_is_announced_lost_and_its_nicks_are_freed(cluster):
    _, (a, b) = cluster()
    alice, _ = alice_and_bob(a, b)
    b.terminate(sig=signal.SIGKILL)
    alice.wait_for("*** bob left lobby (node lost)", timeout=10 * NODE_TIMEOUT + 5)
    a.wait_event("node_lost", node="node2")
    alice.send_line("/nick bob")
    alice.wait_for("*** you are now bob")
    assert alice.received.count("*** bob left lobby (node lost)") == 1


def test_a_node_restarted_under_its_name_clears_what_its_last_run_left(cluster, chatd):
    redis, (a, b) = cluster(node_timeout=60)  # long: only the restart itself can clear bob
    alice, _ = alice_and_bob(a, b)
    b.terminate(sig=signal.SIGKILL)
    again = chatd(cluster={"redis_url": redis.url, "node_name": "node2", "node_timeout": 60})
    again.wait_event("cluster_joined")
    alice.wait_for("*** bob left lobby (node lost)", timeout=10)
    named(again, "bob")


# -- Redis lost and back ----------------------------------------------------------------------


def test_redis_restart_mid_traffic_loses_no_line_and_says_cluster_unavailable(cluster):
    redis, (a, b) = cluster(limits={"rate": 1000, "burst": 1000})
    alice = named(a, "alice")
    carol = named(a, "carol")
    bob = named(b, "bob")
    wait_all(alice, "*** guest-2 is now known as carol",
             "*** guest-3 is now known as bob")
    for k in range(5):
        alice.send_line(f"before {k}")
    wait_all(bob, *(f"<alice> before {k}" for k in range(5)))
    redis.kill()
    for node in (a, b):
        node.wait_event("cluster_link_lost", timeout=10)
    for k in range(20):  # both sides talk while the link is down
        alice.send_line(f"during {k}")
        bob.send_line(f"meanwhile {k}")
    carol.wait_for("<alice> during 19")  # this node's own members are served on
    alice.send_line("/nick alicia")
    alice.wait_for("*** error: cluster unavailable, try again")
    newcomer = ChatClient().connect(a.port, greet=False)  # no nick can be promised unique
    assert newcomer.expect_closed() == ["*** error: cluster unavailable, try again"]
    redis.restart()
    for node in (a, b):
        node.wait_event("cluster_link_restored", timeout=15)
    bob.wait_for("<alice> during 19", timeout=15)
    alice.wait_for("<bob> meanwhile 19", timeout=15)
    for client, sender, word in ((bob, "alice", "during"), (alice, "bob", "meanwhile"),
                                 (carol, "bob", "meanwhile")):
        if client is carol:
            client.wait_for("<bob> meanwhile 19", timeout=15)
        lines = [line for line in client.received if line.startswith(f"<{sender}> ")]
        assert lines[-20:] == [f"<{sender}> {word} {k}" for k in range(20)], (client.nick, lines)
        assert len(lines) == len(set(lines)), "nothing twice"
    # the nicks were claimed again: bob's node still refuses "alice"
    a.wait_event("cluster_reasserted", timeout=15)
    b.wait_event("cluster_reasserted", timeout=15)
    other = greeted(b)
    other.send_line("/nick alice")
    other.wait_for("*** error: nick alice is already in use")
