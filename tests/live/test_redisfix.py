"""Tests of the cluster-test tools themselves: the ``redis_server`` fixture and the TCP proxy.

They use the real ``redis-server`` and the real ``redis`` client, as the cluster tests will, so
a green run here means those tests stand on working ground: the server is ours (not the system
service), it keeps nothing across a restart, the proxy forwards, pauses, slows down and cuts
as documented, and nothing is leaked. Every wait is for a condition with a deadline; the only
timing assertions are lower bounds that the proxy's latency guarantees, with generous upper ones.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from support.proxy import TcpProxy
from support.redisfix import RedisServer, ping, redis_module
from support.waiting import wait_until

redis = redis_module()
from redis.backoff import NoBackoff  # noqa: E402 - only once redis is known to be importable
from redis.retry import Retry  # noqa: E402


def no_retry_client(url: str, timeout: float = 5.0):
    """A client that reports the first failure instead of reconnecting and trying again
    (redis-py's default retries would hide what the proxy did)."""
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0), decode_responses=True)


def raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return sock


def raw_ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(64)


# -- the redis_server fixture ------------------------------------------------------------------


def test_server_is_our_own_process_without_persistence(redis_server):
    """Started from the command line on its own port and dir: not the system service, and
    configured to keep nothing (so a restart really is a restart without persistence)."""
    srv = redis_server(password=None)
    assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
    with open(f"/proc/{srv.pid}/cmdline", "rb") as f:
        title = f.read()  # Redis sets its process title to "BINARY HOST:PORT"
    assert title.rstrip(b"\0").endswith(f"redis-server 127.0.0.1:{srv.port}".encode()), title
    client = redis.Redis.from_url(srv.url, decode_responses=True)
    try:
        assert client.ping() is True
        assert client.config_get("port") == {"port": str(srv.port)}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("dir") == {"dir": os.path.realpath(srv.dir)}
        assert client.info("server")["process_id"] == srv.pid
        assert client.info("server")["config_file"] == ""  # no /etc/redis/redis.conf
    finally:
        client.close()


def test_unix_socket(redis_server):
    srv = redis_server(unix_socket=True, password=None)
    assert srv.unix_url == f"unix://{srv.unix_path}"
    assert len(srv.unix_path.encode()) < 108
    client = redis.Redis.from_url(srv.unix_url, decode_responses=True)
    try:
        client.set("via", "unix")
        assert srv.client().get("via") == "unix"  # same server over TCP
    finally:
        client.close()


def test_stop_is_by_pid_and_frees_the_port(redis_server):
    srv = redis_server(password=None)
    pid, port = srv.pid, srv.port
    assert srv.stop() == 0  # SIGTERM: a clean Redis shutdown
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not ping(port)


def test_stop_kills_a_server_that_ignores_sigterm(redis_server):
    """The bound on a graceful stop: a stopped (SIGSTOP) Redis cannot act on SIGTERM."""
    srv = redis_server(password=None)
    os.kill(srv.pid, signal.SIGSTOP)
    started = time.monotonic()
    assert srv.stop(timeout=0.3) == -signal.SIGKILL
    assert time.monotonic() - started < 3


def test_close_stops_the_server_and_removes_its_directory():
    """What the fixture's teardown does for every server it started."""
    srv = RedisServer(unix_socket=True, password=None).start()
    pid, port = srv.pid, srv.port
    srv.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not ping(port) and not os.path.exists(srv.dir)


def test_restart_keeps_the_port_and_empties_the_data(redis_server):
    srv = redis_server(password=None)
    port, pid = srv.port, srv.pid
    srv.client().set("key", "value")
    srv.restart()
    assert (srv.port, srv.url) == (port, f"redis://127.0.0.1:{port}/0")
    assert srv.pid != pid
    assert srv.client().get("key") is None
    assert srv.client().dbsize() == 0
    assert sorted(os.listdir(srv.dir)) == ["redis.log"]  # nothing was saved


def test_kill_then_restart_on_the_same_port(redis_server):
    srv = redis_server(unix_socket=True, password=None)
    port = srv.port
    client = no_retry_client(srv.url)
    client.set("key", "value")
    assert srv.kill() == -9  # SIGKILL: no shutdown at all
    assert not ping(port)
    with pytest.raises(redis.ConnectionError):
        client.get("key")
    srv.restart()
    assert srv.port == port
    assert client.get("key") is None  # the same client reconnects to the fresh server
    assert redis.Redis.from_url(srv.unix_url).ping()  # the stale socket file was replaced
    client.close()


def test_commands_counts_exactly_what_others_sent(redis_server):
    srv = redis_server(password=None)
    client = srv.client()
    client.ping()  # connect (and handshake) before counting
    before, sets_before = srv.commands(), srv.commands("set")
    assert srv.commands() == before  # asking does not count
    pipe = client.pipeline(transaction=False)
    for i in range(5):
        pipe.set(f"k{i}", i)
    pipe.execute()
    client.get("k0")
    assert srv.commands() - before == 6
    assert srv.commands("set") - sets_before == 5
    assert srv.commands("xadd") == 0
    srv.restart()
    assert srv.commands() == 0  # a fresh process counts from zero


def test_missing_redis_server_skips_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no redis-server on PATH
    with pytest.raises(pytest.skip.Exception) as skipped:
        RedisServer()
    assert "Debian package redis-server" in str(skipped.value)


# -- the proxy ---------------------------------------------------------------------------------


def test_ping_through_the_proxy(redis_server, tcp_proxy):
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0" and proxy.port != srv.port
    client = no_retry_client(proxy.url)
    assert client.ping() is True
    client.set("through", "proxy")
    assert srv.client().get("through") == "proxy"
    assert (proxy.accepted, proxy.connections()) == (1, 1)
    client.close()
    wait_until(lambda: proxy.connections() == 0, 5, "the proxy to drop the closed connection")


def test_pause_times_out_a_command_and_resume_completes_one(redis_server, tcp_proxy):
    """Paused: connections stay open but nothing moves, so a short-timeout command fails; a
    command with a long timeout, sent during the pause, completes once the proxy resumes."""
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    impatient, patient = no_retry_client(proxy.url, 0.5), no_retry_client(proxy.url, 10)
    impatient.ping(), patient.ping()  # both connected before the partition
    proxy.pause()
    result: list = []
    sender = threading.Thread(target=lambda: result.append(patient.set("late", "yes")))
    sender.start()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        impatient.ping()
    assert time.monotonic() - started >= 0.5
    # The patient SET has had the impatient client's whole timeout to get through, and did not.
    assert sender.is_alive() and srv.client().get("late") is None
    assert proxy.connections() == 2  # a partition, not a disconnection
    proxy.resume()
    sender.join(5)
    assert not sender.is_alive() and result == [True]
    assert srv.client().get("late") == "yes"
    impatient.close(), patient.close()


def test_latency_delays_each_direction(redis_server, tcp_proxy):
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    client = no_retry_client(proxy.url)
    client.ping()
    proxy.set_latency(0.25)
    started = time.monotonic()
    assert client.ping() is True
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3, elapsed  # 0.25 s to Redis and 0.25 s back
    pipe = client.pipeline(transaction=False)
    for i in range(200):  # chunks keep their order under latency
        pipe.rpush("order", i)
    pipe.execute()
    assert srv.client().lrange("order", 0, -1) == [str(i) for i in range(200)]
    proxy.set_latency(0)
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started < 0.25
    client.close()


def test_cut_resets_connections_and_refuses_new_ones_until_restored(redis_server, tcp_proxy):
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    old = raw_connect(proxy.port)
    assert raw_ping(old) == b"+PONG\r\n"
    proxy.cut(refuse_for=None)
    with pytest.raises(ConnectionResetError):
        old.recv(64)
    old.close()
    with pytest.raises(ConnectionRefusedError):
        raw_connect(proxy.port)
    assert srv.client().ping()  # Redis itself stayed up
    proxy.restore()
    with raw_connect(proxy.port) as new:
        assert raw_ping(new) == b"+PONG\r\n"


def test_cut_refuse_for_reopens_by_itself(redis_server, tcp_proxy):
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    proxy.cut(refuse_for=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        raw_connect(proxy.port)
    wait_until(lambda: ping(proxy.port), 5, "the proxy to accept connections again")
    assert time.monotonic() - started >= 0.4  # not before its time (less the refusal's own)


def test_cut_without_refusing_keeps_accepting(redis_server, tcp_proxy):
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    raw = raw_connect(proxy.port)
    client = no_retry_client(proxy.url)
    client.ping(), raw_ping(raw)
    proxy.cut()
    with pytest.raises(ConnectionResetError):
        raw.recv(64)
    raw.close()
    # redis-py's pool notices the dead connection when it hands it out, and reconnects.
    assert client.ping() is True
    assert proxy.accepted == 3 and proxy.connections() == 1
    client.close()


def test_redis_restart_behind_the_proxy(redis_server, tcp_proxy):
    """A restarted Redis (same port) closes the proxied connections, and the proxy passes the
    close on; new connections reach the new, empty, process."""
    srv = redis_server(password=None)
    proxy = tcp_proxy(srv)
    raw = raw_connect(proxy.port)
    client = no_retry_client(proxy.url)
    client.set("key", "value"), raw_ping(raw)
    srv.restart()
    assert raw.recv(64) == b""  # Redis' FIN, passed on (the proxy keeps the client's half open)
    raw.close()
    assert client.get("key") is None  # reconnected through the proxy, to the fresh server
    wait_until(lambda: proxy.connections() == 1, 5, "the proxy to drop the closed connections")
    client.close()


def test_proxy_close_leaks_no_thread_or_descriptor(redis_server):
    srv = redis_server(password=None)
    fds_before = set(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    proxy = TcpProxy(srv.port)
    socks = [raw_connect(proxy.port) for _ in range(3)]
    assert all(raw_ping(s) == b"+PONG\r\n" for s in socks)
    proxy.pause()  # closing must work whatever state the proxy is in
    proxy.close()
    assert threading.active_count() == threads_before
    for sock in socks:
        assert sock.recv(64) == b""  # a clean FIN to every client
        sock.close()
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()
    wait_until(lambda: srv.client().info("clients")["connected_clients"] == 1, 5,
               "Redis to see the proxy's connections closed")  # only the assertion client
