"""Fault injection from a hostile or broken local environment against a live chatd: an admin
socket directory someone else can write, and full or read-only disks under the state directory
and the log file.

As in test_faults.py, each test checks that chatd refuses cleanly or goes on serving, that
what the fault cost (temporary files, descriptors) is given back, and records the faults it
injected in the figures table printed at the end of the run. Not here because it already has
its test: a file where the state directory should be,
tests/live/test_admin_actions.py::test_unwritable_state_directory_reports_the_ban_as_not_saved.

Tests that need root (a directory owned by another user, tmpfs mounts) skip with the reason
otherwise.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.admin import Admin
from support.daemon import toml_dumps
from support.disk import FileLoggedChatd, fill, pad_log_to_page_end
from support.faults import ROOT
from support.figures import faults
from support.paths import REPO, TRACEBACK
from support.procfs import proc_figures, settle

# -- a hostile local environment --------------------------------------------------------------


@pytest.mark.skipif(not ROOT, reason="needs root to make a directory owned by another user")
@pytest.mark.parametrize("owner, mode", [(65534, 0o755), (0, 0o777)],
                         ids=["owned-by-nobody", "world-writable"])
def test_admin_socket_directory_writable_by_others_is_refused(tmp_path, owner, mode, book):
    """docs/protocol.md §6: the socket lives "in a directory that only the owner can write". When the
    directory already exists and someone else can write it, chatd must not use it."""
    base = tempfile.mkdtemp(prefix="chatd-o-")
    try:
        os.chown(base, owner, owner)
        os.chmod(base, mode)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "--port", "0", "--log-format", "json",
             "--admin-socket", os.path.join(base, "admin.sock"),
             "--state-dir", str(tmp_path / "state")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        lines = []
        try:  # until it exits (refusing is the expected outcome) or says it is listening
            deadline = time.monotonic() + 15
            while proc.poll() is None and time.monotonic() < deadline:
                if select.select([proc.stderr], [], [], 0.1)[0]:
                    lines.append(proc.stderr.readline().decode())
                    if '"listening"' in lines[-1]:
                        break
        finally:
            if proc.poll() is None:
                proc.kill()
            status = proc.wait(5)
            if status is not None and status >= 0:
                lines.append(proc.stderr.read().decode())
            proc.stderr.close()
        stderr = "".join(lines)
        faults(book, "admin socket directory writable by another user", 1)
        assert status == 1, f"chatd started (status {status}); stderr: {stderr[-500:]}"
        assert base in stderr and TRACEBACK not in stderr, stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- full and read-only disks ------------------------------------------------------------------


@pytest.fixture
def state_disk_daemon(tmpfs, chatd):
    """A chatd whose state directory is on a 64 KiB tmpfs (tmpfs first: unmounted last)."""
    disk = tmpfs("state")
    state = disk / "state"
    srv = chatd(args=["--state-dir", str(state)])
    return srv, disk, state


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_ban_on_a_broken_state_disk_is_in_force_but_not_saved(state_disk_daemon, chatd, how, book):
    """The admin reply says `not_saved`; the ban holds until restart; the file keeps the last
    good content, no temporary file is left, no descriptor leaks; a restart loads the old bans."""
    srv, disk, state = state_disk_daemon
    admin = Admin(srv.admin_socket)
    admin.result("ban", address="192.0.2.1", reason="before")
    good = (state / "bans.json").read_bytes()
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    else:
        fill(disk)
    before = proc_figures(srv.proc.pid)

    reply = admin.ask({"cmd": "ban", "args": {"address": "127.0.0.5", "reason": "after"}})
    assert reply["ok"] is False and reply["error"]["code"] == "not_saved", reply
    assert "will not survive a restart" in reply["error"]["message"]
    reply = admin.ask({"cmd": "unban", "args": {"address": "192.0.2.1"}})
    assert reply["ok"] is False and reply["error"]["code"] == "not_saved", reply
    assert "returns after a restart" in reply["error"]["message"]

    assert sorted(os.listdir(state)) == ["bans.json"]  # no temporary file left behind
    assert (state / "bans.json").read_bytes() == good  # nothing half-written
    assert proc_figures(srv.proc.pid).fds == before.fds  # the failed write closed its file
    assert srv.connect(source="127.0.0.5", greet=False).expect_closed() == ["*** error: banned (after)"]
    assert [b["address"] for b in admin.result("bans")] == ["127.0.0.5/32"]
    srv.connect().expect_silence()  # chat goes on
    assert srv.terminate() == 0

    again = chatd(args=["--state-dir", str(state)])  # the disk is still broken: reading works
    bans = Admin(again.admin_socket).result("bans")
    assert [(b["address"], b["reason"]) for b in bans] == [("192.0.2.1/32", "before")]
    faults(book, f"state directory {how} when a ban is written", 2)


@pytest.fixture
def full_log_disk_daemon(tmpfs, tmp_path):
    """chatd logging to a 64 KiB tmpfs, used (chat, admin, reloads: all of which log) while
    that disk is full, which it then is no more. Stopped at teardown."""
    disk = tmpfs("logs")
    config = tmp_path / "chatd.toml"
    config.write_text(toml_dumps({"limits": {"rate": 1000.0, "burst": 1000}}))
    srv = FileLoggedChatd(Path(tempfile.mkdtemp(prefix="chatd-l-")), disk / "chatd.log", config)
    try:
        pad_log_to_page_end(srv.log_file)
        filler = fill(disk)
        alice, bob = srv.connect(), srv.connect()
        alice.expect(f"*** {bob.nick} joined lobby")
        for i in range(200):  # 200 events that cannot be written
            alice.send_line(f"/nick a{i}")
            alice.expect(f"*** you are now a{i}")
        bob.sync()
        alice.send_line("still chatting")
        bob.wait_for("<a199> still chatting")
        admin = Admin(srv.admin_socket)
        assert admin.result("status")["clients"] == 2
        before = proc_figures(srv.proc.pid)
        # Reopen the log on the full disk: SIGHUP, and the admin reload (the same code path,
        # serialised with it). Closing the old file fails to flush it; its descriptor must go.
        srv.proc.send_signal(signal.SIGHUP)
        for _ in range(2):
            assert admin.result("reload")["reloaded"] is True
        settle(srv.proc.pid, before, timeout=10, what="chatd after reopening its log on a full disk")
        third = srv.connect()
        third.send_line("and after the reloads")
        bob.wait_for(f"<{third.nick}> and after the reloads")
        filler.unlink()  # space again
        srv.connect()  # (its event may be the one glued to the cut-off line)
        fifth = srv.connect()
        srv.wait_event("client_connected", peer=f"127.0.0.1:{fifth.local_port}")
        yield srv
    finally:
        srv.stop()


def test_log_disk_full_keeps_serving(full_log_disk_daemon, book):
    """The log file's disk fills up: chat, admin commands and SIGHUP (which reopens the log)
    go on working, nothing leaks, and once space is freed events are logged again."""
    srv = full_log_disk_daemon
    assert srv.stop() == 0
    assert srv.stderr == b"", srv.stderr.decode()[-4000:]  # no traceback, nothing at all
    faults(book, "log disk full (events that could not be written)", 200)


def test_log_lines_stay_whole_after_the_disk_was_full(full_log_disk_daemon):
    broken = [e["line"] for e in full_log_disk_daemon.events() if e["event"] == "<unparsable>"]
    assert not broken, f"lines that are not one JSON event: {broken}"
