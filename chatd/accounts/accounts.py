"""Accounts as the chat and the operators use them: register, log in, change a password,
and the operators' add, passwd, disable, enable, delete, list and show (SPEC §12).

This is policy over three parts: a store (store/accounts.py: SQLite on a single node), the
hasher (passwords.py) and the attempt windows (attempts.py). It never touches a connection:
the line protocol's commands (chatd/line/accounts.py) and the admin commands call it, on
their own threads, never under the hub lock, and do what its answers say. Errors the chat
user sees are the texts returned here, one line each.

Threads: any. The store and the windows have their own leaf locks; ``_counts`` (logins by
outcome, for /metrics) has ``_lock``. Nothing here logs a password, a hash or a PASS line:
log calls name the account and the address only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from chatd.accounts import passwords
from chatd.accounts.attempts import FailureLog, Window, address_key
from chatd.core.position import Position
from chatd.core.roomstate import RoomState
from chatd.store.accounts import Account, AccountStoreError
from chatd.store.bans import parse_ip
from chatd.text import fold, is_valid_name

log = structlog.get_logger("chatd.accounts")

LOGIN_FAILED = "login failed"
#: Accounts one server keeps at most; /register beyond it is refused (docs/protocol.md §3).
MAX_ACCOUNTS = 100_000
#: The outcomes /metrics counts logins by.
OUTCOMES = ("ok", "failed", "throttled", "disabled", "refused")


def is_guest_nick(nick: str) -> bool:
    """``guest-N``: what chatd hands out; never an account (SPEC §12)."""
    head, _, number = fold(nick).partition("guest-")
    return not head and number.isascii() and number.isdigit()


def is_local(ip: str) -> bool:
    """A loopback peer (an IPv4-mapped one too): what ``plaintext_passwords = local`` trusts."""
    try:
        return parse_ip(ip).is_loopback
    except ValueError:
        return False


class AccountError(Exception):
    """An operator's account command that cannot be done: ``code`` is ``not_found``,
    ``exists``, ``bad_password``, ``bad_name`` or ``unavailable``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Accounts:
    def __init__(self, store, config: Callable[[], Any], hasher: passwords.Passwords | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``config()``: the Config in force now (``mode``, ``plaintext_passwords``,
        the TLS port for the refusal's text)."""
        self.store = store
        self.config = config
        self.passwords = hasher or passwords.Passwords()
        self.clock = clock
        #: The TLS listener's port, once bound (service.py), for the plaintext refusal.
        self.tls_port: int | None = None
        self.attempts = Window()
        self.failures = FailureLog()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OUTCOMES, 0)  # guarded by _lock

    # -- what the chat asks -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.config().mode == "closed"

    def refuse_plaintext(self, ip: str, tls: bool) -> str | None:
        """Why a password may not be sent over this connection (SPEC §12
        ``plaintext_passwords``), or None."""
        rule = self.config().plaintext_passwords
        if tls or rule == "allow" or (rule == "local" and is_local(ip)):
            return None
        where = f"TLS port {self.tls_port}" if self.tls_port else "this server has no TLS port"
        return f"passwords need an encrypted connection ({where})"

    @property
    def unavailable(self) -> str:
        """What a user is told when the store cannot answer (its own words: in cluster mode
        that is the cluster being unavailable, docs/protocol.md §1)."""
        return self.store.UNAVAILABLE

    def registered(self, nick: str) -> bool | None:
        """Whether ``nick`` is an account's (a store read: never under the hub lock); None
        if the store cannot say now: nobody takes a nick that may be someone's."""
        try:
            return self.store.get(nick) is not None
        except AccountStoreError:  # (said by the store's own failures: a /nick says it)
            return None

    def register(self, nick: str, password: str, ip: str, logger=None) -> str | None:
        """``/register``: an account named ``nick``; an error text, or None. ``logger``: the
        session's (bound to its client id and peer, so that `chatctl watch` says who)."""
        if self.closed:
            return "this server's accounts are made by its operators"
        if is_guest_nick(nick):
            return "a guest nick cannot be registered; /nick NAME first"
        problem = passwords.problem(password)
        if problem:
            return problem
        now = self.clock()
        keys = (f"register {address_key(ip)}",)  # a window of its own: logins are apart
        wait = self.attempts.wait(keys, now)
        if wait:
            return _too_many(wait)
        self.attempts.count(keys, now)  # registering costs a hash too
        try:
            if self.store.count() >= MAX_ACCOUNTS:
                return "this server has no room for more accounts"
            made = self.store.create(Account(nick, self.passwords.hash(password), time.time(),
                                             last_login=time.time()))
        except AccountStoreError as exc:
            log.error("account_store_failed", error=str(exc))
            return self.unavailable
        if not made:
            return f"nick {nick} is registered already"
        (logger or log).info("account_registered", account=nick, peer_ip=ip, by="user")
        return None

    def login(self, name: str, password: str, ip: str,
              logger=None) -> tuple[Account | None, str | None]:
        """``/login`` and ``PASS``: (the account, None), or (None, the error text). Unknown
        account and wrong password get the same answer in the same time."""
        logger = logger or log
        account, error = self._check(name, password, ip, logger)
        if error:
            return None, error
        if account.disabled:
            self._count("disabled")
            logger.info("login_refused", account=account.name, peer_ip=ip, reason="disabled")
            return None, "your account is disabled"
        try:
            self.store.set_last_login(account.name, time.time())
        except AccountStoreError as exc:  # logging in does not depend on it
            log.warning("account_store_failed", error=str(exc))
        self._count("ok")
        logger.info("login_ok", account=account.name, peer_ip=ip)
        return account, None

    def _check(self, name: str, password: str, ip: str,
               logger) -> tuple[Account | None, str | None]:
        """The password of account ``name``, checked within the attempt windows."""
        now = self.clock()
        keys = (f"ip {address_key(ip)}", f"account {fold(name)}")
        wait = self.attempts.wait(keys, now)
        if wait:
            self._count("throttled")
            return None, _too_many(wait)
        self.attempts.count(keys, now)
        try:
            account = self.store.get(name) if is_valid_name(name) else None
        except AccountStoreError as exc:
            log.error("account_store_failed", error=str(exc))
            return None, self.unavailable
        if not self.passwords.verify(account.hash if account else None, password):
            self._failed(name, ip, now, logger)
            return None, LOGIN_FAILED
        return account, None

    def change_password(self, name: str, old: str, new: str, ip: str,
                        logger=None) -> str | None:
        """``/password OLD NEW`` of a logged-in client: an error text, or None."""
        problem = passwords.problem(new)
        if problem:
            return problem
        logger = logger or log
        _, error = self._check(name, old, ip, logger)
        if error:
            return error
        try:
            self.store.set_hash(name, self.passwords.hash(new))
        except AccountStoreError as exc:
            log.error("account_store_failed", error=str(exc))
            return self.unavailable
        logger.info("password_changed", account=name, peer_ip=ip, by="user")
        return None

    def rooms(self, name: str) -> list[tuple[str, Position | None]]:
        """Where the account was when it last left (what it missed is after): [] if the
        store cannot say (the login goes on; the user is told nothing was missed)."""
        try:
            return self.store.rooms(name)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))
            return []

    def here(self, name: str, rooms: list[str]) -> None:
        """The account is logged in on this node and in ``rooms`` now (a login, a /join):
        cluster mode keeps that, so that a login elsewhere after this node died knows
        where it was (cluster/standing.py)."""
        try:
            self.store.set_live(name, rooms)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    def remember(self, name: str, positions: list[tuple[str, Position]]) -> None:
        """The account leaves its rooms at ``positions`` (a departure or a logout)."""
        try:
            self.store.set_rooms(name, positions)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    # -- registered rooms (SPEC §13: their founders are accounts; core/stewardship.py) --------

    def registered_rooms(self) -> list:
        """(name, roomstate.RoomState) of every registered room (at start); a stored state
        that is not valid is skipped with a warning."""
        try:
            stored = self.store.registered_rooms()
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))
            return []
        rooms = []
        for name, record in stored:
            state = RoomState.from_record(record)
            if state is None or not state.registered:
                log.warning("registered_room_skipped", room=name)
            else:
                rooms.append((name, state))
        return rooms

    def keep_room(self, name: str, state) -> None:
        """A room's state changed: written if the room is registered (an unregistered
        room's lives with the room)."""
        if not state.registered:
            return
        try:
            self.store.set_registered_room(name, state.record())
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    def drop_room(self, name: str) -> None:
        try:
            self.store.drop_registered_room(name)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    def ignores(self, name: str) -> list[str]:
        """The nicks the account ignores (SPEC §13): [] if the store cannot say."""
        try:
            return self.store.ignores(name)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))
            return []

    def keep_ignores(self, name: str, nicks: list[str]) -> None:
        """The account ignores ``nicks`` from now on (its whole list)."""
        try:
            self.store.set_ignores(name, nicks)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    def keep_places(self, places: list) -> None:
        """[(account, positions)] of the accounts logged in now, written as they go (a
        single node's housekeeping), so that a crash loses none of their places."""
        try:
            self.store.set_rooms_many(places)
        except AccountStoreError as exc:
            log.warning("account_store_failed", error=str(exc))

    def refused(self) -> None:
        """A login refused before any check (plaintext over an open network)."""
        self._count("refused")

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- what the operators ask (admin commands) -----------------------------------------------

    def add(self, name: str, password: str) -> Account:
        _check_name(name)
        if is_guest_nick(name):
            raise AccountError("bad_name", f"a guest nick cannot be an account ({name})")
        self._check_new(password)
        now = time.time()
        account = Account(name, self.passwords.hash(password), now)
        if not self._store(self.store.create, account):
            raise AccountError("exists", f"account {name} exists already")
        log.info("account_registered", account=name, by="operator")
        return account

    def set_password(self, name: str, password: str) -> None:
        _check_name(name)
        self._check_new(password)
        self._found(name, self._store(self.store.set_hash, name, self.passwords.hash(password)))
        log.info("password_changed", account=name, by="operator")

    def set_disabled(self, name: str, disabled: bool) -> None:
        _check_name(name)
        self._found(name, self._store(self.store.set_disabled, name, disabled))
        log.info("account_disabled" if disabled else "account_enabled", account=name)

    def delete(self, name: str) -> None:
        _check_name(name)
        self._found(name, self._store(self.store.delete, name))
        log.info("account_deleted", account=name)

    def get(self, name: str) -> Account:
        _check_name(name)
        account = self._store(self.store.get, name)
        self._found(name, account is not None)
        return account

    def all(self) -> list[Account]:
        return self._store(self.store.all)

    def count(self) -> int:
        return self._store(self.store.count)

    # -- helpers ------------------------------------------------------------------------------

    def _failed(self, name: str, ip: str, now: float, logger) -> None:
        self._count("failed")
        count = self.failures.due(address_key(ip), now)
        if count:  # at most one line per address per 10 s (attempts.py)
            logger.warning("login_failed", account=name, peer_ip=ip, count=count)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    @staticmethod
    def _check_new(password: str) -> None:
        problem = passwords.problem(password)
        if problem:
            raise AccountError("bad_password", problem)

    @staticmethod
    def _found(name: str, found: bool) -> None:
        if not found:
            raise AccountError("not_found", f"no account {name}")

    @staticmethod
    def _store(call, *args):
        try:
            return call(*args)
        except AccountStoreError as exc:
            log.error("account_store_failed", error=str(exc))
            raise AccountError("unavailable", str(exc)) from None


def _check_name(name: str) -> None:
    """An operator's name that no account can have (the nick rule; a lone surrogate from
    JSON, which no store could even encode) is refused here, before any store sees it."""
    if not is_valid_name(name):
        raise AccountError("bad_name", f"invalid account name {name!r}")


def _too_many(wait: float) -> str:
    return f"too many login attempts, wait {max(1, math.ceil(wait))} s"
