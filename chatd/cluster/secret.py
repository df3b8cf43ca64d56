"""The cluster secret (``cluster_secret_file``) and what a Redis URL may show of itself.

Both are read by preflight.py (``chatd`` and ``--check-config`` refuse a cluster config whose
Redis is open to anyone, or whose secret is missing or readable by others, with one line and
exit 2) and by the bus at start. Pure but for reading the file; no Redis here.
"""

from __future__ import annotations

import os
import secrets
import stat
from urllib.parse import unquote, urlsplit

#: A secret shorter than this is refused: 16 bytes written as hex at least.
MIN_SECRET_CHARS = 32
MAX_SECRET_BYTES = 4096


class SecretError(Exception):
    """One line saying what is wrong with the secret file and how to fix it."""


def read_secret(path: str) -> bytes:
    """The key in ``path``: a regular file, not readable or writable by group or others
    (0600: it is the cluster's password), of MIN_SECRET_CHARS printable characters or more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SecretError(f"no such file {path} (create one with chatd --gen-cluster-secret "
                          f"{path})") from None
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError(f"not a regular file: {path}")
        if st.st_mode & 0o077:
            raise SecretError(f"{path} is mode {stat.S_IMODE(st.st_mode):04o}: others may read "
                              f"the cluster secret (chmod 600 {path})")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    key = data.strip()
    if len(data) > MAX_SECRET_BYTES or len(key) < MIN_SECRET_CHARS or not key.isascii() \
            or not key.decode().isprintable():
        raise SecretError(f"{path} must hold one line of {MIN_SECRET_CHARS} to "
                          f"{MAX_SECRET_BYTES} printable ASCII characters (chatd "
                          "--gen-cluster-secret writes one)")
    return key


def write_secret(path: str) -> None:
    """A new secret (32 random bytes as hex) in a new file ``path``, mode 0600; never
    overwrites one (every node must have the same: copy it, do not make another)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
    finally:
        os.close(fd)


def redact(url: str | None) -> str | None:
    """``url`` with its password (``USER:PASSWORD@``, ``?password=``) shown as ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<invalid URL>"
    if password is not None:
        netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
        url = url.replace(parts.netloc, netloc, 1)
    head, mark, query = url.partition("?")
    if "password=" in query:
        query = "&".join("password=***" if p.startswith("password=") else p
                         for p in query.split("&"))
    return head + mark + query


def has_credentials(url: str) -> bool:
    """A password in the URL (``redis://:PASS@``, ``redis://USER:PASS@``, ``?password=``)."""
    parts = urlsplit(url)
    if parts.password:
        return True
    return any(p.startswith("password=") and len(p) > 9 for p in parts.query.split("&"))


def unix_socket_problem(url: str) -> str | None:
    """For ``unix://PATH`` without a password: why another local user could reach that
    socket (its directory writable or searchable by others), or None."""
    path = unquote(urlsplit(url).path)
    directory = os.path.dirname(path) or "."
    try:
        mode = os.stat(directory).st_mode
    except OSError as exc:
        return f"cannot check the socket's directory {directory}: {exc.strerror or exc}"
    if mode & stat.S_IWOTH:
        return f"the socket's directory {directory} is writable by others"
    if mode & stat.S_IXOTH:
        return f"the socket's directory {directory} is searchable by others"
    return None
