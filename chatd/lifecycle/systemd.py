"""The two systemd protocols chatd speaks, without a library: sd_notify and socket activation.

Both are a few lines of stdlib. ``Notifier`` sends ``KEY=VALUE`` datagrams to
``$NOTIFY_SOCKET`` (READY, STATUS, RELOADING, STOPPING, WATCHDOG, and FDSTORE with descriptors
attached: fdstore.py) and is a no-op when systemd did not ask for them, so the service calls it
unconditionally. :func:`passed_fds` takes the descriptors systemd passed (``LISTEN_FDS``/
``LISTEN_PID``, starting at fd 3, named by ``LISTEN_FDNAMES``): socket activation's listening
sockets first, then what the fd store kept.

``notify`` runs in the main thread (start, reload, housekeeping, shutdown), ``notify_fds`` in
any thread: their one socket is made under ``_lock``; datagrams need no more.
"""

from __future__ import annotations

import array
import os
import socket
import threading
import time

SD_LISTEN_FDS_START = 3


class Notifier:
    def __init__(self, env=None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._sock: socket.socket | None = None  # made on first use, under _lock
        self._lock = threading.Lock()
        watchdog_pid = env.get("WATCHDOG_PID")
        usec = env.get("WATCHDOG_USEC", "")
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        #: Seconds between WATCHDOG=1 pings (half of systemd's timeout), or None.
        valid = usec.isascii() and usec.isdigit() and int(usec) > 0  # isdigit() alone takes "²"
        self.watchdog_interval = int(usec) / 2e6 if valid and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields) -> None:
        """Send ``READY="1"``, ``STATUS="…"`` etc.; errors are ignored (systemd may be gone)."""
        self.notify_fds([], **fields)

    def notify_fds(self, fds: list[int], **fields) -> bool:
        """Send ``fields`` with ``fds`` attached (SCM_RIGHTS: ``FDSTORE=1``); False if it could
        not be sent (systemd gone). Whether systemd kept the descriptors it does not say."""
        if not self._address:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock = self._sock
            # not socket.send_fds: it drops the address (CPython 3.11)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            sock.sendmsg([message], ancillary, 0, self._address)
        except OSError:
            return False
        return True

    def reloading(self) -> None:
        self.notify(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def unit_name(cgroup_file: str = "/proc/self/cgroup") -> str | None:
    """The service unit this process runs in (``chatd.service``), from its cgroup path: the
    last component that names a ``.service`` (cgroup v2 ``0::/system.slice/chatd.service``,
    v1 ``1:name=systemd:/system.slice/chatd.service``); None outside a service."""
    try:
        with open(cgroup_file, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def passed_fds(env=None) -> list[tuple[str, int]]:
    """(name, descriptor) of everything systemd passed to *this* process, in order: names from
    ``LISTEN_FDNAMES`` (``unknown`` where it names none: sd_listen_fds_with_names does the
    same). The LISTEN_* variables are removed so nothing we start inherits them; the
    descriptors are made close-on-exec."""
    env = os.environ if env is None else env
    count = env.get("LISTEN_FDS", "")
    pid = env.get("LISTEN_PID", "")
    names = env.get("LISTEN_FDNAMES", "")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not (count.isascii() and count.isdigit()) or pid != str(os.getpid()):
        return []
    names = names.split(":") if names else []
    passed = []
    for index, fd in enumerate(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))):
        try:
            os.set_inheritable(fd, False)
        except OSError:  # not open after all: LISTEN_FDS said more than we have
            continue
        passed.append((names[index] if index < len(names) and names[index] else "unknown", fd))
    return passed


def as_sockets(fds: list[int]) -> list[socket.socket]:
    """Socket activation's descriptors as (blocking) socket objects."""
    sockets = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        sockets.append(sock)
    return sockets
