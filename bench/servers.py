"""The servers under test: start one on a free port (pinned to its core), stop it, read its
CPU time, memory and thread count from /proc.

Each workload run starts a fresh server and stops it afterwards, so peak RSS (VmHWM) and CPU
time belong to that run alone. Runs in the benchmark's main thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = ROOT / ".venv" / "bin"
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_stats(pid: int) -> dict:
    """CPU seconds (all threads, user+system), current and peak RSS in KiB, threads."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # fields[0] is the state (field 3 of stat(5)); utime and stime are fields 14 and 15
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.split()[0] if value.split() else ""
    return {"cpu_s": cpu, "rss_kib": int(status.get("VmRSS", 0)),
            "hwm_kib": int(status.get("VmHWM", 0)), "threads": int(status.get("Threads", 0))}


def busy_cpu_s() -> float:
    """CPU seconds all cores have spent not idle since boot (to see what else ran meanwhile)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


class Meter:
    """CPU shares over a measured stretch: the server's (all its processes together, and each
    one's in ``process_cpu_share``), the load generator's (this process) and everything else's
    (other processes on the machine: noise); and the Redis commands the server ran meanwhile,
    when it has a Redis (``server.redis_commands()``). ``stop()`` returns them."""

    def __init__(self, server) -> None:
        self.server = server
        self.wall = time.monotonic()
        self.each = {label: member.stats()["cpu_s"] for label, member in server.members()}
        self.redis = server.redis_commands()
        self.own = _own_cpu_s()
        self.busy = busy_cpu_s()

    def stop(self) -> dict:
        wall = time.monotonic() - self.wall
        each = {label: member.stats() for label, member in self.server.members()}
        redis = self.server.redis_commands()
        shares = {label: round((st["cpu_s"] - self.each[label]) / wall, 3)
                  for label, st in each.items()}
        srv = sum(st["cpu_s"] - self.each[label] for label, st in each.items())
        own = _own_cpu_s() - self.own
        other = max(0.0, busy_cpu_s() - self.busy - srv - own)
        total = lambda key: sum(st[key] for st in each.values())  # noqa: E731
        return {"server_cpu_s": round(srv, 3), "server_cpu_share": round(srv / wall, 3),
                "process_cpu_share": shares,
                "loadgen_cpu_share": round(own / wall, 3),
                "other_cpu_share": round(other / wall, 3),
                "server_rss_kib": total("rss_kib"), "server_rss_peak_kib": total("hwm_kib"),
                "server_threads": total("threads"),
                "redis_commands": None if redis is None or self.redis is None
                else redis - self.redis}


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class ServerError(RuntimeError):
    pass


class Server:
    """A server process. Subclasses give ``name`` and ``command()``; callers use ``start()``,
    ``stop()``, ``stats()``, ``log_tail()``, ``port`` (``ports``: every endpoint clients may
    use; a multi-node server, bench/clusters.py, has several) and ``pid``.

    ``port`` may be set before ``start()`` (a linked server must know its peers' ports before
    any of them starts); otherwise ``start()`` picks a free one."""

    name = "?"
    source: str | None = None  # chatd: digest of the sources this server runs

    def __init__(self, core: int | None) -> None:
        self.core = core
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log_path = self.workdir / "server.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def members(self) -> list[tuple[str, Server]]:
        """The processes that make up this server, labelled, for per-process CPU."""
        return [(self.name, self)]

    def redis_commands(self) -> int | None:
        """Redis commands run so far (INFO commandstats), for servers that use a Redis."""
        return None

    def linked(self) -> bool:
        """A multi-node server's nodes all see each other (one process: always)."""
        return True

    def link_breaks(self) -> int | None:
        """Links between nodes lost so far (None: no links, or this kind cannot tell)."""
        return None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Listening (subclasses may also wait for other things, e.g. chatd's admin socket)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> Server:
        self.port = self.port or free_port()
        cmd = self.command()
        if self.core is not None:
            cmd = ["taskset", "-c", str(self.core), *cmd]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     cwd=ROOT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.name} not listening on port {self.port} after {timeout}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict:
        return proc_stats(self.pid)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def departure_logged(self, nick: bytes) -> str | None:
        """Why the server says it dropped client ``nick``, when only its log tells."""
        return None

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def chatd_command() -> list[str]:
    """How to run this tree's chatd: the script in its venv, or, in a tree without one (a git
    worktree), this interpreter with ``-m chatd``: servers start in ROOT, which ``-m`` puts
    first on the path, so the server runs this tree's code, not the editable install's."""
    script = VENV_BIN / "chatd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "chatd"]


def source_digest(*packages: str) -> str:
    """A short hash of a package's Python sources as they are now (chatd is installed
    editable, so this is what a server started now runs)."""
    digest = hashlib.sha1()
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


class Chatd(Server):
    name = "chatd"
    config = BENCH / "chatd-bench.toml"

    def start(self, timeout: float = 20.0) -> Server:
        self.source = source_digest("chatd", "chatctl")
        return super().start(timeout)

    @property
    def admin_socket(self) -> Path:
        return self.workdir / "admin.sock"

    def command(self) -> list[str]:
        return [*chatd_command(), "-c", str(self.config), *self.listeners(),
                "--admin-socket", str(self.admin_socket),
                "--state-dir", str(self.workdir / "state"), "--log-level", "warning",
                "--log-format", "json"]

    def listeners(self) -> list[str]:
        """The options that put the clients' listener on ``port``: the line protocol's."""
        return ["--port", str(self.port)]

    def ready(self) -> bool:
        return self.admin_socket.exists() and super().ready()


class ChatdIrc(Chatd):
    """chatd-bench.toml with the IRC listener on (``--irc-port``, docs/protocol.md §14), for
    IRC clients (protocols.ChatdIrc): chatd's IRC path, measured with the clients ngircd gets.
    ``port``, the one the load generator connects to (and ``ready()`` waits for), is the IRC
    port; the line protocol's listener, which chatd always opens, is on a port the kernel
    picks (``--port 0``) and stays unused."""

    name = "chatd-irc"

    def listeners(self) -> list[str]:
        return ["--port", "0", "--irc-port", str(self.port)]


class ChatdNoHistory(Chatd):
    """chatd-bench.toml with room history off (``history_lines = 0``): the other side of
    issue 12's history on/off ratio (bench/history.py)."""

    name = "chatd-nohistory"

    def __init__(self, core) -> None:
        super().__init__(core)
        self.config = self.workdir / "chatd.toml"
        self.config.write_text(Chatd.config.read_text() + "\n[history]\nhistory_lines = 0\n")


class ChatdMetrics(Chatd):
    """chatd as above with its Prometheus endpoint on (``metrics_port``), for the metrics
    workload (bench/chat.py): the same config plus a ``[metrics]`` section."""

    name = "chatd-metrics"

    def start(self, timeout: float = 20.0) -> Server:
        self.metrics_port = free_port()
        self.config = self.workdir / "chatd-bench.toml"
        self.config.write_text((BENCH / "chatd-bench.toml").read_text()
                               + f"\n[metrics]\nmetrics_port = {self.metrics_port}\n")
        return super().start(timeout)

    def ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.metrics_port), timeout=0.5).close()
        except OSError:
            return False
        return super().ready()


class Naive(Server):
    name = "naive"

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / "naive_server.py"), "--port", str(self.port)]


class Ngircd(Server):
    name = "ngircd"

    def command(self) -> list[str]:
        conf = self.workdir / "ngircd.conf"
        text = (BENCH / "ngircd.conf").read_text().replace("@PORT@", str(self.port))
        conf.write_text(text)
        return [ngircd_binary(), "-n", "-f", str(conf)]

    def departure_logged(self, nick: bytes) -> str | None:
        """ngircd tells the channel only ``QUIT :<nick>``; its log has the reason."""
        found = re.findall(rf'User "{re.escape(nick.decode())}!\S*" unregistered '
                           r"\(connection \d+\): (.*?)\.?$", self.log_text(), re.M)
        return found[-1] if found else None


def ngircd_binary() -> str:
    return shutil.which("ngircd") or "/usr/sbin/ngircd"


SERVERS = {"chatd": Chatd, "ngircd": Ngircd, "naive": Naive, "chatd-nohistory": ChatdNoHistory,
           "chatd-metrics": ChatdMetrics, "chatd-irc": ChatdIrc}
