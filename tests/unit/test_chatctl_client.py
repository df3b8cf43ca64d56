"""chatctl's client library (and the CLI's exit status 3) against broken daemons.

A real chatd never sends garbage, stalls or hangs up on purpose, so these use a scripted Unix
socket that does; the real daemon's side is in test_chatctl.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatctl.cli import main as chatctl_main
from chatctl.client import AdminClient, AdminError, Unreachable
from chatd.admin.protocol import error_line, ok_line, parse_request


def invoke(path: str, *args: str, status: int):
    result = CliRunner().invoke(chatctl_main, ["--socket", path, *args], prog_name="chatctl")
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr)
    return result


@pytest.fixture
def scripted():
    """Factory: ``scripted(script)`` -> a ScriptedDaemon on a fresh short socket path."""
    directory = tempfile.mkdtemp(prefix="chatctl-")  # socket paths must fit in 108 bytes
    daemons = []

    def start(script) -> ScriptedDaemon:
        daemon = ScriptedDaemon(str(Path(directory) / f"s{len(daemons)}.sock"), script)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()
    shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the client library against a scripted socket
# --------------------------------------------------------------------------------------------


class ScriptedDaemon:
    """A Unix socket whose every connection is handed to ``script(conn)`` in a thread."""

    def __init__(self, path: str, script) -> None:
        self.path = path
        self.script = script
        self.release = threading.Event()  # for scripts that stall
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn) -> None:
        with conn:
            try:
                self.script(self, conn, conn.makefile("rb"))
            except OSError:
                pass

    def close(self) -> None:
        self.release.set()
        self.listener.close()


def echo(daemon, conn, reader):
    for n, line in enumerate(reader, 1):
        request = parse_request(line.rstrip(b"\n"))
        if request.cmd == "kick":
            message = f"no such client {request.args['target']}"
            conn.sendall(error_line(request.id, "not_found", message))
        else:
            conn.sendall(ok_line(request.id, {"cmd": request.cmd, "args": request.args, "n": n}))


def test_client_several_requests_per_connection(scripted):
    daemon = scripted(echo)
    with AdminClient(daemon.path) as admin:
        assert admin.request("status") == {"cmd": "status", "args": {}, "n": 1}
        assert admin.request("list", room="dev") == {"cmd": "list", "args": {"room": "dev"}, "n": 2}
        with pytest.raises(AdminError) as err:
            admin.request("kick", target=7)
        assert (err.value.code, err.value.message) == ("not_found", "no such client 7")
        assert admin.request("rooms")["n"] == 4  # an error reply does not end the connection


def deny(daemon, conn, reader):
    conn.sendall(error_line(None, "permission_denied"))


def busy(daemon, conn, reader):
    conn.sendall(error_line(None, "busy"))


def hang_up(daemon, conn, reader):
    pass


def garbage(daemon, conn, reader):
    reader.readline()
    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n")


def silent(daemon, conn, reader):
    reader.readline()
    daemon.release.wait(30)


def answer_once(daemon, conn, reader):
    line = reader.readline()
    conn.sendall(ok_line(parse_request(line.rstrip(b"\n")).id, {}))


@pytest.mark.parametrize("script, kind, detail, timeout", [
    (deny, "permission", "permission denied", 10),
    (busy, "busy", "too many admin connections", 10),
    (hang_up, "permission", "permission denied", 10),
    (garbage, "error", "the daemon sent a malformed reply", 10),
    (silent, "error", "no reply within 0.3s", 0.3),  # only this one waits out its timeout
])
def test_client_unreachable_kinds(scripted, script, kind, detail, timeout):
    daemon = scripted(script)
    with AdminClient(daemon.path, timeout=timeout) as admin:
        with pytest.raises(Unreachable) as err:
            admin.request("status")
    assert (err.value.kind, err.value.path, err.value.detail) == (kind, daemon.path, detail)


def test_client_connection_dropped_after_an_answer(scripted):
    daemon = scripted(answer_once)
    with AdminClient(daemon.path) as admin:
        assert admin.request("status") == {}
        with pytest.raises(Unreachable) as err:
            admin.request("status")
        assert err.value.kind == "error" and "closed" in err.value.detail
        assert admin.request("status") == {}  # the next request reconnects


def test_cli_maps_a_stalled_daemon_and_garbage_to_exit_3(scripted):
    stalled = scripted(silent)
    result = invoke(stalled.path, "--timeout", "0.3", "status", status=3)
    assert result.stderr == f"chatctl: cannot reach chatd at {stalled.path}: no reply within 0.3s\n"
    junk = scripted(garbage)
    result = invoke(junk.path, "status", status=3)
    assert result.stderr == \
        f"chatctl: cannot reach chatd at {junk.path}: the daemon sent a malformed reply\n"


def test_cli_reports_an_unexpected_reply_shape_without_a_traceback(scripted):
    def odd(daemon, conn, reader):
        for _line in reader:
            conn.sendall(ok_line(None, 42))

    result = invoke(scripted(odd).path, "list", status=1)
    assert result.stderr.startswith("chatctl: internal error: ") and result.stderr.count("\n") == 1


def test_cli_busy_is_exit_3_and_json_under_json(scripted):
    daemon = scripted(busy)
    result = invoke(daemon.path, "status", status=3)
    assert result.stderr == (f"chatctl: cannot reach chatd at {daemon.path}: busy: too many "
                             "admin connections (try again later)\n")
    result = invoke(daemon.path, "--json", "status", status=3)
    assert json.loads(result.stderr) == {"error": {
        "code": "busy", "socket": daemon.path, "message":
        f"cannot reach chatd at {daemon.path}: busy: too many admin connections (try again later)"}}
