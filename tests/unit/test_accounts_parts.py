"""The pure and local parts of accounts (chatd/accounts, store/accounts.py): attempt windows,
the throttled failure log, the password rule and hashing, and the SQLite file on its own."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from chatd.accounts import passwords
from chatd.accounts.accounts import is_guest_nick, is_local
from chatd.accounts.attempts import FailureLog, Window, address_key
from chatd.store.accounts import Account, AccountFileError, SqliteAccounts

# -- attempt windows -----------------------------------------------------------------------------


def test_five_attempts_a_minute_then_the_wait_until_the_oldest_ages_out():
    window = Window(limit=5, seconds=60)
    keys = ("ip 10.0.0.1", "account alice")
    for n in range(5):
        assert window.wait(keys, 100.0 + n) == 0
        window.count(keys, 100.0 + n)
    assert window.wait(keys, 110.0) == pytest.approx(50.0)
    assert window.wait(("ip 10.0.0.2", "account alice"), 110.0) == pytest.approx(50.0)
    assert window.wait(("ip 10.0.0.1", "account bob"), 110.0) == pytest.approx(50.0)
    assert window.wait(("ip 10.0.0.2", "account bob"), 110.0) == 0
    assert window.wait(keys, 160.0) == 0  # the first attempt is a minute old


def test_windows_keep_at_most_max_keys_least_recently_used_dropped():
    window = Window(limit=1, seconds=60, max_keys=3)
    for n in range(10):
        window.count((f"ip {n}",), 0.0)
    assert len(window) == 3
    assert window.wait(("ip 0",), 1.0) == 0  # forgotten
    assert window.wait(("ip 9",), 1.0) > 0


def test_ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("not an address") == "not an address"


def test_failure_log_one_line_per_address_per_interval_with_the_count():
    log = FailureLog(every=10)
    assert log.due("a", 0.0) == 1
    assert [log.due("a", t) for t in (1.0, 2.0, 3.0)] == [0, 0, 0]
    assert log.due("b", 3.0) == 1
    assert log.due("a", 10.5) == 4  # three unlogged and this one


# -- names and passwords -------------------------------------------------------------------------


@pytest.mark.parametrize("nick, guest", [("guest-1", True), ("GUEST-42", True), ("guest-", False),
                                         ("guest-x", False), ("guests-1", False),
                                         ("guest-١", False), ("alice", False)])
def test_guest_nicks(nick, guest):
    assert is_guest_nick(nick) is guest


@pytest.mark.parametrize("ip, local", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                       ("::ffff:127.0.0.1", True), ("192.0.2.2", False),
                                       ("fe80::1%eth0", False), ("bogus", False)])
def test_loopback_peers(ip, local):
    assert is_local(ip) is local


@pytest.mark.parametrize("password, ok", [("12345678", True), ("x" * 256, True), ("1234567", False),
                                          ("x" * 257, False), ("with space", False),
                                          ("tab\there1", False), ("é" * 4, True),
                                          ("bell\x07bell", False)])
def test_password_rule(password, ok):
    assert (passwords.problem(password) is None) is ok


def test_hash_verifies_only_its_own_password_and_never_the_decoy():
    hasher = passwords.Passwords(time_cost=1, memory_kib=1024)
    hashed = hasher.hash("right-password")
    assert hashed.startswith("$argon2id$") and "right-password" not in hashed
    assert hasher.verify(hashed, "right-password")
    assert not hasher.verify(hashed, "wrong-password")
    assert not hasher.verify(None, "chatd: no such account")  # the decoy's own text
    assert not hasher.verify("not a hash", "right-password")


# -- the file ----------------------------------------------------------------------------------


def test_a_missing_file_reads_empty_and_is_made_0600_at_the_first_account(tmp_path):
    store = SqliteAccounts(str(tmp_path / "state"))
    store.open()
    assert store.get("alice") is None and store.all() == [] and store.count() == 0
    assert not (tmp_path / "state").exists()
    assert store.create(Account("Alice", "$argon2id$x", 1.0))
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    assert store.get("ALICE") == Account("Alice", "$argon2id$x", 1.0)
    assert not store.create(Account("alice", "$argon2id$y", 2.0))  # the same name, folded
    assert store.set_disabled("alice", True) and store.get("alice").disabled
    assert store.delete("alice") and not store.delete("alice")
    store.close()


def test_two_threads_racing_one_name_exactly_one_wins(tmp_path):
    store = SqliteAccounts(str(tmp_path))
    store.open()
    results, start = [], threading.Barrier(8)

    def race(n):
        start.wait()
        results.append(store.create(Account("bob", f"$argon2id${n}", 1.0)))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_corrupt_file_or_a_link_refuses_the_start(tmp_path):
    (tmp_path / "accounts.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(AccountFileError, match="cannot be used"):
        SqliteAccounts(str(tmp_path)).open()
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(tmp_path / "elsewhere", other / "accounts.sqlite3")
    with pytest.raises(AccountFileError, match="symbolic link"):
        SqliteAccounts(str(other)).open()
    assert not (tmp_path / "elsewhere").exists()
