"""The Prometheus endpoint (docs/protocol.md §11): a live chatd scraped over real HTTP.

Every scrape goes through urllib to the real daemon and is parsed with prometheus_client's own
parser, so what is checked is what Prometheus would read. Waits poll with a deadline. The
scrape helpers are tests/support/metrics.py; the metrics keys and the shipped Prometheus files
are tested in test_metrics_config.py.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.admin import Admin
from support.metrics import free_port, get, scrape, start, value, wait_metric
from support.waiting import wait_until


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# -- what the families say -----------------------------------------------------------------


def test_families_names_help_and_types(chatd):
    srv, port = start(chatd)
    status, _, body = get(port)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    expected = {
        "chatd_build_info": "gauge", "chatd_start_time_seconds": "gauge", "chatd_clients": "gauge",
        "chatd_clients_max": "gauge", "chatd_rooms": "gauge", "chatd_clients_by_protocol": "gauge",
        "chatd_messages": "counter", "chatd_lines_received": "counter",
        "chatd_deliveries": "counter",
        "chatd_received_bytes": "counter", "chatd_sent_bytes": "counter",
        "chatd_disconnects": "counter", "chatd_admin_commands": "counter",
        "chatd_sendq_bytes": "gauge", "chatd_sendq_max_bytes": "gauge",
        "chatd_sendq_limit_bytes": "gauge", "chatd_bans": "gauge", "chatd_cluster_nodes": "gauge",
    }
    assert {name: families[name].type for name in expected} == expected
    assert "chatd_cluster_link_up" not in families  # a single node has no link
    assert all(f.documentation for f in families.values())
    samples = scrape(port)
    assert value(samples, "chatd_build_info", version=build_version(),
                 python=".".join(map(str, sys.version_info[:3]))) == 1
    assert value(samples, "chatd_clients") == 0 and value(samples, "chatd_rooms") == 1
    assert value(samples, "chatd_clients_max") == 1024
    assert value(samples, "chatd_sendq_limit_bytes") == 262144
    assert value(samples, "chatd_cluster_nodes") == 1
    assert value(samples, "chatd_disconnects_total", reason="sendq") == 0
    assert abs(value(samples, "chatd_start_time_seconds") - time.time()) < 60


def build_version() -> str:
    from chatd import __version__

    return __version__


def test_counters_move_as_clients_chat_and_get_kicked(chatd):
    srv, port = start(chatd, limits={"max_clients": 50})
    before = scrape(port)
    assert value(before, "chatd_clients_max") == 50
    alice, bob = srv.connect_many(2)
    samples = wait_metric(port, "chatd_clients", lambda v: v == 2)
    alice.join("den")
    bob.join("den")
    alice.expect(f"*** {bob.nick} joined den")
    alice.send_line("hello there")
    bob.expect(f"<{alice.nick}> hello there")
    bob.send_line("/me waves")
    alice.expect(f"* {bob.nick} waves")
    bob.send_line(f"/msg {alice.nick} psst")
    alice.expect(f"*{bob.nick}* psst")
    samples = scrape(port)
    assert value(samples, "chatd_rooms") == 2  # lobby and den
    assert value(samples, "chatd_messages_total", kind="room") == 2
    assert value(samples, "chatd_messages_total", kind="private") == 1
    assert value(samples, "chatd_lines_received_total") >= 5  # 2 joins, 3 messages (+ syncs)
    assert value(samples, "chatd_deliveries_total") > value(before, "chatd_deliveries_total")
    assert value(samples, "chatd_received_bytes_total") >= len(b"hello there\n")
    assert value(samples, "chatd_sent_bytes_total") > 0

    admin = Admin(srv.admin_socket)
    admin.result("kick", target=bob.nick, reason="spam")
    assert admin.ask({"id": 2, "cmd": "kick", "args": {"target": "nobody"}})["ok"] is False
    assert admin.ask({"id": 3, "cmd": "no-such-command"})["ok"] is False
    admin.close()
    bob.expect_closed()
    samples = wait_metric(port, "chatd_disconnects_total", lambda v: v == 1, reason="kicked")
    assert value(samples, "chatd_clients") == 1
    assert value(samples, "chatd_admin_commands_total", command="kick", outcome="ok") == 1
    assert value(samples, "chatd_admin_commands_total", command="kick",
                 outcome="not_found") == 1
    assert value(samples, "chatd_admin_commands_total", command="none",
                 outcome="unknown_command") == 1

    alice.send_line("/quit bye")
    alice.expect_closed()
    samples = wait_metric(port, "chatd_disconnects_total", lambda v: v == 1, reason="quit")
    assert value(samples, "chatd_clients") == 0
    # what the clients sent and got stays counted once they are gone
    assert value(samples, "chatd_received_bytes_total") >= len(b"hello there\n/quit bye\n")
    assert value(samples, "chatd_deliveries_total") >= 10
    assert value(samples, "chatd_messages_total", kind="room") == 2  # kept once they left
    assert value(samples, "chatd_messages_total", kind="private") == 1


def test_sendq_backlog_and_sendq_disconnect(chatd):
    srv, port = start(chatd, limits={"rate": 100000.0, "burst": 100000,
                                     "sendq_bytes": 1_000_000})
    sender = srv.connect()
    silent = srv.connect(rcvbuf=4096)
    silent.set_nick("silent")
    sender.wait_for("*** guest-2 is now known as silent")
    text = "p" * 900
    gone = "*** silent left lobby (sendq exceeded)"
    largest = 0
    # Small batches: once the kernel's buffers are full, each adds ~90 KB to the backlog,
    # so it is seen growing for several scrapes before it passes 1 MB.
    for _ in range(400):
        sender.send_raw(b"".join(f"/msg silent {text}\n".encode() for _ in range(100)))
        lines = sender.sync(timeout=30)
        samples = scrape(port)
        largest = max(largest, value(samples, "chatd_sendq_max_bytes"))
        if largest:
            assert value(samples, "chatd_sendq_bytes") >= value(samples, "chatd_sendq_max_bytes")
        if gone in lines:
            break
    else:
        pytest.fail("the silent client was never disconnected")
    assert 0 < largest <= 1_000_000
    samples = wait_metric(port, "chatd_disconnects_total", lambda v: v == 1, reason="sendq")
    assert value(samples, "chatd_sendq_bytes") == 0
    assert value(samples, "chatd_clients") == 1


# -- the endpoint itself -------------------------------------------------------------------


def test_health_is_ok_until_the_node_is_full(chatd):
    """GET /health for load balancers: 200 ``ok``, 503 with the reason when this node should
    get no new clients (here: max_clients reached). A check is no chat client: nobody in the
    lobby sees it, and it takes no client slot."""
    srv, port = start(chatd, limits={"max_clients": 2})
    assert get(port, "/health") == (200, "text/plain; charset=utf-8", "ok\n")
    alice = srv.connect()
    assert get(port, "/health?from=haproxy")[0] == 200
    bob = srv.connect()
    assert get(port, "/health") == (503, "text/plain; charset=utf-8", "server full\n")
    bob.close()
    alice.wait_for(f"*** {bob.nick} left lobby (connection closed)")
    wait_until(lambda: get(port, "/health")[0] == 200, what="the slot free again")
    alice.expect_silence(0.2)  # the checks were announced to nobody


def test_other_paths_are_404_and_methods_501(chatd):
    srv, port = start(chatd)
    for path in ("/", "/metric", "/metrics/x", "/../metrics", "/favicon.ico"):
        assert get(port, path)[0] == 404, path
    assert get(port, "/metrics?name[]=chatd_clients")[0] == 200
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 501


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, read until the server closes; returns what it said."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # it may answer and close before taking everything (431, 414)
            pass
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


def test_garbage_requests_leave_the_endpoint_working_and_no_thread_behind(chatd):
    srv, port = start(chatd)
    scrape(port)
    baseline = threads_of(srv.pid)
    garbage = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS ClientHello
        os.urandom(4096),
        b"\x00\xff\xfe\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",  # huge header
        b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /" + b"m" * 70_000 + b" HTTP/1.1\r\n\r\n",  # huge request line
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"",
    ]
    for data in garbage:
        reply = raw_exchange(port, data)  # an error page (bare for what is not HTTP/1.x)
        assert b" 200 OK" not in reply and b"chatd_clients" not in reply, (data[:40], reply[:100])
        assert get(port)[0] == 200
    assert raw_exchange(port, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK")

    # Silent and trickling peers, more of them than connection slots: scrapes still get in.
    slow = []
    for _ in range(24):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(sock)
    for _ in range(3):
        assert get(port, timeout=10)[0] == 200
    for sock in slow:
        sock.close()
    deadline = time.monotonic() + 15
    while threads_of(srv.pid) > baseline:
        assert time.monotonic() < deadline, f"{threads_of(srv.pid)} threads, {baseline} before"
        time.sleep(0.05)
    assert get(port)[0] == 200
    assert srv.proc.poll() is None


def test_a_silent_connection_is_cut_off(chatd):
    """A peer that starts a request and goes silent holds its thread for the read timeout
    (metrics.SOCKET_SECONDS) only: then chatd closes the connection."""
    srv, port = start(chatd)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the end of the headers
        started = time.monotonic()
        assert b"200 OK" not in read_until_closed(sock)
        assert time.monotonic() - started < 12
    assert get(port)[0] == 200


def read_until_closed(sock) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


# -- an upgrade and the cluster --------------------------------------------------------------


def test_the_endpoint_moves_with_an_upgrade(chatd):
    from test_upgrade import upgrade

    srv, port = start(chatd)
    alice, bob = srv.connect_many(2)
    alice.send_line("before")
    bob.expect(f"<{alice.nick}> before")
    before = scrape(port)
    upgrade(srv)
    # the new process serves it now (it says so once serving: maybe after chatctl returned)
    wait_until(lambda: len(srv.find_events("metrics_listening")) == 2,
               what="metrics_listening from the new process")
    after = scrape(port)
    assert value(after, "chatd_clients") == 2
    assert value(after, "chatd_messages_total", kind="room") == 1
    assert value(after, "chatd_start_time_seconds") == value(before, "chatd_start_time_seconds")
    for name in ("chatd_received_bytes_total", "chatd_deliveries_total"):
        assert value(after, name) >= value(before, name), name  # carried over, no reset
    alice.send_line("after")
    bob.expect(f"<{alice.nick}> after")
    wait_metric(port, "chatd_received_bytes_total",
                lambda v: v > value(before, "chatd_received_bytes_total"))


def test_cluster_link_and_node_count(chatd, redis_server):  # noqa: F811 - fixture imported above
    redis = redis_server()
    nodes = []
    for i in (1, 2):
        port = free_port()
        node = chatd(cluster={"redis_url": redis.url, "node_name": f"node{i}",
                              "node_timeout": 1.0}, metrics={"metrics_port": port})
        node.wait_event("cluster_joined")
        nodes.append((node, port))
    for _node, port in nodes:
        samples = wait_metric(port, "chatd_cluster_nodes", lambda v: v == 2)
        assert value(samples, "chatd_cluster_link_up") == 1
        assert value(samples, "chatd_cluster_rejected_total") == 0
        assert get(port, "/health")[0] == 200
    # a value that is not a node's (no cluster secret, not UTF-8) is counted and nothing else:
    # before issue 22 one such byte wedged every reader and flapped /health to 503
    redis.client(decode_responses=False).xadd("chatd:events", {b"o": b"x", b"c": b"\xff"})
    for _node, port in nodes:
        wait_metric(port, "chatd_cluster_rejected_total", lambda v: v == 1)
        assert get(port, "/health")[0] == 200
    redis.stop()
    for node, port in nodes:
        node.wait_event("cluster_link_lost", timeout=20)
        wait_metric(port, "chatd_cluster_link_up", lambda v: v == 0)
        assert get(port, "/health")[::2] == (503, "cluster unavailable\n")
