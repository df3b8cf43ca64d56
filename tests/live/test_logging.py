"""docs/protocol.md §5 logs, as JSON lines on stderr: event names, fields, and privacy of message texts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

SECRET = "secret-text-7f3a"


def test_every_line_is_a_json_event_with_timestamp_and_level(server):
    a, b = server.connect_many(2)
    a.set_nick("alice")
    b.expect("*** guest-1 is now known as alice")
    a.close()
    b.expect("*** alice left lobby (connection closed)")
    assert server.terminate() == 0
    assert server.lines, "nothing logged"
    non_json = [ln for ln in server.lines if not ln.startswith("{")]
    assert not non_json, f"non-JSON lines on stderr: {non_json[:5]}"
    for event in server.events:
        assert {"timestamp", "level", "event"} <= event.keys(), event
        stamp = datetime.fromisoformat(event["timestamp"])
        assert stamp.utcoffset() == timedelta(0), f"not UTC: {event['timestamp']}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", event["event"]), f"not snake_case: {event}"
        assert event["level"] in ("debug", "info", "warning", "error", "critical"), event


def test_listening_is_the_first_event_and_has_the_real_port(server):
    first = server.events[0]
    assert first["event"] == "listening"
    assert first["host"] == "127.0.0.1"
    assert isinstance(first["port"], int) and first["port"] > 0
    assert first["port"] == server.port


def test_connect_and_disconnect_events(server):
    client = server.connect()
    connected = server.wait_event("client_connected", peer=lambda p: p is not None)
    client_id = server.client_id(client)
    assert connected["client_id"] == client_id
    assert "127.0.0.1" in str(connected["peer"])
    client.close()
    gone = server.wait_event("client_disconnected", client_id=client_id)
    assert gone["reason"] == "connection closed"
    assert gone["peer"] == connected["peer"]
    assert isinstance(gone["duration"], (int, float)) and gone["duration"] >= 0


def test_client_ids_are_distinct(server):
    clients = server.connect_many(3)
    ids = [server.client_id(c) for c in clients]
    assert len(set(ids)) == 3, ids


def test_quit_reason_is_logged(server):
    client = server.connect()
    client_id = server.client_id(client)
    client.send_line("/quit")
    client.expect_closed()
    event = server.wait_event("client_disconnected", client_id=client_id)
    assert event["reason"] == "quit"


def test_nick_changed_and_room_joined_events(server):
    client = server.connect()
    client_id = server.client_id(client)
    client.set_nick("alice")
    client.join("Games")
    nick = server.wait_event("nick_changed", client_id=client_id)
    assert "alice" in nick.values()
    assert "guest-1" in nick.values()
    assert "peer" in nick
    joined = server.wait_event("room_joined", client_id=client_id,
                               room=lambda r: r is None or r == "Games")
    assert "Games" in joined.values()
    assert "peer" in joined


def converse(server):
    """A chat message, a private message and an action, all carrying SECRET; then alice leaves."""
    alice, bob = server.connect_many(2)
    alice_id = server.client_id(alice)
    alice.send_line(f"room {SECRET}")
    bob.expect(f"<guest-1> room {SECRET}")
    alice.send_line(f"/msg guest-2 private {SECRET}")
    bob.expect(f"*guest-1* private {SECRET}")
    alice.send_line(f"/me acts {SECRET}")
    bob.expect(f"* guest-1 acts {SECRET}")
    alice.close()
    # Logged after everything alice's session did, so the log is complete up to here.
    server.wait_event("client_disconnected", client_id=alice_id)
    bob.expect("*** guest-1 left lobby (connection closed)")


def test_message_text_is_not_logged_by_default(server):
    converse(server)
    leaks = [ln for ln in server.lines if SECRET in ln]
    assert not leaks, f"message text in the log: {leaks}"


def test_message_text_is_logged_with_log_messages(chatd):
    srv = chatd(logging={"log_messages": True})
    converse(srv)
    logged = [ln for ln in srv.lines if SECRET in ln]
    assert len(logged) >= 3, f"expected the room message, the /msg and the /me: {logged}"
