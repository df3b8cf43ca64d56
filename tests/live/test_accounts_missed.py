"""What an account missed while away (docs/protocol.md §12.3), on a single node: after a
disconnect, when history no longer reaches back, in the same room, after a restart and after
a crash (``kill -9``), and a second login taking over. Real chatd processes, real TCP
clients; the cluster's cases are in test_cluster_accounts.py."""

from __future__ import annotations

import re
import signal
import sqlite3

from support.client import ChatClient
from support.waiting import wait_until
from test_accounts import PASSWORD, no_secrets, register

# -- what you missed ----------------------------------------------------------------------------

MISSED = re.compile(r"\*\*\* (\d+) lines? you missed in (\S+) since "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def missed_block(client: ChatClient) -> tuple[str, list[str]]:
    """Read up to the what-you-missed header and through its footer: (header, lines)."""
    header = client.wait_for(lambda line: line.startswith("*** history incomplete")
                             or MISSED.fullmatch(line) is not None)
    lines = []
    while (line := client.read_line()) != "*** end of history":
        lines.append(line)
    return header, lines


def say(client: ChatClient, room: str, *lines: str) -> None:
    """``client`` sends ``lines`` in ``room``, then a /who round trip: every line is in (and
    in the room's history) before the test goes on."""
    for line in lines:
        client.send_line(line)
    client.send_line("/who")
    client.wait_for(lambda line: line.startswith(f"*** in {room}: "))


def said(lines: list[str]) -> list[str]:
    """The ``<nick> text`` part of §10 history lines."""
    return [line.split("] ", 1)[1] for line in lines]


def test_what_you_missed_after_a_disconnect_once_in_order_then_live(chatd):
    server = chatd()
    alice, bob = server.connect_many(2)
    register(alice, "alice")
    alice.join("dev")
    bob.join("dev")
    bob.send_line("before")
    alice.wait_for("<" + bob.nick + "> before")
    alice.close()
    bob.wait_for("*** alice left dev (connection closed)")
    say(bob, "dev", *[f"missed {n}" for n in range(25)], "/me waves")
    back = ChatClient().connect(server.port, greet=False)
    server.clients.append(back)
    back.send_line(f"PASS alice:{PASSWORD}")
    back.wait_for("*** logged in as alice")
    back.expect("*** you joined dev (2 members)")
    header, lines = missed_block(back)
    assert MISSED.fullmatch(header).groups() == ("26", "dev")
    assert said(lines) == [f"<{bob.nick}> missed {n}" for n in range(25)] + [f"* {bob.nick} waves"]
    bob.send_line("live")
    back.expect(f"<{bob.nick}> live")
    no_secrets(server)


def test_what_you_missed_says_when_history_no_longer_reaches_back(chatd):
    server = chatd(history={"history_lines": 5, "history_on_join": 2})
    alice, bob = server.connect_many(2)
    register(alice, "alice")
    alice.close()
    bob.wait_for("*** alice left lobby (connection closed)")
    say(bob, "lobby", *[f"line {n}" for n in range(8)])
    back = ChatClient().connect(server.port, greet=False)
    server.clients.append(back)
    back.send_line(f"PASS alice:{PASSWORD}")
    back.wait_for("*** logged in as alice")
    incomplete = back.wait_for(lambda line: line.startswith("*** history incomplete"))
    assert re.fullmatch(r"\*\*\* history incomplete: lines before \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d:\d\d UTC are gone", incomplete)
    header = back.read_line()
    lines = []
    while (line := back.read_line()) != "*** end of history":
        lines.append(line)
    # 2 of the last lines came with the connect's replay: the block has the 3 before them
    assert MISSED.fullmatch(header).groups() == ("3", "lobby")
    assert said(lines) == [f"<{bob.nick}> line {n}" for n in (3, 4, 5)]


def test_a_connection_in_the_same_room_gets_only_the_gap(chatd):
    server = chatd(history={"history_on_join": 2})
    alice, bob = server.connect_many(2)
    register(alice, "alice")
    alice.close()
    bob.wait_for("*** alice left lobby (connection closed)")
    say(bob, "lobby", *[f"line {n}" for n in range(5)])
    back = server.connect()  # its connect replays the last 2 lines
    back.expect("*** history of lobby (2 lines)")
    assert said([back.read_line(), back.read_line()]) == [f"<{bob.nick}> line 3",
                                                         f"<{bob.nick}> line 4"]
    back.expect("*** end of history")
    bob.send_line("while a guest")
    back.expect(f"<{bob.nick}> while a guest")
    back.send_line(f"/login alice {PASSWORD}")
    back.expect("*** logged in as alice")
    header, lines = missed_block(back)
    assert MISSED.fullmatch(header).groups() == ("3", "lobby")
    assert said(lines) == [f"<{bob.nick}> line {n}" for n in range(3)]
    back.expect_silence(timeout=0.5)


def test_a_closed_server_puts_a_login_back_in_its_room_after_a_restart(chatd, tmp_path):
    state = str(tmp_path / "state")
    first = chatd(args=["--state-dir", state])
    alice, bob = first.connect_many(2)
    register(alice, "alice")
    alice.join("dev")
    alice.close()
    bob.join("dev")
    say(bob, "dev", "said while alice was away")
    first.terminate()
    server = chatd(accounts={"mode": "closed"}, args=["--state-dir", state])
    back = ChatClient().connect(server.port, greet=False)
    server.clients.append(back)
    back.expect("*** welcome to chatd")
    back.expect("*** this server needs an account: /login NICK PASSWORD")
    back.send_line(f"/login alice {PASSWORD}")
    back.expect("*** logged in as alice")
    back.expect("*** you are alice")
    back.expect("*** Type /help for the list of commands.")
    back.expect("*** you joined dev (1 member)")
    header, lines = missed_block(back)
    assert MISSED.fullmatch(header).groups() == ("1", "dev")
    assert said(lines) == [f"<{bob.nick}> said while alice was away"]


def test_a_crash_loses_no_accounts_place(chatd, tmp_path):
    """alice is logged in, in dev, and has seen bob's lines when the single node is killed
    with SIGKILL (nothing is written at a crash). Restarted, bob says more; alice's login
    gets those lines once and in order at the end of the block, preceded at most by a tail
    of what she had seen: the node wrote where she stood as it went (housekeeping.py,
    every PLACES_SECONDS)."""
    state = tmp_path / "state"
    first = chatd(args=["--state-dir", str(state)])
    alice, bob = first.connect_many(2)
    register(alice, "alice")
    alice.join("dev")
    bob.join("dev")
    seen = [f"<{bob.nick}> seen {n}" for n in range(3)]
    for line in seen:
        bob.send_line(line.split("> ", 1)[1])
        alice.wait_for(line)
    wait_until(lambda: ("alice", "dev") in places(state / "accounts.sqlite3"))
    first.terminate(sig=signal.SIGKILL)
    server = chatd(args=["--state-dir", str(state)])
    bob = server.connect()
    bob.join("dev")
    missed = [f"<{bob.nick}> missed {n}" for n in range(4)]
    for line in missed:
        bob.send_line(line.split("> ", 1)[1])
    bob.send_line("/who")
    bob.wait_for(lambda line: line.startswith("*** in dev: "))
    back = server.connect()
    back.send_line(f"/login alice {PASSWORD}")
    _, lines = missed_block(back)
    got = said(lines)
    assert got[len(got) - len(missed):] == missed, got
    again = got[:len(got) - len(missed)]
    assert all(line.split("> ", 1)[1].startswith("seen ") for line in again), got
    bob.send_line("live")
    back.expect(f"<{bob.nick}> live")


def places(path) -> set:
    """(account, room) rows of the accounts file, read as another process would."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return set(conn.execute("SELECT key, room FROM account_rooms"))
    except sqlite3.OperationalError:  # not made yet
        return set()
    finally:
        conn.close()


def test_a_second_login_takes_over_without_a_line_twice(chatd):
    server = chatd()
    first, bob, second = server.connect_many(3)
    register(first, "alice")
    first.join("dev")
    bob.join("dev")
    first.wait_for(f"*** {bob.nick} joined dev")
    for n in range(3):
        bob.send_line(f"seen {n}")
        first.expect(f"<{bob.nick}> seen {n}")
    second.send_line(f"/login alice {PASSWORD}")
    second.wait_for("*** logged in as alice")
    second.expect("*** you joined dev (2 members)")  # and nothing missed: first had it all
    bob.send_line("after")
    second.expect(f"<{bob.nick}> after")
