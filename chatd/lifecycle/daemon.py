"""``--daemon``: detach with python-daemon, a locked pidfile, and a readiness pipe.

The order matters (see the notes on python-daemon in the project's shared notes):

1. take the pidfile lock (flock) in the foreground, so "already running" reaches the terminal;
2. bind every socket in the foreground (the service does that), so "address in use" does too;
3. fork: the launcher waits on a pipe and exits 0 once the daemon writes ``READY``, or 1 with
   the daemon's error line, so ``chatd --daemon && next-step`` is safe and Type=forking works;
4. in the child, python-daemon detaches (double fork, setsid, umask, chdir /, stdio to
   /dev/null), closing every file descriptor except those we list in ``files_preserve``;
5. only then start threads (fork copies no threads), write the pid, report readiness.

A stale pidfile (its holder was killed with -9) is simply unlocked: the kernel drops an flock
when the holder dies, so locking it again is how we tell it is stale, race-free, where a
``kill(pid, 0)`` check would be fooled by pid reuse or by a zombie.
"""

from __future__ import annotations

import fcntl
import os
import sys

import daemon


class PidFileLocked(Exception):
    """Another live chatd holds the pidfile."""


class PidFile:
    """An flock-ed pidfile. ``acquire()`` before detaching; python-daemon calls ``__enter__``
    after its forks (we write the final pid there) and ``__exit__`` at exit (we remove it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    @classmethod
    def adopt(cls, path: str, fd: int) -> PidFile:
        """The pidfile of the chatd we took over from (upgrade.py): its descriptor carries the
        flock, so the file stays locked throughout the handover."""
        pidfile = cls(path)
        os.set_inheritable(fd, False)
        pidfile.fd = fd
        return pidfile

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise PidFileLocked(f"chatd is already running (pid {holder}, pidfile {self.path})") from None
        self.fd = fd

    def __enter__(self) -> PidFile:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # still locked: no other chatd can have taken it over
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


class Readiness:
    """The pipe between the launcher (waits, then exits) and the daemon (reports once)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def wait_in_launcher(self) -> int:
        """Launcher side: block until the daemon reports; return the exit status for it."""
        os.close(self.write_fd)
        chunks = []
        while chunk := os.read(self.read_fd, 4096):
            chunks.append(chunk)
        os.close(self.read_fd)
        report = b"".join(chunks).decode(errors="replace").strip()
        if report.startswith("READY"):
            return 0
        # the launcher's terminal is the only place this can go: the daemon's stderr is /dev/null
        sys.stderr.write(f"chatd: error: {report or 'the daemon exited before it was ready'}\n")
        sys.stderr.flush()
        return 1

    def report(self, line: str) -> None:
        """Daemon side: tell the launcher (``READY …`` or an error line), once."""
        if self.write_fd is None:
            return
        try:
            os.write(self.write_fd, line.encode() + b"\n")
        except OSError:
            pass  # the launcher was killed: nobody to tell
        os.close(self.write_fd)
        self.write_fd = None


def detach(preserve: list[int], pidfile: PidFile | None, readiness: Readiness) -> None:
    """Become the daemon (in the forked child). Returns in the daemon process."""
    os.close(readiness.read_fd)
    context = daemon.DaemonContext(
        detach_process=True,  # never guess: a socket as stdin would make it stay attached
        umask=0o027,
        working_directory="/",
        files_preserve=[*preserve, readiness.write_fd] + ([pidfile.fd] if pidfile else []),
        pidfile=pidfile,
        signal_map={},  # the service installs its own handlers (they only queue events)
        prevent_core=False,
    )
    context.open()


def fork_launcher(readiness: Readiness) -> bool:
    """Fork; in the launcher, wait and exit with the daemon's readiness. True in the child."""
    pid = os.fork()
    if pid == 0:
        return True
    status = readiness.wait_in_launcher()
    try:
        os.waitpid(pid, 0)  # the intermediate child exits as soon as it has detached
    except ChildProcessError:
        pass
    os._exit(status)
