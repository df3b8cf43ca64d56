"""``chatctl upgrade`` and SIGUSR2: the installed chatd takes over every connection, nobody is
dropped (SPEC §9, docs/protocol.md §9). This module holds what every way of upgrading shares,
and the ways that go through systemd; the upgrade itself execs the new chatd in place
(reexec.py: same pid, same terminal, named ``chatd``).

What every way shares, on the old side (main thread):

- the **freeze** (Service.quiesce, through frozen.UpgradeContext): the listeners and the admin socket stop accepting (the
  sockets stay listening: the kernel queues newcomers for whoever serves next); TLS clients
  are told ``*** server restarting, please reconnect`` and closed (a TLS session cannot leave
  the process); every session thread parks between two reads or two lines (gate.py), so what
  a client sends from now on stays in the kernel; the flusher finishes what is queued and
  stops writing (flusher.py), so what is not sent yet is known exactly; queued room history
  is written out. Service.resume undoes it on any failure: sessions, flusher, listeners and
  admin go on as if nothing had happened.
- the **state** (frozen.frozen_state, versioned: state.py): listening sockets, admin socket,
  pidfile, and every plain client with nick, room, mute, counters, input not yet handled and
  output not yet sent, with the descriptors it refers to.

The ways (docs/protocol.md §9 says what each mode does):

- foreground and ``--daemon``: exec in place (reexec.py), after a dry start of the new code;
- under systemd: ``chatctl upgrade`` has the installed chatd check the config
  (:func:`_check_next`) and chatctl restarts the unit; the restart (``chatctl systemd-stop``)
  leaves the freeze's state in systemd's fd store (:func:`hand_to_store`, fdstore.py),
  because systemd must stay the parent of the main process (docs/protocol.md §9.1).

:class:`Takeover` is the new side of the handover chatd did before issue 23 §4 (the old
process started a new one and handed over on a socket pair: handover.py): a chatd from before
then upgrading to this one still starts it that way, and it takes over as it always did.

Not handed over (docs/protocol.md §9): TLS sessions; clients that were already leaving (their
last lines, if still unsent). Cluster mode is refused for now.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import NoReturn

import structlog

from chatd import __version__
from chatd.lifecycle import reexec
from chatd.lifecycle import state as schema
from chatd.lifecycle.frozen import (
    UPGRADE_SECONDS,
    UpgradeContext,
    UpgradeFailed,
    frozen_state,
)
from chatd.lifecycle.handover import ENV_FD, Channel, HandoverError
from chatd.lifecycle.reexec import ENV_EXECUTABLE

log = structlog.get_logger("chatd.upgrade")


def command() -> list[str]:
    """The command line of the chatd systemd starts next, for :func:`_check_next`: this one's,
    so it reads the same config file with the same options, from the executable installed
    now. (Outside systemd, reexec.executable() finds the chatd to exec.)"""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    replacement = os.environ.get(ENV_EXECUTABLE)
    if replacement:
        return [replacement, *sys.argv[1:]]
    return argv


def hand_over(ctx: UpgradeContext, timeout: float = UPGRADE_SECONDS, restart_ok: bool = False,
              asker=None) -> dict:
    """The whole upgrade, old side: execs the new chatd in place (reexec.py), so it returns
    only under systemd, or by raising UpgradeFailed with this process serving on. ``asker``:
    (admin connection, request id) of the chatctl that asked, which the new image answers.

    Under systemd with an fd store and ``restart_ok`` (chatctl asked, not SIGUSR2) nothing is
    handed over here: once the installed chatd has accepted the config, the result names the
    unit (``restart_unit``) and chatctl has systemd restart it, which keeps everyone through
    the store (:func:`hand_to_store`). systemd must stay the parent of its main process, so a
    new process cannot simply take over (docs/protocol.md §9.1)."""
    log.info("upgrade_started", pid=os.getpid(), version=__version__)
    try:
        if restart_ok and ctx.fd_store.unit and ctx.under_systemd:
            _check_next(timeout)
            log.info("upgrade_through_systemd", unit=ctx.fd_store.unit)
            return {"old_pid": os.getpid(), "old_version": __version__,
                    "restart_unit": ctx.fd_store.unit}
        _hand_over(ctx, timeout, asker)
    except UpgradeFailed as exc:
        log.error("upgrade_failed", reason=str(exc))
        raise


def _hand_over(ctx: UpgradeContext, timeout: float, asker) -> NoReturn:
    if ctx.cluster:
        raise UpgradeFailed("upgrade is not available in cluster mode yet; restart the nodes "
                            "one at a time")
    if ctx.under_systemd:
        raise UpgradeFailed("under systemd, use systemctl restart chatd (it keeps every client "
                            "through the fd store)")
    try:
        reexec.exec_in_place(ctx, timeout, asker)
    except UpgradeFailed:
        raise
    except OSError as exc:
        raise UpgradeFailed(exc.strerror or str(exc)) from None
    except Exception as exc:  # a bug: this process serves on all the same (thawed)
        log.exception("upgrade_crashed")
        raise UpgradeFailed(f"internal error: {exc}") from None


def _check_next(timeout: float) -> None:
    """Would the chatd that systemd starts next run? (The installed one, with the config file
    as it is now: ``--check-config``.) Once this process has left everything in the store
    there is no way back, so a next chatd that cannot start must be found before."""
    argv = [*command(), "--check-config"]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise UpgradeFailed(f"{argv[0]} --check-config did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise UpgradeFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise UpgradeFailed(lines[-1] if lines else
                            f"{argv[0]} --check-config exited with status {proc.returncode}")


def hand_to_store(ctx: UpgradeContext, timeout: float = UPGRADE_SECONDS) -> dict:
    """A restart under systemd (``chatctl systemd-stop``): freeze as for an upgrade and leave
    everything in systemd's fd store (fdstore.py) for the process systemd starts next. Returns
    what chatctl prints; on failure (UpgradeFailed) everything is thawed and this process
    serves on, so the stop that follows ends it the usual way."""
    store = ctx.fd_store
    if not store.enabled:
        raise UpgradeFailed("systemd gives this chatd no fd store (FileDescriptorStoreMax= and "
                            "FDSTORE= in the unit, see systemd/chatd.service)")
    log.info("upgrade_started", pid=os.getpid(), version=__version__, via="fdstore")
    started = time.monotonic()
    try:
        _check_next(timeout)
    except UpgradeFailed as exc:
        log.error("upgrade_failed", reason=str(exc))
        raise
    parked, backlogs = ctx.quiesce(timeout)
    try:
        state, fds = frozen_state(ctx.sources, parked, backlogs)
        state.fdnames, state.final = fds.names, True
        if not store.save(state):
            raise UpgradeFailed("systemd did not take the state into the fd store")
    except BaseException as exc:
        ctx.resume()
        if isinstance(exc, UpgradeFailed):
            log.error("upgrade_failed", reason=str(exc))
        raise
    log.info("handed_to_fdstore", clients=len(state.clients),
             seconds=round(time.monotonic() - started, 3))
    return {"old_pid": os.getpid(), "clients": len(state.clients)}


class Takeover:
    """The new process's side of the handover of a chatd from before issue 23 §4, which starts
    its successor as a child (module docstring): ``hello``, the state and its descriptors,
    ``ready``, and only on ``commit`` does this process start reading and writing, so that at
    every moment exactly one process reads and writes the clients."""

    def __init__(self, fd: int) -> None:
        self.channel = Channel.from_fd(fd)
        self.state: dict | None = None
        self.fds: list[int] = []

    @classmethod
    def from_environment(cls) -> Takeover | None:
        value = os.environ.pop(ENV_FD, None)
        return cls(int(value)) if value and value.isdigit() else None

    def fail(self, reason: str) -> None:
        """Tell the old process why we cannot take over (it serves on)."""
        try:
            self.channel.send({"type": "error", "reason": reason})
        except OSError:
            pass

    def receive(self, timeout: float = UPGRADE_SECONDS) -> dict:
        """Say hello, take the state and its descriptors; raises HandoverError."""
        self.channel.send({"type": "hello", "pid": os.getpid(), "version": __version__,
                           "state_versions": list(schema.READABLE_STATE_VERSIONS)})
        message = self.channel.receive(timeout, ("state", "abort"))
        if message["type"] == "abort":
            raise HandoverError("the old chatd gave up the upgrade")
        state = message["state"]
        self.fds = self.channel.receive_fds(int(message["fds"]), timeout)
        if not schema.readable(state):
            raise HandoverError(f"state version {state.get('version')} is not one this chatd "
                                "reads")
        self.state = state
        return state

    def sock(self, index: int) -> socket.socket:
        return socket.socket(fileno=self.fds[index])

    def ready(self, timeout: float = UPGRADE_SECONDS) -> None:
        """Tell the old process we are ready; returns on its commit, raises on abort."""
        self.channel.send({"type": "ready"})
        message = self.channel.receive(timeout, ("commit", "abort"))
        if message["type"] == "abort":
            raise HandoverError("the old chatd gave up the upgrade")

    def serving(self, admin=None) -> None:
        """Every thread runs: the old process may exit now (its exit no longer competes with
        our catching up). A process that is gone already is no concern of ours. (``admin``:
        reexec.ExecTakeover's interface; the old process answers its chatctl itself.)"""
        try:
            self.channel.send({"type": "serving"})
        except OSError:
            pass
        self.channel.close()
