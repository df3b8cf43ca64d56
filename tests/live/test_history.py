"""Room history (SPEC §10), end to end: real daemons, real sockets, chatctl as a process."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from support.admin import Admin
from support.client import ChatClient
from support.cluster import alice_and_bob
from support.paths import REPO
from support.waiting import wait_until
from test_chatctl import ctl
from test_upgrade import upgrade

STAMP = r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] "
FAST = {"rate": 1000, "burst": 1000}
ON = {"history_lines": 1000, "history_on_join": 10}  # the defaults


def read_block(client: ChatClient, room: str, timeout: float = 5.0) -> list[str]:
    """The next lines must be one history block of ``room``; returns its entries."""
    header = client.read_line(timeout)
    m = re.fullmatch(rf"\*\*\* history of {room} \((\d+) lines?\)", header)
    assert m, header
    entries = [client.read_line(timeout) for _ in range(int(m.group(1)))]
    assert client.read_line(timeout) == "*** end of history"
    return entries


def bare(entry: str) -> str:
    """An entry without its timestamp (checked to be one, and UTC, within a minute of now)."""
    m = re.match(STAMP, entry)
    assert m, entry
    when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(time.time() - when.timestamp()) < 60, entry
    return entry[m.end():]


def stored_rows(path: str) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM lines").fetchone()[0]
    except sqlite3.Error:
        return -1


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


# -- cluster mode: the history is in Redis, every node shows it ---------------------------


def test_cluster_history_is_one_history_on_every_node(cluster, chatd):
    redis, (a, b) = cluster(limits=FAST, history=ON)
    alice, bob = alice_and_bob(a, b)
    alice.send_line("/join dev")  # nobody on node2 is in dev: its tail is fed all the same
    alice.wait_for(lambda line: line.startswith("*** you joined dev"))
    said = [f"line {i}" for i in range(5)]
    for text in said:
        alice.send_line(text)
    alice.send_line("/me waves")
    expected = [f"<alice> {text}" for text in said] + ["* alice waves"]
    # bob joins on node2 whenever: each line once, replayed or live (the seam across nodes)
    bob.send_line("/join dev")
    bob.wait_for(lambda line: line.startswith("*** you joined dev"))
    seen = []  # (a block only if node2 had some of the lines when bob joined)
    while len(seen) < len(expected):
        line = bob.read_line()
        if line == "*** history of dev (" + line.partition("(")[2]:
            seen += [bare(bob.read_line()) for _ in range(int(line.split("(")[1].split()[0]))]
            assert bob.read_line() == "*** end of history"
        elif not line.startswith("*** "):
            seen.append(line)
    assert seen == expected
    bob.send_line("/history 3")
    assert [bare(e) for e in read_block(bob, "dev")] == expected[-3:]
    # a node that starts later reads it from Redis
    c = chatd(cluster={"redis_url": redis.url, "node_name": "node3", "node_timeout": 1.0},
              limits=FAST, history=ON)
    c.wait_event("cluster_joined")
    carol = c.connect()
    carol.join("dev")
    assert [bare(e) for e in read_block(carol, "dev")] == expected
    # purge on node1 empties it everywhere
    ctl(a, "purge", "dev")
    for client in (bob, carol):
        wait_until(lambda c=client: _history_size(c, "dev") == 0, 10, "purge on every node")
    assert not redis.client().exists("chatd:history:dev")


@pytest.mark.parametrize("idle_rooms", [1000, 0])
def test_a_join_on_another_node_mid_stream_meets_the_live_lines_exactly(
        cluster, idle_rooms):  # noqa: F811
    """alice on node1 posts 600 lines into dev as fast as she can while bob on node2 joins it
    three times: each time the replay and the live lines are one run, nothing twice, nothing
    missing. With ``history_idle_rooms = 0`` node2 keeps no tail of dev between the joins, so
    each join reads it from Redis while the lines stream in (the seam of history.py's
    positioned read); with 1000 it keeps one."""
    _, (a, b) = cluster(limits=FAST, history={**ON, "history_idle_rooms": idle_rooms})
    alice, bob = alice_and_bob(a, b)
    alice.join("dev")
    count = 600
    sender = threading.Thread(target=lambda: alice.send_raw(
        "".join(f"n {i}\n" for i in range(count)).encode()))
    sender.start()
    for _ in range(3):
        bob.send_line("/join dev")
        bob.wait_for(lambda line: line.startswith("*** you joined dev"))
        header = bob.wait_for(lambda line: line.startswith(("*** history of dev (",
                                                            "<alice> n ")))
        seen = []
        if header.startswith("*** history"):
            seen = [bare(bob.read_line()) for _ in range(int(header.split("(")[1].split()[0]))]
            assert bob.read_line() == "*** end of history"
        else:
            seen.append(header)
        numbers = [int(line.rpartition(" ")[2]) for line in seen]
        replayed = len(seen) if header.startswith("*** history") else 0
        # the replay is the 10 lines before the first live one (or all there were)
        first_live = numbers[replayed] if len(numbers) > replayed else None
        if first_live is not None:
            assert replayed == min(10, first_live), (replayed, numbers)
        while not numbers or numbers[-1] < count // 3 * (_ + 1) and numbers[-1] != count - 1:
            line = bob.read_line(timeout=10)
            if line.startswith("<alice> n "):
                numbers.append(int(line.rpartition(" ")[2]))
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), numbers
        bob.send_line("/join lobby")
    sender.join(10)


def test_a_tail_read_from_the_cluster_keeps_only_the_lines_from_after_its_read():
    """history.py's positioned read, in process: lines delivered while the store is read are
    kept only if their stream position is after the read's (the others were in the read)."""
    from chatd.core.events import Said
    from chatd.core.history import Entry, History

    class Store:  # Redis as RedisStore answers: lines, and the stream position they belong to
        positioned = True

        def __init__(self):
            self.reading, self.go = threading.Event(), threading.Event()

        def mark(self):
            return None  # nothing queued: Redis is written by the publisher, not the store

        def load_positioned(self, key, count):
            self.reading.set()
            self.go.wait(5)
            return [Entry(1.0, "dev", "say", "a", "in the read")], (100, 0)

    store = Store()
    history = History(store, 1000, 10, idle_rooms=0)
    got = []
    reader = threading.Thread(target=lambda: got.append(history.acquire("dev")))
    reader.start()
    assert store.reading.wait(5)
    history.record_remote("dev", [Said("a", "in the read")], (100, 0))  # also in the read
    history.record_remote("dev", [Said("a", "after")], (100, 1))
    store.go.set()
    reader.join(5)
    assert [e.text for e in got[0].last(10)] == ["in the read", "after"]
    history.release("dev")  # idle_rooms = 0: dropped; a remote line now makes no tail
    history.record_remote("dev", [Said("a", "nobody here")], (101, 0))
    assert history.counts()["history_tails"] == 0


def _history_size(client: ChatClient, room: str) -> int:
    """How many lines ``/history`` shows (room notices that arrive first are passed over)."""
    client.send_line("/history")
    header = client.wait_for(lambda line: line.startswith(f"*** history of {room} ("))
    count = int(header.rpartition("(")[2].split()[0])
    assert [client.read_line() for _ in range(count + 1)][-1] == "*** end of history"
    return count


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


def test_a_join_waits_for_the_reader_to_hand_on_what_its_history_read_covers():
    """cluster/reader.py's caught_up: the history read from Redis may be ahead of what this
    node's reader has handed on; the join waits until the reader passes the read's position
    (then older lines land in the tail's pending list and are sorted out), and no longer
    than its bound when the reader is stuck. Seen before the wait: a joiner got lines 84-93
    replayed, then 0, 1, 2... live."""
    from chatd.cluster.reader import Reader

    reader = Reader.__new__(Reader)  # only the progress half: no link, no thread of its own
    reader.handled = (0, 0)
    reader._progress = threading.Condition(threading.Lock())
    reader._waiting = 0
    assert reader.caught_up((0, 0), 0.0)  # nothing to wait for
    assert not reader.caught_up((5, 0), 0.05)  # stuck reader: the bound, then on
    waited = []
    joiner = threading.Thread(target=lambda: waited.append(reader.caught_up((7, 1), 10)))
    joiner.start()
    wait_until(lambda: reader._waiting == 1, what="the join to wait")
    reader._handled((7, 0))
    assert not waited  # (7, 0) is before (7, 1)
    reader._handled((7, 1))
    joiner.join(10)
    assert waited == [True]
