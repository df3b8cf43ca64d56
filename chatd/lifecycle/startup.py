"""Starting the process: :func:`run` (pidfile, bind, detach, launch, serve) and the process
tuning a server of many threads needs (file limit, cyclic GC, thread stacks).

It builds the service through the factory it is given (service.py passes its Service), so
that it needs nothing of the service module and the service can use what is here.
"""

from __future__ import annotations

import gc
import os
import resource
import threading

from chatd import config as config_module
from chatd import log as logsetup
from chatd.lifecycle.daemon import (
    PidFile,
    PidFileLocked,
    Readiness,
    detach,
    fork_launcher,
)

#: Session threads mostly sit in recv(); a small stack keeps 10,000 of them cheap.
THREAD_STACK_BYTES = 256 * 1024


class StartupError(Exception):
    """Why the service could not start, as one line for the terminal; exits with status 1."""


def state_dir(config) -> str:
    """Where bans persist (docs/protocol.md §4): the option, else the environment's default."""
    return config.state_dir or config_module.default_state_dir()


def current_directory() -> str:
    """The working directory, or / if it has been removed (getcwd fails then)."""
    try:
        return os.getcwd()
    except OSError:
        return "/"


def tune_process() -> None:
    """Before the threads start: every descriptor we may have, fewer GC pauses, small stacks."""
    _raise_file_limit()
    _tune_gc()
    threading.stack_size(THREAD_STACK_BYTES)


def _tune_gc() -> None:
    """Fewer, shorter cyclic-GC pauses. Everything built at start-up (modules, config) is
    moved out of the collector's sight, and the youngest generation is collected less often:
    the hot path allocates many short-lived, acyclic objects, and a full collection stalls
    every thread at once."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    gc.enable()  # off in an upgrade's new image until here (chatd/__init__.py)


def _raise_file_limit() -> None:
    """One descriptor per client: take the whole hard limit we were given (the soft one is
    often 1024, below max_clients). After detaching, so python-daemon's close loop stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def run(make_service, config, daemonize: bool = False, takeover=None) -> int:
    """Start the service (detached with ``daemonize``) and serve until shutdown.

    Raises StartupError if it cannot start; in the daemon, a failure after detaching is
    reported through the readiness pipe instead (the launcher prints it and exits 1).
    """
    if takeover is not None:  # an upgrade: the old process's sockets and pidfile (upgrade.py)
        return _run_taken_over(make_service(config, takeover), daemonize)
    pidfile = PidFile(config.pidfile) if config.pidfile else None
    if pidfile is not None:
        try:
            pidfile.acquire()
        except PidFileLocked as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot open pidfile {config.pidfile}: {exc.strerror}") from None
    service = make_service(config)
    service.pidfile = pidfile  # handed to the next process by an upgrade
    try:
        service.bind()
        if daemonize:
            _launch_detached(service, pidfile)
        else:
            if pidfile is not None:
                pidfile.__enter__()
            service.launch()
        return service.serve()
    finally:
        if pidfile is not None:
            pidfile.release()


def _launch_detached(service, pidfile) -> None:
    readiness = Readiness()
    fork_launcher(readiness)  # only the daemon-to-be returns
    log_fd = logsetup.fileno()
    detach(service.fds() + ([log_fd] if log_fd is not None else []), pidfile, readiness)
    try:
        service.launch()
    except Exception as exc:
        readiness.report(f"cannot start: {exc}")
        raise
    _, port = service.listener.address
    readiness.report(f"READY pid={os.getpid()} port={port}")


def _run_taken_over(service, daemonize: bool = False) -> int:
    """Take over from an upgrading chatd and serve. Never detaches: a daemon that execs
    itself in place (reexec.py) is detached already, as is the old process a chatd from
    before issue 23 upgrades from; such a daemon goes back to / (it execs from the directory
    it was started from)."""
    service.bind()  # a StartupError reaches the old process through cli.py
    if daemonize:
        os.chdir("/")
    service.launch()
    try:
        return service.serve()
    finally:
        if service.pidfile is not None:
            service.pidfile.release()
