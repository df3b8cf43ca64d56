"""Multi-node servers: K processes that together serve one chat, each with its own endpoint.

- ``ngircd2`` / ``ngircd3``: 2 (3) ngircd processes linked with ngircd's own server protocol
  on loopback, in a star: node0 connects out to every other node (``[Server]`` with ``Port``),
  the others wait for it (``Passive = yes``). A line between two leaf nodes of ngircd3 crosses
  node0. ``start()`` returns once every node's ``LINKS`` lists all K servers.
- ``chatd-cluster`` / ``chatd-cluster3`` (and ``chatd-cluster-nohistory``: two nodes,
  ``history_lines = 0``): one ``redis-server`` (free port, no persistence) and
  2 (3) chatd processes with ``[cluster] redis_url`` and ``node_name`` (docs/protocol.md §8), each waited
  for like the single chatd, then until every node's ``status`` counts K nodes (when it
  reports a count). Selectable, not in the default list: it works once chatd understands the
  ``[cluster]`` section.

A :class:`Cluster` looks like a :class:`~bench.servers.Server` to the workloads (``start``,
``stop``, ``stats``, ``alive``, ``ports``, ``members``...), so single and multi-node servers
share one code path. Pinning: node k runs on core ``(core + k) % cores`` (with the load
generator on cpu 0 and servers on cpu 1 of 2 cores: node0 and node2 on cpu 1, node1 on cpu 0
beside the load generator); Redis shares node0's core. Runs in the benchmark's main thread.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

from bench.scale import admin_request
from bench.servers import BENCH, Chatd, Ngircd, Server, ServerError, free_port
from bench.servers import SERVERS as SINGLE

LINK_PASSWORD = "benchlink"


def node_cores(core: int | None, count: int) -> list[int | None]:
    """Spread ``count`` nodes over the cores, starting at the server core."""
    if core is None:
        return [None] * count
    cores = os.cpu_count() or 1
    return [(core + k) % cores for k in range(count)]


class Cluster:
    """K node processes (and helpers such as Redis) started and stopped as one server.
    Subclasses give ``name``, ``nodes_count`` and ``build()`` (create the member Servers with
    their ports set), and may override ``linked()`` (all nodes see each other)."""

    name = "?"
    nodes_count = 2
    source: str | None = None

    def __init__(self, core: int | None) -> None:
        self.core = core
        self.nodes: list[Server] = []
        self.helpers: list[tuple[str, Server]] = []  # started first, stopped last
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))

    # -- what the workloads use -----------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def proc(self):
        """The first member that exited (for error messages), else node0's process."""
        for _, member in self.members():
            if member.proc is not None and member.proc.poll() is not None:
                return member.proc
        return self.nodes[0].proc

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    def members(self) -> list[tuple[str, Server]]:
        return [(f"node{k}", node) for k, node in enumerate(self.nodes)] + self.helpers

    def redis_commands(self) -> int | None:
        return None

    def build(self) -> None:
        raise NotImplementedError

    def linked(self) -> bool:
        return True

    def link_breaks(self) -> int | None:
        """Links between nodes lost so far (None: this kind cannot tell)."""
        return None

    def start(self, timeout: float = 20.0) -> Cluster:
        self.build()
        try:
            for _, member in [*self.helpers, *reversed(list(enumerate(self.nodes)))]:
                member.start(timeout)
            self._wait_linked(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_linked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.linked():
            if not self.alive():
                raise ServerError(f"{self.name}: a node exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerError(f"{self.name}: nodes not linked after {timeout}s: "
                                  f"{self.log_tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return all(member.alive() for _, member in self.members())

    def stats(self) -> dict:
        """The members' figures added up (CPU, RSS, peak RSS, threads)."""
        each = [member.stats() for _, member in self.members()]
        return {key: sum(st[key] for st in each) for key in each[0]}

    def stop(self) -> int | None:
        """Stop the nodes, then the helpers; returns the first non-zero exit status."""
        statuses = [node.stop() for node in self.nodes]
        statuses += [helper.stop() for _, helper in self.helpers]
        return next((s for s in statuses if s), statuses[0] if statuses else None)

    def log_tail(self, size: int = 2000) -> str:
        per = max(200, size // max(1, len(self.members())))
        return " | ".join(f"{label}: {member.log_tail(per)}" for label, member in self.members())

    def log_text(self) -> str:
        return "".join(node.log_text() for node in self.nodes)

    def departure_logged(self, nick: bytes) -> str | None:
        return next((r for r in (n.departure_logged(nick) for n in self.nodes) if r), None)

    def cleanup(self) -> None:
        for _, member in self.members():
            member.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- ngircd linked ------------------------------------------------------------------------------


class NgircdNode(Ngircd):
    """One ngircd of a linked set: its own name (``nodeK.bench``) and ``[Server]`` sections."""

    def __init__(self, core, index: int, links: str) -> None:
        self.name = f"ngircd-node{index}"
        super().__init__(core)
        self.index, self.links = index, links

    def command(self) -> list[str]:
        cmd = super().command()
        conf = Path(cmd[-1])
        text = conf.read_text().replace("Name = bench.irc", f"Name = node{self.index}.bench")
        # a broken link is retried after 5 s (ngircd's minimum), not the default 60 s
        text = text.replace("[Limits]\n", "[Limits]\nConnectRetry = 5\n", 1)
        conf.write_text(text + self.links)
        return cmd

    def link_breaks(self) -> int:
        """Server links this node lost (its log: ``Server "…" unregistered``)."""
        return len(re.findall(r'Server "node\d+\.bench" unregistered', self.log_text()))


def _server_section(index: int, port: int | None) -> str:
    """A ``[Server]`` block for peer ``index``: active (with its port) or passive."""
    where = (f"Host = 127.0.0.1\nPort = {port}\n" if port is not None else "Passive = yes\n")
    return (f"\n[Server]\nName = node{index}.bench\n{where}MyPassword = {LINK_PASSWORD}\n"
            f"PeerPassword = {LINK_PASSWORD}\n")


class NgircdLinked(Cluster):
    name = "ngircd2"

    def build(self) -> None:
        ports = [free_port() for _ in range(self.nodes_count)]
        cores = node_cores(self.core, self.nodes_count)
        for k in range(self.nodes_count):
            if k == 0:  # the hub connects out to every leaf
                links = "".join(_server_section(j, ports[j]) for j in range(1, self.nodes_count))
            else:
                links = _server_section(0, None)
            node = NgircdNode(cores[k], k, links)
            node.port = ports[k]
            self.nodes.append(node)

    def linked(self) -> bool:
        return all(irc_links(node.port) >= self.nodes_count for node in self.nodes)

    def link_breaks(self) -> int:
        return sum(node.link_breaks() for node in self.nodes)


class NgircdLinked3(NgircdLinked):
    name = "ngircd3"
    nodes_count = 3


def irc_links(port: int, timeout: float = 5.0) -> int:
    """How many servers ``LINKS`` lists on the ngircd at ``port`` (0 when it cannot tell).
    Registers a throw-away client that joins no channel, so the chat sees nothing of it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"NICK lnk%05d\r\nUSER l 0 * :links\r\nLINKS\r\nQUIT\r\n"
                         % (port % 100000))
            data = b""
            deadline = time.monotonic() + timeout
            while b" 365 " not in data and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0
    return data.count(b" 364 ")


# -- chatd cluster ------------------------------------------------------------------------------


class Redis(Server):
    """A throw-away redis-server: free port, loopback only, no RDB snapshots, no AOF, and a
    password, as docs/cluster.md deploys it (chatd refuses a TCP Redis without one)."""

    name = "redis"
    password = secrets.token_hex(16)

    def command(self) -> list[str]:
        return [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
                "--requirepass", self.password]

    def ready(self) -> bool:
        try:
            return resp_call(self.port, b"PING", password=self.password).startswith(b"+PONG")
        except OSError:
            return False

    def commands(self) -> int:
        """Commands run so far, from INFO commandstats (minus the INFO and AUTH calls)."""
        reply = resp_call(self.port, b"INFO", b"commandstats", password=self.password)
        total = 0
        for line in reply.decode(errors="replace").splitlines():
            name, _, stats = line.partition(":")
            if name.startswith("cmdstat_") and name not in ("cmdstat_info", "cmdstat_auth"):
                total += int(stats.split("calls=", 1)[1].split(",", 1)[0])
        return total


def redis_binary() -> str:
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def resp_call(port: int, *args: bytes, timeout: float = 2.0, password: str | None = None) -> bytes:
    """One Redis command over RESP on a fresh connection (after AUTH when given a password);
    the raw reply (a bulk string's body, or the status line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        data = b""
        if password:
            sock.sendall(_resp(b"AUTH", password.encode()))
            line, data = _read_line(sock, data)
            if not line.startswith(b"+OK"):
                return line
        sock.sendall(_resp(*args))
        head, body = _read_line(sock, data)
        if not head.startswith(b"$"):
            return head
        size = int(head[1:])
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return body[:size]


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _read_line(sock, data: bytes) -> tuple[bytes, bytes]:
    """(the first line, without CRLF; what came after it) reading from ``sock`` after ``data``."""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    line, _, rest = data.partition(b"\r\n")
    return line, rest


class ChatdNode(Chatd):
    """One chatd of a cluster: chatd-bench.toml plus a ``[cluster]`` section."""

    def __init__(self, core, index: int, redis_url: str, extra: str = "",
                 secret: str = "") -> None:
        self.name = f"chatd-node{index}"
        super().__init__(core)
        self.config = self.workdir / "chatd.toml"
        secret_file = self.workdir / "cluster.secret"  # the same secret on every node
        secret_file.touch(0o600)
        secret_file.write_text(secret)
        self.config.write_text((BENCH / "chatd-bench.toml").read_text()
                               + f'\n[cluster]\nredis_url = "{redis_url}"\n'
                               f'node_name = "node{index}"\n'
                               f'cluster_secret_file = "{secret_file}"\n' + extra)


class ChatdCluster(Cluster):
    name = "chatd-cluster"
    node_extra = ""  # more TOML for every node's config

    def build(self) -> None:
        cores = node_cores(self.core, self.nodes_count)
        self.redis = Redis(cores[0])
        self.redis.port = free_port()
        self.helpers = [("redis", self.redis)]
        url = f"redis://:{self.redis.password}@127.0.0.1:{self.redis.port}/0"
        secret = secrets.token_hex(32) + "\n"
        for k in range(self.nodes_count):
            node = ChatdNode(cores[k], k, url, self.node_extra, secret)
            node.port = free_port()
            self.nodes.append(node)

    def start(self, timeout: float = 20.0) -> Cluster:
        super().start(timeout)
        self.source = self.nodes[0].source
        return self

    def linked(self) -> bool:
        """Every node's ``status`` counts K nodes (docs/protocol.md §8: status adds the number of nodes).
        A status without a node count cannot tell, so it passes: the nodes are up."""
        for node in self.nodes:
            try:
                _, reply = admin_request(node.admin_socket, "status", timeout=5.0)
            except (OSError, ValueError):
                return False
            count = (reply.get("result") or {}).get("nodes")
            if isinstance(count, list):
                count = len(count)
            if isinstance(count, int) and count < self.nodes_count:
                return False
        return True

    def redis_commands(self) -> int | None:
        try:
            return self.redis.commands()
        except (OSError, ValueError, IndexError):
            return None


class ChatdCluster3(ChatdCluster):
    name = "chatd-cluster3"
    nodes_count = 3


class ChatdClusterNoHistory(ChatdCluster):
    """Two nodes with room history off: what history costs the cluster, in the same run."""
    name = "chatd-cluster-nohistory"
    node_extra = "\n[history]\nhistory_lines = 0\n"


SERVERS = {**SINGLE, "ngircd2": NgircdLinked, "ngircd3": NgircdLinked3,
           "chatd-cluster": ChatdCluster, "chatd-cluster3": ChatdCluster3,
           "chatd-cluster-nohistory": ChatdClusterNoHistory}
