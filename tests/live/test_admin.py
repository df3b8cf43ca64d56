"""The admin socket, spoken to directly (raw JSON lines over the real Unix socket).

chatctl's own tests are in test_chatctl.py; these pin the daemon side: file modes, the stale and
live socket checks, SO_PEERCRED, the protocol's error codes and robustness, reload and shutdown.
What the commands do to chat clients (kick, mute, broadcast, bans, list under load):
test_admin_actions.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest
from support.admin import Admin, error_code, ok
from support.daemon import start_raw

from chatd.admin.protocol import daemon_socket_path
from chatd.lifecycle.service import state_dir


def as_nobody(code: str, groups: str = "--clear-groups") -> subprocess.CompletedProcess:
    """Run ``code`` in /usr/bin/python3 as the unprivileged user nobody (no groups, or
    ``groups="--groups=NAME"``)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (Debian package util-linux) to drop privileges")
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", groups, "--",
                           "/usr/bin/python3", "-c", code],
                          capture_output=True, text=True, timeout=20)


PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1] if len(sys.argv) > 1 else {path!r})
except OSError as e:
    print("connect-error", e.errno); raise SystemExit(0)
s.sendall(b'{{"id": 1, "cmd": "status"}}\\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
    if data.endswith(b"\\n"): break
print(data.decode().strip())
"""


# -- the socket file ---------------------------------------------------------------------------


def test_socket_and_directory_modes_and_removal_at_exit(chatd, tmp_path):
    base = tempfile.mkdtemp(prefix="chatd-m-")
    try:
        path = os.path.join(base, "run", "admin.sock")
        srv = chatd(args=["--admin-socket", path])
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert ok(Admin(path).ask({"id": 1, "cmd": "status"}))["clients"] == 0
        assert srv.terminate() == 0
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stale_socket_is_replaced(chatd):
    base = tempfile.mkdtemp(prefix="chatd-s-")
    try:
        path = os.path.join(base, "admin.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)  # a socket file nobody listens on, as a killed chatd leaves
        stale.close()
        srv = chatd(args=["--admin-socket", path])
        assert ok(Admin(path).ask({"cmd": "status"}))["port"] == srv.port
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_live_socket_refuses_a_second_daemon(server):
    result = start_raw("--admin-socket", server.admin_socket)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"chatd: error: another chatd is already running (its admin socket {server.admin_socket} answers)"]
    assert ok(Admin(server.admin_socket).ask({"cmd": "status"}))  # the first one is unharmed


def test_a_regular_file_in_the_way_is_not_deleted(tmp_path):
    path = tmp_path / "admin.sock"
    path.write_text("precious")
    result = start_raw("--admin-socket", str(path), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1 and "is not a socket" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_text() == "precious"


@pytest.mark.parametrize("env, uid, expected", [
    ({"RUNTIME_DIRECTORY": "/run/chatd"}, 0, "/run/chatd/admin.sock"),
    ({"RUNTIME_DIRECTORY": "/rt/a:/rt/b", "XDG_RUNTIME_DIR": "/run/user/7"}, 7, "/rt/a/admin.sock"),
    ({"XDG_RUNTIME_DIR": "/run/user/0"}, 0, "/run/chatd/admin.sock"),
    ({"XDG_RUNTIME_DIR": "/run/user/7"}, 7, "/run/user/7/chatd/admin.sock"),
    ({}, 7, "/tmp/chatd-7/admin.sock"),
    ({"CHATD_ADMIN_SOCKET": "/x/a.sock", "RUNTIME_DIRECTORY": "/rt"}, 0, "/x/a.sock"),
])
def test_default_socket_path_follows_spec_order(env, uid, expected):
    """docs/protocol.md §4: $RUNTIME_DIRECTORY, /run/chatd as root, $XDG_RUNTIME_DIR/chatd, /tmp/chatd-UID;
    CHATD_ADMIN_SOCKET over all of them."""
    assert daemon_socket_path(env, uid) == expected


@pytest.mark.parametrize("env, expected", [
    ({"STATE_DIRECTORY": "/var/lib/chatd", "XDG_STATE_HOME": "/xdg"}, "/var/lib/chatd"),
    ({"XDG_STATE_HOME": "/xdg"}, "/xdg/chatd"),
    ({"HOME": "/home/op"}, "/home/op/.local/state/chatd"),
])
def test_default_state_dir_follows_spec_order(monkeypatch, env, expected):
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert state_dir(SimpleNamespace(state_dir="")) == expected
    assert state_dir(SimpleNamespace(state_dir="/opt/s")) == "/opt/s"  # the option wins


def test_systemd_directories_are_the_defaults_of_a_real_daemon(chatd, tmp_path):
    """Under systemd (RUNTIME_DIRECTORY, STATE_DIRECTORY set) and without the options, the admin
    socket is made in the runtime directory and bans are saved in the state directory."""
    runtime, state = tmp_path / "run", tmp_path / "state"
    runtime.mkdir(mode=0o700)
    state.mkdir()
    srv = chatd(env={"CHATD_ADMIN_SOCKET": "", "RUNTIME_DIRECTORY": str(runtime),
                     "STATE_DIRECTORY": str(state)}, args=["--state-dir", ""])
    path = str(runtime / "admin.sock")
    assert srv.wait_event("listening")["admin_socket"] == path
    ok(Admin(path).ask({"cmd": "ban", "args": {"address": "192.0.2.1"}}))
    assert "192.0.2.1" in (state / "bans.json").read_text()
    assert srv.terminate() == 0
    assert not os.path.exists(path)


# -- who may talk to it ------------------------------------------------------------------------


def test_unprivileged_user_is_refused_even_through_an_open_socket(server):
    # First wall down on purpose: directory and socket world-accessible.
    os.chmod(os.path.dirname(server.admin_socket), 0o777)
    os.chmod(server.admin_socket, 0o666)
    result = as_nobody(PROBE.format(path=server.admin_socket))
    assert result.stdout.startswith("{"), result
    reply = json.loads(result.stdout)
    assert reply["ok"] is False and reply["error"]["code"] == "permission_denied", result
    server.wait_event("admin_denied", uid=65534)
    assert not server.find_events("admin_command", uid=65534)


def test_file_modes_keep_an_unprivileged_user_out(server):
    result = as_nobody(PROBE.format(path=server.admin_socket))
    assert result.stdout.split()[0] == "connect-error", result  # EACCES at the directory


def test_admin_group_members_are_served(chatd):
    base = tempfile.mkdtemp(prefix="chatd-g-")
    try:
        os.chmod(base, 0o755)
        path = os.path.join(base, "run", "admin.sock")
        chatd(args=["--admin-socket", path], admin={"admin_group": "staff"})
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 50  # staff
        member = as_nobody(PROBE.format(path=path), "--groups=staff")
        assert json.loads(member.stdout)["ok"] is True, member
        outsider = as_nobody(PROBE.format(path=path))
        assert outsider.stdout.split()[0] == "connect-error", outsider
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, code", [
    (b"garbage", "bad_json"),
    (b"{\"cmd\": ", "bad_json"),
    (b"[1, 2]", "bad_request"),
    (b"\"status\"", "bad_request"),
    (b"{\"id\": 5}", "bad_request"),
    (b"{\"cmd\": 3}", "bad_request"),
    (b"{\"cmd\": \"frobnicate\"}", "unknown_command"),
    (b"{\"cmd\": \"kick\"}", "bad_args"),
    (b"{\"cmd\": \"kick\", \"args\": {\"target\": true}}", "bad_args"),
    (b"{\"cmd\": \"kick\", \"args\": {\"target\": 1, \"extra\": 2}}", "bad_args"),
    (b"{\"cmd\": \"status\", \"args\": []}", "bad_args"),
    (b"{\"cmd\": \"ban\", \"args\": {\"address\": \"not-an-ip\"}}", "invalid_address"),
    (b"{\"cmd\": \"ban\", \"args\": {\"address\": \"10.0.0.1\", \"duration\": -5}}", "bad_args"),
    (b"{\"cmd\": \"unban\", \"args\": {\"address\": \"10.9.9.9\"}}", "not_found"),
    (b"{\"cmd\": \"kick\", \"args\": {\"target\": \"nobody\"}}", "not_found"),
    # a digit to str.isdigit() but not to int(): found by the fuzzer as an internal_error
    ("{\"cmd\": \"unmute\", \"args\": {\"target\": \"\u00b2\"}}".encode(), "not_found"),
    (b"{\"cmd\": \"broadcast\", \"args\": {\"text\": \"x\", \"room\": \"nowhere\"}}", "not_found"),
    (b"\xff\xfe\x00", "bad_json"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_requests_get_an_error_code_and_the_connection_goes_on(server, line, code):
    admin = Admin(server.admin_socket)
    admin.send(line + b"\n")
    assert error_code(admin.read()) == code
    assert ok(admin.ask({"id": "after", "cmd": "status"}))["clients"] == 0


def _strict(line: bytes) -> dict:
    """Parse as RFC 8259 JSON: Python's json would accept NaN and Infinity."""
    def refuse(name):
        raise AssertionError(f"not strict JSON ({name}): {line!r}")
    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize("line, code", [
    (b'{"id": 1e999, "cmd": "status"}', "bad_request"),
    (b'{"id": -1e999, "cmd": "status"}', "bad_request"),
    (b'{"id": NaN, "cmd": "status"}', "bad_request"),
    (b'{"id": Infinity, "cmd": "nope"}', "bad_request"),
])
def test_non_finite_ids_are_refused_with_a_strict_json_reply(server, line, code):
    admin = Admin(server.admin_socket)
    admin.send(line + b"\n")
    reply = _strict(admin.read_raw())
    assert (reply["id"], error_code(reply)) == (None, code)
    assert "finite" in reply["error"]["message"]
    assert _strict(admin.send(b'{"id": 1.5, "cmd": "rooms"}\n') or admin.read_raw())["id"] == 1.5


def test_non_finite_arguments_are_bad_args(server):
    admin = Admin(server.admin_socket)
    admin.send(b'{"id": 2, "cmd": "ban", "args": {"address": "192.0.2.1", "duration": 1e999}}\n')
    reply = _strict(admin.read_raw())
    assert (reply["id"], error_code(reply)) == (2, "bad_args")
    assert ok(admin.ask({"cmd": "bans"})) == []


def test_reply_carries_the_request_id_and_several_requests_share_a_connection(server):
    admin = Admin(server.admin_socket)
    admin.send(b'{"id": 7, "cmd": "rooms"}\n{"id": "x", "cmd": "bans"}\n{"cmd": "nope", "id": 9}\n')
    first, second, third = admin.read(), admin.read(), admin.read()
    assert (first["id"], first["result"]) == (7, [{"name": "lobby", "members": 0}])
    assert (second["id"], second["result"]) == ("x", [])
    assert (third["id"], third["error"]["code"]) == (9, "unknown_command")


def test_oversized_line_is_refused_then_skipped(server):
    admin = Admin(server.admin_socket)
    admin.send(b"{\"cmd\": \"status\", \"pad\": \"" + b"x" * 100_000 + b"\"}\n")
    assert error_code(admin.read()) == "line_too_long"
    assert ok(admin.ask({"id": 2, "cmd": "status"}))
    server.wait_event("admin_command", outcome="line_too_long")


def test_half_a_line_then_close_and_raw_garbage_leave_the_daemon_serving(server):
    chat = server.connect()
    half = Admin(server.admin_socket)
    half.send(b'{"id": 1, "cmd": "sta')
    half.close()
    noise = Admin(server.admin_socket)
    noise.send(bytes(range(256)) * 64)
    noise.close()
    assert ok(Admin(server.admin_socket).ask({"cmd": "status"}))["clients"] == 1
    chat.expect_silence()


def test_admin_commands_are_logged_with_peer_credentials(server):
    Admin(server.admin_socket).ask({"id": 1, "cmd": "rooms"})
    event = server.wait_event("admin_command", command="rooms")
    assert event["uid"] == os.getuid() and event["pid"] == os.getpid() and event["outcome"] == "ok"
    Admin(server.admin_socket).ask({"id": 2, "cmd": "kick", "args": {"target": "ghost"}})
    server.wait_event("admin_command", command="kick", outcome="not_found")


def test_list_and_status_describe_the_clients(server):
    alice = server.connect()
    alice.set_nick("alice")
    alice.send_line("hello")
    bob = server.connect()
    bob.join("dev")
    alice.sync()
    admin = Admin(server.admin_socket)
    listed = ok(admin.ask({"cmd": "list"}))
    assert [(c["nick"], c["room"]) for c in listed] == [("alice", "lobby"), (bob.nick, "dev")]
    first = listed[0]
    assert first["lines_in"] >= 3 and first["bytes_in"] > 0 and first["bytes_out"] > 0
    assert first["ip"] == "127.0.0.1" and first["peer"].endswith(f":{alice.local_port}")
    assert first["sendq"] == 0 and first["muted"] is False and first["idle"] >= 0
    assert ok(admin.ask({"cmd": "list", "args": {"room": "dev"}}))[0]["nick"] == bob.nick
    status = ok(admin.ask({"cmd": "status"}))
    assert (status["clients"], status["rooms"], status["port"]) == (2, 2, server.port)
    assert status["lines_in"] >= 4 and status["pid"] > 0


# -- reload and shutdown -----------------------------------------------------------------------


def test_sighup_and_admin_reload_share_one_path(chatd):
    srv = chatd(server={"motd": "first"})
    srv.config_path.write_text('[server]\nmotd = "second"\n')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_event("config_reloaded")
    srv.connect(motd=["second"])
    srv.config_path.write_text('[limits]\nrate = "fast"\n')
    reply = Admin(srv.admin_socket).ask({"id": 1, "cmd": "reload"})
    assert error_code(reply) == "reload_failed" and "limits.rate" in reply["error"]["message"]
    srv.wait_event("config_reload_failed")
    srv.connect(motd=["second"])  # the old config stays


def test_reload_applies_limits_and_log_level_without_dropping_anyone(chatd):
    """docs/protocol.md §4: a reload applies limits, MOTD and log level; connected clients stay."""
    srv = chatd(server={"motd": "first"})
    admin = Admin(srv.admin_socket)
    first = srv.connect()
    srv.config_path.write_text('[server]\nmotd = "second"\n[limits]\nmax_clients = 1\n')
    ok(admin.ask({"cmd": "reload"}))
    # max_clients = 1 now holds: the client already here is kept, a second one is refused
    assert srv.connect(greet=False).expect_closed() == ["*** error: server full"]
    first.send_line("/who")
    first.expect(f"*** in lobby: {first.nick}")
    srv.config_path.write_text('[server]\nmotd = "third"\n[logging]\nlog_level = "warning"\n')
    ok(admin.ask({"cmd": "reload"}))
    second = srv.connect(motd=["third"])
    [second_id] = [c["id"] for c in ok(admin.ask({"cmd": "list"})) if c["nick"] == second.nick]
    # log_level = "warning": info events (client_connected) are gone, errors still come
    srv.config_path.write_text('[limits]\nrate = "fast"\n')
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_event("config_reload_failed")
    assert not srv.find_events("client_connected", client_id=second_id)
    assert srv.find_events("client_connected", client_id=srv.client_id(first))


def test_admin_reload_runs_on_the_main_thread_and_names_what_needs_a_restart(chatd):
    srv = chatd(server={"motd": "first"})
    admin = Admin(srv.admin_socket)
    srv.config_path.write_text('[server]\nmotd = "second"\nhost = "127.0.0.2"\n'
                               '[tls]\ntls_port = 7001\n')
    result = ok(admin.ask({"cmd": "reload"}))
    assert result["reloaded"] is True
    assert result["restart_required"] == ["server.host"]  # tls_port: TLS is off anyway
    assert srv.wait_event("config_reloaded")["thread"] == "MainThread"  # queued like SIGHUP
    srv.wait_event("restart_required", keys=["server.host"])
    srv.connect(motd=["second"])  # the rest applied; still listening where it was
    srv.config_path.write_text('[server]\nmotd = "third"\n')
    assert ok(admin.ask({"cmd": "reload"}))["restart_required"] == []  # back as bound
    srv.connect(motd=["third"])
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while len(srv.find_events("config_reloaded")) < 3:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        threading.Event().wait(0.05)
    assert [e["thread"] for e in srv.find_events("config_reloaded")] == ["MainThread"] * 3


def test_shutdown_command_replies_then_exits_zero(server):
    chat = server.connect()
    assert ok(Admin(server.admin_socket).ask({"id": 1, "cmd": "shutdown"})) == {"shutting_down": True}
    assert chat.expect_closed() == ["*** server shutting down"]
    assert server.proc.wait(10) == 0
    assert not os.path.exists(server.admin_socket)
