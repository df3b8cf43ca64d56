"""The running service: the one place that builds and wires everything, and that starts,
reloads and stops it.

Startup is two steps so that ``--daemon`` can detach in between: :meth:`Service.bind` does
everything that can fail for a reason the operator must fix (bans file, admin socket, TCP
address) and starts no thread; :meth:`Service.launch` starts the threads and announces
readiness (the ``listening`` event, systemd's READY=1, the daemon's readiness pipe).

Threads: the main thread runs :meth:`Service.serve`. Signal handlers only queue an event
(they run between bytecodes of the main thread, so they must not take locks or log); the main
loop then calls :meth:`reload` or shuts down, and does housekeeping (watchdog.py) between
events. The admin socket queues the same events (:meth:`request_reload` waits for the main
thread to finish the reload and hands back its outcome), so a signal and a command always run
the same code on the same thread. Admin commands see the service only through the narrow
:class:`~chatd.admin.commands.AdminContext` built in :meth:`_admin_context`.

Sessions read ``service.config`` for their limits; a reload replaces it with a new, fully
validated Config value (assigning an attribute is atomic), never mutating the old one.
"""

from __future__ import annotations

import gc
import grp
import itertools
import os
import queue
import resource
import select
import signal
import socket
import ssl
import threading
import time

import structlog

from chatd import __version__
from chatd import config as config_module
from chatd import log as logsetup
from chatd.admin import protocol as adminproto
from chatd.admin.commands import AdminCommands, AdminContext
from chatd.admin.server import ASKING, AdminServer, AdminSocketError, bind_admin_socket
from chatd.core.bus import LocalBus
from chatd.core.client import Client
from chatd.core.events import SHUTDOWN, ServerShutdown
from chatd.core.flusher import Flusher
from chatd.core.gate import Gate
from chatd.core.history import History
from chatd.core.hub import Hub
from chatd.lifecycle import fdstore, upgrade
from chatd.lifecycle.daemon import (
    PidFile,
    PidFileLocked,
    Readiness,
    detach,
    fork_launcher,
)
from chatd.lifecycle.fdstore import FdStore, StoreTakeover
from chatd.lifecycle.handover import HandoverError
from chatd.lifecycle.housekeeping import Housekeeper
from chatd.lifecycle.reexec import ExecTakeover
from chatd.lifecycle.systemd import Notifier, as_sockets, passed_fds, unit_name
from chatd.line.protocol import LINE
from chatd.net.listener import Listener, bind
from chatd.net.tls import server_context
from chatd.store.bans import BanFileError, BanList
from chatd.store.history import HistoryFileError, NullStore, RedisStore, SqliteStore

log = structlog.get_logger("chatd")

#: Session threads mostly sit in recv(); a small stack keeps 10,000 of them cheap.
THREAD_STACK_BYTES = 256 * 1024
HOUSEKEEPING_SECONDS = 0.5
#: After an upgrade, threads start RESUME_BATCH at a time, RESUME_PAUSE apart (Service._resume).
RESUME_BATCH = 100
RESUME_PAUSE = 0.001
#: SIGTERM to exit: tell clients, flush, close, within this bound (docs/protocol.md §2 "short timeout").
SHUTDOWN_SECONDS = 1.5


class StartupError(Exception):
    """Why the service could not start, as one line for the terminal; exits with status 1."""


class Service:
    def __init__(self, config, takeover=None) -> None:
        """``takeover``: an upgrade.Takeover when this process takes over from another."""
        self.config = config
        self.takeover = takeover
        #: Where chatd was started: an upgrade runs the new chatd from there (its arguments
        #: may be relative), also once a daemon has moved to / (reexec.py).
        self.start_directory = _current_directory()
        self.gate = Gate()  # where an upgrade parks the sessions (gate.py)
        self.pidfile: PidFile | None = None  # ours once we serve (run() or a takeover)
        self.started_at = time.time()
        self.flusher = Flusher(config.sendq_bytes)
        self.bus = _bus(config)
        self.hub = Hub(self.flusher, self.bus)
        self.history_store = _history_store(config, self.bus)
        self.history = History(self.history_store, config.history_lines, config.history_on_join,
                               config.history_idle_rooms, config.history_idle_bytes)
        self.bans = BanList(state_dir(config))
        self.notifier = Notifier()
        # systemd's fd store (fdstore.py): under systemd, on a single node (not in cluster mode:
        # the cluster would have to hand over its leases too)
        self.fd_store = FdStore(self.notifier, fdstore.store_size() > 0
                                and isinstance(self.bus, LocalBus), unit_name())
        self._activation: list[int] = []  # socket activation's descriptors (bind())
        self._orphans: list = []  # (id, socket): kept by the fd store, not in its state
        self.housekeeper: Housekeeper | None = None
        self.listener: Listener | None = None
        self.tls_listener: Listener | None = None
        self.admin: AdminServer | None = None
        self.metrics = None  # metrics.MetricsServer when metrics_port is set
        self.client_ids = self.bus.client_ids()  # unique cluster-wide in cluster mode
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # reentrant: safe in handlers
        self._reload_lock = threading.Lock()
        self._bound = config  # the listeners follow this config until a restart

    # -- lifecycle ----------------------------------------------------------------------------

    def bind(self) -> None:
        """Load bans, check the history file and bind both sockets; no thread yet. Raises
        StartupError."""
        config = self.config
        try:
            self.bans.load()
            self.history_store.check()  # a symbolic link: refused (historystore.py)
        except (BanFileError, HistoryFileError) as exc:
            raise StartupError(str(exc)) from None
        gid = grp.getgrnam(config.admin_group).gr_gid if config.admin_group else None
        self._activation, stored = fdstore.split(passed_fds())
        if stored and self.takeover is None:  # a restart under systemd: what the store kept
            self.takeover = StoreTakeover(stored, self._activation)
        if self.takeover is not None:
            self._bind_taken_over(gid)
            return
        self._bind_admin(gid)
        try:
            sock, passed = self._listening_socket()
            self.listener = Listener(sock, self.hub, self.flusher, self.bans, self, self.client_ids,
                                     passed=passed)
            if config.tls_cert:
                self.tls_listener = self._bind_tls(config)
            if config.metrics_port:
                self.metrics = self._metrics_server(self._bind_metrics(config))
        except StartupError:
            for listener in self.listeners():
                listener.stop()
            self.admin.stop()
            raise

    def _bind_admin(self, gid) -> None:
        admin_path = self.config.admin_socket or adminproto.daemon_socket_path()
        try:
            admin_sock, inode = bind_admin_socket(admin_path, gid)
        except AdminSocketError as exc:
            raise StartupError(str(exc)) from None
        commands = AdminCommands(self._admin_context())
        self.bus.on_command(commands.carry_out)  # what another node's admin asks of ours
        self.admin = AdminServer(admin_sock, admin_path, inode, commands, gid)

    def _bind_taken_over(self, gid) -> None:
        """The sockets of the process we take over from (upgrade.py), or that systemd's fd
        store kept (fdstore.py), instead of new ones."""
        try:
            state = self.takeover.receive()
        except HandoverError as exc:
            raise StartupError(f"cannot take over: {exc}") from None
        takeover = self.takeover
        self.started_at = state["started_at"]
        self._orphans = takeover.orphans() if isinstance(takeover, StoreTakeover) else []
        first_id = max([int(state["next_client_id"])] + [cid + 1 for cid, _ in self._orphans])
        self.client_ids = itertools.count(first_id)
        admin = state["admin"]
        if admin is None:  # the fd store keeps no admin socket: its directory is gone
            self._bind_admin(gid)
        else:
            commands = AdminCommands(self._admin_context())
            self.admin = AdminServer(takeover.sock(admin["fd"]), admin["path"], admin["inode"],
                                     commands, gid)
        self.listener = Listener(takeover.sock(state["listener"]), self.hub, self.flusher,
                                 self.bans, self, self.client_ids,
                                 passed=getattr(takeover, "passed", False))
        if state["tls_listener"] is not None:
            tls_sock = takeover.sock(state["tls_listener"])
            if self.config.tls_cert:
                self.tls_listener = Listener(tls_sock, self.hub, self.flusher, self.bans, self,
                                             self.client_ids, _tls_context(self.config))
            else:
                tls_sock.close()  # TLS turned off in the new config
        elif self.config.tls_cert:
            self.tls_listener = self._bind_tls(self.config)
        metrics_fd = state.get("metrics")  # absent in the state of a chatd without metrics
        if metrics_fd is not None:
            metrics_sock = takeover.sock(metrics_fd)
            if self.config.metrics_port:
                self.metrics = self._metrics_server(metrics_sock)
            else:
                metrics_sock.close()  # metrics turned off in the new config
        elif self.config.metrics_port:
            self.metrics = self._metrics_server(self._bind_metrics(self.config))

    def _restore_clients(self) -> list:
        """The clients handed over, back in the hub and with their unsent output queued; no
        thread runs yet. Returns (client, session state) pairs for the listener."""
        state = self.takeover.state
        self.hub.take_over(state["hub"])
        self.flusher.closed_lines_out, self.flusher.closed_bytes_out = state["closed_out"]
        now = time.monotonic()
        restored = []
        for record, sock in self.takeover.clients():
            client = Client(record["id"], sock, (record["ip"], 0), LINE)
            client.peer = record["peer"]
            client.connected_at = record["connected_at"]
            client.last_active = now - record["idle"]
            client.bytes_in, client.lines_in = record["bytes_in"], record["lines_in"]
            # an older chatd did not count these (metrics, issue 13)
            client.room_messages = record.get("room_messages", 0)
            client.private_messages = record.get("private_messages", 0)
            client.muted = record["muted"]
            client.outbox.bytes_out = record["bytes_out"]
            client.outbox.lines_out = record["lines_out"]
            if record["backlog"]:  # before any room line: it was due first
                self.flusher.submit(client.outbox, record["backlog"], 0)
            self.hub.restore(client, record["nick"], record["room"])
            restored.append((client, record["session"]))
        return restored

    def _bind_tls(self, config) -> Listener:
        context = _tls_context(config)
        try:
            sock = bind(config.host, config.tls_port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {config.host}:{config.tls_port} (TLS): {reason}") from None
        return Listener(sock, self.hub, self.flusher, self.bans, self, self.client_ids, context)

    @staticmethod
    def _bind_metrics(config) -> socket.socket:
        try:
            return bind(config.metrics_host, config.metrics_port, backlog=64)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {config.metrics_host}:{config.metrics_port} "
                               f"(metrics): {reason}") from None

    def _metrics_server(self, sock: socket.socket):
        """The Prometheus endpoint on ``sock`` (metrics.py), reading this service's counters.
        Imported here: prometheus_client is needed only when metrics are on."""
        try:
            from chatd.admin import metrics
        except ImportError as exc:
            sock.close()
            raise StartupError(f"metrics.metrics_port is set but {exc.name or exc} cannot be "
                               "imported (pip install prometheus_client)") from None
        collector = metrics.ChatdCollector(self.hub, self.admin, self.bus, self.bans,
                                           config=lambda: self.config,
                                           started_at=lambda: self.started_at)
        return metrics.MetricsServer(sock, metrics.registry_for(collector), self._unhealthy,
                                     interval=lambda: self.config.metrics_interval)

    def _unhealthy(self) -> str | None:
        """Why a load balancer should send this node no new clients (``GET /health``: 503
        and this line), or None (200). Read on a metrics connection thread."""
        if not self.hub.responsive(1.0):
            return "hub lock not available"
        if getattr(self.bus, "link_up", True) is False:
            return "cluster unavailable"
        if self.hub.client_count() >= self.config.max_clients:
            return "server full"
        return None

    def _admin_context(self) -> AdminContext:
        def facts() -> dict:
            host, port = self.listener.address
            return {"started_at": self.started_at, "host": host, "port": port,
                    "admin_socket": self.admin.path}

        return AdminContext(hub=self.hub, flusher=self.flusher, bans=self.bans,
                            config=lambda: self.config, reload=self.request_reload,
                            request_shutdown=self.request_shutdown, facts=facts, bus=self.bus,
                            upgrade=self.request_upgrade, history=self.history)

    def _join_cluster(self) -> None:
        """Reach Redis (cluster mode only). After detaching: python-daemon would close the
        connection's socket. On failure nothing has started yet; the sockets are let go."""
        if isinstance(self.bus, LocalBus):
            return
        from chatd.cluster import ClusterStartError  # cluster mode only: see _bus

        host, port = self.listener.address
        self.bus.address = f"{host}:{port}"
        if not self.bus.node:  # docs/protocol.md §8: HOSTNAME:PORT unless node_name is set
            self.bus.node = f"{socket.gethostname()}:{port}"
        try:
            self.bus.connect()
            self.bans.replace(self.bus.share_bans(self.bans.records()))
        except (ClusterStartError, BanFileError) as exc:
            for listener in self.listeners():
                listener.stop()
            self.admin.stop()
            if self.metrics is not None:
                self.metrics.stop()
            raise StartupError(str(exc)) from None

    def listeners(self) -> list[Listener]:
        return [x for x in (self.listener, self.tls_listener) if x is not None]

    def fds(self) -> list[int]:
        """The descriptors a daemonising step must keep open."""
        extra = [self.metrics.fileno()] if self.metrics is not None else []
        return [x.sock.fileno() for x in self.listeners()] + [self.admin.fileno()] + extra

    def launch(self) -> None:
        """Join the cluster, start the threads and tell the world we are ready."""
        self._join_cluster()
        self._install_signal_handlers()
        _raise_file_limit()
        _tune_gc()
        threading.stack_size(THREAD_STACK_BYTES)
        restored = self._take_over() if self.takeover is not None else []
        self.history_store.start()  # opens the file (never fails: history.py)
        self.hub.use_history(self.history)
        self.flusher.start()
        self.bus.start(self.hub)
        for listener in self.listeners():
            listener.start()
        self._resume(restored)
        for client_id, sock in self._orphans:  # kept by the fd store, unknown to its state
            self.listener.readmit(client_id, sock)
        self._fill_fd_store()
        self.admin.start()
        self.housekeeper = Housekeeper(self, self.notifier)
        host, port = self.listener.address
        tls_port = self.tls_listener.address[1] if self.tls_listener else None
        if self.takeover is not None:
            log.info("resumed", clients=len(restored), old_pid=self.takeover.state["pid"],
                     old_version=self.takeover.state["chatd_version"], version=__version__,
                     **self._resumed_how())
        log.info("listening", host=host, port=port, tls_port=tls_port, admin_socket=self.admin.path,
                 bans=len(self.bans.active()), version=__version__, pid=os.getpid())
        if self.metrics is not None:  # after `listening`: the first event once listening
            self.metrics.start()
        if self.takeover is not None:
            self.takeover.serving(self.admin)
        self.notifier.notify(READY="1", STATUS=self.housekeeper.status_line())

    def _resumed_how(self) -> dict:
        """The ``resumed`` event's fields that say how this process took over."""
        if isinstance(self.takeover, StoreTakeover):
            return {"via": "fdstore", "final": self.takeover.state.get("final"),
                    "new_connections": len(self._orphans)}
        return {"via": "exec"} if isinstance(self.takeover, ExecTakeover) else {}

    def _resume(self, restored: list) -> None:
        """Start the threads of the clients taken over, busy ones first, in batches: started
        back to back, thousands of new threads keep the busy sessions and the flusher from the
        GIL while they catch up with what arrived during the handover (bench/upgrade.py at
        5,000 clients: 45 ms from the poster's first read to its first line delivered, 1 ms
        with the pauses, which add 50 ms to starting them all)."""
        for count, (client, session_state) in enumerate(_busy_first(restored), 1):
            self.listener.resume_client(client, session_state)
            if count % RESUME_BATCH == 0:
                time.sleep(RESUME_PAUSE)  # the threads started so far run

    def _fill_fd_store(self) -> None:
        """Our listening sockets into systemd's fd store (if any), and a first state, which
        replaces the one a previous process left (fdstore.py)."""
        store = self.fd_store
        if not store.enabled:
            return
        if isinstance(self.takeover, StoreTakeover):
            store.inherit(self.takeover.inherited_states)
        if not self.listener.passed:
            store.keep(fdstore.LISTEN, self.listener.sock.fileno())
        if self.tls_listener is not None:
            store.keep(fdstore.LISTEN_TLS, self.tls_listener.sock.fileno())
        if self.metrics is not None:
            store.keep(fdstore.METRICS, self.metrics.fileno())
        store.save_if_changed(self)

    def _take_over(self) -> list:
        """Rebuild the handed-over clients, tell the old process we are ready, and return
        once it has let go of them (its commit); raises StartupError if it gave up."""
        restored = self._restore_clients()
        try:
            self.takeover.ready()
        except HandoverError as exc:
            raise StartupError(f"cannot take over: {exc}") from None
        pidfile = self.takeover.state["pidfile"]
        if pidfile is not None:  # the old process's lock (flock) comes with the descriptor
            self.pidfile = PidFile.adopt(pidfile["path"], self.takeover.fds[pidfile["fd"]])
            self.pidfile.__enter__()
        return restored

    def serve(self) -> int:
        """Run until asked to stop; returns the exit status."""
        while True:
            try:
                event = self._events.get(timeout=HOUSEKEEPING_SECONDS)
            except queue.Empty:
                self.housekeeper.tick()
                continue
            if event == "reload":
                self.reload()
            elif event == "upgrade" or isinstance(event, _UpgradeRequest):
                self._upgrade(event)
            elif isinstance(event, _Completion):
                outcome = (False, "the reload failed", [])
                try:
                    outcome = self.reload()
                finally:  # the admin thread waiting for it is answered whatever happens
                    event.finish(outcome)
            elif event == "shutdown":
                break
        self._cancel_pending()
        self._shutdown()
        return 0

    def request_shutdown(self) -> None:
        self._events.put("shutdown")

    def request_upgrade(self, timeout: float, store: bool = False):
        """Have the main thread upgrade (as SIGUSR2 does), or with ``store`` hand everything
        to systemd's fd store for a restart (``chatctl systemd-stop``), and wait; for admin
        threads. Returns (ok, result or reason, call this once the reply is sent). An upgrade
        that succeeds execs (reexec.py): this thread is gone then, and the new image answers
        the connection that asked (admin.ASKING, set by the admin thread)."""
        request = _UpgradeRequest(timeout, store, ASKING.get())
        self._events.put(request)
        ok, outcome = request.wait(4 * timeout + 5)
        return ok, outcome, request.replied.set

    def _upgrade(self, event) -> None:
        """Main thread: exec the new chatd in place (upgrade.py, reexec.py: on success this
        never returns), or hand everything to systemd's fd store and end, or have chatctl
        restart us through systemd."""
        asked = isinstance(event, _UpgradeRequest)  # else SIGUSR2
        timeout = event.timeout if asked else upgrade.UPGRADE_SECONDS
        try:
            if asked and event.store:
                result = upgrade.hand_to_store(self, timeout)
            else:
                result = upgrade.hand_over(self, timeout, restart_ok=asked,
                                           asker=event.asker if asked else None)
        except upgrade.UpgradeFailed as exc:
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

    def request_reload(self, timeout: float) -> tuple[bool, str, list[str]]:
        """Have the main thread reload (as SIGHUP does) and wait for the outcome; for admin
        threads. Raises TimeoutError if the main thread has not finished within ``timeout``."""
        completion = _Completion()
        self._events.put(completion)
        return completion.wait(timeout)

    def _cancel_pending(self) -> None:
        """Answer reloads still queued behind a shutdown, so no admin thread waits for them."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, _UpgradeRequest):
                event.finish((False, "chatd is shutting down"))
            elif isinstance(event, _Completion):
                event.finish((False, "chatd is shutting down", []))

    def reload(self) -> tuple[bool, str, list[str]]:
        """Re-read the config file and apply it without dropping anyone; main thread.

        The whole new file is validated first; if it is invalid the old config stays and the
        reason is returned (and logged as ``config_reload_failed``). The third item names the
        changed keys that only a restart applies (``server.port``, …).
        """
        with self._reload_lock:
            self.notifier.reloading()
            try:
                ok, message = self._apply_new_config()
            finally:
                self.notifier.notify(READY="1", STATUS=self.housekeeper.status_line())
            return ok, message, (self._restart_required() if ok else [])

    def _restart_required(self) -> list[str]:
        """The settings of the config in force that the listeners do not follow: they were
        bound at start (compared with that config, so changing a key back clears it)."""
        new, bound = self.config, self._bound
        keys = [f"server.{key}" for key in ("host", "port")
                if getattr(new, key) != getattr(bound, key)]
        if new.tls_port != bound.tls_port and (new.tls_cert or bound.tls_cert):
            keys.append("tls.tls_port")
        if bool(new.tls_cert) != bool(self.tls_listener):
            keys.append("tls.tls_cert")  # TLS turned on or off
        if new.history_lines != bound.history_lines:  # the store is opened at start
            keys.append("history.history_lines")
        keys += [f"metrics.{key}" for key in ("metrics_host", "metrics_port")
                 if getattr(new, key) != getattr(bound, key)]
        return keys

    def _apply_new_config(self) -> tuple[bool, str]:
        try:  # first, and whatever the new file says: logrotate's postrotate relies on it
            logsetup.reopen()
        except OSError as exc:  # keep logging to the old file rather than fail the reload
            log.error("log_reopen_failed", error=exc.strerror or str(exc))
        old = self.config
        try:
            new = config_module.reload(old)
        except config_module.ConfigError as exc:
            log.error("config_reload_failed", error=str(exc))
            return False, str(exc)
        if self.tls_listener is not None and new.tls_cert:
            try:  # a renewed certificate: new TLS connections use it from now on
                self.tls_listener.tls_context = _tls_context(new)
            except StartupError as exc:
                log.error("config_reload_failed", error=str(exc))
                return False, str(exc)
        self.config = new
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

    # -- main thread --------------------------------------------------------------------------

    def _listening_socket(self):
        """(socket, passed): the one systemd passed us (socket activation), or a new one."""
        passed = as_sockets(self._activation)
        if passed:
            sock = passed[0]
            if sock.type != socket.SOCK_STREAM:
                raise StartupError("the socket passed by systemd (fd 3) is not a stream socket")
            for extra in passed[1:]:
                extra.close()
            return sock, True
        config = self.config
        try:
            return bind(config.host, config.port), False
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {config.host}:{config.port}: {reason}") from None

    def _install_signal_handlers(self) -> None:
        def queue_event(name):
            return lambda signum, frame: self._events.put(name)

        signal.signal(signal.SIGTERM, queue_event("shutdown"))
        signal.signal(signal.SIGINT, queue_event("shutdown"))
        signal.signal(signal.SIGHUP, queue_event("reload"))
        signal.signal(signal.SIGUSR2, queue_event("upgrade"))

    def _shutdown(self) -> None:
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
        if left:
            log.warning("sessions_left", count=left)
        log.info("shutdown", uptime=round(time.time() - self.started_at, 3))
        self.notifier.close()


class _Completion:
    """A reload asked for by an admin thread: the main thread finishes it, the asker waits."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._outcome: tuple[bool, str, list[str]] | None = None

    def finish(self, outcome: tuple[bool, str, list[str]]) -> None:
        self._outcome = outcome
        self._done.set()

    def wait(self, timeout: float) -> tuple[bool, str, list[str]]:
        if not self._done.wait(timeout):
            raise TimeoutError
        return self._outcome


class _UpgradeRequest(_Completion):
    """An upgrade asked for by an admin thread; ``replied`` is set once chatctl has its
    answer, so that a successful upgrade ends this process only after that."""

    def __init__(self, timeout: float, store: bool = False, asker=None) -> None:
        super().__init__()
        self.timeout = timeout
        self.store = store  # to systemd's fd store (a restart), not to a new process
        self.asker = asker  # (admin connection, request id): answered after an exec
        self.replied = threading.Event()


def _tune_gc() -> None:
    """Fewer, shorter cyclic-GC pauses. Everything built at start-up (modules, config) is
    moved out of the collector's sight, and the youngest generation is collected less often:
    the hot path allocates many short-lived, acyclic objects (log entries, buffers), and a
    full collection stalls every thread at once (seen as latency spikes in bench/)."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _busy_first(restored: list) -> list:
    """The clients taken over, those with input waiting first (in the kernel, or read but not
    handled yet): their threads start first. Starting 5,000 threads takes about 0.3 s here,
    and an idle client loses nothing by waiting (what it sends stays in the kernel), while a
    busy room's line would wait behind all of them (bench/upgrade.py: the longest gap)."""
    poller = select.poll()
    for client, _ in restored:
        poller.register(client.sock, select.POLLIN)
    pending = {fd for fd, _ in poller.poll(0)}
    return sorted(restored, key=lambda pair: not (pair[0].sock.fileno() in pending
                                                   or pair[1]["unread"] or pair[1]["held"]))


def _bus(config):
    """LocalBus on a single node; the cluster's bus when ``redis_url`` is set (its secret was
    checked by preflight.py: read here again, it may only have gone since)."""
    if not config.redis_url:
        return LocalBus()
    # Imported only here: a single node never loads the cluster package (and redis-py), which
    # is 25 ms of every start and of every upgrade's pause (docs/protocol.md §9).
    from chatd.cluster import RedisBus
    from chatd.cluster.secret import SecretError, read_secret

    try:
        key = read_secret(config.cluster_secret_file)
    except SecretError as exc:
        raise StartupError(f"cluster.cluster_secret_file: {exc}") from None
    return RedisBus(config.redis_url, config.node_name or "", key, config.node_timeout,
                    config.history_lines, config.max_line_bytes)


def _history_store(config, bus):
    """Where room history persists (SPEC §10): nowhere, SQLite in state_dir, or the cluster's
    Redis, which every node reads."""
    if not config.history_lines:
        return NullStore()
    if config.redis_url:
        return RedisStore(bus)
    return SqliteStore(state_dir(config), config.history_lines)


def _current_directory() -> str:
    """The working directory, or / if it has been removed (getcwd fails then)."""
    try:
        return os.getcwd()
    except OSError:
        return "/"


def _raise_file_limit() -> None:
    """One descriptor per client: take the whole hard limit we were given (the soft one is
    often 1024, below max_clients). After detaching, so python-daemon's close loop stays short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def _tls_context(config):
    try:
        return server_context(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise StartupError(f"cannot load TLS certificate {config.tls_cert} / key {config.tls_key}: {reason}") from None


def state_dir(config) -> str:
    """Where bans persist (docs/protocol.md §4): the option, else the environment's default."""
    return config.state_dir or config_module.default_state_dir()


def run(config, daemonize: bool = False, takeover=None) -> int:
    """Start the service (detached with ``daemonize``) and serve until shutdown.

    Raises StartupError if it cannot start; in the daemon, a failure after detaching is
    reported through the readiness pipe instead (the launcher prints it and exits 1).
    """
    if takeover is not None:  # an upgrade: the old process's sockets and pidfile (upgrade.py)
        return _run_taken_over(config, takeover, daemonize)
    pidfile = PidFile(config.pidfile) if config.pidfile else None
    if pidfile is not None:
        try:
            pidfile.acquire()
        except PidFileLocked as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot open pidfile {config.pidfile}: {exc.strerror}") from None
    service = Service(config)
    service.pidfile = pidfile  # handed to the next process by an upgrade
    try:
        service.bind()
        if daemonize:
            readiness = Readiness()
            fork_launcher(readiness)  # only the daemon-to-be returns
            log_fd = logsetup.fileno()
            detach(service.fds() + ([log_fd] if log_fd is not None else []), pidfile, readiness)
            try:
                service.launch()
            except Exception as exc:
                readiness.report(f"cannot start: {exc}")
                raise
            host, port = service.listener.address
            readiness.report(f"READY pid={os.getpid()} port={port}")
        else:
            if pidfile is not None:
                pidfile.__enter__()
            service.launch()
        return service.serve()
    finally:
        if pidfile is not None:
            pidfile.release()


def _run_taken_over(config, takeover, daemonize: bool = False) -> int:
    """Take over from an upgrading chatd and serve. Never detaches: a daemon that execs
    itself in place (reexec.py) is detached already, as is the old process a chatd from
    before issue 23 upgrades from; such a daemon goes back to / (it execs from the directory
    it was started from)."""
    service = Service(config, takeover)
    service.bind()  # a StartupError reaches the old process through cli.py
    if daemonize:
        os.chdir("/")
    service.launch()
    try:
        return service.serve()
    finally:
        if service.pidfile is not None:
            service.pidfile.release()
