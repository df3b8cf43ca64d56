"""Cluster mode's test fixture: real chatd nodes on one private Redis, and the client helpers
that the cluster, history and trust tests share (a node's notices may arrive in any order)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support.client import ChatClient

NODE_TIMEOUT = 1.0  # short, so that a lost node is noticed within the test's deadlines


@pytest.fixture
def cluster(chatd, redis_server):
    """Factory: ``cluster(n)`` -> (RedisServer, [ChatServer node1, ...]) on one new Redis."""

    def start(n: int = 2, node_timeout: float = NODE_TIMEOUT, **sections):
        redis = redis_server()
        nodes = [chatd(cluster={"redis_url": redis.url, "node_name": f"node{i + 1}",
                                "node_timeout": node_timeout}, **sections) for i in range(n)]
        for node in nodes:
            node.wait_event("cluster_joined")
        return redis, nodes

    return start


def ctl(node, *args: str) -> str:
    """``chatctl --socket NODE'S SOCKET ARGS`` as a real process; must succeed; its stdout."""
    proc = subprocess.run([sys.executable, "-m", "chatctl", "--socket", node.admin_socket, *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc
    return proc.stdout


def greeted(node) -> ChatClient:
    """A client on ``node`` that has read its greeting and its own /who round trip."""
    client = node.connect()
    client.sync()
    return client


def alice_and_bob(a, b) -> tuple[ChatClient, ChatClient]:
    """alice on node ``a``, bob on node ``b``; alice has seen bob take his nick, so each
    node knows of the other's client."""
    alice = named(a, "alice")
    bob = named(b, "bob")
    alice.wait_for(lambda line: line.endswith(" is now known as bob"))
    return alice, bob


def wait_all(client: ChatClient, *lines: str, timeout: float = 10.0) -> None:
    """Until every one of ``lines`` has arrived, in whatever order (from different nodes)."""
    missing = set(lines)
    while missing:
        missing.discard(client.wait_for(lambda line: line in missing, timeout))


def named(node, nick: str) -> ChatClient:
    """A greeted client that took ``nick`` (other nodes' notices may come before the reply)."""
    client = greeted(node)
    client.send_line(f"/nick {nick}")
    client.wait_for(f"*** you are now {nick}")
    client.nick = nick
    return client
