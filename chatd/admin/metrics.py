"""The Prometheus endpoint (docs/protocol.md §11): ``GET /metrics`` on ``metrics_host:metrics_port``,
and beside it ``GET /health`` for load balancers (200 ``ok``, or 503 and why this node should
get no new clients: a check that is not a chat connection, so nobody sees it in the lobby).

Nothing is counted here. :class:`ChatdCollector` is a custom ``prometheus_client`` collector
that, at each scrape, reads the counters chatd keeps anyway, and only then: the hot path pays
nothing for metrics, whether anyone scrapes or not. Who owns what it reads:

    =================================  ==================================================
    families                           read from (owner)
    =================================  ==================================================
    clients, rooms, messages, bytes,   ``Hub.counters()``: the per-client counters (session
    disconnects, sendq                 thread, flusher thread) and the hub's departed and
                                       disconnect totals (hub lock, held for a copy only)
    admin commands                     ``AdminServer.outcomes()`` (admin connection threads)
    logins, accounts                   ``Accounts.counts()`` (its lock) and ``count()`` (one
                                       count of the store: SQL, or SCARD in cluster mode)
    cluster link, nodes                ``RedisBus.link_up`` / ``live_nodes`` (its threads)
    limits, bans, start time, build    the Config in force, the ban list, the service
    =================================  ==================================================

A collection walks every client (``Hub.counters()``): 16 scrapers looping on ``GET /metrics``
with 3,000 clients kept chatd at 92 % of a core. So a scrape sooner than ``metrics_interval``
(1 s) after the last collection is answered with that collection's body
(:meth:`MetricsServer.exposition`), and scrapes that arrive together wait for one collection
instead of making one each: whatever the scrapers do, chatd collects at most once an interval.

A counter that is a sum over clients can come out a little low for one scrape (a client
between leaving the hub and its socket being closed); the collector never reports less than
it reported before, so ``rate()`` sees no false reset.

Serving: :class:`MetricsServer`, a ``socketserver.TCPServer`` on a thread of its own
(``metrics``) with one short-lived thread per connection (``metrics-conn``), at most
``MAX_CONNECTIONS`` at once (a new one beyond that cuts the oldest). HTTP/1.0, one request per
connection; every read and write has a ``SOCKET_SECONDS`` timeout and the whole connection
``REQUEST_SECONDS`` (a slowloris trickling bytes is cut off by the serving thread between
polls), so garbage, huge headers and silent peers cost a bounded number of threads for a
bounded time. The service makes it (bound, before detaching) and starts and stops it.
"""

from __future__ import annotations

import platform
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import structlog
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from chatd import __version__
from chatd.accounts.accounts import AccountError
from chatd.core.closing import CLOSE_KINDS

log = structlog.get_logger("chatd.metrics")

MAX_CONNECTIONS = 16
SOCKET_SECONDS = 5.0  # one read or write
REQUEST_SECONDS = 10.0  # a whole connection, from accept to close
POLL_SECONDS = 0.2  # how often the serving thread looks at deadlines and for shutdown()
EVICT_SECONDS = 1.0  # how long a new connection waits for the oldest one to make room
#: The classic text format, which every Prometheus reads (newer prometheus_client versions
#: announce 1.0.0, which older servers do not know; for chatd's names the body is the same).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ChatdCollector(Collector):
    """Yields chatd's metric families, read at scrape time (see the module docstring).

    ``hub`` (Hub), ``admin`` (AdminServer, or None), ``bus`` (LocalBus or RedisBus),
    ``bans`` (BanList); ``config()`` and ``started_at()`` return what is in force now;
    ``accounts`` (chatd.accounts.Accounts, or None: none).
    Scrapes may run on several connection threads at once: ``_lock`` guards ``_high``.
    """

    def __init__(self, hub, admin, bus, bans, config, started_at, accounts=None) -> None:
        self._hub = hub
        self._accounts = accounts
        self._admin = admin
        self._bus = bus
        self._bans = bans
        self._config = config
        self._started_at = started_at
        self._lock = threading.Lock()
        self._high: dict = {}  # counter key -> highest value reported

    def collect(self):
        stats = self._hub.counters()
        config = self._config()
        yield InfoMetricFamily("chatd_build", "chatd version and the Python that runs it",
                               value={"version": __version__,
                                      "python": platform.python_version()})
        yield _gauge("chatd_start_time_seconds",
                     "When this chatd started serving (kept across an upgrade), Unix time",
                     self._started_at())
        yield _gauge("chatd_clients", "Chat clients connected to this node", stats["clients"])
        yield self._by_protocol(stats)
        yield _gauge("chatd_clients_max", "The max_clients limit in force", config.max_clients)
        yield _gauge("chatd_rooms", "Rooms on this node (the lobby always counts)",
                     stats["rooms"])
        yield self._messages(stats)
        yield self._counter("chatd_lines_received",
                            "Lines received from clients and handled (messages and commands)",
                            stats["lines_in"])
        yield self._counter("chatd_deliveries",
                            "Lines delivered to clients (room and private messages, notices, "
                            "replies)", stats["lines_out"])
        yield self._counter("chatd_received_bytes", "Bytes received from chat clients",
                            stats["bytes_in"])
        yield self._counter("chatd_sent_bytes", "Bytes sent to chat clients",
                            stats["bytes_out"])
        yield self._disconnects(stats["disconnects"])
        yield _gauge("chatd_sendq_bytes", "Output queued for all clients, not yet taken by "
                     "the kernel", stats["sendq_bytes"])
        yield _gauge("chatd_sendq_max_bytes", "The fullest single client output queue",
                     stats["sendq_max_bytes"])
        yield _gauge("chatd_sendq_limit_bytes", "The sendq_bytes limit in force",
                     config.sendq_bytes)
        yield _gauge("chatd_bans", "Bans in force", len(self._bans.active()))
        if self._admin is not None:
            yield self._admin_commands(self._admin.outcomes())
        if self._accounts is not None:
            yield from self._logins()
        yield from self._cluster()

    def _counter(self, name: str, documentation: str, value: int) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation)
        family.add_metric([], self._monotonic(name, value))
        return family

    def _monotonic(self, key, value: int) -> int:
        with self._lock:
            value = max(value, self._high.get(key, 0))
            self._high[key] = value
        return value

    @staticmethod
    def _by_protocol(stats: dict) -> GaugeMetricFamily:
        family = GaugeMetricFamily("chatd_clients_by_protocol",
                                   "Chat clients connected to this node, by the protocol they "
                                   "speak", labels=["protocol"])
        for protocol in ("line", "irc"):  # both always, so a dashboard's series exist
            family.add_metric([protocol], stats["protocols"].get(protocol, 0))
        return family

    def _messages(self, stats: dict) -> CounterMetricFamily:
        family = CounterMetricFamily("chatd_messages", "Chat messages sent by clients: to "
                                     "their room (with /me actions) or private (/msg)",
                                     labels=["kind"])
        for kind in ("room", "private"):
            family.add_metric([kind], self._monotonic(("messages", kind), stats[f"{kind}_messages"]))
        return family

    def _disconnects(self, counts: dict) -> CounterMetricFamily:
        family = CounterMetricFamily("chatd_disconnects", "Client connections ended, by reason",
                                     labels=["reason"])
        for kind in CLOSE_KINDS:  # every reason, 0 until it happens: rate() works at once
            family.add_metric([kind], counts.get(kind, 0))
        return family

    @staticmethod
    def _admin_commands(counts: dict) -> CounterMetricFamily:
        family = CounterMetricFamily("chatd_admin_commands",
                                     "Admin socket requests answered, by command and outcome "
                                     "(ok or the error code)", labels=["command", "outcome"])
        for (command, outcome), count in sorted(counts.items(), key=lambda i: (str(i[0][0]), i[0][1])):
            family.add_metric([command or "none", outcome], count)
        return family

    def _logins(self):
        """Logins by outcome (every outcome from the start, so rate() works at once), and
        the accounts there are: left out of this scrape if the store cannot count them (the
        store error is logged by Accounts; a missing sample says "unknown", 0 would lie)."""
        accounts = self._accounts
        counts = accounts.counts()
        family = CounterMetricFamily("chatd_logins", "Logins (/login, PASS) by outcome: ok, "
                                     "failed (wrong password or no such account), throttled "
                                     "(too many attempts), disabled (account disabled), "
                                     "refused (password over an unencrypted connection)",
                                     labels=["outcome"])
        for outcome, count in counts.items():
            family.add_metric([outcome], count)
        yield family
        try:
            total = accounts.count()
        except AccountError:
            return
        yield _gauge("chatd_accounts", "Accounts registered (in the cluster, in cluster mode)", total)

    def _cluster(self):
        bus = self._bus
        link_up = getattr(bus, "link_up", None)
        if link_up is not None:  # cluster mode only: a single node has no link to lose
            yield _gauge("chatd_cluster_link_up", "1 while this node reaches the cluster's Redis",
                         1 if link_up else 0)
            yield CounterMetricFamily(
                "chatd_cluster_rejected", "Values read from Redis that this node refused: no "
                "cluster secret's tag, a replay, or not what a node could have written "
                "(cluster_entry_rejected)", value=bus.rejected)
        yield _gauge("chatd_cluster_nodes", "Live nodes in the cluster, this one included "
                     "(1 on a single node)", getattr(bus, "live_nodes", 1))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry of chatd's own: not the library's global one, whose default process and
    GC collectors would add work to every scrape and state no test could reset."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _Handler(BaseHTTPRequestHandler):
    """One connection: ``GET /metrics`` or ``/health`` (a query string is ignored), 404 for
    any other path; http.server answers other methods (501) and malformed requests (400, 414,
    431)."""

    timeout = SOCKET_SECONDS
    server_version = f"chatd/{__version__}"
    sys_version = ""  # the Server header need not name the Python version

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE, self.server.exposition())
        elif path == "/health":
            problem = self.server.health()
            self._answer(503 if problem else 200, "text/plain; charset=utf-8",
                         f"{problem or 'ok'}\n".encode())
        else:
            self.send_error(404)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        # http.server would print every request to stderr; requests are not chatd events
        pass


class MetricsServer(socketserver.TCPServer):
    """The endpoint on an already bound, listening ``sock``. ``start()``, ``stop()``,
    ``address``; the service owns it."""

    def __init__(self, sock: socket.socket, registry: CollectorRegistry, health=None,
                 interval=None) -> None:
        """``health()``: None when this node takes new clients, else why not (GET /health).
        ``interval()``: ``metrics_interval`` in force (seconds a collection is reused)."""
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()  # TCPServer made one of its own; ours is bound already
        self.socket = sock
        self.address_family = sock.family
        self.registry = registry
        self.health = health or (lambda: None)
        self.address = sock.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()  # guards _deadlines
        self._deadlines: dict[socket.socket, float] = {}
        self.interval = interval or (lambda: 0.0)
        #: Guards the last collection (body, time). Held while collecting, so concurrent
        #: scrapes wait for one collection; takes the hub lock (for a copy) inside, never the
        #: reverse. Innermost but for what the collection itself takes.
        self._collect_lock = threading.Lock()
        self._body: bytes | None = None
        self._collected_at = 0.0
        self._thread = threading.Thread(target=self.serve_forever, args=(POLL_SECONDS,),
                                        name="metrics", daemon=True)

    def exposition(self) -> bytes:
        """The text format of the last collection if it is younger than ``interval()``, else
        of a new one (on the calling connection thread)."""
        with self._collect_lock:
            now = time.monotonic()
            if self._body is None or now - self._collected_at >= self.interval():
                self._body = generate_latest(self.registry)
                self._collected_at = time.monotonic()
            return self._body

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        log.info("metrics_listening", host=host, port=port)

    def stop(self) -> None:
        """Stop serving, cut the connections still open, close the socket."""
        if self._thread.is_alive():
            self.shutdown()
        with self._lock:
            open_connections = list(self._deadlines)
        for conn in open_connections:
            _cut(conn)
        self.server_close()

    def process_request(self, request, client_address) -> None:
        """On the serving thread: a thread for the connection. When all MAX_CONNECTIONS are
        taken, the oldest is cut to make room, so that silent or trickling peers cannot keep
        Prometheus out; if even that frees nothing within EVICT_SECONDS, the new one is
        closed."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                oldest = min(self._deadlines, key=self._deadlines.get, default=None)
            if oldest is not None:
                _cut(oldest)
            if not self._slots.acquire(timeout=EVICT_SECONDS):
                self.shutdown_request(request)
                return
        with self._lock:
            self._deadlines[request] = time.monotonic() + REQUEST_SECONDS
        try:
            threading.Thread(target=self._serve_connection, args=(request, client_address),
                             name="metrics-conn", daemon=True).start()
        except RuntimeError:  # out of threads
            self._forget(request)
            self.shutdown_request(request)

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._forget(request)
            self.shutdown_request(request)

    def _forget(self, request) -> None:
        with self._lock:
            self._deadlines.pop(request, None)
        self._slots.release()

    def service_actions(self) -> None:
        """Between polls on the serving thread: cut connections past REQUEST_SECONDS."""
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
        for conn in late:
            _cut(conn)

    def handle_error(self, request, client_address) -> None:
        """A peer that went away (or was cut off) is routine; anything else is a bug. Either
        way the log gets it, never stderr (socketserver's default prints a traceback)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("metrics_connection_failed", peer=str(client_address), error=str(exc))
        else:
            log.exception("metrics_request_failed", peer=str(client_address))


def _cut(conn: socket.socket) -> None:
    """Wake the connection's thread: its next read or write fails and it ends."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
