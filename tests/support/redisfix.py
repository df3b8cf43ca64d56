"""A real ``redis-server`` per test, for the cluster-mode tests (issue 10, docs/protocol.md §8).

Each :class:`RedisServer` is its own ``redis-server`` process on a free loopback port (and, if
asked, a Unix socket), with a password (``requirepass``, random per server: chatd refuses a TCP
Redis without credentials; ``password=None`` for one without), started from the command line alone, so it never reads
``/etc/redis/redis.conf`` and is never the system service. It keeps nothing on disk
(``--save "" --appendonly no``, ``--dir`` a temporary directory), so a restart is a Redis
restart without persistence: same port, empty data. It is stopped by pid at teardown.

Readiness is by condition: the fixture waits (with a deadline) until the server answers PING.

Fixture
    ``redis_server``  factory: ``redis_server(unix_socket=False, args=(), password=RANDOM)
                      -> RedisServer``.
                      Skips the test, naming the Debian package ``redis-server``, when the
                      binary is not installed (``make test`` installs it as root). At teardown
                      every server is stopped (SIGTERM, then SIGKILL after a bound) and its
                      directory removed.

    Loaded for every test through ``pytest_plugins`` in tests/conftest.py.

Class
    :class:`RedisServer`  ``.url``, ``.port``, ``.pid``, ``.unix_path``, ``.unix_url``,
                          ``.kill()``, ``.stop()``, ``.restart()``, ``.client()``,
                          ``.commands()``, ``.log_text()``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

PACKAGE = "redis-server"  # the Debian package, and the binary it installs
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 5  # another process may take the free port between our probe and Redis' bind


def redis_server_binary() -> str:
    """The ``redis-server`` to run, or skip the test naming the package that provides it."""
    path = shutil.which(PACKAGE)
    if path is None:
        pytest.skip(f"{PACKAGE} is not installed (Debian package {PACKAGE}; "
                    "`make test` installs it when run as root)")
    return path


def redis_module():
    """The ``redis`` client library (a chatd dependency), or skip naming it."""
    return pytest.importorskip("redis", reason="the Python package redis is not installed "
                                               "(a chatd dependency: make .venv/.stamp-test)")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ping(port: int, timeout: float = 1.0, password: str | None = None) -> bool:
    """True if a Redis on ``port`` answers ``PING`` with ``+PONG`` (inline commands, after
    ``AUTH`` when it has a password)."""
    hello, expected = (f"AUTH {password}\r\n".encode(), b"+OK\r\n") if password else (b"", b"")
    expected += b"+PONG\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(hello + b"PING\r\n")
            reply = b""
            while reply.count(b"\r\n") < expected.count(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == expected
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` subprocess; its log (stdout and stderr) goes to a file in its dir.

    ``commands()`` counts what the server processed for others: the PINGs of the readiness
    wait and the INFO calls of ``commands()`` itself are subtracted, so the difference of two
    calls is exactly what chatd (and the test's own clients) sent in between.
    """

    def __init__(self, *, unix_socket: bool = False, args=(), password: str | None = "") -> None:
        self._binary = redis_server_binary()  # first: a skipped test leaves no directory
        #: "" (the default): a random one; None: no password at all
        self.password = secrets.token_hex(8) if password == "" else password
        # Short, because a Unix socket path must fit in 108 bytes (as support/daemon.py's admin socket).
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.unix_path = os.path.join(self.dir, "redis.sock") if unix_socket else None
        self.extra_args = list(args)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._clients: list = []
        self._stats: socket.socket | None = None  # the raw connection commands() asks INFO on
        self._stats_buf = b""
        self._own = 0  # commands the fixture itself sent to the current process

    def __repr__(self) -> str:
        return f"<RedisServer :{self.port} pid {self.pid}>"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def auth(self) -> str:
        """``:PASSWORD@`` for a URL, or "" for a server without one."""
        return f":{self.password}@" if self.password else ""

    @property
    def url(self) -> str:
        return f"redis://{self.auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        """The socket's URL, without the password (unix:// URLs carry it as ?password=)."""
        return f"unix://{self.unix_path}" if self.unix_path else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- starting ----------------------------------------------------------------------------

    def argv(self, port: int) -> list[str]:
        argv = [self._binary, "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--supervised", "no", "--logfile", ""]
        if self.unix_path:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def start(self) -> RedisServer:
        """Start on a free port, retrying if another process took it before Redis bound it."""
        for _ in range(START_ATTEMPTS):
            if self._launch(free_port()):
                return self
        pytest.fail(f"redis-server did not start in {START_ATTEMPTS} attempts:\n"
                    + self.log_text()[-3000:])

    def restart(self) -> RedisServer:
        """Stop (if running) and start again on the same port with empty data, as a Redis
        restarted without persistence. Clients connected to the old process see it go."""
        if self.running():
            self.stop()
        for name in os.listdir(self.dir):  # nothing should be here but the log: make sure
            path = os.path.join(self.dir, name)
            if name != "redis.log":
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        if not self._launch(self.port):
            pytest.fail(f"redis-server could not restart on port {self.port}:\n"
                        + self.log_text()[-3000:])
        return self

    def _launch(self, port: int) -> bool:
        """Run redis-server on ``port`` and wait until it answers PING. False if the port was
        taken (the caller may try another); fails the test on any other way of not starting."""
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)  # a killed server leaves its socket file behind
        self._drop_stats()
        self._own = 0
        self.port = port
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(port), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if ping(port, password=self.password):
                self._own += 2 if self.password else 1
                return True
            if self.proc.poll() is not None:
                if "Address already in use" in self.log_text()[-2000:]:
                    return False
                pytest.fail(f"redis-server exited ({self.proc.returncode}) at start:\n"
                            + self.log_text()[-3000:])
            if time.monotonic() >= deadline:
                self.kill()
                pytest.fail(f"redis-server did not answer PING within {READY_TIMEOUT}s:\n"
                            + self.log_text()[-3000:])
            time.sleep(0.02)  # how often we look, not a guess at how long Redis takes

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "redis.log")

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM by pid (Redis exits without saving: no save points), SIGKILL if it has not
        exited within ``timeout``. Returns the exit status (None if it was not started)."""
        self._drop_stats()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL, as a crash: no shutdown, clients' connections reset. Waits for the exit."""
        self._drop_stats()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: close the test's clients, stop the server, remove its directory."""
        for client in self._clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a client of a dead server may fail to close
                pass
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- looking inside ----------------------------------------------------------------------

    def client(self, **kwargs):
        """A ``redis.Redis`` on this server for assertions (``decode_responses`` by default);
        closed at teardown. It talks to the port directly, never through a proxy."""
        redis = redis_module()
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("password", self.password)
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 5.0)
        client = redis.Redis(host="127.0.0.1", port=self.port, db=0, **kwargs)
        self._clients.append(client)
        return client

    def commands(self, name: str | None = None) -> int:
        """Commands the server processed for others since it (re)started.

        Without ``name``: INFO stats ``total_commands_processed``, less the fixture's own PINGs
        and INFOs. With ``name`` (e.g. ``"xadd"``, ``"publish"``): that command's ``calls`` from
        INFO commandstats (0 if it never ran).
        """
        if name is not None:
            stats = self._info("commandstats")
            calls = stats.get(f"cmdstat_{name.lower()}", "calls=0").split(",")[0]
            return int(calls.partition("=")[2])
        counted_own = self._own  # the INFO about to be sent is not in the total it reports
        return int(self._info("stats")["total_commands_processed"]) - counted_own

    def _info(self, section: str) -> dict[str, str]:
        """``INFO section`` as ``{key: value}``, over a raw connection of the fixture's own (a
        client library would add a handshake, counted against the code under test)."""
        if self._stats is None:
            self._stats = socket.create_connection(("127.0.0.1", self.port), timeout=5.0)
            self._stats_buf = b""
            if self.password:
                self._stats.sendall(f"AUTH {self.password}\r\n".encode())
                self._own += 1
                assert self._stats_read_until_crlf() == b"+OK"
        self._stats.sendall(f"INFO {section}\r\n".encode())
        self._own += 1
        header = self._stats_read_until_crlf()
        assert header.startswith(b"$"), f"INFO {section}: unexpected reply {header!r}"
        size = int(header[1:])
        while len(self._stats_buf) < size + 2:
            self._stats_fill()
        body, self._stats_buf = self._stats_buf[:size], self._stats_buf[size + 2:]
        pairs = (line.partition(":") for line in body.decode().splitlines())
        return {key: value for key, _, value in pairs if value and not key.startswith("#")}

    def _stats_read_until_crlf(self) -> bytes:
        while b"\r\n" not in self._stats_buf:
            self._stats_fill()
        line, _, self._stats_buf = self._stats_buf.partition(b"\r\n")
        return line

    def _stats_fill(self) -> None:
        chunk = self._stats.recv(65536)
        if not chunk:
            raise ConnectionError(f"{self!r} closed the INFO connection")
        self._stats_buf += chunk

    def _drop_stats(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None


@pytest.fixture
def redis_server():
    """Factory: ``redis_server(unix_socket=False, args=()) -> RedisServer`` (already answering
    PING). Every server is stopped by pid at teardown."""
    servers: list[RedisServer] = []

    def start(*, unix_socket: bool = False, args=(), password: str | None = "") -> RedisServer:
        srv = RedisServer(unix_socket=unix_socket, args=args, password=password)
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.close()
