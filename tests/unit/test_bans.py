"""BanList (chatd/store/bans.py) in a temporary state directory: matching, expiry, persistence.

Everything goes through the public API and the file it writes: a second BanList loading the
first one's file is how a restart sees the bans. The list reads the wall clock itself, so
expiry is tested twice: :meth:`Ban.active` with explicit times (the rule), and a real ban of a
fraction of a second waited for by condition (the list applying the rule).
"""

from __future__ import annotations

import json
import os

import pytest
from support.waiting import wait_until

from chatd.store.bans import (
    FILE_NAME,
    FORMAT_VERSION,
    Ban,
    BanFileError,
    BanList,
    covers,
    parse_network,
)


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def bans(state):
    banlist = BanList(state)
    assert banlist.load() == 0  # no directory, no file: no bans, not an error
    return banlist


def net(text: str):
    return parse_network(text)


def reloaded(state: str) -> BanList:
    again = BanList(state)
    again.load()
    return again


# -- parsing and matching ---------------------------------------------------------------------


@pytest.mark.parametrize("text, network", [
    ("192.0.2.7", "192.0.2.7/32"),
    (" 192.0.2.7 ", "192.0.2.7/32"),
    ("10.1.2.3/8", "10.0.0.0/8"),
    ("2001:db8::1", "2001:db8::1/128"),
    ("2001:db8::dead/32", "2001:db8::/32"),
])
def test_parse_network(text, network):
    assert str(parse_network(text)) == network


@pytest.mark.parametrize("text", ["", "example.com", "300.1.1.1", "10.0.0.0/33", "1.2.3.4/x"])
def test_parse_network_rejects(text):
    with pytest.raises(ValueError):
        parse_network(text)


@pytest.mark.parametrize("network, ip, expected", [
    ("10.0.0.0/8", "10.255.1.2", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("192.0.2.7/32", "192.0.2.7", True),
    ("192.0.2.7/32", "::ffff:192.0.2.7", True),  # a dual-stack listener's IPv4 peer
    ("192.0.2.7/32", "::1", False),  # another address family never matches
    ("::1/128", "::1", True),
    ("fe80::/10", "fe80::1%eth0", True),  # a scoped link-local peer
    ("10.0.0.0/8", "not an address", False),
    ("10.0.0.0/8", "", False),
])
def test_covers(network, ip, expected):
    assert covers(net(network), ip) is expected


def test_match_finds_the_covering_ban(bans):
    ban, error = bans.add(net("10.0.0.0/8"), "spam", None)
    assert error is None
    assert (ban.network, ban.reason, ban.expires) == (net("10.0.0.0/8"), "spam", None)
    assert bans.match("10.1.2.3") == ban
    assert bans.match("192.0.2.1") is None
    assert bans.active() == [ban]


def test_add_replaces_the_ban_of_the_same_network(bans):
    bans.add(net("192.0.2.7"), "first", None)
    second, _ = bans.add(net("192.0.2.7/32"), "second", 3600)
    assert bans.active() == [second]
    assert bans.match("192.0.2.7").reason == "second"


def test_remove(bans, state):
    kept, _ = bans.add(net("192.0.2.1"), "a", None)
    gone, _ = bans.add(net("192.0.2.2"), "b", None)
    assert bans.remove(net("192.0.2.2")) == (gone, None)
    assert bans.match("192.0.2.2") is None and bans.match("192.0.2.1") == kept
    assert bans.remove(net("192.0.2.2")) == (None, None)  # not banned: nothing to say
    assert reloaded(state).active() == [kept]


def test_as_dict_is_what_the_admin_side_shows(bans):
    ban, _ = bans.add(net("192.0.2.0/24"), "why", 60)
    shown = ban.as_dict()
    assert shown["address"] == "192.0.2.0/24" and shown["reason"] == "why"
    assert shown["created"].endswith("+00:00") and shown["expires"].endswith("+00:00")
    assert bans.add(net("192.0.2.9"), "", None)[0].as_dict()["expires"] is None


# -- expiry -----------------------------------------------------------------------------------


def test_ban_active_until_its_expiry():
    ban = Ban(net("192.0.2.1"), "", created=1000.0, expires=1060.0)
    assert ban.active(1000.0) and ban.active(1059.999)
    assert not ban.active(1060.0) and not ban.active(5000.0)
    forever = Ban(net("192.0.2.1"), "", created=1000.0, expires=None)
    assert forever.active(10**12)


def test_add_with_a_duration_sets_the_expiry(bans):
    ban, _ = bans.add(net("192.0.2.1"), "", 90)
    assert ban.expires == pytest.approx(ban.created + 90)
    for no_expiry in (None, 0):
        ban, _ = bans.add(net("192.0.2.1"), "", no_expiry)
        assert ban.expires is None  # 0 = until unbanned


def test_a_timed_ban_lapses_by_itself(bans):
    short, _ = bans.add(net("192.0.2.1"), "short", 0.2)
    permanent, _ = bans.add(net("192.0.2.2"), "long", None)
    assert bans.match("192.0.2.1") == short
    wait_until(lambda: bans.match("192.0.2.1") is None, what="the ban to expire")
    assert bans.active() == [permanent]
    assert bans.match("192.0.2.2") == permanent


def test_expired_bans_are_not_saved(bans, state):
    bans.add(net("192.0.2.1"), "short", 0.1)
    wait_until(lambda: not bans.match("192.0.2.1"), what="the ban to expire")
    permanent, _ = bans.add(net("192.0.2.2"), "long", None)  # saving drops the lapsed one
    with open(os.path.join(state, FILE_NAME)) as fh:
        saved = json.load(fh)
    assert [record["address"] for record in saved["bans"]] == ["192.0.2.2/32"]
    assert reloaded(state).active() == [permanent]


def test_an_expired_ban_in_the_file_is_loaded_but_not_in_force(state):
    os.makedirs(state)
    with open(os.path.join(state, FILE_NAME), "w") as fh:
        json.dump({"version": 1, "bans": [
            {"address": "192.0.2.1/32", "reason": "old", "created": 10, "expires": 20},
            {"address": "192.0.2.2/32", "reason": "new", "created": 10, "expires": None},
        ]}, fh)
    banlist = BanList(state)
    assert banlist.load() == 2  # what the file holds (the count includes lapsed bans)
    assert banlist.match("192.0.2.1") is None
    assert [b.reason for b in banlist.active()] == ["new"]


# -- persistence ------------------------------------------------------------------------------


def test_bans_survive_a_restart(bans, state):
    v4, _ = bans.add(net("10.0.0.0/8"), "spam", None)
    v6, _ = bans.add(net("2001:db8::/32"), "flood", 3600)
    again = BanList(state)
    assert again.load() == 2
    assert again.active() == [v4, v6]  # same networks, reasons and times
    assert again.match("10.9.9.9") == v4 and again.match("2001:db8::5") == v6


def test_the_file_format(bans, state):
    ban, _ = bans.add(net("192.0.2.0/24"), "reason", None)
    path = os.path.join(state, FILE_NAME)
    with open(path) as fh:
        document = json.load(fh)
    assert document == {"version": FORMAT_VERSION, "bans": [
        {"address": "192.0.2.0/24", "reason": "reason", "created": ban.created, "expires": None}]}
    assert os.stat(state).st_mode & 0o777 == 0o700  # made for chatd alone
    assert sorted(os.listdir(state)) == [FILE_NAME]  # no temporary file left behind


@pytest.mark.parametrize("content", [
    b"{not json",
    b"",
    b"[]",
    b'{"version": 1}',
    b'{"version": 1, "bans": [{"address": "nonsense", "created": 1, "expires": null}]}',
    b'{"version": 1, "bans": [{"address": "10.0.0.1", "created": "yesterday", "expires": null}]}',
    b'{"version": 1, "bans": [{"address": "10.0.0.1", "created": 1, "expires": 1e300}]}',
    b'{"version": 1, "bans": [{"address": "10.0.0.1", "created": true, "expires": null}]}',
    b'{"version": 1, "bans": [{"address": "10.0.0.1", "expires": null}]}',
    b'{"version": 1, "bans": [17]}',
    b"\xff\xfe garbage",
])
def test_corrupt_file_is_an_error_and_left_untouched(state, content):
    os.makedirs(state)
    path = os.path.join(state, FILE_NAME)
    with open(path, "wb") as fh:
        fh.write(content)
    banlist = BanList(state)
    with pytest.raises(BanFileError) as info:
        banlist.load()
    message = str(info.value)
    assert path in message and "corrupt" in message and "\n" not in message
    with open(path, "rb") as fh:
        assert fh.read() == content


def test_unreadable_file_is_an_error(state):
    os.makedirs(os.path.join(state, FILE_NAME))  # a directory where the file should be
    with pytest.raises(BanFileError, match="cannot read bans file"):
        BanList(state).load()


def test_a_ban_that_cannot_be_saved_is_still_in_force(tmp_path):
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be\n")
    banlist = BanList(str(blocked))
    ban, error = banlist.add(net("192.0.2.1"), "spam", None)
    assert isinstance(error, OSError)
    assert banlist.match("192.0.2.1") == ban  # in force, just not persistent
    removed, error = banlist.remove(net("192.0.2.1"))
    assert removed == ban and isinstance(error, OSError)
    assert banlist.match("192.0.2.1") is None
    assert blocked.read_text() == "a file where the state directory should be\n"
