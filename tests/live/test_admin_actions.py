"""The admin socket, spoken to directly: what its commands do to chat clients.

Kick, mute and broadcast as the clients see them; bans (a restart keeps them, a network with
host bits set needs force, the banned see the reason and the expiry, timed bans expire, a
corrupt bans file stops the start, an unwritable state directory reports ``not_saved``); and
``list`` while clients move between rooms and come and go. The socket file, who may talk to
it, the protocol's error codes, reload and shutdown: test_admin.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from datetime import datetime

import pytest
from support.admin import Admin, error_code, ok
from support.daemon import start_raw
from support.traffic import run_in_threads

# -- actions seen by chat clients ---------------------------------------------------------------


def test_kick_tells_the_target_and_its_room(server):
    alice, bob = server.connect_many(2)
    bob_id = server.client_id(bob)
    result = ok(Admin(server.admin_socket).ask(
        {"cmd": "kick", "args": {"target": bob.nick, "reason": "spam"}}))
    assert result["nick"] == bob.nick
    assert bob.expect_closed() == ["*** you were kicked: spam"]
    alice.expect(f"*** {bob.nick} was kicked (spam)")
    event = server.wait_event("client_kicked", client_id=bob_id, nick=bob.nick, reason="spam")
    assert "peer" in event  # docs/protocol.md §5: client events carry client_id and peer


def test_mute_stops_delivery_and_unmute_restores_it(server):
    alice, bob = server.connect_many(2)
    admin = Admin(server.admin_socket)
    ok(admin.ask({"cmd": "mute", "args": {"target": alice.nick}}))
    alice.expect("*** you are muted")  # told at once, not only when it next talks
    alice.send_line("can you hear me")
    alice.expect("*** error: you are muted")
    alice.send_line(f"/msg {bob.nick} psst")
    alice.expect("*** error: you are muted")
    bob.expect_silence()
    ok(admin.ask({"cmd": "unmute", "args": {"target": alice.nick}}))
    alice.expect("*** you are no longer muted")
    alice.send_line("back")
    bob.expect(f"<{alice.nick}> back")


def test_broadcast_to_all_and_to_one_room(server):
    alice, bob = server.connect_many(2)
    bob.join("dev")
    alice.expect(f"*** {bob.nick} left lobby")
    admin = Admin(server.admin_socket)
    assert ok(admin.ask({"cmd": "broadcast", "args": {"text": "hello\x1b[31m all"}}))["recipients"] == 2
    alice.expect("*** [admin] hello[31m all")
    bob.expect("*** [admin] hello[31m all")
    assert ok(admin.ask({"cmd": "broadcast", "args": {"text": "dev only", "room": "#DEV"}}))["recipients"] == 1
    bob.expect("*** [admin] dev only")
    alice.expect_silence()


def test_ban_disconnects_refuses_and_survives_a_restart(chatd, tmp_path):
    state = str(tmp_path / "state")
    srv = chatd(args=["--state-dir", state])
    here = srv.connect()
    there = srv.connect(source="127.0.0.2")
    admin = Admin(srv.admin_socket)
    result = ok(admin.ask({"cmd": "ban", "args": {"address": "127.0.0.2", "reason": "abuse"}}))
    assert (result["address"], result["disconnected"], result["expires"]) == ("127.0.0.2/32", 1, None)
    assert there.expect_closed() == ["*** error: banned (abuse)"]
    here.expect(f"*** {there.nick} joined lobby")
    here.expect(f"*** {there.nick} left lobby (banned)")
    refused = srv.connect(source="127.0.0.2", greet=False)
    assert refused.expect_closed() == ["*** error: banned (abuse)"]
    srv.wait_event("client_refused", reason="banned")
    assert srv.terminate() == 0

    again = chatd(args=["--state-dir", state])
    assert again.connect(source="127.0.0.2", greet=False).expect_closed() == [
        "*** error: banned (abuse)"]
    again.connect()  # others still welcome
    bans = ok(Admin(again.admin_socket).ask({"cmd": "bans"}))
    assert [(b["address"], b["reason"]) for b in bans] == [("127.0.0.2/32", "abuse")]
    ok(Admin(again.admin_socket).ask({"cmd": "unban", "args": {"address": "127.0.0.2"}}))
    again.connect(source="127.0.0.2")


def test_a_network_with_host_bits_set_needs_force(server):
    chat = server.connect()
    admin = Admin(server.admin_socket)
    reply = admin.ask({"cmd": "ban", "args": {"address": "127.0.0.1/0"}})
    assert error_code(reply) == "invalid_address"
    assert reply["error"]["message"] == ("127.0.0.1/0 has host bits set; did you mean 0.0.0.0/0? "
                                         "use --force to ban that network")
    reply = admin.ask({"cmd": "ban", "args": {"address": "2001:db8::1/32"}})
    assert "did you mean 2001:db8::/32?" in reply["error"]["message"]
    assert ok(admin.ask({"cmd": "bans"})) == []
    chat.expect_silence()  # nobody was banned
    assert error_code(admin.ask({"cmd": "ban", "args": {"address": "10.1.2.3/8", "force": "yes"}})) \
        == "bad_args"  # force is a JSON bool
    assert ok(admin.ask({"cmd": "ban", "args": {"address": "10.1.2.3/8", "force": True}}))[
        "address"] == "10.0.0.0/8"
    assert ok(admin.ask({"cmd": "ban", "args": {"address": "10.9.9.9/32"}}))  # a host is fine
    assert ok(admin.ask({"cmd": "ban", "args": {"address": "10.9.0.0/16", "force": False}}))
    chat.expect_silence()


def test_banned_clients_see_the_reason_and_the_expiry(server):
    admin = Admin(server.admin_socket)
    present = server.connect(source="127.0.0.6")
    result = ok(admin.ask({"cmd": "ban", "args": {"address": "127.0.0.6", "duration": 3600,
                                                  "reason": "spam\x1b[2J wave"}}))
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(
        datetime.fromisoformat(result["expires"]).timestamp()))
    line = f"*** error: banned (spam[2J wave; until {until})"
    assert present.expect_closed() == [line]  # the ban-time notice
    assert server.connect(source="127.0.0.6", greet=False).expect_closed() == [line]  # at connect
    ok(admin.ask({"cmd": "ban", "args": {"address": "127.0.0.7", "reason": "only why"}}))
    assert server.connect(source="127.0.0.7", greet=False).expect_closed() == [
        "*** error: banned (only why)"]
    ok(admin.ask({"cmd": "ban", "args": {"address": "127.0.0.8"}}))
    assert server.connect(source="127.0.0.8", greet=False).expect_closed() == ["*** error: banned"]


def test_timed_ban_expires(server):
    admin = Admin(server.admin_socket)
    ok(admin.ask({"cmd": "ban", "args": {"address": "127.0.0.3/32", "duration": 0.5}}))
    deadline = time.monotonic() + 10
    while ok(admin.ask({"cmd": "bans"})):  # expired bans drop out of the list
        assert time.monotonic() < deadline, "ban did not expire"
        threading.Event().wait(0.05)
    server.connect(source="127.0.0.3")


def test_corrupt_bans_file_stops_the_start_and_is_left_untouched(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    bans = state / "bans.json"
    bans.write_bytes(b'{"version": 1, "bans": [{"address": "10.0.0.0/8"')
    sock = tempfile.mkdtemp(prefix="chatd-c-")
    try:
        result = start_raw("--state-dir", str(state), "--admin-socket", os.path.join(sock, "a.sock"))
    finally:
        shutil.rmtree(sock, ignore_errors=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and str(bans) in lines[0], result.stderr
    assert bans.read_bytes() == b'{"version": 1, "bans": [{"address": "10.0.0.0/8"'


def test_unwritable_state_directory_reports_the_ban_as_not_saved(chatd, tmp_path):
    state = tmp_path / "state"
    srv = chatd(args=["--state-dir", str(state)])
    state.write_text("")  # root ignores file modes: a file where the directory should be
    reply = Admin(srv.admin_socket).ask({"cmd": "ban", "args": {"address": "127.0.0.4"}})
    assert error_code(reply) == "not_saved"
    assert "will not survive a restart" in reply["error"]["message"]
    assert state.read_text() == ""  # nothing half-written
    assert srv.connect(source="127.0.0.4", greet=False).expect_closed() == ["*** error: banned"]


# -- load --------------------------------------------------------------------------------------


def test_list_while_clients_move_between_rooms(chatd):
    """list (all, and by room) is read under the hub lock: a client half-way through /join
    (its room None for a moment) never breaks it, and every row names a room."""
    srv = chatd(limits={"rate": 1000, "burst": 1000})
    movers = [srv.connect() for _ in range(12)]
    stop = threading.Event()

    def churn(client):
        moves = 0
        while not stop.is_set():
            for room in ("east", "west"):
                client.send_line(f"/join {room}")
            client.sync()  # reads what the moves produced, keeps the output queue short
            moves += 2
        return moves

    def lister(room):
        admin = Admin(srv.admin_socket)
        rows = 0
        for i in range(150):
            reply = admin.ask({"id": i, "cmd": "list", "args": {"room": room} if room else {}})
            if reply["ok"] is False:
                assert room and reply["error"]["code"] == "not_found", reply  # room empty now
                continue
            assert all(c["room"] is not None for c in reply["result"]), reply
            assert all(c["room"] == room for c in reply["result"] if room), reply
            rows += len(reply["result"])
        return rows

    churners = threading.Thread(target=lambda: run_in_threads(churn, movers, 60), daemon=True)
    churners.start()
    try:
        counts = run_in_threads(lister, [None, None, "east", "west"], 60)
    finally:
        stop.set()
        churners.join(60)
    assert counts[0] == counts[1] == 150 * 12
    assert not srv.find_events("admin_command", outcome="internal_error")


@pytest.mark.slow
def test_concurrent_admin_lists_while_200_clients_come_and_go(chatd):
    srv = chatd(limits={"max_clients_per_ip": 1000})
    stop = threading.Event()

    def churn(_):
        count = 0
        while not stop.is_set():
            for client in [srv.connect() for _ in range(10)]:
                client.close()
            count += 10
        return count

    def lister(_):
        admin = Admin(srv.admin_socket)
        replies = [admin.ask({"id": i, "cmd": "list"}) for i in range(25)]
        admin.close()
        return replies

    churners = threading.Thread(target=lambda: run_in_threads(churn, range(20), 60), daemon=True)
    churners.start()
    try:
        results = run_in_threads(lister, range(20), 60)
    finally:
        stop.set()
        churners.join(60)
    assert all(r["ok"] for replies in results for r in replies)
    assert sum(len(replies) for replies in results) == 500
    last = srv.connect()
    last.send_line("still here")
    last.sync()
