"""The optional TLS listener: same protocol over TLS, wrong-protocol clients on either port,
certificate renewal on reload, and connections that never finish a handshake (they hold a
handshake slot, not a client slot, and not for long). Certificates are made by the test with
the openssl binary."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from support.client import ChatClient
from support.paths import REPO
from support.procfs import proc_figures, settle
from support.waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="needs the openssl binary (Debian package openssl)")


def make_cert(directory, name: str, cn: str = "localhost"):
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class TlsChatClient(ChatClient):
    """A ChatClient whose socket is wrapped in TLS (certificate checks off: a test CA)."""

    def connect_tls(self, port: int, source: str | None = None, **kwargs) -> TlsChatClient:
        """``source``: the local address (another 127.x address is another IP to chatd)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=5,
                                       source_address=(source, 0) if source else None)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.local_port = self.sock.getsockname()[1]
        self.read_greeting(**kwargs)
        return self

    def peer_subject(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        return ssl.DER_cert_to_PEM_cert(der)


@pytest.fixture
def tls_server(chatd, tmp_path):
    return start_tls(chatd, tmp_path)


def start_tls(chatd, tmp_path, limits=None, **tls):
    """A chatd with a TLS listener; ``tls`` adds keys to [tls] (handshake limits)."""
    cert, key = make_cert(tmp_path, "first")
    srv = chatd(tls={"tls_cert": str(cert), "tls_key": str(key), **tls}, limits=limits or {},
                args=["--tls-port", "0"])
    event = srv.wait_event("listening")
    srv.tls_port = event["tls_port"]
    srv.cert_dir = tmp_path
    return srv


def tls_client(srv, source: str | None = None) -> TlsChatClient:
    client = TlsChatClient()
    srv.clients.append(client)
    return client.connect_tls(srv.tls_port, source, motd=srv.motd_lines, server_name=srv.server_name)


def test_tls_and_plain_clients_chat_together(tls_server):
    plain = tls_server.connect()
    secure = tls_client(tls_server)
    plain.expect(f"*** {secure.nick} joined lobby")
    secure.send_line("over tls")
    plain.expect(f"<{secure.nick}> over tls")
    plain.send_line("over tcp")
    secure.expect(f"<{plain.nick}> over tcp")
    secure.send_line("/who")
    secure.expect(f"*** in lobby: {plain.nick}, {secure.nick}")
    tls_server.wait_event("client_connected", tls=True)


#: The command-line TLS clients a user would reach for (issue: `ncat --ssl`, `openssl s_client`).
TLS_CLIENTS = {
    "openssl": lambda port: ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}"],
    "ncat": lambda port: ["ncat", "--ssl", "127.0.0.1", str(port)],
}
TLS_CLIENT_PACKAGES = {"openssl": "openssl", "ncat": "ncat"}


@pytest.mark.parametrize("tool", sorted(TLS_CLIENTS))
def test_command_line_tls_client_is_a_working_client(tls_server, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool} (Debian package {TLS_CLIENT_PACKAGES[tool]}; make test "
                    "installs it when run as root)")
    plain = tls_server.connect()
    proc = subprocess.Popen(TLS_CLIENTS[tool](tls_server.tls_port),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        joined = plain.wait_for(lambda line: line.endswith(" joined lobby"))
        nick = joined.split()[1]
        proc.stdin.write(f"hello from {tool}\n".encode())
        proc.stdin.flush()
        plain.expect(f"<{nick}> hello from {tool}")
        plain.send_line("hi back")
        deadline = time.monotonic() + 10
        seen = b""
        while f"<{plain.nick}> hi back".encode() not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, seen
            if select.select([proc.stdout], [], [], remaining)[0]:
                chunk = proc.stdout.read1(4096)
                assert chunk, f"{tool} exited; it printed {seen!r}"
                seen += chunk
    finally:
        proc.kill()
        proc.wait(10)


def test_plain_text_on_the_tls_port_is_closed_and_harms_nobody(tls_server):
    chat = tls_server.connect()
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as raw:
        raw.sendall(b"hello, is this chat?\r\n")
        deadline = time.monotonic() + 5
        while raw.recv(4096):
            assert time.monotonic() < deadline, "TLS port kept a plain-text client open"
    tls_server.wait_event("tls_handshake_failed")
    chat.send_line("/rooms")
    chat.wait_for("*** lobby (1 member)")


def test_tls_client_hello_on_the_plain_port_is_closed(tls_server):
    chat = tls_server.connect()
    context = ssl.create_default_context()
    raw = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        context.wrap_socket(raw, server_hostname="localhost")
    raw.close()
    tls_server.wait_event("tls_on_plain_port")
    chat.wait_for(lambda line: line.endswith("(tls on plain port)"))
    chat.send_line("/rooms")
    chat.wait_for("*** lobby (1 member)")


def test_reload_picks_up_a_renewed_certificate(tls_server):
    first = tls_client(tls_server).peer_subject()
    cert, key = make_cert(tls_server.cert_dir, "second", cn="renewed")
    shutil.copy(cert, tls_server.cert_dir / "first.pem")
    shutil.copy(key, tls_server.cert_dir / "first.key")
    tls_server.proc.send_signal(signal.SIGHUP)
    tls_server.wait_event("config_reloaded")
    second = tls_client(tls_server).peer_subject()
    assert second != first and second == ssl.DER_cert_to_PEM_cert(
        ssl.PEM_cert_to_DER_cert(cert.read_text()))


def test_shutdown_reaches_tls_clients(tls_server):
    secure = tls_client(tls_server)
    assert tls_server.terminate() == 0
    assert secure.expect_closed() == ["*** server shutting down"]


def test_upgrade_asks_tls_clients_to_reconnect_and_keeps_plain_ones(tls_server):
    """SPEC §9: a TLS session cannot leave the process, so its client is told and closed;
    the plain client stays, and the new process serves TLS on the same port."""
    from test_upgrade import upgrade  # (test_upgrade does not import us: no cycle)

    plain = tls_server.connect()
    secure = tls_client(tls_server)
    plain.expect(f"*** {secure.nick} joined lobby")
    m = upgrade(tls_server)
    assert m[5] == "1", m[0]  # the plain client only
    assert secure.expect_closed() == ["*** server restarting, please reconnect"]
    plain.wait_for(lambda line: line.startswith(f"*** {secure.nick} left"))
    again = tls_client(tls_server)
    plain.expect(f"*** {again.nick} joined lobby")
    again.send_line("tls after the upgrade")
    plain.expect(f"<{again.nick}> tls after the upgrade")


def test_tls_config_errors(tmp_path):
    cert, key = make_cert(tmp_path, "x")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    half = tmp_path / "half.toml"
    half.write_text(f'[tls]\ntls_cert = "{cert}"\n')
    result = subprocess.run([sys.executable, "-m", "chatd", "-c", str(half), "--check-config"],
                            capture_output=True, text=True, timeout=20, env=env)
    assert result.returncode == 2 and result.stderr.startswith("chatd: error: tls.tls_key:")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[tls]\ntls_cert = "{key}"\ntls_key = "{cert}"\n')  # swapped
    result = subprocess.run([sys.executable, "-m", "chatd", "-c", str(bad), "--port", "0",
                             "--admin-socket", str(tmp_path / "a.sock"), "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=20, env=env, stdin=subprocess.DEVNULL)
    # A config that cannot start is refused as a config error before anything starts (preflight)
    assert result.returncode == 2
    assert result.stderr.startswith(f"chatd: error: tls.tls_cert: no PEM certificate in {key}")
    assert "Traceback" not in result.stderr


# -- connections that never finish a handshake (issue 9, defect 2) ------------------------------


class Silent:
    """``n`` TCP connections to ``port`` that never send a byte, and when each one ended.

    ``ended[i]`` is ``(seconds after connecting, "reset" | "eof")`` once chatd has closed
    connection ``i``; :meth:`wait_ended` waits for a number of them (by condition).
    """

    def __init__(self, port: int, n: int, source: str = "127.0.0.1") -> None:
        self.socks, self.started, self.ended = [], [], {}
        self._poller = select.poll()
        self._index = {}
        for i in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.settimeout(5)
            self.socks.append(sock)
            self.started.append(time.monotonic())
            try:
                sock.connect(("127.0.0.1", port))
            except ConnectionResetError:  # chatd was quicker than connect() returning
                self.ended[i] = (time.monotonic() - self.started[i], "reset")
                continue
            sock.setblocking(False)
            self._index[sock.fileno()] = i
            self._poller.register(sock, select.POLLIN)

    def check(self) -> int:
        for fd, _ in self._poller.poll(0):
            i = self._index[fd]
            try:
                how = "eof" if self.socks[i].recv(1) == b"" else "data"
            except ConnectionResetError:
                how = "reset"
            except BlockingIOError:
                continue
            self.ended[i] = (time.monotonic() - self.started[i], how)
            self._poller.unregister(fd)
        return len(self.ended)

    def wait_ended(self, count: int, timeout: float) -> None:
        wait_until(lambda: self.check() >= count, timeout,
                   what=lambda: f"{count} closed connections, {len(self.ended)} so far")

    def open(self) -> list[int]:
        self.check()
        return [i for i in range(len(self.socks)) if i not in self.ended]

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def refused_at_once(port: int, source: str) -> float:
    """Seconds until chatd drops a TLS client over a handshake cap (it must fail, not hang)."""
    started = time.monotonic()
    context = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, OSError)):  # a reset, in connect() or in the handshake
        with socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=(source, 0)) as raw:
            context.wrap_socket(raw, server_hostname="localhost")
    return time.monotonic() - started


def test_silent_tls_connections_take_no_client_slot_and_time_out(chatd, tmp_path):
    """200 connections that never say hello, max_clients 20: 25 take handshake slots (the
    per-address cap), the other 175 are reset at once; a plain client and a TLS client get
    in regardless; the 25 are closed after handshake_timeout; threads and fds come back."""
    timeout = 4.0
    srv = start_tls(chatd, tmp_path, limits={"max_clients": 20},
                    max_handshakes=40, max_handshakes_per_ip=25, handshake_timeout=timeout)
    baseline = proc_figures(srv.proc.pid)
    silent = Silent(srv.tls_port, 200)
    try:
        silent.wait_ended(175, timeout=timeout)
        assert len(silent.ended) == 175 and {how for _, how in silent.ended.values()} == {"reset"}
        plain = srv.connect()  # 25 pending handshakes > max_clients: they are not clients
        secure = tls_client(srv, source="127.0.0.2")  # a free handshake slot, another address
        assert refused_at_once(srv.tls_port, "127.0.0.1") < timeout  # that address is at its cap
        pending = silent.open()
        assert len(pending) == 25, "the silent connections timed out before the check was made"
        secure.send_line("over tls, past the flood")
        plain.wait_for(f"<{secure.nick}> over tls, past the flood")

        silent.wait_ended(200, timeout=timeout + 10)
        for i in pending:
            after, how = silent.ended[i]
            assert how == "eof" and after >= timeout - 0.05, (i, after, how)
        srv.wait_event("tls_handshake_failed", error="handshake timed out")
        plain.close()
        secure.close()
        settle(srv.proc.pid, baseline, what="chatd after the silent TLS connections")
    finally:
        silent.close()


def test_handshake_cap_refusals_are_few_log_lines_and_shutdown_ends_handshakes(chatd, tmp_path):
    """The global cap: 100 silent connections from one address with room for 5; the rest,
    and a TLS client from another address, are reset at once, logged as a handful of
    ``tls_handshake_refused`` lines whose counts add up. SIGTERM ends the 5 at once."""
    srv = start_tls(chatd, tmp_path, max_handshakes=5, max_handshakes_per_ip=100,
                    handshake_timeout=30.0)
    plain = srv.connect()
    silent = Silent(srv.tls_port, 100)
    try:
        silent.wait_ended(95, timeout=10)
        assert refused_at_once(srv.tls_port, "127.0.0.2") < 5
        assert len(silent.open()) == 5
        plain.expect_silence()  # the plain port is served all along
        started = time.monotonic()
        assert srv.terminate() == 0
        silent.wait_ended(100, timeout=5)
        assert time.monotonic() - started < 5, "pending handshakes held up the shutdown"
    finally:
        silent.close()
    assert plain.expect_closed() == ["*** server shutting down"]
    refused = srv.find_events("tls_handshake_refused")
    assert 1 <= len(refused) <= 3, refused
    assert sum(event["count"] for event in refused) == 96
    assert {event["reason"] for event in refused} == {"too many handshakes"}
    assert not srv.find_events("sessions_left")
    assert not srv.find_events("tls_handshake_failed")  # ended by shutdown, not failed


def test_tls_client_over_max_clients_is_told_server_full_over_tls(chatd, tmp_path):
    srv = start_tls(chatd, tmp_path, limits={"max_clients": 1})
    only = srv.connect()
    refused = TlsChatClient()
    srv.clients.append(refused)
    with pytest.raises(AssertionError, match=r"not a greeting: '\*\*\* error: server full'"):
        refused.connect_tls(srv.tls_port)
    assert refused.expect_closed() == []
    srv.wait_event("client_refused", reason="server full", tls=True)
    only.expect_silence()  # nobody joined or left


def test_handshake_limits_are_validated(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key, value in (("max_handshakes", "0"), ("max_handshakes_per_ip", "-1"),
                       ("handshake_timeout", "0")):
        path = tmp_path / f"{key}.toml"
        path.write_text(f"[tls]\n{key} = {value}\n")
        result = subprocess.run([sys.executable, "-m", "chatd", "-c", str(path), "--check-config"],
                                capture_output=True, text=True, timeout=20, env=env)
        assert result.returncode == 2 and result.stderr.startswith(f"chatd: error: tls.{key}:"), result.stderr
