"""Cluster faults (docs/cluster.md "What is lost when"): real nodes, a real Redis, real faults.

A node killed with SIGKILL mid-traffic, a node cut off from a Redis that stays up (a paused
tests/support/proxy.py between them), and a slow link to Redis. Every wait has a deadline; the only
sleeps pace senders (so that the fault lands mid-traffic), never stand in for a condition.
"""

from __future__ import annotations

import signal
import time

import pytest
from support.cluster import named, wait_all
from support.traffic import send_paced

NODE_TIMEOUT = 1.0
#: A lease expires node_timeout after its last renewal; survivors look every node_timeout/3.
LOST_DEADLINE = 2 * NODE_TIMEOUT + 5.0


def lines_from(client, sender: str) -> list[str]:
    """Every room line ``client`` received from ``sender``, in arrival order."""
    return [line for line in client.received if line.startswith(f"<{sender}> ")]


def sees(client, *nicks: str, timeout: float = 10.0) -> None:
    """Until ``client`` has seen each of ``nicks`` take its name (local or from another node)."""
    for nick in nicks:
        if not any(line.endswith(f" is now known as {nick}") for line in client.received):
            client.wait_for(lambda line, n=nick: line.endswith(f" is now known as {n}"), timeout)


def test_kill_9_mid_traffic_survivors_lose_nothing_and_free_the_nicks(cluster):
    _, (a, b, c) = cluster(3, limits={"rate": 1000, "burst": 1000})
    alice, bob, _carol = named(a, "alice"), named(b, "bob"), named(c, "carol")  # carol stays on c
    sees(alice, "bob", "carol")
    sees(bob, "carol")
    count = 60
    senders = [send_paced(alice, "a", count, gap=0.02), send_paced(bob, "b", count, gap=0.02)]
    bob.wait_for("<alice> a 10", timeout=10)  # traffic is flowing when the node dies
    c.terminate(sig=signal.SIGKILL)
    killed = time.monotonic()
    for client in (alice, bob):
        client.wait_for("*** carol left lobby (node lost)", timeout=LOST_DEADLINE)
    noticed = time.monotonic() - killed
    assert noticed < LOST_DEADLINE, noticed
    for thread in senders:
        thread.join(30)
    bob.saw(f"<alice> a {count - 1}", timeout=10)  # may have come before the notice
    alice.saw(f"<bob> b {count - 1}", timeout=10)
    assert lines_from(bob, "alice") == [f"<alice> a {k}" for k in range(count)]
    assert lines_from(alice, "bob") == [f"<bob> b {k}" for k in range(count)]
    for client in (alice, bob):
        assert client.received.count("*** carol left lobby (node lost)") == 1
    bob.send_line("/nick carol")
    bob.wait_for("*** you are now carol")


@pytest.fixture
def split(chatd, redis_server, tcp_proxy):  # noqa: F811 - fixtures imported above
    """Node A straight on Redis, node B through a proxy: -> (proxy, a, b)."""

    def start(node_timeout: float = 30.0, **sections):
        redis = redis_server()
        proxy = tcp_proxy(redis)
        a = chatd(cluster={"redis_url": redis.url, "node_name": "node1",
                           "node_timeout": node_timeout}, **sections)
        b = chatd(cluster={"redis_url": proxy.url, "node_name": "node2",
                           "node_timeout": node_timeout}, **sections)
        for node in (a, b):
            node.wait_event("cluster_joined", timeout=10)
        return proxy, a, b

    return start


def test_a_node_partitioned_from_redis_serves_locally_and_catches_up(split):
    proxy, a, b = split(node_timeout=60.0, limits={"rate": 1000, "burst": 1000})
    alice = named(a, "alice")
    bob, dave = named(b, "bob"), named(b, "dave")
    sees(alice, "bob", "dave")
    proxy.pause()
    paused = time.monotonic()
    event = b.wait_event("cluster_link_lost", timeout=20)
    noticed = time.monotonic() - paused
    print(f"\ncluster_link_lost after {noticed:.2f} s: {event.get('error')}")
    for k in range(10):
        alice.send_line(f"from a {k}")
        bob.send_line(f"from b {k}")
    dave.wait_for("<bob> from b 9", timeout=5)  # B's own members chat on
    dave.send_line("/nick x")
    dave.wait_for("*** error: cluster unavailable, try again", timeout=15)
    proxy.resume()
    b.wait_event("cluster_link_restored", timeout=20)
    bob.wait_for("<alice> from a 9", timeout=20)
    alice.wait_for("<bob> from b 9", timeout=20)
    dave.wait_for("<alice> from a 9", timeout=10)
    for client, sender in ((bob, "alice"), (dave, "alice"), (alice, "bob")):
        assert lines_from(client, sender) == [f"<{sender}> from {sender[0]} {k}"
                                              for k in range(10)], client.nick


def test_a_slow_redis_does_not_slow_local_chat(split):
    proxy, a, b = split(limits={"rate": 1000, "burst": 1000})
    alice = named(a, "alice")
    bob, dave = named(b, "bob"), named(b, "dave")
    sees(alice, "bob", "dave")
    latency, count = 0.2, 10
    proxy.set_latency(latency)
    start = time.monotonic()
    for k in range(count):
        bob.send_line(f"slow {k}")
    for k in range(count):
        dave.wait_for(f"<bob> slow {k}", timeout=5)
    local = time.monotonic() - start
    # one Redis round trip through the proxy is two chunks: 2 x latency; a node that waited
    # for Redis per line would need count x that. Local delivery must not wait for Redis.
    assert local < latency * 2, local
    for k in range(count):
        alice.wait_for(f"<bob> slow {k}", timeout=30)
    cross = time.monotonic() - start
    print(f"\nlocal {local * 1000:.0f} ms, cross-node {cross * 1000:.0f} ms")
    assert cross >= latency, "the cross-node copy went through the slow link"
    assert lines_from(alice, "bob") == [f"<bob> slow {k}" for k in range(count)]


def test_a_nick_taken_while_its_node_was_cut_off_stays_with_the_new_owner(split):
    """B is cut off past node_timeout: A reaps it and a client on A takes bob's nick. When B
    is back its bob becomes a guest (told so, still connected); A's bob keeps the nick, and
    B's other members never hear that B's own clients were lost."""
    proxy, a, b = split(node_timeout=NODE_TIMEOUT)
    alice = named(a, "alice")
    bob, dave = named(b, "bob"), named(b, "dave")
    sees(alice, "bob", "dave")
    proxy.pause()
    alice.wait_for("*** bob left lobby (node lost)", timeout=LOST_DEADLINE)
    usurper = named(a, "bob")
    proxy.resume()  # (B may not even notice a lost link: its lease just ran out meanwhile)
    notice = bob.wait_for(lambda line: line.startswith("*** your nick bob was taken"), timeout=20)
    guest = notice.rpartition(" you are now ")[2]
    assert guest.startswith("guest-"), notice
    revoked = b.wait_event("cluster_nick_revoked", timeout=10)
    assert (revoked["nick"], revoked["new_nick"]) == ("bob", guest), revoked
    dave.wait_for(f"*** bob is now known as {guest}", timeout=10)
    wait_all(alice, f"*** {guest} joined lobby", "*** dave joined lobby")  # B's are back
    bob.send_line("/who")
    who = bob.wait_for(lambda line: line.startswith("*** in lobby: "), timeout=10)
    assert sorted(who.removeprefix("*** in lobby: ").split(", ")) == sorted(
        ["alice", "bob", "dave", guest]), who
    dave.send_line("/msg bob hello from b")
    usurper.wait_for("*dave* hello from b", timeout=10)
    assert not any("left lobby (node lost)" in line for line in dave.received + bob.received)
