"""docs/protocol.md §11 ``chatctl watch``: a real chatd, ``python -m chatctl watch`` as a real process.

What a watcher sees (joins, kicks, other chatctls' commands; message texts only with
``log_messages``), ``--json`` and ``--room``, several watchers at once, a watcher that never
reads being dropped while the chat goes on, and how a watch ends: Ctrl-C (exit 0), chatd
stopping (``shutdown``, exit 0), chatd killed (exit 3, one line). The pure parts (event lines,
the queue limit, the human format) are tested in-process at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest
from support.chatctl import ctl
from support.daemon import toml_dumps
from support.waiting import wait_until
from support.watch import Watch

from chatctl import format as fmt
from chatd.admin import watch

# -- what a watcher sees ------------------------------------------------------------------------


def test_watch_sees_joins_kicks_and_other_chatctls_then_ends_on_ctrl_c(server, watching):
    w = watching(server)
    w.wait_line("admin_command", "command=watch", "outcome=ok")
    alice, bob = server.connect_many(2)
    w.wait_line("client_connected", f"nick={alice.nick}", "room=lobby")
    guest = alice.nick
    alice.set_nick("alice")
    w.wait_line("nick_changed", "nick=alice", "room=lobby", f"old={guest}", "new=alice")
    bob.join("dev")
    line = w.wait_line("room_joined", f"nick={bob.nick}", "room=dev", "left=lobby")
    assert line[:20].endswith("Z") and line[10] == " ", line  # "YYYY-MM-DD HH:MM:SSZ"
    alice.send_line("a secret")  # log_messages is off: no text reaches a watcher
    ctl(server, "kick", bob.nick, "-r", "spam")
    w.wait_line("client_kicked", f"nick={bob.nick}", "room=dev", "reason=spam")
    w.wait_line("client_disconnected", f"nick={bob.nick}", "room=dev")
    w.wait_line("admin_command", "command=kick", "outcome=ok")
    ctl(server, "mute", "alice")
    w.wait_line("admin_command", "command=mute", "outcome=ok")
    assert not [ln for ln in w.lines if "secret" in ln or "  message  " in ln], w.lines
    w.proc.send_signal(signal.SIGINT)
    status, stderr = w.finish()
    assert status == 0, (status, stderr)


def test_json_lines_room_filter_and_two_watchers(server, watching):
    everything = watching(server, "--json")
    dev = watching(server, "--room", "#dev", "--json")
    alice, bob = server.connect_many(2)
    bob.set_nick("bob")  # in the lobby: not for the dev watcher
    everything.wait_event("nick_changed", nick="bob", room="lobby")
    alice.join("dev")
    joined = dev.wait_event("room_joined", nick=alice.nick, room="dev", left="lobby")
    assert joined["client_id"] == server.client_id(alice) and joined["timestamp"].endswith("Z")
    everything.wait_event("room_joined", nick=alice.nick, room="dev")
    bob.join("dev")
    dev.wait_event("room_joined", nick="bob", room="dev")
    bob.join("lobby")  # a leave from dev is an event of dev
    dev.wait_event("room_joined", nick="bob", room="lobby", left="dev")
    rooms = {e.get("room") for e in dev.events()} | {e.get("left") for e in dev.events()}
    assert "dev" in rooms and all(
        "dev" in (e.get("room"), e.get("left")) for e in dev.events()), dev.events()
    assert not [e for e in dev.events() if e["event"] in ("nick_changed", "admin_command")]
    assert {"client_connected", "nick_changed", "room_joined", "admin_command"} <= {
        e["event"] for e in everything.events()}


def test_message_texts_with_log_messages(chatd, watching):
    srv = chatd(logging={"log_messages": True})
    w = watching(srv, "--json")
    alice, bob = srv.connect_many(2)
    alice.send_line("hello there")
    bob.expect(f"<{alice.nick}> hello there")
    event = w.wait_event("message", nick=alice.nick, room="lobby", text="hello there")
    assert event["client_id"] == srv.client_id(alice)


def test_a_watcher_sees_info_events_the_log_level_leaves_out(chatd, watching):
    srv = chatd()
    srv.config_path.write_text(toml_dumps({"logging": {"log_level": "warning"},
                                           "history": {"history_on_join": 0}}))
    ctl(srv, "reload")
    w = watching(srv, "--json", subscribed=False)
    w.wait_event("admin_command", command="watch")
    alice = srv.connect()
    alice.join("dev")
    w.wait_event("room_joined", nick=alice.nick, room="dev")
    w.proc.send_signal(signal.SIGINT)
    assert w.finish() == (0, "")
    assert srv.find_events("room_joined") == []
    assert srv.find_events("admin_command", command="watch") == []


def test_a_watch_can_be_refused(server):
    w = Watch(server.admin_socket, "--room", "no such room!")
    status, stderr = w.finish()
    w.kill()
    assert status == 1 and stderr.startswith("chatctl: error: watch: invalid room"), stderr


# -- a watcher that never reads -------------------------------------------------------------------


def test_a_watcher_that_never_reads_is_dropped_and_chat_goes_on(chatd, watching):
    srv = chatd(logging={"log_messages": True},
                limits={"rate": 100000, "burst": 100000, "sendq_bytes": 16 * 1024 * 1024})
    fast = watching(srv, "--room", "dev", "--json")  # not flooded: the lobby is
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(srv.admin_socket)
    slow.settimeout(5)
    slow.sendall(b'{"id": 1, "cmd": "watch"}\n')
    reply = b""
    while not reply.endswith(b"\n"):  # the reply alone, not the events behind it
        reply += slow.recv(1)
    assert json.loads(reply) == {"id": 1, "ok": True, "result": {"watching": True, "room": None}}
    # the slow watcher reads nothing from here on
    alice, bob = srv.connect_many(2)
    count = 6000
    text = "x" * 120
    alice.send_raw(b"".join(f"{n} {text}\n".encode() for n in range(count)))
    dropped = srv.wait_event("watch_dropped", timeout=30, level="warning", reason="too slow")
    assert dropped["uid"] == os.getuid()
    # now read (within the 2 s chatd gives it): what was sent, the last word, the end
    slow.settimeout(10)
    received = bytearray()
    while chunk := slow.recv(1 << 16):
        received += chunk
    last = json.loads(received.splitlines()[-1])
    assert last["final"] is True and last["event"]["event"] == "watch_dropped", last
    assert last["event"]["reason"] == "too slow"
    slow.close()
    for n in range(count):  # the chat was not held up: bob gets every line, in order
        bob.expect(f"<{alice.nick}> {n} {text}", timeout=30)
    alice.join("dev")  # the other watcher goes on
    fast.wait_event("room_joined", nick=alice.nick, room="dev")
    alice.send_line("still here")
    fast.wait_event("message", text="still here")
    assert len(srv.find_events("watch_dropped")) == 1


# -- how a watch ends ------------------------------------------------------------------------------


def test_chatd_stopping_ends_the_watch_with_a_shutdown_event(server, watching):
    """The clients' disconnects at shutdown come first: a watcher sees everyone leave."""
    w = watching(server, "--json")
    w.wait_event("admin_command", command="watch")
    alice = server.connect()
    w.wait_event("client_connected", nick=alice.nick)
    assert server.terminate() == 0
    status, stderr = w.finish()
    assert (status, stderr) == (0, "")
    assert [e["event"] for e in w.events()][-2:] == ["client_disconnected", "shutdown"], w.lines
    assert w.events()[-2]["reason"] == "server shutting down"


def test_a_watch_goes_on_across_an_upgrade(server, watching):
    """``restarting``, then the same watch on the new chatd: it sees what happens there, and
    ends (exit 0) when that one shuts down."""
    from test_upgrade import upgrade

    w = watching(server, "--json")
    w.wait_event("admin_command", command="watch")
    upgrade(server)
    w.wait_event("restarting")
    wait_until(lambda: len([e for e in w.events() if e.get("command") == "watch"]) == 2,
               what="the watch subscribing again")
    server.connect().join("dev")
    w.wait_event("room_joined", room="dev")
    server.terminate()  # (the new chatd is not our child: no status to see)
    status, stderr = w.finish()
    assert (status, stderr) == (0, "")
    assert w.events()[-1]["event"] == "shutdown"


def test_chatd_killed_ends_the_watch_with_exit_3(server, watching):
    w = watching(server)
    w.wait_line("admin_command", "command=watch")
    server.proc.kill()
    status, stderr = w.finish()
    assert status == 3, (status, stderr)
    assert stderr == (f"chatctl: lost chatd at {server.admin_socket}: connection lost without "
                      "a shutdown event (did chatd die?)\n"), stderr


def test_no_daemon_is_exit_3(tmp_path):
    path = str(tmp_path / "admin.sock")
    w = Watch(path)
    status, stderr = w.finish()
    w.kill()
    assert status == 3 and stderr == (f"chatctl: cannot reach chatd at {path}: no socket "
                                      "(is chatd running?)\n"), stderr


# -- the pure parts --------------------------------------------------------------------------------


def test_a_watcher_over_its_queue_limit_is_dropped_not_blocked():
    w = watch.Watcher("Dev")
    try:
        line = watch.event_line({"event": "message", "text": "x" * 1000})
        for _ in range(watch.QUEUE_BYTES // len(line)):
            w.offer(line)
        assert w.state == w.OPEN
        w.offer(line)
        assert w.state == w.DROPPED and w._take() == (b"", w.DROPPED)
        w.end(watch.final_line("shutdown"))  # too late: it is dropped already
        assert w._take() == (b"", w.DROPPED)
    finally:
        w.close()
    assert w.wants(watch.rooms_of({"room": "dev"})) and w.wants(watch.rooms_of({"left": "DEV"}))
    assert not w.wants(watch.rooms_of({"room": "lobby"})) and not w.wants(())


def test_final_lines_say_so():
    line = json.loads(watch.final_line("shutdown"))
    assert line["final"] is True and line["event"]["event"] == "shutdown"
    assert "final" not in json.loads(watch.event_line({"event": "room_joined"}))


@pytest.mark.parametrize("event, shown", [
    ({"timestamp": "2026-12-03T09:40:01.123456Z", "event": "room_joined", "client_id": 3,
      "peer": "127.0.0.1:4000", "room": "dev", "nick": "alice", "left": "lobby"},
     ("2026-12-03 09:40:01Z  room_joined  nick=alice room=dev client_id=3 peer=127.0.0.1:4000 "
      "left=lobby")),
    ({"timestamp": "2026-12-03T09:40:02.5Z", "event": "client_kicked", "nick": "bob",
      "reason": "no spam, please"},
     '2026-12-03 09:40:02Z  client_kicked  nick=bob reason="no spam, please"'),
    ({"timestamp": "2026-12-03T09:40:03Z", "event": "admin_command", "command": "ban",
      "args": {"address": "192.0.2.7"}, "outcome": "ok", "uid": 0, "pid": 7},
     ('2026-12-03 09:40:03Z  admin_command  command=ban outcome=ok args={"address":"192.0.2.7"} '
      "uid=0 pid=7")),
    ({"timestamp": "2026-12-03T09:40:04Z", "event": "shutdown"}, "2026-12-03 09:40:04Z  shutdown"),
])
def test_human_format(event, shown):
    assert fmt.watch_event(event) == shown
