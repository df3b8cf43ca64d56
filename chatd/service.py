"""The running service: the one place that builds and wires everything, and that starts,
reloads and stops it.

Threads: the main thread runs :meth:`Service.serve`. Signal handlers only queue an event
(they run between bytecodes of the main thread, so they must not take locks or log); the main
loop then calls :meth:`reload` or shuts down, and does housekeeping (idle timeouts) between
events. Other callers (the admin socket, later) use the same :meth:`reload` and
:meth:`request_shutdown`, so a signal and a command always run the same code.

Sessions read ``service.config`` for their limits; a reload replaces it with a new, fully
validated Config value (assigning an attribute is atomic), never mutating the old one.
"""

from __future__ import annotations

import grp
import os
import queue
import signal
import threading
import time

import structlog

from chatd import __version__, adminproto
from chatd import config as config_module
from chatd import log as logsetup
from chatd.admin import AdminServer, AdminSocketError, bind_admin_socket
from chatd.admincmds import AdminCommands
from chatd.bans import BanFileError, BanList
from chatd.flusher import Flusher
from chatd.hub import Hub
from chatd.protocol import encode
from chatd.server import Listener, bind
from chatd.session import SHUTDOWN

log = structlog.get_logger("chatd")

#: Session threads mostly sit in recv(); a small stack keeps 10,000 of them cheap.
THREAD_STACK_BYTES = 256 * 1024
HOUSEKEEPING_SECONDS = 0.5
#: SIGTERM to exit: tell clients, flush, close, within this bound (SPEC §2 "short timeout").
SHUTDOWN_SECONDS = 1.5


class StartupError(Exception):
    """Why the service could not start, as one line for the terminal; exits with status 1."""


class Service:
    def __init__(self, config) -> None:
        self.config = config
        self.started_at = time.time()
        self.flusher = Flusher(config.sendq_bytes)
        self.hub = Hub(self.flusher)
        self.bans = BanList(state_dir(config))
        self.listener: Listener | None = None
        self.admin: AdminServer | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # reentrant: safe in handlers
        self._reload_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Load bans, bind both sockets, start the threads, log ``listening``.

        Everything that can fail for a reason the operator must fix (corrupt bans file, another
        chatd running, address in use) fails here, before any thread starts, as StartupError.
        """
        config = self.config
        try:
            self.bans.load()
        except BanFileError as exc:
            raise StartupError(str(exc)) from None
        gid = grp.getgrnam(config.admin_group).gr_gid if config.admin_group else None
        admin_path = config.admin_socket or adminproto.daemon_socket_path()
        try:
            admin_sock, inode = bind_admin_socket(admin_path, gid)
        except AdminSocketError as exc:
            raise StartupError(str(exc)) from None
        self.admin = AdminServer(admin_sock, admin_path, inode, AdminCommands(self), gid)
        try:
            sock = bind(config.host, config.port)
        except OSError as exc:
            self.admin.stop()
            reason = exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
        self._install_signal_handlers()
        threading.stack_size(THREAD_STACK_BYTES)
        self.listener = Listener(sock, self.hub, self.flusher, self.bans, self)
        self.flusher.start()
        self.listener.start()
        self.admin.start()
        host, port = self.listener.address
        log.info("listening", host=host, port=port, admin_socket=admin_path,
                 bans=len(self.bans.active()), version=__version__, pid=os.getpid())

    def serve(self) -> int:
        """Run until asked to stop; returns the exit status."""
        while True:
            try:
                event = self._events.get(timeout=HOUSEKEEPING_SECONDS)
            except queue.Empty:
                self._housekeeping()
                continue
            if event == "reload":
                self.reload()
            elif event == "shutdown":
                break
        self._shutdown()
        return 0

    def request_shutdown(self) -> None:
        self._events.put("shutdown")

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file and apply it without dropping anyone.

        The whole new file is validated first; if it is invalid the old config stays and the
        reason is returned (and logged as ``config_reload_failed``).
        """
        with self._reload_lock:
            old = self.config
            try:
                new = config_module.reload(old)
            except config_module.ConfigError as exc:
                log.error("config_reload_failed", error=str(exc))
                return False, str(exc)
            if (new.host, new.port) != (old.host, old.port):
                log.warning("restart_required", reason="host and port change on restart only")
            self.config = new
            self.flusher.sendq_bytes = new.sendq_bytes
            logsetup.set_level(new.log_level)
            logsetup.reopen()
            log.info("config_reloaded", path=new.config_path)
            return True, "reloaded"

    # -- main thread --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def queue_event(name):
            return lambda signum, frame: self._events.put(name)

        signal.signal(signal.SIGTERM, queue_event("shutdown"))
        signal.signal(signal.SIGINT, queue_event("shutdown"))
        signal.signal(signal.SIGHUP, queue_event("reload"))

    def _housekeeping(self) -> None:
        idle_timeout = self.config.idle_timeout
        if idle_timeout <= 0:
            return
        limit = time.monotonic() - idle_timeout
        notice = encode("*** error: idle timeout")
        for client in self.hub.clients():
            if client.last_active < limit:
                self.flusher.disconnect(client.outbox, "idle timeout", notice)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        self.listener.stop()
        self.admin.stop()
        clients = self.hub.clients()
        log.info("shutting_down", clients=len(clients))
        notice = encode(f"*** {SHUTDOWN}")
        for client in clients:
            self.flusher.disconnect(client.outbox, SHUTDOWN, notice)
        for thread in self.listener.sessions():
            thread.join(max(0.0, deadline - time.monotonic()))
        self.flusher.stop(max(0.1, deadline - time.monotonic()))
        left = len(self.listener.sessions())
        if left:
            log.warning("sessions_left", count=left)
        log.info("shutdown", uptime=round(time.time() - self.started_at, 3))


def state_dir(config) -> str:
    """Where bans persist (SPEC §4): the option, systemd's StateDirectory, XDG, or ~/.local/state."""
    if config.state_dir:
        return config.state_dir
    if os.environ.get("STATE_DIRECTORY"):
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "chatd")


def run(config) -> int:
    """Start the service and serve until shutdown. Raises StartupError if it cannot start."""
    service = Service(config)
    service.start()
    return service.serve()
