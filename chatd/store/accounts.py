"""Accounts on one node: ``state_dir/accounts.sqlite3`` (stdlib sqlite3, WAL, 0600).

One row an account: its name as registered, the folded name as the key, the password's hash
(chatd/accounts/passwords.py: never the password), when it was made, when it last logged in,
and whether an operator disabled it. An existing file is checked at start, before anything is
bound: one that is a symbolic link, cannot be opened or is corrupt makes chatd refuse to start
(``AccountFileError``), as a corrupt bans file does; starting without the accounts would let
anyone take every registered nick, and shut every user of a closed server out. A missing file
is made at the first account (a server nobody registers on writes nothing).

Threads: session threads (login, /register, /password) and admin threads call in. ``_lock``
guards the one connection (None until the file exists); it is a leaf, never held with the hub
lock or any other, and nothing here is ever called under the hub lock (docs/DEVELOPING.md).
Each call is one short statement on a small table, so the lock is held for well under a
millisecond; the password hashing, which takes tens of milliseconds, runs before the store is
asked (accounts.py). A write that fails (full disk, the file made read-only) raises
:class:`AccountStoreError`: the user is told the change did not happen, nothing is half done.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass

from chatd.core.ignoring import MAX_IGNORES
from chatd.core.position import Position
from chatd.store import sqlfile
from chatd.text import fold, is_valid_name

FILENAME = "accounts.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    key TEXT PRIMARY KEY,        -- folded name
    name TEXT NOT NULL,          -- as registered
    hash TEXT NOT NULL,          -- argon2id (or scrypt) PHC string
    created REAL NOT NULL,       -- UTC epoch seconds
    last_login REAL,             -- UTC epoch seconds; NULL: never
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS account_rooms (
    key TEXT NOT NULL,           -- the account's folded name
    room TEXT NOT NULL,          -- as spelled
    position NOT NULL,           -- where it stood there: {"NODE": time} as JSON
                                 -- (position.Position); a bare time in the first files
    seq INTEGER NOT NULL,        -- 0: the room it was in last (the one a line client rejoins)
    PRIMARY KEY (key, seq)
);
CREATE TABLE IF NOT EXISTS registered_rooms (
    key TEXT PRIMARY KEY,        -- the room's folded name
    name TEXT NOT NULL,          -- as spelled
    state TEXT NOT NULL          -- founder, topic, modes, lists: JSON (core/roomstate.py)
);
CREATE TABLE IF NOT EXISTS account_ignores (
    key TEXT NOT NULL,           -- the account's folded name
    nicks TEXT NOT NULL,         -- the nicks it ignores, as typed: a JSON list (SPEC §13)
    PRIMARY KEY (key)
);
"""
#: Rooms an account remembers at most (a line client is in one; the core allows 64).
MAX_ROOMS = 64
_COLUMNS = "name, hash, created, last_login, disabled"


class AccountFileError(Exception):
    """The accounts file cannot be used at start; the message is one line for the operator."""


class AccountStoreError(Exception):
    """A read or write of the accounts failed while serving; one line, no secret in it."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    hash: str
    created: float
    last_login: float | None = None
    disabled: bool = False

    @property
    def key(self) -> str:
        return fold(self.name)


class SqliteAccounts:
    """The single node's accounts (see the module docstring)."""

    #: What a user is told when a read or write fails (accounts.py).
    UNAVAILABLE = "accounts are unavailable right now, try again later"

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, FILENAME)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # guarded by _lock

    def open(self) -> None:
        """At start (service.bind): check and open an existing file. Raises AccountFileError
        with what the operator must fix. A missing file is made at the first account, as
        history's is at its first line: a server nobody registers on writes nothing."""
        link = sqlfile.links(self.path)
        if link is not None:
            raise AccountFileError(f"accounts file {link} is a symbolic link: chatd does not "
                                   "follow it (replace the link with the file itself)")
        if not os.path.lexists(self.path):
            return
        try:
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise AccountFileError(f"accounts file {self.path} cannot be used ({_why(exc)}); "
                                   "fix or restore it, chatd leaves it untouched") from None
        with self._lock:
            self._conn = conn

    def _connect(self) -> sqlite3.Connection:
        """The file opened (made 0600 if missing), checked, with its table."""
        conn, _ = sqlfile.connect_private(self.path)
        try:
            if conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise sqlite3.DatabaseError("quick_check failed")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reads ------------------------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        rows = self._run(f"SELECT {_COLUMNS} FROM accounts WHERE key = ?", (fold(name),))
        return _account(rows[0]) if rows else None

    def all(self) -> list[Account]:
        rows = self._run(f"SELECT {_COLUMNS} FROM accounts ORDER BY key", ())
        return [_account(row) for row in rows]

    def count(self) -> int:
        rows = self._run("SELECT COUNT(*) FROM accounts", ())
        return rows[0][0] if rows else 0

    # -- writes -----------------------------------------------------------------------------

    def create(self, account: Account) -> bool:
        """Add ``account``; False if the name is taken (exactly one of two racing wins)."""
        try:
            self._run("INSERT INTO accounts (key, name, hash, created, last_login, disabled) "
                      "VALUES (?, ?, ?, ?, ?, ?)",
                      (account.key, account.name, account.hash, account.created,
                       account.last_login, int(account.disabled)), write=True)
        except sqlite3.IntegrityError:
            return False
        return True

    def set_hash(self, name: str, hashed: str) -> bool:
        return self._change("UPDATE accounts SET hash = ? WHERE key = ?", (hashed, fold(name)))

    def set_disabled(self, name: str, disabled: bool) -> bool:
        return self._change("UPDATE accounts SET disabled = ? WHERE key = ?",
                            (int(disabled), fold(name)))

    def set_last_login(self, name: str, when: float) -> bool:
        return self._change("UPDATE accounts SET last_login = ? WHERE key = ?", (when, fold(name)))

    def delete(self, name: str) -> bool:
        with self._writing() as conn:
            conn.execute("DELETE FROM account_rooms WHERE key = ?", (fold(name),))
            conn.execute("DELETE FROM account_ignores WHERE key = ?", (fold(name),))
            return conn.execute("DELETE FROM accounts WHERE key = ?", (fold(name),)).rowcount > 0

    def rooms(self, name: str) -> list[tuple[str, Position]]:
        """(room, position) the account was in when it last left, the last room first."""
        rows = self._run("SELECT room, position FROM account_rooms WHERE key = ? ORDER BY seq",
                         (fold(name),))
        found = []
        for room, at in rows:  # the file is input: bad rows skipped
            try:
                if not (isinstance(room, str) and is_valid_name(room)):
                    raise ValueError
                found.append((room, Position.from_record(json.loads(at) if isinstance(at, str)
                                                        else at)))
            except (ValueError, TypeError, RecursionError):
                continue
        return found

    def set_live(self, name: str, rooms: list[str]) -> None:
        """Cluster mode keeps where a logged-in account is, for a node that dies; a single
        node that dies takes its place with it (docs/protocol.md §12.3): nothing to write."""

    def set_rooms(self, name: str, positions: list[tuple[str, Position]]) -> None:
        """Replace what the account remembers with ``positions`` (at most MAX_ROOMS). A
        position is kept as its JSON record (a time per node: position.Position)."""
        self.set_rooms_many([(name, positions)])

    def set_rooms_many(self, places: list) -> None:
        """:meth:`set_rooms` of several accounts ``[(name, positions)]`` in one transaction
        (the housekeeping's periodic write). An account deleted meanwhile gets no rows."""
        with self._writing() as conn:
            for name, positions in places:
                key = fold(name)
                conn.execute("DELETE FROM account_rooms WHERE key = ?", (key,))
                conn.executemany(
                    "INSERT INTO account_rooms (key, room, position, seq) SELECT ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM accounts WHERE key = ?)",
                    [(key, room, json.dumps(at.record()), seq, key)
                     for seq, (room, at) in enumerate(positions[:MAX_ROOMS])])

    def registered_rooms(self) -> list[tuple[str, dict]]:
        """(name, stored state) of every registered room; rows that are not valid skipped
        (the caller checks the state itself: roomstate.RoomState.from_record)."""
        found = []
        for name, state in self._run("SELECT name, state FROM registered_rooms", ()):
            try:
                if isinstance(name, str) and is_valid_name(name) and isinstance(state, str):
                    found.append((name, json.loads(state)))
            except (ValueError, RecursionError):
                continue
        return found

    def set_registered_room(self, name: str, state: dict) -> None:
        with self._writing() as conn:
            conn.execute("INSERT OR REPLACE INTO registered_rooms (key, name, state) "
                         "VALUES (?, ?, ?)", (fold(name), name, json.dumps(state)))

    def drop_registered_room(self, name: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM registered_rooms WHERE key = ?", (fold(name),))

    def ignores(self, name: str) -> list[str]:
        """The nicks the account ignores (at most MAX_IGNORES; bad ones skipped)."""
        rows = self._run("SELECT nicks FROM account_ignores WHERE key = ?", (fold(name),))
        return ignore_list(rows[0][0]) if rows else []

    def set_ignores(self, name: str, nicks: list[str]) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM account_ignores WHERE key = ?", (fold(name),))
            conn.execute("INSERT INTO account_ignores (key, nicks) SELECT ?, ? "
                         "WHERE EXISTS (SELECT 1 FROM accounts WHERE key = ?)",
                         (fold(name), json.dumps(nicks[:MAX_IGNORES]), fold(name)))

    # -- the one way in ---------------------------------------------------------------------

    def _change(self, sql: str, params: tuple) -> bool:
        """One write; whether it found its row."""
        with self._writing() as conn:
            return conn.execute(sql, params).rowcount > 0

    @contextlib.contextmanager
    def _writing(self):
        """The connection for one transaction (made if the file is missing), under the lock;
        a failure is an AccountStoreError and nothing of the transaction stays."""
        with self._lock:
            conn = self._connection(write=True)
            try:
                conn.execute("BEGIN")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise AccountStoreError(f"accounts file: {_why(exc)}") from None
            except BaseException:
                _rollback(conn)
                raise

    def _run(self, sql: str, params: tuple, write: bool = False) -> list:
        """One statement's rows ([] from a file not made yet). IntegrityError passes through
        (create() wants it)."""
        with self._lock:
            conn = self._connection(write)
            if conn is None:
                return []
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise AccountStoreError(f"accounts file: {_why(exc)}") from None

    def _connection(self, write: bool) -> sqlite3.Connection | None:
        """The open file; a write makes it first if it is missing (None: no file to read)."""
        if self._conn is None and write:
            try:
                self._conn = self._connect()
            except (OSError, sqlite3.Error) as exc:
                raise AccountStoreError(f"accounts file {self.path}: {_why(exc)}") from None
        return self._conn


def ignore_list(value) -> list[str]:
    """A stored ignore list (JSON text, read back from a file or Redis: input) as valid
    nicks, at most MAX_IGNORES; anything else counts as none."""
    try:
        nicks = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return []
    if not isinstance(nicks, list):
        return []
    return [n for n in nicks if isinstance(n, str) and is_valid_name(n)][:MAX_IGNORES]


def _account(row) -> Account:
    """A row as an Account. The file is input too: a row whose fields have the wrong types
    (an edit by hand, another program) is an error, not a crash."""
    name, hashed, created, last_login, disabled = row
    if not (isinstance(name, str) and isinstance(hashed, str)
            and isinstance(created, (int, float))
            and (last_login is None or isinstance(last_login, (int, float)))):
        raise AccountStoreError("accounts file: a row has fields of the wrong type")
    return Account(name, hashed, float(created),
                   None if last_login is None else float(last_login), bool(disabled))


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # nothing was begun, or the file is gone: nothing to undo


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
