"""Room history on one node: ``state_dir/history.sqlite3`` (stdlib sqlite3, WAL), behind the
stores' interface (history.py).

One writer thread owns the write connection. It takes everything queued, writes it in one
transaction, and trims each room it touched to ``history_lines``: a busy room costs one commit
per batch, not per line. Failures never reach the chat (SPEC §10): a batch that cannot be
written (read-only or full disk, the file replaced) is dropped (the lines live on in the
in-memory tails until restart), ``history_write_failed`` is logged once per episode and
``history_write_recovered`` when a write works again. The file is reopened when its inode
changes (moved or replaced) so an operator can intervene without a restart.

A corrupt file at start is moved aside to ``history.sqlite3.corrupt-YYYYMMDDTHHMMSS`` and a
fresh one is started (``history_corrupt``): losing old history is better than refusing to chat
or silently overwriting evidence the operator may want to recover. Corrupt means what SQLite
calls so (SQLITE_CORRUPT, SQLITE_NOTADB) and nothing else: a healthy file that cannot be
written (mode 0444, a read-only directory or file system, someone else's -wal/-shm) is kept
where it is, read as it is (read-only, immutable if SQLite cannot share it), and counts as
``history_write_failed``; moving it aside would throw away history that was never damaged.

The file is opened by chatd with O_NOFOLLOW, created 0600, before SQLite sees it: SQLite
follows a symbolic link, so a dangling link made a chatd running as root create a 0644 file
wherever it pointed. A link at start (the file, its -wal or -shm) makes :meth:`check` raise
:class:`HistoryFileError` and chatd refuse to start (docs/protocol.md §10: the operator must
see it, and history silently written elsewhere is worse than none); one that appears while
chatd runs is a write failure like any other.
"""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import stat
import threading
import time
import urllib.parse

import structlog

from chatd.core.tail import Entry
from chatd.store import sqlfile
from chatd.store.history import HistoryFileError
from chatd.store.sqlfile import SIDE_SUFFIXES
from chatd.text import fold

log = structlog.get_logger("chatd.history")

FILENAME = "history.sqlite3"
#: Queued writes beyond this are dropped (the writer is stuck): memory stays bounded.
MAX_QUEUED = 200_000
_BATCH = 5000
#: After the first line of a batch, the writer waits this long for more: a busy room then costs
#: a transaction (and a trim) every tenth of a second, not one per line, and the writer takes
#: the GIL from the chat a few times a second instead of at every line. The lines are in the
#: in-memory tails meanwhile; only a crash in this window loses them from the file.
COALESCE_SECONDS = 0.1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,      -- folded name: the key
    ts REAL NOT NULL,        -- UTC epoch seconds
    kind TEXT NOT NULL,      -- 'say' or 'me'
    nick TEXT NOT NULL,
    text TEXT NOT NULL,
    shown TEXT NOT NULL      -- the room as spelled
);
CREATE INDEX IF NOT EXISTS lines_room ON lines (room, id);
"""
_STOP = object()


class SqliteStore:
    def __init__(self, state_dir: str, lines: int) -> None:
        self.path = os.path.join(state_dir, FILENAME)
        self.lines = lines
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._coalesce = threading.Event()  # set: flush or stop, the writer must not wait
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._conn = None  # writer thread only (and open() before it starts)
        self._inode = None
        self._failing = False  # writer thread only
        self.dropped = 0

    # -- any thread -----------------------------------------------------------------------

    def put(self, entry: Entry) -> None:
        if self._queue.qsize() < MAX_QUEUED:
            self._queue.put(("add", entry))
        else:
            self.dropped += 1

    def purge(self, room_key: str) -> None:
        self._queue.put(("purge", room_key))

    def load(self, room_key: str, count: int) -> list:
        """Once per room per process (history.py keeps the tail): a connection of its own,
        read-only, so that a missing file stays missing until there is a line to write."""
        try:
            mode = os.lstat(self.path).st_mode
            if stat.S_ISLNK(mode):  # not followed here either
                raise OSError(errno.ELOOP, "a symbolic link (not followed)", self.path)
            if not stat.S_ISREG(mode):
                return []
            rows = self._read(room_key, count)
        except FileNotFoundError:
            return []
        except (sqlite3.Error, OSError) as err:
            log.warning("history_read_failed", room=room_key, error=str(err))
            return []
        return [Entry(*row) for row in reversed(rows)]

    def _read(self, room_key: str, count: int) -> list:
        """Read-only. A file this process cannot write (mode 0444, a read-only file system)
        is read immutable: no locks, no -wal/-shm made with its read-only mode (such an -shm
        would keep the writer out once the operator makes the file writable again). The same
        when SQLite cannot share the file otherwise (no -shm in a read-only directory,
        someone else's -shm). Immutable sees the main file as it is: nothing here writes it."""
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
        if not os.access(self.path, os.W_OK):
            return _select(uri + "&immutable=1", room_key, count)
        try:
            return _select(uri, room_key, count)
        except sqlite3.OperationalError as err:
            if sqlfile.corrupt(err):
                raise
            return _select(uri + "&immutable=1", room_key, count)

    # -- lifetime -------------------------------------------------------------------------

    def check(self) -> None:
        """At start, before anything is bound (service.py): raise HistoryFileError if the file
        or its -wal/-shm is a symbolic link (see the module docstring)."""
        path = sqlfile.links(self.path)
        if path is not None:
            raise HistoryFileError(
                f"history file {path} is a symbolic link: chatd does not follow it "
                "(replace the link with the file itself, or remove it)")

    def start(self) -> None:
        """Check an existing file (moving a corrupt one aside), then start the writer. Never
        raises. No file is created before there is a line to keep."""
        try:
            if os.path.lexists(self.path):
                self._open(check=True)
        except sqlite3.Error as err:
            if sqlfile.corrupt(err):
                self._move_aside(err)
            else:  # healthy but not writable (read-only, locked): keep it, read it, say so
                self._fail(err)
        except OSError as err:
            self._fail(err)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is queued (bounded by ``timeout``), then close."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._coalesce.set()
            self._thread.join(timeout)

    def mark(self) -> threading.Event:
        """Set once everything queued before this call is written (or given up on). A queue
        put: no waiting, and no hurry for the writer (unlike :meth:`flush`)."""
        done = threading.Event()
        if not self._thread.is_alive():
            done.set()
        else:
            self._queue.put(("mark", done))
        return done

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until everything queued before this call is written (or
        given up on: a failing disk does not hold anything up). False: not in time."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("flush", done))
        self._coalesce.set()  # no waiting for more lines now
        return done.wait(timeout)

    # -- the writer thread ----------------------------------------------------------------

    def _open(self, check: bool = False) -> None:
        """Open (creating it 0600) without following a link (sqlfile.py), then set it up.
        Raises OSError or sqlite3.Error."""
        conn, opened = sqlfile.connect_private(self.path)
        try:
            if check:
                conn.execute("PRAGMA quick_check").fetchone()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._inode = opened

    def _move_aside(self, err) -> None:
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        try:
            os.replace(self.path, aside)
            for suffix in SIDE_SUFFIXES:
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            log.warning("history_corrupt", path=self.path, moved_to=aside, error=str(err))
            self._open()
        except (sqlite3.Error, OSError) as again:
            self._fail(again)

    def _fail(self, err) -> None:
        if not self._failing:
            self._failing = True
            log.warning("history_write_failed", path=self.path, error=str(err))
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            items = [item for item in batch if item is not _STOP]
            work = [item for item in items if item[0] in ("add", "purge")]
            if work:
                self._write(work)
            self._acknowledge(items)
            if _STOP in batch:
                if self._conn is not None:
                    self._conn.close()
                return

    def _acknowledge(self, items: list) -> None:
        """Wake whoever waits for a flush or a mark in ``items`` (written by now)."""
        for op, *args in items:
            if op == "flush":
                self._coalesce.clear()  # flushed: batches may gather again
            if op in ("flush", "mark"):
                args[0].set()

    def _take_batch(self) -> list:
        """What waits, up to _BATCH items; lines wait a moment for more to join them (a flush
        and a stop go at once)."""
        batch = [self._queue.get()]
        if batch[0] is not _STOP and batch[0][0] == "add":
            self._coalesce.wait(COALESCE_SECONDS)
        while len(batch) < _BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, work: list) -> None:
        try:
            if self._conn is not None and sqlfile.inode(self.path) != self._inode:
                self._conn.close()  # moved or replaced under us: write to what is there now
                self._conn = None
            if self._conn is None:
                self._open()
            conn = self._conn
            touched, rows = set(), []
            conn.execute("BEGIN")
            for op, value in work:  # runs of lines go in one executemany, purges in order
                if op == "add":
                    rows.append((_key(value.room), value.ts, value.kind, value.nick, value.text,
                                 value.room))
                    continue
                _insert(conn, rows, touched)
                conn.execute("DELETE FROM lines WHERE room = ?", (value,))
            _insert(conn, rows, touched)
            for key in touched:
                conn.execute("DELETE FROM lines WHERE room = ? AND id <= (SELECT id FROM lines "
                             "WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                             (key, key, self.lines))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            if self._conn is not None:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._fail(err)
            return
        if self._failing:
            self._failing = False
            log.info("history_write_recovered", path=self.path)


def _insert(conn, rows: list, touched: set) -> None:
    """Write ``rows`` (and empty the list), noting their rooms in ``touched``."""
    if rows:
        conn.executemany("INSERT INTO lines (room, ts, kind, nick, text, shown) "
                         "VALUES (?, ?, ?, ?, ?, ?)", rows)
        touched.update(row[0] for row in rows)
        rows.clear()


def _select(uri: str, room_key: str, count: int) -> list:
    """The newest ``count`` rows of a room, newest first, over a connection of their own."""
    reader = sqlite3.connect(uri, uri=True)
    try:
        return reader.execute("SELECT ts, shown, kind, nick, text FROM lines WHERE room = ? "
                              "ORDER BY id DESC LIMIT ?", (room_key, count)).fetchall()
    finally:
        reader.close()



def _key(room: str) -> str:
    return fold(room)

