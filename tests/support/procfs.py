"""What a daemon holds, read from ``/proc/PID``: threads, descriptors, RSS; and a wait until
they are back to a baseline, naming the leak (``client-17``, ``socket:[...]``) if they are not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from support.waiting import wait_until


@dataclass(frozen=True)
class Figures:
    threads: int
    fds: int
    rss_kb: int

    def __str__(self) -> str:
        return f"{self.threads} threads, {self.fds} fds, RSS {self.rss_kb / 1024:.1f} MiB"


def _fds(pid: int) -> list[str]:
    """Open descriptors, but not the room history's (the store opens its three files at the
    first history line, after any baseline; a leak check is about sockets and log files)."""
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "history.sqlite3" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                continue
        except OSError:
            pass
        fds.append(fd)
    return fds


def proc_figures(pid: int) -> Figures:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Figures(threads=int(fields["Threads"]),
                   fds=len(_fds(pid)),
                   rss_kb=int(fields["VmRSS"].split()[0]))


def thread_names(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except OSError:
            pass  # the thread ended while we looked
    return sorted(names)


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return sorted(targets, key=lambda t: int(t.split()[0]))


def settle(pid: int, baseline: Figures, timeout: float = 15.0, what: str = "") -> Figures:
    """Wait until the daemon has exactly ``baseline``'s threads and descriptors again.

    Every connection costs one session thread and one socket, and both must be gone once the
    client is: "exact" is the right tolerance. On timeout the message lists the threads and
    descriptors, which names the leak (``client-17``, ``socket:[…]``).
    """
    last: dict = {}

    def back():
        now = last["now"] = proc_figures(pid)
        return now if now.threads == baseline.threads and now.fds == baseline.fds else None

    return wait_until(back, timeout, what=lambda: (
        f"{what or 'daemon'} to return to baseline {baseline}, now {last['now']}\n"
        f"threads: {thread_names(pid)}\nfds: {fd_targets(pid)}"))
