"""The admin socket's file and its callers' credentials: the two walls that keep other local users out.

The socket file is mode 0600 (0660 and group-owned with ``admin_group``) in a directory only its
owner can write, created under a umask that never shows it wider; a stale socket is replaced,
a live one (another chatd) refuses the start. Every connection's peer credentials
(SO_PEERCRED, and SO_PEERGROUPS for supplementary groups) are what the server judges it by,
so even a socket made world-accessible by mistake answers only those it should.
"""

from __future__ import annotations

import os
import socket
import stat
import struct

_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not in every Python
_UCRED = struct.Struct("3i")  # pid, uid, gid


class AdminSocketError(Exception):
    """The admin socket cannot be set up; one line for the operator."""


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel saw it connect."""
    return _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_groups(conn: socket.socket) -> set[int]:
    """The peer's supplementary groups, from the kernel (SO_PEERGROUPS: at most 256 fit in
    the 1024 bytes Python allows; a peer in more groups is judged by its primary group)."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 1024)
    except OSError:
        return set()
    return set(struct.unpack(f"{len(raw) // 4}I", raw))


def bind_admin_socket(path: str, gid: int | None) -> tuple[socket.socket, int]:
    """Create the socket (and its directory), replacing a stale one; returns (socket, inode)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o700)
            if gid is not None:  # group members must be able to reach the socket inside
                os.chown(directory, -1, gid)
                os.chmod(directory, 0o710)
        except OSError as exc:
            raise AdminSocketError(f"cannot create {directory}: {exc.strerror}") from None
    _check_directory(directory)
    _replace_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # never visible with wider permissions, not even briefly
    try:
        sock.bind(path)
        if gid is not None:
            _give_to_group(path, gid)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise AdminSocketError(f"cannot create admin socket {path}: {exc.strerror or exc}") from None
    except AdminSocketError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return sock, os.stat(path).st_ino


def _check_directory(directory: str) -> None:
    """Refuse a directory someone else controls: whoever can write it can replace our socket
    with theirs (e.g. a /tmp/chatd-UID made first by another user), and chatctl would then
    hand them every command. It must belong to us or root and be writable by nobody else,
    unless the sticky bit stops others from renaming our socket (as in /tmp itself)."""
    st = os.stat(directory)
    if st.st_uid not in (0, os.geteuid()):
        raise AdminSocketError(f"admin socket directory {directory} belongs to uid {st.st_uid}, "
                               "not to chatd's user or root; refusing to use it")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise AdminSocketError(f"admin socket directory {directory} is writable by other users "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it")


def _give_to_group(path: str, gid: int) -> None:
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        os.unlink(path)
        raise AdminSocketError(
            f"cannot give the admin socket to admin_group (gid {gid}): chatd's user must be a "
            "member and allowed to chgrp (under systemd: SupplementaryGroups= and "
            "SystemCallFilter=@chown, see systemd/README.md)") from None
    os.chmod(path, 0o660)


def _replace_stale(path: str) -> None:
    """Remove a socket file nobody answers on; refuse if a live chatd does."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminSocketError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: left by a chatd that died
        return
    except OSError as exc:
        raise AdminSocketError(f"cannot probe existing admin socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise AdminSocketError(f"another chatd is already running (its admin socket {path} answers)")
