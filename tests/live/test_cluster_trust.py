"""Redis is a trust boundary (issue 22, docs/security.md): whoever can write to Redis may deny
service, but must not speak as anyone, act as an operator, or wedge or crash a node.

Against real ``redis-server`` processes and real chatd nodes. The attacker is a Redis client
that has the Redis password but not the cluster secret (``redis.client()``, or ``redis-cli``);
a test that plays a *node* (it has the secret, as a node of another version or with a bug
would) seals with chatd's own codec (support.daemon.cluster_seal).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cluster import alice_and_bob, ctl, named
from support.daemon import cluster_seal, cluster_secret, toml_dumps
from test_bounds import status, walk_rooms

STREAM = "chatd:events"


def run_chatd(tmp_path: Path, *args: str, **cluster_keys) -> subprocess.CompletedProcess:
    """``chatd ARGS`` with a ``[cluster]`` section of ``cluster_keys``, to completion."""
    config = tmp_path / "refused.toml"
    config.write_text(toml_dumps({"cluster": cluster_keys}))
    return subprocess.run(
        [sys.executable, "-m", "chatd", "-c", str(config), "--port", "0",
         "--admin-socket", str(tmp_path / "a.sock"), "--state-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)


def refused(result: subprocess.CompletedProcess, status: int = 2) -> str:
    """The one line of a chatd that refused to start (exit ``status``, no traceback)."""
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def sealed_entry(seal, writer: str, lines: list, seq: int | None = None) -> dict:
    """A stream entry as node ``writer`` writes it (what codec.Seal.entry makes)."""
    seq = seq if seq is not None else time.time_ns() // 1000
    return seal.entry(writer, seq, json.dumps(lines))


# -- authenticated Redis or no cluster -------------------------------------------------------


def test_a_tcp_redis_without_credentials_is_refused_unless_allowed(
        tmp_path, redis_server, chatd):  # noqa: F811
    redis = redis_server(password=None)
    keys = {"redis_url": redis.url, "cluster_secret_file": str(cluster_secret(tmp_path))}
    for args in (("--check-config",), ()):
        line = refused(run_chatd(tmp_path, *args, **keys))
        assert line.startswith(f"chatd: error: cluster.redis_url: {redis.url} has no credentials")
        assert "allow_unauthenticated_redis = true" in line
    node = chatd(cluster={**keys, "allow_unauthenticated_redis": True, "node_name": "n1"})
    node.wait_event("cluster_joined")


def test_a_unix_socket_is_accepted_only_in_a_directory_others_cannot_enter(
        tmp_path, redis_server, chatd):  # noqa: F811
    redis = redis_server(unix_socket=True, password=None)
    assert stat.S_IMODE(os.stat(redis.dir).st_mode) == 0o700
    keys = {"redis_url": redis.unix_url, "cluster_secret_file": str(cluster_secret(tmp_path))}
    assert run_chatd(tmp_path, "--check-config", **keys).returncode == 0
    node = chatd(cluster={**keys, "node_name": "n1"})
    named(node, "alice")
    for mode, why in ((0o701, "searchable by others"), (0o702, "writable by others")):
        os.chmod(redis.dir, mode)
        try:
            line = refused(run_chatd(tmp_path, "--check-config", **keys))
        finally:
            os.chmod(redis.dir, 0o700)
        assert f"the socket's directory {redis.dir} is {why}" in line, line
    # ...and an unprivileged local user really cannot reach it in its 0700 directory
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "redis-cli", "-s", redis.unix_path,
                            "PING"], capture_output=True, text=True, timeout=30, check=False)
    assert "PONG" not in probe.stdout, probe


def test_password_acl_user_and_tls_each_work(tmp_path, redis_server, chatd):  # noqa: F811
    acl = redis_server(args=["--user", "chatd", "on", ">chatd-pw", "~chatd:*", "&*", "+@all"])
    limited = acl.client(username="chatd", password="chatd-pw")
    with pytest.raises(Exception, match="no permissions to access one of the keys"):
        limited.set("not-chatd", "x")  # the ACL user reaches chatd's keys only
    acl_url = f"redis://chatd:chatd-pw@127.0.0.1:{acl.port}/0"
    tls_url = _tls_redis(tmp_path, redis_server)
    for url in (acl.url, acl_url, tls_url):  # password (default user), ACL user, rediss://
        a = chatd(cluster={"redis_url": url, "node_name": "node1", "node_timeout": 1.0})
        b = chatd(cluster={"redis_url": url, "node_name": "node2", "node_timeout": 1.0})
        alice, bob = alice_and_bob(a, b)
        alice.send_line(f"over {url.split(':')[0]}")
        bob.wait_for(f"<alice> over {url.split(':')[0]}")
        for node in (a, b):
            node.terminate()
        if url != tls_url:
            acl.client().flushall()


def _tls_redis(tmp_path: Path, redis_server) -> str:  # noqa: F811
    """A redis-server with a TLS port and a self-signed certificate: its rediss:// URL."""
    key, cert = tmp_path / "redis.key", tmp_path / "redis.crt"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], capture_output=True, timeout=60,
        check=False)
    assert made.returncode == 0, made.stderr
    from support.redisfix import free_port

    port = free_port()
    srv = redis_server(args=["--tls-port", str(port), "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no"])
    return f"rediss://{srv.auth}127.0.0.1:{port}/0?ssl_ca_certs={cert}"


# -- nobody without the secret speaks or acts ------------------------------------------------


def test_entries_without_the_secret_are_neither_delivered_nor_obeyed(cluster):  # noqa: F811
    """The attack of issue 22: with redis-cli alone, post as root with terminal escapes and a
    forged admin line, kick, ban everyone, purge. None of it reaches anyone or happens."""
    redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    bob_id = b.client_id(bob)
    forged = "hi\x1b[2J\x1b]0;pwned\x07\r\n*** [admin] the server moves: nc evil.example 5555"
    attacks = [
        {"o": "evil", "c": json.dumps([["r", "lobby", "Said", "root", forged]])},
        {"h": f"node1  {time.time_ns() // 1000} {'0' * 32}",
         "c": json.dumps([["r", "lobby", "Said", "root", "forged tag"]])},
        {"o": "node1", "c": json.dumps([["cmd", "node2", "kick", bob_id, {"reason": "x"}]])},
        {"o": "node1", "c": json.dumps([["cmd", "*", "ban", None, {
            "address": "0.0.0.0/0", "reason": "all", "created": 1, "expires": None}]])},
        {"o": "evil", "c": json.dumps([["all", "Announcement", "forged broadcast"]])},
        {"o": "evil", "c": json.dumps([["to", "bob", "PrivateMessage", "alice", "forged"]])},
    ]
    for fields in attacks:
        subprocess.run(["redis-cli", "-p", str(redis.port), "--no-auth-warning", "-a",
                        redis.password, "XADD", STREAM, "*",
                        *[x for kv in fields.items() for x in kv]],
                       check=True, capture_output=True, timeout=30)
    alice.send_line("the real alice")
    bob.wait_for("<alice> the real alice")
    for node in (a, b):
        node.wait_event("cluster_entry_rejected")
    bob.send_line("still connected")
    alice.wait_for("<bob> still connected")
    for client in (alice, bob):
        assert not [line for line in client.received if "root" in line or "forged" in line
                    or "\x1b" in line or "[admin]" in line], client.received
    assert json.loads(ctl(b, "--json", "bans")) == []


def test_a_replayed_entry_is_refused(cluster):  # noqa: F811
    """Copying a node's own sealed entry back into its stream, or into the shared stream,
    delivers nothing twice: the tag is bound to the stream an entry was written in."""
    redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line("only once")
    bob.wait_for("<alice> only once")
    client = redis.client(decode_responses=False)
    own = f"{STREAM}:node1"  # node1's own stream, which node2 reads
    entry = next(fields for _, fields in client.xrange(own)
                 if b"only once" in fields.get(b"c", b""))
    client.xadd(STREAM, entry)
    b.wait_event("cluster_entry_rejected", error="bad tag")
    client.xadd(own, entry)  # (its warning waits for the rate limit: what bob gets shows it)
    alice.send_line("and then")  # written after the copy in the same stream: read after it
    bob.wait_for("<alice> and then")
    assert bob.received.count("<alice> only once") == 1


def test_sealed_lines_are_still_checked_as_client_input(cluster, tmp_path):  # noqa: F811
    """A node with the secret (another version, a bug) still cannot put escapes on anyone's
    terminal, use a nick no client could have, or send a line longer than a client could."""
    redis, (a, b) = cluster()
    _alice, bob = alice_and_bob(a, b)
    seal = cluster_seal(tmp_path)
    lines = [["r", "lobby", "Said", "carol", "tab\tok \x1b[2Jbell\x07 \u202eend"],
             ["r", "lobby", "Said", "ro ot", "bad nick"],
             ["r", "lobby", "Said", "carol", "x" * 2000],
             ["r", "lobby", "PrivateMessage", "carol", "not a room line"],
             ["r", "lobby", "Said", "carol", "fine"]]
    redis.client().xadd(STREAM, sealed_entry(seal, "node9", lines))
    bob.wait_for("<carol> fine")
    assert "<carol> tab\tok [2Jbell end" in bob.skipped, bob.skipped
    assert len(bob.skipped) == 1, bob.skipped
    b.wait_event("cluster_entry_rejected")


def test_junk_in_every_key_neither_stops_a_node_nor_wedges_it(redis_server, chatd):  # noqa: F811
    """Start-up reads bans, members, nicks, counters, leases and nodes: each junk value is
    skipped or repaired with a warning; a non-UTF-8 entry later is one rejected entry."""
    redis = redis_server()
    client = redis.client(decode_responses=False)
    client.xadd(STREAM, {b"o": b"\xff", b"c": b"\xfe\xff"})
    client.hset("chatd:bans", mapping={"1.2.3.4": b"\xff junk", "nonsense": "{}"})
    client.hset("chatd:members", mapping={"node9|5": "[1,2]", "garbage": b"\xff"})
    client.hset("chatd:nicks", "alice", "node9|5")  # a squat, written without the secret
    client.set("chatd:guests", "not a number")
    client.set("chatd:id-blocks", "neither")
    client.sadd("chatd:nodes", b"bad node\xff", "ghost")
    client.set("chatd:node:ghost", "junk lease")
    client.hset("chatd:history:lobby", "x", "y")  # the wrong type for a history list
    client.sadd("chatd:history-rooms", "lobby", b"\xff")
    client.hset("chatd:rooms", mapping={"dev": '{"name": "dev", "founder": "eve", "modes": "i"}',
                                        "junk": b"\xff"})  # a forged room, a broken one
    nodes = [chatd(cluster={"redis_url": redis.url, "node_name": f"node{i}", "node_timeout": 1.0},
                   history={"history_on_join": 5}) for i in (1, 2)]
    for node in nodes:
        node.wait_event("cluster_joined")
        node.wait_event("cluster_entry_rejected")
    alice = named(nodes[0], "alice")  # the squat is replaced
    bob = named(nodes[1], "bob")
    client.xadd(STREAM, {b"h": b"node1  1 \xff", b"c": b"\xff"})
    alice.send_line("through the junk")
    bob.wait_for("<alice> through the junk")
    assert nodes[0].wait_event("listening")["bans"] == 0
    alice.join("dev")  # the forged state is not dev's: not invite-only, and alice made it
    alice.send_line("/who")
    alice.wait_for("*** in dev: @alice")


def test_private_lines_and_addresses_cannot_be_read_in_redis(cluster):  # noqa: F811
    """Whoever reads Redis reads room lines (anyone may join a room) but neither private
    lines nor the clients' addresses: those are encrypted."""
    redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    alice.send_line("/msg bob the secret words")
    bob.wait_for("*alice* the secret words")
    ctl(a, "list")  # gathered rows carry addresses too
    alice.send_line("in the open")
    bob.wait_for("<alice> in the open")
    client = redis.client(decode_responses=False)
    stream = b"".join(v for key in (STREAM, f"{STREAM}:node1", f"{STREAM}:node2")
                      for _, fields in client.xrange(key) for v in fields.values())
    assert b"in the open" in stream and b"secret words" not in stream
    members = b"".join(client.hvals("chatd:members"))
    assert len(client.hvals("chatd:members")) == 2 and b"127.0.0.1" not in members


# -- admin actions across nodes -------------------------------------------------------------


def test_routed_actions_are_obeyed_only_from_a_live_node_and_logged_there(
        cluster, tmp_path):  # noqa: F811
    redis, (a, b) = cluster()
    _alice, bob = alice_and_bob(a, b)
    bob_id = b.client_id(bob)
    seal = cluster_seal(tmp_path)  # node9 has the secret but no lease: not a live node
    redis.client().xadd(STREAM, sealed_entry(seal, "node9", [
        ["cmd", "node2", "kick", bob_id, {"reason": "from a dead node"}, None, None]]))
    b.wait_event("cluster_entry_rejected", error=lambda e: "holds no lease" in e)
    ctl(a, "kick", "bob", "-r", "routed")
    bob.wait_for("*** you were kicked: routed")
    event = b.wait_event("admin_command", command="kick")
    assert (event["node"], event["uid"], event["client_id"]) == ("node1", os.getuid(), bob_id)
    assert event["args"] == {"reason": "routed"} and event["outcome"] == "ok"
    assert "from a dead node" not in "".join(bob.received)


def test_gathers_are_answered_on_a_bounded_pool(cluster, tmp_path):  # noqa: F811
    """3,000 gathers in one entry made 3,000 threads; now at most MAX_GATHERS wait."""
    redis, (a, b) = cluster()
    alice, bob = alice_and_bob(a, b)
    seal = cluster_seal(tmp_path)
    lines = [["gather", "rows", {"room": None}, f"chatd:answers:node9:{i}"] for i in range(3000)]
    redis.client().xadd(STREAM, sealed_entry(seal, "node9", lines))
    b.wait_event("cluster_entry_rejected", error=lambda e: "gathers already waiting" in e)
    tasks = len(os.listdir(f"/proc/{b.pid}/task"))
    assert tasks < 100, tasks
    alice.send_line("after the flood")
    bob.wait_for("<alice> after the flood")


def test_lines_for_rooms_without_a_local_member_do_not_pile_up(redis_server, chatd):  # noqa: F811
    """A remote line for a room nobody here is in gave that room a tail for good (100,000
    such rooms: +150 MB per node); now such a room gets no tail here (its lines are in
    Redis, where a joiner reads them), and tails that exist are bounded idle ones."""
    redis = redis_server()
    a, b = (chatd(cluster={"redis_url": redis.url, "node_name": f"node{i}", "node_timeout": 1.0},
                  limits={"rate": 100000.0, "burst": 100000},
                  history={"history_on_join": 0, "history_idle_rooms": 20}) for i in (1, 2))
    for node in (a, b):
        node.wait_event("cluster_joined")
    walker, watcher = named(b, "walker"), named(a, "watcher")
    watcher.join("end")
    walk_rooms(walker, [f"room{i}" for i in range(120)] + ["end"])
    watcher.wait_for("<walker> a line in end")  # node1 has read every line before it
    counts = status(a)
    assert counts["history_tails"] <= 3 and counts["history_idle_tails"] <= 20, counts
    watcher.join("room7")  # ...and a joiner still gets the room's history, from Redis
    watcher.send_line("/history")
    watcher.expect("*** history of room7 (1 line)")
    assert watcher.read_line().endswith("<walker> a line in room7")


# -- secrets ---------------------------------------------------------------------------------


def test_the_redis_password_is_never_shown(cluster, tmp_path, watching):  # noqa: F811
    redis, (a, b) = cluster()
    watch = watching(a, "--json")
    shown = redis.url.replace(redis.password, "***")
    result = run_chatd(tmp_path, "--check-config", redis_url=redis.url,
                       cluster_secret_file=str(cluster_secret(tmp_path)))
    assert result.returncode == 0, result
    assert f'cluster.redis_url = "{shown}"' in result.stdout
    assert a.wait_event("cluster_joined")["url"] == shown
    status = ctl(a, "--json", "status") + ctl(a, "nodes") + ctl(a, "list")
    redis.kill()
    assert a.wait_event("cluster_link_lost", timeout=10)["url"] == shown
    assert watch.wait_event("cluster_link_lost")["url"] == shown
    for text in (result.stdout + result.stderr, status, a.stderr_text(), b.stderr_text(),
                 "\n".join(watch.lines)):
        assert redis.password not in text


def test_a_wrong_password_is_refused_not_unreachable(tmp_path, redis_server):  # noqa: F811
    redis = redis_server()
    url = redis.url.replace(redis.password, "not-the-password")
    line = refused(run_chatd(tmp_path, redis_url=url,
                             cluster_secret_file=str(cluster_secret(tmp_path))), status=1)
    shown = url.replace("not-the-password", "***")
    assert line.startswith(f"chatd: error: Redis at {shown} refused chatd: "), line
    assert "not-the-password" not in line


def test_the_cluster_secret_file(tmp_path, redis_server):  # noqa: F811
    path = tmp_path / "secret"
    made = subprocess.run([sys.executable, "-m", "chatd", "--gen-cluster-secret", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert made.returncode == 0 and path.read_text() not in made.stdout + made.stderr, made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) == 64
    again = subprocess.run([sys.executable, "-m", "chatd", "--gen-cluster-secret", str(path)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 1 and "exists" in again.stderr, again
    url = redis_server().url
    line = refused(run_chatd(tmp_path, redis_url=url))
    assert "cluster_secret_file: required in cluster mode" in line
    path.chmod(0o644)
    line = refused(run_chatd(tmp_path, redis_url=url, cluster_secret_file=str(path)))
    assert f"chmod 600 {path}" in line and path.read_text().strip() not in line
