"""The optional TLS listener: same protocol over TLS, wrong-protocol clients on either port,
certificate renewal on reload. Certificates are made by the test with the openssl binary."""

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

from conftest import REPO, ChatClient

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

    def connect_tls(self, port: int, **kwargs) -> "TlsChatClient":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.local_port = self.sock.getsockname()[1]
        self.read_greeting(**kwargs)
        return self

    def peer_subject(self) -> str:
        der = self.sock.getpeercert(binary_form=True)
        return ssl.DER_cert_to_PEM_cert(der)


@pytest.fixture
def tls_server(chatd, tmp_path):
    cert, key = make_cert(tmp_path, "first")
    srv = chatd(tls={"tls_cert": str(cert), "tls_key": str(key)}, args=["--tls-port", "0"])
    event = srv.wait_event("listening")
    srv.tls_port = event["tls_port"]
    srv.cert_dir = tmp_path
    return srv


def tls_client(srv) -> TlsChatClient:
    client = TlsChatClient()
    srv.clients.append(client)
    return client.connect_tls(srv.tls_port, motd=srv.motd_lines, server_name=srv.server_name)


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
