"""Opening a SQLite file of chatd's own without following links, created 0600.

SQLite follows a symbolic link, so a dangling link made a chatd running as root create a 0644
file wherever it pointed. So chatd opens the file itself first (O_NOFOLLOW, created with
``files.STATE_FILE_MODE``, which SQLite gives its -wal and -shm too), hands SQLite the path,
and checks that SQLite got the same file. Used by the history store (sqlite.py) and the
accounts store (accounts.py); no threads or state of its own.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from chatd import files

#: The files SQLite keeps next to the main one in WAL mode (made with the main file's mode).
SIDE_SUFFIXES = ("-wal", "-shm")
#: The primary result codes that mean the file itself is damaged (sqlite3.h).
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def links(path: str) -> str | None:
    """The first of the file and its -wal/-shm that is a symbolic link, or None."""
    for candidate in (path, *(path + suffix for suffix in SIDE_SUFFIXES)):
        if os.path.islink(candidate):
            return candidate
    return None


def connect_private(path: str) -> tuple[sqlite3.Connection, tuple]:
    """A connection (autocommit, usable from any thread that holds its owner's lock) to
    ``path``, created 0600 in a directory made 0700, and the file's identity (device,
    inode) to notice a replacement later. Raises OSError (ELOOP for a link) or sqlite3.Error."""
    files.makedirs(os.path.dirname(path), files.STATE_DIR_MODE)
    for suffix in SIDE_SUFFIXES:  # SQLite would follow these too
        if os.path.islink(path + suffix):
            raise OSError(errno.ELOOP, "a symbolic link (not followed)", path + suffix)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     files.STATE_FILE_MODE)  # -wal/-shm are created with its mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link (not followed)", path) from None
        raise
    try:
        opened = identity(os.fstat(fd))
    finally:
        os.close(fd)  # before SQLite locks the file: a close drops the process's locks
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:  # SQLite has opened the file: is it still the one we made sure of?
        if inode(path) != opened:  # swapped for a link meanwhile: write nothing
            raise OSError(errno.ESTALE, "replaced while it was being opened", path)
    except BaseException:
        conn.close()
        raise
    return conn, opened


def corrupt(err: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged (not merely unwritable, locked or missing)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT_CODES


def identity(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino)


def inode(path: str):
    """The file at ``path`` itself (a link is not followed: it never matches the file)."""
    try:
        return identity(os.lstat(path))
    except OSError:
        return None
