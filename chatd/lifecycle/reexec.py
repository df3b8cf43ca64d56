"""An upgrade in place: the installed ``chatd`` replaces this process's image (execve), same pid.

Why in place rather than a new process (upgrade.py before issue 23 §4): a chatd that hands
over to a child it started and then exits leaves the terminal it ran on (the shell gets its
prompt back while the child writes into it, Ctrl-C no longer reaches it), changes the pid a
pidfile, a supervisor or ``kill $(cat …)`` knows, and was named ``python`` (the child ran
``python /path/bin/chatd``). exec keeps the pid, the parent, the session, the process group
and the controlling terminal, and takes its name from the executable's file name: the
installed ``chatd`` script gives ``chatd`` (``pgrep -x``, ``ps -C``, ``pidof -x``).

The old image (:func:`exec_in_place`, on the main thread):

1. **dry start**: runs the new executable as a child with the same arguments and
   ``CHATD_UPGRADE_DRY_START=1``: it loads and checks the config as a start would (file,
   preflight, log file, bans file, history file), imports what a serving chatd imports,
   prints one JSON line (its version, the state versions it reads, the listeners its config
   wants) and exits 0. Listeners the new config turns on (TLS, metrics) are bound here, by
   this process, so that an address in use fails now. Nothing has been disturbed yet: on any
   failure chatctl gets the reason and this process serves on (SPEC §9).
2. freezes as every upgrade does (Service.quiesce, through frozen.UpgradeContext) and writes
   the same versioned state to a memfd, plus where each descriptor already is (they keep
   their numbers across exec) and the admin connection that asked, which the new image answers;
3. makes those descriptors inheritable, unblocks every signal (a blocked mask survives execve:
   Ctrl-C must reach the new image), changes to the directory chatd was started from
   (relative paths in the arguments; a daemon sits in /), and execs. If execve fails (the
   executable went away since the dry start) nothing is lost: everything is made
   close-on-exec again and thawed, and chatctl gets the reason.

The new image (:class:`ExecTakeover`, in place of upgrade.Takeover) reads the state and
rebuilds clients, rooms and sessions through the same path (service.py). The ready/commit
handshake collapses: there is nobody to roll back to. That is the trade-off of exec in place:
a crash of the new image while it takes over cannot be undone (the clients go with it), which
is why the dry start proves first that the new code imports and accepts the config; what is
left is a bug in the takeover itself. Threads: execve discards every other thread; none needs
joining, since the freeze has parked the sessions, stopped the flusher between two writes and
written the history out. The cost: the new interpreter starts and imports while clients wait
(0.15-0.2 s here, docs/protocol.md §9), where a new process could do that before the freeze.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import NoReturn

import structlog

from chatd import __version__
from chatd.admin.protocol import error_line
from chatd.lifecycle import state as schema
from chatd.lifecycle.frozen import UpgradeContext, UpgradeFailed, frozen_state
from chatd.lifecycle.handover import HandoverError, InheritedState
from chatd.lifecycle.state import (
    STATE_VERSION,
    Asker,
    ExecRecord,
)
from chatd.net.listener import bind

log = structlog.get_logger("chatd.reexec")

#: Environment: run this instead of the chatd this process was started as (tests, packaging).
ENV_EXECUTABLE = "CHATD_UPGRADE_EXEC"
#: Environment: the new image's dry start (cli.py), and the memfd holding the state.
ENV_DRY_START = "CHATD_UPGRADE_DRY_START"
ENV_STATE = "CHATD_UPGRADE_STATE"
#: The memfd's first bytes: what follows is the state in marshal format 4. Not JSON, as the
#: spawn handover's state is: with 5,000 clients JSON took 36 ms to write and 25 ms to read,
#: marshal 2.5 and 4, and clients wait through both (bench/README.md, upgrade). marshal is
#: not meant for data an attacker wrote; a memfd is reachable only through /proc/PID/fd, by
#: whoever may already ptrace chatd, so what is read is what this chatd wrote.
STATE_MAGIC = b"chatd-upgrade-state marshal 4\n"


def executable(start_directory: str) -> list[str]:
    """The command that runs the ``chatd`` installed now: ``CHATD_UPGRADE_EXEC`` if set
    (tests, packaging), else the script this process was started as if it is one named
    ``chatd``, else ``chatd`` on PATH, else this Python with ``-m chatd`` (named ``python``:
    the last resort of a chatd started as ``python -m chatd`` with none installed)."""
    override = os.environ.get(ENV_EXECUTABLE)
    if override:
        return [override]
    started_as = os.path.normpath(os.path.join(start_directory, sys.argv[0]))
    if os.path.basename(started_as) == "chatd" and os.access(started_as, os.X_OK):
        return [started_as]
    found = shutil.which("chatd")
    return [found] if found else [sys.executable, "-m", "chatd"]


def dry_start(command: list[str], start_directory: str, timeout: float) -> dict:
    """Step 1: run the new chatd's dry start; -> its report. Raises UpgradeFailed."""
    argv = [*command, *sys.argv[1:]]
    env = dict(os.environ, **{ENV_DRY_START: "1"})
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=start_directory, check=False)
    except subprocess.TimeoutExpired:
        raise UpgradeFailed(f"the new chatd ({command[-1]}) gave no answer within {timeout:g} s "
                            "(dry start)") from None
    except OSError as exc:
        raise UpgradeFailed(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        errors = proc.stderr.strip().splitlines() or lines
        raise UpgradeFailed(errors[-1] if errors else
                            f"the new chatd's dry start exited with status {proc.returncode}")
    try:
        report = json.loads(lines[-1])
        assert report["dry_start"] == "ok"
    except (IndexError, ValueError, KeyError, TypeError, AssertionError):
        raise UpgradeFailed(f"{command[-1]} did not confirm its dry start: it cannot take over "
                            "in place (a chatd from before issue 23?)") from None
    if STATE_VERSION not in report.get("state_versions", ()):
        raise UpgradeFailed(f"the new chatd ({report.get('version')}) cannot read state "
                            f"version {STATE_VERSION}")
    if report.get("cluster"):
        raise UpgradeFailed("the config file now turns cluster mode on: restart chatd for that")
    return report


def _listen_anew(sources: schema.Sources, report: dict) -> dict[str, socket.socket]:
    """The listeners the new config turns on (TLS, metrics), bound now, by the running chatd:
    an address in use fails the upgrade here, with nothing disturbed, rather than the new
    image after exec. -> {state key: socket}."""
    bound: dict[str, socket.socket] = {}
    for key, held, what in (("tls_listener", sources.tls_listener, " (TLS)"),
                            ("metrics", sources.metrics, " (metrics)"),
                            ("irc_listener", sources.irc_listener, " (IRC)"),
                            ("irc_tls_listener", sources.irc_tls_listener, " (IRC TLS)")):
        address = report.get(key)
        if address is None or held is not None:
            continue
        try:
            bound[key] = bind(*address, backlog=64 if key == "metrics" else 1024)
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            raise UpgradeFailed(f"cannot listen on {address[0]}:{address[1]}{what}: "
                                f"{exc.strerror or exc}") from None
    return bound


def exec_in_place(ctx: UpgradeContext, timeout: float, asker=None) -> NoReturn:
    """The whole upgrade in place, old side (module docstring); returns only by raising
    UpgradeFailed, with this process serving on. ``asker``: (admin connection, request id)
    of the chatctl that asked, answered by the new image."""
    directory = ctx.start_directory
    command = executable(directory)
    new_listeners = _listen_anew(ctx.sources, dry_start(command, directory, timeout))
    frozen = time.monotonic()  # clients wait from here until the new image serves
    try:
        parked, backlogs = ctx.quiesce(timeout)  # resumed again if it fails
        try:
            state, descriptors = frozen_state(ctx.sources, parked, backlogs)
            fds = descriptors.fds
            for key, sock in new_listeners.items():
                fds.append(sock.fileno())
                setattr(state, key, len(fds) - 1)
            if asker is not None:
                fds.append(asker[0].fileno())
            state.exec = ExecRecord(fds, frozen,
                                    None if asker is None else Asker(len(fds) - 1, asker[1]))
            log.info("upgrade_exec", executable=command[0], clients=len(state.clients))
            _exec([*command, *sys.argv[1:]], directory, schema.write(state), fds)
        except BaseException:
            ctx.resume()
            raise
    finally:  # reached only on a failure: a successful exec does not return
        for sock in new_listeners.values():
            sock.close()


def _exec(argv: list[str], directory: str, state: dict, fds: list[int]) -> NoReturn:
    """Step 3: execve with the state in a memfd; raises UpgradeFailed with nothing changed."""
    memfd = os.memfd_create("chatd-upgrade-state", 0)  # no MFD_CLOEXEC: the new image reads it
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # to come back to
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    step = f"cannot write the state for {argv[0]}"
    try:
        try:
            view = memoryview(STATE_MAGIC + marshal.dumps(state, 4))
        except ValueError as exc:  # a value marshal cannot write: a bug, and nothing changed
            raise OSError(f"cannot encode the state: {exc}") from None
        while view:
            view = view[os.write(memfd, view):]
        env = dict(os.environ, **{ENV_STATE: str(memfd)})
        for fd in fds:
            os.set_inheritable(fd, True)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        step = f"cannot change to {directory}, where chatd was started"
        os.chdir(directory)
        step = f"cannot run {argv[0]}"
        signal.pthread_sigmask(signal.SIG_SETMASK, ())  # a blocked mask survives execve
        os.execve(argv[0], argv, env)
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in fds:
            os.set_inheritable(fd, False)
        os.close(memfd)
        os.fchdir(here)
        os.close(here)
        raise UpgradeFailed(f"{step}: {exc.strerror or exc}") from None


class ExecTakeover(InheritedState):
    """The new image's side (module docstring), with upgrade.Takeover's interface."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._asker: tuple[socket.socket, object] | None = None

    @classmethod
    def from_environment(cls) -> ExecTakeover | None:
        value = os.environ.pop(ENV_STATE, None)
        return cls(int(value)) if value and value.isdigit() else None

    def receive(self) -> dict:
        """The state the old image left; its descriptors kept their numbers. Raises
        HandoverError."""
        try:
            with open(self._fd, "rb", closefd=True) as file:
                file.seek(0)
                data = file.read()
            if not data.startswith(STATE_MAGIC):
                raise ValueError("not an upgrade state")
            state = marshal.loads(data[len(STATE_MAGIC):])
            if state.__class__ is not dict:
                raise ValueError("not an upgrade state")
        except (OSError, ValueError, EOFError, TypeError) as exc:
            raise HandoverError(f"the upgrade state is unreadable: {exc}") from None
        if not schema.readable(state):
            raise HandoverError(f"state version {state.get('version')} is not one this chatd "
                                "reads")
        exec_ = schema.read_exec(state)
        self.fds = exec_.fds
        for fd in self.fds:  # close-on-exec again, as every descriptor of ours is
            os.set_inheritable(fd, False)
        asker = exec_.asker
        if asker is not None:
            self._asker = (self.sock(asker.fd), asker.id)
        self.state = state
        return state

    def serving(self, admin=None) -> None:
        """Every thread runs: answer the chatctl that asked for the upgrade, as the old
        image would have; its connection then goes on like any other."""
        if self._asker is None:
            return
        conn, request_id = self._asker
        self._asker = None
        origin = schema.origin(self.state)
        result = {"old_pid": origin["old_pid"], "new_pid": os.getpid(),
                  "old_version": origin["old_version"], "new_version": __version__,
                  "clients": origin["clients"], "via": "exec",
                  "seconds": round(time.monotonic() - schema.read_exec(self.state).frozen, 3)}
        admin.adopt(conn, "upgrade", request_id, result)

    def fail(self, reason: str) -> None:
        """The takeover failed after exec (cli.py): tell the chatctl that asked; this process
        exits next and its clients with it (module docstring)."""
        if self.state is None:  # failed before reading it (the config, say): who asked?
            try:
                self.receive()
            except HandoverError:
                return
        if self._asker is None:
            return
        conn, request_id = self._asker
        try:
            conn.settimeout(1.0)
            conn.sendall(error_line(request_id, "upgrade_failed",
                                    f"the new chatd failed after exec: {reason}"))
        except OSError:
            pass
