"""Accounts in cluster mode (docs/protocol.md §12, docs/cluster.md "Accounts"): one account for
the whole cluster, kept in Redis, sealed and encrypted; logged in on one connection in the
whole cluster; disabled on every node at once.

Real chatd nodes on one real ``redis-server``, real chat clients over TCP, ``chatctl`` as a
real process and the raw admin socket; the attacker is a Redis client without the cluster
secret. Logins are rate limited per node (5 a minute per address and per account), so no
test makes more than 5 logins on one node.
"""

from __future__ import annotations

import json
import signal
import threading

from support.admin import Admin
from support.chatctl import ctl
from support.client import ChatClient
from support.cluster import greeted, named, wait_all
from support.waiting import wait_until
from test_accounts_missed import MISSED, missed_block, said, say

PASSWORD = "cluster-horse-77"  # holds "horse": support/paths.SECRET_MARK


def log_in(node, name: str, password: str = PASSWORD, pending: bool = False) -> ChatClient:
    """A new connection to ``node`` logged in to ``name`` (``pending``: a closed server's
    connection, which has no nick until then)."""
    client = ChatClient().connect(node.port, greet=False) if pending else greeted(node)
    client.send_line(f"/login {name} {password}")
    client.wait_for(f"*** logged in as {name}")
    client.sync()
    client.nick = name
    return client


def add(node, name: str, password: str = PASSWORD) -> str:
    return ctl(node, "account", "add", name, "--password-stdin", input=password + "\n")


def test_an_account_made_on_one_node_is_the_clusters(cluster):
    """Registered on node1; its nick refused to a guest on node2; logged in on node2; shown
    by either node's chatctl; in Redis, nothing of the password or its hash can be read."""
    redis, (a, b) = cluster()
    alice = named(a, "alice")
    alice.send_line(f"/register {PASSWORD}")
    alice.expect("*** registered alice")
    alice.send_line("/quit")
    alice.expect_closed()
    guest = greeted(b)
    guest.send_line("/nick alice")
    guest.wait_for("*** error: nick alice is registered; /login alice PASSWORD")
    alice = log_in(b, "alice")
    guest.wait_for(lambda line: line.endswith(" is now known as alice"))

    [row] = json.loads(ctl(a, "--json", "account", "list"))
    assert (row["name"], row["state"], row["online"]) == ("alice", "active", True), row
    assert row["last_login"] is not None
    [listed] = [r for r in json.loads(ctl(a, "--json", "list")) if r["nick"] == "alice"]
    assert (listed["account"], listed["node"]) == ("alice", "node2"), listed

    raw = redis.client()
    value = raw.get("chatd:account:alice")
    assert value is not None and "argon2" not in value and "horse" not in value, value
    assert raw.sismember("chatd:accounts", "alice")
    alice.send_line("hi from node2")
    guest.expect("<alice> hi from node2")


def test_a_login_on_another_node_closes_the_older_connection(cluster):
    """One connection per account in the whole cluster: node2's login closes node1's, whose
    room sees it leave, and takes the nick; the account goes back to the room it was in."""
    _, (a, b) = cluster()
    add(a, "alice")
    old = log_in(a, "alice")
    old.send_line("/join dev")
    old.wait_for(lambda line: line.startswith("*** you joined dev"))
    bob = named(a, "bob")
    bob.send_line("/join dev")
    bob.wait_for(lambda line: line.startswith("*** you joined dev"))
    new = log_in(b, "alice")
    old.wait_for("*** logged in elsewhere")
    old.expect_closed()
    bob.wait_for("*** alice left dev (logged in elsewhere)")
    bob.wait_for("*** alice joined dev")
    new.send_line("/who")
    new.wait_for(lambda line: line.startswith("*** in dev:"))
    new.send_line("back on node2")
    bob.expect("<alice> back on node2")


def test_the_owners_login_renames_a_guest_holding_the_nick_on_another_node(cluster):
    """An operator registered carol while a guest held that nick on node1: carol's login on
    node2 makes the guest another guest there, and takes the nick."""
    _, (a, b) = cluster()
    holder = named(a, "carol")
    add(b, "carol")
    carol = log_in(b, "carol")
    line = holder.wait_for(lambda line: line.startswith("*** you are now guest-"))
    assert line.endswith(" (carol logged in)"), line
    holder.send_line("still here")
    carol.wait_for(lambda line: line.endswith("> still here") and "<guest-" in line)
    holder.send_line("/nick carol")
    holder.wait_for("*** error: nick carol is registered; /login carol PASSWORD")


def test_disable_closes_the_connection_on_the_node_it_is_on(cluster):
    """A closed team cluster: an operator makes dave on node1, he logs in on node2; disabled
    from node1, his connection on node2 is closed at once and no node lets him back in until
    enabled (from node2)."""
    _, (a, b) = cluster(accounts={"mode": "closed"})
    add(a, "dave")
    dave = log_in(b, "dave", pending=True)
    shown = json.loads(ctl(a, "--json", "account", "disable", "dave"))
    assert (shown["state"], shown["disconnected"]) == ("disabled", 1), shown
    dave.wait_for("*** your account was disabled")
    dave.expect_closed()
    for node in (a, b):
        again = ChatClient().connect(node.port, greet=False)
        again.send_line(f"/login dave {PASSWORD}")
        again.wait_for("*** error: your account is disabled")
        again.close()
    ctl(b, "account", "enable", "dave")
    dave = log_in(a, "dave", pending=True)
    # node2 knows dave is online once node1's news of his join reached it
    wait_until(lambda: json.loads(ctl(b, "--json", "account", "list"))[0]["online"])
    assert json.loads(ctl(b, "--json", "account", "show", "dave"))["state"] == "active"
    deleted = json.loads(ctl(b, "--json", "account", "delete", "dave"))
    assert deleted["disconnected"] == 1, deleted
    dave.wait_for("*** your account was disabled")
    dave.expect_closed()


def test_two_nodes_racing_to_register_one_name_make_exactly_one_owner(cluster):
    """``account_add`` of the same names on both nodes at the same moment: for each name
    exactly one node made it, the other answered ``exists``."""
    _, (a, b) = cluster()
    names = [f"racer{i}" for i in range(8)]
    answers: dict = {}
    start = threading.Barrier(2)

    def register_all(node) -> None:
        admin = Admin(node.admin_socket)
        start.wait()
        for name in names:
            reply = admin.ask({"id": name, "cmd": "account_add",
                               "args": {"name": name, "password": PASSWORD}})
            answers[node.port, name] = reply

    threads = [threading.Thread(target=register_all, args=(n,)) for n in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for name in names:
        replies = [answers[a.port, name], answers[b.port, name]]
        made = [r for r in replies if r.get("ok")]
        refused = [r["error"]["code"] for r in replies if not r.get("ok")]
        assert len(made) == 1 and refused == ["exists"], (name, replies)
    assert sorted(r["name"] for r in json.loads(ctl(a, "--json", "account", "list"))) == names


def test_an_account_value_written_without_the_secret_is_refused(cluster):
    """Whoever writes Redis without the secret can make no account and move none: a value
    of their own, or alice's copied under another name, fails its check (one warning); the
    name cannot be taken, and nobody logs in with it."""
    redis, (a, _) = cluster()
    add(a, "alice")
    raw = redis.client()
    raw.set("chatd:account:mallory", b"0" * 32 + b'["mallory","$argon2id$x",1,null,false]')
    raw.set("chatd:account:eve", raw.get("chatd:account:alice"))
    for name in ("mallory", "eve"):
        client = greeted(a)
        client.send_line(f"/login {name} {PASSWORD}")
        client.wait_for("*** error: cluster unavailable, try again")
        client.send_line(f"/nick {name}")
        client.wait_for("*** error: cluster unavailable, try again")
        client.close()
    a.wait_event("cluster_entry_rejected", what="account")
    assert [r["name"] for r in json.loads(ctl(a, "--json", "account", "list"))] == ["alice"]
    log_in(a, "alice")


# -- what you missed, across nodes -----------------------------------------------------------


def test_what_you_missed_on_one_node_is_told_on_another(cluster):
    """alice leaves dev on node1; lines are said there from both nodes; her login on node2
    gets exactly those lines, once and in order, after none of what she saw, then live lines.
    Every node keeps the time the line's own node gave it (history.Position), so node1's
    position means the same lines on node2."""
    _, (a, b) = cluster()
    add(a, "alice")
    alice = log_in(a, "alice")
    alice.join("dev")
    bob, carol = named(b, "bob"), named(a, "carol")
    for client in (bob, carol):
        client.join("dev")
    for n in range(3):
        bob.send_line(f"seen {n}")
        carol.send_line(f"seen too {n}")
    wait_all(alice, "<bob> seen 2", "<carol> seen too 2")
    carol.send_line("the last she saw")  # node1's newest line, which node2 has later
    alice.wait_for("<carol> the last she saw")
    bob.wait_for("<carol> the last she saw")
    alice.close()
    bob.wait_for("*** alice left dev (connection closed)")
    expected = []
    for n in range(4):
        bob.send_line(f"missed {n}")
        carol.send_line(f"missed too {n}")
        expected += [f"<bob> missed {n}", f"<carol> missed too {n}"]
    for client in (bob, carol):  # every line in on both nodes before alice is back
        client.wait_for("<carol> missed too 3" if client is bob else "<bob> missed 3")
    back = greeted(b)
    back.send_line(f"/login alice {PASSWORD}")
    header, lines = missed_block(back)
    assert MISSED.fullmatch(header).groups() == ("8", "dev"), (header, lines)
    got = said(lines)
    assert sorted(got) == sorted(expected), got
    for nick in ("bob", "carol"):  # each sender's lines in the order said
        assert [x for x in got if x.startswith(f"<{nick}>")] == \
            [x for x in expected if x.startswith(f"<{nick}>")]
    carol.send_line("live")
    back.expect("<carol> live")


def test_what_you_missed_survives_the_kill_9_of_the_node_it_was_on(cluster):
    """alice is logged in on node1, in dev, and has seen bob's lines; node1 is killed with
    SIGKILL (nothing is written at a crash). bob goes on talking on node2. Her login on node2
    gets every line said after the crash, once and in order, then live lines: node1 kept
    where dev stood as it went (cluster/standing.py). What may come again is only what node1
    delivered in its last renewal period (a third of node_timeout) before it died."""
    redis, (a, b) = cluster()
    add(a, "alice")
    alice = log_in(a, "alice")
    alice.join("dev")
    bob = named(b, "bob")
    bob.join("dev")
    seen = [f"<bob> seen {n}" for n in range(3)]
    for line in seen:
        bob.send_line(line.split("> ", 1)[1])
    for line in seen:
        alice.wait_for(line)
    # node1 has said where dev stands since bob's lines (at a renewal: within 1/3 s here)
    raw = redis.client()
    wait_until(lambda: '"node2"' in (raw.hget("chatd:seen:node1", "dev") or ""))
    a.terminate(sig=signal.SIGKILL)
    bob.wait_for("*** alice left dev (node lost)", timeout=10)
    missed = [f"<bob> missed {n}" for n in range(5)]
    say(bob, "dev", *[line.split("> ", 1)[1] for line in missed])
    back = greeted(b)
    back.send_line(f"/login alice {PASSWORD}")
    back.wait_for("*** logged in as alice")
    _, lines = missed_block(back)
    got = said(lines)
    assert got[len(got) - len(missed):] == missed, got
    again = got[:len(got) - len(missed)]
    assert again == seen[len(seen) - len(again):], got  # at most a tail of what she saw
    bob.send_line("live")
    back.expect("<bob> live")
