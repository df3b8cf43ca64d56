"""The configuration as the chatd command takes it, as a real subprocess: ``--version``,
``--check-config`` (the shipped file, resolved paths, CLI overrides), bad files and options
(exit 2, one line); the MOTD bounded by the queue it is sent through (issue 9); tls_port
against port; the preflight checks load() cannot make (host names, TLS files), refused alike
by --check-config and chatd; and reload running the same checks, keeping the old config.
load(), its rules, overrides and reload in process: test_config.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from support.configfile import SETTING_FIELDS, write
from support.paths import REPO
from support.sockets import read_until

from chatd import __version__
from chatd.config import ConfigError, load


def run_chatd(*args: str, timeout: float = 30, env=None, prefix=()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "chatd", *args],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


# --- the chatd command, as a real subprocess --------------------------------------------------

def test_version():
    result = run_chatd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chatd {__version__}" == "chatd 0.1.0"


def test_check_config_with_the_shipped_file():
    result = run_chatd("-c", "etc/chatd.toml", "--check-config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "limits.rate = 5.0" in lines
    assert "server.port = 5555" in lines
    assert 'server.motd = "Type /help for the list of commands."' in lines
    assert len(lines) == len(SETTING_FIELDS)
    assert result.stderr == ""


def test_check_config_names_the_paths_an_unset_key_resolves_to():
    """docs/protocol.md §4 defaults depend on the environment: --check-config shows what they are here."""
    env = {"STATE_DIRECTORY": "/var/lib/chatd", "RUNTIME_DIRECTORY": "/run/chatd",
           "CHATD_ADMIN_SOCKET": ""}
    lines = run_chatd("--check-config", env=env).stdout.splitlines()
    assert 'server.state_dir = ""  # default: /var/lib/chatd' in lines
    assert 'admin.admin_socket = ""  # default: /run/chatd/admin.sock' in lines
    lines = run_chatd("--check-config", "--state-dir", "/srv/s", "--admin-socket", "/srv/a.sock",
                      env=env).stdout.splitlines()
    assert {'server.state_dir = "/srv/s"', 'admin.admin_socket = "/srv/a.sock"'} <= set(lines)
    tomllib.loads("\n".join(run_chatd("--check-config", env=env).stdout.splitlines()))  # still TOML


def test_check_config_shows_cli_overrides():
    result = run_chatd("-c", "etc/chatd.toml", "--port", "0", "--log-level", "debug", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "server.port = 0" in result.stdout.splitlines()
    assert 'logging.log_level = "debug"' in result.stdout.splitlines()


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[limits]\nrtae = 5", "limits.rtae"),
        ('[limits]\nrate = "x"', "limits.rate"),
        ("[server]\nport = = 1", "bad.toml"),
    ],
)
def test_bad_file_exits_2_with_one_line(tmp_path, toml, key):
    path = write(tmp_path, toml, "bad.toml")
    for args in (("-c", path, "--check-config"), ("-c", path)):
        result = run_chatd(*args)
        assert result.returncode == 2
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("chatd: error: ") and key in lines[0]


def test_bad_port_option_exits_2():
    result = run_chatd("--port", "99999", "--check-config")
    assert result.returncode == 2
    assert result.stderr.strip() == "chatd: error: server.port: must be an integer between 0 and 65535 (got 99999)"


def test_usage_error_exits_2():
    result = run_chatd("--no-such-option")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_closed_stdin_stdout_is_survived(tmp_path):
    # `0<&- 1>&-`: Python starts with sys.stdin/sys.stdout None (the python-daemon pitfall).
    code = "import runpy, sys; sys.argv = ['chatd', '--version']; runpy.run_module('chatd', run_name='__main__')"
    result = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" -c "$1" 0<&- 1>&-', sys.executable, code],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# --- the MOTD must fit the queue it is sent through (issue 9) --------------------------------

def motd_toml(lines: list[str], **limits) -> str:
    """A [server] motd of ``lines`` (a TOML literal multi-line string) plus [limits]."""
    text = "[server]\nmotd = '''\n" + "\n".join(lines) + "'''\n"
    if limits:
        text += "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items())
    return text


def motd_sent_bytes(lines: list[str]) -> int:
    return sum(len(f"*** {line}\r\n".encode()) for line in lines)


def test_motd_up_to_the_cap_is_accepted_one_byte_more_is_not(tmp_path):
    from chatd.config import MOTD_MAX_BYTES

    lines = ["x" * 1000] * 16
    lines.append("y" * (MOTD_MAX_BYTES - motd_sent_bytes(lines) - 6))  # "*** " + CRLF
    assert motd_sent_bytes(lines) == MOTD_MAX_BYTES == 16384
    assert load(write(tmp_path, motd_toml(lines)), {}).motd == tuple(lines)
    lines[-1] += "y"
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, motd_toml(lines)), {})
    assert str(info.value) == "server.motd: too long: 16385 bytes as sent, at most 16384"


def test_motd_is_bounded_by_a_quarter_of_sendq_bytes(tmp_path):
    lines = ["z" * 94] * 10  # 100 bytes a line as sent: 1000 bytes
    assert load(write(tmp_path, motd_toml(lines, sendq_bytes=4000)), {}).sendq_bytes == 4000
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, motd_toml(lines, sendq_bytes=3999)), {})
    assert str(info.value) == ("server.motd: too long: 1000 bytes as sent, at most 999 "
                               "(limits.sendq_bytes 3999 / 4)")


def test_each_motd_line_is_bounded_by_max_line_bytes(tmp_path):
    ok = ["a" * 60]  # "*** " + 60 = 64 bytes
    assert load(write(tmp_path, motd_toml(ok, max_line_bytes=64)), {}).motd == tuple(ok)
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, motd_toml(["short", "é" * 31], max_line_bytes=64)), {})  # 4 + 62 + ...
    assert str(info.value) == ("server.motd: line 2 too long: 66 bytes as sent, at most "
                               "limits.max_line_bytes (64)")


def test_five_megabyte_motd_is_refused_by_check_config_and_by_chatd(tmp_path):
    path = write(tmp_path, motd_toml(["x" * 100] * 50_000), "big.toml")  # ~5 MB
    for args in (("-c", path, "--check-config"), ("-c", path, "--port", "0")):
        result = run_chatd(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            "chatd: error: server.motd: too long: 5300000 bytes as sent, at most 16384"]


def test_motd_at_the_sendq_bound_reaches_every_client_whole(chatd):
    """The bound is one that works: a MOTD of exactly sendq_bytes / 4 is delivered to clients
    connecting together, with room left for the join notices that follow it."""
    lines = ["m" * 94] * 10 + ["end" + "d" * 15]  # 10 x 100 + 24 bytes as sent
    assert motd_sent_bytes(lines) == 1024
    srv = chatd(server={"motd": "\n".join(lines)}, limits={"sendq_bytes": 4096})
    clients = srv.connect_many(4)  # each read the whole MOTD (read_greeting checks it)
    clients[0].send_line("all here")
    for other in clients[1:]:
        other.expect(f"<{clients[0].nick}> all here")
    assert not srv.find_events("sendq_exceeded")


# --- tls_port and port ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "toml, ok",
    [
        ('[tls]\ntls_cert = "c"\ntls_key = "k"\ntls_port = 5555', False),
        ('[server]\nport = 7000\n[tls]\ntls_cert = "c"\ntls_key = "k"\ntls_port = 7000', False),
        ('[server]\nport = 0\n[tls]\ntls_cert = "c"\ntls_key = "k"\ntls_port = 0', True),  # both picked
        ("[tls]\ntls_port = 5555", True),  # TLS off: tls_port is not used
    ],
)
def test_tls_port_must_differ_from_port(tmp_path, toml, ok):
    path = write(tmp_path, toml)
    if ok:
        load(path, {})
        return
    with pytest.raises(ConfigError) as info:
        load(path, {})
    assert info.value.key == "tls.tls_port"
    assert str(info.value).startswith("tls.tls_port: same as server.port (")


# --- preflight: what load() cannot see, refused by --check-config and chatd alike -----------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="needs the openssl binary (Debian package openssl)")


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


def refused_alike(tmp_path: Path, toml: str, expected: str, start=("--port", "0"),
                  prefix=()) -> None:
    """``--check-config`` and ``chatd`` itself (with the options ``start``) both exit 2 with
    the one line ``chatd: error: EXPECTED...``, and chatd started nothing (no admin socket).
    ``prefix`` runs chatd through a command (setpriv)."""
    path = write(tmp_path, toml, "preflight.toml")
    admin = tmp_path / "admin.sock"
    for args in (("--check-config",), start):
        result = run_chatd("-c", path, "--admin-socket", str(admin),
                           "--state-dir", str(tmp_path / "state"), *args, prefix=prefix)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"chatd: error: {expected}"), result.stderr
        assert result.stdout == "" and not admin.exists()


def tls_toml(cert, key, extra: str = "") -> str:
    return f'[tls]\ntls_cert = "{cert}"\ntls_key = "{key}"\ntls_port = 0\n{extra}'


def test_unresolvable_host_is_refused(tmp_path):
    refused_alike(tmp_path, '[server]\nhost = "nosuch.invalid"\n',
                  "server.host: cannot resolve 'nosuch.invalid'")


def test_host_that_is_no_host_name_is_refused_without_a_traceback(tmp_path):
    refused_alike(tmp_path, '[server]\nhost = "a..b"\n',
                  "server.host: cannot resolve 'a..b' (not a valid host name)")


def test_tls_port_equal_to_port_is_refused(tmp_path):
    refused_alike(tmp_path, '[server]\nport = 7000\n[tls]\ntls_cert = "/c"\ntls_key = "/k"\n'
                            'tls_port = 7000\n', "tls.tls_port: same as server.port (7000)",
                  start=())  # --port 0 would make the check moot


@pytest.mark.parametrize("toml, expected", [
    ('[server]\nport = 7000\n[irc]\nirc_port = 7000\n', "irc.irc_port: same as server.port (7000)"),
    ('[irc]\nirc_tls_port = 6697\n', "irc.irc_tls_port: needs tls.tls_cert and tls.tls_key"),
    ('[irc]\nirc_port = 6667\nirc_tls_port = 6667\n[tls]\ntls_cert = "/c"\ntls_key = "/k"\n',
     "irc.irc_tls_port: same as irc.irc_port (6667)"),
    ('[irc]\nirc_operators = ["no way"]\n',
     "irc.irc_operators: must be a list of at most 64 account names"),
])
def test_irc_settings_are_checked(tmp_path, toml, expected):
    refused_alike(tmp_path, toml, expected, start=())


@needs_openssl
def test_missing_tls_files_are_refused(tmp_path):
    cert, key = make_cert(tmp_path, "good")
    refused_alike(tmp_path, tls_toml("/x/cert.pem", key), "tls.tls_cert: no such file /x/cert.pem")
    refused_alike(tmp_path, tls_toml(cert, tmp_path / "nope.key"),
                  f"tls.tls_key: no such file {tmp_path / 'nope.key'}")
    refused_alike(tmp_path, tls_toml(tmp_path, key), f"tls.tls_cert: is a directory: {tmp_path}")


@needs_openssl
def test_unreadable_tls_key_is_refused(tmp_path):
    """Root reads any file, so as root chatd runs as nobody (setpriv) on a key only root reads."""
    prefix = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv (Debian package util-linux) to drop privileges")
        prefix = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--")
        tmp_path = Path(tempfile.mkdtemp(prefix="chatd-pf-"))  # pytest's own is 0700
        tmp_path.chmod(0o755)
    try:
        cert, key = make_cert(tmp_path, "good")
        cert.chmod(0o644)
        key.chmod(0o600 if prefix else 0)
        refused_alike(tmp_path, tls_toml(cert, key), f"tls.tls_key: cannot read {key}: Permission denied",
                      prefix=prefix)
    finally:
        if prefix:
            shutil.rmtree(tmp_path, ignore_errors=True)


@needs_openssl
def test_certificate_and_key_that_do_not_match_are_refused(tmp_path):
    cert, _ = make_cert(tmp_path, "one")
    _, other_key = make_cert(tmp_path, "two")
    refused_alike(tmp_path, tls_toml(cert, other_key),
                  f"tls.tls_key: {other_key} does not match the certificate in {cert}")


@needs_openssl
def test_files_that_are_not_pem_are_refused_naming_which(tmp_path):
    cert, key = make_cert(tmp_path, "good")
    refused_alike(tmp_path, tls_toml(key, cert), f"tls.tls_cert: no PEM certificate in {key}")
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    refused_alike(tmp_path, tls_toml(cert, junk), f"tls.tls_key: no PEM private key in {junk}")


@needs_openssl
def test_encrypted_key_is_refused_instead_of_prompting(tmp_path):
    cert, key = make_cert(tmp_path, "good")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret",
                    "-out", str(encrypted)], check=True, capture_output=True, timeout=30)
    refused_alike(tmp_path, tls_toml(cert, encrypted), f"tls.tls_key: {encrypted} is encrypted")


@needs_openssl
def test_good_tls_files_pass_check_config(tmp_path):
    cert, key = make_cert(tmp_path, "good")
    result = run_chatd("-c", write(tmp_path, tls_toml(cert, key)), "--check-config")
    assert result.returncode == 0, result.stderr
    assert f'tls.tls_cert = "{cert}"' in result.stdout.splitlines()


# --- reload: the same checks, and the old config stays --------------------------------------

def reload_error(srv) -> str:
    """Ask the running daemon to reload over its admin socket; the error it must return."""
    from support.admin import Admin

    admin = Admin(srv.admin_socket)
    try:
        reply = admin.ask({"id": 1, "cmd": "reload"})
    finally:
        admin.close()
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "reload_failed"
    return reply["error"]["message"]


def test_reload_with_a_too_large_motd_fails_and_keeps_the_old_one(chatd):
    srv = chatd(server={"motd": "the old motd"})
    srv.config_path.write_text(motd_toml(["x" * 100] * 50_000))
    assert reload_error(srv) == "server.motd: too long: 5300000 bytes as sent, at most 16384"
    srv.wait_event("config_reload_failed", error=lambda e: e.startswith("server.motd: too long"))
    first, second = srv.connect_many(2)  # greeted with the old MOTD (read_greeting checks it)
    first.send_line("still here")
    second.expect(f"<{first.nick}> still here")


def tls_greeting(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        return read_until(sock, b"you are ")


@needs_openssl
def test_reload_runs_the_tls_preflight_and_keeps_the_old_certificate(chatd, tmp_path):
    cert, key = make_cert(tmp_path, "first")
    _, other_key = make_cert(tmp_path, "other")
    srv = chatd(tls={"tls_cert": str(cert), "tls_key": str(key)}, args=["--tls-port", "0"])
    tls_port = srv.wait_event("listening")["tls_port"]
    key.write_bytes(other_key.read_bytes())  # a botched renewal: the key of another certificate
    assert reload_error(srv) == f"tls.tls_key: {key} does not match the certificate in {cert}"
    cert.unlink()
    assert reload_error(srv) == f"tls.tls_cert: no such file {cert}"
    assert b"*** welcome to chatd" in tls_greeting(tls_port)  # the old context still serves
    srv.connect()
