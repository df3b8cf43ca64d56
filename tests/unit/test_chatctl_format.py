"""chatctl's human formats (chatctl/format.py) and argument types, as tables: no daemon needed."""

from __future__ import annotations

import pytest

from chatctl import format as fmt
from chatctl.params import Duration, Target


def test_target_and_duration_conversion():
    assert Target().convert("42", None, None) == 42
    assert Target().convert("alice", None, None) == "alice"
    assert Duration().convert("3600", None, None) == 3600
    assert Duration().convert("1h30m", None, None) == 5400
    assert Duration().convert("1.5", None, None) == 1.5


@pytest.mark.parametrize("seconds, uptime, idle", [
    (0, "0s", "0s"),
    (12.9, "12s", "12s"),
    (184, "3m 04s", "3m04s"),
    (3723, "1h 02m 03s", "1h02m"),
    (2 * 86400 + 3 * 3600 + 5, "2d 03h 00m 05s", "2d03h"),
    (-3, "0s", "0s"),
])
def test_durations(seconds, uptime, idle):
    assert fmt.uptime(seconds) == uptime
    assert fmt.idle(seconds) == idle


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("1.5", 1.5), ("90s", 90), ("45m", 2700), ("12h", 43200), ("7d", 604800),
    ("1w", 604800), ("1h30m", 5400), ("1H", 3600), (" 2m ", 120),
])
def test_parse_duration(text, seconds):
    assert fmt.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "soon", "1x", "h", "inf", "nan", "1h 30m", "m5"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        fmt.parse_duration(text)


def test_utc_time():
    """UTC, marked Z, whatever the local zone: the zone the daemon tells clients (issue 23)."""
    shown = "2023-11-14 22:13:20Z"
    assert fmt.utc_time(1_700_000_000) == shown
    assert fmt.utc_time("2023-11-14T22:13:20Z") == shown
    assert fmt.utc_time("2023-11-14T23:13:20+01:00") == shown
    assert fmt.utc_time("2023-11-14T22:13:20") == shown  # naive means UTC
    assert fmt.utc_time(None) == "never"
    assert fmt.utc_time("garbage") == "garbage"


def test_table_alignment():
    assert fmt.table(["ID", "NICK", "N"], [[1, "alice", 10], [123, "b", 7]], right=(0, 2)) == [
        " ID  NICK    N",
        "  1  alice  10",
        "123  b       7",
    ]
    assert fmt.table(["A", "REASON"], [["x", ""]]) == ["A  REASON", "x"]


def test_human_lines_for_actions():
    assert fmt.kicked({"id": 3, "nick": "alice", "reason": "x"}) == ["kicked alice (id 3)"]
    assert fmt.broadcast({"recipients": 12, "room": None}) == ["broadcast sent to 12 clients"]
    assert fmt.broadcast({"recipients": 1, "room": "dev"}) == ["broadcast sent to 1 client in dev"]
    assert fmt.banned({"address": "10.0.0.0/8", "expires": None, "disconnected": 2}) == \
        ["banned 10.0.0.0/8 with no expiry, disconnected 2 clients"]
    assert fmt.muted({"id": 3, "nick": "bob", "muted": False}) == ["unmuted bob (id 3)"]
    assert fmt.host_port("::1", 5555) == "[::1]:5555"


def test_client_table_has_muted_account_and_protocol_columns():
    rows = fmt.clients([{"id": 7, "nick": "al", "peer": "127.0.0.1:1", "room": "lobby",
                         "connected_at": None, "idle": 3, "sendq": 0, "muted": True,
                         "account": "al", "protocol": "line"},
                        {"id": 12, "nick": "bo", "peer": "127.0.0.1:2", "room": None,
                         "connected_at": None, "idle": 65, "sendq": 10, "muted": False,
                         "account": None, "protocol": "irc"}])
    assert rows == [
        "ID  NICK  PEER         ROOM   CONNECTED   IDLE  SENDQ  MUTED  ACCOUNT  PROTOCOL",
        " 7  al    127.0.0.1:1  lobby  -             3s      0  yes    al       line",
        "12  bo    127.0.0.1:2  -      -          1m05s     10  no     -        irc"]


def test_account_table_and_lines():
    alice = {"name": "alice", "created": "2026-12-02T18:48:12+00:00", "last_login": None,
             "state": "active", "online": False}
    bob = {"name": "bob", "created": "2026-12-02T18:48:13+00:00",
           "last_login": "2026-12-03T09:00:00+00:00", "state": "disabled", "online": True}
    assert fmt.accounts([alice, bob]) == [
        "NAME   CREATED               LAST-LOGIN            STATE     ONLINE",
        "alice  2026-12-02 18:48:12Z  never                 active    no",
        "bob    2026-12-02 18:48:13Z  2026-12-03 09:00:00Z  disabled  yes"]
    assert fmt.accounts([]) == ["NAME  CREATED  LAST-LOGIN  STATE  ONLINE"]
    assert fmt.account(bob) == ["name:       bob", "created:    2026-12-02 18:48:13Z",
                                "last login: 2026-12-03 09:00:00Z", "state:      disabled",
                                "online:     yes"]
    assert fmt.account_added(alice) == ["added account alice"]
    assert fmt.account_passwd(alice) == ["changed the password of account alice"]
    assert fmt.account_disabled({**bob, "disconnected": 1}) == \
        ["disabled account bob, disconnected 1 client"]
    assert fmt.account_enabled(alice) == ["enabled account alice"]
    assert fmt.account_deleted({"name": "bob", "deleted": True, "disconnected": 0}) == \
        ["deleted account bob, disconnected 0 clients"]


def test_reload_names_the_keys_that_need_a_restart():
    assert fmt.reloaded({"reloaded": True}) == ["reloaded"]
    assert fmt.reloaded({"reloaded": True, "restart_required": []}) == ["reloaded"]
    assert fmt.reloaded({"reloaded": True, "restart_required": ["server.port", "tls.tls_cert"]}) \
        == ["reloaded; restart chatd to apply: server.port, tls.tls_cert"]
