"""Room history's store (SPEC §10), end to end: real daemons, real sockets, chatctl as a process.

What survives a restart (trimmed to history_lines), history off storing nothing, a corrupt
file moved aside at start, an unwritable store and a full state directory while chatting
(logged once, chat goes on, writing resumes), and an upgrade that keeps every line. The
file's links and modes: test_history_file.py.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading

import pytest
from support.chatctl import ctl
from support.client import ChatClient
from support.history import FAST, ON, bare, read_block
from support.waiting import wait_until
from test_upgrade import upgrade


def stored_rows(path: str) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM lines").fetchone()[0]
    except sqlite3.Error:
        return -1

def test_history_survives_a_restart_and_trims_to_history_lines(chatd, tmp_path):
    state = str(tmp_path / "state")
    args = ["--state-dir", state]
    config = {"history_lines": 5, "history_on_join": 5}
    srv = chatd(args=args, limits=FAST, history=config)
    alice = srv.connect()
    alice.set_nick("alice")
    for n in range(8):
        alice.send_line(f"m{n}")
    alice.sync()
    assert srv.terminate() == 0
    assert stored_rows(os.path.join(state, "history.sqlite3")) == 5
    srv2 = chatd(args=args, limits=FAST, history=config)
    bob = ChatClient().connect(srv2.port)
    assert [bare(e) for e in bob.replayed] == [f"<alice> m{n}" for n in range(3, 8)]
    bob.send_line("/history 100")
    assert len(read_block(bob, "lobby")) == 5


def test_history_off_stores_nothing(chatd, tmp_path):
    state = tmp_path / "state"
    srv = chatd(args=["--state-dir", str(state)], history={"history_lines": 0})
    alice, bob = srv.connect(), srv.connect()
    alice.send_line("not kept")
    bob.expect(f"<{alice.nick}> not kept")
    bob.send_line("/history")
    bob.expect("*** error: history is off on this server")
    assert ctl(srv, "history", "lobby", status=1).startswith("chatctl: ")
    assert not (state / "history.sqlite3").exists()


def test_corrupt_file_at_start_is_moved_aside(chatd, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "history.sqlite3").write_bytes(b"this is not a database\n" * 200)
    srv = chatd(args=["--state-dir", str(state)], limits=FAST)
    event = srv.wait_event("history_corrupt")
    assert os.path.exists(event["moved_to"])
    assert open(event["moved_to"], "rb").read().startswith(b"this is not")
    alice, bob = srv.connect(), srv.connect()
    alice.send_line("after")
    bob.expect(f"<{alice.nick}> after")
    bob.send_line("/history")
    assert [bare(e) for e in read_block(bob, "lobby")] == [f"<{alice.nick}> after"]
    assert srv.find_events("history_write_failed") == []


def test_unwritable_store_while_chatting_logs_once_and_recovers(chatd, tmp_path):
    """The file replaced by a directory (works as root, unlike chmod): chat goes on."""
    state = tmp_path / "state"
    path = str(state / "history.sqlite3")
    srv = chatd(args=["--state-dir", str(state)], limits=FAST)
    alice, bob = srv.connect(), srv.connect()
    alice.send_line("before")
    bob.expect(f"<{alice.nick}> before")
    wait_until(lambda: stored_rows(path) == 1, what="the first row on disk")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.mkdir(path)
    for n in range(20):
        alice.send_line(f"during {n}")
    for n in range(20):
        bob.expect(f"<{alice.nick}> during {n}")
    srv.wait_event("history_write_failed")
    os.rmdir(path)
    alice.send_line("after")
    bob.expect(f"<{alice.nick}> after")
    srv.wait_event("history_write_recovered")
    assert len(srv.find_events("history_write_failed")) == 1
    bob.send_line("/history 100")  # the tail in memory kept every line
    assert len(read_block(bob, "lobby")) == 22


def test_full_state_dir_while_chatting(chatd, tmp_path):
    """A tiny tmpfs filled up (root only): chat unaffected, one event, recovery."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs of fixed size")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    srv = None
    try:
        srv = chatd(args=["--state-dir", str(mnt / "state")], limits=FAST)
        alice, bob = srv.connect(), srv.connect()
        alice.send_line("hello")
        bob.expect(f"<{alice.nick}> hello")
        wait_until(lambda: stored_rows(str(mnt / "state" / "history.sqlite3")) == 1,
                   what="the first row on disk")
        with open(mnt / "fill", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        text = "x" * 900
        n = 0
        while not srv.find_events("history_write_failed"):
            assert n < 2000, "the full disk never failed a write"
            alice.send_line(f"{n} {text}")
            bob.expect(f"<{alice.nick}> {n} {text}")
            n += 1
        os.remove(mnt / "fill")
        alice.send_line("room again")
        bob.expect(f"<{alice.nick}> room again")
        srv.wait_event("history_write_recovered")
        assert len(srv.find_events("history_write_failed")) == 1
    finally:
        if srv is not None:
            srv.terminate()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_an_upgrade_keeps_every_line_of_history(chatd):
    """The old process writes out what is queued before it hands over: the new one reads
    the file, and every line said up to the upgrade is in /history afterwards."""
    srv = chatd(limits=FAST, history=ON)
    alice = srv.connect()
    alice.set_nick("alice")
    alice.send_line("first")  # creates the file
    path = os.path.join(srv.state_dir, "history.sqlite3")
    wait_until(lambda: stored_rows(path) == 1, what="the first line stored")
    # another writer holds the database: chatd's writer waits behind it, lines queue up
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    said = ["first"] + [f"before {n}" for n in range(200)]
    for text in said[1:]:
        alice.send_line(text)
    alice.sync()
    upgrading = threading.Thread(target=upgrade, args=(srv,))
    upgrading.start()
    srv.wait_event("upgrade_frozen")
    blocker.rollback()  # the old process must now write all of it before it goes
    blocker.close()
    upgrading.join(60)
    alice.send_line("after")
    alice.send_line("/history 1000")
    assert [bare(e) for e in read_block(alice, "lobby")] == [f"<alice> {t}" for t in said + ["after"]]
