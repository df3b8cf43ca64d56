"""The history file itself (docs/protocol.md §10, chatd/store/sqlite.py): links, modes, and a
healthy file that cannot be written. Real daemons over real TCP; where file permissions are
the point, chatd runs as the unprivileged user ``nobody`` (root ignores permission bits) or
on a file system remounted read-only (which stops root too).

- A symbolic link at ``history.sqlite3`` (or its -wal) at start: chatd refuses to start, exit
  1, one line, and creates nothing where the link points (a dangling link used to make a root
  chatd create a 0644 file there); an upgrade to such a chatd fails and the old one serves on.
  One that appears while chatd runs is not followed either.
- A healthy file chatd cannot write (0444, a read-only state directory, a read-only file
  system) is not corrupt: its history is replayed, ``history_write_failed`` is logged once,
  chat goes on, nothing is moved aside, and writing resumes once it is writable again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.client import ChatClient
from support.daemon import ChatServer, toml_dumps
from support.faults import ROOT
from support.history import FAST, bare, read_block
from support.paths import REPO
from support.waiting import wait_until
from test_upgrade import _refused

NAME = "history.sqlite3"
ON = {"history_lines": 1000, "history_on_join": 10}
#: chatd as ``nobody`` (Debian 12: util-linux's setpriv; nogroup is nobody's group there).
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
#: Under umask 000 only chatd's own modes keep its files private (test_service.py does the same).
UMASK_000 = ["sh", "-c", 'umask 000 && exec "$0" "$@"']


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def stored_texts(path) -> list[str] | None:
    """The texts in the file, oldest first (None: no file, or not a history yet)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return [row[0] for row in db.execute("SELECT text FROM lines ORDER BY id")]
    except sqlite3.Error:
        return None


def refused_start(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run chatd, which must exit by itself (a chatd that starts is killed after ``timeout``
    and the test fails)."""
    proc = subprocess.Popen([sys.executable, "-m", "chatd", "--port", "0", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"chatd started instead of refusing; stderr:\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("link", [NAME, NAME + "-wal"])
def test_a_symbolic_link_at_start_is_refused_and_nothing_is_created_where_it_points(tmp_path, link):
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    state.mkdir()
    elsewhere.mkdir()
    if link != NAME:  # a history file that is fine, next to a link SQLite would follow
        with sqlite3.connect(state / NAME) as db:
            db.execute("CREATE TABLE t (x)")
    target = elsewhere / "target"
    (state / link).symlink_to(target)  # dangling
    result = refused_start("--state-dir", str(state), "--admin-socket", str(tmp_path / "a.sock"))
    assert result.returncode == 1, result
    assert result.stderr == (f"chatd: error: history file {state / link} is a symbolic link: chatd "
                             "does not follow it (replace the link with the file itself, or remove "
                             "it)\n")
    assert not target.exists() and os.listdir(elsewhere) == []
    assert (state / link).is_symlink()  # left as it was, for the operator


def test_a_link_that_appears_while_chatd_runs_is_not_followed(chatd, tmp_path):
    """The file is made 0600 (umask 000 notwithstanding), then replaced by a dangling link:
    the writer does not follow it (one history_write_failed), chat goes on, and once the link
    is gone a new file is written, 0600 again."""
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = chatd(launcher=UMASK_000, args=["--state-dir", str(state)], limits=FAST, history=ON)
    alice, bob = srv.connect(), srv.connect()
    alice.send_line("before")
    bob.expect(f"<{alice.nick}> before")
    path = state / NAME
    wait_until(lambda: stored_texts(path) == ["before"], what="the first row")
    assert {mode(state / f) for f in os.listdir(state)} == {0o600}, os.listdir(state)
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    target = elsewhere / "target"
    path.symlink_to(target)
    for n in range(5):
        alice.send_line(f"during {n}")
        bob.expect(f"<{alice.nick}> during {n}")
    event = srv.wait_event("history_write_failed")
    assert "symbolic link" in event["error"], event
    assert os.listdir(elsewhere) == []
    path.unlink()
    alice.send_line("after")
    bob.expect(f"<{alice.nick}> after")
    srv.wait_event("history_write_recovered")
    assert len(srv.find_events("history_write_failed")) == 1
    assert stored_texts(path) == ["after"] and mode(path) == 0o600
    assert os.listdir(elsewhere) == []


# -- a healthy file that cannot be written -----------------------------------------------------


class Unprivileged:
    """Start chatd as ``nobody`` with its config, state and admin socket where nobody reaches
    them (the ``chatd`` fixture's live under root's private temporary directories)."""

    def __init__(self) -> None:
        if not ROOT:
            self.launcher: list[str] = []  # unprivileged already: permission bits hold
        elif shutil.which("setpriv") is None:
            pytest.skip("running chatd as nobody needs setpriv (util-linux)")
        else:
            self.launcher = NOBODY
        self.base = Path(tempfile.mkdtemp(prefix="chatd-nobody-"))
        os.chmod(self.base, 0o755)
        self.state = self.base / "state"
        self.state.mkdir()
        self._own(self.base)
        self._own(self.state)
        self.servers: list[ChatServer] = []
        probe = subprocess.run([*self.launcher, sys.executable, "-c", "import chatd, structlog"],
                               cwd=self.base, capture_output=True, text=True, check=False,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        if probe.returncode != 0:
            self.close()
            pytest.skip(f"python cannot run chatd as nobody here: {probe.stderr.strip()[-300:]}")

    def _own(self, path) -> None:
        if self.launcher:
            os.chown(path, 65534, 65534)

    def start(self, **sections) -> ChatServer:
        config = self.base / f"chatd-{len(self.servers)}.toml"
        config.write_text(toml_dumps(sections))
        srv = ChatServer(config, sections, ["--state-dir", str(self.state)],
                         env={"CHATD_ADMIN_SOCKET": str(self.base / "admin.sock")},
                         launcher=self.launcher)
        self.servers.append(srv)
        srv.wait_listening()
        return srv

    def close(self) -> str | None:
        complaints = [c for c in (srv.close() for srv in self.servers) if c]
        for root, dirs, _ in os.walk(self.base):  # chmod -R u+w, so that it can be removed
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(self.base, ignore_errors=True)
        return "\n\n".join(complaints) or None


@pytest.fixture
def unprivileged():
    runner = Unprivileged()
    yield runner
    complaint = runner.close()
    if complaint:
        pytest.fail(complaint)


def _say(srv: ChatServer, texts: list[str]) -> None:
    alice, bob = srv.connect(), srv.connect()
    alice.expect(f"*** {bob.nick} joined lobby")
    old = alice.nick
    alice.set_nick("alice")
    bob.expect(f"*** {old} is now known as alice")
    for text in texts:
        alice.send_line(text)
        bob.expect(f"<alice> {text}")


def _read_only_episode(srv: ChatServer, make_writable) -> None:
    """History replayed from the read-only file, chat goes on, one history_write_failed,
    nothing moved aside; writing resumes once ``make_writable()`` has run."""
    bob = ChatClient().connect(srv.port)  # motd None: the replay is split off the greeting
    assert [bare(e) for e in bob.replayed] == ["<alice> old 0", "<alice> old 1", "<alice> old 2"]
    alice = ChatClient().connect(srv.port)  # the replay again, split off
    bob.expect(f"*** {alice.nick} joined lobby")
    old = alice.nick
    alice.set_nick("alice")
    bob.expect(f"*** {old} is now known as alice")
    for n in range(5):
        alice.send_line(f"during {n}")
        bob.expect(f"<alice> during {n}")
    srv.wait_event("history_write_failed")
    assert srv.find_events("history_corrupt") == []
    make_writable()
    alice.send_line("after")
    bob.expect("<alice> after")
    srv.wait_event("history_write_recovered")
    assert len(srv.find_events("history_write_failed")) == 1
    bob.send_line("/history 100")  # the tail in memory kept every line
    assert [bare(e) for e in read_block(bob, "lobby")] == [
        *(f"<alice> old {n}" for n in range(3)), *(f"<alice> during {n}" for n in range(5)),
        "<alice> after"]


def assert_stored(path) -> None:
    """The old lines are still in the file, then "after"; of the lines said while it could
    not be written, those in a batch that failed are missing (which ones depends on when the
    writer's batches were cut), the rest in order."""
    stored = stored_texts(path)
    assert stored[:3] == ["old 0", "old 1", "old 2"] and stored[-1] == "after", stored
    assert stored[3:-1] == [f"during {n}" for n in range(5) if f"during {n}" in stored], stored


@pytest.mark.parametrize("how", ["file 0444", "state directory read-only"])
def test_a_read_only_history_file_is_read_not_moved_aside(unprivileged, how):
    """chatd as nobody: its history file made 0444 (and its directory 0555, ``chmod -R a-w``)."""
    state, path = unprivileged.state, unprivileged.state / NAME
    srv = unprivileged.start(limits=FAST, history=ON)
    _say(srv, ["old 0", "old 1", "old 2"])
    assert srv.terminate() == 0
    assert sorted(os.listdir(state)) == [NAME]
    os.chmod(path, 0o444)
    if how != "file 0444":
        os.chmod(state, 0o555)

    def make_writable():
        os.chmod(state, 0o700)
        os.chmod(path, 0o600)

    _read_only_episode(unprivileged.start(limits=FAST, history=ON), make_writable)
    assert [n for n in os.listdir(state) if ".corrupt-" in n] == []
    assert_stored(path)


def test_a_read_only_file_system_keeps_its_history_readable(tmpfs, chatd):  # noqa: F811
    """As root, on a tmpfs remounted read-only (root's writes fail there too)."""
    disk = tmpfs("state", "1m")
    state = disk / "state"
    args = ["--state-dir", str(state)]
    srv = chatd(args=args, limits=FAST, history=ON)
    _say(srv, ["old 0", "old 1", "old 2"])
    assert srv.terminate() == 0
    before = sorted(os.listdir(state))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    def make_writable():
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)

    srv = chatd(args=args, limits=FAST, history=ON)
    _read_only_episode(srv, make_writable)
    assert [n for n in os.listdir(state) if ".corrupt-" in n] == [] and NAME in before
    assert_stored(state / NAME)
    assert srv.terminate() == 0


def test_an_upgrade_to_a_chatd_that_finds_a_link_fails_and_the_old_one_serves_on(chatd, tmp_path):
    """The running chatd's file replaced by a dangling link: the new process refuses it at
    start, so the upgrade fails with its reason and nothing is created where the link points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = chatd(limits=FAST, history=ON)
    path = Path(srv.state_dir) / NAME
    alice = srv.connect()
    alice.join("den")  # out of the lobby, where _refused's clients check who is there
    alice.send_line("stored")
    wait_until(lambda: stored_texts(path) == ["stored"], what="the first row")
    for suffix in ("", "-wal", "-shm"):
        if os.path.lexists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    path.symlink_to(elsewhere / "target")
    err = _refused(srv)
    assert "is a symbolic link" in err, err
    assert os.listdir(elsewhere) == []
