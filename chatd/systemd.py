"""The two systemd protocols chatd speaks, without a library: sd_notify and socket activation.

Both are a few lines of stdlib. ``Notifier`` sends ``KEY=VALUE`` datagrams to
``$NOTIFY_SOCKET`` (READY, STATUS, RELOADING, STOPPING, WATCHDOG) and is a no-op when systemd
did not ask for them, so the service calls it unconditionally. :func:`listen_fds` takes the
listening sockets systemd passed (``LISTEN_FDS``/``LISTEN_PID``, starting at fd 3).

Runs in the main thread (start, reload, housekeeping, shutdown).
"""

from __future__ import annotations

import os
import socket
import time

SD_LISTEN_FDS_START = 3


class Notifier:
    def __init__(self, env=None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._sock: socket.socket | None = None
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
        if not self._address:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message, self._address)
        except OSError:
            pass

    def reloading(self) -> None:
        self.notify(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def listen_fds(env=None) -> list[socket.socket]:
    """The sockets systemd passed to *this* process, as socket objects; the LISTEN_* variables
    are removed so nothing we start inherits them."""
    env = os.environ if env is None else env
    count = env.get("LISTEN_FDS", "")
    pid = env.get("LISTEN_PID", "")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not (count.isascii() and count.isdigit()) or pid != str(os.getpid()):
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        sockets.append(sock)
    return sockets
