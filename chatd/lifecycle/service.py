"""The running service: the one place that builds and wires everything, and its event loop.

Startup is two steps so that ``--daemon`` can detach in between (startup.py):
:meth:`Service.bind` (listening.py) does everything that can fail for a reason the operator
must fix (bans file, admin socket, TCP address) and starts no thread; :meth:`Service.launch`
starts the threads and announces readiness (the ``listening`` event, systemd's READY=1, the
daemon's readiness pipe).

Threads: the main thread runs :meth:`Service.serve`, one ``handle_<name>`` per event that
signals and admin threads queue (requests.py), so a signal and a command always run the same
code on the same thread; housekeeping runs between events. The other parts see the service
only through narrow views: admin commands an AdminContext, upgrades a frozen.UpgradeContext,
the housekeeper a HousekeepingContext, the fd store state.Sources, sessions and listeners
core's Settings.

Sessions read ``settings.config`` for their limits; a reload replaces it with a new, fully
validated Config value (assigning an attribute is atomic), never mutating the old one.
"""

from __future__ import annotations

import os
import threading
import time

import structlog

from chatd import __version__
from chatd import log as logsetup
from chatd.admin.commands import AdminContext
from chatd.admin.server import AdminServer
from chatd.core.bus import LocalBus
from chatd.core.closing import SHUTDOWN
from chatd.core.events import ServerShutdown
from chatd.core.gate import Gate
from chatd.core.history import History
from chatd.core.hub import Hub
from chatd.core.settings import LiveSettings
from chatd.lifecycle import binding, fdstore, parts, startup, upgrade
from chatd.lifecycle import reload as reloading
from chatd.lifecycle.fdstore import FdStore
from chatd.lifecycle.frozen import UpgradeContext, UpgradeFailed
from chatd.lifecycle.housekeeping import Housekeeper, HousekeepingContext
from chatd.lifecycle.listening import Binding
from chatd.lifecycle.quiesce import Quiet
from chatd.lifecycle.requests import EventQueue, ReloadRequest, UpgradeRequest
from chatd.lifecycle.startup import (
    StartupError,
    current_directory,
    state_dir,
    tune_process,
)
from chatd.lifecycle.state import Sources
from chatd.lifecycle.systemd import Notifier, unit_name
from chatd.lifecycle.takeover import Inherited, start_clients
from chatd.net.listener import Listener
from chatd.store.bans import BanList

__all__ = ["Service", "StartupError", "run", "state_dir"]

log = structlog.get_logger("chatd")

HOUSEKEEPING_SECONDS = 0.5
#: SIGTERM to exit: tell clients, flush, close, within this bound (docs/protocol.md §2 "short timeout").
SHUTDOWN_SECONDS = 1.5


class Service(Binding):
    def __init__(self, config, takeover=None) -> None:
        """``takeover``: where this process takes over from (takeover.py names the kinds)."""
        self.config = config
        self.takeover = takeover
        #: Where chatd was started: an upgrade runs the new chatd from there (its arguments
        #: may be relative), also once a daemon has moved to / (reexec.py).
        self.start_directory = current_directory()
        self.gate = Gate()  # where an upgrade parks the sessions (gate.py)
        self.pidfile = None  # daemon.PidFile: ours once we serve (run() or a takeover)
        self.started_at = time.time()
        self.bus = parts.bus(config)
        self.flusher = parts.flusher(config, self.bus)
        self.hub = Hub(self.flusher, self.bus)
        self.history_store = parts.history_store(config, self.bus)
        self.history = History(self.history_store, config.history_lines, config.history_on_join,
                               config.history_idle_rooms, config.history_idle_bytes)
        self.bans = BanList(state_dir(config))
        self.notifier = Notifier()
        # systemd's fd store (fdstore.py): under systemd, on a single node (not in cluster mode:
        # the cluster would have to hand over its leases too)
        self.fd_store = FdStore(self.notifier, fdstore.store_size() > 0
                                and isinstance(self.bus, LocalBus), unit_name())
        self.accounts = parts.accounts(config, lambda: self.config, self.bus)
        self.settings = LiveSettings(config, self.gate, self.fd_store,  # sessions' view
                                     self.accounts)
        # name -> what makes a connection's protocol object
        self.protocols = parts.protocols(self.settings)
        self.inherited: Inherited | None = None  # what bind() took over (takeover.py)
        self._activation: list[int] = []  # socket activation's descriptors (bind())
        self.housekeeper: Housekeeper | None = None
        self.listener: Listener | None = None
        self.tls_listener: Listener | None = None
        self.irc_listener: Listener | None = None  # docs/protocol.md §14, when irc_port is set
        self.irc_tls_listener: Listener | None = None
        self.admin: AdminServer | None = None
        self.metrics = None  # metrics.MetricsServer when metrics_port is set
        self.client_ids = self.bus.client_ids()  # unique cluster-wide in cluster mode
        self._events = EventQueue()  # signals' events, admin threads' requests
        self._reload_lock = threading.Lock()
        self._bound = config  # the listeners follow this config until a restart

    # -- the narrow views ---------------------------------------------------------------------

    def _admin_context(self) -> AdminContext:
        def facts() -> dict:
            host, port = self.listener.address
            return {"started_at": self.started_at, "host": host, "port": port,
                    "admin_socket": self.admin.path}

        return AdminContext(hub=self.hub, flusher=self.flusher, bans=self.bans,
                            config=lambda: self.config, reload=self._events.request_reload,
                            request_shutdown=self._events.request_shutdown, facts=facts,
                            bus=self.bus, upgrade=self._events.request_upgrade,
                            history=self.history, accounts=self.accounts)

    def _sources(self) -> Sources:
        return Sources(hub=self.hub, flusher=self.flusher, listener=self.listener,
                       tls_listener=self.tls_listener, admin=self.admin, metrics=self.metrics,
                       pidfile=self.pidfile, started_at=self.started_at,
                       client_ids=self.client_ids, irc_listener=self.irc_listener,
                       irc_tls_listener=self.irc_tls_listener)

    def _upgrade_context(self) -> UpgradeContext:
        return UpgradeContext(quiesce=self.quiesce, resume=self.resume, sources=self._sources(),
                              fd_store=self.fd_store, start_directory=self.start_directory,
                              under_systemd=self.notifier.enabled or self.listener.passed,
                              cluster=not isinstance(self.bus, LocalBus))

    def _housekeeping_context(self) -> HousekeepingContext:
        sources = self._sources()
        return HousekeepingContext(hub=self.hub, flusher=self.flusher, listener=self.listener,
                                   config=lambda: self.config,
                                   save_state=lambda: self.fd_store.save_if_changed(sources),
                                   keep_places=self.accounts.keep_places
                                   if isinstance(self.bus, LocalBus) else None)

    # -- launching ----------------------------------------------------------------------------

    def _join_cluster(self) -> None:
        """Reach Redis (cluster mode only). After detaching: python-daemon would close the
        connection's socket. On failure nothing has started yet; the sockets are let go."""
        if isinstance(self.bus, LocalBus):
            return
        try:
            parts.join_cluster(self.bus, self.bans, self.listener.address)
        except StartupError:
            self._let_go()
            raise

    def _let_go(self) -> None:
        """A start that failed before any thread: the sockets bound so far are closed."""
        for listener in self.listeners():
            listener.stop()
        self.admin.stop()
        if self.metrics is not None:
            self.metrics.stop()

    def _listener_of(self, sock) -> Listener:
        """The listener whose port accepted ``sock`` (the line protocol's if none is)."""
        try:
            port = sock.getsockname()[1]
        except OSError:
            return self.listener
        return next((x for x in self.listeners() if x.address[1] == port), self.listener)

    def listeners(self) -> list[Listener]:
        return [x for x in (self.listener, self.tls_listener, self.irc_listener,
                            self.irc_tls_listener) if x is not None]

    def fds(self) -> list[int]:
        """The descriptors a daemonising step must keep open."""
        extra = [self.metrics.fileno()] if self.metrics is not None else []
        return [x.sock.fileno() for x in self.listeners()] + [self.admin.fileno()] + extra

    def _keep_rooms(self) -> None:
        """Rooms' states (SPEC §13): a single node keeps registered rooms with the accounts;
        in cluster mode every room's state is in Redis, the same on every node
        (cluster/roomstates.py)."""
        if not isinstance(self.bus, LocalBus):
            keeper = self.bus.room_states
            self.hub.keep_rooms_with(keeper, keeper.load(), shared=True)
        elif self.accounts is not None:
            self.hub.keep_rooms_with(self.accounts, self.accounts.registered_rooms())

    def launch(self) -> None:
        """Join the cluster, start the threads and tell the world we are ready."""
        self._join_cluster()
        self.history.me = self.bus.node or ""  # its lines' origin (position.Position)
        self._events.install_signal_handlers()
        tune_process()
        inherited, restored = self.inherited, []
        self._keep_rooms()  # before the clients: a registered room a client is in has its state
        if inherited is not None:  # the clients rebuilt, then the old process lets go of them
            restored = inherited.clients(self.hub, self.flusher, self.protocols)
            self.pidfile = inherited.commit() or self.pidfile  # its pidfile is ours now
        self.history_store.start()  # opens the file (never fails: history.py)
        self.hub.use_history(self.history)
        self.flusher.start()
        self.bus.start(self.hub)
        for listener in self.listeners():
            listener.start()
        start_clients(self.listener, restored)
        for client_id, sock in inherited.orphans if inherited is not None else ():
            self._listener_of(sock).readmit(client_id, sock)  # kept by the fd store, unknown
            # to its state
        self.fd_store.start(self._sources(),
                            inherited.inherited_states() if inherited is not None else [])
        self.admin.start()
        self.housekeeper = Housekeeper(self._housekeeping_context(), self.notifier)
        host, port = self.listener.address
        tls_port = self.tls_listener.address[1] if self.tls_listener else None
        irc_ports = {key: listener.address[1] for key, listener in (
            ("irc_port", self.irc_listener), ("irc_tls_port", self.irc_tls_listener))
            if listener is not None}
        if inherited is not None:
            log.info("resumed", version=__version__, **inherited.resumed(len(restored)))
        log.info("listening", host=host, port=port, tls_port=tls_port, admin_socket=self.admin.path,
                 bans=len(self.bans.active()), version=__version__, pid=os.getpid(), **irc_ports)
        if self.metrics is not None:  # after `listening`: the first event once listening
            self.metrics.start()
        if inherited is not None:
            inherited.serving(self.admin)
        self.notifier.notify(READY="1", STATUS=self.housekeeper.status_line())

    # -- the main thread ----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until asked to stop; returns the exit status."""
        while True:
            event = self._events.next(HOUSEKEEPING_SECONDS)
            name = event if isinstance(event, str) else event.name
            if name == "shutdown":
                return self.handle_shutdown(event)
            getattr(self, f"handle_{name}")(event)

    def handle_tick(self, event) -> None:
        self.housekeeper.tick()

    def handle_reload(self, event) -> None:
        """SIGHUP, or a ReloadRequest (its admin thread is answered whatever happens): the
        config file re-read, validated whole and applied without dropping anyone (reload.py);
        an invalid one leaves the old config in force. The outcome's third item names the
        changed keys that only a restart applies."""
        outcome = (False, "the reload failed", [])
        try:
            with self._reload_lock:
                self.notifier.reloading()
                try:
                    ok, message = self._apply_new_config()
                finally:
                    self.notifier.notify(READY="1", STATUS=self.housekeeper.status_line())
                outcome = ok, message, (self._restart_required() if ok else [])
        finally:
            if isinstance(event, ReloadRequest):
                event.finish(outcome)

    def handle_upgrade(self, event) -> None:
        """Exec the new chatd in place (upgrade.py, reexec.py: on success this never
        returns), or hand everything to systemd's fd store and end, or have chatctl restart
        us through systemd. ``event``: SIGUSR2's name, or an UpgradeRequest."""
        asked = isinstance(event, UpgradeRequest)
        timeout = event.timeout if asked else upgrade.UPGRADE_SECONDS
        ctx = self._upgrade_context()
        try:
            if asked and event.store:
                result = upgrade.hand_to_store(ctx, timeout)
            else:
                result = upgrade.hand_over(ctx, timeout, restart_ok=asked,
                                           asker=event.asker if asked else None)
        except UpgradeFailed as exc:
            if asked:
                event.finish((False, str(exc)))
            return
        if not asked:
            return  # SIGUSR2 outside systemd execs or fails; under systemd it is refused
        event.finish((True, result))
        if "restart_unit" in result:  # chatctl has systemd restart us (upgrade.py)
            return
        event.replied.wait(upgrade.UPGRADE_SECONDS)  # handed to the store: chatctl hears it
        os._exit(0)  # nothing to clean up: every socket is in systemd's fd store now

    def handle_shutdown(self, event) -> int:
        """Tell clients, flush and close, within SHUTDOWN_SECONDS; -> the exit status."""
        self._events.cancel_pending()
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        self.notifier.notify(STOPPING="1", STATUS="shutting down")
        listeners = self.listeners()
        for listener in listeners:
            listener.stop()
        if self.metrics is not None:
            self.metrics.stop()
        clients = self.hub.clients()
        log.info("shutting_down", clients=len(clients))
        notice = ServerShutdown()
        for client in clients:
            self.flusher.disconnect(client.outbox, SHUTDOWN, notice)
        left = sum(listener.wait_sessions(deadline - time.monotonic()) for listener in listeners)
        self.admin.stop()  # after the clients: watchers see their disconnects, then shutdown
        self.bus.stop(max(0.1, deadline - time.monotonic()))  # the departures reach the cluster
        self.flusher.stop(max(0.1, deadline - time.monotonic()))
        self.history_store.stop(max(0.1, deadline - time.monotonic()))
        if self.accounts is not None:
            self.accounts.store.close()
        if left:
            log.warning("sessions_left", count=left)
        log.info("shutdown", uptime=round(time.time() - self.started_at, 3))
        self.notifier.close()
        return 0

    # -- what the handlers use ----------------------------------------------------------------

    def _restart_required(self) -> list[str]:
        return reloading.restart_required(self.config, self._bound, self.tls_listener is not None)

    def _apply_new_config(self) -> tuple[bool, str]:
        new, error = reloading.read_new(self.config)
        if new is None:
            return False, error
        if self.tls_listener is not None and new.tls_cert:
            try:  # a renewed certificate: new TLS connections use it from now on
                self.tls_listener.tls_context = binding.tls_context(new)
            except StartupError as exc:
                log.error("config_reload_failed", error=str(exc))
                return False, str(exc)
        self.config = self.settings.config = new
        self.flusher.sendq_bytes = new.sendq_bytes
        self.hub.set_replay(new.history_on_join)
        self.history.set_idle_bounds(new.history_idle_rooms, new.history_idle_bytes)
        logsetup.set_level(new.log_level)
        # thread: SIGHUP and chatctl reload both run here, on the main thread (tests check it)
        log.info("config_reloaded", path=new.config_path, thread=threading.current_thread().name)
        restart = self._restart_required()
        if restart:
            log.warning("restart_required", keys=restart, reason="these apply at start only")
        return True, "reloaded"

    def quiesce(self, timeout: float) -> tuple[list, dict]:
        """Stop every source of change for an upgrade (quiesce.py): -> (parked sessions,
        unsent output by outbox). Raises UpgradeFailed with everything resumed."""
        return self._quiet().quiesce(timeout)

    def resume(self) -> None:
        """Undo :meth:`quiesce` (the upgrade failed): everything goes on as before."""
        self._quiet().resume()

    def _quiet(self) -> Quiet:
        plain = [x for x in (self.listener, self.irc_listener) if x is not None]
        tls = [x for x in (self.tls_listener, self.irc_tls_listener) if x is not None]
        return Quiet(plain, tls, self.admin, self.hub, self.flusher, self.gate,
                     self.history_store)


def run(config, daemonize: bool = False, takeover=None) -> int:
    """Start this service and serve until shutdown (startup.py; cli.py calls this)."""
    return startup.run(Service, config, daemonize, takeover)
