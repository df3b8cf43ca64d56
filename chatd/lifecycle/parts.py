"""The parts the config chooses for the service (service.py composes them): the bus, the
writer's hold, the history store, the metrics endpoint, and joining the cluster. Cluster and metrics modules are
imported only when the config turns them on.
"""

from __future__ import annotations

import socket

from chatd.core.bus import LocalBus
from chatd.core.flusher import CLUSTER_HOLD_SECONDS, HOLD_SECONDS, Flusher
from chatd.lifecycle.startup import StartupError, state_dir
from chatd.store.accounts import AccountFileError
from chatd.store.bans import BanFileError
from chatd.store.history import HistoryFileError, NullStore, RedisStore
from chatd.store.sqlite import SqliteStore


def bus(config):
    """LocalBus on a single node; the cluster's bus when ``redis_url`` is set (its secret was
    checked by preflight.py: read here again, it may only have gone since)."""
    if not config.redis_url:
        return LocalBus()
    # Imported only here: a single node never loads the cluster package (and redis-py), which
    # every start and every upgrade's pause would pay for.
    from chatd.cluster import RedisBus
    from chatd.cluster.secret import SecretError, read_secret

    try:
        key = read_secret(config.cluster_secret_file)
    except SecretError as exc:
        raise StartupError(f"cluster.cluster_secret_file: {exc}") from None
    return RedisBus(config.redis_url, config.node_name or "", key, config.node_timeout,
                    config.history_lines, config.max_line_bytes)


def flusher(config, bus) -> Flusher:
    """The writer thread, holding longer between takes on a cluster node (flusher.py:
    CLUSTER_HOLD_SECONDS, whose CPU also relays) than on a single one."""
    return Flusher(config.sendq_bytes,
                   HOLD_SECONDS if isinstance(bus, LocalBus) else CLUSTER_HOLD_SECONDS)


def history_store(config, bus):
    """Where room history persists (SPEC §10): nowhere, SQLite in state_dir, or the cluster's
    Redis, which every node reads."""
    if not config.history_lines:
        return NullStore()
    if config.redis_url:
        return RedisStore(bus)
    return SqliteStore(state_dir(config), config.history_lines)


def load_state(bans, history_store, accounts) -> None:
    """What a start reads before anything is bound: the bans (loaded), the history file (a
    link refused) and the accounts file (checked and opened, if there is one). Raises
    StartupError with what the operator must fix."""
    try:
        bans.load()
        history_store.check()  # a symbolic link: refused (store/sqlite.py)
        if accounts is not None:
            accounts.store.open()  # a corrupt file: refused (store/accounts.py)
    except (BanFileError, HistoryFileError, AccountFileError) as exc:
        raise StartupError(str(exc)) from None


def accounts(config, current, bus):
    """Accounts (SPEC §12): in state_dir's SQLite file on a single node, in the cluster's
    Redis (sealed, shared by every node) in cluster mode. ``current()`` is the Config in force
    now. Open it with ``.store.open()``."""
    from chatd.accounts import Accounts

    if config.redis_url:
        from chatd.cluster.accounts import RedisAccounts

        return Accounts(RedisAccounts(bus.link, bus.standing), current)
    from chatd.store.accounts import SqliteAccounts

    return Accounts(SqliteAccounts(state_dir(config)), current)


def join_cluster(bus, bans, address: tuple) -> None:
    """Reach Redis and share the bans (cluster mode only); raises StartupError."""
    from chatd.cluster import ClusterStartError  # cluster mode only: see bus()

    host, port = address
    bus.address = f"{host}:{port}"
    if not bus.node:  # docs/protocol.md §8: HOSTNAME:PORT unless node_name is set
        bus.node = f"{socket.gethostname()}:{port}"
    try:
        bus.connect()
        bans.replace(bus.share_bans(bans.records()))
    except (ClusterStartError, BanFileError) as exc:
        raise StartupError(str(exc)) from None


def metrics_server(sock: socket.socket, hub, admin, bus, bans, config, started_at,
                   accounts=None):
    """The Prometheus endpoint on ``sock`` (metrics.py); ``config`` and ``started_at`` are
    read when asked (a reload swaps the config); ``accounts`` (None: none) adds the
    login and account families. Imported here: prometheus_client is needed only when
    metrics are on."""
    try:
        from chatd.admin import metrics
    except ImportError as exc:
        sock.close()
        raise StartupError(f"metrics.metrics_port is set but {exc.name or exc} cannot be "
                           "imported (pip install prometheus_client)") from None
    collector = metrics.ChatdCollector(hub, admin, bus, bans, config=config,
                                       started_at=started_at, accounts=accounts)

    def unhealthy() -> str | None:
        """Why a load balancer should send this node no new clients (``GET /health``: 503
        and this line), or None (200). Read on a metrics connection thread."""
        if not hub.responsive(1.0):
            return "hub lock not available"
        if getattr(bus, "link_up", True) is False:
            return "cluster unavailable"
        if hub.client_count() >= config().max_clients:
            return "server full"
        return None

    return metrics.MetricsServer(sock, metrics.registry_for(collector), unhealthy,
                                 interval=lambda: config().metrics_interval)


def protocols(settings) -> dict:
    """What makes a connection's protocol object, by the protocol's name (core/protocol.py):
    the line protocol's one object, and IRC's (docs/protocol.md §14), one per connection, all
    with the same room renderers, so that a room renders a line once for its IRC members
    (once per combination of capabilities that changes how a line looks). An upgrade
    rebuilds handed-over clients by name with these."""
    from chatd.irc.protocol import IrcProtocol, room_renderers
    from chatd.line.protocol import LINE

    renderers = room_renderers(settings)
    return {LINE.name: lambda: LINE, "irc": lambda: IrcProtocol(renderers)}
