"""docs/protocol.md §7 chatctl, end to end: the real CLI against a real chatd, seen by real chat clients.

Every command runs at least once as a subprocess (``python -m chatctl``), checking stdout, stderr
and the exit status, and its effect is checked from the chat side. Output details (tables,
durations, the empty list) use click's CliRunner against the same real daemon, which is quicker.
The pure formats are in test_chatctl_format.py; broken daemons (garbage, silence, hanging up)
in test_chatctl_client.py; a daemon it cannot reach, usage and help in test_chatctl_cli.py; the
helpers that run it are tests/support/chatctl.py.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import sys
import time

from support.chatctl import (
    NO_SOCKET,
    UNREACHABLE,
    _env,
    ctl,
    invoke,
    run_chatctl,
)
from support.daemon import toml_dumps
from support.paths import REPO

from chatd import __version__

#: chatctl shows every time in UTC, marked as chatctl watch marks it (issue 23: one convention)
UTC_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def lines(text: str) -> list[str]:
    assert text.endswith("\n") or text == "", repr(text)
    return text.splitlines()


def columns(header: str) -> list[int]:
    """Where each column of a table starts, from its header line."""
    return [m.start() for m in re.finditer(r"\S+", header)]


# --------------------------------------------------------------------------------------------
# status, list, rooms
# --------------------------------------------------------------------------------------------


def test_status(server):
    server.connect_many(2)
    out = lines(ctl(server, "status"))
    pairs = dict(re.fullmatch(r"([a-z ]+):\s+(.*)", line).groups() for line in out)
    assert list(pairs) == ["version", "pid", "uptime", "listen", "admin socket", "clients",
                           "rooms", "bans", "lines in", "lines out", "bytes in", "bytes out"]
    # the values line up in one column
    assert len({line.index(value) for line, value in zip(out, pairs.values())}) == 1, out
    assert pairs["version"] == __version__
    assert pairs["pid"] == str(server.proc.pid)
    assert re.fullmatch(r"\d+s|\d+m \d\ds", pairs["uptime"]), pairs["uptime"]
    assert pairs["listen"] == f"127.0.0.1:{server.port}"
    assert pairs["admin socket"] == server.admin_socket
    assert pairs["clients"] == "2"
    assert pairs["rooms"] == "1"
    assert pairs["bans"] == "0"
    for key in ("lines in", "lines out", "bytes in", "bytes out"):
        assert pairs[key].isdigit(), (key, pairs[key])
    assert int(pairs["lines in"]) >= 2  # each connect_many client sent a /who


def test_status_json(server):
    result = json.loads(ctl(server, "--json", "status"))
    assert result["pid"] == server.proc.pid
    assert result["port"] == server.port
    assert result["clients"] == 0
    assert isinstance(result["uptime"], (int, float))


def test_list_three_clients(server):
    a, b, c = server.connect_many(3)
    a.set_nick("alice")
    c.join("dev")
    a.expect("*** guest-3 left lobby")
    out = lines(ctl(server, "list"))
    assert out[0].split() == ["ID", "NICK", "PEER", "ROOM", "CONNECTED", "IDLE", "SENDQ", "MUTED",
                              "ACCOUNT", "PROTOCOL"]
    rows = [line.split() for line in out[1:]]
    ids = [str(server.client_id(x)) for x in (a, b, c)]
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == ["alice", b.nick, "guest-3"]
    assert [r[2] for r in rows] == [f"127.0.0.1:{x.local_port}" for x in (a, b, c)]
    assert [r[3] for r in rows] == ["lobby", "lobby", "dev"]
    for row in rows:
        assert len(row) == 11, row  # CONNECTED is two words: date and time
        assert re.fullmatch(UTC_TIME, f"{row[4]} {row[5]}"), row
        assert re.fullmatch(r"\d+s|\d+m\d\ds", row[6]), row
        assert row[7].isdigit(), row
        assert row[8] == "no", row
        assert row[9] == "-", row  # guests: logged in to no account (test_accounts_admin.py)
        assert row[10] == "line", row


def test_list_formatting(server):
    """Aligned columns, connect time in UTC, compact idle, --room filter, empty table."""
    assert invoke(server, "list").stdout == \
        "ID  NICK  PEER  ROOM  CONNECTED  IDLE  SENDQ  MUTED  ACCOUNT  PROTOCOL\n"
    before = time.time()
    a, b = server.connect_many(2)
    b.join("dev")
    a.expect(f"*** {b.nick} left lobby")
    out = lines(invoke(server, "list").stdout)
    header, rows = out[0], out[1:]
    assert len(rows) == 2
    starts = columns(header)
    for row in rows:
        # left-aligned columns start under their header; numbers end under it
        for name in ("NICK", "PEER", "ROOM", "CONNECTED", "MUTED", "ACCOUNT"):
            i = header.index(name)
            assert row[i] != " " and row[i - 1] == " ", (name, header, row)
        for end in (header.index("ID") + 2, header.index("IDLE") + 4, header.index("SENDQ") + 5):
            assert row[end - 1] != " " and (end == len(row) or row[end] == " "), (header, row)
        connected = row[starts[4]:starts[4] + 20]
        when = calendar.timegm(time.strptime(connected, "%Y-%m-%d %H:%M:%SZ"))
        assert before - 2 <= when <= time.time() + 1, (connected, before)
    dev = lines(invoke(server, "list", "--room", "dev").stdout)
    assert len(dev) == 2 and f" {b.nick} " in dev[1], dev
    # an unknown room is an error, as it is for broadcast (not an empty table)
    assert invoke(server, "list", "--room", "nowhere", status=1).stderr == \
        "chatctl: error: no such room nowhere\n"


def test_list_json(server):
    a = server.connect()
    result = json.loads(ctl(server, "--json", "list"))
    assert [c["id"] for c in result] == [server.client_id(a)]
    assert result[0]["nick"] == a.nick
    assert result[0]["muted"] is False
    error = json.loads(invoke(server, "--json", "list", "--room", "nowhere", status=1).stderr)
    assert error == {"error": {"code": "not_found", "message": "no such room nowhere"}}
    # --json after the command, too; idle is the only field that moves between the two calls
    again = json.loads(ctl(server, "list", "--json"))
    assert [{k: v for k, v in c.items() if k != "idle"} for c in again] == [
        {k: v for k, v in c.items() if k != "idle"} for c in result
    ]
    assert json.loads(ctl(server, "status", "--json"))["clients"] == 1


def test_rooms(server):
    a, b, c = server.connect_many(3)
    c.join("dev")
    out = lines(ctl(server, "rooms"))
    assert out[0] == "ROOM   MEMBERS"
    assert sorted(out[1:]) == ["dev          1", "lobby        2"]
    rooms = json.loads(invoke(server, "--json", "rooms").stdout)
    assert sorted((r["name"], r["members"]) for r in rooms) == [("dev", 1), ("lobby", 2)]


# --------------------------------------------------------------------------------------------
# kick, broadcast, mute
# --------------------------------------------------------------------------------------------


def test_kick_by_nick_with_reason(server):
    alice, bob = server.connect_many(2)
    guest = alice.nick
    alice.set_nick("alice")
    bob.expect(f"*** {guest} is now known as alice")
    out = ctl(server, "kick", "alice", "-r", "flooding")
    assert out == f"kicked alice (id {server.client_id(alice)})\n"
    assert alice.expect_closed() == ["*** you were kicked: flooding"]
    bob.expect("*** alice was kicked (flooding)")
    assert lines(invoke(server, "list").stdout)[1].split()[1] == bob.nick


def test_kick_by_id_and_unknown_target(server):
    a, b = server.connect_many(2)
    client_id = server.client_id(a)
    assert ctl(server, "kick", str(client_id), "--reason", "bye now") == \
        f"kicked {a.nick} (id {client_id})\n"
    assert a.expect_closed() == ["*** you were kicked: bye now"]
    b.expect(f"*** {a.nick} was kicked (bye now)")
    err = ctl(server, "kick", "nobody", status=1)
    assert re.fullmatch(r"chatctl: error: [^\n]*nobody[^\n]*\n", err), err
    assert ctl(server, "kick", "999", status=1).startswith("chatctl: error: ")
    b.expect_silence()


def test_broadcast_everyone_and_one_room(server):
    a, b, c = server.connect_many(3)
    c.join("dev")
    a.expect("*** guest-3 left lobby")
    b.expect("*** guest-3 left lobby")
    assert ctl(server, "broadcast", "server", "restarts", "at", "18:00") == \
        "broadcast sent to 3 clients\n"
    for client in (a, b, c):
        client.expect("*** [admin] server restarts at 18:00")
    assert ctl(server, "broadcast", "--room", "dev", "--", "-", "dev", "only") == \
        "broadcast sent to 1 client in dev\n"
    c.expect("*** [admin] - dev only")
    a.expect_silence()
    b.expect_silence()
    err = ctl(server, "broadcast", "--room", "nowhere", "hello", status=1)
    assert err == "chatctl: error: no such room nowhere\n"  # word for word what list says
    error = json.loads(invoke(server, "--json", "broadcast", "--room", "nowhere", "x",
                              status=1).stderr)
    assert error == {"error": {"code": "not_found", "message": "no such room nowhere"}}
    assert json.loads(invoke(server, "--json", "broadcast", "hi").stdout)["recipients"] == 3


def test_mute_and_unmute(server):
    alice, bob = server.connect_many(2)
    guest = alice.nick
    alice.set_nick("alice")
    bob.expect(f"*** {guest} is now known as alice")
    assert ctl(server, "mute", "alice") == f"muted alice (id {server.client_id(alice)})\n"
    alice.expect("*** you are muted")
    alice.send_line("can anyone hear me")
    alice.expect("*** error: you are muted")
    bob.expect_silence()
    assert json.loads(invoke(server, "--json", "list").stdout)[0]["muted"] is True
    assert [row.split()[-3] for row in lines(invoke(server, "list").stdout)] == ["MUTED", "yes", "no"]
    assert ctl(server, "unmute", str(server.client_id(alice))) == \
        f"unmuted alice (id {server.client_id(alice)})\n"
    alice.expect("*** you are no longer muted")
    alice.send_line("and now")
    bob.expect("<alice> and now")
    assert ctl(server, "mute", "nobody", status=1).startswith("chatctl: error: ")


# --------------------------------------------------------------------------------------------
# ban, unban, bans
# --------------------------------------------------------------------------------------------


def test_ban_disconnects_and_refuses_then_unban(server):
    local = server.connect()
    other = server.connect(source="127.0.0.2")
    local.expect(f"*** {other.nick} joined lobby")
    out = ctl(server, "ban", "127.0.0.2", "-r", "spam wave")
    assert out == "banned 127.0.0.2/32 with no expiry, disconnected 1 client\n"
    other.expect_closed()
    local.wait_for(lambda line: line.startswith(f"*** {other.nick} left lobby"))
    refused = server.connect(source="127.0.0.2", greet=False)
    assert refused.expect_closed() == ["*** error: banned (spam wave)"]
    local.expect_silence()  # the ban did not touch 127.0.0.1

    assert lines(ctl(server, "bans")) == [
        "ADDRESS       EXPIRES  REASON",
        "127.0.0.2/32  never    spam wave",
    ]
    assert ctl(server, "unban", "127.0.0.2") == "unbanned 127.0.0.2/32\n"
    assert ctl(server, "bans") == "ADDRESS  EXPIRES  REASON\n"
    server.connect(source="127.0.0.2")  # welcome again
    err = ctl(server, "unban", "127.0.0.2", status=1)
    assert err.startswith("chatctl: error: ") and err.count("\n") == 1, err


def test_ban_network_with_duration(server):
    a = server.connect(source="127.0.0.3")
    b = server.connect(source="127.0.0.4")
    before = time.time()
    out = ctl(server, "ban", "127.0.0.0/30", "--duration", "2h")
    m = re.fullmatch(rf"banned 127\.0\.0\.0/30 until ({UTC_TIME}), disconnected 1 client\n",
                     out)
    assert m, out
    until = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%SZ"))
    assert before + 7200 - 2 <= until <= time.time() + 7200 + 1
    a.expect_closed()
    b.expect(f"*** {a.nick} left lobby (banned)")
    b.expect_silence()  # 127.0.0.4 is outside 127.0.0.0/30
    table = lines(invoke(server, "bans").stdout)
    assert table[1].split()[0] == "127.0.0.0/30"
    assert " ".join(table[1].split()[1:3]) == m.group(1)
    assert table[1].split()[3:] == ["-"]  # no reason given
    bans = json.loads(invoke(server, "--json", "bans").stdout)
    assert bans[0]["address"] == "127.0.0.0/30" and bans[0]["expires"]


def test_ban_short_duration_option_force_and_what_the_banned_see(server):
    a = server.connect(source="127.0.0.5")
    out = ctl(server, "ban", "127.0.0.5", "-d", "90m", "-r", "spam wave")
    m = re.fullmatch(rf"banned 127\.0\.0\.5/32 until ({UTC_TIME}), disconnected 1 client\n", out)
    assert m, out
    [closing] = a.expect_closed()
    assert re.fullmatch(r"\*\*\* error: banned \(spam wave; until \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d:\d\d UTC\)", closing), closing
    # one time zone: the operator and the banned client read the same moment, both in UTC
    assert closing.endswith(f"until {m.group(1)[:-1]} UTC)"), (closing, out)
    assert server.connect(source="127.0.0.5", greet=False).expect_closed() == [closing]
    err = ctl(server, "ban", "127.0.0.1/0", status=1)
    assert err == ("chatctl: error: 127.0.0.1/0 has host bits set; did you mean 0.0.0.0/0? "
                   "use --force to ban that network\n")
    assert ctl(server, "ban", "10.1.2.3/8", "--force") == \
        "banned 10.0.0.0/8 with no expiry, disconnected 0 clients\n"
    assert [b["address"] for b in json.loads(invoke(server, "--json", "bans").stdout)] == [
        "127.0.0.5/32", "10.0.0.0/8"]


def test_ban_bad_input(server):
    err = ctl(server, "ban", "not-an-address", status=1)
    assert re.fullmatch(r"chatctl: error: [^\n]*not-an-address[^\n]*\n", err), err
    # chatctl's own checks are usage errors, before the daemon is asked
    result = invoke(server, "ban", "192.0.2.1", "--duration", "soon", status=2)
    assert "not a duration" in result.stderr
    for zero in ("0", "0m"):  # says why, and what to do instead (issue 23 §4)
        result = invoke(server, "ban", "192.0.2.1", "--duration", zero, status=2)
        assert "a ban lasts longer than 0; leave -d out for a ban with no expiry" in result.stderr
    assert invoke(server, "bans").stdout == "ADDRESS  EXPIRES  REASON\n"


# --------------------------------------------------------------------------------------------
# reload, shutdown
# --------------------------------------------------------------------------------------------


def test_reload_of_a_chatd_started_without_a_file_says_so(tmp_path):
    """It said a bare "reloaded" though there was nothing to re-read (issue 23 §4)."""
    sock = tmp_path / "a.sock"
    proc = subprocess.Popen([sys.executable, "-m", "chatd", "--port", "0", "--admin-socket",
                             str(sock), "--state-dir", str(tmp_path / "state")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=_env())
    try:
        from support.waiting import wait_until

        wait_until(lambda: proc.poll() is not None
                   or sock.exists() and run_chatctl(str(sock), "status").returncode == 0,
                   10, "chatd answering on its admin socket", interval=0.05)
        assert proc.poll() is None, "chatd exited"
        result = run_chatctl(str(sock), "reload")
        assert result.returncode == 0, result
        assert result.stdout.startswith("reloaded (chatd was started without -c: there is no "
                                        "file to re-read"), result.stdout
    finally:
        proc.terminate()
        proc.wait(10)


def test_reload_changes_the_motd(chatd):
    srv = chatd(server={"motd": "old news"})
    staying = srv.connect()
    srv.config_path.write_text(toml_dumps({"server": {"motd": "fresh news\nsecond line"}}))
    assert ctl(srv, "reload") == "reloaded\n"
    srv.connect(motd=["fresh news", "second line"])
    staying.wait_for(lambda line: line.endswith("joined lobby"))
    staying.expect_silence()  # nobody was dropped


def test_reload_names_the_settings_that_need_a_restart(chatd):
    srv = chatd(server={"motd": "old news"})
    srv.config_path.write_text(toml_dumps({"server": {"motd": "new", "host": "127.0.0.2"}}))
    assert ctl(srv, "reload") == "reloaded; restart chatd to apply: server.host\n"
    assert json.loads(ctl(srv, "--json", "reload"))["restart_required"] == ["server.host"]
    srv.connect(motd=["new"])  # on the old address, with the new MOTD


def test_reload_with_an_invalid_file_keeps_the_old_config(chatd):
    srv = chatd(server={"motd": "old news"})
    srv.config_path.write_text('[limits]\nrate = "fast"\n')
    err = ctl(srv, "reload", status=1)
    assert re.fullmatch(r"chatctl: error: [^\n]*limits\.rate[^\n]*\n", err), err
    srv.connect(motd=["old news"])
    result = invoke(srv, "--json", "reload", status=1)
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "reload_failed" and "limits.rate" in error["message"], error


def test_shutdown(server):
    client = server.connect()
    assert ctl(server, "shutdown") == "chatd is shutting down\n"
    assert client.expect_closed() == ["*** server shutting down"]
    assert server.proc.wait(10) == 0
    server.wait_event("shutdown")
    err = ctl(server, "status", status=3)
    assert err == UNREACHABLE.format(path=server.admin_socket, why=NO_SOCKET)
