"""Cluster mode seen through chatctl (docs/cluster.md): list, status and nodes cover every node,
and kick, mute, broadcast and ban given on one node are carried out on the node that has the
client (routed actions answered once done, refused with one line when they cannot be).

As in test_cluster.py, each test starts its own ``redis-server`` and two or three chatd nodes,
and every expectation waits for its line (with a deadline): lines that cross nodes arrive a
moment after local ones.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from support.client import ChatClient
from support.cluster import NODE_TIMEOUT, alice_and_bob, ctl, named, wait_all
from support.daemon import cluster_seal

# -- chatctl across the cluster ---------------------------------------------------------------


def test_chatctl_list_nodes_and_status_see_the_whole_cluster(cluster):
    _, (a, b) = cluster()
    alice, _ = alice_and_bob(a, b)
    rows = json.loads(ctl(a, "--json", "list"))
    assert {(r["nick"], r["node"]) for r in rows} == {("alice", "node1"), ("bob", "node2")}
    assert len({r["id"] for r in rows}) == 2, "client ids are unique cluster-wide"
    table = ctl(a, "list").splitlines()
    assert table[0].split()[-1] == "NODE" and any(line.split()[-1] == "node2" for line in table)
    assert [r["nick"] for r in json.loads(ctl(a, "--json", "list", "--local"))] == ["alice"]
    nodes = json.loads(ctl(b, "--json", "nodes"))
    assert [n["node"] for n in nodes] == ["node2", "node1"]
    assert nodes[1]["address"] == f"127.0.0.1:{a.port}"
    status = json.loads(ctl(a, "--json", "status"))
    assert (status["node"], status["nodes"]) == ("node1", 2)


def test_list_shows_other_nodes_clients_with_their_counters(cluster):
    """Each node answers for its own clients (idle, sendq, muted, bytes); one that does not
    answer in time is shown from its member records, without them."""
    _, (a, b) = cluster(node_timeout=30.0)  # b is stopped below for longer than the default
    alice, bob = alice_and_bob(a, b)
    bob.send_line("/join dev")
    alice.wait_for("*** bob left lobby")
    ctl(a, "mute", "bob")
    bob.wait_for("*** you are muted")
    (row,) = [r for r in json.loads(ctl(a, "--json", "list")) if r["nick"] == "bob"]
    assert (row["node"], row["room"], row["muted"], row["sendq"]) == ("node2", "dev", True, 0)
    assert row["bytes_in"] > 0 and row["lines_in"] >= 2 and row["idle"] >= 0, row
    assert [r["nick"] for r in json.loads(ctl(a, "--json", "list", "--room", "dev"))] == ["bob"]
    assert [line.split()[-4:] for line in ctl(a, "list").splitlines() if "bob" in line] == [
        ["yes", "-", "line", "node2"]]  # MUTED, ACCOUNT (a guest: none), PROTOCOL, NODE
    b.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        rows = json.loads(ctl(a, "--json", "list"))
        assert time.monotonic() - started >= 2.0  # cluster/routing.py GATHER_SECONDS
    finally:
        b.proc.send_signal(signal.SIGCONT)
    (row,) = [r for r in rows if r["nick"] == "bob"]
    assert (row["node"], row["room"]) == ("node2", "dev") and "sendq" not in row, row


def test_kick_mute_and_broadcast_reach_a_client_on_another_node(cluster):
    _, (a, b) = cluster()
    alice = named(a, "alice")
    bob = named(b, "bob")
    carol = named(b, "carol")
    wait_all(alice, "*** guest-2 is now known as bob", "*** guest-3 is now known as carol")
    assert "muted bob" in ctl(a, "mute", "bob")
    bob.wait_for("*** you are muted")
    bob.send_line("hello?")
    bob.wait_for("*** error: you are muted")
    ctl(a, "unmute", "bob")
    bob.wait_for("*** you are no longer muted")
    ctl(a, "broadcast", "maintenance at noon")
    for client in (alice, bob, carol):
        client.wait_for("*** [admin] maintenance at noon")
    carol.send_line("/join dev")
    carol.wait_for("*** you joined dev (1 member)")
    ctl(a, "broadcast", "--room", "dev", "dev only")  # dev exists on node2 alone
    carol.wait_for("*** [admin] dev only")
    assert "kicked bob" in ctl(a, "kick", "bob", "-r", "spam")
    bob.wait_for("*** you were kicked: spam")
    bob.expect_closed()
    alice.wait_for("*** bob was kicked (spam)")
    assert "*** [admin] dev only" not in alice.received


def ctl_refused(node, *args: str) -> str:
    """``chatctl ARGS`` on ``node`` that chatd refuses: exit 1, one line; that line."""
    proc = subprocess.run([sys.executable, "-m", "chatctl", "--socket", node.admin_socket, *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc
    return proc.stderr


def test_a_routed_kick_is_answered_once_the_other_node_carried_it_out(cluster, tmp_path):
    """The reply waits for the node that has the client: a node that does not answer is a
    timeout (and the kick still happens once it goes on); a client it no longer has is
    not_found; with the link to Redis down, nothing is sent at all."""
    redis, (a, b) = cluster(node_timeout=30.0)  # b is stopped for longer than the default
    alice, bob = alice_and_bob(a, b)
    key = "node2|1999999"  # a record as node2 writes it (sealed), of a client it no longer has
    redis.client().hset("chatd:members", key, cluster_seal(tmp_path).seal_hidden(
        f"chatd:members/{key}", json.dumps(["ghost", "lobby", "", 0])))
    assert ctl_refused(a, "kick", "1999999") == (
        "chatctl: error: no such client 1999999 (it left node2)\n")
    b.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert ctl_refused(a, "kick", "bob", "-r", "late") == (
            "chatctl: error: node node2 did not answer; the kick of bob may still happen there\n")
        assert time.monotonic() - started >= 3.0  # cluster/routing.py ANSWER_SECONDS
    finally:
        b.proc.send_signal(signal.SIGCONT)
    bob.wait_for("*** you were kicked: late")
    alice.wait_for("*** bob was kicked (late)")
    carol = named(b, "carol")
    alice.wait_for("*** guest-3 is now known as carol")  # (bob was guest-2)
    redis.kill()
    a.wait_event("cluster_link_lost", timeout=10)
    assert ctl_refused(a, "mute", "carol").startswith(
        "chatctl: error: cannot reach the other nodes: ")
    carol.send_line("not muted")
    carol.expect_silence()
    assert "*** you are muted" not in carol.received


def test_a_ban_set_on_one_node_is_in_force_on_all_and_survives_their_restart(cluster, chatd):
    redis, (a, b) = cluster()
    there = b.connect(source="127.0.0.7")
    there.sync()
    ctl(a, "ban", "127.0.0.7", "-r", "spam wave")
    there.wait_for("*** error: banned (spam wave)")
    there.expect_closed()
    refused = ChatClient().connect(b.port, source="127.0.0.7", greet=False)
    assert refused.expect_closed() == ["*** error: banned (spam wave)"]
    # a node that starts later, with an empty state directory, enforces it too
    c = chatd(cluster={"redis_url": redis.url, "node_name": "node3", "node_timeout": NODE_TIMEOUT})
    c.wait_event("cluster_joined")
    late = ChatClient().connect(c.port, source="127.0.0.7", greet=False)
    assert late.expect_closed() == ["*** error: banned (spam wave)"]
    ctl(b, "unban", "127.0.0.7")
    deadline = time.monotonic() + 10  # node1 hears of the unban through the stream
    while True:
        probe = ChatClient().connect(a.port, source="127.0.0.7", greet=False)
        first = probe.read_line()
        probe.abort()
        if first.startswith("*** welcome to "):
            break
        assert first.startswith("*** error: banned") and time.monotonic() < deadline, first
