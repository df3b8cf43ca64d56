"""Room history (SPEC §10), end to end: real daemons, real sockets, chatctl as a process.

Replay on connect and join, ``/history``, what is never stored, the replay seam while five
senders post, chatctl history and purge, and a reload of the history keys. The store (restart,
history off, corrupt, unwritable and full): test_history_store.py; cluster mode:
test_history_cluster.py; the history file's links and modes: test_history_file.py.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from support.admin import Admin
from support.chatctl import ctl
from support.client import ChatClient
from support.history import FAST, ON, _history_size, bare, read_block
from support.paths import REPO


def test_replay_on_connect_and_join_in_spec_format(chatd):
    # a TZ far from UTC: the timestamps must be UTC all the same
    srv = chatd(limits=FAST, history=ON, env={"TZ": "Pacific/Kiritimati"})
    alice = srv.connect()
    alice.set_nick("alice")
    alice.send_line("hello lobby")
    alice.send_line("/me waves")
    alice.sync()
    bob = ChatClient().connect(srv.port, greet=False)
    bob.read_line()  # welcome
    bob.read_line()  # you are
    assert bob.read_line() == "*** Type /help for the list of commands."
    assert [bare(e) for e in read_block(bob, "lobby")] == ["<alice> hello lobby", "* alice waves"]
    bob.set_nick("bob")
    bob.join("den")
    bob.send_line("first in den")
    bob.sync()
    alice.sync()
    alice.send_line("/join #den")
    alice.expect("*** you joined den (2 members)")
    assert [bare(e) for e in read_block(alice, "den")] == ["<bob> first in den"]
    bob.expect("*** alice joined den")
    alice.send_line("live")
    bob.expect("<alice> live")
    alice.expect_silence()


def test_join_of_a_room_without_history_shows_no_block(chatd):
    alice = chatd(history=ON).connect()
    alice.join("empty")
    alice.expect_silence()


def test_history_command_default_limit_and_errors(chatd):
    srv = chatd(limits=FAST, history={"history_lines": 30, "history_on_join": 0})
    alice = srv.connect()
    alice.set_nick("alice")
    bob = srv.connect()
    for n in range(25):
        alice.send_line(f"line {n}")
    alice.sync()
    bob.sync()  # the live copies
    bob.send_line("/history")
    assert [bare(e) for e in read_block(bob, "lobby")] == [f"<alice> line {n}"
                                                           for n in range(5, 25)]
    bob.send_line("/history 2")
    assert [bare(e) for e in read_block(bob, "lobby")] == ["<alice> line 23", "<alice> line 24"]
    bob.send_line("/history 5000")  # at most history_lines: all 25 there are
    assert len(read_block(bob, "lobby")) == 25
    bob.send_line("/history x")
    bob.expect("*** error: usage: /history [N] (N a positive number)")
    bob.join("quiet")
    bob.send_line("/history")
    assert read_block(bob, "quiet") == []


def test_private_muted_and_notices_are_never_stored(chatd):
    srv = chatd(limits=FAST, history=ON)
    alice = srv.connect()
    alice.set_nick("alice")
    bob = srv.connect()
    bob.set_nick("bob")
    alice.sync()
    alice.send_line("/msg bob psst")
    alice.expect("*** -> bob: psst")
    admin = Admin(srv.admin_socket)
    admin.result("broadcast", text="maintenance")
    alice.expect("*** [admin] maintenance")
    admin.result("mute", target="alice")
    alice.expect("*** you are muted")
    alice.send_line("muted words")
    alice.expect("*** error: you are muted")
    alice.send_line("/me muted action")
    alice.expect("*** error: you are muted")
    bob.send_line("public")
    alice.expect("<bob> public")
    result = admin.result("history", room="lobby")
    assert [(e["kind"], e["nick"], e["text"]) for e in result["lines"]] == [
        ("say", "bob", "public")]
    carol = ChatClient().connect(srv.port)  # motd None: the replay is split off the greeting
    assert [bare(e) for e in carol.replayed] == ["<bob> public"]


def test_replay_seam_is_exact_while_five_senders_post(chatd):
    """Each line a joiner can know of arrives exactly once: replayed or live, in order."""
    srv = chatd(limits=FAST, history={"history_lines": 1000, "history_on_join": 1000})
    per_sender = 60
    senders = srv.connect_many(5)
    for s in senders:
        s.join("busy")
    watcher = srv.connect()
    watcher.join("busy")
    joiner = srv.connect()
    go = threading.Event()

    def post(client):
        go.wait()
        for n in range(per_sender):
            client.send_line(f"{client.nick} {n}")
            time.sleep(0.004)  # paced load, not synchronisation

    threads = [threading.Thread(target=post, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    go.set()
    seen = 0
    while seen < 80:  # join in the middle of the traffic
        if watcher.read_line().startswith("<"):
            seen += 1
    joiner.send_line("/join busy")
    joiner.wait_for(lambda ln: ln.startswith("*** you joined busy"))
    got = []
    expected = {f"{s.nick} {n}" for s in senders for n in range(per_sender)}
    header = joiner.read_line()
    replayed = 0
    if header.startswith("*** history of busy"):
        while (line := joiner.read_line()) != "*** end of history":
            got.append(bare(line))
            replayed += 1
    else:
        got.append(header)
    while len([g for g in got if g.startswith("<")]) < len(expected):
        got.append(joiner.read_line())
    for t in threads:
        t.join(10)
    said = [g for g in got if g.startswith("<")]
    texts = [g.split("> ", 1)[1] for g in said]
    assert len(texts) == len(set(texts)), "a line arrived twice"
    assert set(texts) == expected
    for s in senders:  # each sender's lines in the order sent
        mine = [int(t.split()[1]) for t in texts if t.split()[0] == s.nick]
        assert mine == list(range(per_sender))
    assert 0 < replayed < len(expected)
    joiner.expect_silence()


def test_chatctl_history_and_purge(chatd):
    srv = chatd(limits=FAST, history=ON)
    alice = srv.connect()
    alice.set_nick("alice")
    alice.join("den")
    alice.send_line("one")
    alice.send_line("/me two")
    alice.sync()
    out = ctl(srv, "history", "#den", "-n", "5")
    assert [bare(line) for line in out.splitlines()] == ["<alice> one", "* alice two"]
    entries = json.loads(ctl(srv, "history", "den", "-n", "1", "--json"))["lines"]
    assert [(e["kind"], e["nick"], e["text"]) for e in entries] == [("me", "alice", "two")]
    # --json prints its rows as list does: one compact object per line (issue 23)
    shown = ctl(srv, "history", "den", "--json").splitlines()
    assert shown[:2] == ['{', '  "room": "den",'] and shown[2] == '  "lines": [', shown
    assert [json.loads(row.rstrip(","))["text"] for row in shown[3:5]] == ["one", "two"]
    assert shown[5:] == ["  ]", "}"], shown
    assert ctl(srv, "purge", "den") == "purged 2 lines of den\n"
    assert ctl(srv, "history", "den") == ""  # alice is in den: it exists, its history is empty
    # a room that does not exist and has no history: as `list --room` says it, exit 1
    assert ctl(srv, "history", "nosuch", status=1) == "chatctl: error: no such room nosuch\n"
    bob = srv.connect()
    bob.join("den")
    bob.expect_silence()  # nothing left to replay
    assert "invalid room" in ctl(srv, "history", "no/such", status=1)


def test_reload_applies_history_on_join_and_names_history_lines(chatd):
    srv = chatd(limits=FAST, history={"history_lines": 100, "history_on_join": 0})
    alice = srv.connect()
    alice.send_line("one")
    alice.send_line("two")
    alice.sync()
    srv.config_path.write_text("[limits]\nrate = 1000\nburst = 1000\n"
                               "[history]\nhistory_lines = 50\nhistory_on_join = 1\n")
    result = json.loads(ctl(srv, "--json", "reload"))
    assert result["restart_required"] == ["history.history_lines"]
    bob = ChatClient().connect(srv.port)  # motd None: the replay is split off the greeting
    assert [bare(e) for e in bob.replayed] == [f"<{alice.nick}> two"]


def test_chatctl_purge_asks_first_on_a_terminal(chatd):
    """There is no undo: on a terminal chatctl asks (issue 23 §4); `--yes`, or no terminal
    (a script), does not."""
    import pty

    srv = chatd(limits=FAST, history=ON)
    alice = srv.connect()
    alice.join("den")
    alice.send_line("keep me")
    alice.sync()
    for answer, purged in ((b"n\r", False), (b"y\r", True)):
        if not purged:
            alice.send_line("keep me")
            alice.sync()
        pid, fd = pty.fork()
        if pid == 0:
            os.execvpe(sys.executable, [sys.executable, "-m", "chatctl", "--socket",
                                        srv.admin_socket, "purge", "den"],
                       {**os.environ, "PYTHONPATH": str(REPO)})
        screen = b""
        while b"no undo" not in screen:
            screen += os.read(fd, 1024)
        os.write(fd, answer)
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert (os.waitstatus_to_exitcode(status) == 0) is purged, screen
        assert (b"purged" in screen) is purged, screen
        assert (_history_size(alice, "den") == 0) is purged
    assert ctl(srv, "purge", "den", "--yes") == "purged 0 lines of den\n"
